//! The default worker count under a CPU limit: the real binary started inside a cgroup with
//! a CPU quota that this test creates under the CPU controller (cgroup v2's `cpu.max` where
//! the CPU controller is in the unified hierarchy, else v1's `cpu.cfs_quota_us`), the count
//! it reports and the worker threads it runs read, and the cgroup removed. Needs root, as
//! creating a cgroup does.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use support::Builder;
use support::process::{BIN, lines_of, wait_line};

/// A cgroup made for one test, holding a quota, and a child group without one (as a pod
/// holds its containers) where the process goes; both removed on drop.
struct CpuGroup {
    /// The group with the quota.
    limited: PathBuf,
    /// Its child, where the proxy runs.
    leaf: PathBuf,
}

impl CpuGroup {
    /// A group allowed `runtime_us` of CPU time every 100 ms, under whichever hierarchy
    /// holds the CPU controller.
    fn limited_to(runtime_us: u64, name: &str) -> Self {
        let name = format!("poynt-test-{name}-{}", std::process::id());
        let unified = Path::new("/sys/fs/cgroup");
        let v1 = Path::new("/sys/fs/cgroup/cpu");
        let controllers =
            fs::read_to_string(unified.join("cgroup.controllers")).unwrap_or_default();
        let group = if controllers.split_whitespace().any(|c| c == "cpu") {
            write(&unified.join("cgroup.subtree_control"), "+cpu");
            let limited = unified.join(&name);
            fs::create_dir(&limited).expect("expected to create a v2 cgroup (run as root)");
            write(&limited.join("cpu.max"), &format!("{runtime_us} 100000"));
            write(&limited.join("cgroup.subtree_control"), "+cpu");
            Self {
                leaf: limited.join("proxy"),
                limited,
            }
        } else {
            assert!(
                v1.join("cpu.cfs_quota_us").is_file(),
                "expected the CPU controller in /sys/fs/cgroup (v2) or /sys/fs/cgroup/cpu (v1); \
                 found v2 controllers {controllers:?} and no v1 cpu.cfs_quota_us"
            );
            let limited = v1.join(&name);
            fs::create_dir(&limited).expect("expected to create a v1 cgroup (run as root)");
            write(&limited.join("cpu.cfs_period_us"), "100000");
            write(&limited.join("cpu.cfs_quota_us"), &runtime_us.to_string());
            Self {
                leaf: limited.join("proxy"),
                limited,
            }
        };
        fs::create_dir(&group.leaf).expect("expected to create the child cgroup");
        group
    }
}

impl Drop for CpuGroup {
    fn drop(&mut self) {
        for dir in [&self.leaf, &self.limited] {
            if let Err(error) = fs::remove_dir(dir) {
                eprintln!(
                    "could not remove the test cgroup {}: {error}",
                    dir.display()
                );
            }
        }
    }
}

fn write(path: &Path, text: &str) {
    fs::write(path, text)
        .unwrap_or_else(|e| panic!("expected to write {text:?} to {}: {e}", path.display()));
}

/// A proxy process, killed and reaped on drop (before its cgroup is removed).
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary inside `group` with no `server.workers` (the shell joins the group and
/// then becomes the proxy, so its runtime starts there) and returns what its ready line
/// reports: the worker count and the CPU budget, and the worker threads it runs.
async fn start_in(group: &CpuGroup) -> (u64, String, usize) {
    let m = support::merchant();
    let emulator = Builder::default().emulator(&[m]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.yaml");
    fs::write(
        &config,
        support::proxy_yaml(&emulator, &dir, "log:\n  format: json\n"),
    )
    .unwrap();
    let mut child = Reaped(
        Command::new("sh")
            .args(["-c", r#"echo $$ > "$0" && exec "$@""#])
            .arg(group.leaf.join("cgroup.procs"))
            .args([BIN, "run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("sh runs"),
    );
    let lines = lines_of(&mut child.0);
    let (workers, cpus) = wait_line(&lines, |line| {
        let v: Value = serde_json::from_str(line).ok()?;
        (v["message"] == "poynt-proxy ready").then(|| {
            (
                v["workers"].as_u64().expect("workers in the ready line"),
                v["cpus"].as_str().unwrap_or_default().to_owned(),
            )
        })
    });
    let pid = child.0.id();
    let in_group = fs::read_to_string(group.leaf.join("cgroup.procs")).unwrap();
    assert!(
        in_group.lines().any(|p| p == pid.to_string()),
        "expected the proxy ({pid}) in the test cgroup; found {in_group:?}"
    );
    let threads = fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|task| fs::read_to_string(task.unwrap().path().join("comm")).unwrap())
        .filter(|comm| comm.starts_with("poynt-worker-"))
        .count();
    drop(child);
    emulator.shutdown().await;
    (workers, cpus, threads)
}

#[tokio::test]
async fn the_default_worker_count_follows_the_cgroup_cpu_quota_rounded_up() {
    let cpus = std::thread::available_parallelism().unwrap().get();

    let group = CpuGroup::limited_to(150_000, "large");
    let (workers, budget, threads) = start_in(&group).await;
    let expected = cpus.min(2);
    assert_eq!(
        (workers, threads),
        (expected as u64, expected),
        "a 1.5-CPU quota on {cpus} CPUs: two workers (no more than the CPUs), not one"
    );
    assert_eq!(budget, format!("{cpus} CPUs, cgroup quota 1.50 CPUs"));
    drop(group);

    let group = CpuGroup::limited_to(30_000, "small");
    let (workers, budget, threads) = start_in(&group).await;
    assert_eq!(
        (workers, threads),
        (1, 1),
        "a 0.3-CPU quota on {cpus} CPUs: one worker"
    );
    assert_eq!(budget, format!("{cpus} CPUs, cgroup quota 0.30 CPUs"));
}
