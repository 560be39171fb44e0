//! The proxy end to end against the emulator on loopback: forwarding, the token broker's
//! single flight, renewals, the 401 retry, failure handling and input validation.

mod support;

use std::time::Duration;

use futures_util::future::join_all;
use poynt_emulator::Fault;
use serde_json::Value;
use support::{Builder, HEADER, Harness, assert_poynt_error, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn sha256_hex(data: &[u8]) -> String {
    support::hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref())
}

#[tokio::test]
async fn every_method_forwards_intact_with_the_token_and_without_caller_secrets() {
    let h = Harness::new().await;
    let m = h.merchants[0];
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        let body = format!("{{\"method\":\"{method}\",\"n\":[1,2,3]}}").repeat(50);
        let response = h
            .client
            .request(
                method.parse().unwrap(),
                h.url(&format!("/businesses/{m}/orders/42?limit=5&q=a%20b")),
            )
            .header(HEADER, m.to_string().to_uppercase())
            .header("authorization", "Bearer caller-secret")
            .header("connection", "x-hop-secret")
            .header("x-hop-secret", "1")
            .header("x-custom", "kept")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{method}");
        assert!(response.headers().contains_key("poynt-request-id"));
        let echo: Value = response.json().await.unwrap();
        assert_eq!(echo["method"], method);
        assert_eq!(echo["path"], format!("/businesses/{m}/orders/42"));
        assert_eq!(echo["query"], "limit=5&q=a%20b");
        assert_eq!(echo["body_len"], body.len());
        assert_eq!(echo["body_sha256"], sha256_hex(body.as_bytes()), "{method}");
        let headers = echo["headers"].as_object().unwrap();
        // The emulator answered 200, so it saw a valid bearer token for this merchant; its
        // echo redacts the token itself.
        assert_eq!(headers["authorization"], "Bearer [redacted]");
        assert_eq!(headers["api-version"], "1.2");
        assert_eq!(headers["x-custom"], "kept");
        assert_eq!(
            headers["host"],
            h.emulator.addr().to_string(),
            "Host is the upstream's"
        );
        for absent in ["x-poynt-merchant-id", "x-hop-secret", "connection"] {
            assert!(
                !headers.contains_key(absent),
                "{absent} reached Poynt: {headers:?}"
            );
        }
        assert!(headers.contains_key("poynt-request-id"));
    }
    let head = h
        .client
        .head(h.url(&format!("/businesses/{m}/orders")))
        .header(HEADER, m.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(h.stats().api_calls, 7);
    h.stop().await;
}

#[tokio::test]
async fn upstream_errors_pass_through_untouched() {
    let h = Harness::new().await;
    let m = h.merchants[0];
    let response = h.get(m, "/orders?_status=409").await;
    assert_eq!(response.status(), 409);
    let echo: Value = response.json().await.unwrap();
    assert_eq!(echo["path"], format!("/businesses/{m}/orders"));
    let response = h.get(m, "/orders?_bytes=1000&_chunked=1").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().len(), 1000);
    h.stop().await;
}

#[tokio::test]
async fn five_hundred_concurrent_requests_for_a_cold_merchant_make_one_grant() {
    // All 500 in flight at once, waiting on the one grant: under the default cap of 64 the
    // rest would wait at most 1 s for a slot, and a loaded machine could answer them 429.
    let h = Builder::default()
        .yaml("server:\n  http2_max_concurrent_streams: 1000\nlimits:\n  max_in_flight: 500")
        .start()
        .await;
    let m = h.merchants[0];
    h.emulator.set_fault(Fault {
        token_delay_ms: Some(300),
        ..Fault::default()
    });
    let client = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let requests = (0..500).map(|_| {
        client
            .get(h.url(&format!("/businesses/{m}/orders")))
            .header(HEADER, m.to_string())
            .send()
    });
    let responses = join_all(requests).await;
    for response in responses {
        assert_eq!(response.unwrap().status(), 200);
    }
    let stats = h.stats();
    assert_eq!(stats.token_calls_total, 1, "{stats:?}");
    assert_eq!(stats.api_calls, 500);
    h.stop().await;
}

#[tokio::test]
async fn two_hundred_merchants_times_five_requests_make_two_hundred_grants() {
    // 200 merchants never seen before: more than the default new-merchant burst.
    let h = Builder::default()
        .merchants(200)
        .yaml("tokens:\n  new_merchant_grant_burst: 200")
        .start()
        .await;
    let requests = h
        .merchants
        .iter()
        .flat_map(|m| std::iter::repeat_n(*m, 5))
        .map(|m| h.get(m, "/orders"));
    for response in join_all(requests).await {
        assert_eq!(response.status(), 200);
    }
    let stats = h.stats();
    assert_eq!(stats.token_calls_total, 200, "{stats:?}");
    for m in &h.merchants {
        assert_eq!(
            stats.token_calls.jwt_bearer.by_merchant.get(&m.to_string()),
            Some(&1),
            "{m}"
        );
    }
    h.stop().await;
}

#[tokio::test]
async fn steady_traffic_through_short_lived_tokens_never_waits_or_sees_401() {
    let h = Builder::default()
        .token_ttl(Duration::from_secs(5))
        .yaml("tokens:\n  refresh_at: 0.6\n  refresh_jitter: 0.1")
        .start()
        .await;
    let m = h.merchants[0];
    let mut ticker = tokio::time::interval(Duration::from_millis(50));
    let started = tokio::time::Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(20) && sent < 1000 {
        ticker.tick().await;
        let response = h.get(m, "/orders").await;
        assert_eq!(response.status(), 200, "request {sent}");
        sent += 1;
    }
    let stats = h.stats();
    assert_eq!(stats.api_unauthorized, 0, "{stats:?}");
    assert_eq!(stats.token_calls.jwt_bearer.total, 1, "{stats:?}");
    assert!(
        stats.token_calls.refresh_token.total >= 4,
        "renewals: {stats:?}"
    );
    assert_eq!(stats.token_calls.refresh_token.refused, 0, "{stats:?}");
    assert_eq!(stats.refresh_token_reuse, 0, "{stats:?}");
    assert_eq!(
        h.metric("poynt_proxy_token_cache_lookups_total{result=\"miss\"}")
            .await,
        1.0,
        "a caller waited for a renewal"
    );
    assert_eq!(
        h.metric("poynt_proxy_upstream_unauthorized_retries_total")
            .await,
        0.0
    );
    h.stop().await;
}

#[tokio::test]
async fn a_revoked_token_is_replaced_after_exactly_one_retry() {
    // The token is revoked right after it is issued; renewing a token that young is
    // normally declined (a storm guard), so let it count as old enough here.
    let h = Builder::default()
        .yaml("tokens:\n  unauthorized_min_token_age: 0s")
        .start()
        .await;
    let m = h.merchants[0];
    assert_eq!(h.get(m, "/orders").await.status(), 200);
    h.emulator.revoke(m);
    let body = "{\"retry\":true}";
    let response = h
        .client
        .post(h.url(&format!("/businesses/{m}/orders")))
        .header(HEADER, m.to_string())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echo: Value = response.json().await.unwrap();
    assert_eq!(
        echo["body_sha256"],
        sha256_hex(body.as_bytes()),
        "resent body differs"
    );
    let stats = h.stats();
    assert_eq!(stats.api_unauthorized, 1, "{stats:?}");
    assert_eq!(stats.api_calls, 3, "{stats:?}");
    assert_eq!(stats.token_calls_total, 2, "{stats:?}");
    assert_eq!(
        h.metric("poynt_proxy_upstream_unauthorized_retries_total")
            .await,
        1.0
    );
    h.stop().await;
}

#[tokio::test]
async fn a_large_streamed_body_gets_its_401_back_without_a_retry() {
    let h = Builder::default()
        .yaml("server:\n  retry_buffer_bytes: 1024")
        .start()
        .await;
    let m = h.merchants[0];
    assert_eq!(h.get(m, "/orders").await.status(), 200);
    h.emulator.revoke(m);
    let response = h
        .client
        .post(h.url(&format!("/businesses/{m}/orders")))
        .header(HEADER, m.to_string())
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "INVALID_ACCESS_TOKEN");
    assert_eq!(h.stats().api_unauthorized, 1);
    h.stop().await;
}

#[tokio::test]
async fn token_endpoint_down_then_back() {
    let h = Builder::default()
        .merchants(2)
        .yaml("tokens:\n  backoff_initial: 200ms\n  backoff_max: 1s")
        .start()
        .await;
    let (warm, cold) = (h.merchants[0], h.merchants[1]);
    assert_eq!(h.get(warm, "/orders").await.status(), 200);
    h.emulator.set_fault(Fault {
        token_drop: true,
        ..Fault::default()
    });
    let response = tokio::time::timeout(Duration::from_secs(5), h.get(cold, "/orders"))
        .await
        .expect("a cold merchant is answered promptly while /token is down");
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_poynt_error(&response.json().await.unwrap(), "TOKEN_UNAVAILABLE", 503);
    assert_eq!(
        h.get(warm, "/orders").await.status(),
        200,
        "warm merchant kept working"
    );

    h.emulator.set_fault(Fault {
        token_status: Some(500),
        ..Fault::default()
    });
    let response = h.get(cold, "/orders").await;
    assert_eq!(response.status(), 503);

    h.emulator.set_fault(Fault::default());
    eventually(
        "the cold merchant recovers",
        Duration::from_secs(10),
        || async { h.get(cold, "/orders").await.status() == 200 },
    )
    .await;
    h.stop().await;
}

/// The message of a proxy error body with this status and code, checked for Poynt's shape
/// and for Rust `Debug` renderings, which no caller should read.
async fn error_message(response: reqwest::Response, status: u16, code: &str) -> String {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.unwrap();
    assert_poynt_error(&body, code, status);
    let message = body["message"].as_str().unwrap().to_owned();
    assert!(
        !message.contains("Some(") && !message.contains("None"),
        "{message}"
    );
    message
}

#[tokio::test]
async fn callers_can_tell_an_unauthorized_merchant_from_an_unavailable_token() {
    let h = Builder::default()
        .merchants(2)
        .token_ttl(Duration::from_secs(2))
        .yaml("tokens:\n  backoff_initial: 50ms\n  backoff_max: 100ms")
        .start()
        .await;
    let (removed, other) = (h.merchants[0], h.merchants[1]);
    // Never authorized: Poynt's MERCHANT_NOT_AUTHORIZED from /token.
    let message = error_message(
        h.get(support::merchant(), "/orders").await,
        403,
        "MERCHANT_NOT_AUTHORIZED",
    )
    .await;
    assert!(message.contains("/connect"), "{message}");
    assert!(
        message.contains("code MERCHANT_NOT_AUTHORIZED"),
        "{message}"
    );
    // Authorized, then removed the app: once its short-lived token is due, the renewal is
    // refused.
    assert_eq!(h.get(removed, "/orders").await.status(), 200);
    h.emulator.unauthorize(removed);
    eventually(
        "the renewal is refused",
        Duration::from_secs(10),
        || async { h.get(removed, "/orders").await.status() == 403 },
    )
    .await;
    error_message(
        h.get(removed, "/orders").await,
        403,
        "MERCHANT_NOT_AUTHORIZED",
    )
    .await;
    // Poynt refusing for another reason is still Poynt's refusal, and Poynt unreachable
    // is still "try again".
    h.emulator.set_fault(Fault {
        token_status: Some(400),
        ..Fault::default()
    });
    let message = error_message(h.get(other, "/orders").await, 502, "TOKEN_UNAVAILABLE").await;
    assert!(
        message.contains("HTTP 400, code EMULATED_FAULT"),
        "{message}"
    );
    h.emulator.set_fault(Fault {
        token_drop: true,
        ..Fault::default()
    });
    eventually("the back-off ends", Duration::from_secs(10), || async {
        h.get(other, "/orders").await.status() != 502
    })
    .await;
    error_message(h.get(other, "/orders").await, 503, "TOKEN_UNAVAILABLE").await;
    h.stop().await;
}

#[tokio::test]
async fn a_refused_merchant_backs_off_instead_of_flooding_token() {
    let h = Harness::new().await;
    let stranger = support::merchant();
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let mut statuses = Vec::new();
    for _ in 0..50 {
        ticker.tick().await;
        statuses.push(h.get(stranger, "/orders").await.status().as_u16());
    }
    assert!(
        statuses.iter().all(|s| *s == 403),
        "a merchant that never authorized the app is told so, during the back-off too: {statuses:?}"
    );
    let calls = h
        .stats()
        .token_calls
        .jwt_bearer
        .by_merchant
        .get(&stranger.to_string())
        .copied()
        .unwrap_or(0);
    assert!((1..=3).contains(&calls), "{calls} /token calls in 5 s");
    assert_eq!(h.stats().api_calls, 0);
    h.stop().await;
}

#[tokio::test]
async fn bad_merchant_headers_get_400_and_nothing_goes_upstream() {
    let h = Harness::new().await;
    let m = h.merchants[0];
    let long = "a".repeat(300);
    let cases: Vec<(Vec<&[u8]>, &str)> = vec![
        (vec![], "MISSING_MERCHANT_ID"),
        (vec![b""], "INVALID_MERCHANT_ID"),
        (vec![b"abc"], "INVALID_MERCHANT_ID"),
        (vec![b"../x"], "INVALID_MERCHANT_ID"),
        (vec![long.as_bytes()], "INVALID_MERCHANT_ID"),
        (vec![b"\xc3\x28\xff\xfe"], "INVALID_MERCHANT_ID"),
        (
            vec![
                m.to_string().leak().as_bytes(),
                m.to_string().leak().as_bytes(),
            ],
            "INVALID_MERCHANT_ID",
        ),
    ];
    for (values, code) in cases {
        let mut request = h.client.get(h.url("/businesses/whatever/orders"));
        for value in &values {
            request = request.header(
                HEADER,
                reqwest::header::HeaderValue::from_bytes(value).unwrap(),
            );
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 400, "{values:?}");
        assert_poynt_error(&response.json().await.unwrap(), code, 400);
    }
    let other = support::merchant();
    let response = h.get(m, "").await;
    assert_eq!(response.status(), 200);
    let response = h
        .client
        .get(h.url(&format!("/businesses/{other}/orders")))
        .header(HEADER, m.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_poynt_error(
        &response.json().await.unwrap(),
        "MERCHANT_PATH_MISMATCH",
        403,
    );
    assert_eq!(
        h.stats().api_calls,
        1,
        "only the valid request went upstream"
    );
    h.stop().await;
}

/// Sends raw bytes and returns the response head and body as text.
async fn raw(h: &Harness, request: String) -> String {
    let mut stream = tokio::net::TcpStream::connect(h.proxy.proxy_addr())
        .await
        .unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .expect("the proxy closes the connection")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn connect_is_refused_and_absolute_form_uris_reach_only_the_configured_upstream() {
    let h = Harness::new().await;
    let m = h.merchants[0];
    let response = raw(
        &h,
        format!("CONNECT evil.example.com:443 HTTP/1.1\r\nHost: evil.example.com:443\r\n{HEADER}: {m}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 405"), "{response}");
    assert!(
        response.contains("\"code\":\"METHOD_NOT_ALLOWED\""),
        "{response}"
    );

    let response = raw(
        &h,
        format!("GET http://evil.example.com/businesses/{m}/orders?x=1 HTTP/1.1\r\nHost: evil.example.com\r\n{HEADER}: {m}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains(&format!("\"path\":\"/businesses/{m}/orders\"")),
        "{response}"
    );
    assert!(!response.contains("evil.example.com"), "{response}");
    assert_eq!(h.stats().api_calls, 1);
    h.stop().await;
}

#[tokio::test]
async fn a_body_over_the_cap_gets_413_before_anything_goes_upstream() {
    let h = Builder::default()
        .yaml("server:\n  max_request_body_bytes: 100000")
        .start()
        .await;
    let m = h.merchants[0];
    let response = h
        .client
        .post(h.url(&format!("/businesses/{m}/orders")))
        .header(HEADER, m.to_string())
        .body(vec![0u8; 100_001])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_poynt_error(&response.json().await.unwrap(), "PAYLOAD_TOO_LARGE", 413);
    let stats = h.stats();
    assert_eq!(
        (stats.api_calls, stats.token_calls_total),
        (0, 0),
        "{stats:?}"
    );
    h.stop().await;
}

#[tokio::test]
async fn health_and_readiness() {
    let h = Harness::new().await;
    let ok = h.client.get(h.admin_url("/healthz")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let ready = h.client.get(h.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.text().await.unwrap(), "ready\n");
    h.stop().await;
}

#[tokio::test]
async fn readyz_says_it_is_draining() {
    let h = Harness::new().await;
    h.proxy.shutdown();
    let draining = h.client.get(h.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(draining.status(), 503);
    let body = draining.text().await.unwrap();
    assert!(body.starts_with("not ready: draining;"), "{body}");
    h.stop().await;
}

#[tokio::test]
async fn unknown_admin_paths_are_not_found() {
    let h = Harness::new().await;
    for path in ["/admin/nope", "/admin", "/admin/tokensx", "/nope"] {
        let response = h.client.get(h.admin_url(path)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            (&body["code"], &body["httpStatus"]),
            (&"NOT_FOUND".into(), &404.into())
        );
        let message = body["message"].as_str().unwrap();
        assert!(message.ends_with(&format!("found GET {path}")), "{message}");
    }
    h.stop().await;
}

#[tokio::test]
async fn the_connection_cap_is_shared_by_all_workers() {
    let h = Builder::default()
        .yaml("server:\n  workers: 3\n  max_connections: 2")
        .start()
        .await;
    let m = h.merchants[0];
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let request = h
                .client
                .get(h.url(&format!("/businesses/{m}/orders?_delay_ms=2000")))
                .header(HEADER, m.to_string())
                .header("connection", "close")
                .send();
            tokio::spawn(request)
        })
        .collect();
    eventually(
        "two slow requests in flight",
        Duration::from_secs(10),
        || {
            let h = &h;
            async move { h.metric("poynt_proxy_inflight_requests").await == 2.0 }
        },
    )
    .await;
    // A third connection is not served until one of the two closes, whichever worker
    // would take it: so by the time it is answered, a slow request has been recorded.
    let third = h.get(m, "/orders").await;
    assert_eq!(third.status(), 200);
    assert!(
        h.metric("poynt_proxy_requests_total").await >= 2.0,
        "the third connection was served while two connections held the cap of 2"
    );
    for request in slow {
        assert_eq!(request.await.unwrap().unwrap().status(), 200);
    }
    h.stop().await;
}
