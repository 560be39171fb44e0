//! Test fixtures: start the emulator and the proxy on loopback port 0 through the same
//! `start` as production, and hand back addresses, a client and handles.
#![allow(dead_code)] // each test binary uses a different subset of the fixtures

pub mod browser;
pub mod fault;
pub mod fleet;
pub mod otlp;
pub mod process;
pub mod raw_upstream;
pub mod redis;

use std::path::PathBuf;
use std::time::Duration;

use poynt_emulator::{self as emulator, Emulator, EmulatorConfig, Stats};
use poynt_proxy::config::{Config, KeySources};
use poynt_proxy::{Listeners, Running, start};
use poynt_wire::MerchantId;
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

/// An HTTP client for the proxy (plain HTTP, never through an environment proxy). Like any
/// well-behaved caller it drops idle connections before the proxy's `keepalive_timeout`
/// (75 s) would close them, so a reused connection never races the proxy's close (tests that
/// shorten it below 5 s talk to the proxy over their own sockets).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(64)
        .pool_idle_timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

/// How to build a harness.
pub struct Builder {
    merchants: usize,
    /// Merchants chosen by the test (so its YAML can name them); `merchants` fresh ones
    /// otherwise.
    merchant_ids: Vec<MerchantId>,
    token_ttl: Duration,
    tls: bool,
    extra_yaml: String,
    onboarding: Option<String>,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            merchants: 1,
            merchant_ids: Vec::new(),
            token_ttl: Duration::from_secs(3600),
            tls: false,
            extra_yaml: String::new(),
            onboarding: None,
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

    /// These merchants, authorized at the emulator up front, instead of fresh ones.
    pub fn merchant_ids(mut self, merchants: &[MerchantId]) -> Self {
        self.merchant_ids = merchants.to_vec();
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

    /// Turns onboarding on, pointed at the emulator's authorize and sign-out pages, with a
    /// listener bound up front so `public_url` names its real port; `lines` are further
    /// keys of the `onboarding:` section (indented by two spaces, e.g. `  code_key: tls`).
    pub fn onboarding(mut self, lines: &str) -> Self {
        self.onboarding = Some(lines.to_owned());
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
        let merchants: Vec<MerchantId> = if self.merchant_ids.is_empty() {
            (0..self.merchants).map(|_| merchant()).collect()
        } else {
            self.merchant_ids.clone()
        };
        let emulator = self.emulator(&merchants).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut extra = self.extra_yaml.clone();
        let onboarding_listener = match &self.onboarding {
            Some(lines) => {
                let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
                let public = listener.local_addr().expect("addr");
                let lines = code_key_files(&emulator, &dir, lines);
                extra.push_str(&onboarding_yaml(
                    &emulator,
                    &format!("http://{public}"),
                    &lines,
                ));
                Some(listener)
            }
            None => None,
        };
        let config_yaml = proxy_yaml(&emulator, &dir, &extra);
        launch(emulator, merchants, config_yaml, dir, onboarding_listener).await
    }
}

/// Starts the proxy on `config_yaml` (with `onboarding` as its onboarding listener, if any)
/// beside `emulator`; `dir` holds the files the config names.
pub async fn launch(
    emulator: Emulator,
    merchants: Vec<MerchantId>,
    config_yaml: String,
    dir: tempfile::TempDir,
    onboarding: Option<TcpListener>,
) -> Harness {
    let config = Config::parse(&config_yaml, &KeySources::default()).expect("config");
    harness(emulator, merchants, config, config_yaml, dir, onboarding).await
}

/// Starts the proxy on `config` and wraps everything in a [`Harness`].
async fn harness(
    emulator: Emulator,
    merchants: Vec<MerchantId>,
    config: Config,
    config_yaml: String,
    dir: tempfile::TempDir,
    onboarding: Option<TcpListener>,
) -> Harness {
    let mut listeners = Listeners::bind(&config).await.expect("bind");
    if onboarding.is_some() {
        listeners.onboarding = onboarding;
    }
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

/// A proxy config pointing at `emulator`, on port 0, with `extra` appended, and the memory
/// store unless `extra` has its own `store:` section. Writes the emulator's CA (if any) into
/// `dir`.
pub fn proxy_yaml(emulator: &Emulator, dir: &tempfile::TempDir, extra: &str) -> String {
    let ca_line = match emulator.ca_pem() {
        Some(pem) => {
            let path = dir.path().join("emulator-ca.pem");
            std::fs::write(&path, pem).expect("write CA");
            format!("  ca_file: {:?}\n", path.display().to_string())
        }
        None => String::new(),
    };
    // The default backend writes a file; tests keep tokens in memory unless they say otherwise.
    let store = if extra.lines().any(|line| line.starts_with("store:")) {
        ""
    } else {
        "store:\n  backend: memory\n"
    };
    // A `poynt:` section in `extra` adds its keys to the one made here (its own key file
    // replacing the fixture's).
    let (poynt_extra, extra) = split_section(extra, "poynt:");
    let key_line = if poynt_extra.contains("private_key_file:") {
        String::new()
    } else {
        format!(
            "  private_key_file: {:?}\n",
            fixture("app-key-pkcs8.pem").display().to_string()
        )
    };
    format!(
        "listen: \"127.0.0.1:0\"\nadmin_listen: \"127.0.0.1:0\"\npoynt:\n  api_url: \"{}\"\n  application_id: \"{APP_ID}\"\n{key_line}{ca_line}{poynt_extra}{store}{extra}",
        emulator.base_url(),
    )
}

/// Splits the body of the top-level `header` section out of `yaml`: (its indented lines,
/// everything else).
fn split_section(yaml: &str, header: &str) -> (String, String) {
    let (mut section, mut rest) = (String::new(), String::new());
    let mut inside = false;
    for line in yaml.lines() {
        if line == header {
            inside = true;
            continue;
        }
        if inside && !line.starts_with(' ') {
            inside = false;
        }
        let target = if inside { &mut section } else { &mut rest };
        target.push_str(line);
        target.push('\n');
    }
    (section, rest)
}

/// Replaces `{EMULATOR_KEY_FILE}` and `{EMULATOR_CERT_FILE}` in `lines` with files in `dir`
/// holding the emulator's code-signing public key (PEM) and its TLS certificate (PEM).
fn code_key_files(emulator: &Emulator, dir: &tempfile::TempDir, lines: &str) -> String {
    let mut lines = lines.to_owned();
    let files = [
        (
            "{EMULATOR_KEY_FILE}",
            "code-key.pem",
            Some(emulator.poynt_net_public_key_pem()),
        ),
        (
            "{EMULATOR_CERT_FILE}",
            "code-cert.pem",
            emulator.tls_certificate_pem(),
        ),
    ];
    for (placeholder, name, pem) in files {
        if let (true, Some(pem)) = (lines.contains(placeholder), pem) {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).expect("write code key");
            lines = lines.replace(placeholder, &path.display().to_string());
        }
    }
    lines
}

/// The `oauth:` and `onboarding:` sections for a proxy onboarding through `emulator`'s
/// pages, reachable at `public_url`, with `lines` added to `onboarding:`.
pub fn onboarding_yaml(emulator: &Emulator, public_url: &str, lines: &str) -> String {
    let base = emulator.base_url();
    format!(
        "oauth:\n  authorize_url: \"{base}/applications/authorize\"\n  signout_url: \"{base}/auth/signout\"\nonboarding:\n  listen: \"127.0.0.1:0\"\n  public_url: \"{public_url}\"\n{lines}\n"
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

    /// The onboarding listener's URL for `path`.
    pub fn onboarding_url(&self, path: &str) -> String {
        let addr = self.proxy.onboarding_addr().expect("onboarding configured");
        format!("http://{addr}{path}")
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

    /// Sums every series of the proxy's /metrics whose line starts with `selector`.
    pub async fn metric(&self, selector: &str) -> f64 {
        let text = self
            .client
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .filter(|l| l.starts_with(selector))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// GET `path` on the admin listener, as JSON.
    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        let response = self.client.get(self.admin_url(path)).send().await;
        response
            .expect("admin answers")
            .json()
            .await
            .expect("admin JSON")
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

/// The query parameters of `url`, in order.
pub fn query_pairs(url: &str) -> Vec<(String, String)> {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
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
    let mut query = form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("redirect_uri", redirect)
        .append_pair("client_id", APP_ID)
        .append_pair("context", "csrf-123")
        .append_pair("businessId", &merchant.to_string());
    let uri = format!(
        "{}/applications/authorize?{}",
        emulator.base_url(),
        query.finish()
    );
    redirect_from(emulator, &uri).await
}

/// GETs `url` at `emulator` (trusting its CA, like a browser told to) and returns the
/// `Location` of its 302.
pub async fn redirect_from(emulator: &Emulator, url: &str) -> String {
    use http_body_util::BodyExt;
    use rustls_pki_types::pem::PemObject;
    let roots = rustls_pki_types::CertificateDer::pem_slice_iter(
        emulator.ca_pem().unwrap_or_default().as_bytes(),
    )
    .collect::<Result<Vec<_>, _>>()
    .expect("CA parses");
    let client = poynt_proxy::upstream::client(&roots, Duration::from_secs(5)).expect("client");
    let request = http::Request::get(url)
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

/// Asserts a body is the proxy's own error in Poynt's shape with this code and status.
pub fn assert_poynt_error(body: &serde_json::Value, code: &str, status: u16) {
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["httpStatus"], status, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(
        body["requestId"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// Like [`launch`], but from a file (`proxy.yaml` in `dir`), as `run` loads it, so
/// [`Running::reload`] can read it again; the test edits the file to change what a reload
/// applies.
pub async fn launch_file(
    emulator: Emulator,
    merchants: Vec<MerchantId>,
    config_yaml: String,
    dir: tempfile::TempDir,
) -> Harness {
    let path = dir.path().join("proxy.yaml");
    std::fs::write(&path, &config_yaml).expect("write config");
    let config = Config::load(&path).expect("config");
    harness(emulator, merchants, config, config_yaml, dir, None).await
}
