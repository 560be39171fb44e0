//! hyper-util's pooled client, for the control-plane requests that are not the proxy's own:
//! `/token` grants and onboarding's code exchange. They are rare, so the convenience of a general
//! client (its own connection tasks, a pool behind a lock) costs nothing that matters; the
//! proxied requests go through [`crate::upstream::Upstream`] instead.

use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::CertificateDer;

use super::head::UpstreamBody;
use super::origin::IDLE_TIMEOUT;
use super::tls::{UpstreamError, tls_config};

/// The pooled client.
pub type HttpClient = Client<Connector, UpstreamBody>;

/// How connections are made: TCP with a connect timeout, then TLS (or plain HTTP, which
/// configuration already restricted to loopback hosts — the emulator in tests and the
/// demo). Cloning shares the TLS configuration.
pub type Connector = HttpsConnector<HttpConnector>;

/// Builds a connector over `tls`; every pool made from it shares its trust anchors.
pub fn connector(tls: rustls::ClientConfig, connect_timeout: Duration) -> Connector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http)
}

/// A pool of keep-alive connections over `connector`; the connections' tasks run on the
/// runtime that first needs them.
pub fn pooled(connector: Connector) -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(IDLE_TIMEOUT)
        .pool_max_idle_per_host(usize::MAX)
        .build(connector)
}

/// A connector and its pool in one step, for callers that need a single client.
pub fn client(
    extra_roots: &[CertificateDer<'static>],
    connect_timeout: Duration,
) -> Result<HttpClient, UpstreamError> {
    Ok(pooled(connector(tls_config(extra_roots)?, connect_timeout)))
}
