//! OTLP over gRPC without a gRPC stack: the SDK's OTLP/HTTP protobuf exporter hands this
//! client its request (the encoded `ExportTraceServiceRequest`, posted to the URL config
//! built: the collector's address and `TraceService/Export`), and it makes the one unary
//! call gRPC is for that message — HTTP/2, `application/grpc`, the message length-prefixed,
//! the export's deadline in `grpc-timeout` — then answers the exporter as an OTLP/HTTP
//! collector would: 200 with the response message (so a partial success is still read) for
//! `grpc-status: 0`; otherwise an HTTP status the exporter's retry rules read as OTLP's
//! rules for that gRPC status (`UNAVAILABLE` and the other transient ones retried until the
//! export's deadline, `INVALID_ARGUMENT` or `UNAUTHENTICATED` not sent again), the gRPC
//! status and message logged at debug here since the exporter keeps only the HTTP one.
//! A gRPC library would cost minutes of compile time in every build profile for this one
//! call.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::{BufMut as _, Bytes, BytesMut};
use http::header::{CONTENT_TYPE, HeaderMap, HeaderValue, TE};
use http::{StatusCode, response::Parts};
use http_body_util::Collected;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use percent_encoding::percent_decode;

use super::transport::Http;
use crate::upstream::Connector;

/// The length prefix of a gRPC message: a compressed flag (0: not compressed) and the
/// message's length, 4 bytes big-endian.
const PREFIX: usize = 5;

/// The trailer (or, in a trailers-only answer, the header) carrying the call's outcome.
const GRPC_STATUS: &str = "grpc-status";

/// The collector's words on a failed call, beside its status.
const GRPC_MESSAGE: &str = "grpc-message";

/// The call's deadline, for the collector to stop working on a call its client gave up.
const GRPC_TIMEOUT: &str = "grpc-timeout";

/// The trailer carrying a failed call's `google.rpc.Status`, its details included (binary,
/// base64).
const GRPC_DETAILS: &str = "grpc-status-details-bin";

/// The type of the detail by which a server says a call may be retried (and when): what
/// makes `RESOURCE_EXHAUSTED` retryable under OTLP's rules. Its type URL appears verbatim in
/// the encoded status, so its presence is read without a protobuf decoder.
const RETRY_INFO: &[u8] = b"type.googleapis.com/google.rpc.RetryInfo";

/// The gRPC statuses OTLP retries: `CANCELLED`, `DEADLINE_EXCEEDED`, `ABORTED`,
/// `OUT_OF_RANGE`, `UNAVAILABLE`, `DATA_LOSS` (`RESOURCE_EXHAUSTED` only with a
/// `RetryInfo`).
const RETRYABLE: [u8; 6] = [1, 4, 10, 11, 14, 15];

/// `RESOURCE_EXHAUSTED`.
const RESOURCE_EXHAUSTED: u8 = 8;

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
    #[error("expected a grpc-status from the collector; found none")]
    NoStatus,
    #[error(
        "expected grpc-status 0 (OK) from the collector; found {code} ({name}), grpc-message {message:?}"
    )]
    Status {
        code: String,
        name: &'static str,
        message: String,
        /// Whether OTLP's rules send the batch again.
        retryable: bool,
    },
    #[error(
        "expected one uncompressed length-prefixed message from the collector; found {0} bytes that are not one"
    )]
    Framing(usize),
}

impl GrpcError {
    /// The HTTP status the exporter is answered with, which its retry rules read: 503 for a
    /// status OTLP retries; otherwise one it does not retry — 413 for a batch too large to
    /// send, 400 for a status that refuses the batch, 500 for an answer that is not gRPC's
    /// (a collector that took the batch and framed its answer wrongly is not sent it again).
    fn http_status(&self) -> StatusCode {
        match self {
            Self::Status {
                retryable: true, ..
            } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Status { .. } => StatusCode::BAD_REQUEST,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NoStatus | Self::Framing(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The gRPC client: an HTTP/2-only [`Http`] over the proxy's connector, and the deadline it
/// tells the collector.
#[derive(Debug)]
pub(super) struct Grpc {
    http: Http,
    timeout: Duration,
}

impl Grpc {
    /// A client whose connections run on the current runtime, every call bounded by
    /// `timeout`.
    pub(super) fn new(connector: Connector, timeout: Duration) -> Result<Self, String> {
        let http = Http::http2(connector, timeout)?;
        Ok(Self { http, timeout })
    }
}

#[async_trait::async_trait]
impl HttpClient for Grpc {
    /// A call the collector could not be reached for is an error (the exporter retries it,
    /// as gRPC's `UNAVAILABLE`); a call it answered is a response (module documentation).
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let call = match call(request, self.timeout) {
            Ok(call) => call,
            Err(error) => return Ok(refused(&error)),
        };
        let (head, body) = self.http.exchange(call).await?;
        Ok(answer(head, body).unwrap_or_else(|error| refused(&error)))
    }
}

/// The exporter's answer for a failed call, its detail logged here: the exporter's own
/// error names only the HTTP status.
fn refused(error: &GrpcError) -> Response<Bytes> {
    tracing::debug!(%error, "the trace collector did not take a batch of spans");
    let mut response = Response::new(Bytes::new());
    *response.status_mut() = error.http_status();
    response
}

/// The exporter's request as a gRPC call: the same URL, gRPC's content type, trailers asked
/// for (`te`, which gRPC requires), the deadline in milliseconds, the message
/// length-prefixed.
fn call(request: Request<Bytes>, timeout: Duration) -> Result<Request<Bytes>, GrpcError> {
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
    head.headers.insert(GRPC_TIMEOUT, grpc_timeout(timeout));
    Ok(Request::from_parts(head, framed.freeze()))
}

/// `timeout` as gRPC writes one: at most 8 digits and a unit, here milliseconds (`m`), or
/// seconds (`S`) for a timeout too long for 8 digits of them.
fn grpc_timeout(timeout: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let millis = timeout.as_millis();
    let text = if millis <= MAX {
        format!("{millis}m")
    } else {
        format!("{}S", u128::from(timeout.as_secs()).min(MAX))
    };
    HeaderValue::try_from(text).unwrap_or_else(|_| unreachable!("digits and a letter"))
}

/// The collector's gRPC answer as the HTTP exporter reads one: the status from the trailers,
/// or from the head when the collector answered with trailers alone. An HTTP status other
/// than 200 (a proxy's 503, a 404 for a wrong path) goes to the exporter as it came, with
/// its `retry-after`: its retry rules for HTTP are gRPC's mapping of those statuses.
fn answer(head: Parts, body: Collected<Bytes>) -> Result<Response<Bytes>, GrpcError> {
    if head.status != StatusCode::OK {
        return Ok(Response::from_parts(head, Bytes::new()));
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

/// The error for a call that ended with status `code`, with the collector's message and
/// whether OTLP retries it.
fn failed(code: &[u8], fields: &HeaderMap) -> GrpcError {
    let number = std::str::from_utf8(code)
        .ok()
        .and_then(|code| code.parse::<u8>().ok());
    let name = number
        .and_then(|number| CODES.get(usize::from(number)).copied())
        .unwrap_or("not a gRPC status code");
    let retryable = number.is_some_and(|number| {
        RETRYABLE.contains(&number) || number == RESOURCE_EXHAUSTED && retry_info(fields)
    });
    let message = fields
        .get(GRPC_MESSAGE)
        // gRPC percent-encodes it (`%20` for a space); a `%` not followed by two hex
        // digits stands for itself.
        .map(|value| {
            percent_decode(value.as_bytes())
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    GrpcError::Status {
        code: String::from_utf8_lossy(code).into_owned(),
        name,
        message,
        retryable,
    }
}

/// Whether the status details name a `RetryInfo`: the server's word that the call may be
/// made again. gRPC sends binary values in base64, padded or not.
fn retry_info(fields: &HeaderMap) -> bool {
    const BASE64: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    fields
        .get(GRPC_DETAILS)
        .and_then(|value| BASE64.decode(value.as_bytes()).ok())
        .is_some_and(|details| {
            details
                .windows(RETRY_INFO.len())
                .any(|window| window == RETRY_INFO)
        })
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
        let call = call(request, Duration::from_secs(5)).unwrap();
        assert_eq!(call.headers()[CONTENT_TYPE], "application/grpc");
        assert_eq!(call.headers()[TE], "trailers");
        assert_eq!(call.headers()[GRPC_TIMEOUT], "5000m");
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
    fn a_deadline_too_long_for_eight_digits_of_milliseconds_is_written_in_seconds() {
        assert_eq!(grpc_timeout(Duration::from_millis(99_999_999)), "99999999m");
        assert_eq!(grpc_timeout(Duration::from_secs(100_000)), "100000S");
        assert_eq!(grpc_timeout(Duration::MAX), "99999999S");
    }

    #[test]
    fn a_failed_call_names_its_status_and_its_decoded_message() {
        let mut fields = HeaderMap::new();
        fields.insert(
            GRPC_MESSAGE,
            HeaderValue::from_static("collector%20overloaded%2C 100%%"),
        );
        assert_eq!(
            failed(b"14", &fields).to_string(),
            "expected grpc-status 0 (OK) from the collector; found 14 (UNAVAILABLE), grpc-message \"collector overloaded, 100%%\""
        );
        assert!(
            failed(b"99", &HeaderMap::new())
                .to_string()
                .contains("found 99 (not a gRPC status code)")
        );
    }
    /// The HTTP status the exporter sees for `code`, with `fields` beside it.
    fn seen(code: &[u8], fields: &HeaderMap) -> StatusCode {
        failed(code, fields).http_status()
    }

    #[test]
    fn the_statuses_otlp_retries_are_answered_as_retryable_and_the_rest_as_not() {
        let none = HeaderMap::new();
        for code in ["1", "4", "10", "11", "14", "15"] {
            assert_eq!(
                seen(code.as_bytes(), &none),
                StatusCode::SERVICE_UNAVAILABLE,
                "{code}"
            );
        }
        for code in [
            "2", "3", "5", "6", "7", "8", "9", "12", "13", "16", "99", "x",
        ] {
            assert_eq!(
                seen(code.as_bytes(), &none),
                StatusCode::BAD_REQUEST,
                "{code}"
            );
        }
        assert_eq!(
            GrpcError::NoStatus.http_status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            GrpcError::TooLarge(1 << 33).http_status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }

    #[test]
    fn resource_exhausted_is_retried_only_when_the_collector_attaches_a_retry_info() {
        // A google.rpc.Status (code 8) with one detail, an Any of type RetryInfo.
        let mut status = vec![0x08, 0x08, 0x1a, 2 + RETRY_INFO.len() as u8, 0x0a];
        status.push(RETRY_INFO.len() as u8);
        status.extend_from_slice(RETRY_INFO);
        let engine = base64::engine::general_purpose::STANDARD_NO_PAD;
        let mut fields = HeaderMap::new();
        fields.insert(
            GRPC_DETAILS,
            HeaderValue::try_from(engine.encode(&status)).unwrap(),
        );
        assert_eq!(seen(b"8", &fields), StatusCode::SERVICE_UNAVAILABLE);
        let mut other = HeaderMap::new();
        other.insert(
            GRPC_DETAILS,
            HeaderValue::try_from(engine.encode(b"\x08\x08")).unwrap(),
        );
        assert_eq!(seen(b"8", &other), StatusCode::BAD_REQUEST);
        assert_eq!(seen(b"8", &HeaderMap::new()), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn an_http_status_from_the_collector_reaches_the_exporter_with_its_retry_after() {
        let response = Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .header("retry-after", "3")
            .body(())
            .unwrap();
        let (head, ()) = response.into_parts();
        let answered = answer(head, Collected::default()).unwrap();
        assert_eq!(answered.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answered.headers()["retry-after"], "3");
    }
}
