//! The embedded backend: one redb file (mode 0600) held by one process. Every change is one
//! write transaction, and its `commit()` is the durability point: when `save` returns
//! `Written`, the record survives a crash. redb locks the file, so a second process on the
//! same `store.path` fails at start. Blocking file I/O runs on Tokio's blocking pool.
//!
//! Layout: `records` (merchant UUID → generation, sealed record), `spent_states` (state id →
//! expiry, Unix milliseconds) and `meta` (`canary`: a known text sealed with the current key,
//! so a wrong key fails at open, naming where it came from, instead of every record reading
//! as absent).

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{
    Database, DatabaseError, ReadableDatabase as _, ReadableTable as _, TableDefinition,
    WriteTransaction,
};

use super::config::StoreConfig;
use super::error::StoreError;
use super::keys::{self, STORE_KEY_ENV, StoreKey};
use super::record::{Record, RecordSender, Saved, Sealer};
use super::seal::{Key, Keys, SealError};
use crate::metrics::StoreMetrics;
use poynt_wire::MerchantId;

const RECORDS: TableDefinition<&[u8; 16], (u64, &[u8])> = TableDefinition::new("records");
const STATES: TableDefinition<&[u8; 16], u64> = TableDefinition::new("spent_states");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const CANARY: &str = "canary";

/// redb's page cache. Records are read in full only at start-up and each renewal touches a
/// few pages, so a small cache costs nothing measurable, while redb's default (1 GiB) would
/// let a store of a million merchants grow the proxy's memory by as much.
const CACHE_BYTES: usize = 4 << 20;

/// A cloneable handle on the open file; the file closes when the last clone is dropped.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

impl EmbeddedStore {
    /// The key records are sealed with.
    pub(super) fn key(&self) -> &Key {
        self.inner.sealer.current_key()
    }
}

struct Inner {
    db: Database,
    path: PathBuf,
    sealer: Sealer,
    metrics: StoreMetrics,
}

/// What the canary said about the configured keys.
enum KeyCheck {
    /// The current key opens the store; `resealed` records were sealed again with it
    /// (rotation from a previous key).
    Fits { resealed: usize },
    /// No configured key opens the canary.
    Wrong(SealError),
}

impl EmbeddedStore {
    /// Opens (or creates) the file, checks the key against the canary, and re-seals what a
    /// previous key sealed.
    pub(super) async fn open(
        config: &StoreConfig,
        application_id: &str,
        metrics: StoreMetrics,
    ) -> Result<Self, StoreError> {
        on_blocking_pool(config, application_id, metrics, open_blocking).await
    }

    pub(super) fn metrics(&self) -> &StoreMetrics {
        &self.inner.metrics
    }

    /// Runs `work` on the blocking pool.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> Result<T, redb::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            work(&inner).map_err(|source| StoreError::Database {
                path: inner.path.clone(),
                source,
            })
        })
        .await
        .map_err(StoreError::Task)?
    }

    pub(super) async fn load(&self, merchant: MerchantId) -> Result<Option<Record>, StoreError> {
        self.run(move |inner| {
            let txn = inner.db.begin_read()?;
            let table = txn.open_table(RECORDS)?;
            let Some(value) = table.get(merchant.uuid().as_bytes())? else {
                return Ok(None);
            };
            let (generation, sealed) = value.value();
            Ok(inner
                .sealer
                .open(merchant, generation, sealed)
                .map(|(record, _)| record))
        })
        .await
    }

    /// Sends every record that opens into `records`, in one read transaction on a blocking
    /// thread; a full channel holds the reader back, so memory stays bounded.
    pub(super) async fn stream_all(&self, records: RecordSender) -> Result<(), StoreError> {
        self.run(move |inner| {
            let txn = inner.db.begin_read()?;
            let table = txn.open_table(RECORDS)?;
            for entry in table.iter()? {
                let (key, value) = entry?;
                let merchant = MerchantId::from_uuid(uuid::Uuid::from_bytes(*key.value()));
                let (generation, sealed) = value.value();
                if let Some((record, _)) = inner.sealer.open(merchant, generation, sealed)
                    && records.blocking_send((merchant, record)).is_err()
                {
                    break;
                }
            }
            Ok(())
        })
        .await
    }

    pub(super) async fn save(
        &self,
        merchant: MerchantId,
        record: &Record,
    ) -> Result<Saved, StoreError> {
        self.inner.sealer.writable(merchant)?;
        let generation = record.generation;
        let sealed = self.inner.sealer.seal(merchant, record);
        self.run(move |inner| {
            let key = merchant.uuid().into_bytes();
            let txn = inner.db.begin_write()?;
            let stored = txn.open_table(RECORDS)?.get(&key)?.map(|v| v.value().0);
            if let Some(current_generation) = stored.filter(|g| *g >= generation) {
                txn.abort()?;
                return Ok(Saved::Stale { current_generation });
            }
            txn.open_table(RECORDS)?
                .insert(&key, (generation, sealed.as_slice()))?;
            // The durability point: once commit returns, the record survives a crash.
            txn.commit()?;
            Ok(Saved::Written)
        })
        .await
    }

    pub(super) async fn delete(&self, merchant: MerchantId) -> Result<bool, StoreError> {
        let removed = self
            .run(move |inner| {
                let txn = inner.db.begin_write()?;
                let removed = txn
                    .open_table(RECORDS)?
                    .remove(merchant.uuid().as_bytes())?
                    .is_some();
                txn.commit()?;
                Ok(removed)
            })
            .await?;
        self.inner.sealer.deleted(merchant);
        Ok(removed)
    }

    /// How many records that did not open name each key id.
    pub(super) fn refused_by_key(&self) -> std::collections::BTreeMap<String, usize> {
        self.inner.sealer.refused_by_key()
    }

    pub(super) async fn spend_state(
        &self,
        id: &[u8; 16],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let id = *id;
        self.run(move |inner| {
            let now = unix_millis(SystemTime::now());
            let expiry = now.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
            let txn = inner.db.begin_write()?;
            let spent = {
                let mut states = txn.open_table(STATES)?;
                let spent = states.get(&id)?.is_some_and(|v| v.value() > now);
                if !spent {
                    states.retain(|_, until| until > now)?;
                    states.insert(&id, expiry)?;
                }
                spent
            };
            if spent {
                txn.abort()?;
                return Ok(false);
            }
            // The durability point: a state spent before a crash stays spent after it.
            txn.commit()?;
            Ok(true)
        })
        .await
    }
}

fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn open_blocking(
    path: PathBuf,
    configured: Option<StoreKey>,
    previous: Vec<Key>,
    application_id: &str,
    metrics: StoreMetrics,
) -> Result<EmbeddedStore, StoreError> {
    let file_error = |source| StoreError::File {
        path: path.clone(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(file_error)?;
    }
    let current = match configured {
        Some(key) => key,
        None => {
            let (key, created) = keys::load_or_create_beside(&path)?;
            if created {
                tracing::warn!(
                    key_file = %keys::beside(&path).display(),
                    "created the store key beside the data: whoever copies both files can read every stored token; keep the key elsewhere (store.key_file or {STORE_KEY_ENV})"
                );
            }
            key
        }
    };
    create_private(&path).map_err(file_error)?;
    let db = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(&path)
        .map_err(|source| match source {
            DatabaseError::DatabaseAlreadyOpen => StoreError::Locked { path: path.clone() },
            source => StoreError::Open {
                path: path.clone(),
                source,
            },
        })?;
    let sealer = Sealer::new(
        Keys::new(current.key.clone(), previous),
        application_id,
        metrics.clone(),
    );
    let database_error = |source: redb::Error| StoreError::Database {
        path: path.clone(),
        source,
    };
    match check_key(&db, &sealer).map_err(database_error)? {
        KeyCheck::Fits { resealed: 0 } => {}
        KeyCheck::Fits { resealed } => tracing::info!(
            resealed,
            path = %path.display(),
            "sealed the store again with the current key; the previous keys can be retired"
        ),
        KeyCheck::Wrong(source) => return Err(wrong_key(&current, &path, source)),
    }
    Ok(EmbeddedStore {
        inner: Arc::new(Inner {
            db,
            path,
            sealer,
            metrics,
        }),
    })
}

fn wrong_key(current: &StoreKey, path: &Path, source: SealError) -> StoreError {
    StoreError::WrongKey {
        origin: current.origin.to_string(),
        location: path.display().to_string(),
        source,
    }
}

/// What a look at the embedded store that changes nothing found (`poynt-proxy check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preflight {
    /// No data yet: the first start creates the file (and its key, when none is configured).
    New,
    /// The configured keys open the store's check value, as they will at start.
    KeyFits,
    /// Another process (a running proxy) holds the file, so it was not opened here.
    InUse,
    /// The file was not closed cleanly: start repairs it, which a read-only look cannot.
    NeedsRepair,
}

/// Opens the store read-only and checks the key start would use against its check value,
/// failing as start would (a wrong key, a missing key beside the data, an unreadable file)
/// without creating or changing anything.
pub async fn preflight(
    config: &StoreConfig,
    application_id: &str,
    metrics: StoreMetrics,
) -> Result<Preflight, StoreError> {
    on_blocking_pool(config, application_id, metrics, preflight_blocking).await
}

/// What a blocking look at the file is given: the path, the configured current key (if
/// any), the previous keys, the application and the metrics.
type Blocking<T> =
    fn(PathBuf, Option<StoreKey>, Vec<Key>, &str, StoreMetrics) -> Result<T, StoreError>;

/// Runs `work` on Tokio's blocking pool with what it needs from `config`.
async fn on_blocking_pool<T: Send + 'static>(
    config: &StoreConfig,
    application_id: &str,
    metrics: StoreMetrics,
    work: Blocking<T>,
) -> Result<T, StoreError> {
    let path = config.path.clone();
    let key = config.key.clone();
    let previous = config.previous_keys.clone();
    let application_id = application_id.to_owned();
    tokio::task::spawn_blocking(move || work(path, key, previous, &application_id, metrics))
        .await
        .map_err(StoreError::Task)?
}

fn preflight_blocking(
    path: PathBuf,
    configured: Option<StoreKey>,
    previous: Vec<Key>,
    application_id: &str,
    metrics: StoreMetrics,
) -> Result<Preflight, StoreError> {
    let current = match configured {
        Some(key) => Some(key),
        None => keys::load_beside(&path)?,
    };
    let length = match std::fs::File::open(&path).and_then(|file| file.metadata()) {
        Ok(metadata) => metadata.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Preflight::New),
        Err(source) => {
            return Err(StoreError::File { path, source });
        }
    };
    let Some(current) = current.filter(|_| length > 0) else {
        return Ok(Preflight::New);
    };
    let keys = Keys::new(current.key.clone(), previous);
    let sealer = Sealer::new(keys, application_id, metrics);
    let db = match Database::builder()
        .set_cache_size(CACHE_BYTES)
        .open_read_only(&path)
    {
        Ok(db) => db,
        Err(DatabaseError::DatabaseAlreadyOpen) => return Ok(Preflight::InUse),
        Err(DatabaseError::RepairAborted) => return Ok(Preflight::NeedsRepair),
        Err(source) => {
            return Err(StoreError::Open { path, source });
        }
    };
    let canary = (|| -> Result<Option<Vec<u8>>, redb::Error> {
        let txn = db.begin_read()?;
        let meta = match txn.open_table(META) {
            Ok(meta) => meta,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        Ok(meta.get(CANARY)?.map(|v| v.value().to_vec()))
    })()
    .map_err(|source| StoreError::Database {
        path: path.clone(),
        source,
    })?;
    match canary.map(|c| sealer.open_canary(&c)) {
        Some(Err(source)) => Err(wrong_key(&current, &path, source)),
        None | Some(Ok(_)) => Ok(Preflight::KeyFits),
    }
}

/// Creates the file with mode 0600 before redb opens it, or tightens an existing file's mode.
fn create_private(path: &Path) -> std::io::Result<()> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mode = std::fs::metadata(path)?.permissions().mode();
            if mode & 0o077 != 0 {
                std::fs::set_permissions(path, Permissions::from_mode(0o600))?;
                tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "the store file was readable by others; its mode is now 0600");
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Opens the canary with the configured keys: a new store gets one; a store a previous key
/// sealed is sealed again, records and canary, in one transaction.
fn check_key(db: &Database, sealer: &Sealer) -> Result<KeyCheck, redb::Error> {
    let txn = db.begin_write()?;
    // Creating the tables here means every later read finds them.
    txn.open_table(RECORDS)?;
    txn.open_table(STATES)?;
    let canary = txn
        .open_table(META)?
        .get(CANARY)?
        .map(|v| v.value().to_vec());
    let by_current_key = match canary.map(|c| sealer.open_canary(&c)) {
        None => false,
        Some(Ok(by_current_key)) => by_current_key,
        Some(Err(error)) => {
            txn.abort()?;
            return Ok(KeyCheck::Wrong(error));
        }
    };
    let mut resealed = 0;
    if !by_current_key {
        resealed = reseal(&txn, sealer)?;
        txn.open_table(META)?
            .insert(CANARY, sealer.seal_canary().as_slice())?;
    }
    txn.commit()?;
    Ok(KeyCheck::Fits { resealed })
}

/// Seals again, with the current key, every record a previous key sealed.
fn reseal(txn: &WriteTransaction, sealer: &Sealer) -> Result<usize, redb::Error> {
    let mut table = txn.open_table(RECORDS)?;
    let mut again = Vec::new();
    for entry in table.iter()? {
        let (key, value) = entry?;
        let merchant = MerchantId::from_uuid(uuid::Uuid::from_bytes(*key.value()));
        let (generation, sealed) = value.value();
        if let Some((record, false)) = sealer.open(merchant, generation, sealed) {
            again.push((*key.value(), generation, sealer.seal(merchant, &record)));
        }
    }
    for (key, generation, sealed) in &again {
        table.insert(key, (*generation, sealed.as_slice()))?;
    }
    Ok(again.len())
}
