//! W3C trace context (`traceparent`, `tracestate`) in and out: a trusted caller's trace is
//! continued, and Poynt is sent the proxy's span so its side joins the trace.

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

struct Reader<'a>(&'a HeaderMap);

impl Extractor for Reader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct Writer<'a>(&'a mut HeaderMap);

impl Injector for Writer<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Makes `span` (a request's server span, not yet entered) a child of the caller's trace
/// when `headers` carry a valid `traceparent`; otherwise the span starts a trace.
pub fn continue_caller(span: &Span, headers: &HeaderMap) {
    if span.is_none() || !headers.contains_key("traceparent") {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&Reader(headers));
    if let Err(error) = span.set_parent(parent) {
        tracing::debug!(%error, "the caller's trace context was not adopted");
    }
}

/// The sampled flag of the caller's trace, when `headers` carry a valid `traceparent`.
pub fn caller_sampled(headers: &HeaderMap) -> Option<bool> {
    if !headers.contains_key("traceparent") {
        return None;
    }
    let parent = TraceContextPropagator::new().extract(&Reader(headers));
    let context = parent.span().span_context().clone();
    context.is_valid().then(|| context.is_sampled())
}

/// The W3C fields naming `span`, for Poynt: empty when the span is none.
pub fn fields(span: &Span) -> HeaderMap {
    let mut fields = HeaderMap::new();
    if !span.is_none() {
        TraceContextPropagator::new().inject_context(&span.context(), &mut Writer(&mut fields));
    }
    fields
}
