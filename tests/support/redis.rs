//! A real `redis-server` on a free loopback port, persistence off, in a temporary directory;
//! it can be stopped and started again on the same port (outage tests), can serve TLS only,
//! and is killed on drop.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or stopped) `redis-server`.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// `--tls-*` arguments when it serves TLS only.
    tls: Vec<String>,
}

/// PEM files for a TLS server.
pub struct TlsFiles<'a> {
    /// The server's certificate chain.
    pub cert: &'a std::path::Path,
    /// The server's private key.
    pub key: &'a std::path::Path,
    /// The CA that issued it.
    pub ca: &'a std::path::Path,
}

impl RedisServer {
    /// Starts a server on a port the OS picks, and waits until it answers PING.
    pub fn start() -> Self {
        Self::start_with(Vec::new())
    }

    /// Starts a server that speaks TLS only (no client certificates), and waits until its
    /// port accepts connections.
    pub fn start_tls(files: TlsFiles<'_>) -> Self {
        let path = |p: &std::path::Path| p.display().to_string();
        Self::start_with(vec![
            "--tls-cert-file".into(),
            path(files.cert),
            "--tls-key-file".into(),
            path(files.key),
            "--tls-ca-cert-file".into(),
            path(files.ca),
            "--tls-auth-clients".into(),
            "no".into(),
        ])
    }

    fn start_with(tls: Vec<String>) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let mut server = Self {
            port,
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
            tls,
        };
        server.restart();
        server
    }

    /// `redis://127.0.0.1:{port}/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The port it listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and waits (at most 10 s) until it answers.
    pub fn restart(&mut self) {
        self.stop();
        let port = self.port.to_string();
        let ports = if self.tls.is_empty() {
            ["--port", &port, "--tls-port", "0"]
        } else {
            ["--port", "0", "--tls-port", &port]
        };
        let child = Command::new("redis-server")
            .args(ports)
            .args(&self.tls)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers_ping() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("redis-server on port {} exited: {status}", self.port);
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// PING in clear; a TLS-only server is ready when its port accepts connections.
    fn answers_ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        if !self.tls.is_empty() {
            return true;
        }
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
