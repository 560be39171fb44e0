//! Why the proxy refused a request itself, before any call to Poynt: a 429 the caller can
//! tell apart from one Poynt sent, or a 503 while the circuit breaker is open.

use std::time::Duration;

/// A refusal by the limits; the proxy answers it with `Retry-After`.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum LimitError {
    /// The merchant's or the caller's token bucket is empty.
    #[error(
        "expected at most {burst} requests at once and {per_second} per second for {scope}; found the limit spent, retry in {}",
        humantime::format_duration(*.retry_after)
    )]
    RateLimited {
        /// Whose bucket: "this merchant", or "caller NAME".
        scope: String,
        /// The bucket's size (`RateLimit-Limit`).
        burst: u32,
        /// The sustained rate.
        per_second: f64,
        /// When one request fits again.
        retry_after: Duration,
        /// When the bucket is full again (`RateLimit-Reset`).
        reset: Duration,
    },
    /// Poynt answered this merchant 429 and its cool-down runs.
    #[error(
        "Poynt is rate-limiting this merchant; its requests are held back for {} more (no call to Poynt was made)",
        humantime::format_duration(*.0)
    )]
    CoolingDown(Duration),
    /// The circuit breaker is open: Poynt failed too often in a row.
    #[error(
        "expected Poynt to be reachable; found it failing (circuit breaker open), next probe in {}",
        humantime::format_duration(*.0)
    )]
    BreakerOpen(Duration),
    /// Every one of the merchant's in-flight slots stayed busy for the whole wait.
    #[error(
        "expected a free slot among this merchant's {limit} requests in flight within {}; found none",
        humantime::format_duration(*.waited)
    )]
    InFlight {
        /// The merchant's cap.
        limit: u32,
        /// How long the request waited.
        waited: Duration,
    },
}

impl LimitError {
    /// How long the caller should wait (`Retry-After`).
    pub fn retry_after(&self) -> Duration {
        match self {
            Self::RateLimited { retry_after, .. } => *retry_after,
            Self::CoolingDown(wait) | Self::BreakerOpen(wait) => *wait,
            Self::InFlight { waited, .. } => *waited,
        }
    }

    /// Whether this is a 429 (a rate limit of the proxy's), not the breaker's 503.
    pub fn is_rate_limit(&self) -> bool {
        match self {
            Self::RateLimited { .. } | Self::CoolingDown(_) | Self::InFlight { .. } => true,
            Self::BreakerOpen(_) => false,
        }
    }
}
