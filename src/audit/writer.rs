//! The writer: a dedicated thread fed by a bounded queue. A hook only tries to queue its
//! event; when the queue is full the event is dropped, counted in
//! `poynt_proxy_audit_dropped_total` and noted as `dropped` in the next line written, so a
//! slow disk costs events (visibly) and never a request worker's time.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::time::SystemTime;

use prometheus::IntCounter;

use super::chain::Chain;
use super::config::{AuditConfig, AuditOutput};
use super::event::Event;
use super::rotation::Rotating;

/// Why the audit trail could not start.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The audit file could not be opened or its last line read.
    #[error("audit.path: expected a file the proxy can append to; opening {path} failed: {source}")]
    Open {
        /// The file.
        path: String,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The writer thread could not be started.
    #[error("expected to start the audit writer thread; the OS refused: {0}")]
    Thread(#[source] io::Error),
}

/// A handle to the trail; cloning shares it. The writer thread ends, after writing what
/// is queued, when the last handle is dropped.
#[derive(Clone)]
pub struct Audit {
    queue: SyncSender<(Event, SystemTime)>,
    /// Events dropped since the last line written, for that line's `dropped`.
    pending: Arc<AtomicU64>,
    dropped: IntCounter,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit").finish_non_exhaustive()
    }
}

/// Where the thread writes.
enum Sink {
    Stdout,
    File(Rotating),
}

impl Sink {
    fn write(&mut self, line: &str) -> io::Result<()> {
        match self {
            Self::Stdout => {
                // One write per line, so lines from the log on the same stream never split it.
                let mut buffer = Vec::with_capacity(line.len() + 1);
                buffer.extend_from_slice(line.as_bytes());
                buffer.push(b'\n');
                io::stdout().lock().write_all(&buffer)
            }
            Self::File(file) => file.write(line),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Stdout => io::stdout().lock().flush(),
            Self::File(file) => file.flush(),
        }
    }
}

impl Audit {
    /// Opens the output (continuing the chain of an existing file) and starts the writer
    /// thread; `dropped` counts events the full queue refused.
    pub fn start(config: &AuditConfig, dropped: IntCounter) -> Result<Self, AuditError> {
        let (sink, chain) = match &config.output {
            AuditOutput::Stdout => (Sink::Stdout, Chain::default()),
            AuditOutput::File(file) => {
                let (rotating, chain) =
                    Rotating::open(file).map_err(|source| AuditError::Open {
                        path: file.path.display().to_string(),
                        source,
                    })?;
                (Sink::File(rotating), chain)
            }
        };
        let (queue, events) = sync_channel(config.queue);
        let pending = Arc::new(AtomicU64::new(0));
        let noted = pending.clone();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || write_all(&events, sink, chain, &noted))
            .map_err(AuditError::Thread)?;
        Ok(Self {
            queue,
            pending,
            dropped,
        })
    }

    /// Queues `event` without waiting; a full queue drops it and counts the drop.
    pub fn record(&self, event: Event) {
        match self.queue.try_send((event, SystemTime::now())) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.pending.fetch_add(1, Ordering::Relaxed);
                self.dropped.inc();
            }
        }
    }
}

/// The thread: seals and writes each event, flushing whenever the queue runs dry.
fn write_all(
    events: &Receiver<(Event, SystemTime)>,
    mut sink: Sink,
    mut chain: Chain,
    pending: &AtomicU64,
) {
    loop {
        let (event, at) = match events.try_recv() {
            Ok(next) => next,
            Err(TryRecvError::Empty) => {
                if let Err(error) = sink.flush() {
                    tracing::error!(%error, "cannot flush the audit trail");
                }
                match events.recv() {
                    Ok(next) => next,
                    Err(_) => return,
                }
            }
            Err(TryRecvError::Disconnected) => break,
        };
        let line = chain.seal(&event, pending.swap(0, Ordering::Relaxed), at);
        if let Err(error) = sink.write(&line) {
            tracing::error!(%error, "cannot write the audit trail; the line is lost and the next one will not verify");
        }
    }
    if let Err(error) = sink.flush() {
        tracing::error!(%error, "cannot flush the audit trail");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::audit::config::FileOutput;
    use crate::audit::verify::verify;

    /// A burst far larger than the queue: whatever the writer thread keeps up with, each
    /// event is either a line or a counted drop, and the lines still form one chain.
    #[test]
    fn every_event_is_written_or_counted_as_dropped() {
        const EVENTS: u64 = 2000;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let config = AuditConfig {
            output: AuditOutput::File(FileOutput {
                path: path.clone(),
                max_bytes: 1 << 30,
                keep: 0,
            }),
            queue: 1,
        };
        let dropped = IntCounter::new("dropped", "dropped").unwrap();
        let audit = Audit::start(&config, dropped.clone()).unwrap();
        for _ in 0..EVENTS {
            audit.record(Event::Eviction {
                merchant: "m".into(),
                evicted: true,
            });
        }
        // The last handle gone, the thread writes what is queued and ends.
        drop(audit);
        let written = || {
            std::fs::read_to_string(&path)
                .unwrap_or_default()
                .lines()
                .count() as u64
        };
        for _ in 0..1000 {
            if written() + dropped.get() == EVENTS {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(written() + dropped.get(), EVENTS);
        let verified = verify(&[&path]).expect("the lines written form one chain");
        assert!(
            verified.dropped <= dropped.get(),
            "noted {} drops; counted {}",
            verified.dropped,
            dropped.get()
        );
    }
}
