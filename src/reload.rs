//! Live reload: SIGHUP and `POST /admin/reload` read the configuration file again and apply
//! what can change while serving — the app's private key (a rotated Kubernetes Secret lands
//! without a restart), the admin bearer secret, the log format and level (not while `RUST_LOG`
//! is set, which takes the level's place: the answer says so), the `tokens.*`
//! tuning, the merchant allow-list and the whole `callers` section (API keys, the JWT key
//! set and its CA bundle, the policy: a caller removed is refused on its next request), and
//! the TLS listener's certificate, key and client CA bundle (for new connections; open ones
//! keep what they began with).
//!
//! A reload is all or nothing: a file that fails validation is refused whole and the running
//! configuration stays; so is one that changes anything only a restart can change (a
//! listener, the store, the upstream, server limits...), with a log line naming those keys.
//! Reloads are serialised, counted (`poynt_proxy_config_reloads_total{outcome}`) and timed
//! (`poynt_proxy_config_last_reload_success_timestamp_seconds`).

use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use secrecy::{ExposeSecret as _, SecretString};
use tokio::sync::Mutex;

use crate::callers::Callers;
use crate::config::{Config, ConfigError};
use crate::metrics::{Metrics, ReloadOutcome};
use crate::proxy::AllowList;
use crate::telemetry;
use crate::tls::ServerTls;
use crate::token::assertion::AssertionSigner;
use crate::token::broker::Broker;

/// The admin bearer secret: the admin listener checks it, a reload may replace it. It lives
/// here, not in `admin`, so the admin listener depends on the reloader and not both ways.
pub type AdminSecret = Arc<ArcSwapOption<SecretString>>;

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file does not validate.
    #[error("the reloaded configuration was refused and the running one stays: {0}")]
    Invalid(#[from] ConfigError),
    /// The file changes settings only a restart applies.
    #[error(
        "expected changes a reload can apply; found changes to {} that need a restart, so nothing was applied",
        keys.join(", ")
    )]
    RestartNeeded {
        /// The changed keys.
        keys: Vec<&'static str>,
    },
}

/// What a reload applied.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Applied {
    /// The configuration keys whose values changed (empty when the file was unchanged).
    pub changed: Vec<&'static str>,
    /// The fingerprint of the app key now signing assertions.
    pub app_key_fingerprint: String,
    /// Changed keys that still do not take effect, each with why (e.g. `log.level` while
    /// `RUST_LOG` is set); empty when everything changed applies.
    pub not_applied: Vec<String>,
}

/// Reloads the configuration file. Cloning shares it.
#[derive(Clone)]
pub struct Reloader {
    inner: Arc<Inner>,
}

struct Inner {
    source: PathBuf,
    /// The running configuration; its lock also serialises reloads.
    current: Mutex<Config>,
    signer: AssertionSigner,
    callers: Callers,
    tls: Option<ServerTls>,
    broker: Broker,
    allow: AllowList,
    admin_secret: AdminSecret,
    metrics: Metrics,
}

/// The handles a reload changes things through.
pub struct Reloadable {
    /// Signs the app's assertions.
    pub signer: AssertionSigner,
    /// Authenticates and authorizes callers.
    pub callers: Callers,
    /// Serves the TLS listener's handshakes, when `tls` is configured.
    pub tls: Option<ServerTls>,
    /// Holds the `tokens.*` tuning.
    pub broker: Broker,
    /// The merchants served.
    pub allow: AllowList,
    /// The admin bearer secret.
    pub admin_secret: AdminSecret,
    /// Where reloads are counted.
    pub metrics: Metrics,
}

impl Reloader {
    /// A reloader for `config`, or `None` when it was not read from a file.
    pub fn new(config: &Config, handles: Reloadable) -> Option<Self> {
        let source = config.source.clone()?;
        Some(Self {
            inner: Arc::new(Inner {
                source,
                current: Mutex::new(config.clone()),
                signer: handles.signer,
                callers: handles.callers,
                tls: handles.tls,
                broker: handles.broker,
                allow: handles.allow,
                admin_secret: handles.admin_secret,
                metrics: handles.metrics,
            }),
        })
    }

    /// Reads the file again and applies it, or refuses it whole.
    pub async fn reload(&self) -> Result<Applied, ReloadError> {
        let inner = &self.inner;
        let mut current = inner.current.lock().await;
        let result = match Config::load(&inner.source) {
            Err(error) => Err(ReloadError::Invalid(error)),
            Ok(next) => {
                let keys = restart_needed(&current, &next);
                if keys.is_empty() {
                    let (changed, not_applied) = self.apply(&current, &next);
                    let app_key_fingerprint = next.poynt.private_key.fingerprint();
                    *current = next;
                    Ok(Applied {
                        changed,
                        app_key_fingerprint,
                        not_applied,
                    })
                } else {
                    Err(ReloadError::RestartNeeded { keys })
                }
            }
        };
        let outcome = match &result {
            Ok(applied) if applied.not_applied.is_empty() => {
                tracing::info!(changed = ?applied.changed, app_key = %applied.app_key_fingerprint, "configuration reloaded");
                ReloadOutcome::Success
            }
            Ok(applied) => {
                tracing::warn!(changed = ?applied.changed, not_applied = ?applied.not_applied, app_key = %applied.app_key_fingerprint, "configuration reloaded, but some changes do not take effect");
                ReloadOutcome::Success
            }
            Err(error @ ReloadError::RestartNeeded { .. }) => {
                tracing::warn!(%error, "configuration reload refused: a restart is needed");
                ReloadOutcome::RestartNeeded
            }
            Err(error) => {
                tracing::warn!(%error, "configuration reload refused");
                ReloadOutcome::Invalid
            }
        };
        inner.metrics.config_reloaded(outcome);
        result
    }

    /// Applies a validated configuration that needs no restart; names what changed, and
    /// what changed but does not take effect.
    fn apply(&self, old: &Config, new: &Config) -> (Vec<&'static str>, Vec<String>) {
        let inner = &self.inner;
        let mut changed = Vec::new();
        let mut not_applied = Vec::new();
        if old.poynt.private_key.fingerprint() != new.poynt.private_key.fingerprint() {
            changed.push("poynt.private_key_file");
        }
        // Replaced even when unchanged: the file is what was read, and the fingerprint
        // reported below is then true whatever happened in between.
        inner.signer.replace_key(new.poynt.private_key.clone());
        let secret = |c: &Config| {
            c.admin
                .bearer_token
                .as_ref()
                .map(|s| s.expose_secret().to_owned())
        };
        if secret(old) != secret(new) {
            changed.push("admin.bearer_token_file");
            inner
                .admin_secret
                .store(new.admin.bearer_token.clone().map(Arc::new));
        }
        if old.log.format != new.log.format {
            changed.push("log.format");
        }
        if old.log.access != new.log.access {
            changed.push("log.access");
        }
        if old.log.level != new.log.level {
            if telemetry::level_from_env() {
                not_applied.push(format!(
                    "log.level: expected {:?} to take effect; found RUST_LOG set, which takes its place until the proxy restarts without it",
                    new.log.level
                ));
            } else {
                changed.push("log.level");
            }
        }
        if differs(&old.log, &new.log) {
            telemetry::apply(&new.log);
        }
        if differs(&old.tokens, &new.tokens) {
            changed.push("tokens");
            inner.broker.retune(new.tokens.clone());
        }
        if old.merchant.allow != new.merchant.allow {
            changed.push("merchant.allow");
            inner.allow.store(new.merchant.allow.clone());
        }
        if differs(&old.callers, &new.callers) {
            changed.push("callers");
        }
        // Replaced even when unchanged: a key file may hold a rotated key under the same name.
        if let Err(error) = inner.callers.replace(new.callers.as_ref()) {
            not_applied.push(format!("callers: {error}; the running callers stay"));
        }
        if differs(&old.tls, &new.tls) {
            changed.push("tls");
        }
        // Replaced even when unchanged: a rotated certificate lands under the same file name.
        if let (Some(serving), Some(tls)) = (&inner.tls, &new.tls) {
            serving.replace(tls.server.clone());
        }
        (changed, not_applied)
    }
}

/// Whether two configuration sections differ, compared by their `Debug` output: the
/// sections compared carry no secret (or print it redacted), and every field counts.
fn differs<T: Debug>(old: &T, new: &T) -> bool {
    format!("{old:?}") != format!("{new:?}")
}

/// The keys that changed and only take effect after a restart: what listeners, the store,
/// the upstream client and the caches were built from.
fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    let checks: [(&'static str, bool); 19] = [
        ("listen", old.listen != new.listen),
        (
            "tls.listen",
            old.tls.as_ref().map(|t| t.listen) != new.tls.as_ref().map(|t| t.listen),
        ),
        ("admin_listen", old.admin_listen != new.admin_listen),
        ("poynt.api_url", old.poynt.api_url != new.poynt.api_url),
        (
            "poynt.token_url",
            old.poynt.token_url != new.poynt.token_url,
        ),
        ("poynt.audience", old.poynt.audience != new.poynt.audience),
        (
            "poynt.api_version",
            old.poynt.api_version != new.poynt.api_version,
        ),
        (
            "poynt.application_id",
            old.poynt.application_id != new.poynt.application_id,
        ),
        (
            "poynt.ca_file",
            old.poynt.extra_roots != new.poynt.extra_roots,
        ),
        (
            "poynt timeouts",
            (
                old.poynt.connect_timeout,
                old.poynt.response_timeout,
                old.poynt.body_idle_timeout,
                old.poynt.token_timeout,
            ) != (
                new.poynt.connect_timeout,
                new.poynt.response_timeout,
                new.poynt.body_idle_timeout,
                new.poynt.token_timeout,
            ),
        ),
        (
            "merchant.header",
            old.merchant.header != new.merchant.header,
        ),
        ("store", differs(&old.store, &new.store)),
        ("server", differs(&old.server, &new.server)),
        (
            "tokens.max_merchants",
            old.tokens.max_merchants != new.tokens.max_merchants,
        ),
        ("oauth", differs(&old.oauth, &new.oauth)),
        ("onboarding", differs(&old.onboarding, &new.onboarding)),
        ("limits", differs(&old.limits, &new.limits)),
        ("audit", old.audit != new.audit),
        ("telemetry.traces", old.traces != new.traces),
    ];
    checks
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
}
