//! Phase 7's body: what the caller gets (Poynt's body streamed untouched, or the proxy's
//! own error) wrapped so the request's access record learns how it ended. It counts the
//! bytes handed to the caller, sees a failure of Poynt's body after the head went out, and
//! writes the one access line when the body is dropped: at its end, at its failure, or when
//! the caller went away first (`DC`). The line is written there rather than with the head
//! because only then are bytes out and a disconnect known; the cost is this wrapper's
//! counter and a clock read at the end (docs/BENCHMARKS.md, "Access log").

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use tokio::time::Instant;

use crate::access_log::{AccessLog, AccessRecord, Flag};
use crate::metrics::{BodyFailure, Metrics};
use crate::upstream::{ResponseBody, SendError};

/// What the access line and the body-failure count go to, shared by a worker's requests.
pub struct Recorder {
    /// Counts body failures.
    pub metrics: Metrics,
    /// Writes the line.
    pub access: AccessLog,
}

/// The body of a response before it is wrapped.
pub enum Reply {
    /// Poynt's, streamed.
    Poynt(ResponseBody),
    /// The proxy's own error.
    Own(Full<Bytes>),
}

/// Body of every response to callers.
pub struct ProxyBody {
    reply: Reply,
    /// Taken when the line is written.
    ending: Option<Ending>,
}

/// What the line is written with when the body ends.
struct Ending {
    recorder: Arc<Recorder>,
    record: AccessRecord,
    started: Instant,
    /// Poynt's body failed: the caller did not go away, the body was cut.
    failed: bool,
}

impl ProxyBody {
    /// `reply`, whose access line `record` (of a request that arrived at `started`) is
    /// written through `recorder` when it ends.
    pub fn new(
        reply: Reply,
        recorder: Arc<Recorder>,
        record: AccessRecord,
        started: Instant,
    ) -> Self {
        Self {
            reply,
            ending: Some(Ending {
                recorder,
                record,
                started,
                failed: false,
            }),
        }
    }
}

impl Ending {
    fn failed(&mut self, error: &SendError) {
        let (failure, flag) = match error {
            SendError::BodyIdle(_) => (BodyFailure::IdleTimeout, Flag::UpstreamTimeout),
            SendError::Malformed(_) => (BodyFailure::Framing, Flag::UpstreamProtocol),
            SendError::Closed(_) => (BodyFailure::Closed, Flag::UpstreamReset),
            _ => (BodyFailure::Reset, Flag::UpstreamReset),
        };
        self.recorder.metrics.response_body_failed(failure);
        tracing::warn!(
            request_id = self.record.request_id.to_str().unwrap_or_default(),
            reason = failure.as_str(),
            %error,
            "response body failed after its head was sent; the caller's response is aborted"
        );
        self.failed = true;
        self.record.flags.set(flag);
        self.record.error = Some(error.to_string());
    }

    /// Writes the line; `ended` when the body was read to its end.
    fn finish(mut self, ended: bool) {
        let record = &mut self.record;
        if !ended && !self.failed && has_body(&record.method, record.status) {
            record.flags.set(Flag::CallerDisconnected);
        }
        let total = Instant::now() - self.started;
        self.recorder.access.write(record, total);
    }
}

/// Whether a response to `method` with `status` carries a body: hyper drops the others
/// unread, which is no disconnect.
fn has_body(method: &Method, status: u16) -> bool {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    *method != Method::HEAD
        && !status.is_informational()
        && status != StatusCode::NO_CONTENT
        && status != StatusCode::NOT_MODIFIED
}

impl Reply {
    fn is_end_stream(&self) -> bool {
        match self {
            Self::Poynt(body) => body.is_end_stream(),
            Self::Own(body) => body.is_end_stream(),
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = SendError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, SendError>>> {
        let this = self.get_mut();
        let polled = match &mut this.reply {
            Reply::Poynt(body) => Pin::new(body).poll_frame(cx),
            Reply::Own(body) => Pin::new(body)
                .poll_frame(cx)
                .map_err(|never| match never {}),
        };
        if let Some(ending) = &mut this.ending {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        ending.record.bytes_out += data.len() as u64;
                    }
                }
                Poll::Ready(Some(Err(error))) => ending.failed(error),
                Poll::Ready(None) | Poll::Pending => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.reply.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.reply {
            Reply::Poynt(body) => body.size_hint(),
            Reply::Own(body) => body.size_hint(),
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if let Some(ending) = self.ending.take() {
            ending.finish(self.reply.is_end_stream());
        }
    }
}
