//! The broker's token cache: moka owns the tokens — the `max_merchants` bound and expiry —
//! and a lock-free papaya index mirrors them for the hot path.
//!
//! Why two structures: every moka read records itself for the eviction policy (read
//! buffer, access-order deque, expiry timer wheel), which costs three to five times the
//! lookup itself (docs/BENCHMARKS.md). A hit reads only the index; moka is consulted when
//! the index has nothing fresh, and its removals (expiry, eviction, invalidation) reach the
//! index through its eviction listener. The index may briefly hold a token moka has
//! replaced; the broker checks every token's own refresh point and expiry before use, so a
//! stale entry costs at most a trip through the slow path, which repairs the index.
//!
//! Reads that bypass moka do not feed its frequency sketch, so under capacity pressure it
//! evicts by insertion recency rather than by use. Only tokens Poynt granted are cached
//! (refused or garbage merchant IDs never are), so pressure means `max_merchants` is set
//! below the number of real merchants.

use std::sync::Arc;
use std::time::Duration;

use moka::Expiry;
use moka::notification::RemovalCause;
use moka::ops::compute::Op;

use crate::token::broker::Token;
use poynt_wire::MerchantId;

type Index = papaya::HashMap<MerchantId, Arc<Token>, foldhash::fast::RandomState>;

/// Tokens by merchant.
pub(crate) struct TokenCache {
    store: moka::future::Cache<MerchantId, Arc<Token>>,
    index: Arc<Index>,
}

/// Expires each token with its own lifetime, so no secret outlives its use.
struct TokenExpiry;

#[allow(
    clippy::disallowed_types,
    reason = "moka's Expiry trait hands out std's Instant"
)]
impl Expiry<MerchantId, Arc<Token>> for TokenExpiry {
    fn expire_after_create(
        &self,
        _key: &MerchantId,
        value: &Arc<Token>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.lifetime())
    }

    fn expire_after_update(
        &self,
        _key: &MerchantId,
        value: &Arc<Token>,
        _updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.lifetime())
    }
}

impl TokenCache {
    /// A cache holding at most `max_merchants` tokens.
    pub(crate) fn new(max_merchants: u64) -> Self {
        let index: Arc<Index> = Arc::new(
            papaya::HashMap::builder()
                .hasher(Default::default())
                .build(),
        );
        let mirror = index.clone();
        let store = moka::future::Cache::builder()
            .max_capacity(max_merchants)
            .expire_after(TokenExpiry)
            .eviction_listener(move |merchant: Arc<MerchantId>, token: Arc<Token>, cause| {
                // A replaced token's successor is already in the index; leave it.
                if cause != RemovalCause::Replaced {
                    let _ = mirror
                        .pin()
                        .remove_if(&*merchant, |_, held| Arc::ptr_eq(held, &token));
                }
            })
            .build();
        Self { store, index }
    }

    /// The hot path: the indexed token, without touching moka.
    pub(crate) fn indexed(&self, merchant: MerchantId) -> Option<Arc<Token>> {
        self.index.pin().get(&merchant).cloned()
    }

    /// The authoritative token, re-indexing it when the index has lost track of it.
    pub(crate) async fn get(&self, merchant: MerchantId) -> Option<Arc<Token>> {
        let token = self.store.get(&merchant).await?;
        let indexed = self
            .index
            .pin()
            .get(&merchant)
            .is_some_and(|held| Arc::ptr_eq(held, &token));
        if !indexed {
            self.index.pin().insert(merchant, token.clone());
            // A removal (eviction, invalidation) may have run between the read above and
            // this insert; if moka no longer holds this token, take it back out, so an
            // evicted token is never resurrected in the index.
            let still_held = self
                .store
                .get(&merchant)
                .await
                .is_some_and(|held| Arc::ptr_eq(&held, &token));
            if !still_held {
                let _ = self
                    .index
                    .pin()
                    .remove_if(&merchant, |_, held| Arc::ptr_eq(held, &token));
            }
        }
        Some(token)
    }

    /// Caches `token` for `merchant`, replacing any other.
    pub(crate) async fn insert(&self, merchant: MerchantId, token: Arc<Token>) {
        self.store.insert(merchant, token.clone()).await;
        self.index.pin().insert(merchant, token);
    }

    /// Drops the token with this generation, if it is still the cached one.
    pub(crate) async fn invalidate(&self, merchant: MerchantId, generation: u64) {
        let _ = self
            .index
            .pin()
            .remove_if(&merchant, |_, held| held.generation() == generation);
        self.store
            .entry(merchant)
            .and_compute_with(|current| {
                let op = match current {
                    Some(entry) if entry.value().generation() == generation => Op::Remove,
                    _ => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
    }

    /// Drops whatever token is cached for `merchant`; whether there was one.
    pub(crate) async fn remove(&self, merchant: MerchantId) -> bool {
        self.index.pin().remove(&merchant);
        self.store.remove(&merchant).await.is_some()
    }

    /// The exact number of cached tokens (moka counts lazily, so settle it first).
    pub(crate) async fn len(&self) -> u64 {
        self.store.run_pending_tasks().await;
        self.store.entry_count()
    }

    /// The merchants holding a token.
    pub(crate) fn merchants(&self) -> impl Iterator<Item = MerchantId> + '_ {
        self.store.iter().map(|(merchant, _)| *merchant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merchant(n: u128) -> MerchantId {
        MerchantId::parse(&uuid::Uuid::from_u128(n).to_string()).expect("uuid")
    }

    fn generation_of(token: Option<Arc<Token>>) -> Option<u64> {
        token.map(|t| t.generation())
    }

    #[tokio::test]
    async fn the_index_follows_inserts_replacements_invalidations_and_removals() {
        let cache = TokenCache::new(100);
        let m = merchant(1);
        cache.insert(m, Token::for_test(1)).await;
        cache.insert(m, Token::for_test(2)).await;
        cache.len().await; // delivers the replacement's notification
        assert_eq!(
            generation_of(cache.indexed(m)),
            Some(2),
            "the successor stays indexed"
        );

        cache.invalidate(m, 1).await;
        assert_eq!(
            generation_of(cache.indexed(m)),
            Some(2),
            "an older generation is no-op"
        );
        cache.invalidate(m, 2).await;
        assert_eq!(generation_of(cache.indexed(m)), None);
        assert_eq!(generation_of(cache.get(m).await), None);

        cache.insert(m, Token::for_test(3)).await;
        assert!(cache.remove(m).await);
        assert_eq!(generation_of(cache.indexed(m)), None);
        assert!(!cache.remove(m).await);
    }

    #[tokio::test]
    async fn the_index_never_keeps_a_token_the_store_evicted() {
        let cache = TokenCache::new(10);
        for n in 0..100u128 {
            cache.insert(merchant(n), Token::for_test(n as u64)).await;
        }
        let kept = cache.len().await;
        assert!(kept <= 10, "moka keeps its bound; found {kept}");
        let indexed: Vec<MerchantId> = (0..100u128)
            .map(merchant)
            .filter(|m| cache.indexed(*m).is_some())
            .collect();
        assert_eq!(
            indexed.len() as u64,
            kept,
            "index and store hold the same merchants"
        );
        for m in indexed {
            assert!(
                cache.store.contains_key(&m),
                "{m} is indexed but not stored"
            );
        }
    }

    #[tokio::test]
    async fn the_slow_path_re_indexes_what_the_index_lost() {
        let cache = TokenCache::new(100);
        let m = merchant(7);
        cache.insert(m, Token::for_test(7)).await;
        cache.index.pin().remove(&m);
        assert_eq!(generation_of(cache.get(m).await), Some(7));
        assert_eq!(generation_of(cache.indexed(m)), Some(7));
    }
}
