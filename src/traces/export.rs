//! The exporter: the SDK's batch span processor, which queues finished spans and sends
//! them from its own thread (a full queue drops spans, never waits), over OTLP/HTTP with
//! protobuf, or OTLP/gRPC through a client of ours that makes the SDK's HTTP request a
//! gRPC call (`grpc`). Failed exports are counted, logged at debug, and
//! never stop the proxy.

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::HttpClient;
use opentelemetry_otlp::{
    ExporterBuildError, SpanExporter, WithExportConfig as _, WithHttpConfig as _,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanExporter as Export,
};
use prometheus::IntCounter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::{Layer, Registry};

use super::config::{Protocol, TracesConfig};
use super::grpc::Grpc;
use super::transport::{self, Http};
use super::{ON, TARGET};

/// How long one export may take before it counts as failed.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Links a span keeps: a grant links every request that waited for it, and a cold
/// merchant under load can have hundreds (the SDK's default keeps 128).
const MAX_LINKS: u32 = 1024;

/// A failure to build the exporter at start-up (an endpoint the client rejects, trust
/// anchors rustls refuses).
#[derive(Debug, thiserror::Error)]
#[error("expected an OTLP exporter for telemetry.traces.endpoint {endpoint}; found {reason}")]
pub struct TracesError {
    endpoint: String,
    reason: String,
}

/// `poynt_proxy_trace_export_failures_total`: batches of spans the collector did not take.
/// One counter for the process, as the exporter is: `metrics` registers it.
pub fn export_failures() -> &'static IntCounter {
    static FAILURES: OnceLock<IntCounter> = OnceLock::new();
    FAILURES.get_or_init(|| {
        IntCounter::new(
            "poynt_proxy_trace_export_failures_total",
            "Batches of spans the trace collector did not accept (telemetry.traces)",
        )
        .unwrap_or_else(|_| unreachable!("the name and help are valid"))
    })
}

/// The OTLP exporter, counting what fails.
#[derive(Debug)]
struct Counted(SpanExporter);

impl Export for Counted {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.0.export(batch).await;
        if let Err(error) = &result {
            export_failures().inc();
            tracing::debug!(%error, "a batch of spans was not exported");
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
    }
}

/// The layer [`Traces::start`] hands to the log's subscriber.
pub type TracesLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// The SDK's OTLP/HTTP protobuf exporter posting to `endpoint` through `client`: both
/// protocols share it, gRPC's client reframing each request as its unary call.
fn exporter(
    client: impl HttpClient + 'static,
    endpoint: &str,
) -> Result<SpanExporter, ExporterBuildError> {
    SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_endpoint(endpoint)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
}

/// The running exporter: flush and stop it with [`Traces::shutdown`].
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// Starts the exporter and turns span making on; the returned layer goes into the
    /// subscriber (`telemetry::init`), which then sends every span under `TARGET` to it.
    pub fn start(config: &TracesConfig) -> Result<(Self, TracesLayer), TracesError> {
        let refused = |reason: String| TracesError {
            endpoint: config.endpoint.clone(),
            reason,
        };
        let connector =
            transport::connector(&config.extra_roots, EXPORT_TIMEOUT).map_err(refused)?;
        let exporter = match config.protocol {
            Protocol::Http => exporter(
                Http::new(connector, EXPORT_TIMEOUT).map_err(refused)?,
                &config.endpoint,
            ),
            Protocol::Grpc => exporter(
                Grpc::new(connector, EXPORT_TIMEOUT).map_err(refused)?,
                &config.endpoint,
            ),
        }
        .map_err(|error| refused(error.to_string()))?;
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BatchSpanProcessor::builder(Counted(exporter)).build())
            .with_max_links_per_span(MAX_LINKS)
            // The ratio is applied before a trace's first span is made (`roll`): the SDK
            // keeps every span it is given.
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
            .with_resource(
                Resource::builder_empty()
                    .with_service_name(config.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("poynt-proxy");
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_level(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_filter(Targets::new().with_target(TARGET, tracing::Level::INFO))
            .boxed();
        super::set_ratio(config.sample_ratio);
        ON.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok((Self { provider }, layer))
    }

    /// Sends the spans still queued and stops the export thread; blocks until then, so the
    /// binary calls it off its runtime's workers.
    pub fn shutdown(self) {
        ON.store(false, std::sync::atomic::Ordering::Relaxed);
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "the last spans were not all exported");
        }
    }
}
