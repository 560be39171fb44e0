//! What only the `poynt-proxy` command does, one file per job: serve until a stop signal
//! (`run`, with `signals`), check a configuration (`check`), make a caller's API key
//! (`callers`), verify the audit trail (`audit`), make a store key and list the
//! store (`store`), print an authorization URL (`authorize_url`), and the `demo`. The
//! library never imports this module: it is the binary's, so nothing here can grow into a
//! dependency of the proxy the tests drive.

pub mod audit;
pub mod authorize_url;
pub mod callers;
pub mod check;
pub mod demo;
pub mod run;
pub mod signals;
pub mod store;

use poynt_proxy::telemetry::{DEFAULT_LOG_LEVEL, LogConfig, LogFormat};

/// Text lines at the default level, for the commands that have no configuration.
pub fn plain_log() -> LogConfig {
    LogConfig {
        format: LogFormat::Text,
        level: DEFAULT_LOG_LEVEL.into(),
        access: true,
    }
}
