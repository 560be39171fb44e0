//! OTLP over gRPC without a gRPC stack: the SDK's OTLP/HTTP protobuf exporter hands this
//! client its request (the encoded `ExportTraceServiceRequest`, posted to the URL config
//! built: the collector's address and `TraceService/Export`), and it makes the one unary
//! call gRPC is for that message — HTTP/2, `application/grpc`, the message length-prefixed —
//! then answers the exporter as an OTLP/HTTP collector would: 200 with the response message
//! (so a partial success is still read) for `grpc-status: 0`, an error naming the status
//! otherwise (so the failure is counted). A gRPC library would cost minutes of compile
//! time in every build profile for this one call.

use std::time::Duration;

use bytes::{BufMut as _, Bytes, BytesMut};
use http::header::{CONTENT_TYPE, HeaderMap, HeaderValue, TE};
use http::{StatusCode, response::Parts};
use http_body_util::Collected;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};

use super::transport::Http;
use crate::upstream::Connector;

/// The length prefix of a gRPC message: a compressed flag (0: not compressed) and the
/// message's length, 4 bytes big-endian.
const PREFIX: usize = 5;

/// The trailer (or, in a trailers-only answer, the header) carrying the call's outcome.
const GRPC_STATUS: &str = "grpc-status";

/// The collector's words on a failed call, beside its status.
const GRPC_MESSAGE: &str = "grpc-message";

/// gRPC's status codes by number, for error messages an operator can read.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Why a gRPC export failed once the collector answered (or before the call was made).
#[derive(Debug, thiserror::Error)]
enum GrpcError {
    #[error("expected an export of at most 4 GiB for one gRPC message; found {0} bytes")]
    TooLarge(usize),
    #[error("expected HTTP status 200 from a gRPC collector; found {0}")]
    Http(StatusCode),
    #[error("expected a grpc-status from the collector; found none")]
    NoStatus,
    #[error(
        "expected grpc-status 0 (OK) from the collector; found {code} ({name}), grpc-message {message:?}"
    )]
    Status {
        code: String,
        name: &'static str,
        message: String,
    },
    #[error(
        "expected one uncompressed length-prefixed message from the collector; found {0} bytes that are not one"
    )]
    Framing(usize),
}

/// The gRPC client: an HTTP/2-only [`Http`] over the proxy's connector.
#[derive(Debug)]
pub(super) struct Grpc(Http);

impl Grpc {
    /// A client whose connections run on the current runtime, every call bounded by
    /// `timeout`.
    pub(super) fn new(connector: Connector, timeout: Duration) -> Result<Self, String> {
        Http::http2(connector, timeout).map(Self)
    }
}

#[async_trait::async_trait]
impl HttpClient for Grpc {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (head, body) = self.0.exchange(call(request)?).await?;
        Ok(answer(head, body)?)
    }
}

/// The exporter's request as a gRPC call: the same URL, gRPC's content type, trailers asked
/// for (`te`, which gRPC requires), the message length-prefixed.
fn call(request: Request<Bytes>) -> Result<Request<Bytes>, GrpcError> {
    let (mut head, message) = request.into_parts();
    let length = u32::try_from(message.len()).map_err(|_| GrpcError::TooLarge(message.len()))?;
    let mut framed = BytesMut::with_capacity(PREFIX + message.len());
    framed.put_u8(0);
    framed.put_u32(length);
    framed.put_slice(&message);
    head.headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    head.headers
        .insert(TE, HeaderValue::from_static("trailers"));
    Ok(Request::from_parts(head, framed.freeze()))
}

/// The collector's gRPC answer as the HTTP exporter reads one: the status from the trailers,
/// or from the head when the collector answered with trailers alone.
fn answer(head: Parts, body: Collected<Bytes>) -> Result<Response<Bytes>, GrpcError> {
    if head.status != StatusCode::OK {
        return Err(GrpcError::Http(head.status));
    }
    let fields = match body.trailers() {
        Some(trailers) if trailers.contains_key(GRPC_STATUS) => trailers,
        _ => &head.headers,
    };
    match fields.get(GRPC_STATUS).map(HeaderValue::as_bytes) {
        Some(b"0") => {}
        Some(code) => return Err(failed(code, fields)),
        None => return Err(GrpcError::NoStatus),
    }
    let message = unframe(body.to_bytes())?;
    Ok(Response::from_parts(head, message))
}

/// The error for a call that ended with status `code`, with the collector's message.
fn failed(code: &[u8], fields: &HeaderMap) -> GrpcError {
    let code = String::from_utf8_lossy(code).into_owned();
    let name = code
        .parse::<usize>()
        .ok()
        .and_then(|number| CODES.get(number).copied())
        .unwrap_or("not a gRPC status code");
    let message = fields
        .get(GRPC_MESSAGE)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .unwrap_or_default();
    GrpcError::Status {
        code,
        name,
        message,
    }
}

/// The response message: none (an empty body, as a collector may send for an empty
/// `ExportTraceServiceResponse`) or exactly one uncompressed length-prefixed message.
fn unframe(body: Bytes) -> Result<Bytes, GrpcError> {
    if body.is_empty() {
        return Ok(body);
    }
    match body.split_first_chunk::<PREFIX>() {
        Some((&[0, a, b, c, d], message))
            if u32::from_be_bytes([a, b, c, d]) as usize == message.len() =>
        {
            Ok(body.slice(PREFIX..))
        }
        _ => Err(GrpcError::Framing(body.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_becomes_one_length_prefixed_grpc_message() {
        let request = Request::builder()
            .header(CONTENT_TYPE, "application/x-protobuf")
            .body(Bytes::from_static(b"spans"))
            .unwrap();
        let call = call(request).unwrap();
        assert_eq!(call.headers()[CONTENT_TYPE], "application/grpc");
        assert_eq!(call.headers()[TE], "trailers");
        assert_eq!(call.body().as_ref(), b"\0\0\0\0\x05spans");
        assert_eq!(unframe(call.into_body()).unwrap().as_ref(), b"spans");
    }

    #[test]
    fn a_compressed_or_mislabelled_answer_is_refused() {
        for body in [&b"\x01\0\0\0\x01x"[..], b"\0\0\0\0\x02x", b"\0\0\0"] {
            let error = unframe(Bytes::copy_from_slice(body)).unwrap_err();
            assert!(
                matches!(error, GrpcError::Framing(n) if n == body.len()),
                "{error}"
            );
        }
        assert!(unframe(Bytes::new()).unwrap().is_empty());
    }

    #[test]
    fn a_failed_call_names_its_status_and_message() {
        let mut fields = HeaderMap::new();
        fields.insert(GRPC_MESSAGE, HeaderValue::from_static("overloaded"));
        assert_eq!(
            failed(b"14", &fields).to_string(),
            "expected grpc-status 0 (OK) from the collector; found 14 (UNAVAILABLE), grpc-message \"overloaded\""
        );
        assert!(
            failed(b"99", &HeaderMap::new())
                .to_string()
                .contains("found 99 (not a gRPC status code)")
        );
    }
}
