//! OpenTelemetry traces (`telemetry.traces`, off by default): spans are `tracing` spans
//! under [`TARGET`], turned into OpenTelemetry spans by `tracing-opentelemetry` and sent
//! by the SDK's batch exporter from its own thread (`export`). `propagate` reads a
//! trusted caller's W3C trace context and writes the proxy's for Poynt.
//!
//! Every span is opened through `span!`, which makes nothing — not
//! even a disabled `tracing` span — unless [`on`] says traces were started: a proxy
//! without `telemetry.traces` pays one relaxed load per span site. docs/OPERATIONS.md,
//! "Tracing", lists the spans and what each attribute means; no attribute ever holds a
//! token, a key or an assertion.

pub mod config;
mod export;
pub mod propagate;

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::{SpanContext, TraceContextExt as _, TraceId};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

pub use self::config::{Protocol, TracesConfig};
pub use self::export::{Traces, TracesError, TracesLayer, export_failures};

/// The `tracing` target of every span made for traces: the export layer takes only these,
/// and the log leaves them out.
pub const TARGET: &str = "poynt_proxy::traces";

/// Set once traces are started: from then on spans are made.
static ON: AtomicBool = AtomicBool::new(false);

/// Whether spans are made (`telemetry.traces` is configured and its exporter started).
#[inline]
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Opens an INFO span under [`TARGET`] when traces are [`on`], else `Span::none()`, with
/// `tracing`'s `info_span!` arguments after the target.
macro_rules! span {
    ($($arg:tt)+) => {
        if $crate::traces::on() {
            ::tracing::info_span!(target: "poynt_proxy::traces", $($arg)+)
        } else {
            ::tracing::Span::none()
        }
    };
}
pub(crate) use span;

/// The OpenTelemetry identity of `span`, when it is a sampled one (links and the access
/// log's `trace_id` only name spans that reach the collector).
pub fn sampled(span: &Span) -> Option<SpanContext> {
    if span.is_none() {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_sampled().then_some(span_context)
}

/// The trace id of `span`, when sampled: what the access line carries as `trace_id`.
pub fn trace_id(span: &Span) -> Option<TraceId> {
    sampled(span).map(|context| context.trace_id())
}

/// Links `span` (a grant) to `waiter` (a request span that waits for it), when both are made.
pub fn link(span: &Span, waiter: &Span) {
    if let Some(context) = sampled(waiter) {
        span.add_link(context);
    }
}
