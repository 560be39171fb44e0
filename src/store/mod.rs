//! The token store: where each merchant's record (access token, refresh token, expiry, grant,
//! generation) outlives the process and, with Redis, is shared by replicas.
//!
//! One interface over three backends, dispatched by [`Store`]'s variants (no trait objects):
//! - [`memory`]: this process only (today's behaviour; the demo and most tests);
//! - [`embedded`]: one redb file, sealed, held by one process (the default);
//! - [`redis`]: shared by replicas, sealed, with a per-merchant lock and an events channel.
//!
//! Records are sealed ([`seal`]) under keys from [`keys`] before they reach a file or Redis.
//! Every save is a compare-and-set on the record's generation (the fencing token), so a
//! writer that lost its lock cannot overwrite a newer record. A cache hit in the broker never
//! reaches this module.
//!
//! The settings are [`config`]'s, the errors `error`'s. This file holds the [`Store`] enum and
//! imports its backends; they import each other's parts, never this file.

pub mod config;
pub mod embedded;
mod error;
pub mod keys;
pub mod memory;
pub mod record;
pub mod redis;
pub mod seal;

use std::time::Duration;
#[allow(
    clippy::disallowed_types,
    reason = "a store call's latency is real I/O time, the same on a paused test clock"
)]
use std::time::Instant;

pub use error::{StoreError, Unavailable};
pub use record::{Event, Record, Saved};

use crate::metrics::{Metrics, StoreMetrics, StoreOp, StoreOutcome};
use config::{StoreBackend, StoreConfig};
use embedded::EmbeddedStore;
use memory::MemoryStore;
use poynt_wire::MerchantId;
pub use redis::{Owner, SharedBucket, SharedLimits, Verdict};
use redis::{RedisLock, RedisStore};

/// Records in flight between a store being read in full and whoever takes them.
const STREAM_BATCH: usize = 256;

/// The token store. Cloning is cheap (one `Arc` per backend); every clone is the same store.
#[derive(Clone)]
pub enum Store {
    /// In-process.
    Memory(MemoryStore),
    /// One redb file.
    Embedded(EmbeddedStore),
    /// Redis, shared by replicas.
    Redis(RedisStore),
}

/// A merchant's lock: a lease of a few seconds that its holder keeps alive while it works
/// ([`Lock::hold`]), so a holder that dies is replaced within one lease while a live one
/// keeps the lock however long its grant takes.
pub struct Lock {
    held: Held,
    metrics: StoreMetrics,
}

enum Held {
    /// One process: the broker's own single flight is the lock.
    Local,
    Redis(RedisLock),
}

impl std::fmt::Debug for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.held {
            Held::Local => "Lock(local)",
            Held::Redis(_) => "Lock(redis)",
        })
    }
}

impl Lock {
    /// Runs `work` while extending the lease every third of it (a compare-and-PEXPIRE with
    /// the lock's token, beside the work, never delaying it). An extension that finds the
    /// lock gone (it expired while the store was away or this process stalled, and may be
    /// another replica's now) is logged and extending stops: the work goes on, and the
    /// record's generation still fences its save. An extension the store does not answer
    /// is tried again at the next tick (the store logs the outage).
    pub async fn hold<T>(&self, work: impl Future<Output = T>) -> T {
        let Held::Redis(lock) = &self.held else {
            return work.await;
        };
        let mut work = std::pin::pin!(work);
        let every = lock.lease() / 3;
        let extending = async {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if let Ok(false) = timed(&self.metrics, StoreOp::Extend, kept, lock.extend()).await
                {
                    tracing::warn!(
                        lock = %lock.key(),
                        "lock lost while its holder worked (it expired); the record's generation still fences the save"
                    );
                    return;
                }
            }
        };
        tokio::select! {
            biased;
            done = &mut work => done,
            () = extending => work.await,
        }
    }

    /// Gives the lock back: a compare-and-delete on Redis (a lock that expired and was taken
    /// by another holder is left alone, counted as `lost`); nothing otherwise.
    pub async fn release(self) -> Result<(), StoreError> {
        match self.held {
            Held::Local => Ok(()),
            Held::Redis(lock) => timed(&self.metrics, StoreOp::Release, kept, lock.release())
                .await
                .map(drop),
        }
    }
}

/// An extension or release: `Ok` while the lock was still ours, `Lost` once it was not.
fn kept(ours: &bool) -> StoreOutcome {
    if *ours {
        StoreOutcome::Ok
    } else {
        StoreOutcome::Lost
    }
}

/// Counts and times one operation, its outcome read from the result.
#[allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    reason = "a store call's latency is real I/O time, the same on a paused test clock"
)]
async fn timed<T>(
    metrics: &StoreMetrics,
    op: StoreOp,
    classify: impl FnOnce(&T) -> StoreOutcome,
    work: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    // A leaf under whatever span runs the operation (a grant, mostly).
    let span = crate::traces::span!(
        "store",
        otel.name = op.as_str(),
        db.operation.name = op.as_str(),
        poynt.store.outcome = tracing::field::Empty,
    );
    let started = Instant::now();
    let result = work.await;
    let outcome = match &result {
        Ok(value) => classify(value),
        Err(error) => error.outcome(),
    };
    span.record("poynt.store.outcome", outcome.as_str());
    metrics.observe(op, outcome, started.elapsed());
    result
}

fn ok<T>(_: &T) -> StoreOutcome {
    StoreOutcome::Ok
}

impl Store {
    /// Opens the configured backend for `application_id`: the embedded file is created,
    /// locked and checked against its key here; Redis is checked against its key when it
    /// answers, and otherwise connected lazily (a Redis that is down at start-up makes
    /// operations fail fast, not the start).
    pub async fn open(
        config: &StoreConfig,
        application_id: &str,
        metrics: &Metrics,
    ) -> Result<Store, StoreError> {
        let metrics = metrics.store().clone();
        metrics.set_reachable(true);
        Ok(match config.backend {
            StoreBackend::Memory => Store::Memory(MemoryStore::new(metrics)),
            StoreBackend::Embedded => {
                Store::Embedded(EmbeddedStore::open(config, application_id, metrics).await?)
            }
            StoreBackend::Redis => {
                Store::Redis(RedisStore::open(config, application_id, metrics).await?)
            }
        })
    }

    fn metrics(&self) -> &StoreMetrics {
        match self {
            Store::Memory(store) => store.metrics(),
            Store::Embedded(store) => store.metrics(),
            Store::Redis(store) => store.metrics(),
        }
    }

    /// The backend in use.
    pub fn backend(&self) -> StoreBackend {
        match self {
            Store::Memory(..) => StoreBackend::Memory,
            Store::Embedded(..) => StoreBackend::Embedded,
            Store::Redis(..) => StoreBackend::Redis,
        }
    }

    /// True when other replicas share this store (Redis): locks and events matter.
    pub fn is_shared(&self) -> bool {
        matches!(self, Store::Redis(..))
    }

    /// `merchant`'s record; `None` when there is none or it does not open (counted, and
    /// then never overwritten: saves for that merchant answer [`StoreError::Withheld`]).
    pub async fn load(&self, merchant: MerchantId) -> Result<Option<Record>, StoreError> {
        let work = async {
            match self {
                Store::Memory(store) => Ok(store.load(merchant)),
                Store::Embedded(store) => store.load(merchant).await,
                Store::Redis(store) => store.load(merchant).await,
            }
        };
        timed(self.metrics(), StoreOp::Load, ok, work).await
    }

    /// Every record that opens (`store list`, the admin API), collected.
    pub async fn load_all(&self) -> Result<Vec<(MerchantId, Record)>, StoreError> {
        let mut records = Vec::new();
        self.each_record(|merchant, record| {
            records.push((merchant, record));
            std::future::ready(())
        })
        .await?;
        Ok(records)
    }

    /// Hands every record that opens to `each`, a few at a time, so reading a store of a
    /// million merchants never holds them all in memory at once (start-up); sets the
    /// records-loaded gauge.
    pub async fn each_record<F, Fut>(&self, mut each: F) -> Result<usize, StoreError>
    where
        F: FnMut(MerchantId, Record) -> Fut,
        Fut: Future<Output = ()>,
    {
        let work = async {
            let (sender, mut receiver) = tokio::sync::mpsc::channel(STREAM_BATCH);
            let reading = async {
                match self {
                    Store::Memory(store) => {
                        for (merchant, record) in store.load_all() {
                            if sender.send((merchant, record)).await.is_err() {
                                break;
                            }
                        }
                        Ok(())
                    }
                    Store::Embedded(store) => store.stream_all(sender).await,
                    Store::Redis(store) => store.stream_all(sender).await,
                }
            };
            let handling = async {
                let mut count = 0;
                while let Some((merchant, record)) = receiver.recv().await {
                    each(merchant, record).await;
                    count += 1;
                }
                count
            };
            let (read, count) = tokio::join!(reading, handling);
            read.map(|()| count)
        };
        let count = timed(self.metrics(), StoreOp::LoadAll, ok, work).await?;
        self.metrics().set_records_loaded(count);
        Ok(count)
    }

    /// Atomic compare-and-set: written only if no record exists or the stored generation is
    /// lower than `record.generation`; otherwise `Stale` with the stored generation. On Redis
    /// the same script sets the record's TTL and publishes [`Event::Saved`].
    pub async fn save(&self, merchant: MerchantId, record: &Record) -> Result<Saved, StoreError> {
        let work = async {
            match self {
                Store::Memory(store) => Ok(store.save(merchant, record)),
                Store::Embedded(store) => store.save(merchant, record).await,
                Store::Redis(store) => store.save(merchant, record).await,
            }
        };
        let classify = |saved: &Saved| match saved {
            Saved::Written => StoreOutcome::Ok,
            Saved::Stale { .. } => StoreOutcome::Stale,
        };
        timed(self.metrics(), StoreOp::Save, classify, work).await
    }

    /// Forgets `merchant` (admin "forget"); true if there was a record. On Redis publishes
    /// [`Event::Deleted`].
    pub async fn delete(&self, merchant: MerchantId) -> Result<bool, StoreError> {
        let work = async {
            match self {
                Store::Memory(store) => Ok(store.delete(merchant)),
                Store::Embedded(store) => store.delete(merchant).await,
                Store::Redis(store) => store.delete(merchant).await,
            }
        };
        timed(self.metrics(), StoreOp::Delete, ok, work).await
    }

    /// Takes `merchant`'s lock as a lease of `lease`, which [`Lock::hold`] extends while its
    /// holder works: on Redis `None` while another replica holds it; on the single-process
    /// backends always granted (the broker's own single flight is the lock there).
    pub async fn lock(
        &self,
        merchant: MerchantId,
        lease: Duration,
    ) -> Result<Option<Lock>, StoreError> {
        let lock = |held| Lock {
            held,
            metrics: self.metrics().clone(),
        };
        let work = async {
            match self {
                Store::Memory(..) | Store::Embedded(..) => Ok(Some(lock(Held::Local))),
                Store::Redis(store) => Ok(store
                    .lock(merchant, lease)
                    .await?
                    .map(|held| lock(Held::Redis(held)))),
            }
        };
        let classify = |lock: &Option<Lock>| match lock {
            Some(_) => StoreOutcome::Ok,
            None => StoreOutcome::Busy,
        };
        timed(self.metrics(), StoreOp::Lock, classify, work).await
    }

    /// Changes other replicas made (Redis only). After every (re)subscription an
    /// [`Event::Resync`] arrives; a receiver that lags gets `Lagged` and should reconcile
    /// the same way. A replica also receives the events of its own saves.
    pub fn events(&self) -> Option<tokio::sync::broadcast::Receiver<Event>> {
        match self {
            Store::Redis(store) => Some(store.events()),
            Store::Memory(..) | Store::Embedded(..) => None,
        }
    }

    /// Marks an onboarding state `id` as spent for `ttl`: true the first time, false if it
    /// was already spent and has not expired.
    pub async fn spend_state(&self, id: &[u8; 16], ttl: Duration) -> Result<bool, StoreError> {
        let work = async {
            match self {
                Store::Memory(store) => store.spend_state(id, ttl),
                Store::Embedded(store) => store.spend_state(id, ttl).await,
                Store::Redis(store) => store.spend_state(id, ttl).await,
            }
        };
        timed(self.metrics(), StoreOp::SpendState, ok, work).await
    }

    /// The current store key, for keys derived from it ([`seal::Key::derive`]); `None` for
    /// the memory backend, which seals nothing.
    pub fn key(&self) -> Option<&seal::Key> {
        match self {
            Store::Memory(..) => None,
            Store::Embedded(store) => Some(store.key()),
            Store::Redis(store) => Some(store.key()),
        }
    }

    /// The cluster-wide limits this store can keep: Redis only, since the other backends
    /// are one process's.
    pub fn shared_limits(&self) -> Option<SharedLimits> {
        match self {
            Store::Redis(store) => Some(store.shared_limits()),
            Store::Memory(..) | Store::Embedded(..) => None,
        }
    }

    /// False while the store cannot be reached (Redis only; local backends always answer).
    pub fn is_reachable(&self) -> bool {
        match self {
            Store::Redis(store) => store.is_reachable(),
            Store::Memory(..) | Store::Embedded(..) => true,
        }
    }

    /// True when the store answered and no configured key opens its check value (Redis,
    /// for a replica that started while it was away): the replica writes nothing and is not
    /// ready. (The local backends refuse to open with a wrong key.)
    pub fn key_refused(&self) -> bool {
        match self {
            Store::Redis(store) => store.key_refused(),
            Store::Memory(..) | Store::Embedded(..) => false,
        }
    }

    /// How many of the records read so far opened with none of the configured keys, by the
    /// key id each names ("none" for a value that is not sealed): `store list` says so, since
    /// those records are kept, not lost.
    pub fn refused_by_key(&self) -> std::collections::BTreeMap<String, usize> {
        match self {
            Store::Memory(..) => std::collections::BTreeMap::new(),
            Store::Embedded(store) => store.refused_by_key(),
            Store::Redis(store) => store.refused_by_key(),
        }
    }
}
