//! Hop-by-hop header fields (RFC 9110 §7.6.1): they describe one connection, not the
//! message, so a proxy forwards none of them in either direction — nor any field that a
//! `Connection` header names. The proxy's request rewrite and this module's response
//! parsing both decide with these, in the same single pass that copies the other fields.

use http::header::{self, CONNECTION};
use http::{HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, not the message, plus the non-standard ones
/// proxies conventionally drop.
pub static HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether `name` is one of [`HOP_BY_HOP`].
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    is_hop_by_hop_bytes(name.as_str().as_bytes())
}

/// Whether the raw (any letter case) field name `name` is one of [`HOP_BY_HOP`]. Decided
/// by length first, so a field that is not one (nearly all) costs one comparison at most.
pub fn is_hop_by_hop_bytes(name: &[u8]) -> bool {
    let is = |hop: &[u8]| name.eq_ignore_ascii_case(hop);
    match name.len() {
        2 => is(b"te"),
        7 => is(b"trailer") || is(b"upgrade"),
        10 => is(b"connection") || is(b"keep-alive"),
        16 => is(b"proxy-connection"),
        17 => is(b"transfer-encoding"),
        18 => is(b"proxy-authenticate"),
        19 => is(b"proxy-authorization"),
        _ => false,
    }
}

/// The field names a message's `Connection` headers list beyond the fixed set. The usual
/// `keep-alive` or `close` names nothing more, so it costs no allocation.
#[derive(Debug, Default)]
pub struct Nominated {
    names: Vec<Box<[u8]>>,
}

impl Nominated {
    /// Reads the names listed in `values` (the `Connection` headers' values).
    pub fn from_values<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut names = Vec::new();
        for value in values {
            for token in value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                let known = token.is_empty()
                    || token.eq_ignore_ascii_case(b"close")
                    || is_hop_by_hop_bytes(token);
                if !known {
                    names.push(token.to_ascii_lowercase().into_boxed_slice());
                }
            }
        }
        Self { names }
    }

    /// The names a request's `Connection` headers list.
    pub fn of(headers: &HeaderMap) -> Self {
        Self::from_values(
            headers
                .get_all(CONNECTION)
                .iter()
                .map(HeaderValue::as_bytes),
        )
    }

    /// Whether the raw (any letter case) field name `name` is listed.
    pub fn contains(&self, name: &[u8]) -> bool {
        !self.names.is_empty()
            && self
                .names
                .iter()
                .any(|listed| listed.eq_ignore_ascii_case(name))
    }
}

/// Removes the hop-by-hop fields from a map someone else parsed (an HTTP/2 response). One
/// pass finds them; a map with none (the rule: HTTP/2 forbids most) is left untouched.
pub(crate) fn strip(headers: &mut HeaderMap) {
    let nominated = Nominated::of(headers);
    let dropped =
        |name: &HeaderName| is_hop_by_hop(name) || nominated.contains(name.as_str().as_bytes());
    if !headers.keys().any(dropped) {
        return;
    }
    let listed: Vec<HeaderName> = headers.keys().filter(|n| dropped(n)).cloned().collect();
    for name in listed {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_length_switch_knows_exactly_the_fixed_set() {
        for hop in &HOP_BY_HOP {
            assert!(is_hop_by_hop(hop), "{hop}");
            assert!(
                is_hop_by_hop_bytes(hop.as_str().to_uppercase().as_bytes()),
                "{hop}"
            );
        }
        for other in [
            "host",
            "content-length",
            "x-te",
            "tea",
            "upgrades",
            "keep-alivex",
        ] {
            assert!(!is_hop_by_hop_bytes(other.as_bytes()), "{other}");
        }
    }

    #[test]
    fn connection_lists_only_what_the_fixed_set_does_not_cover() {
        let nominated = Nominated::from_values([b"keep-alive, X-Secret-Hop ,close".as_slice()]);
        assert!(nominated.contains(b"x-secret-hop"));
        assert!(nominated.contains(b"X-SECRET-HOP"));
        assert!(
            !nominated.contains(b"keep-alive"),
            "covered by the fixed set"
        );
        assert!(
            Nominated::from_values([b"keep-alive".as_slice()])
                .names
                .is_empty()
        );
    }

    #[test]
    fn strip_removes_the_fixed_set_and_what_connection_names() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("trailer", "x-t"),
            ("content-type", "application/json"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        strip(&mut headers);
        let names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["content-type"]);
    }
}
