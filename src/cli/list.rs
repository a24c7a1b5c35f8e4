//! `tandem list`: the apps started with `tandem run` on this host, read from
//! the run registry and each sidecar's metadata API.

use crate::home::RunRecord;
use anyhow::Result;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(clap::Args)]
pub struct Args {
    /// `table` (default) or `json`.
    #[arg(long, short = 'o', default_value = "table")]
    output: String,
}

pub async fn main(args: Args) -> Result<u8> {
    let mut rows = Vec::new();
    for rec in RunRecord::all_live() {
        let meta = super::call_sidecar(rec.http_port, "GET", "/v1.0/metadata")
            .await
            .filter(|(s, _)| *s == 200)
            .and_then(|(_, body)| serde_json::from_slice::<serde_json::Value>(&body).ok());
        let ext = |k: &str| {
            meta.as_ref()
                .and_then(|m| m["extended"][k].as_str().map(String::from))
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        rows.push(serde_json::json!({
            "appId": rec.app_id,
            "httpPort": rec.http_port,
            "grpcPort": rec.grpc_port,
            "appPort": rec.app_port.unwrap_or(0),
            "metricsPort": rec.metrics_port,
            "command": ext("appCommand").unwrap_or(rec.command.clone()),
            "age": age(now.saturating_sub(rec.created)),
            "created": rec.created,
            "cliPid": ext("cliPID").unwrap_or_else(|| rec.cli_pid.to_string()),
            "appPid": ext("appPID").unwrap_or_default(),
            "healthy": meta.is_some(),
        }));
    }
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    if rows.is_empty() {
        println!("No tandem instances found.");
        return Ok(0);
    }
    println!(
        "{:<20} {:<10} {:<10} {:<9} {:<6} {:<9} COMMAND",
        "APP ID", "HTTP PORT", "GRPC PORT", "APP PORT", "AGE", "CLI PID"
    );
    for r in rows {
        println!(
            "{:<20} {:<10} {:<10} {:<9} {:<6} {:<9} {}",
            r["appId"].as_str().unwrap_or_default(),
            r["httpPort"].as_u64().unwrap_or_default(),
            r["grpcPort"].as_u64().unwrap_or_default(),
            r["appPort"].as_u64().unwrap_or_default(),
            r["age"].as_str().unwrap_or_default(),
            r["cliPid"].as_str().unwrap_or_default(),
            r["command"].as_str().unwrap_or_default()
        );
    }
    Ok(0)
}

fn age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}
