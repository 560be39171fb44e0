//! Three real proxy processes sharing one real `redis-server` and one emulator: one grant per
//! merchant for the whole fleet, renewals by one replica at a time, a lock holder killed
//! mid-grant replaced, a Redis outage that no caller sees, convergence when Redis returns,
//! and a fleet restart that makes no grant.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use poynt_proxy::emulator::{Emulator, Fault};
use poynt_proxy::merchant::MerchantId;
use serde_json::Value;
use support::process::{ProxyProcess, spawn_proxy};
use support::redis::RedisServer;
use support::{Builder, HEADER, eventually};

/// A Redis, an emulator and the configuration replicas share.
struct Fleet {
    redis: RedisServer,
    emulator: Emulator,
    config: String,
    _dir: tempfile::TempDir,
}

impl Fleet {
    async fn new(merchants: &[MerchantId], ttl: Duration, extra: &str) -> Self {
        let redis = RedisServer::start();
        let emulator = Builder::default().token_ttl(ttl).emulator(merchants).await;
        let dir = tempfile::tempdir().unwrap();
        let key = std::process::Command::new(support::process::BIN)
            .args(["store", "keygen"])
            .output()
            .unwrap();
        let key_file = dir.path().join("store.key");
        std::fs::write(&key_file, key.stdout).unwrap();
        let config = format!(
            "store:\n  backend: redis\n  redis_url: {:?}\n  key_prefix: \"fleet-{}\"\n  key_file: {:?}\n{extra}",
            redis.url(),
            uuid::Uuid::new_v4().simple(),
            key_file.display().to_string()
        );
        Self {
            redis,
            emulator,
            config,
            _dir: dir,
        }
    }

    fn replicas(&self, n: usize) -> Vec<ProxyProcess> {
        (0..n)
            .map(|_| spawn_proxy(&self.emulator, &self.config))
            .collect()
    }
}

/// A proxied GET's status and the SHA-256 of the token it carried (from the emulator's echo).
async fn call(proxy: &ProxyProcess, merchant: MerchantId) -> (u16, Option<String>) {
    let response = support::client()
        .get(format!(
            "http://{}/businesses/{merchant}/orders",
            proxy.proxy
        ))
        .header(HEADER, merchant.to_string())
        .send()
        .await
        .expect("proxy answers");
    let status = response.status().as_u16();
    let echo: Value = response.json().await.unwrap_or(Value::Null);
    (
        status,
        echo["authorization_sha256"].as_str().map(str::to_owned),
    )
}

/// One request per merchant, spread over the replicas starting at `offset`; all must be 200.
async fn round(replicas: &[ProxyProcess], merchants: &[MerchantId], offset: usize) {
    let calls = merchants
        .iter()
        .enumerate()
        .map(|(i, m)| call(&replicas[(i + offset) % replicas.len()], *m));
    for (status, _) in join_all(calls).await {
        assert_eq!(status, 200);
    }
}

#[tokio::test]
async fn three_hundred_requests_over_three_replicas_for_a_cold_merchant_make_one_grant() {
    let m = support::merchant();
    let fleet = Fleet::new(&[m], Duration::from_secs(3600), "").await;
    let replicas = fleet.replicas(3);
    fleet.emulator.set_fault(Fault {
        token_delay_ms: Some(300),
        ..Fault::default()
    });
    let calls = (0..300).map(|i| call(&replicas[i % 3], m));
    let results = join_all(calls).await;
    assert!(results.iter().all(|(status, _)| *status == 200));
    let tokens: BTreeSet<_> = results.into_iter().filter_map(|(_, token)| token).collect();
    assert_eq!(tokens.len(), 1, "every replica used the one token");
    let stats = fleet.emulator.stats();
    assert_eq!(stats.token_calls_total, 1, "{stats:?}");
}

#[tokio::test]
async fn fifty_merchants_under_steady_traffic_on_three_replicas_make_one_grant_per_renewal() {
    let merchants: Vec<MerchantId> = (0..50).map(|_| support::merchant()).collect();
    // Poynt's `exp` is whole seconds and the proxy believes the earlier of it and
    // `expiresIn`, so a 5 s token really lasts 4-5 s and, renewed at 80 %, is replaced
    // every 3.2-4 s. 12.5 s of traffic holds at most three renewals per merchant: one grant
    // more by any replica shows.
    let ttl = Duration::from_secs(5);
    let fleet = Fleet::new(
        &merchants,
        ttl,
        "tokens:\n  refresh_at: 0.8\n  refresh_jitter: 0\n",
    )
    .await;
    let replicas = fleet.replicas(3);
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    let mut rounds = 0;
    while started.elapsed() < Duration::from_millis(12_500) && rounds < 100 {
        ticker.tick().await;
        round(&replicas, &merchants, rounds).await;
        rounds += 1;
    }
    let stats = fleet.emulator.stats();
    assert!(stats.token_calls_total <= 50 * 4, "{stats:?}");
    for m in &merchants {
        let grants = [
            &stats.token_calls.jwt_bearer,
            &stats.token_calls.refresh_token,
        ]
        .iter()
        .filter_map(|g| g.by_merchant.get(&m.to_string()))
        .sum::<u64>();
        assert!(grants <= 4, "{m} was granted {grants} times: {stats:?}");
    }
    assert!(
        stats.token_calls.refresh_token.total >= 50,
        "renewals used refresh tokens: {stats:?}"
    );
    assert_eq!(stats.refresh_token_reuse, 0, "{stats:?}");
    assert_eq!(stats.token_calls.refresh_token.refused, 0, "{stats:?}");
}

#[tokio::test]
async fn a_replica_killed_holding_the_lock_mid_grant_is_replaced_within_the_lock_lifetime() {
    let m = support::merchant();
    let token_timeout = Duration::from_secs(2);
    let fleet = Fleet::new(
        &[m],
        Duration::from_secs(3600),
        "poynt:\n  token_timeout: 2s\n",
    )
    .await;
    let mut replicas = fleet.replicas(2);
    fleet.emulator.set_fault(Fault {
        token_delay_ms: Some(10_000),
        ..Fault::default()
    });
    let holder_call = tokio::spawn({
        let url = format!("http://{}/businesses/{m}/orders", replicas[0].proxy);
        async move {
            support::client()
                .get(url)
                .header(HEADER, m.to_string())
                .send()
                .await
        }
    });
    eventually(
        "the first replica's grant reaches /token",
        Duration::from_secs(10),
        || async { fleet.emulator.stats().token_calls_total == 1 },
    )
    .await;
    let waiter = call(&replicas[1], m);
    let kill_holder = async {
        eventually(
            "the second replica waits on the lock",
            Duration::from_secs(10),
            || async {
                let metrics = support::client()
                    .get(format!("http://{}/metrics", replicas[1].admin))
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                metrics.lines().any(|l| {
                    l.starts_with(
                        "poynt_proxy_store_operations_total{op=\"lock\",outcome=\"busy\"}",
                    )
                })
            },
        )
        .await;
        replicas[0].signal("KILL");
        fleet.emulator.set_fault(Fault::default());
        Instant::now()
    };
    let ((status, token), killed_at) = tokio::join!(waiter, kill_holder);
    assert_eq!(status, 200);
    assert!(token.is_some());
    let lock_ttl = token_timeout * 2 + Duration::from_secs(5);
    assert!(
        killed_at.elapsed() <= token_timeout + lock_ttl,
        "the waiting replica took {:?}",
        killed_at.elapsed()
    );
    assert!(
        holder_call.await.unwrap().is_err(),
        "the holder died mid-grant"
    );
    assert!(replicas[0].exit_within(Duration::from_secs(5)).is_some());
}

#[tokio::test]
async fn a_redis_outage_fails_no_request_and_the_replicas_converge_when_it_returns() {
    let merchants: Vec<MerchantId> = (0..10).map(|_| support::merchant()).collect();
    let ttl = Duration::from_secs(4);
    let mut fleet = Fleet::new(&merchants, ttl, "").await;
    let replicas = fleet.replicas(3);
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    let mut rounds = 0;
    let mut traffic_for = async |period: Duration, rounds: &mut usize| {
        let until = Instant::now() + period;
        while Instant::now() < until {
            ticker.tick().await;
            round(&replicas, &merchants, *rounds).await;
            *rounds += 1;
        }
    };
    traffic_for(Duration::from_secs(2), &mut rounds).await;
    fleet.redis.stop();
    // Long enough for every token to pass its refresh point with Redis away.
    traffic_for(ttl + Duration::from_secs(1), &mut rounds).await;
    fleet.redis.restart();
    traffic_for(Duration::from_secs(1), &mut rounds).await;
    eventually(
        "every replica uses the same token for each merchant",
        Duration::from_secs(10),
        || async {
            for m in &merchants {
                let tokens: BTreeSet<_> = join_all(replicas.iter().map(|r| call(r, *m)))
                    .await
                    .into_iter()
                    .map(|(status, token)| {
                        assert_eq!(status, 200);
                        token
                    })
                    .collect();
                if tokens.len() != 1 {
                    return false;
                }
            }
            true
        },
    )
    .await;
    let stats = fleet.emulator.stats();
    assert_eq!(stats.refresh_token_reuse, 0, "{stats:?}");
}

#[tokio::test]
async fn restarting_the_whole_fleet_makes_no_grant() {
    let merchants: Vec<MerchantId> = (0..5).map(|_| support::merchant()).collect();
    let fleet = Fleet::new(&merchants, Duration::from_secs(3600), "").await;
    let mut replicas = fleet.replicas(3);
    round(&replicas, &merchants, 0).await;
    let granted = fleet.emulator.stats().token_calls_total;
    assert_eq!(granted, 5);
    for replica in &mut replicas {
        assert!(replica.terminate().success());
    }
    let restarted = fleet.replicas(3);
    for offset in 0..3 {
        round(&restarted, &merchants, offset).await;
    }
    assert_eq!(fleet.emulator.stats().token_calls_total, granted);
}
