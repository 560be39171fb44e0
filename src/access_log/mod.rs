//! The access log: one line per request, written when the response body ends (so it can
//! say how many bytes the caller got and whether it stayed to the end), preformatted by the
//! worker and written to stdout by a thread of its own (`writer`), never through `tracing`.
//! `record` is what a line says, `format` how it is written as text or JSON.

pub mod format;
pub mod record;
pub mod writer;

pub use self::record::{AccessRecord, Flag, Flags};
pub use self::writer::{AccessLog, Drain};
