//! A response body on its way from Poynt to the caller. Over HTTP/1.1 it is read by the
//! task that sends it to the caller (hyper's server polls it), straight from the
//! connection's buffer; the moment its last byte is decoded — before that byte is even
//! handed on — the connection goes back to the worker's pool. A body dropped before its end
//! (the caller went away) closes its connection instead. Over HTTP/2 it is hyper's stream,
//! holding one of its connection's stream slots until it ends.
//!
//! Either way a body that brings no byte for the body idle timeout fails: the HTTP/1.1
//! connection is closed, the HTTP/2 stream reset, and the caller's response aborted. The
//! timer is armed only when a read would block (the first byte that arrives disarms it, with
//! no clock read), and the HTTP/1.1 one is kept with its connection, so a body read from the
//! buffer costs no timer and a connection allocates its timer once, not once per request.
//! A failure after the head went to the caller is returned as the body's error: the proxy's
//! own body around this one counts and logs it, when the body ends, in the request's one
//! access record.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::error::SendError;
use super::framing::{Decoded, Framing};
use super::h1::Conn;
use super::idle::IdleTimer;
use super::pool::Pool;

/// A response body from Poynt.
pub struct ResponseBody {
    kind: Kind,
    /// Whether the exchange went over a connection that had served before.
    reused: bool,
}

enum Kind {
    H1(H1Body),
    H2 {
        body: hyper::body::Incoming,
        _slot: StreamSlot,
        idle: IdleTimer,
    },
}

/// One open stream on an HTTP/2 connection (`h2`), given back when dropped: the response
/// body holds it until it ends. The count is the connection's open streams; the flag says
/// whether the connection was open before this stream (the access log's `reused`).
pub(crate) struct StreamSlot(pub(crate) Arc<AtomicUsize>, pub(crate) bool);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

struct H1Body {
    /// `None` once the body is complete (the connection went back to the pool or closed).
    conn: Option<Box<Conn>>,
    framing: Framing,
    /// Data decoded with the head (so a framing error in it became a 502), not yet handed on.
    first: Option<Bytes>,
    pool: Arc<Pool>,
    keep_alive: bool,
}

impl ResponseBody {
    /// The body of an HTTP/1.1 response whose head was just read from `conn`, with `first`
    /// decoded from what came with the head. An empty or fully buffered body returns the
    /// connection at once.
    pub(crate) fn h1(
        mut conn: Box<Conn>,
        framing: Framing,
        first: Option<Bytes>,
        pool: Arc<Pool>,
        keep_alive: bool,
    ) -> Self {
        conn.idle.progressed();
        let reused = conn.reused;
        let mut body = H1Body {
            conn: Some(conn),
            framing,
            first,
            pool,
            keep_alive,
        };
        if body.framing.is_done() {
            body.release();
        }
        Self {
            kind: Kind::H1(body),
            reused,
        }
    }

    /// The body of an HTTP/2 response, holding its stream slot until it ends.
    pub(crate) fn h2(body: hyper::body::Incoming, slot: StreamSlot, idle_limit: Duration) -> Self {
        Self {
            reused: slot.1,
            kind: Kind::H2 {
                body,
                _slot: slot,
                idle: IdleTimer::new(idle_limit),
            },
        }
    }
}

impl ResponseBody {
    /// Whether the exchange went over a connection already open (taken from the pool, or a
    /// free stream of an HTTP/2 connection) rather than one opened for it: the access log
    /// and the upstream span say which.
    pub fn reused(&self) -> bool {
        self.reused
    }
}

impl H1Body {
    /// The body is complete: the connection is reused when nothing about the exchange
    /// forbids it and no stray bytes followed the body.
    fn release(&mut self) {
        if let Some(mut conn) = self.conn.take()
            && self.keep_alive
            && conn.read_buf.is_empty()
        {
            conn.reused = true;
            self.pool.put(conn);
        }
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, SendError>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let decoded = match self.framing.decode(&mut conn.read_buf) {
                Ok(decoded) => decoded,
                Err(error) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(SendError::Malformed(error.to_string()))));
                }
            };
            match decoded {
                Decoded::Data(data) => {
                    if self.framing.is_done() {
                        self.release();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Decoded::Done => {
                    self.release();
                    return Poll::Ready(None);
                }
                Decoded::NeedMore => match conn.poll_fill(cx) {
                    Poll::Pending => {
                        let Poll::Ready(limit) = conn.idle.poll_expired(cx) else {
                            return Poll::Pending;
                        };
                        self.conn = None;
                        return Poll::Ready(Some(Err(SendError::BodyIdle(limit))));
                    }
                    Poll::Ready(Ok(0)) if self.framing == Framing::Close => {
                        self.framing = Framing::Done;
                        self.conn = None;
                        return Poll::Ready(None);
                    }
                    Poll::Ready(Ok(0)) => {
                        self.conn = None;
                        return Poll::Ready(Some(Err(SendError::Closed("response body"))));
                    }
                    Poll::Ready(Ok(_)) => conn.idle.progressed(),
                    Poll::Ready(Err(error)) => {
                        self.conn = None;
                        return Poll::Ready(Some(Err(SendError::Io(error))));
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing.is_done() && self.first.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let first = self.first.as_ref().map_or(0, |first| first.len() as u64);
        self.framing
            .remaining()
            .map_or_else(SizeHint::default, |left| SizeHint::with_exact(left + first))
    }
}

/// An HTTP/2 body's next frame, failing when none comes within the idle timeout.
fn poll_h2(
    body: &mut hyper::body::Incoming,
    idle: &mut IdleTimer,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, SendError>>> {
    match Pin::new(body).poll_frame(cx) {
        Poll::Pending => idle
            .poll_expired(cx)
            .map(|limit| Some(Err(SendError::BodyIdle(limit)))),
        Poll::Ready(frame) => {
            idle.progressed();
            Poll::Ready(frame.map(|frame| frame.map_err(SendError::H2)))
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = SendError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, SendError>>> {
        match &mut self.get_mut().kind {
            Kind::H1(body) => body.poll_frame(cx),
            Kind::H2 { body, idle, .. } => poll_h2(body, idle, cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::H1(body) => body.is_end_stream(),
            Kind::H2 { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::H1(body) => body.size_hint(),
            Kind::H2 { body, .. } => body.size_hint(),
        }
    }
}
