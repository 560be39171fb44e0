//! The holes an adversarial review found, each closed: silent connections, stalled bodies,
//! path spellings, cancelled grants, 401 storms, unknown-merchant floods, the admin API,
//! hostile /token answers, odd request targets and headers, and grant races. Every test
//! drives the real proxy and emulator on loopback ports.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::join_all;
use poynt_emulator::Fault;
use serde_json::Value;
use support::{Builder, HEADER, Harness, assert_poynt_error, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The HTTP/2 connection preface and an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const H2_EMPTY_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

/// Reads until the peer closes, at most `limit`; whether it closed in time.
async fn closes_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut sink = Vec::new();
    tokio::time::timeout(limit, stream.read_to_end(&mut sink))
        .await
        .is_ok()
}

/// Sends raw bytes and reads one HTTP/1 response (head and a Content-Length body), at most
/// ten seconds.
async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> (u16, String, Value) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_response(&mut stream).await
}

async fn read_response(stream: &mut TcpStream) -> (u16, String, Value) {
    let mut buf = Vec::new();
    let read = async {
        loop {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if body.len() >= length || n == 0 {
                    return (head.to_owned(), body.to_owned());
                }
            }
            assert!(n > 0, "connection closed before a response: {text:?}");
        }
    };
    let (head, body) = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("a response within ten seconds");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
    (
        status,
        head,
        serde_json::from_str(&body).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn silent_connections_are_closed_after_the_header_read_timeout_and_readyz_reports_a_full_cap()
{
    let h = Builder::default()
        .yaml("server:\n  max_connections: 6\n  header_read_timeout: 1s")
        .start()
        .await;
    let addr = h.proxy.proxy_addr();
    let mut sockets = Vec::new();
    for kind in 0..6 {
        let mut socket = TcpStream::connect(addr).await.unwrap();
        match kind % 3 {
            0 => {}
            1 => socket.write_all(&H2_PREFACE[..10]).await.unwrap(),
            _ => {
                socket.write_all(H2_PREFACE).await.unwrap();
                socket.write_all(H2_EMPTY_SETTINGS).await.unwrap();
            }
        }
        sockets.push(socket);
    }
    eventually(
        "readiness reflects the full cap",
        Duration::from_secs(5),
        || async {
            let ready = h.client.get(h.admin_url("/readyz")).send().await.unwrap();
            ready.status() == 503 && ready.text().await.unwrap().contains("max_connections")
        },
    )
    .await;
    assert_eq!(
        h.metric("poynt_proxy_connections{listener=\"proxy\",state=\"available\"}")
            .await,
        0.0
    );
    assert_eq!(
        h.metric("poynt_proxy_connections{listener=\"proxy\",state=\"open\"}")
            .await,
        6.0
    );
    for (kind, socket) in sockets.iter_mut().enumerate() {
        assert!(
            closes_within(socket, Duration::from_secs(10)).await,
            "silent connection {kind} was never closed"
        );
    }
    eventually("ready again", Duration::from_secs(5), || async {
        h.client
            .get(h.admin_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;
    assert_eq!(h.get(h.merchants[0], "/orders").await.status(), 200);
    h.stop().await;
}

#[tokio::test]
async fn an_idle_http2_connection_gets_goaway_after_the_idle_timeout() {
    let h = Builder::default()
        .yaml("server:\n  idle_timeout: 1s")
        .start()
        .await;
    let m = h.merchants[0];
    let stream = TcpStream::connect(h.proxy.proxy_addr()).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let connection = tokio::spawn(connection);
    let request = http::Request::get(h.url(&format!("/businesses/{m}/orders")))
        .header(HEADER, m.to_string())
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    drop(response);
    let ended = tokio::time::timeout(Duration::from_secs(10), connection).await;
    assert!(ended.is_ok(), "the idle HTTP/2 connection stayed open");
    h.stop().await;
}

#[tokio::test]
async fn an_idle_http1_connection_outlives_the_header_read_timeout_until_the_keepalive_timeout() {
    let h = Builder::default()
        .yaml("server:\n  header_read_timeout: 1s\n  keepalive_timeout: 5s")
        .start()
        .await;
    let m = h.merchants[0];
    let request =
        format!("GET /businesses/{m}/orders HTTP/1.1\r\nhost: x\r\n{HEADER}: {m}\r\n\r\n");
    let mut kept = TcpStream::connect(h.proxy.proxy_addr()).await.unwrap();
    kept.write_all(request.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut kept).await.0, 200);
    // A silent connection opened after that response is closed once header_read_timeout has
    // passed; two, one after the other, and the kept connection has been idle for twice that.
    for _ in 0..2 {
        let mut silent = TcpStream::connect(h.proxy.proxy_addr()).await.unwrap();
        assert!(
            closes_within(&mut silent, Duration::from_secs(10)).await,
            "the silent connection was never closed"
        );
    }
    kept.write_all(request.as_bytes()).await.unwrap();
    assert_eq!(
        read_response(&mut kept).await.0,
        200,
        "the second request on the kept connection is answered"
    );
    assert!(
        closes_within(&mut kept, Duration::from_secs(10)).await,
        "the idle connection was never closed after the keep-alive timeout"
    );
    h.stop().await;
}

#[tokio::test]
async fn an_unfinished_head_and_a_silent_connection_get_the_header_read_timeout_not_the_keepalive()
{
    let h = Builder::default()
        .yaml("server:\n  header_read_timeout: 1s\n  keepalive_timeout: 10m")
        .start()
        .await;
    let m = h.merchants[0];
    let addr = h.proxy.proxy_addr();
    let request =
        format!("GET /businesses/{m}/orders HTTP/1.1\r\nhost: x\r\n{HEADER}: {m}\r\n\r\n");
    let mut kept = TcpStream::connect(addr).await.unwrap();
    kept.write_all(request.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut kept).await.0, 200);
    kept.write_all(&request.as_bytes()[..20]).await.unwrap();
    let mut begun = TcpStream::connect(addr).await.unwrap();
    begun.write_all(&request.as_bytes()[..20]).await.unwrap();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    for (what, socket) in [
        ("a head begun after a response", &mut kept),
        ("a first head begun", &mut begun),
        ("a silent connection", &mut silent),
    ] {
        assert!(
            closes_within(socket, Duration::from_secs(10)).await,
            "{what} was not closed after the header read timeout"
        );
    }
    h.stop().await;
}

#[tokio::test]
async fn a_stalled_small_body_gets_408_in_poynts_shape_and_nothing_goes_upstream() {
    let h = Builder::default()
        .yaml("server:\n  body_read_timeout: 1s")
        .start()
        .await;
    let m = h.merchants[0];
    let request = format!(
        "POST /businesses/{m}/orders HTTP/1.1\r\nhost: x\r\n{HEADER}: {m}\r\ncontent-length: 60000\r\n\r\n0123456789"
    );
    let (status, _, body) = raw_exchange(h.proxy.proxy_addr(), request.as_bytes()).await;
    assert_eq!(status, 408);
    assert_poynt_error(&body, "REQUEST_TIMEOUT", 408);
    assert_eq!(h.stats().api_calls, 0);
    h.stop().await;
}

#[tokio::test]
async fn a_stalled_streamed_body_gets_408_and_aborts_the_upstream_request() {
    let h = Builder::default()
        .yaml("server:\n  body_read_timeout: 1s\n  retry_buffer_bytes: 1024")
        .start()
        .await;
    let m = h.merchants[0];
    let mut stream = TcpStream::connect(h.proxy.proxy_addr()).await.unwrap();
    let head = format!(
        "POST /businesses/{m}/orders HTTP/1.1\r\nhost: x\r\n{HEADER}: {m}\r\ncontent-length: 200000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&vec![b'x'; 70_000]).await.unwrap();
    let (status, _, body) = read_response(&mut stream).await;
    assert_eq!(status, 408);
    assert_poynt_error(&body, "REQUEST_TIMEOUT", 408);
    eventually(
        "the emulator saw the upload broken off",
        Duration::from_secs(5),
        || async { h.stats().api_incomplete_bodies == 1 },
    )
    .await;
    h.stop().await;
}

#[tokio::test]
async fn paths_spelled_around_the_guard_never_reach_poynt() {
    let h = Harness::new().await;
    let m = h.merchants[0];
    let o = support::merchant();
    let spellings = [
        format!("/%62usinesses/{o}/orders"),
        format!("/businesse%73/{o}/orders"),
        format!("/businesses;v=1/{o}/orders"),
        format!("/businesses/{m}/..;/{o}/orders"),
        format!("/businesses/{m}/..%2F{o}/orders"),
        format!("/businesses/{m}/%252e%252e/{o}"),
        format!("/businesses/{m}/%5C..%5C{o}/orders"),
        format!("//businesses/{o}/orders"),
    ];
    for path in &spellings {
        let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\n{HEADER}: {m}\r\n\r\n");
        let (status, _, body) = raw_exchange(h.proxy.proxy_addr(), request.as_bytes()).await;
        assert!(matches!(status, 400 | 403), "{path}: {status}");
        let code = if status == 400 {
            "INVALID_PATH"
        } else {
            "MERCHANT_PATH_MISMATCH"
        };
        assert_poynt_error(&body, code, status);
    }
    assert_eq!(h.stats().api_calls, 0, "a spelling reached Poynt");
    // The same spellings naming the header's own merchant are forwarded, normalised.
    let response = h
        .client
        .get(h.url(&format!("/%62usinesses/{m}/or%64ers")))
        .header(HEADER, m.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echo: Value = response.json().await.unwrap();
    assert_eq!(echo["path"], format!("/businesses/{m}/orders"));
    h.stop().await;
}

#[tokio::test]
async fn a_caller_hanging_up_mid_grant_leaves_the_rotated_refresh_token_with_the_merchant() {
    let h = Harness::new().await;
    let m = h.merchants[0];
    assert_eq!(h.get(m, "/orders").await.status(), 200);
    let evicted = h
        .client
        .delete(h.admin_url(&format!("/admin/tokens/{m}")))
        .send()
        .await
        .unwrap();
    assert_eq!(evicted.status(), 200);
    h.emulator.set_fault(Fault {
        token_delay_ms: Some(1500),
        ..Fault::default()
    });
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let gave_up = impatient
        .get(h.url(&format!("/businesses/{m}/orders")))
        .header(HEADER, m.to_string())
        .send()
        .await;
    assert!(
        gave_up.is_err(),
        "the caller hung up before the grant ended"
    );
    eventually(
        "the refresh grant runs to completion without its caller",
        Duration::from_secs(10),
        || async { h.stats().token_calls.refresh_token.total == 1 },
    )
    .await;
    h.emulator.set_fault(Fault::default());
    eventually(
        "the grant's token is cached",
        Duration::from_secs(5),
        || async {
            let status: Value = h
                .client
                .get(h.admin_url(&format!("/admin/tokens/{m}")))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            status["grant"] == "refresh_token" && status["has_refresh_token"] == true
        },
    )
    .await;
    assert_eq!(h.get(m, "/orders").await.status(), 200);
    let refresh = h
        .client
        .post(h.admin_url(&format!("/admin/tokens/{m}/refresh")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        refresh.status(),
        200,
        "the rotated refresh token still works"
    );
    let stats = h.stats();
    assert_eq!(stats.token_calls.jwt_bearer.total, 1, "{stats:?}");
    assert_eq!(stats.token_calls.refresh_token.total, 2, "{stats:?}");
    assert_eq!(stats.token_calls.refresh_token.refused, 0, "{stats:?}");
    assert_eq!(stats.refresh_token_reuse, 0, "{stats:?}");
    h.stop().await;
}

#[tokio::test]
async fn a_hundred_upstream_401s_make_at_most_two_token_calls() {
    let h = Builder::default()
        .yaml("tokens:\n  unauthorized_min_token_age: 0s")
        .start()
        .await;
    let m = h.merchants[0];
    for n in 0..100 {
        let response = h.get(m, "/orders?_status=401").await;
        assert_eq!(response.status(), 401, "request {n}");
    }
    let stats = h.stats();
    assert!(stats.token_calls_total <= 2, "{stats:?}");
    assert_eq!(
        h.metric("poynt_proxy_upstream_unauthorized_total{action=\"renewed\"}")
            .await,
        1.0
    );
    assert_eq!(
        h.metric("poynt_proxy_upstream_unauthorized_total{action=\"passed_through\"}")
            .await,
        99.0
    );
    h.stop().await;
}

#[tokio::test]
async fn a_401_on_a_streamed_body_drops_the_token_so_the_next_request_gets_a_new_one() {
    let h = Builder::default()
        .yaml("tokens:\n  unauthorized_min_token_age: 0s")
        .start()
        .await;
    let m = h.merchants[0];
    assert_eq!(h.get(m, "/orders").await.status(), 200);
    let response = h
        .client
        .post(h.url(&format!("/businesses/{m}/orders?_status=401")))
        .header(HEADER, m.to_string())
        .body(vec![b'x'; 300 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(h.stats().token_calls_total, 1);
    assert_eq!(h.get(m, "/orders").await.status(), 200);
    assert_eq!(
        h.stats().token_calls_total,
        2,
        "the GET went out with a new token"
    );
    assert_eq!(
        h.metric("poynt_proxy_upstream_unauthorized_retries_total")
            .await,
        0.0,
        "neither request was resent"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_token_younger_than_the_minimum_age_is_not_renewed_on_401() {
    let h = Harness::new().await;
    let m = h.merchants[0];
    for _ in 0..5 {
        assert_eq!(h.get(m, "/orders?_status=401").await.status(), 401);
    }
    assert_eq!(h.stats().token_calls_total, 1);
    assert_eq!(
        h.metric("poynt_proxy_upstream_unauthorized_total{action=\"passed_through\"}")
            .await,
        5.0
    );
    h.stop().await;
}

#[tokio::test]
async fn an_allow_list_refuses_other_merchants_with_403_before_any_grant() {
    let allowed = support::merchant();
    let h = Builder::default()
        .yaml(&format!("merchant:\n  allow: [\"{allowed}\"]"))
        .start()
        .await;
    h.emulator.authorize(allowed);
    let stranger = h.merchants[0];
    let response = h.get(stranger, "/orders").await;
    assert_eq!(response.status(), 403);
    assert_poynt_error(&response.json().await.unwrap(), "MERCHANT_NOT_ALLOWED", 403);
    assert_eq!(h.stats().token_calls_total, 0);
    assert_eq!(h.get(allowed, "/orders").await.status(), 200);
    h.stop().await;
}

#[tokio::test]
async fn forty_parallel_admin_refreshes_make_one_grant() {
    let h = Harness::new().await;
    let m = h.merchants[0];
    assert_eq!(h.get(m, "/orders").await.status(), 200);
    h.emulator.set_fault(Fault {
        token_delay_ms: Some(300),
        ..Fault::default()
    });
    let url = h.admin_url(&format!("/admin/tokens/{m}/refresh"));
    let refreshes = (0..40).map(|_| h.client.post(&url).send());
    for response in join_all(refreshes).await {
        assert_eq!(response.unwrap().status(), 200);
    }
    let stats = h.stats();
    assert_eq!(stats.token_calls_total, 2, "{stats:?}");
    assert_eq!(stats.refresh_token_reuse, 0);
    h.stop().await;
}

#[tokio::test]
async fn the_admin_token_list_pages_in_business_id_order() {
    let h = Builder::default().merchants(5).start().await;
    for m in &h.merchants {
        assert_eq!(h.get(*m, "/orders").await.status(), 200);
    }
    let mut expected: Vec<String> = h.merchants.iter().map(ToString::to_string).collect();
    expected.sort();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    for page in 0..5 {
        let query = match &after {
            Some(after) => format!("?limit=2&after={after}"),
            None => "?limit=2".to_owned(),
        };
        let body: Value = h
            .client
            .get(h.admin_url(&format!("/admin/tokens{query}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let merchants = body["merchants"].as_array().unwrap();
        assert!(merchants.len() <= 2, "page {page}: {body}");
        seen.extend(
            merchants
                .iter()
                .map(|e| e["merchant"].as_str().unwrap().to_owned()),
        );
        match body["next_after"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, expected);
    let bad = h
        .client
        .get(h.admin_url("/admin/tokens?limit=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    h.stop().await;
}

#[tokio::test]
async fn a_huge_expires_in_is_clamped_to_thirty_days_without_a_panic() {
    let h = Harness::new().await;
    let m = h.merchants[0];
    h.emulator.set_fault(Fault {
        token_expires_in: Some(u64::MAX),
        ..Fault::default()
    });
    assert_eq!(h.get(m, "/orders").await.status(), 200);
    assert_eq!(h.get(m, "/orders").await.status(), 200);
    let status: Value = h
        .client
        .get(h.admin_url(&format!("/admin/tokens/{m}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let expires = humantime::parse_rfc3339(status["expires_at"].as_str().unwrap()).unwrap();
    let horizon = std::time::SystemTime::now() + Duration::from_secs(31 * 86_400);
    assert!(expires < horizon, "{status}");
    assert_eq!(
        h.metric("poynt_proxy_token_requests_total{grant=\"jwt_bearer\",outcome=\"success\"}")
            .await,
        1.0
    );
    h.stop().await;
}

#[tokio::test]
async fn fifty_merchants_with_five_second_tokens_make_one_jwt_bearer_grant_each() {
    let h = Builder::default()
        .merchants(50)
        .token_ttl(Duration::from_secs(5))
        .start()
        .await;
    h.emulator.set_fault(Fault {
        token_delay_ms: Some(300),
        ..Fault::default()
    });
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let started = tokio::time::Instant::now();
    let mut rounds = 0;
    while started.elapsed() < Duration::from_millis(11_600) && rounds < 200 {
        ticker.tick().await;
        let round = h.merchants.iter().map(|m| h.get(*m, "/orders"));
        for response in join_all(round).await {
            assert_eq!(response.status(), 200, "round {rounds}");
        }
        rounds += 1;
    }
    let stats = h.stats();
    assert_eq!(stats.token_calls.jwt_bearer.total, 50, "{stats:?}");
    assert!(
        stats.token_calls.refresh_token.total >= 50,
        "every merchant renewed with its refresh token: {stats:?}"
    );
    assert_eq!(stats.token_calls.refresh_token.refused, 0, "{stats:?}");
    assert_eq!(stats.refresh_token_reuse, 0, "{stats:?}");
    h.stop().await;
}

#[tokio::test]
async fn a_malformed_chunked_body_is_400_invalid_request_body() {
    let h = Harness::new().await;
    let m = h.merchants[0];
    let request = format!(
        "POST /businesses/{m}/orders HTTP/1.1\r\nhost: x\r\n{HEADER}: {m}\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
    );
    let (status, _, body) = raw_exchange(h.proxy.proxy_addr(), request.as_bytes()).await;
    assert_eq!(status, 400);
    assert_poynt_error(&body, "INVALID_REQUEST_BODY", 400);
    h.stop().await;
}

#[tokio::test]
async fn request_ids_outside_the_safe_alphabet_or_length_are_replaced() {
    let h = Harness::new().await;
    let m = h.merchants[0];
    for (given, kept) in [
        ("trace-123:abc.DEF_9", true),
        ("has spaces in it", false),
        (&*"x".repeat(129), false),
    ] {
        let response = h
            .client
            .get(h.url(&format!("/businesses/{m}/orders")))
            .header(HEADER, m.to_string())
            .header("poynt-request-id", given)
            .send()
            .await
            .unwrap();
        let returned = response.headers()["poynt-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let echo: Value = response.json().await.unwrap();
        assert_eq!(echo["headers"]["poynt-request-id"], returned.as_str());
        assert_eq!(returned == given, kept, "{given:?} -> {returned:?}");
        if !kept {
            assert_eq!(returned.len(), 36, "a fresh UUID: {returned}");
        }
    }
    h.stop().await;
}

#[tokio::test]
async fn trace_and_extension_methods_get_405_with_allow() {
    let h = Harness::new().await;
    let m = h.merchants[0];
    for method in ["TRACE", "PROPFIND"] {
        let response = h
            .client
            .request(
                method.parse().unwrap(),
                h.url(&format!("/businesses/{m}/orders")),
            )
            .header(HEADER, m.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{method}");
        assert_eq!(
            response.headers()["allow"],
            "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
        );
    }
    assert_eq!(h.stats().api_calls, 0);
    h.stop().await;
}

#[tokio::test]
async fn asterisk_and_authority_form_targets_get_400() {
    let h = Harness::new().await;
    let m = h.merchants[0];
    for target in ["OPTIONS * HTTP/1.1", "GET services.poynt.net:443 HTTP/1.1"] {
        let request = format!("{target}\r\nhost: x\r\n{HEADER}: {m}\r\n\r\n");
        let (status, _, body) = raw_exchange(h.proxy.proxy_addr(), request.as_bytes()).await;
        assert_eq!(status, 400, "{target}");
        assert_poynt_error(&body, "INVALID_PATH", 400);
    }
    assert_eq!(h.stats().api_calls, 0);
    h.stop().await;
}

#[tokio::test]
async fn request_trailers_and_forwarding_headers_are_not_passed_on() {
    let h = Harness::new().await;
    let m = h.merchants[0];
    let request = format!(
        "POST /businesses/{m}/orders HTTP/1.1\r\nhost: x\r\n{HEADER}: {m}\r\nforwarded: for=10.1.2.3\r\nx-forwarded-for: 10.1.2.3\r\nx-forwarded-proto: https\r\nx-kept: yes\r\nte: trailers\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-trailer-secret: 1\r\n\r\n"
    );
    let (status, _, echo) = raw_exchange(h.proxy.proxy_addr(), request.as_bytes()).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["body_len"], 5);
    assert_eq!(echo["trailers"], serde_json::json!([]), "{echo}");
    let headers = echo["headers"].as_object().unwrap();
    assert_eq!(headers["x-kept"], "yes");
    for gone in ["forwarded", "x-forwarded-for", "x-forwarded-proto"] {
        assert!(
            !headers.contains_key(gone),
            "{gone} reached Poynt: {headers:?}"
        );
    }
    h.stop().await;
}

#[tokio::test]
async fn an_evicted_token_is_never_used_again() {
    let h = Harness::new().await;
    let m = h.merchants[0];
    for round in 0..30u64 {
        let before = h.stats().token_calls_total;
        let traffic = (0..10).map(|_| h.get(m, "/orders"));
        let evict = h
            .client
            .delete(h.admin_url(&format!("/admin/tokens/{m}")))
            .send();
        let (responses, evicted) = tokio::join!(join_all(traffic), evict);
        assert_eq!(evicted.unwrap().status(), 200);
        for response in responses {
            assert_eq!(response.status(), 200, "round {round}");
        }
        // Whatever the traffic did meanwhile, the token cached after the eviction was granted
        // after it: evicting again drops it, and the next request needs a new grant.
        let status: Value = h
            .client
            .get(h.admin_url(&format!("/admin/tokens/{m}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["expires_at"].is_string() {
            assert!(
                h.stats().token_calls_total > before,
                "round {round}: {status}"
            );
        }
    }
    h.stop().await;
}

#[tokio::test]
#[allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "the proxy process's grant budget refills by the wall clock, which this measures"
)]
async fn five_thousand_unknown_merchants_stay_within_the_grant_budget_while_a_known_one_is_served()
{
    let known = support::merchant();
    let emulator = Builder::default().emulator(&[known]).await;
    let proxy = support::process::spawn_proxy(&emulator, "");
    let client = support::client();
    let url = format!("http://{}/orders", proxy.proxy);
    let known_url = format!("http://{}/businesses/{known}/orders", proxy.proxy);
    let get = |url: String, merchant: String| {
        let client = client.clone();
        async move {
            client
                .get(url)
                .header(HEADER, merchant)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(get(known_url.clone(), known.to_string()).await, 200);
    let pid = proxy.child.id();
    let rss_before = support::process::rss_kib(pid);
    let started = std::time::Instant::now();
    let statuses: Vec<(bool, u16)> = futures_util::stream::iter(0..5_000)
        .map(|n| {
            let (url, merchant, is_known) = if n % 50 == 0 {
                (known_url.clone(), known.to_string(), true)
            } else {
                (url.clone(), support::merchant().to_string(), false)
            };
            let request = get(url, merchant);
            async move { (is_known, request.await) }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    let rss_after = support::process::rss_kib(pid);
    for (is_known, status) in &statuses {
        if *is_known {
            assert_eq!(
                *status, 200,
                "the known merchant was refused during the flood"
            );
        } else {
            assert!(matches!(status, 403 | 503), "{status}");
        }
    }
    let calls = emulator.stats().token_calls_total - 1;
    let budget = 100.0 + 20.0 * elapsed.ceil() + 1.0;
    assert!(
        (calls as f64) <= budget,
        "{calls} /token calls for unknown merchants in {elapsed:.1}s; budget {budget}"
    );
    let grown_mib = rss_after.saturating_sub(rss_before) / 1024;
    assert!(grown_mib < 32, "RSS grew {grown_mib} MiB");
}

#[tokio::test]
async fn sighup_reloads_and_never_kills_the_proxy() {
    let emulator = Builder::default().emulator(&[]).await;
    let mut proxy = support::process::spawn_proxy(&emulator, "");
    proxy.signal("HUP");
    eventually(
        "the SIGHUP reload is logged",
        Duration::from_secs(10),
        || async { proxy.logs().contains("configuration reloaded") },
    )
    .await;
    assert!(
        proxy.exit_within(Duration::from_millis(200)).is_none(),
        "SIGHUP killed it"
    );
    let health = support::client()
        .get(format!("http://{}/healthz", proxy.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert!(proxy.terminate().success());
}

#[tokio::test]
async fn a_second_sigterm_exits_at_once_during_a_slow_drain() {
    let m = support::merchant();
    let emulator = Builder::default().emulator(&[m]).await;
    let mut proxy = support::process::spawn_proxy(&emulator, "server:\n  shutdown_grace: 60s\n");
    let slow = tokio::spawn(
        support::client()
            .get(format!(
                "http://{}/businesses/{m}/orders?_delay_ms=30000",
                proxy.proxy
            ))
            .header(HEADER, m.to_string())
            .send(),
    );
    eventually(
        "the slow request is in flight",
        Duration::from_secs(10),
        || async { emulator.stats().api_calls == 1 },
    )
    .await;
    proxy.signal("TERM");
    eventually("the drain starts", Duration::from_secs(10), || async {
        proxy.logs().contains("draining")
    })
    .await;
    proxy.signal("TERM");
    let status = proxy
        .exit_within(Duration::from_secs(10))
        .expect("the second SIGTERM ends the process without waiting for the drain");
    assert_eq!(status.code(), Some(130));
    assert!(proxy.logs().contains("second stop signal"));
    assert!(slow.await.unwrap().is_err(), "the slow request was cut off");
}

#[tokio::test]
async fn an_idle_http2_connection_does_not_hold_the_drain() {
    let m = support::merchant();
    let emulator = Builder::default().emulator(&[m]).await;
    let mut proxy = support::process::spawn_proxy(&emulator, "server:\n  shutdown_grace: 60s\n");
    let stream = TcpStream::connect(&proxy.proxy).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get(format!("http://{}/businesses/{m}/orders", proxy.proxy))
        .header(HEADER, m.to_string())
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    assert_eq!(sender.send_request(request).await.unwrap().status(), 200);
    proxy.signal("TERM");
    let status = proxy
        .exit_within(Duration::from_secs(10))
        .expect("the drain ends without waiting the full grace for an idle HTTP/2 peer");
    assert!(status.success());
}
