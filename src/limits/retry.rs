//! Which requests may be sent to Poynt again, and when: idempotent methods (GET, HEAD,
//! OPTIONS, PUT, DELETE; POST only when the caller named it with `Poynt-Request-Id` and
//! the operator opted in), after a connection failure or a 502/503/504, at most `max`
//! times, with exponential back-off and full jitter, and only while the budget allows.
//! The proxy only asks for bodies it kept whole and before any byte reached the caller.

use std::time::Duration;

use http::{Method, StatusCode};

/// The longest pause between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Whether a request of `method` may be sent again; `named` says the caller sent its own
/// `Poynt-Request-Id` (by which Poynt can recognise a repeated POST).
pub(super) fn may_repeat(method: &Method, named: bool, post_opt_in: bool) -> bool {
    match *method {
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE => true,
        Method::POST => named && post_opt_in,
        _ => false,
    }
}

/// Whether Poynt's answer is worth another attempt: its gateway said so.
pub(super) fn retryable_status(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    )
}

/// The pause before retry number `retry` (from 1): `base` doubled per retry, capped, times
/// `unit` in [0, 1) (full jitter, so retries of many callers spread out).
pub(super) fn backoff(base: Duration, retry: u32, unit: f64) -> Duration {
    base.saturating_mul(1u32 << retry.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
        .mul_f64(unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotent_methods_repeat_and_post_only_named_and_opted_in() {
        for method in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PUT,
            Method::DELETE,
        ] {
            assert!(may_repeat(&method, false, false), "{method}");
        }
        assert!(!may_repeat(&Method::PATCH, true, true));
        assert!(!may_repeat(&Method::POST, true, false));
        assert!(!may_repeat(&Method::POST, false, true));
        assert!(may_repeat(&Method::POST, true, true));
        assert!(retryable_status(StatusCode::SERVICE_UNAVAILABLE));
        assert!(!retryable_status(StatusCode::INTERNAL_SERVER_ERROR));
        assert!(!retryable_status(StatusCode::TOO_MANY_REQUESTS));
    }

    #[test]
    fn backoff_doubles_is_capped_and_jittered() {
        let base = Duration::from_millis(25);
        assert_eq!(backoff(base, 1, 1.0), base);
        assert_eq!(backoff(base, 3, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(base, 30, 1.0), MAX_BACKOFF);
        assert_eq!(backoff(base, 2, 0.5), Duration::from_millis(25));
    }
}
