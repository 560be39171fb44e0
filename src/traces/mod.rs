//! OpenTelemetry traces (`telemetry.traces`, off by default): spans are `tracing` spans
//! under [`TARGET`], turned into OpenTelemetry spans by `tracing-opentelemetry` and sent
//! by the SDK's batch exporter from its own thread (`export`). `propagate` reads a
//! trusted caller's W3C trace context and writes the proxy's for Poynt.
//!
//! Every span is opened through `span!` (a child of the span in progress) or `root!`,
//! which make nothing — not even a disabled `tracing` span — unless [`on`] says traces
//! were started: a proxy without `telemetry.traces` pays one relaxed load per span site.
//! Sampling is decided before a trace's first span is made ([`sample_request`],
//! [`roll`]), not by the SDK after: an unsampled request makes no span at all, since a
//! `tracing` span that the SDK then drops costs nearly what an exported one does (at 1 %
//! sampling, deciding afterwards cost 44 % more CPU per request in the capped load run). docs/OPERATIONS.md,
//! "Tracing", lists the spans and what each attribute means; no attribute ever holds a
//! token, a key or an assertion.

pub mod config;
mod export;
mod grpc;
pub mod propagate;
mod transport;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use http::HeaderMap;

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

/// `telemetry.traces.sample_ratio`, as `f64` bits: the share of traces begun here that are made.
static RATIO: AtomicU64 = AtomicU64::new(0);

/// Whether spans are made (`telemetry.traces` is configured and its exporter started).
#[inline]
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Opens an INFO span under [`TARGET`], a child of the span in progress, when traces are
/// [`on`] and a span is in progress (a sampled trace), else `Span::none()`, with
/// `tracing`'s `info_span!` arguments after the target.
macro_rules! span {
    ($($arg:tt)+) => {
        if $crate::traces::on() && !::tracing::Span::current().is_none() {
            ::tracing::info_span!(target: "poynt_proxy::traces", $($arg)+)
        } else {
            ::tracing::Span::none()
        }
    };
}
pub(crate) use span;

/// Opens the first span of a trace the caller decided to sample ([`sample_request`],
/// [`roll`]) when traces are [`on`], else `Span::none()`; arguments as for `span!`.
macro_rules! root {
    ($($arg:tt)+) => {
        if $crate::traces::on() {
            ::tracing::info_span!(target: "poynt_proxy::traces", $($arg)+)
        } else {
            ::tracing::Span::none()
        }
    };
}
pub(crate) use root;

/// Sets the share of traces begun here that are sampled (`sample_ratio`, 0 to 1).
fn set_ratio(ratio: f64) {
    RATIO.store(ratio.to_bits(), Ordering::Relaxed);
}

/// Whether a trace begun here (no caller's trace to follow) is sampled: true with
/// probability `sample_ratio`.
pub fn roll() -> bool {
    let ratio = f64::from_bits(RATIO.load(Ordering::Relaxed));
    if ratio >= 1.0 {
        return true;
    }
    // 53 random bits as a number in [0, 1).
    let bits = uuid::Uuid::new_v4().as_u64_pair().0 >> 11;
    (bits as f64) / ((1u64 << 53) as f64) < ratio
}

/// Whether a request's trace is sampled, decided before its server span exists: a trusted
/// caller's `traceparent` decides by its sampled flag (parent-based), else [`roll`].
pub fn sample_request(headers: &HeaderMap, trust_incoming: bool) -> bool {
    if trust_incoming && let Some(sampled) = propagate::caller_sampled(headers) {
        return sampled;
    }
    roll()
}

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
