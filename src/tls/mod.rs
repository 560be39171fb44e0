//! The caller-facing TLS listener's material: the server certificate and key, and the CA
//! bundle client certificates must chain to (mTLS). The rustls configuration is built when
//! the configuration is checked, so `check` and a reload refuse a bad file before any
//! connection meets it, and it sits behind an `ArcSwap` so a reload serves new connections
//! with new material while connections already open keep theirs.
//!
//! One job per file: this one builds and swaps the server configuration; `config` holds the
//! checked settings; `peer` reads the names a verified client certificate carries.

pub mod config;
pub mod peer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Why the TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or held nothing of the expected kind.
    #[error("{path}: expected {expected}; {found}")]
    File {
        /// The file.
        path: PathBuf,
        /// What it should hold.
        expected: &'static str,
        /// What was found instead (or the reading error).
        found: String,
    },
    /// rustls refused the combination (a key that does not match the certificate, a CA
    /// bundle it cannot use).
    #[error("expected a certificate, key and client CA bundle rustls accepts; {0}")]
    Rustls(String),
}

/// Builds the server configuration: `cert_file` (the chain, leaf first) and `key_file`, and
/// with `client_ca_file` a required client certificate chained to one of its CAs. ALPN
/// offers h2 and HTTP/1.1.
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
    client_ca_file: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let certs = certificates(cert_file, "a PEM certificate chain")?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|error| TlsError::File {
        path: key_file.to_owned(),
        expected: "a PEM private key",
        found: error.to_string(),
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::Rustls(error.to_string()))?;
    let builder = match client_ca_file {
        Some(path) => builder.with_client_cert_verifier(client_verifier(path, provider)?),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|error| TlsError::Rustls(error.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A verifier that requires a client certificate chained to a CA of `path`.
fn client_verifier(
    path: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path, "a PEM bundle of CA certificates")? {
        roots.add(cert).map_err(|error| TlsError::File {
            path: path.to_owned(),
            expected: "CA certificates",
            found: error.to_string(),
        })?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|error| TlsError::Rustls(error.to_string()))
}

/// Every certificate of the PEM file at `path`; at least one.
fn certificates(
    path: &Path,
    expected: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let failed = |found: String| TlsError::File {
        path: path.to_owned(),
        expected,
        found,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|error| failed(error.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| failed(error.to_string()))?;
    if certs.is_empty() {
        return Err(failed("found no certificate".into()));
    }
    Ok(certs)
}

/// The TLS listener's current server configuration, shared by every worker. Cloning shares
/// it; [`ServerTls::replace`] (a reload) reaches the next handshake on every worker.
#[derive(Clone)]
pub struct ServerTls(Arc<ArcSwap<rustls::ServerConfig>>);

impl ServerTls {
    /// Serves `config` until replaced.
    pub fn new(config: Arc<rustls::ServerConfig>) -> Self {
        Self(Arc::new(ArcSwap::new(config)))
    }

    /// New connections are served with `config`; open ones keep what they began with.
    pub fn replace(&self, config: Arc<rustls::ServerConfig>) {
        self.0.store(config);
    }

    /// An acceptor for one new connection, with the configuration current now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.0.load_full())
    }
}
