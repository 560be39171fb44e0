//! The `limits:` section: per-merchant token buckets, in-flight caps and Poynt-429
//! cool-downs, with per-merchant overrides. Builds [`LimitsConfig`].

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;

use super::error::ConfigError;
use super::fields::{MAX_SHORT_TIMEOUT, count_within, duration_at_most, duration_within, invalid};
use crate::limits::config::{
    BreakerConfig, DEFAULT_BREAKER_FAILURES, DEFAULT_BREAKER_OPEN_FOR, DEFAULT_COOLDOWN_INITIAL,
    DEFAULT_COOLDOWN_MAX, DEFAULT_IN_FLIGHT_WAIT, DEFAULT_MAX_IN_FLIGHT, LimitsConfig,
    MerchantLimits, Mode, Rate, RetryConfig, Scope,
};
use poynt_wire::MerchantId;

/// Highest per-merchant rate accepted: far above what Poynt grants one merchant, low
/// enough that the bucket's nanosecond arithmetic never rounds an interval to nothing.
const MAX_PER_SECOND: f64 = 1_000_000.0;
/// Highest in-flight cap: beyond it the cap no longer protects anything.
const MAX_IN_FLIGHT: u32 = 100_000;

/// The `limits:` section as written; every key has a default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLimits {
    mode: RawMode,
    scope: RawScope,
    replicas: u32,
    local_share: Option<f64>,
    rate: Option<RawRate>,
    max_in_flight: u32,
    #[serde(with = "humantime_serde")]
    in_flight_wait: Duration,
    #[serde(with = "humantime_serde")]
    cooldown_initial: Duration,
    #[serde(with = "humantime_serde")]
    cooldown_max: Duration,
    merchants: HashMap<String, RawOverride>,
    breaker: Option<RawBreaker>,
    retries: RawRetries,
    callers: HashMap<String, RawRate>,
}

/// `limits.retries` as written; on unless `enabled: false`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRetries {
    enabled: bool,
    max: u32,
    budget_ratio: f64,
    budget_per_second: f64,
    #[serde(with = "humantime_serde")]
    backoff: Duration,
    post_with_request_id: bool,
}

impl Default for RawRetries {
    fn default() -> Self {
        let defaults = RetryConfig::default();
        Self {
            enabled: true,
            max: defaults.max,
            budget_ratio: defaults.budget_ratio,
            budget_per_second: defaults.budget_per_second,
            backoff: defaults.backoff,
            post_with_request_id: defaults.post_with_request_id,
        }
    }
}

impl RawRetries {
    /// The checked settings; `None` when retries are turned off.
    fn validate(self) -> Result<Option<RetryConfig>, ConfigError> {
        if !self.enabled {
            return Ok(None);
        }
        if !(0.0..=1.0).contains(&self.budget_ratio) {
            return Err(invalid(
                "limits.retries.budget_ratio",
                format!(
                    "expected a share of requests between 0 and 1; found {}",
                    self.budget_ratio
                ),
            ));
        }
        if !(0.0..=MAX_PER_SECOND).contains(&self.budget_per_second) {
            return Err(invalid(
                "limits.retries.budget_per_second",
                format!(
                    "expected between 0 and {MAX_PER_SECOND}; found {}",
                    self.budget_per_second
                ),
            ));
        }
        Ok(Some(RetryConfig {
            max: count_within("limits.retries.max", self.max, 1, 10)?,
            budget_ratio: self.budget_ratio,
            budget_per_second: self.budget_per_second,
            backoff: duration_at_most("limits.retries.backoff", self.backoff, MAX_SHORT_TIMEOUT)?,
            post_with_request_id: self.post_with_request_id,
        }))
    }
}

/// `limits.breaker` as written; present (even `{}`) turns the breaker on.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawBreaker {
    failures: u32,
    #[serde(with = "humantime_serde")]
    open_for: Duration,
}

impl Default for RawBreaker {
    fn default() -> Self {
        Self {
            failures: DEFAULT_BREAKER_FAILURES,
            open_for: DEFAULT_BREAKER_OPEN_FOR,
        }
    }
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            mode: RawMode::Enforce,
            scope: RawScope::Local,
            replicas: 1,
            local_share: None,
            rate: None,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            in_flight_wait: DEFAULT_IN_FLIGHT_WAIT,
            cooldown_initial: DEFAULT_COOLDOWN_INITIAL,
            cooldown_max: DEFAULT_COOLDOWN_MAX,
            merchants: HashMap::new(),
            breaker: None,
            retries: RawRetries::default(),
            callers: HashMap::new(),
        }
    }
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum RawMode {
    Enforce,
    Observe,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum RawScope {
    Local,
    Cluster,
}

/// Most replicas `limits.replicas` may name: a share below a thousandth of a limit is
/// no limit anyone could size.
const MAX_REPLICAS: u32 = 1000;

#[derive(Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct RawRate {
    per_second: f64,
    burst: u32,
}

/// One merchant's override: what it names replaces the section's value.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverride {
    rate: Option<RawRate>,
    max_in_flight: Option<u32>,
}

impl RawRate {
    fn validate(self, key: &'static str) -> Result<Rate, ConfigError> {
        if !(self.per_second > 0.0 && self.per_second <= MAX_PER_SECOND) {
            return Err(invalid(
                key,
                format!(
                    "expected per_second above 0 and at most {MAX_PER_SECOND}; found {}",
                    self.per_second
                ),
            ));
        }
        let burst = count_within(key, self.burst, 1, u32::MAX)?;
        Ok(Rate {
            per_second: self.per_second,
            burst,
        })
    }
}

impl RawLimits {
    pub(super) fn validate(self) -> Result<LimitsConfig, ConfigError> {
        let default = MerchantLimits {
            rate: self.rate.map(|r| r.validate("limits.rate")).transpose()?,
            max_in_flight: count_within(
                "limits.max_in_flight",
                self.max_in_flight,
                1,
                MAX_IN_FLIGHT,
            )?,
        };
        let mut merchants = HashMap::with_capacity(self.merchants.len());
        for (id, raw) in self.merchants {
            let merchant = MerchantId::parse(id.trim())
                .map_err(|e| invalid("limits.merchants", format!("key {id:?}: {e}")))?;
            let limits = MerchantLimits {
                rate: match raw.rate {
                    Some(rate) => Some(rate.validate("limits.merchants.*.rate")?),
                    None => default.rate,
                },
                max_in_flight: match raw.max_in_flight {
                    Some(cap) => {
                        count_within("limits.merchants.*.max_in_flight", cap, 1, MAX_IN_FLIGHT)?
                    }
                    None => default.max_in_flight,
                },
            };
            merchants.insert(merchant, limits);
        }
        let cooldown_max =
            duration_within("limits.cooldown_max", self.cooldown_max, MAX_SHORT_TIMEOUT)?;
        let cooldown_initial = duration_within(
            "limits.cooldown_initial",
            self.cooldown_initial,
            cooldown_max,
        )?;
        let replicas = count_within("limits.replicas", self.replicas, 1, MAX_REPLICAS)?;
        let local_share = match self.local_share {
            Some(share) if share > 0.0 && share <= 1.0 => share,
            Some(share) => {
                return Err(invalid(
                    "limits.local_share",
                    format!("expected a share of each limit above 0 and at most 1; found {share}"),
                ));
            }
            None => 1.0 / f64::from(replicas),
        };
        Ok(LimitsConfig {
            mode: match self.mode {
                RawMode::Enforce => Mode::Enforce,
                RawMode::Observe => Mode::Observe,
            },
            scope: match self.scope {
                RawScope::Local => Scope::Local,
                RawScope::Cluster => Scope::Cluster,
            },
            local_share,
            default,
            merchants,
            in_flight_wait: duration_at_most(
                "limits.in_flight_wait",
                self.in_flight_wait,
                MAX_SHORT_TIMEOUT,
            )?,
            cooldown_initial,
            cooldown_max,
            breaker: self
                .breaker
                .map(|raw| -> Result<BreakerConfig, ConfigError> {
                    Ok(BreakerConfig {
                        failures: count_within("limits.breaker.failures", raw.failures, 1, 10_000)?,
                        open_for: duration_within(
                            "limits.breaker.open_for",
                            raw.open_for,
                            MAX_SHORT_TIMEOUT,
                        )?,
                    })
                })
                .transpose()?,
            retries: self.retries.validate()?,
            callers: self
                .callers
                .into_iter()
                .map(|(name, rate)| Ok((name, rate.validate("limits.callers.*")?)))
                .collect::<Result<_, ConfigError>>()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::config::{
        DEFAULT_RETRIES_MAX, DEFAULT_RETRY_BUDGET_PER_SECOND, DEFAULT_RETRY_BUDGET_RATIO,
    };

    fn parse(yaml: &str) -> Result<LimitsConfig, ConfigError> {
        serde_yaml::from_str::<RawLimits>(yaml).unwrap().validate()
    }

    #[test]
    fn defaults_and_overrides() {
        let config = parse("{}").unwrap();
        assert_eq!(config, LimitsConfig::default());
        let merchant = "c9580c24-b61e-4e0d-ad26-1dd1d3943d2c";
        let config = parse(&format!(
            "mode: observe\nrate: {{per_second: 5, burst: 10}}\nmerchants:\n  {merchant}:\n    max_in_flight: 2\n"
        ))
        .unwrap();
        assert_eq!(config.mode, Mode::Observe);
        let special = config.for_merchant(MerchantId::parse(merchant).unwrap());
        assert_eq!(special.max_in_flight, 2);
        assert_eq!(special.rate, config.default.rate);
        let breaker = parse("breaker: {}").unwrap().breaker.expect("on");
        assert_eq!(breaker.failures, DEFAULT_BREAKER_FAILURES);
        let cluster = parse("scope: cluster\nreplicas: 4").unwrap();
        assert_eq!(cluster.scope, Scope::Cluster);
        assert_eq!(cluster.local_share, 0.25);
        assert_eq!(parse("local_share: 0.5").unwrap().local_share, 0.5);
        let retries = parse("{}").unwrap().retries.expect("on by default");
        assert_eq!(retries.max, DEFAULT_RETRIES_MAX);
        assert_eq!(retries.budget_ratio, DEFAULT_RETRY_BUDGET_RATIO);
        assert_eq!(retries.budget_per_second, DEFAULT_RETRY_BUDGET_PER_SECOND);
        assert!(!retries.post_with_request_id);
        assert_eq!(parse("retries: {enabled: false}").unwrap().retries, None);
    }

    #[test]
    fn nonsense_names_its_key() {
        for (yaml, key, found) in [
            ("rate: {per_second: 0, burst: 1}", "limits.rate", "found 0"),
            ("rate: {per_second: 1, burst: 0}", "limits.rate", "found 0"),
            ("max_in_flight: 0", "limits.max_in_flight", "found 0"),
            ("cooldown_max: 1h", "limits.cooldown_max", "found 1h"),
            (
                "cooldown_max: 5s\ncooldown_initial: 10s",
                "limits.cooldown_initial",
                "found 10s",
            ),
            (
                "merchants: {abc: {max_in_flight: 1}}",
                "limits.merchants",
                "\"abc\"",
            ),
            ("replicas: 0", "limits.replicas", "found 0"),
            ("local_share: 1.5", "limits.local_share", "found 1.5"),
            ("local_share: 0", "limits.local_share", "found 0"),
            (
                "breaker: {failures: 0}",
                "limits.breaker.failures",
                "found 0",
            ),
            (
                "breaker: {open_for: 0s}",
                "limits.breaker.open_for",
                "found 0s",
            ),
        ] {
            let error = parse(yaml).unwrap_err().to_string();
            assert!(
                error.contains(key) && error.contains(found),
                "{yaml}: {error}"
            );
        }
    }
}
