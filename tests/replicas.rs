//! Three real proxy processes sharing one real `redis-server` and one emulator: one grant per
//! merchant for the whole fleet, renewals by one replica at a time, a lock holder killed
//! mid-grant replaced within one lease, a Redis outage that no caller sees, convergence when
//! Redis returns, and a fleet restart that makes no grant.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use poynt_proxy::emulator::Fault;
use poynt_proxy::merchant::MerchantId;
use support::fleet::Fleet;
use support::process::ProxyProcess;
use support::{HEADER, eventually};

/// A proxied GET's status and the SHA-256 of the token it carried (from the emulator's echo).
async fn call(proxy: &ProxyProcess, merchant: MerchantId) -> (u16, Option<String>) {
    let (status, echo) = proxy.answer(merchant).await;
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
async fn a_replica_killed_holding_the_lock_mid_grant_is_replaced_within_one_lease() {
    let m = support::merchant();
    // The default token_timeout (10 s): a lock that lived as long as a grant may last would
    // keep the waiter 25 s (2 x token_timeout + 5 s); a lease ends 3 s after its holder dies.
    let fleet = Fleet::new(&[m], Duration::from_secs(3600), "").await;
    let mut replicas = fleet.replicas(2);
    // The holder's grant outlasts the moments needed to see it start and kill it.
    fleet.emulator.set_fault(Fault {
        token_delay_ms: Some(5_000),
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
    // One lease (3 s) and one 2 s grant fit well within this; the old lock's 25 s do not.
    let patient = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(12))
        .build()
        .unwrap();
    let waiter = patient
        .get(format!(
            "http://{}/businesses/{m}/orders",
            replicas[1].proxy
        ))
        .header(HEADER, m.to_string())
        .send();
    let kill_holder = async {
        eventually(
            "the second replica finds the lock taken",
            Duration::from_secs(10),
            || async {
                replicas[1]
                    .metric("poynt_proxy_store_operations_total{op=\"lock\",outcome=\"busy\"}")
                    .await
                    >= 1.0
            },
        )
        .await;
        replicas[0].signal("KILL");
        fleet.emulator.set_fault(Fault {
            token_delay_ms: Some(2_000),
            ..Fault::default()
        });
    };
    let (answer, ()) = tokio::join!(waiter, kill_holder);
    let answer = answer.expect("the waiting replica answers within one lease and one grant");
    assert_eq!(answer.status(), 200);
    let waits = async |outcome: &str| {
        replicas[1]
            .metric(&format!(
                "poynt_proxy_store_lock_waits_total{{outcome=\"{outcome}\"}}"
            ))
            .await
    };
    assert_eq!(
        waits("acquired").await,
        1.0,
        "it took the dead holder's lock"
    );
    assert_eq!(waits("timed_out").await, 0.0, "{}", replicas[1].logs());
    assert_eq!(waits("adopted").await, 0.0);
    let stats = fleet.emulator.stats();
    assert_eq!(
        stats.token_calls_total, 2,
        "the holder's and the waiter's: {stats:?}"
    );
    assert_eq!(stats.refresh_token_reuse, 0, "{stats:?}");
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
