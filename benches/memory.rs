//! Resident memory per cached merchant: writes 1, 10,000 and 100,000 tokens of realistic
//! size (about 900 bytes) to an embedded store file (the default backend), then restores a
//! fresh broker from it as a restart does, and reports the growth of VmRSS across the
//! restore beyond the tokens' own bytes (redb's bounded page cache included). Each size runs
//! in a fresh child process, so memory freed by one size cannot be reused by the next and
//! hide its cost. Run with `cargo bench --bench memory`.

mod support;

use std::path::Path;
use std::process::Command;

const SIZES: [usize; 3] = [1, 10_000, 100_000];

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line in /proc/self/status")
}

/// Writes `n` merchants' tokens to an embedded store in `dir` (a process of its own, so
/// none of the memory this takes is left for the measuring process to reuse).
fn fill(n: usize, dir: &Path) {
    let runtime = runtime();
    runtime.block_on(support::stored(dir, &support::merchants(n)));
}

/// Restores a broker from the store in `dir` (holding `n` merchants) and prints one row.
fn measure(n: usize, dir: &Path) {
    let runtime = runtime();
    let own = (support::access_token(0).len() + support::refresh_token(0).len()) as f64;
    let config = support::embedded_config(dir);
    let before = rss_kib();
    let broker = runtime.block_on(support::restored_broker(&config));
    let (cached, _) = runtime.block_on(broker.counts());
    assert_eq!(cached, n as u64, "every merchant's token is cached");
    let after = rss_kib();
    let per = (after.saturating_sub(before) * 1024) as f64 / n as f64;
    println!(
        "| {n} | {before} | {after} | {per:.0} | {own:.0} | {:.0} |",
        per - own
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    if let (Some(n), Some(dir)) = (value("--merchants"), value("--dir")) {
        let n = n.parse().expect("--merchants takes a count");
        match value("--step").map(String::as_str) {
            Some("fill") => fill(n, Path::new(dir)),
            _ => measure(n, Path::new(dir)),
        }
        return;
    }
    println!(
        "| merchants | RSS before (KiB) | RSS after (KiB) | growth per merchant (B) | token bytes (B) | beyond token bytes (B) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    let exe = std::env::current_exe().expect("own executable");
    for n in SIZES {
        let dir = tempfile::tempdir().expect("tempdir");
        for step in ["fill", "measure"] {
            let status = Command::new(&exe)
                .args(["--merchants", &n.to_string(), "--step", step, "--dir"])
                .arg(dir.path())
                .status()
                .expect("run the child");
            assert!(
                status.success(),
                "{step} for {n} merchants failed: {status}"
            );
        }
    }
}
