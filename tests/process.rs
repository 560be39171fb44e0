//! The real binary: streaming memory bounds, graceful shutdown on SIGTERM, the CLI's
//! commands, and the demo's printed curl commands.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use poynt_proxy::config::Config;
use poynt_proxy::metrics::Metrics;
use poynt_proxy::store::{Store, keys};
use secrecy::ExposeSecret as _;
use serde_json::Value;
use support::process::{BIN, lines_of, spawn_proxy, wait_line};
use support::{Builder, HEADER, eventually};

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc status")
}

/// Names of the process's proxy worker threads, sorted.
fn worker_threads(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|task| std::fs::read_to_string(task.unwrap().path().join("comm")).unwrap())
        .map(|comm| comm.trim_end().to_owned())
        .filter(|name| name.starts_with("poynt-worker-"))
        .collect();
    names.sort();
    names
}

fn pattern_chunk(offset: usize, len: usize) -> Vec<u8> {
    (offset..offset + len).map(|i| (i % 251) as u8).collect()
}

#[tokio::test]
async fn fifty_megabytes_stream_both_ways_in_bounded_memory() {
    const SIZE: usize = 50 * 1024 * 1024;
    const CHUNK: usize = 64 * 1024;
    let m = support::merchant();
    let emulator = Builder::default().emulator(&[m]).await;
    let proxy = spawn_proxy(&emulator, "");
    let client = support::client();
    let url = format!("http://{}/businesses/{m}/uploads", proxy.proxy);

    let mut expected = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for offset in (0..SIZE).step_by(CHUNK) {
        expected.update(&pattern_chunk(offset, CHUNK));
    }
    let expected = support::hex(expected.finish().as_ref());
    let upload = futures_util::stream::iter((0..SIZE).step_by(CHUNK))
        .map(|offset| Ok::<_, std::io::Error>(pattern_chunk(offset, CHUNK)));
    let response = client
        .post(&url)
        .header(HEADER, m.to_string())
        .body(reqwest::Body::wrap_stream(upload))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echo: Value = response.json().await.unwrap();
    assert_eq!(echo["body_len"], SIZE);
    assert_eq!(echo["body_sha256"], expected);

    let response = client
        .get(format!("{url}?_size={SIZE}"))
        .header(HEADER, m.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut got = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut total = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        total += chunk.len();
        got.update(&chunk);
    }
    assert_eq!(total, SIZE);
    assert_eq!(support::hex(got.finish().as_ref()), expected);

    let peak = peak_rss_kib(proxy.child.id());
    assert!(peak < 100 * 1024, "proxy peak RSS {peak} KiB");
    emulator.shutdown().await;
}

#[tokio::test]
async fn sigterm_lets_twenty_slow_requests_finish_then_exits_zero() {
    let m = support::merchant();
    let emulator = Builder::default().emulator(&[m]).await;
    let mut proxy = spawn_proxy(&emulator, "server:\n  workers: 3\n");
    assert_eq!(
        worker_threads(proxy.child.id()),
        ["poynt-worker-0", "poynt-worker-1", "poynt-worker-2"],
        "server.workers starts that many serving threads"
    );
    let client = support::client();
    let url = format!(
        "http://{}/businesses/{m}/orders?_delay_ms=1500",
        proxy.proxy
    );
    let requests: Vec<_> = (0..20)
        .map(|_| {
            let request = client.get(&url).header(HEADER, m.to_string()).send();
            tokio::spawn(request)
        })
        .collect();
    let metrics = format!("http://{}/metrics", proxy.admin);
    eventually("20 requests in flight", Duration::from_secs(10), || async {
        let text = client
            .get(&metrics)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .any(|l| l == "poynt_proxy_inflight_requests 20")
    })
    .await;
    let waiter = tokio::task::spawn_blocking(move || proxy.terminate());
    for request in requests {
        let response = request.await.unwrap().expect("in-flight request completes");
        assert_eq!(response.status(), 200);
    }
    let status = waiter.await.unwrap();
    assert_eq!(status.code(), Some(0));
    emulator.shutdown().await;
}

#[test]
fn check_accepts_a_good_config_and_names_the_key_of_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let key = support::fixture("app-key-pkcs1.pem");
    let good = format!(
        "poynt:\n  application_id: \"urn:aid:x\"\n  private_key_file: {:?}\n",
        key.display().to_string()
    );
    let path = dir.path().join("good.yaml");
    std::fs::write(&path, &good).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));

    let bad = good.replace("poynt:\n", "poynt:\n  api_url: \"ftp://x\"\n");
    std::fs::write(&path, bad).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("poynt.api_url: \"ftp://x\" is not an http(s) URL"),
        "{stderr}"
    );

    let corrupt = dir.path().join("corrupt.pem");
    std::fs::write(
        &corrupt,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    std::fs::write(
        &path,
        good.replace(&key.display().to_string(), &corrupt.display().to_string()),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "a bad key fails at start-up");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("poynt.private_key_file: expected an RSA private key"),
        "{stderr}"
    );
}

#[test]
fn check_names_the_store_and_warns_when_its_key_sits_beside_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let key = support::fixture("app-key-pkcs8.pem");
    let config = |store: &str| {
        let path = dir.path().join("store.yaml");
        std::fs::write(
            &path,
            format!(
                "poynt:\n  application_id: \"urn:aid:x\"\n  private_key_file: {:?}\n{store}",
                key.display().to_string()
            ),
        )
        .unwrap();
        Command::new(BIN)
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap()
    };
    let beside = config("");
    assert!(beside.status.success());
    let data = dir.path().join("data/tokens.redb");
    assert!(
        String::from_utf8_lossy(&beside.stdout)
            .contains(&format!("store: embedded at {}", data.display())),
        "{beside:?}"
    );
    let stderr = String::from_utf8_lossy(&beside.stderr);
    assert!(
        stderr.contains("warning")
            && stderr.contains("tokens.redb.key")
            && stderr.contains("store.key_file"),
        "{stderr}"
    );
    assert!(!data.exists(), "check creates nothing");

    let keygen = Command::new(BIN)
        .args(["store", "keygen"])
        .output()
        .unwrap();
    assert!(keygen.status.success());
    std::fs::write(dir.path().join("store.key"), &keygen.stdout).unwrap();
    let keyed = config("store:\n  key_file: store.key\n");
    assert!(keyed.status.success(), "{keyed:?}: the generated key loads");
    assert!(
        keyed.stderr.is_empty(),
        "no warning with a key configured: {keyed:?}"
    );

    let redis = config(
        "store:\n  backend: redis\n  key_file: store.key\n  redis_url: \"redis://app:pa55word@10.0.0.5:6380/1\"\n",
    );
    let stdout = String::from_utf8_lossy(&redis.stdout);
    assert!(
        stdout.contains(
            "store: redis at redis://app@10.0.0.5:6380/1 (keys under poynt-proxy:urn:aid:x:)"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("pa55word"));
}

#[test]
fn authorize_url_prints_a_state_the_proxy_accepts_and_needs_the_state_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    let base = format!(
        "poynt:\n  application_id: \"urn:aid:abc\"\n  private_key_file: {:?}\nonboarding:\n  public_url: \"https://connect.example.com\"\n  code_key: tls\n",
        support::fixture("app-key-pkcs8.pem").display().to_string()
    );
    let key_line = format!(
        "  state_key_file: {:?}\n",
        support::fixture("state-key.b64").display().to_string()
    );
    std::fs::write(&path, format!("{base}{key_line}")).unwrap();
    let out = Command::new(BIN)
        .args([
            "authorize-url",
            "--return-to",
            "https://connect.example.com/done",
            "--config",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        url.starts_with("https://poynt.net/applications/authorize?redirect_uri=https%3A%2F%2Fconnect.example.com%2Foauth%2Fcallback&client_id=urn%3Aaid%3Aabc&context="),
        "{url}"
    );
    // The state opens under the key in the file, as a running proxy with it opens it.
    let key = poynt_proxy::onboarding::state::StateKey::from_base64_file(&support::fixture(
        "state-key.b64",
    ))
    .unwrap();
    let state = key
        .open(
            &support::query_param(&url, "context").unwrap(),
            std::time::SystemTime::now(),
        )
        .unwrap();
    assert_eq!(
        state.return_to.as_deref(),
        Some("https://connect.example.com/done")
    );

    let refused = Command::new(BIN)
        .args([
            "authorize-url",
            "--return-to",
            "https://evil.example/",
            "--config",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("return_to"));

    std::fs::write(&path, &base).unwrap();
    let out = Command::new(BIN)
        .args(["authorize-url", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("onboarding.state_key_file: missing"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `check` on `config` as a user the test's files do not admit beyond their modes: the
/// test's own user, or `nobody` when that is root (root reads any file whatever its mode).
fn check_unprivileged(config: &std::path::Path) -> std::process::Output {
    let uid = Command::new("id").arg("-u").output().unwrap();
    let mut command = if String::from_utf8_lossy(&uid.stdout).trim() == "0" {
        let mut command = Command::new("setpriv");
        command.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN]);
        command
    } else {
        Command::new(BIN)
    };
    command
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap()
}

#[tokio::test]
async fn check_fails_where_run_would_on_the_store_the_listeners_and_the_log_level() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let readable = |path: &std::path::Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    readable(dir.path(), 0o755);
    let app_key = dir.path().join("app.pem");
    std::fs::copy(support::fixture("app-key-pkcs8.pem"), &app_key).unwrap();
    readable(&app_key, 0o644);
    for name in ["a.key", "b.key"] {
        let path = dir.path().join(name);
        std::fs::write(&path, keys::generate().expose_secret()).unwrap();
        readable(&path, 0o644);
    }
    let path = dir.path().join("proxy.yaml");
    let write = |top: &str, rest: &str| {
        let yaml = format!(
            "{top}poynt:\n  application_id: \"urn:aid:x\"\n  private_key_file: {:?}\n{rest}",
            app_key.display().to_string()
        );
        std::fs::write(&path, yaml).unwrap();
        readable(&path, 0o644);
    };
    let ports = "listen: \"127.0.0.1:0\"\nadmin_listen: \"127.0.0.1:0\"\n";
    let run = |command: &str| {
        Command::new(BIN)
            .args([command, "--config"])
            .arg(&path)
            .output()
            .unwrap()
    };
    let fails_with = |out: std::process::Output, expected: &str| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "expected a failure: {out:?}");
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in {stderr}"
        );
    };
    // Stores as a start leaves them: one sealed with a.key, one with the key kept beside it.
    let keyed = "store:\n  path: tokens.redb\n  key_file: a.key\n";
    let beside = "store:\n  path: beside/tokens.redb\n";
    for store in [keyed, beside] {
        write(ports, store);
        let config = Config::load(&path).unwrap();
        let metrics = Metrics::new().unwrap();
        drop(
            Store::open(&config.store, &config.poynt.application_id, &metrics)
                .await
                .unwrap(),
        );
    }
    write(ports, keyed);
    let out = run("check");
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("the store key opens it"),
        "{out:?}"
    );
    // Held open, as by a running proxy: not opened, and said so.
    let config = Config::load(&path).unwrap();
    let held = Store::open(
        &config.store,
        &config.poynt.application_id,
        &Metrics::new().unwrap(),
    )
    .await
    .unwrap();
    let out = run("check");
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is open in another process"),
        "{out:?}"
    );
    drop(held);

    write(ports, &keyed.replace("a.key", "b.key"));
    fails_with(run("check"), "does not open the store at");
    fails_with(run("run"), "does not open the store at");

    std::fs::remove_file(dir.path().join("beside/tokens.redb.key")).unwrap();
    write(ports, beside);
    fails_with(run("check"), "holds data but its key");
    fails_with(run("run"), "holds data but its key");

    write(ports, keyed);
    readable(&dir.path().join("tokens.redb"), 0o000);
    fails_with(
        check_unprivileged(&path),
        &format!(
            "store.path: {}: Permission denied",
            dir.path().join("tokens.redb").display()
        ),
    );

    write(
        "listen: \"127.0.0.1:18080\"\nadmin_listen: \"127.0.0.1:18080\"\n",
        "store:\n  backend: memory\n",
    );
    fails_with(
        run("check"),
        "admin_listen: expected an address no other listener binds; found 127.0.0.1:18080, which collides with listen (127.0.0.1:18080)",
    );
    write(
        "listen: \"0.0.0.0:18080\"\n",
        "store:\n  backend: memory\nonboarding:\n  listen: \"127.0.0.1:18080\"\n  public_url: \"https://connect.example.com\"\n",
    );
    fails_with(
        run("check"),
        "onboarding.listen: expected an address no other listener binds; found 127.0.0.1:18080, which collides with listen (0.0.0.0:18080)",
    );

    write(ports, "store:\n  backend: memory\nlog:\n  level: warning\n");
    for command in ["check", "run"] {
        fails_with(
            run(command),
            "log.level: expected trace, debug, info, warn, error, off or an EnvFilter directive; found \"warning\"",
        );
    }
}

#[test]
fn check_says_when_redirect_uri_and_public_url_disagree() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        format!(
            "poynt:\n  application_id: \"urn:aid:abc\"\n  private_key_file: {:?}\noauth:\n  redirect_uri: \"https://app.example.com/return\"\nonboarding:\n  public_url: \"https://connect.example.com\"\n",
            support::fixture("app-key-pkcs8.pem").display().to_string()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("warning: oauth.redirect_uri: \"https://app.example.com/return\" differs from onboarding.public_url + /oauth/callback (\"https://connect.example.com/oauth/callback\")"),
        "{stdout}"
    );
}

#[test]
fn every_command_has_help() {
    for command in ["run", "check", "emulator", "demo", "authorize-url", "store"] {
        let out = Command::new(BIN)
            .args([command, "--help"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{command}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{command}"
        );
    }
}

/// The state key may be derived from the store key (no state_key_file needed); the help
/// once said otherwise.
#[test]
fn authorize_url_help_says_the_state_key_may_be_derived() {
    let out = Command::new(BIN)
        .args(["authorize-url", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        help.contains("state_key_file, or the key derived from the store key"),
        "{help}"
    );
}

fn curl_installed() -> bool {
    Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Holds `addr` for the test's length, unless something else already does (taken either way).
fn occupy(addr: &str) -> Option<std::net::TcpListener> {
    std::net::TcpListener::bind(addr).ok()
}

#[tokio::test]
async fn the_demo_takes_free_ports_when_its_own_are_taken_and_its_curls_work_as_printed() {
    assert!(
        curl_installed(),
        "curl is needed (the test command installs it)"
    );
    let defaults = [
        ("127.0.0.1:8080", "--listen"),
        ("127.0.0.1:9090", "--admin-listen"),
        ("127.0.0.1:8081", "--onboarding-listen"),
    ];
    let _held: Vec<_> = defaults.iter().map(|(addr, _)| occupy(addr)).collect();
    let mut child = Command::new(BIN)
        .arg("demo")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = lines_of(&mut child);
    let mut output = Vec::new();
    let pin = wait_line(&rx, |l| {
        output.push(l.to_owned());
        l.split("--ignore-certificate-errors-spki-list=")
            .nth(1)
            .map(|rest| rest.trim_end_matches(')').to_owned())
    });
    let took: Vec<String> = defaults
        .iter()
        .map(|(addr, flag)| {
            let prefix = format!("note: {addr} is taken, so the demo took 127.0.0.1:");
            let suffix = format!(" instead ({flag} picks another)");
            output
                .iter()
                .find_map(|l| l.strip_prefix(&prefix)?.strip_suffix(&suffix))
                .unwrap_or_else(|| panic!("no note for {addr}: {output:#?}"))
                .to_owned()
        })
        .collect();
    let warnings: Vec<_> = output.iter().filter(|l| l.contains("WARN")).collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
    let curls: Vec<&String> = output.iter().filter(|l| l.starts_with("curl ")).collect();
    assert_eq!(curls.len(), 4, "{output:#?}");
    let (proxy_port, admin_port) = (&took[0], &took[1]);
    assert!(
        curls[0].starts_with(&format!(
            "curl -s 'http://127.0.0.1:{proxy_port}/businesses/11111111-1111-4111-8111-111111111111/orders?limit=5' "
        )),
        "{curls:#?}"
    );
    assert_eq!(
        *curls[3],
        format!("curl -s 'http://127.0.0.1:{admin_port}/metrics'")
    );
    let connect = format!("http://127.0.0.1:{}/connect", took[2]);
    assert!(
        output
            .iter()
            .any(|l| l == &format!("Onboard a merchant: open {connect} in a browser")),
        "{output:#?}"
    );
    for curl in &curls {
        let out = Command::new("sh")
            .args(["-c", &format!("{curl} --fail-with-body --max-time 20")])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{curl}\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!stdout.trim().is_empty(), "{curl} printed nothing");
        if curl.contains("/businesses/") {
            let echo: Value = serde_json::from_str(&stdout).expect("JSON echo");
            assert_eq!(echo["headers"]["authorization"], "Bearer [redacted]");
        }
        if curl.contains("/metrics") {
            assert!(
                stdout.contains(
                    "poynt_proxy_requests_total{caller=\"unknown\",code=\"200\",method=\"GET\",source=\"upstream\"} 1"
                ),
                "{stdout}"
            );
        }
    }
    let page = support::browser::dump_dom(&connect, &pin).await;
    assert!(
        page.contains(r#"<strong id="business-name">Business 11111111</strong> (<code id="business-id">11111111-1111-4111-8111-111111111111</code>)"#),
        "{page}"
    );
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn the_emulator_help_lists_its_control_api() {
    let out = Command::new(BIN)
        .args(["emulator", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for call in [
        "GET  /_emulator/stats",
        "POST /_emulator/fault",
        "\"token_status\"",
        "\"token_drop\"",
        "\"token_delay_ms\"",
        "\"token_expires_in\"",
        "POST /_emulator/authorize",
        "\"tampered_code\"",
        "\"alg_none\"",
        "POST /_emulator/goaway",
        "POST /_emulator/reset",
        "GET  /_emulator/keys",
        "POST /_emulator/merchants/{id}/revoke",
        "POST /_emulator/merchants/{id}/unauthorize",
        "POST /_emulator/merchants/{id}/token",
    ] {
        assert!(help.contains(call), "{call} missing from\n{help}");
    }
}

#[test]
fn the_emulator_command_serves() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args([
            "emulator",
            "--listen",
            "127.0.0.1:0",
            "--app-id",
            "urn:aid:x",
            "--app-private-key-out",
        ])
        .arg(dir.path().join("key.pem"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines_of(&mut child);
    let base = wait_line(&rx, |l| {
        l.strip_prefix("poynt-emulator listening on ")
            .map(str::to_owned)
    });
    let out = Command::new("curl")
        .args(["-s", "--fail", &format!("{base}/_emulator/stats")])
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(out.status.success());
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["token_calls_total"], 0);
    let key = std::fs::read_to_string(dir.path().join("key.pem")).unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
}

#[tokio::test]
async fn authorize_url_states_open_under_the_key_a_proxy_derives_from_the_same_store_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = Command::new(BIN)
        .args(["store", "keygen"])
        .output()
        .unwrap();
    std::fs::write(dir.path().join("store.key"), &key.stdout).unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        format!(
            "poynt:\n  application_id: \"urn:aid:abc\"\n  private_key_file: {:?}\nstore:\n  key_file: store.key\nonboarding:\n  public_url: \"https://connect.example.com\"\n",
            support::fixture("app-key-pkcs8.pem").display().to_string()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["authorize-url", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "no state_key_file needed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    // What a running proxy on this configuration does: open the store, derive the key.
    let config = poynt_proxy::config::Config::load(&path).unwrap();
    let store = poynt_proxy::store::Store::open(
        &config.store,
        &config.poynt.application_id,
        &poynt_proxy::metrics::Metrics::new().unwrap(),
    )
    .await
    .unwrap();
    let derived =
        poynt_proxy::onboarding::state_key(config.onboarding.as_ref().unwrap(), store.key())
            .expect("a key derived from the store key");
    let state = support::query_param(&url, "context").unwrap();
    assert!(derived.open(&state, std::time::SystemTime::now()).is_ok());
    let other = poynt_proxy::onboarding::state::StateKey::new([9; 32]);
    assert!(other.open(&state, std::time::SystemTime::now()).is_err());
}

/// What `poynt-proxy <command> --config <config>` wrote to stderr, run in `dir` (so a
/// relative path is resolved as an operator's shell would), and that it failed.
fn stderr_of_failure(dir: &std::path::Path, command: &str, config: &str) -> String {
    let out = Command::new(BIN)
        .current_dir(dir)
        .args([command, "--config", config])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "expected a failure: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn every_error_is_said_once_with_the_file_the_line_and_the_path_opened() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let at = dir.display();
    std::fs::copy(support::fixture("app-key-pkcs8.pem"), dir.join("app.pem")).unwrap();
    std::fs::copy(
        support::fixture("poynt-merchant-authorization-key.pem"),
        dir.join("seed.pem"),
    )
    .unwrap();
    let config = |key: &str, rest: &str| {
        let yaml = format!(
            "listen: \"127.0.0.1:0\"\nadmin_listen: \"127.0.0.1:0\"\npoynt:\n  application_id: \"urn:aid:x\"\n  private_key_file: {key}\n{rest}"
        );
        std::fs::write(dir.join("proxy.yaml"), yaml).unwrap();
    };
    let cases: [(&str, &str, String); 6] = [
        (
            "app.pem",
            "store:\n  path: tokens.redb\n  key_file: nope.key\n",
            format!(
                "error: store.key_file: cannot read key file {at}/nope.key: No such file or directory (os error 2)\n"
            ),
        ),
        (
            "nope.pem",
            "",
            format!(
                "error: poynt.private_key_file: cannot read private key file {at}/nope.pem: No such file or directory (os error 2)\n"
            ),
        ),
        (
            "seed.pem",
            "",
            "error: poynt.private_key_file: line 1: expected a PEM armour line such as \"-----BEGIN PRIVATE KEY-----\"; found \"-----START PUBLIC KEY-----\"\n".to_owned(),
        ),
        (
            "app.pem",
            "log:\n  level: info\nlisten: \"127.0.0.1:1\"\n",
            format!(
                "error: {at}/proxy.yaml: line 8: duplicate top-level key `listen` (first at line 1); each key may appear once\n"
            ),
        ),
        (
            "app.pem",
            "  colour: blue\n",
            format!(
                "error: {at}/proxy.yaml: poynt: unknown field `colour`, expected one of `api_url`, `token_url`, `audience`, `api_version`, `application_id`, `private_key_file`, `ca_file`, `connect_timeout`, `response_timeout`, `body_idle_timeout`, `token_timeout` at line 6 column 3\n"
            ),
        ),
        (
            "app.pem",
            "log: [\n",
            format!(
                "error: {at}/proxy.yaml: log: invalid type: sequence, expected struct RawLog at line 6 column 6\n"
            ),
        ),
    ];
    for (key, rest, expected) in &cases {
        config(key, rest);
        for command in ["check", "run"] {
            assert_eq!(
                stderr_of_failure(dir, command, "proxy.yaml"),
                *expected,
                "{command} with {key} and {rest:?}"
            );
        }
    }
    assert_eq!(
        stderr_of_failure(dir, "check", "missing.yaml"),
        format!(
            "error: cannot read config file {at}/missing.yaml: No such file or directory (os error 2)\n"
        )
    );
}

#[test]
fn a_bind_error_names_the_listener_and_says_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        support::fixture("app-key-pkcs8.pem"),
        dir.path().join("app.pem"),
    )
    .unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let listeners = [
        (
            "listen",
            format!("listen: \"127.0.0.1:{port}\"\nadmin_listen: \"127.0.0.1:0\"\n"),
        ),
        (
            "admin_listen",
            format!("listen: \"127.0.0.1:0\"\nadmin_listen: \"127.0.0.1:{port}\"\n"),
        ),
        (
            "onboarding.listen",
            format!(
                "listen: \"127.0.0.1:0\"\nadmin_listen: \"127.0.0.1:0\"\nonboarding:\n  listen: \"127.0.0.1:{port}\"\n  public_url: \"https://connect.example.com\"\n  code_key: seed.pem\n"
            ),
        ),
    ];
    std::fs::copy(
        support::fixture("poynt-merchant-authorization-key-fixed.pem"),
        dir.path().join("seed.pem"),
    )
    .unwrap();
    for (name, top) in listeners {
        let yaml = format!(
            "{top}poynt:\n  application_id: \"urn:aid:x\"\n  private_key_file: app.pem\nstore:\n  backend: memory\n"
        );
        std::fs::write(dir.path().join("proxy.yaml"), yaml).unwrap();
        let stderr = stderr_of_failure(dir.path(), "run", "proxy.yaml");
        assert_eq!(
            stderr.lines().last(),
            Some(
                format!(
                    "error: {name}: cannot listen on 127.0.0.1:{port}: Address already in use (os error 98)"
                )
                .as_str()
            ),
            "{stderr}"
        );
    }
    drop(taken);
}
