//! Serving: the accept loop (one task per connection, HTTP/1.1 and h2 through hyper-util's
//! auto builder, optionally behind TLS), the router that sends each request to its handler,
//! and graceful shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::api::{self, BUSINESSES_PREFIX};
use super::authorize;
use super::body::ResponseBody;
use super::control::{self, CONTROL_PREFIX};
use super::error::ApiError;
use super::reply::{self, RequestId};
use super::state::Shared;
use super::token::{self, DropConnection};

/// How long connections get to finish in-flight requests once shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How long a client gets to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// Accepts connections until `shutdown` fires (or its sender is dropped), then lets open
/// connections finish for `SHUTDOWN_GRACE` and aborts the rest.
pub(crate) async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    mut shutdown: watch::Receiver<()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // No header-read timeout: idle keep-alive connections stay open for as long as the
    // client's pool wants them, so tests never race a server-side idle close.
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(None);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    shared.counters.connection();
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve_connection(
                        stream,
                        tls.clone(),
                        builder.clone(),
                        shared.clone(),
                        shutdown.clone(),
                    ));
                }
                Err(error) => {
                    tracing::warn!(%error, "poynt emulator: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
    }
}

/// Serves one TCP connection, after a TLS handshake when configured.
async fn serve_connection(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<()>,
) {
    match tls {
        None => serve_io(TokioIo::new(stream), &builder, shared, &mut shutdown).await,
        Some(acceptor) => {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
            let stream = tokio::select! {
                _ = shutdown.changed() => return,
                result = handshake => match result {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::debug!(%error, "poynt emulator: TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                },
            };
            serve_io(TokioIo::new(stream), &builder, shared, &mut shutdown).await;
        }
    }
}

/// Runs hyper on an established byte stream until it ends or shutdown asks it to.
async fn serve_io<I>(
    io: TokioIo<I>,
    builder: &auto::Builder<TokioExecutor>,
    shared: Arc<Shared>,
    shutdown: &mut watch::Receiver<()>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut goaway = shared.goaway_signal();
    // Requests this connection has carried (HTTP/2 streams count alike).
    let served = Arc::new(AtomicU64::new(0));
    let service = service_fn(move |request| {
        let shared = shared.clone();
        let reused = served.fetch_add(1, Ordering::Relaxed) > 0;
        async move { route(&shared, request, reused).await }
    });
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let ended = tokio::select! {
        result = connection.as_mut() => Some(result),
        _ = shutdown.changed() => None,
        _ = goaway.changed() => None,
    };
    let result = match ended {
        Some(result) => result,
        None => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(error = %error, "poynt emulator: connection ended with an error");
    }
}

/// Sends a request to its handler (`reused`: its connection carried an earlier one). `Err`
/// makes hyper drop the connection unanswered.
async fn route(
    shared: &Shared,
    request: Request<Incoming>,
    reused: bool,
) -> Result<Response<ResponseBody>, DropConnection> {
    let request_id = RequestId::from_headers(request.headers());
    let path = request.uri().path();
    if let Some(traceparent) = request.headers().get("traceparent")
        && let Ok(traceparent) = traceparent.to_str()
    {
        shared.counters.traceparent(path, traceparent);
    }
    if path.starts_with(BUSINESSES_PREFIX) {
        return api::handle(shared, request, &request_id, reused).await;
    }
    if path.starts_with(CONTROL_PREFIX) {
        return Ok(control::handle(shared, request, &request_id).await);
    }
    let method = request.method();
    if path == TRACES_PATH && method == Method::POST {
        return Ok(discard_traces(request, &request_id).await);
    }
    let response = match path {
        "/token" if method == Method::POST => {
            return token::handle(shared, request, &request_id).await;
        }
        "/token" => wrong_method("POST", method, "/token"),
        "/applications/authorize" if method == Method::GET => {
            Ok(authorize::authorize(shared, request.uri(), &request_id))
        }
        "/applications/authorize" => wrong_method("GET", method, "/applications/authorize"),
        "/auth/signout" if method == Method::GET => {
            Ok(authorize::signout(request.uri(), &request_id))
        }
        "/auth/signout" => wrong_method("GET", method, "/auth/signout"),
        _ => Err(ApiError::NotFound(format!(
            "no such resource {path:?}; expected /token, /businesses/{{id}}/..., /applications/authorize, \
             /auth/signout or /_emulator/..."
        ))),
    };
    Ok(response.unwrap_or_else(|error| reply::error(&error, &request_id)))
}

/// Where OTLP/HTTP exporters send spans: the load benchmark points a traced proxy here.
const TRACES_PATH: &str = "/v1/traces";

/// Takes an OTLP/HTTP export and throws it away (an empty protobuf answer is a full
/// success), so a traced proxy can be measured without a collector.
async fn discard_traces(
    request: Request<Incoming>,
    request_id: &RequestId,
) -> Response<ResponseBody> {
    let _ = http_body_util::BodyExt::collect(request.into_body()).await;
    let mut response = reply::ok_json(bytes::Bytes::new(), request_id);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/x-protobuf"),
    );
    response
}

fn wrong_method(
    expected: &'static str,
    found: &Method,
    path: &'static str,
) -> Result<Response<ResponseBody>, ApiError> {
    Err(ApiError::MethodNotAllowed {
        expected,
        found: found.to_string(),
        path,
    })
}
