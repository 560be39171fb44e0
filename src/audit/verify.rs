//! `audit verify`: reads audit files in order (oldest first) as one chain and finds the
//! first line that breaks it. A line whose `prev` is not the hash of the line before means
//! that line was edited, or a line was inserted or deleted between them; a sequence number
//! that does not follow names an insertion or deletion even when `prev` was forged too.

use std::path::{Path, PathBuf};

use super::chain::hash;

/// Why a set of audit files does not verify.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A line broke the chain.
    #[error("{path}:{line}: {problem}")]
    Broken {
        /// The file.
        path: PathBuf,
        /// The line (1-based) where the chain breaks.
        line: usize,
        /// What was expected and what was found.
        problem: String,
    },
}

/// What a chain that verified holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// Lines checked.
    pub lines: usize,
    /// Events the writer reported dropped (full queue) along the chain.
    pub dropped: u64,
}

/// Checks `files`, in the order given, as one chain. The first line is the anchor: its
/// `prev` is trusted (it may continue a file since deleted by rotation).
pub fn verify(files: &[impl AsRef<Path>]) -> Result<Verified, VerifyError> {
    let mut previous: Option<(String, u64)> = None;
    let mut verified = Verified {
        lines: 0,
        dropped: 0,
    };
    for path in files {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| VerifyError::Read {
            path: path.to_owned(),
            source,
        })?;
        for (index, line) in text.lines().enumerate() {
            let broken = |problem: String| VerifyError::Broken {
                path: path.to_owned(),
                line: index + 1,
                problem,
            };
            let value: serde_json::Value = serde_json::from_str(line).map_err(|e| {
                broken(format!(
                    "expected a JSON audit line; found text that is not JSON ({e})"
                ))
            })?;
            let (Some(seq), Some(prev)) = (
                value.get("audit").and_then(serde_json::Value::as_u64),
                value.get("prev").and_then(serde_json::Value::as_str),
            ) else {
                return Err(broken(
                    "expected an audit line with \"audit\" and \"prev\"; found a line without them"
                        .into(),
                ));
            };
            if let Some((expected_prev, previous_seq)) = &previous {
                if prev != expected_prev {
                    return Err(broken(format!(
                        "expected prev {expected_prev} (the SHA-256 of the line before); found {prev}: the line before was edited, or a line was inserted or deleted here"
                    )));
                }
                if seq != previous_seq + 1 {
                    return Err(broken(format!(
                        "expected sequence number {}; found {seq}: a line was inserted or deleted here",
                        previous_seq + 1
                    )));
                }
            }
            verified.lines += 1;
            verified.dropped += value
                .get("dropped")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0);
            previous = Some((hash(line.as_bytes()), seq));
        }
    }
    Ok(verified)
}
