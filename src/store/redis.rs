//! The Redis backend: replicas share one sealed record per merchant, a per-merchant lock, the
//! onboarding states, and an events channel.
//!
//! Keys, under `{prefix}:{app}:`: `token:{merchant}` holds `"<generation>:<sealed record>"`
//! (plain `GET` works, and a Lua script compares generations without the key);
//! `lock:{merchant}` holds a random token for a lease its holder extends; `state:{hex id}` marks a spent onboarding state;
//! `canary` holds a known text sealed with the current key (a replica with the wrong key
//! fails at start); `limit:*` and `cooldown:*` hold the cluster-wide limits (`limits`);
//! `events` is the pub/sub channel (`saved:{merchant}:{generation}`,
//! `deleted:{merchant}`).
//!
//! A record lives until its access token expires, or 30 days past that when it holds a
//! refresh token (the merchant's durable credential). Every operation is bounded by
//! `store.timeout`; when Redis cannot be reached, operations fail fast with
//! [`StoreError::Unavailable`], the outage is logged once when it starts and once when it
//! ends, and the `poynt_proxy_store_reachable` gauge follows it. Only a command answered on
//! the command connection says Redis is back: a probe PINGs it about once a second while it
//! is away (no caller traffic needed), then checks the key and sends [`Event::Resync`] so the
//! broker writes back what Redis lacks. The events task reconnects with back-off on its own.
//!
//! Nothing is written (records, deletions, onboarding states) until the store key has been
//! proven against the check value: a replica started while Redis was away proves it when
//! Redis returns, and one whose key turns out wrong stays read-only and reports not ready.

mod limits;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, RedisResult, Script};
use tokio::sync::{broadcast, watch};

use super::config::StoreConfig;
use super::error::{StoreError, Unavailable};
use super::keys::KeyOrigin;
use super::record::{Event, Record, RecordSender, Saved, Sealer};
use super::seal::Keys;
use crate::metrics::StoreMetrics;
use poynt_wire::MerchantId;

pub use limits::{Owner, SharedBucket, SharedLimits, Verdict};

/// How long a record holding a refresh token outlives its access token's expiry.
pub const REFRESH_TOKEN_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// Events buffered per receiver; a receiver that falls further behind gets `Lagged` and
/// should reconcile as on [`Event::Resync`].
const EVENT_CAPACITY: usize = 4096;
/// First and longest pause between attempts to resubscribe to the events channel.
const RESUBSCRIBE_MIN: Duration = Duration::from_millis(100);
const RESUBSCRIBE_MAX: Duration = Duration::from_secs(2);
/// Keys fetched per `MGET` (and asked per `SCAN` step) when loading everything.
const BATCH: usize = 500;
/// How often the probe looks at the store: while it is unreachable (or the key is unproven)
/// a PING, otherwise nothing but a glance at the state.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// What is known of the store key against the store's check value.
const KEY_UNCHECKED: u8 = 0;
const KEY_PROVEN: u8 = 1;
const KEY_WRONG: u8 = 2;

/// Compare-and-set on the generation, then TTL and PUBLISH, atomically. Returns nil when
/// written, or the stored generation when it is the same or newer. Generations are compared
/// as decimal strings (length, then digits), so they are exact beyond Lua's 2^53.
const SAVE_SCRIPT: &str = r"
local stored = redis.call('GET', KEYS[1])
if stored then
  local g = string.match(stored, '^(%d+):')
  if g and (#g > #ARGV[1] or (#g == #ARGV[1] and g >= ARGV[1])) then
    return g
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('PUBLISH', KEYS[2], ARGV[4])
return false
";

/// Deletes a record and publishes that it is gone, atomically.
const DELETE_SCRIPT: &str = r"
if redis.call('DEL', KEYS[1]) == 1 then
  redis.call('PUBLISH', KEYS[2], ARGV[1])
  return 1
end
return 0
";

/// Deletes a lock only if it still holds our token (Redis's documented single-instance lock).
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Extends a lock's lease only if it still holds our token: 1 when extended, 0 when the
/// lock expired (and may be another holder's).
const EXTEND_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// A cloneable handle; the events task stops when the last clone is dropped.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

impl RedisStore {
    /// The key records are sealed with.
    pub(super) fn key(&self) -> &super::seal::Key {
        self.inner.sealer.current_key()
    }
}

struct Inner {
    connection: ConnectionManager,
    sealer: Sealer,
    /// Where the key came from, for the check made when Redis returns.
    origin: KeyOrigin,
    /// `KEY_UNCHECKED`, `KEY_PROVEN` or `KEY_WRONG`: writes wait for `KEY_PROVEN`.
    key_check: AtomicU8,
    names: Names,
    timeout: Duration,
    health: Arc<Health>,
    events: broadcast::Sender<Event>,
    save: Script,
    delete: Script,
    release: Script,
    extend: Script,
    /// Dropped with the store, which ends the events task.
    _stop: watch::Sender<()>,
}

/// Key names under `{prefix}:{app}:`.
struct Names {
    base: String,
    channel: String,
}

impl Names {
    fn new(prefix: &str, application_id: &str) -> Self {
        let base = format!("{prefix}:{application_id}:");
        Self {
            channel: format!("{base}events"),
            base,
        }
    }

    fn token(&self, merchant: MerchantId) -> String {
        format!("{}token:{merchant}", self.base)
    }

    fn lock(&self, merchant: MerchantId) -> String {
        format!("{}lock:{merchant}", self.base)
    }

    fn canary(&self) -> String {
        format!("{}canary", self.base)
    }

    fn state(&self, id: &[u8; 16]) -> String {
        format!("{}state:{}", self.base, super::seal::hex(id))
    }

    /// A `SCAN MATCH` pattern for every record key, glob characters in the prefix escaped.
    fn token_pattern(&self) -> String {
        let mut pattern = String::new();
        for c in format!("{}token:", self.base).chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('*');
        pattern
    }

    fn merchant_of(&self, key: &str) -> Option<MerchantId> {
        let id = key.strip_prefix(&self.base)?.strip_prefix("token:")?;
        MerchantId::parse(id).ok()
    }
}

/// Whether Redis answers, shared by the operations and the events task, so an outage is
/// logged once when it starts and once when it ends however many calls see it.
struct Health {
    shown: String,
    reachable: AtomicBool,
    /// Counts the returns from an outage, so the probe sees one however it was noticed.
    recoveries: AtomicU64,
    metrics: StoreMetrics,
}

impl Health {
    fn up(&self) {
        if !self.reachable.swap(true, Ordering::AcqRel) {
            self.recoveries.fetch_add(1, Ordering::AcqRel);
            self.metrics.set_reachable(true);
            tracing::info!(store = %self.shown, "token store reachable again");
        }
    }

    fn down(&self, reason: &dyn fmt::Display) {
        if self.reachable.swap(false, Ordering::AcqRel) {
            self.metrics.set_reachable(false);
            tracing::warn!(store = %self.shown, %reason, "token store unreachable; tokens are served from the local cache until it returns");
        }
    }

    fn unavailable(&self, cause: Unavailable) -> StoreError {
        self.down(&cause);
        StoreError::Unavailable {
            target: self.shown.clone(),
            cause,
        }
    }
}

/// Whether an error says Redis could not be reached (as opposed to an answer refusing).
fn is_unreachable(error: &RedisError) -> bool {
    error.is_io_error() || error.is_connection_dropped() || error.is_unrecoverable_error()
}

/// Splits `"<generation>:<sealed>"`.
fn split_value(value: &[u8]) -> Option<(u64, &[u8])> {
    let colon = value.iter().position(|b| *b == b':')?;
    let generation = std::str::from_utf8(&value[..colon]).ok()?.parse().ok()?;
    Some((generation, &value[colon + 1..]))
}

/// How long a record is kept: to its expiry, or [`REFRESH_TOKEN_RETENTION`] past it when it
/// holds a refresh token; at least a second (Redis refuses a zero TTL).
fn record_ttl(record: &Record, now: SystemTime) -> Duration {
    let until = match record.refresh_token {
        Some(_) => record.expires_at + REFRESH_TOKEN_RETENTION,
        None => record.expires_at,
    };
    until
        .duration_since(now)
        .unwrap_or_default()
        .max(Duration::from_secs(1))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl RedisStore {
    /// Prepares the connection (made lazily, so a Redis that is down at start-up does not
    /// stop the proxy), starts the events task, and checks the key against the store's
    /// check value.
    pub(super) async fn open(
        config: &StoreConfig,
        application_id: &str,
        metrics: StoreMetrics,
    ) -> Result<Self, StoreError> {
        let shown = config.redis_url.shown().to_owned();
        let key = config.key.clone().ok_or(StoreError::MissingKey)?;
        let client =
            redis::Client::open(config.redis_url.expose()).map_err(|source| StoreError::Redis {
                target: shown.clone(),
                source,
            })?;
        let timeout = config.timeout;
        let connection = ConnectionManager::new_lazy_with_config(
            client.clone(),
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(1)
                .set_max_delay(timeout),
        )
        .map_err(|source| StoreError::Redis {
            target: shown.clone(),
            source,
        })?;
        let names = Names::new(&config.key_prefix, application_id);
        let health = Arc::new(Health {
            shown,
            reachable: AtomicBool::new(true),
            recoveries: AtomicU64::new(0),
            metrics: metrics.clone(),
        });
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let (stop, stopped) = watch::channel(());
        tokio::spawn(forward_events(
            client,
            names.channel.clone(),
            events.clone(),
            health.clone(),
            timeout,
            stopped,
        ));
        let keys = Keys::new(key.key, config.previous_keys.clone());
        let store = Self {
            inner: Arc::new(Inner {
                connection,
                sealer: Sealer::new(keys, application_id, metrics),
                origin: key.origin,
                key_check: AtomicU8::new(KEY_UNCHECKED),
                names,
                timeout,
                health,
                events,
                save: Script::new(SAVE_SCRIPT),
                delete: Script::new(DELETE_SCRIPT),
                release: Script::new(RELEASE_SCRIPT),
                extend: Script::new(EXTEND_SCRIPT),
                _stop: stop,
            }),
        };
        match store.check_key().await {
            Ok(()) => store.inner.key_check.store(KEY_PROVEN, Ordering::Release),
            Err(StoreError::Unavailable { .. }) => {
                tracing::warn!(store = %store.inner.health.shown, "the store key was not checked: Redis is unreachable; nothing is written to the store until it answers and the key is proven");
            }
            Err(error) => return Err(error),
        }
        tokio::spawn(probe(
            Arc::downgrade(&store.inner),
            store.inner.health.recoveries.load(Ordering::Acquire),
        ));
        Ok(store)
    }

    /// A replica with the wrong key refuses to start (or, if it started while Redis was
    /// away, stays read-only), instead of reading every record as absent and overwriting its
    /// peers' records with ones they cannot open. The check value is created when absent
    /// (an empty Redis after a restart) and sealed again when a previous key sealed it.
    async fn check_key(&self) -> Result<(), StoreError> {
        let key = self.inner.names.canary();
        let mut connection = self.connection();
        let stored: Option<Vec<u8>> = self
            .run(redis::cmd("GET").arg(&key).query_async(&mut connection))
            .await?;
        let mut set = redis::cmd("SET");
        set.arg(&key).arg(self.inner.sealer.seal_canary());
        match stored.map(|sealed| self.inner.sealer.open_canary(&sealed)) {
            Some(Ok(true)) => return Ok(()),
            Some(Ok(false)) => {}
            None => {
                set.arg("NX");
            }
            Some(Err(source)) => {
                return Err(StoreError::WrongKey {
                    origin: self.inner.origin.to_string(),
                    location: self.inner.health.shown.clone(),
                    source,
                });
            }
        }
        let _: Option<String> = self.run(set.query_async(&mut connection)).await?;
        Ok(())
    }

    /// Runs one command under `store.timeout`, keeping the reachability state.
    async fn run<T>(&self, work: impl Future<Output = RedisResult<T>>) -> Result<T, StoreError> {
        let health = &self.inner.health;
        match tokio::time::timeout(self.inner.timeout, work).await {
            Err(_) => Err(health.unavailable(Unavailable::Timeout(self.inner.timeout))),
            Ok(Err(error)) if is_unreachable(&error) => {
                Err(health.unavailable(Unavailable::Redis(error)))
            }
            Ok(Err(source)) => {
                health.up();
                Err(StoreError::Redis {
                    target: health.shown.clone(),
                    source,
                })
            }
            Ok(Ok(value)) => {
                health.up();
                Ok(value)
            }
        }
    }

    pub(super) fn metrics(&self) -> &StoreMetrics {
        &self.inner.health.metrics
    }

    fn connection(&self) -> ConnectionManager {
        self.inner.connection.clone()
    }

    fn open_value(&self, merchant: MerchantId, value: &[u8]) -> Option<Record> {
        let Some((generation, sealed)) = split_value(value) else {
            self.inner.sealer.refuse(
                merchant,
                value,
                &"expected \"<generation>:<sealed record>\"",
            );
            return None;
        };
        self.inner
            .sealer
            .open(merchant, generation, sealed)
            .map(|(record, _)| record)
    }

    pub(super) async fn load(&self, merchant: MerchantId) -> Result<Option<Record>, StoreError> {
        let mut connection = self.connection();
        let value: Option<Vec<u8>> = self
            .run(
                redis::cmd("GET")
                    .arg(self.inner.names.token(merchant))
                    .query_async(&mut connection),
            )
            .await?;
        Ok(value.and_then(|v| self.open_value(merchant, &v)))
    }

    /// Sends every record that opens into `records`, a batch of keys at a time (SCAN, then
    /// MGET); a full channel holds the reader back, so memory stays bounded.
    pub(super) async fn stream_all(&self, records: RecordSender) -> Result<(), StoreError> {
        let mut connection = self.connection();
        let pattern = self.inner.names.token_pattern();
        let mut keys = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = self
                .run(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(BATCH)
                        .query_async(&mut connection),
                )
                .await?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        // SCAN may return a key twice.
        keys.sort_unstable();
        keys.dedup();
        for chunk in keys.chunks(BATCH) {
            let values: Vec<Option<Vec<u8>>> = self
                .run(redis::cmd("MGET").arg(chunk).query_async(&mut connection))
                .await?;
            for (key, value) in chunk.iter().zip(values) {
                let (Some(merchant), Some(value)) = (self.inner.names.merchant_of(key), value)
                else {
                    continue;
                };
                if let Some(record) = self.open_value(merchant, &value)
                    && records.send((merchant, record)).await.is_err()
                {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    pub(super) async fn save(
        &self,
        merchant: MerchantId,
        record: &Record,
    ) -> Result<Saved, StoreError> {
        self.key_proven()?;
        self.inner.sealer.writable(merchant)?;
        let generation = record.generation.to_string();
        let value = [
            generation.as_bytes(),
            b":",
            &self.inner.sealer.seal(merchant, record),
        ]
        .concat();
        let ttl = millis(record_ttl(record, SystemTime::now()));
        let mut connection = self.connection();
        let stale: Option<String> = self
            .run(
                self.inner
                    .save
                    .key(self.inner.names.token(merchant))
                    .key(&self.inner.names.channel)
                    .arg(&generation)
                    .arg(value)
                    .arg(ttl)
                    .arg(format!("saved:{merchant}:{generation}"))
                    .invoke_async(&mut connection),
            )
            .await?;
        Ok(match stale {
            None => Saved::Written,
            Some(stored) => Saved::Stale {
                current_generation: stored.parse().unwrap_or(u64::MAX),
            },
        })
    }

    pub(super) async fn delete(&self, merchant: MerchantId) -> Result<bool, StoreError> {
        self.key_proven()?;
        let mut connection = self.connection();
        let deleted: u8 = self
            .run(
                self.inner
                    .delete
                    .key(self.inner.names.token(merchant))
                    .key(&self.inner.names.channel)
                    .arg(format!("deleted:{merchant}"))
                    .invoke_async(&mut connection),
            )
            .await?;
        self.inner.sealer.deleted(merchant);
        Ok(deleted == 1)
    }

    /// `SET NX PX` with a random token for `lease`: the lock, or `None` while another holder
    /// has it.
    pub(super) async fn lock(
        &self,
        merchant: MerchantId,
        lease: Duration,
    ) -> Result<Option<RedisLock>, StoreError> {
        let key = self.inner.names.lock(merchant);
        let mut token = [0u8; 16];
        aws_lc_rs::rand::fill(&mut token).expect("system random number generator");
        let token = super::seal::hex(&token);
        let mut connection = self.connection();
        let set: Option<String> = self
            .run(
                redis::cmd("SET")
                    .arg(&key)
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(millis(lease))
                    .query_async(&mut connection),
            )
            .await?;
        Ok(set.map(|_| RedisLock {
            store: self.clone(),
            key,
            token,
            lease,
        }))
    }

    pub(super) async fn spend_state(
        &self,
        id: &[u8; 16],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.key_proven()?;
        let mut connection = self.connection();
        let set: Option<String> = self
            .run(
                redis::cmd("SET")
                    .arg(self.inner.names.state(id))
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(millis(ttl))
                    .query_async(&mut connection),
            )
            .await?;
        Ok(set.is_some())
    }

    pub(super) fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    pub(super) fn is_reachable(&self) -> bool {
        self.inner.health.reachable.load(Ordering::Acquire)
    }

    /// Cluster-wide limits kept beside the records.
    pub(super) fn shared_limits(&self) -> SharedLimits {
        SharedLimits::new(self.clone())
    }

    /// True once the store answered and no configured key opened its check value.
    pub(super) fn key_refused(&self) -> bool {
        self.inner.key_check.load(Ordering::Acquire) == KEY_WRONG
    }

    /// How many records that did not open name each key id.
    pub(super) fn refused_by_key(&self) -> std::collections::BTreeMap<String, usize> {
        self.inner.sealer.refused_by_key()
    }

    /// Writes wait until the key has been proven against the store.
    fn key_proven(&self) -> Result<(), StoreError> {
        let state = match self.inner.key_check.load(Ordering::Acquire) {
            KEY_PROVEN => return Ok(()),
            KEY_WRONG => "wrong",
            _ => "not checked yet",
        };
        Err(StoreError::KeyUnproven {
            target: self.inner.health.shown.clone(),
            state,
        })
    }

    /// One look by the probe: PING while Redis is away or the key is unchecked; after each
    /// return, check the key (which also puts back the check value an empty Redis lost)
    /// and ask for a resync. Returns the returns counted so far.
    async fn probe_once(&self, seen_recoveries: u64) -> u64 {
        let health = &self.inner.health;
        let unchecked = self.inner.key_check.load(Ordering::Acquire) == KEY_UNCHECKED;
        if !self.is_reachable() || unchecked {
            let mut connection = self.connection();
            // The first command after an outage may meet the connection's last failed
            // reconnection; it starts a new one, which the second command waits on.
            for _ in 0..2 {
                let ping = self
                    .run(redis::cmd("PING").query_async::<()>(&mut connection))
                    .await;
                if ping.is_ok() {
                    break;
                }
            }
        }
        let recoveries = health.recoveries.load(Ordering::Acquire);
        if !self.is_reachable() || (recoveries == seen_recoveries && !unchecked) {
            return seen_recoveries;
        }
        match self.check_key().await {
            Ok(()) => {
                if self.inner.key_check.swap(KEY_PROVEN, Ordering::AcqRel) != KEY_PROVEN {
                    tracing::info!(store = %health.shown, "the store key was checked against the store; writes resume");
                }
            }
            Err(StoreError::Unavailable { .. }) => return seen_recoveries,
            Err(error @ StoreError::WrongKey { .. }) if unchecked => {
                self.inner.key_check.store(KEY_WRONG, Ordering::Release);
                tracing::error!(store = %health.shown, %error, "this replica stays read-only and not ready: it writes nothing to the store; fix the key and restart it");
                return recoveries;
            }
            Err(error) => {
                tracing::warn!(store = %health.shown, %error, "the store key check after Redis returned failed");
            }
        }
        let _ = self.inner.events.send(Event::Resync);
        recoveries
    }
}

/// Watches the store until it is dropped: see [`RedisStore::probe_once`].
async fn probe(store: Weak<Inner>, mut seen_recoveries: u64) {
    let mut ticker = tokio::time::interval(PROBE_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(inner) = store.upgrade() else {
            return;
        };
        seen_recoveries = RedisStore { inner }.probe_once(seen_recoveries).await;
    }
}

/// A held Redis lock: its key, the random token that proves it is ours, and its lease.
pub struct RedisLock {
    store: RedisStore,
    key: String,
    token: String,
    lease: Duration,
}

impl RedisLock {
    /// How long the lock lives past its last extension.
    pub(super) fn lease(&self) -> Duration {
        self.lease
    }

    /// The lock's key (no secret: the token stays private).
    pub(super) fn key(&self) -> &str {
        &self.key
    }

    /// Compare-and-PEXPIRE: pushes the expiry one lease ahead; false when the lock had
    /// expired (another holder may have it, and is left alone).
    pub(super) async fn extend(&self) -> Result<bool, StoreError> {
        self.compare(&self.store.inner.extend, Some(self.lease))
            .await
    }

    /// Compare-and-delete: a lock that expired and was taken by another holder is left
    /// alone. False when it had expired.
    pub(super) async fn release(self) -> Result<bool, StoreError> {
        self.compare(&self.store.inner.release, None).await
    }

    /// Runs `script` on the lock's key with its token (and `lease`, when given): true when
    /// the lock still held the token.
    async fn compare(&self, script: &Script, lease: Option<Duration>) -> Result<bool, StoreError> {
        let mut connection = self.store.connection();
        let mut invocation = script.key(&self.key);
        invocation.arg(&self.token);
        if let Some(lease) = lease {
            invocation.arg(millis(lease));
        }
        let done: u8 = self
            .store
            .run(invocation.invoke_async(&mut connection))
            .await?;
        Ok(done == 1)
    }
}

/// Subscribes to the events channel on a dedicated connection and forwards what arrives;
/// after every (re)subscription sends [`Event::Resync`] (events published meanwhile were
/// missed). Reconnects with back-off until the store is dropped.
async fn forward_events(
    client: redis::Client,
    channel: String,
    events: broadcast::Sender<Event>,
    health: Arc<Health>,
    timeout: Duration,
    mut stop: watch::Receiver<()>,
) {
    let mut pause = RESUBSCRIBE_MIN;
    loop {
        let subscribe = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            RedisResult::Ok(pubsub)
        };
        let subscribed = tokio::select! {
            _ = stop.changed() => return,
            subscribed = tokio::time::timeout(timeout, subscribe) => subscribed,
        };
        match subscribed {
            Ok(Ok(mut pubsub)) => {
                // Not `health.up()`: only the command connection answering says Redis is
                // back for the operations; the probe sees to that.
                pause = RESUBSCRIBE_MIN;
                let _ = events.send(Event::Resync);
                let mut messages = pubsub.on_message();
                loop {
                    tokio::select! {
                        _ = stop.changed() => return,
                        message = messages.next() => match message {
                            Some(message) => {
                                if let Some(event) = parse_event(message.get_payload_bytes()) {
                                    let _ = events.send(event);
                                }
                            }
                            None => break,
                        },
                    }
                }
                health.down(&"the events subscription was cut");
            }
            Ok(Err(error)) => health.down(&error),
            Err(_) => health.down(&Unavailable::Timeout(timeout)),
        }
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(RESUBSCRIBE_MAX);
    }
}

/// Parses `saved:{merchant}:{generation}` or `deleted:{merchant}`.
fn parse_event(payload: &[u8]) -> Option<Event> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.split(':');
    let event = match (parts.next()?, parts.next()?, parts.next()) {
        ("saved", merchant, Some(generation)) => Event::Saved {
            merchant: MerchantId::parse(merchant).ok()?,
            generation: generation.parse().ok()?,
        },
        ("deleted", merchant, None) => Event::Deleted {
            merchant: MerchantId::parse(merchant).ok()?,
        },
        _ => return None,
    };
    parts.next().is_none().then_some(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use poynt_wire::GrantKind;

    #[test]
    fn events_parse_and_garbage_is_ignored() {
        let m = MerchantId::parse("11111111-1111-4111-8111-111111111111").unwrap();
        assert_eq!(
            parse_event(format!("saved:{m}:42").as_bytes()),
            Some(Event::Saved {
                merchant: m,
                generation: 42
            })
        );
        assert_eq!(
            parse_event(format!("deleted:{m}").as_bytes()),
            Some(Event::Deleted { merchant: m })
        );
        for bad in [
            "saved:x:1",
            "deleted",
            "saved:{m}",
            "other:a:b",
            "saved:a:b:c",
        ] {
            assert_eq!(parse_event(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn values_split_at_the_first_colon() {
        assert_eq!(split_value(b"17:\x01:x"), Some((17, &b"\x01:x"[..])));
        assert_eq!(split_value(b"x:1"), None);
        assert_eq!(split_value(b"17"), None);
    }

    #[test]
    fn records_with_a_refresh_token_are_kept_30_days_past_expiry() {
        let now = SystemTime::now();
        let mut record = Record {
            access_token: None,
            refresh_token: None,
            expires_at: now + Duration::from_secs(3600),
            issued_at: now,
            grant: GrantKind::JwtBearer,
            generation: 1,
            onboarded_at: None,
        };
        assert_eq!(record_ttl(&record, now), Duration::from_secs(3600));
        record.refresh_token = Some("r".to_owned().into());
        assert_eq!(
            record_ttl(&record, now),
            Duration::from_secs(3600) + REFRESH_TOKEN_RETENTION
        );
        record.refresh_token = None;
        record.expires_at = now - Duration::from_secs(10);
        assert_eq!(record_ttl(&record, now), Duration::from_secs(1));
    }

    #[test]
    fn the_scan_pattern_escapes_globs() {
        let names = Names::new("p*x", "urn:aid:[1]");
        assert_eq!(names.token_pattern(), "p\\*x:urn:aid:\\[1\\]:token:*");
        let m = MerchantId::parse("11111111-1111-4111-8111-111111111111").unwrap();
        assert_eq!(names.merchant_of(&names.token(m)), Some(m));
        assert_eq!(names.merchant_of(&names.lock(m)), None);
    }
}
