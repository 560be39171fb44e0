//! The `poynt:` section: where Poynt is, who the app is, its private key, and the timeouts
//! of every call to Poynt. Builds [`PoyntConfig`]; the key is parsed by [`AppKey`] itself.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderValue;
use serde::Deserialize;

use super::error::ConfigError;
use super::fields::{MAX_LONG_TIMEOUT, MAX_SHORT_TIMEOUT, duration_within, invalid, parse_url};
use super::sources::{KeySources, PRIVATE_KEY_ENV, resolve};
use crate::token::assertion::AppKey;
use crate::token::config::PoyntConfig;

/// Poynt's production API host: the default upstream and assertion audience.
const DEFAULT_API_URL: &str = "https://services.poynt.net";
/// The API version every call carries unless configured otherwise.
const DEFAULT_API_VERSION: &str = "1.2";

/// The `poynt:` section as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPoynt {
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

impl RawPoynt {
    pub(super) fn validate(self, sources: &KeySources) -> Result<PoyntConfig, ConfigError> {
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
