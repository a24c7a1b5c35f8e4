//! `tandem init`: writes the embedded default resources to
//! `~/.tandem/components`, where `tandem run` finds them and users edit them.

use anyhow::{Context, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Overwrite files that already exist.
    #[arg(long)]
    force: bool,
}

pub async fn main(args: Args) -> Result<u8> {
    let dir = crate::home::components_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, text) in tandem_control::defaults::DEFAULT_RESOURCES {
        let path = dir.join(name);
        if path.exists() && !args.force {
            println!("kept      {} (exists; --force overwrites)", path.display());
            continue;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        println!("written   {}", path.display());
    }
    println!(
        "tandem is initialised: `tandem run` now loads {}",
        dir.display()
    );
    Ok(0)
}
