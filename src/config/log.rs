//! The `log:` section: line format, level, and the access log's switch. Builds the
//! [`LogConfig`] telemetry reads.

use serde::Deserialize;

use super::error::ConfigError;
use super::fields::invalid;
use crate::telemetry::{DEFAULT_LOG_LEVEL, LogConfig, LogFormat};

/// The `log:` section as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    #[serde(default = "default_log_format")]
    format: LogFormat,
    #[serde(default = "default_log_level")]
    level: String,
    #[serde(default)]
    access: Switch,
}

/// `on` or `off`, as an operator writes a switch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Switch {
    /// The default: one access line per request.
    #[default]
    On,
    Off,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: default_log_format(),
            level: default_log_level(),
            access: Switch::default(),
        }
    }
}

fn default_log_level() -> String {
    DEFAULT_LOG_LEVEL.into()
}

fn default_log_format() -> LogFormat {
    LogFormat::Text
}

/// The words `log.level` accepts alone; anything else alone would parse as a target name
/// (`warning` would mean "only lines from a module called warning") and silence every line.
const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

impl RawLog {
    pub(super) fn validate(self) -> Result<LogConfig, ConfigError> {
        let expected = "expected trace, debug, info, warn, error, off or an EnvFilter directive";
        let directive = self.level.contains(['=', ',']) || self.level.contains("::");
        if !directive
            && !LOG_LEVELS
                .iter()
                .any(|level| level.eq_ignore_ascii_case(self.level.trim()))
        {
            return Err(invalid(
                "log.level",
                format!("{expected}; found {:?}", self.level),
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.level).map_err(|e| {
            invalid(
                "log.level",
                format!(
                    "{expected} such as warn,poynt_proxy=debug; found {:?} ({e})",
                    self.level
                ),
            )
        })?;
        Ok(LogConfig {
            format: self.format,
            level: self.level,
            access: self.access == Switch::On,
        })
    }
}
