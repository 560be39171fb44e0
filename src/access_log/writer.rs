//! Where access lines go: workers format a line into a thread's own reused buffer and append
//! it to a shared batch under a short lock; one `access-log` thread takes the whole batch and
//! writes it to stdout in one call, having let lines gather for a moment first (one wake-up
//! and one write per batch, not per line). A worker never waits for stdout: when the batch is full
//! (stdout blocked, a log shipper behind), the line is dropped and counted
//! (`poynt_proxy_access_log_dropped_total`). A drain at shutdown writes what is left.

use std::cell::RefCell;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use prometheus::IntCounter;
use tokio::sync::oneshot;

use super::format;
use super::record::AccessRecord;
use crate::telemetry;

/// The most bytes waiting for the writer thread: about 4,000 lines, a few seconds of a
/// busy proxy's log, so a brief stall of stdout loses nothing and a long one costs at most
/// this much memory (twice: the batch being filled and the one being written).
pub const MAX_PENDING_BYTES: usize = 1 << 20;

/// How long a drain waits for the writer thread to write what is left.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// How long the writer thread lets lines gather after the first of a batch arrives. Woken
/// for every line, the thread's wake-up and write cost more than the line's formatting
/// (docs/BENCHMARKS.md, "Capped at a CPU quota"); a line is at most this late instead.
const GATHER: Duration = Duration::from_millis(20);

/// A batch this large is written at once, without waiting out [`GATHER`].
const GATHER_BYTES: usize = 64 * 1024;

/// The access log of one running proxy. Cloning shares it.
#[derive(Clone)]
pub struct AccessLog {
    shared: Option<Arc<Shared>>,
}

struct Shared {
    batch: Mutex<Batch>,
    /// Signalled when a batch stops being empty, and when the log closes.
    ready: Condvar,
    dropped: IntCounter,
}

#[derive(Default)]
struct Batch {
    lines: Vec<u8>,
    closed: bool,
}

/// Finishes the access log at shutdown: closes it and waits for the writer thread. Dropped
/// without [`Drain::finish`], it still closes the log, so the thread ends.
pub struct Drain {
    shared: Arc<Shared>,
    /// Fires when the writer thread has written its last batch.
    done: Option<oneshot::Receiver<()>>,
}

thread_local! {
    /// The line being formatted, kept per thread so no line allocates.
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl Shared {
    fn batch(&self) -> MutexGuard<'_, Batch> {
        self.batch.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn close(&self) {
        self.batch().closed = true;
        self.ready.notify_one();
    }

    fn push(&self, line: &[u8]) {
        let mut batch = self.batch();
        if batch.closed || batch.lines.len() + line.len() > MAX_PENDING_BYTES {
            drop(batch);
            self.dropped.inc();
            return;
        }
        let wake = batch.lines.is_empty();
        batch.lines.extend_from_slice(line);
        drop(batch);
        if wake {
            self.ready.notify_one();
        }
    }

    /// The writer thread: takes each batch whole and writes it, until closed and empty.
    fn run(&self, out: &mut dyn Write) {
        let mut writing = Vec::new();
        loop {
            let gather = {
                let mut batch = self.batch();
                while batch.lines.is_empty() && !batch.closed {
                    batch = self
                        .ready
                        .wait(batch)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                !batch.closed && batch.lines.len() < GATHER_BYTES
            };
            if gather {
                // Workers append meanwhile without waking anyone: the batch is not empty.
                std::thread::sleep(GATHER);
            }
            let closed = {
                let mut batch = self.batch();
                std::mem::swap(&mut batch.lines, &mut writing);
                batch.closed
            };
            if !writing.is_empty() {
                // Nowhere to report a failing stdout but stdout: the lines are lost.
                let _ = out.write_all(&writing).and_then(|()| out.flush());
                writing.clear();
            }
            if closed {
                return;
            }
        }
    }
}

impl AccessLog {
    /// No access log: what a proxy without installed logging (tests, library use) has.
    pub fn off() -> Self {
        Self { shared: None }
    }

    /// Starts the writer thread, writing to stdout; lines dropped for a full batch count on
    /// `dropped`.
    pub fn start(dropped: IntCounter) -> std::io::Result<(Self, Drain)> {
        Self::start_to(dropped, Box::new(std::io::stdout()))
    }

    fn start_to(
        dropped: IntCounter,
        mut out: Box<dyn Write + Send>,
    ) -> std::io::Result<(Self, Drain)> {
        let shared = Arc::new(Shared {
            batch: Mutex::default(),
            ready: Condvar::new(),
            dropped,
        });
        let (finished, done) = oneshot::channel();
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                writer.run(&mut *out);
                let _ = finished.send(());
            })?;
        let drain = Drain {
            shared: shared.clone(),
            done: Some(done),
        };
        Ok((
            Self {
                shared: Some(shared),
            },
            drain,
        ))
    }

    /// Writes `record`'s line, `total` after the request arrived, in the configured format
    /// (nothing when `log.access` is off or the log level leaves access lines out).
    pub fn write(&self, record: &AccessRecord, total: Duration) {
        let Some(shared) = &self.shared else {
            return;
        };
        let Some(format) = telemetry::access_format() else {
            return;
        };
        let now = SystemTime::now();
        LINE.with_borrow_mut(|line| {
            line.clear();
            format::line(line, format, record, now, total);
            shared.push(line);
        });
    }
}

impl Drain {
    /// Closes the log and waits (at most a few seconds: stdout may be blocked) for the
    /// writer thread to write every line taken before.
    pub async fn finish(mut self) {
        self.shared.close();
        let Some(done) = self.done.take() else {
            return;
        };
        if tokio::time::timeout(DRAIN_LIMIT, done).await.is_err() {
            tracing::warn!(
                limit = %humantime::format_duration(DRAIN_LIMIT),
                "access log lines were still being written at shutdown; the rest are lost"
            );
        }
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        self.shared.close();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// A sink that hands each write to the test, and blocks while told to.
    struct Sink {
        writes: mpsc::Sender<Vec<u8>>,
        gate: Arc<Mutex<()>>,
    }

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let _open = self.gate.lock().unwrap();
            let _ = self.writes.send(bytes.to_vec());
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A writer thread over a [`Sink`], and what the test holds of it.
    struct Started {
        shared: Arc<Shared>,
        drain: Drain,
        /// Each write the sink took.
        received: mpsc::Receiver<Vec<u8>>,
        /// Held to block the sink.
        gate: Arc<Mutex<()>>,
    }

    fn started() -> Started {
        let (writes, received) = mpsc::channel();
        let gate = Arc::new(Mutex::new(()));
        let dropped = IntCounter::new("dropped", "dropped").unwrap();
        let sink = Sink {
            writes,
            gate: gate.clone(),
        };
        let (log, drain) = AccessLog::start_to(dropped, Box::new(sink)).unwrap();
        Started {
            shared: log.shared.unwrap(),
            drain,
            received,
            gate,
        }
    }

    #[tokio::test]
    async fn drain_writes_every_line_pushed_before_it() {
        let Started {
            shared,
            drain,
            received,
            ..
        } = started();
        for i in 0..100 {
            shared.push(format!("line {i}\n").as_bytes());
        }
        drain.finish().await;
        let written: Vec<u8> = received.try_iter().flatten().collect();
        let text = String::from_utf8(written).unwrap();
        assert_eq!(text.lines().count(), 100);
        assert!(text.ends_with("line 99\n"));
        shared.push(b"late\n");
        assert_eq!(shared.dropped.get(), 1, "a line after the drain is counted");
    }

    #[tokio::test]
    async fn a_blocked_stdout_drops_and_counts_instead_of_blocking() {
        let Started {
            shared,
            drain,
            received,
            gate,
        } = started();
        let blocked = gate.lock().unwrap();
        shared.push(b"first\n");
        // The writer has taken "first" and now waits on the gate, or is about to.
        let line = vec![b'x'; 1023];
        let pushes = 2 * MAX_PENDING_BYTES / 1024;
        for _ in 0..pushes {
            shared.push(&[line.as_slice(), b"\n"].concat());
        }
        let dropped = shared.dropped.get();
        assert!(dropped > 0, "expected lines beyond the cap dropped");
        drop(blocked);
        drain.finish().await;
        let written: usize = received.try_iter().map(|w| w.len()).sum();
        assert_eq!(
            written / 1024,
            pushes - usize::try_from(dropped).unwrap(),
            "every line not dropped was written"
        );
    }
}
