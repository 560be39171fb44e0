//! Phase 2, the path guard: a caller may spend a merchant's token only on that merchant's
//! data, however the path is spelled.
//!
//! The guard works on what an upstream could make of the path, not on its spelling. Its
//! rules, applied to the path of an origin-form request target (the query is not part of
//! it, and is forwarded untouched):
//!
//! 1. The path starts with `/`. Asterisk-form (`*`) and authority-form targets are refused.
//! 2. Percent-encodings are decoded once, per RFC 3986 §6.2.2: an encoded *unreserved*
//!    character (`A-Z a-z 0-9 - . _ ~`) becomes the character; any other encoding stays
//!    encoded, with its hex digits in upper case. A `%` not followed by two hex digits is
//!    refused.
//! 3. Refused outright (400 `INVALID_PATH`), because some server between the proxy and the
//!    data may read them as structure: an encoded `/` (`%2F`) or `\` (`%5C`); a raw `\`; an
//!    encoded `%` (`%25`, a second layer of encoding); a `;` raw or encoded (`%3B`, path
//!    parameters such as `..;` or `;v=1`); a dot segment (`.` or `..`, in any spelling,
//!    e.g. `%2e%2E`); an empty segment anywhere but at the end (`//`, which servers collapse).
//! 4. What is left is compared, with `businesses` in any letter case: a path whose first
//!    segment is `businesses` must have the header's merchant as its second segment (a
//!    business ID in any letter case), else 403 `MERCHANT_PATH_MISMATCH` — `/businesses`
//!    alone names no merchant and is refused too. Other paths name no merchant and pass.
//! 5. The normalised path (step 2) is what is forwarded, so Poynt receives exactly the
//!    spelling that was checked.
//!
//! A property test (`tests/properties.rs`) and a fuzz target
//! (`fuzz/fuzz_targets/path_guard.rs`) check the promise against an upstream that decodes
//! everything, resolves dot segments, collapses slashes and treats `\` and `;` as
//! separators: whatever the guard lets through names the header's merchant or no merchant.

use std::borrow::Cow;

use http::HeaderName;

use crate::proxy::error::ProxyError;
use poynt_wire::MerchantId;

/// Longest part of a refused path quoted back in an error message.
const QUOTED: usize = 200;

/// Checks `path` for `merchant` and returns the normalised path to forward: `path` itself
/// (borrowed, no copy) when nothing in it needed decoding, as is the case for nearly every
/// request.
pub fn guard_path<'a>(
    path: &'a str,
    merchant: MerchantId,
    header: &HeaderName,
) -> Result<Cow<'a, str>, ProxyError> {
    let normalised = normalise(path)?;
    let (first, rest) = next_segment(&normalised[1..]);
    if !first.eq_ignore_ascii_case("businesses") {
        return Ok(normalised);
    }
    let (named, _) = next_segment(rest);
    match MerchantId::parse(named) {
        Ok(id) if id == merchant => Ok(normalised),
        _ => Err(ProxyError::MerchantPathMismatch {
            header: header.to_string(),
            merchant: merchant.to_string(),
            path_merchant: format!("{:?}", named.chars().take(64).collect::<String>()),
        }),
    }
}

/// Rules 1–3: the normalised path, or why it is refused. A path with no `%`, `\` or `;`
/// (the usual case) is already normal once its segments pass rule 3, and is returned as it
/// is.
pub fn normalise(path: &str) -> Result<Cow<'_, str>, ProxyError> {
    let refuse = |why: &str| {
        ProxyError::InvalidPath(format!(
            "{why}; found {:?}",
            path.chars().take(QUOTED).collect::<String>()
        ))
    };
    if !path.starts_with('/') {
        return Err(refuse("expected an origin-form path starting with \"/\""));
    }
    if let Some(checked) = scan(path, true) {
        checked.map_err(refuse)?;
        return Ok(Cow::Borrowed(path));
    }
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        match byte {
            b'%' => {
                let decoded = bytes
                    .get(index + 1..index + 3)
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                    .ok_or_else(|| refuse("expected \"%\" to start a two-hex-digit escape"))?;
                match decoded {
                    b'/' | b'\\' => {
                        return Err(refuse("expected no encoded \"/\" or \"\\\" in the path"));
                    }
                    b'%' => return Err(refuse("expected no doubly-encoded \"%25\" in the path")),
                    b';' => return Err(refuse("expected no \";\" path parameters")),
                    c if is_unreserved(c) => out.push(char::from(c)),
                    c => {
                        out.push('%');
                        out.push(char::from(HEX_UPPER[usize::from(c >> 4)]));
                        out.push(char::from(HEX_UPPER[usize::from(c & 0x0f)]));
                    }
                }
                index += 3;
            }
            b'\\' => return Err(refuse("expected no \"\\\" in the path")),
            b';' => return Err(refuse("expected no \";\" path parameters")),
            _ => {
                // The request target was parsed by `http::Uri`, so this is ASCII; a
                // multi-byte character is copied whole.
                let width = utf8_width(byte);
                out.push_str(&path[index..index + width]);
                index += width;
                continue;
            }
        }
    }
    scan(&out, false).unwrap_or(Ok(())).map_err(refuse)?;
    Ok(Cow::Owned(out))
}

/// Rule 3's segment checks on a path that starts with `/`: no dot segment, and no empty
/// segment but the last. With `plain`, a byte that needs decoding (`%`, `\`, `;`) anywhere
/// after the first `/` ends the check with `None`, so a plain path (nearly all) is read
/// once. Both searches are `memchr`'s, a word or a vector at a time: a byte loop cost ~12
/// instructions a byte of every request's path (docs/BENCHMARKS.md, "Profiles").
fn scan(path: &str, plain: bool) -> Option<Result<(), &'static str>> {
    let bytes = path.as_bytes();
    if plain && memchr::memchr3(b'%', b'\\', b';', &bytes[1..]).is_some() {
        return None;
    }
    let mut start = 1;
    for at in memchr::memchr_iter(b'/', &bytes[1..]) {
        let end = at + 1;
        if let Some(problem) = segment_problem(&bytes[start..end], false) {
            return Some(Err(problem));
        }
        start = end + 1;
    }
    Some(segment_problem(&bytes[start..], true).map_or(Ok(()), Err))
}

fn segment_problem(segment: &[u8], last: bool) -> Option<&'static str> {
    match segment {
        b"." | b".." => Some("expected no \".\" or \"..\" segments"),
        b"" if !last => Some("expected no empty segments (\"//\")"),
        _ => None,
    }
}

/// The segment at the start of `rest` and what follows its `/` (empty if it is the last).
/// A byte loop: segments are short, and a `str` pattern search costs more to set up.
fn next_segment(rest: &str) -> (&str, &str) {
    match rest.bytes().position(|b| b == b'/') {
        Some(end) => (&rest[..end], &rest[end + 1..]),
        None => (rest, ""),
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn utf8_width(first: u8) -> usize {
    match first {
        0xF0..=0xF7 => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const M: &str = "c9580c24-b61e-4e0d-ad26-1dd1d3943d2c";
    const OTHER: &str = "00000000-0000-4000-8000-000000000000";

    fn header() -> HeaderName {
        HeaderName::from_static("x-poynt-merchant-id")
    }

    fn guard(path: &str) -> Result<String, &'static str> {
        guard_path(path, MerchantId::parse(M).unwrap(), &header())
            .map(Cow::into_owned)
            .map_err(|e| e.code())
    }

    #[test]
    fn a_table_of_spellings() {
        let m = M;
        let upper = M.to_uppercase();
        let o = OTHER;
        let ok = |path: String, forwarded: String| (path, Ok(forwarded));
        let bad = |path: String, code: &'static str| (path, Err(code));
        let table: Vec<(String, Result<String, &'static str>)> = vec![
            ok(
                format!("/businesses/{m}/orders"),
                format!("/businesses/{m}/orders"),
            ),
            ok(
                format!("/BUSINESSES/{upper}"),
                format!("/BUSINESSES/{upper}"),
            ),
            ok(format!("/businesses/{m}/"), format!("/businesses/{m}/")),
            ok(
                format!("/%62usinesses/{m}/orders"),
                format!("/businesses/{m}/orders"),
            ),
            ok(
                format!("/businesses/%63{}", &m[1..]),
                format!("/businesses/{m}"),
            ),
            ok(
                format!("/businesses/{m}/a%20b"),
                format!("/businesses/{m}/a%20b"),
            ),
            ok(
                format!("/businesses/{m}/a%c3%a9"),
                format!("/businesses/{m}/a%C3%A9"),
            ),
            ok("/catalogs/x".into(), "/catalogs/x".into()),
            ok("/".into(), "/".into()),
            ok("/businessesX/y".into(), "/businessesX/y".into()),
            ok(
                format!("/businesses/{m}/orders/..x"),
                format!("/businesses/{m}/orders/..x"),
            ),
            bad(format!("/businesses/{o}/orders"), "MERCHANT_PATH_MISMATCH"),
            bad(
                format!("/%62usinesses/{o}/orders"),
                "MERCHANT_PATH_MISMATCH",
            ),
            bad(
                format!("/businesse%73/{o}/orders"),
                "MERCHANT_PATH_MISMATCH",
            ),
            bad(format!("/%42%55SINESSES/{o}"), "MERCHANT_PATH_MISMATCH"),
            bad(
                format!("/businesses/%30{}", &o[1..]),
                "MERCHANT_PATH_MISMATCH",
            ),
            bad("/businesses".into(), "MERCHANT_PATH_MISMATCH"),
            bad("/businesses/".into(), "MERCHANT_PATH_MISMATCH"),
            bad(format!("/businesses/{m}x/orders"), "MERCHANT_PATH_MISMATCH"),
            bad(format!("/businesses/%20{m}"), "MERCHANT_PATH_MISMATCH"),
            bad(format!("/businesses;v=1/{o}/orders"), "INVALID_PATH"),
            bad(format!("/businesses/{m}/..;/{o}/orders"), "INVALID_PATH"),
            bad(format!("/businesses/{m}/..%2F{o}/orders"), "INVALID_PATH"),
            bad(format!("/businesses/{m}/..%2f{o}/orders"), "INVALID_PATH"),
            bad(format!("/businesses/{m}/%252e%252e/{o}"), "INVALID_PATH"),
            bad(format!("/businesses/{m}/%5C..%5C{o}"), "INVALID_PATH"),
            bad(format!("/businesses/{m}/\\..\\{o}"), "INVALID_PATH"),
            bad(format!("/businesses/{m}/../{o}"), "INVALID_PATH"),
            bad(format!("/businesses/{m}/%2e%2e/{o}"), "INVALID_PATH"),
            bad(format!("/businesses/{m}/%2E./{o}"), "INVALID_PATH"),
            bad(format!("/businesses/{m}/./orders"), "INVALID_PATH"),
            bad(format!("/businesses/{m}/%2e/orders"), "INVALID_PATH"),
            bad(format!("//businesses/{o}/orders"), "INVALID_PATH"),
            bad(format!("/x//businesses/{o}"), "INVALID_PATH"),
            bad(format!("/businesses/{m}%3B/orders"), "INVALID_PATH"),
            bad(format!("/businesses/{m};jsessionid=1"), "INVALID_PATH"),
            bad("/businesses/%zz".into(), "INVALID_PATH"),
            bad("/businesses/%4".into(), "INVALID_PATH"),
            bad("*".into(), "INVALID_PATH"),
            bad("businesses/x".into(), "INVALID_PATH"),
        ];
        assert!(table.len() >= 30);
        for (path, expected) in table {
            assert_eq!(guard(&path), expected, "{path}");
        }
    }

    /// The byte loop `scan` was until it searched with `memchr`: the verdicts to keep.
    fn byte_loop_scan(path: &str, plain: bool) -> Option<Result<(), &'static str>> {
        let bytes = path.as_bytes();
        let mut problem = None;
        let mut start = 1;
        for (at, byte) in bytes.iter().enumerate().skip(1) {
            match byte {
                b'%' | b'\\' | b';' if plain => return None,
                b'/' => {
                    if problem.is_none() {
                        problem = segment_problem(&bytes[start..at], false);
                    }
                    start = at + 1;
                }
                _ => {}
            }
        }
        if problem.is_none() {
            problem = segment_problem(&bytes[start..], true);
        }
        Some(problem.map_or(Ok(()), Err))
    }

    proptest! {
        #[test]
        fn scan_gives_the_byte_loops_verdicts(
            rest in proptest::collection::vec(
                prop_oneof![
                    Just('/'), Just('.'), Just('%'), Just('\\'), Just(';'), Just('a'),
                    any::<char>(),
                ],
                0..40,
            ),
            plain in any::<bool>(),
        ) {
            let path: String = std::iter::once('/').chain(rest).collect();
            prop_assert_eq!(scan(&path, plain), byte_loop_scan(&path, plain), "{:?}", path);
        }
    }
}
