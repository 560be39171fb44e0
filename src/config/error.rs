//! Why a configuration was refused.

use std::path::PathBuf;

use crate::store::keys::StoreKeyError;
use crate::token::assertion::AppKeyError;

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
        source: AppKeyError,
    },
    /// A store key could not be loaded or parsed.
    #[error("{key}: {source}")]
    StoreKey {
        /// Where the key was looked for, e.g. `store.previous_key_files[1]`.
        key: String,
        /// Why it was refused.
        #[source]
        source: StoreKeyError,
    },
}
