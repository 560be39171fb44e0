//! The `admin:` section: the bearer secret that protects `/admin/*`.

use std::path::PathBuf;

use serde::Deserialize;

use super::error::ConfigError;
use super::fields::invalid;
use super::sources::{KeySources, resolve};

/// Admin API protection.
#[derive(Debug, Clone, Default)]
pub struct AdminConfig {
    /// When set, `/admin/*` requires `Authorization: Bearer <this>`.
    pub bearer_token: Option<secrecy::SecretString>,
}

/// The `admin:` section as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    bearer_token_file: Option<PathBuf>,
}

impl RawAdmin {
    pub(super) fn validate(self, sources: &KeySources) -> Result<AdminConfig, ConfigError> {
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
