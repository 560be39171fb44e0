//! `poynt-proxy callers add-key NAME`: a new API key for a caller. The key is printed once
//! and never stored: the key file holds only its SHA-256, so it cannot be shown again.

use std::io::Write as _;
use std::path::Path;

use poynt_proxy::callers::api_key;

/// Prints a new key for `name` and the key-file line naming it; with `file`, appends the
/// line to that file (created if absent) instead of printing it.
pub fn add_key(name: &str, file: Option<&Path>) -> anyhow::Result<()> {
    let (key, line) = api_key::generate(name)?;
    match file {
        None => {
            println!("{key}");
            eprintln!(
                "give the key above to {name} (it is shown only this once); add this line to callers.authentication.api_keys.file and reload:\n{line}"
            );
        }
        Some(path) => {
            let mut out = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| anyhow::anyhow!("cannot open {} to append: {e}", path.display()))?;
            writeln!(out, "{line}")
                .map_err(|e| anyhow::anyhow!("cannot append to {}: {e}", path.display()))?;
            println!("{key}");
            eprintln!(
                "give the key above to {name} (it is shown only this once); its hash was added to {} (reload the proxy to apply it)",
                path.display()
            );
        }
    }
    Ok(())
}
