//! The stored record — what outlives the process for one merchant — and its encoding before
//! sealing: a small JSON document (times in milliseconds since the Unix epoch, so tokens of a
//! few seconds, as tests use, keep their refresh points exact), sealed by
//! [`Sealer`] under the associated data `domain | application | merchant`.
//! Also what the backends answer about records: what a save did ([`Saved`]) and what another
//! holder changed ([`Event`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

use super::error::StoreError;
use super::seal::{Key, Keys, SealError, sealed_key_id};
use crate::metrics::StoreMetrics;
use poynt_wire::GrantKind;
use poynt_wire::MerchantId;

/// Names what a sealed record is, so no other sealed value can stand in for one.
const RECORD_DOMAIN: &[u8] = b"poynt-proxy token record v1";
/// Names the store's check value: a known text sealed with the current key, so a store
/// opened with the wrong key fails at once instead of reading every record as absent.
const CANARY_DOMAIN: &[u8] = b"poynt-proxy store canary v1";
const CANARY_TEXT: &[u8] = b"poynt-proxy store key check";

/// One merchant's stored credentials.
#[derive(Clone)]
pub struct Record {
    /// The access token; `None` after a 401 invalidation or while a refresh is in flight.
    pub access_token: Option<SecretString>,
    /// The refresh token: for merchants onboarded through the authorization-code flow, their
    /// only durable credential.
    pub refresh_token: Option<SecretString>,
    /// When the access token expires (stored to the millisecond).
    pub expires_at: SystemTime,
    /// When the access token was issued (stored to the millisecond).
    pub issued_at: SystemTime,
    /// The grant that produced the access token.
    pub grant: GrantKind,
    /// Per-merchant, strictly increasing: the fencing token every save is compared on.
    pub generation: u64,
    /// When the merchant came through the authorization-code flow; kept across renewals.
    pub onboarded_at: Option<SystemTime>,
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let held = |t: &Option<SecretString>| if t.is_some() { "[redacted]" } else { "none" };
        f.debug_struct("Record")
            .field("access_token", &held(&self.access_token))
            .field("refresh_token", &held(&self.refresh_token))
            .field(
                "expires_at",
                &humantime::format_rfc3339_seconds(self.expires_at),
            )
            .field(
                "issued_at",
                &humantime::format_rfc3339_seconds(self.issued_at),
            )
            .field("grant", &self.grant)
            .field("generation", &self.generation)
            .field(
                "onboarded_at",
                &self.onboarded_at.map(humantime::format_rfc3339_seconds),
            )
            .finish()
    }
}

/// The encoded form. Borrowed on the way in so tokens are copied only into the zeroizing
/// buffer that is then sealed.
#[derive(Serialize)]
struct Encoded<'a> {
    access_token: Option<&'a str>,
    refresh_token: Option<&'a str>,
    expires_at_ms: u64,
    issued_at_ms: u64,
    grant: GrantKind,
    generation: u64,
    onboarded_at_ms: Option<u64>,
}

#[derive(Deserialize)]
struct Decoded {
    access_token: Option<String>,
    refresh_token: Option<String>,
    expires_at_ms: u64,
    issued_at_ms: u64,
    grant: GrantKind,
    generation: u64,
    onboarded_at_ms: Option<u64>,
}

fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn time(millis: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_millis(millis))
        .unwrap_or(UNIX_EPOCH)
}

impl Record {
    fn encode(&self) -> Zeroizing<Vec<u8>> {
        let encoded = Encoded {
            access_token: self.access_token.as_ref().map(|t| t.expose_secret()),
            refresh_token: self.refresh_token.as_ref().map(|t| t.expose_secret()),
            expires_at_ms: millis(self.expires_at),
            issued_at_ms: millis(self.issued_at),
            grant: self.grant,
            generation: self.generation,
            onboarded_at_ms: self.onboarded_at.map(millis),
        };
        // Strings, integers and a unit enum always serialise.
        Zeroizing::new(serde_json::to_vec(&encoded).expect("a record serialises"))
    }

    fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let d: Decoded = serde_json::from_slice(bytes)?;
        Ok(Self {
            access_token: d.access_token.map(Into::into),
            refresh_token: d.refresh_token.map(Into::into),
            expires_at: time(d.expires_at_ms),
            issued_at: time(d.issued_at_ms),
            grant: d.grant,
            generation: d.generation,
            onboarded_at: d.onboarded_at_ms.map(time),
        })
    }
}

/// Why a stored record did not open.
#[derive(Debug, thiserror::Error)]
enum Unreadable {
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error("opened but does not decode: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("stored beside generation {outer} but holds generation {inner}")]
    Generation { outer: u64, inner: u64 },
}

/// Seals and opens one application's records. A record that does not open is treated as
/// absent by readers but is never overwritten: it may be the only copy of a merchant's
/// refresh token, sealed with a key this process lacks (a misconfigured replica). It is
/// counted, logged (without any of its bytes) once per merchant, and its merchant's saves
/// are withheld until a record for it opens or it is deleted.
#[derive(Clone)]
pub(super) struct Sealer {
    keys: Keys,
    application_id: Arc<str>,
    metrics: StoreMetrics,
    /// Merchants whose stored record did not open, with the key id it names ("none" when it
    /// is not a sealed value at all).
    refused: Arc<Mutex<HashMap<MerchantId, String>>>,
}

impl Sealer {
    pub(super) fn new(keys: Keys, application_id: &str, metrics: StoreMetrics) -> Self {
        Self {
            keys,
            application_id: application_id.into(),
            metrics,
            refused: Arc::default(),
        }
    }

    /// The key new records are sealed with.
    pub(super) fn current_key(&self) -> &Key {
        self.keys.current()
    }

    /// The check value, sealed with the current key.
    pub(super) fn seal_canary(&self) -> Vec<u8> {
        self.keys.seal(&self.canary_aad(), CANARY_TEXT)
    }

    /// Opens the check value: whether the current key (true) or a previous one (false)
    /// sealed it, or why no configured key opens it.
    pub(super) fn open_canary(&self, sealed: &[u8]) -> Result<bool, SealError> {
        Ok(self.keys.open(&self.canary_aad(), sealed)?.by_current_key)
    }

    fn canary_aad(&self) -> Vec<u8> {
        [CANARY_DOMAIN, b"\0", self.application_id.as_bytes()].concat()
    }

    fn aad(&self, merchant: MerchantId) -> Vec<u8> {
        let mut aad = Vec::with_capacity(RECORD_DOMAIN.len() + self.application_id.len() + 18);
        aad.extend_from_slice(RECORD_DOMAIN);
        aad.push(0);
        aad.extend_from_slice(self.application_id.as_bytes());
        aad.push(0);
        aad.extend_from_slice(merchant.uuid().as_bytes());
        aad
    }

    /// Seals `record` as `merchant`'s under the current key.
    pub(super) fn seal(&self, merchant: MerchantId, record: &Record) -> Vec<u8> {
        self.keys.seal(&self.aad(merchant), &record.encode())
    }

    /// Opens `merchant`'s sealed record stored beside generation `outer`. `None` (counted,
    /// logged once per merchant, and its saves withheld) when it does not open; otherwise the
    /// record and whether the current key sealed it.
    pub(super) fn open(
        &self,
        merchant: MerchantId,
        outer: u64,
        sealed: &[u8],
    ) -> Option<(Record, bool)> {
        match self.try_open(merchant, outer, sealed) {
            Ok(opened) => {
                self.refused_merchants().remove(&merchant);
                Some(opened)
            }
            Err(error) => {
                self.refuse(merchant, sealed, &error);
                None
            }
        }
    }

    /// Counts a stored value for `merchant` that cannot be used, withholds the merchant's
    /// saves, and logs the first refusal of each merchant.
    pub(super) fn refuse(&self, merchant: MerchantId, stored: &[u8], error: &dyn fmt::Display) {
        self.metrics.record_refused();
        let key = sealed_key_id(stored).unwrap_or_else(|| "none".to_owned());
        let first = self
            .refused_merchants()
            .insert(merchant, key.clone())
            .is_none();
        if first {
            tracing::warn!(%merchant, sealed_with_key = %key, %error, "stored record refused: left as is, and this merchant's new tokens are served without being saved until a configured key opens it or it is deleted (DELETE /admin/merchants/<business id>)");
        } else {
            tracing::debug!(%merchant, sealed_with_key = %key, %error, "stored record refused");
        }
    }

    /// Refuses a save for a merchant whose stored record did not open (counted): writing
    /// would destroy a record that another replica, holding the right key, can still use.
    pub(super) fn writable(&self, merchant: MerchantId) -> Result<(), StoreError> {
        match self.refused_merchants().get(&merchant) {
            Some(key) => {
                self.metrics.save_withheld();
                Err(StoreError::Withheld {
                    merchant,
                    key: key.clone(),
                })
            }
            None => Ok(()),
        }
    }

    /// Forgets a refusal once the merchant's record is deleted.
    pub(super) fn deleted(&self, merchant: MerchantId) {
        self.refused_merchants().remove(&merchant);
    }

    /// How many records that did not open name each key id (`store list`).
    pub(super) fn refused_by_key(&self) -> BTreeMap<String, usize> {
        let mut by_key = BTreeMap::new();
        for key in self.refused_merchants().values() {
            *by_key.entry(key.clone()).or_insert(0) += 1;
        }
        by_key
    }

    fn refused_merchants(&self) -> std::sync::MutexGuard<'_, HashMap<MerchantId, String>> {
        self.refused.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn try_open(
        &self,
        merchant: MerchantId,
        outer: u64,
        sealed: &[u8],
    ) -> Result<(Record, bool), Unreadable> {
        let opened = self.keys.open(&self.aad(merchant), sealed)?;
        let record = Record::decode(&opened.plaintext)?;
        if record.generation != outer {
            return Err(Unreadable::Generation {
                outer,
                inner: record.generation,
            });
        }
        Ok((record, opened.by_current_key))
    }
}

/// What a compare-and-set save did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    /// Stored: there was no record, or an older generation.
    Written,
    /// Not stored: the store holds this generation or a newer one.
    Stale {
        /// The generation the store holds.
        current_generation: u64,
    },
}

/// A change another holder of the store made (Redis only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A record was written with this generation.
    Saved {
        /// Whose.
        merchant: MerchantId,
        /// The generation now stored.
        generation: u64,
    },
    /// A record was deleted.
    Deleted {
        /// Whose.
        merchant: MerchantId,
    },
    /// The events subscription was (re)established: anything published meanwhile was missed,
    /// so reconcile with the store.
    Resync,
}

/// The sending half of a full read.
pub(super) type RecordSender = tokio::sync::mpsc::Sender<(MerchantId, Record)>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::store::seal::{KEY_LEN, Key};
    use secrecy::SecretBox;

    fn sealer() -> (Sealer, Metrics) {
        let metrics = Metrics::new().unwrap();
        let key = Key::new(&SecretBox::new(Box::new([4u8; KEY_LEN])));
        (
            Sealer::new(
                Keys::new(key, vec![]),
                "urn:aid:test",
                metrics.store().clone(),
            ),
            metrics,
        )
    }

    fn record() -> Record {
        Record {
            access_token: Some("access-SECRET-1".to_owned().into()),
            refresh_token: Some("refresh-SECRET-2".to_owned().into()),
            expires_at: UNIX_EPOCH + Duration::from_secs(2_000_000_000),
            issued_at: UNIX_EPOCH + Duration::from_secs(1_999_996_400),
            grant: GrantKind::AuthorizationCode,
            generation: 7,
            onboarded_at: Some(UNIX_EPOCH + Duration::from_secs(1_900_000_000)),
        }
    }

    fn merchant(n: u8) -> MerchantId {
        MerchantId::parse(&format!("{n:08x}-0000-4000-8000-000000000000")).unwrap()
    }

    #[test]
    fn debug_redacts_tokens() {
        let shown = format!("{:?}", record());
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(
            shown.contains("[redacted]") && shown.contains("generation: 7"),
            "{shown}"
        );
    }

    #[test]
    fn a_record_round_trips_through_the_seal() {
        let (sealer, _) = sealer();
        let sealed = sealer.seal(merchant(1), &record());
        assert!(!sealed.windows(6).any(|w| w == b"SECRET"));
        let (opened, current) = sealer.open(merchant(1), 7, &sealed).unwrap();
        assert!(current);
        assert_eq!(format!("{opened:?}"), format!("{:?}", record()));
        assert_eq!(
            opened.refresh_token.unwrap().expose_secret(),
            "refresh-SECRET-2"
        );
    }

    #[test]
    fn a_record_under_another_merchant_or_generation_is_refused_and_counted() {
        let (sealer, metrics) = sealer();
        let sealed = sealer.seal(merchant(1), &record());
        assert!(sealer.open(merchant(2), 7, &sealed).is_none());
        assert!(sealer.open(merchant(1), 8, &sealed).is_none());
        assert!(
            metrics
                .render()
                .contains("poynt_proxy_store_records_refused_total 2"),
            "{}",
            metrics.render()
        );
    }
}
