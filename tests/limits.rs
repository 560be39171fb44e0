//! Traffic governance toward Poynt (`src/limits/`), through the real proxy and the emulator:
//! a Poynt 429 cools its merchant down and nobody else, a merchant over its token bucket or
//! its in-flight cap gets the proxy's own 429s while other merchants are served, and
//! `observe` mode counts without refusing. With `scope: cluster`, three real replicas on one
//! real Redis hold one limit and share cool-downs, and a frozen Redis leaves each replica
//! its local share. The emulator's per-merchant counter says what reached Poynt.

mod support;

use std::time::Duration;

use futures_util::future::join_all;
use poynt_emulator::Fault;
use poynt_wire::MerchantId;
use serde_json::Value;
use support::fleet::Fleet;
use support::process::ProxyProcess;
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

    // Taken before the request: the cool-down starts when Poynt's 429 reaches the proxy,
    // which is before the caller reads it.
    let throttled_at = Instant::now();
    let (status, headers, body) = answer(harness.get(a, "").await).await;
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
    let off = Builder::default()
        .yaml("limits:\n  retries: {enabled: false}\n")
        .start()
        .await;
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
async fn by_default_a_get_that_meets_a_503_is_retried_within_the_budget() {
    let harness = Builder::default().start().await;
    let a = harness.merchants[0];
    assert_eq!(harness.get(a, "").await.status(), 200);
    harness.emulator.set_fault(Fault {
        api_error_every: Some(1),
        ..Fault::default()
    });
    // The budget starts empty and fills at 3 a second: soon one GET gets its retries.
    eventually(
        "a GET sent to Poynt more than once",
        Duration::from_secs(10),
        || async {
            let before = reached(&harness, a);
            assert_eq!(harness.get(a, "").await.status(), 503);
            reached(&harness, a) - before > 1
        },
    )
    .await;
    assert!(
        harness
            .metric("poynt_proxy_upstream_retries_total{outcome=\"retried\"}")
            .await
            >= 1.0
    );
    harness.stop().await;
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

// --- Cluster-wide limits: three real replicas on one real Redis ---------------------------

/// A's rate in the fleet tests: one limit for the fleet with `scope: cluster`.
const FLEET_RATE: f64 = 20.0;
const FLEET_BURST: u32 = 5;
/// How often each replica's caller sends: ten times the whole fleet's rate in all.
const FLEET_PACE: Duration = Duration::from_millis(15);

/// `limits:` for a fleet whose merchant `a` has the rate above, kept at `scope`.
fn fleet_limits(scope: &str, a: MerchantId) -> String {
    format!(
        "limits:\n  scope: {scope}\n  replicas: 3\n  merchants:\n    \"{a}\":\n      rate: {{per_second: {FLEET_RATE}, burst: {FLEET_BURST}}}\n"
    )
}

/// Calls for `merchant` that reached the fleet's emulator.
fn fleet_reached(fleet: &Fleet, merchant: MerchantId) -> u64 {
    fleet
        .emulator
        .stats()
        .api_calls_by_merchant
        .get(&merchant.to_string())
        .copied()
        .unwrap_or(0)
}

/// A GET for `merchant` through `replica`: its status and `Poynt-Proxy-Limit-Source`.
async fn through(
    client: &reqwest::Client,
    replica: &ProxyProcess,
    merchant: MerchantId,
) -> (u16, Option<String>) {
    let response = replica.orders(client, merchant).await;
    let source = response
        .headers()
        .get(SOURCE)
        .map(|v| v.to_str().unwrap().to_owned());
    (response.status().as_u16(), source)
}

/// Sends GETs for `merchant` through every replica at once, one caller per replica each
/// sending every [`FLEET_PACE`], for `period`. Every answer must be a 200 or the proxy's
/// own 429. Returns (the 200s, what one fleet-wide limit admits over the time taken).
async fn load(replicas: &[ProxyProcess], merchant: MerchantId, period: Duration) -> (u64, f64) {
    let started = Instant::now();
    let callers = replicas.iter().map(|replica| async move {
        let client = support::client();
        let mut pace = tokio::time::interval(FLEET_PACE);
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut served = 0;
        let most = period.as_millis() / FLEET_PACE.as_millis();
        for _ in 0..most {
            pace.tick().await;
            if started.elapsed() >= period {
                break;
            }
            match through(&client, replica, merchant).await {
                (200, _) => served += 1,
                (429, Some(source)) if source == "proxy" => {}
                other => panic!("expected a 200 or the proxy's 429; found {other:?}"),
            }
        }
        served
    });
    let served = join_all(callers).await.into_iter().sum();
    let fleet_wide = f64::from(FLEET_BURST) + FLEET_RATE * started.elapsed().as_secs_f64();
    (served, fleet_wide)
}

/// Asserts `served` is within 10 % of what one fleet-wide limit admits.
fn assert_fleet_wide(served: u64, fleet_wide: f64, when: &str) {
    assert!(
        (served as f64 - fleet_wide).abs() <= fleet_wide * 0.1,
        "{when}: {served} requests served; expected {fleet_wide:.0} within 10 %"
    );
}

#[tokio::test]
async fn three_replicas_on_one_redis_hold_one_merchant_limit_and_local_scope_holds_three() {
    let window = Duration::from_secs(3);
    let a = support::merchant();
    let fleet = Fleet::new(&[a], Duration::from_secs(3600), &fleet_limits("cluster", a)).await;
    let replicas = fleet.replicas(3);
    let (served, fleet_wide) = load(&replicas, a, window).await;
    assert_eq!(fleet_reached(&fleet, a), served, "every 200 reached Poynt");
    assert_fleet_wide(served, fleet_wide, "scope cluster");
    for replica in &replicas {
        assert_eq!(
            replica
                .metric("poynt_proxy_limits_scope{scope=\"cluster\"}")
                .await,
            1.0
        );
    }
    drop(replicas);

    // The same load with the limit kept by each replica: about three times as much.
    let local = Fleet::new(&[a], Duration::from_secs(3600), &fleet_limits("local", a)).await;
    let replicas = local.replicas(3);
    let (served, fleet_wide) = load(&replicas, a, window).await;
    assert!(
        served as f64 >= fleet_wide * 2.5,
        "scope local: {served} served; expected about three times {fleet_wide:.0}"
    );
}

#[tokio::test]
async fn a_poynt_429_met_by_one_replica_holds_the_merchant_back_on_every_replica() {
    let (a, b) = (support::merchant(), support::merchant());
    let fleet = Fleet::new(
        &[a, b],
        Duration::from_secs(3600),
        "limits:\n  scope: cluster\n",
    )
    .await;
    let replicas = fleet.replicas(3);
    let client = support::client();
    let mut fault = Fault::default();
    fault.api_throttle.insert(a.to_string(), 3);
    fleet.emulator.set_fault(fault);
    assert_eq!(
        through(&client, &replicas[0], a).await,
        (429, Some("poynt".to_owned()))
    );
    let throttled_at = Instant::now();
    fleet.emulator.set_fault(Fault::default());
    let cooldown = fleet.key(&format!("cooldown:{a}"));
    eventually(
        "the cool-down shared through Redis",
        Duration::from_secs(2),
        || async { fleet.redis.get(&cooldown).await.is_some() },
    )
    .await;
    // Poynt would answer now; replicas 2 and 3 never met its 429, yet hold A back.
    for replica in &replicas[1..] {
        for _ in 0..5 {
            assert_eq!(
                through(&client, replica, a).await,
                (429, Some("proxy".to_owned()))
            );
        }
        assert_eq!(through(&client, replica, b).await, (200, None));
    }
    assert!(
        throttled_at.elapsed() < Duration::from_secs(3),
        "the checks above ran within the cool-down"
    );
    assert_eq!(
        fleet_reached(&fleet, a),
        1,
        "A reached Poynt while cooling down"
    );
    eventually(
        "A served by replica 3 after the cool-down",
        Duration::from_secs(10),
        || async { through(&client, &replicas[2], a).await.0 == 200 },
    )
    .await;
    assert!(throttled_at.elapsed() >= Duration::from_secs(3));
}

#[tokio::test]
async fn with_redis_frozen_replicas_answer_by_their_local_share_then_share_the_limit_again() {
    let window = Duration::from_secs(3);
    // B has no rate: its requests only read its cool-down, and leave A's bucket alone.
    let (a, b) = (support::merchant(), support::merchant());
    let fleet = Fleet::new(
        &[a, b],
        Duration::from_secs(3600),
        &fleet_limits("cluster", a),
    )
    .await;
    let replicas = fleet.replicas(3);
    let (served, fleet_wide) = load(&replicas, a, window).await;
    assert_fleet_wide(served, fleet_wide, "before the outage");

    fleet.redis.freeze();
    let before = fleet_reached(&fleet, a);
    let (served, fleet_wide) = load(&replicas, a, window).await;
    // Each replica keeps a third of the limit: every request is answered, and the fleet
    // stays within its limit (the first request to meet the outage is decided locally).
    assert!(served > 0, "nothing served during the outage");
    assert!(
        served as f64 <= fleet_wide * 1.1,
        "during the outage: {served} served; expected at most {fleet_wide:.0}"
    );
    assert_eq!(fleet_reached(&fleet, a) - before, served);
    for replica in &replicas {
        assert_eq!(
            replica
                .metric("poynt_proxy_limits_scope{scope=\"local_share\"}")
                .await,
            1.0
        );
        // Only the requests that met the outage asked Redis and waited for store.timeout;
        // every later one was decided at once by the local share.
        let waited = replica
            .metric("poynt_proxy_store_operations_total{op=\"limit\",outcome=\"unavailable\"}")
            .await;
        assert!(
            (1.0..=2.0).contains(&waited),
            "{waited} limit checks waited for Redis"
        );
    }
    fleet.redis.thaw();
    // The first request after the store's probe saw Redis back switches the replica back.
    let client = support::client();
    for replica in &replicas {
        eventually(
            "the limits shared again",
            Duration::from_secs(10),
            || async {
                assert_eq!(through(&client, replica, b).await.0, 200);
                replica
                    .metric("poynt_proxy_limits_scope{scope=\"cluster\"}")
                    .await
                    == 1.0
            },
        )
        .await;
    }
    let (served, fleet_wide) = load(&replicas, a, window).await;
    assert_fleet_wide(served, fleet_wide, "after the outage");
    assert!(
        replicas[0]
            .logs()
            .contains("cluster-wide limits unreachable"),
        "the switch to the local share was logged"
    );
}
