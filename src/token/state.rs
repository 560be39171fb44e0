//! What the broker remembers about a merchant beyond its current token: the refresh token,
//! the back-off after failures, when a 401 last forced a renewal, and the grant in flight.
//!
//! Merchants live in one of two bounded maps. `known` holds every merchant that was ever
//! granted a token (up to `tokens.max_merchants`, forgotten after two idle days). `newcomers`
//! holds merchants that never were: small, short-lived, so a flood of unknown business IDs
//! leaves a bounded footprint that expires on its own. A newcomer is promoted to `known` by
//! its first successful grant.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use secrecy::SecretString;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::token::cache::Token;
use crate::token::error::BrokerError;
use poynt_wire::MerchantId;

/// How long a known merchant's state (refresh token, back-off) is kept after its last use.
const KNOWN_IDLE_TIMEOUT: Duration = Duration::from_secs(48 * 3600);
/// How many never-granted merchants are remembered at once (their back-off and flights).
pub(crate) const NEWCOMER_CAPACITY: u64 = 10_000;

/// What a grant in flight ends with, shared by everyone waiting on it.
pub(crate) type Outcome = Result<Arc<Token>, BrokerError>;
/// A grant in flight: resolves to `Some(outcome)` when it ends; closed if its task died.
pub(crate) type Flight = watch::Receiver<Option<Outcome>>;

/// One merchant's state.
#[derive(Default)]
pub(crate) struct MerchantState {
    inner: Mutex<StateInner>,
}

/// The fields, behind one short-held lock (never held across an `.await`).
#[derive(Default)]
pub(crate) struct StateInner {
    /// The last refresh token this process saw for the merchant. The store's record is the
    /// one presented (read under the merchant's lock); this copy answers the admin API and
    /// rebuilds the record if the store lost it (an outage, a restarted Redis).
    pub(crate) refresh_token: Option<SecretString>,
    /// Consecutive failed grants.
    pub(crate) failures: u32,
    /// No grant is attempted before this (after a failure).
    pub(crate) backoff_until: Option<Instant>,
    /// The last failure, for the admin API.
    pub(crate) last_error: Option<String>,
    /// Whether the last failure was Poynt saying the merchant has not authorized the app,
    /// so callers during the back-off hear that rather than "try again later".
    pub(crate) not_authorized: bool,
    /// When the last successful grant arrived.
    pub(crate) last_renewal: Option<SystemTime>,
    /// When an upstream 401 last made the broker drop a token, to rate-limit such renewals.
    pub(crate) unauthorized_renewal: Option<Instant>,
    /// The grant in flight, which every caller for this merchant joins.
    pub(crate) flight: Option<Flight>,
    /// The flight's span, when traces are on: each caller that joins links it to itself.
    pub(crate) flight_span: Option<tracing::Span>,
    /// Whether a grant ever succeeded (the merchant is known, not a newcomer).
    pub(crate) granted: bool,
    /// The highest record generation seen for this merchant, here or in the store: the next
    /// record this process writes carries a higher one.
    pub(crate) generation: u64,
    /// When the merchant came through the authorization-code flow (kept across renewals).
    pub(crate) onboarded_at: Option<SystemTime>,
}

impl MerchantState {
    /// Locks the fields; a poisoned lock is recovered (the fields stay consistent because
    /// every writer sets them in one step).
    pub(crate) fn lock(&self) -> MutexGuard<'_, StateInner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Every merchant's state.
pub(crate) struct States {
    known: moka::sync::Cache<MerchantId, Arc<MerchantState>>,
    newcomers: moka::sync::Cache<MerchantId, Arc<MerchantState>>,
}

impl States {
    /// `newcomer_ttl` should outlast the longest back-off, so a refused merchant's back-off
    /// is remembered while it lasts.
    pub(crate) fn new(max_merchants: u64, newcomer_ttl: Duration) -> Self {
        Self {
            known: moka::sync::Cache::builder()
                .max_capacity(max_merchants)
                .time_to_idle(KNOWN_IDLE_TIMEOUT)
                .build(),
            newcomers: moka::sync::Cache::builder()
                .max_capacity(NEWCOMER_CAPACITY)
                .time_to_live(newcomer_ttl)
                .build(),
        }
    }

    /// The merchant's state, created as a newcomer's if it has none.
    pub(crate) fn get_or_create(&self, merchant: MerchantId) -> Arc<MerchantState> {
        match self.known.get(&merchant) {
            Some(state) => state,
            None => self.newcomers.get_with(merchant, Default::default),
        }
    }

    /// The merchant's state, if it has one.
    pub(crate) fn get(&self, merchant: MerchantId) -> Option<Arc<MerchantState>> {
        self.known
            .get(&merchant)
            .or_else(|| self.newcomers.get(&merchant))
    }

    /// Moves a merchant that was just granted a token among the known ones.
    pub(crate) fn promote(&self, merchant: MerchantId, state: &Arc<MerchantState>) {
        if !self.known.contains_key(&merchant) {
            self.known.insert(merchant, state.clone());
            self.newcomers.invalidate(&merchant);
        }
    }

    /// Every merchant with a state.
    pub(crate) fn merchants(&self) -> impl Iterator<Item = MerchantId> + '_ {
        self.known
            .iter()
            .chain(self.newcomers.iter())
            .map(|(merchant, _)| *merchant)
    }

    /// How many merchants are backing off now.
    pub(crate) fn backing_off(&self, now: Instant) -> u64 {
        let count = self
            .known
            .iter()
            .chain(self.newcomers.iter())
            .filter(|(_, state)| state.lock().backoff_until.is_some_and(|u| now < u))
            .count();
        count as u64
    }
}
