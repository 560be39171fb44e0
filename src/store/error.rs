//! Why a store operation failed, shared by every backend; the metrics count each kind.

use std::path::PathBuf;
use std::time::Duration;

use super::{keys, seal};
use crate::metrics::StoreOutcome;
use poynt_wire::MerchantId;

/// Why the store could not be reached in time.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// No answer within `store.timeout`.
    #[error("no answer within {} (store.timeout)", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// The connection failed or dropped.
    #[error(transparent)]
    Redis(::redis::RedisError),
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached in time; the caller should carry on without it.
    #[error("token store at {target} is unavailable: {cause}")]
    Unavailable {
        /// The store, without any password.
        target: String,
        /// What happened.
        #[source]
        cause: Unavailable,
    },
    /// Redis answered with an error (a refused command, an ACL denial...).
    #[error("token store at {target} refused a command: {source}")]
    Redis {
        /// The store, without any password.
        target: String,
        /// What Redis said.
        #[source]
        source: ::redis::RedisError,
    },
    /// Another process holds the embedded file.
    #[error(
        "store.path: {} is open in another process (the embedded store admits one); stop that process or point store.path at another file", path.display()
    )]
    Locked {
        /// The file.
        path: PathBuf,
    },
    /// No configured key opens the store's check value.
    #[error(
        "{origin} does not open the store at {location} ({source}); configure the key it was sealed with, listing the old one in store.previous_key_files when rotating"
    )]
    WrongKey {
        /// Where the current key came from.
        origin: String,
        /// The store.
        location: String,
        /// Why the store's check value did not open.
        #[source]
        source: seal::SealError,
    },
    /// The merchant's stored record opens with none of the configured keys; writing would
    /// destroy it, so the save was withheld.
    #[error(
        "the stored record of {merchant} was sealed with key {key}, which is not configured; it is left as is and this save was withheld"
    )]
    Withheld {
        /// Whose record.
        merchant: MerchantId,
        /// The key id the stored record names, in hex ("none" when it is not sealed).
        key: String,
    },
    /// The store key has not been proven against the store's check value yet (the store was
    /// unreachable at start), or it was found wrong: nothing is written meanwhile.
    #[error(
        "token store at {target}: expected the store key to be checked against the store before any write; found it {state}"
    )]
    KeyUnproven {
        /// The store, without any password.
        target: String,
        /// "not checked yet" or "wrong".
        state: &'static str,
    },
    /// The store does not hold a record that was expected to be there.
    #[error(
        "expected the store to hold {merchant}'s record at generation {expected} or newer; found {}",
        found.map_or_else(|| "none".to_owned(), |g| format!("generation {g}"))
    )]
    NotStored {
        /// Whose record.
        merchant: MerchantId,
        /// The generation that should be stored.
        expected: u64,
        /// The generation stored, if any record opens.
        found: Option<u64>,
    },
    /// The sealed backends need a key, and none was configured.
    #[error(
        "store.key_file: missing; the redis backend needs one key shared by every replica (store.key_file or {})",
        keys::STORE_KEY_ENV
    )]
    MissingKey,
    /// The key beside the embedded file could not be read or created.
    #[error("store key: {0}")]
    Key(#[from] keys::StoreKeyError),
    /// The embedded file or its directory could not be created or read.
    #[error("store.path: {}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// redb refused to open the file.
    #[error("store.path: cannot open {} as a token store: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// What redb said.
        #[source]
        source: ::redb::DatabaseError,
    },
    /// A transaction on the embedded file failed.
    #[error("token store {}: {source}", path.display())]
    Database {
        /// The file.
        path: PathBuf,
        /// What redb said.
        #[source]
        source: ::redb::Error,
    },
    /// Too many unexpired onboarding states are held in memory.
    #[error(
        "onboarding states: expected fewer than {capacity} unexpired states; found that many (refusing more until some expire)"
    )]
    StatesFull {
        /// The bound.
        capacity: usize,
    },
    /// A blocking task of the embedded store panicked or was cancelled.
    #[error("token store task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
}

impl StoreError {
    /// How the metrics count this failure.
    pub(super) fn outcome(&self) -> StoreOutcome {
        match self {
            Self::Unavailable { .. } => StoreOutcome::Unavailable,
            Self::Withheld { .. } | Self::KeyUnproven { .. } => StoreOutcome::Withheld,
            Self::Redis { .. }
            | Self::Locked { .. }
            | Self::NotStored { .. }
            | Self::WrongKey { .. }
            | Self::MissingKey
            | Self::Key(_)
            | Self::File { .. }
            | Self::Open { .. }
            | Self::Database { .. }
            | Self::StatesFull { .. }
            | Self::Task(_) => StoreOutcome::Error,
        }
    }
}
