//! One worker's idle HTTP/1.1 connections to Poynt. A request takes the most recently used
//! one (the likeliest to be alive, its buffers warm in the cache) and its response body puts
//! it back when the body is complete. The worker is a single thread, so the lock is never
//! contended; it only makes the pool safe to share at all.
//!
//! Idle connections are not watched by a task: one that Poynt closed, or that sent bytes
//! nobody asked for, is noticed when it is taken (a readiness check that costs no syscall
//! unless the socket became readable) and by a sweep every [`SWEEP_INTERVAL`] while the
//! pool holds any, which also closes connections left idle through [`EXPIRY_SWEEPS`]
//! sweeps (48 to 60 s). Counting sweeps instead of timing each connection keeps the clock
//! off the request path (what a clock read costs: docs/BENCHMARKS.md, "CPU per proxied
//! request").

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use super::h1::Conn;
use super::origin::IDLE_TIMEOUT;

/// Sweeps a connection may stay idle through.
const EXPIRY_SWEEPS: u64 = 5;
/// How often idle connections are checked while there are any.
const SWEEP_INTERVAL: Duration = IDLE_TIMEOUT.checked_div(EXPIRY_SWEEPS as u32).unwrap();

/// Idle connections, most recently used last.
#[derive(Default)]
pub(crate) struct Pool {
    idle: Mutex<Vec<Idle>>,
    sweeping: AtomicBool,
    /// Sweeps so far.
    sweeps: AtomicU64,
}

struct Idle {
    conn: Box<Conn>,
    /// The sweep count when it was put back.
    since: u64,
}

impl Pool {
    fn idle(&self) -> MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used connection that is still usable; the unusable ones met on the
    /// way are closed.
    pub(crate) fn take(&self) -> Option<Box<Conn>> {
        let mut idle = self.idle();
        while let Some(mut entry) = idle.pop() {
            if entry.conn.is_idle_usable() {
                return Some(entry.conn);
            }
        }
        None
    }

    /// Keeps `conn` for the next request.
    pub(crate) fn put(self: &Arc<Self>, conn: Box<Conn>) {
        self.idle().push(Idle {
            conn,
            since: self.sweeps.load(Ordering::Acquire),
        });
        if !self.sweeping.swap(true, Ordering::AcqRel) {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(sweep(Arc::downgrade(self)));
                }
                Err(_) => self.sweeping.store(false, Ordering::Release),
            }
        }
    }
}

/// Closes dead and expired idle connections until the pool is empty or gone.
async fn sweep(pool: Weak<Pool>) {
    loop {
        tokio::time::sleep(SWEEP_INTERVAL).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let sweep = pool.sweeps.fetch_add(1, Ordering::AcqRel) + 1;
        let mut idle = pool.idle();
        idle.retain_mut(|entry| sweep - entry.since < EXPIRY_SWEEPS && entry.conn.is_idle_usable());
        if idle.is_empty() {
            // Under the lock: a connection put back after this starts a new sweep.
            pool.sweeping.store(false, Ordering::Release);
            return;
        }
    }
}
