//! Configuration: a raw serde schema read from YAML, then `validate` into the checked
//! [`Config`] the rest of the program trusts. Every error names the key path and says what
//! was expected and what was found, and every check runs at start-up, never at a request.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Uri};
use rustls_pki_types::CertificateDer;
use serde::Deserialize;

use crate::merchant::MerchantId;
use crate::onboarding::code_key::{CodeKey, CodeKeySource};
use crate::onboarding::state::StateKey;
use crate::store::keys::{self as store_keys, KeyOrigin, STORE_KEY_ENV, StoreKey};
use crate::store::seal::Key;
use crate::token::assertion::{AppKey, KeyError};

/// Environment variable that may carry the app's private key as PEM text, so the key can
/// come from a secret store without touching disk.
pub const PRIVATE_KEY_ENV: &str = "POYNT_PROXY_PRIVATE_KEY";

/// Poynt's production API host: the default upstream and assertion audience.
pub const DEFAULT_API_URL: &str = "https://services.poynt.net";
/// The API version every call carries unless configured otherwise.
pub const DEFAULT_API_VERSION: &str = "1.2";
/// Where merchants are sent to grant the app access.
pub const DEFAULT_AUTHORIZE_URL: &str = "https://poynt.net/applications/authorize";
/// Which log lines are written unless `log.level` or `RUST_LOG` says otherwise.
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// The header callers name their merchant in.
pub const DEFAULT_MERCHANT_HEADER: &str = "X-Poynt-Merchant-Id";
/// The embedded store's file, relative to the config file's directory.
pub const DEFAULT_STORE_PATH: &str = "data/tokens.redb";
/// Where the Redis backend connects unless told otherwise.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/0";
/// The namespace of every Redis key the proxy writes.
pub const DEFAULT_KEY_PREFIX: &str = "poynt-proxy";
/// How long an idle HTTP/1 caller connection is kept: nginx's default. Callers' pools should
/// drop idle connections sooner; Go's and reqwest's default 90 s does not (docs/OPERATIONS.md
/// says what to set).
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(75);
/// Bound on one store operation: a slow store must not hold up a grant.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_millis(500);
/// Environment variable that overrides `store.redis_url`, so a password need not sit in a file.
pub const REDIS_URL_ENV: &str = "POYNT_PROXY_REDIS_URL";
/// Where a merchant's poynt.net session is ended.
pub const DEFAULT_SIGNOUT_URL: &str = "https://services.poynt.net/auth/signout";
/// The onboarding listener's default address.
pub const DEFAULT_ONBOARDING_LISTEN: &str = "127.0.0.1:8081";
/// Who signs authorization codes (`iss`).
pub const DEFAULT_CODE_ISSUER: &str = "https://poynt.net";
/// `code_key` value meaning "the public key of the authorize host's TLS certificate".
pub const CODE_KEY_TLS: &str = "tls";
/// How long a merchant has from `/connect` to the callback.
pub const DEFAULT_STATE_TTL: Duration = Duration::from_secs(600);
/// Longest `onboarding.state_ttl` accepted.
const MAX_STATE_TTL: Duration = Duration::from_secs(86_400);
/// The callback's path on `onboarding.public_url`: the redirect URI is the two joined.
pub const ONBOARDING_CALLBACK_PATH: &str = "/oauth/callback";

/// Why a configuration was refused. The message always starts with the key path.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The YAML did not fit the schema (unknown key, wrong type, bad duration...).
    #[error("{0}")]
    Syntax(String),
    /// A value had the right type but a wrong meaning.
    #[error("{key}: {problem}")]
    Invalid {
        /// Dotted path of the offending key, e.g. `poynt.api_url`.
        key: &'static str,
        /// What was expected and what was found.
        problem: String,
    },
    /// The private key could not be loaded or parsed.
    #[error("{key}: {source}")]
    Key {
        /// Where the key was looked for (`poynt.private_key_file` or the environment variable).
        key: &'static str,
        /// Why it was refused.
        #[source]
        source: KeyError,
    },
    /// A store key could not be loaded or parsed.
    #[error("{key}: {source}")]
    StoreKey {
        /// Where the key was looked for, e.g. `store.previous_key_files[1]`.
        key: String,
        /// Why it was refused.
        #[source]
        source: store_keys::KeyError,
    },
}

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
    }
}

/// The checked configuration. Built only by [`Config::parse`] (or the demo), so holding one
/// means every value has been validated and the private key has loaded.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where internal callers connect (plain HTTP).
    pub listen: SocketAddr,
    /// Health, readiness, metrics and the admin API; loopback by default so it is not exposed.
    pub admin_listen: SocketAddr,
    /// How to reach and authenticate to Poynt.
    pub poynt: PoyntConfig,
    /// How callers name their merchant.
    pub merchant: MerchantConfig,
    /// Where tokens outlive the process.
    pub store: StoreConfig,
    /// Caller-facing server limits.
    pub server: ServerConfig,
    /// Token broker tuning.
    pub tokens: TokensConfig,
    /// Poynt's authorization and sign-out pages.
    pub oauth: OauthConfig,
    /// The merchant-facing onboarding listener; `None` when not configured (no listener).
    pub onboarding: Option<OnboardingConfig>,
    /// Log output.
    pub log: LogConfig,
    /// Admin API protection.
    pub admin: AdminConfig,
    /// The file this configuration was read from, which a reload reads again; `None` when it
    /// was parsed from text (tests, the demo).
    pub source: Option<PathBuf>,
}

/// Admin API protection.
#[derive(Debug, Clone, Default)]
pub struct AdminConfig {
    /// When set, `/admin/*` requires `Authorization: Bearer <this>`.
    pub bearer_token: Option<secrecy::SecretString>,
}

/// How the proxy talks to Poynt.
#[derive(Debug, Clone)]
pub struct PoyntConfig {
    /// Scheme and authority every forwarded call goes to; never taken from a caller.
    pub api_url: Uri,
    /// The `/token` endpoint.
    pub token_url: Uri,
    /// `aud` of self-signed assertions: Poynt expects its API host.
    pub audience: String,
    /// Value of the `api-version` header added to every call.
    pub api_version: HeaderValue,
    /// The app's ID (`urn:aid:...`), `iss` and `sub` of every assertion.
    pub application_id: String,
    /// The app's RSA private key, loaded and checked at start-up.
    pub private_key: AppKey,
    /// Extra trust anchors for Poynt's TLS (tests, private CAs), read from `ca_file` at
    /// start-up and added to the platform roots.
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// Bound on establishing a TCP+TLS connection to Poynt.
    pub connect_timeout: Duration,
    /// Bound on waiting for Poynt's response headers on a forwarded call.
    pub response_timeout: Duration,
    /// Longest a response body may bring no byte before the caller's response is aborted
    /// and the upstream connection closed: `response_timeout` ends at the head, and a body
    /// that stalls after it would otherwise hold the caller for as long as Poynt keeps the
    /// connection open.
    pub body_idle_timeout: Duration,
    /// Bound on a whole `/token` exchange.
    pub token_timeout: Duration,
}

/// Merchant naming.
#[derive(Debug, Clone)]
pub struct MerchantConfig {
    /// Header that carries the business ID; stripped before forwarding.
    pub header: HeaderName,
    /// When set, only these merchants are served; any other gets 403 before any grant.
    pub allow: Option<Arc<HashSet<MerchantId>>>,
}

/// Which store backs the token cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreBackend {
    /// One local file (redb), sealed: tokens survive restarts of this one process.
    Embedded,
    /// Redis, sealed: replicas share one token per merchant.
    Redis,
    /// Process memory only: tokens are fetched anew after a restart.
    Memory,
}

impl StoreBackend {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Embedded => "embedded",
            Self::Redis => "redis",
            Self::Memory => "memory",
        }
    }
}

/// Token persistence.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The backend in use.
    pub backend: StoreBackend,
    /// Embedded: the data file, resolved against the config file's directory.
    pub path: PathBuf,
    /// Redis: where to connect ([`REDIS_URL_ENV`] overrides the file).
    pub redis_url: RedisUrl,
    /// Redis: the namespace of every key.
    pub key_prefix: String,
    /// The key that seals every write, when configured (embedded and redis only). Without
    /// one the embedded backend keeps a key beside its file; redis requires one.
    pub key: Option<StoreKey>,
    /// Keys that still open values sealed before a rotation; never used to seal.
    pub previous_keys: Vec<Key>,
    /// Bound on one store operation.
    pub timeout: Duration,
}

impl StoreConfig {
    /// Where the embedded key sits when it sits beside the data (no key configured), so
    /// `check` and start-up can say that a copy of the directory holds both.
    pub fn key_beside_data(&self) -> Option<PathBuf> {
        (self.backend == StoreBackend::Embedded && self.key.is_none())
            .then(|| store_keys::beside(&self.path))
    }
}

/// A Redis URL. It may hold a password, so only [`RedisUrl::shown`] (scheme, user, host,
/// port, database) is ever printed.
#[derive(Clone)]
pub struct RedisUrl {
    url: secrecy::SecretString,
    shown: String,
}

impl RedisUrl {
    /// The full URL, to connect with.
    pub fn expose(&self) -> &str {
        use secrecy::ExposeSecret as _;
        self.url.expose_secret()
    }

    /// The URL without its password, for logs and messages.
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// Limits on the caller-facing listener.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// A connection that has not begun a request by then, or a request head not complete
    /// this long after its first byte, is closed.
    pub header_read_timeout: Duration,
    /// An HTTP/1 connection with no request in flight for this long is closed; callers'
    /// pools should drop idle connections sooner, so a reused one does not race the close.
    pub keepalive_timeout: Duration,
    /// Largest request head accepted (HTTP/1 read buffer, HTTP/2 header list).
    pub max_header_bytes: usize,
    /// Connections beyond this (across all workers) wait in the kernel backlog instead of
    /// being served.
    pub max_connections: usize,
    /// HTTP/2 streams one caller connection may have open at once.
    pub http2_max_concurrent_streams: u32,
    /// Larger request bodies are refused with 413.
    pub max_request_body_bytes: u64,
    /// Bodies up to this size are kept so a 401 can be retried; larger ones stream.
    pub retry_buffer_bytes: usize,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// Threads serving callers, each with its own event loop and upstream connections.
    pub workers: usize,
    /// An HTTP/2 connection with no open stream for this long gets GOAWAY and is closed.
    pub idle_timeout: Duration,
    /// A request body that makes no progress for this long ends the request (408).
    pub body_read_timeout: Duration,
    /// How often an HTTP/2 connection is PINGed to tell a live peer from a dead one.
    pub http2_keep_alive_interval: Duration,
    /// How long a PING may go unanswered before the connection is closed.
    pub http2_keep_alive_timeout: Duration,
}

/// Token broker tuning.
#[derive(Debug, Clone)]
pub struct TokensConfig {
    /// Fraction of a token's lifetime after which it is renewed in the background.
    pub refresh_at: f64,
    /// Random spread (± fraction of the lifetime) on the refresh point.
    pub refresh_jitter: f64,
    /// A token is not used this close to its expiry, even when renewal keeps failing
    /// (capped at a twentieth of the token's lifetime).
    pub expiry_margin: Duration,
    /// First back-off after a failed grant for a merchant.
    pub backoff_initial: Duration,
    /// Longest back-off.
    pub backoff_max: Duration,
    /// Cap on concurrent `/token` calls across all merchants.
    pub max_concurrent_grants: usize,
    /// Bound on merchants held in the cache.
    pub max_merchants: u64,
    /// Grants per second for merchants never granted before (a token bucket's rate).
    pub new_merchant_grants_per_second: u32,
    /// How many such grants may happen at once before the rate applies (the bucket's size).
    pub new_merchant_grant_burst: u32,
    /// A token younger than this that Poynt answers 401 is not renewed (a fresh token
    /// refused is not fixed by another one); the 401 reaches the caller.
    pub unauthorized_min_token_age: Duration,
    /// At most one 401-driven renewal per merchant within this interval.
    pub unauthorized_renewal_interval: Duration,
}

/// Poynt's merchant-facing pages.
#[derive(Debug, Clone)]
pub struct OauthConfig {
    /// Poynt's authorization page.
    pub authorize_url: Uri,
    /// Poynt's sign-out, offered on the success page.
    pub signout_url: Uri,
    /// `oauth.redirect_uri` as written. Onboarding uses its own derived one
    /// ([`OnboardingConfig::redirect_uri`]); [`Config::warnings`] says when they differ.
    pub redirect_uri: Option<String>,
}

/// The onboarding listener.
#[derive(Debug, Clone)]
pub struct OnboardingConfig {
    /// Where the onboarding listener binds (behind the operator's TLS ingress).
    pub listen: SocketAddr,
    /// Scheme and host browsers use to reach it, no trailing slash.
    pub public_url: String,
    /// `public_url` + [`ONBOARDING_CALLBACK_PATH`]: what Poynt redirects to, and what the
    /// code exchange names.
    pub redirect_uri: String,
    /// How Poynt's signed codes are verified.
    pub code_key: CodeKeySource,
    /// The `iss` codes must carry.
    pub code_issuer: String,
    /// How long a state from `/connect` stays valid.
    pub state_ttl: Duration,
    /// After success, 303 to this URL with `?businessId=` instead of the success page.
    pub success_redirect: Option<String>,
    /// The state key read from `onboarding.state_key_file`; `None` means a random key per
    /// process.
    pub state_key: Option<StateKey>,
    /// The app's name as merchants know it, shown on the onboarding pages.
    pub app_name: String,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Log settings.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Line format.
    pub format: LogFormat,
    /// Which lines are written, as an `EnvFilter` directive (`info`, `warn,poynt_proxy=debug`);
    /// the `RUST_LOG` environment variable, when set, takes its place.
    pub level: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_listen")]
    listen: String,
    #[serde(default = "default_admin_listen")]
    admin_listen: String,
    poynt: RawPoynt,
    #[serde(default)]
    merchant: RawMerchant,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    tokens: RawTokens,
    #[serde(default)]
    oauth: RawOauth,
    #[serde(default)]
    onboarding: Option<RawOnboarding>,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    admin: RawAdmin,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    bearer_token_file: Option<PathBuf>,
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

fn default_admin_listen() -> String {
    "127.0.0.1:9090".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPoynt {
    #[serde(default = "default_api_url")]
    api_url: String,
    token_url: Option<String>,
    audience: Option<String>,
    #[serde(default = "default_api_version")]
    api_version: String,
    application_id: Option<String>,
    private_key_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    connect_timeout: Duration,
    #[serde(default = "default_response_timeout", with = "humantime_serde")]
    response_timeout: Duration,
    #[serde(default = "default_body_idle_timeout", with = "humantime_serde")]
    body_idle_timeout: Duration,
    #[serde(default = "default_token_timeout", with = "humantime_serde")]
    token_timeout: Duration,
}

fn default_api_url() -> String {
    DEFAULT_API_URL.into()
}
fn default_api_version() -> String {
    DEFAULT_API_VERSION.into()
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_response_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_body_idle_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_token_timeout() -> Duration {
    Duration::from_secs(10)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMerchant {
    #[serde(default = "default_merchant_header")]
    header: String,
    allow: Option<Vec<String>>,
    allow_file: Option<PathBuf>,
}

impl Default for RawMerchant {
    fn default() -> Self {
        Self {
            header: default_merchant_header(),
            allow: None,
            allow_file: None,
        }
    }
}

fn default_merchant_header() -> String {
    DEFAULT_MERCHANT_HEADER.into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawStore {
    backend: String,
    path: PathBuf,
    redis_url: String,
    key_prefix: String,
    key_file: Option<PathBuf>,
    previous_key_files: Vec<PathBuf>,
    #[serde(with = "humantime_serde")]
    timeout: Duration,
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Embedded.as_str().into(),
            path: DEFAULT_STORE_PATH.into(),
            redis_url: DEFAULT_REDIS_URL.into(),
            key_prefix: DEFAULT_KEY_PREFIX.into(),
            key_file: None,
            previous_key_files: Vec::new(),
            timeout: DEFAULT_STORE_TIMEOUT,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    #[serde(with = "humantime_serde")]
    header_read_timeout: Duration,
    #[serde(with = "humantime_serde")]
    keepalive_timeout: Duration,
    max_header_bytes: usize,
    max_connections: usize,
    http2_max_concurrent_streams: u32,
    max_request_body_bytes: u64,
    retry_buffer_bytes: usize,
    #[serde(with = "humantime_serde")]
    shutdown_grace: Duration,
    workers: Option<usize>,
    #[serde(with = "humantime_serde")]
    idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    body_read_timeout: Duration,
    #[serde(with = "humantime_serde")]
    http2_keep_alive_interval: Duration,
    #[serde(with = "humantime_serde")]
    http2_keep_alive_timeout: Duration,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            max_header_bytes: 64 * 1024,
            max_connections: 10_000,
            http2_max_concurrent_streams: 256,
            max_request_body_bytes: 1 << 30,
            retry_buffer_bytes: 64 * 1024,
            shutdown_grace: Duration::from_secs(30),
            workers: None,
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(30),
            http2_keep_alive_interval: Duration::from_secs(20),
            http2_keep_alive_timeout: Duration::from_secs(20),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTokens {
    refresh_at: f64,
    refresh_jitter: f64,
    #[serde(with = "humantime_serde")]
    expiry_margin: Duration,
    #[serde(with = "humantime_serde")]
    backoff_initial: Duration,
    #[serde(with = "humantime_serde")]
    backoff_max: Duration,
    max_concurrent_grants: usize,
    max_merchants: u64,
    new_merchant_grants_per_second: u32,
    new_merchant_grant_burst: u32,
    #[serde(with = "humantime_serde")]
    unauthorized_min_token_age: Duration,
    #[serde(with = "humantime_serde")]
    unauthorized_renewal_interval: Duration,
}

impl Default for RawTokens {
    fn default() -> Self {
        Self {
            refresh_at: 0.8,
            refresh_jitter: 0.1,
            expiry_margin: Duration::from_secs(30),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            max_concurrent_grants: 16,
            max_merchants: 1_000_000,
            new_merchant_grants_per_second: 20,
            new_merchant_grant_burst: 100,
            unauthorized_min_token_age: Duration::from_secs(5),
            unauthorized_renewal_interval: Duration::from_secs(30),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOauth {
    #[serde(default = "default_authorize_url")]
    authorize_url: String,
    #[serde(default = "default_signout_url")]
    signout_url: String,
    redirect_uri: Option<String>,
}

impl Default for RawOauth {
    fn default() -> Self {
        Self {
            authorize_url: default_authorize_url(),
            signout_url: default_signout_url(),
            redirect_uri: None,
        }
    }
}

fn default_authorize_url() -> String {
    DEFAULT_AUTHORIZE_URL.into()
}
fn default_signout_url() -> String {
    DEFAULT_SIGNOUT_URL.into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOnboarding {
    #[serde(default = "default_onboarding_listen")]
    listen: String,
    public_url: Option<String>,
    #[serde(default = "default_code_key")]
    code_key: String,
    #[serde(default = "default_code_issuer")]
    code_issuer: String,
    #[serde(default = "default_state_ttl", with = "humantime_serde")]
    state_ttl: Duration,
    success_redirect: Option<String>,
    state_key_file: Option<PathBuf>,
    #[serde(default = "default_app_name")]
    app_name: String,
}

fn default_app_name() -> String {
    "this app".into()
}

fn default_onboarding_listen() -> String {
    DEFAULT_ONBOARDING_LISTEN.into()
}
fn default_code_key() -> String {
    CODE_KEY_TLS.into()
}
fn default_code_issuer() -> String {
    DEFAULT_CODE_ISSUER.into()
}
fn default_state_ttl() -> Duration {
    DEFAULT_STATE_TTL
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    #[serde(default = "default_log_format")]
    format: LogFormat,
    #[serde(default = "default_log_level")]
    level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: default_log_format(),
            level: default_log_level(),
        }
    }
}

fn default_log_level() -> String {
    DEFAULT_LOG_LEVEL.into()
}

fn default_log_format() -> LogFormat {
    LogFormat::Text
}

/// What the environment may supply instead of the file: the private key, the store key and
/// the Redis URL. Passed in (not read inside `parse`) so tests never touch the process
/// environment.
#[derive(Default)]
pub struct KeySources {
    /// Directory that relative paths in the file are resolved against.
    pub base_dir: Option<PathBuf>,
    /// PEM text from [`PRIVATE_KEY_ENV`], if set.
    pub private_key_env: Option<secrecy::SecretString>,
    /// The store key from [`STORE_KEY_ENV`], if set; it overrides `store.key_file`.
    pub store_key_env: Option<secrecy::SecretString>,
    /// The Redis URL from [`REDIS_URL_ENV`], if set; it overrides `store.redis_url`.
    pub redis_url_env: Option<secrecy::SecretString>,
}

impl KeySources {
    /// Reads [`PRIVATE_KEY_ENV`], [`STORE_KEY_ENV`] and [`REDIS_URL_ENV`] from the process
    /// environment.
    pub fn from_env(base_dir: Option<PathBuf>) -> Self {
        let var = |name| std::env::var(name).ok().map(Into::into);
        Self {
            base_dir,
            private_key_env: var(PRIVATE_KEY_ENV),
            store_key_env: var(STORE_KEY_ENV),
            redis_url_env: var(REDIS_URL_ENV),
        }
    }
}

impl Config {
    /// Reads and validates a config file; relative paths inside it are resolved against the
    /// file's directory, and the private key may come from [`PRIVATE_KEY_ENV`].
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base_dir = path.parent().map(Path::to_path_buf);
        let mut config = Self::parse(&text, &KeySources::from_env(base_dir))?;
        config.source = Some(path.to_owned());
        Ok(config)
    }

    /// Parses and validates YAML text.
    pub fn parse(text: &str, sources: &KeySources) -> Result<Self, ConfigError> {
        let raw: RawConfig =
            serde_yaml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        raw.validate(sources)
    }
}

impl RawConfig {
    fn validate(self, sources: &KeySources) -> Result<Config, ConfigError> {
        let listen = parse_addr("listen", &self.listen)?;
        let admin_listen = parse_addr("admin_listen", &self.admin_listen)?;
        let poynt = self.poynt.validate(sources)?;
        let merchant = self.merchant.validate(sources)?;
        let admin = self.admin.validate(sources)?;
        if !admin_listen.ip().is_loopback() && admin.bearer_token.is_none() {
            return Err(invalid(
                "admin.bearer_token_file",
                format!(
                    "admin_listen {admin_listen} is reachable from other hosts; expected a bearer secret file protecting /admin/*, found none"
                ),
            ));
        }
        let store = self.store.validate(sources)?;
        let server = self.server.validate()?;
        let tokens = self.tokens.validate()?;
        let oauth = self.oauth.validate()?;
        let onboarding = self
            .onboarding
            .map(|raw| raw.validate(sources))
            .transpose()?;
        let log = self.log.validate()?;
        distinct_listeners(listen, admin_listen, onboarding.as_ref().map(|o| o.listen))?;
        Ok(Config {
            listen,
            admin_listen,
            poynt,
            merchant,
            store,
            server,
            tokens,
            oauth,
            onboarding,
            log,
            admin,
            source: None,
        })
    }
}

/// The words `log.level` accepts alone; anything else alone would parse as a target name
/// (`warning` would mean "only lines from a module called warning") and silence every line.
const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

impl RawLog {
    fn validate(self) -> Result<LogConfig, ConfigError> {
        let expected = "expected trace, debug, info, warn, error, off or an EnvFilter directive";
        let directive = self.level.contains(['=', ',']) || self.level.contains("::");
        if !directive
            && !LOG_LEVELS
                .iter()
                .any(|level| level.eq_ignore_ascii_case(self.level.trim()))
        {
            return Err(invalid(
                "log.level",
                format!("{expected}; found {:?}", self.level),
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.level).map_err(|e| {
            invalid(
                "log.level",
                format!(
                    "{expected} such as warn,poynt_proxy=debug; found {:?} ({e})",
                    self.level
                ),
            )
        })?;
        Ok(LogConfig {
            format: self.format,
            level: self.level,
        })
    }
}

/// Refuses two listeners that would bind the same port on overlapping addresses (the same
/// address, or either the unspecified one): the second bind would fail at start with a bare
/// "address in use". Port 0 (an ephemeral port each) never collides.
fn distinct_listeners(
    listen: SocketAddr,
    admin_listen: SocketAddr,
    onboarding: Option<SocketAddr>,
) -> Result<(), ConfigError> {
    let overlap = |a: SocketAddr, b: SocketAddr| {
        a.port() != 0
            && a.port() == b.port()
            && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
    };
    let mut pairs = vec![("admin_listen", admin_listen, "listen", listen)];
    if let Some(onboarding) = onboarding {
        pairs.push(("onboarding.listen", onboarding, "listen", listen));
        pairs.push((
            "onboarding.listen",
            onboarding,
            "admin_listen",
            admin_listen,
        ));
    }
    match pairs.into_iter().find(|(_, a, _, b)| overlap(*a, *b)) {
        Some((key, addr, other, taken)) => Err(invalid(
            key,
            format!(
                "expected an address no other listener binds; found {addr}, which collides with {other} ({taken})"
            ),
        )),
        None => Ok(()),
    }
}

fn parse_addr(key: &'static str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| {
        invalid(
            key,
            format!("expected an IP:port socket address such as 127.0.0.1:8080; found {text:?}"),
        )
    })
}

/// Parses an http(s) URL with a host; `http` is allowed only for loopback hosts so that a
/// token can never cross a network in clear text.
fn parse_url(key: &'static str, text: &str) -> Result<Uri, ConfigError> {
    if let Some((scheme, rest)) = text.split_once("://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if let Some((_, host)) = authority.rsplit_once('@') {
            return Err(invalid(
                key,
                format!(
                    "expected a URL without user-info (credentials belong in files or the environment); found \"{scheme}://<redacted>@{host}\""
                ),
            ));
        }
    }
    let uri: Uri = text
        .parse()
        .map_err(|_| invalid(key, format!("{text:?} is not an http(s) URL")))?;
    let host = match (uri.scheme_str(), uri.host()) {
        (Some("https" | "http"), Some(host)) => host,
        _ => return Err(invalid(key, format!("{text:?} is not an http(s) URL"))),
    };
    if uri.scheme_str() == Some("http") && !is_loopback_host(host) {
        return Err(invalid(
            key,
            format!(
                "{text:?} uses http to a non-loopback host; expected https (http is allowed only for localhost and loopback addresses)"
            ),
        ));
    }
    Ok(uri)
}

fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn require_positive(key: &'static str, value: Duration) -> Result<Duration, ConfigError> {
    if value.is_zero() {
        return Err(invalid(key, "expected a duration above zero; found 0s"));
    }
    Ok(value)
}

/// Ceilings keep every duration far from what would overflow an instant, and every count
/// within what the runtime can allocate: a typo of three zeros fails `check`, not `run`.
const MAX_SHORT_TIMEOUT: Duration = Duration::from_secs(600);
const MAX_LONG_TIMEOUT: Duration = Duration::from_secs(86_400);

/// A positive duration of at most `max`.
fn duration_within(
    key: &'static str,
    value: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    require_positive(key, value)?;
    duration_at_most(key, value, max)
}

/// A duration (zero allowed) of at most `max`.
fn duration_at_most(
    key: &'static str,
    value: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    if value > max {
        return Err(invalid(
            key,
            format!(
                "expected at most {}; found {}",
                humantime::format_duration(max),
                humantime::format_duration(value)
            ),
        ));
    }
    Ok(value)
}

/// A count between `min` and `max`.
fn count_within<T>(key: &'static str, value: T, min: T, max: T) -> Result<T, ConfigError>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    if value < min || value > max {
        return Err(invalid(
            key,
            format!("expected between {min} and {max}; found {value}"),
        ));
    }
    Ok(value)
}

impl RawPoynt {
    fn validate(self, sources: &KeySources) -> Result<PoyntConfig, ConfigError> {
        let api_url = parse_url("poynt.api_url", &self.api_url)?;
        if !matches!(api_url.path(), "" | "/") || api_url.query().is_some() {
            return Err(invalid(
                "poynt.api_url",
                format!(
                    "expected a scheme and host only (callers' paths are appended); found {:?}",
                    self.api_url
                ),
            ));
        }
        let origin = self.api_url.trim_end_matches('/').to_owned();
        let token_url = match &self.token_url {
            Some(text) => parse_url("poynt.token_url", text)?,
            None => parse_url("poynt.api_url", &format!("{origin}/token"))?,
        };
        let audience = match self.audience {
            Some(aud) if aud.trim().is_empty() => {
                return Err(invalid("poynt.audience", "expected a URL; found \"\""));
            }
            Some(aud) => aud,
            None => origin,
        };
        let api_version = HeaderValue::try_from(self.api_version.as_str())
            .ok()
            .filter(|_| !self.api_version.is_empty())
            .ok_or_else(|| {
                invalid(
                    "poynt.api_version",
                    format!(
                        "expected a version such as \"1.2\"; found {:?}",
                        self.api_version
                    ),
                )
            })?;
        let application_id = match self.application_id {
            Some(id) if id.starts_with("urn:aid:") => id,
            Some(id) => {
                return Err(invalid(
                    "poynt.application_id",
                    format!("expected an application ID starting with \"urn:aid:\"; found {id:?}"),
                ));
            }
            None => {
                return Err(invalid(
                    "poynt.application_id",
                    "missing; expected the app's ID (\"urn:aid:...\") from the Poynt developer portal",
                ));
            }
        };
        let private_key = load_key(self.private_key_file.as_deref(), sources)?;
        let extra_roots = match self.ca_file {
            Some(path) => crate::upstream::read_ca_file(&resolve(sources, &path))
                .map_err(|e| invalid("poynt.ca_file", e.to_string()))?,
            None => Vec::new(),
        };
        Ok(PoyntConfig {
            api_url,
            token_url,
            audience,
            api_version,
            application_id,
            private_key,
            extra_roots,
            connect_timeout: duration_within(
                "poynt.connect_timeout",
                self.connect_timeout,
                MAX_SHORT_TIMEOUT,
            )?,
            response_timeout: duration_within(
                "poynt.response_timeout",
                self.response_timeout,
                MAX_LONG_TIMEOUT,
            )?,
            body_idle_timeout: duration_within(
                "poynt.body_idle_timeout",
                self.body_idle_timeout,
                MAX_LONG_TIMEOUT,
            )?,
            token_timeout: duration_within(
                "poynt.token_timeout",
                self.token_timeout,
                MAX_SHORT_TIMEOUT,
            )?,
        })
    }
}

fn resolve(sources: &KeySources, path: &Path) -> PathBuf {
    match &sources.base_dir {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_owned(),
    }
}

fn load_key(file: Option<&Path>, sources: &KeySources) -> Result<AppKey, ConfigError> {
    match (file, &sources.private_key_env) {
        (Some(path), _) => {
            let path = resolve(sources, path);
            AppKey::from_pem_file(&path).map_err(|source| ConfigError::Key {
                key: "poynt.private_key_file",
                source,
            })
        }
        (None, Some(pem)) => AppKey::from_pem(pem).map_err(|source| ConfigError::Key {
            key: PRIVATE_KEY_ENV,
            source,
        }),
        (None, None) => Err(invalid(
            "poynt.private_key_file",
            format!(
                "missing; expected a PEM file path, or the key's PEM text in the {PRIVATE_KEY_ENV} environment variable"
            ),
        )),
    }
}

impl RawServer {
    fn validate(self) -> Result<ServerConfig, ConfigError> {
        let workers = match self.workers {
            Some(workers) => count_within("server.workers", workers, 1, 1024)?,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let max_request_body_bytes = count_within(
            "server.max_request_body_bytes",
            self.max_request_body_bytes,
            0,
            1 << 40,
        )?;
        Ok(ServerConfig {
            header_read_timeout: duration_within(
                "server.header_read_timeout",
                self.header_read_timeout,
                MAX_SHORT_TIMEOUT,
            )?,
            keepalive_timeout: duration_within(
                "server.keepalive_timeout",
                self.keepalive_timeout,
                MAX_LONG_TIMEOUT,
            )?,
            max_header_bytes: count_within(
                "server.max_header_bytes",
                self.max_header_bytes,
                8192,
                1 << 20,
            )?,
            max_connections: count_within(
                "server.max_connections",
                self.max_connections,
                1,
                1_000_000,
            )?,
            http2_max_concurrent_streams: count_within(
                "server.http2_max_concurrent_streams",
                self.http2_max_concurrent_streams,
                1,
                10_000,
            )?,
            max_request_body_bytes,
            retry_buffer_bytes: count_within(
                "server.retry_buffer_bytes",
                self.retry_buffer_bytes,
                0,
                16 << 20,
            )?,
            shutdown_grace: duration_at_most(
                "server.shutdown_grace",
                self.shutdown_grace,
                MAX_LONG_TIMEOUT,
            )?,
            workers,
            idle_timeout: duration_within(
                "server.idle_timeout",
                self.idle_timeout,
                MAX_LONG_TIMEOUT,
            )?,
            body_read_timeout: duration_within(
                "server.body_read_timeout",
                self.body_read_timeout,
                MAX_SHORT_TIMEOUT,
            )?,
            http2_keep_alive_interval: duration_within(
                "server.http2_keep_alive_interval",
                self.http2_keep_alive_interval,
                MAX_LONG_TIMEOUT,
            )?,
            http2_keep_alive_timeout: duration_within(
                "server.http2_keep_alive_timeout",
                self.http2_keep_alive_timeout,
                MAX_SHORT_TIMEOUT,
            )?,
        })
    }
}

impl RawTokens {
    fn validate(self) -> Result<TokensConfig, ConfigError> {
        if !(0.1..=0.95).contains(&self.refresh_at) {
            return Err(invalid(
                "tokens.refresh_at",
                format!(
                    "expected a fraction of the lifetime between 0.1 and 0.95; found {}",
                    self.refresh_at
                ),
            ));
        }
        if !(0.0..=0.25).contains(&self.refresh_jitter) {
            return Err(invalid(
                "tokens.refresh_jitter",
                format!(
                    "expected a fraction between 0 and 0.25; found {}",
                    self.refresh_jitter
                ),
            ));
        }
        if self.refresh_at + self.refresh_jitter > 0.9 {
            return Err(invalid(
                "tokens.refresh_jitter",
                format!(
                    "expected refresh_at + refresh_jitter to be at most 0.9, so renewal always starts before the token's last twentieth; found {} + {}",
                    self.refresh_at, self.refresh_jitter
                ),
            ));
        }
        if self.backoff_max < self.backoff_initial {
            return Err(invalid(
                "tokens.backoff_max",
                format!(
                    "expected at least tokens.backoff_initial ({}); found {}",
                    humantime::format_duration(self.backoff_initial),
                    humantime::format_duration(self.backoff_max)
                ),
            ));
        }
        Ok(TokensConfig {
            refresh_at: self.refresh_at,
            refresh_jitter: self.refresh_jitter,
            expiry_margin: duration_at_most(
                "tokens.expiry_margin",
                self.expiry_margin,
                MAX_LONG_TIMEOUT,
            )?,
            backoff_initial: duration_within(
                "tokens.backoff_initial",
                self.backoff_initial,
                MAX_LONG_TIMEOUT,
            )?,
            backoff_max: duration_at_most(
                "tokens.backoff_max",
                self.backoff_max,
                MAX_LONG_TIMEOUT,
            )?,
            max_concurrent_grants: count_within(
                "tokens.max_concurrent_grants",
                self.max_concurrent_grants,
                1,
                10_000,
            )?,
            max_merchants: count_within(
                "tokens.max_merchants",
                self.max_merchants,
                1,
                100_000_000,
            )?,
            new_merchant_grants_per_second: count_within(
                "tokens.new_merchant_grants_per_second",
                self.new_merchant_grants_per_second,
                1,
                100_000,
            )?,
            new_merchant_grant_burst: count_within(
                "tokens.new_merchant_grant_burst",
                self.new_merchant_grant_burst,
                1,
                1_000_000,
            )?,
            unauthorized_min_token_age: duration_at_most(
                "tokens.unauthorized_min_token_age",
                self.unauthorized_min_token_age,
                MAX_SHORT_TIMEOUT,
            )?,
            unauthorized_renewal_interval: duration_at_most(
                "tokens.unauthorized_renewal_interval",
                self.unauthorized_renewal_interval,
                MAX_LONG_TIMEOUT,
            )?,
        })
    }
}

impl RawMerchant {
    fn validate(self, sources: &KeySources) -> Result<MerchantConfig, ConfigError> {
        let header = HeaderName::try_from(self.header.as_str()).map_err(|_| {
            invalid(
                "merchant.header",
                format!("{:?} is not a valid HTTP header name", self.header),
            )
        })?;
        if self.allow.is_none() && self.allow_file.is_none() {
            return Ok(MerchantConfig {
                header,
                allow: None,
            });
        }
        let mut allow = HashSet::new();
        for (index, text) in self.allow.iter().flatten().enumerate() {
            let id = MerchantId::parse(text.trim())
                .map_err(|e| invalid("merchant.allow", format!("entry {}: {e}", index + 1)))?;
            allow.insert(id);
        }
        if let Some(path) = &self.allow_file {
            let path = resolve(sources, path);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                invalid(
                    "merchant.allow_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            for (number, line) in text.lines().enumerate() {
                let line = line.split('#').next().unwrap_or_default().trim();
                if line.is_empty() {
                    continue;
                }
                let id = MerchantId::parse(line).map_err(|e| {
                    invalid(
                        "merchant.allow_file",
                        format!("{} line {}: {e}", path.display(), number + 1),
                    )
                })?;
                allow.insert(id);
            }
        }
        if allow.is_empty() {
            return Err(invalid(
                "merchant.allow",
                "expected at least one business ID in merchant.allow or merchant.allow_file; found none (remove both to serve every merchant)",
            ));
        }
        Ok(MerchantConfig {
            header,
            allow: Some(Arc::new(allow)),
        })
    }
}

impl RawAdmin {
    fn validate(self, sources: &KeySources) -> Result<AdminConfig, ConfigError> {
        let Some(path) = self.bearer_token_file else {
            return Ok(AdminConfig::default());
        };
        let path = resolve(sources, &path);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            invalid(
                "admin.bearer_token_file",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let secret = text.trim();
        if secret.len() < 16 {
            return Err(invalid(
                "admin.bearer_token_file",
                format!(
                    "expected a secret of at least 16 characters; found {} characters",
                    secret.len()
                ),
            ));
        }
        Ok(AdminConfig {
            bearer_token: Some(secret.to_owned().into()),
        })
    }
}

impl RawOauth {
    fn validate(self) -> Result<OauthConfig, ConfigError> {
        let authorize_url = parse_url("oauth.authorize_url", &self.authorize_url)?;
        let signout_url = parse_url("oauth.signout_url", &self.signout_url)?;
        if let Some(uri) = &self.redirect_uri {
            parse_url("oauth.redirect_uri", uri)?;
        }
        Ok(OauthConfig {
            authorize_url,
            signout_url,
            redirect_uri: self.redirect_uri,
        })
    }
}

impl RawStore {
    fn validate(self, sources: &KeySources) -> Result<StoreConfig, ConfigError> {
        let backend = match self.backend.as_str() {
            "embedded" => StoreBackend::Embedded,
            "redis" => StoreBackend::Redis,
            "memory" => StoreBackend::Memory,
            other => {
                return Err(invalid(
                    "store.backend",
                    format!("expected one of: embedded, redis, memory; found {other:?}"),
                ));
            }
        };
        if self.path.as_os_str().is_empty() {
            return Err(invalid("store.path", "expected a file path; found \"\""));
        }
        let path = resolve(sources, &self.path);
        if path.is_dir() {
            return Err(invalid(
                "store.path",
                format!("expected a file; found the directory {}", path.display()),
            ));
        }
        let redis_url = match &sources.redis_url_env {
            Some(url) => {
                use secrecy::ExposeSecret as _;
                parse_redis_url(REDIS_URL_ENV, url.expose_secret())?
            }
            None => parse_redis_url("store.redis_url", &self.redis_url)?,
        };
        if self.key_prefix.is_empty()
            || self
                .key_prefix
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid(
                "store.key_prefix",
                format!(
                    "expected a non-empty name without spaces; found {:?}",
                    self.key_prefix
                ),
            ));
        }
        let sealed = backend != StoreBackend::Memory;
        let key = if sealed {
            current_store_key(self.key_file.as_deref(), sources)?
        } else {
            None
        };
        if backend == StoreBackend::Redis && key.is_none() {
            return Err(invalid(
                "store.key_file",
                format!(
                    "missing; the redis backend needs one key shared by every replica: set store.key_file, or {STORE_KEY_ENV} (`poynt-proxy store keygen` prints a new key)"
                ),
            ));
        }
        let mut previous_keys = Vec::new();
        if sealed {
            for (i, file) in self.previous_key_files.iter().enumerate() {
                let key = store_keys::read_file(&resolve(sources, file)).map_err(|source| {
                    ConfigError::StoreKey {
                        key: format!("store.previous_key_files[{i}]"),
                        source,
                    }
                })?;
                previous_keys.push(key);
            }
        }
        Ok(StoreConfig {
            backend,
            path,
            redis_url,
            key_prefix: self.key_prefix,
            key,
            previous_keys,
            timeout: require_positive("store.timeout", self.timeout)?,
        })
    }
}

impl RawOnboarding {
    fn validate(self, sources: &KeySources) -> Result<OnboardingConfig, ConfigError> {
        let listen = parse_addr("onboarding.listen", &self.listen)?;
        let Some(public_text) = self.public_url else {
            return Err(invalid(
                "onboarding.public_url",
                "missing; expected the https URL merchants' browsers reach the onboarding listener at, e.g. \"https://connect.example.com\"",
            ));
        };
        let public = parse_url("onboarding.public_url", &public_text)?;
        if !matches!(public.path(), "" | "/") || public.query().is_some() {
            return Err(invalid(
                "onboarding.public_url",
                format!(
                    "expected a scheme and host only (the proxy serves /connect and /oauth/callback under it); found {public_text:?}"
                ),
            ));
        }
        let public_url = public_text.trim_end_matches('/').to_owned();
        let code_key = if self.code_key == CODE_KEY_TLS {
            CodeKeySource::Tls
        } else {
            let path = resolve(sources, Path::new(&self.code_key));
            let key = CodeKey::from_pem_file(&path).map_err(|e| {
                invalid(
                    "onboarding.code_key",
                    format!(
                        "expected \"tls\" or a PEM public key or certificate file; {}: {e}",
                        path.display()
                    ),
                )
            })?;
            CodeKeySource::Fixed(std::sync::Arc::new(key))
        };
        if self.code_issuer.trim().is_empty() {
            return Err(invalid(
                "onboarding.code_issuer",
                "expected the issuer of Poynt's codes, e.g. \"https://poynt.net\"; found \"\"",
            ));
        }
        let state_ttl = require_positive("onboarding.state_ttl", self.state_ttl)?;
        if state_ttl > MAX_STATE_TTL {
            return Err(invalid(
                "onboarding.state_ttl",
                format!(
                    "expected at most {}; found {}",
                    humantime::format_duration(MAX_STATE_TTL),
                    humantime::format_duration(state_ttl)
                ),
            ));
        }
        if let Some(url) = &self.success_redirect {
            parse_url("onboarding.success_redirect", url)?;
        }
        let app_name = self.app_name.trim().to_owned();
        if app_name.is_empty() || app_name.chars().count() > 100 {
            return Err(invalid(
                "onboarding.app_name",
                format!(
                    "expected the app's name as merchants know it, 1 to 100 characters; found {:?}",
                    self.app_name
                ),
            ));
        }
        let state_key = match self.state_key_file {
            Some(path) => Some(
                StateKey::from_base64_file(&resolve(sources, &path))
                    .map_err(|e| invalid("onboarding.state_key_file", e.to_string()))?,
            ),
            None => None,
        };
        Ok(OnboardingConfig {
            listen,
            redirect_uri: format!("{public_url}{ONBOARDING_CALLBACK_PATH}"),
            public_url,
            code_key,
            code_issuer: self.code_issuer,
            state_ttl,
            success_redirect: self.success_redirect,
            state_key,
            app_name,
        })
    }
}

/// The configured current store key: [`STORE_KEY_ENV`] if set, else `store.key_file`.
fn current_store_key(
    file: Option<&Path>,
    sources: &KeySources,
) -> Result<Option<StoreKey>, ConfigError> {
    if let Some(text) = &sources.store_key_env {
        use secrecy::ExposeSecret as _;
        let key =
            store_keys::parse(text.expose_secret()).map_err(|source| ConfigError::StoreKey {
                key: STORE_KEY_ENV.into(),
                source,
            })?;
        return Ok(Some(StoreKey {
            origin: KeyOrigin::Env,
            key,
        }));
    }
    let Some(file) = file else {
        return Ok(None);
    };
    let path = resolve(sources, file);
    let key = store_keys::read_file(&path).map_err(|source| ConfigError::StoreKey {
        key: "store.key_file".into(),
        source,
    })?;
    Ok(Some(StoreKey {
        origin: KeyOrigin::File(path),
        key,
    }))
}

/// Checks a `redis://` or `rediss://` URL and keeps a printable form without its password.
/// The URL itself is never echoed in an error, since it may hold one.
fn parse_redis_url(key: &'static str, text: &str) -> Result<RedisUrl, ConfigError> {
    let expected = "expected redis://[user[:password]@]host[:port][/db] or rediss://... (TLS)";
    let url = redis::parse_redis_url(text)
        .filter(|url| matches!(url.scheme(), "redis" | "rediss") && url.host_str().is_some())
        .ok_or_else(|| {
            invalid(
                key,
                format!(
                    "{expected}; found a value that is not one (not shown: it may hold a password)"
                ),
            )
        })?;
    redis::Client::open(text).map_err(|e| {
        invalid(
            key,
            format!(
                "{expected}; found one the Redis client refuses ({:?})",
                e.kind()
            ),
        )
    })?;
    let user = match url.username() {
        "" => String::new(),
        name => format!("{name}@"),
    };
    let shown = format!(
        "{}://{user}{}:{}{}",
        url.scheme(),
        url.host_str().unwrap_or_default(),
        url.port().unwrap_or(6379),
        url.path()
    );
    Ok(RedisUrl {
        url: text.to_owned().into(),
        shown,
    })
}

impl Config {
    /// Things that are valid but probably not meant, for `check` and the start-up log.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if let (Some(configured), Some(onboarding)) = (&self.oauth.redirect_uri, &self.onboarding)
            && configured != &onboarding.redirect_uri
        {
            warnings.push(format!(
                "oauth.redirect_uri: {configured:?} differs from onboarding.public_url + {ONBOARDING_CALLBACK_PATH} ({:?}); onboarding uses the latter, so register that one in Poynt's developer portal",
                onboarding.redirect_uri
            ));
        }
        warnings
    }
}
