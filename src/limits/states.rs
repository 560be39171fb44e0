//! Every merchant's limit state, looked up by every admission: moka owns it — the
//! merchant-count bound and the idle expiry — and a lock-free papaya index in front answers
//! the lookup, the split the token cache makes (src/token/cache.rs) for the same reason: a
//! moka read records itself for the eviction policy, ~1,100 instructions of every request
//! with limits at their defaults (docs/BENCHMARKS.md, "Profiles").
//!
//! Reads that bypass moka do not reset its idle clock: alone, the index would let a busy
//! merchant's state expire `idle` after it was made and come back fresh (a full bucket, no
//! cool-down, a second set of in-flight slots beside the held ones). So a read that finds
//! moka last told of the merchant more than a sixtieth of `idle` ago reads moka too, which
//! keeps a used state for as long as it is used; an unused one expires between 59/60 of
//! `idle` and `idle` after its last request. Moka's removals (expiry, eviction) reach the
//! index through its eviction listener, and a state indexed just as moka dropped it is
//! taken out again, so the index never holds what moka does not.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use poynt_wire::MerchantId;

use super::State;

type Index = papaya::HashMap<MerchantId, Arc<State>, foldhash::fast::RandomState>;

/// The states of at most a bounded number of merchants, each kept while it is used.
pub(super) struct States {
    store: moka::sync::Cache<MerchantId, Arc<State>>,
    index: Arc<Index>,
    /// Nanoseconds after which an index read tells moka of the use again.
    touch_after: u64,
}

impl States {
    /// At most `max_merchants` states; one unused for `idle` is dropped.
    pub(super) fn new(max_merchants: u64, idle: Duration) -> Self {
        let index: Arc<Index> = Arc::new(
            papaya::HashMap::builder()
                .hasher(Default::default())
                .build(),
        );
        let mirror = index.clone();
        let store = moka::sync::Cache::builder()
            .max_capacity(max_merchants)
            .time_to_idle(idle)
            .eviction_listener(move |merchant: Arc<MerchantId>, state: Arc<State>, _| {
                let _ = mirror
                    .pin()
                    .remove_if(&*merchant, |_, held| Arc::ptr_eq(held, &state));
            })
            .build();
        Self {
            store,
            index,
            touch_after: u64::try_from((idle / 60).as_nanos()).unwrap_or(u64::MAX),
        }
    }

    /// `merchant`'s state, made by `make` on first sight; `now` is the governor's clock
    /// (nanoseconds), which decides when moka hears of the use.
    pub(super) fn get(
        &self,
        merchant: MerchantId,
        now: u64,
        make: impl FnOnce() -> Arc<State>,
    ) -> Arc<State> {
        if let Some(state) = self.index.pin().get(&merchant)
            && now.saturating_sub(state.touched.load(Ordering::Relaxed)) < self.touch_after
        {
            return state.clone();
        }
        let state = self.store.get_with(merchant, make);
        state.touched.store(now, Ordering::Relaxed);
        let index = self.index.pin();
        if !index
            .get(&merchant)
            .is_some_and(|held| Arc::ptr_eq(held, &state))
        {
            index.insert(merchant, state.clone());
            // Moka may have dropped it between the read above and this insert; then its
            // listener has already run, and the index must not keep it.
            let still_held = self
                .store
                .get(&merchant)
                .is_some_and(|held| Arc::ptr_eq(&held, &state));
            if !still_held {
                let _ = index.remove_if(&merchant, |_, held| Arc::ptr_eq(held, &state));
            }
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::super::bucket::Bucket;
    use super::super::config::MerchantLimits;
    use super::super::cooldown::Cooldown;
    use super::super::inflight::Slots;
    use super::*;

    fn merchant(n: u128) -> MerchantId {
        MerchantId::parse(&uuid::Uuid::from_u128(n).to_string()).expect("uuid")
    }

    fn fresh() -> Arc<State> {
        let limits = MerchantLimits {
            rate: None,
            max_in_flight: 4,
        };
        Arc::new(State {
            limits,
            cooldown: Cooldown::default(),
            bucket: Bucket::default(),
            slots: Slots::new(limits.max_in_flight),
            touched: AtomicU64::new(0),
        })
    }

    #[test]
    fn the_index_never_keeps_a_state_the_store_evicted() {
        let states = States::new(10, Duration::from_secs(3600));
        for n in 0..100u128 {
            states.get(merchant(n), 0, fresh);
        }
        states.store.run_pending_tasks();
        let kept = states.store.entry_count();
        assert!(kept <= 10, "moka keeps its bound; found {kept}");
        let indexed: Vec<MerchantId> = (0..100u128)
            .map(merchant)
            .filter(|m| states.index.pin().contains_key(m))
            .collect();
        assert_eq!(indexed.len() as u64, kept, "index and store hold the same");
        for m in indexed {
            assert!(states.store.contains_key(&m), "{m} indexed, not stored");
        }
    }

    #[test]
    fn a_merchant_keeps_its_state_while_used_past_the_idle_time() {
        let idle = Duration::from_millis(300);
        let states = States::new(10, idle);
        let m = merchant(1);
        let first = states.get(m, 0, fresh);
        let step = Duration::from_millis(30);
        // Used every 30 ms for three times the idle time (a bounded loop of 30 uses).
        for use_ in 1..=30u32 {
            std::thread::sleep(step);
            // Moka's housekeeping, which other merchants' requests would run: expiries.
            states.store.run_pending_tasks();
            let now = u64::try_from((step * use_).as_nanos()).expect("nanoseconds");
            let state = states.get(m, now, fresh);
            assert!(Arc::ptr_eq(&state, &first), "state replaced at use {use_}");
        }
    }
}
