//! The `server:` section: limits and deadlines of the caller-facing listener.

use std::time::Duration;

use serde::Deserialize;

use super::error::ConfigError;
use super::fields::{
    ByteSize, MAX_LONG_TIMEOUT, MAX_SHORT_TIMEOUT, count_within, duration_at_most,
    duration_between, duration_within,
};
use crate::workers::cpus::CpuBudget;

/// How long an idle HTTP/1 caller connection is kept: nginx's default. Callers' pools should
/// drop idle connections sooner; Go's and reqwest's default 90 s does not (docs/OPERATIONS.md
/// says what to set).
const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(75);

/// The shortest header read, keep-alive and HTTP/2 idle timeout: a connection with a request
/// open looks at its deadline once per the shortest of the three (src/server.rs), so a
/// period of a few milliseconds would wake every busy connection more often than it is
/// served.
const MIN_CONNECTION_TIMEOUT: Duration = Duration::from_millis(100);

/// Limits on the caller-facing listener.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// A connection that has not begun a request by then, or a request head not complete
    /// this long after its first byte, is closed.
    pub header_read_timeout: Duration,
    /// An HTTP/1 connection with no request in flight for this long is closed; callers'
    /// pools should drop idle connections sooner, so a reused one does not race the close.
    pub keepalive_timeout: Duration,
    /// Largest request head accepted (HTTP/1 read buffer, HTTP/2 header list).
    pub max_header_bytes: usize,
    /// Connections beyond this (across all workers) wait in the kernel backlog instead of
    /// being served.
    pub max_connections: usize,
    /// HTTP/2 streams one caller connection may have open at once.
    pub http2_max_concurrent_streams: u32,
    /// Larger request bodies are refused with 413.
    pub max_request_body_bytes: u64,
    /// Bodies up to this size are kept so a 401 can be retried; larger ones stream.
    pub retry_buffer_bytes: usize,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// Threads serving callers, each with its own event loop and upstream connections;
    /// by default one per CPU the process may use, its cgroup's CPU quota rounded up.
    pub workers: usize,
    /// An HTTP/2 connection with no open stream for this long gets GOAWAY and is closed.
    pub idle_timeout: Duration,
    /// A request body that makes no progress for this long ends the request (408).
    pub body_read_timeout: Duration,
    /// How often an HTTP/2 connection is PINGed to tell a live peer from a dead one.
    pub http2_keep_alive_interval: Duration,
    /// How long a PING may go unanswered before the connection is closed.
    pub http2_keep_alive_timeout: Duration,
}

/// The `server:` section as written; every key has a default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawServer {
    #[serde(with = "humantime_serde")]
    header_read_timeout: Duration,
    #[serde(with = "humantime_serde")]
    keepalive_timeout: Duration,
    max_header_bytes: usize,
    max_connections: usize,
    http2_max_concurrent_streams: u32,
    max_request_body_bytes: ByteSize,
    retry_buffer_bytes: ByteSize,
    #[serde(with = "humantime_serde")]
    shutdown_grace: Duration,
    workers: Option<usize>,
    #[serde(with = "humantime_serde")]
    idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    body_read_timeout: Duration,
    #[serde(with = "humantime_serde")]
    http2_keep_alive_interval: Duration,
    #[serde(with = "humantime_serde")]
    http2_keep_alive_timeout: Duration,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            max_header_bytes: 64 * 1024,
            max_connections: 10_000,
            http2_max_concurrent_streams: 256,
            max_request_body_bytes: ByteSize::Count(1 << 30),
            retry_buffer_bytes: ByteSize::Count(64 * 1024),
            shutdown_grace: Duration::from_secs(30),
            workers: None,
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(30),
            http2_keep_alive_interval: Duration::from_secs(20),
            http2_keep_alive_timeout: Duration::from_secs(20),
        }
    }
}

impl RawServer {
    pub(super) fn validate(self) -> Result<ServerConfig, ConfigError> {
        let workers = match self.workers {
            Some(workers) => count_within("server.workers", workers, 1, 1024)?,
            None => CpuBudget::of_this_process().workers(),
        };
        let max_request_body_bytes = count_within(
            "server.max_request_body_bytes",
            self.max_request_body_bytes
                .bytes("server.max_request_body_bytes")?,
            0,
            1 << 40,
        )?;
        Ok(ServerConfig {
            header_read_timeout: duration_between(
                "server.header_read_timeout",
                self.header_read_timeout,
                MIN_CONNECTION_TIMEOUT,
                MAX_SHORT_TIMEOUT,
            )?,
            keepalive_timeout: duration_between(
                "server.keepalive_timeout",
                self.keepalive_timeout,
                MIN_CONNECTION_TIMEOUT,
                MAX_LONG_TIMEOUT,
            )?,
            max_header_bytes: count_within(
                "server.max_header_bytes",
                self.max_header_bytes,
                8192,
                1 << 20,
            )?,
            max_connections: count_within(
                "server.max_connections",
                self.max_connections,
                1,
                1_000_000,
            )?,
            http2_max_concurrent_streams: count_within(
                "server.http2_max_concurrent_streams",
                self.http2_max_concurrent_streams,
                1,
                10_000,
            )?,
            max_request_body_bytes,
            retry_buffer_bytes: count_within(
                "server.retry_buffer_bytes",
                self.retry_buffer_bytes.bytes("server.retry_buffer_bytes")?,
                0,
                16 << 20,
            )? as usize,
            shutdown_grace: duration_at_most(
                "server.shutdown_grace",
                self.shutdown_grace,
                MAX_LONG_TIMEOUT,
            )?,
            workers,
            idle_timeout: duration_between(
                "server.idle_timeout",
                self.idle_timeout,
                MIN_CONNECTION_TIMEOUT,
                MAX_LONG_TIMEOUT,
            )?,
            body_read_timeout: duration_within(
                "server.body_read_timeout",
                self.body_read_timeout,
                MAX_SHORT_TIMEOUT,
            )?,
            http2_keep_alive_interval: duration_within(
                "server.http2_keep_alive_interval",
                self.http2_keep_alive_interval,
                MAX_LONG_TIMEOUT,
            )?,
            http2_keep_alive_timeout: duration_within(
                "server.http2_keep_alive_timeout",
                self.http2_keep_alive_timeout,
                MAX_SHORT_TIMEOUT,
            )?,
        })
    }
}
