//! `/businesses/{id}/...`: Poynt's resource API, reduced to what the proxy can observe. A call
//! with a valid token for the path's merchant gets the business record for a plain
//! `GET /businesses/{id}` (`business`), else an echo of what arrived (method, path,
//! query, headers, body length and SHA-256), or a body shaped by query knobs — or, with
//! `_drop_reused=1` on a connection that has served before, no answer at all: the connection
//! is closed as the request arrives, which is what a keep-alive connection that Poynt closed
//! for idleness looks like to a client whose request crossed the close.
//!
//! This is the benchmarks' hot path: one read-locked map lookup for the token, atomics for
//! counting, the request body hashed as it streams, large bodies generated on the fly.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_lc_rs::digest;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;

use super::body::ResponseBody;
use super::business;
use super::error::ApiError;
use super::fault::ApiFault;
use super::reply::{self, RequestId};
use super::state::{Shared, now_secs};
use super::token::{DropConnection, bearer_token};
use poynt_wire::API_VERSION_HEADER;
use poynt_wire::MerchantId;

/// Response header carrying the SHA-256 of the request body, on every successful API call
/// (the `_size` body has no room for it).
pub(crate) const REQUEST_SHA256_HEADER: &str = "x-emulator-request-body-sha256";
/// Path prefix of the resource API.
pub(crate) const BUSINESSES_PREFIX: &str = "/businesses/";

/// Handles one call under `/businesses/`; `reused` tells whether its connection carried an
/// earlier request.
pub(crate) async fn handle(
    shared: &Shared,
    request: Request<Incoming>,
    request_id: &RequestId,
    reused: bool,
) -> Result<Response<ResponseBody>, DropConnection> {
    let merchant = path_merchant(request.uri().path()).ok();
    shared.counters.api_call(merchant);
    if let Some(response) = injected_fault(shared, merchant, request_id).await? {
        return Ok(response);
    }
    let knobs = Knobs::parse(request.uri().query());
    if reused && knobs.as_ref().is_ok_and(|knobs| knobs.drop_reused) {
        return Err(DropConnection);
    }
    Ok(
        match handle_inner(shared, request, knobs, request_id).await {
            Ok(response) => response,
            Err(error) => {
                if matches!(error, ApiError::InvalidAccessToken(_)) {
                    shared.counters.api_unauthorized();
                }
                reply::error(&error, request_id)
            }
        },
    )
}

/// Applies the faults in force (see `fault`): `Ok(Some)` is the injected answer, `Err` a
/// dropped connection, `Ok(None)` serves the call.
async fn injected_fault(
    shared: &Shared,
    merchant: Option<MerchantId>,
    request_id: &RequestId,
) -> Result<Option<Response<ResponseBody>>, DropConnection> {
    let (delay, fault) = shared.api_fault(merchant);
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let Some(fault) = fault else {
        return Ok(None);
    };
    shared.counters.api_faulted();
    match fault {
        ApiFault::Blackhole => {
            shared.blackhole_lifted().await;
            Err(DropConnection)
        }
        ApiFault::Drop => Err(DropConnection),
        ApiFault::Throttle(seconds) => {
            let mut response = reply::error(&ApiError::Throttled(seconds), request_id);
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
            Ok(Some(response))
        }
        ApiFault::Error(status) => Ok(Some(reply::error(
            &ApiError::InjectedFault(status),
            request_id,
        ))),
    }
}

/// The phases: api-version, token, merchant, knobs, body, delay, answer.
async fn handle_inner(
    shared: &Shared,
    request: Request<Incoming>,
    knobs: Result<Knobs, ApiError>,
    request_id: &RequestId,
) -> Result<Response<ResponseBody>, ApiError> {
    let (parts, body) = request.into_parts();
    if !parts.headers.contains_key(API_VERSION_HEADER) {
        return Err(ApiError::MissingApiVersion);
    }
    let token = bearer_token(&parts.headers).ok_or(ApiError::InvalidAccessToken(
        "expected header Authorization: Bearer <access token>; found none",
    ))?;
    let token_merchant = shared
        .check_access(token, now_secs())
        .map_err(ApiError::InvalidAccessToken)?;
    let path = parts.uri.path();
    let merchant = path_merchant(path)?;
    if token_merchant != Some(merchant) {
        return Err(ApiError::AccessDenied(match token_merchant {
            Some(other) => format!(
                "expected a token for merchant {merchant}; found a token for merchant {other}"
            ),
            None => format!(
                "expected a token for merchant {merchant}; found an app-level token (no poynt.biz)"
            ),
        }));
    }
    let query = parts.uri.query();
    let knobs = knobs?;
    if parts.method == Method::GET
        && query.is_none()
        && business::is_record(path, BUSINESSES_PREFIX)
    {
        return business::answer(&shared.business_names, merchant, request_id);
    }

    let (body_len, body_sha256, trailers) = match hash_body(body).await {
        Ok(read) => read,
        Err(error) => {
            shared.counters.api_incomplete_body();
            return Err(error);
        }
    };
    if let Some(delay) = knobs.delay {
        tokio::time::sleep(delay).await;
    }

    let body = if let Some(size) = knobs.size {
        ResponseBody::pattern(size)
    } else if let Some(bytes) = knobs.bytes {
        ResponseBody::json_filler(bytes)
    } else {
        let echo = Echo {
            method: parts.method.as_str(),
            path,
            query: query.unwrap_or(""),
            headers: echo_headers(&parts.headers),
            body_len,
            body_sha256: &body_sha256,
            trailers,
            authorization_sha256: hex(digest::digest(&digest::SHA256, token.as_bytes()).as_ref()),
        };
        let json = serde_json::to_vec(&echo).map_err(|error| {
            ApiError::Internal(format!("expected to serialise the echo: {error}"))
        })?;
        ResponseBody::full(Bytes::from(json))
    };
    let body = if knobs.chunked { body.chunked() } else { body };
    let mut response = reply::json(knobs.status, body, request_id);
    if let Ok(value) = HeaderValue::from_str(&body_sha256) {
        response.headers_mut().insert(REQUEST_SHA256_HEADER, value);
    }
    if knobs.size.is_some() {
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
    }
    Ok(response)
}

/// The merchant a path names: `/businesses/{id}` or `/businesses/{id}/...`.
fn path_merchant(path: &str) -> Result<MerchantId, ApiError> {
    let rest = path.strip_prefix(BUSINESSES_PREFIX).unwrap_or("");
    let id = rest.split('/').next().unwrap_or("");
    MerchantId::parse(id)
        .map_err(|error| ApiError::NotFound(format!("no such resource {path:?}: {error}")))
}

/// What the echo reports.
#[derive(Serialize)]
struct Echo<'a> {
    method: &'a str,
    path: &'a str,
    query: &'a str,
    headers: BTreeMap<&'a str, String>,
    body_len: u64,
    body_sha256: &'a str,
    /// Names of the trailer fields that came after the body, if any.
    trailers: Vec<String>,
    /// SHA-256 of the bearer token, so tests can tell which token a call carried without
    /// the token itself ever being echoed.
    authorization_sha256: String,
}

/// Request headers by (lowercase) name, repeated ones joined with ", ". The bearer token is
/// redacted: echoing it would hand the access token back to whoever called through the proxy,
/// and secret-leak tests look for exactly that.
fn echo_headers(headers: &HeaderMap) -> BTreeMap<&str, String> {
    let mut echoed = BTreeMap::new();
    for name in headers.keys() {
        let value = if name == AUTHORIZATION {
            "Bearer [redacted]".to_owned()
        } else {
            let mut joined = String::new();
            for value in headers.get_all(name) {
                if !joined.is_empty() {
                    joined.push_str(", ");
                }
                joined.push_str(&String::from_utf8_lossy(value.as_bytes()));
            }
            joined
        };
        echoed.insert(name.as_str(), value);
    }
    echoed
}

/// Reads the request body to its end, hashing as it streams; only trailer names are kept.
async fn hash_body(mut body: Incoming) -> Result<(u64, String, Vec<String>), ApiError> {
    let mut context = digest::Context::new(&digest::SHA256);
    let mut len = 0u64;
    let mut trailers = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            ApiError::InvalidRequest(format!(
                "expected a complete request body; reading it failed: {error}"
            ))
        })?;
        match frame.into_data() {
            Ok(data) => {
                len += data.len() as u64;
                context.update(&data);
            }
            Err(frame) => {
                if let Ok(fields) = frame.into_trailers() {
                    trailers.extend(fields.keys().map(|name| name.as_str().to_owned()));
                }
            }
        }
    }
    Ok((len, hex(context.finish().as_ref()), trailers))
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

/// The query knobs the emulator obeys (they are still echoed in `query`).
#[derive(Debug, PartialEq, Eq)]
struct Knobs {
    /// `_status=NNN`: answer with this status.
    status: StatusCode,
    /// `_size=N`: answer N bytes of the pattern `(i % 251) as u8`.
    size: Option<u64>,
    /// `_bytes=N`: answer N bytes of JSON filler.
    bytes: Option<u64>,
    /// `_chunked=1`: use chunked transfer-encoding.
    chunked: bool,
    /// `_delay_ms=N`: wait before answering.
    delay: Option<Duration>,
    /// `_drop_reused=1`: close the connection unanswered if it has served before.
    drop_reused: bool,
}

impl Knobs {
    fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let mut knobs = Knobs {
            status: StatusCode::OK,
            size: None,
            bytes: None,
            chunked: false,
            delay: None,
            drop_reused: false,
        };
        let Some(query) = query else {
            return Ok(knobs);
        };
        if !query.contains('_') {
            return Ok(knobs);
        }
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "_status" => {
                    let code = number(&key, &value)?;
                    knobs.status = u16::try_from(code)
                        .ok()
                        .filter(|code| (200..=599).contains(code))
                        .and_then(|code| StatusCode::from_u16(code).ok())
                        .ok_or_else(|| {
                            ApiError::InvalidRequest(format!(
                                "expected _status between 200 and 599; found {value:?}"
                            ))
                        })?;
                }
                "_size" => knobs.size = Some(number(&key, &value)?),
                "_bytes" => knobs.bytes = Some(number(&key, &value)?),
                "_chunked" => knobs.chunked = matches!(value.as_ref(), "1" | "true"),
                "_delay_ms" => knobs.delay = Some(Duration::from_millis(number(&key, &value)?)),
                "_drop_reused" => knobs.drop_reused = matches!(value.as_ref(), "1" | "true"),
                _ => {}
            }
        }
        Ok(knobs)
    }
}

fn number(key: &str, value: &str) -> Result<u64, ApiError> {
    value.parse().map_err(|_| {
        ApiError::InvalidRequest(format!(
            "expected {key} as a non-negative integer; found {value:?}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knobs_parse_and_refuse_nonsense() {
        let knobs = Knobs::parse(Some(
            "a=1&_status=503&_size=10&_chunked=1&_delay_ms=5&_bytes=7&_drop_reused=1",
        ))
        .unwrap();
        assert!(knobs.drop_reused);
        assert_eq!(knobs.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(knobs.size, Some(10));
        assert_eq!(knobs.bytes, Some(7));
        assert!(knobs.chunked);
        assert_eq!(knobs.delay, Some(Duration::from_millis(5)));
        assert!(Knobs::parse(Some("_status=99")).is_err());
        assert!(Knobs::parse(Some("_size=-1")).is_err());
        assert_eq!(Knobs::parse(None).unwrap().status, StatusCode::OK);
    }

    #[test]
    fn path_names_the_merchant() {
        let id = "c9580c24-b61e-4e0d-ad26-1dd1d3943d2c";
        assert_eq!(
            path_merchant(&format!("/businesses/{id}"))
                .unwrap()
                .to_string(),
            id
        );
        assert_eq!(
            path_merchant(&format!("/businesses/{id}/orders/1"))
                .unwrap()
                .to_string(),
            id
        );
        assert!(path_merchant("/businesses/").is_err());
        assert!(path_merchant("/businesses/abc/orders").is_err());
    }

    #[test]
    fn headers_are_joined_and_the_token_redacted() {
        let mut headers = HeaderMap::new();
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer secret"));
        let echoed = echo_headers(&headers);
        assert_eq!(echoed["x-a"], "1, 2");
        assert!(!echoed["authorization"].contains("secret"));
    }

    #[test]
    fn hex_is_lowercase() {
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
    }
}
