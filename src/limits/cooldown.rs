//! A merchant's cool-down after Poynt answered it 429: until it ends, the merchant's
//! requests are answered by the proxy and never reach Poynt, so one throttled merchant
//! stops spending Poynt's patience (and nobody else's). Lock-free: two atomics per merchant,
//! read by every request.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// When a merchant's cool-down ends and how many 429s came in a row.
#[derive(Default)]
pub(super) struct Cooldown {
    /// End of the cool-down, nanoseconds since the governor's origin; 0 when none ran yet.
    until: AtomicU64,
    /// Poynt 429s in a row without another answer between them: the back-off exponent.
    streak: AtomicU32,
}

/// How long cool-downs last.
#[derive(Debug, Clone, Copy)]
pub(super) struct Backoff {
    /// The first wait without `Retry-After`.
    pub(super) initial: Duration,
    /// The cap on every wait.
    pub(super) max: Duration,
}

impl Cooldown {
    /// What is left of the cool-down at `now` (nanoseconds since the origin), if any.
    pub(super) fn remaining(&self, now: u64) -> Option<Duration> {
        let until = self.until.load(Ordering::Relaxed);
        (until > now).then(|| Duration::from_nanos(until - now))
    }

    /// Starts (or lengthens) the cool-down at `now` after a Poynt 429: `retry_after` when
    /// Poynt gave one, else `initial` doubled per 429 in a row, with equal jitter (half
    /// fixed, half random) so replicas and merchants do not return in step; capped by
    /// `max` either way. `unit` is a random number in [0, 1). Returns the wait.
    pub(super) fn start(
        &self,
        now: u64,
        retry_after: Option<Duration>,
        backoff: Backoff,
        unit: f64,
    ) -> Duration {
        let streak = self.streak.fetch_add(1, Ordering::Relaxed);
        let wait = match retry_after {
            Some(wait) => wait,
            None => {
                let full = backoff
                    .initial
                    .saturating_mul(1u32 << streak.min(20))
                    .min(backoff.max);
                full / 2 + full.div_f64(2.0).mul_f64(unit.clamp(0.0, 1.0))
            }
        }
        .min(backoff.max);
        self.hold(now, wait);
        wait
    }

    /// Holds the merchant back until `wait` past `now` at least: a cool-down another
    /// replica started (cluster scope), or this one's.
    pub(super) fn hold(&self, now: u64, wait: Duration) {
        let until = now.saturating_add(u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX));
        self.until.fetch_max(until, Ordering::Relaxed);
    }

    /// Poynt answered something other than 429: the next 429 starts from `initial` again.
    /// A plain load first, so the common case writes no shared cache line.
    pub(super) fn answered(&self) {
        if self.streak.load(Ordering::Relaxed) != 0 {
            self.streak.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;
    const BACKOFF: Backoff = Backoff {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(60),
    };

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let cooldown = Cooldown::default();
        assert_eq!(cooldown.remaining(0), None);
        let wait = cooldown.start(SECOND, Some(Duration::from_secs(5)), BACKOFF, 0.5);
        assert_eq!(wait, Duration::from_secs(5));
        assert_eq!(cooldown.remaining(2 * SECOND), Some(Duration::from_secs(4)));
        assert_eq!(cooldown.remaining(6 * SECOND), None);
        let capped = cooldown.start(0, Some(Duration::from_secs(3600)), BACKOFF, 0.5);
        assert_eq!(capped, Duration::from_secs(60));
    }

    #[test]
    fn without_retry_after_waits_double_with_jitter_until_poynt_answers_otherwise() {
        let cooldown = Cooldown::default();
        let waits: Vec<Duration> = (0..8)
            .map(|_| cooldown.start(0, None, BACKOFF, 1.0))
            .collect();
        assert_eq!(waits[0], Duration::from_secs(1));
        assert_eq!(waits[1], Duration::from_secs(2));
        assert_eq!(waits[5], Duration::from_secs(32));
        assert_eq!(waits[7], Duration::from_secs(60));
        assert_eq!(
            cooldown.start(0, None, BACKOFF, 0.0),
            Duration::from_secs(30)
        );
        cooldown.answered();
        assert_eq!(
            cooldown.start(0, None, BACKOFF, 0.0),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn a_shorter_cool_down_never_cuts_a_longer_one_short() {
        let cooldown = Cooldown::default();
        cooldown.start(0, Some(Duration::from_secs(10)), BACKOFF, 0.5);
        cooldown.start(0, Some(Duration::from_secs(1)), BACKOFF, 0.5);
        assert_eq!(cooldown.remaining(0), Some(Duration::from_secs(10)));
    }
}
