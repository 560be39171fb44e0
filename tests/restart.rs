//! The embedded store through the real binary: restarts make no grant for merchants whose
//! tokens are still good, a SIGKILL in the middle of renewals loses no merchant and never
//! makes Poynt see a refresh token twice, one process owns the file, the key must fit, and
//! what is on disk is sealed.

mod support;

use redb::ReadableTable as _;

use std::path::Path;
use std::time::Duration;

use futures_util::future::join_all;
use poynt_emulator::{Emulator, Fault};
use poynt_wire::MerchantId;
use serde_json::Value;
use support::process::{ProxyProcess, run_expecting_failure, spawn_proxy};
use support::{Builder, eventually};

fn embedded(dir: &Path) -> String {
    format!(
        "store:\n  backend: embedded\n  path: {:?}\n",
        dir.join("tokens.redb").display().to_string()
    )
}

async fn all_served(proxy: &ProxyProcess, merchants: &[MerchantId]) {
    let statuses = join_all(merchants.iter().map(|m| proxy.get(*m))).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
}

async fn emulator(merchants: &[MerchantId], ttl: Duration) -> Emulator {
    Builder::default().token_ttl(ttl).emulator(merchants).await
}

#[tokio::test]
async fn a_restart_serves_stored_tokens_without_a_grant_and_the_file_holds_no_token_in_clear() {
    let merchants: Vec<MerchantId> = (0..3).map(|_| support::merchant()).collect();
    let emulator = emulator(&merchants, Duration::from_secs(3600)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut first = spawn_proxy(&emulator, &embedded(dir.path()));
    all_served(&first, &merchants).await;
    assert!(first.terminate().success());
    assert_eq!(emulator.stats().token_calls_total, 3);

    let bytes = std::fs::read(dir.path().join("tokens.redb")).unwrap();
    for secret in emulator.issued_secrets() {
        let needle = &secret.as_bytes()[secret.len().saturating_sub(24)..];
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "a token is in the file in clear"
        );
    }

    let mut second = spawn_proxy(&emulator, &embedded(dir.path()));
    all_served(&second, &merchants).await;
    assert_eq!(
        emulator.stats().token_calls_total,
        3,
        "the restart made a grant for a merchant whose stored token was good"
    );
    let metrics = second.metrics().await;
    assert!(
        metrics.contains("poynt_proxy_store_records_loaded 3"),
        "{metrics}"
    );
    assert!(second.terminate().success());
}

#[tokio::test]
async fn sigkill_during_two_hundred_renewals_loses_no_merchant_and_reuses_no_refresh_token() {
    let merchants: Vec<MerchantId> = (0..200).map(|_| support::merchant()).collect();
    let emulator = emulator(&merchants, Duration::from_secs(5)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{}tokens:\n  refresh_at: 0.5\n  refresh_jitter: 0.1\n  new_merchant_grant_burst: 1000\n  max_concurrent_grants: 64\n",
        embedded(dir.path())
    );
    let mut proxy = spawn_proxy(&emulator, &config);
    all_served(&proxy, &merchants).await;
    // Each renewal takes 1.5 s, 64 at a time: the 200 of them need at least four rounds
    // (6 s), outlasting the callers' requests (which never wait for a renewal), so the kill
    // below — once 20 are done — finds every caller answered, some renewals stored and the
    // rest in flight, however slowly a loaded machine runs the test (at 500 ms each, a
    // busy run saw all 200 done before the kill).
    emulator.set_fault(Fault {
        token_delay_ms: Some(1500),
        ..Fault::default()
    });
    // Past the refresh points (2-3 s into 5 s tokens), traffic starts 200 renewals; kill the
    // proxy while they are in flight.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let statuses = join_all(merchants.iter().map(|m| proxy.get(*m))).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    eventually(
        "renewals are in flight",
        Duration::from_secs(10),
        || async { emulator.stats().token_calls.refresh_token.total >= 20 },
    )
    .await;
    // Calls that arrive from now on are held for a minute (their handlers end with the
    // killed proxy's connections), so the kill lands while renewals are in flight however
    // long it takes: a CI run once saw all 200 done first, on a loaded or paused machine.
    emulator.set_fault(Fault {
        token_delay_ms: Some(60_000),
        ..Fault::default()
    });
    proxy.signal("KILL");
    assert!(proxy.exit_within(Duration::from_secs(10)).is_some());
    let renewed_before_kill = emulator.stats().token_calls.refresh_token.total;
    assert!(
        renewed_before_kill < 200,
        "the kill came after every renewal"
    );

    emulator.set_fault(Fault::default());
    let restarted = spawn_proxy(&emulator, &config);
    // Long enough for every old token to pass its refresh point again or expire.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for _ in 0..3 {
        all_served(&restarted, &merchants).await;
    }
    let stats = emulator.stats();
    assert_eq!(stats.refresh_token_reuse, 0, "{stats:?}");
    assert_eq!(stats.token_calls.refresh_token.refused, 0, "{stats:?}");
}

#[tokio::test]
async fn a_second_process_on_the_same_file_fails_naming_store_path() {
    let emulator = emulator(&[], Duration::from_secs(3600)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut owner = spawn_proxy(&emulator, &embedded(dir.path()));
    let (status, output) = run_expecting_failure(&emulator, &embedded(dir.path()));
    assert!(!status.success());
    assert!(
        output.contains("store.path") && output.contains("open in another process"),
        "{output}"
    );
    assert!(owner.terminate().success());
}

#[tokio::test]
async fn a_wrong_store_key_fails_at_start_naming_the_key() {
    let emulator = emulator(&[], Duration::from_secs(3600)).await;
    let dir = tempfile::tempdir().unwrap();
    let key = |name: &str| {
        let output = std::process::Command::new(support::process::BIN)
            .args(["store", "keygen"])
            .output()
            .unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, output.stdout).unwrap();
        path
    };
    let (a, b) = (key("a.key"), key("b.key"));
    let with_key = |key: &Path| {
        format!(
            "{}  key_file: {:?}\n",
            embedded(dir.path()),
            key.display().to_string()
        )
    };
    let mut first = spawn_proxy(&emulator, &with_key(&a));
    assert!(first.terminate().success());
    let (status, output) = run_expecting_failure(&emulator, &with_key(&b));
    assert!(!status.success());
    assert!(
        output.contains("store.key_file") && output.contains("does not open the store"),
        "{output}"
    );
}

/// The embedded store's records table, as the store writes it.
const RECORDS: redb::TableDefinition<&[u8; 16], (u64, &[u8])> =
    redb::TableDefinition::new("records");

#[tokio::test]
async fn a_record_copied_under_another_merchant_is_refused_and_that_merchant_granted_anew() {
    let (a, b) = (support::merchant(), support::merchant());
    let emulator = emulator(&[a, b], Duration::from_secs(3600)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut proxy = spawn_proxy(&emulator, &embedded(dir.path()));
    all_served(&proxy, &[a, b]).await;
    assert!(proxy.terminate().success());
    {
        let db = redb::Database::open(dir.path().join("tokens.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(RECORDS).unwrap();
            let copied = {
                let value = table.get(a.uuid().as_bytes()).unwrap().unwrap();
                let (generation, sealed) = value.value();
                (generation, sealed.to_vec())
            };
            table
                .insert(b.uuid().as_bytes(), (copied.0, copied.1.as_slice()))
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let proxy = spawn_proxy(&emulator, &embedded(dir.path()));
    all_served(&proxy, &[a, b]).await;
    let stats = emulator.stats();
    let grants = |m: MerchantId| {
        stats
            .token_calls
            .jwt_bearer
            .by_merchant
            .get(&m.to_string())
            .copied()
    };
    assert_eq!(grants(a), Some(1), "a's own record still served it");
    assert_eq!(grants(b), Some(2), "b was granted anew: {stats:?}");
    let metrics = proxy.metrics().await;
    assert!(
        !metrics.contains("poynt_proxy_store_records_refused_total 0"),
        "the copied record was not refused: {metrics}"
    );
    let status: Value = support::client()
        .get(format!("http://{}/admin/tokens/{b}", proxy.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["grant"], "jwt_bearer");
}

#[tokio::test]
async fn with_no_store_settings_the_default_is_an_embedded_file_beside_the_config_with_its_key() {
    use std::os::unix::fs::PermissionsExt as _;
    let m = support::merchant();
    let emulator = emulator(&[m], Duration::from_secs(3600)).await;
    let mut proxy = spawn_proxy(&emulator, "store: {}\n");
    all_served(&proxy, &[m]).await;
    let data = proxy.config.parent().unwrap().join("data");
    for (file, mode) in [("tokens.redb", 0o600), ("tokens.redb.key", 0o600)] {
        let meta = std::fs::metadata(data.join(file)).expect("created beside the config");
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
    }
    assert!(proxy.terminate().success());
    eventually(
        "the warning about the key beside the data",
        Duration::from_secs(5),
        || async {
            proxy
                .logs()
                .contains("created the store key beside the data")
        },
    )
    .await;
}
