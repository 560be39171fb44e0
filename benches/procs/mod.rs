//! What the long runs (soak, chaos) share: the release binary started as the emulator or
//! the proxy, its announcement line awaited, killed when dropped and its resident memory
//! read; the emulator's control API; the runtime.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A child process killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns the binary and returns the first stdout line `pick` accepts, then drains the rest.
fn spawn(
    args: &[&str],
    env: &[(&str, &str)],
    pick: impl Fn(&str) -> Option<String>,
) -> (Proc, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_poynt-proxy"))
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the binary runs");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let found = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| pick(&line))
        .expect("the announcement line");
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
    (Proc(child), found)
}

/// A process's resident memory in KiB (0 once it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The emulator on a loopback port, with `--token-ttl ttl` and the app's private key
/// written to `key_out`: the process and its base URL.
pub fn emulator(app_id: &str, key_out: &str, ttl: &str) -> (Proc, String) {
    spawn(
        &[
            "emulator",
            "--listen",
            "127.0.0.1:0",
            "--app-id",
            app_id,
            "--app-private-key-out",
            key_out,
            "--token-ttl",
            ttl,
        ],
        &[("RUST_LOG", "warn")],
        |line| {
            line.strip_prefix("poynt-emulator listening on ")
                .map(str::to_owned)
        },
    )
}

/// `poynt-proxy run --config path`: the process and its proxy and admin addresses.
pub fn proxy(config: &str) -> (Proc, String, String) {
    let (proc, addrs) = spawn(
        &["run", "--config", config],
        &[("RUST_LOG", "warn,poynt_proxy::lifecycle=info")],
        |line| {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            if v["message"] != "poynt-proxy ready" {
                return None;
            }
            Some(format!(
                "{} {}",
                v["proxy_addr"].as_str()?,
                v["admin_addr"].as_str()?
            ))
        },
    );
    let (proxy, admin) = addrs.split_once(' ').expect("two addresses");
    (proc, proxy.to_owned(), admin.to_owned())
}

/// Runs `run` on a multi-threaded runtime, unless the bench harness only lists or
/// smoke-tests the benches (`--list`, `--test`).
pub fn main<F: Future<Output = ()>>(run: impl FnOnce() -> F) {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list" || a == "--test") {
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run());
}

/// The value following `name` on the command line, if any.
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let at = args.iter().position(|a| a == name)?;
    args.get(at + 1).cloned()
}

/// `n` fresh merchants, authorized at the emulator at `base`.
pub async fn merchants(control: &reqwest::Client, base: &str, n: usize) -> Vec<String> {
    let merchants: Vec<String> = (0..n).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    for m in &merchants {
        control
            .post(format!("{base}/_emulator/merchants/{m}/authorize"))
            .send()
            .await
            .expect("authorize");
    }
    merchants
}

/// The emulator's counters.
pub async fn stats(control: &reqwest::Client, base: &str) -> serde_json::Value {
    control
        .get(format!("{base}/_emulator/stats"))
        .send()
        .await
        .expect("the emulator answers")
        .json()
        .await
        .expect("stats as JSON")
}
