//! Log output: `tracing` to stdout, as text or JSON, filtered by `log.level` (or `RUST_LOG`
//! when it is set). Both can change at run time: a configuration reload calls [`apply`],
//! which swaps the filter and the formatter in the installed subscriber.

use std::sync::OnceLock;

use serde::Deserialize;
use tracing_subscriber::layer::{Layered, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

/// Which log lines are written unless `log.level` or `RUST_LOG` says otherwise.
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Log settings.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Line format.
    pub format: LogFormat,
    /// Which lines are written, as an `EnvFilter` directive (`info`, `warn,poynt_proxy=debug`);
    /// the `RUST_LOG` environment variable, when set, takes its place.
    pub level: String,
}

/// The registry under the swappable filter: what the formatter layers on.
type Filtered = Layered<reload::Layer<EnvFilter, Registry>, Registry>;
type Formatter = Box<dyn Layer<Filtered> + Send + Sync>;

/// The reload handles of the installed subscriber.
struct Handles {
    filter: reload::Handle<EnvFilter, Registry>,
    format: reload::Handle<Formatter, Filtered>,
}

static INSTALLED: OnceLock<Handles> = OnceLock::new();

fn formatter(format: LogFormat) -> Formatter {
    match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer().boxed(),
    }
}

/// `RUST_LOG` when set (an operator's explicit override), else the configured level.
fn filter(config: &LogConfig) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_LEVEL))
}

/// Whether `RUST_LOG` holds a filter, which then takes the place of `log.level` (at start and
/// at every reload), so a reload can say that a changed `log.level` changes nothing.
pub fn level_from_env() -> bool {
    EnvFilter::try_from_default_env().is_ok()
}

/// Installs the global subscriber; called once by the binary (tests install none).
pub fn init(config: &LogConfig) {
    let (filter, filter_handle) = reload::Layer::new(filter(config));
    let (format, format_handle) = reload::Layer::new(formatter(config.format));
    let result = Registry::default().with(filter).with(format).try_init();
    match result {
        Ok(()) => {
            let _ = INSTALLED.set(Handles {
                filter: filter_handle,
                format: format_handle,
            });
            if level_from_env() {
                tracing::info!(
                    log_level = %config.level,
                    "RUST_LOG is set and takes the place of log.level until a restart without it"
                );
            }
        }
        Err(error) => eprintln!("logging was already initialised: {error}"),
    }
}

/// Applies a reloaded log configuration to the installed subscriber (nothing when none was
/// installed, as in tests).
pub fn apply(config: &LogConfig) {
    let Some(handles) = INSTALLED.get() else {
        return;
    };
    if let Err(error) = handles.format.reload(formatter(config.format)) {
        tracing::warn!(%error, "the log format was not changed");
    }
    if let Err(error) = handles.filter.reload(filter(config)) {
        tracing::warn!(%error, "the log level was not changed");
    }
}
