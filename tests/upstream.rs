//! The proxy's own upstream client against the emulator, and against a hostile upstream
//! that sends exact bytes (`support::raw_upstream`): HTTP/1.1 connections reused (and
//! replaced when Poynt closes them, and a request that crosses Poynt's close of an idle
//! connection sent again when that is safe), every body framing passed through exactly, streamed
//! uploads; over TLS, HTTP/2 multiplexing over a bounded number of connections and a GOAWAY
//! in the middle of traffic that no caller notices. The emulator counts the connections it
//! accepts; each test first makes one request (so the token grant and its connection are
//! behind it) and then counts the connections its traffic opened. Against the hostile
//! upstream: framing fields forwarded only as the body's real framing allows, stalled
//! bodies given up, malformed chunks ending the body and its connection, and an error in
//! the bytes that came with the head answered as a 502.

mod support;

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use poynt_proxy::upstream::MAX_STREAMS_PER_CONNECTION;
use serde_json::Value;
use support::raw_upstream::{Protocol, RawUpstream};
use support::{Builder, HEADER, Harness, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The emulator's `_size=N` body: byte `i` is `i % 251`.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Waits until the emulator has closed every connection it was told to close.
async fn emulator_connections_closed(h: &Harness) {
    eventually(
        "the emulator closed its connections",
        Duration::from_secs(10),
        || async { h.emulator.goaway() == 0 },
    )
    .await;
}

/// `count` GETs of `suffix` at once; every one must answer 200.
async fn concurrent_gets(h: &Harness, count: usize, suffix: &str) {
    let m = h.merchants[0];
    let responses = join_all((0..count).map(|_| h.get(m, suffix))).await;
    for response in responses {
        assert_eq!(response.status(), 200);
    }
}

#[tokio::test]
async fn http1_connections_are_reused_and_replaced_when_poynt_closes_them() {
    let h = Harness::new().await;
    let m = h.merchants[0];
    assert_eq!(h.get(m, "/orders").await.status(), 200);
    let warm = h.stats().connections;
    for _ in 0..30 {
        assert_eq!(h.get(m, "/orders").await.status(), 200);
    }
    assert_eq!(h.stats().connections, warm, "sequential requests reuse one");

    // Poynt closes every idle connection: the pool must not hand out a dead one.
    h.emulator.goaway();
    emulator_connections_closed(&h).await;
    for _ in 0..5 {
        assert_eq!(h.get(m, "/orders").await.status(), 200);
    }
    // The /token client's idle connection was closed too, but it makes no calls here.
    assert_eq!(h.stats().connections, warm + 1, "one new connection");
    h.stop().await;
}

#[tokio::test]
async fn a_request_that_crosses_poynts_close_of_an_idle_connection_is_resent_only_if_idempotent() {
    // One worker, so every request takes its connection from the same pool.
    let h = Builder::default()
        .yaml("server:\n  workers: 1")
        .start()
        .await;
    let m = h.merchants[0];
    assert_eq!(h.get(m, "/orders").await.status(), 200);
    // `_drop_reused`: the emulator closes a connection that has served before, unanswered,
    // as the request arrives.
    let drop_reused = |method: reqwest::Method, body: &'static str| {
        h.client
            .request(
                method,
                h.url(&format!("/businesses/{m}/orders?_drop_reused=1")),
            )
            .header(HEADER, m.to_string())
            .body(body)
            .send()
    };
    for (method, body) in [
        (reqwest::Method::GET, ""),
        (reqwest::Method::PUT, "{}"),
        (reqwest::Method::DELETE, ""),
    ] {
        let before = h.stats();
        let response = drop_reused(method.clone(), body).await.unwrap();
        assert_eq!(response.status(), 200, "{method}");
        let after = h.stats();
        assert_eq!(
            after.api_calls - before.api_calls,
            2,
            "{method}: sent twice"
        );
        assert_eq!(
            after.connections - before.connections,
            1,
            "{method}: on a new connection"
        );
    }
    // Poynt may have acted on a POST before the connection died: the caller decides.
    let before = h.stats();
    let response = drop_reused(reqwest::Method::POST, "{\"amount\": 1}")
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    support::assert_poynt_error(&body, "UPSTREAM_UNAVAILABLE", 502);
    let after = h.stats();
    assert_eq!(after.api_calls - before.api_calls, 1, "POST sent once");
    assert_eq!(after.connections, before.connections, "and not again");
    // The dead connection did not go back to the pool: the next request opens a new one
    // (which the knob leaves alone) and is answered at once.
    assert_eq!(h.get(m, "/orders?_drop_reused=1").await.status(), 200);
    let last = h.stats();
    assert_eq!(last.api_calls - after.api_calls, 1);
    assert_eq!(last.connections - after.connections, 1);
    h.stop().await;
}

#[tokio::test]
async fn http1_opens_one_connection_per_request_in_flight_and_keeps_them() {
    let h = Harness::new().await;
    assert_eq!(h.get(h.merchants[0], "/orders").await.status(), 200);
    let warm = h.stats().connections;
    concurrent_gets(&h, 20, "/orders?_delay_ms=300").await;
    let opened = h.stats().connections - warm;
    assert!(
        (1..=20).contains(&opened),
        "20 requests in flight opened {opened} connections"
    );
    concurrent_gets(&h, 20, "/orders?_delay_ms=300").await;
    assert_eq!(
        h.stats().connections - warm,
        opened,
        "the second wave reused the first wave's connections"
    );
    h.stop().await;
}

#[tokio::test]
async fn chunked_long_and_bodiless_responses_pass_through_exactly() {
    let h = Harness::new().await;
    let m = h.merchants[0];
    assert_eq!(h.get(m, "/orders").await.status(), 200);
    let warm = h.stats().connections;
    for suffix in [
        "/orders?_size=300000&_chunked=1",
        "/orders?_size=300000",
        "/orders?_size=1&_chunked=1",
    ] {
        let response = h.get(m, suffix).await;
        assert_eq!(response.status(), 200, "{suffix}");
        let len: usize = suffix
            .split("_size=")
            .nth(1)
            .and_then(|rest| rest.split('&').next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        let body = response.bytes().await.unwrap();
        assert!(
            body == pattern(len),
            "{suffix}: {} bytes differ",
            body.len()
        );
    }
    let head = h
        .client
        .head(h.url(&format!("/businesses/{m}/orders?_size=5000")))
        .header(HEADER, m.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "5000");
    assert!(head.bytes().await.unwrap().is_empty());
    let no_content = h.get(m, "/orders?_status=204").await;
    assert_eq!(no_content.status(), 204);
    assert!(no_content.bytes().await.unwrap().is_empty());
    // Every body ended exactly where its framing said: the connection was reused throughout.
    assert_eq!(h.stats().connections, warm);
    h.stop().await;
}

#[tokio::test]
async fn a_chunked_upload_of_unknown_length_streams_through_intact() {
    let h = Builder::default()
        .yaml("server:\n  retry_buffer_bytes: 1024")
        .start()
        .await;
    let m = h.merchants[0];
    let pieces: Vec<Bytes> = (0..40u8).map(|i| Bytes::from(vec![i; 7919])).collect();
    let whole: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
    let stream = futures_util::stream::iter(pieces.into_iter().map(Ok::<_, std::io::Error>));
    let response = h
        .client
        .post(h.url(&format!("/businesses/{m}/orders")))
        .header(HEADER, m.to_string())
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echo: Value = response.json().await.unwrap();
    assert_eq!(echo["body_len"], whole.len());
    assert_eq!(
        echo["body_sha256"],
        support::hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &whole).as_ref())
    );
    h.stop().await;
}

#[tokio::test]
async fn http2_multiplexes_callers_over_a_bounded_number_of_connections() {
    // One worker: each worker multiplexes over connections of its own.
    // One merchant's 250 requests in flight: above its default in-flight cap.
    let h = Builder::default()
        .tls()
        .yaml("server:\n  workers: 1\nlimits:\n  max_in_flight: 1000")
        .start()
        .await;
    assert_eq!(h.get(h.merchants[0], "/orders").await.status(), 200);
    let warm = h.stats().connections;
    let callers = 2 * MAX_STREAMS_PER_CONNECTION + MAX_STREAMS_PER_CONNECTION / 2;
    concurrent_gets(&h, callers, "/orders?_delay_ms=1000").await;
    let opened = h.stats().connections - warm;
    // The warm connection takes 100 streams; 250 callers in flight need two more.
    assert!(
        (1..=2).contains(&opened),
        "{callers} requests in flight opened {opened} more connections"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_goaway_in_the_middle_of_http2_traffic_fails_no_request() {
    let h = Builder::default().tls().start().await;
    let m = h.merchants[0];
    assert_eq!(h.get(m, "/orders").await.status(), 200);
    let warm = h.stats().connections;
    let worker = |task: usize| {
        let h = &h;
        async move {
            let mut statuses = Vec::new();
            for i in 0..20 {
                let url = h.url(&format!("/businesses/{m}/orders?_delay_ms=5"));
                let request = if (task + i).is_multiple_of(2) {
                    h.client.get(url)
                } else {
                    h.client.post(url).body("{\"amount\":1}")
                };
                let response = request.header(HEADER, m.to_string()).send().await.unwrap();
                statuses.push(response.status().as_u16());
            }
            statuses
        }
    };
    let traffic = join_all((0..32).map(worker));
    let goaway = async {
        eventually("traffic under way", Duration::from_secs(10), || async {
            h.stats().api_calls >= 200
        })
        .await;
        assert!(h.emulator.goaway() >= 1, "a connection was open to be told");
    };
    let (statuses, ()) = tokio::join!(traffic, goaway);
    let statuses: Vec<u16> = statuses.into_iter().flatten().collect();
    assert_eq!(statuses.len(), 640);
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert!(
        h.stats().connections > warm,
        "traffic moved to a new connection"
    );
    h.stop().await;
}

/// Bound on a caller's wait for a body the proxy must end; not an assertion on time.
const BODY_BOUND: Duration = Duration::from_secs(30);

/// A GET of `suffix` through the proxy, read to its end: its status and body, or the error
/// the caller's request or read ended with (a response aborted before its head was flushed
/// fails the request; one aborted later fails the read).
async fn read_through(h: &Harness, suffix: &str) -> Result<(u16, Bytes), reqwest::Error> {
    let m = h.merchants[0];
    let exchange = async {
        let response = h
            .client
            .get(h.url(&format!("/businesses/{m}{suffix}")))
            .header(HEADER, m.to_string())
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.bytes().await?))
    };
    tokio::time::timeout(BODY_BOUND, exchange)
        .await
        .expect("the proxy ends the caller's response")
}

/// A proxy in front of a raw upstream speaking `protocol`, with `extra` config.
async fn hostile(protocol: Protocol, extra: &str) -> (RawUpstream, Harness) {
    let upstream = RawUpstream::start(protocol).await;
    let h = upstream.proxy(extra).await;
    (upstream, h)
}

/// The caller's GET was cut off (no complete answer), and the body failure was counted
/// with `reason`.
async fn assert_aborted(h: &Harness, reason: &str) {
    let answer = read_through(h, "/orders").await;
    assert!(
        answer.is_err(),
        "the caller got a complete answer: {answer:?}"
    );
    let failures = format!("poynt_proxy_response_body_failures_total{{reason=\"{reason}\"}}");
    assert_eq!(h.metric(&failures).await, 1.0, "{failures}");
}

#[tokio::test]
async fn a_content_length_beside_transfer_encoding_is_not_forwarded() {
    let (_upstream, h) = hostile(
        Protocol::Http1(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        ),
        "",
    )
    .await;
    let response = h.get(h.merchants[0], "/orders").await;
    assert_eq!(response.status(), 200);
    let length = response.headers().get("content-length").cloned();
    assert!(
        length.as_ref().is_none_or(|l| l == "11"),
        "a stale Content-Length reached the caller: {length:?}"
    );
    assert_eq!(&response.bytes().await.unwrap()[..], b"hello world");
    h.stop().await;
}

#[tokio::test]
async fn a_repeated_content_length_is_forwarded_as_one_value() {
    let (_upstream, h) = hostile(
        Protocol::Http1(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello"),
        "",
    )
    .await;
    let m = h.merchants[0];
    // A raw socket, to see the field lines exactly as the caller receives them.
    let mut caller = tokio::net::TcpStream::connect(h.proxy.proxy_addr())
        .await
        .unwrap();
    let request = format!(
        "GET /businesses/{m}/orders HTTP/1.1\r\nHost: proxy\r\n{HEADER}: {m}\r\nConnection: close\r\n\r\n"
    );
    caller.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(BODY_BOUND, caller.read_to_end(&mut answer))
        .await
        .expect("the proxy closes the connection")
        .unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a complete head");
    let lengths: Vec<String> = head
        .lines()
        .map(str::to_ascii_lowercase)
        .filter(|line| line.starts_with("content-length:"))
        .collect();
    assert_eq!(lengths, ["content-length: 5"], "{head}");
    assert_eq!(body, "hello");
    h.stop().await;
}

#[tokio::test]
async fn an_empty_chunk_size_line_aborts_the_body_and_its_connection() {
    let (upstream, h) = hostile(
        Protocol::Http1(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n\r\n5\r\nworld\r\n0\r\n\r\n",
        ),
        "",
    )
    .await;
    assert_aborted(&h, "framing").await;
    // The connection that carried the broken body is never reused.
    let before = upstream.accepted();
    let (status, body) = read_through(&h, "/ok").await.unwrap();
    assert_eq!((status, &body[..]), (200, b"ok".as_slice()));
    assert_eq!(upstream.accepted(), before + 1, "a new connection");
    h.stop().await;
}

#[tokio::test]
async fn a_framing_error_that_arrives_with_the_head_is_a_502() {
    let (_upstream, h) = hostile(
        Protocol::Http1(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        ),
        "",
    )
    .await;
    let response = h.get(h.merchants[0], "/orders").await;
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    support::assert_poynt_error(&body, "UPSTREAM_UNAVAILABLE", 502);
    assert_eq!(
        h.metric("poynt_proxy_requests_total{caller=\"unknown\",code=\"502\",method=\"GET\",source=\"proxy\"}")
            .await,
        1.0
    );
    h.stop().await;
}

#[tokio::test]
async fn a_response_body_that_stalls_over_http1_is_given_up_after_the_idle_timeout() {
    let (upstream, h) = hostile(
        Protocol::Http1(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello"),
        "poynt:\n  body_idle_timeout: 1s",
    )
    .await;
    assert_aborted(&h, "idle_timeout").await;
    eventually("the stalled connection closed", BODY_BOUND, || async {
        upstream.closed() == 1
    })
    .await;
    h.stop().await;
}

#[tokio::test]
async fn a_response_body_that_stalls_over_http2_is_given_up_after_the_idle_timeout() {
    let (_upstream, h) = hostile(
        Protocol::Http2Stall(b"hello"),
        "poynt:\n  body_idle_timeout: 1s",
    )
    .await;
    assert_aborted(&h, "idle_timeout").await;
    h.stop().await;
}
