//! How an HTTP/1.1 response body is delimited (RFC 9112 §6.3) and its decoding from the
//! connection's read buffer: a known length, chunks (extensions ignored, trailers read and
//! dropped), or everything until Poynt closes the connection. Data is split off the buffer
//! without copying.

use bytes::{Buf, Bytes, BytesMut};

/// Longest chunk-size line (size and extensions) accepted.
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Largest trailer section accepted (and dropped).
const MAX_TRAILERS: usize = 16 * 1024;

/// Where a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// There is none, or it has been read.
    Done,
    /// This many bytes are left.
    Length(u64),
    /// Chunked, in this state.
    Chunked(Chunk),
    /// At the end of the connection.
    Close,
}

/// Where the chunked decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data, with this many bytes left.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// In the trailer section, having read this many bytes of it.
    Trailers(usize),
}

/// One decoding step.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The buffer holds no complete step: read more.
    NeedMore,
    /// The body is complete.
    Done,
}

/// A body that broke its framing.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum FramingError {
    /// A chunk-size line that is not hex digits (with optional extensions), or too long.
    #[error("expected a chunk-size line; found {0}")]
    ChunkSize(&'static str),
    /// Chunk data not followed by CRLF.
    #[error("expected CRLF after a chunk's data; found other bytes")]
    ChunkEnd,
    /// A trailer section over the limit.
    #[error("expected trailers of at most {MAX_TRAILERS} bytes; found more")]
    Trailers,
}

impl Framing {
    /// Whether the body is complete.
    pub(crate) fn is_done(&self) -> bool {
        *self == Self::Done
    }

    /// Bytes left, when known.
    pub(crate) fn remaining(&self) -> Option<u64> {
        match self {
            Self::Done => Some(0),
            Self::Length(left) => Some(*left),
            Self::Chunked(_) | Self::Close => None,
        }
    }

    /// Takes the next piece of the body out of `buf`.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, FramingError> {
        loop {
            match *self {
                Self::Done => return Ok(Decoded::Done),
                Self::Length(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let left = left - take as u64;
                    *self = if left == 0 {
                        Self::Done
                    } else {
                        Self::Length(left)
                    };
                    return Ok(Decoded::Data(buf.split_to(take).freeze()));
                }
                Self::Close => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    return Ok(Decoded::Data(buf.split().freeze()));
                }
                Self::Chunked(chunk) => match chunk_step(chunk, buf)? {
                    Step::Next(Some(next)) => *self = Self::Chunked(next),
                    Step::Next(None) => *self = Self::Done,
                    Step::Data(data, next) => {
                        *self = Self::Chunked(next);
                        return Ok(Decoded::Data(data));
                    }
                    Step::NeedMore => return Ok(Decoded::NeedMore),
                },
            }
        }
    }
}

/// One step of the chunked decoder.
enum Step {
    /// Moved on to this state (`None`: the body ended).
    Next(Option<Chunk>),
    /// Data, then this state.
    Data(Bytes, Chunk),
    NeedMore,
}

fn chunk_step(chunk: Chunk, buf: &mut BytesMut) -> Result<Step, FramingError> {
    match chunk {
        // httparse reads a line with no digits at all (a blank line) as size 0, the last
        // chunk, after which the rest of the body would pass for trailers (RFC 9112 §7.1
        // requires at least one hex digit).
        Chunk::Size if buf.first().is_some_and(|b| !b.is_ascii_hexdigit()) => Err(
            FramingError::ChunkSize("a line not starting with a hex digit"),
        ),
        Chunk::Size => match httparse::parse_chunk_size(buf) {
            // Also checked on a complete line, so that the limit does not depend on how the
            // line was split across reads.
            Ok(httparse::Status::Complete((used, _))) if used > MAX_CHUNK_LINE + 1 => {
                Err(FramingError::ChunkSize("a line over 4 KiB"))
            }
            Ok(httparse::Status::Complete((used, size))) => {
                buf.advance(used);
                Ok(Step::Next(Some(if size == 0 {
                    Chunk::Trailers(0)
                } else {
                    Chunk::Data(size)
                })))
            }
            Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_LINE => {
                Err(FramingError::ChunkSize("a line over 4 KiB"))
            }
            Ok(httparse::Status::Partial) => Ok(Step::NeedMore),
            Err(httparse::InvalidChunkSize) => Err(FramingError::ChunkSize("other bytes")),
        },
        Chunk::Data(left) => {
            if buf.is_empty() {
                return Ok(Step::NeedMore);
            }
            let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
            let left = left - take as u64;
            let next = if left == 0 {
                Chunk::DataEnd
            } else {
                Chunk::Data(left)
            };
            Ok(Step::Data(buf.split_to(take).freeze(), next))
        }
        Chunk::DataEnd => match buf.first() {
            None => Ok(Step::NeedMore),
            Some(b'\n') => {
                buf.advance(1);
                Ok(Step::Next(Some(Chunk::Size)))
            }
            Some(b'\r') => match buf.get(1) {
                None => Ok(Step::NeedMore),
                Some(b'\n') => {
                    buf.advance(2);
                    Ok(Step::Next(Some(Chunk::Size)))
                }
                Some(_) => Err(FramingError::ChunkEnd),
            },
            Some(_) => Err(FramingError::ChunkEnd),
        },
        Chunk::Trailers(seen) => {
            let Some(end) = buf.iter().position(|b| *b == b'\n') else {
                return if seen + buf.len() > MAX_TRAILERS {
                    Err(FramingError::Trailers)
                } else {
                    Ok(Step::NeedMore)
                };
            };
            let seen = seen + end + 1;
            if seen > MAX_TRAILERS {
                return Err(FramingError::Trailers);
            }
            let blank = end == 0 || (end == 1 && buf[0] == b'\r');
            buf.advance(end + 1);
            Ok(Step::Next(if blank {
                None
            } else {
                Some(Chunk::Trailers(seen))
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` in pieces of `step` bytes; returns the body and what was left after it.
    fn decode_in_steps(
        mut framing: Framing,
        wire: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, Vec<u8>), FramingError> {
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut pieces = wire.chunks(step.max(1));
        loop {
            match framing.decode(&mut buf)? {
                Decoded::Data(data) => body.extend_from_slice(&data),
                Decoded::Done => return Ok((body, buf.to_vec())),
                Decoded::NeedMore => match pieces.next() {
                    Some(piece) => buf.extend_from_slice(piece),
                    None => return Ok((body, b"<incomplete>".to_vec())),
                },
            }
        }
    }

    const CHUNKED: &[u8] =
        b"5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nx-trailer: secret\r\n\r\nNEXT";

    #[test]
    fn chunked_bodies_decode_whatever_the_read_sizes_and_drop_trailers() {
        for step in [1, 2, 3, 7, 64] {
            let (body, rest) =
                decode_in_steps(Framing::Chunked(Chunk::Size), CHUNKED, step).unwrap();
            assert_eq!(body, b"hello 0123456789", "step {step}");
            // The decoder stops at the end of the message; what follows is not the body's.
            assert!(b"NEXT".starts_with(&rest), "step {step}: {rest:?}");
        }
    }

    #[test]
    fn a_known_length_stops_exactly_there() {
        let (body, rest) = decode_in_steps(Framing::Length(5), b"helloEXTRA", 3).unwrap();
        assert_eq!(body, b"hello");
        assert!(b"EXTRA".starts_with(&rest));
    }

    #[test]
    fn broken_chunking_is_an_error_not_a_hang() {
        for wire in [
            b"zz\r\nhello\r\n".as_slice(),
            b"5\r\nhelloXX0\r\n\r\n",
            b"11111111111111111\r\n",
            // A blank size line is no last chunk: what follows is no trailer section.
            b"5\r\nhello\r\n\r\n5\r\nworld\r\n0\r\n\r\n",
            b"5\r\nhello\r\n;x\r\n0\r\n\r\n",
        ] {
            assert!(
                decode_in_steps(Framing::Chunked(Chunk::Size), wire, 64).is_err(),
                "{wire:?}"
            );
        }
        let endless_extension = [b"5;".as_slice(), &[b'x'; 5000]].concat();
        assert!(decode_in_steps(Framing::Chunked(Chunk::Size), &endless_extension, 100).is_err());
        // Over the limit whether the line arrives whole or byte by byte.
        let long_line = [b"5;".as_slice(), &[b'x'; 5000], b"\r\nhello\r\n0\r\n\r\n"].concat();
        assert!(decode_in_steps(Framing::Chunked(Chunk::Size), &long_line, 1).is_err());
        assert!(decode_in_steps(Framing::Chunked(Chunk::Size), &long_line, 10_000).is_err());
        let endless_trailers = [b"0\r\n".as_slice(), &[b'x'; 20_000]].concat();
        assert!(decode_in_steps(Framing::Chunked(Chunk::Size), &endless_trailers, 100).is_err());
    }
}
