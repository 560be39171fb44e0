//! The access log as the real binary writes it: one line per request with every field of
//! docs/OPERATIONS.md's table, each response flag produced by the fault it names (the
//! emulator's knobs and `/token` faults, a dead port, a hostile upstream, a caller that
//! hangs up mid-body), `log.access` switching it, and the log hygiene around it (no escape
//! codes on a pipe or with `NO_COLOR`, lists as JSON arrays).

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use poynt_emulator::{Emulator, Fault};
use poynt_wire::{MerchantId, REQUEST_ID_HEADER};
use serde_json::{Value, json};
use support::process::{BIN, ProxyProcess, spawn_proxy_config, spawn_proxy_logging};
use support::raw_upstream::{Protocol, RawUpstream};
use support::{Builder, HEADER, eventually, merchant, proxy_yaml};

/// How long a line may take to appear after its response ended.
const LINE_BOUND: Duration = Duration::from_secs(10);

/// The access lines `proxy` wrote so far.
fn access_lines(proxy: &ProxyProcess) -> Vec<(String, Value)> {
    proxy
        .logs()
        .lines()
        .filter_map(|line| {
            let value: Value = serde_json::from_str(line).ok()?;
            (value["target"] == "poynt_proxy::access").then(|| (line.to_owned(), value))
        })
        .collect()
}

/// Waits for the access line of request `id`: (the raw line, parsed).
async fn line_of(proxy: &ProxyProcess, id: &str) -> (String, Value) {
    eventually(&format!("the access line of {id}"), LINE_BOUND, || async {
        access_lines(proxy)
            .iter()
            .any(|(_, v)| v["request_id"] == id)
    })
    .await;
    access_lines(proxy)
        .into_iter()
        .find(|(_, v)| v["request_id"] == id)
        .expect("found above")
}

/// Sends `method path` for `merchant` (no header when `None`) with request id `id`.
async fn send(
    proxy: &ProxyProcess,
    method: reqwest::Method,
    path: &str,
    merchant: Option<MerchantId>,
    id: &str,
    body: &'static str,
) -> reqwest::Response {
    let mut request = support::client()
        .request(method, format!("http://{}{path}", proxy.proxy))
        .header(REQUEST_ID_HEADER, id)
        .body(body);
    if let Some(merchant) = merchant {
        request = request.header(HEADER, merchant.to_string());
    }
    request.send().await.expect("proxy answers")
}

/// The text of `field`'s value in a raw JSON line (to see how a number was written).
fn raw_number<'a>(line: &'a str, field: &str) -> &'a str {
    let start = line.find(&format!("\"{field}\":")).expect(field) + field.len() + 3;
    let rest = &line[start..];
    &rest[..rest.find([',', '}']).unwrap()]
}

fn flags(line: &Value) -> &Value {
    &line["response_flags"]
}

#[tokio::test]
async fn a_proxied_request_logs_every_field_with_exact_byte_counts() {
    let m = merchant();
    let emulator = Builder::default().emulator(&[m]).await;
    let proxy = spawn_proxy_logging(&emulator, "", "info");
    let path = format!("/businesses/{m}/orders");
    let response = send(
        &proxy,
        reqwest::Method::POST,
        &format!("{path}?_size=5000&secret=no"),
        Some(m),
        "first",
        "hello",
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().len(), 5000);
    let (raw, line) = line_of(&proxy, "first").await;
    for (field, expected) in [
        ("merchant", json!(m.to_string())),
        ("method", json!("POST")),
        ("path", json!(path)),
        ("protocol", json!("HTTP/1.1")),
        ("status", json!(200)),
        ("upstream_status", json!(200)),
        ("bytes_in", json!(5)),
        ("bytes_out", json!(5000)),
        ("token", json!("miss")),
        ("attempts", json!(1)),
        ("response_flags", json!([])),
        ("error_code", Value::Null),
    ] {
        assert_eq!(line[field], expected, "{field} in {raw}");
    }
    assert!(
        line["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{raw}"
    );
    assert!(line["timestamp"].as_str().unwrap().ends_with('Z'), "{raw}");
    assert!(!raw.contains("secret"), "the query is never logged: {raw}");
    for field in ["token_ms", "upstream_ms", "total_ms"] {
        let number = raw_number(&raw, field);
        let decimals = number.split_once('.').map_or(0, |(_, d)| d.len());
        assert_eq!(decimals, 3, "{field} in µs: {raw}");
    }
    let total = line["total_ms"].as_f64().unwrap();
    assert!(line["upstream_ms"].as_f64().unwrap() <= total, "{raw}");
    assert!(line["token_ms"].as_f64().unwrap() <= total, "{raw}");
    let again = send(&proxy, reqwest::Method::GET, &path, Some(m), "second", "").await;
    let length = again.bytes().await.unwrap().len() as u64;
    let (raw, line) = line_of(&proxy, "second").await;
    assert_eq!(line["token"], "hit", "{raw}");
    assert_eq!(line["bytes_in"], 0, "{raw}");
    assert_eq!(line["bytes_out"], length, "{raw}");
    assert_eq!(
        proxy.metric("poynt_proxy_access_log_dropped_total").await,
        0.0
    );
}

#[tokio::test]
async fn the_line_says_whether_poynts_connection_was_reused_and_no_trace_without_tracing() {
    let m = merchant();
    let emulator = Builder::default().emulator(&[m]).await;
    // One worker, so the second request takes the connection the first one pooled.
    let proxy = spawn_proxy_logging(&emulator, "server:\n  workers: 1\n", "info");
    let path = format!("/businesses/{m}/orders");
    for (id, reused) in [("fresh", false), ("pooled", true)] {
        let response = send(&proxy, reqwest::Method::GET, &path, Some(m), id, "").await;
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
        let (raw, line) = line_of(&proxy, id).await;
        assert_eq!(line["reused"], reused, "{raw}");
        assert_eq!(line["trace_id"], Value::Null, "{raw}");
    }
    let refused = send(&proxy, reqwest::Method::GET, &path, None, "refused", "").await;
    assert_eq!(refused.status(), 400);
    let (raw, line) = line_of(&proxy, "refused").await;
    assert_eq!(
        line["reused"],
        Value::Null,
        "no exchange, no connection: {raw}"
    );
}

#[tokio::test]
async fn each_refusal_and_fault_carries_its_response_flag() {
    let (m, cold) = (merchant(), merchant());
    let emulator = Builder::default().emulator(&[m, cold]).await;
    let proxy = spawn_proxy_logging(&emulator, "poynt:\n  response_timeout: 1s\n", "info");
    let other = merchant();
    let get = reqwest::Method::GET;
    let cases = [
        (
            "pg",
            format!("/businesses/{other}/orders"),
            Some(m),
            403,
            "PG",
            "MERCHANT_PATH_MISMATCH",
        ),
        (
            "pg-empty",
            format!("/businesses/{m}//orders"),
            Some(m),
            400,
            "PG",
            "INVALID_PATH",
        ),
        (
            "mh",
            format!("/businesses/{m}/orders"),
            None,
            400,
            "MH",
            "MISSING_MERCHANT_ID",
        ),
        (
            "ut",
            format!("/businesses/{m}/orders?_delay_ms=3000"),
            Some(m),
            504,
            "UT",
            "UPSTREAM_TIMEOUT",
        ),
    ];
    for (id, path, merchant, status, flag, code) in cases {
        let response = send(&proxy, get.clone(), &path, merchant, id, "").await;
        assert_eq!(response.status(), status, "{id}");
        let (raw, line) = line_of(&proxy, id).await;
        assert_eq!(flags(&line), &json!([flag]), "{raw}");
        assert_eq!(line["error_code"], code, "{raw}");
        assert_eq!(line["status"], status, "{raw}");
        assert_eq!(line["upstream_status"], Value::Null, "{raw}");
    }
    let (_, line) = line_of(&proxy, "ut").await;
    assert_eq!(line["attempts"], 1);
    emulator.set_fault(Fault {
        token_status: Some(503),
        ..Fault::default()
    });
    let response = send(
        &proxy,
        get.clone(),
        &format!("/businesses/{cold}/orders"),
        Some(cold),
        "tk",
        "",
    )
    .await;
    assert_eq!(response.status(), 503);
    let (raw, line) = line_of(&proxy, "tk").await;
    assert_eq!(flags(&line), &json!(["TK"]), "{raw}");
    assert_eq!(line["attempts"], 0, "{raw}");
    assert!(line["token_ms"].is_number(), "{raw}");
    assert_eq!(line["upstream_ms"], Value::Null, "{raw}");
}

#[tokio::test]
async fn a_caller_that_hangs_up_mid_body_is_logged_dc_with_the_bytes_it_got() {
    let m = merchant();
    let emulator = Builder::default().emulator(&[m]).await;
    let proxy = spawn_proxy_logging(&emulator, "", "info");
    let size = 256 * 1024 * 1024;
    let mut response = send(
        &proxy,
        reqwest::Method::GET,
        &format!("/businesses/{m}/orders?_size={size}"),
        Some(m),
        "dc",
        "",
    )
    .await;
    assert_eq!(response.status(), 200);
    let first = response.chunk().await.unwrap().expect("a first chunk");
    assert!(!first.is_empty());
    drop(response);
    let (raw, line) = line_of(&proxy, "dc").await;
    assert_eq!(flags(&line), &json!(["DC"]), "{raw}");
    assert_eq!(line["status"], 200, "{raw}");
    let out = line["bytes_out"].as_u64().unwrap();
    assert!(out > 0 && out < size, "{raw}");
}

#[tokio::test]
async fn a_caller_gone_before_the_head_is_logged_499_dc() {
    use tokio::io::AsyncWriteExt as _;
    let m = merchant();
    let emulator = Builder::default().emulator(&[m]).await;
    let proxy = spawn_proxy_logging(&emulator, "", "info");
    let mut caller = tokio::net::TcpStream::connect(proxy.proxy.as_str())
        .await
        .unwrap();
    let head = format!(
        "GET /businesses/{m}/orders?_delay_ms=30000 HTTP/1.1\r\nHost: x\r\n{HEADER}: {m}\r\n{REQUEST_ID_HEADER}: gone\r\n\r\n"
    );
    caller.write_all(head.as_bytes()).await.unwrap();
    eventually("the request is at Poynt", LINE_BOUND, || async {
        emulator.stats().api_calls >= 1
    })
    .await;
    drop(caller);
    let (raw, line) = line_of(&proxy, "gone").await;
    assert_eq!(line["status"], 499, "{raw}");
    assert_eq!(flags(&line), &json!(["DC"]), "{raw}");
    assert_eq!(line["merchant"], m.to_string(), "{raw}");
    assert_eq!(line["bytes_out"], 0, "{raw}");
}

#[tokio::test]
async fn an_unreachable_poynt_is_uc() {
    let m = merchant();
    let emulator = Builder::default().emulator(&[m]).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let base = emulator.base_url();
    let proxy = spawn_proxy_config(
        |dir| {
            proxy_yaml(&emulator, dir, "log:\n  format: json\n").replace(
                &format!("  api_url: \"{base}\"\n"),
                &format!(
                    "  api_url: \"http://127.0.0.1:{port}\"\n  token_url: \"{base}/token\"\n  audience: \"{base}\"\n"
                ),
            )
        },
        "info",
    );
    let response = send(
        &proxy,
        reqwest::Method::GET,
        &format!("/businesses/{m}/orders"),
        Some(m),
        "uc",
        "",
    )
    .await;
    assert_eq!(response.status(), 502);
    let (raw, line) = line_of(&proxy, "uc").await;
    assert_eq!(flags(&line), &json!(["UC"]), "{raw}");
    assert_eq!(line["error_code"], "UPSTREAM_UNAVAILABLE", "{raw}");
}

/// The binary against a hostile upstream answering every request with `reply`.
async fn hostile(
    reply: &'static [u8],
    extra: &str,
) -> (RawUpstream, Emulator, ProxyProcess, MerchantId) {
    let upstream = RawUpstream::start(Protocol::Http1(reply)).await;
    let m = merchant();
    let emulator = Builder::default().emulator(&[m]).await;
    let base = emulator.base_url();
    let ca_pem = upstream.ca_pem.clone();
    let port = upstream.port;
    let proxy = spawn_proxy_config(
        |dir| {
            let ca = dir.path().join("raw-upstream-ca.pem");
            std::fs::write(&ca, &ca_pem).unwrap();
            proxy_yaml(&emulator, dir, &format!("log:\n  format: json\n{extra}")).replace(
                &format!("  api_url: \"{base}\"\n"),
                &format!(
                    "  api_url: \"https://127.0.0.1:{port}\"\n  token_url: \"{base}/token\"\n  audience: \"{base}\"\n  ca_file: {:?}\n",
                    ca.display().to_string()
                ),
            )
        },
        "info",
    );
    (upstream, emulator, proxy, m)
}

#[tokio::test]
async fn a_poynt_body_that_breaks_or_stalls_after_the_head_is_upe_or_ut() {
    let cases: [(&str, &'static [u8], &str, &str); 2] = [
        (
            "upe",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n\r\n5\r\nworld\r\n0\r\n\r\n",
            "",
            "UPE",
        ),
        (
            "ut-body",
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello",
            "poynt:\n  body_idle_timeout: 1s\n",
            "UT",
        ),
    ];
    for (id, reply, extra, flag) in cases {
        let (_upstream, _emulator, proxy, m) = hostile(reply, extra).await;
        // The head may or may not reach the caller before the connection is cut.
        let answer = support::client()
            .get(format!("http://{}/businesses/{m}/orders", proxy.proxy))
            .header(REQUEST_ID_HEADER, id)
            .header(HEADER, m.to_string())
            .send()
            .await;
        if let Ok(response) = answer {
            assert_eq!(response.status(), 200, "{id}");
            assert!(response.bytes().await.is_err(), "{id}: the body was cut");
        }
        let (raw, line) = line_of(&proxy, id).await;
        assert_eq!(flags(&line), &json!([flag]), "{raw}");
        assert_eq!(line["bytes_out"], 5, "{raw}");
        assert!(line["error"].is_string(), "{raw}");
    }
}

#[tokio::test]
async fn log_access_off_writes_no_line_and_a_reload_lists_changed_keys_as_an_array() {
    let m = merchant();
    let emulator = Builder::default().emulator(&[m]).await;
    let proxy = spawn_proxy_logging(&emulator, "  access: off\n", "info");
    let path = format!("/businesses/{m}/orders");
    let quiet = send(&proxy, reqwest::Method::GET, &path, Some(m), "quiet", "").await;
    assert_eq!(quiet.status(), 200);
    quiet.bytes().await.unwrap();
    let config = std::fs::read_to_string(&proxy.config).unwrap();
    std::fs::write(
        &proxy.config,
        config.replace("  access: off\n", "  access: on\n"),
    )
    .unwrap();
    proxy.signal("HUP");
    eventually("the reload's line", LINE_BOUND, || async {
        proxy.logs().contains("configuration reloaded")
    })
    .await;
    let logs = proxy.logs();
    let reloaded: Value = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|v| v["message"] == "configuration reloaded")
        .expect("a JSON reload line");
    assert_eq!(reloaded["changed"], json!(["log.access"]), "{reloaded}");
    let loud = send(&proxy, reqwest::Method::GET, &path, Some(m), "loud", "").await;
    loud.bytes().await.unwrap();
    line_of(&proxy, "loud").await;
    let ids: Vec<Value> = access_lines(&proxy)
        .into_iter()
        .map(|(_, v)| v["request_id"].clone())
        .collect();
    assert_eq!(
        ids,
        [json!("loud")],
        "the line before the reload was never written"
    );
}

/// Runs `poynt-proxy run` in text format on a listener that is taken, so it logs its start
/// (the `RUST_LOG` notice, an INFO line) and exits; what it wrote, with `NO_COLOR` set to
/// `no_color`, through a terminal when `terminal` (util-linux `script` gives it one).
fn text_start_output(terminal: bool, no_color: Option<&str>) -> Vec<u8> {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let m = merchant();
    let emulator = runtime.block_on(Builder::default().emulator(&[m]));
    let dir = tempfile::tempdir().unwrap();
    // The first `listen:` is the proxy's (the next is `admin_listen:`).
    let yaml = proxy_yaml(&emulator, &dir, "log:\n  format: text\n").replacen(
        "listen: \"127.0.0.1:0\"\n",
        &format!("listen: \"127.0.0.1:{port}\"\n"),
        1,
    );
    let config = dir.path().join("proxy.yaml");
    std::fs::write(&config, yaml).unwrap();
    let mut command = if terminal {
        let mut script = Command::new("script");
        script.args([
            "-qec",
            &format!("{BIN} run --config {}", config.display()),
            "/dev/null",
        ]);
        script
    } else {
        let mut direct = Command::new(BIN);
        direct.arg("run").arg("--config").arg(&config);
        direct
    };
    command.env("RUST_LOG", "info").env_remove("NO_COLOR");
    if let Some(value) = no_color {
        command.env("NO_COLOR", value);
    }
    let output = command
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("runs");
    assert!(!output.status.success(), "the taken listener stops it");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("RUST_LOG is set"),
        "an INFO line was written: {text}"
    );
    drop(taken);
    output.stdout
}

#[test]
fn text_logs_carry_escape_codes_only_on_a_terminal_without_no_color() {
    let esc = |bytes: &[u8]| bytes.contains(&0x1b);
    assert!(
        !esc(&text_start_output(false, None)),
        "a pipe gets plain text"
    );
    assert!(
        esc(&text_start_output(true, None)),
        "a terminal gets colour"
    );
    assert!(!esc(&text_start_output(true, Some("1"))), "NO_COLOR wins");
}
