//! The grant budget for merchants the proxy has never had a token for: a token bucket, so a
//! flood of unknown or mistyped business IDs costs Poynt at most `rate` /token calls a second
//! (after a `burst`), while merchants that were granted before are never throttled by it.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A token bucket refilled continuously at `rate` per second up to `burst`.
pub(crate) struct GrantBudget {
    state: Mutex<Bucket>,
}

struct Bucket {
    rate: f64,
    burst: f64,
    available: f64,
    updated: Instant,
}

impl GrantBudget {
    /// A full bucket.
    pub(crate) fn new(rate_per_second: u32, burst: u32) -> Self {
        Self {
            state: Mutex::new(Bucket {
                rate: f64::from(rate_per_second),
                burst: f64::from(burst),
                available: f64::from(burst),
                updated: Instant::now(),
            }),
        }
    }

    fn bucket(&self) -> std::sync::MutexGuard<'_, Bucket> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Changes the rate and the size (a reload); what is available is kept, up to the size.
    pub(crate) fn retune(&self, rate_per_second: u32, burst: u32) {
        let mut bucket = self.bucket();
        bucket.rate = f64::from(rate_per_second);
        bucket.burst = f64::from(burst);
        bucket.available = bucket.available.min(bucket.burst);
    }

    /// Takes one grant from the budget, or says how long until one is available.
    pub(crate) fn take(&self) -> Result<(), Duration> {
        let mut bucket = self.bucket();
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.available = (bucket.available + elapsed * bucket.rate).min(bucket.burst);
        bucket.updated = now;
        if bucket.available >= 1.0 {
            bucket.available -= 1.0;
            return Ok(());
        }
        if bucket.rate <= 0.0 {
            return Err(Duration::from_secs(60));
        }
        Err(Duration::from_secs_f64(
            ((1.0 - bucket.available) / bucket.rate).min(60.0),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_burst_is_spent_then_the_rate_refills() {
        let budget = GrantBudget::new(20, 100);
        for n in 0..100 {
            assert!(budget.take().is_ok(), "grant {n} of the burst");
        }
        let wait = budget.take().expect_err("the bucket is empty");
        assert_eq!(wait, Duration::from_millis(50));
        tokio::time::advance(Duration::from_millis(500)).await;
        let refilled = (0..20).filter(|_| budget.take().is_ok()).count();
        assert_eq!(refilled, 10, "half a second at 20/s refills ten");
    }

    #[tokio::test(start_paused = true)]
    async fn refill_never_exceeds_the_burst() {
        let budget = GrantBudget::new(1000, 5);
        tokio::time::advance(Duration::from_secs(3600)).await;
        let taken = (0..100).filter(|_| budget.take().is_ok()).count();
        assert_eq!(taken, 5);
    }
}
