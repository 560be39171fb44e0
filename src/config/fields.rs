//! Field parsers every section shares: addresses, URLs, bounded durations and counts. Each
//! returns a [`ConfigError`] naming the key and saying what was expected and what was found.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use http::Uri;
use serde::Deserialize;

use super::error::ConfigError;
use poynt_wire::MerchantId;

/// A [`ConfigError::Invalid`] for `key`.
pub(super) fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
    }
}

pub(super) fn parse_addr(key: &'static str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| {
        invalid(
            key,
            format!("expected an IP:port socket address such as 127.0.0.1:8080; found {text:?}"),
        )
    })
}

/// Parses an http(s) URL with a host; `http` is allowed only for loopback hosts so that a
/// token can never cross a network in clear text.
pub(super) fn parse_url(key: &'static str, text: &str) -> Result<Uri, ConfigError> {
    if let Some((scheme, rest)) = text.split_once("://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if let Some((_, host)) = authority.rsplit_once('@') {
            return Err(invalid(
                key,
                format!(
                    "expected a URL without user-info (credentials belong in files or the environment); found \"{scheme}://<redacted>@{host}\""
                ),
            ));
        }
    }
    let uri: Uri = text
        .parse()
        .map_err(|_| invalid(key, format!("{text:?} is not an http(s) URL")))?;
    let host = match (uri.scheme_str(), uri.host()) {
        (Some("https" | "http"), Some(host)) => host,
        _ => return Err(invalid(key, format!("{text:?} is not an http(s) URL"))),
    };
    if uri.scheme_str() == Some("http") && !is_loopback_host(host) {
        return Err(invalid(
            key,
            format!(
                "{text:?} uses http to a non-loopback host; expected https (http is allowed only for localhost and loopback addresses)"
            ),
        ));
    }
    Ok(uri)
}

fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

pub(super) fn require_positive(
    key: &'static str,
    value: Duration,
) -> Result<Duration, ConfigError> {
    if value.is_zero() {
        return Err(invalid(key, "expected a duration above zero; found 0s"));
    }
    Ok(value)
}

/// Ceilings keep every duration far from what would overflow an instant, and every count
/// within what the runtime can allocate: a typo of three zeros fails `check`, not `run`.
pub(super) const MAX_SHORT_TIMEOUT: Duration = Duration::from_secs(600);
pub(super) const MAX_LONG_TIMEOUT: Duration = Duration::from_secs(86_400);

/// A positive duration of at most `max`.
pub(super) fn duration_within(
    key: &'static str,
    value: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    require_positive(key, value)?;
    duration_at_most(key, value, max)
}

/// A positive duration of at least `min` and at most `max`: [`duration_within`] and a floor.
pub(super) fn duration_between(
    key: &'static str,
    value: Duration,
    min: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    let value = duration_within(key, value, max)?;
    if value < min {
        return Err(out_of_bounds(key, "at least", min, value));
    }
    Ok(value)
}

/// A duration (zero allowed) of at most `max`.
pub(super) fn duration_at_most(
    key: &'static str,
    value: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    if value > max {
        return Err(out_of_bounds(key, "at most", max, value));
    }
    Ok(value)
}

/// "expected at most 10m; found 100years": the bound and the value, as they are written.
fn out_of_bounds(key: &'static str, side: &str, bound: Duration, value: Duration) -> ConfigError {
    invalid(
        key,
        format!(
            "expected {side} {}; found {}",
            humantime::format_duration(bound),
            humantime::format_duration(value)
        ),
    )
}

/// A count between `min` and `max`.
pub(super) fn count_within<T>(key: &'static str, value: T, min: T, max: T) -> Result<T, ConfigError>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    if value < min || value > max {
        return Err(invalid(
            key,
            format!("expected between {min} and {max}; found {value}"),
        ));
    }
    Ok(value)
}

/// A size in bytes as nginx users write it: a count (`65536`) or a number with a binary
/// unit (`64k`, `64KiB`, `1m`, `1MiB`, `1g`, `1GiB`: 1k is 1024, as nginx reads it).
/// Decimal units (`1GB`) are refused rather than guessed at.
#[derive(Deserialize, Clone, Debug)]
#[serde(untagged)]
pub(super) enum ByteSize {
    Count(u64),
    Text(String),
}

impl ByteSize {
    /// The size in bytes, or an error for `key` quoting what was written.
    pub(super) fn bytes(&self, key: &'static str) -> Result<u64, ConfigError> {
        let text = match self {
            Self::Count(count) => return Ok(*count),
            Self::Text(text) => text.trim(),
        };
        let unit_at = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(unit_at);
        let multiplier: u64 = match unit.trim() {
            "" | "b" | "B" => 1,
            "k" | "K" | "KiB" => 1 << 10,
            "m" | "M" | "MiB" => 1 << 20,
            "g" | "G" | "GiB" => 1 << 30,
            _ => 0,
        };
        digits
            .parse::<u64>()
            .ok()
            .filter(|_| multiplier > 0)
            .and_then(|count| count.checked_mul(multiplier))
            .ok_or_else(|| {
                invalid(
                    key,
                    format!(
                        "expected a byte count or a number with a binary unit (k or KiB, m or MiB, g or GiB; 1k = 1024); found {text:?}"
                    ),
                )
            })
    }
}

/// Business IDs from a file, one a line (`#` starts a comment), added to `ids`; the error
/// names the file, and the line with what was wrong with it.
pub(super) fn read_merchant_file(path: &Path, ids: &mut HashSet<MerchantId>) -> Result<(), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let id = MerchantId::parse(line)
            .map_err(|e| format!("{} line {}: {e}", path.display(), number + 1))?;
        ids.insert(id);
    }
    Ok(())
}
