//! A real `redis-server` on a free loopback port, persistence off, in a temporary directory;
//! it can be killed and started again, empty, on the same port, frozen (SIGSTOP) and thawed,
//! and told to pause its clients (outage tests); it can serve TLS only, and is killed on drop.
#![allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "a real redis-server runs on the wall clock; these waits block a thread, outside any Tokio clock"
)]

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

    /// Freezes the server (SIGSTOP): connections stay open and nothing answers, as on a
    /// host that stalls.
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    /// Thaws a frozen server (SIGCONT).
    pub fn thaw(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let child = self.child.as_ref().expect("redis-server is running");
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -{name} redis-server failed");
    }

    /// `CLIENT PAUSE {millis} ALL`: every client's commands wait that long (a Redis failover
    /// or an operator's pause) while connections stay up.
    pub fn pause_clients(&self, millis: u64) {
        let mut stream =
            TcpStream::connect(("127.0.0.1", self.port)).expect("redis-server accepts");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .write_all(format!("CLIENT PAUSE {millis} ALL\r\n").as_bytes())
            .unwrap();
        let mut reply = [0u8; 5];
        stream.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"+OK\r\n", "CLIENT PAUSE answered");
    }

    /// The value at `key` (a fresh connection, so it works across restarts; it waits out a
    /// client pause of up to 10 s); `None` when absent.
    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        let patient = ::redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(10)))
            .set_response_timeout(Some(Duration::from_secs(10)));
        let mut connection = ::redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection_with_config(&patient)
            .await
            .expect("redis-server answers");
        ::redis::cmd("GET")
            .arg(key)
            .query_async(&mut connection)
            .await
            .expect("GET answers")
    }

    /// Kills the server (SIGKILL) and waits for it to exit; [`RedisServer::restart`] brings
    /// it back empty.
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
