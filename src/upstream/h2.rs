//! HTTP/2 to Poynt, used when ALPN chose it: callers' requests are multiplexed over as few
//! connections as their concurrency needs. Each connection carries at most
//! [`MAX_STREAMS_PER_CONNECTION`] streams (or fewer, if Poynt's `SETTINGS` say so); a request
//! finding every connection full opens one more (one at a time per worker, so a burst does
//! not open a connection per request). A connection that Poynt closes or sends GOAWAY on
//! takes no new streams and ends by itself when its open streams are done.
//!
//! A request that failed because of its connection is sent once more, on another
//! connection, only when it was certainly never processed: hyper handed it back unsent, or
//! Poynt's GOAWAY or `REFUSED_STREAM` says so (RFC 9113 §8.7) — and only if its body can be
//! sent again (kept whole, or never read).
//!
//! Unlike HTTP/1.1, the connection must make progress for all its streams at once, so it is
//! driven by its own task (hyper's), on the worker's runtime.

use std::future::{Future as _, poll_fn};
use std::pin::pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
#[allow(
    clippy::disallowed_types,
    reason = "idle connections age in real time: Poynt closes them by its own clock, whatever a paused test clock says"
)]
use std::time::Instant;

use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::uri::PathAndQuery;
use http::{HeaderMap, Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::body::{ResponseBody, StreamSlot};
use super::error::{BoxError, SendError};
use super::head::{RequestBody, RequestHead, UpstreamBody};
use super::hop;
use super::origin::{IDLE_TIMEOUT, Origin, Stream};

/// Most streams one connection carries at once, whatever Poynt allows.
pub const MAX_STREAMS_PER_CONNECTION: usize = 100;

/// One worker's HTTP/2 connections.
#[derive(Default)]
pub(crate) struct Multiplexer {
    conns: Mutex<Vec<H2Conn>>,
    /// Held while a connection is being opened.
    opening: tokio::sync::Mutex<()>,
}

struct H2Conn {
    send: SendRequest<UpstreamBody>,
    open: Arc<AtomicUsize>,
    /// Poynt's `SETTINGS_MAX_CONCURRENT_STREAMS`, as the connection's task last saw it.
    allowed: Arc<AtomicUsize>,
    #[allow(
        clippy::disallowed_types,
        reason = "idle connections age in real time: Poynt closes them by its own clock, whatever a paused test clock says"
    )]
    last_used: Instant,
}

/// What looking for an HTTP/2 stream found.
pub(crate) enum Opened {
    /// A free stream.
    Slot(SendRequest<UpstreamBody>, StreamSlot),
    /// A new connection on which Poynt chose HTTP/1.1.
    Http1(Stream),
    /// Another request found out meanwhile that Poynt speaks HTTP/1.1.
    UseHttp1,
}

/// What the worker knows of the protocol Poynt chooses (an `AtomicU8`).
pub(crate) mod protocol {
    /// No connection opened yet.
    pub(crate) const UNKNOWN: u8 = 0;
    /// The last connection opened chose HTTP/1.1.
    pub(crate) const HTTP1: u8 = 1;
    /// The last connection opened chose HTTP/2.
    pub(crate) const HTTP2: u8 = 2;
}

impl Multiplexer {
    fn conns(&self) -> MutexGuard<'_, Vec<H2Conn>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A free stream on an open connection, dropping closed and long-idle ones on the way.
    #[allow(
        clippy::disallowed_methods,
        clippy::disallowed_types,
        reason = "idle connections age in real time: Poynt closes them by its own clock, whatever a paused test clock says"
    )]
    fn reserve(&self) -> Option<(SendRequest<UpstreamBody>, StreamSlot)> {
        let mut conns = self.conns();
        conns.retain(|conn| {
            !conn.send.is_closed()
                && (conn.open.load(Ordering::Acquire) > 0
                    || conn.last_used.elapsed() < IDLE_TIMEOUT)
        });
        for conn in conns.iter_mut() {
            let limit = MAX_STREAMS_PER_CONNECTION.min(conn.allowed.load(Ordering::Acquire));
            if conn.open.load(Ordering::Acquire) < limit {
                conn.open.fetch_add(1, Ordering::AcqRel);
                conn.last_used = Instant::now();
                return Some((conn.send.clone(), StreamSlot(conn.open.clone(), true)));
            }
        }
        None
    }

    /// Stops giving out streams on the connection behind `slot` (it failed or is going
    /// away); its open streams finish on their own.
    fn retire(&self, slot: &StreamSlot) {
        self.conns()
            .retain(|conn| !Arc::ptr_eq(&conn.open, &slot.0));
    }

    /// Takes a connection on which ALPN chose `h2` and gives a stream on it.
    #[allow(
        clippy::disallowed_methods,
        clippy::disallowed_types,
        reason = "idle connections age in real time: Poynt closes them by its own clock, whatever a paused test clock says"
    )]
    pub(crate) async fn adopt(
        &self,
        io: Stream,
    ) -> Result<(SendRequest<UpstreamBody>, StreamSlot), SendError> {
        let (send, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake::<_, UpstreamBody>(TokioIo::new(io))
            .await
            .map_err(SendError::H2)?;
        let allowed = Arc::new(AtomicUsize::new(MAX_STREAMS_PER_CONNECTION));
        let seen = allowed.clone();
        tokio::spawn(async move {
            let mut connection = pin!(connection);
            let ended = poll_fn(|cx| {
                let polled = connection.as_mut().poll(cx);
                seen.store(connection.current_max_send_streams(), Ordering::Release);
                polled
            })
            .await;
            if let Err(error) = ended {
                tracing::debug!(%error, "HTTP/2 connection to Poynt ended with an error");
            }
        });
        let open = Arc::new(AtomicUsize::new(1));
        let slot = StreamSlot(open.clone(), false);
        self.conns().push(H2Conn {
            send: send.clone(),
            open,
            allowed,
            last_used: Instant::now(),
        });
        Ok((send, slot))
    }

    /// A free stream, opening a connection when every one is full. Connections are opened
    /// one at a time, so a burst of requests (the first ones of a worker, or more than the
    /// open connections can carry) waits for one new connection instead of each opening
    /// its own; when that connection turns out to be HTTP/1.1, the waiters are told to use
    /// HTTP/1.1 (whose connections are opened in parallel, one per request).
    pub(crate) async fn slot(
        &self,
        origin: &Origin,
        protocol: &AtomicU8,
    ) -> Result<Opened, SendError> {
        if let Some((send, slot)) = self.reserve() {
            return Ok(Opened::Slot(send, slot));
        }
        let _opening = self.opening.lock().await;
        if let Some((send, slot)) = self.reserve() {
            return Ok(Opened::Slot(send, slot));
        }
        if protocol.load(Ordering::Acquire) == protocol::HTTP1 {
            return Ok(Opened::UseHttp1);
        }
        let connected = origin.connect().await?;
        if !connected.h2 {
            protocol.store(protocol::HTTP1, Ordering::Release);
            return Ok(Opened::Http1(connected.io));
        }
        protocol.store(protocol::HTTP2, Ordering::Release);
        let (send, slot) = self.adopt(connected.io).await?;
        Ok(Opened::Slot(send, slot))
    }

    /// Sends one request on `send` (and, when the first attempt was certainly never
    /// processed, once more on another connection).
    pub(crate) async fn send(
        &self,
        origin: &Origin,
        protocol: &AtomicU8,
        head: &RequestHead<'_>,
        body: RequestBody,
        first: (SendRequest<UpstreamBody>, StreamSlot),
    ) -> Result<Response<ResponseBody>, SendError> {
        let (mut send, slot) = first;
        let kept = match &body {
            RequestBody::Full(bytes) => Some(bytes.clone()),
            RequestBody::Stream(_) => None,
        };
        let first_try = request(origin, head, body)?;
        let error = match send.try_send_request(first_try).await {
            Ok(response) => return Ok(response_of(origin, response, slot)),
            Err(error) => error,
        };
        let mut error = error;
        let returned = error.take_message();
        if returned.is_none() && !never_processed(error.error()) {
            return Err(SendError::H2(error.into_error()));
        }
        self.retire(&slot);
        drop(slot);
        let again = match (returned, kept) {
            (Some(request), _) => request,
            (None, Some(bytes)) => request(origin, head, RequestBody::Full(bytes))?,
            (None, None) => return Err(SendError::H2(error.into_error())),
        };
        tracing::debug!(error = %error.error(), "request refused unprocessed by an HTTP/2 connection; sending it on another");
        let (mut send, slot) = match self.slot(origin, protocol).await? {
            Opened::Slot(send, slot) => (send, slot),
            Opened::Http1(_) | Opened::UseHttp1 => return Err(SendError::H2(error.into_error())),
        };
        match send.try_send_request(again).await {
            Ok(response) => Ok(response_of(origin, response, slot)),
            Err(error) => Err(SendError::H2(error.into_error())),
        }
    }
}

/// The HTTP/2 request: the fields as a map (framing and `Host` are the protocol's), the URI
/// with Poynt's scheme and authority.
fn request(
    origin: &Origin,
    head: &RequestHead<'_>,
    body: RequestBody,
) -> Result<Request<UpstreamBody>, SendError> {
    let mut headers = HeaderMap::with_capacity(16);
    head.fields.each(&mut |name, value| {
        if name != HOST && name != CONTENT_LENGTH && name != TRANSFER_ENCODING {
            headers.append(name.clone(), value.clone());
        }
    });
    let path_and_query = match (head.target, head.query) {
        (Some(target), _) => Ok(target.clone()),
        (None, Some(query)) => PathAndQuery::try_from(format!("{}?{query}", head.path)),
        (None, None) => PathAndQuery::try_from(head.path),
    }
    .map_err(|e| SendError::Malformed(format!("the request target is invalid: {e}")))?;
    let (scheme, authority) = origin.scheme_and_authority();
    let uri = Uri::builder()
        .scheme(scheme.clone())
        .authority(authority.clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|e| SendError::Malformed(format!("the request target is invalid: {e}")))?;
    let body = match body {
        RequestBody::Full(bytes) => Full::new(bytes)
            .map_err(|never| -> BoxError { match never {} })
            .boxed(),
        RequestBody::Stream(body) => body,
    };
    let mut request = Request::new(body);
    *request.method_mut() = head.method.clone();
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    Ok(request)
}

fn response_of(
    origin: &Origin,
    response: Response<hyper::body::Incoming>,
    slot: StreamSlot,
) -> Response<ResponseBody> {
    let (mut parts, body) = response.into_parts();
    hop::strip(&mut parts.headers);
    let body = ResponseBody::h2(body, slot, origin.body_idle_timeout());
    Response::from_parts(parts, body)
}

/// Whether Poynt certainly never processed the request: streams above a GOAWAY's last stream
/// ID, and streams refused with `REFUSED_STREAM` (RFC 9113 §8.7).
fn never_processed(error: &hyper::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(h2) = current.downcast_ref::<h2::Error>() {
            return h2.is_remote()
                && (h2.is_go_away() || h2.reason() == Some(h2::Reason::REFUSED_STREAM));
        }
        source = current.source();
    }
    false
}
