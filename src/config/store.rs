//! The `store:` section: the backend, its file or Redis URL, and the keys that seal records.
//! Builds [`StoreConfig`]; key text is parsed by `store::keys` and the URL by [`RedisUrl`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::error::ConfigError;
use super::fields::{invalid, require_positive};
use super::sources::{KeySources, REDIS_URL_ENV, resolve};
use crate::store::config::{RedisUrl, StoreBackend, StoreConfig};
use crate::store::keys::{self as store_keys, KeyOrigin, STORE_KEY_ENV, StoreKey};

/// The embedded store's file, relative to the config file's directory.
const DEFAULT_STORE_PATH: &str = "data/tokens.redb";
/// Where the Redis backend connects unless told otherwise.
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/0";
/// The namespace of every Redis key the proxy writes.
const DEFAULT_KEY_PREFIX: &str = "poynt-proxy";
/// Bound on one store operation: a slow store must not hold up a grant.
const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_millis(500);

/// The `store:` section as written; every key has a default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawStore {
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

impl RawStore {
    pub(super) fn validate(self, sources: &KeySources) -> Result<StoreConfig, ConfigError> {
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
        let (url_key, url) = match &sources.redis_url_env {
            Some(url) => {
                use secrecy::ExposeSecret as _;
                (REDIS_URL_ENV, url.expose_secret())
            }
            None => ("store.redis_url", self.redis_url.as_str()),
        };
        let redis_url = RedisUrl::parse(url).map_err(|e| invalid(url_key, e.to_string()))?;
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
