//! The checked `audit:` settings (parsed by `config::audit`).

use std::path::PathBuf;

/// Where audit lines go. `None` in [`crate::config::Config`] means no trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// Standard output, or a rotated file.
    pub output: AuditOutput,
    /// Events waiting for the writer thread; beyond it events are dropped and counted (a
    /// request never waits for the disk).
    pub queue: usize,
}

/// The destination of audit lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditOutput {
    /// One line per event on standard output, beside the log (for a collector); the chain
    /// starts afresh with each process.
    Stdout,
    /// A file, rotated by size; the chain continues across files and restarts.
    File(FileOutput),
}

/// A rotated audit file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOutput {
    /// The live file; rotated ones are `path.1` (newest) to `path.<keep>`.
    pub path: PathBuf,
    /// Size after which the live file is rotated before the next line.
    pub max_bytes: u64,
    /// Rotated files kept; older ones are deleted.
    pub keep: usize,
}
