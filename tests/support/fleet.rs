//! A fleet's shared parts: one real `redis-server`, one emulator, and the configuration its
//! replicas share (one store key, a key prefix of its own). Replicas are real processes,
//! started talking to Redis and the emulator directly or through fault proxies.

use std::path::PathBuf;
use std::time::Duration;

use poynt_emulator::Emulator;
use poynt_wire::MerchantId;

use super::process::{BIN, ProxyProcess, spawn_proxy_config};
use super::redis::RedisServer;

/// A Redis, an emulator and what replicas share.
pub struct Fleet {
    /// The store every replica shares.
    pub redis: RedisServer,
    /// Poynt, for every replica.
    pub emulator: Emulator,
    /// The key prefix, fresh per fleet.
    prefix: String,
    /// The store key every replica holds.
    key_file: PathBuf,
    /// YAML the test adds to every replica's configuration.
    extra: String,
    dir: tempfile::TempDir,
}

impl Fleet {
    /// Starts Redis and an emulator that knows `merchants` and grants `ttl` tokens; `extra`
    /// is YAML added to every replica's configuration.
    pub async fn new(merchants: &[MerchantId], ttl: Duration, extra: &str) -> Self {
        let redis = RedisServer::start();
        let emulator = super::Builder::default()
            .token_ttl(ttl)
            .emulator(merchants)
            .await;
        let dir = tempfile::tempdir().unwrap();
        let key_file = keygen(dir.path(), "store.key");
        Self {
            redis,
            emulator,
            prefix: format!("fleet-{}", uuid::Uuid::new_v4().simple()),
            key_file,
            extra: extra.to_owned(),
            dir,
        }
    }

    /// The `store:` section for Redis at `redis_url`, and the test's own YAML.
    pub fn config(&self, redis_url: &str) -> String {
        format!(
            "store:\n  backend: redis\n  redis_url: {redis_url:?}\n  key_prefix: {:?}\n  key_file: {:?}\n{}",
            self.prefix,
            self.key_file.display().to_string(),
            self.extra
        )
    }

    /// The configuration of a misconfigured replica: Redis directly, another store key.
    pub fn config_with_another_key(&self) -> String {
        let other = keygen(self.dir.path(), "other.key");
        self.config(&self.redis.url()).replace(
            &format!("{:?}", self.key_file.display().to_string()),
            &format!("{:?}", other.display().to_string()),
        )
    }

    /// `merchant`'s record as Redis holds it (sealed).
    pub async fn record(&self, merchant: MerchantId) -> Option<Vec<u8>> {
        self.redis
            .get(&self.key(&format!("token:{merchant}")))
            .await
    }

    /// The full Redis key of `name` under the fleet's prefix and application.
    pub fn key(&self, name: &str) -> String {
        format!("{}:{}:{name}", self.prefix, super::APP_ID)
    }

    /// `n` replicas talking to Redis and the emulator directly.
    pub fn replicas(&self, n: usize) -> Vec<ProxyProcess> {
        self.replicas_via(n, &self.redis.url(), &self.emulator.base_url())
    }

    /// `n` replicas reaching Redis at `redis_url` and Poynt at `poynt_url` (fault proxies
    /// in front of them, say).
    pub fn replicas_via(&self, n: usize, redis_url: &str, poynt_url: &str) -> Vec<ProxyProcess> {
        let config = format!("log:\n  format: json\n{}", self.config(redis_url));
        (0..n)
            .map(|_| {
                spawn_proxy_config(
                    |dir| {
                        // Assertions are still addressed to the emulator's own URL.
                        let base = self.emulator.base_url();
                        super::proxy_yaml(&self.emulator, dir, &config)
                            .replace(&base, poynt_url)
                            .replacen("poynt:\n", &format!("poynt:\n  audience: {base:?}\n"), 1)
                    },
                    "info",
                )
            })
            .collect()
    }
}

/// Writes a fresh store key (`store keygen`) to `name` in `dir`.
fn keygen(dir: &std::path::Path, name: &str) -> PathBuf {
    let key = std::process::Command::new(BIN)
        .args(["store", "keygen"])
        .output()
        .unwrap();
    let path = dir.join(name);
    std::fs::write(&path, key.stdout).unwrap();
    path
}
