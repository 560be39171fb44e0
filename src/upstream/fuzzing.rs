//! Entry points for the fuzz targets (`fuzz/`) and the property tests (`tests/properties.rs`)
//! into the HTTP/1.1 response parsers, which are otherwise private to this module: a
//! response head parser and a body decoder fed bytes from a hostile Poynt must give the same
//! answer however the bytes were split across reads. Hidden from the documentation and not
//! an API: exposing the parsers themselves would make their types public for the sake of
//! tests; these wrappers take and return only bytes and strings.

use bytes::BytesMut;
use http::Method;

use super::framing::{Chunk, Decoded, Framing};
use super::response;

/// What a parser made of some bytes, in a form two runs can be compared by.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A result (a head's parts, or a body), and the bytes after it.
    Complete(String, Vec<u8>),
    /// The bytes ended before the head or body did.
    Incomplete,
    /// The bytes broke the format.
    Failed,
}

/// The bytes of `wire` split at `cuts` (offsets, taken modulo its length, in any order).
fn pieces<'a>(wire: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|cut| cut % (wire.len() + 1))
        .chain([0, wire.len()])
        .collect();
    at.sort_unstable();
    at.dedup();
    at.windows(2).map(|w| &wire[w[0]..w[1]]).collect()
}

/// The response head parser fed `wire` in the pieces `cuts` makes (`head`: the request was
/// a HEAD), as the connection reads it: parsed again after each piece until complete.
pub fn parse_head(wire: &[u8], cuts: &[usize], head: bool) -> Outcome {
    let method = if head { Method::HEAD } else { Method::GET };
    let mut buf = BytesMut::new();
    let mut pieces = pieces(wire, cuts).into_iter();
    loop {
        match response::parse(&mut buf, &method) {
            Err(_) => return Outcome::Failed,
            Ok(Some(parsed)) => {
                let mut rest = buf.to_vec();
                rest.extend(pieces.flatten());
                let fields: Vec<_> = parsed.headers.iter().collect();
                let summary = format!(
                    "{} {fields:?} {:?} {}",
                    parsed.status, parsed.framing, parsed.keep_alive
                );
                return Outcome::Complete(summary, rest);
            }
            Ok(None) => match pieces.next() {
                Some(piece) => buf.extend_from_slice(piece),
                None => return Outcome::Incomplete,
            },
        }
    }
}

/// The body decoder fed `wire` in the pieces `cuts` makes, framed by `framing`: 0 chunked,
/// 1 until the connection closes, any other value a length of that value minus two.
pub fn decode_body(framing: u64, wire: &[u8], cuts: &[usize]) -> Outcome {
    let mut framing = match framing {
        0 => Framing::Chunked(Chunk::Size),
        1 => Framing::Close,
        length => Framing::Length(length - 2),
    };
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    let mut pieces = pieces(wire, cuts).into_iter();
    loop {
        match framing.decode(&mut buf) {
            Err(_) => return Outcome::Failed,
            Ok(Decoded::Data(data)) => body.extend_from_slice(&data),
            Ok(Decoded::Done) => {
                let mut rest = buf.to_vec();
                rest.extend(pieces.flatten());
                return Outcome::Complete(format!("{body:?}"), rest);
            }
            Ok(Decoded::NeedMore) => match pieces.next() {
                Some(piece) => buf.extend_from_slice(piece),
                None if framing == Framing::Close => {
                    return Outcome::Complete(format!("{body:?}"), Vec::new());
                }
                None => return Outcome::Incomplete,
            },
        }
    }
}
