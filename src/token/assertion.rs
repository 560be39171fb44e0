//! The app's self-signed JWT (RFC 7523 assertion), which proves the app's identity to
//! Poynt's `/token` endpoint. Claims follow Poynt's protocol exactly: seconds (not the SDKs'
//! milliseconds), a lifetime of at most 300 s, a fresh `jti`, and `poynt.biz` when the
//! assertion acts for one merchant.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use crate::armour::{self, ArmourError};
use poynt_wire::MAX_ASSERTION_LIFETIME_SECS;
use poynt_wire::MerchantId;

/// Lifetime of each assertion: well inside Poynt's 300 s cap, yet long enough to absorb a
/// few seconds of clock skew between the proxy and Poynt.
pub const ASSERTION_LIFETIME: Duration = Duration::from_secs(240);

const _: () = assert!(ASSERTION_LIFETIME.as_secs() <= MAX_ASSERTION_LIFETIME_SECS);

/// Why the private key was refused.
#[derive(Debug, thiserror::Error)]
pub enum AppKeyError {
    /// The key file could not be read.
    #[error("cannot read private key file {path}: {source}")]
    Read {
        /// The file asked for.
        path: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The text is not an RSA private key in PEM.
    #[error(
        "expected an RSA private key in PEM (\"BEGIN RSA PRIVATE KEY\" or \"BEGIN PRIVATE KEY\"); found {found}"
    )]
    Parse {
        /// What the text looked like (its PEM label, never its content).
        found: String,
    },
    /// A PEM armour line is malformed (named by line, as the code key's are).
    #[error(transparent)]
    Armour(#[from] ArmourError),
}

/// The app's RSA private key. Its `Debug` prints only its fingerprint.
#[derive(Clone)]
pub struct AppKey {
    key: Arc<EncodingKey>,
    fingerprint: [u8; 8],
}

impl fmt::Debug for AppKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AppKey(fingerprint {})", self.fingerprint())
    }
}

impl AppKey {
    /// Loads a PKCS#1 or PKCS#8 PEM file.
    pub fn from_pem_file(path: &Path) -> Result<Self, AppKeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| AppKeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_pem(&SecretString::from(text))
    }

    /// Parses PKCS#1 or PKCS#8 PEM text (its armour checked line by line first), and proves
    /// the key signs, so a key that parses but cannot sign (wrong type, truncated) fails at
    /// start-up rather than at the first grant.
    pub fn from_pem(pem: &SecretString) -> Result<Self, AppKeyError> {
        let text = pem.expose_secret();
        armour::check(text, "PRIVATE KEY")?;
        let parse_error = || AppKeyError::Parse {
            found: describe_pem(text),
        };
        let key = EncodingKey::from_rsa_pem(text.as_bytes()).map_err(|_| parse_error())?;
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &serde_json::json!({}), &key)
            .map_err(|_| parse_error())?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.trim().as_bytes());
        let mut fingerprint = [0u8; 8];
        fingerprint.copy_from_slice(&digest.as_ref()[..8]);
        Ok(Self {
            key: Arc::new(key),
            fingerprint,
        })
    }

    /// The first 8 bytes of the PEM text's SHA-256, in hex: names which key is loaded (in
    /// logs, after a rotation) and reveals nothing of it.
    pub fn fingerprint(&self) -> String {
        self.fingerprint
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Names a PEM's label (e.g. `a "CERTIFICATE" PEM block`) without echoing any key material.
fn describe_pem(text: &str) -> String {
    let label = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("-----BEGIN "))
        .and_then(|rest| rest.strip_suffix("-----"));
    match label {
        Some(label) => format!("a {label:?} PEM block that does not parse as an RSA key"),
        None if text.trim().is_empty() => "an empty file".into(),
        None => "text with no PEM block".into(),
    }
}

/// Failure to sign (only with a key that stopped working, which start-up rules out).
#[derive(Debug, thiserror::Error)]
#[error("signing the assertion failed: {0}")]
pub struct SignError(#[source] jsonwebtoken::errors::Error);

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
    jti: String,
    #[serde(rename = "poynt.biz", skip_serializing_if = "Option::is_none")]
    biz: Option<String>,
}

/// Signs assertions for one app and audience. Clones share the key, so a reload that
/// replaces it ([`AssertionSigner::replace_key`]) reaches every grant from then on.
#[derive(Debug, Clone)]
pub struct AssertionSigner {
    application_id: String,
    audience: String,
    key: Arc<ArcSwap<AppKey>>,
}

impl AssertionSigner {
    /// `audience` is the API host Poynt expects in `aud`.
    pub fn new(application_id: String, audience: String, key: AppKey) -> Self {
        Self {
            application_id,
            audience,
            key: Arc::new(ArcSwap::from_pointee(key)),
        }
    }

    /// Signs with `key` from the next assertion on (a rotated app key, after a reload).
    pub fn replace_key(&self, key: AppKey) {
        self.key.store(Arc::new(key));
    }

    /// The app ID, which the authorization-code grant also sends as `client_id`.
    pub fn application_id(&self) -> &str {
        &self.application_id
    }

    /// A fresh assertion, optionally acting for `merchant`. Each call gets a new `jti`.
    pub fn sign(&self, merchant: Option<MerchantId>) -> Result<SecretString, SignError> {
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = Claims {
            iss: &self.application_id,
            sub: &self.application_id,
            aud: &self.audience,
            iat,
            exp: iat + ASSERTION_LIFETIME.as_secs(),
            jti: uuid::Uuid::new_v4().to_string(),
            biz: merchant.map(|m| m.to_string()),
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &claims,
            &self.key.load().key,
        )
        .map(SecretString::from)
        .map_err(SignError)
    }
}
