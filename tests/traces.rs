//! OpenTelemetry traces from the real binary (`telemetry.traces`), received by an OTLP
//! collector in the test (`support::otlp`, HTTP or gRPC, plain or https): the span trees of
//! a hit, a miss, a crowd on a cold merchant and a 401 replay; the server span lasting until
//! the body is sent or the caller leaves; a caller's trace continued and sent on to Poynt;
//! nothing secret exported; a collector that is down or untrusted costing no request.

mod support;

use futures_util::future::join_all;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use poynt_emulator::Emulator;
use poynt_emulator::Fault;
use poynt_wire::MerchantId;
use support::otlp::{Collector, Protocol, attr, children, hex, names, one};
use support::process::{ProxyProcess, spawn_proxy};
use support::{Builder, HEADER};

/// A proxy exporting every trace to `collector` in its protocol (trusting its CA when it
/// has one), with `traces` lines under `telemetry.traces` and `extra` YAML after it.
fn traced(emulator: &Emulator, collector: &Collector, traces: &str, extra: &str) -> ProxyProcess {
    let ca_file = collector
        .ca_file()
        .map(|path| format!("    ca_file: {:?}\n", path.display().to_string()))
        .unwrap_or_default();
    exporting(emulator, collector, &format!("{ca_file}{traces}"), extra)
}

/// A proxy exporting every trace to `collector` in its protocol, trusting no CA of its.
fn exporting(
    emulator: &Emulator,
    collector: &Collector,
    traces: &str,
    extra: &str,
) -> ProxyProcess {
    spawn_proxy(
        emulator,
        &format!(
            "telemetry:\n  traces:\n    endpoint: {}\n    protocol: {}\n    sample_ratio: 1\n    service_name: proxy-under-test\n{traces}{extra}",
            collector.endpoint(),
            collector.protocol().word(),
        ),
    )
}

async fn get(proxy: &ProxyProcess, merchant: MerchantId, headers: &[(&str, &str)]) -> u16 {
    let mut request = support::client()
        .get(format!(
            "http://{}/businesses/{merchant}/orders",
            proxy.proxy
        ))
        .header(HEADER, merchant.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request
        .send()
        .await
        .expect("proxy answers")
        .status()
        .as_u16()
}

fn servers(spans: &[Span]) -> Vec<&Span> {
    spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server as i32)
        .collect()
}

/// The client spans to Poynt's API (not `/token`) among `spans`.
fn upstreams<'a>(spans: &'a [&'a Span]) -> Vec<&'a Span> {
    spans
        .iter()
        .copied()
        .filter(|s| s.kind == SpanKind::Client as i32 && s.name != "POST /token")
        .collect()
}

/// The spans of `server`'s trace.
fn trace_of(spans: &[Span], server: &Span) -> Vec<Span> {
    spans
        .iter()
        .filter(|s| s.trace_id == server.trace_id)
        .cloned()
        .collect()
}

/// The server span whose token lookup says `source`.
fn request_with<'a>(spans: &'a [Span], source: &str) -> &'a Span {
    let lookup = spans
        .iter()
        .find(|s| s.name == "token lookup" && attr(s, "poynt.token").as_deref() == Some(source))
        .unwrap_or_else(|| {
            panic!(
                "expected a token lookup that was a {source}: {:?}",
                names(spans)
            )
        });
    spans
        .iter()
        .find(|s| s.span_id == lookup.parent_span_id)
        .expect("the lookup's request span")
}

/// A traced proxy that fetched a token for its first request, then met a 401 (the token
/// revoked) on its second and replayed it with a renewed one; both answered 200.
async fn miss_then_replay(collector: &Collector) -> (Emulator, ProxyProcess) {
    let m = support::merchant();
    let emulator = Builder::default().emulator(&[m]).await;
    let proxy = traced(
        &emulator,
        collector,
        "",
        "tokens:\n  unauthorized_min_token_age: 0s\n",
    );
    assert_eq!(get(&proxy, m, &[]).await, 200);
    emulator.revoke(m);
    assert_eq!(get(&proxy, m, &[]).await, 200);
    (emulator, proxy)
}

#[tokio::test]
async fn a_cache_hit_is_a_server_span_with_an_upstream_child() {
    cache_hit_tree(Collector::start().await).await;
}

#[tokio::test]
async fn a_cache_hit_arrives_whole_over_grpc() {
    cache_hit_tree(Collector::serve(Protocol::Grpc, false).await).await;
}

#[tokio::test]
async fn https_collectors_trusted_through_ca_file_receive_the_trace() {
    for protocol in [Protocol::Http, Protocol::Grpc] {
        let collector = Collector::serve(protocol, true).await;
        assert!(collector.endpoint().starts_with("https://"));
        let m = support::merchant();
        let emulator = Builder::default().emulator(&[m]).await;
        let proxy = traced(&emulator, &collector, "", "");
        assert_eq!(get(&proxy, m, &[]).await, 200);
        collector
            .wait(
                &format!("the request span over https/{}", protocol.word()),
                |spans| servers(spans).len() == 1,
            )
            .await;
        assert_eq!(
            proxy
                .metric("poynt_proxy_trace_export_failures_total")
                .await,
            0.0
        );
    }
}

#[tokio::test]
async fn an_https_collector_whose_certificate_is_not_trusted_gets_nothing_and_is_counted() {
    for protocol in [Protocol::Http, Protocol::Grpc] {
        let collector = Collector::serve(protocol, true).await;
        let m = support::merchant();
        let emulator = Builder::default().emulator(&[m]).await;
        // The collector's CA is not given: the platform's roots do not know it.
        let proxy = exporting(&emulator, &collector, "", "");
        requests_succeed_while_exports_fail(&proxy, m).await;
        assert!(
            collector.spans().is_empty(),
            "{:?}",
            names(&collector.spans())
        );
    }
}

/// Two requests through a one-worker proxy exporting to `collector`: the second, a cache
/// hit on a reused connection, arrives as a server span with its three children.
async fn cache_hit_tree(collector: Collector) {
    let m = support::merchant();
    let emulator = Builder::default().emulator(&[m]).await;
    // One worker: the second request finds the first one's connection in its pool.
    let proxy = traced(&emulator, &collector, "", "server:\n  workers: 1\n");
    assert_eq!(get(&proxy, m, &[]).await, 200);
    assert_eq!(get(&proxy, m, &[]).await, 200);
    let spans = collector
        .wait("two request spans", |spans| servers(spans).len() == 2)
        .await;
    let server = request_with(&spans, "hit");
    assert_eq!(attr(server, "http.request.method").as_deref(), Some("GET"));
    assert_eq!(server.name, "GET /businesses/{id}/orders");
    assert_eq!(
        attr(server, "http.route").as_deref(),
        Some("/businesses/{id}/orders")
    );
    assert_eq!(
        attr(server, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        attr(server, "url.path"),
        Some(format!("/businesses/{m}/orders"))
    );
    let trace = trace_of(&spans, server);
    let kids = children(&trace, server);
    let mut kid_names: Vec<_> = kids.iter().map(|s| s.name.as_str()).collect();
    kid_names.sort_unstable();
    assert_eq!(
        kid_names,
        ["GET", "admission", "token lookup"],
        "{:?}",
        names(&trace)
    );
    let upstream = upstreams(&kids)[0];
    assert_eq!(
        attr(upstream, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(attr(upstream, "poynt.attempt").as_deref(), Some("1"));
    assert_eq!(
        attr(upstream, "poynt.connection.reused").as_deref(),
        Some("true")
    );
    assert_eq!(
        collector.services(),
        vec!["proxy-under-test"; collector.services().len()]
    );
    // The access line names the trace and the reused connection.
    let trace_id = hex(&server.trace_id);
    support::eventually(
        "the access line",
        std::time::Duration::from_secs(10),
        || {
            let found = proxy.logs().contains(&trace_id);
            async move { found }
        },
    )
    .await;
    let line = proxy
        .logs()
        .lines()
        .find(|line| line.contains(&trace_id))
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .unwrap();
    assert_eq!(line["target"], "poynt_proxy::access");
    assert_eq!(line["trace_id"], trace_id);
    assert_eq!(line["reused"], true);
}

/// A body larger than loopback's socket buffers: the proxy is still writing it when the test
/// has the head, and finishes only as the test reads it.
const LARGE_BODY: u64 = 16 << 20;

/// Asks a traced proxy for a [`LARGE_BODY`] answer and hands the response, its body unread,
/// to `caller`; returns the request's server span, checked to have ended after the head had
/// arrived (wall time, the clock spans carry).
async fn large_answer_span(caller: impl AsyncFnOnce(reqwest::Response)) -> Span {
    let collector = Collector::start().await;
    let m = support::merchant();
    let emulator = Builder::default().emulator(&[m]).await;
    let proxy = traced(&emulator, &collector, "", "");
    let response = support::client()
        .get(format!(
            "http://{}/businesses/{m}/orders?_size={LARGE_BODY}",
            proxy.proxy
        ))
        .header(HEADER, m.to_string())
        .send()
        .await
        .expect("proxy answers");
    assert_eq!(response.status(), 200);
    let head_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    caller(response).await;
    let spans = collector
        .wait("the request span", |spans| servers(spans).len() == 1)
        .await;
    let server = servers(&spans)[0].clone();
    assert!(
        server.end_time_unix_nano > head_at,
        "the server span ended {} ns before the caller had the head",
        head_at - server.end_time_unix_nano
    );
    server
}

#[tokio::test]
async fn the_server_span_ends_after_the_body_is_sent_and_records_its_size() {
    let server = large_answer_span(async |response| {
        let received = response.bytes().await.expect("the whole body").len() as u64;
        assert_eq!(received, LARGE_BODY);
    })
    .await;
    assert_eq!(
        attr(&server, "http.response.body.size"),
        Some(LARGE_BODY.to_string())
    );
}

#[tokio::test]
async fn a_caller_gone_mid_body_ends_the_server_span_without_a_body_size() {
    let server = large_answer_span(async |response| drop(response)).await;
    assert_eq!(attr(&server, "http.response.body.size"), None);
}

#[tokio::test]
async fn a_cold_miss_puts_the_grant_and_its_token_call_under_the_waiting_request() {
    let collector = Collector::start().await;
    let m = support::merchant();
    let emulator = Builder::default().emulator(&[m]).await;
    let proxy = traced(&emulator, &collector, "", "");
    assert_eq!(get(&proxy, m, &[]).await, 200);
    let spans = collector
        .wait("the request and its grant", |spans| {
            servers(spans).len() == 1 && spans.iter().any(|s| s.name == "grant")
        })
        .await;
    let server = request_with(&spans, "miss");
    let trace = trace_of(&spans, server);
    let lookup = one(&trace, "token lookup");
    assert_eq!(lookup.parent_span_id, server.span_id);
    let grant = one(&trace, "grant");
    assert_eq!(
        grant.parent_span_id, lookup.span_id,
        "the grant runs under the lookup"
    );
    assert_eq!(attr(grant, "poynt.grant.reason").as_deref(), Some("miss"));
    assert_eq!(
        attr(grant, "poynt.grant.outcome").as_deref(),
        Some("success")
    );
    assert!(
        grant
            .links
            .iter()
            .any(|link| link.trace_id == server.trace_id),
        "the grant links the request that waited: {:?}",
        grant.links
    );
    let exchange = one(&trace, "POST /token");
    assert_eq!(exchange.parent_span_id, grant.span_id);
    assert_eq!(
        attr(exchange, "poynt.grant.kind").as_deref(),
        Some("jwt_bearer")
    );
    assert_eq!(
        attr(exchange, "poynt.grant.outcome").as_deref(),
        Some("success")
    );
    assert!(exchange.start_time_unix_nano >= grant.start_time_unix_nano);
    assert!(exchange.end_time_unix_nano <= grant.end_time_unix_nano);
    let wait = one(&trace, "grant wait");
    assert_eq!(wait.parent_span_id, lookup.span_id);
    assert!(
        trace
            .iter()
            .any(|s| s.name == "save" && s.parent_span_id == grant.span_id),
        "the store write is under the grant: {:?}",
        names(&trace)
    );
    let upstream = upstreams(&children(&trace, server))[0].clone();
    assert!(upstream.start_time_unix_nano >= exchange.end_time_unix_nano);
    assert_eq!(
        attr(&upstream, "poynt.connection.reused").as_deref(),
        Some("false")
    );
}

#[tokio::test]
async fn two_hundred_callers_on_a_cold_merchant_share_one_grant_span_linked_from_each() {
    const CALLERS: usize = 200;
    let collector = Collector::start().await;
    let m = support::merchant();
    let emulator = Builder::default().emulator(&[m]).await;
    // Slow enough that every caller arrives while the grant is in flight.
    emulator.set_fault(Fault {
        token_delay_ms: Some(500),
        ..Fault::default()
    });
    let proxy = traced(
        &emulator,
        &collector,
        "",
        "server:\n  http2_max_concurrent_streams: 1000\nlimits:\n  max_in_flight: 1000\n",
    );
    let client = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let requests = (0..CALLERS).map(|_| {
        client
            .get(format!("http://{}/businesses/{m}/orders", proxy.proxy))
            .header(HEADER, m.to_string())
            .send()
    });
    for response in join_all(requests).await {
        assert_eq!(response.unwrap().status(), 200);
    }
    assert_eq!(emulator.stats().token_calls_total, 1);
    let spans = collector
        .wait("every request span and the grant", |spans| {
            servers(spans).len() == CALLERS && spans.iter().any(|s| s.name == "grant")
        })
        .await;
    let grant = one(&spans, "grant");
    let requests: std::collections::HashSet<_> =
        servers(&spans).iter().map(|s| s.trace_id.clone()).collect();
    let linked: std::collections::HashSet<_> = grant
        .links
        .iter()
        .map(|link| link.trace_id.clone())
        .collect();
    assert_eq!(grant.links.len(), CALLERS, "one link per waiting request");
    assert_eq!(
        linked, requests,
        "the links name exactly the requests that waited"
    );
}

#[tokio::test]
async fn a_401_replay_shows_two_upstream_spans_with_the_renewal_between_them() {
    let collector = Collector::start().await;
    let (_emulator, _proxy) = miss_then_replay(&collector).await;
    let spans = collector
        .wait("both requests and the replay", |spans| {
            servers(spans).len() == 2 && spans.iter().any(|s| s.name == "401 replay")
        })
        .await;
    let replay = one(&spans, "401 replay");
    let server = spans
        .iter()
        .find(|s| s.span_id == replay.parent_span_id)
        .expect("the replay's request");
    let trace = trace_of(&spans, server);
    let first = upstreams(&children(&trace, server))[0].clone();
    assert_eq!(
        attr(&first, "http.response.status_code").as_deref(),
        Some("401")
    );
    assert_eq!(attr(&first, "poynt.attempt").as_deref(), Some("1"));
    let under_replay = children(&trace, replay);
    let second = upstreams(&under_replay)[0].clone();
    assert_eq!(
        attr(&second, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(attr(&second, "poynt.attempt").as_deref(), Some("2"));
    // The grant's span closes just after its waiters are woken: its /token call is what
    // certainly ended before the second exchange.
    let grant = one(&trace, "grant");
    let renewal = one(&trace, "POST /token");
    assert_eq!(renewal.parent_span_id, grant.span_id);
    assert!(first.end_time_unix_nano <= grant.start_time_unix_nano);
    assert!(renewal.end_time_unix_nano <= second.start_time_unix_nano);
    assert!(
        under_replay.iter().any(|s| s.name == "token lookup"),
        "the renewal is looked up under the replay: {:?}",
        names(&trace)
    );
}

#[tokio::test]
async fn a_trusted_callers_trace_is_continued_and_sent_on_to_poynt() {
    const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CALLER_SPAN: &str = "00f067aa0ba902b7";
    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let collector = Collector::start().await;
    let m = support::merchant();
    let emulator = Builder::default().emulator(&[m]).await;
    let proxy = traced(&emulator, &collector, "    trust_incoming: true\n", "");
    assert_eq!(get(&proxy, m, &[("traceparent", &traceparent)]).await, 200);
    let spans = collector
        .wait("the request span", |spans| servers(spans).len() == 1)
        .await;
    let server = servers(&spans)[0].clone();
    assert_eq!(hex(&server.trace_id), CALLER_TRACE);
    assert_eq!(hex(&server.parent_span_id), CALLER_SPAN);
    let trace = trace_of(&spans, &server);
    let upstream = upstreams(&children(&trace, &server))[0].clone();
    let sent = emulator.stats().last_traceparent[&format!("/businesses/{m}/orders")].clone();
    assert_eq!(
        sent,
        format!("00-{CALLER_TRACE}-{}-01", hex(&upstream.span_id)),
        "Poynt hears the proxy's upstream span, in the caller's trace"
    );
}

#[tokio::test]
async fn an_untrusted_callers_trace_is_not_continued() {
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let collector = Collector::start().await;
    let m = support::merchant();
    let emulator = Builder::default().emulator(&[m]).await;
    let proxy = traced(&emulator, &collector, "", "");
    assert_eq!(get(&proxy, m, &[("traceparent", traceparent)]).await, 200);
    let spans = collector
        .wait("the request span", |spans| servers(spans).len() == 1)
        .await;
    let server = servers(&spans)[0].clone();
    assert_ne!(hex(&server.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(server.parent_span_id.is_empty(), "a root span");
    let sent = emulator.stats().last_traceparent[&format!("/businesses/{m}/orders")].clone();
    assert!(
        sent.contains(&hex(&server.trace_id)),
        "Poynt hears the proxy's trace, not the caller's: {sent}"
    );
}

#[tokio::test]
async fn no_token_key_or_assertion_reaches_the_collector() {
    let collector = Collector::start().await;
    let (emulator, _proxy) = miss_then_replay(&collector).await;
    collector
        .wait("two grants", |spans| {
            spans.iter().filter(|s| s.name == "POST /token").count() == 2
                && servers(spans).len() == 2
        })
        .await;
    let raw = collector.raw();
    let contains = |needle: &[u8]| raw.windows(needle.len()).any(|w| w == needle);
    let secrets = emulator.issued_secrets();
    assert!(
        secrets.len() >= 2,
        "the emulator issued tokens: {secrets:?}"
    );
    for secret in secrets {
        assert!(!contains(secret.as_bytes()), "a token was exported");
    }
    // Every JWT (the assertion, any JWT-shaped token) starts with `{"` in base64url.
    assert!(!contains(b"eyJ"), "a JWT was exported");
    let key = std::fs::read_to_string(support::fixture("app-key-pkcs8.pem")).unwrap();
    for line in key.lines().filter(|line| !line.starts_with("-----")) {
        assert!(
            !contains(line.as_bytes()),
            "a line of the private key was exported"
        );
    }
}

#[tokio::test]
async fn a_collector_that_is_down_fails_no_request_and_is_counted() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let m = support::merchant();
    let emulator = Builder::default().emulator(&[m]).await;
    let proxy = spawn_proxy(
        &emulator,
        &format!("telemetry:\n  traces:\n    endpoint: http://{closed}\n"),
    );
    requests_succeed_while_exports_fail(&proxy, m).await;
}

#[tokio::test]
async fn a_grpc_collector_answering_unavailable_is_counted_as_a_failed_export() {
    let collector = Collector::unavailable().await;
    let m = support::merchant();
    let emulator = Builder::default().emulator(&[m]).await;
    let proxy = traced(&emulator, &collector, "", "");
    requests_succeed_while_exports_fail(&proxy, m).await;
}

#[tokio::test]
async fn a_batch_a_grpc_collector_refuses_as_invalid_is_not_sent_again() {
    let collector = Collector::refusing("3", usize::MAX).await;
    let m = support::merchant();
    let emulator = Builder::default().emulator(&[m]).await;
    let proxy = traced(&emulator, &collector, "", "");
    requests_succeed_while_exports_fail(&proxy, m).await;
    // The exporter retries before it reports a failure: any retry has been made by now.
    assert!(collector.calls() >= 1);
    assert_eq!(
        collector.repeated_calls(),
        0,
        "INVALID_ARGUMENT is final under OTLP's rules; expected no batch sent twice, found \
         some among {} calls",
        collector.calls()
    );
}

#[tokio::test]
async fn a_batch_a_grpc_collector_found_unavailable_is_sent_again_with_its_deadline() {
    let collector = Collector::refusing("14", 1).await;
    let m = support::merchant();
    let emulator = Builder::default().emulator(&[m]).await;
    let proxy = traced(&emulator, &collector, "", "");
    assert_eq!(get(&proxy, m, &[]).await, 200);
    collector
        .wait("the request span, after one refusal", |spans| {
            servers(spans).len() == 1
        })
        .await;
    assert_eq!(
        collector.repeated_calls(),
        1,
        "expected the refused batch sent again once"
    );
    assert_eq!(
        proxy
            .metric("poynt_proxy_trace_export_failures_total")
            .await,
        0.0
    );
    let timeouts = collector.grpc_timeouts();
    assert_eq!(timeouts.len(), collector.calls(), "{timeouts:?}");
    assert!(timeouts.iter().all(|t| t == "5000m"), "{timeouts:?}");
}

/// Requests through `proxy` for `m` answer 200 before and after its exports have failed.
async fn requests_succeed_while_exports_fail(proxy: &ProxyProcess, m: MerchantId) {
    for _ in 0..3 {
        assert_eq!(get(proxy, m, &[]).await, 200);
    }
    support::eventually(
        "an export failure counted",
        std::time::Duration::from_secs(30),
        || async {
            proxy
                .metric("poynt_proxy_trace_export_failures_total")
                .await
                >= 1.0
        },
    )
    .await;
    assert_eq!(get(proxy, m, &[]).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spans_still_queued_are_exported_at_shutdown() {
    let collector = Collector::start().await;
    let m = support::merchant();
    let emulator = Builder::default().emulator(&[m]).await;
    let mut proxy = traced(&emulator, &collector, "", "");
    assert_eq!(get(&proxy, m, &[]).await, 200);
    // The batch goes out every 5 s; the process exits sooner, after flushing it.
    let status = tokio::task::spawn_blocking(move || proxy.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(
        servers(&collector.spans()).len(),
        1,
        "{:?}",
        names(&collector.spans())
    );
}

#[tokio::test]
async fn a_renewal_ahead_of_expiry_is_a_trace_of_its_own_linked_to_the_request() {
    let collector = Collector::start().await;
    let m = support::merchant();
    let emulator = Builder::default()
        .token_ttl(std::time::Duration::from_secs(4))
        .emulator(&[m])
        .await;
    let proxy = traced(
        &emulator,
        &collector,
        "",
        "tokens:\n  refresh_at: 0.5\n  refresh_jitter: 0.1\n",
    );
    // Steady traffic until a request finds the token past its refresh point (about 2 s).
    let mut ticker = tokio::time::interval(std::time::Duration::from_millis(100));
    for _ in 0..60 {
        ticker.tick().await;
        assert_eq!(get(&proxy, m, &[]).await, 200);
        if emulator.stats().token_calls.refresh_token.total > 0 {
            break;
        }
    }
    let renewal = |spans: &[Span]| {
        spans
            .iter()
            .find(|s| {
                s.name == "grant" && attr(s, "poynt.grant.reason").as_deref() == Some("renewal")
            })
            .cloned()
    };
    let spans = collector
        .wait("the renewal's grant", |spans| renewal(spans).is_some())
        .await;
    let grant = renewal(&spans).unwrap();
    assert!(grant.parent_span_id.is_empty(), "a root span");
    let requests: Vec<_> = servers(&spans).iter().map(|s| s.trace_id.clone()).collect();
    assert!(!requests.contains(&grant.trace_id), "a trace of its own");
    assert_eq!(grant.links.len(), 1, "{:?}", grant.links);
    assert!(
        requests.contains(&grant.links[0].trace_id),
        "linked to the request that noticed it"
    );
    let spans = collector
        .wait("the renewal's /token call", |spans| {
            spans
                .iter()
                .any(|s| s.name == "POST /token" && s.parent_span_id == grant.span_id)
        })
        .await;
    let call = spans
        .iter()
        .find(|s| s.name == "POST /token" && s.parent_span_id == grant.span_id)
        .unwrap();
    assert_eq!(
        attr(call, "poynt.grant.kind").as_deref(),
        Some("refresh_token")
    );
}
