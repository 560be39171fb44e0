//! How exported spans reach the collector: through the proxy's own rustls connector
//! (`upstream::connector`), so an `https://` collector is verified against the platform's
//! roots plus `telemetry.traces.ca_file` exactly as Poynt is, and `http://` stays plain.
//! OTLP/HTTP posts through a pooled hyper client ([`Http`]); gRPC makes its unary call
//! through an HTTP/2-only one (`super::grpc`).
//!
//! The SDK exports from its own thread, which has no Tokio runtime: the connections live on
//! the runtime the exporter was started on (its handle is kept), and the export thread only
//! waits for their answers.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::response::Parts;
use http_body_util::{BodyExt as _, Collected, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use rustls_pki_types::CertificateDer;
use tokio::runtime::Handle;

use crate::upstream::{self, BoxError, Connector, UpstreamBody};

/// The most of a collector's answer read: an OTLP response is a few bytes (a partial
/// success names a count and a message), so anything larger is not a collector's.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// The connector every export connection is made with: TLS (verification always on) for
/// `https://`, plain TCP for `http://`.
pub(super) fn connector(
    extra_roots: &[CertificateDer<'static>],
    timeout: Duration,
) -> Result<Connector, String> {
    let tls = upstream::tls_config(extra_roots).map_err(|error| error.to_string())?;
    Ok(upstream::connector(tls, timeout))
}

/// Why the exporter cannot start outside a runtime.
const NO_RUNTIME: &str = "no Tokio runtime to run the export connections on";

/// The OTLP/HTTP client: hyper-util's pool over the proxy's connector, driven by the runtime
/// it was made on, every export bounded by `timeout`.
pub(super) struct Http {
    client: upstream::HttpClient,
    runtime: Handle,
    timeout: Duration,
}

impl Http {
    /// A client whose connections run on the current runtime.
    pub(super) fn new(connector: Connector, timeout: Duration) -> Result<Self, String> {
        Self::over(upstream::pooled(connector), timeout)
    }

    /// A client speaking HTTP/2 alone, as gRPC needs: with prior knowledge over `http://`
    /// (h2c), through ALPN `h2` over `https://`.
    pub(super) fn http2(connector: Connector, timeout: Duration) -> Result<Self, String> {
        let client = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(connector);
        Self::over(client, timeout)
    }

    fn over(client: upstream::HttpClient, timeout: Duration) -> Result<Self, String> {
        Ok(Self {
            client,
            runtime: Handle::try_current().map_err(|_| NO_RUNTIME.to_owned())?,
            timeout,
        })
    }

    /// Sends `request` and reads the whole answer (at most [`MAX_RESPONSE_BYTES`]), its
    /// trailers kept, within the timeout, on the runtime the client was made on.
    pub(super) async fn exchange(
        &self,
        request: Request<Bytes>,
    ) -> Result<(Parts, Collected<Bytes>), HttpError> {
        let request: Request<UpstreamBody> =
            request.map(|body| Full::new(body).map_err(|never| match never {}).boxed());
        let client = self.client.clone();
        let timeout = self.timeout;
        let exchange = async move {
            let response = client.request(request).await?;
            let (head, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES).collect().await?;
            Ok::<_, BoxError>((head, body))
        };
        let bounded = async move {
            tokio::time::timeout(timeout, exchange)
                .await
                .map_err(|_| -> BoxError {
                    format!("expected the collector's answer within {timeout:?}; found none").into()
                })?
        };
        self.runtime.spawn(bounded).await?
    }
}

impl fmt::Debug for Http {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl HttpClient for Http {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (head, body) = self.exchange(request).await?;
        Ok(Response::from_parts(head, body.to_bytes()))
    }
}
