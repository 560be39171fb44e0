//! Test fixtures: start the emulator and the proxy on loopback port 0 through the same
//! `start` as production, and hand back addresses, a client and handles.
#![allow(dead_code)] // each test binary uses a different subset of the fixtures

pub mod process;

use std::path::PathBuf;
use std::time::Duration;

use poynt_proxy::config::{Config, KeySources};
use poynt_proxy::emulator::{self, Emulator, EmulatorConfig, Stats};
use poynt_proxy::merchant::MerchantId;
use poynt_proxy::{Listeners, Running, start};
use tokio::net::TcpListener;

/// The registered test app.
pub const APP_ID: &str = "urn:aid:7e57a9a0-0000-4000-8000-000000000001";
/// The merchant header.
pub const HEADER: &str = "X-Poynt-Merchant-Id";

/// A fixture file's path.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The test app's public key, as registered at the emulator.
pub fn app_public_key() -> String {
    std::fs::read_to_string(fixture("app-key-public.pem")).expect("fixture public key")
}

/// A fresh merchant ID.
pub fn merchant() -> MerchantId {
    MerchantId::parse(&uuid::Uuid::new_v4().to_string()).expect("uuid")
}

/// An HTTP client for the proxy (plain HTTP, never through an environment proxy).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(64)
        .build()
        .expect("client")
}

/// How to build a harness.
pub struct Builder {
    merchants: usize,
    token_ttl: Duration,
    tls: bool,
    extra_yaml: String,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            merchants: 1,
            token_ttl: Duration::from_secs(3600),
            tls: false,
            extra_yaml: String::new(),
        }
    }
}

/// A running emulator and proxy.
pub struct Harness {
    pub emulator: Emulator,
    pub proxy: Running,
    pub merchants: Vec<MerchantId>,
    pub client: reqwest::Client,
    pub config_yaml: String,
    _dir: tempfile::TempDir,
}

impl Builder {
    /// Merchants authorized at the emulator up front.
    pub fn merchants(mut self, n: usize) -> Self {
        self.merchants = n;
        self
    }

    /// Access token lifetime the emulator grants.
    pub fn token_ttl(mut self, ttl: Duration) -> Self {
        self.token_ttl = ttl;
        self
    }

    /// Serve the emulator over TLS (the proxy trusts its CA through `ca_file`).
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Top-level YAML sections appended to the proxy's config (e.g. `tokens:` or `server:`).
    pub fn yaml(mut self, yaml: &str) -> Self {
        self.extra_yaml.push_str(yaml);
        self.extra_yaml.push('\n');
        self
    }

    /// Starts the emulator only.
    pub async fn emulator(&self, merchants: &[MerchantId]) -> Emulator {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        emulator::start(
            EmulatorConfig {
                app_id: APP_ID.into(),
                app_public_key_pem: app_public_key(),
                audience: None,
                merchants: merchants.to_vec(),
                token_ttl: self.token_ttl,
                tls: self.tls,
                tls_names: Vec::new(),
            },
            listener,
        )
        .await
        .expect("emulator starts")
    }

    /// Starts both.
    pub async fn start(self) -> Harness {
        let merchants: Vec<MerchantId> = (0..self.merchants).map(|_| merchant()).collect();
        let emulator = self.emulator(&merchants).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let config_yaml = proxy_yaml(&emulator, &dir, &self.extra_yaml);
        let config = Config::parse(&config_yaml, &KeySources::default()).expect("config");
        let listeners = Listeners::bind(&config).await.expect("bind");
        let proxy = start(config, listeners).await.expect("proxy starts");
        Harness {
            emulator,
            proxy,
            merchants,
            client: client(),
            config_yaml,
            _dir: dir,
        }
    }
}

/// A proxy config pointing at `emulator`, on port 0, with `extra` appended. Writes the
/// emulator's CA (if any) into `dir`.
pub fn proxy_yaml(emulator: &Emulator, dir: &tempfile::TempDir, extra: &str) -> String {
    let ca_line = match emulator.ca_pem() {
        Some(pem) => {
            let path = dir.path().join("emulator-ca.pem");
            std::fs::write(&path, pem).expect("write CA");
            format!("  ca_file: {:?}\n", path.display().to_string())
        }
        None => String::new(),
    };
    format!(
        "listen: \"127.0.0.1:0\"\nadmin_listen: \"127.0.0.1:0\"\npoynt:\n  api_url: \"{}\"\n  application_id: \"{APP_ID}\"\n  private_key_file: {:?}\n{ca_line}{extra}",
        emulator.base_url(),
        fixture("app-key-pkcs8.pem").display().to_string(),
    )
}

impl Harness {
    /// A default harness: one authorized merchant, hour-long tokens, plain HTTP upstream.
    pub async fn new() -> Self {
        Builder::default().start().await
    }

    /// The proxy URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy.proxy_addr())
    }

    /// The admin URL for `path`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy.admin_addr())
    }

    /// GET `/businesses/{merchant}{suffix}` through the proxy for `merchant`.
    pub async fn get(&self, merchant: MerchantId, suffix: &str) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/businesses/{merchant}{suffix}")))
            .header(HEADER, merchant.to_string())
            .send()
            .await
            .expect("proxy answers")
    }

    /// The emulator's counters.
    pub fn stats(&self) -> Stats {
        self.emulator.stats()
    }

    /// Drains and stops both.
    pub async fn stop(self) {
        self.proxy.shutdown();
        self.proxy.wait().await;
        self.emulator.shutdown().await;
    }
}

/// Polls `check` every 20 ms until it returns true, at most `limit`; panics with `what`
/// otherwise. For conditions with no event to await (e.g. a counter another process moves).
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The value of query parameter `name` in `url`.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Walks the emulator's authorization page for `merchant` like a merchant's browser, with
/// context `"csrf-123"`, and returns where it redirects to.
pub async fn authorization_redirect(
    emulator: &Emulator,
    merchant: MerchantId,
    redirect: &str,
) -> String {
    use http_body_util::BodyExt;
    use rustls_pki_types::pem::PemObject;
    let mut query = form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("redirect_uri", redirect)
        .append_pair("client_id", APP_ID)
        .append_pair("context", "csrf-123")
        .append_pair("businessId", &merchant.to_string());
    let roots = rustls_pki_types::CertificateDer::pem_slice_iter(
        emulator.ca_pem().unwrap_or_default().as_bytes(),
    )
    .collect::<Result<Vec<_>, _>>()
    .expect("CA parses");
    let client = poynt_proxy::upstream::client(&roots, Duration::from_secs(5)).expect("client");
    let uri = format!(
        "{}/applications/authorize?{}",
        emulator.base_url(),
        query.finish()
    );
    let request = http::Request::get(uri)
        .body(http_body_util::Empty::new().map_err(|n| match n {}).boxed())
        .expect("request");
    let response = client
        .request(request)
        .await
        .expect("authorize page answers");
    assert_eq!(response.status(), 302);
    response.headers()["location"]
        .to_str()
        .expect("ASCII location")
        .to_owned()
}

/// The authorization code the emulator's page issues for `merchant`.
pub async fn authorization_code(
    emulator: &Emulator,
    merchant: MerchantId,
    redirect: &str,
) -> String {
    let location = authorization_redirect(emulator, merchant, redirect).await;
    query_param(&location, "code").expect("code in the redirect")
}
