//! The one response body type: a head, a generated middle and a tail, sent frame by frame
//! from static buffers. Large bodies (`_size=50000000`) are never built in memory, and the
//! benchmark's filler (`_bytes=N`) costs no allocation at all.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// Period of the `_size` pattern: byte `i` is `(i % 251) as u8`.
const PATTERN_PERIOD: usize = 251;
/// The pattern, many periods long, so any chunk is a slice of it.
static PATTERN: [u8; PATTERN_PERIOD * 256] = pattern();
/// The `_bytes` filler's repeated byte, as a buffer to slice from.
static FILLER: [u8; 64 * 1024] = [b'x'; 64 * 1024];
/// The `_bytes` filler's JSON opening and closing.
const FILLER_HEAD: &[u8] = b"{\"filler\":\"";
const FILLER_TAIL: &[u8] = b"\"}";
/// Padding for filler bodies too small to hold the JSON frame.
static SPACES: [u8; 64] = [b' '; 64];

const fn pattern() -> [u8; PATTERN_PERIOD * 256] {
    let mut buffer = [0u8; PATTERN_PERIOD * 256];
    let mut i = 0;
    while i < buffer.len() {
        buffer[i] = (i % PATTERN_PERIOD) as u8;
        i += 1;
    }
    buffer
}

/// A periodic byte source: chunks are slices of a static buffer whose content repeats
/// every `period` bytes.
struct Repeat {
    source: &'static [u8],
    period: usize,
    /// Bytes sent so far, modulo the period.
    phase: usize,
    remaining: u64,
}

impl Repeat {
    fn next_chunk(&mut self) -> Option<Bytes> {
        if self.remaining == 0 {
            return None;
        }
        let room = self.source.len() - self.period;
        let len = usize::try_from(self.remaining).map_or(room, |remaining| remaining.min(room));
        let chunk = Bytes::from_static(&self.source[self.phase..self.phase + len]);
        self.phase = (self.phase + len) % self.period;
        self.remaining -= len as u64;
        Some(chunk)
    }
}

/// Every response the emulator sends.
pub(crate) struct ResponseBody {
    head: Option<Bytes>,
    middle: Option<Repeat>,
    tail: Option<Bytes>,
    remaining: u64,
    /// Announce the length (content-length); otherwise HTTP/1.1 uses chunked encoding.
    announce_length: bool,
}

impl ResponseBody {
    /// A body held in memory.
    pub(crate) fn full(bytes: Bytes) -> Self {
        Self {
            remaining: bytes.len() as u64,
            head: Some(bytes),
            middle: None,
            tail: None,
            announce_length: true,
        }
    }

    /// Exactly `len` bytes of the pattern `(i % 251) as u8`.
    pub(crate) fn pattern(len: u64) -> Self {
        Self {
            head: None,
            middle: Some(Repeat {
                source: &PATTERN,
                period: PATTERN_PERIOD,
                phase: 0,
                remaining: len,
            }),
            tail: None,
            remaining: len,
            announce_length: true,
        }
    }

    /// Exactly `len` bytes of JSON: `{"filler":"xxx…"}`, or `{}` padded with spaces when
    /// `len` is too small for that (spaces alone below two bytes).
    pub(crate) fn json_filler(len: u64) -> Self {
        let frame = (FILLER_HEAD.len() + FILLER_TAIL.len()) as u64;
        if len >= frame {
            return Self::framed(FILLER_HEAD, &FILLER, len - frame, FILLER_TAIL);
        }
        let head: &'static [u8] = if len >= 2 { b"{}" } else { b"" };
        Self::framed(head, &SPACES, len - head.len() as u64, b"")
    }

    /// `head`, then `fill_len` bytes repeating `fill[0]`, then `tail`.
    fn framed(
        head: &'static [u8],
        fill: &'static [u8],
        fill_len: u64,
        tail: &'static [u8],
    ) -> Self {
        Self {
            head: Some(Bytes::from_static(head)),
            middle: Some(Repeat {
                source: fill,
                period: 1,
                phase: 0,
                remaining: fill_len,
            }),
            tail: Some(Bytes::from_static(tail)),
            remaining: (head.len() + tail.len()) as u64 + fill_len,
            announce_length: true,
        }
    }

    /// Sends the body without announcing its length (chunked transfer-encoding on HTTP/1.1).
    pub(crate) fn chunked(mut self) -> Self {
        self.announce_length = false;
        self
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        loop {
            let chunk = if let Some(head) = this.head.take() {
                head
            } else if let Some(chunk) = this.middle.as_mut().and_then(Repeat::next_chunk) {
                chunk
            } else if let Some(tail) = this.tail.take() {
                tail
            } else {
                return Poll::Ready(None);
            };
            if chunk.is_empty() {
                continue;
            }
            this.remaining -= chunk.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        if self.announce_length {
            SizeHint::with_exact(self.remaining)
        } else {
            SizeHint::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    async fn collect(body: ResponseBody) -> (Vec<u8>, usize) {
        let mut body = body;
        let mut bytes = Vec::new();
        let mut frames = 0;
        while let Some(frame) = body.frame().await {
            bytes.extend_from_slice(&frame.unwrap().into_data().unwrap());
            frames += 1;
        }
        (bytes, frames)
    }

    #[tokio::test]
    async fn pattern_is_exact_across_chunk_boundaries() {
        for len in [0u64, 1, 250, 251, 252, 64_005, 64_006, 200_000] {
            let body = ResponseBody::pattern(len);
            assert_eq!(body.size_hint().exact(), Some(len));
            let (bytes, _) = collect(body).await;
            assert_eq!(bytes.len() as u64, len);
            assert!(
                bytes.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8),
                "len {len}"
            );
        }
    }

    #[tokio::test]
    async fn filler_is_exactly_len_bytes_of_json() {
        for len in [0u64, 1, 2, 5, 12, 13, 14, 1024, 70_000] {
            let (bytes, _) = collect(ResponseBody::json_filler(len)).await;
            assert_eq!(bytes.len() as u64, len, "len {len}");
            if len >= 2 {
                let parsed: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                assert!(parsed.is_object());
            }
        }
    }

    #[tokio::test]
    async fn chunked_announces_no_length_but_sends_everything() {
        let body = ResponseBody::full(Bytes::from_static(b"hello")).chunked();
        assert_eq!(body.size_hint().exact(), None);
        let (bytes, frames) = collect(body).await;
        assert_eq!(bytes, b"hello");
        assert_eq!(frames, 1);
    }
}
