//! Listeners and connections: HTTP/1.1 and h2c through hyper-util's auto builder, a cap on
//! concurrent connections, deadlines on silent connections, and a graceful drain. The
//! server runs on a listener its caller bound (so tests bind port 0) and stops when told
//! through a value.
//!
//! A connection must earn its place under the cap. The connection driver enforces every
//! deadline itself (hyper's own HTTP/1 header timer is off: it also bounded the idle gap
//! between requests, closing keep-alive connections callers' pools still held):
//! - a new connection gets `header_read_timeout` to begin its first request (whatever the
//!   protocol, the first byte and an HTTP/2 preface included), then it is closed;
//! - a request head, once its first byte has arrived, gets `header_read_timeout` to complete;
//! - an HTTP/1 connection with no request in flight and no head begun is kept for
//!   `keepalive_timeout`, then closed;
//! - an HTTP/2 connection is PINGed every `http2_keep_alive_interval` (a peer that stops
//!   answering is closed) and, with no open stream for `idle_timeout`, gets GOAWAY;
//! - once a GOAWAY is sent (idle, or draining) and no stream is left, the connection is
//!   closed after a short linger, whether or not the peer acknowledges.
//!
//! A TLS listener ([`serve_with`] given a [`ServerTls`]) shakes hands on the worker that accepted the connection,
//! inside the first request's `header_read_timeout` (which runs from the accept), so a peer
//! that stalls the handshake holds a connection slot no longer than one that stalls a head,
//! and never blocks the accept loop. The verified client certificate's names
//! ([`PeerNames`]) ride on every request of the connection as an `Arc<PeerNames>` extension.
//!
//! The first byte of a head is seen by [`Watched`], the connection's I/O wrapped: bytes read
//! while no request is open begin a head. A request's first bytes, its start and its end
//! only note the time in [`Activity`]: they wake no task and touch no timer (two wake-ups
//! and a timer per request cost ~13 % of the instructions of a proxied request). Instead
//! the connection's one timer is never set later than the shortest of its periods from now,
//! so no change of state can bring a deadline before it; when it fires the deadline is
//! worked out again from the state, and the timer set again — once per the shortest of
//! `header_read_timeout`, `keepalive_timeout` and `idle_timeout` at most on a connection in
//! use.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt as _;
use futures_util::task::AtomicWaker;
use http::{Request, Response, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::tls::ServerTls;
use crate::tls::peer::PeerNames;

/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again, so the
/// loop does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// After a GOAWAY, with no stream left, how long the connection is kept so the frame is
/// flushed and a well-behaved peer can close first.
const GOAWAY_LINGER: Duration = Duration::from_millis(500);

/// Connection limits for one listener (shared by every worker serving it).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Close connections that have not begun a request within this, or not completed a
    /// request head within this of its first byte.
    pub header_read_timeout: Duration,
    /// An HTTP/1 connection with no request in flight for this long is closed.
    pub keepalive_timeout: Duration,
    /// Largest request head accepted.
    pub max_header_bytes: usize,
    /// Connections served at once, across all workers; more wait in the listen backlog.
    pub connections: Arc<Semaphore>,
    /// The size `connections` started with.
    pub max_connections: usize,
    /// Connections being served now. Not the permits taken: every accept loop holds one
    /// while it waits for a connection.
    pub open: Arc<AtomicUsize>,
    /// HTTP/2 streams one connection may have open at once.
    pub max_concurrent_streams: u32,
    /// An HTTP/2 connection with no open stream for this long gets GOAWAY.
    pub idle_timeout: Duration,
    /// How often an HTTP/2 connection is PINGed.
    pub keep_alive_interval: Duration,
    /// How long a PING may go unanswered.
    pub keep_alive_timeout: Duration,
    /// After shutdown starts, how long open connections may take to finish.
    pub grace: Duration,
    /// TLS handshakes this listener refused.
    pub handshake_failures: Arc<HandshakeFailures>,
}

/// TLS handshakes a listener refused, by why. A refused handshake never becomes a request,
/// so no request metric sees it — yet it is what an operator rolling out client
/// certificates must watch (a caller with a certificate of the wrong CA, or expired, is
/// turned away here, before any 401).
#[derive(Debug, Default)]
pub struct HandshakeFailures {
    client_certificate: AtomicU64,
    protocol: AtomicU64,
    timeout: AtomicU64,
}

impl HandshakeFailures {
    /// A handshake that ended in `error`: a client certificate missing or not trusted
    /// (unknown CA, expired, revoked, unusable), or anything else TLS refused.
    fn refused(&self, error: &io::Error) {
        let certificate = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .is_some_and(|error| {
                matches!(
                    error,
                    rustls::Error::NoCertificatesPresented | rustls::Error::InvalidCertificate(_)
                )
            });
        let count = if certificate {
            &self.client_certificate
        } else {
            &self.protocol
        };
        count.fetch_add(1, Ordering::Relaxed);
    }

    /// Refused handshakes so far, by reason (the metric's `reason` label).
    pub fn counts(&self) -> [(&'static str, u64); 3] {
        [
            (
                "client_certificate",
                self.client_certificate.load(Ordering::Relaxed),
            ),
            ("protocol", self.protocol.load(Ordering::Relaxed)),
            ("timeout", self.timeout.load(Ordering::Relaxed)),
        ]
    }
}

impl Limits {
    /// Connections open now, and how many more the cap admits.
    pub fn connection_counts(&self) -> (usize, usize) {
        let open = self.open.load(Ordering::Acquire);
        (open, self.max_connections.saturating_sub(open))
    }
}

/// One connection counted in [`Limits::open`] for as long as it lives, however its task
/// ends (finished, or aborted when the grace period is over).
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn new(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::AcqRel);
        Self(open.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A shutdown signal: `true` once the server should stop accepting and drain.
pub type ShutdownSignal = watch::Receiver<bool>;

/// Serves `listener` until `shutdown` turns true, then lets open connections finish their
/// in-flight requests for up to `limits.grace` and closes what remains. `handler` gets each
/// request with the caller's address (for the access log: no per-request extension map).
pub async fn serve<F, Fut, B>(
    listener: TcpListener,
    handler: F,
    limits: Limits,
    shutdown: ShutdownSignal,
) where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_with(listener, None, handler, limits, shutdown).await;
}

/// Serves `listener` as [`serve`] does; with `tls`, each connection over TLS with the
/// configuration `tls` holds when it is accepted.
pub async fn serve_with<F, Fut, B>(
    listener: TcpListener,
    tls: Option<ServerTls>,
    handler: F,
    limits: Limits,
    mut shutdown: ShutdownSignal,
) where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The connection driver bounds request heads and idle gaps (module documentation).
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.max_concurrent_streams)
        .keep_alive_interval(Some(limits.keep_alive_interval))
        .keep_alive_timeout(limits.keep_alive_timeout);
    let mut connections = JoinSet::new();
    {
        let stop = shutdown.clone();
        let stop = async move {
            let mut stop = stop;
            // An Err means the sender is gone, which also means stop.
            let _ = stop.wait_for(|stop| *stop).await;
        };
        let mut stop = pin!(stop);
        loop {
            while connections.try_join_next().is_some() {}
            let permit = tokio::select! {
                permit = limits.connections.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                () = &mut stop => break,
            };
            let accepted = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                },
                () = &mut stop => break,
            };
            connections.spawn(connection(
                accepted,
                tls.clone(),
                handler.clone(),
                builder.clone(),
                limits.clone(),
                shutdown.clone(),
                permit,
            ));
        }
    }
    drop(listener);
    let _ = shutdown.wait_for(|stop| *stop).await;
    let drained = tokio::time::timeout(limits.grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    match drained {
        Ok(()) => tracing::debug!("all connections drained"),
        Err(_) => {
            tracing::warn!(grace = %humantime::format_duration(limits.grace), remaining = connections.len(), "grace period over; closing the remaining connections");
            connections.shutdown().await;
        }
    }
}

/// Serves one connection, as accepted (the stream and the caller's address), after its TLS
/// handshake with `tls`, under the deadlines described in the module documentation.
async fn connection<F, Fut, B>(
    (stream, peer): (TcpStream, SocketAddr),
    tls: Option<ServerTls>,
    handler: F,
    builder: auto::Builder<TokioExecutor>,
    limits: Limits,
    shutdown: ShutdownSignal,
    permit: OwnedSemaphorePermit,
) where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let _counted = Counted::new(&limits.open);
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "TCP_NODELAY not set");
    }
    let activity = Arc::new(Activity::new());
    match tls {
        None => {
            drive(
                stream, peer, None, activity, handler, builder, limits, shutdown,
            )
            .await
        }
        Some(tls) => {
            let handshake = tls.acceptor().accept(stream);
            match tokio::time::timeout(limits.header_read_timeout, handshake).await {
                Ok(Ok(stream)) => {
                    let cert = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(<[_]>::first)
                        .map(|cert| Arc::new(PeerNames::from_der(cert)));
                    drive(
                        stream, peer, cert, activity, handler, builder, limits, shutdown,
                    )
                    .await;
                }
                Ok(Err(error)) => {
                    limits.handshake_failures.refused(&error);
                    tracing::debug!(%error, "TLS handshake refused");
                }
                Err(_) => {
                    limits
                        .handshake_failures
                        .timeout
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        "TLS handshake did not complete within server.header_read_timeout"
                    );
                }
            }
        }
    }
    drop(permit);
}

/// Serves the requests of one connection's `io` from `peer` (`cert`: its client
/// certificate's names, handed to every request).
#[allow(
    clippy::too_many_arguments,
    reason = "the connection's parts, each passed on once; a struct would only rename them"
)]
async fn drive<I, F, Fut, B>(
    io: I,
    peer: SocketAddr,
    cert: Option<Arc<PeerNames>>,
    activity: Arc<Activity>,
    handler: F,
    builder: auto::Builder<TokioExecutor>,
    limits: Limits,
    mut shutdown: ShutdownSignal,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tracked = activity.clone();
    // `map`, not an `async` block around the handler's future: a block would keep that
    // future twice (as captured, and as awaited), and hyper moves it twice per request.
    let service = service_fn(move |mut request: Request<Incoming>| {
        if let Some(cert) = &cert {
            request.extensions_mut().insert(cert.clone());
        }
        let guard = tracked.begin(request.version());
        handler(request, peer).map(move |response| {
            Ok::<_, Infallible>(response.map(|body| Tracked {
                body,
                _guard: guard,
            }))
        })
    });
    let io = Watched {
        io,
        activity: activity.clone(),
    };
    let mut conn = pin!(
        builder
            .serve_connection(TokioIo::new(io), service)
            .into_owned()
    );
    let mut goaway_sent = false;
    // `select!` evaluates each `if` once per turn of the loop, and a turn lasts until some
    // branch fires: conditions are plain flags, and what changes under them is checked in
    // the branch. The connection itself is polled first; the deadlines are gated, so the
    // wake-ups of the connection's I/O (several per request) do not poll them too.
    loop {
        let lapse = pin!(activity.lapse(&limits));
        let stop = pin!(shutdown.wait_for(|stop| *stop));
        let linger = pin!(activity.idle_for(GOAWAY_LINGER));
        tokio::select! {
            biased;
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                break;
            }
            lapse = Gated::new(lapse), if !goaway_sent => {
                if lapse == Lapse::Http2Idle {
                    tracing::debug!("connection idle; sending GOAWAY");
                    conn.as_mut().graceful_shutdown();
                    goaway_sent = true;
                } else {
                    tracing::debug!(reason = lapse.reason(), "closing the connection");
                    break;
                }
            }
            _ = Gated::new(stop), if !goaway_sent => {
                conn.as_mut().graceful_shutdown();
                goaway_sent = true;
            }
            () = Gated::new(linger), if goaway_sent => {
                break;
            }
        }
    }
}

/// A future polled only on its first poll and after its own waker fired: a branch of a
/// `select!` that would otherwise be polled at every wake-up of every other branch.
struct Gated<F> {
    future: F,
    gate: Arc<Gate>,
}

/// Whether a gated future's waker fired, and whom to wake then.
struct Gate {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Gate {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F> Gated<F> {
    fn new(future: F) -> Self {
        Self {
            future,
            gate: Arc::new(Gate {
                woken: AtomicBool::new(true),
                task: AtomicWaker::new(),
            }),
        }
    }
}

impl<F: Future + Unpin> Future for Gated<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.gate.task.register(cx.waker());
        if !self.gate.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let waker = Waker::from(self.gate.clone());
        Pin::new(&mut self.future).poll(&mut Context::from_waker(&waker))
    }
}

/// Which deadline a connection missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lapse {
    /// No request began within `header_read_timeout` of the connection's start.
    NoRequest,
    /// A request head began and did not complete within `header_read_timeout`.
    HeadIncomplete,
    /// An HTTP/1 connection had no request in flight for `keepalive_timeout`.
    KeepAlive,
    /// An HTTP/2 connection had no open stream for `idle_timeout`: it gets GOAWAY.
    Http2Idle,
}

impl Lapse {
    /// Why the connection is closed, for the debug log.
    fn reason(self) -> &'static str {
        match self {
            Self::NoRequest => "no request began within server.header_read_timeout",
            Self::HeadIncomplete => {
                "a request head did not complete within server.header_read_timeout"
            }
            Self::KeepAlive => "idle for server.keepalive_timeout",
            Self::Http2Idle => "no open stream for server.idle_timeout",
        }
    }
}

/// `head_since_ms` when no request head is under way.
const NO_HEAD: u64 = u64::MAX;

/// What a connection is doing: requests begun, requests open, since when none is open, and
/// since when a request head is arriving.
struct Activity {
    born: Instant,
    requests: AtomicU64,
    open: AtomicUsize,
    /// Milliseconds after `born` when the last open request ended (or the connection began).
    idle_since_ms: AtomicU64,
    /// Milliseconds after `born` when the first byte of a head arrived with no request open;
    /// [`NO_HEAD`] once that request began (or before any byte).
    head_since_ms: AtomicU64,
    /// Whether the connection speaks HTTP/2 (known from its first request).
    http2: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Self {
            born: Instant::now(),
            requests: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            head_since_ms: AtomicU64::new(NO_HEAD),
            http2: AtomicBool::new(false),
        }
    }

    /// Milliseconds since `born` (saturating below [`NO_HEAD`]).
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).map_or(NO_HEAD - 1, |ms| ms.min(NO_HEAD - 1))
    }

    /// Marks a request open until the returned guard (carried by its response body) drops.
    fn begin(self: &Arc<Self>, version: Version) -> OpenRequest {
        if version == Version::HTTP_2 {
            self.http2.store(true, Ordering::Relaxed);
        }
        self.requests.fetch_add(1, Ordering::AcqRel);
        self.open.fetch_add(1, Ordering::AcqRel);
        self.head_since_ms.store(NO_HEAD, Ordering::Release);
        OpenRequest(self.clone())
    }

    /// Notes that bytes arrived. With no request open on HTTP/1 they begin a head, whose
    /// deadline starts now; an HTTP/2 connection's frames between streams (PINGs, window
    /// updates) begin nothing. Bytes of a head pipelined behind an open request are not
    /// seen here: that head has the keep-alive bound instead.
    fn bytes_read(&self) {
        if self.open.load(Ordering::Acquire) == 0
            && self.head_since_ms.load(Ordering::Acquire) == NO_HEAD
            && !self.http2.load(Ordering::Relaxed)
        {
            self.head_since_ms
                .store(self.elapsed_ms(), Ordering::Release);
        }
    }

    /// Resolves with the first deadline the connection misses (module documentation); while
    /// a request is open there is none.
    async fn lapse(&self, limits: &Limits) -> Lapse {
        let shortest = limits
            .header_read_timeout
            .min(limits.keepalive_timeout)
            .min(limits.idle_timeout);
        self.quiet(shortest, |idle_since, head_since| {
            if self.http2.load(Ordering::Relaxed) {
                (idle_since, limits.idle_timeout, Lapse::Http2Idle)
            } else if self.requests.load(Ordering::Acquire) == 0 {
                // The first request's bound runs from the connection's start, not its first
                // byte: a byte sent late buys no time.
                let lapse = if head_since == NO_HEAD {
                    Lapse::NoRequest
                } else {
                    Lapse::HeadIncomplete
                };
                (0, limits.header_read_timeout, lapse)
            } else if head_since != NO_HEAD {
                (
                    head_since,
                    limits.header_read_timeout,
                    Lapse::HeadIncomplete,
                )
            } else {
                (idle_since, limits.keepalive_timeout, Lapse::KeepAlive)
            }
        })
        .await
    }

    /// Resolves once no request has been open for `period`.
    async fn idle_for(&self, period: Duration) {
        self.quiet(period, |idle_since, _| (idle_since, period, ()))
            .await;
    }

    /// Waits out the deadline `deadline` names — milliseconds after `born`, a period, and
    /// what to answer — for the state it is shown (idle since, head since); while a request
    /// is open there is none. Every state's deadline is at least `shortest` after the change
    /// that made it, so a timer set no later than `shortest` from now fires before any
    /// deadline the state can come to have; at each firing the deadline is read again.
    async fn quiet<T>(
        &self,
        shortest: Duration,
        deadline: impl Fn(u64, u64) -> (u64, Duration, T),
    ) -> T {
        loop {
            let now = Instant::now();
            let due = if self.open.load(Ordering::Acquire) > 0 {
                None
            } else {
                let idle_since = self.idle_since_ms.load(Ordering::Acquire);
                let head_since = self.head_since_ms.load(Ordering::Acquire);
                let (from, period, answer) = deadline(idle_since, head_since);
                let at = self.born + Duration::from_millis(from) + period;
                if at <= now {
                    return answer;
                }
                Some(at)
            };
            let check = now + shortest;
            tokio::time::sleep_until(due.map_or(check, |at| at.min(check))).await;
        }
    }
}

/// One open request; dropping it (with its response body) may make the connection idle.
struct OpenRequest(Arc<Activity>);

impl Drop for OpenRequest {
    fn drop(&mut self) {
        let activity = &self.0;
        if activity.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            activity
                .idle_since_ms
                .store(activity.elapsed_ms(), Ordering::Release);
        }
    }
}

/// The connection's I/O, telling [`Activity`] when bytes arrive.
struct Watched<I> {
    io: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        result
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A response body that keeps its request open until it has been sent (or dropped).
struct Tracked<B> {
    body: B,
    _guard: OpenRequest,
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Counts wakes.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Counts its polls; pending (keeping the waker it was given) until `ready` is set.
    #[derive(Default)]
    struct Probe {
        polls: AtomicUsize,
        ready: AtomicBool,
        waker: Mutex<Option<Waker>>,
    }

    impl Future for &Probe {
        type Output = ();

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::AcqRel);
            if self.ready.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    fn limits() -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(75),
            max_header_bytes: 8192,
            connections: Arc::new(Semaphore::new(1)),
            max_connections: 1,
            open: Arc::default(),
            handshake_failures: Arc::default(),
            max_concurrent_streams: 1,
            idle_timeout: Duration::from_secs(60),
            keep_alive_interval: Duration::from_secs(20),
            keep_alive_timeout: Duration::from_secs(20),
            grace: Duration::from_secs(30),
        }
    }

    /// When `activity` misses its deadline, counted from now, and which one.
    async fn lapse_after(activity: &Activity) -> (Duration, Lapse) {
        let start = Instant::now();
        let lapse = activity.lapse(&limits()).await;
        (start.elapsed(), lapse)
    }

    #[tokio::test(start_paused = true)]
    async fn each_state_of_a_connection_has_its_own_deadline() {
        let activity = Arc::new(Activity::new());
        assert_eq!(
            lapse_after(&activity).await,
            (Duration::from_secs(10), Lapse::NoRequest)
        );
        drop(activity.begin(Version::HTTP_11));
        assert_eq!(
            lapse_after(&activity).await,
            (Duration::from_secs(75), Lapse::KeepAlive),
            "idle between requests: the keep-alive bound, not the header one"
        );
        tokio::time::advance(Duration::from_secs(30)).await;
        activity.bytes_read();
        assert_eq!(
            lapse_after(&activity).await,
            (Duration::from_secs(10), Lapse::HeadIncomplete),
            "a head begun: the header bound from its first byte"
        );
        let open = activity.begin(Version::HTTP_2);
        tokio::time::advance(Duration::from_secs(600)).await;
        drop(open);
        activity.bytes_read();
        assert_eq!(
            lapse_after(&activity).await,
            (Duration::from_secs(60), Lapse::Http2Idle),
            "HTTP/2 frames between streams begin no head"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_begun_while_idle_moves_the_deadline_earlier() {
        let activity = Arc::new(Activity::new());
        drop(activity.begin(Version::HTTP_11));
        let waiting = tokio::spawn({
            let activity = activity.clone();
            async move { lapse_after(&activity).await }
        });
        // The waiting task starts (its deadline: the keep-alive one), then 5 s pass.
        tokio::task::yield_now().await;
        tokio::time::advance(Duration::from_secs(5)).await;
        activity.bytes_read();
        assert_eq!(
            waiting.await.unwrap(),
            (Duration::from_secs(15), Lapse::HeadIncomplete)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn requests_beginning_and_ending_wake_nothing_and_the_keep_alive_bound_holds() {
        let activity = Arc::new(Activity::new());
        let limits = limits();
        let task = Arc::new(Wakes::default());
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);
        let inner = pin!(activity.lapse(&limits));
        let mut lapse = pin!(Gated::new(inner));
        assert!(lapse.as_mut().poll(&mut cx).is_pending());
        for _ in 0..100 {
            activity.bytes_read();
            drop(activity.begin(Version::HTTP_11));
            tokio::time::advance(Duration::from_millis(20)).await;
        }
        assert_eq!(
            task.0.load(Ordering::Acquire),
            0,
            "a request's first bytes, start and end wake the connection's task"
        );
        let ended = Instant::now();
        for _ in 0..40 {
            tokio::time::advance(Duration::from_secs(5)).await;
            if let Poll::Ready(lapse) = lapse.as_mut().poll(&mut cx) {
                assert_eq!(lapse, Lapse::KeepAlive);
                assert!(
                    ended.elapsed() >= Duration::from_secs(75),
                    "{:?}",
                    ended.elapsed()
                );
                return;
            }
        }
        panic!("no keep-alive lapse 200 s after the last request");
    }

    #[test]
    fn a_gated_future_is_polled_first_and_then_only_after_its_own_wake() {
        let probe = Probe::default();
        let task = Arc::new(Wakes::default());
        let task_waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&task_waker);
        let mut gated = Gated::new(&probe);
        assert!(Pin::new(&mut gated).poll(&mut cx).is_pending());
        assert_eq!(
            probe.polls.load(Ordering::Acquire),
            1,
            "the first poll goes through"
        );
        for _ in 0..5 {
            assert!(Pin::new(&mut gated).poll(&mut cx).is_pending());
        }
        assert_eq!(
            probe.polls.load(Ordering::Acquire),
            1,
            "the task's other wake-ups do not reach it"
        );
        probe.ready.store(true, Ordering::Release);
        probe.waker.lock().unwrap().take().unwrap().wake();
        assert_eq!(
            task.0.load(Ordering::Acquire),
            1,
            "its own wake wakes the task"
        );
        assert!(Pin::new(&mut gated).poll(&mut cx).is_ready());
        assert_eq!(probe.polls.load(Ordering::Acquire), 2);
    }
}
