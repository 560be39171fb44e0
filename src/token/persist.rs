//! Where the broker meets the token store.
//!
//! - Start-up (`restore`): every stored record is read back; a merchant with a stored record
//!   is known (not a newcomer), and one whose token is still good is served with no grant.
//! - A flight (`obtain`): the store's record is read first — another replica may already
//!   have what is wanted — then the merchant's lock is taken (always granted on the
//!   single-process backends; on Redis one replica at a time) and the record read again
//!   under it. The lock is a lease of a few seconds that its holder extends while it works;
//!   replicas that find it taken wait for the holder's save (its event, or a poll that also
//!   tries the lock) and adopt the record, and a holder that died is replaced within one
//!   lease.
//! - A grant (`grant`): a refresh token is presented only after the record saying it is
//!   spent has been committed — a process killed at any moment restarts with a record whose
//!   refresh token was never presented, or none — and the new pair is committed before any
//!   caller gets the token (`keep`). Every save is a compare-and-set on the record's
//!   generation, so a writer whose lock lapsed cannot overwrite a newer record.
//! - Invalidations (a 401, an admin eviction) write the record without its access token,
//!   so no replica, and no restart, uses the refused token again.
//! - Events (Redis): a save by another replica replaces this replica's copy; after a
//!   reconnection (or once the store key is proven) every cached merchant is reconciled, the
//!   newest generation winning, retried with back-off until a pass completes — so an empty
//!   Redis after a restart gets back the record of every merchant a live replica holds a
//!   token for.
//!
//! When the store cannot be reached, callers are still served: grants happen locally, a
//! refresh token is not presented (it could not be marked spent), and errors are counted
//! by the store and logged once per outage. The same holds for a merchant whose stored
//! record opens with none of the configured keys: its tokens are served but never saved
//! over that record (the store withholds the save).

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use secrecy::SecretString;
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::metrics::LockWait;
use crate::store::{Event, Record, Saved, StoreError};
use crate::telemetry;
use crate::token::broker::{Broker, BrokerInner, Want};
use crate::token::cache::Token;
use crate::token::grant::{Grant, IssuedToken, bearer_header};
use crate::token::state::{MerchantState, Outcome};
use poynt_wire::GrantKind;
use poynt_wire::MerchantId;

/// While another replica holds a merchant's lock, how often the record is read again and
/// the lock tried when no event says it changed: a dead holder's lease is noticed this soon
/// after it ends.
const LOCK_POLL: Duration = Duration::from_millis(250);
/// A merchant's lock lives this long past its holder's last extension (every third of it,
/// while the grant runs): a holder that dies is replaced within one lease. Long enough that
/// a store round trip (`store.timeout`, 500 ms by default) or two can fail between
/// extensions without losing it.
const LOCK_LEASE: Duration = Duration::from_secs(3);
/// Added to twice the token timeout to bound a wait for a live holder: enough for a refresh
/// grant and its JWT-bearer fallback, with the store's own round trips.
const LOCK_MARGIN: Duration = Duration::from_secs(5);
/// First and longest pause between reconciliation passes that could not complete.
const RECONCILE_RETRY_MIN: Duration = Duration::from_millis(100);
const RECONCILE_RETRY_MAX: Duration = Duration::from_secs(5);

impl Broker {
    /// How long a replica waits for a live holder (one that keeps extending its lease) before
    /// granting on its own; the record's generation still decides which save lands.
    fn lock_patience(&self) -> Duration {
        self.inner().client.timeout().saturating_mul(2) + LOCK_MARGIN
    }

    /// Reads every stored record back at start-up: merchants with a record are known, and
    /// those whose token is still good are cached, so a restart makes no grant for them.
    /// Returns how many tokens were cached.
    pub async fn restore(&self) -> Result<usize, StoreError> {
        let inner = self.inner();
        let mut cached = 0;
        inner
            .store
            .each_record(|merchant, record| {
                let state = inner.states.get_or_create(merchant);
                self.note_record(merchant, &state, &record);
                let token = self.token_from_record(merchant, &record);
                cached += usize::from(token.is_some());
                async move {
                    if let Some(token) = token {
                        inner.tokens.insert(merchant, token).await;
                    }
                }
            })
            .await?;
        Ok(cached)
    }

    /// The body of a flight: a token satisfying `want`, from the store or from a grant made
    /// under the merchant's lock.
    pub(crate) async fn obtain(
        &self,
        merchant: MerchantId,
        state: &Arc<MerchantState>,
        want: Want,
    ) -> Outcome {
        let inner = self.inner();
        let store = &inner.store;
        let patience = Instant::now() + self.lock_patience();
        let mut waiting_since = None;
        loop {
            // Subscribed before reading, so a save between the read and the wait is seen.
            let mut events = store.events();
            let Ok(stored) = store.load(merchant).await else {
                return self.grant(merchant, state, None).await;
            };
            let waited = |outcome| {
                if let Some(since) = waiting_since {
                    inner
                        .metrics
                        .store()
                        .lock_wait(outcome, Instant::now().duration_since(since));
                }
            };
            if let Some(token) = self.usable_record(merchant, state, stored.as_ref(), want) {
                waited(LockWait::Adopted);
                return Ok(token);
            }
            match store.lock(merchant, LOCK_LEASE).await {
                Ok(Some(lock)) => {
                    waited(LockWait::Acquired);
                    let outcome = lock
                        .hold(async {
                            // On Redis the record may have moved between the read and the lock.
                            let stored = if store.is_shared() {
                                store.load(merchant).await.unwrap_or(None)
                            } else {
                                stored
                            };
                            match self.usable_record(merchant, state, stored.as_ref(), want) {
                                Some(token) => Ok(token),
                                None => self.grant(merchant, state, stored).await,
                            }
                        })
                        .await;
                    if let Err(error) = lock.release().await {
                        tracing::debug!(%merchant, %error, "lock not released; it will expire");
                    }
                    return outcome;
                }
                Ok(None) if Instant::now() < patience => {
                    waiting_since.get_or_insert_with(Instant::now);
                    wait_for_change(merchant, events.as_mut(), patience).await;
                }
                Ok(None) => {
                    // The holder is alive and extending its lease but slower than any grant
                    // should be: grant without the lock; the record's generation still
                    // decides which save lands.
                    waited(LockWait::TimedOut);
                    return self.grant(merchant, state, stored).await;
                }
                Err(_) => return self.grant(merchant, state, None).await,
            }
        }
    }

    /// The stored record's token, if there is one that satisfies `want`.
    fn usable_record(
        &self,
        merchant: MerchantId,
        state: &Arc<MerchantState>,
        stored: Option<&Record>,
        want: Want,
    ) -> Option<Arc<Token>> {
        let record = stored?;
        self.note_record(merchant, state, record);
        self.token_from_record(merchant, record)
            .filter(|token| want.satisfied_by(token, Instant::now()))
    }

    /// One grant: the stored refresh token when there is one and it could be marked spent
    /// first, else (or when Poynt refuses it) a JWT-bearer assertion.
    async fn grant(
        &self,
        merchant: MerchantId,
        state: &Arc<MerchantState>,
        stored: Option<Record>,
    ) -> Outcome {
        let inner = self.inner();
        let mut generation = stored
            .as_ref()
            .map_or(0, |r| r.generation)
            .max(state.lock().generation);
        if let Some(record) = stored
            && let Some(refresh) = record.refresh_token.clone()
        {
            let spent = Record {
                refresh_token: None,
                generation: generation + 1,
                ..record.clone()
            };
            match inner.store.save(merchant, &spent).await {
                Ok(Saved::Written) => {
                    generation += 1;
                    state.lock().generation = generation;
                    let request = Grant::RefreshToken(refresh);
                    match inner.client.request(&request, Some(merchant)).await {
                        Ok(issued) => {
                            return Ok(self
                                .keep(
                                    merchant,
                                    state,
                                    issued,
                                    GrantKind::RefreshToken,
                                    generation + 1,
                                )
                                .await);
                        }
                        Err(error) if error.is_refused() => {}
                        Err(error) => {
                            if error.is_unsent() {
                                // Poynt never saw it: the refresh token is still good.
                                let restored = Record {
                                    generation: generation + 1,
                                    ..record
                                };
                                if inner.store.save(merchant, &restored).await.is_ok() {
                                    state.lock().generation = generation + 1;
                                }
                            }
                            return Err(self.record_failure(
                                state,
                                &error.to_string(),
                                Some(&error),
                            ));
                        }
                    }
                }
                // Someone else moved the record on, or the store cannot say the token is
                // spent: either way it must not be presented from here.
                Ok(Saved::Stale { current_generation }) => {
                    generation = generation.max(current_generation);
                }
                Err(_) => {}
            }
        }
        match inner
            .client
            .request(&Grant::JwtBearer(merchant), Some(merchant))
            .await
        {
            Ok(issued) => Ok(self
                .keep(
                    merchant,
                    state,
                    issued,
                    GrantKind::JwtBearer,
                    generation + 1,
                )
                .await),
            Err(error) => Err(self.record_failure(state, &error.to_string(), Some(&error))),
        }
    }

    /// Stores a token Poynt just issued, then notes the success: the returned token is in
    /// the store (if it answers) before any caller sees it. If the store holds a newer
    /// record (another replica's, written after this one's lock lapsed), that one is used.
    pub(crate) async fn keep(
        &self,
        merchant: MerchantId,
        state: &Arc<MerchantState>,
        issued: IssuedToken,
        grant: GrantKind,
        generation: u64,
    ) -> Arc<Token> {
        let store = &self.inner().store;
        let onboarded_at = match (grant, state.lock().onboarded_at) {
            (_, Some(at)) => Some(at),
            (GrantKind::AuthorizationCode, None) => Some(issued.received_wall),
            (_, None) => None,
        };
        let mut record = Record {
            access_token: Some(issued.access_token.clone()),
            refresh_token: issued.refresh_token.clone(),
            expires_at: issued.received_wall + issued.lifetime,
            issued_at: issued.received_wall,
            grant,
            generation,
            onboarded_at,
        };
        state.lock().onboarded_at = onboarded_at;
        if let Ok(Saved::Stale { current_generation }) = store.save(merchant, &record).await {
            match store.load(merchant).await {
                Ok(Some(newer)) if let Some(token) = self.token_from_record(merchant, &newer) => {
                    self.note_record(merchant, state, &newer);
                    return token;
                }
                // The newer record holds no token this process can use (it was cleared, or
                // it does not open here): this token supersedes it.
                _ => {
                    record.generation = current_generation + 1;
                    if let Ok(Saved::Written) = store.save(merchant, &record).await {
                        return self.record_success(
                            merchant,
                            state,
                            issued,
                            grant,
                            record.generation,
                        );
                    }
                }
            }
        }
        self.record_success(merchant, state, issued, grant, generation)
    }

    /// Takes what a record says about its merchant: known, its generation, its refresh
    /// token and onboarding time.
    fn note_record(&self, merchant: MerchantId, state: &Arc<MerchantState>, record: &Record) {
        {
            let mut guard = state.lock();
            if record.generation >= guard.generation {
                guard.generation = record.generation;
                guard.refresh_token.clone_from(&record.refresh_token);
                guard.onboarded_at = guard.onboarded_at.or(record.onboarded_at);
            }
        }
        self.promote(merchant, state);
    }

    /// The token a record holds, if it has one that is not yet expired.
    fn token_from_record(&self, merchant: MerchantId, record: &Record) -> Option<Arc<Token>> {
        let header = bearer_header(record.access_token.as_ref()?)?;
        let now_wall = SystemTime::now();
        record.expires_at.duration_since(now_wall).ok()?;
        let lifetime = record
            .expires_at
            .duration_since(record.issued_at)
            .unwrap_or_default();
        let age = now_wall
            .duration_since(record.issued_at)
            .unwrap_or_default();
        let now = Instant::now();
        let received_at = now.checked_sub(age).unwrap_or(now);
        Some(self.make_token(
            merchant,
            header,
            record.generation,
            record.grant,
            received_at,
            record.issued_at,
            lifetime,
        ))
    }

    /// Writes the merchant's record without its access token — when `generation` is given,
    /// only if the record still holds that generation — so no replica or restart uses it.
    /// An error says the store did not take it (an admin eviction then answers 503); a
    /// stale save means a newer record, not the invalidated token, is stored.
    pub(crate) async fn invalidate_stored(
        &self,
        merchant: MerchantId,
        state: &Arc<MerchantState>,
        generation: Option<u64>,
    ) -> Result<(), StoreError> {
        let store = &self.inner().store;
        let Some(record) = store.load(merchant).await? else {
            return Ok(());
        };
        if record.access_token.is_none() || generation.is_some_and(|g| g != record.generation) {
            return Ok(());
        }
        let next = record.generation.max(state.lock().generation) + 1;
        let cleared = Record {
            access_token: None,
            generation: next,
            ..record
        };
        if let Saved::Written = store.save(merchant, &cleared).await? {
            let mut guard = state.lock();
            guard.generation = guard.generation.max(next);
        }
        Ok(())
    }

    /// Whether the store holds `token` (or something newer) for `merchant`: an admin renewal
    /// answers success only then.
    pub async fn confirm_stored(
        &self,
        merchant: MerchantId,
        token: &Token,
    ) -> Result<(), StoreError> {
        let found = self
            .inner()
            .store
            .load(merchant)
            .await?
            .map(|record| record.generation);
        match found {
            Some(generation) if generation >= token.generation() => Ok(()),
            found => Err(StoreError::NotStored {
                merchant,
                expected: token.generation(),
                found,
            }),
        }
    }

    /// Follows the store's events (Redis) on the control runtime until the broker is gone.
    pub fn watch_store(&self) {
        let Some(mut events) = self.inner().store.events() else {
            return;
        };
        let broker = Arc::downgrade(self.shared());
        self.inner().background.spawn(async move {
            loop {
                let event = events.recv().await;
                let Some(inner) = Weak::upgrade(&broker) else {
                    return;
                };
                let this = Broker::from_shared(inner);
                match event {
                    Ok(Event::Saved {
                        merchant,
                        generation,
                    }) => this.on_saved(merchant, generation).await,
                    Ok(Event::Deleted { merchant }) => this.on_deleted(merchant).await,
                    Ok(Event::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        drop(this);
                        reconcile_until_done(&broker).await;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// Another replica (or this one) saved `merchant`'s record: replace this replica's copy
    /// when the record is newer than what it holds.
    async fn on_saved(&self, merchant: MerchantId, generation: u64) {
        let inner = self.inner();
        let Some(state) = inner.states.get(merchant) else {
            return;
        };
        if state.lock().generation >= generation {
            return;
        }
        if let Ok(Some(record)) = inner.store.load(merchant).await {
            self.replace_with(merchant, &state, &record).await;
        }
    }

    /// Another replica forgot `merchant`: so does this one.
    async fn on_deleted(&self, merchant: MerchantId) {
        let inner = self.inner();
        inner.tokens.remove(merchant).await;
        if let Some(state) = inner.states.get(merchant) {
            let mut guard = state.lock();
            guard.refresh_token = None;
            guard.onboarded_at = None;
        }
    }

    /// Caches what a newer record holds (its token, or nothing if it has none).
    async fn replace_with(
        &self,
        merchant: MerchantId,
        state: &Arc<MerchantState>,
        record: &Record,
    ) {
        let inner = self.inner();
        self.note_record(merchant, state, record);
        match self.token_from_record(merchant, record) {
            Some(token) => inner.tokens.insert(merchant, token).await,
            None => {
                if let Some(cached) = inner.tokens.indexed(merchant)
                    && cached.generation() < record.generation
                {
                    inner.tokens.invalidate(merchant, cached.generation()).await;
                }
            }
        }
    }

    /// After a reconnection: for every cached merchant the newest generation wins — a newer
    /// stored record replaces this replica's token, and every token this replica holds that
    /// the store lacks or holds older (made while the store was away, or lost with an empty
    /// Redis) is written back, with its refresh token. An error means the pass could not
    /// complete because the store did not answer; a save the store withholds (a record this
    /// replica cannot open, or a key not yet proven) is skipped, not retried.
    async fn reconcile(&self) -> Result<(), StoreError> {
        let inner = self.inner();
        let merchants: Vec<MerchantId> = inner.tokens.merchants().collect();
        for merchant in merchants {
            let Some(cached) = inner.tokens.get(merchant).await else {
                continue;
            };
            let state = inner.states.get_or_create(merchant);
            match inner.store.load(merchant).await? {
                Some(record) if record.generation >= cached.generation() => {
                    if record.generation > cached.generation() {
                        self.replace_with(merchant, &state, &record).await;
                    }
                }
                _ => {
                    let Some(record) = self.record_of(&state, &cached) else {
                        continue;
                    };
                    match inner.store.save(merchant, &record).await {
                        Ok(Saved::Stale { .. }) => {
                            if let Some(newer) = inner.store.load(merchant).await? {
                                self.replace_with(merchant, &state, &newer).await;
                            }
                        }
                        Ok(Saved::Written)
                        | Err(StoreError::Withheld { .. } | StoreError::KeyUnproven { .. }) => {}
                        Err(error) => return Err(error),
                    }
                }
            }
        }
        self.write_back_refresh_tokens().await
    }

    /// The second half of a reconciliation: merchants this replica holds a refresh token for
    /// but no access token (it expired unused, or was evicted). For an onboarded merchant the
    /// refresh token is its only durable credential, so an empty Redis must get it back too.
    /// A merchant with a grant in flight is skipped: that grant may be presenting the very
    /// token, and its own save lands the next one.
    async fn write_back_refresh_tokens(&self) -> Result<(), StoreError> {
        let inner = self.inner();
        let merchants: Vec<MerchantId> = inner.states.merchants().collect();
        for merchant in merchants {
            if inner.tokens.get(merchant).await.is_some() {
                continue;
            }
            let Some(state) = inner.states.get(merchant) else {
                continue;
            };
            let Some(record) = refresh_record(&state) else {
                continue;
            };
            match inner.store.load(merchant).await? {
                Some(stored) if stored.generation >= record.generation => {}
                _ => match inner.store.save(merchant, &record).await {
                    Ok(_) | Err(StoreError::Withheld { .. } | StoreError::KeyUnproven { .. }) => {}
                    Err(error) => return Err(error),
                },
            }
        }
        Ok(())
    }

    /// The record a cached token stands for, to write it back.
    fn record_of(&self, state: &MerchantState, token: &Token) -> Option<Record> {
        let access = token.header().to_str().ok()?.strip_prefix("Bearer ")?;
        let guard = state.lock();
        Some(Record {
            access_token: Some(SecretString::from(access.to_owned())),
            refresh_token: guard.refresh_token.clone(),
            expires_at: token.expires_at(),
            issued_at: token.expires_at() - token.lifetime(),
            grant: token.grant(),
            generation: token.generation(),
            onboarded_at: guard.onboarded_at,
        })
    }
}

/// The record of a merchant known only by its refresh token (no access token, already
/// expired), when it has one and no grant in flight.
fn refresh_record(state: &MerchantState) -> Option<Record> {
    let guard = state.lock();
    if guard.flight.is_some() {
        return None;
    }
    let refresh_token = guard.refresh_token.clone()?;
    let now = SystemTime::now();
    Some(Record {
        access_token: None,
        refresh_token: Some(refresh_token),
        expires_at: now,
        issued_at: now,
        grant: GrantKind::RefreshToken,
        generation: guard.generation,
        onboarded_at: guard.onboarded_at,
    })
}

/// Reconciles until a pass completes, pausing with back-off between passes the store cut
/// short; gives up only when the broker is gone.
async fn reconcile_until_done(broker: &Weak<BrokerInner>) {
    let mut pause = RECONCILE_RETRY_MIN;
    loop {
        let Some(inner) = Weak::upgrade(broker) else {
            return;
        };
        match Broker::from_shared(inner).reconcile().await {
            Ok(()) => return,
            Err(error) => {
                tracing::debug!(%error, retry_in_ms = telemetry::ms(pause), "reconciliation with the store cut short; retrying");
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RECONCILE_RETRY_MAX);
    }
}

/// Waits until the store says `merchant`'s record changed, a poll interval passes, or
/// `until`, whichever comes first.
async fn wait_for_change(
    merchant: MerchantId,
    events: Option<&mut broadcast::Receiver<Event>>,
    until: Instant,
) {
    let poll = tokio::time::sleep_until(until.min(Instant::now() + LOCK_POLL));
    let Some(events) = events else {
        return poll.await;
    };
    let changed = async {
        loop {
            match events.recv().await {
                Ok(Event::Saved { merchant: m, .. } | Event::Deleted { merchant: m })
                    if m == merchant =>
                {
                    return;
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            }
        }
    };
    tokio::select! {
        () = poll => {}
        () = changed => {}
    }
}
