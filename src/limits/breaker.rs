//! The circuit breaker toward Poynt: after `failures` upstream failures in a row (no answer
//! in time, no connection, a 5xx) it opens for `open_for`, and every request is refused at
//! once instead of each waiting out its own timeout; then one request at a time is let
//! through as a probe (half-open) until one succeeds and closes it. One breaker for the
//! whole upstream, shared by every worker: Poynt is one origin, and its outage is everyone's.
//! Lock-free: the request path reads one atomic while it is closed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// A change of the breaker's state, for its gauge and log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Transition {
    /// It opened (or a failed probe reopened it).
    Opened,
    /// A probe succeeded: closed again.
    Closed,
}

/// The breaker's state.
pub(super) struct Breaker {
    /// Failures in a row needed to open.
    threshold: u32,
    /// How long it stays open before probing.
    open_for: Duration,
    /// Failures in a row so far.
    failures: AtomicU32,
    /// Nanoseconds since the origin when it may probe; 0 while closed.
    open_until: AtomicU64,
    /// Whether a probe is out (half-open lets one through at a time).
    probing: Arc<AtomicBool>,
}

/// A half-open probe in flight; dropping it without an outcome (the caller left, a later
/// limit refused it) lets the next request probe instead.
#[derive(Debug)]
pub(super) struct Probe(Arc<AtomicBool>);

impl Drop for Probe {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Breaker {
    /// A closed breaker.
    pub(super) fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            threshold,
            open_for,
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probing: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Lets a request through at `now` (`Ok(Some)`: as the probe), or says how long until
    /// the next probe may go.
    pub(super) fn admit(&self, now: u64) -> Result<Option<Probe>, Duration> {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Ok(None);
        }
        if now < until {
            return Err(Duration::from_nanos(until - now));
        }
        match self
            .probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Ok(Some(Probe(self.probing.clone()))),
            Err(_) => Err(self.open_for),
        }
    }

    /// Poynt answered (not 5xx): closes the breaker if it was open.
    pub(super) fn succeeded(&self) -> Option<Transition> {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.open_until.load(Ordering::Acquire) == 0 {
            return None;
        }
        (self.open_until.swap(0, Ordering::AcqRel) != 0).then_some(Transition::Closed)
    }

    /// Poynt failed at `now`: opens the breaker at the threshold, or again after a failed
    /// probe; failures of requests sent before it opened leave the window as it is.
    pub(super) fn failed(&self, now: u64) -> Option<Transition> {
        let failures = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let until = self.open_until.load(Ordering::Acquire);
        let open = until != 0;
        let probe_failed = open && now >= until;
        if (open && !probe_failed) || (!open && failures < self.threshold) {
            return None;
        }
        let next = now
            .saturating_add(u64::try_from(self.open_for.as_nanos()).unwrap_or(u64::MAX))
            .max(1);
        self.open_until
            .compare_exchange(until, next, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            .then_some(Transition::Opened)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn opens_after_the_threshold_refuses_then_one_probe_closes_it() {
        let breaker = Breaker::new(3, Duration::from_secs(5));
        assert_eq!(breaker.failed(0), None);
        assert_eq!(breaker.succeeded(), None, "a success resets the count");
        assert_eq!(breaker.failed(0), None);
        assert_eq!(breaker.failed(0), None);
        assert!(breaker.admit(0).is_ok());
        assert_eq!(breaker.failed(SECOND), Some(Transition::Opened));
        assert_eq!(
            breaker.admit(2 * SECOND).unwrap_err(),
            Duration::from_secs(4)
        );
        // Failures of requests that were already in flight do not extend the window.
        assert_eq!(breaker.failed(2 * SECOND), None);
        let probe = breaker.admit(6 * SECOND).unwrap().expect("the probe");
        assert!(breaker.admit(6 * SECOND).is_err(), "one probe at a time");
        assert_eq!(breaker.succeeded(), Some(Transition::Closed));
        drop(probe);
        assert!(matches!(breaker.admit(6 * SECOND), Ok(None)));
    }

    #[test]
    fn a_failed_probe_reopens_and_an_abandoned_one_lets_another_go() {
        let breaker = Breaker::new(1, Duration::from_secs(5));
        assert_eq!(breaker.failed(0), Some(Transition::Opened));
        let abandoned = breaker.admit(5 * SECOND).unwrap().expect("a probe");
        drop(abandoned);
        let probe = breaker.admit(5 * SECOND).unwrap().expect("another probe");
        assert_eq!(breaker.failed(5 * SECOND), Some(Transition::Opened));
        drop(probe);
        assert_eq!(
            breaker.admit(6 * SECOND).unwrap_err(),
            Duration::from_secs(4)
        );
    }
}
