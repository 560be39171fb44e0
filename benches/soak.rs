//! The soak run: the release binary, proxy and emulator, for a long time (30 minutes by
//! default) under steady traffic for 200 merchants with 5-second tokens, while /token is
//! made to fail now and then (5xx, dropped connections, answers slower than the token
//! timeout). The emulator is plain HTTP on loopback, the store the embedded default. It reports the errors callers saw outside the injected windows, /token calls per
//! merchant, refresh-token reuse and refusals at the emulator, and the proxy's RSS over time.
//! `benches/soak.sh` runs it; by hand: `cargo bench --bench soak -- --minutes 30`.
#![allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "a benchmark of real processes measures wall time"
)]

mod procs;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const APP_ID: &str = "urn:aid:50a150a1-0000-4000-8000-00000000500a";
const HEADER: &str = "X-Poynt-Merchant-Id";
/// After an injected fault ends, how long its effects may last: a token renewed just before
/// the fault lives 5 s, and a merchant backing off retries within `backoff_max` (2 s).
const FAULT_AFTERMATH: Duration = Duration::from_secs(8);

struct Settings {
    minutes: u64,
    merchants: usize,
    rate: u64,
}

fn settings() -> Settings {
    let value = |name: &str, default: u64| {
        procs::arg(name).map_or(default, |v| v.parse().expect("a number"))
    };
    Settings {
        minutes: value("--minutes", 30),
        merchants: value("--merchants", 200) as usize,
        rate: value("--rate", 400),
    }
}

/// What the load saw: per second since the start, (sent, failed).
type Seconds = Arc<Mutex<BTreeMap<u64, (u64, u64)>>>;

fn main() {
    procs::main(|| soak(settings()));
}

async fn soak(settings: Settings) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| dir.path().join(name).display().to_string();
    let (_emulator, base) = procs::emulator(APP_ID, &path("app.pem"), "5s");
    let control = reqwest::Client::new();
    let merchants = procs::merchants(&control, &base, settings.merchants).await;
    let config = format!(
        "listen: \"127.0.0.1:0\"\nadmin_listen: \"127.0.0.1:0\"\npoynt:\n  api_url: \"{base}\"\n  application_id: \"{APP_ID}\"\n  private_key_file: {:?}\nstore:\n  backend: embedded\n  path: {:?}\ntokens:\n  backoff_initial: 500ms\n  backoff_max: 2s\n  new_merchant_grant_burst: 1000\nlog:\n  format: json\n",
        path("app.pem"),
        path("tokens.redb"),
    );
    std::fs::write(path("proxy.yaml"), config).unwrap();
    let (proxy, proxy_addr, _admin) = procs::proxy(&path("proxy.yaml"));
    let pid = proxy.0.id();
    let client = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    let started = Instant::now();
    let total = Duration::from_secs(settings.minutes * 60);
    let seconds: Seconds = Arc::default();
    let load = tokio::spawn(drive(
        client,
        proxy_addr,
        merchants.clone(),
        settings.rate,
        total,
        seconds.clone(),
    ));
    let mut windows: Vec<(Duration, Duration, &str)> = Vec::new();
    let mut rss: Vec<(u64, u64)> = Vec::new();
    let faults = [
        ("token 503", json!({"token_status": 503})),
        ("token dropped", json!({"token_drop": true})),
        (
            "token slower than token_timeout",
            json!({"token_delay_ms": 12000}),
        ),
    ];
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    let mut next_fault = 0;
    while started.elapsed() < total {
        tick.tick().await;
        let now = started.elapsed();
        rss.push((now.as_secs(), procs::rss_kib(pid)));
        // A 10 s fault in the second half of every two minutes.
        if now.as_secs() % 120 >= 60
            && now.as_secs() % 120 < 70
            && now + Duration::from_secs(30) < total
        {
            let (name, fault) = &faults[next_fault % faults.len()];
            next_fault += 1;
            control
                .post(format!("{base}/_emulator/fault"))
                .json(fault)
                .send()
                .await
                .unwrap();
            let from = started.elapsed();
            tokio::time::sleep(Duration::from_secs(10)).await;
            control
                .post(format!("{base}/_emulator/fault"))
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            windows.push((from, started.elapsed(), name));
        }
    }
    load.await.unwrap();
    let stats = procs::stats(&control, &base).await;
    report(&settings, &seconds, &windows, &rss, &stats);
}

/// Sends `rate` requests a second, round-robin over the merchants, for `total`.
async fn drive(
    client: reqwest::Client,
    addr: String,
    merchants: Vec<String>,
    rate: u64,
    total: Duration,
    seconds: Seconds,
) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    let limit = Arc::new(tokio::sync::Semaphore::new(256));
    let mut n = 0usize;
    while started.elapsed() < total {
        tick.tick().await;
        let m = merchants[n % merchants.len()].clone();
        n += 1;
        let permit = limit.clone().acquire_owned().await.unwrap();
        let (client, url, seconds) = (
            client.clone(),
            format!("http://{addr}/businesses/{m}/orders"),
            seconds.clone(),
        );
        tokio::spawn(async move {
            let at = started.elapsed().as_secs();
            let ok = client
                .get(url)
                .header(HEADER, m)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            let mut seconds = seconds.lock().unwrap();
            let entry = seconds.entry(at).or_default();
            entry.0 += 1;
            entry.1 += u64::from(!ok);
            drop(permit);
        });
    }
}

fn report(
    settings: &Settings,
    seconds: &Seconds,
    windows: &[(Duration, Duration, &str)],
    rss: &[(u64, u64)],
    stats: &Value,
) {
    let seconds = seconds.lock().unwrap();
    let injected = |at: u64| {
        windows.iter().any(|(from, to, _)| {
            at + 1 >= from.as_secs() && at <= (*to + FAULT_AFTERMATH).as_secs()
        })
    };
    let sent: u64 = seconds.values().map(|(s, _)| s).sum();
    let (mut in_faults, mut outside) = (0u64, 0u64);
    for (at, (_, failed)) in seconds.iter() {
        if injected(*at) {
            in_faults += failed;
        } else {
            outside += failed;
        }
    }
    let per_merchant: Vec<u64> = ["jwt_bearer", "refresh_token"]
        .iter()
        .flat_map(|grant| {
            stats["token_calls"][grant]["by_merchant"]
                .as_object()
                .into_iter()
                .flat_map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0))))
        })
        .fold(BTreeMap::<String, u64>::new(), |mut acc, (m, n)| {
            *acc.entry(m).or_default() += n;
            acc
        })
        .into_values()
        .collect();
    let mut sorted = per_merchant.clone();
    sorted.sort_unstable();
    let pick = |q: f64| {
        sorted
            .get(((sorted.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(0)
    };
    let third = (rss.len() / 3).max(1);
    let mean =
        |s: &[(u64, u64)]| s.iter().map(|(_, r)| *r as f64).sum::<f64>() / s.len().max(1) as f64;
    let (first, last) = (mean(&rss[..third]), mean(&rss[rss.len() - third..]));
    println!(
        "## Soak: {} minutes, {} merchants, {} req/s, 5 s tokens",
        settings.minutes, settings.merchants, settings.rate
    );
    println!();
    println!("| measure | value |");
    println!("|---|---:|");
    println!("| requests sent | {sent} |");
    println!(
        "| failed outside injected fault windows (+{} s) | {outside} |",
        FAULT_AFTERMATH.as_secs()
    );
    println!("| failed during injected faults | {in_faults} |");
    println!("| fault windows injected | {} |", windows.len());
    println!("| /token calls (total) | {} |", stats["token_calls_total"]);
    println!(
        "| /token calls per merchant: min / median / max | {} / {} / {} |",
        pick(0.0),
        pick(0.5),
        pick(1.0)
    );
    println!(
        "| JWT-bearer grants / refresh grants | {} / {} |",
        stats["token_calls"]["jwt_bearer"]["total"], stats["token_calls"]["refresh_token"]["total"]
    );
    println!(
        "| refresh grants refused | {} |",
        stats["token_calls"]["refresh_token"]["refused"]
    );
    println!(
        "| refresh-token reuse (emulator) | {} |",
        stats["refresh_token_reuse"]
    );
    println!(
        "| RSS, mean of the first third / last third (KiB) | {first:.0} / {last:.0} ({:+.1} %) |",
        (last - first) / first.max(1.0) * 100.0
    );
    println!();
    println!(
        "RSS samples (minute: KiB): {}",
        rss.iter()
            .step_by(6)
            .map(|(s, r)| format!("{}: {r}", s / 60))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "Fault windows: {}",
        windows
            .iter()
            .map(|(f, t, n)| format!("{n} {}-{} s", f.as_secs(), t.as_secs()))
            .collect::<Vec<_>>()
            .join("; ")
    );
}
