//! The chaos run: three release replicas sharing one `redis-server`, and the emulator, for
//! a while (10 minutes by default) under a few hundred requests a second over 200 merchants
//! with 30-second tokens, while Redis is killed, stopped (SIGSTOP), paused (`CLIENT PAUSE`)
//! or restarted — always empty, persistence off — at random every 20-60 s, and /token fails
//! now and then (5xx, dropped connections, answers slower than the token timeout). The last
//! 30 s are calm, so the end state is read from a settled fleet. It reports the answers
//! callers got by cause (status and error code, or the transport error), refresh-token
//! reuse at the emulator, merchants whose refresh token the store no longer holds at the
//! end, the replicas' lock waits and lost locks, and their RSS.
//! `benches/chaos.sh` runs it; by hand: `cargo bench --bench chaos -- --duration 60s`.
#![allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "a benchmark of real processes measures wall time"
)]

mod procs;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};

const APP_ID: &str = "urn:aid:c4a05c4a-0000-4000-8000-00000000c4a0";
const HEADER: &str = "X-Poynt-Merchant-Id";
/// The end of the run with no Redis event and no /token fault.
const CALM_END: Duration = Duration::from_secs(30);
/// Requests in flight at most (a stalled fleet makes the load wait, not pile up).
const IN_FLIGHT: usize = 512;
/// How long a caller waits for an answer.
const CALLER_TIMEOUT: Duration = Duration::from_secs(30);

struct Settings {
    duration: Duration,
    merchants: usize,
    rate: u64,
    replicas: usize,
    seed: u64,
}

fn settings() -> Settings {
    let number = |name: &str, default: u64| {
        procs::arg(name).map_or(default, |v| v.parse().expect("a number"))
    };
    Settings {
        duration: procs::arg("--duration").map_or(Duration::from_secs(600), |v| {
            humantime::parse_duration(&v).expect("a duration such as 10m or 60s")
        }),
        merchants: number("--merchants", 200) as usize,
        rate: number("--rate", 300),
        replicas: number("--replicas", 3) as usize,
        seed: number(
            "--seed",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        ),
    }
}

fn main() {
    procs::main(|| chaos(settings()));
}

/// A `redis-server` on one port, persistence off, that the run kills, stops, pauses and
/// starts again (empty).
struct Redis {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl Redis {
    fn start(dir: &std::path::Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let mut redis = Self {
            port,
            dir: dir.to_owned(),
            child: None,
        };
        redis.run();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts the server and waits (at most 10 s) until it answers.
    fn run(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs");
        self.child = Some(child);
        let client = redis::Client::open(self.url()).expect("a Redis URL");
        let deadline = Instant::now() + Duration::from_secs(10);
        while client
            .get_connection_with_timeout(Duration::from_millis(200))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_err()
        {
            assert!(Instant::now() < deadline, "redis-server did not answer");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `signal` (`KILL`, `TERM`, `STOP`, `CONT`) to the server.
    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([format!("-{signal}"), child.id().to_string()])
                .status();
        }
    }

    /// Waits for the server to exit after a KILL or TERM.
    fn reap(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// `CLIENT PAUSE ms ALL`: Redis holds every client's commands for `ms`.
    fn pause(&self, ms: u64) {
        let paused = redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
            .and_then(|mut c| {
                redis::cmd("CLIENT")
                    .arg("PAUSE")
                    .arg(ms)
                    .arg("ALL")
                    .query::<()>(&mut c)
            });
        if let Err(error) = paused {
            eprintln!("chaos: CLIENT PAUSE failed: {error}");
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.signal("CONT");
        self.signal("KILL");
        self.reap();
    }
}

/// What happened to Redis, and when (seconds since the start).
struct RedisEvent {
    at: u64,
    what: String,
}

/// Does one random thing to Redis; returns what it did. Blocks for the outage's length.
async fn strike(redis: &mut Redis, rng: &mut StdRng) -> String {
    match rng.random_range(0..4) {
        0 => {
            let down = rng.random_range(1..=5);
            redis.signal("KILL");
            redis.reap();
            tokio::time::sleep(Duration::from_secs(down)).await;
            redis.run();
            format!("SIGKILL, restarted empty after {down} s")
        }
        1 => {
            let stopped = rng.random_range(2..=8);
            redis.signal("STOP");
            tokio::time::sleep(Duration::from_secs(stopped)).await;
            redis.signal("CONT");
            format!("SIGSTOP for {stopped} s")
        }
        2 => {
            let ms = rng.random_range(2_000..=8_000);
            redis.pause(ms);
            format!("CLIENT PAUSE {ms} ms")
        }
        _ => {
            redis.signal("TERM");
            redis.reap();
            redis.run();
            "SIGTERM, restarted empty".to_owned()
        }
    }
}

/// A /token fault to inject, at random.
fn token_fault(rng: &mut StdRng) -> (&'static str, Value) {
    match rng.random_range(0..3) {
        0 => ("token 503", json!({"token_status": 503})),
        1 => ("token dropped", json!({"token_drop": true})),
        _ => (
            "token slower than token_timeout",
            json!({"token_delay_ms": 12_000}),
        ),
    }
}

/// Answers by cause: `200`, `<status> <code>`, or `transport <kind>`.
type Causes = Arc<Mutex<BTreeMap<String, u64>>>;

async fn chaos(settings: Settings) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| dir.path().join(name).display().to_string();
    let mut rng = StdRng::seed_from_u64(settings.seed);
    std::fs::create_dir(path("redis")).unwrap();
    let mut redis = Redis::start(&dir.path().join("redis"));
    let (_emulator, base) = procs::emulator(APP_ID, &path("app.pem"), "30s");
    let control = reqwest::Client::new();
    let merchants = procs::merchants(&control, &base, settings.merchants).await;
    let key = Command::new(env!("CARGO_BIN_EXE_poynt-proxy"))
        .args(["store", "keygen"])
        .output()
        .expect("store keygen");
    std::fs::write(path("store.key"), key.stdout).unwrap();
    let config = format!(
        "listen: \"127.0.0.1:0\"\nadmin_listen: \"127.0.0.1:0\"\npoynt:\n  api_url: \"{base}\"\n  application_id: \"{APP_ID}\"\n  private_key_file: {:?}\nstore:\n  backend: redis\n  redis_url: \"{}\"\n  key_file: {:?}\n  key_prefix: chaos\ntokens:\n  backoff_initial: 500ms\n  backoff_max: 2s\n  new_merchant_grant_burst: 1000\nlog:\n  format: json\n",
        path("app.pem"),
        redis.url(),
        path("store.key"),
    );
    std::fs::write(path("proxy.yaml"), config).unwrap();
    let replicas: Vec<(procs::Proc, String, String)> = (0..settings.replicas)
        .map(|_| procs::proxy(&path("proxy.yaml")))
        .collect();
    let client = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(5))
        .timeout(CALLER_TIMEOUT)
        .build()
        .unwrap();

    let started = Instant::now();
    let causes: Causes = Arc::default();
    let load = tokio::spawn(drive(
        client.clone(),
        replicas.iter().map(|(_, proxy, _)| proxy.clone()).collect(),
        merchants.clone(),
        settings.rate,
        settings.duration,
        causes.clone(),
    ));
    let pids: Vec<u32> = replicas.iter().map(|(p, _, _)| p.0.id()).collect();
    let mut rss: Vec<Vec<u64>> = vec![Vec::new(); pids.len()];
    let mut events: Vec<RedisEvent> = Vec::new();
    let mut faults: Vec<(u64, u64, &str)> = Vec::new();
    let mut next_strike = started + Duration::from_secs(rng.random_range(20..=60));
    let mut next_fault = started + Duration::from_secs(rng.random_range(20..=60));
    // The fault in force: when it started and ends, and its name.
    let mut fault_until: Option<(Instant, Instant, &str)> = None;
    let mut last_sample = started - Duration::from_secs(10);
    let chaos_ends = started + settings.duration.saturating_sub(CALM_END);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    while Instant::now() < chaos_ends {
        tick.tick().await;
        let now = Instant::now();
        if now.duration_since(last_sample) >= Duration::from_secs(10) {
            last_sample = now;
            for (samples, pid) in rss.iter_mut().zip(&pids) {
                samples.push(procs::rss_kib(*pid));
            }
        }
        if let Some((from, until, name)) = fault_until
            && now >= until
        {
            set_fault(&control, &base, &json!({})).await;
            faults.push((
                (from - started).as_secs(),
                started.elapsed().as_secs(),
                name,
            ));
            fault_until = None;
        }
        if fault_until.is_none() && now >= next_fault {
            let (name, fault) = token_fault(&mut rng);
            set_fault(&control, &base, &fault).await;
            let lasts = Duration::from_secs(rng.random_range(5..=15));
            fault_until = Some((now, now + lasts, name));
            next_fault = now + lasts + Duration::from_secs(rng.random_range(20..=60));
        }
        if now >= next_strike {
            let at = started.elapsed().as_secs();
            let what = strike(&mut redis, &mut rng).await;
            events.push(RedisEvent { at, what });
            next_strike = Instant::now() + Duration::from_secs(rng.random_range(20..=60));
        }
    }
    if let Some((from, _, name)) = fault_until {
        set_fault(&control, &base, &json!({})).await;
        faults.push((
            (from - started).as_secs(),
            started.elapsed().as_secs(),
            name,
        ));
    }
    load.await.unwrap();
    for (samples, pid) in rss.iter_mut().zip(&pids) {
        samples.push(procs::rss_kib(*pid));
    }
    let stats = procs::stats(&control, &base).await;
    let mut metrics = Vec::new();
    for (_, _, admin) in &replicas {
        let text = match client.get(format!("http://{admin}/metrics")).send().await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(error) => {
                eprintln!("chaos: {admin}/metrics did not answer: {error}");
                String::new()
            }
        };
        metrics.push(text);
    }
    let stored = store_list(&path("proxy.yaml"));
    report(
        &settings,
        &Report {
            causes: &causes.lock().unwrap(),
            events: &events,
            faults: &faults,
            stats: &stats,
            metrics: &metrics,
            stored: &stored,
            merchants: &merchants,
            rss: &rss,
        },
    );
}

async fn set_fault(control: &reqwest::Client, base: &str, fault: &Value) {
    if let Err(error) = control
        .post(format!("{base}/_emulator/fault"))
        .json(fault)
        .send()
        .await
    {
        eprintln!("chaos: setting the /token fault failed: {error}");
    }
}

/// Sends `rate` requests a second for `total`, round-robin over the merchants and the
/// replicas, and counts the answers by cause.
async fn drive(
    client: reqwest::Client,
    replicas: Vec<String>,
    merchants: Vec<String>,
    rate: u64,
    total: Duration,
    causes: Causes,
) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    let limit = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut n = 0usize;
    while started.elapsed() < total {
        tick.tick().await;
        let m = merchants[n % merchants.len()].clone();
        let url = format!(
            "http://{}/businesses/{m}/orders",
            replicas[(n / merchants.len() + n) % replicas.len()]
        );
        n += 1;
        let permit = limit.clone().acquire_owned().await.unwrap();
        let (client, causes) = (client.clone(), causes.clone());
        tokio::spawn(async move {
            let cause = match client.get(url).header(HEADER, m).send().await {
                Ok(response) if response.status() == 200 => "200".to_owned(),
                Ok(response) => {
                    let status = response.status().as_u16();
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    format!("{status} {}", body["code"].as_str().unwrap_or("(no code)"))
                }
                Err(error) if error.is_timeout() => "transport: timed out".to_owned(),
                Err(error) if error.is_connect() => "transport: connect".to_owned(),
                Err(_) => "transport: other".to_owned(),
            };
            *causes.lock().unwrap().entry(cause).or_default() += 1;
            drop(permit);
        });
    }
    // Every answer counted before the report.
    let _ = limit.acquire_many(IN_FLIGHT as u32).await;
}

/// `store list`'s rows: merchant -> whether its record holds a refresh token.
fn store_list(config: &str) -> BTreeMap<String, bool> {
    let output = Command::new(env!("CARGO_BIN_EXE_poynt-proxy"))
        .args(["store", "list", "--config", config])
        .output()
        .expect("store list runs");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut columns = line.split_whitespace();
            let merchant = columns.next()?.to_owned();
            let refresh = columns.nth(2)? == "yes";
            Some((merchant, refresh))
        })
        .collect()
}

/// What the run saw, for the report.
struct Report<'a> {
    causes: &'a BTreeMap<String, u64>,
    events: &'a [RedisEvent],
    faults: &'a [(u64, u64, &'a str)],
    stats: &'a Value,
    metrics: &'a [String],
    stored: &'a BTreeMap<String, bool>,
    merchants: &'a [String],
    rss: &'a [Vec<u64>],
}

/// The sum over the replicas of every series named `name` with `labels` among its labels.
fn metric(texts: &[String], name: &str, labels: &str) -> f64 {
    texts
        .iter()
        .flat_map(|text| text.lines())
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{']) && rest.contains(labels))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The smallest bucket bound holding at least `q` of a lock-wait histogram's observations
/// (summed over the replicas), or `-` when there were none.
fn lock_wait_quantile(texts: &[String], outcome: &str, q: f64) -> String {
    let name = "poynt_proxy_store_lock_wait_duration_seconds";
    let count = metric(texts, &format!("{name}_count"), &format!("\"{outcome}\""));
    if count == 0.0 {
        return "-".to_owned();
    }
    let mut bounds: BTreeMap<String, f64> = BTreeMap::new();
    for line in texts.iter().flat_map(|text| text.lines()) {
        let Some(rest) = line.strip_prefix(&format!("{name}_bucket{{")) else {
            continue;
        };
        if !rest.contains(&format!("outcome=\"{outcome}\"")) {
            continue;
        }
        let (Some(le), Some(value)) = (
            rest.split("le=\"").nth(1).and_then(|s| s.split('"').next()),
            line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()),
        ) else {
            continue;
        };
        *bounds.entry(le.to_owned()).or_default() += value;
    }
    let mut sorted: Vec<(f64, f64)> = bounds
        .into_iter()
        .map(|(le, n)| (le.parse().unwrap_or(f64::INFINITY), n))
        .collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    sorted
        .iter()
        .find(|(_, n)| *n >= q * count)
        .map_or("-".to_owned(), |(le, _)| format!("≤ {le} s"))
}

fn report(settings: &Settings, r: &Report<'_>) {
    let sent: u64 = r.causes.values().sum();
    println!(
        "## Chaos: {} s, {} replicas, {} merchants, {} req/s, 30 s tokens, seed {}",
        settings.duration.as_secs(),
        settings.replicas,
        settings.merchants,
        settings.rate,
        settings.seed
    );
    println!();
    println!("| answers by cause | count | share |");
    println!("|---|---:|---:|");
    for (cause, n) in r.causes {
        println!(
            "| {cause} | {n} | {:.3} % |",
            *n as f64 / sent.max(1) as f64 * 100.0
        );
    }
    println!("| all | {sent} | |");
    println!();
    let without: Vec<&String> = r
        .merchants
        .iter()
        .filter(|m| !r.stored.get(*m).copied().unwrap_or(false))
        .collect();
    let absent = r
        .merchants
        .iter()
        .filter(|m| !r.stored.contains_key(*m))
        .count();
    let m = r.metrics;
    println!("| measure | value |");
    println!("|---|---:|");
    println!(
        "| refresh-token reuse (emulator) | {} |",
        r.stats["refresh_token_reuse"]
    );
    println!(
        "| merchants whose stored record holds no refresh token at the end (of which no record at all) | {} ({absent}) |",
        without.len()
    );
    println!(
        "| /token calls (total) | {} |",
        r.stats["token_calls_total"]
    );
    println!(
        "| JWT-bearer grants / refresh grants / refresh grants refused | {} / {} / {} |",
        r.stats["token_calls"]["jwt_bearer"]["total"],
        r.stats["token_calls"]["refresh_token"]["total"],
        r.stats["token_calls"]["refresh_token"]["refused"]
    );
    for outcome in ["adopted", "acquired", "timed_out"] {
        let count = metric(
            m,
            "poynt_proxy_store_lock_waits_total",
            &format!("\"{outcome}\""),
        );
        let sum = metric(
            m,
            "poynt_proxy_store_lock_wait_duration_seconds_sum",
            &format!("\"{outcome}\""),
        );
        println!(
            "| lock waits `{outcome}`: count / mean / p50 / p99 | {count} / {:.2} s / {} / {} |",
            sum / count.max(1.0),
            lock_wait_quantile(m, outcome, 0.5),
            lock_wait_quantile(m, outcome, 0.99),
        );
    }
    println!(
        "| locks found lost on extension / on release | {} / {} |",
        metric(
            m,
            "poynt_proxy_store_operations_total",
            "op=\"extend\",outcome=\"lost\""
        ),
        metric(
            m,
            "poynt_proxy_store_operations_total",
            "op=\"release\",outcome=\"lost\""
        ),
    );
    println!(
        "| store operations unavailable (all replicas) | {} |",
        metric(
            m,
            "poynt_proxy_store_operations_total",
            "outcome=\"unavailable\""
        )
    );
    println!(
        "| replicas reading `store_reachable` 1 at the end | {} of {} |",
        metric(m, "poynt_proxy_store_reachable", ""),
        m.len()
    );
    for (i, samples) in r.rss.iter().enumerate() {
        println!(
            "| replica {} RSS first / max / last (KiB) | {} / {} / {} |",
            i + 1,
            samples.first().copied().unwrap_or(0),
            samples.iter().max().copied().unwrap_or(0),
            samples.last().copied().unwrap_or(0)
        );
    }
    println!();
    println!(
        "Redis events: {}",
        r.events
            .iter()
            .map(|e| format!("{} s {}", e.at, e.what))
            .collect::<Vec<_>>()
            .join("; ")
    );
    println!(
        "/token faults: {}",
        r.faults
            .iter()
            .map(|(from, to, name)| format!("{from}-{to} s {name}"))
            .collect::<Vec<_>>()
            .join("; ")
    );
}
