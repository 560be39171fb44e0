//! Phase 4: what of the caller's request head reaches Poynt. Hop-by-hop headers (and those
//! the `Connection` header names), the merchant header, the caller's `Authorization` and
//! `X-Poynt-Proxy-Key` (its credentials are the proxy's business, never Poynt's),
//! `Host`, `Forwarded`, `X-Forwarded-*` (internal topology is not Poynt's business, and a
//! caller must not speak for the proxy) and `Poynt-Request-Id` go; the broker's token,
//! `api-version` (unless the caller chose one) and the settled `Poynt-Request-Id` come in.
//!
//! The decision is made field by field while the upstream client writes the head
//! ([`Rewritten`] is its [`Fields`]): the caller's map, parsed once by hyper, is read once
//! more and never rebuilt — no removal, insertion or rehash per request.

use std::cell::RefCell;

use bytes::BytesMut;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::callers::api_key::API_KEY_HEADER;
use crate::upstream::Fields;
use crate::upstream::hop::{Nominated, is_hop_by_hop_bytes};
use poynt_wire::{API_VERSION_HEADER, REQUEST_ID_HEADER};

const API_VERSION: HeaderName = HeaderName::from_static(API_VERSION_HEADER);
/// `Poynt-Request-Id`, as a name that costs no allocation to use.
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID_HEADER);

/// The caller's fields as Poynt receives them, for one attempt with one token.
pub struct Rewritten<'a> {
    caller: &'a HeaderMap,
    merchant_header: &'a HeaderName,
    nominated: Nominated,
    bearer: &'a HeaderValue,
    api_version: &'a HeaderValue,
    request_id: &'a HeaderValue,
    /// The proxy's own `traceparent` (and `tracestate`), in place of the caller's, when
    /// `telemetry.traces.propagate` sends the request's trace on to Poynt.
    trace: Option<&'a HeaderMap>,
}

impl<'a> Rewritten<'a> {
    /// The rewrite of `caller` with `bearer` (the broker's `Authorization` value),
    /// `api_version` (used when the caller sent none) and the request's settled id.
    pub fn new(
        caller: &'a HeaderMap,
        merchant_header: &'a HeaderName,
        bearer: &'a HeaderValue,
        api_version: &'a HeaderValue,
        request_id: &'a HeaderValue,
    ) -> Self {
        Self {
            caller,
            merchant_header,
            nominated: Nominated::of(caller),
            bearer,
            api_version,
            request_id,
            trace: None,
        }
    }

    /// Sends `trace` (the request span's W3C fields) instead of whatever trace fields the
    /// caller sent, so Poynt's side of the exchange joins the proxy's trace.
    pub fn with_trace(mut self, trace: &'a HeaderMap) -> Self {
        self.trace = Some(trace);
        self
    }

    /// Whether a caller's field goes to Poynt. Names are lower case here, and the fixed
    /// ones are matched on length first, so a kept field costs a few comparisons.
    fn forwards(&self, name: &HeaderName) -> bool {
        let text = name.as_str();
        !(is_hop_by_hop_bytes(text.as_bytes())
            || matches!(
                text,
                "host" | "authorization" | "forwarded" | REQUEST_ID_HEADER | API_KEY_HEADER
            )
            || name == self.merchant_header
            || text.starts_with(X_FORWARDED)
            || self.nominated.contains(text.as_bytes())
            || (self.trace.is_some() && matches!(text, "traceparent" | "tracestate")))
    }
}

impl Fields for Rewritten<'_> {
    fn each(&self, emit: &mut dyn FnMut(&HeaderName, &HeaderValue)) {
        let mut api_version = false;
        for (name, value) in self.caller {
            if self.forwards(name) {
                api_version |= name == API_VERSION;
                emit(name, value);
            }
        }
        emit(&AUTHORIZATION, self.bearer);
        if !api_version {
            emit(&API_VERSION, self.api_version);
        }
        emit(&REQUEST_ID, self.request_id);
        for (name, value) in self.trace.into_iter().flatten() {
            emit(name, value);
        }
    }
}

/// Prefix of the de-facto forwarding headers (`X-Forwarded-For`, `-Host`, `-Proto`...).
const X_FORWARDED: &str = "x-forwarded-";
/// Longest caller `Poynt-Request-Id` kept.
const MAX_REQUEST_ID: usize = 128;

/// The request's `Poynt-Request-Id`: the caller's when it is at most 128 characters of
/// `[A-Za-z0-9._:-]` (safe in logs and headers everywhere), else a new UUID. Settled when
/// the request is admitted, so every answer (errors included) carries it.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    let mut ids = headers.get_all(&REQUEST_ID).iter();
    match (ids.next(), ids.next()) {
        (Some(id), None) if is_acceptable_request_id(id.as_bytes()) => id.clone(),
        _ => new_request_id(),
    }
}

/// Generated ids are cut from one block per thread instead of each copied into an
/// allocation of its own: a block of this many ids costs two allocations.
const IDS_PER_BLOCK: usize = 64;

thread_local! {
    static ID_BLOCK: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// A new UUID, as a header value sharing its thread's current block.
fn new_request_id() -> HeaderValue {
    let mut text = uuid::Uuid::encode_buffer();
    let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
    let bytes = ID_BLOCK.with_borrow_mut(|block| {
        if block.capacity() - block.len() < id.len() {
            *block = BytesMut::with_capacity(id.len() * IDS_PER_BLOCK);
        }
        block.extend_from_slice(id.as_bytes());
        block.split().freeze()
    });
    HeaderValue::from_maybe_shared(bytes).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
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

    /// The fields a rewrite sends, in order.
    fn sent(rewritten: &Rewritten<'_>) -> Vec<(String, String)> {
        let mut out = Vec::new();
        rewritten.each(&mut |name, value| {
            out.push((name.as_str().to_owned(), value.to_str().unwrap().to_owned()));
        });
        out
    }

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
        let api_version = HeaderValue::from_static("1.2");
        let sent = sent(&Rewritten::new(
            &headers,
            &merchant,
            &bearer,
            &api_version,
            &id,
        ));
        let names: Vec<&str> = sent.iter().map(|(name, _)| name.as_str()).collect();
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
        let value = |name: &str| -> Vec<&str> {
            sent.iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect()
        };
        assert_eq!(value("authorization"), ["Bearer T"]);
        assert_eq!(value("api-version"), ["1.2"]);
        assert_eq!(value("x-kept"), ["yes"]);
        assert_eq!(value(REQUEST_ID_HEADER), [id.to_str().unwrap()]);
        assert_eq!(id.len(), 36);
    }

    #[test]
    fn caller_request_id_and_api_version_are_kept() {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID_HEADER, HeaderValue::from_static("mine"));
        headers.insert(API_VERSION_HEADER, HeaderValue::from_static("1.3"));
        let id = request_id(&headers);
        let sent = sent(&Rewritten::new(
            &headers,
            &HeaderName::from_static("x-m"),
            &HeaderValue::from_static("Bearer T"),
            &HeaderValue::from_static("1.2"),
            &id,
        ));
        assert_eq!(id, "mine");
        let pairs = |name: &str| sent.iter().filter(|(n, _)| n == name).count();
        assert_eq!(pairs(REQUEST_ID_HEADER), 1, "{sent:?}");
        assert_eq!(pairs(API_VERSION_HEADER), 1, "{sent:?}");
        assert!(sent.contains(&(API_VERSION_HEADER.into(), "1.3".into())));
        assert!(sent.contains(&(REQUEST_ID_HEADER.into(), "mine".into())));
    }

    #[test]
    fn generated_ids_stay_distinct_and_valid_across_blocks() {
        let ids: Vec<HeaderValue> = (0..3 * IDS_PER_BLOCK + 5)
            .map(|_| request_id(&HeaderMap::new()))
            .collect();
        let distinct: std::collections::HashSet<&[u8]> =
            ids.iter().map(HeaderValue::as_bytes).collect();
        assert_eq!(distinct.len(), ids.len());
        for id in &ids {
            let text = id.to_str().unwrap();
            assert!(uuid::Uuid::parse_str(text).is_ok(), "{text}");
            assert_eq!(text, text.to_lowercase());
        }
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
