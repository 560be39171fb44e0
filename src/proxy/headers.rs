//! Phase 4: rewrite the caller's request head for Poynt. Hop-by-hop headers (and those the
//! `Connection` header names), the merchant header, the caller's `Authorization`, `Host`,
//! `Forwarded` and `X-Forwarded-*` (internal topology is not Poynt's business, and a caller
//! must not speak for the proxy) go; the broker's token, `api-version` and
//! `Poynt-Request-Id` come in.

use http::header::{AUTHORIZATION, CONNECTION, FORWARDED, HOST};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::poynt::{API_VERSION_HEADER, REQUEST_ID_HEADER};

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the
/// non-standard ones proxies conventionally drop.
pub static HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::PROXY_AUTHENTICATE,
    http::header::PROXY_AUTHORIZATION,
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
];

/// Removes hop-by-hop headers, including any named in `Connection`. The usual
/// `Connection: keep-alive` or `close` names nothing beyond the fixed set, so it costs no
/// allocation.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut named: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(CONNECTION) {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',').map(str::trim) {
            let known = token.is_empty()
                || token.eq_ignore_ascii_case("close")
                || HOP_BY_HOP
                    .iter()
                    .any(|name| name.as_str().eq_ignore_ascii_case(token));
            if !known && let Ok(name) = HeaderName::try_from(token) {
                named.push(name);
            }
        }
    }
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// Rewrites a request head in place for Poynt: everything is removed before anything is
/// added, so the map hyper parsed (sized to the caller's headers) rarely has to grow.
pub fn rewrite_request(
    headers: &mut HeaderMap,
    merchant_header: &HeaderName,
    bearer: &HeaderValue,
    api_version: &HeaderValue,
    request_id: &HeaderValue,
) {
    strip_hop_by_hop(headers);
    headers.remove(merchant_header);
    headers.remove(HOST);
    headers.remove(FORWARDED);
    if headers
        .keys()
        .any(|name| name.as_str().starts_with(X_FORWARDED))
    {
        let named: Vec<HeaderName> = headers
            .keys()
            .filter(|name| name.as_str().starts_with(X_FORWARDED))
            .cloned()
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    headers.insert(AUTHORIZATION, bearer.clone());
    if !headers.contains_key(API_VERSION_HEADER) {
        headers.insert(API_VERSION_HEADER, api_version.clone());
    }
    headers.insert(REQUEST_ID_HEADER, request_id.clone());
}

/// Prefix of the de-facto forwarding headers (`X-Forwarded-For`, `-Host`, `-Proto`...).
const X_FORWARDED: &str = "x-forwarded-";
/// Longest caller `Poynt-Request-Id` kept.
const MAX_REQUEST_ID: usize = 128;

/// The request's `Poynt-Request-Id`: the caller's when it is at most 128 characters of
/// `[A-Za-z0-9._:-]` (safe in logs and headers everywhere), else a new UUID. Settled when
/// the request is admitted, so every answer (errors included) carries it.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    let mut ids = headers.get_all(REQUEST_ID_HEADER).iter();
    match (ids.next(), ids.next()) {
        (Some(id), None) if is_acceptable_request_id(id.as_bytes()) => id.clone(),
        _ => {
            let mut buf = uuid::Uuid::encode_buffer();
            let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
            HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
        }
    }
}

fn is_acceptable_request_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_drops_what_must_not_reach_poynt_and_adds_what_must() {
        let merchant = HeaderName::from_static("x-poynt-merchant-id");
        let mut headers = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("authorization", "Bearer caller"),
            ("host", "proxy.internal"),
            ("x-poynt-merchant-id", "m"),
            ("forwarded", "for=10.0.0.1"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-host", "internal"),
            ("x-kept", "yes"),
        ] {
            headers.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let bearer = HeaderValue::from_static("Bearer T");
        let id = request_id(&headers);
        rewrite_request(
            &mut headers,
            &merchant,
            &bearer,
            &HeaderValue::from_static("1.2"),
            &id,
        );
        let names: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
        for gone in [
            "connection",
            "x-secret-hop",
            "keep-alive",
            "te",
            "upgrade",
            "host",
            "x-poynt-merchant-id",
            "forwarded",
            "x-forwarded-for",
            "x-forwarded-host",
        ] {
            assert!(!names.contains(&gone), "{gone} survived: {names:?}");
        }
        assert_eq!(headers["authorization"], "Bearer T");
        assert_eq!(headers["api-version"], "1.2");
        assert_eq!(headers["x-kept"], "yes");
        assert_eq!(headers[REQUEST_ID_HEADER], id);
        assert_eq!(id.len(), 36);
    }

    #[test]
    fn caller_request_id_and_api_version_are_kept() {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID_HEADER, HeaderValue::from_static("mine"));
        headers.insert(API_VERSION_HEADER, HeaderValue::from_static("1.3"));
        let id = request_id(&headers);
        rewrite_request(
            &mut headers,
            &HeaderName::from_static("x-m"),
            &HeaderValue::from_static("Bearer T"),
            &HeaderValue::from_static("1.2"),
            &id,
        );
        assert_eq!(id, "mine");
        assert_eq!(headers[REQUEST_ID_HEADER], "mine");
        assert_eq!(headers[API_VERSION_HEADER], "1.3");
    }

    #[test]
    fn only_short_plain_request_ids_are_kept() {
        let long = "a".repeat(129);
        let max = "a".repeat(128);
        for (given, kept) in [
            ("abc-DEF_1.2:3", true),
            (max.as_str(), true),
            (long.as_str(), false),
            ("", false),
            ("has space", false),
            ("semi;colon", false),
            ("quote\"", false),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(REQUEST_ID_HEADER, HeaderValue::from_str(given).unwrap());
            let id = request_id(&headers);
            assert_eq!(id == given, kept, "{given:?} -> {id:?}");
            assert!(is_acceptable_request_id(id.as_bytes()), "{id:?}");
        }
        let mut twice = HeaderMap::new();
        twice.append(REQUEST_ID_HEADER, HeaderValue::from_static("one"));
        twice.append(REQUEST_ID_HEADER, HeaderValue::from_static("two"));
        assert_eq!(
            request_id(&twice).len(),
            36,
            "two ids are replaced by a new one"
        );
    }
}
