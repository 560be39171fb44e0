//! The token store through `Store::open`, on real redb files and a real `redis-server`:
//! persistence, exclusivity, keys and rotation, sealing at rest, compare-and-set, locks,
//! events, single-use states, and a Redis outage.

mod support;

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};
use std::time::{Duration, SystemTime};

use poynt_proxy::config::{Config, KeySources, StoreConfig};
use poynt_proxy::metrics::Metrics;
use poynt_proxy::store::{
    Event, Owner, Record, Saved, SharedBucket, Store, StoreError, Verdict, keys,
};
use poynt_wire::GrantKind;
use poynt_wire::MerchantId;
use secrecy::ExposeSecret as _;
use support::redis::{RedisServer, TlsFiles};
use support::{APP_ID, eventually, fixture, merchant};
use tokio::sync::broadcast;

/// A whole proxy config with `store` as its store section; relative paths resolve in `dir`.
fn config_yaml(store: &str) -> String {
    format!(
        "poynt:\n  application_id: \"{APP_ID}\"\n  private_key_file: {:?}\nstore:\n{store}",
        fixture("app-key-pkcs8.pem").display().to_string()
    )
}

fn store_config(store: &str, dir: &Path) -> StoreConfig {
    store_config_with(store, dir, KeySources::default())
}

fn store_config_with(store: &str, dir: &Path, mut sources: KeySources) -> StoreConfig {
    sources.base_dir = Some(dir.to_owned());
    Config::parse(&config_yaml(store), &sources)
        .expect("valid config")
        .store
}

/// Writes a fresh key file `name` in `dir`.
fn key_file(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, keys::generate().expose_secret()).unwrap();
    path
}

fn embedded(dir: &Path, key: &str) -> StoreConfig {
    store_config(
        &format!("  backend: embedded\n  path: tokens.redb\n  key_file: {key}\n"),
        dir,
    )
}

fn redis_config(server: &RedisServer, dir: &Path) -> StoreConfig {
    let key = dir.join("shared.key");
    if !key.exists() {
        key_file(dir, "shared.key");
    }
    store_config(
        &format!(
            "  backend: redis\n  redis_url: \"{}\"\n  key_file: shared.key\n  timeout: 300ms\n",
            server.url()
        ),
        dir,
    )
}

/// One config per backend: memory, an embedded file in `dir`, and `server`.
fn every_backend(dir: &Path, server: &RedisServer) -> [StoreConfig; 3] {
    key_file(dir, "store.key");
    [
        store_config("  backend: memory\n", dir),
        embedded(dir, "store.key"),
        redis_config(server, dir),
    ]
}

async fn open(config: &StoreConfig) -> (Store, Metrics) {
    let metrics = Metrics::new().unwrap();
    let store = Store::open(config, APP_ID, &metrics)
        .await
        .expect("store opens");
    (store, metrics)
}

/// A record whose tokens carry `tag`, so a test can look for them byte for byte.
fn record(generation: u64, tag: &str) -> Record {
    let now = SystemTime::now();
    Record {
        access_token: Some(format!("access-{tag}-{generation}").into()),
        refresh_token: Some(format!("refresh-{tag}-{generation}").into()),
        expires_at: now + Duration::from_secs(3600),
        issued_at: now,
        grant: GrantKind::RefreshToken,
        generation,
        onboarded_at: Some(now - Duration::from_secs(86_400)),
    }
}

fn tokens_of(record: &Record) -> [String; 2] {
    [
        record
            .access_token
            .as_ref()
            .unwrap()
            .expose_secret()
            .to_owned(),
        record
            .refresh_token
            .as_ref()
            .unwrap()
            .expose_secret()
            .to_owned(),
    ]
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

async fn generation_of(store: &Store, merchant: MerchantId) -> Option<u64> {
    store
        .load(merchant)
        .await
        .expect("load")
        .map(|r| r.generation)
}

/// Log lines of this test binary, captured from the global subscriber.
static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        tracing_subscriber::fmt()
            .with_writer(|| Capture)
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .init();
    });
}

/// Captured lines containing every one of `parts`.
fn log_lines(parts: &[&str]) -> Vec<String> {
    String::from_utf8_lossy(&LOGS.lock().unwrap())
        .lines()
        .filter(|line| parts.iter().all(|p| line.contains(p)))
        .map(str::to_owned)
        .collect()
}

/// Waits (at most `limit`) for an event matching `pick`, skipping others.
async fn next_event(
    events: &mut broadcast::Receiver<Event>,
    limit: Duration,
    pick: impl Fn(&Event) -> bool,
) -> Option<Event> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(event)) if pick(&event) => return Some(event),
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => return None,
        }
    }
}

/// Saves `merchant` through `writer` with growing generations until `events` (made in the
/// background after open) hears one; returns the generation heard.
async fn save_until_heard(
    writer: &Store,
    events: &mut broadcast::Receiver<Event>,
    merchant: MerchantId,
) -> u64 {
    for generation in 1..=20 {
        writer
            .save(merchant, &record(generation, "event"))
            .await
            .unwrap();
        let wanted = Event::Saved {
            merchant,
            generation,
        };
        if next_event(events, Duration::from_millis(500), |e| *e == wanted)
            .await
            .is_some()
        {
            return generation;
        }
    }
    panic!("no save was heard on the events channel");
}

/// A Redis store on its own server, for outage tests (logs captured): its events are heard
/// (a save of `merchant` at generation `heard` was).
struct Watched {
    dir: tempfile::TempDir,
    server: RedisServer,
    /// `127.0.0.1:{port}`, as log lines name the store.
    port: String,
    store: Store,
    metrics: Metrics,
    events: broadcast::Receiver<Event>,
    merchant: MerchantId,
    heard: u64,
}

async fn watched_redis_store() -> Watched {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let server = RedisServer::start();
    let port = format!("127.0.0.1:{}", server.port());
    let (store, metrics) = open(&redis_config(&server, dir.path())).await;
    let mut events = store.events().unwrap();
    let merchant = merchant();
    let heard = save_until_heard(&store, &mut events, merchant).await;
    Watched {
        dir,
        server,
        port,
        store,
        metrics,
        events,
        merchant,
        heard,
    }
}

#[tokio::test]
async fn embedded_records_persist_across_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    key_file(dir.path(), "store.key");
    let config = embedded(dir.path(), "store.key");
    let (a, b) = (merchant(), merchant());
    {
        let (store, _) = open(&config).await;
        assert_eq!(
            store.save(a, &record(1, "a")).await.unwrap(),
            Saved::Written
        );
        assert_eq!(
            store.save(b, &record(5, "b")).await.unwrap(),
            Saved::Written
        );
        assert!(store.delete(b).await.unwrap());
        assert!(!store.delete(b).await.unwrap(), "already gone");
        assert_eq!(
            store.save(b, &record(6, "b")).await.unwrap(),
            Saved::Written
        );
    }
    let (store, metrics) = open(&config).await;
    let mut all = store.load_all().await.unwrap();
    all.sort_by_key(|(m, _)| *m);
    let mut expected = vec![(a, 1), (b, 6)];
    expected.sort();
    assert_eq!(
        all.iter()
            .map(|(m, r)| (*m, r.generation))
            .collect::<Vec<_>>(),
        expected
    );
    let loaded = store.load(a).await.unwrap().expect("a survived");
    assert_eq!(tokens_of(&loaded), tokens_of(&record(1, "a")));
    assert_eq!(loaded.grant, GrantKind::RefreshToken);
    assert!(loaded.onboarded_at.is_some());
    assert!(
        metrics
            .render()
            .contains("poynt_proxy_store_records_loaded 2"),
        "the start-up gauge counts what load_all read"
    );
    assert!(store.load(merchant()).await.unwrap().is_none());
}

#[tokio::test]
async fn an_auto_created_key_and_the_file_are_private_and_reused() {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let config = store_config(
        "  backend: embedded\n  path: data/tokens.redb\n",
        dir.path(),
    );
    assert_eq!(
        config.key_beside_data(),
        Some(dir.path().join("data/tokens.redb.key"))
    );
    let m = merchant();
    {
        let (store, _) = open(&config).await;
        store.save(m, &record(3, "auto")).await.unwrap();
    }
    let data = dir.path().join("data/tokens.redb");
    let key = dir.path().join("data/tokens.redb.key");
    for path in [&data, &key] {
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", path.display());
    }
    let warned = log_lines(&[
        "WARN",
        "created the store key beside the data",
        "tokens.redb.key",
    ]);
    assert_eq!(warned.len(), 1, "{warned:?}");
    let (store, _) = open(&config).await;
    assert_eq!(
        generation_of(&store, m).await,
        Some(3),
        "the key beside the data is read back, not replaced"
    );
}

/// Writes a config file the binary can read, for the store in `dir`.
fn binary_config(dir: &Path) -> PathBuf {
    let path = dir.join("proxy.yaml");
    let mut file = std::fs::File::create(&path).unwrap();
    write!(
        file,
        "{}",
        config_yaml("  backend: embedded\n  path: tokens.redb\n  key_file: store.key\n")
    )
    .unwrap();
    path
}

#[tokio::test]
async fn a_second_process_on_the_same_file_fails_naming_store_path() {
    let dir = tempfile::tempdir().unwrap();
    key_file(dir.path(), "store.key");
    let config = embedded(dir.path(), "store.key");
    let file = binary_config(dir.path());
    let m = merchant();
    let saved = record(9, "listed");
    let (store, _) = open(&config).await;
    store.save(m, &saved).await.unwrap();
    let held = std::process::Command::new(support::process::BIN)
        .args(["store", "list", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!held.status.success(), "a second process opened the file");
    let stderr = String::from_utf8_lossy(&held.stderr);
    assert!(
        stderr.contains("store.path")
            && stderr.contains(&dir.path().join("tokens.redb").display().to_string())
            && stderr.contains("another process"),
        "{stderr}"
    );
    drop(store);
    let listed = std::process::Command::new(support::process::BIN)
        .args(["store", "list", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "{listed:?}");
    let row = stdout
        .lines()
        .find(|l| l.starts_with(&m.to_string()))
        .unwrap_or_else(|| panic!("{m} not listed: {stdout}"));
    assert!(
        row.contains("refresh_token") && row.contains("yes") && row.ends_with('9'),
        "{row}"
    );
    let everything = [listed.stdout, listed.stderr].concat();
    for token in tokens_of(&saved) {
        assert!(!contains(&everything, &token), "store list printed a token");
    }
}

#[tokio::test]
async fn a_wrong_key_fails_at_open_naming_where_it_came_from() {
    let dir = tempfile::tempdir().unwrap();
    key_file(dir.path(), "right.key");
    let wrong = key_file(dir.path(), "wrong.key");
    {
        let (store, _) = open(&embedded(dir.path(), "right.key")).await;
        store.save(merchant(), &record(1, "k")).await.unwrap();
    }
    let message = |config: StoreConfig| async move {
        match Store::open(&config, APP_ID, &Metrics::new().unwrap()).await {
            Err(error @ StoreError::WrongKey { .. }) => error.to_string(),
            Err(other) => panic!("expected WrongKey; found {other}"),
            Ok(_) => panic!("a wrong key opened the store"),
        }
    };
    let from_file = message(embedded(dir.path(), "wrong.key")).await;
    assert!(
        from_file.starts_with("store.key_file")
            && from_file.contains(&wrong.display().to_string())
            && from_file.contains("tokens.redb"),
        "{from_file}"
    );
    let env = KeySources {
        store_key_env: Some(keys::generate()),
        ..KeySources::default()
    };
    let config = store_config_with(
        "  backend: embedded\n  path: tokens.redb\n  key_file: right.key\n",
        dir.path(),
        env,
    );
    let from_env = message(config).await;
    assert!(
        from_env.starts_with(keys::STORE_KEY_ENV),
        "the environment variable overrides the file: {from_env}"
    );
}

#[tokio::test]
async fn a_replica_with_another_redis_key_fails_at_open_and_rotation_reseals_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let server = RedisServer::start();
    let old = key_file(dir.path(), "old.key");
    let new = key_file(dir.path(), "new.key");
    let redis = |keys: &str| {
        store_config(
            &format!(
                "  backend: redis\n  redis_url: \"{}\"\n{keys}",
                server.url()
            ),
            dir.path(),
        )
    };
    let m = merchant();
    let (first, _) = open(&redis("  key_file: old.key\n")).await;
    first.save(m, &record(1, "shared")).await.unwrap();
    let wrong = |config: StoreConfig| async move {
        match Store::open(&config, APP_ID, &Metrics::new().unwrap()).await {
            Err(error @ StoreError::WrongKey { .. }) => error.to_string(),
            Err(other) => panic!("expected WrongKey; found {other}"),
            Ok(_) => panic!("a replica with another key opened the store"),
        }
    };
    let message = wrong(redis("  key_file: new.key\n")).await;
    assert!(
        message.starts_with("store.key_file")
            && message.contains(&new.display().to_string())
            && message.contains(&server.url()),
        "{message}"
    );
    let (rotated, _) = open(&redis(
        "  key_file: new.key\n  previous_key_files: [old.key]\n",
    ))
    .await;
    assert_eq!(
        generation_of(&rotated, m).await,
        Some(1),
        "the old key still opens"
    );
    let message = wrong(redis("  key_file: old.key\n")).await;
    assert!(
        message.contains(&old.display().to_string()),
        "the check value is now sealed with the new key: {message}"
    );
    let (_, _) = open(&redis("  key_file: new.key\n")).await;
}

#[tokio::test]
async fn rotation_opens_old_records_and_seals_them_again_with_the_new_key() {
    let dir = tempfile::tempdir().unwrap();
    key_file(dir.path(), "old.key");
    key_file(dir.path(), "new.key");
    let (a, b) = (merchant(), merchant());
    {
        let (store, _) = open(&embedded(dir.path(), "old.key")).await;
        store.save(a, &record(1, "a")).await.unwrap();
        store.save(b, &record(2, "b")).await.unwrap();
    }
    let rotating = store_config(
        "  backend: embedded\n  path: tokens.redb\n  key_file: new.key\n  previous_key_files: [old.key]\n",
        dir.path(),
    );
    {
        let (store, _) = open(&rotating).await;
        assert_eq!(generation_of(&store, a).await, Some(1));
        assert_eq!(generation_of(&store, b).await, Some(2));
    }
    let (store, metrics) = open(&embedded(dir.path(), "new.key")).await;
    assert_eq!(
        generation_of(&store, a).await,
        Some(1),
        "re-sealed with the new key"
    );
    assert_eq!(
        generation_of(&store, b).await,
        Some(2),
        "re-sealed with the new key"
    );
    assert!(
        metrics
            .render()
            .contains("poynt_proxy_store_records_refused_total 0")
    );
    drop(store);
    assert!(
        matches!(
            Store::open(
                &embedded(dir.path(), "old.key"),
                APP_ID,
                &Metrics::new().unwrap()
            )
            .await,
            Err(StoreError::WrongKey { .. })
        ),
        "the old key alone no longer opens the store"
    );
}

#[tokio::test]
async fn tokens_are_sealed_at_rest_in_the_file_and_in_redis() {
    let dir = tempfile::tempdir().unwrap();
    key_file(dir.path(), "store.key");
    let server = RedisServer::start();
    let records: Vec<(MerchantId, Record)> = (0..20)
        .map(|i| (merchant(), record(i + 1, &format!("sealed{i}"))))
        .collect();
    {
        let (file_store, _) = open(&embedded(dir.path(), "store.key")).await;
        let (redis_store, _) = open(&redis_config(&server, dir.path())).await;
        for (m, r) in &records {
            file_store.save(*m, r).await.unwrap();
            redis_store.save(*m, r).await.unwrap();
        }
    }
    let file = std::fs::read(dir.path().join("tokens.redb")).unwrap();
    let client = ::redis::Client::open(server.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(
        keys.iter().filter(|k| k.contains(":token:")).count(),
        records.len(),
        "{keys:?}"
    );
    let mut values = Vec::new();
    for key in &keys {
        let value: Vec<u8> = ::redis::cmd("GET")
            .arg(key)
            .query_async(&mut connection)
            .await
            .unwrap();
        values.push(value);
    }
    for (_, r) in &records {
        for token in tokens_of(r) {
            assert!(!contains(&file, &token), "{token} in clear in the file");
            for value in &values {
                assert!(!contains(value, &token), "{token} in clear in Redis");
            }
        }
    }
}

#[tokio::test]
async fn a_record_copied_under_another_merchant_reads_as_absent() {
    const RECORDS: ::redb::TableDefinition<&[u8; 16], (u64, &[u8])> =
        ::redb::TableDefinition::new("records");
    let dir = tempfile::tempdir().unwrap();
    key_file(dir.path(), "store.key");
    let config = embedded(dir.path(), "store.key");
    let (victim, thief) = (merchant(), merchant());
    {
        let (store, _) = open(&config).await;
        store.save(victim, &record(4, "victim")).await.unwrap();
    }
    {
        use ::redb::ReadableTable as _;
        let db = ::redb::Database::open(dir.path().join("tokens.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(RECORDS).unwrap();
            let value = {
                let stored = table.get(victim.uuid().as_bytes()).unwrap().unwrap();
                let (generation, sealed) = stored.value();
                (generation, sealed.to_vec())
            };
            table
                .insert(thief.uuid().as_bytes(), (value.0, value.1.as_slice()))
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let (store, metrics) = open(&config).await;
    assert!(
        store.load(thief).await.unwrap().is_none(),
        "embedded: copied record opened"
    );
    assert_eq!(generation_of(&store, victim).await, Some(4));
    assert_eq!(store.load_all().await.unwrap().len(), 1);

    let server = RedisServer::start();
    let (shared, _) = open(&redis_config(&server, dir.path())).await;
    shared.save(victim, &record(4, "victim")).await.unwrap();
    let mut connection = ::redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let key = |m: MerchantId| format!("poynt-proxy:{APP_ID}:token:{m}");
    let value: Vec<u8> = ::redis::cmd("GET")
        .arg(key(victim))
        .query_async(&mut connection)
        .await
        .unwrap();
    let () = ::redis::cmd("SET")
        .arg(key(thief))
        .arg(value)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(
        shared.load(thief).await.unwrap().is_none(),
        "redis: copied record opened"
    );
    assert_eq!(generation_of(&shared, victim).await, Some(4));
    assert!(
        metrics
            .render()
            .lines()
            .any(|l| l.starts_with("poynt_proxy_store_records_refused_total")
                && !l.ends_with(" 0")),
        "refusals are counted"
    );
}

#[tokio::test]
async fn saves_are_compare_and_set_on_the_generation_on_every_backend() {
    let dir = tempfile::tempdir().unwrap();
    let server = RedisServer::start();
    for config in &every_backend(dir.path(), &server) {
        let (store, metrics) = open(config).await;
        let m = merchant();
        let backend = store.backend().as_str();
        assert_eq!(
            store.save(m, &record(2, "cas")).await.unwrap(),
            Saved::Written
        );
        for older in [2, 1, 0] {
            assert_eq!(
                store.save(m, &record(older, "cas")).await.unwrap(),
                Saved::Stale {
                    current_generation: 2
                },
                "{backend}: generation {older} over 2"
            );
        }
        assert_eq!(
            store.save(m, &record(3, "cas")).await.unwrap(),
            Saved::Written
        );
        let loaded = store.load(m).await.unwrap().unwrap();
        assert_eq!(loaded.generation, 3, "{backend}");
        assert_eq!(
            tokens_of(&loaded),
            tokens_of(&record(3, "cas")),
            "{backend}"
        );
        assert!(
            metrics
                .render()
                .contains("poynt_proxy_store_operations_total{op=\"save\",outcome=\"stale\"} 3"),
            "{backend}: stale saves are counted"
        );
    }
}

#[tokio::test]
async fn spent_states_are_single_use_and_expire_on_every_backend() {
    let dir = tempfile::tempdir().unwrap();
    let server = RedisServer::start();
    for config in &every_backend(dir.path(), &server) {
        let (store, _) = open(config).await;
        let backend = store.backend().as_str();
        let (state, other) = (
            *uuid::Uuid::new_v4().as_bytes(),
            *uuid::Uuid::new_v4().as_bytes(),
        );
        let ttl = Duration::from_millis(300);
        assert!(store.spend_state(&state, ttl).await.unwrap(), "{backend}");
        assert!(
            !store.spend_state(&state, ttl).await.unwrap(),
            "{backend}: spent twice"
        );
        assert!(store.spend_state(&other, ttl).await.unwrap(), "{backend}");
        eventually(
            &format!("{backend}: the spent state to expire"),
            Duration::from_secs(5),
            || async {
                store
                    .spend_state(&state, Duration::from_secs(60))
                    .await
                    .unwrap()
            },
        )
        .await;
        assert!(
            !store.spend_state(&state, ttl).await.unwrap(),
            "{backend}: spent again after expiry, and now held"
        );
    }
}

#[tokio::test]
async fn the_redis_lock_is_exclusive_expires_and_releases_only_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let server = RedisServer::start();
    let config = redis_config(&server, dir.path());
    let (a, _) = open(&config).await;
    let (b, metrics) = open(&config).await;
    assert!(a.is_shared() && b.is_shared());
    let m = merchant();
    let first = a
        .lock(m, Duration::from_millis(300))
        .await
        .unwrap()
        .expect("a free lock is granted");
    assert!(b.lock(m, Duration::from_secs(10)).await.unwrap().is_none());
    assert!(a.lock(m, Duration::from_secs(10)).await.unwrap().is_none());
    assert!(
        metrics
            .render()
            .contains("poynt_proxy_store_operations_total{op=\"lock\",outcome=\"busy\"} 1")
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let second = loop {
        if let Some(lock) = b.lock(m, Duration::from_secs(10)).await.unwrap() {
            break lock;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first lock did not expire"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    first
        .release()
        .await
        .expect("releasing an expired lock is fine");
    assert!(
        a.lock(m, Duration::from_secs(10)).await.unwrap().is_none(),
        "releasing the expired lock deleted its successor"
    );
    second.release().await.unwrap();
    assert!(a.lock(m, Duration::from_secs(1)).await.unwrap().is_some());
    let memory = store_config("  backend: memory\n", dir.path());
    let (local, _) = open(&memory).await;
    assert!(!local.is_shared());
    assert!(
        local
            .lock(m, Duration::from_secs(1))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        local
            .lock(m, Duration::from_secs(1))
            .await
            .unwrap()
            .is_some(),
        "one process: the broker's single flight is the lock"
    );
    assert!(local.events().is_none());
}

#[tokio::test]
async fn a_held_redis_lock_outlives_its_lease_and_an_extension_never_takes_a_successors() {
    let dir = tempfile::tempdir().unwrap();
    let server = RedisServer::start();
    let config = redis_config(&server, dir.path());
    let (a, metrics) = open(&config).await;
    let (b, _) = open(&config).await;
    let lease = Duration::from_millis(300);
    let count = |op: &str, outcome: &str| {
        let series =
            format!("poynt_proxy_store_operations_total{{op=\"{op}\",outcome=\"{outcome}\"}} ");
        metrics
            .render()
            .lines()
            .find_map(|l| l.strip_prefix(&series)?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let m = merchant();
    let lock = a.lock(m, lease).await.unwrap().expect("a free lock");
    // Work lasting five leases: the holder extends, so no one else gets in meanwhile.
    lock.hold(async {
        for _ in 0..15 {
            assert!(
                b.lock(m, lease).await.unwrap().is_none(),
                "the lease lapsed while its holder worked"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(count("extend", "ok") >= 3, "{}", metrics.render());
    lock.release().await.unwrap();
    assert!(b.lock(m, lease).await.unwrap().is_some(), "released");

    // A holder whose lock was lost (here: deleted, then taken by another) stops extending
    // and leaves the successor's lock alone, extending and releasing.
    let m = merchant();
    let lost = a.lock(m, lease).await.unwrap().expect("a free lock");
    let mut raw = ::redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("*lock:{m}"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let () = ::redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut raw)
        .await
        .unwrap();
    let successor = b
        .lock(m, Duration::from_secs(60))
        .await
        .unwrap()
        .expect("the lost lock is free");
    lost.hold(eventually(
        "the holder's extension finds its lock lost",
        Duration::from_secs(5),
        || std::future::ready(count("extend", "lost") == 1),
    ))
    .await;
    lost.release().await.unwrap();
    assert_eq!(count("release", "lost"), 1);
    let ttl: i64 = ::redis::cmd("PTTL")
        .arg(&keys)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(
        ttl > 50_000,
        "the successor's 60 s lock was shortened or deleted: PTTL {ttl}"
    );
    successor.release().await.unwrap();
}

#[tokio::test]
async fn a_save_on_one_replica_reaches_another_as_an_event() {
    let dir = tempfile::tempdir().unwrap();
    let server = RedisServer::start();
    let config = redis_config(&server, dir.path());
    let (writer, _) = open(&config).await;
    let (reader, _) = open(&config).await;
    let mut events = reader.events().expect("redis has events");
    let m = merchant();
    let generation = save_until_heard(&writer, &mut events, m).await;
    assert_eq!(generation_of(&reader, m).await, Some(generation));
    assert!(writer.delete(m).await.unwrap());
    assert!(
        next_event(&mut events, Duration::from_secs(5), |e| *e
            == Event::Deleted { merchant: m })
        .await
        .is_some(),
        "a delete is published"
    );
    assert!(reader.load(m).await.unwrap().is_none());
}

#[tokio::test]
async fn a_redis_outage_fails_fast_is_logged_once_and_ends_in_a_resync() {
    let Watched {
        dir: _dir,
        mut server,
        port,
        store,
        metrics,
        mut events,
        merchant: m,
        heard,
    } = watched_redis_store().await;

    server.stop();
    for _ in 0..5 {
        assert!(
            matches!(store.load(m).await, Err(StoreError::Unavailable { .. })),
            "an operation during the outage"
        );
        assert!(store.save(m, &record(heard + 1, "outage")).await.is_err());
    }
    assert!(!store.is_reachable());
    assert!(metrics.render().contains("poynt_proxy_store_reachable 0"));
    assert!(
        metrics
            .render()
            .contains("poynt_proxy_store_operations_total{op=\"load\",outcome=\"unavailable\"} 5")
    );
    let warned = log_lines(&["WARN", "token store unreachable", &port]);
    assert_eq!(warned.len(), 1, "one warning per outage: {warned:?}");

    server.restart();
    eventually(
        "the store to answer again",
        Duration::from_secs(10),
        || async { store.load(m).await.is_ok() },
    )
    .await;
    assert!(
        next_event(&mut events, Duration::from_secs(10), |e| *e
            == Event::Resync)
        .await
        .is_some(),
        "a resync after resubscribing"
    );
    assert!(store.is_reachable());
    assert!(metrics.render().contains("poynt_proxy_store_reachable 1"));
    assert_eq!(
        store.save(m, &record(1, "outage")).await.unwrap(),
        Saved::Written,
        "the restarted Redis is empty (persistence off), so this generation is written"
    );
    let warned = log_lines(&["WARN", "token store unreachable", &port]);
    assert_eq!(warned.len(), 1, "{warned:?}");
    let back = log_lines(&["INFO", "token store reachable again", &port]);
    assert_eq!(back.len(), 1, "{back:?}");
}

#[tokio::test]
async fn a_probe_finds_redis_back_with_no_operation_and_reachable_again_is_true() {
    let mut watched = watched_redis_store().await;
    let store = &watched.store;
    watched.server.stop();
    eventually(
        "the outage to be noticed with no operation",
        Duration::from_secs(10),
        || async { !store.is_reachable() },
    )
    .await;
    watched.server.restart();
    eventually(
        "the probe to find Redis again with no operation",
        Duration::from_secs(10),
        || async {
            watched
                .metrics
                .render()
                .lines()
                .any(|l| l == "poynt_proxy_store_reachable 1")
        },
    )
    .await;
    assert!(
        next_event(&mut watched.events, Duration::from_secs(10), |e| *e
            == Event::Resync)
        .await
        .is_some(),
        "a resync once Redis answers"
    );
    for generation in 1..=3 {
        assert_eq!(
            store
                .save(watched.merchant, &record(generation, "back"))
                .await
                .unwrap(),
            Saved::Written,
            "\"reachable again\" is true: the command connection works at once"
        );
    }
    assert!(store.is_reachable());
    let down = log_lines(&["WARN", "token store unreachable", &watched.port]);
    assert_eq!(down.len(), 1, "one outage, no flapping: {down:?}");
    let back = log_lines(&["INFO", "token store reachable again", &watched.port]);
    assert_eq!(back.len(), 1, "{back:?}");
}

#[tokio::test]
async fn the_redis_acl_in_the_operations_guide_is_enough() {
    let guide =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/OPERATIONS.md"))
            .unwrap();
    let rule = guide
        .lines()
        .find_map(|l| l.trim().strip_prefix("`ACL SETUSER ")?.strip_suffix('`'))
        .expect("the guide has an ACL SETUSER line")
        .replace(">PASSWORD", ">acl-test-password");
    let dir = tempfile::tempdir().unwrap();
    let server = RedisServer::start();
    let mut admin = ::redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let () = ::redis::cmd("ACL")
        .arg("SETUSER")
        .arg(rule.split_whitespace().collect::<Vec<_>>())
        .query_async(&mut admin)
        .await
        .expect("the guide's ACL rule is valid");
    key_file(dir.path(), "shared.key");
    let url = format!(
        "redis://poynt-proxy:acl-test-password@127.0.0.1:{}/0",
        server.port()
    );
    let config = store_config(
        &format!("  backend: redis\n  redis_url: \"{url}\"\n  key_file: shared.key\n"),
        dir.path(),
    );
    let (store, metrics) = open(&config).await;
    let mut events = store.events().unwrap();
    let m = merchant();
    let heard = save_until_heard(&store, &mut events, m).await;
    assert_eq!(
        generation_of(&store, m).await,
        Some(heard),
        "the restricted user may subscribe"
    );
    assert_eq!(store.load_all().await.unwrap().len(), 1);
    let lock = store
        .lock(m, Duration::from_millis(300))
        .await
        .unwrap()
        .unwrap();
    lock.hold(eventually(
        "the restricted user extends a lock",
        Duration::from_secs(5),
        || async {
            metrics
                .render()
                .contains("poynt_proxy_store_operations_total{op=\"extend\",outcome=\"ok\"} 2")
        },
    ))
    .await;
    lock.release().await.unwrap();
    assert!(
        store
            .spend_state(&[7; 16], Duration::from_secs(5))
            .await
            .unwrap()
    );
    assert!(store.delete(m).await.unwrap());
    // The cluster-wide limits: a bucket of one takes one request and refuses the next
    // (taking nothing), and a shared cool-down holds the merchant back.
    let shared = store
        .shared_limits()
        .expect("Redis keeps cluster-wide limits");
    let bucket = SharedBucket {
        owner: Owner::Merchant(m),
        interval: Duration::from_secs(60),
        burst: 1,
    };
    assert_eq!(shared.check(m, &[bucket]).await.unwrap(), Verdict::Allowed);
    let refused = shared.check(m, &[bucket]).await.unwrap();
    assert!(
        matches!(refused, Verdict::Refused { bucket: 0, retry_after, .. } if retry_after > Duration::from_secs(50)),
        "{refused:?}"
    );
    shared.cool_down(m, Duration::from_secs(30)).await.unwrap();
    let cooling = shared.check(m, &[bucket]).await.unwrap();
    assert!(
        matches!(cooling, Verdict::CoolingDown(wait) if wait > Duration::from_secs(25)),
        "{cooling:?}"
    );
    let mut restricted = ::redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let outside: ::redis::RedisResult<Option<String>> = ::redis::cmd("GET")
        .arg("other-app:secret")
        .query_async(&mut restricted)
        .await;
    assert!(outside.is_err(), "the rule confines the user to its prefix");
}

/// A CA and a `localhost` certificate it issued, as PEM: (CA, certificate, key).
fn certificates() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca_pem, cert.pem(), key.serialize_pem())
}

#[test]
fn rediss_is_verified_against_the_bundle_ssl_cert_file_names() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates();
    let (other_ca, _, _) = certificates();
    for (name, pem) in [
        ("ca.pem", &ca),
        ("cert.pem", &cert),
        ("key.pem", &key),
        ("other-ca.pem", &other_ca),
    ] {
        std::fs::write(dir.path().join(name), pem).unwrap();
    }
    let server = RedisServer::start_tls(TlsFiles {
        cert: &dir.path().join("cert.pem"),
        key: &dir.path().join("key.pem"),
        ca: &dir.path().join("ca.pem"),
    });
    key_file(dir.path(), "shared.key");
    let config = dir.path().join("proxy.yaml");
    std::fs::write(
        &config,
        config_yaml(&format!(
            "  backend: redis\n  redis_url: \"rediss://localhost:{}/0\"\n  key_file: shared.key\n",
            server.port()
        )),
    )
    .unwrap();
    let list = |bundle: &str| {
        std::process::Command::new(support::process::BIN)
            .args(["store", "list", "--config"])
            .arg(&config)
            .env("SSL_CERT_FILE", dir.path().join(bundle))
            .output()
            .unwrap()
    };
    let trusted = list("ca.pem");
    assert!(trusted.status.success(), "{trusted:?}");
    assert!(String::from_utf8_lossy(&trusted.stderr).contains("0 merchants"));
    let untrusted = list("other-ca.pem");
    assert!(
        !untrusted.status.success(),
        "a server certificate from an untrusted CA was accepted"
    );
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert!(stderr.contains("unavailable"), "{stderr}");
}

#[tokio::test]
async fn a_record_no_configured_key_opens_is_never_overwritten_and_store_list_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = RedisServer::start();
    let (store, metrics) = open(&redis_config(&server, dir.path())).await;
    // Sealed with a key this store lacks: written under another prefix, copied here.
    key_file(dir.path(), "foreign.key");
    let (foreign, _) = open(&store_config(
        &format!(
            "  backend: redis\n  redis_url: \"{}\"\n  key_prefix: foreign\n  key_file: foreign.key\n",
            server.url()
        ),
        dir.path(),
    ))
    .await;
    let m = merchant();
    foreign.save(m, &record(3, "foreign")).await.unwrap();
    let sealed = server
        .get(&format!("foreign:{APP_ID}:token:{m}"))
        .await
        .unwrap();
    let key = format!("poynt-proxy:{APP_ID}:token:{m}");
    let mut connection = ::redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let () = ::redis::cmd("SET")
        .arg(&key)
        .arg(&sealed)
        .query_async(&mut connection)
        .await
        .unwrap();

    assert!(store.load(m).await.unwrap().is_none(), "it does not open");
    for generation in [1, 3, 4, 100] {
        let refused = store
            .save(m, &record(generation, "mine"))
            .await
            .expect_err("a save over a record no configured key opens");
        assert!(refused.to_string().contains("withheld"), "{refused}");
    }
    assert_eq!(
        server.get(&key).await.as_ref(),
        Some(&sealed),
        "kept byte for byte"
    );
    assert!(
        metrics
            .render()
            .contains("poynt_proxy_store_saves_withheld_total 4"),
        "{}",
        metrics.render()
    );

    let config = dir.path().join("proxy.yaml");
    std::fs::write(
        &config,
        config_yaml(&format!(
            "  backend: redis\n  redis_url: \"{}\"\n  key_file: shared.key\n",
            server.url()
        )),
    )
    .unwrap();
    let listed = std::process::Command::new(support::process::BIN)
        .args(["store", "list", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(listed.status.success());
    let said = String::from_utf8_lossy(&listed.stderr);
    let foreign_key = support::hex(&foreign.key().unwrap().id());
    assert!(
        said.contains("0 merchants")
            && said.contains("1 record could not be opened")
            && said.contains(&format!("1 sealed with key {foreign_key}")),
        "{said}"
    );

    assert!(store.delete(m).await.unwrap(), "an operator may delete it");
    assert_eq!(
        store.save(m, &record(1, "mine")).await.unwrap(),
        Saved::Written,
        "and saves go through again"
    );
}
