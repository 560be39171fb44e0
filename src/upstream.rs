//! HTTP clients to Poynt: pooled keep-alive connections over rustls (TLS 1.2/1.3,
//! ALPN h2 and http/1.1), trusting the platform's roots plus an optional configured CA.
//! One connector (the TLS configuration) is built at start-up; each proxy worker and the
//! `/token` client keep their own pool of connections over it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Error type carried by request bodies sent upstream.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Body type of every request sent upstream: buffered or streamed, behind one type.
pub type UpstreamBody = BoxBody<Bytes, BoxError>;
/// The pooled client.
pub type HttpClient = Client<Connector, UpstreamBody>;

/// Idle pooled connections are closed after this, below common server keep-alive limits.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the client could not be built.
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

/// How connections to Poynt are made: TCP with a connect timeout, then TLS (or plain HTTP,
/// which configuration already restricted to loopback hosts — the emulator in tests and the
/// demo). Cloning shares the TLS configuration.
pub type Connector = HttpsConnector<HttpConnector>;

/// Builds the connector once; every pool made from it shares its trust anchors.
pub fn connector(
    extra_roots: &[CertificateDer<'static>],
    connect_timeout: Duration,
) -> Result<Connector, UpstreamError> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(extra_roots)?)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http))
}

/// A pool of keep-alive connections over `connector`. Each proxy worker owns one, so its
/// connections are driven by its own event loop; the connections' tasks run on the runtime
/// that first needs them.
pub fn pooled(connector: Connector) -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(usize::MAX)
        .build(connector)
}

/// A connector and its pool in one step, for callers that need a single client.
pub fn client(
    extra_roots: &[CertificateDer<'static>],
    connect_timeout: Duration,
) -> Result<HttpClient, UpstreamError> {
    Ok(pooled(connector(extra_roots, connect_timeout)?))
}
