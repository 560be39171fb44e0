//! Trust for connections to Poynt: the platform's roots plus an optional configured CA, in
//! one rustls configuration (TLS 1.2/1.3, verification always on) that every client shares.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The configured CA file is unusable.
    #[error("cannot read CA file {path}: {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// What was wrong: unreadable, no certificate, or a certificate rustls refused.
        reason: String,
    },
    /// rustls refused the protocol configuration.
    #[error("TLS configuration refused: {0}")]
    Tls(#[from] rustls::Error),
    /// The API URL names no host to connect to.
    #[error("expected poynt.api_url to name a host; found {0:?}")]
    NoHost(String),
}

/// Reads every certificate in a PEM file; an empty or unreadable file is an error.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, UpstreamError> {
    let err = |reason: String| UpstreamError::CaFile {
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err(
            "expected at least one \"BEGIN CERTIFICATE\" PEM block; found none".into(),
        ));
    }
    Ok(certs)
}

/// The rustls client configuration: platform roots plus `extra_roots`, verification always
/// on.
pub fn tls_config(
    extra_roots: &[CertificateDer<'static>],
) -> Result<rustls::ClientConfig, UpstreamError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::warn!(%error, "some platform trust anchors could not be loaded");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, ignored, "platform trust anchors loaded");
    for cert in extra_roots {
        roots.add(cert.clone())?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
