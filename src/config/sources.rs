//! What the environment supplies instead of the file (the private key, the store key, the
//! Redis URL), and the directory relative paths in the file are resolved against.

use std::path::{Path, PathBuf};

use crate::store::keys::STORE_KEY_ENV;

/// Environment variable that may carry the app's private key as PEM text, so the key can
/// come from a secret store without touching disk.
pub const PRIVATE_KEY_ENV: &str = "POYNT_PROXY_PRIVATE_KEY";
/// Environment variable that overrides `store.redis_url`, so a password need not sit in a file.
pub const REDIS_URL_ENV: &str = "POYNT_PROXY_REDIS_URL";

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

/// `path` as written in the file, resolved against the file's directory when relative.
pub(super) fn resolve(sources: &KeySources, path: &Path) -> PathBuf {
    match &sources.base_dir {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_owned(),
    }
}
