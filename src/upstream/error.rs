//! Why an exchange with Poynt failed, typed so the proxy can tell its caller's own faults (a
//! request body that stalled or grew too large, found through [`std::error::Error::source`])
//! from Poynt's.

use std::io;
use std::time::Duration;

/// Error type carried by request bodies sent upstream.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A failed exchange (or a response body that broke off).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The TCP connection could not be opened.
    #[error("expected to connect to Poynt; the connection failed: {0}")]
    Connect(#[source] io::Error),
    /// The TCP connection took longer than the connect timeout.
    #[error("expected to connect to Poynt within {}; it took longer", humantime::format_duration(*.0))]
    ConnectTimeout(Duration),
    /// The TLS handshake failed (certificate refused, protocol error, connection lost).
    #[error("expected a TLS handshake with Poynt; it failed: {0}")]
    Tls(#[source] io::Error),
    /// Reading or writing an established connection failed.
    #[error("the connection to Poynt failed: {0}")]
    Io(#[source] io::Error),
    /// Poynt closed the connection before the response (or its body) was complete.
    #[error("expected Poynt's {0}; the connection closed first")]
    Closed(&'static str),
    /// No byte of the response body came for the body idle timeout.
    #[error("expected Poynt's response body to make progress within {}; no byte came", humantime::format_duration(*.0))]
    BodyIdle(Duration),
    /// Poynt's answer was not valid HTTP/1.1.
    #[error("expected a valid HTTP/1.1 response from Poynt; {0}")]
    Malformed(String),
    /// The caller's request body failed while it was being sent (its error is the source).
    #[error("the request body could not be sent: {0}")]
    Body(#[source] BoxError),
    /// The HTTP/2 exchange failed.
    #[error("the HTTP/2 exchange with Poynt failed: {0}")]
    H2(#[source] hyper::Error),
}
