//! The caller's request body on its way to Poynt: capped in size, dropped trailers, and a
//! deadline on progress, so a caller that declares a body and stops sending cannot hold a
//! request (and a retry buffer, and an upstream connection) forever. Each failure is typed,
//! so phase 5 can tell the caller exactly what was wrong with what it sent.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

/// Why a caller's body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// No bytes arrived for the whole read timeout.
    #[error(
        "expected the request body to keep arriving; nothing came for {}",
        humantime::format_duration(*.0)
    )]
    Stalled(Duration),
    /// More bytes than the cap.
    #[error("expected a request body of at most {limit} bytes; found more")]
    TooLarge {
        /// The cap.
        limit: u64,
    },
    /// The body's framing was broken (bad chunk size, connection closed mid-body...).
    #[error("expected a well-formed request body; reading it failed: {0}")]
    Malformed(#[source] hyper::Error),
}

/// A caller's body with the proxy's limits applied.
pub struct CallerBody {
    inner: Incoming,
    limit: u64,
    seen: u64,
    timeout: Duration,
    /// Armed the first time the body has nothing ready (most small bodies never wait, so
    /// never allocate a timer), reset on every frame after that.
    deadline: Option<Pin<Box<Sleep>>>,
    /// Where a streamed body's byte count is kept for the access record, which outlives
    /// this body (kept bodies are counted whole, without one).
    tally: Option<Arc<AtomicU64>>,
}

impl CallerBody {
    /// Wraps `inner`: at most `limit` bytes, and no gap longer than `timeout` between frames.
    pub fn new(inner: Incoming, limit: u64, timeout: Duration) -> Self {
        Self {
            inner,
            limit,
            seen: 0,
            timeout,
            deadline: None,
            tally: None,
        }
    }

    /// Keeps the count of bytes read in `tally` as they pass.
    pub fn tallied(mut self, tally: Arc<AtomicU64>) -> Self {
        self.tally = Some(tally);
        self
    }
}

impl Body for CallerBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(deadline) = &mut this.deadline {
                        deadline.as_mut().reset(Instant::now() + this.timeout);
                    }
                    // Trailers are the caller's business with the proxy, not with Poynt.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    this.seen = this.seen.saturating_add(data.len() as u64);
                    if let Some(tally) = &this.tally {
                        tally.store(this.seen, Ordering::Relaxed);
                    }
                    if this.seen > this.limit {
                        return Poll::Ready(Some(Err(BodyError::TooLarge { limit: this.limit })));
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Err(error))) => {
                    return Poll::Ready(Some(Err(BodyError::Malformed(error))));
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => {
                    let timeout = this.timeout;
                    let deadline = this
                        .deadline
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                    ready!(deadline.as_mut().poll(cx));
                    return Poll::Ready(Some(Err(BodyError::Stalled(timeout))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
