//! The broker's token cache: moka owns the tokens — the `max_merchants` bound and expiry —
//! and a lock-free papaya index mirrors them for the hot path. [`Token`] itself is defined
//! here, beside what keeps it, so the cache and the per-merchant state need nothing from the
//! broker.
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

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::HeaderValue;
use moka::Expiry;
use moka::notification::RemovalCause;
use moka::ops::compute::Op;
use tokio::time::Instant;

use poynt_wire::GrantKind;
use poynt_wire::MerchantId;

/// A merchant's access token, ready to inject.
pub struct Token {
    pub(super) header: HeaderValue,
    pub(super) generation: u64,
    pub(super) received_at: Instant,
    pub(super) refresh_at: Instant,
    pub(super) usable_until: Instant,
    pub(super) lifetime: Duration,
    pub(super) expires_wall: SystemTime,
    pub(super) refresh_wall: SystemTime,
    pub(super) grant: GrantKind,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("generation", &self.generation)
            .field("grant", &self.grant)
            .field("header", &"<redacted>")
            .finish()
    }
}

impl Token {
    /// The `Authorization` value (`Bearer ...`), marked sensitive so HTTP/2 never indexes it.
    pub fn header(&self) -> &HeaderValue {
        &self.header
    }

    /// Identifies this token among all tokens the broker made, so a 401 invalidates exactly
    /// the token that was rejected, not a newer one.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// When the token stops being valid at Poynt (wall clock, for operators).
    pub fn expires_at(&self) -> SystemTime {
        self.expires_wall
    }

    /// When a hit starts a background renewal (wall clock, for operators).
    pub fn refresh_at(&self) -> SystemTime {
        self.refresh_wall
    }

    /// The grant that produced it.
    pub fn grant(&self) -> GrantKind {
        self.grant
    }

    /// From issue to expiry: how long the cache may keep it.
    pub(crate) fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// A day-long token with this generation, for the cache's unit tests.
    #[cfg(test)]
    pub(crate) fn for_test(generation: u64) -> Arc<Self> {
        let lifetime = Duration::from_secs(86_400);
        let now = Instant::now();
        Arc::new(Self {
            header: HeaderValue::from_static("Bearer test"),
            generation,
            received_at: now,
            refresh_at: now + lifetime / 2,
            usable_until: now + lifetime,
            lifetime,
            expires_wall: SystemTime::now() + lifetime,
            refresh_wall: SystemTime::now() + lifetime / 2,
            grant: GrantKind::JwtBearer,
        })
    }
}

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
