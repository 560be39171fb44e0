//! Connections to Poynt. Two clients share one TLS configuration:
//!
//! - [`Upstream`], the proxy's: one per worker, so each worker's connections are driven by
//!   its own thread. Over HTTP/1.1 the connection is driven by the task of the request that
//!   holds it — the head is written straight from the caller's header map into the
//!   connection's buffer (`head`), one write carries it with a small body (`h1`), the
//!   response head is parsed into the map the caller gets with the hop-by-hop fields left
//!   out (`response`), and the body streams from the same buffer (`framing`, `body`) until
//!   the connection goes back to the worker's pool (`pool`). No connection task, channel
//!   or extra wake-up per request: that machinery of hyper-util's pooled client cost more
//!   instructions than the rest of the proxy put together (docs/BENCHMARKS.md). When ALPN
//!   chooses `h2`, requests are multiplexed over few connections instead (`h2`).
//! - hyper-util's pooled client (`control`, built by [`pooled`]) for `/token` grants and
//!   onboarding's code exchange, where convenience beats cycles. The proxy's files above
//!   never import it.
//!
//! `origin` is where Poynt is and how to connect; `tls` its trust anchors; `hop` the
//! hop-by-hop fields neither direction forwards; `idle` the body idle timer; `error` what
//! can fail.
//!
//! Imports between the files run one way: `h2` → `body` → `pool` → `h1` → `head`,
//! `response`, `origin`, `idle`; `control` → `head`, `origin`, `tls`; at the bottom `error`,
//! `framing`, `hop`, `idle` and `tls`, which import no sibling.

mod body;
mod control;
mod error;
mod framing;
#[doc(hidden)]
pub mod fuzzing;
mod h1;
mod h2;
mod head;
pub mod hop;
mod idle;
mod origin;
mod pool;
mod response;
mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use http::Response;

pub use self::body::ResponseBody;
pub use self::control::{Connector, HttpClient, client, connector, pooled};
pub use self::error::{BoxError, SendError};
pub use self::h2::MAX_STREAMS_PER_CONNECTION;
pub use self::head::{BodyLength, Fields, RequestBody, RequestHead, UpstreamBody, encode_head};
pub use self::origin::Origin;
pub use self::tls::{UpstreamError, read_ca_file, tls_config};

use self::framing::Decoded;
use self::h1::Conn;
use self::h2::{Multiplexer, Opened, protocol};
use self::pool::Pool;

/// One worker's client to Poynt. Cloning shares it.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

struct Inner {
    origin: Arc<Origin>,
    pool: Arc<Pool>,
    h2: Multiplexer,
    /// What the last connection opened chose (`h2::protocol`).
    protocol: AtomicU8,
}

impl Upstream {
    /// A client with no connection yet.
    pub fn new(origin: Arc<Origin>) -> Self {
        Self {
            inner: Arc::new(Inner {
                origin,
                pool: Arc::default(),
                h2: Multiplexer::default(),
                protocol: AtomicU8::new(protocol::UNKNOWN),
            }),
        }
    }

    /// Poynt's host and port as requests name it: the upstream span's `server.address`.
    pub fn host(&self) -> &str {
        self.inner.origin.host_header().to_str().unwrap_or_default()
    }

    /// Sends one request and returns Poynt's response head; its body streams from the
    /// connection as the caller reads it. Not bounded in time here: the proxy puts its
    /// response timeout around the call.
    pub async fn send(
        &self,
        head: &RequestHead<'_>,
        body: RequestBody,
    ) -> Result<Response<ResponseBody>, SendError> {
        let inner = &*self.inner;
        // Every path but a pooled HTTP/1.1 connection's is boxed: the future a request
        // carries through the proxy stays small, and hyper moves it twice per request.
        let body = if inner.protocol.load(Ordering::Acquire) == protocol::HTTP1 {
            body
        } else {
            match Box::pin(self.send_multiplexed(head, body)).await {
                Ok(sent) => return sent,
                Err(body) => body,
            }
        };
        let Some(conn) = inner.pool.take() else {
            return Box::pin(self.send_fresh(head, body)).await;
        };
        let replay = body.replay(head.method);
        match (self.send_h1(conn, head, body).await, replay) {
            (Ok(response), _) => Ok(response),
            // Poynt closed the idle connection as the request went out (its keep-alive timer
            // and our pick crossed): the request never got an answer, so it goes once more on
            // a new connection, as nginx and Go's client do.
            (Err(failed), Some(body)) if failed.unanswered => {
                tracing::debug!(error = %failed.error, "a reused connection to Poynt closed before answering; sending the request again on a new one");
                Box::pin(self.send_fresh(head, body)).await
            }
            (Err(failed), _) => Err(failed.error),
        }
    }

    /// HTTP/2, or not known yet (the multiplexer opens the first connection alone). Hands
    /// the body back when the connection turned out to speak HTTP/1.1 only.
    async fn send_multiplexed(
        &self,
        head: &RequestHead<'_>,
        body: RequestBody,
    ) -> Result<Result<Response<ResponseBody>, SendError>, RequestBody> {
        let inner = &*self.inner;
        let (origin, protocol) = (&*inner.origin, &inner.protocol);
        Ok(match inner.h2.slot(origin, protocol).await {
            Err(error) => Err(error),
            Ok(Opened::Slot(send, slot)) => {
                inner
                    .h2
                    .send(origin, protocol, head, body, (send, slot))
                    .await
            }
            Ok(Opened::Http1(io)) => self
                .send_h1(Conn::new(io, origin.body_idle_timeout()), head, body)
                .await
                .map_err(|failed| failed.error),
            Ok(Opened::UseHttp1) => return Err(body),
        })
    }

    /// Sends on a connection opened for this request.
    async fn send_fresh(
        &self,
        head: &RequestHead<'_>,
        body: RequestBody,
    ) -> Result<Response<ResponseBody>, SendError> {
        let inner = &*self.inner;
        let connected = inner.origin.connect().await?;
        if connected.h2 {
            inner.protocol.store(protocol::HTTP2, Ordering::Release);
            let first = inner.h2.adopt(connected.io).await?;
            return inner
                .h2
                .send(&inner.origin, &inner.protocol, head, body, first)
                .await;
        }
        let conn = Conn::new(connected.io, inner.origin.body_idle_timeout());
        self.send_h1(conn, head, body)
            .await
            .map_err(|failed| failed.error)
    }

    async fn send_h1(
        &self,
        mut conn: Box<Conn>,
        head: &RequestHead<'_>,
        body: RequestBody,
    ) -> Result<Response<ResponseBody>, Failed> {
        let inner = &*self.inner;
        let (response, complete) = match conn.exchange(head, inner.origin.host_header(), body).await
        {
            Ok(exchanged) => exchanged,
            Err(error) => {
                let unanswered = conn.read_buf.is_empty()
                    && matches!(error, SendError::Io(_) | SendError::Closed(_));
                return Err(Failed { error, unanswered });
            }
        };
        let keep_alive = response.keep_alive && complete;
        // The body's first piece is decoded now, from what arrived with the head: a framing
        // error in it becomes an error response (502) rather than a head sent on and then an
        // aborted body.
        let mut framing = response.framing;
        let first = match framing.decode(&mut conn.read_buf) {
            Ok(Decoded::Data(data)) => Some(data),
            Ok(Decoded::Done | Decoded::NeedMore) => None,
            Err(error) => {
                return Err(Failed {
                    error: SendError::Malformed(error.to_string()),
                    unanswered: false,
                });
            }
        };
        let body = ResponseBody::h1(conn, framing, first, inner.pool.clone(), keep_alive);
        let mut answer = Response::new(body);
        *answer.status_mut() = response.status;
        *answer.headers_mut() = response.headers;
        Ok(answer)
    }
}

/// An HTTP/1.1 exchange that failed.
struct Failed {
    error: SendError,
    /// The connection was lost before a byte of the response arrived.
    unanswered: bool,
}
