//! The checked `telemetry.traces` settings (the YAML is read by `config::telemetry`).

use rustls_pki_types::CertificateDer;

/// How spans reach the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP over HTTP/protobuf (`POST {endpoint}/v1/traces`).
    Http,
    /// OTLP over gRPC (the unary `TraceService/Export` call, HTTP/2).
    Grpc,
}

/// Where and how traces are exported, and how far the proxy trusts its callers' traces.
#[derive(Debug, Clone, PartialEq)]
pub struct TracesConfig {
    /// The URL exports are posted to: for HTTP the collector's traces path (`…/v1/traces`),
    /// for gRPC its `scheme://host:port` and the export call's path.
    pub endpoint: String,
    /// The export protocol.
    pub protocol: Protocol,
    /// The share of new traces kept (0 to 1); a caller's sampled flag decides for traces the
    /// proxy joins, so a trace is kept or dropped whole.
    pub sample_ratio: f64,
    /// Whether a caller's `traceparent`/`tracestate` is continued; otherwise every request
    /// starts a trace of its own, so an untrusted caller cannot choose ids or force sampling.
    pub trust_incoming: bool,
    /// Whether Poynt receives the proxy's `traceparent`, so its side joins the trace.
    pub propagate: bool,
    /// `service.name` on every span.
    pub service_name: String,
    /// Trust anchors for an `https://` collector beside the platform's (`ca_file`).
    pub extra_roots: Vec<CertificateDer<'static>>,
}
