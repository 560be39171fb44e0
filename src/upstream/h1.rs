//! One HTTP/1.1 connection, driven by the task of the request holding it: no connection
//! task, no channel between the request and the connection, no wake-up of another task. An
//! exchange writes the head (and a body up to [`COALESCE`] bytes, in the same write and TLS
//! record), keeps sending a streamed body while it watches for the response head (Poynt may
//! answer early), and hands back the head; the body is then read by
//! [`super::body::ResponseBody`] from the same buffer.

use std::future::poll_fn;
use std::io::{self, Write as _};
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderValue, Method};
use http_body::Body as _;
use tokio::io::AsyncWrite;

use super::error::SendError;
use super::head::{BodyLength, RequestBody, RequestHead, UpstreamBody, encode_head};
use super::idle::IdleTimer;
use super::origin::Stream;
use super::response::{self, Head};

/// Request bodies up to this size are copied behind the head and sent in one write.
const COALESCE: usize = 16 * 1024;
/// The read buffer grows by this much when less than [`MIN_READ`] is free. Head and body
/// are split off the buffer and shared with the caller's response, so the buffer cannot be
/// reused in place until they are dropped; a buffer holding several responses gets a new
/// allocation every few requests instead of every one.
const READ_RESERVE: usize = 16 * 1024;
/// Least free space in the read buffer before a read.
const MIN_READ: usize = 2 * 1024;
/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// An HTTP/1.1 connection with its buffers, kept across requests.
pub(crate) struct Conn {
    io: Stream,
    /// Bytes read and not yet consumed: the rest of a response, then nothing.
    pub(crate) read_buf: BytesMut,
    write_buf: Vec<u8>,
    /// The body idle timeout of the response being read, kept across requests.
    pub(crate) idle: IdleTimer,
    /// Whether the connection served an exchange before (it went back to the pool once).
    pub(crate) reused: bool,
}

impl Conn {
    pub(crate) fn new(io: Stream, body_idle_timeout: Duration) -> Box<Self> {
        Box::new(Self {
            io,
            read_buf: BytesMut::new(),
            write_buf: Vec::new(),
            idle: IdleTimer::new(body_idle_timeout),
            reused: false,
        })
    }

    /// Whether an idle connection can take a request: Poynt has neither closed it nor sent
    /// anything unasked. Costs no syscall when the socket has not become readable since the
    /// last response (the runtime remembers readiness).
    pub(crate) fn is_idle_usable(&mut self) -> bool {
        if !self.read_buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        matches!(self.poll_fill(&mut cx), Poll::Pending)
    }

    /// Reads what is available into the read buffer (`Ok(0)`: the connection closed).
    pub(crate) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read_buf.capacity() - self.read_buf.len() < MIN_READ {
            self.read_buf.reserve(READ_RESERVE);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read_buf)
    }

    /// Sends one request and reads its response head. The returned flag tells whether the
    /// whole request was sent (a response that came early leaves the connection unusable).
    pub(crate) async fn exchange(
        &mut self,
        head: &RequestHead<'_>,
        host: &HeaderValue,
        body: RequestBody,
    ) -> Result<(Head, bool), SendError> {
        let length = body.length(head.method);
        self.write_buf.clear();
        encode_head(&mut self.write_buf, head, host, length);
        let mut sending = Sending {
            written: 0,
            data: Bytes::new(),
            tail: b"",
            body: None,
            chunked: length == BodyLength::Chunked,
            left: match length {
                BodyLength::Known(length) => length,
                BodyLength::None | BodyLength::Chunked => 0,
            },
            done: false,
        };
        match body {
            RequestBody::Full(bytes) if bytes.len() <= COALESCE => {
                self.write_buf.extend_from_slice(&bytes);
            }
            RequestBody::Full(bytes) => sending.data = bytes,
            RequestBody::Stream(body) => sending.body = Some(body),
        }
        let method = head.method;
        poll_fn(|cx| self.poll_exchange(cx, &mut sending, method)).await
    }

    fn poll_exchange(
        &mut self,
        cx: &mut Context<'_>,
        sending: &mut Sending,
        method: &Method,
    ) -> Poll<Result<(Head, bool), SendError>> {
        if !sending.done {
            match sending.poll_send(cx, &mut self.io, &mut self.write_buf) {
                Poll::Ready(Ok(())) => sending.done = true,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => {}
            }
        }
        loop {
            if let Some(head) = response::parse(&mut self.read_buf, method)? {
                if head.status.is_informational() {
                    if head.status == http::StatusCode::SWITCHING_PROTOCOLS {
                        return Poll::Ready(Err(SendError::Malformed(
                            "found 101 Switching Protocols, which nothing asked for".into(),
                        )));
                    }
                    continue;
                }
                return Poll::Ready(Ok((head, sending.done)));
            }
            if self.read_buf.len() > MAX_HEAD {
                return Poll::Ready(Err(SendError::Malformed(format!(
                    "found a response head over {MAX_HEAD} bytes"
                ))));
            }
            match ready!(self.poll_fill(cx)) {
                Ok(0) => return Poll::Ready(Err(SendError::Closed("response"))),
                Ok(_) => {}
                Err(error) => return Poll::Ready(Err(SendError::Io(error))),
            }
        }
    }
}

/// The request's bytes on their way out: the buffered head (with a small body), then
/// `data` and `tail`, then frame after frame of a streamed body.
struct Sending {
    /// How much of the write buffer is written.
    written: usize,
    /// Body bytes to write after the buffer (a large kept body, or a streamed frame).
    data: Bytes,
    /// Written after `data` (the CRLF closing a chunk).
    tail: &'static [u8],
    body: Option<UpstreamBody>,
    chunked: bool,
    /// Bytes a streamed body with a declared length still owes.
    left: u64,
    done: bool,
}

impl Sending {
    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut Stream,
        buf: &mut Vec<u8>,
    ) -> Poll<Result<(), SendError>> {
        let mut io = Pin::new(io);
        loop {
            while self.written < buf.len() {
                let n = ready!(io.as_mut().poll_write(cx, &buf[self.written..]))
                    .map_err(SendError::Io)?;
                if n == 0 {
                    return Poll::Ready(Err(SendError::Io(io::ErrorKind::WriteZero.into())));
                }
                self.written += n;
            }
            while !self.data.is_empty() {
                let n = ready!(io.as_mut().poll_write(cx, &self.data)).map_err(SendError::Io)?;
                if n == 0 {
                    return Poll::Ready(Err(SendError::Io(io::ErrorKind::WriteZero.into())));
                }
                self.data.advance(n);
            }
            while !self.tail.is_empty() {
                let n = ready!(io.as_mut().poll_write(cx, self.tail)).map_err(SendError::Io)?;
                if n == 0 {
                    return Poll::Ready(Err(SendError::Io(io::ErrorKind::WriteZero.into())));
                }
                self.tail = &self.tail[n..];
            }
            let Some(body) = self.body.as_mut() else {
                ready!(io.as_mut().poll_flush(cx)).map_err(SendError::Io)?;
                return Poll::Ready(Ok(()));
            };
            let frame = match Pin::new(body).poll_frame(cx) {
                Poll::Pending => {
                    // What is written must reach Poynt before waiting on the caller.
                    ready!(io.as_mut().poll_flush(cx)).map_err(SendError::Io)?;
                    return Poll::Pending;
                }
                Poll::Ready(frame) => frame,
            };
            buf.clear();
            self.written = 0;
            match frame {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    if self.chunked {
                        // Writing into a Vec cannot fail.
                        let _ = write!(buf, "{:x}\r\n", data.len());
                        self.tail = b"\r\n";
                    } else {
                        self.left = self.left.checked_sub(data.len() as u64).ok_or_else(|| {
                            SendError::Body("the body is longer than its Content-Length".into())
                        })?;
                    }
                    self.data = data;
                }
                Some(Err(error)) => return Poll::Ready(Err(SendError::Body(error))),
                None => {
                    self.body = None;
                    if self.chunked {
                        buf.extend_from_slice(b"0\r\n\r\n");
                    } else if self.left != 0 {
                        return Poll::Ready(Err(SendError::Body(
                            "the body is shorter than its Content-Length".into(),
                        )));
                    }
                }
            }
        }
    }
}
