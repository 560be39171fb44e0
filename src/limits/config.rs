//! The checked settings of `limits:`: what `config::limits` builds and [`super::Governor`]
//! obeys. Defaults are named here so the YAML reader, the docs and the tests share them.

use std::collections::HashMap;
use std::time::Duration;

use poynt_wire::MerchantId;

/// Requests one merchant may have in flight toward Poynt, unless overridden (Envoy's
/// `max_requests` per cluster, applied per merchant).
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 64;
/// How long a request waits for one of its merchant's in-flight slots before its 429.
pub const DEFAULT_IN_FLIGHT_WAIT: Duration = Duration::from_secs(1);
/// The first cool-down after a Poynt 429 that carried no usable `Retry-After`; each further
/// 429 in a row doubles it.
pub const DEFAULT_COOLDOWN_INITIAL: Duration = Duration::from_secs(1);
/// The longest cool-down, whatever Poynt's `Retry-After` says.
pub const DEFAULT_COOLDOWN_MAX: Duration = Duration::from_secs(60);

/// Upstream failures in a row that open the circuit breaker, once `limits.breaker` is set.
pub const DEFAULT_BREAKER_FAILURES: u32 = 5;
/// How long an open breaker refuses before it lets a probe through.
pub const DEFAULT_BREAKER_OPEN_FOR: Duration = Duration::from_secs(5);

/// The circuit breaker toward Poynt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Upstream failures in a row (no connection, no answer in time, 5xx) that open it.
    pub failures: u32,
    /// How long it stays open before one request probes.
    pub open_for: Duration,
}

/// Retries of a failed exchange (on unless `limits.retries.enabled` is false).
pub const DEFAULT_RETRIES_MAX: u32 = 2;
/// Retries may add this share of the requests...
pub const DEFAULT_RETRY_BUDGET_RATIO: f64 = 0.2;
/// ...plus this many a second.
pub const DEFAULT_RETRY_BUDGET_PER_SECOND: f64 = 3.0;
/// The first pause before a retry (doubled per retry, with full jitter).
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(25);

/// Retries toward Poynt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryConfig {
    /// Retries per request at most.
    pub max: u32,
    /// Share of requests retries may add.
    pub budget_ratio: f64,
    /// Retries a second allowed on top of the share.
    pub budget_per_second: f64,
    /// The first back-off.
    pub backoff: Duration,
    /// Whether a POST the caller named with `Poynt-Request-Id` may be retried.
    pub post_with_request_id: bool,
}

impl Default for RetryConfig {
    /// On by default, as nginx's `proxy_next_upstream` and Kong's retries are: an idempotent
    /// request that met a dropped connection or a 503 is worth one more try, and the budget
    /// keeps retries from multiplying an outage.
    fn default() -> Self {
        Self {
            max: DEFAULT_RETRIES_MAX,
            budget_ratio: DEFAULT_RETRY_BUDGET_RATIO,
            budget_per_second: DEFAULT_RETRY_BUDGET_PER_SECOND,
            backoff: DEFAULT_RETRY_BACKOFF,
            post_with_request_id: false,
        }
    }
}

/// Whether a decision refuses or only counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Refuse with 429.
    #[default]
    Enforce,
    /// Count (metrics, access log) and forward anyway: to size limits on real traffic first.
    Observe,
}

impl Mode {
    /// The metric label and YAML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Observe => "observe",
        }
    }
}

/// Where the token buckets and cool-downs are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// In each replica: N replicas admit up to N times each limit.
    #[default]
    Local,
    /// In the Redis store, shared by every replica: one limit for the fleet.
    Cluster,
}

/// A token bucket: `per_second` requests sustained, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Requests per second the bucket refills.
    pub per_second: f64,
    /// The bucket's size: requests allowed back to back after a quiet spell.
    pub burst: u32,
}

/// One merchant's limits, after overrides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MerchantLimits {
    /// The merchant's bucket; `None`: no rate limit.
    pub rate: Option<Rate>,
    /// The merchant's in-flight cap.
    pub max_in_flight: u32,
}

/// Traffic governance toward Poynt.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitsConfig {
    /// Enforce or only observe the local limits (rate, in-flight, cool-down).
    pub mode: Mode,
    /// Where buckets and cool-downs are kept (in-flight caps are always per replica).
    pub scope: Scope,
    /// With `Scope::Cluster`, the share of each rate one replica enforces alone while Redis
    /// is unreachable: 1 / `limits.replicas`, or `limits.local_share`.
    pub local_share: f64,
    /// Limits of every merchant without an override.
    pub default: MerchantLimits,
    /// Per-merchant limits, replacing `default` whole for that merchant.
    pub merchants: HashMap<MerchantId, MerchantLimits>,
    /// Bounded wait for an in-flight slot.
    pub in_flight_wait: Duration,
    /// First cool-down without `Retry-After`.
    pub cooldown_initial: Duration,
    /// Cap on every cool-down.
    pub cooldown_max: Duration,
    /// The circuit breaker; `None`: off (every request waits for its own timeout).
    pub breaker: Option<BreakerConfig>,
    /// Retries; `None`: turned off (every failure reaches the caller).
    pub retries: Option<RetryConfig>,
    /// Token buckets per caller (`limits.callers`), by the names `callers.policy` gives:
    /// one caller cannot spend every merchant's share of Poynt.
    pub callers: HashMap<String, Rate>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Enforce,
            scope: Scope::Local,
            local_share: 1.0,
            default: MerchantLimits {
                rate: None,
                max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            },
            merchants: HashMap::new(),
            in_flight_wait: DEFAULT_IN_FLIGHT_WAIT,
            cooldown_initial: DEFAULT_COOLDOWN_INITIAL,
            cooldown_max: DEFAULT_COOLDOWN_MAX,
            breaker: None,
            retries: Some(RetryConfig::default()),
            callers: HashMap::new(),
        }
    }
}

impl Rate {
    /// The share `share` (in (0, 1]) of this rate: what one replica enforces alone while the
    /// cluster-wide limits cannot be reached. The burst keeps at least one request.
    pub fn share(self, share: f64) -> Rate {
        Rate {
            per_second: self.per_second * share,
            burst: ((f64::from(self.burst) * share).round() as u32).max(1),
        }
    }
}

impl LimitsConfig {
    /// The limits `merchant` is held to.
    pub fn for_merchant(&self, merchant: MerchantId) -> MerchantLimits {
        self.merchants
            .get(&merchant)
            .copied()
            .unwrap_or(self.default)
    }
}
