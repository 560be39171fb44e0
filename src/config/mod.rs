//! Configuration: a raw serde schema read from YAML, then `validate` into the checked
//! [`Config`] the rest of the program trusts. Every error names the key path and says what
//! was expected and what was found, and every check runs at start-up, never at a request.
//!
//! One file per YAML section, each with its raw serde struct, defaults and validation:
//! `poynt`, `merchant`, `store`, `server`, `tokens`, `oauth`, `onboarding`, `log`, `admin`,
//! `limits`, `callers`, `audit`, `tls`, `telemetry`.
//! Beside them: `sources` (what the environment supplies instead of the file), `checks`
//! (rules that span sections), `fields` (parsers the sections share), `yaml` (the text
//! into the raw schema, errors naming the file and line) and `error`. This file
//! reads the file, holds the top of the schema and assembles [`Config`]; the files under it
//! import each other, never this one, so the folder's imports form no circle either.
//!
//! The checked settings types belong to the modules they configure — `store::config`,
//! `token::config`, `onboarding::config`, `limits::config`, `telemetry` — so imports point one way, from here
//! down into them; key material is parsed by each key type itself. They are re-exported here
//! so the fields of [`Config`] can be named from one place.

mod admin;
mod audit;
mod callers;
mod checks;
mod error;
mod fields;
mod limits;
mod log;
mod merchant;
mod oauth;
mod onboarding;
mod poynt;
mod server;
mod sources;
mod store;
mod telemetry;
mod tls;
mod tokens;
mod yaml;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use self::admin::AdminConfig;
pub use self::callers::{CallersConfig, JwksSource, JwtConfig, Mode};
pub use self::error::ConfigError;
pub use self::merchant::MerchantConfig;
pub use self::server::ServerConfig;
pub use self::sources::{KeySources, PRIVATE_KEY_ENV, REDIS_URL_ENV};
pub use self::tls::TlsConfig;
pub use crate::audit::config::{AuditConfig, AuditOutput, FileOutput};
pub use crate::limits::config::LimitsConfig;
pub use crate::onboarding::config::{OauthConfig, OnboardingConfig};
pub use crate::store::config::{RedisUrl, StoreBackend, StoreConfig};
pub use crate::telemetry::{LogConfig, LogFormat};
pub use crate::token::config::{PoyntConfig, TokensConfig};
pub use crate::traces::{Protocol as TracesProtocol, TracesConfig};
use fields::parse_addr;

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
    /// Traffic governance toward Poynt.
    pub limits: LimitsConfig,
    /// Caller authentication and rights; `None`: any peer may act as any merchant.
    pub callers: Option<CallersConfig>,
    /// The audit trail; `None`: none is written.
    pub audit: Option<AuditConfig>,
    /// The TLS listener beside `listen`; `None` when not configured.
    pub tls: Option<TlsConfig>,
    /// OpenTelemetry traces (`telemetry.traces`); `None`: no span is made at all.
    pub traces: Option<TracesConfig>,
    /// The file this configuration was read from, which a reload reads again; `None` when it
    /// was parsed from text (tests, the demo).
    pub source: Option<PathBuf>,
}

/// The file as written: top-level addresses and one raw struct per section.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_listen")]
    listen: String,
    #[serde(default = "default_admin_listen")]
    admin_listen: String,
    poynt: poynt::RawPoynt,
    #[serde(default)]
    merchant: merchant::RawMerchant,
    #[serde(default)]
    store: store::RawStore,
    #[serde(default)]
    server: server::RawServer,
    #[serde(default)]
    tokens: tokens::RawTokens,
    #[serde(default)]
    oauth: oauth::RawOauth,
    #[serde(default)]
    onboarding: Option<onboarding::RawOnboarding>,
    #[serde(default)]
    log: log::RawLog,
    #[serde(default)]
    admin: admin::RawAdmin,
    #[serde(default)]
    limits: limits::RawLimits,
    callers: Option<callers::RawCallers>,
    audit: Option<audit::RawAudit>,
    tls: Option<tls::RawTls>,
    #[serde(default)]
    telemetry: telemetry::RawTelemetry,
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

fn default_admin_listen() -> String {
    "127.0.0.1:9090".into()
}

impl RawConfig {
    fn validate(self, sources: &KeySources) -> Result<Config, ConfigError> {
        let listen = parse_addr("listen", &self.listen)?;
        let admin_listen = parse_addr("admin_listen", &self.admin_listen)?;
        let poynt = self.poynt.validate(sources)?;
        let merchant = self.merchant.validate(sources)?;
        let admin = self.admin.validate(sources)?;
        checks::admin_protected(admin_listen, &admin)?;
        let store = self.store.validate(sources)?;
        let server = self.server.validate()?;
        let tokens = self.tokens.validate()?;
        let oauth = self.oauth.validate()?;
        let onboarding = self
            .onboarding
            .map(|raw| raw.validate(sources))
            .transpose()?;
        let log = self.log.validate()?;
        let limits = self.limits.validate()?;
        let callers = self.callers.map(|raw| raw.validate(sources)).transpose()?;
        let audit = self.audit.map(|raw| raw.validate(sources)).transpose()?;
        let tls = self.tls.map(|raw| raw.validate(sources)).transpose()?;
        let traces = self.telemetry.validate(sources)?;
        checks::mtls_has_client_ca(callers.as_ref(), tls.as_ref())?;
        checks::distinct_listeners(listen, admin_listen, onboarding.as_ref().map(|o| o.listen))?;
        checks::limited_callers_exist(&limits, callers.as_ref())?;
        checks::cluster_limits_shared(&limits, store.backend)?;
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
            limits,
            callers,
            audit,
            tls,
            traces,
            source: None,
        })
    }
}

impl Config {
    /// Reads and validates a config file; relative paths inside it are resolved against the
    /// file's directory, and the private key may come from [`PRIVATE_KEY_ENV`]. The path is
    /// made absolute first, so every path an error prints is the one actually opened.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let base_dir = path.parent().map(Path::to_path_buf);
        let raw: RawConfig = yaml::from_str(&text, Some(&path))?;
        let mut config = raw.validate(&KeySources::from_env(base_dir))?;
        config.source = Some(path);
        Ok(config)
    }

    /// Parses and validates YAML text.
    pub fn parse(text: &str, sources: &KeySources) -> Result<Self, ConfigError> {
        let raw: RawConfig = yaml::from_str(text, None)?;
        raw.validate(sources)
    }

    /// Things that are valid but probably not meant, for `check` and the start-up log.
    pub fn warnings(&self) -> Vec<String> {
        checks::redirect_uri_differs(&self.oauth, self.onboarding.as_ref())
            .into_iter()
            .chain(checks::callers_open(self.callers.as_ref(), self.listen))
            .collect()
    }
}
