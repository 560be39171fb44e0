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

/// A fuzz input as the targets read it: a control byte, up to eight bytes that each place a
/// cut at `step` times their value, then the wire bytes.
fn fuzz_input(data: &[u8], step: usize) -> Option<(u8, Vec<usize>, &[u8])> {
    let (&control, rest) = data.split_first()?;
    let (cuts, wire) = rest.split_at(rest.len().min(8));
    let cuts = cuts.iter().map(|b| usize::from(*b) * step).collect();
    Some((control, cuts, wire))
}

/// The head parser's property on one fuzz input (the control byte's low bit: a HEAD
/// request); panics when split and whole bytes give different answers.
pub fn check_head(data: &[u8]) {
    if let Some((control, cuts, wire)) = fuzz_input(data, 7) {
        let head = control & 1 == 1;
        assert_eq!(parse_head(wire, &cuts, head), parse_head(wire, &[], head));
    }
}

/// The body decoder's property on one fuzz input (the control byte picks the framing, as
/// [`decode_body`] reads it); panics when split and whole bytes give different answers.
pub fn check_body(data: &[u8]) {
    if let Some((control, cuts, wire)) = fuzz_input(data, 3) {
        let framing = u64::from(control % 64);
        assert_eq!(
            decode_body(framing, wire, &cuts),
            decode_body(framing, wire, &[])
        );
    }
}
