//! OTLP receivers on loopback: take what a traced proxy exports, over HTTP (`POST
//! /v1/traces`, protobuf) or gRPC (`TraceService/Export` over HTTP/2: each message framed
//! as 1 flag byte, a 4-byte big-endian length and the protobuf), plain or over TLS; keep
//! the raw bytes (to scan for secrets) and the decoded spans (to assert trees).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// The path an OTLP/HTTP collector takes traces on.
const HTTP_EXPORT: &str = "/v1/traces";
/// The path a gRPC collector takes traces on (the service and method of OTLP's proto).
const GRPC_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// How the collector takes spans.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/HTTP with protobuf.
    Http,
    /// OTLP/gRPC.
    Grpc,
}

impl Protocol {
    /// The word for `telemetry.traces.protocol`.
    pub fn word(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Grpc => "grpc",
        }
    }
}

#[derive(Default)]
struct Received {
    /// The body of every export call made to it, taken or refused, in order.
    calls: Vec<Bytes>,
    /// The `grpc-timeout` of each gRPC call, when it had one.
    grpc_timeouts: Vec<String>,
    raw: Vec<u8>,
    spans: Vec<Span>,
    /// `service.name` of every resource seen.
    services: Vec<String>,
}

/// The receiver; stops when dropped.
pub struct Collector {
    addr: SocketAddr,
    protocol: Protocol,
    /// The file holding the CA certificate its TLS certificate chains to, when it serves
    /// TLS (in a directory of its own, removed with it).
    ca_file: Option<(tempfile::TempDir, std::path::PathBuf)>,
    received: Arc<Mutex<Received>>,
    task: JoinHandle<()>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Collector {
    /// An OTLP/HTTP collector on 127.0.0.1, port 0.
    pub async fn start() -> Self {
        Self::serve(Protocol::Http, false).await
    }

    /// A collector speaking `protocol` on 127.0.0.1, port 0; with `tls`, only over TLS
    /// with a certificate from a CA of its own ([`Collector::ca_file`]).
    pub async fn serve(protocol: Protocol, tls: bool) -> Self {
        Self::listen(protocol, tls, None).await
    }

    /// A gRPC collector on 127.0.0.1, port 0, answering every export `grpc-status: 14`
    /// (UNAVAILABLE) in the head alone (a trailers-only answer), keeping nothing.
    pub async fn unavailable() -> Self {
        Self::refusing("14", usize::MAX).await
    }

    /// A gRPC collector on 127.0.0.1, port 0, answering its first `times` exports with
    /// `grpc-status` `code` in a trailers-only answer, then taking them.
    pub async fn refusing(code: &'static str, times: usize) -> Self {
        Self::listen(Protocol::Grpc, false, Some(Refusal { code, times })).await
    }

    async fn listen(protocol: Protocol, tls: bool, refusal: Option<Refusal>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(Mutex::new(Received::default()));
        let (ca_file, acceptor) = if tls {
            let alpn = match protocol {
                Protocol::Http => b"http/1.1".as_slice(),
                Protocol::Grpc => b"h2".as_slice(),
            };
            let (ca_pem, config) = super::raw_upstream::tls(alpn);
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("collector-ca.pem");
            std::fs::write(&path, ca_pem).expect("write CA");
            (Some((dir, path)), Some(TlsAcceptor::from(config)))
        } else {
            (None, None)
        };
        let sink = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (sink, acceptor) = (sink.clone(), acceptor.clone());
                tokio::spawn(async move {
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                connection(stream, protocol, refusal, sink).await;
                            }
                        }
                        None => connection(stream, protocol, refusal, sink).await,
                    }
                });
            }
        });
        Self {
            addr,
            protocol,
            ca_file,
            received,
            task,
        }
    }

    /// The endpoint for `telemetry.traces.endpoint`.
    pub fn endpoint(&self) -> String {
        let scheme = if self.ca_file.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// What it speaks.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The CA its certificate chains to (a PEM file), for `telemetry.traces.ca_file`.
    pub fn ca_file(&self) -> Option<&std::path::Path> {
        self.ca_file.as_ref().map(|(_, path)| path.as_path())
    }
    /// Export calls received so far, taken or refused.
    pub fn calls(&self) -> usize {
        self.received.lock().unwrap().calls.len()
    }

    /// Export calls that carried the same bytes as an earlier call: a batch sent again.
    pub fn repeated_calls(&self) -> usize {
        let received = self.received.lock().unwrap();
        let calls = &received.calls;
        (0..calls.len())
            .filter(|&i| calls[..i].contains(&calls[i]))
            .count()
    }

    /// The `grpc-timeout` each gRPC call carried.
    pub fn grpc_timeouts(&self) -> Vec<String> {
        self.received.lock().unwrap().grpc_timeouts.clone()
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.received.lock().unwrap().spans.clone()
    }

    /// Every byte received so far, bodies concatenated.
    pub fn raw(&self) -> Vec<u8> {
        self.received.lock().unwrap().raw.clone()
    }

    /// The `service.name`s the exports carried.
    pub fn services(&self) -> Vec<String> {
        self.received.lock().unwrap().services.clone()
    }

    /// Waits (at most 30 s) until the spans received satisfy `done`; returns them.
    pub async fn wait(&self, what: &str, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        super::eventually(what, Duration::from_secs(30), || {
            let ok = done(&self.spans());
            async move { ok }
        })
        .await;
        self.spans()
    }
}

/// The response body type of both protocols: data, then trailers for gRPC.
type Answer =
    StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

/// The answer a collector gives its first exports instead of taking them.
#[derive(Clone, Copy)]
struct Refusal {
    /// The `grpc-status`.
    code: &'static str,
    /// How many exports get it.
    times: usize,
}

/// Serves one connection (HTTP/1.1 or HTTP/2, as the client speaks) until it closes; an
/// export in the other protocol gets a 404, the first exports the `refusal`'s status.
async fn connection<S>(
    stream: S,
    protocol: Protocol,
    refusal: Option<Refusal>,
    sink: Arc<Mutex<Received>>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
        let sink = sink.clone();
        async move {
            let path = match protocol {
                Protocol::Http => HTTP_EXPORT,
                Protocol::Grpc => GRPC_EXPORT,
            };
            if request.uri().path() != path {
                return Ok(http_answer(404));
            }
            let timeout = request.headers().get("grpc-timeout").cloned();
            let body = request.into_body().collect().await.map(|b| b.to_bytes());
            let calls = {
                let mut received = sink.lock().unwrap();
                if let Some(timeout) = timeout {
                    let timeout = timeout.to_str().unwrap_or("not text").to_owned();
                    received.grpc_timeouts.push(timeout);
                }
                let bytes = body.as_ref().map(Bytes::clone).unwrap_or_default();
                received.calls.push(bytes);
                received.calls.len()
            };
            if let Some(refusal) = refusal.filter(|r| calls <= r.times) {
                return Ok(grpc_refusal(refusal.code));
            }
            let response = match (protocol, body) {
                (Protocol::Grpc, Ok(bytes)) => {
                    grpc_answer(unframe(&bytes).is_some_and(|m| take(&sink, m)))
                }
                (Protocol::Http, Ok(bytes)) => {
                    http_answer(if take(&sink, &bytes) { 200 } else { 400 })
                }
                (_, Err(_)) => http_answer(400),
            };
            Ok::<_, Infallible>(response)
        }
    });
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// The one message of a gRPC request body: an uncompressed frame whose length is the rest.
fn unframe(body: &[u8]) -> Option<&[u8]> {
    let (&[flag, a, b, c, d], message) = body.split_first_chunk::<5>()?;
    (flag == 0 && u32::from_be_bytes([a, b, c, d]) as usize == message.len()).then_some(message)
}

fn http_answer(status: u16) -> Response<Answer> {
    let mut response = Response::new(StreamBody::new(futures_util::stream::iter(vec![])));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    response
}

/// A gRPC answer: an empty `ExportTraceServiceResponse` and `grpc-status: 0`, or no message
/// and `grpc-status: 3` (invalid argument) when the request did not decode.
fn grpc_answer(ok: bool) -> Response<Answer> {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", if ok { "0" } else { "3" }.parse().unwrap());
    let mut frames = Vec::new();
    if ok {
        frames.push(Ok(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0]))));
    }
    frames.push(Ok(Frame::trailers(trailers)));
    let mut response = Response::new(StreamBody::new(futures_util::stream::iter(frames)));
    response
        .headers_mut()
        .insert("content-type", "application/grpc".parse().unwrap());
    response
}

/// A trailers-only gRPC answer: `grpc-status` `code` and a message in the head.
fn grpc_refusal(code: &'static str) -> Response<Answer> {
    let mut response = http_answer(200);
    for (name, value) in [
        ("content-type", "application/grpc"),
        ("grpc-status", code),
        ("grpc-message", "collector%20refuses"),
    ] {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

/// Decodes and keeps one export; false when it is not an `ExportTraceServiceRequest`.
fn take(sink: &Mutex<Received>, bytes: &[u8]) -> bool {
    let Ok(request) = ExportTraceServiceRequest::decode(bytes) else {
        return false;
    };
    let mut received = sink.lock().unwrap();
    received.raw.extend_from_slice(bytes);
    for resource in request.resource_spans {
        if let Some(resource_attrs) = &resource.resource {
            for kv in &resource_attrs.attributes {
                if kv.key == "service.name" {
                    received
                        .services
                        .push(text(kv.value.as_ref().and_then(|v| v.value.as_ref())));
                }
            }
        }
        for scope in resource.scope_spans {
            received.spans.extend(scope.spans);
        }
    }
    true
}

fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

/// The attribute `key` of `span` as text, if set.
pub fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
}

/// The spans named `name`.
pub fn named<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

/// The one span named `name` among `spans`; panics unless there is exactly one.
pub fn one<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    let found = named(spans, name);
    assert_eq!(
        found.len(),
        1,
        "expected one {name:?} span; found {}: {:#?}",
        found.len(),
        names(spans)
    );
    found[0]
}

/// The children of `parent` among `spans`.
pub fn children<'a>(spans: &'a [Span], parent: &Span) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|s| s.trace_id == parent.trace_id && s.parent_span_id == parent.span_id)
        .collect()
}

/// The names of `spans`, for failure messages.
pub fn names(spans: &[Span]) -> Vec<String> {
    spans.iter().map(|s| s.name.clone()).collect()
}

/// Lowercase hex of an id.
pub fn hex(id: &[u8]) -> String {
    super::hex(id)
}
