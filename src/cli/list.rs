//! `tandem list`: the apps started with `tandem run` on this host, read from
//! the run registry and each sidecar's metadata API, in the Dapr CLI's
//! shapes (`-o table|json|yaml`, same keys and columns).

use super::launch::failure;
use crate::home::RunRecord;
use anyhow::Result;
use serde::Serialize;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(clap::Args)]
pub struct Args {
    /// `table` (default), `json` or `yaml`.
    #[arg(long, short = 'o', default_value = "table")]
    output: String,
}

/// One row, with the Dapr CLI's keys in its order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    app_id: String,
    http_port: u16,
    grpc_port: u16,
    app_port: u16,
    metrics_enabled: bool,
    command: String,
    age: String,
    created: String,
    daprd_pid: u32,
    cli_pid: u32,
    app_pid: u32,
    max_request_body_size: u64,
    http_read_buffer_size: u64,
    run_template_path: String,
    app_log_path: String,
    daprd_log_path: String,
    run_template_name: String,
}

pub async fn main(args: Args) -> Result<u8> {
    let format = match args.output.as_str() {
        "" | "table" => "table",
        "json" => "json",
        "yaml" => "yaml",
        _ => {
            failure("An invalid output format was specified.");
            return Ok(1);
        }
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let mut rows = Vec::new();
    for rec in RunRecord::all_live() {
        let meta = super::call_sidecar(rec.http_port, "GET", "/v1.0/metadata")
            .await
            .filter(|(s, _)| *s == 200)
            .and_then(|(_, body)| serde_json::from_slice::<serde_json::Value>(&body).ok());
        let ext = |k: &str| {
            meta.as_ref()
                .and_then(|m| m["extended"][k].as_str().map(String::from))
                .filter(|s| !s.is_empty())
        };
        let pid = |k: &str, fallback: u32| ext(k).and_then(|s| s.parse().ok()).unwrap_or(fallback);
        rows.push(Row {
            app_id: rec.app_id.clone(),
            http_port: rec.http_port,
            grpc_port: rec.grpc_port,
            app_port: rec.app_port.unwrap_or(0),
            metrics_enabled: rec.metrics_enabled,
            command: ext("appCommand").unwrap_or_else(|| rec.command.clone()),
            age: age(now.saturating_sub(rec.created)),
            created: created(rec.created),
            daprd_pid: rec.daprd_pid,
            cli_pid: pid("cliPID", rec.cli_pid),
            app_pid: pid("appPID", rec.app_pid.unwrap_or(0)),
            max_request_body_size: rec.max_body_size,
            http_read_buffer_size: rec.read_buffer_size,
            run_template_path: ext("runTemplatePath").unwrap_or(rec.run_template_path),
            app_log_path: ext("appLogPath").unwrap_or(rec.app_log_path),
            daprd_log_path: ext("daprdLogPath").unwrap_or(rec.daprd_log_path),
            run_template_name: ext("runTemplateName").unwrap_or(rec.run_template_name),
        });
    }
    match format {
        "json" => {
            // As the Dapr CLI: indented, no newline after the closing bracket.
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            out.write_all(serde_json::to_string_pretty(&rows)?.as_bytes())?;
            out.flush()?;
        }
        "yaml" => print!("{}", yaml(&rows)?),
        _ if rows.is_empty() => println!("No Dapr instances found."),
        _ => print!("{}", table(&rows)),
    }
    Ok(0)
}

fn yaml(rows: &[Row]) -> Result<String> {
    if rows.is_empty() {
        return Ok("[]\n".into());
    }
    Ok(serde_saphyr::to_string(&rows)?)
}

/// The Dapr CLI's table: upper-case headers, left-aligned, no borders;
/// columns blank in every row left out.
fn table(rows: &[Row]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let cmd = if r.command.chars().count() > 20 {
                format!("{}...", r.command.chars().take(17).collect::<String>())
            } else {
                r.command.clone()
            };
            vec![
                r.app_id.clone(),
                r.http_port.to_string(),
                r.grpc_port.to_string(),
                r.app_port.to_string(),
                cmd,
                r.age.clone(),
                r.created.clone(),
                r.daprd_pid.to_string(),
                r.cli_pid.to_string(),
                r.app_pid.to_string(),
                r.run_template_path.clone(),
                r.app_log_path.clone(),
                r.daprd_log_path.clone(),
                r.run_template_name.clone(),
            ]
        })
        .collect();
    let headers = [
        "APP ID",
        "HTTP PORT",
        "GRPC PORT",
        "APP PORT",
        "COMMAND",
        "AGE",
        "CREATED",
        "DAPRD PID",
        "CLI PID",
        "APP PID",
        "RUN TEMPLATE PATH",
        "APP LOG PATH",
        "DAPRD LOG PATH",
        "RUNTEMPLATENAME",
    ];
    let keep: Vec<usize> = (0..headers.len())
        .filter(|&c| cells.iter().any(|row| !row[c].is_empty()))
        .collect();
    let width = |c: usize| {
        cells
            .iter()
            .map(|row| row[c].chars().count())
            .chain([headers[c].len()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..headers.len()).map(width).collect();
    let line = |values: Vec<&str>| {
        let mut s = keep
            .iter()
            .map(|&c| format!("{:<w$}", values[c], w = widths[c]))
            .collect::<Vec<_>>()
            .join("  ");
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(headers.to_vec());
    for row in &cells {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `2006-01-02 15:04.05`, the Dapr CLI's layout (UTC here).
fn created(secs: u64) -> String {
    let (y, m, d) = tandem_control::clock::civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}.{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn age(secs: u64) -> String {
    match secs {
        s if s <= 60 => format!("{s}s"),
        s if s <= 3600 => format!("{}m", s / 60),
        s if s <= 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}
