//! Resident memory per cached merchant: writes 1, 10,000 and 100,000 tokens of realistic
//! size (about 900 bytes) to an embedded store file (the default backend), then restores a
//! fresh broker from it as a restart does, and reports the growth of VmRSS across the
//! restore beyond the tokens' own bytes (redb's bounded page cache included). Each size runs
//! in a fresh child process, so memory freed by one size cannot be reused by the next and
//! hide its cost. Run with `cargo bench --bench memory`.

mod support;

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

/// Fills one broker with `n` merchants and prints one table row.
fn measure(n: usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let merchants = support::merchants(n);
    let own = (support::access_token(0).len() + support::refresh_token(0).len()) as f64;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = runtime.block_on(support::stored(dir.path(), &merchants));
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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list" || a == "--test") {
        return;
    }
    if let Some(n) = args
        .iter()
        .position(|a| a == "--merchants")
        .and_then(|i| args.get(i + 1))
    {
        measure(n.parse().expect("--merchants takes a count"));
        return;
    }
    println!(
        "| merchants | RSS before (KiB) | RSS after (KiB) | growth per merchant (B) | token bytes (B) | beyond token bytes (B) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    let exe = std::env::current_exe().expect("own executable");
    for n in SIZES {
        let status = Command::new(&exe)
            .args(["--merchants", &n.to_string()])
            .status()
            .expect("run the measuring child");
        assert!(status.success(), "measuring {n} merchants failed: {status}");
    }
}
