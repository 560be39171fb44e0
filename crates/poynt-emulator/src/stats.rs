//! What the emulator counts, so tests can assert how the proxy behaved upstream (how many
//! token calls per grant and merchant, refresh-token reuse, API calls per merchant, refused
//! or faulted).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use serde::{Deserialize, Serialize};

use poynt_wire::MerchantId;

/// A snapshot of the counters; the same JSON `GET /_emulator/stats` answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// `/token` calls that reached grant handling, per grant.
    pub token_calls: TokenCalls,
    /// Every `/token` call, faulted ones included.
    pub token_calls_total: u64,
    /// `/token` calls answered by an injected fault (status or dropped connection).
    pub token_faulted: u64,
    /// Refresh grants that presented an already-used refresh token.
    pub refresh_token_reuse: u64,
    /// Calls under `/businesses/`.
    pub api_calls: u64,
    /// Calls under `/businesses/{id}`, per merchant the path names (hyphenated UUID), faulted
    /// ones included: how tests see that the proxy kept a merchant's calls away.
    #[serde(default)]
    pub api_calls_by_merchant: BTreeMap<String, u64>,
    /// Calls under `/businesses/` answered (or dropped, or held) by an injected fault.
    #[serde(default)]
    pub api_faulted: u64,
    /// Calls under `/businesses/` refused with 401 `INVALID_ACCESS_TOKEN`.
    pub api_unauthorized: u64,
    /// Calls under `/businesses/` whose request body broke off before its end (the sender
    /// aborted it).
    #[serde(default)]
    pub api_incomplete_bodies: u64,
    /// Connections accepted (TCP; with TLS, whether or not the handshake succeeded), so
    /// tests can tell how many connections a client used.
    #[serde(default)]
    pub connections: u64,
    /// The last W3C `traceparent` received, per request path (only paths that carried one):
    /// how tests see that the proxy sent its trace on.
    #[serde(default)]
    pub last_traceparent: BTreeMap<String, String>,
}

/// `/token` counters per grant type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCalls {
    /// `urn:ietf:params:oauth:grant-type:jwt-bearer`.
    pub jwt_bearer: GrantStats,
    /// `REFRESH_TOKEN`.
    pub refresh_token: GrantStats,
    /// `authorization_code`.
    pub authorization_code: GrantStats,
    /// A missing or unknown grant, or a body that was not a form.
    pub unknown: GrantStats,
}

/// Counters of one grant type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantStats {
    /// Calls, accepted or refused.
    pub total: u64,
    /// Calls refused (any non-200 answer).
    pub refused: u64,
    /// Calls per merchant (hyphenated lowercase UUID), when the call named one.
    pub by_merchant: BTreeMap<String, u64>,
}

/// Which grant a `/token` call used, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grant {
    /// RFC 7523 JWT-bearer.
    JwtBearer,
    /// Refresh token.
    RefreshToken,
    /// Authorization code.
    AuthorizationCode,
    /// Anything else.
    Unknown,
}

/// The live counters. API counters are atomics because they sit on the benchmark's hot
/// path; token counters share one short-held mutex (token calls are rare and carry maps).
#[derive(Default)]
pub(crate) struct Counters {
    /// Token counters, plus the refresh-reuse count kept beside them.
    token: Mutex<TokenCounters>,
    /// `Stats::api_calls`.
    api_calls: AtomicU64,
    /// `Stats::api_calls_by_merchant`: a read lock and an atomic once a merchant is known.
    api_by_merchant: RwLock<HashMap<MerchantId, AtomicU64>>,
    /// `Stats::api_faulted`.
    api_faulted: AtomicU64,
    /// `Stats::api_unauthorized`.
    api_unauthorized: AtomicU64,
    /// `Stats::api_incomplete_bodies`.
    api_incomplete_bodies: AtomicU64,
    /// `Stats::connections`.
    connections: AtomicU64,
    /// `Stats::last_traceparent`: locked only for requests that carry the field.
    traceparents: Mutex<BTreeMap<String, String>>,
}

/// The mutex-guarded part of the counters.
#[derive(Default)]
struct TokenCounters {
    calls: TokenCalls,
    total: u64,
    faulted: u64,
    refresh_reuse: u64,
}

impl Counters {
    /// Counts a `/token` call as it arrives, before any fault or check.
    pub(crate) fn token_call_arrived(&self) {
        self.token().total += 1;
    }

    /// Counts a `/token` call answered by an injected fault.
    pub(crate) fn token_call_faulted(&self) {
        self.token().faulted += 1;
    }

    /// Counts the outcome of a `/token` call that reached grant handling.
    pub(crate) fn token_call_finished(
        &self,
        grant: Grant,
        merchant: Option<MerchantId>,
        refused: bool,
    ) {
        let mut token = self.token();
        let stats = match grant {
            Grant::JwtBearer => &mut token.calls.jwt_bearer,
            Grant::RefreshToken => &mut token.calls.refresh_token,
            Grant::AuthorizationCode => &mut token.calls.authorization_code,
            Grant::Unknown => &mut token.calls.unknown,
        };
        stats.total += 1;
        if refused {
            stats.refused += 1;
        }
        if let Some(merchant) = merchant {
            *stats.by_merchant.entry(merchant.to_string()).or_default() += 1;
        }
    }

    /// Counts a refresh grant that presented an already-used refresh token.
    pub(crate) fn refresh_token_reused(&self) {
        self.token().refresh_reuse += 1;
    }

    /// Counts a call under `/businesses/`, and for the merchant its path names, if any.
    pub(crate) fn api_call(&self, merchant: Option<MerchantId>) {
        self.api_calls.fetch_add(1, Ordering::Relaxed);
        let Some(merchant) = merchant else {
            return;
        };
        if let Some(count) = self.by_merchant_read().get(&merchant) {
            count.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.api_by_merchant
            .write()
            .expect("merchant counters lock poisoned")
            .entry(merchant)
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a `/businesses/` call met by an injected fault.
    pub(crate) fn api_faulted(&self) {
        self.api_faulted.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a `/businesses/` call refused for its access token.
    pub(crate) fn api_unauthorized(&self) {
        self.api_unauthorized.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a `/businesses/` call whose request body broke off.
    pub(crate) fn api_incomplete_body(&self) {
        self.api_incomplete_bodies.fetch_add(1, Ordering::Relaxed);
    }

    /// Notes the `traceparent` a request to `path` carried.
    pub(crate) fn traceparent(&self, path: &str, value: &str) {
        self.traceparents
            .lock()
            .expect("traceparent lock poisoned")
            .insert(path.to_owned(), value.to_owned());
    }

    /// Counts an accepted connection.
    pub(crate) fn connection(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// A consistent-enough snapshot (the atomics are read after the token lock is dropped).
    pub(crate) fn snapshot(&self) -> Stats {
        let (token_calls, token_calls_total, token_faulted, refresh_token_reuse) = {
            let token = self.token();
            (
                token.calls.clone(),
                token.total,
                token.faulted,
                token.refresh_reuse,
            )
        };
        Stats {
            token_calls,
            token_calls_total,
            token_faulted,
            refresh_token_reuse,
            api_calls: self.api_calls.load(Ordering::Relaxed),
            api_calls_by_merchant: self
                .by_merchant_read()
                .iter()
                .map(|(merchant, count)| (merchant.to_string(), count.load(Ordering::Relaxed)))
                .collect(),
            api_faulted: self.api_faulted.load(Ordering::Relaxed),
            api_unauthorized: self.api_unauthorized.load(Ordering::Relaxed),
            api_incomplete_bodies: self.api_incomplete_bodies.load(Ordering::Relaxed),
            connections: self.connections.load(Ordering::Relaxed),
            last_traceparent: self
                .traceparents
                .lock()
                .expect("traceparent lock poisoned")
                .clone(),
        }
    }

    /// Zeroes every counter.
    pub(crate) fn reset(&self) {
        *self.token() = TokenCounters::default();
        self.api_calls.store(0, Ordering::Relaxed);
        self.api_by_merchant
            .write()
            .expect("merchant counters lock poisoned")
            .clear();
        self.api_faulted.store(0, Ordering::Relaxed);
        self.api_unauthorized.store(0, Ordering::Relaxed);
        self.api_incomplete_bodies.store(0, Ordering::Relaxed);
        self.connections.store(0, Ordering::Relaxed);
        self.traceparents
            .lock()
            .expect("traceparent lock poisoned")
            .clear();
    }

    fn by_merchant_read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<MerchantId, AtomicU64>> {
        self.api_by_merchant
            .read()
            .expect("merchant counters lock poisoned")
    }

    fn token(&self) -> std::sync::MutexGuard<'_, TokenCounters> {
        self.token.lock().expect("token counters lock poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_grant_and_merchant_and_serialises_in_the_documented_shape() {
        let counters = Counters::default();
        let merchant = MerchantId::parse("c9580c24-b61e-4e0d-ad26-1dd1d3943d2c").unwrap();
        counters.token_call_arrived();
        counters.token_call_finished(Grant::JwtBearer, Some(merchant), false);
        counters.token_call_arrived();
        counters.token_call_finished(Grant::JwtBearer, None, true);
        counters.api_call(Some(merchant));
        counters.api_call(None);
        counters.api_faulted();
        counters.connection();
        let json = serde_json::to_value(counters.snapshot()).unwrap();
        assert_eq!(json["token_calls"]["jwt_bearer"]["total"], 2);
        assert_eq!(json["token_calls"]["jwt_bearer"]["refused"], 1);
        assert_eq!(
            json["token_calls"]["jwt_bearer"]["by_merchant"]["c9580c24-b61e-4e0d-ad26-1dd1d3943d2c"],
            1
        );
        assert_eq!(json["token_calls_total"], 2);
        assert_eq!(json["api_calls"], 2);
        assert_eq!(
            json["api_calls_by_merchant"]["c9580c24-b61e-4e0d-ad26-1dd1d3943d2c"],
            1
        );
        assert_eq!(json["api_faulted"], 1);
        assert_eq!(json["connections"], 1);
        counters.reset();
        assert_eq!(counters.snapshot(), Stats::default());
    }
}
