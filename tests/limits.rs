//! Traffic governance toward Poynt (`src/limits/`), through the real proxy and the emulator:
//! a Poynt 429 cools its merchant down and nobody else, a merchant over its token bucket or
//! its in-flight cap gets the proxy's own 429s while other merchants are served, and
//! `observe` mode counts without refusing. The emulator's per-merchant counter says what
//! reached Poynt.

mod support;

use std::time::Duration;

use futures_util::future::join_all;
use poynt_emulator::Fault;
use poynt_wire::MerchantId;
use serde_json::Value;
use support::{Builder, Harness, assert_poynt_error, eventually};
use tokio::time::Instant;

/// Which side sent a 429, as the proxy marks it.
const SOURCE: &str = "poynt-proxy-limit-source";

/// Calls for `merchant` that reached the emulator.
fn reached(harness: &Harness, merchant: MerchantId) -> u64 {
    harness
        .stats()
        .api_calls_by_merchant
        .get(&merchant.to_string())
        .copied()
        .unwrap_or(0)
}

/// A request's status, headers and JSON body.
async fn answer(response: reqwest::Response) -> (u16, reqwest::header::HeaderMap, Value) {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.expect("a JSON body");
    (status, headers, body)
}

#[tokio::test]
async fn a_poynt_429_keeps_that_merchant_away_from_poynt_until_retry_after_and_no_one_else() {
    let harness = Builder::default().merchants(2).start().await;
    let (a, b) = (harness.merchants[0], harness.merchants[1]);
    let mut fault = Fault::default();
    fault.api_throttle.insert(a.to_string(), 2);
    harness.emulator.set_fault(fault);

    let (status, headers, body) = answer(harness.get(a, "").await).await;
    let throttled_at = Instant::now();
    assert_eq!(status, 429);
    assert_eq!(
        body["code"], "TOO_MANY_REQUESTS",
        "Poynt's own body passes through"
    );
    assert_eq!(headers[SOURCE], "poynt");
    assert_eq!(headers["retry-after"], "2");
    assert_eq!(reached(&harness, a), 1);
    harness.emulator.set_fault(Fault::default());

    // Poynt would answer now, but A is held back: the proxy answers, Poynt sees nothing.
    for _ in 0..20 {
        let (status, headers, body) = answer(harness.get(a, "").await).await;
        if throttled_at.elapsed() >= Duration::from_secs(2) {
            break;
        }
        assert_eq!(status, 429);
        assert_poynt_error(&body, "POYNT_RATE_LIMITED", 429);
        assert_eq!(headers[SOURCE], "proxy");
        let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=2).contains(&wait), "Retry-After {wait}");
    }
    assert_eq!(
        reached(&harness, a),
        1,
        "A reached Poynt while cooling down"
    );
    let answers = join_all((0..20).map(|_| harness.get(b, ""))).await;
    assert!(
        answers.iter().all(|r| r.status() == 200),
        "B was not served"
    );
    assert_eq!(reached(&harness, b), 20);

    // After Retry-After, A is served again.
    eventually(
        "A served after its cool-down",
        Duration::from_secs(10),
        || async { harness.get(a, "").await.status() == 200 },
    )
    .await;
    assert!(throttled_at.elapsed() >= Duration::from_secs(2));
    assert_eq!(
        harness.metric("poynt_proxy_upstream_throttled_total").await,
        1.0
    );
    assert!(
        harness
            .metric(
                "poynt_proxy_limited_requests_total{action=\"refused\",reason=\"cooling_down\"}"
            )
            .await
            >= 1.0
    );
    harness.stop().await;
}

#[tokio::test]
async fn a_merchant_at_ten_times_its_rate_gets_429s_with_a_true_retry_after_and_others_are_served()
{
    let merchants: Vec<MerchantId> = (0..2).map(|_| support::merchant()).collect();
    let (a, b) = (merchants[0], merchants[1]);
    let harness = Builder::default()
        .merchant_ids(&merchants)
        .yaml(&format!(
            "limits:\n  merchants:\n    \"{a}\":\n      rate: {{per_second: 2, burst: 2}}\n"
        ))
        .start()
        .await;
    // 20 requests at once is ten times A's burst, and far above its rate.
    let answers = join_all((0..20).map(|_| harness.get(a, ""))).await;
    let mut served = 0;
    for response in answers {
        let (status, headers, body) = answer(response).await;
        if status == 200 {
            served += 1;
            continue;
        }
        assert_eq!(status, 429);
        assert_poynt_error(&body, "RATE_LIMITED", 429);
        assert_eq!(headers[SOURCE], "proxy");
        // One request fits every 500 ms: Retry-After rounds that up to a whole second.
        assert_eq!(headers["retry-after"], "1");
        assert_eq!(headers["ratelimit-limit"], "2");
        assert_eq!(headers["ratelimit-remaining"], "0");
        let reset: u64 = headers["ratelimit-reset"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(reset <= 2, "RateLimit-Reset {reset}");
    }
    assert!((2..=4).contains(&served), "{served} of 20 served");
    assert_eq!(reached(&harness, a), served);
    // B has no limit: every one of its requests reaches Poynt.
    let answers = join_all((0..20).map(|_| harness.get(b, ""))).await;
    assert!(answers.iter().all(|r| r.status() == 200), "B was refused");
    // The Retry-After is true: after it, A fits again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(harness.get(a, "").await.status(), 200);
    assert_eq!(
        harness
            .metric(
                "poynt_proxy_limited_requests_total{action=\"refused\",reason=\"rate_limited\"}"
            )
            .await,
        (20 - served) as f64
    );
    harness.stop().await;
}

#[tokio::test]
async fn a_merchant_over_its_in_flight_cap_waits_then_gets_429_while_others_pass() {
    let merchants: Vec<MerchantId> = (0..2).map(|_| support::merchant()).collect();
    let (a, b) = (merchants[0], merchants[1]);
    let harness = Builder::default()
        .merchant_ids(&merchants)
        .yaml(&format!(
            "limits:\n  in_flight_wait: 100ms\n  merchants:\n    \"{a}\":\n      max_in_flight: 2\n"
        ))
        .start()
        .await;
    // A's requests are slow at Poynt; five at once meet its cap of two.
    let slow = join_all((0..5).map(|_| harness.get(a, "?_delay_ms=1500")));
    let others = async {
        // B's requests go while A's two slots are busy.
        eventually("A's two slots taken", Duration::from_secs(10), || async {
            reached(&harness, a) == 2
        })
        .await;
        join_all((0..10).map(|_| harness.get(b, ""))).await
    };
    let (slow, others) = tokio::join!(slow, others);
    assert!(others.iter().all(|r| r.status() == 200), "B was refused");
    let mut statuses: Vec<u16> = Vec::new();
    for response in slow {
        let (status, headers, body) = answer(response).await;
        if status == 429 {
            assert_poynt_error(&body, "TOO_MANY_IN_FLIGHT", 429);
            assert_eq!(headers[SOURCE], "proxy");
        }
        statuses.push(status);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 429, 429, 429]);
    assert_eq!(reached(&harness, a), 2);
    harness.stop().await;
}

#[tokio::test]
async fn observe_mode_counts_what_it_would_refuse_and_forwards_it() {
    let harness = Builder::default()
        .yaml("limits:\n  mode: observe\n  rate: {per_second: 1, burst: 1}\n")
        .start()
        .await;
    let a = harness.merchants[0];
    for _ in 0..5 {
        assert_eq!(harness.get(a, "").await.status(), 200);
    }
    assert_eq!(reached(&harness, a), 5);
    let observed = harness
        .metric("poynt_proxy_limited_requests_total{action=\"observed\",reason=\"rate_limited\"}")
        .await;
    assert!((3.0..=4.0).contains(&observed), "{observed} observed");
    assert_eq!(
        harness
            .metric("poynt_proxy_limited_requests_total{action=\"refused\"")
            .await,
        0.0
    );
    harness.stop().await;
}

#[tokio::test]
async fn with_poynt_black_holed_the_breaker_answers_503_at_once_and_a_probe_closes_it() {
    let harness = Builder::default()
        .yaml("poynt:\n  response_timeout: 1s\nlimits:\n  breaker: {failures: 3, open_for: 3s}\n")
        .start()
        .await;
    let a = harness.merchants[0];
    assert_eq!(harness.get(a, "").await.status(), 200);
    harness.emulator.set_fault(Fault {
        api_blackhole: true,
        ..Fault::default()
    });
    // Three requests wait out their timeout: the third failure in a row opens the breaker.
    for response in join_all((0..3).map(|_| harness.get(a, ""))).await {
        let (status, _, body) = answer(response).await;
        assert_eq!(status, 504);
        assert_poynt_error(&body, "UPSTREAM_TIMEOUT", 504);
    }
    assert_eq!(
        harness.metric("poynt_proxy_upstream_breaker_open").await,
        1.0
    );
    // Now callers are answered at once, and nothing reaches Poynt.
    for _ in 0..10 {
        let (status, headers, body) = answer(harness.get(a, "").await).await;
        assert_eq!(status, 503);
        assert_poynt_error(&body, "UPSTREAM_UNAVAILABLE", 503);
        let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=3).contains(&wait), "Retry-After {wait}");
        assert!(headers.get(SOURCE).is_none());
    }
    assert_eq!(
        reached(&harness, a),
        4,
        "a request reached Poynt through an open breaker"
    );
    assert_eq!(
        harness
            .metric("poynt_proxy_upstream_breaker_refused_total")
            .await,
        10.0
    );
    // Poynt returns: the first probe after the window closes the breaker.
    harness.emulator.set_fault(Fault::default());
    eventually(
        "a probe through the breaker",
        Duration::from_secs(15),
        || async { harness.get(a, "").await.status() == 200 },
    )
    .await;
    assert_eq!(
        harness.metric("poynt_proxy_upstream_breaker_open").await,
        0.0
    );
    assert_eq!(harness.get(a, "").await.status(), 200);
    harness.stop().await;
}

/// Sends `count` GETs for the harness's merchant one after another, with Poynt answering
/// every other exchange 503: (answers that were 200, exchanges that reached Poynt).
async fn through_half_failing_poynt(harness: &Harness, count: u64) -> (u64, u64) {
    let a = harness.merchants[0];
    assert_eq!(harness.get(a, "").await.status(), 200);
    harness.emulator.set_fault(Fault {
        api_error_every: Some(2),
        ..Fault::default()
    });
    let before = reached(harness, a);
    let mut served = 0;
    for _ in 0..count {
        if harness.get(a, "").await.status() == 200 {
            served += 1;
        }
    }
    (served, reached(harness, a) - before)
}

#[tokio::test]
async fn with_half_of_poynts_answers_503_retries_help_within_their_budget() {
    const REQUESTS: u64 = 100;
    let off = Builder::default().start().await;
    let (served_without, attempts_without) = through_half_failing_poynt(&off, REQUESTS).await;
    off.stop().await;
    assert_eq!((served_without, attempts_without), (REQUESTS / 2, REQUESTS));

    let on = Builder::default()
        .yaml("limits:\n  retries: {budget_ratio: 0.2, budget_per_second: 0, backoff: 1ms}\n")
        .start()
        .await;
    let (served, attempts) = through_half_failing_poynt(&on, REQUESTS).await;
    assert!(
        attempts * 10 <= REQUESTS * 12,
        "{attempts} exchanges for {REQUESTS} requests: the budget did not hold"
    );
    assert!(
        served > served_without,
        "{served} served with retries, {served_without} without"
    );
    let retried = on
        .metric("poynt_proxy_upstream_retries_total{outcome=\"retried\"}")
        .await;
    assert_eq!(retried, (attempts - REQUESTS) as f64);
    assert!(
        on.metric("poynt_proxy_upstream_retries_total{outcome=\"budget_exhausted\"}")
            .await
            > 0.0
    );
    on.stop().await;
}

#[tokio::test]
async fn a_post_is_tried_once_unless_named_and_opted_in() {
    let yaml = |opt_in: bool| {
        format!(
            "limits:\n  retries: {{max: 1, budget_ratio: 1, budget_per_second: 0, backoff: 1ms, post_with_request_id: {opt_in}}}\n"
        )
    };
    for (opt_in, expected) in [(false, 1), (true, 2)] {
        let harness = Builder::default().yaml(&yaml(opt_in)).start().await;
        let a = harness.merchants[0];
        assert_eq!(harness.get(a, "").await.status(), 200);
        harness.emulator.set_fault(Fault {
            api_error_every: Some(1),
            ..Fault::default()
        });
        let before = reached(&harness, a);
        let response = harness
            .client
            .post(harness.url(&format!("/businesses/{a}/orders")))
            .header(support::HEADER, a.to_string())
            .header("Poynt-Request-Id", "order-42")
            .body("{}")
            .send()
            .await
            .expect("proxy answers");
        assert_eq!(response.status(), 503);
        assert_eq!(
            reached(&harness, a) - before,
            expected,
            "POST attempts with post_with_request_id: {opt_in}"
        );
        harness.stop().await;
    }
}

#[tokio::test]
async fn a_changed_limits_section_is_refused_by_a_reload_as_needing_a_restart() {
    let m = support::merchant();
    let emulator = Builder::default().emulator(&[m]).await;
    let proxy = support::process::spawn_proxy(&emulator, "");
    let config = std::fs::read_to_string(&proxy.config).unwrap();
    std::fs::write(
        &proxy.config,
        format!("{config}limits:\n  max_in_flight: 1\n"),
    )
    .unwrap();
    let response = support::client()
        .post(format!("http://{}/admin/reload", proxy.admin))
        .send()
        .await
        .expect("admin answers");
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(body["code"], "RESTART_REQUIRED", "{body}");
    assert!(body.to_string().contains("limits"), "{body}");
    assert_eq!(proxy.get(m).await, 200);
}
