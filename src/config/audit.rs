//! The `audit:` section: where the audit trail goes and how its file rotates. Absent, there
//! is no trail.

use std::path::PathBuf;

use serde::Deserialize;

use super::error::ConfigError;
use super::fields::{ByteSize, count_within, invalid};
use super::sources::{KeySources, resolve};
use crate::audit::config::{AuditConfig, AuditOutput, FileOutput};

/// Size after which the audit file rotates, by default.
const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// Rotated audit files kept, by default.
const DEFAULT_KEEP: usize = 5;
/// Events waiting for the writer, by default: a burst of grants at start-up fits.
const DEFAULT_QUEUE: usize = 8192;
/// The smallest `max_bytes`: a file must hold a few lines.
const MIN_MAX_BYTES: u64 = 4096;

/// The `audit:` section as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    output: String,
    path: Option<PathBuf>,
    max_bytes: Option<ByteSize>,
    keep: Option<usize>,
    queue: Option<usize>,
}

impl RawAudit {
    pub(super) fn validate(self, sources: &KeySources) -> Result<AuditConfig, ConfigError> {
        let queue = count_within(
            "audit.queue",
            self.queue.unwrap_or(DEFAULT_QUEUE),
            1,
            1 << 20,
        )?;
        let output = match self.output.as_str() {
            "stdout" => {
                if self.path.is_some() || self.max_bytes.is_some() || self.keep.is_some() {
                    return Err(invalid(
                        "audit.output",
                        "expected `file` when path, max_bytes or keep is set; found `stdout`",
                    ));
                }
                AuditOutput::Stdout
            }
            "file" => {
                let path = self.path.ok_or_else(|| {
                    invalid(
                        "audit.path",
                        "expected a file path with output: file; found none",
                    )
                })?;
                let max_bytes = match self.max_bytes {
                    Some(size) => size.bytes("audit.max_bytes")?,
                    None => DEFAULT_MAX_BYTES,
                };
                let max_bytes =
                    count_within("audit.max_bytes", max_bytes, MIN_MAX_BYTES, u64::MAX)?;
                let keep = count_within("audit.keep", self.keep.unwrap_or(DEFAULT_KEEP), 0, 1000)?;
                AuditOutput::File(FileOutput {
                    path: resolve(sources, &path),
                    max_bytes,
                    keep,
                })
            }
            other => {
                return Err(invalid(
                    "audit.output",
                    format!("expected `stdout` or `file`; found {other:?}"),
                ));
            }
        };
        Ok(AuditConfig { output, queue })
    }
}
