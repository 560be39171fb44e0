//! `poynt-proxy audit verify FILE...`: checks audit files, oldest first, as one hash chain;
//! exit 0 with the count of lines, or 1 naming the file and line where the chain breaks.

use std::path::PathBuf;

use poynt_proxy::audit::verify::verify;

/// Verifies `files` in the order given and prints what held.
pub fn verify_files(files: &[PathBuf]) -> anyhow::Result<()> {
    let verified = verify(files)?;
    println!(
        "ok: {} lines in {} file(s) form one unbroken chain; {} events were dropped (full queue) and noted",
        verified.lines,
        files.len(),
        verified.dropped
    );
    Ok(())
}
