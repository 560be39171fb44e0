//! Fixtures for tests that run the real binary.
#![allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "real processes run on the wall clock; these waits block a thread, outside any Tokio clock"
)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_poynt-proxy");

/// A proxy process, killed on drop if still running.
pub struct ProxyProcess {
    pub child: Child,
    /// The configuration file it runs with (a reload reads it again).
    pub config: std::path::PathBuf,
    pub proxy: String,
    pub admin: String,
    /// The onboarding listener's address, when configured.
    pub onboarding: Option<String>,
    /// Everything the process wrote to stdout so far.
    pub output: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Forwards a child's stdout lines to a channel (read on a thread: std pipes block).
pub fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits (at most 30 s) for a stdout line satisfying `pick`.
pub fn wait_line<T>(rx: &mpsc::Receiver<String>, mut pick: impl FnMut(&str) -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("expected line before the deadline");
        if let Some(found) = pick(&line) {
            return found;
        }
    }
}

/// Starts `poynt-proxy run` against `emulator` with `extra` YAML at `RUST_LOG=info`.
pub fn spawn_proxy(emulator: &poynt_emulator::Emulator, extra: &str) -> ProxyProcess {
    spawn_proxy_logging(emulator, extra, "info")
}

/// Runs `poynt-proxy run` with `extra` YAML, expecting it to fail at start (within 30 s);
/// returns its exit status and everything it wrote.
pub fn run_expecting_failure(
    emulator: &poynt_emulator::Emulator,
    extra: &str,
) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let yaml = super::proxy_yaml(emulator, &dir, extra);
    let path = dir.path().join("proxy.yaml");
    std::fs::write(&path, yaml).unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expected the proxy to fail at start; it kept running"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    (status, text)
}

/// Starts `poynt-proxy run` with JSON logs at `log_level`, waits for its "ready" line, and
/// keeps collecting its stdout and stderr into [`ProxyProcess::output`].
pub fn spawn_proxy_logging(
    emulator: &poynt_emulator::Emulator,
    extra: &str,
    log_level: &str,
) -> ProxyProcess {
    spawn_proxy_config(
        |dir| super::proxy_yaml(emulator, dir, &format!("log:\n  format: json\n{extra}")),
        log_level,
    )
}

/// Like [`spawn_proxy_logging`], with the whole configuration made by `yaml` (given the
/// process's own directory), which must ask for JSON logs: for tests that point the proxy
/// somewhere other than the emulator itself (through a fault proxy, say).
pub fn spawn_proxy_config(
    yaml: impl FnOnce(&tempfile::TempDir) -> String,
    log_level: &str,
) -> ProxyProcess {
    let dir = tempfile::tempdir().unwrap();
    let yaml = yaml(&dir);
    let path = dir.path().join("proxy.yaml");
    std::fs::write(&path, yaml).unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", log_level)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    let output = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().expect("piped stderr");
    let sink = output.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut all = sink.lock().unwrap();
            all.push_str(&line);
            all.push('\n');
        }
    });
    let rx = lines_of(&mut child);
    let (proxy, admin, onboarding) = wait_line(&rx, |line| {
        // What it logs while starting counts too (warnings about the store key, say).
        {
            let mut all = output.lock().unwrap();
            all.push_str(line);
            all.push('\n');
        }
        let v: Value = serde_json::from_str(line).ok()?;
        (v["message"] == "poynt-proxy ready").then(|| {
            (
                v["proxy_addr"].as_str().unwrap().to_owned(),
                v["admin_addr"].as_str().unwrap().to_owned(),
                v["onboarding_addr"].as_str().map(str::to_owned),
            )
        })
    });
    let sink = output.clone();
    std::thread::spawn(move || {
        while let Ok(line) = rx.recv() {
            let mut all = sink.lock().unwrap();
            all.push_str(&line);
            all.push('\n');
        }
    });
    ProxyProcess {
        child,
        config: path,
        proxy,
        admin,
        onboarding,
        output,
        _dir: dir,
    }
}

impl ProxyProcess {
    /// Sends SIGTERM and waits (at most 30 s) for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.exit_within(Duration::from_secs(30))
            .expect("proxy exits within 30 s of SIGTERM")
    }

    /// Sends a signal by name (`TERM`, `HUP`, `KILL`...).
    pub fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{name} failed");
    }

    /// The exit status, if the process exits within `limit` (polled every 20 ms).
    pub fn exit_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// GET `/businesses/{merchant}/orders` through it for `merchant`: the status.
    pub async fn get(&self, merchant: poynt_wire::MerchantId) -> u16 {
        self.answer(merchant).await.0
    }

    /// GET `/businesses/{merchant}/orders` through it for `merchant`: the status and the
    /// JSON body (the emulator's echo, or the proxy's error in Poynt's shape; `Null` if
    /// neither).
    pub async fn answer(&self, merchant: poynt_wire::MerchantId) -> (u16, Value) {
        let response = self.orders(&super::client(), merchant).await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// GET `/businesses/{merchant}/orders` through it for `merchant`, sent by `client`.
    pub async fn orders(
        &self,
        client: &reqwest::Client,
        merchant: poynt_wire::MerchantId,
    ) -> reqwest::Response {
        client
            .get(format!(
                "http://{}/businesses/{merchant}/orders",
                self.proxy
            ))
            .header(super::HEADER, merchant.to_string())
            .send()
            .await
            .expect("proxy answers")
    }

    /// Its /metrics text.
    pub async fn metrics(&self) -> String {
        super::client()
            .get(format!("http://{}/metrics", self.admin))
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics text")
    }

    /// Sums every series of its /metrics whose line starts with `selector`.
    pub async fn metric(&self, selector: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .filter(|l| l.starts_with(selector))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Everything the process logged so far.
    pub fn logs(&self) -> String {
        self.output.lock().unwrap().clone()
    }
}

/// A process's resident memory now, in KiB (from /proc).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}
