//! Three real proxy processes sharing one real `redis-server` and one emulator: one grant per
//! merchant for the whole fleet, renewals by one replica at a time, a lock holder killed
//! mid-grant replaced within one lease, a Redis outage that no caller sees, convergence when
//! Redis returns, an empty Redis refilled from the replicas, a wrong-key replica started
//! during a pause that destroys nothing, evictions that hold, and a fleet restart that makes
//! no grant.
#![allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "real proxy processes and a real redis-server run on the wall clock, which these periods measure"
)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use poynt_emulator::Fault;
use poynt_wire::MerchantId;
use serde_json::Value;
use support::fleet::Fleet;
use support::process::{ProxyProcess, spawn_proxy};
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
    // Every request waits on the one grant at once: the default cap of 64 in flight per
    // merchant would hold 36 of each replica's 100 back, and answer them 429 should the
    // grant and the first 64 take longer than the cap's 1 s wait (a loaded CI machine).
    let fleet = Fleet::new(
        &[m],
        Duration::from_secs(3600),
        "limits:\n  max_in_flight: 300\n",
    )
    .await;
    let replicas = fleet.replicas(3);
    fleet.emulator.set_fault(Fault {
        token_delay_ms: Some(300),
        ..Fault::default()
    });
    let calls = (0..300).map(|i| call(&replicas[i % 3], m));
    let results = join_all(calls).await;
    let mut statuses = BTreeMap::new();
    for (status, _) in &results {
        *statuses.entry(*status).or_insert(0) += 1;
    }
    assert_eq!(
        statuses,
        BTreeMap::from([(200, 300)]),
        "expected 300 answers of 200; found these statuses (status: count)"
    );
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

/// `DELETE /admin/tokens/{merchant}` on `replica`: the status and the JSON body.
async fn evict(replica: &ProxyProcess, merchant: MerchantId) -> (u16, Value) {
    let response = support::client()
        .delete(format!("http://{}/admin/tokens/{merchant}", replica.admin))
        .send()
        .await
        .expect("admin answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `GET /readyz` on `replica`: the status.
async fn readyz(replica: &ProxyProcess) -> u16 {
    support::client()
        .get(format!("http://{}/readyz", replica.admin))
        .send()
        .await
        .expect("admin answers")
        .status()
        .as_u16()
}

#[tokio::test]
async fn an_empty_redis_restarted_under_two_replicas_gets_every_record_back_from_them() {
    let merchants: Vec<MerchantId> = (0..6).map(|_| support::merchant()).collect();
    let (before, during) = merchants.split_at(5);
    let mut fleet = Fleet::new(&merchants, Duration::from_secs(3600), "").await;
    let replicas = fleet.replicas(2);
    for offset in 0..2 {
        round(&replicas, before, offset).await;
    }
    // Held by the replicas as a refresh token only: its access token is evicted everywhere.
    let evicted = before[4];
    assert_eq!(evict(&replicas[0], evicted).await.0, 200);
    let refreshes = fleet.emulator.stats().token_calls.refresh_token.total;
    fleet.redis.stop();
    assert_eq!(
        call(&replicas[0], during[0]).await.0,
        200,
        "a merchant granted during the outage"
    );
    let granted = fleet.emulator.stats().token_calls_total;
    fleet.redis.restart();
    // Cache hits only: every merchant is cached where it is called.
    round(&replicas, &before[..4], 0).await;
    round(&replicas[..1], during, 0).await;
    eventually(
        "every merchant's record back in the empty Redis, and both replicas' gauges at 1",
        Duration::from_secs(10),
        || async {
            for m in &merchants {
                if fleet.record(*m).await.is_none() {
                    return false;
                }
            }
            for replica in &replicas {
                if replica.metric("poynt_proxy_store_reachable").await != 1.0 {
                    return false;
                }
            }
            true
        },
    )
    .await;
    assert_eq!(fleet.emulator.stats().token_calls_total, granted);
    let restarted = fleet.replicas(1);
    round(&restarted, &merchants, 0).await;
    let stats = fleet.emulator.stats();
    assert_eq!(
        stats.token_calls_total,
        granted + 1,
        "a new replica is served from the records written back, and renews the evicted \
         merchant once: {stats:?}"
    );
    assert_eq!(
        stats.token_calls.refresh_token.total,
        refreshes + 1,
        "with the refresh token written back from memory: {stats:?}"
    );
    assert_eq!(stats.refresh_token_reuse, 0, "{stats:?}");
}

#[tokio::test]
async fn a_wrong_key_replica_started_during_a_redis_pause_leaves_the_records_intact() {
    let m = support::merchant();
    let fleet = Fleet::new(&[m], Duration::from_secs(3600), "").await;
    let mut first = fleet.replicas(1).pop().unwrap();
    assert_eq!(call(&first, m).await.0, 200);
    let stored = fleet
        .record(m)
        .await
        .expect("the first replica stored M's record");
    fleet.redis.pause_clients(3000);
    let wrong = spawn_proxy(&fleet.emulator, &fleet.config_with_another_key());
    assert_eq!(call(&wrong, m).await.0, 200, "served during the pause");
    // Waits out the pause: the GET answers once it ends.
    assert_eq!(fleet.record(m).await.as_ref(), Some(&stored));
    // The cached token dropped, the wrong-key replica must grant again with Redis answering.
    assert_eq!(
        evict(&wrong, m).await.0,
        200,
        "nothing to clear that it can open"
    );
    assert_eq!(
        call(&wrong, m).await.0,
        200,
        "served by a grant it does not save"
    );
    assert_eq!(
        fleet.record(m).await.as_ref(),
        Some(&stored),
        "the first replica's record is byte for byte intact"
    );
    eventually(
        "the wrong-key replica reports not ready",
        Duration::from_secs(10),
        || async { readyz(&wrong).await == 503 },
    )
    .await;
    assert!(
        wrong
            .metric("poynt_proxy_store_operations_total{op=\"save\",outcome=\"withheld\"}")
            .await
            >= 1.0
    );
    assert_eq!(fleet.record(m).await.as_ref(), Some(&stored));
    assert!(first.terminate().success());
    let granted = fleet.emulator.stats().token_calls_total;
    let restarted = fleet.replicas(1);
    assert_eq!(call(&restarted[0], m).await.0, 200);
    let stats = fleet.emulator.stats();
    assert_eq!(
        stats.token_calls_total, granted,
        "a right-key replica restarted uses M's stored record: {stats:?}"
    );
}

#[tokio::test]
async fn admin_writes_the_store_cannot_take_answer_503_and_an_eviction_that_answered_200_holds() {
    let m = support::merchant();
    let fleet = Fleet::new(&[m], Duration::from_secs(3600), "").await;
    let replicas = fleet.replicas(2);
    let (_, evicted) = call(&replicas[0], m).await;
    assert!(evicted.is_some());
    assert_eq!(
        call(&replicas[1], m).await.1,
        evicted,
        "one token fleet-wide"
    );
    fleet.redis.pause_clients(4000);
    let (status, body) = evict(&replicas[0], m).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "STORE_UNAVAILABLE", "{body}");
    assert_eq!(body["httpStatus"], 503, "{body}");
    eventually(
        "the store takes the eviction once the pause ends",
        Duration::from_secs(15),
        || async { evict(&replicas[0], m).await.0 == 200 },
    )
    .await;
    for replica in &replicas {
        eventually(
            "the replica stops using the evicted token",
            Duration::from_secs(10),
            || async { call(replica, m).await.1 != evicted },
        )
        .await;
    }
    for _ in 0..4 {
        for replica in &replicas {
            let (status, token) = call(replica, m).await;
            assert_eq!(status, 200);
            assert_ne!(
                token, evicted,
                "an eviction that answered 200 is never undone"
            );
        }
    }

    // The other admin writes, with Redis frozen (SIGSTOP): 503 too.
    fleet.redis.freeze();
    let admin = |method: reqwest::Method, path: String| {
        let url = format!("http://{}{path}", replicas[1].admin);
        async move {
            let response = support::client()
                .request(method, url)
                .send()
                .await
                .expect("admin answers");
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (status, body["code"].as_str().map(str::to_owned))
        }
    };
    let unavailable = (503, Some("STORE_UNAVAILABLE".to_owned()));
    assert_eq!(
        admin(reqwest::Method::POST, format!("/admin/tokens/{m}/refresh")).await,
        unavailable,
        "a renewal the store did not take"
    );
    assert_eq!(
        admin(reqwest::Method::DELETE, format!("/admin/merchants/{m}")).await,
        unavailable,
        "a forget the store did not take"
    );
    fleet.redis.thaw();
}
