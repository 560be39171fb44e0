//! The threads that serve callers. Each worker is one OS thread with its own single-threaded
//! Tokio runtime: it accepts from the shared listening socket, runs every phase of its
//! requests and drives its own pool of upstream connections, so a request never moves
//! between threads and no work-stealing scheduler sits on the hot path. This is the model of
//! nginx's and Envoy's workers; on one core it serves about a quarter more requests per second
//! than one multi-threaded runtime (docs/BENCHMARKS.md).
//!
//! All workers accept from duplicates of one socket: a new connection wakes them all, and the
//! first one free to take it does, so idle workers pick up new callers before busy ones.
//! How many there are by default is [`cpus`]' answer: the CPUs the process may use.

pub mod cpus;

use std::future::Future;
use std::net::SocketAddr;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::server::{self, Limits, ShutdownSignal};
use crate::tls::ServerTls;

/// Why the workers could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The listening socket could not be shared with a worker.
    #[error("cannot hand the listening socket to worker {index}: {source}")]
    Listener {
        /// Which worker.
        index: usize,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A worker's runtime or thread could not be created.
    #[error("cannot start worker {index}: {source}")]
    Spawn {
        /// Which worker.
        index: usize,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// The running workers; [`Workers::wait`] returns once all have drained and stopped.
pub struct Workers {
    finished: Vec<oneshot::Receiver<()>>,
}

/// Starts `count` workers serving `listener` (and `tls`'s listener over TLS, under the same
/// connection cap), each with the handler `handler_for` makes for it, and returns once every
/// one of them is running. They stop accepting when `shutdown` turns true (or its sender is
/// dropped) and drain as [`server::serve`] does.
pub async fn spawn<H, Fut, B>(
    listener: TcpListener,
    tls: Option<(TcpListener, ServerTls)>,
    count: usize,
    mut handler_for: impl FnMut() -> H,
    limits: Limits,
    shutdown: ShutdownSignal,
) -> Result<Workers, WorkerError>
where
    H: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let shared = listener
        .into_std()
        .map_err(|source| WorkerError::Listener { index: 0, source })?;
    let shared_tls = match tls {
        Some((listener, tls)) => Some((
            listener
                .into_std()
                .map_err(|source| WorkerError::Listener { index: 0, source })?,
            tls,
        )),
        None => None,
    };
    let mut finished = Vec::with_capacity(count);
    let mut running = Vec::with_capacity(count);
    for index in 0..count {
        let spawn_error = |source| WorkerError::Spawn { index, source };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(spawn_error)?;
        let (listener, tls) = {
            let _entered = runtime.enter();
            let duplicate = |shared: &std::net::TcpListener| {
                shared
                    .try_clone()
                    .and_then(TcpListener::from_std)
                    .map_err(|source| WorkerError::Listener { index, source })
            };
            let tls = match &shared_tls {
                Some((shared, tls)) => Some((duplicate(shared)?, tls.clone())),
                None => None,
            };
            (duplicate(&shared)?, tls)
        };
        let handler = handler_for();
        let shutdown = shutdown.clone();
        let limits = limits.clone();
        let (started, started_rx) = oneshot::channel();
        let (done, done_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name(format!("poynt-worker-{index}"))
            .spawn(move || {
                let _ = started.send(());
                runtime.block_on(async move {
                    match tls {
                        None => server::serve(listener, handler, limits, shutdown).await,
                        Some((tls_listener, tls)) => {
                            tokio::join!(
                                server::serve(
                                    listener,
                                    handler.clone(),
                                    limits.clone(),
                                    shutdown.clone()
                                ),
                                server::serve_with(
                                    tls_listener,
                                    Some(tls),
                                    handler,
                                    limits,
                                    shutdown
                                ),
                            );
                        }
                    }
                });
                // Dropping the runtime ends what the drain left behind (idle pooled upstream
                // connections) before the worker reports that it is done.
                drop(runtime);
                let _ = done.send(());
            })
            .map_err(spawn_error)?;
        running.push(started_rx);
        finished.push(done_rx);
    }
    for (index, started) in running.into_iter().enumerate() {
        if started.await.is_err() {
            return Err(WorkerError::Spawn {
                index,
                source: std::io::Error::other("the worker thread ended before it ran"),
            });
        }
    }
    Ok(Workers { finished })
}

impl Workers {
    /// Waits until every worker has drained and stopped.
    pub async fn wait(self) {
        for (index, done) in self.finished.into_iter().enumerate() {
            if done.await.is_err() {
                tracing::error!(worker = index, "worker thread panicked");
            }
        }
    }
}
