//! What operators see: metrics scraped by a real Prometheus, promtool's lints, the alert
//! rules and dashboard, bounded label cardinality, the admin API, and no secret anywhere.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::process::spawn_proxy_logging;
use support::{Builder, HEADER, Harness, eventually};

fn repo(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

async fn metrics_text(client: &reqwest::Client, admin: &str) -> String {
    client
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Runs promtool with `args`, feeding `stdin`; panics with its output unless it exits 0.
fn promtool(args: &[&str], stdin: &str) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (the test command installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Prometheus server on loopback, killed on drop.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_prometheus(target: std::net::SocketAddr) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: poynt-proxy\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus is installed (the test command installs it)");
    let prometheus = Prometheus {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    };
    let client = support::client();
    eventually("Prometheus ready", Duration::from_secs(30), || async {
        client
            .get(format!("{}/-/ready", prometheus.url))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    prometheus
}

/// Instant query; returns each series' labels (without `__name__`, `job`, `instance`) and value.
async fn query(
    client: &reqwest::Client,
    prometheus: &Prometheus,
    q: &str,
) -> BTreeMap<String, f64> {
    let body: Value = client
        .get(format!(
            "{}/api/v1/query?{}",
            prometheus.url,
            form_urlencoded::Serializer::new(String::new())
                .append_pair("query", q)
                .finish()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["status"], "success", "{body}");
    body["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|series| {
            let labels: Vec<String> = series["metric"]
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "__name__" | "job" | "instance"))
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
                .collect();
            let value = series["value"][1].as_str().unwrap().parse().unwrap();
            (labels.join(","), value)
        })
        .collect()
}

#[tokio::test]
async fn a_real_prometheus_scrapes_exactly_the_traffic_sent() {
    let h = Harness::new().await;
    let prometheus = start_prometheus(h.proxy.admin_addr()).await;
    let m = h.merchants[0];
    let stranger = support::merchant();
    for _ in 0..6 {
        assert_eq!(h.get(m, "/orders").await.status(), 200);
    }
    for _ in 0..3 {
        let response = h
            .client
            .post(h.url(&format!("/businesses/{m}/orders")))
            .header(HEADER, m.to_string())
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    for _ in 0..2 {
        let response = h
            .client
            .get(h.url("/x"))
            .header(HEADER, "nope")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
    }
    assert_eq!(h.get(stranger, "/orders").await.status(), 403);

    let client = support::client();
    eventually(
        "Prometheus scraped all 12 requests",
        Duration::from_secs(30),
        || async {
            query(&client, &prometheus, "sum(poynt_proxy_requests_total)")
                .await
                .values()
                .sum::<f64>()
                == 12.0
        },
    )
    .await;
    let requests = query(&client, &prometheus, "poynt_proxy_requests_total").await;
    let expected: BTreeMap<String, f64> = [
        ("caller=unknown,code=200,method=GET,source=upstream", 6.0),
        ("caller=unknown,code=200,method=POST,source=upstream", 3.0),
        ("caller=unknown,code=400,method=GET,source=proxy", 2.0),
        ("caller=unknown,code=403,method=GET,source=proxy", 1.0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(requests, expected);
    // Every grant × outcome series exists from the start; these are the ones that moved.
    let grants = query(&client, &prometheus, "poynt_proxy_token_requests_total > 0").await;
    let expected: BTreeMap<String, f64> = [
        ("grant=jwt_bearer,outcome=rejected", 1.0),
        ("grant=jwt_bearer,outcome=success", 1.0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(grants, expected);
    let lookups = query(
        &client,
        &prometheus,
        "poynt_proxy_token_cache_lookups_total",
    )
    .await;
    assert_eq!(lookups["result=hit"], 8.0, "{lookups:?}");
    assert_eq!(lookups["result=miss"], 2.0, "{lookups:?}");
    let histogram = query(
        &client,
        &prometheus,
        "poynt_proxy_request_duration_seconds_count",
    )
    .await;
    assert_eq!(histogram.values().sum::<f64>(), 12.0);
    let cached = query(&client, &prometheus, "poynt_proxy_tokens_cached").await;
    assert_eq!(cached.values().sum::<f64>(), 1.0);
    h.stop().await;
}

#[tokio::test]
async fn promtool_accepts_the_metrics_and_the_alert_rules() {
    let h = Harness::new().await;
    let m = h.merchants[0];
    assert_eq!(h.get(m, "/orders").await.status(), 200);
    let text = metrics_text(&h.client, &h.proxy.admin_addr().to_string()).await;
    for family in [
        "poynt_proxy_requests_total",
        "poynt_proxy_request_duration_seconds",
        "poynt_proxy_upstream_request_duration_seconds",
        "poynt_proxy_token_cache_lookups_total",
        "poynt_proxy_token_requests_total",
        "poynt_proxy_token_request_duration_seconds",
        "poynt_proxy_tokens_cached",
        "poynt_proxy_merchants_backing_off",
        "poynt_proxy_upstream_unauthorized_retries_total",
        "poynt_proxy_inflight_requests",
        "poynt_proxy_build_info",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} missing"
        );
    }
    promtool(&["check", "metrics"], &text);
    let rules = repo("deploy/prometheus/alerts.yaml");
    promtool(&["check", "rules", rules.to_str().unwrap()], "");
    h.stop().await;
}

/// Every series of the counters the alert rules read, as the exposition names them: each is
/// exported at 0 from the first scrape, so a rule over it works after a start during an
/// outage (a "no success" rule has a success series to read, and the first failure is an
/// increase rather than a series born at 1).
fn counter_series_the_alerts_read() -> BTreeSet<String> {
    let mut series = BTreeSet::new();
    for grant in ["jwt_bearer", "refresh_token", "authorization_code"] {
        for outcome in ["success", "rejected", "error"] {
            series.insert(format!(
                "poynt_proxy_token_requests_total{{grant=\"{grant}\",outcome=\"{outcome}\"}}"
            ));
        }
    }
    for result in ["hit", "miss", "refresh_ahead", "stale"] {
        series.insert(format!(
            "poynt_proxy_token_cache_lookups_total{{result=\"{result}\"}}"
        ));
    }
    for outcome in ["success", "invalid", "restart_required"] {
        series.insert(format!(
            "poynt_proxy_config_reloads_total{{outcome=\"{outcome}\"}}"
        ));
    }
    series.insert("poynt_proxy_upstream_unauthorized_retries_total".to_owned());
    series.insert("poynt_proxy_store_records_refused_total".to_owned());
    for reason in ["rate_limited", "in_flight", "cooling_down"] {
        for action in ["refused", "observed"] {
            series.insert(format!(
                "poynt_proxy_limited_requests_total{{action=\"{action}\",reason=\"{reason}\"}}"
            ));
        }
    }
    series
}

/// The family a series or sample line belongs to.
fn family(series: &str) -> &str {
    series
        .split(['{', ' '])
        .next()
        .expect("split yields at least one piece")
}

/// Every `expr` of the alert rules.
fn alert_exprs() -> Vec<String> {
    let rules: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo("deploy/prometheus/alerts.yaml")).unwrap(),
    )
    .unwrap();
    let mut out = Vec::new();
    exprs(&serde_json::to_value(rules).unwrap(), &mut out);
    out
}

#[tokio::test]
async fn a_fresh_proxy_exports_every_counter_the_alerts_read_at_zero() {
    let h = Harness::new().await;
    let text = metrics_text(&h.client, &h.proxy.admin_addr().to_string()).await;
    let expected = counter_series_the_alerts_read();
    let families: BTreeSet<&str> = expected.iter().map(|s| family(s)).collect();
    let exported: BTreeMap<&str, &str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| families.contains(family(l)))
        .filter_map(|l| l.rsplit_once(' '))
        .collect();
    let expected_at_zero: BTreeMap<&str, &str> =
        expected.iter().map(|s| (s.as_str(), "0")).collect();
    assert_eq!(exported, expected_at_zero, "{text}");

    // The list covers every counter an alert reads, but the requests' own: its `code` is
    // whatever status was answered (an open set), and its rule is a 5xx ratio, quiet until
    // there is traffic to divide.
    let read: BTreeSet<String> = alert_exprs()
        .iter()
        .flat_map(|e| metric_names(e))
        .filter(|name| name.ends_with("_total") && name != "poynt_proxy_requests_total")
        .collect();
    let missing: Vec<_> = read
        .iter()
        .filter(|name| !families.contains(name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "counters the alerts read, not checked at 0: {missing:?}"
    );
    h.stop().await;
}

/// Metric families the proxy exports, from the `# TYPE` lines.
fn exported_families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect()
}

/// Every `expr` string anywhere in a JSON document.
fn exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", Value::String(e)) => out.push(e.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

/// Metric names an expression mentions: ours, the process collector's, and `up` (which
/// Prometheus itself records for every target).
fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("poynt_proxy_") || w.starts_with("process_") || *w == "up")
        .map(|w| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| w.strip_suffix(s))
                .unwrap_or(w)
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn every_metric_the_dashboard_and_alerts_query_is_exported() {
    let h = Harness::new().await;
    // Labelled families appear once they have a series.
    assert_eq!(h.get(h.merchants[0], "/orders").await.status(), 200);
    let mut exported =
        exported_families(&metrics_text(&h.client, &h.proxy.admin_addr().to_string()).await);
    exported.insert("up".to_owned());
    let mut queries = Vec::new();
    exprs(&dashboard(), &mut queries);
    let dashboard_count = queries.len();
    queries.extend(alert_exprs());
    assert!(
        dashboard_count >= 10,
        "only {dashboard_count} dashboard queries"
    );
    assert!(
        queries.len() > dashboard_count,
        "no alert expressions found"
    );
    let mut used = BTreeSet::new();
    for q in &queries {
        let names = metric_names(q);
        assert!(!names.is_empty(), "query names no proxy metric: {q}");
        used.extend(names);
    }
    let unknown: Vec<_> = used.difference(&exported).collect();
    assert!(unknown.is_empty(), "queried but not exported: {unknown:?}");
    h.stop().await;
}

/// The dashboard, parsed.
fn dashboard() -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo("deploy/grafana/poynt-proxy.json")).unwrap())
        .expect("dashboard is JSON")
}

/// Every metric selector in `expr`: the metric's name and what its braces hold ("" when it
/// has none).
fn selectors(expr: &str) -> Vec<(&str, &str)> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut found = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find(is_name) {
        let word_and_after = &rest[start..];
        let end = word_and_after
            .find(|c: char| !is_name(c))
            .unwrap_or(word_and_after.len());
        let (word, after) = word_and_after.split_at(end);
        let braces = after
            .strip_prefix('{')
            .and_then(|inner| inner.split_once('}'));
        if word.starts_with("poynt_proxy_") || word.starts_with("process_") {
            found.push((word, braces.map_or("", |(inside, _)| inside)));
        }
        rest = braces.map_or(after, |(_, tail)| tail);
    }
    found
}

/// `label_values(<selector>, <label>)`, a Grafana variable query, split in its two parts.
fn label_values(query: &str) -> (&str, &str) {
    query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .and_then(|q| q.rsplit_once(", "))
        .unwrap_or_else(|| panic!("expected label_values(<selector>, <label>); found {query}"))
}

#[tokio::test]
async fn the_dashboard_shows_the_chosen_job_and_instance_and_nothing_else() {
    let dashboard = dashboard();
    let mut queries = Vec::new();
    exprs(&dashboard["panels"], &mut queries);
    for q in &queries {
        for (metric, matchers) in selectors(q) {
            assert!(
                matchers.contains(r#"job=~"$job""#)
                    && matchers.contains(r#"instance=~"$instance""#),
                "expected {metric} scoped by $job and $instance; found {{{matchers}}} in {q}"
            );
        }
    }

    let h = Harness::new().await;
    let prometheus = start_prometheus(h.proxy.admin_addr()).await;
    // A success and a 502 (Poynt refusing the grant), so the rate and 5xx-ratio panels
    // have series to show.
    assert_eq!(h.get(h.merchants[0], "/orders").await.status(), 200);
    h.emulator.set_fault(poynt_emulator::Fault {
        token_status: Some(400),
        ..Default::default()
    });
    assert_eq!(h.get(support::merchant(), "/orders").await.status(), 502);
    h.emulator.set_fault(Default::default());
    let client = support::client();
    let instance = h.proxy.admin_addr().to_string();

    // The variables list this job and this instance, as Grafana asks Prometheus for them.
    let variables: BTreeMap<&str, &str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            (
                v["name"].as_str().unwrap(),
                v["query"]["query"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        variables.keys().copied().collect::<Vec<_>>(),
        ["instance", "job"]
    );
    for (variable, want) in [("job", "poynt-proxy"), ("instance", instance.as_str())] {
        let (selector, label) = label_values(variables[variable]);
        let selector = selector.replace("$job", "poynt-proxy");
        let url = format!(
            "{}/api/v1/label/{label}/values?{}",
            prometheus.url,
            form_urlencoded::Serializer::new(String::new())
                .append_pair("match[]", &selector)
                .finish()
        );
        eventually(
            &format!("${variable} lists {want}"),
            Duration::from_secs(30),
            || async {
                let body: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
                body["data"] == json!([want])
            },
        )
        .await;
    }

    let render = |q: &str, job: &str, instance: &str| {
        q.replace("$__rate_interval", "1m")
            .replace("$job", job)
            .replace("$instance", instance)
    };
    eventually(
        "every panel shows this instance",
        Duration::from_secs(30),
        || async {
            for q in &queries {
                if query(&client, &prometheus, &render(q, "poynt-proxy", &instance))
                    .await
                    .is_empty()
                {
                    return false;
                }
            }
            true
        },
    )
    .await;
    for q in &queries {
        for (job, other) in [
            ("poynt-proxy", "127.0.0.1:1"),
            ("another-job", instance.as_str()),
        ] {
            let shown = query(&client, &prometheus, &render(q, job, other)).await;
            assert!(
                shown.is_empty(),
                "job {job}, instance {other}: {q} shows {shown:?}"
            );
        }
    }
    h.stop().await;
}

fn series_count(text: &str) -> usize {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count()
}

#[tokio::test]
async fn a_flood_of_merchant_ids_adds_no_series() {
    let h = Builder::default()
        // A budget the flood cannot exhaust, so every unknown ID really asks /token and the
        // test sees the labels a refused grant produces.
        .yaml("tokens:\n  max_concurrent_grants: 4\n  new_merchant_grant_burst: 100000\n  new_merchant_grants_per_second: 100000")
        .start()
        .await;
    let admin = h.proxy.admin_addr().to_string();
    // One request of each kind the flood sends, so every label value it can produce exists.
    assert_eq!(h.get(support::merchant(), "/orders").await.status(), 403);
    let bad = h
        .client
        .get(h.url("/orders"))
        .header(HEADER, "x")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let before = metrics_text(&h.client, &admin).await;

    let flood = (0..1000).map(|i| {
        let client = h.client.clone();
        let url = h.url("/orders");
        async move {
            let id = if i % 2 == 0 {
                uuid::Uuid::new_v4().to_string()
            } else {
                format!("not-a-merchant-{i}")
            };
            client
                .get(url)
                .header(HEADER, id)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    let statuses = futures_util::future::join_all(flood).await;
    assert!(
        statuses.iter().all(|s| matches!(s, 400 | 403 | 503)),
        "{statuses:?}"
    );
    let after = metrics_text(&h.client, &admin).await;
    assert_eq!(
        series_count(&before),
        series_count(&after),
        "new series appeared"
    );
    assert!(!after.contains("not-a-merchant"));
    h.stop().await;
}

#[tokio::test]
async fn admin_api_shows_renews_and_evicts_without_tokens() {
    let h = Harness::new().await;
    let m = h.merchants[0];
    assert_eq!(h.get(m, "/orders").await.status(), 200);
    let all: Value = h
        .client
        .get(h.admin_url("/admin/tokens"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        all.get("next_after").is_none(),
        "one merchant fits one page"
    );
    let entry = &all["merchants"].as_array().unwrap()[0];
    assert_eq!(entry["merchant"], m.to_string());
    assert_eq!(entry["grant"], "jwt_bearer");
    assert_eq!(entry["has_refresh_token"], true);
    assert!(entry["expires_at"].as_str().unwrap().ends_with('Z'));
    assert!(entry["refresh_at"].is_string());
    assert!(entry["last_renewal"].is_string());

    let refreshed = h
        .client
        .post(h.admin_url(&format!("/admin/tokens/{m}/refresh")))
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), 200);
    let refreshed: Value = refreshed.json().await.unwrap();
    assert_eq!(refreshed["grant"], "refresh_token");
    assert_eq!(h.stats().token_calls.refresh_token.total, 1);

    let evicted: Value = h
        .client
        .delete(h.admin_url(&format!("/admin/tokens/{m}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(evicted, json!({"evicted": true}));
    assert_eq!(h.get(m, "/orders").await.status(), 200);
    assert_eq!(
        h.stats().token_calls_total,
        3,
        "eviction forced a new grant"
    );

    let unknown = h
        .client
        .get(h.admin_url(&format!("/admin/tokens/{}", support::merchant())))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let bad = h
        .client
        .get(h.admin_url("/admin/tokens/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // The old code-exchange endpoint is gone: onboarding's callback replaced it.
    let gone = h
        .client
        .post(h.admin_url(&format!("/admin/tokens/{m}/authorization-code")))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 405);
    h.stop().await;
}

#[tokio::test]
async fn admin_api_can_require_a_bearer_secret() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("admin-secret");
    std::fs::write(&secret_file, "s3cret-admin-token-for-tests\n").unwrap();
    let h = Builder::default()
        .yaml(&format!(
            "admin:\n  bearer_token_file: {:?}",
            secret_file.display().to_string()
        ))
        .start()
        .await;
    let url = h.admin_url("/admin/tokens");
    assert_eq!(h.client.get(&url).send().await.unwrap().status(), 401);
    let wrong = h
        .client
        .get(&url)
        .bearer_auth("s3cret-admin-token-for-test")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = h
        .client
        .get(&url)
        .bearer_auth("s3cret-admin-token-for-tests")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    assert_eq!(
        h.client
            .get(h.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    h.stop().await;
}

// Multi-threaded: the proxy process fetches the code key from the emulator while this test
// waits for its ready line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_logs_metrics_admin_or_responses_at_trace_level() {
    let [a, b, stranger, newcomer] = std::array::from_fn(|_| support::merchant());
    let builder = Builder::default().tls().token_ttl(Duration::from_secs(4));
    let emulator = builder.emulator(&[a, b]).await;
    let onboarding = support::onboarding_yaml(
        &emulator,
        "https://connect.example.com",
        "  code_key: tls\n",
    );
    let mut proxy = spawn_proxy_logging(
        &emulator,
        &format!(
            "tokens:\n  refresh_at: 0.5\n  refresh_jitter: 0.1\n  backoff_initial: 100ms\n  backoff_max: 200ms\n  unauthorized_min_token_age: 0s\n{onboarding}"
        ),
        "trace",
    );
    let client = support::client();
    let mut seen = String::new();
    let call = |m: poynt_wire::MerchantId| {
        client
            .post(format!("http://{}/businesses/{m}/orders", proxy.proxy))
            .header(HEADER, m.to_string())
            .body("{\"amount\":1}")
            .send()
    };
    // JWT-bearer, then renewals by refresh token under steady traffic.
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    for _ in 0..60 {
        ticker.tick().await;
        let response = call(a).await.unwrap();
        assert_eq!(response.status(), 200);
        seen.push_str(&response.text().await.unwrap());
    }
    // A revoked token: the 401 retry.
    emulator.revoke(a);
    let response = call(a).await.unwrap();
    assert_eq!(response.status(), 200);
    seen.push_str(&response.text().await.unwrap());
    // Errors: a merchant that never authorized the app, and /token failing for a cold one.
    let response = call(stranger).await.unwrap();
    assert_eq!(response.status(), 403);
    seen.push_str(&response.text().await.unwrap());
    emulator.set_fault(poynt_emulator::Fault {
        token_status: Some(503),
        ..Default::default()
    });
    let response = call(b).await.unwrap();
    assert_eq!(response.status(), 503);
    seen.push_str(&response.text().await.unwrap());
    emulator.set_fault(Default::default());
    // Onboarding: /connect, the emulator's authorize page, the callback (twice: the second
    // is a replay), each page read back.
    emulator.authorize(newcomer);
    let onboarding_url = |path: &str| {
        format!(
            "http://{}{path}",
            proxy.onboarding.as_deref().expect("onboarding listener")
        )
    };
    let browser = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let connect = browser
        .get(onboarding_url("/connect"))
        .send()
        .await
        .unwrap();
    let authorize = connect.headers()["location"].to_str().unwrap().to_owned();
    let state = support::query_param(&authorize, "context").expect("state");
    let callback =
        support::redirect_from(&emulator, &format!("{authorize}&businessId={newcomer}")).await;
    let code = support::query_param(&callback, "code").expect("code");
    let query = callback.split_once('?').unwrap().1;
    for expected in [303, 400] {
        let page = browser
            .get(onboarding_url(&format!("/oauth/callback?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), expected);
        if let Some(location) = page.headers().get("location") {
            seen.push_str(location.to_str().unwrap());
            // The location is on public_url, the ingress's; the path is this listener's.
            let location = location.to_str().unwrap();
            let path = &location[location.find("/connect/").expect("a path")..];
            let done = browser.get(onboarding_url(path)).send().await.unwrap();
            assert_eq!(done.status(), 200);
            seen.push_str(&done.text().await.unwrap());
        }
        seen.push_str(&page.text().await.unwrap());
    }
    let admin = |path: String| format!("http://{}{path}", proxy.admin);
    for path in [
        "/admin/tokens".to_owned(),
        format!("/admin/tokens/{a}"),
        format!("/admin/tokens/{stranger}"),
        "/admin/merchants".to_owned(),
        "/metrics".to_owned(),
    ] {
        seen.push_str(
            &client
                .get(admin(path))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
    }
    seen.push_str(
        &client
            .post(admin(format!("/admin/tokens/{a}/refresh")))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    let status = proxy.terminate();
    assert_eq!(status.code(), Some(0));

    let stats = emulator.stats();
    assert!(stats.token_calls.jwt_bearer.total >= 2, "{stats:?}");
    assert!(stats.token_calls.refresh_token.total >= 3, "{stats:?}");
    assert_eq!(stats.token_calls.authorization_code.total, 1, "{stats:?}");
    assert!(stats.api_unauthorized >= 1, "{stats:?}");
    let logs = proxy.output.lock().unwrap().clone();
    assert!(
        logs.contains("TRACE") || logs.contains("\"level\":\"TRACE\""),
        "not at trace level"
    );
    assert!(logs.contains("token request"), "no /token log lines");
    assert!(
        logs.contains(&format!(
            "\"outcome\":\"success\",\"business_id\":\"{newcomer}\""
        )),
        "no onboarding line naming the merchant"
    );
    assert!(logs.contains("\"outcome\":\"replayed\""), "no replay line");
    let mut secrets = emulator.issued_secrets();
    secrets.push(code);
    secrets.push(state);
    let key = std::fs::read_to_string(support::fixture("app-key-pkcs8.pem")).unwrap();
    secrets.extend(
        key.lines()
            .filter(|l| !l.starts_with("-----"))
            .map(str::to_owned),
    );
    assert!(
        secrets.len() > 20,
        "too few secrets to be a meaningful check"
    );
    for secret in secrets.iter().filter(|s| s.len() >= 16) {
        let needle = secret.rsplit(':').next().unwrap_or(secret);
        assert!(!logs.contains(needle), "a secret appears in the logs");
        assert!(
            !seen.contains(needle),
            "a secret appears in a response, /metrics or the admin API"
        );
    }
    emulator.shutdown().await;
}

/// Established TCP connections whose local port is `port`, as `ss` counts them: the server's
/// side of each connection to that listener.
fn ss_established(port: u16) -> usize {
    let out = Command::new("ss")
        .args([
            "-Htn",
            "state",
            "established",
            &format!("( sport = :{port} )"),
        ])
        .output()
        .expect("ss is installed (iproute2)");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// One series' value in a metrics text, by its exact name and labels.
fn series(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no series {name_and_labels} in:\n{text}"))
        .parse()
        .unwrap()
}

/// `poynt_proxy_connections{state="open"}` of `listener` in a metrics text.
fn open_connections(text: &str, listener: &str) -> f64 {
    series(
        text,
        &format!("poynt_proxy_connections{{listener=\"{listener}\",state=\"open\"}}"),
    )
}

/// Waits until the proxy and onboarding listeners report these open connections.
async fn settle(h: &Harness, what: &str, proxy: f64, onboarding: f64) {
    let admin = h.proxy.admin_addr().to_string();
    eventually(what, Duration::from_secs(10), || async {
        let text = metrics_text(&h.client, &admin).await;
        open_connections(&text, "proxy") == proxy
            && open_connections(&text, "onboarding") == onboarding
    })
    .await;
}

/// Each listener's open-connection gauge in `text` equals what `ss` counts on its port.
fn assert_open_matches_ss(text: &str, ports: &[(&str, u16)]) {
    for &(listener, port) in ports {
        assert_eq!(
            open_connections(text, listener),
            ss_established(port) as f64,
            "{listener}"
        );
    }
}

#[tokio::test]
async fn open_connections_per_listener_match_what_ss_counts() {
    let h = Builder::default()
        .yaml("server:\n  workers: 2")
        .onboarding("  code_key: {EMULATOR_KEY_FILE}\n")
        .start()
        .await;
    let admin = h.proxy.admin_addr();
    let ports = [
        ("proxy", h.proxy.proxy_addr().port()),
        ("admin", admin.port()),
        ("onboarding", h.proxy.onboarding_addr().unwrap().port()),
    ];
    // Nothing connected but the scrape itself: the accept loops' waiting permits are no
    // connection.
    let text = metrics_text(&h.client, &admin.to_string()).await;
    assert_open_matches_ss(&text, &ports);
    assert_eq!(open_connections(&text, "proxy"), 0.0);
    assert_eq!(open_connections(&text, "admin"), 1.0);

    let mut held = Vec::new();
    for (count, port) in [(3, ports[0].1), (2, ports[2].1)] {
        for _ in 0..count {
            held.push(
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .unwrap(),
            );
        }
    }
    settle(&h, "the listeners accepted the held connections", 3.0, 2.0).await;
    let text = metrics_text(&h.client, &admin.to_string()).await;
    assert_open_matches_ss(&text, &ports);
    for (listener, _) in ports {
        let available = series(
            &text,
            &format!("poynt_proxy_connections{{listener=\"{listener}\",state=\"available\"}}"),
        );
        assert_eq!(
            open_connections(&text, listener) + available,
            10_000.0,
            "{listener}"
        );
    }
    drop(held);
    settle(&h, "the closed connections are gone", 0.0, 0.0).await;
    h.stop().await;
}

/// This process's CPU time from `/proc/self/stat`, in seconds.
fn proc_cpu_seconds() -> f64 {
    let stat = procfs::process::Process::myself().unwrap().stat().unwrap();
    (stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64
}

#[tokio::test]
async fn process_cpu_seconds_moves_with_the_clock_tick() {
    // The proxy runs in this process, so /proc/self is its CPU time too.
    let h = Harness::new().await;
    // Work until the CPU time is well away from a whole second, where whole-second
    // counting would show; bounded by the count of rounds.
    let mut rounds = 0u64;
    while proc_cpu_seconds().fract() < 0.2 && rounds < 200_000_000 {
        rounds = std::hint::black_box(rounds + 1);
    }
    let before = proc_cpu_seconds();
    let text = metrics_text(&h.client, &h.proxy.admin_addr().to_string()).await;
    let after = proc_cpu_seconds();
    let exported = series(&text, "process_cpu_seconds_total");
    assert!(
        before <= exported && exported <= after,
        "expected the exported CPU time between /proc's {before} and {after}; found {exported}"
    );
    h.stop().await;
}

#[tokio::test]
async fn poynt_502s_and_the_proxy_s_own_are_told_apart() {
    let h = Builder::default().merchants(2).start().await;
    let (a, b) = (h.merchants[0], h.merchants[1]);
    assert_eq!(h.get(a, "/orders?_status=502").await.status(), 502);
    h.emulator.set_fault(poynt_emulator::Fault {
        token_status: Some(400),
        ..Default::default()
    });
    for _ in 0..2 {
        let status = h.get(b, "/orders").await.status();
        assert!(matches!(status.as_u16(), 502 | 503), "{status}");
    }
    let text = metrics_text(&h.client, &h.proxy.admin_addr().to_string()).await;
    let requests = |code: &str, source: &str| {
        series(
            &text,
            &format!(
                "poynt_proxy_requests_total{{caller=\"unknown\",code=\"{code}\",method=\"GET\",source=\"{source}\"}}"
            ),
        )
    };
    assert_eq!(requests("502", "upstream"), 1.0);
    assert_eq!(requests("502", "proxy"), 1.0);
    assert_eq!(requests("503", "proxy"), 1.0);
    h.stop().await;
}
