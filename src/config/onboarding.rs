//! The `onboarding:` section: the merchant-facing listener, how Poynt's codes are verified,
//! and the state's lifetime and key. Builds [`OnboardingConfig`]; the code key and the state
//! key are parsed by [`CodeKey`] and [`StateKey`] themselves.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::error::ConfigError;
use super::fields::{invalid, parse_addr, parse_url, require_positive};
use super::sources::{KeySources, resolve};
use crate::onboarding::CALLBACK_PATH;
use crate::onboarding::code_key::{CodeKey, CodeKeySource};
use crate::onboarding::config::OnboardingConfig;
use crate::onboarding::state::StateKey;

/// The onboarding listener's default address.
const DEFAULT_ONBOARDING_LISTEN: &str = "127.0.0.1:8081";
/// Who signs authorization codes (`iss`).
const DEFAULT_CODE_ISSUER: &str = "https://poynt.net";
/// `code_key` value meaning "the public key of the authorize host's TLS certificate".
const CODE_KEY_TLS: &str = "tls";
/// How long a merchant has from `/connect` to the callback.
const DEFAULT_STATE_TTL: Duration = Duration::from_secs(600);
/// Longest `onboarding.state_ttl` accepted.
const MAX_STATE_TTL: Duration = Duration::from_secs(86_400);

/// The `onboarding:` section as written; absent means no onboarding listener.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOnboarding {
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

impl RawOnboarding {
    pub(super) fn validate(self, sources: &KeySources) -> Result<OnboardingConfig, ConfigError> {
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
            redirect_uri: format!("{public_url}{CALLBACK_PATH}"),
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
