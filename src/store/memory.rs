//! The in-process backend: records live in this process's memory and die with it (today's
//! behaviour; the demo and most tests use it). Records are kept as they are, not sealed: they
//! sit beside the broker's cache, which holds the same tokens in the same memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
#[allow(
    clippy::disallowed_types,
    reason = "spent states expire by real time, as in the embedded (wall clock) and Redis (its TTL) stores"
)]
use std::time::Instant;

use super::error::StoreError;
use super::record::{Record, Saved};
use crate::metrics::StoreMetrics;
use poynt_wire::MerchantId;

/// Most unexpired onboarding states held at once. Spent states are never evicted early (that
/// would let one be used twice); past this many, new ones are refused until some expire.
pub const MAX_STATES: usize = 100_000;

/// Records and spent states in a mutex each; no lock is held across an await.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
    metrics: StoreMetrics,
}

#[derive(Default)]
struct Inner {
    records: Mutex<HashMap<MerchantId, Record>>,
    #[allow(
        clippy::disallowed_types,
        reason = "spent states expire by real time, as in the embedded (wall clock) and Redis (its TTL) stores"
    )]
    states: Mutex<HashMap<[u8; 16], Instant>>,
}

/// A poisoned map is still consistent: every critical section below is a single insert,
/// remove or read.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryStore {
    pub(super) fn new(metrics: StoreMetrics) -> Self {
        Self {
            inner: Arc::default(),
            metrics,
        }
    }

    pub(super) fn metrics(&self) -> &StoreMetrics {
        &self.metrics
    }

    pub(super) fn load(&self, merchant: MerchantId) -> Option<Record> {
        lock(&self.inner.records).get(&merchant).cloned()
    }

    pub(super) fn load_all(&self) -> Vec<(MerchantId, Record)> {
        lock(&self.inner.records)
            .iter()
            .map(|(m, r)| (*m, r.clone()))
            .collect()
    }

    pub(super) fn save(&self, merchant: MerchantId, record: &Record) -> Saved {
        let mut records = lock(&self.inner.records);
        match records.get(&merchant) {
            Some(stored) if stored.generation >= record.generation => Saved::Stale {
                current_generation: stored.generation,
            },
            _ => {
                records.insert(merchant, record.clone());
                Saved::Written
            }
        }
    }

    pub(super) fn delete(&self, merchant: MerchantId) -> bool {
        lock(&self.inner.records).remove(&merchant).is_some()
    }

    #[allow(
        clippy::disallowed_methods,
        clippy::disallowed_types,
        reason = "spent states expire by real time, as in the embedded (wall clock) and Redis (its TTL) stores"
    )]
    pub(super) fn spend_state(&self, id: &[u8; 16], ttl: Duration) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut states = lock(&self.inner.states);
        if states.get(id).is_some_and(|expiry| *expiry > now) {
            return Ok(false);
        }
        if states.len() >= MAX_STATES {
            states.retain(|_, expiry| *expiry > now);
            if states.len() >= MAX_STATES {
                return Err(StoreError::StatesFull {
                    capacity: MAX_STATES,
                });
            }
        }
        states.insert(*id, now + ttl);
        Ok(true)
    }
}
