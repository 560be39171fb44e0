//! The `tokens:` section: the broker's refresh point, back-off and grant limits. Builds
//! [`TokensConfig`].

use std::time::Duration;

use serde::Deserialize;

use super::error::ConfigError;
use super::fields::{
    MAX_LONG_TIMEOUT, MAX_SHORT_TIMEOUT, count_within, duration_at_most, duration_within, invalid,
};
use crate::token::config::TokensConfig;

/// The `tokens:` section as written; every key has a default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawTokens {
    refresh_at: f64,
    refresh_jitter: f64,
    #[serde(with = "humantime_serde")]
    expiry_margin: Duration,
    #[serde(with = "humantime_serde")]
    backoff_initial: Duration,
    #[serde(with = "humantime_serde")]
    backoff_max: Duration,
    max_concurrent_grants: usize,
    max_merchants: u64,
    new_merchant_grants_per_second: u32,
    new_merchant_grant_burst: u32,
    #[serde(with = "humantime_serde")]
    unauthorized_min_token_age: Duration,
    #[serde(with = "humantime_serde")]
    unauthorized_renewal_interval: Duration,
}

impl Default for RawTokens {
    fn default() -> Self {
        Self {
            refresh_at: 0.8,
            refresh_jitter: 0.1,
            expiry_margin: Duration::from_secs(30),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            max_concurrent_grants: 16,
            max_merchants: 1_000_000,
            new_merchant_grants_per_second: 20,
            new_merchant_grant_burst: 100,
            unauthorized_min_token_age: Duration::from_secs(5),
            unauthorized_renewal_interval: Duration::from_secs(30),
        }
    }
}

impl RawTokens {
    pub(super) fn validate(self) -> Result<TokensConfig, ConfigError> {
        if !(0.1..=0.95).contains(&self.refresh_at) {
            return Err(invalid(
                "tokens.refresh_at",
                format!(
                    "expected a fraction of the lifetime between 0.1 and 0.95; found {}",
                    self.refresh_at
                ),
            ));
        }
        if !(0.0..=0.25).contains(&self.refresh_jitter) {
            return Err(invalid(
                "tokens.refresh_jitter",
                format!(
                    "expected a fraction between 0 and 0.25; found {}",
                    self.refresh_jitter
                ),
            ));
        }
        if self.refresh_at + self.refresh_jitter > 0.9 {
            return Err(invalid(
                "tokens.refresh_jitter",
                format!(
                    "expected refresh_at + refresh_jitter to be at most 0.9, so renewal always starts before the token's last twentieth; found {} + {}",
                    self.refresh_at, self.refresh_jitter
                ),
            ));
        }
        if self.backoff_max < self.backoff_initial {
            return Err(invalid(
                "tokens.backoff_max",
                format!(
                    "expected at least tokens.backoff_initial ({}); found {}",
                    humantime::format_duration(self.backoff_initial),
                    humantime::format_duration(self.backoff_max)
                ),
            ));
        }
        Ok(TokensConfig {
            refresh_at: self.refresh_at,
            refresh_jitter: self.refresh_jitter,
            expiry_margin: duration_at_most(
                "tokens.expiry_margin",
                self.expiry_margin,
                MAX_LONG_TIMEOUT,
            )?,
            backoff_initial: duration_within(
                "tokens.backoff_initial",
                self.backoff_initial,
                MAX_LONG_TIMEOUT,
            )?,
            backoff_max: duration_at_most(
                "tokens.backoff_max",
                self.backoff_max,
                MAX_LONG_TIMEOUT,
            )?,
            max_concurrent_grants: count_within(
                "tokens.max_concurrent_grants",
                self.max_concurrent_grants,
                1,
                10_000,
            )?,
            max_merchants: count_within(
                "tokens.max_merchants",
                self.max_merchants,
                1,
                100_000_000,
            )?,
            new_merchant_grants_per_second: count_within(
                "tokens.new_merchant_grants_per_second",
                self.new_merchant_grants_per_second,
                1,
                100_000,
            )?,
            new_merchant_grant_burst: count_within(
                "tokens.new_merchant_grant_burst",
                self.new_merchant_grant_burst,
                1,
                1_000_000,
            )?,
            unauthorized_min_token_age: duration_at_most(
                "tokens.unauthorized_min_token_age",
                self.unauthorized_min_token_age,
                MAX_SHORT_TIMEOUT,
            )?,
            unauthorized_renewal_interval: duration_at_most(
                "tokens.unauthorized_renewal_interval",
                self.unauthorized_renewal_interval,
                MAX_LONG_TIMEOUT,
            )?,
        })
    }
}
