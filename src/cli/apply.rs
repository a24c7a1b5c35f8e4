//! `tandem apply -f <file>`: a resource document (one or more YAML
//! resources) written into a running sidecar's resources dir as
//! `<file name>.yaml` and applied at once, through its control API; a
//! document that does not load, or a change the sidecar refuses, is not
//! kept, and the reason is printed. `--delete` takes the document out.

use anyhow::{Context, Result};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The YAML document to apply; its file name (without `.yaml`) names
    /// it in the resources dir.
    #[arg(long = "file", short = 'f')]
    file: PathBuf,
    /// Remove the document named by `-f` instead.
    #[arg(long)]
    delete: bool,
    #[command(flatten)]
    target: super::Target,
}

pub async fn main(args: Args) -> Result<u8> {
    let name = args
        .file
        .file_stem()
        .and_then(|n| n.to_str())
        .context("the file needs a name")?
        .to_string();
    let path = format!("/v1.0-alpha1/tandem/resources/{name}");
    let (status, body) = if args.delete {
        tokio::task::block_in_place(|| args.target.call("DELETE", &path, b""))?
    } else {
        let text = std::fs::read(&args.file)
            .with_context(|| format!("cannot read {}", args.file.display()))?;
        tokio::task::block_in_place(|| args.target.call("PUT", &path, &text))?
    };
    if status == 200 {
        println!(
            "✅  {} {name}: generation {}, changed {}",
            if args.delete { "deleted" } else { "applied" },
            body["generation"],
            body["changed"]
        );
        if let Some(r) = body["needsRestart"].as_array().filter(|r| !r.is_empty()) {
            println!(
                "⚠️   needs a restart to apply: {}",
                serde_json::Value::Array(r.clone())
            );
        }
        return Ok(0);
    }
    let why = body["message"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| body.to_string());
    eprintln!("❌  {name} not applied ({status}): {why}");
    Ok(1)
}
