//! `tandem status`: what a sidecar is serving — the generation of its
//! resources and configuration, whether hot reload watches, each resource
//! with its file and status, and the last reload's result.

use anyhow::{Result, bail};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    target: super::Target,
    /// `table` (default) or `json`.
    #[arg(long, short = 'o', default_value = "table")]
    output: String,
}

pub async fn main(args: Args) -> Result<u8> {
    let (status, body) =
        tokio::task::block_in_place(|| args.target.call("GET", "/v1.0-alpha1/tandem/status", b""))?;
    if status != 200 {
        bail!("the sidecar answered {status}: {body}");
    }
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(0);
    }
    println!(
        "app {}  generation {}  hot reload {}",
        body["appId"].as_str().unwrap_or("?"),
        body["generation"],
        if body["hotReload"] == true {
            "on"
        } else {
            "off"
        }
    );
    if let Some(dir) = body["resourcesDir"].as_str() {
        println!("resources {dir}");
    }
    println!(
        "{:<14} {:<24} {:<26} {:<22} SOURCE",
        "KIND", "NAME", "TYPE", "STATUS"
    );
    for r in body["resources"].as_array().into_iter().flatten() {
        let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
        println!(
            "{:<14} {:<24} {:<26} {:<22} {}",
            s("kind"),
            s("name"),
            s("type"),
            s("status"),
            s("source")
        );
    }
    let last = &body["lastReload"];
    if !last.is_null() {
        if last["ok"] == true {
            println!(
                "last reload {} ({}): applied {} in {} ms",
                last["at"].as_str().unwrap_or(""),
                last["trigger"].as_str().unwrap_or(""),
                last["changed"],
                last["tookMs"]
            );
        } else {
            println!(
                "last reload {} ({}): REFUSED — {}",
                last["at"].as_str().unwrap_or(""),
                last["trigger"].as_str().unwrap_or(""),
                last["error"].as_str().unwrap_or("")
            );
        }
        if let Some(r) = last["needsRestart"].as_array().filter(|r| !r.is_empty()) {
            println!(
                "needs a restart to apply: {}",
                serde_json::Value::Array(r.clone())
            );
        }
    }
    let recent = body["recentReloads"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !recent.is_empty() {
        println!("recent changes and refusals (newest first):");
        for o in recent.iter().rev().take(5) {
            let what = if o["ok"] == true {
                format!("applied {}", o["changed"])
            } else {
                format!("REFUSED — {}", o["error"].as_str().unwrap_or(""))
            };
            println!(
                "  {} ({}): {what}",
                o["at"].as_str().unwrap_or(""),
                o["trigger"].as_str().unwrap_or("")
            );
        }
    }
    Ok(0)
}
