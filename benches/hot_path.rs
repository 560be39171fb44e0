//! The per-request work without I/O: merchant parse, path guard, cache hit, header rewrite
//! (the upstream request head written from the caller's header map), for 1, 10,000 and
//! 100,000 cached merchants; the cache under 16 concurrent tasks; assertion signing and
//! token-response parsing (once per grant, not per request).
#![allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "a benchmark measures wall time"
)]

mod support;

use std::cell::RefCell;
use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use poynt_proxy::proxy::headers::{self, Rewritten};
use poynt_proxy::proxy::{admit, path};
use poynt_proxy::upstream::{BodyLength, RequestHead, encode_head};

const SIZES: [usize; 3] = [1, 10_000, 100_000];

/// Phase 4 as the proxy does it: the caller's fields rewritten while the HTTP/1.1 head for
/// Poynt is written into a (reused) buffer.
fn write_head(
    out: &mut Vec<u8>,
    head: &HeaderMap,
    header: &HeaderName,
    bearer: &HeaderValue,
    api_version: &HeaderValue,
    id: &HeaderValue,
) {
    let fields = Rewritten::new(head, header, bearer, api_version, id);
    out.clear();
    encode_head(
        out,
        &RequestHead {
            method: &Method::GET,
            path: "/businesses/5a2c1e7e-1b8e-4d4e-9f7a-3c2b1a0f9e8d/orders",
            query: Some("limit=10"),
            target: None,
            fields: &fields,
        },
        &HeaderValue::from_static("services.poynt.net"),
        BodyLength::None,
    );
}

/// A caller's request head, as a typical internal service sends it.
fn caller_headers(merchant: &str) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in [
        ("host", "poynt-proxy.internal:8080"),
        ("user-agent", "orders-service/3.1"),
        ("accept", "application/json"),
        ("content-type", "application/json"),
        ("x-poynt-merchant-id", merchant),
        ("connection", "keep-alive"),
    ] {
        map.insert(
            HeaderName::from_static(name),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

/// Times `work` over `iters` request heads taken in turn from `pool`, copied in small
/// batches outside the timed region: copying and dropping are not counted, and a batch is
/// as warm in the CPU cache as the map hyper has just parsed.
async fn batched<F, Fut>(iters: u64, pool: &[HeaderMap], mut work: F) -> Duration
where
    F: FnMut(Vec<HeaderMap>) -> Fut,
    Fut: Future<Output = Vec<HeaderMap>>,
{
    const BATCH: usize = 32;
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters as usize {
        let start = (done / BATCH * BATCH) % pool.len();
        let end = (start + BATCH.min(iters as usize - done)).min(pool.len());
        let heads = pool[start..end].to_vec();
        let started = Instant::now();
        let heads = work(heads).await;
        total += started.elapsed();
        done += heads.len();
        drop(heads);
    }
    total
}

fn benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = support::config();
    let header = config.merchant.header.clone();
    let api_version = config.poynt.api_version.clone();
    let all = support::merchants(*SIZES.iter().max().unwrap());

    let mut group = c.benchmark_group("parse");
    let sample = caller_headers(&all[0].to_string().to_uppercase());
    group.bench_function("merchant_header", |b| {
        b.iter(|| admit::merchant_from_headers(black_box(&sample), &header).unwrap())
    });
    // A plain path of typical length: checked in place, forwarded borrowed.
    let order_path = format!(
        "/businesses/{}/orders/0b5e8e66-2c4f-4f6e-9d0a-2f1c6b1e4a77",
        all[0]
    );
    group.bench_function("path_guard", |b| {
        b.iter(|| path::guard_path(black_box(&order_path), all[0], &header).unwrap())
    });
    group.finish();

    let filled: Vec<_> = SIZES
        .iter()
        .map(|&size| {
            let merchants = &all[..size];
            let broker = runtime.block_on(support::filled_broker(&config, merchants));
            let probe: Vec<_> = (0..1024).map(|i| merchants[(i * 7919) % size]).collect();
            (size, broker, probe)
        })
        .collect();

    let mut group = c.benchmark_group("cache_hit");
    for (size, broker, probe) in &filled {
        group.bench_with_input(BenchmarkId::from_parameter(size), size, |b, _| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let started = Instant::now();
                    for i in 0..iters as usize {
                        black_box(broker.token(probe[i % probe.len()]).await.unwrap());
                    }
                    started.elapsed()
                })
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("hot_path");
    for (size, broker, probe) in &filled {
        let requests: Vec<HeaderMap> = probe
            .iter()
            .map(|m| caller_headers(&m.to_string()))
            .collect();
        group.bench_with_input(BenchmarkId::from_parameter(size), size, |b, _| {
            b.iter_custom(|iters| {
                let out = RefCell::new(Vec::with_capacity(4096));
                let (out, header, api_version) = (&out, &header, &api_version);
                runtime.block_on(batched(iters, &requests, |heads| async move {
                    for head in &heads {
                        let id = headers::request_id(head);
                        let merchant = admit::merchant_from_headers(head, header).unwrap();
                        let (token, _) = broker.token(merchant).await.unwrap();
                        let mut out = out.borrow_mut();
                        write_head(&mut out, head, header, token.header(), api_version, &id);
                        black_box(&out);
                    }
                    heads
                }))
            })
        });
    }
    group.finish();
    drop(filled);

    let mut group = c.benchmark_group("rewrite");
    let bearer = {
        let mut v = HeaderValue::from_str(&format!("Bearer {}", "x".repeat(900))).unwrap();
        v.set_sensitive(true);
        v
    };
    let id = HeaderValue::from_static("0b5e8e66-2c4f-4f6e-9d0a-2f1c6b1e4a77");
    let pool = vec![caller_headers(&all[0].to_string()); 1024];
    group.bench_function("headers", |b| {
        b.iter_custom(|iters| {
            let out = RefCell::new(Vec::with_capacity(4096));
            let (out, header, api_version, bearer, id) =
                (&out, &header, &api_version, &bearer, &id);
            runtime.block_on(batched(iters, &pool, |heads| async move {
                let mut out = out.borrow_mut();
                for head in &heads {
                    write_head(&mut out, head, header, bearer, api_version, id);
                    black_box(&out);
                }
                heads
            }))
        })
    });
    group.finish();

    let mut group = c.benchmark_group("cache_concurrent");
    const TASKS: usize = 16;
    const PER_TASK: usize = 1_000;
    group.throughput(Throughput::Elements((TASKS * PER_TASK) as u64));
    let merchants = &all[..10_000];
    let broker = runtime.block_on(support::filled_broker(&config, merchants));
    group.bench_function("16_tasks_10k_merchants", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                runtime.block_on(async {
                    let tasks: Vec<_> = (0..TASKS)
                        .map(|t| {
                            let broker = broker.clone();
                            let mine: Vec<_> = (0..PER_TASK)
                                .map(|i| merchants[(t * 7919 + i * 104_729) % merchants.len()])
                                .collect();
                            tokio::spawn(async move {
                                for m in mine {
                                    black_box(broker.token(m).await.unwrap());
                                }
                            })
                        })
                        .collect();
                    for task in tasks {
                        task.await.unwrap();
                    }
                });
                total += started.elapsed();
            }
            total
        })
    });
    group.finish();

    let mut group = c.benchmark_group("grant");
    let signer = support::signer(&config);
    group.bench_function("assertion_sign", |b| {
        b.iter(|| signer.sign(Some(all[0])).unwrap())
    });
    let body = support::token_body(7);
    group.bench_function("token_response_parse", |b| {
        b.iter(|| {
            poynt_proxy::token::grant::parse_token_response(
                black_box(&body),
                tokio::time::Instant::now(),
                SystemTime::now(),
            )
            .unwrap()
        })
    });
    group.finish();
}

criterion_group! {
    name = hot_path;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(hot_path);
