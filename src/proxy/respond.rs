//! Phase 7's body: what the caller gets (Poynt's body streamed untouched, or the proxy's
//! own error) wrapped so the request's access record learns how it ended. It counts the
//! bytes handed to the caller, sees a failure of Poynt's body after the head went out, and
//! writes the one access line when the body is dropped: at its end, at its failure, or when
//! the caller went away first (`DC`). The line is written there rather than with the head
//! because only then are bytes out and a disconnect known; the cost is this wrapper's
//! counter and a clock read at the end (docs/BENCHMARKS.md, "Access log"). A caller that
//! goes away before the head (while its request waits for a token or for Poynt) drops the
//! request's future instead: [`Unanswered`] writes that line. A traced request's server span
//! ends here too, so it covers the body's streaming; an untraced one carries no span.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use tokio::time::Instant;
use tracing::Span;

use crate::access_log::{AccessLog, AccessRecord, Flag, Flags};
use crate::callers::UNKNOWN;
use crate::metrics::{BodyFailure, Metrics};
use crate::upstream::{ResponseBody, SendError};

use super::admit;

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
    /// The request's server span, when traced: it ends as this does.
    span: Option<Span>,
}

impl ProxyBody {
    /// `reply`, whose access line `record` (of a request that arrived at `started`) is
    /// written through `recorder`, and whose server `span` (when traced) is ended, when it
    /// ends.
    pub fn new(
        reply: Reply,
        recorder: Arc<Recorder>,
        record: AccessRecord,
        started: Instant,
        span: Option<Span>,
    ) -> Self {
        Self {
            reply,
            ending: Some(Ending {
                recorder,
                record,
                started,
                failed: false,
                span,
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

    /// Writes the line and ends the server span (with the body's size when it was sent
    /// whole); `ended` when the body was read to its end.
    fn finish(mut self, ended: bool) {
        let record = &mut self.record;
        if !ended && !self.failed && has_body(&record.method, record.status) {
            record.flags.set(Flag::CallerDisconnected);
        }
        let total = Instant::now() - self.started;
        self.recorder.access.write(record, total);
        if let Some(span) = self.span {
            if ended {
                span.record("http.response.body.size", record.bytes_out);
            }
            // The exporter takes a span's end from its last exit: this one, at the body's end.
            drop(span.enter());
        }
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

/// nginx's "client closed request": the status logged for a caller that went away before
/// its response head. It never reaches the caller.
const CLIENT_CLOSED: u16 = 499;

/// A request not yet answered. Dropped armed — its future was dropped because the caller
/// went away while it waited for a token or for Poynt's head — it writes the access line
/// (status 499, `DC`) and counts the request; [`Unanswered::answered`] disarms it. Holds
/// only borrows: nothing is copied unless the caller does go away.
pub struct Unanswered<'a> {
    recorder: &'a Recorder,
    parts: &'a Parts,
    request_id: &'a HeaderValue,
    merchant_header: &'a HeaderName,
    peer: SocketAddr,
    started: Instant,
    armed: bool,
}

impl<'a> Unanswered<'a> {
    /// Arms the guard for the request `parts` from `peer` that arrived at `started`.
    pub fn new(
        recorder: &'a Recorder,
        parts: &'a Parts,
        request_id: &'a HeaderValue,
        merchant_header: &'a HeaderName,
        peer: SocketAddr,
        started: Instant,
    ) -> Self {
        Self {
            recorder,
            parts,
            request_id,
            merchant_header,
            peer,
            started,
            armed: true,
        }
    }

    /// The request has its response: the ordinary record step takes over.
    pub fn answered(mut self) {
        self.armed = false;
    }
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let total = Instant::now() - self.started;
        let parts = self.parts;
        self.recorder
            .metrics
            .observe_request(&parts.method, CLIENT_CLOSED, true, UNKNOWN, total);
        let mut flags = Flags::default();
        flags.set(Flag::CallerDisconnected);
        let record = AccessRecord {
            request_id: self.request_id.clone(),
            trace_id: None,
            peer: self.peer,
            caller: None,
            merchant: admit::merchant_from_headers(&parts.headers, self.merchant_header).ok(),
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            status: CLIENT_CLOSED,
            upstream_status: None,
            bytes_in: 0,
            bytes_out: 0,
            token: None,
            token_wait: None,
            upstream: None,
            attempts: 0,
            reused: None,
            limit_observed: None,
            flags,
            error_code: None,
            error: Some("the caller went away before the response head".into()),
        };
        self.recorder.access.write(&record, total);
    }
}
