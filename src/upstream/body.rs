//! A response body on its way from Poynt to the caller. Over HTTP/1.1 it is read by the
//! task that sends it to the caller (hyper's server polls it), straight from the
//! connection's buffer; the moment its last byte is decoded — before that byte is even
//! handed on — the connection goes back to the worker's pool. A body dropped before its end
//! (the caller went away) closes its connection instead. Over HTTP/2 it is hyper's stream,
//! holding one of its connection's stream slots until it ends.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::error::SendError;
use super::framing::{Decoded, Framing};
use super::h1::Conn;
use super::h2::StreamSlot;
use super::pool::Pool;

/// A response body from Poynt.
pub struct ResponseBody {
    kind: Kind,
}

enum Kind {
    H1(H1Body),
    H2 {
        body: hyper::body::Incoming,
        _slot: StreamSlot,
    },
}

struct H1Body {
    /// `None` once the body is complete (the connection went back to the pool or closed).
    conn: Option<Box<Conn>>,
    framing: Framing,
    pool: Arc<Pool>,
    keep_alive: bool,
}

impl ResponseBody {
    /// The body of an HTTP/1.1 response whose head was just read from `conn`. An empty body
    /// returns the connection at once.
    pub(crate) fn h1(conn: Box<Conn>, framing: Framing, pool: Arc<Pool>, keep_alive: bool) -> Self {
        let mut body = H1Body {
            conn: Some(conn),
            framing,
            pool,
            keep_alive,
        };
        if body.framing.is_done() {
            body.release();
        }
        Self {
            kind: Kind::H1(body),
        }
    }

    /// The body of an HTTP/2 response, holding its stream slot until it ends.
    pub(crate) fn h2(body: hyper::body::Incoming, slot: StreamSlot) -> Self {
        Self {
            kind: Kind::H2 { body, _slot: slot },
        }
    }
}

impl H1Body {
    /// The body is complete: the connection is reused when nothing about the exchange
    /// forbids it and no stray bytes followed the body.
    fn release(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.keep_alive
            && conn.read_buf.is_empty()
        {
            self.pool.put(conn);
        }
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, SendError>>> {
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
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(0)) if self.framing == Framing::Close => {
                        self.framing = Framing::Done;
                        self.conn = None;
                        return Poll::Ready(None);
                    }
                    Poll::Ready(Ok(0)) => {
                        self.conn = None;
                        return Poll::Ready(Some(Err(SendError::Closed("response body"))));
                    }
                    Poll::Ready(Ok(_)) => {}
                    Poll::Ready(Err(error)) => {
                        self.conn = None;
                        return Poll::Ready(Some(Err(SendError::Io(error))));
                    }
                },
            }
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
            Kind::H2 { body, .. } => Pin::new(body).poll_frame(cx).map_err(SendError::H2),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::H1(body) => body.framing.is_done(),
            Kind::H2 { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::H1(body) => body
                .framing
                .remaining()
                .map_or_else(SizeHint::default, SizeHint::with_exact),
            Kind::H2 { body, .. } => body.size_hint(),
        }
    }
}
