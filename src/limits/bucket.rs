//! A merchant's token bucket, kept as GCRA (the generic cell rate algorithm): one number,
//! the theoretical arrival time, instead of a count and a refill clock. A request is allowed
//! when taking it keeps that time within `burst` intervals of now. One number per merchant
//! is also what a shared (Redis) limit would keep, with the same arithmetic in a script.

use std::sync::Mutex;
use std::time::Duration;

use super::config::Rate;

/// What the bucket said, with what the `RateLimit-*` headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Decision {
    /// Whether the request fits.
    pub(super) allowed: bool,
    /// Requests that would still fit right now, after this one.
    pub(super) remaining: u32,
    /// When a refused request would fit (zero when allowed).
    pub(super) retry_after: Duration,
    /// When the bucket is full again.
    pub(super) reset: Duration,
}

/// The bucket's state: the theoretical arrival time, nanoseconds since the governor's origin.
#[derive(Default)]
pub(super) struct Bucket {
    tat: Mutex<u64>,
}

impl Bucket {
    /// Takes one request at `now` (nanoseconds since the origin) if it fits.
    pub(super) fn take(&self, rate: Rate, now: u64) -> Decision {
        let interval = (1e9 / rate.per_second).max(1.0) as u64;
        let window = interval.saturating_mul(u64::from(rate.burst));
        let mut tat = self.tat.lock().expect("bucket lock poisoned");
        let base = (*tat).max(now);
        let next = base.saturating_add(interval);
        if next - now > window {
            return Decision {
                allowed: false,
                remaining: 0,
                retry_after: Duration::from_nanos(next - now - window),
                reset: Duration::from_nanos(base - now),
            };
        }
        *tat = next;
        Decision {
            allowed: true,
            remaining: u32::try_from((window - (next - now)) / interval).unwrap_or(u32::MAX),
            retry_after: Duration::ZERO,
            reset: Duration::from_nanos(next - now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn burst_then_the_sustained_rate_with_an_exact_retry_after() {
        let bucket = Bucket::default();
        let rate = Rate {
            per_second: 10.0,
            burst: 3,
        };
        let remaining: Vec<u32> = (0..3).map(|_| bucket.take(rate, 0).remaining).collect();
        assert_eq!(remaining, [2, 1, 0]);
        let refused = bucket.take(rate, 0);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, Duration::from_millis(100));
        assert_eq!(refused.reset, Duration::from_millis(300));
        assert!(!bucket.take(rate, 99 * MS).allowed);
        assert!(bucket.take(rate, 100 * MS).allowed);
        // A quiet spell refills the whole burst, no more.
        let later: Vec<bool> = (0..4)
            .map(|_| bucket.take(rate, 10_000 * MS).allowed)
            .collect();
        assert_eq!(later, [true, true, true, false]);
    }

    #[test]
    fn refusals_take_nothing() {
        let bucket = Bucket::default();
        let rate = Rate {
            per_second: 1.0,
            burst: 1,
        };
        assert!(bucket.take(rate, 0).allowed);
        for _ in 0..100 {
            assert!(!bucket.take(rate, 500 * MS).allowed);
        }
        assert!(bucket.take(rate, 1000 * MS).allowed);
    }
}
