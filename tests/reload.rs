//! Live reload through the real binary: a rotated app key signs the next grant after
//! SIGHUP with no failed request, a file that does not validate is refused whole, a change
//! that needs a restart changes nothing, and `POST /admin/reload` applies the allow-list and
//! the admin secret, and a `log.level` change under `RUST_LOG` is reported as not applied.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use support::process::{ProxyProcess, spawn_proxy};
use support::{Builder, HEADER, eventually};

/// Waits (at most 10 s) until the proxy's output holds every one of `texts`.
async fn logged(proxy: &ProxyProcess, what: &str, texts: &[&str]) {
    eventually(what, Duration::from_secs(10), || async {
        let logs = proxy.logs();
        texts.iter().all(|text| logs.contains(text))
    })
    .await;
}

/// `POST /admin/reload`.
async fn post_reload(proxy: &ProxyProcess) -> reqwest::Response {
    support::client()
        .post(format!("http://{}/admin/reload", proxy.admin))
        .send()
        .await
        .unwrap()
}

async fn reloads(proxy: &ProxyProcess, outcome: &str) -> f64 {
    proxy
        .metric(&format!(
            "poynt_proxy_config_reloads_total{{outcome=\"{outcome}\"}}"
        ))
        .await
}

#[tokio::test]
async fn a_rotated_app_key_signs_the_next_grant_after_sighup_and_no_request_fails() {
    let (warm, cold) = (support::merchant(), support::merchant());
    let emulator = Builder::default().emulator(&[warm, cold]).await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("app-key.pem");
    std::fs::copy(support::fixture("app-key-pkcs8.pem"), &key_file).unwrap();
    let proxy = spawn_proxy(
        &emulator,
        &format!(
            "poynt:\n  private_key_file: {:?}\n",
            key_file.display().to_string()
        ),
    );
    assert_eq!(proxy.get(warm).await, 200);

    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (stop, url) = (
            stop.clone(),
            format!("http://{}/businesses/{warm}/orders", proxy.proxy),
        );
        tokio::spawn(async move {
            let client = support::client();
            let mut statuses = Vec::new();
            while !stop.load(Ordering::Acquire) && statuses.len() < 5_000 {
                let response = client.get(&url).header(HEADER, warm.to_string()).send();
                statuses.push(response.await.map_or(0, |r| r.status().as_u16()));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            statuses
        })
    };
    // The key pair is reset in the developer portal: Poynt knows only the new public key.
    let (private_pem, public_pem) = poynt_emulator::generate_app_key().unwrap();
    std::fs::write(&key_file, private_pem).unwrap();
    emulator.set_app_public_key(&public_pem).unwrap();
    proxy.signal("HUP");
    eventually("the reload is applied", Duration::from_secs(10), || async {
        reloads(&proxy, "success").await == 1.0
    })
    .await;
    logged(
        &proxy,
        "the reload is logged, naming the key file",
        &["poynt.private_key_file"],
    )
    .await;
    assert_eq!(
        proxy.get(cold).await,
        200,
        "a grant after the reload is signed with the new key"
    );
    stop.store(true, Ordering::Release);
    let statuses = traffic.await.unwrap();
    assert!(!statuses.is_empty());
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let stats = emulator.stats();
    assert_eq!(stats.token_calls.jwt_bearer.refused, 0, "{stats:?}");
    assert_eq!(stats.token_calls.jwt_bearer.total, 2, "{stats:?}");
}

#[tokio::test]
async fn a_file_that_fails_validation_is_refused_whole_and_the_running_config_keeps_serving() {
    let m = support::merchant();
    let emulator = Builder::default().emulator(&[m]).await;
    let proxy = spawn_proxy(&emulator, "");
    assert_eq!(proxy.get(m).await, 200);
    let good = std::fs::read_to_string(&proxy.config).unwrap();
    std::fs::write(
        &proxy.config,
        format!("{good}tokens:\n  refresh_at: 5\nmerchant:\n  allow: []\n"),
    )
    .unwrap();
    proxy.signal("HUP");
    eventually("the reload is refused", Duration::from_secs(10), || async {
        reloads(&proxy, "invalid").await == 1.0
    })
    .await;
    logged(
        &proxy,
        "the refusal is logged",
        &["configuration reload refused"],
    )
    .await;
    assert_eq!(proxy.get(m).await, 200, "the old configuration serves");
    let response = post_reload(&proxy).await;
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "INVALID_CONFIG");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("merchant.allow: expected at least one"),
        "{body}"
    );
    assert_eq!(reloads(&proxy, "invalid").await, 2.0);
    assert_eq!(reloads(&proxy, "success").await, 0.0);
}

#[tokio::test]
async fn a_changed_listener_needs_a_restart_and_nothing_changes() {
    let m = support::merchant();
    let emulator = Builder::default().emulator(&[m]).await;
    let proxy = spawn_proxy(&emulator, "");
    let good = std::fs::read_to_string(&proxy.config).unwrap();
    // A new listener, and an allow-list that would refuse `m` were anything applied.
    // The first line is `listen`; `admin_listen` stays on port 0 (two listeners on port 1
    // would collide, which validation refuses before a restart is considered).
    let changed = good.replacen("listen: \"127.0.0.1:0\"", "listen: \"127.0.0.1:1\"", 1);
    let other = support::merchant();
    std::fs::write(
        &proxy.config,
        format!("{changed}merchant:\n  allow: [\"{other}\"]\n"),
    )
    .unwrap();
    proxy.signal("HUP");
    eventually("the reload is refused", Duration::from_secs(10), || async {
        reloads(&proxy, "restart_required").await == 1.0
    })
    .await;
    logged(
        &proxy,
        "the refusal is logged, naming the listener",
        &["a restart is needed", "listen"],
    )
    .await;
    assert_eq!(
        proxy.get(m).await,
        200,
        "the old listener and allow-list stay"
    );
}

#[tokio::test]
async fn post_admin_reload_applies_the_allow_list_and_the_admin_secret() {
    let (m, other) = (support::merchant(), support::merchant());
    let emulator = Builder::default().emulator(&[m, other]).await;
    let proxy = spawn_proxy(&emulator, "");
    assert_eq!(proxy.get(m).await, 200);
    let secret_file = proxy.config.with_file_name("admin.secret");
    std::fs::write(&secret_file, "reloaded-admin-secret-0123456789").unwrap();
    let good = std::fs::read_to_string(&proxy.config).unwrap();
    std::fs::write(
        &proxy.config,
        format!(
            "{good}merchant:\n  allow: [\"{other}\"]\nadmin:\n  bearer_token_file: {:?}\n",
            secret_file.display().to_string()
        ),
    )
    .unwrap();
    let reload = post_reload(&proxy).await;
    assert_eq!(reload.status(), 200);
    let applied: Value = reload.json().await.unwrap();
    let changed: Vec<&str> = applied["changed"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(changed, ["admin.bearer_token_file", "merchant.allow"]);
    assert_eq!(proxy.get(m).await, 403, "m is no longer allowed");
    assert_eq!(proxy.get(other).await, 200);
    let admin = |secret: Option<&str>| {
        let request = support::client().get(format!("http://{}/admin/tokens/{other}", proxy.admin));
        match secret {
            Some(secret) => request.bearer_auth(secret),
            None => request,
        }
        .send()
    };
    assert_eq!(admin(None).await.unwrap().status(), 401);
    assert_eq!(
        admin(Some("reloaded-admin-secret-0123456789"))
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn a_reloaded_log_level_under_rust_log_is_reported_as_not_applied() {
    let m = support::merchant();
    let emulator = Builder::default().emulator(&[m]).await;
    // spawn_proxy sets RUST_LOG=info, as the deploy artefacts once did.
    let proxy = spawn_proxy(&emulator, "");
    let good = std::fs::read_to_string(&proxy.config).unwrap();
    let debug = good.replace(
        "log:\n  format: json\n",
        "log:\n  format: json\n  level: debug\n",
    );
    assert_ne!(debug, good, "the test's config has a log section to change");
    std::fs::write(&proxy.config, debug).unwrap();
    let reload = post_reload(&proxy).await;
    assert_eq!(reload.status(), 200);
    let applied: Value = reload.json().await.unwrap();
    assert_eq!(applied["changed"], serde_json::json!([]), "{applied}");
    let not_applied = applied["not_applied"].as_array().unwrap();
    assert_eq!(not_applied.len(), 1, "{applied}");
    assert!(
        not_applied[0]
            .as_str()
            .unwrap()
            .starts_with("log.level: expected \"debug\" to take effect; found RUST_LOG set"),
        "{applied}"
    );
    logged(
        &proxy,
        "the reload's log line says the level did not take effect",
        &["some changes do not take effect", "RUST_LOG set"],
    )
    .await;
    assert!(
        !proxy.logs().contains("\"level\":\"DEBUG\""),
        "RUST_LOG=info still filters"
    );
}
