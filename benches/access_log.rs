//! One access line, before and after issue #27's first lever: through `tracing`'s fmt layer
//! (the fields the old line had, text with ANSI colour as it was written to any stdout, and
//! flattened JSON) versus the record preformatted into a reused buffer. Both write to a sink,
//! so the old path's blocking write to stdout (a syscall per line) is not in the "before"
//! figure: the real saving is larger. Run with `cargo bench --bench access_log`.
#![allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "a benchmark measures wall time"
)]

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderValue, Method, Uri, Version};
use poynt_proxy::access_log::format;
use poynt_proxy::access_log::{AccessRecord, Flags};
use poynt_proxy::telemetry::LogFormat;
use poynt_wire::MerchantId;
use tracing_subscriber::layer::SubscriberExt as _;

const MERCHANT: &str = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";

fn record() -> AccessRecord {
    AccessRecord {
        request_id: HeaderValue::from_static("1b4e28ba-2fa1-41d2-883f-0016d3cca427"),
        trace_id: None,
        peer: SocketAddr::from((Ipv4Addr::new(10, 1, 2, 3), 41_234)),
        caller: None,
        merchant: MerchantId::parse(MERCHANT).ok(),
        method: Method::GET,
        uri: Uri::from_static("/businesses/3f2504e0-4f89-41d3-9a0c-0305e82c3301/orders?limit=10"),
        version: Version::HTTP_11,
        status: 200,
        upstream_status: Some(200),
        bytes_in: 0,
        bytes_out: 1_834,
        token: Some("hit"),
        token_wait: Some(Duration::from_nanos(2_345)),
        upstream: Some(Duration::from_nanos(30_806_123)),
        attempts: 1,
        reused: Some(true),
        limit_observed: None,
        flags: Flags::default(),
        error_code: None,
        error: None,
    }
}

/// The line as `tracing` wrote it before (proxy/mod.rs `record` at 6300d00).
fn tracing_line(record: &AccessRecord, total: Duration) {
    tracing::info!(
        target: "poynt_proxy::access",
        request_id = record.request_id.to_str().unwrap_or_default(),
        merchant = record.merchant.map(tracing::field::display),
        method = record.method.as_str(),
        path = record.uri.path(),
        status = record.status,
        upstream_ms = record.upstream.map(|d| d.as_secs_f64() * 1e3),
        total_ms = total.as_secs_f64() * 1e3,
        token = record.token,
        retried = false,
        error_code = record.error_code,
        "request"
    );
}

fn access_line(c: &mut Criterion) {
    let record = record();
    let total = Duration::from_nanos(31_912_345);
    let mut group = c.benchmark_group("access_line");
    for (name, format) in [("text", LogFormat::Text), ("json", LogFormat::Json)] {
        let layer = tracing_subscriber::fmt::layer().with_writer(std::io::sink);
        let subscriber: Box<dyn tracing::Subscriber + Send + Sync> = match format {
            LogFormat::Text => Box::new(tracing_subscriber::registry().with(layer.with_ansi(true))),
            LogFormat::Json => {
                Box::new(tracing_subscriber::registry().with(layer.json().flatten_event(true)))
            }
        };
        tracing::subscriber::with_default(subscriber, || {
            group.bench_function(format!("tracing_{name}"), |b| {
                b.iter(|| tracing_line(black_box(&record), total));
            });
        });
        let mut line = Vec::new();
        group.bench_function(format!("preformatted_{name}"), |b| {
            b.iter(|| {
                line.clear();
                format::line(
                    &mut line,
                    format,
                    black_box(&record),
                    SystemTime::now(),
                    total,
                );
                black_box(&line);
            });
        });
    }
    group.finish();
}

criterion_group!(benches, access_line);
criterion_main!(benches);
