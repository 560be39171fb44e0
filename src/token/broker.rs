//! The token broker: holds a valid access token for every merchant the proxy serves.
//!
//! A hit is a cache lookup and a reference-count increment. Everything that needs a new
//! token — a miss, a hit past the refresh point, a 401 from Poynt, an admin refresh — goes
//! through one *flight* per merchant: the first starts a grant on its own task (on the
//! control runtime), everyone else for that merchant joins it, and a caller that goes away
//! only stops waiting. So at most one grant per merchant is ever in flight, a refresh token
//! is never presented twice, and it is never lost to a cancelled request.
//!
//! Renewal order: the refresh token when one is held, else a JWT-bearer assertion naming the
//! merchant. A failed grant starts a growing per-merchant back-off; merchants never granted
//! before share a small grant budget, so unknown business IDs cannot flood `/token`. A 401
//! drops exactly the token Poynt refused, at most once per interval and never a token just
//! issued, so a misbehaving upstream cannot drive a `/token` storm either.
//!
//! Every token is written to the token store before any caller uses it, and every grant is
//! decided against the store's record under the merchant's lock (`persist.rs`), so with
//! Redis the replicas of a fleet make one grant per merchant between them. A cache hit never
//! touches the store.
//!
//! "Refresh due" and "expired" are decided on Tokio's clock from instants stored in the
//! token; moka's own expiry only bounds memory.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use http::HeaderValue;
use secrecy::SecretString;
use tokio::runtime::Handle;
use tokio::time::Instant;
use tracing::{Instrument as _, Span};

use crate::audit::Event;
use crate::metrics::{Lookup, Metrics, Unauthorized};
use crate::store::{Store, StoreError};
use crate::token::budget::GrantBudget;
use crate::token::cache::{Token, TokenCache};
use crate::token::config::TokensConfig;
use crate::token::error::BrokerError;
use crate::token::grant::{Grant, GrantError, IssuedToken, TokenClient};
use crate::token::state::{Flight, MerchantState, Outcome, States};
use crate::traces;
use poynt_wire::GrantKind;
use poynt_wire::MerchantId;

/// How long after a grant task ends abnormally (a panic) callers are told to come back.
const ABNORMAL_RETRY_AFTER: Duration = Duration::from_secs(1);

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

/// What the proxy should do with an upstream 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnauthorizedAction {
    /// The refused token was dropped: the next token will be a new one, so a kept request
    /// body can be sent once more.
    Renew,
    /// Renewing now would not help or would storm `/token` (the token is brand new, or a
    /// 401 already forced a renewal recently): the 401 goes to the caller as it is.
    PassThrough,
}

/// What would satisfy whoever asks for a grant, so a flight is not started when a token
/// that does already arrived.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Want {
    /// Any usable token (a miss).
    Usable,
    /// A token other than this generation (a renewal, a 401).
    Replacing(u64),
    /// A new grant whatever is cached, past any back-off or budget (an operator's refresh).
    Forced,
}

impl Want {
    pub(crate) fn satisfied_by(self, token: &Token, now: Instant) -> bool {
        match self {
            Self::Usable => now < token.usable_until,
            Self::Replacing(generation) => {
                token.generation != generation && now < token.usable_until
            }
            Self::Forced => false,
        }
    }
}

/// Either a token at hand or a flight to wait for.
enum Boarding {
    Ready(Arc<Token>),
    Waiting(Flight),
}

/// The broker. Cloning shares it.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<BrokerInner>,
}

pub(crate) struct BrokerInner {
    pub(crate) tokens: TokenCache,
    pub(crate) states: States,
    pub(crate) store: Store,
    pub(crate) client: TokenClient,
    /// `tokens.*`, replaced whole by a reload.
    pub(crate) config: ArcSwap<TokensConfig>,
    pub(crate) metrics: Metrics,
    budget: GrantBudget,
    pub(crate) background: Handle,
}

impl Broker {
    /// A broker granting through `client` and keeping tokens in `store`. Grants run on
    /// `background`, not on the worker whose request needed them: a grant holds the
    /// merchant's refresh token while in flight and must finish even if every caller waiting
    /// for it goes away or its worker drains.
    pub fn new(
        client: TokenClient,
        config: TokensConfig,
        metrics: Metrics,
        background: Handle,
        store: Store,
    ) -> Self {
        let newcomer_ttl = config.backoff_max + Duration::from_secs(60);
        Self {
            inner: Arc::new(BrokerInner {
                tokens: TokenCache::new(config.max_merchants),
                states: States::new(config.max_merchants, newcomer_ttl),
                store,
                client,
                budget: GrantBudget::new(
                    config.new_merchant_grants_per_second,
                    config.new_merchant_grant_burst,
                ),
                config: ArcSwap::from_pointee(config),
                metrics,
                background,
            }),
        }
    }

    /// Applies reloaded `tokens.*` tuning: refresh points and back-offs of grants from now
    /// on, the 401 limits, and the new-merchant budget. (`tokens.max_merchants` sizes the
    /// caches and needs a restart.)
    pub fn retune(&self, config: TokensConfig) {
        self.inner.budget.retune(
            config.new_merchant_grants_per_second,
            config.new_merchant_grant_burst,
        );
        self.inner.config.store(Arc::new(config));
    }

    pub(crate) fn inner(&self) -> &BrokerInner {
        &self.inner
    }

    /// The shared state, for tasks that must not keep the broker alive (a weak handle).
    pub(crate) fn shared(&self) -> &Arc<BrokerInner> {
        &self.inner
    }

    /// The broker over shared state a task upgraded.
    pub(crate) fn from_shared(inner: Arc<BrokerInner>) -> Self {
        Self { inner }
    }

    /// A token for `merchant`: from the cache when one is usable (starting a background
    /// renewal past the refresh point), else from the merchant's flight.
    pub async fn token(
        &self,
        merchant: MerchantId,
    ) -> Result<(Arc<Token>, TokenSource), BrokerError> {
        let inner = &self.inner;
        let now = Instant::now();
        // The index answers fresh hits; anything else asks moka, which also re-indexes.
        if let Some(token) = inner.tokens.indexed(merchant)
            && now < token.refresh_at
        {
            inner.metrics.lookup(Lookup::Hit);
            return Ok((token, TokenSource::Hit));
        }
        // Boxed: the rest is kilobytes of future that a hit would carry for nothing.
        Box::pin(self.token_unindexed(merchant, now)).await
    }

    /// A lookup the index could not answer with a fresh token.
    async fn token_unindexed(
        &self,
        merchant: MerchantId,
        now: Instant,
    ) -> Result<(Arc<Token>, TokenSource), BrokerError> {
        let inner = &self.inner;
        if let Some(token) = inner.tokens.get(merchant).await {
            if now < token.refresh_at {
                inner.metrics.lookup(Lookup::Hit);
                return Ok((token, TokenSource::Hit));
            }
            if now < token.usable_until {
                let renewing = self.boarding(merchant, Want::Replacing(token.generation));
                inner.metrics.lookup(if renewing.is_ok() {
                    Lookup::RefreshAhead
                } else {
                    Lookup::Stale
                });
                return Ok((token, TokenSource::Renewal));
            }
            inner.tokens.invalidate(merchant, token.generation).await;
        }
        inner.metrics.lookup(Lookup::Miss);
        let token = self.fly(merchant, Want::Usable).await?;
        Ok((token, TokenSource::Miss))
    }

    /// Decides what an upstream 401 on `refused` means: drop exactly that token (so the next
    /// request gets a new one), unless the token is too young to blame or a 401 already
    /// forced a renewal for this merchant within `tokens.unauthorized_renewal_interval`.
    pub async fn unauthorized(&self, merchant: MerchantId, refused: &Token) -> UnauthorizedAction {
        // Boxed: rare, and kilobytes of future every request through the proxy would carry.
        Box::pin(self.judge_unauthorized(merchant, refused)).await
    }

    async fn judge_unauthorized(
        &self,
        merchant: MerchantId,
        refused: &Token,
    ) -> UnauthorizedAction {
        let inner = &self.inner;
        let config = inner.config.load();
        let now = Instant::now();
        let state = inner.states.get_or_create(merchant);
        {
            let mut guard = state.lock();
            let young = now.saturating_duration_since(refused.received_at)
                < config.unauthorized_min_token_age;
            let recent = guard.unauthorized_renewal.is_some_and(|at| {
                now.saturating_duration_since(at) < config.unauthorized_renewal_interval
            });
            if young || recent {
                inner.metrics.unauthorized(Unauthorized::PassedThrough);
                return UnauthorizedAction::PassThrough;
            }
            guard.unauthorized_renewal = Some(now);
        }
        inner.metrics.unauthorized(Unauthorized::Renewed);
        inner.tokens.invalidate(merchant, refused.generation).await;
        if let Err(error) = self
            .invalidate_stored(merchant, &state, Some(refused.generation))
            .await
        {
            tracing::debug!(%merchant, %error, "the refused token stays in the store; its generation fences it off");
        }
        UnauthorizedAction::Renew
    }

    /// Drops whatever token is cached for `merchant`, in the store first and then here
    /// (admin eviction); whether one was cached. An error says the store did not take the
    /// eviction, and nothing was dropped: an eviction reported done is never undone by a
    /// replica writing the token back. A grant already in flight still lands: it is a new
    /// token, not the evicted one.
    pub async fn evict(&self, merchant: MerchantId) -> Result<bool, StoreError> {
        let state = self.inner.states.get_or_create(merchant);
        self.invalidate_stored(merchant, &state, None).await?;
        let evicted = self.inner.tokens.remove(merchant).await;
        self.inner
            .metrics
            .audit(|| Event::eviction(merchant, evicted));
        Ok(evicted)
    }

    /// True when the shared store refused this replica's key after start: not ready.
    pub fn store_key_refused(&self) -> bool {
        self.inner.store.key_refused()
    }

    /// Renews now, whatever the refresh point, back-off or budget, joining a grant already in
    /// flight (admin refresh).
    pub async fn renew_now(&self, merchant: MerchantId) -> Result<Arc<Token>, BrokerError> {
        self.fly(merchant, Want::Forced).await
    }

    /// Keeps a token obtained outside the broker's own grants (an authorization-code
    /// exchange; the benchmarks fill the cache this way): stored, then cached.
    pub async fn adopt(&self, merchant: MerchantId, issued: IssuedToken, grant: GrantKind) {
        let state = self.inner.states.get_or_create(merchant);
        let generation = state.lock().generation + 1;
        let token = self.keep(merchant, &state, issued, grant, generation).await;
        self.inner.tokens.insert(merchant, token).await;
    }

    /// Waits for a token that satisfies `want`, boarding (or starting) the merchant's flight.
    async fn fly(&self, merchant: MerchantId, want: Want) -> Outcome {
        match self.boarding(merchant, want)? {
            Boarding::Ready(token) => Ok(token),
            Boarding::Waiting(mut flight) => {
                let waiting = traces::span!("grant wait");
                let outcome = match flight.wait_for(Option::is_some).await {
                    Ok(outcome) => outcome.clone().unwrap_or_else(|| Err(abnormal_end())),
                    Err(_) => Err(abnormal_end()),
                };
                drop(waiting);
                outcome
            }
        }
    }

    /// Joins the merchant's flight, or starts one unless a token satisfying `want` is
    /// already cached or the merchant may not be granted now (back-off, budget). Deciding
    /// under the merchant's lock makes "at most one grant in flight" hold whatever asks.
    fn boarding(&self, merchant: MerchantId, want: Want) -> Result<Boarding, BrokerError> {
        let inner = &self.inner;
        let state = inner.states.get_or_create(merchant);
        let mut guard = state.lock();
        if let Some(flight) = &guard.flight {
            if let Some(grant) = &guard.flight_span {
                traces::link(grant, &Span::current());
            }
            return Ok(Boarding::Waiting(flight.clone()));
        }
        let now = Instant::now();
        // A flight that just ended cached its token before it left the slot: seen here.
        if let Some(token) = inner.tokens.indexed(merchant)
            && want.satisfied_by(&token, now)
        {
            return Ok(Boarding::Ready(token));
        }
        if !matches!(want, Want::Forced) {
            if let Some(until) = guard.backoff_until
                && now < until
            {
                let last_error = guard.last_error.clone().unwrap_or_default();
                return Err(if guard.not_authorized {
                    BrokerError::NotAuthorized { reason: last_error }
                } else {
                    BrokerError::BackingOff {
                        last_error,
                        retry_after: until - now,
                    }
                });
            }
            if !guard.granted
                && let Err(retry_after) = inner.budget.take()
            {
                inner.metrics.grant_throttled();
                return Err(BrokerError::Throttled { retry_after });
            }
        }
        let (sender, flight) = tokio::sync::watch::channel(None);
        guard.flight = Some(flight.clone());
        let span = grant_span(merchant, want);
        if !span.is_none() {
            traces::link(&span, &Span::current());
            guard.flight_span = Some(span.clone());
        }
        drop(guard);
        let this = self.clone();
        inner.background.spawn(
            async move {
                let mut landing = Landing {
                    broker: &this,
                    merchant,
                    state: &state,
                    landed: false,
                };
                let outcome = this.obtain(merchant, &state, want).await;
                if let Ok(token) = &outcome {
                    this.inner.tokens.insert(merchant, token.clone()).await;
                }
                landing.land();
                Span::current().record(
                    "poynt.grant.outcome",
                    if outcome.is_ok() {
                        "success"
                    } else {
                        "failure"
                    },
                );
                let _ = sender.send(Some(outcome));
            }
            .instrument(span),
        );
        Ok(Boarding::Waiting(flight))
    }

    /// Notes a successful grant in the merchant's state (clearing its back-off, promoting a
    /// newcomer) and makes the token to cache.
    pub(crate) fn record_success(
        &self,
        merchant: MerchantId,
        state: &Arc<MerchantState>,
        issued: IssuedToken,
        grant: GrantKind,
        generation: u64,
    ) -> Arc<Token> {
        {
            let mut guard = state.lock();
            guard.failures = 0;
            guard.backoff_until = None;
            guard.last_error = None;
            guard.not_authorized = false;
            guard.last_renewal = Some(issued.received_wall);
            guard.generation = guard.generation.max(generation);
            if issued.refresh_token.is_some() {
                guard.refresh_token = issued.refresh_token;
            }
        }
        self.promote(merchant, state);
        self.make_token(
            merchant,
            issued.bearer,
            generation,
            grant,
            issued.received_at,
            issued.received_wall,
            issued.lifetime,
        )
    }

    /// Counts `merchant` among the known (granted once), out of the newcomers' budget.
    pub(crate) fn promote(&self, merchant: MerchantId, state: &Arc<MerchantState>) {
        if !std::mem::replace(&mut state.lock().granted, true) {
            self.inner.states.promote(merchant, state);
        }
    }

    /// A token received at `received_at` (`received_wall` on the wall clock) and good for
    /// `lifetime`, with its refresh point jittered so merchants spread out. The jitter is
    /// drawn from the merchant and the generation, not at random: replicas holding the same
    /// record agree on when it is due, so the earliest of several random draws does not make
    /// a fleet renew earlier than one proxy would.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn make_token(
        &self,
        merchant: MerchantId,
        header: HeaderValue,
        generation: u64,
        grant: GrantKind,
        received_at: Instant,
        received_wall: SystemTime,
        lifetime: Duration,
    ) -> Arc<Token> {
        let config = self.inner.config.load();
        let jitter = config.refresh_jitter * spread(merchant, generation);
        // The grant client clamps lifetimes, so none of these instants can overflow; the
        // checked forms keep it so even if that bound were lifted.
        let refresh_after = lifetime.mul_f64((config.refresh_at + jitter).clamp(0.05, 0.95));
        let margin = config.expiry_margin.min(lifetime / 20);
        let at = |after: Duration| received_at.checked_add(after).unwrap_or(received_at);
        let wall = |after: Duration| received_wall.checked_add(after).unwrap_or(received_wall);
        Arc::new(Token {
            header,
            generation,
            received_at,
            refresh_at: at(refresh_after),
            usable_until: at(lifetime.saturating_sub(margin)),
            lifetime,
            expires_wall: wall(lifetime),
            refresh_wall: wall(refresh_after),
            grant,
        })
    }

    /// Records a failed grant and starts (or lengthens) the merchant's back-off.
    pub(crate) fn record_failure(
        &self,
        state: &MerchantState,
        reason: &str,
        error: Option<&GrantError>,
    ) -> BrokerError {
        let config = self.inner.config.load();
        let mut guard = state.lock();
        guard.failures = guard.failures.saturating_add(1);
        let exponent = guard.failures.saturating_sub(1).min(16);
        let backoff = config
            .backoff_initial
            .saturating_mul(1 << exponent)
            .min(config.backoff_max);
        let now = Instant::now();
        guard.backoff_until = Some(now.checked_add(backoff).unwrap_or(now));
        guard.last_error = Some(reason.to_owned());
        guard.not_authorized = error.is_some_and(GrantError::is_merchant_not_authorized);
        match error {
            Some(error) => BrokerError::from_grant(error, backoff),
            None => BrokerError::Unavailable {
                reason: reason.to_owned(),
                retry_after: backoff,
            },
        }
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
            .map_err(|e| BrokerError::from_grant(&e, self.inner.config.load().backoff_initial))?;
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

/// A number in [-1, 1] fixed by the merchant and the generation (a splitmix64 finaliser
/// over both), spreading refresh points evenly without randomness.
/// The span of a flight: under the request that waits for it (a miss, a 401's renewal);
/// a trace of its own for a renewal ahead of expiry, which no request waits for (linked
/// to the request that noticed it was due).
fn grant_span(merchant: MerchantId, want: Want) -> Span {
    match want {
        Want::Usable => traces::span!(
            "grant",
            poynt.merchant = %merchant,
            poynt.grant.reason = "miss",
            poynt.grant.outcome = tracing::field::Empty,
        ),
        Want::Forced => traces::span!(
            "grant",
            poynt.merchant = %merchant,
            poynt.grant.reason = "forced",
            poynt.grant.outcome = tracing::field::Empty,
        ),
        Want::Replacing(_) if traces::roll() => traces::root!(
            parent: None,
            "grant",
            poynt.merchant = %merchant,
            poynt.grant.reason = "renewal",
            poynt.grant.outcome = tracing::field::Empty,
        ),
        Want::Replacing(_) => Span::none(),
    }
}

fn spread(merchant: MerchantId, generation: u64) -> f64 {
    let id = merchant.uuid().as_u128();
    let mut x = (id as u64) ^ ((id >> 64) as u64) ^ generation.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    (x as f64 / u64::MAX as f64) * 2.0 - 1.0
}

fn abnormal_end() -> BrokerError {
    BrokerError::Unavailable {
        reason: "the grant ended without an answer (its task stopped)".into(),
        retry_after: ABNORMAL_RETRY_AFTER,
    }
}

/// Ends a flight whatever happens to its task: on the normal path `land` clears the slot
/// after the token is cached; if the task panics or is dropped first, the drop clears the
/// slot and records the failure, so the merchant is never stuck "renewing".
struct Landing<'a> {
    broker: &'a Broker,
    merchant: MerchantId,
    state: &'a Arc<MerchantState>,
    landed: bool,
}

impl Landing<'_> {
    fn land(&mut self) {
        let mut guard = self.state.lock();
        guard.flight = None;
        guard.flight_span = None;
        drop(guard);
        self.landed = true;
    }
}

impl Drop for Landing<'_> {
    fn drop(&mut self) {
        if !self.landed {
            let mut guard = self.state.lock();
            guard.flight = None;
            guard.flight_span = None;
            drop(guard);
            let _ = self
                .broker
                .record_failure(self.state, "the grant task ended abnormally", None);
            tracing::error!(merchant = %self.merchant, "grant task ended abnormally; the merchant backs off");
        }
    }
}

// --- Onboarded merchants, for the admin API ---------------------------------------------

/// What the admin API shows of an onboarded merchant (never a token or refresh token).
#[derive(Debug, Clone, serde::Serialize)]
pub struct OnboardedMerchant {
    /// The business ID.
    pub business_id: String,
    /// When the merchant came through the authorization-code flow, RFC 3339.
    pub onboarded_at: Option<String>,
    /// When the stored token was issued, RFC 3339.
    pub last_grant: Option<String>,
    /// The grant of the stored token.
    pub grant: GrantKind,
    /// Whether a refresh token (the durable credential) is stored.
    pub has_refresh_token: bool,
}

impl Broker {
    /// Merchants the token store says came through onboarding, sorted by business ID. Reads
    /// every record (the store is the only place that knows them all): an operator's call,
    /// not a request path one.
    pub async fn onboarded(&self) -> Result<Vec<OnboardedMerchant>, StoreError> {
        let rfc3339 = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
        let mut records = self.inner.store.load_all().await?;
        records.sort_unstable_by_key(|(merchant, _)| *merchant);
        Ok(records
            .into_iter()
            .filter(|(_, record)| record.onboarded_at.is_some())
            .map(|(merchant, record)| OnboardedMerchant {
                business_id: merchant.to_string(),
                onboarded_at: record.onboarded_at.map(rfc3339),
                last_grant: Some(rfc3339(record.issued_at)),
                grant: record.grant,
                has_refresh_token: record.refresh_token.is_some(),
            })
            .collect())
    }

    /// Whether the token store holds a grant `merchant` gave through onboarding: what the
    /// success page, reloaded on any replica, shows.
    pub async fn is_onboarded(&self, merchant: MerchantId) -> Result<bool, StoreError> {
        let record = self.inner.store.load(merchant).await?;
        Ok(record.is_some_and(|record| record.onboarded_at.is_some()))
    }

    /// Forgets everything kept for `merchant` — its stored record, its cached token and its
    /// refresh token — so the next call for it needs a new grant (or a new onboarding).
    /// Returns whether anything was kept.
    pub async fn forget(&self, merchant: MerchantId) -> Result<bool, StoreError> {
        let stored = self.inner.store.delete(merchant).await?;
        let cached = self.inner.tokens.remove(merchant).await;
        let mut held = false;
        if let Some(state) = self.inner.states.get(merchant) {
            let mut guard = state.lock();
            held = guard.refresh_token.take().is_some() || guard.onboarded_at.take().is_some();
        }
        Ok(stored || cached || held)
    }
}
