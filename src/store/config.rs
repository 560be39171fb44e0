//! The store's settings: which backend, where it keeps its data, and the keys that seal
//! records. Built by `config/` from the `store:` section.

use std::path::PathBuf;
use std::time::Duration;

use super::keys::{self, StoreKey};
use super::seal::Key;

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
    /// Redis: where to connect (`POYNT_PROXY_REDIS_URL` overrides the file).
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
            .then(|| keys::beside(&self.path))
    }
}

/// A Redis URL. It may hold a password, so only [`RedisUrl::shown`] (scheme, user, host,
/// port, database) is ever printed.
#[derive(Clone)]
pub struct RedisUrl {
    url: secrecy::SecretString,
    shown: String,
}

/// What a Redis URL must look like, for messages.
const REDIS_URL_SHAPE: &str =
    "expected redis://[user[:password]@]host[:port][/db] or rediss://... (TLS)";

/// Why a Redis URL was refused. The URL is never in the message, since it may hold a password.
#[derive(Debug, thiserror::Error)]
pub enum RedisUrlError {
    /// Not a `redis://` or `rediss://` URL with a host.
    #[error("{REDIS_URL_SHAPE}; found a value that is not one (not shown: it may hold a password)")]
    Shape,
    /// A URL of that shape that the Redis client still refuses.
    #[error("{REDIS_URL_SHAPE}; found one the Redis client refuses ({0:?})")]
    Refused(::redis::ErrorKind),
}

impl RedisUrl {
    /// Checks a `redis://` or `rediss://` URL and keeps a printable form without its password.
    pub fn parse(text: &str) -> Result<Self, RedisUrlError> {
        let url = ::redis::parse_redis_url(text)
            .filter(|url| matches!(url.scheme(), "redis" | "rediss") && url.host_str().is_some())
            .ok_or(RedisUrlError::Shape)?;
        ::redis::Client::open(text).map_err(|e| RedisUrlError::Refused(e.kind()))?;
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
        Ok(Self {
            url: text.to_owned().into(),
            shown,
        })
    }

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
