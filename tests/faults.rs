//! Bad days on the network, through the TCP fault proxy (`support::fault`): real replicas
//! (processes) on a real `redis-server` and the emulator, with the path to Redis or to
//! Poynt black-holed, slowed, reset or half-open. Each test asserts what
//! docs/OPERATIONS.md promises: callers fail only in the documented ways, no refresh token
//! is presented twice, and the replicas say truthfully whether the store answers.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::join_all;
use poynt_wire::MerchantId;
use support::eventually;
use support::fault::{Direction, FaultProxy, Mode};
use support::fleet::Fleet;
use support::process::ProxyProcess;

/// One request per merchant, spread over the replicas starting at `offset`: each answer's
/// status and error code (`None` for a 200).
async fn round(
    replicas: &[ProxyProcess],
    merchants: &[MerchantId],
    offset: usize,
) -> Vec<(u16, Option<String>)> {
    let calls = merchants
        .iter()
        .enumerate()
        .map(|(i, m)| replicas[(i + offset) % replicas.len()].answer(*m));
    join_all(calls)
        .await
        .into_iter()
        .map(|(status, body)| {
            let code = (status != 200).then(|| body["code"].as_str().unwrap_or("").to_owned());
            (status, code)
        })
        .collect()
}

/// Asserts every answer was a 200.
fn all_ok(answers: &[(u16, Option<String>)]) {
    assert!(
        answers.iter().all(|(status, _)| *status == 200),
        "{answers:?}"
    );
}

#[tokio::test]
async fn a_black_holed_redis_costs_warm_callers_nothing_and_the_replicas_say_so() {
    let warm: Vec<MerchantId> = (0..5).map(|_| support::merchant()).collect();
    let cold = [support::merchant(), support::merchant()];
    let known: Vec<MerchantId> = warm.iter().chain(&cold).copied().collect();
    let fleet = Fleet::new(&known, Duration::from_secs(3600), "").await;
    let link = FaultProxy::start(([127, 0, 0, 1], fleet.redis.port()).into());
    let replicas = fleet.replicas_via(
        2,
        &format!("redis://{}/0", link.addr()),
        &fleet.emulator.base_url(),
    );
    // Both replicas cache every warm merchant's token (the second from the store).
    for offset in 0..2 {
        all_ok(&round(&replicas, &warm, offset).await);
    }
    let granted = fleet.emulator.stats().token_calls_total;
    assert_eq!(granted, 5);

    link.set(Mode::BlackHole);
    for offset in 0..4 {
        all_ok(&round(&replicas, &warm, offset).await);
    }
    // A merchant the replica has never served needs the store: its read gets no answer
    // within store.timeout, the replica grants locally and says the store is away.
    assert_eq!(replicas[0].get(cold[0]).await, 200);
    assert_eq!(replicas[0].metric("poynt_proxy_store_reachable").await, 0.0);
    let ready = support::client()
        .get(format!("http://{}/readyz", replicas[0].admin))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ready.status(),
        200,
        "the replica still serves: readiness does not follow the store"
    );
    all_ok(&round(&replicas, &warm, 0).await);

    link.set(Mode::Pass);
    // With no caller traffic the probe finds Redis again, and the replica writes back the
    // merchant it granted locally.
    eventually(
        "both replicas say the store answers again, and the local grant is stored",
        Duration::from_secs(10),
        || async {
            for replica in &replicas {
                if replica.metric("poynt_proxy_store_reachable").await != 1.0 {
                    return false;
                }
            }
            fleet.record(cold[0]).await.is_some()
        },
    )
    .await;
    assert_eq!(replicas[0].get(cold[1]).await, 200);
    for offset in 0..2 {
        all_ok(&round(&replicas, &warm, offset).await);
    }
    let stats = fleet.emulator.stats();
    assert_eq!(
        stats.token_calls_total,
        granted + 2,
        "one grant per cold merchant, none for the warm: {stats:?}"
    );
    assert_eq!(stats.refresh_token_reuse, 0, "{stats:?}");
    let warned = replicas[0]
        .logs()
        .matches("token store unreachable")
        .count();
    assert_eq!(warned, 1, "one warning per outage: {}", replicas[0].logs());
}

#[tokio::test]
async fn faults_on_the_way_to_poynt_fail_callers_only_as_documented_and_reuse_no_refresh_token() {
    let merchants: Vec<MerchantId> = (0..8).map(|_| support::merchant()).collect();
    // 4 s tokens renewed at half their life: every fault window below sees renewals, most of
    // them refresh-token grants.
    let fleet = Fleet::new(
        &merchants,
        Duration::from_secs(4),
        "poynt:\n  token_timeout: 1s\n  response_timeout: 2s\n  connect_timeout: 1s\ntokens:\n  refresh_at: 0.5\n  refresh_jitter: 0\n  backoff_initial: 200ms\n  backoff_max: 1s\n",
    )
    .await;
    let poynt = FaultProxy::start(fleet.emulator.addr());
    let replicas = fleet.replicas_via(2, &fleet.redis.url(), &format!("http://{}", poynt.addr()));
    let phases = [
        (Mode::Pass, 2),
        (Mode::Latency(Duration::from_millis(300)), 3),
        (Mode::Reset, 1),
        (Mode::Pass, 2),
        (Mode::HalfOpen(Direction::FromTarget), 2),
        (Mode::Pass, 2),
        (Mode::HalfOpen(Direction::ToTarget), 2),
        (Mode::Pass, 2),
        (Mode::BlackHole, 2),
        (Mode::Pass, 2),
    ];
    let mut seen: BTreeMap<(u16, Option<String>), usize> = BTreeMap::new();
    let mut rounds = 0;
    for (mode, seconds) in phases {
        poynt.set(mode);
        let until = tokio::time::Instant::now() + Duration::from_secs(seconds);
        let mut ticker = tokio::time::interval(Duration::from_millis(200));
        for _ in 0..seconds * 5 {
            ticker.tick().await;
            if tokio::time::Instant::now() >= until {
                break;
            }
            for answer in round(&replicas, &merchants, rounds).await {
                *seen.entry(answer).or_default() += 1;
            }
            rounds += 1;
        }
    }
    // docs/OPERATIONS.md, "Failure modes": a grant that fails is 503 TOKEN_UNAVAILABLE for
    // a caller waiting on it; Poynt slow or down is 504 UPSTREAM_TIMEOUT / 502
    // UPSTREAM_UNAVAILABLE.
    let documented = [
        (200, None),
        (503, Some("TOKEN_UNAVAILABLE".to_owned())),
        (504, Some("UPSTREAM_TIMEOUT".to_owned())),
        (502, Some("UPSTREAM_UNAVAILABLE".to_owned())),
    ];
    let undocumented: Vec<_> = seen
        .iter()
        .filter(|(answer, _)| !documented.contains(answer))
        .collect();
    assert!(undocumented.is_empty(), "{undocumented:?} of {seen:?}");
    assert!(
        seen.keys().any(|(status, _)| *status != 200),
        "the faults reached callers at all: {seen:?}"
    );
    eventually(
        "every merchant is served again on every replica",
        Duration::from_secs(15),
        || async {
            let mut ok = true;
            for offset in 0..2 {
                ok &= round(&replicas, &merchants, offset)
                    .await
                    .iter()
                    .all(|(status, _)| *status == 200);
            }
            ok
        },
    )
    .await;
    let stats = fleet.emulator.stats();
    assert!(
        stats.token_calls.refresh_token.total >= 8,
        "renewals presented refresh tokens: {stats:?}"
    );
    assert_eq!(stats.refresh_token_reuse, 0, "{stats:?}");
}
