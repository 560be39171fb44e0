//! Where the key that verifies Poynt's signed authorization codes comes from.
//!
//! Poynt signs codes with the private key of poynt.net's TLS certificate, so the default
//! source (`code_key: tls`) is the public key of the certificate the authorize host presents,
//! fetched through the configured trust at start, cached, and fetched again after a
//! signature failure at most once a minute (Poynt may have rotated its certificate). The
//! alternative is a PEM public key or certificate file, read and checked at start-up; its
//! armour is checked line by line ([`crate::armour`]) so that a key pasted from Poynt's
//! documentation, whose armour is malformed, is refused with the line at fault rather than
//! failing later.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::Uri;
use jsonwebtoken::DecodingKey;
use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::time::Instant;

use crate::armour::{self, ArmourError};

/// Smallest RSA modulus accepted, in bits (RS256 verification needs at least 2048).
const MIN_RSA_BITS: usize = 2048;
/// A TLS-sourced key is fetched again after a signature failure at most this often.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(60);

/// Why no code key could be had.
#[derive(Debug, thiserror::Error)]
pub enum CodeKeyError {
    /// The key file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A PEM armour line is malformed.
    #[error(transparent)]
    Armour(#[from] ArmourError),
    /// The PEM text held no usable block.
    #[error("expected a PEM \"PUBLIC KEY\" or \"CERTIFICATE\" block; found {found}")]
    NoKey {
        /// What was there instead.
        found: String,
    },
    /// A block did not decode.
    #[error("the PEM block does not decode: {0}")]
    Pem(String),
    /// The certificate did not parse.
    #[error("the certificate does not parse: {0}")]
    Certificate(String),
    /// The key is not an RSA key of a usable size.
    #[error("expected an RSA public key of at least {MIN_RSA_BITS} bits; found {found}")]
    NotRsa {
        /// What the key was.
        found: String,
    },
    /// The authorize host could not be reached or did not present a certificate.
    #[error("cannot fetch the TLS certificate of {host}:{port}: {detail}")]
    Fetch {
        /// The host.
        host: String,
        /// The port.
        port: u16,
        /// What went wrong (connect, handshake, timeout...).
        detail: String,
    },
}

/// A public key that verifies RS256 codes, with a short fingerprint to name it in logs.
pub struct CodeKey {
    decoding: DecodingKey,
    fingerprint: String,
}

impl fmt::Debug for CodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CodeKey")
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl CodeKey {
    /// Builds a key from a DER SubjectPublicKeyInfo; refuses anything but RSA ≥ 2048 bits.
    pub fn from_spki(spki: &[u8]) -> Result<Self, CodeKeyError> {
        let rsa = aws_lc_rs::rsa::PublicEncryptingKey::from_der(spki).map_err(|_| {
            CodeKeyError::NotRsa {
                found: "a key of another type, or a malformed one".to_owned(),
            }
        })?;
        let bits = rsa.key_size_bits();
        if bits < MIN_RSA_BITS {
            return Err(CodeKeyError::NotRsa {
                found: format!("an RSA key of {bits} bits"),
            });
        }
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, spki);
        let fingerprint = digest.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        // aws-lc-rs verifies RSA signatures with an SPKI as readily as with PKCS#1.
        Ok(Self {
            decoding: DecodingKey::from_rsa_der(spki),
            fingerprint,
        })
    }

    /// The key from a DER certificate's SubjectPublicKeyInfo.
    pub fn from_certificate(der: &CertificateDer<'_>) -> Result<Self, CodeKeyError> {
        let cert = webpki::EndEntityCert::try_from(der)
            .map_err(|e| CodeKeyError::Certificate(e.to_string()))?;
        Self::from_spki(cert.subject_public_key_info().as_ref())
    }

    /// Parses PEM text holding a `PUBLIC KEY` (SPKI) or a `CERTIFICATE` (the first one is
    /// used), after checking every armour line.
    pub fn from_pem(text: &str) -> Result<Self, CodeKeyError> {
        armour::check(text, "PUBLIC KEY")?;
        let first = <(SectionKind, Vec<u8>)>::pem_slice_iter(text.as_bytes())
            .next()
            .ok_or_else(|| CodeKeyError::NoKey {
                found: "no PEM block".to_owned(),
            })?;
        let (kind, der) = first.map_err(|e| CodeKeyError::Pem(e.to_string()))?;
        match kind {
            SectionKind::PublicKey => Self::from_spki(&der),
            SectionKind::Certificate => Self::from_certificate(&CertificateDer::from(der)),
            _ => Err(CodeKeyError::NoKey {
                found: format!("a {kind:?} block"),
            }),
        }
    }

    /// Reads and parses a PEM file.
    pub fn from_pem_file(path: &Path) -> Result<Self, CodeKeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| CodeKeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_pem(&text)
    }

    /// The key, for signature checks.
    pub fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }

    /// The first 8 bytes of the SPKI's SHA-256, in hex: names the key in logs and errors.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// How the code key is obtained, as configured.
#[derive(Clone)]
pub enum CodeKeySource {
    /// The public key of the authorize host's TLS certificate.
    Tls,
    /// A key read from a file at start-up.
    Fixed(Arc<CodeKey>),
}

impl fmt::Debug for CodeKeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tls => f.write_str("Tls"),
            Self::Fixed(key) => f.debug_tuple("Fixed").field(key).finish(),
        }
    }
}

/// Where to fetch a TLS-sourced key from, and through which trust.
struct TlsSource {
    host: String,
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
    /// Held while fetching, so concurrent callbacks share one fetch.
    fetching: tokio::sync::Mutex<()>,
}

/// The code key in use: fixed, or fetched from the authorize host and cached.
pub struct CodeKeys {
    tls: Option<TlsSource>,
    /// The key (`None` while a TLS-sourced key was never fetched successfully).
    current: RwLock<Option<Arc<CodeKey>>>,
    /// When the last TLS fetch was attempted, successful or not.
    last_fetch: RwLock<Option<Instant>>,
}

impl CodeKeys {
    /// A key that never changes.
    pub fn fixed(key: Arc<CodeKey>) -> Self {
        Self {
            tls: None,
            current: RwLock::new(Some(key)),
            last_fetch: RwLock::new(None),
        }
    }

    /// A key taken from the TLS certificate of `authorize_url`'s host, verified with `tls`.
    /// Nothing is fetched until [`CodeKeys::current`] or [`CodeKeys::refetch`] is called.
    pub fn tls(authorize_url: &Uri, tls: rustls::ClientConfig, timeout: Duration) -> Self {
        let host = authorize_url.host().unwrap_or_default();
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = authorize_url.port_u16().unwrap_or(443);
        Self {
            tls: Some(TlsSource {
                host,
                port,
                tls: Arc::new(tls),
                timeout,
                fetching: tokio::sync::Mutex::new(()),
            }),
            current: RwLock::new(None),
            last_fetch: RwLock::new(None),
        }
    }

    /// The key to verify with; a TLS-sourced key that was never fetched is fetched now
    /// (subject to the once-a-minute limit after a failed attempt).
    pub async fn current(&self) -> Result<Arc<CodeKey>, CodeKeyError> {
        if let Some(key) = self.cached() {
            return Ok(key);
        }
        match self.refetch().await {
            Some(result) => result,
            None => Err(self.unavailable("fetched less than a minute ago, without success")),
        }
    }

    /// After a signature failure with `used`: fetches the TLS key again unless the last
    /// fetch was less than [`REFETCH_INTERVAL`] ago, and returns the new key when it differs
    /// from `used`. A fixed key is never fetched.
    pub async fn replacement_for(&self, used: &CodeKey) -> Option<Arc<CodeKey>> {
        match self.refetch().await? {
            Ok(key) if key.fingerprint != used.fingerprint => Some(key),
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(target: "poynt_proxy::onboarding", %error, "fetching the code key again failed");
                None
            }
        }
    }

    fn cached(&self) -> Option<Arc<CodeKey>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn unavailable(&self, why: &str) -> CodeKeyError {
        let (host, port) = self
            .tls
            .as_ref()
            .map_or((String::new(), 0), |t| (t.host.clone(), t.port));
        CodeKeyError::Fetch {
            host,
            port,
            detail: why.to_owned(),
        }
    }

    /// Fetches the TLS key if allowed now: `None` when the source is fixed or the last
    /// attempt is under a minute old.
    pub async fn refetch(&self) -> Option<Result<Arc<CodeKey>, CodeKeyError>> {
        let source = self.tls.as_ref()?;
        let _fetching = source.fetching.lock().await;
        {
            let mut last = self.last_fetch.write().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if last.is_some_and(|at| now.duration_since(at) < REFETCH_INTERVAL) {
                return None;
            }
            *last = Some(now);
        }
        let result = fetch_tls_key(source).await.map(Arc::new);
        match &result {
            Ok(key) => {
                tracing::info!(target: "poynt_proxy::onboarding", host = %source.host, port = source.port, fingerprint = key.fingerprint(), "code key fetched from the authorize host's TLS certificate");
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(key.clone());
            }
            Err(error) => {
                tracing::error!(target: "poynt_proxy::onboarding", %error, "cannot fetch the code key");
            }
        }
        Some(result)
    }
}

/// Connects to the host, completes a verified TLS handshake, and takes the leaf
/// certificate's public key.
async fn fetch_tls_key(source: &TlsSource) -> Result<CodeKey, CodeKeyError> {
    let error = |detail: String| CodeKeyError::Fetch {
        host: source.host.clone(),
        port: source.port,
        detail,
    };
    let name = ServerName::try_from(source.host.clone())
        .map_err(|e| error(format!("not a valid server name: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(source.tls.clone());
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect((source.host.as_str(), source.port))
            .await
            .map_err(|e| error(format!("connect: {e}")))?;
        connector
            .connect(name, tcp)
            .await
            .map_err(|e| error(format!("TLS handshake: {e}")))
    };
    let stream = tokio::time::timeout(source.timeout, handshake)
        .await
        .map_err(|_| {
            error(format!(
                "no handshake within {}",
                humantime::format_duration(source.timeout)
            ))
        })??;
    let leaf = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or_else(|| error("the server presented no certificate".to_owned()))?;
    CodeKey::from_certificate(leaf)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The key printed in Poynt's merchant-authorization document, armour as printed.
    const SEED_KEY_AS_PRINTED: &str =
        include_str!("../../tests/fixtures/poynt-merchant-authorization-key.pem");

    /// The same with its armour fixed.
    pub(crate) const SEED_KEY_FIXED: &str =
        include_str!("../../tests/fixtures/poynt-merchant-authorization-key-fixed.pem");

    #[test]
    fn the_seed_armour_is_refused_naming_the_line() {
        let err = CodeKey::from_pem(SEED_KEY_AS_PRINTED)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("line 1:"), "{err}");
        assert!(err.contains("-----START PUBLIC KEY-----"), "{err}");
        let half_fixed = SEED_KEY_AS_PRINTED.replace("-----START", "-----BEGIN");
        let err = CodeKey::from_pem(&half_fixed).unwrap_err().to_string();
        assert!(err.starts_with("line 9:"), "{err}");
        assert!(
            err.contains("expected a PEM armour line such as \"-----END PUBLIC KEY-----\""),
            "{err}"
        );
    }

    #[test]
    fn the_seed_key_loads_once_its_armour_is_fixed() {
        let key = CodeKey::from_pem(SEED_KEY_FIXED).unwrap();
        assert_eq!(key.fingerprint().len(), 16);
        assert!(format!("{key:?}").contains(key.fingerprint()));
    }

    #[test]
    fn other_blocks_and_keys_are_refused() {
        let ec = rcgen::KeyPair::generate().unwrap();
        let err = CodeKey::from_pem(&ec.public_key_pem()).unwrap_err();
        assert!(err.to_string().contains("RSA public key"), "{err}");
        let err = CodeKey::from_pem(&ec.serialize_pem()).unwrap_err();
        assert!(err.to_string().contains("\"PUBLIC KEY\""), "{err}");
        let err = CodeKey::from_pem("no pem here\n").unwrap_err();
        assert!(err.to_string().contains("no PEM block"), "{err}");
        let err = CodeKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n").unwrap_err();
        assert!(err.to_string().contains("END PUBLIC KEY"), "{err}");
    }

    #[test]
    fn a_certificate_gives_its_subject_key() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["poynt.test".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let from_cert = CodeKey::from_pem(&cert.pem()).unwrap();
        let from_key = CodeKey::from_pem(&key.public_key_pem()).unwrap();
        assert_eq!(from_cert.fingerprint(), from_key.fingerprint());
    }
}
