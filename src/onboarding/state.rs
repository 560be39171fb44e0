//! State values: the `context` Poynt carries from `/connect` to the callback, which binds the
//! callback to a request this proxy started.
//!
//! A state is self-contained so issuing one needs no storage:
//! `base64url(version | nonce (16 random bytes) | expiry (u64 unix seconds, big-endian) |
//! return_to | HMAC-SHA256 tag)`, the tag covering everything before it. Opening one checks
//! the tag in constant time, then the expiry. Single use is enforced when the callback
//! spends the nonce in [`SpentStates`](super::spent::SpentStates), which remembers it until
//! the state would have expired anyway.

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::RngCore;
use secrecy::SecretString;

/// First byte of every state: lets a later format coexist with this one.
const VERSION: u8 = 1;
/// Bytes of a state's nonce, the part a spent state is remembered by.
pub const NONCE_LEN: usize = 16;
const EXPIRY_LEN: usize = 8;
const TAG_LEN: usize = 32;
const HEADER_LEN: usize = 1 + NONCE_LEN + EXPIRY_LEN;
/// Longest `return_to` a state carries, in bytes.
pub const MAX_RETURN_TO: usize = 1024;
/// Longest encoded state accepted; anything longer is refused before decoding.
const MAX_ENCODED: usize = (HEADER_LEN + MAX_RETURN_TO + TAG_LEN) * 4 / 3 + 4;

/// The 32-byte key states are authenticated with. Every replica that serves callbacks, and
/// `poynt-proxy authorize-url`, must hold the same one.
#[derive(Clone)]
pub struct StateKey(hmac::Key);

impl fmt::Debug for StateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StateKey(<redacted>)")
    }
}

/// Why a state key file was refused.
#[derive(Debug, thiserror::Error)]
pub enum StateKeyError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The contents are not 32 bytes in base64.
    #[error(
        "expected 32 random bytes in base64 (e.g. from `openssl rand -base64 32`); found {found}"
    )]
    Format {
        /// What the file held (its length or shape, never its contents).
        found: String,
    },
}

impl StateKey {
    /// A key from 32 secret bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, &bytes))
    }

    /// A fresh random key: states it issues are valid in this process only.
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self::new(bytes)
    }

    /// Reads a file holding 32 bytes in base64.
    pub fn from_base64_file(path: &Path) -> Result<Self, StateKeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| StateKeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let decoded = STANDARD
            .decode(text.trim())
            .map_err(|_| StateKeyError::Format {
                found: format!("{} characters that are not base64", text.trim().len()),
            })?;
        let bytes: [u8; 32] = decoded
            .try_into()
            .map_err(|d: Vec<u8>| StateKeyError::Format {
                found: format!("{} bytes", d.len()),
            })?;
        Ok(Self::new(bytes))
    }

    /// Issues a state valid for `ttl` from `now`, carrying `return_to`.
    pub fn issue(&self, return_to: Option<&str>, ttl: Duration, now: SystemTime) -> SecretString {
        let return_to = return_to.unwrap_or_default().as_bytes();
        let mut raw = Vec::with_capacity(HEADER_LEN + return_to.len() + TAG_LEN);
        raw.push(VERSION);
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&unix_secs(now + ttl).to_be_bytes());
        raw.extend_from_slice(return_to);
        let tag = hmac::sign(&self.0, &raw);
        raw.extend_from_slice(tag.as_ref());
        URL_SAFE_NO_PAD.encode(raw).into()
    }

    /// The tag of `message` under this key, for values other than states (the success page's
    /// seal). Callers start `message` with a purpose label, so it never reads as a state,
    /// whose first byte is its version.
    pub(super) fn tag(&self, message: &[u8]) -> hmac::Tag {
        hmac::sign(&self.0, message)
    }

    /// Whether `tag` is `message`'s under this key, compared in constant time.
    pub(super) fn verifies(&self, message: &[u8], tag: &[u8]) -> bool {
        hmac::verify(&self.0, message, tag).is_ok()
    }

    /// Opens a state: authentic (constant-time tag check), then unexpired at `now`.
    pub fn open(&self, value: &str, now: SystemTime) -> Result<State, StateError> {
        if value.len() > MAX_ENCODED {
            return Err(StateError::Malformed(format!(
                "expected at most {MAX_ENCODED} characters; found {}",
                value.len()
            )));
        }
        let raw = URL_SAFE_NO_PAD.decode(value).map_err(|_| {
            StateError::Malformed("expected unpadded base64url; it did not decode".to_owned())
        })?;
        if raw.len() < HEADER_LEN + TAG_LEN {
            return Err(StateError::Malformed(format!(
                "expected at least {} bytes; found {}",
                HEADER_LEN + TAG_LEN,
                raw.len()
            )));
        }
        let (body, tag) = raw.split_at(raw.len() - TAG_LEN);
        hmac::verify(&self.0, body, tag).map_err(|_| StateError::Forged)?;
        if body[0] != VERSION {
            return Err(StateError::Malformed(format!(
                "expected version {VERSION}; found {}",
                body[0]
            )));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&body[1..=NONCE_LEN]);
        let mut expiry = [0u8; EXPIRY_LEN];
        expiry.copy_from_slice(&body[1 + NONCE_LEN..HEADER_LEN]);
        let expires_at = UNIX_EPOCH + Duration::from_secs(u64::from_be_bytes(expiry));
        if expires_at <= now {
            return Err(StateError::Expired {
                ago: now.duration_since(expires_at).unwrap_or_default(),
            });
        }
        let return_to = match &body[HEADER_LEN..] {
            [] => None,
            bytes => Some(String::from_utf8(bytes.to_vec()).map_err(|_| {
                StateError::Malformed("expected return_to in UTF-8; it was not".to_owned())
            })?),
        };
        Ok(State {
            nonce,
            expires_at,
            return_to,
        })
    }
}

fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// An opened, authentic, unexpired state.
pub struct State {
    /// What [`SpentStates`](super::spent::SpentStates) remembers.
    pub nonce: [u8; NONCE_LEN],
    /// When it stops being accepted.
    pub expires_at: SystemTime,
    /// Where to send the browser after success, as `/connect` was asked.
    pub return_to: Option<String>,
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("State")
            .field("nonce", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("return_to", &self.return_to)
            .finish()
    }
}

impl State {
    /// How long the nonce must stay spent: until the state would be refused as expired.
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.expires_at.duration_since(now).unwrap_or_default()
    }
}

/// Why a state was refused.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The callback carried no `context`.
    #[error("expected a context parameter (the state /connect issued); found none")]
    Missing,
    /// Not something this proxy issues.
    #[error("expected a state issued by /connect; found a malformed value: {0}")]
    Malformed(String),
    /// The tag does not verify: not issued with this key, or altered.
    #[error("expected a state authenticated with this proxy's state key; its tag does not verify")]
    Forged,
    /// Past its expiry.
    #[error("expected an unexpired state; found one that expired {} ago", humantime::format_duration(*.ago))]
    Expired {
        /// How long ago (whole seconds).
        ago: Duration,
    },
    /// Already spent by an earlier callback.
    #[error("expected a state used once; found one already used by an earlier callback (replayed)")]
    Replayed,
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(600);

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn a_state_round_trips_with_its_return_to() {
        let key = StateKey::new([7; 32]);
        let issued = key.issue(Some("https://app.example.com/done?x=1"), TTL, now());
        let state = key
            .open(secrecy::ExposeSecret::expose_secret(&issued), now())
            .unwrap();
        assert_eq!(
            state.return_to.as_deref(),
            Some("https://app.example.com/done?x=1")
        );
        assert_eq!(state.remaining(now()), TTL);
        let bare = key.issue(None, TTL, now());
        let state = key
            .open(secrecy::ExposeSecret::expose_secret(&bare), now())
            .unwrap();
        assert_eq!(state.return_to, None);
    }

    #[test]
    fn forged_altered_expired_and_garbage_states_are_refused() {
        let key = StateKey::new([7; 32]);
        let issued = key.issue(None, TTL, now());
        let text = secrecy::ExposeSecret::expose_secret(&issued).to_owned();
        let other = StateKey::new([8; 32]);
        assert!(matches!(other.open(&text, now()), Err(StateError::Forged)));
        let mut raw = URL_SAFE_NO_PAD.decode(&text).unwrap();
        raw[20] ^= 1;
        let altered = URL_SAFE_NO_PAD.encode(&raw);
        assert!(matches!(key.open(&altered, now()), Err(StateError::Forged)));
        let later = now() + TTL + Duration::from_secs(5);
        let err = key.open(&text, later).unwrap_err();
        assert!(matches!(err, StateError::Expired { .. }));
        assert!(err.to_string().contains("5s ago"), "{err}");
        for garbage in ["", "!!!", "AAAA", &"A".repeat(5000)] {
            assert!(
                matches!(key.open(garbage, now()), Err(StateError::Malformed(_))),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn debug_shows_no_key() {
        assert_eq!(
            format!("{:?}", StateKey::new([7; 32])),
            "StateKey(<redacted>)"
        );
    }
}
