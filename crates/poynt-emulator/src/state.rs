//! The emulator's shared state: configuration, keys, and the records that make tokens,
//! assertions and codes behave as Poynt's do (issued tokens, seen `jti`s, single-use refresh
//! tokens and codes, which merchants authorized the app, revocations, faults, counters).
//!
//! Locks are `std` locks held only for a map operation, never across an `.await`. The API
//! hot path takes two read locks (the issued-token table and the faults) and touches atomics
//! otherwise.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::DecodingKey;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::business::BusinessNames;
use super::error::ApiError;
use super::fault::{ApiFault, Fault};
use super::jwt::{CLOCK_SKEW_SECS, CheckedAssertion};
use super::keys::SigningKey;
use super::stats::Counters;
use poynt_wire::MerchantId;

/// How `/applications/authorize` answers (a setting the state holds, here so the page that
/// reads it and the control API that sets it both import it from the state).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthorizeMode {
    /// The merchant approves: a good code, signed by the poynt.net key.
    #[default]
    Approve,
    /// The merchant declines: `status=DENIED` and no code.
    Deny,
    /// A signed code whose claims were changed afterwards (another `poynt.biz`).
    TamperedCode,
    /// A signed code that expired one code lifetime ago.
    ExpiredCode,
    /// A signed code whose `sub` is another application.
    OtherApp,
    /// An unsigned code: header `alg: none`, empty signature.
    AlgNone,
}

/// Seconds since the Unix epoch, the unit of every JWT time claim.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

/// Tables are pruned of expired entries when they reach this size (then twice their size).
const PRUNE_FLOOR: usize = 1024;

/// Everything a request handler needs, shared by all connections behind one `Arc`.
pub(crate) struct Shared {
    /// The registered application id.
    pub(crate) app_id: String,
    /// The `aud` assertions must carry.
    pub(crate) audience: String,
    /// The emulator's own base URL, the `iss` of its access tokens.
    pub(crate) base_url: String,
    /// Access token lifetime, seconds.
    pub(crate) token_ttl_secs: u64,
    /// The merchant `/applications/authorize` approves when the call names none.
    pub(crate) default_merchant: Option<MerchantId>,
    /// The registered application's public key, for assertions.
    /// Replaced by [`Shared::set_app_key`] (a key pair reset in the developer portal).
    app_key: arc_swap::ArcSwap<DecodingKey>,
    /// Signs access tokens.
    pub(crate) token_key: SigningKey,
    /// Signs authorization codes, standing for poynt.net's key.
    pub(crate) poynt_net_key: SigningKey,
    /// The developer organisation put in `poynt.org`.
    pub(crate) org_id: Uuid,
    /// What tests read back.
    pub(crate) counters: Counters,
    /// Issued access tokens: the hot path's one lookup.
    access: RwLock<AccessTokens>,
    /// Authorizations and single-use records.
    grants: Mutex<Grants>,
    /// Every secret issued or received, for leak tests.
    secrets: Mutex<Vec<String>>,
    /// Faults injected into `/token` and the API; a watch so that black-holed calls hear
    /// when the fault is replaced.
    fault: tokio::sync::watch::Sender<Fault>,
    /// API calls since the fault was last set: what `api_error_every` counts.
    api_sequence: AtomicU64,
    /// How `/applications/authorize` answers.
    authorize_mode: Mutex<AuthorizeMode>,
    /// Bumped to make every open connection close gracefully (HTTP/2: GOAWAY).
    goaway: tokio::sync::watch::Sender<u64>,
    /// What `GET /businesses/{id}` names each business.
    pub(crate) business_names: BusinessNames,
}

/// What the emulator knows about an access token it issued.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AccessRecord {
    /// The merchant it acts for; `None` for an app-level token.
    pub(crate) merchant: Option<MerchantId>,
    /// Its `exp`.
    pub(crate) exp: u64,
    /// Set by `revoke`, cleared by `reset`.
    pub(crate) revoked: bool,
}

#[derive(Default)]
struct AccessTokens {
    by_token: HashMap<Box<str>, AccessRecord>,
    prune_at: usize,
}

/// A refresh token's record; refresh tokens never expire, but are single-use.
struct RefreshRecord {
    merchant: Option<MerchantId>,
    used: bool,
}

/// An authorization code's record, kept from `/applications/authorize` to its exchange.
struct CodeRecord {
    redirect_uri: String,
    used: bool,
}

#[derive(Default)]
struct Grants {
    authorized: HashSet<MerchantId>,
    /// `jti` → the assertion's `exp`; remembered until it could no longer be accepted.
    seen_jtis: HashMap<String, u64>,
    jti_prune_at: usize,
    refresh: HashMap<String, RefreshRecord>,
    codes: HashMap<String, CodeRecord>,
}

/// The parts of `Shared` that `start` computes.
pub(crate) struct SharedInit {
    pub(crate) app_id: String,
    pub(crate) audience: String,
    pub(crate) base_url: String,
    pub(crate) token_ttl_secs: u64,
    pub(crate) merchants: Vec<MerchantId>,
    pub(crate) app_key: DecodingKey,
    pub(crate) token_key: SigningKey,
    pub(crate) poynt_net_key: SigningKey,
}

impl Shared {
    /// Builds the state; the configured merchants start authorized.
    pub(crate) fn new(init: SharedInit) -> Self {
        let grants = Grants {
            authorized: init.merchants.iter().copied().collect(),
            ..Grants::default()
        };
        Self {
            app_id: init.app_id,
            audience: init.audience,
            base_url: init.base_url,
            token_ttl_secs: init.token_ttl_secs,
            default_merchant: init.merchants.first().copied(),
            app_key: arc_swap::ArcSwap::from_pointee(init.app_key),
            token_key: init.token_key,
            poynt_net_key: init.poynt_net_key,
            org_id: Uuid::new_v4(),
            counters: Counters::default(),
            access: RwLock::new(AccessTokens::default()),
            grants: Mutex::new(grants),
            secrets: Mutex::new(Vec::new()),
            fault: tokio::sync::watch::Sender::new(Fault::default()),
            api_sequence: AtomicU64::new(0),
            authorize_mode: Mutex::new(AuthorizeMode::default()),
            goaway: tokio::sync::watch::Sender::new(0),
            business_names: BusinessNames::default(),
        }
    }

    /// The registered application's public key, as assertions are checked against now.
    pub(crate) fn app_key(&self) -> std::sync::Arc<DecodingKey> {
        self.app_key.load_full()
    }

    /// Registers a new public key for the application: assertions signed with the old one
    /// are refused from now on, as after a key reset in Poynt's developer portal.
    pub(crate) fn set_app_key(&self, key: DecodingKey) {
        self.app_key.store(std::sync::Arc::new(key));
    }

    // --- connections ---------------------------------------------------------------------

    /// Makes every connection open now close gracefully: HTTP/2 ones send GOAWAY (in-flight
    /// streams finish, new ones are refused), HTTP/1.1 ones close after their current
    /// response. Returns how many connections were told.
    pub(crate) fn goaway(&self) -> usize {
        self.goaway.send_modify(|generation| *generation += 1);
        self.goaway.receiver_count()
    }

    /// Resolves each time [`Shared::goaway`] is called.
    pub(crate) fn goaway_signal(&self) -> tokio::sync::watch::Receiver<u64> {
        self.goaway.subscribe()
    }

    // --- access tokens -------------------------------------------------------------------

    /// Remembers an access token just issued, pruning expired ones now and then.
    pub(crate) fn record_access(&self, token: &str, record: AccessRecord) {
        let now = now_secs();
        let mut table = self.access.write().expect("access token lock poisoned");
        if table.by_token.len() >= table.prune_at.max(PRUNE_FLOOR) {
            table.by_token.retain(|_, kept| kept.exp > now);
            table.prune_at = table.by_token.len() * 2;
        }
        table.by_token.insert(token.into(), record);
    }

    /// Validates a bearer token: issued here, not expired, not revoked. A table lookup, no
    /// signature check: the emulator only accepts tokens it issued itself.
    pub(crate) fn check_access(
        &self,
        token: &str,
        now: u64,
    ) -> Result<Option<MerchantId>, &'static str> {
        let record = {
            let table = self.access.read().expect("access token lock poisoned");
            table.by_token.get(token).copied()
        };
        match record {
            None => Err("expected an access token issued by this emulator; found an unknown token"),
            Some(record) if record.revoked => Err("the access token was revoked"),
            Some(record) if record.exp <= now => Err("the access token expired"),
            Some(record) => Ok(record.merchant),
        }
    }

    /// Invalidates every access token issued to `merchant` so far; returns how many.
    /// Refresh tokens and the authorization are untouched.
    pub(crate) fn revoke(&self, merchant: MerchantId) -> usize {
        let mut table = self.access.write().expect("access token lock poisoned");
        let mut revoked = 0;
        for record in table.by_token.values_mut() {
            if record.merchant == Some(merchant) && !record.revoked {
                record.revoked = true;
                revoked += 1;
            }
        }
        revoked
    }

    fn clear_revocations(&self) {
        let mut table = self.access.write().expect("access token lock poisoned");
        for record in table.by_token.values_mut() {
            record.revoked = false;
        }
    }

    // --- authorizations ------------------------------------------------------------------

    /// Whether `merchant` has authorized the app.
    pub(crate) fn is_authorized(&self, merchant: MerchantId) -> bool {
        self.grants().authorized.contains(&merchant)
    }

    /// Records that `merchant` authorized the app.
    pub(crate) fn authorize(&self, merchant: MerchantId) {
        self.grants().authorized.insert(merchant);
    }

    /// Records that `merchant` withdrew the authorization; its access tokens stop working
    /// and its refresh tokens are refused from now on.
    pub(crate) fn unauthorize(&self, merchant: MerchantId) {
        self.grants().authorized.remove(&merchant);
        self.revoke(merchant);
    }

    /// Remembers an assertion's `jti`, refusing one seen before (until its `exp` passed).
    pub(crate) fn accept_jti(&self, checked: &CheckedAssertion, now: u64) -> Result<(), ApiError> {
        let mut grants = self.grants();
        if grants.seen_jtis.len() >= grants.jti_prune_at.max(PRUNE_FLOOR) {
            grants
                .seen_jtis
                .retain(|_, exp| *exp + CLOCK_SKEW_SECS > now);
            grants.jti_prune_at = grants.seen_jtis.len() * 2;
        }
        if grants.seen_jtis.contains_key(&checked.jti) {
            return Err(ApiError::InvalidAssertion(format!(
                "expected a jti never used before; found {:?} again (replayed assertion)",
                checked.jti
            )));
        }
        grants.seen_jtis.insert(checked.jti.clone(), checked.exp);
        Ok(())
    }

    /// Remembers a refresh token just issued.
    pub(crate) fn record_refresh(&self, token: &str, merchant: Option<MerchantId>) {
        self.grants().refresh.insert(
            token.to_owned(),
            RefreshRecord {
                merchant,
                used: false,
            },
        );
    }

    /// Spends a refresh token: returns the merchant it acts for. The error carries the
    /// merchant when the token is known, for counting.
    pub(crate) fn redeem_refresh(
        &self,
        token: &str,
    ) -> Result<Option<MerchantId>, (Option<MerchantId>, ApiError)> {
        let mut grants = self.grants();
        let Grants {
            authorized,
            refresh,
            ..
        } = &mut *grants;
        let Some(record) = refresh.get_mut(token) else {
            return Err((
                None,
                ApiError::InvalidRefreshToken(
                    "expected a refresh token issued by this emulator; found an unknown one",
                ),
            ));
        };
        if record.used {
            let merchant = record.merchant;
            drop(grants);
            self.counters.refresh_token_reused();
            return Err((
                merchant,
                ApiError::InvalidRefreshToken(
                    "expected an unused refresh token; found one already used (refresh tokens are single-use)",
                ),
            ));
        }
        if let Some(merchant) = record.merchant
            && !authorized.contains(&merchant)
        {
            return Err((Some(merchant), ApiError::MerchantNotAuthorized(merchant)));
        }
        record.used = true;
        Ok(record.merchant)
    }

    /// Remembers an authorization code just minted and where it was sent.
    pub(crate) fn record_code(&self, code: &str, redirect_uri: &str) {
        self.grants().codes.insert(
            code.to_owned(),
            CodeRecord {
                redirect_uri: redirect_uri.to_owned(),
                used: false,
            },
        );
    }

    /// Spends an authorization code (already signature-checked) and authorizes its merchant.
    pub(crate) fn redeem_code(
        &self,
        code: &str,
        redirect_uri: &str,
        merchant: MerchantId,
    ) -> Result<(), ApiError> {
        let mut grants = self.grants();
        let Some(record) = grants.codes.get_mut(code) else {
            return Err(ApiError::InvalidAuthorizationCode(
                "expected a code minted by this emulator's /applications/authorize; found an unknown one".to_owned(),
            ));
        };
        if record.used {
            return Err(ApiError::InvalidAuthorizationCode(
                "expected an unused code; found one already exchanged (codes are single-use)"
                    .to_owned(),
            ));
        }
        if record.redirect_uri != redirect_uri {
            return Err(ApiError::InvalidAuthorizationCode(format!(
                "expected redirect_uri {:?} (the one the code was sent to); found {redirect_uri:?}",
                record.redirect_uri
            )));
        }
        record.used = true;
        grants.authorized.insert(merchant);
        Ok(())
    }

    // --- secrets, faults, reset ----------------------------------------------------------

    /// Remembers a secret issued or received, for `Emulator::issued_secrets`.
    pub(crate) fn remember_secret(&self, secret: &str) {
        self.secrets
            .lock()
            .expect("secrets lock poisoned")
            .push(secret.to_owned());
    }

    /// Every secret remembered so far.
    pub(crate) fn secrets(&self) -> Vec<String> {
        self.secrets.lock().expect("secrets lock poisoned").clone()
    }

    /// The faults in force.
    pub(crate) fn fault(&self) -> Fault {
        self.fault.borrow().clone()
    }

    /// Replaces the faults in force (waking black-holed calls) and restarts the count
    /// `api_error_every` divides.
    pub(crate) fn set_fault(&self, fault: Fault) {
        self.api_sequence.store(0, Ordering::Relaxed);
        self.fault.send_replace(fault);
    }

    /// What the faults in force do to the next API call for `merchant`, with the delay to
    /// wait before it.
    pub(crate) fn api_fault(
        &self,
        merchant: Option<MerchantId>,
    ) -> (Option<std::time::Duration>, Option<ApiFault>) {
        let sequence = self.api_sequence.fetch_add(1, Ordering::Relaxed) + 1;
        let fault = self.fault.borrow();
        (fault.api_delay(), fault.api(merchant, sequence))
    }

    /// Resolves once the faults in force no longer black-hole API calls.
    pub(crate) async fn blackhole_lifted(&self) {
        let mut receiver = self.fault.subscribe();
        // Err only when the sender is gone, which `self` rules out.
        let _ = receiver.wait_for(|fault| !fault.api_blackhole).await;
    }

    /// How `/applications/authorize` answers now.
    pub(crate) fn authorize_mode(&self) -> AuthorizeMode {
        *self
            .authorize_mode
            .lock()
            .expect("authorize mode lock poisoned")
    }

    /// Sets how `/applications/authorize` answers.
    pub(crate) fn set_authorize_mode(&self, mode: AuthorizeMode) {
        *self
            .authorize_mode
            .lock()
            .expect("authorize mode lock poisoned") = mode;
    }

    /// Clears counters, faults, revocations and the authorize mode; keys, authorizations and
    /// issued tokens stay.
    pub(crate) fn reset(&self) {
        self.counters.reset();
        self.set_fault(Fault::default());
        self.set_authorize_mode(AuthorizeMode::default());
        self.clear_revocations();
    }

    fn grants(&self) -> MutexGuard<'_, Grants> {
        self.grants.lock().expect("grants lock poisoned")
    }
}
