//! The token broker: holds a valid access token for every merchant the proxy serves.
//!
//! A hit is a cache lookup and a reference-count increment. A miss makes every concurrent
//! caller for that merchant wait on one grant. A hit past the token's refresh point starts
//! one background renewal while callers keep the current token (stale-while-revalidate).
//! A merchant whose grant fails backs off, so bad or unauthorized IDs cannot flood `/token`.
//!
//! "Refresh due" and "expired" are decided on Tokio's clock from instants stored in the
//! token; moka's own expiry only bounds memory.
//!
//! The seam for a persistent store is [`Broker::obtain`]: the one place a token is made,
//! which a store would consult before granting and update after.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use http::HeaderValue;
use rand::Rng;
use secrecy::SecretString;
use tokio::runtime::Handle;
use tokio::time::Instant;

use crate::config::TokensConfig;
use crate::merchant::MerchantId;
use crate::metrics::{Lookup, Metrics};
use crate::token::cache::TokenCache;
use crate::token::grant::{Grant, GrantError, GrantKind, IssuedToken, TokenClient};

/// How long a merchant's broker state (refresh token, back-off) is kept after its last use.
const STATE_IDLE_TIMEOUT: Duration = Duration::from_secs(48 * 3600);

/// A merchant's access token, ready to inject.
pub struct Token {
    header: HeaderValue,
    generation: u64,
    refresh_at: Instant,
    usable_until: Instant,
    lifetime: Duration,
    expires_wall: SystemTime,
    refresh_wall: SystemTime,
    grant: GrantKind,
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
        Arc::new(Self {
            header: HeaderValue::from_static("Bearer test"),
            generation,
            refresh_at: Instant::now() + lifetime / 2,
            usable_until: Instant::now() + lifetime,
            lifetime,
            expires_wall: SystemTime::now() + lifetime,
            refresh_wall: SystemTime::now() + lifetime / 2,
            grant: GrantKind::JwtBearer,
        })
    }
}

/// Where a caller's token came from, for the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// Straight from the cache.
    Hit,
    /// The caller waited for a grant.
    Miss,
    /// From the cache, with a renewal started or under way.
    Renewal,
}

impl TokenSource {
    /// The log field value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Renewal => "renewal",
        }
    }
}

/// Why no token could be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// Poynt refused every grant the broker could try for this merchant.
    #[error("Poynt refused a token for this merchant: {reason}")]
    Refused {
        /// The refusal, without any secret.
        reason: String,
    },
    /// Poynt could not be reached or failed.
    #[error("Poynt's token endpoint is unavailable: {reason}")]
    Unavailable {
        /// What went wrong.
        reason: String,
        /// When it is worth trying again.
        retry_after: Duration,
    },
    /// The merchant's last grant failed and it is waiting before the next attempt.
    #[error("token grants for this merchant are backing off after a failure: {last_error}")]
    BackingOff {
        /// The failure that started the back-off.
        last_error: String,
        /// Time left.
        retry_after: Duration,
    },
}

impl BrokerError {
    /// Classifies a failed grant: Poynt said no, or Poynt could not answer (worth a retry
    /// after `retry_after`).
    fn from_grant(error: &GrantError, retry_after: Duration) -> Self {
        let reason = error.to_string();
        if error.is_refused() {
            Self::Refused { reason }
        } else {
            Self::Unavailable {
                reason,
                retry_after,
            }
        }
    }
}

/// What the admin API shows of a merchant (never a token or refresh token).
#[derive(Debug, Clone, serde::Serialize)]
pub struct MerchantStatus {
    /// The merchant.
    pub merchant: String,
    /// Token expiry, RFC 3339, when a token is cached.
    pub expires_at: Option<String>,
    /// When the next renewal starts, RFC 3339.
    pub refresh_at: Option<String>,
    /// Grant of the cached token.
    pub grant: Option<GrantKind>,
    /// Whether a refresh token is held.
    pub has_refresh_token: bool,
    /// When the last successful grant arrived, RFC 3339.
    pub last_renewal: Option<String>,
    /// The last grant failure.
    pub last_error: Option<String>,
    /// Seconds until the next grant attempt is allowed; 0 when not backing off.
    pub backoff_remaining_secs: u64,
    /// Consecutive failures.
    pub failures: u32,
}

#[derive(Default)]
struct StateInner {
    refresh_token: Option<SecretString>,
    failures: u32,
    backoff_until: Option<Instant>,
    last_error: Option<String>,
    last_renewal: Option<SystemTime>,
}

#[derive(Default)]
struct MerchantState {
    inner: Mutex<StateInner>,
    renewing: AtomicBool,
}

impl MerchantState {
    fn lock(&self) -> MutexGuard<'_, StateInner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The broker. Cloning shares it.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<BrokerInner>,
}

struct BrokerInner {
    tokens: TokenCache,
    states: moka::sync::Cache<MerchantId, Arc<MerchantState>>,
    client: TokenClient,
    config: TokensConfig,
    metrics: Metrics,
    generations: AtomicU64,
    background: Handle,
}

impl Broker {
    /// A broker granting through `client`. Background renewals run on `background`, not on
    /// the worker whose request noticed the refresh point: a renewal holds the merchant's
    /// refresh token while in flight and must not die with a worker that is shutting down.
    pub fn new(
        client: TokenClient,
        config: TokensConfig,
        metrics: Metrics,
        background: Handle,
    ) -> Self {
        let tokens = TokenCache::new(config.max_merchants);
        let states = moka::sync::Cache::builder()
            .max_capacity(config.max_merchants)
            .time_to_idle(STATE_IDLE_TIMEOUT)
            .build();
        Self {
            inner: Arc::new(BrokerInner {
                tokens,
                states,
                client,
                config,
                metrics,
                generations: AtomicU64::new(1),
                background,
            }),
        }
    }

    /// A token for `merchant`: from the cache when one is usable (starting a background
    /// renewal past the refresh point), else from one grant shared by all waiting callers.
    pub async fn token(
        &self,
        merchant: MerchantId,
    ) -> Result<(Arc<Token>, TokenSource), BrokerError> {
        let inner = &self.inner;
        let now = Instant::now();
        // The index answers fresh hits; anything else asks moka, which also re-indexes.
        let cached = match inner.tokens.indexed(merchant) {
            Some(token) if now < token.refresh_at => Some(token),
            _ => inner.tokens.get(merchant).await,
        };
        if let Some(token) = cached {
            if now < token.refresh_at {
                inner.metrics.lookup(Lookup::Hit);
                return Ok((token, TokenSource::Hit));
            }
            if now < token.usable_until {
                let renewing = self.renew_in_background(merchant);
                inner.metrics.lookup(if renewing {
                    Lookup::RefreshAhead
                } else {
                    Lookup::Stale
                });
                return Ok((token, TokenSource::Renewal));
            }
            self.invalidate(merchant, token.generation).await;
        }
        inner.metrics.lookup(Lookup::Miss);
        let this = self.clone();
        inner
            .tokens
            .get_or_obtain(merchant, async move { this.obtain(merchant).await })
            .await
            .map(|token| (token, TokenSource::Miss))
            .map_err(|e| (*e).clone())
    }

    /// Drops the token with this generation, if it is still the cached one; a newer token
    /// another request already fetched stays.
    pub async fn invalidate(&self, merchant: MerchantId, generation: u64) {
        self.inner.tokens.invalidate(merchant, generation).await;
    }

    /// Drops whatever token is cached for `merchant` (admin eviction).
    pub async fn evict(&self, merchant: MerchantId) -> bool {
        self.inner.tokens.remove(merchant).await
    }

    /// Renews now, whatever the refresh point, waiting for the result (admin refresh).
    pub async fn renew_now(&self, merchant: MerchantId) -> Result<Arc<Token>, BrokerError> {
        let token = self.obtain(merchant).await?;
        self.inner.tokens.insert(merchant, token.clone()).await;
        Ok(token)
    }

    /// Caches a token obtained elsewhere — the seam where a persistent store hands back the
    /// tokens it kept across a restart; the benchmarks fill the cache through it too.
    pub async fn adopt(&self, merchant: MerchantId, issued: IssuedToken, grant: GrantKind) {
        let state = self.state(merchant);
        let token = self.record_success(&state, issued, grant);
        self.inner.tokens.insert(merchant, token).await;
    }

    /// Starts one background renewal unless one is running or the merchant is backing off.
    /// Returns whether a renewal is (now) under way.
    fn renew_in_background(&self, merchant: MerchantId) -> bool {
        let state = self.state(merchant);
        if state
            .lock()
            .backoff_until
            .is_some_and(|until| Instant::now() < until)
        {
            return false;
        }
        if state.renewing.swap(true, Ordering::AcqRel) {
            return true;
        }
        let this = self.clone();
        self.inner.background.spawn(async move {
            if let Ok(token) = this.obtain(merchant).await {
                this.inner.tokens.insert(merchant, token).await;
            }
            state.renewing.store(false, Ordering::Release);
        });
        true
    }

    fn state(&self, merchant: MerchantId) -> Arc<MerchantState> {
        self.inner.states.get_with(merchant, Default::default)
    }

    /// Makes a new token: the refresh token when one is held (a refused one is dropped and
    /// the JWT-bearer grant tried), else a JWT-bearer assertion naming the merchant. Honours
    /// and updates the merchant's back-off.
    async fn obtain(&self, merchant: MerchantId) -> Result<Arc<Token>, BrokerError> {
        let state = self.state(merchant);
        let refresh = {
            let mut guard = state.lock();
            if let Some(until) = guard.backoff_until {
                let now = Instant::now();
                if now < until {
                    return Err(BrokerError::BackingOff {
                        last_error: guard.last_error.clone().unwrap_or_default(),
                        retry_after: until - now,
                    });
                }
            }
            // Taken, not copied: a refresh token is single-use, so two grants in flight
            // must never both present it.
            guard.refresh_token.take()
        };
        if let Some(refresh) = refresh {
            let grant = Grant::RefreshToken(refresh.clone());
            match self.inner.client.request(&grant, Some(merchant)).await {
                Ok(issued) => {
                    return Ok(self.record_success(&state, issued, GrantKind::RefreshToken));
                }
                // A refused refresh token is dropped; the key can still prove who we are.
                Err(error) if error.is_refused() => {}
                Err(error) => {
                    // Poynt may not have seen it: keep it for the next attempt.
                    state.lock().refresh_token.get_or_insert(refresh);
                    return Err(self.record_failure(&state, error));
                }
            }
        }
        match self
            .inner
            .client
            .request(&Grant::JwtBearer(merchant), Some(merchant))
            .await
        {
            Ok(issued) => Ok(self.record_success(&state, issued, GrantKind::JwtBearer)),
            Err(error) => Err(self.record_failure(&state, error)),
        }
    }

    fn record_success(
        &self,
        state: &MerchantState,
        issued: IssuedToken,
        grant: GrantKind,
    ) -> Arc<Token> {
        let mut guard = state.lock();
        guard.failures = 0;
        guard.backoff_until = None;
        guard.last_error = None;
        guard.last_renewal = Some(issued.received_wall);
        if let Some(refresh) = issued.refresh_token {
            guard.refresh_token = Some(refresh);
        }
        drop(guard);
        let config = &self.inner.config;
        let jitter = if config.refresh_jitter > 0.0 {
            rand::rng().random_range(-config.refresh_jitter..=config.refresh_jitter)
        } else {
            0.0
        };
        let lifetime = issued.lifetime;
        let refresh_after = lifetime.mul_f64((config.refresh_at + jitter).clamp(0.05, 0.95));
        let margin = config.expiry_margin.min(lifetime / 20);
        Arc::new(Token {
            header: issued.bearer,
            generation: self.inner.generations.fetch_add(1, Ordering::Relaxed),
            refresh_at: issued.received_at + refresh_after,
            usable_until: issued.received_at + (lifetime - margin),
            lifetime,
            expires_wall: issued.received_wall + lifetime,
            refresh_wall: issued.received_wall + refresh_after,
            grant,
        })
    }

    fn record_failure(&self, state: &MerchantState, error: GrantError) -> BrokerError {
        let config = &self.inner.config;
        let mut guard = state.lock();
        guard.failures = guard.failures.saturating_add(1);
        let exponent = guard.failures.saturating_sub(1).min(16);
        let backoff = config
            .backoff_initial
            .saturating_mul(1 << exponent)
            .min(config.backoff_max);
        guard.backoff_until = Some(Instant::now() + backoff);
        guard.last_error = Some(error.to_string());
        BrokerError::from_grant(&error, backoff)
    }

    /// Onboards a merchant: exchanges the authorization code Poynt's redirect delivered and
    /// caches the token and refresh token. The merchant is trusted from the access token
    /// Poynt returns over TLS (its `poynt.biz`), which must be the one asked for; a failed
    /// exchange does not start a back-off (the code, not the merchant, was at fault).
    pub async fn exchange_code(
        &self,
        merchant: MerchantId,
        code: SecretString,
        redirect_uri: String,
    ) -> Result<(), BrokerError> {
        let grant = Grant::AuthorizationCode { code, redirect_uri };
        let issued = self
            .inner
            .client
            .request(&grant, Some(merchant))
            .await
            .map_err(|e| BrokerError::from_grant(&e, self.inner.config.backoff_initial))?;
        if issued.merchant != Some(merchant) {
            return Err(BrokerError::Refused {
                reason: format!(
                    "expected the code to authorize merchant {merchant}; the token Poynt issued names {}",
                    issued
                        .merchant
                        .map_or_else(|| "no merchant".to_owned(), |m| m.to_string())
                ),
            });
        }
        self.adopt(merchant, issued, GrantKind::AuthorizationCode)
            .await;
        Ok(())
    }
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

impl Broker {
    /// Number of cached tokens and of merchants backing off, for the gauges.
    pub async fn counts(&self) -> (u64, u64) {
        let now = Instant::now();
        let backing_off = self
            .inner
            .states
            .iter()
            .filter(|(_, state)| state.lock().backoff_until.is_some_and(|u| now < u))
            .count();
        (self.inner.tokens.len().await, backing_off as u64)
    }

    /// Every merchant the broker knows, sorted by ID.
    pub async fn statuses(&self) -> Vec<MerchantStatus> {
        let mut merchants: Vec<MerchantId> = self
            .inner
            .states
            .iter()
            .map(|(m, _)| *m)
            .chain(self.inner.tokens.merchants())
            .collect();
        merchants.sort_unstable();
        merchants.dedup();
        let mut statuses = Vec::with_capacity(merchants.len());
        for merchant in merchants {
            statuses.extend(self.status(merchant).await);
        }
        statuses
    }

    /// What the broker holds for one merchant, if anything.
    pub async fn status(&self, merchant: MerchantId) -> Option<MerchantStatus> {
        let token = self.inner.tokens.get(merchant).await;
        let state = self.inner.states.get(&merchant);
        if token.is_none() && state.is_none() {
            return None;
        }
        let now = Instant::now();
        let (has_refresh_token, last_renewal, last_error, backoff, failures) = match &state {
            Some(state) => {
                let s = state.lock();
                (
                    s.refresh_token.is_some(),
                    s.last_renewal,
                    s.last_error.clone(),
                    s.backoff_until.map(|u| u.saturating_duration_since(now)),
                    s.failures,
                )
            }
            None => (false, None, None, None, 0),
        };
        Some(MerchantStatus {
            merchant: merchant.to_string(),
            expires_at: token.as_ref().map(|t| rfc3339(t.expires_wall)),
            refresh_at: token.as_ref().map(|t| rfc3339(t.refresh_wall)),
            grant: token.as_ref().map(|t| t.grant),
            has_refresh_token,
            last_renewal: last_renewal.map(rfc3339),
            last_error,
            backoff_remaining_secs: backoff.map_or(0, |d| d.as_secs_f64().ceil() as u64),
            failures,
        })
    }
}

// --- Onboarded merchants, for the admin API ---------------------------------------------

/// What the admin API shows of an onboarded merchant (never a token or refresh token).
#[derive(Debug, Clone, serde::Serialize)]
pub struct OnboardedMerchant {
    /// The business ID.
    pub business_id: String,
    /// When the authorization-code grant was issued, RFC 3339; known while its token is
    /// the cached one (a persistent store keeps it for good).
    pub onboarded_at: Option<String>,
    /// When the last successful grant arrived, RFC 3339.
    pub last_grant: Option<String>,
    /// The grant of the cached token.
    pub grant: Option<GrantKind>,
    /// Whether a refresh token (the durable credential) is held.
    pub has_refresh_token: bool,
}

impl Broker {
    /// Merchants whose grant the broker keeps — a refresh token, or a token from the
    /// authorization-code grant — sorted by business ID.
    pub async fn onboarded(&self) -> Vec<OnboardedMerchant> {
        self.statuses()
            .await
            .into_iter()
            .filter(|s| s.has_refresh_token || s.grant == Some(GrantKind::AuthorizationCode))
            .map(|s| OnboardedMerchant {
                // While the code grant's token is the cached one, the last grant was it.
                onboarded_at: s
                    .last_renewal
                    .clone()
                    .filter(|_| s.grant == Some(GrantKind::AuthorizationCode)),
                business_id: s.merchant,
                last_grant: s.last_renewal,
                grant: s.grant,
                has_refresh_token: s.has_refresh_token,
            })
            .collect()
    }

    /// Forgets everything kept for `merchant` — its token and its refresh token — so the
    /// next call for it needs a new grant. Returns whether anything was kept.
    pub async fn forget(&self, merchant: MerchantId) -> bool {
        let had_token = self.inner.tokens.remove(merchant).await;
        let had_state = self.inner.states.remove(&merchant).is_some();
        had_token || had_state
    }
}
