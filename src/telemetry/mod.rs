//! Log output: `tracing` to stdout, as text or JSON (`json`), filtered by `log.level` (or
//! `RUST_LOG` when it is set). Both can change at run time: a configuration reload calls
//! [`apply`], which swaps the filter and the formatter in the installed subscriber. Text is
//! coloured only on a terminal and never with `NO_COLOR`; durations are logged through [`ms`].
//! The access log is not written through `tracing` (`access_log`), but follows the same
//! settings: [`access_format`] says whether and how to write it.

mod json;

use std::io::IsTerminal as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tracing::Subscriber;
use tracing_subscriber::filter::{FilterExt as _, FilterFn, Filtered, LevelFilter};
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
    /// Whether the access log (one line per request) is written (`log.access`).
    pub access: bool,
}

/// A layer beside the log, with its own filter: the traces exporter (`traces`).
pub type Beside = Box<dyn Layer<Registry> + Send + Sync>;
/// The registry with the layer beside the log, if any: what the formatter layers on.
type Base = Layered<Option<Beside>, Registry>;
type Formatter = Box<dyn Layer<Base> + Send + Sync>;

/// The reload handles of the installed subscriber.
struct Handles {
    filter: reload::Handle<EnvFilter, Base>,
    format: reload::Handle<Formatter, Base>,
}

static INSTALLED: OnceLock<Handles> = OnceLock::new();

/// The access log's switch and format, as [`init`] and [`apply`] last set them.
static ACCESS: AtomicU8 = AtomicU8::new(ACCESS_OFF);
const ACCESS_OFF: u8 = 0;
const ACCESS_TEXT: u8 = 1;
const ACCESS_JSON: u8 = 2;

/// The target access lines are filtered under: `RUST_LOG=warn` or
/// `poynt_proxy::access=off` silences them as it did when `tracing` wrote them.
const ACCESS_TARGET: &str = "poynt_proxy::access";

fn formatter(format: LogFormat) -> Formatter {
    match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .event_format(json::JsonLines)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(colour(
                std::io::stdout().is_terminal(),
                std::env::var_os("NO_COLOR"),
            ))
            .boxed(),
    }
}

/// Colour only for a person at a terminal, and never when `NO_COLOR` is set to anything but
/// the empty string (no-color.org): escape codes in a file or a pipe are noise.
fn colour(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|value| value.is_empty())
}

fn set_access(config: &LogConfig) {
    let access = match (config.access, config.format) {
        (false, _) => ACCESS_OFF,
        (true, LogFormat::Text) => ACCESS_TEXT,
        (true, LogFormat::Json) => ACCESS_JSON,
    };
    ACCESS.store(access, Ordering::Relaxed);
}

/// How to write access lines now: `None` when `log.access` is off, when the log level leaves
/// `poynt_proxy::access` lines out, or when no log is installed.
pub fn access_format() -> Option<LogFormat> {
    let format = match ACCESS.load(Ordering::Relaxed) {
        ACCESS_TEXT => LogFormat::Text,
        ACCESS_JSON => LogFormat::Json,
        _ => return None,
    };
    tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO).then_some(format)
}

/// Whether [`init`] installed the log: a proxy started without it (tests, library use)
/// writes no log at all, access lines included.
pub fn installed() -> bool {
    INSTALLED.get().is_some()
}

/// A duration as a log field: milliseconds, to the microsecond (`30.806`, never
/// `30.806000000000004`).
pub fn ms(duration: Duration) -> f64 {
    // Exact up to 2^53 µs (285 years); the division rounds once, to the closest double.
    duration.as_micros() as f64 / 1e3
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

/// Whether a span or event belongs in the log: spans made for traces do not (they are the
/// exporter's, and the log would format their fields for nothing).
fn not_traces(metadata: &tracing::Metadata<'_>) -> bool {
    metadata.target() != crate::traces::TARGET
}

/// Installs the global subscriber; called once by the binary (tests install none). `beside`
/// is a layer that sees what its own filter picks, whatever the log level (the traces
/// exporter).
pub fn init(config: &LogConfig, beside: Option<Beside>) {
    let (subscriber, handles) = subscriber(config, beside);
    match subscriber.try_init() {
        Ok(()) => {
            let _ = INSTALLED.set(handles);
            set_access(config);
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

/// The registry, `beside` and the log filtered by `config`, with the handles that reload the
/// log's filter and format.
///
/// The filter that keeps trace spans out of the log says it lets every level through, so the
/// log's level hint is its level filter's. Without a hint the subscriber's would be unknown,
/// which `tracing` takes as TRACE: every span a dependency makes at that level (`h2` makes
/// several per request) would be created, entered and closed only to be filtered out.
fn subscriber(
    config: &LogConfig,
    beside: Option<Beside>,
) -> (impl Subscriber + Send + Sync + 'static, Handles) {
    let (filter, filter_handle) = reload::Layer::new(filter(config));
    let (format, format_handle) = reload::Layer::new(formatter(config.format));
    let not_traces = FilterFn::new(not_traces).with_max_level_hint(LevelFilter::TRACE);
    let log: Filtered<_, _, Base> = format.with_filter(filter.and(not_traces));
    let handles = Handles {
        filter: filter_handle,
        format: format_handle,
    };
    (Registry::default().with(beside).with(log), handles)
}

/// Applies a reloaded log configuration to the installed subscriber (nothing when none was
/// installed, as in tests).
pub fn apply(config: &LogConfig) {
    let Some(handles) = INSTALLED.get() else {
        return;
    };
    set_access(config);
    if let Err(error) = handles.format.reload(formatter(config.format)) {
        tracing::warn!(%error, "the log format was not changed");
    }
    if let Err(error) = handles.filter.reload(filter(config)) {
        tracing::warn!(%error, "the log level was not changed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".into())), "an empty NO_COLOR is unset");
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(false, None));
    }

    #[test]
    fn the_subscriber_hints_the_log_level_so_finer_spans_are_never_made() {
        use tracing_subscriber::filter::Targets;
        use tracing_subscriber::layer::Identity;

        for level in ["info", "warn,poynt_proxy=debug", "error"] {
            let config = LogConfig {
                format: LogFormat::Json,
                level: level.to_owned(),
                access: true,
            };
            // What the level filter allows (RUST_LOG's, when the tests run with it).
            let allowed = filter(&config).max_level_hint();
            assert!(allowed.is_some(), "{level}");
            let (log_alone, _) = subscriber(&config, None);
            assert_eq!(log_alone.max_level_hint(), allowed, "{level}");
            let traces = Identity::new()
                .with_filter(
                    Targets::new().with_target(crate::traces::TARGET, tracing::Level::INFO),
                )
                .boxed();
            let (with_traces, _) = subscriber(&config, Some(traces));
            // The exporter's own filter adds its INFO spans, whatever the log's level.
            let with_exporter = allowed.max(Some(LevelFilter::INFO));
            assert_eq!(
                with_traces.max_level_hint(),
                with_exporter,
                "{level}, traces on"
            );
        }
    }

    #[test]
    fn milliseconds_have_microsecond_precision() {
        assert_eq!(ms(Duration::from_nanos(30_806_000)).to_string(), "30.806");
        assert_eq!(ms(Duration::from_nanos(30_806_999)).to_string(), "30.806");
        assert_eq!(ms(Duration::from_secs(2)).to_string(), "2000");
    }
}
