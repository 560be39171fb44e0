//! Encryption at rest: every stored record is sealed with AES-256-GCM under the current store
//! key, so neither the embedded file nor a Redis value holds a token in clear.
//!
//! A sealed value is `version (1 byte) | key id (8 bytes) | nonce (12 bytes) | ciphertext+tag`.
//! The key id (the first 8 bytes of the key's SHA-256) says which key opens it, so keys being
//! rotated out ([`Keys`]' previous keys) still open old values while every write uses the
//! current key. The nonce is random per write. The associated data names what the value is
//! and whose it is (a domain string, the application, the merchant): a value copied under
//! another merchant's name does not open.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::hkdf::{HKDF_SHA256, Prk, Salt};
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretBox};

/// Length of a store key in bytes.
pub const KEY_LEN: usize = 32;
/// Length of a key id in bytes.
pub const KEY_ID_LEN: usize = 8;
/// The format version this code writes and reads.
const VERSION: u8 = 1;
/// Bytes before the ciphertext.
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;
/// Bytes the GCM tag adds.
const TAG_LEN: usize = 16;

/// A key id: the first bytes of the key's SHA-256, stored beside each value.
pub type KeyId = [u8; KEY_ID_LEN];

/// Why a sealed value did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Shorter than a header and a tag.
    #[error("expected a sealed value of at least {min} bytes; found {found}")]
    Truncated {
        /// The minimum length.
        min: usize,
        /// The length found.
        found: usize,
    },
    /// Written by a format this code does not know.
    #[error("expected sealed format version {VERSION}; found {0}")]
    Version(u8),
    /// Sealed with a key that is neither the current nor a previous key.
    #[error("sealed with key {found}, which is not configured (keys: {known})")]
    UnknownKey {
        /// The value's key id, in hex.
        found: String,
        /// The configured key ids, in hex.
        known: String,
    },
    /// The key matched but authentication failed: the value was altered, or it belongs to
    /// another merchant or application.
    #[error(
        "sealed with key {key} but does not authenticate: altered, or stored under another name"
    )]
    Refused {
        /// The key id, in hex.
        key: String,
    },
}

/// Salt of every derived key (a fixed, public domain separator).
const DERIVE_SALT: &[u8] = b"poynt-proxy derived keys v1";

/// The id (hex) of the key a sealed value names in its header, whether or not any configured
/// key opens it: what an operator needs to find the key a foreign record was sealed with.
/// `None` when the value is not in a format this code knows.
pub fn sealed_key_id(sealed: &[u8]) -> Option<String> {
    (sealed.len() >= HEADER_LEN && sealed[0] == VERSION).then(|| hex(&sealed[1..1 + KEY_ID_LEN]))
}

/// One store key, ready to seal and open. The raw bytes live only while the AEAD key is
/// built (in a zeroizing box); aws-lc keeps the expanded key and wipes it when freed.
#[derive(Clone)]
pub struct Key {
    id: KeyId,
    aead: Arc<LessSafeKey>,
    /// HKDF's pseudo-random key, for keys serving other purposes ([`Key::derive`]).
    prk: Arc<Prk>,
}

impl Key {
    /// Builds a key from its 32 bytes.
    pub fn new(bytes: &SecretBox<[u8; KEY_LEN]>) -> Self {
        let secret = bytes.expose_secret();
        let hash = digest(&SHA256, secret);
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&hash.as_ref()[..KEY_ID_LEN]);
        // AES-256-GCM takes exactly 32 bytes, which the type guarantees.
        let unbound = UnboundKey::new(&AES_256_GCM, secret).expect("AES-256-GCM takes 32 bytes");
        Self {
            id,
            aead: Arc::new(LessSafeKey::new(unbound)),
            prk: Arc::new(Salt::new(HKDF_SHA256, DERIVE_SALT).extract(secret)),
        }
    }

    /// A 32-byte key for another `purpose` (HKDF-SHA256), so one configured secret serves
    /// several jobs without any two sharing a key: replicas and tools holding the store key
    /// agree on it, and it reveals nothing of the store key.
    pub fn derive(&self, purpose: &[u8]) -> SecretBox<[u8; KEY_LEN]> {
        let mut out = Box::new([0u8; KEY_LEN]);
        self.prk
            .expand(&[purpose], HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut out[..]))
            .expect("HKDF-SHA256 yields 32 bytes");
        SecretBox::new(out)
    }

    /// The key's id.
    pub fn id(&self) -> KeyId {
        self.id
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key(id {})", hex(&self.id))
    }
}

/// The keys of a store: the current one seals and opens, previous ones only open.
#[derive(Clone)]
pub struct Keys {
    current: Key,
    previous: Arc<[Key]>,
}

/// What opening a value produced.
pub struct Opened {
    /// The plaintext, wiped when dropped.
    pub plaintext: Zeroizing<Vec<u8>>,
    /// False when a previous key opened it: the value should be sealed again.
    pub by_current_key: bool,
}

impl Keys {
    /// The current key and the keys being rotated out.
    pub fn new(current: Key, previous: Vec<Key>) -> Self {
        Self {
            current,
            previous: previous.into(),
        }
    }

    /// The key every write uses.
    pub fn current(&self) -> &Key {
        &self.current
    }

    /// Seals `plaintext` under the current key with a fresh random nonce.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        // The system RNG failing is not something the store can recover from.
        aws_lc_rs::rand::fill(&mut nonce).expect("system random number generator");
        // Encrypted in place: once sealed, `body` holds ciphertext and tag.
        let mut body = plaintext.to_vec();
        self.current
            .aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            .expect("AES-GCM seals any length a record has");
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        out.push(VERSION);
        out.extend_from_slice(&self.current.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        out
    }

    /// Opens a sealed value with whichever configured key its id names.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Opened, SealError> {
        if sealed.len() < HEADER_LEN + TAG_LEN {
            return Err(SealError::Truncated {
                min: HEADER_LEN + TAG_LEN,
                found: sealed.len(),
            });
        }
        if sealed[0] != VERSION {
            return Err(SealError::Version(sealed[0]));
        }
        let id = &sealed[1..1 + KEY_ID_LEN];
        let (key, by_current_key) =
            if id == self.current.id {
                (&self.current, true)
            } else {
                let key = self.previous.iter().find(|k| k.id == id).ok_or_else(|| {
                    SealError::UnknownKey {
                        found: hex(id),
                        known: self.ids(),
                    }
                })?;
                (key, false)
            };
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[1 + KEY_ID_LEN..HEADER_LEN]);
        let mut body = Zeroizing::new(sealed[HEADER_LEN..].to_vec());
        let length = key
            .aead
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            .map_err(|_| SealError::Refused { key: hex(&key.id) })?
            .len();
        body.truncate(length);
        Ok(Opened {
            plaintext: body,
            by_current_key,
        })
    }

    fn ids(&self) -> String {
        std::iter::once(&self.current)
            .chain(self.previous.iter())
            .map(|k| hex(&k.id))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("current", &self.current)
            .field("previous", &self.previous)
            .finish()
    }
}

/// Lowercase hex of `bytes` (key ids in messages; never key material).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(fill: u8) -> Key {
        Key::new(&SecretBox::new(Box::new([fill; KEY_LEN])))
    }

    #[test]
    fn round_trips_with_a_fresh_nonce_each_time() {
        let keys = Keys::new(key(1), vec![]);
        let a = keys.seal(b"aad", b"refresh-token-value");
        let b = keys.seal(b"aad", b"refresh-token-value");
        assert_ne!(a, b, "two seals of one plaintext differ (random nonce)");
        let opened = keys.open(b"aad", &a).unwrap();
        assert_eq!(&opened.plaintext[..], b"refresh-token-value");
        assert!(opened.by_current_key);
        assert!(
            !a.windows(7).any(|w| w == b"refresh"),
            "plaintext visible in the sealed bytes"
        );
    }

    #[test]
    fn a_wrong_key_is_named_by_id_not_tried() {
        let sealed = Keys::new(key(1), vec![]).seal(b"aad", b"x");
        let err = Keys::new(key(2), vec![])
            .open(b"aad", &sealed)
            .err()
            .unwrap();
        assert!(
            matches!(&err, SealError::UnknownKey { found, .. } if *found == hex(&key(1).id())),
            "{err}"
        );
    }

    #[test]
    fn other_associated_data_is_refused() {
        let keys = Keys::new(key(1), vec![]);
        let sealed = keys.seal(b"merchant-a", b"x");
        assert!(matches!(
            keys.open(b"merchant-b", &sealed),
            Err(SealError::Refused { .. })
        ));
    }

    #[test]
    fn any_altered_byte_is_refused() {
        let keys = Keys::new(key(1), vec![]);
        let sealed = keys.seal(b"aad", b"a token of some length");
        for i in 0..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[i] ^= 0x01;
            assert!(keys.open(b"aad", &tampered).is_err(), "byte {i} altered");
        }
        assert!(matches!(
            keys.open(b"aad", &sealed[..10]),
            Err(SealError::Truncated { .. })
        ));
    }

    #[test]
    fn previous_keys_open_by_id_and_say_so() {
        let old = Keys::new(key(1), vec![]).seal(b"aad", b"old");
        let older = Keys::new(key(3), vec![]).seal(b"aad", b"older");
        let rotated = Keys::new(key(2), vec![key(3), key(1)]);
        let opened = rotated.open(b"aad", &old).unwrap();
        assert_eq!(&opened.plaintext[..], b"old");
        assert!(!opened.by_current_key);
        assert_eq!(
            &rotated.open(b"aad", &older).unwrap().plaintext[..],
            b"older"
        );
        let fresh = rotated.seal(b"aad", b"new");
        assert_eq!(
            &fresh[1..1 + KEY_ID_LEN],
            &key(2).id(),
            "writes use the current key"
        );
        assert!(rotated.open(b"aad", &fresh).unwrap().by_current_key);
    }

    #[test]
    fn debug_shows_key_ids_only() {
        let keys = Keys::new(key(7), vec![key(8)]);
        assert_eq!(
            format!("{keys:?}"),
            format!(
                "Keys {{ current: Key(id {}), previous: [Key(id {})] }}",
                hex(&key(7).id()),
                hex(&key(8).id())
            )
        );
    }
}
