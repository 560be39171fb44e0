//! Listeners and connections: HTTP/1.1 and h2c through hyper-util's auto builder, a cap on
//! concurrent connections, deadlines on silent connections, and a graceful drain. The
//! server runs on a listener its caller bound (so tests bind port 0) and stops when told
//! through a value.
//!
//! A connection must earn its place under the cap:
//! - until its first request head has arrived (whatever the protocol, the first byte and an
//!   HTTP/2 preface included) it has `header_read_timeout`, then it is closed; after that
//!   hyper enforces the same bound on every HTTP/1 request head;
//! - an HTTP/2 connection is PINGed every `http2_keep_alive_interval` (a peer that stops
//!   answering is closed) and, with no open stream for `idle_timeout`, gets GOAWAY;
//! - once a GOAWAY is sent (idle, or draining) and no stream is left, the connection is
//!   closed after a short linger, whether or not the peer acknowledges.

use std::convert::Infallible;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt as _;
use futures_util::task::AtomicWaker;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again, so the
/// loop does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// After a GOAWAY, with no stream left, how long the connection is kept so the frame is
/// flushed and a well-behaved peer can close first.
const GOAWAY_LINGER: Duration = Duration::from_millis(500);

/// Connection limits for one listener (shared by every worker serving it).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Close connections that have not sent full request headers within this.
    pub header_read_timeout: Duration,
    /// Largest request head accepted.
    pub max_header_bytes: usize,
    /// Connections served at once, across all workers; more wait in the listen backlog.
    pub connections: Arc<Semaphore>,
    /// The size `connections` started with, to tell how many are open.
    pub max_connections: usize,
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
}

impl Limits {
    /// Connections open now and permits left.
    pub fn connection_counts(&self) -> (usize, usize) {
        let available = self.connections.available_permits();
        (self.max_connections.saturating_sub(available), available)
    }
}

/// A shutdown signal: `true` once the server should stop accepting and drain.
pub type ShutdownSignal = watch::Receiver<bool>;

/// Serves `listener` until `shutdown` turns true, then lets open connections finish their
/// in-flight requests for up to `limits.grace` and closes what remains.
pub async fn serve<F, Fut, B>(
    listener: TcpListener,
    handler: F,
    limits: Limits,
    mut shutdown: ShutdownSignal,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
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
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                },
                () = &mut stop => break,
            };
            connections.spawn(connection(
                stream,
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

/// Serves one connection under the deadlines described in the module documentation.
async fn connection<F, Fut, B>(
    stream: TcpStream,
    handler: F,
    builder: auto::Builder<TokioExecutor>,
    limits: Limits,
    mut shutdown: ShutdownSignal,
    permit: OwnedSemaphorePermit,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "TCP_NODELAY not set");
    }
    let activity = Arc::new(Activity::new());
    let tracked = activity.clone();
    // `map`, not an `async` block around the handler's future: a block would keep that
    // future twice (as captured, and as awaited), and hyper moves it twice per request.
    let service = service_fn(move |request| {
        let guard = tracked.begin();
        handler(request).map(move |response| {
            Ok::<_, Infallible>(response.map(|body| Tracked {
                body,
                _guard: guard,
            }))
        })
    });
    let mut conn = pin!(
        builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned()
    );
    let first_request = tokio::time::sleep(limits.header_read_timeout);
    let mut first_request = pin!(first_request);
    let mut first_request_due = true;
    let mut goaway_sent = false;
    // `select!` evaluates each `if` once per turn of the loop, and a turn lasts until some
    // branch fires: conditions are plain flags, and what changes under them is checked in
    // the branch. The connection itself is polled first; the deadlines are gated, so the
    // wake-ups of the connection's I/O (several per request) do not poll them too.
    loop {
        let idle = pin!(activity.idle_for(limits.idle_timeout));
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
            () = Gated::new(first_request.as_mut()), if first_request_due => {
                first_request_due = false;
                if activity.requests() == 0 {
                    tracing::debug!(timeout = %humantime::format_duration(limits.header_read_timeout), "no request head in time; closing the connection");
                    break;
                }
            }
            () = Gated::new(idle), if !goaway_sent => {
                tracing::debug!("connection idle; sending GOAWAY");
                conn.as_mut().graceful_shutdown();
                goaway_sent = true;
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
    drop(permit);
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

/// What a connection is doing: requests begun, requests open, and since when none is open.
struct Activity {
    born: Instant,
    requests: AtomicU64,
    open: AtomicUsize,
    /// Milliseconds after `born` when the last open request ended (or the connection began).
    idle_since_ms: AtomicU64,
    became_idle: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            born: Instant::now(),
            requests: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            became_idle: Notify::new(),
        }
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Acquire)
    }

    /// Marks a request open until the returned guard (carried by its response body) drops.
    fn begin(self: &Arc<Self>) -> OpenRequest {
        self.requests.fetch_add(1, Ordering::AcqRel);
        self.open.fetch_add(1, Ordering::AcqRel);
        OpenRequest(self.clone())
    }

    /// Resolves once no request has been open for `period`.
    async fn idle_for(&self, period: Duration) {
        loop {
            let notified = self.became_idle.notified();
            let mut notified = pin!(notified);
            notified.as_mut().enable();
            if self.open.load(Ordering::Acquire) > 0 {
                notified.await;
                continue;
            }
            let since = self.idle_since_ms.load(Ordering::Acquire);
            let deadline = self.born + Duration::from_millis(since) + period;
            tokio::time::sleep_until(deadline).await;
            if self.open.load(Ordering::Acquire) == 0
                && self.idle_since_ms.load(Ordering::Acquire) == since
            {
                return;
            }
        }
    }
}

/// One open request; dropping it (with its response body) may make the connection idle.
struct OpenRequest(Arc<Activity>);

impl Drop for OpenRequest {
    fn drop(&mut self) {
        let activity = &self.0;
        if activity.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            let ms = u64::try_from(activity.born.elapsed().as_millis()).unwrap_or(u64::MAX);
            activity.idle_since_ms.store(ms, Ordering::Release);
            activity.became_idle.notify_waiters();
        }
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
