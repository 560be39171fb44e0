//! An OTLP/HTTP receiver on loopback: takes what a traced proxy exports to `/v1/traces`,
//! keeps the raw bytes (to scan for secrets) and the decoded spans (to assert trees).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

#[derive(Default)]
struct Received {
    raw: Vec<u8>,
    spans: Vec<Span>,
    /// `service.name` of every resource seen.
    services: Vec<String>,
}

/// The receiver; stops when dropped.
pub struct Collector {
    addr: SocketAddr,
    received: Arc<Mutex<Received>>,
    task: JoinHandle<()>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Collector {
    /// Listens on 127.0.0.1, port 0.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(Mutex::new(Received::default()));
        let sink = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let sink = sink.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let sink = sink.clone();
                        async move {
                            let body = request.into_body().collect().await.map(|b| b.to_bytes());
                            let status = match body {
                                Ok(bytes) => take(&sink, &bytes),
                                Err(_) => 400,
                            };
                            let mut response = Response::new(Full::new(Bytes::new()));
                            *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            received,
            task,
        }
    }

    /// The endpoint for `telemetry.traces.endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
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

fn take(sink: &Mutex<Received>, bytes: &[u8]) -> u16 {
    let Ok(request) = ExportTraceServiceRequest::decode(bytes) else {
        return 400;
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
    200
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
