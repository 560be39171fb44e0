//! The retry budget (Envoy's shape): retries may add at most `ratio` of the requests plus
//! `per_second`, so when Poynt fails broadly, retries cannot multiply its load. Kept as a
//! bucket: each request deposits `ratio` of a retry, time deposits `per_second`, a retry
//! takes one whole; savings are capped at ten seconds' floor plus ten retries, so a quiet
//! hour does not bank a storm.

use std::sync::Mutex;

/// Retries saved beyond the per-second floor's ten seconds.
const CAP_RETRIES: f64 = 10.0;
/// Seconds of the per-second floor that may be saved.
const CAP_SECONDS: f64 = 10.0;

/// The fleet-wide (per replica) retry budget.
pub(super) struct Budget {
    ratio: f64,
    per_second: f64,
    /// Retries available now, and when it was last brought up to date (nanoseconds since
    /// the governor's origin).
    state: Mutex<(f64, u64)>,
}

impl Budget {
    /// An empty budget: the first retry waits for deposits.
    pub(super) fn new(ratio: f64, per_second: f64) -> Self {
        Self {
            ratio,
            per_second,
            state: Mutex::new((0.0, 0)),
        }
    }

    /// A request started at `now`: its share of a retry.
    pub(super) fn deposit(&self, now: u64) {
        self.update(now, |saved| (saved + self.ratio, ()));
    }

    /// Takes one retry at `now`, if the budget has it.
    pub(super) fn take(&self, now: u64) -> bool {
        self.update(now, |saved| {
            if saved >= 1.0 {
                (saved - 1.0, true)
            } else {
                (saved, false)
            }
        })
    }

    fn update<T>(&self, now: u64, change: impl FnOnce(f64) -> (f64, T)) -> T {
        let mut state = self.state.lock().expect("retry budget lock poisoned");
        let (saved, last) = *state;
        let elapsed = now.saturating_sub(last) as f64 / 1e9;
        let cap = CAP_RETRIES + CAP_SECONDS * self.per_second;
        let (saved, result) = change((saved + elapsed * self.per_second).min(cap));
        *state = (saved.min(cap), now.max(last));
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn retries_stay_within_the_share_of_requests_plus_the_floor() {
        let budget = Budget::new(0.25, 0.0);
        let mut retries = 0;
        for _ in 0..100 {
            budget.deposit(0);
            if budget.take(0) {
                retries += 1;
            }
        }
        assert_eq!(retries, 25);
        let floor = Budget::new(0.2, 3.0);
        assert!(!floor.take(0));
        let taken = (0..10).filter(|_| floor.take(SECOND)).count();
        assert_eq!(taken, 3, "three a second without requests");
        let saved = (0..100).filter(|_| floor.take(3600 * SECOND)).count();
        assert_eq!(saved, 40, "an idle hour saves at most the cap");
    }
}
