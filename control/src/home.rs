//! tandem's home directory: `$TANDEM_HOME`, else `~/.tandem`. Holds the
//! default resources, the embedded stores' files and the run registry.

use std::path::PathBuf;

pub fn dir() -> PathBuf {
    if let Some(h) = std::env::var_os("TANDEM_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".tandem")
}
