//! Shared set-up for the benchmarks: a broker whose cache is filled before measuring, so
//! lookups are measured without any I/O — through `adopt` on the memory store, or through
//! `restore` from an embedded store file as after a restart.
#![allow(dead_code)] // each bench uses a different subset of the set-up

use std::path::Path;
use std::time::SystemTime;

use poynt_proxy::config::{Config, KeySources};
use poynt_proxy::metrics::Metrics;
use poynt_proxy::store::Store;
use poynt_proxy::token::assertion::AssertionSigner;
use poynt_proxy::token::broker::Broker;
use poynt_proxy::token::grant::{IssuedToken, TokenClient, parse_token_response};
use poynt_proxy::upstream;
use poynt_wire::{GrantKind, MerchantId};

/// The binary's allocator (src/main.rs), so the figures are those of the shipped proxy.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A config whose /token endpoint is never reached (the benchmarks only hit the cache).
pub fn config() -> Config {
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/app-key-pkcs8.pem"
    );
    let yaml = format!(
        "poynt:\n  api_url: \"http://127.0.0.1:9\"\n  application_id: \"urn:aid:bench\"\n  private_key_file: {key:?}\nstore:\n  backend: memory\n"
    );
    Config::parse(&yaml, &KeySources::default()).expect("bench config")
}

/// The app's assertion signer.
pub fn signer(config: &Config) -> AssertionSigner {
    AssertionSigner::new(
        config.poynt.application_id.clone(),
        config.poynt.audience.clone(),
        config.poynt.private_key.clone(),
    )
}

/// An access token of realistic size (about 900 bytes, like Poynt's and the emulator's
/// RS256 JWTs) that is not a JWT, so `expiresIn` alone sets its lifetime.
pub fn access_token(seed: usize) -> String {
    let filler: String = std::iter::repeat_n("eyJhbGciOiJSUzI1NiJ9", 45).collect();
    format!("{seed:08x}{filler}")
}

/// A refresh token shaped like Poynt's.
pub fn refresh_token(seed: usize) -> String {
    format!("1:1:1:2:{seed:08x}abcdefghijklmnopqrstuvwxyz0123456789")
}

/// A `/token` answer granting a day-long token.
pub fn token_body(seed: usize) -> Vec<u8> {
    format!(
        "{{\"expiresIn\":86400,\"accessToken\":\"{}\",\"refreshToken\":\"{}\",\"scope\":\"ALL\",\"tokenType\":\"BEARER\"}}",
        access_token(seed),
        refresh_token(seed)
    )
    .into_bytes()
}

/// `n` merchant IDs.
pub fn merchants(n: usize) -> Vec<MerchantId> {
    (0..n)
        .map(|i| MerchantId::parse(&format!("{:08x}-0000-4000-8000-{:012x}", i, i)).expect("uuid"))
        .collect()
}

/// A broker holding a day-long token for each of `merchants`, kept in the memory store.
pub async fn filled_broker(config: &Config, merchants: &[MerchantId]) -> Broker {
    let broker = broker(
        config,
        Store::open(
            &config.store,
            "urn:aid:bench",
            &Metrics::new().expect("metrics"),
        )
        .await
        .expect("memory store"),
    )
    .await;
    for (i, merchant) in merchants.iter().enumerate() {
        broker
            .adopt(*merchant, issued(i), GrantKind::JwtBearer)
            .await;
    }
    broker
}

/// An embedded store file in `dir` holding a day-long token for each of `merchants`.
pub async fn stored(dir: &Path, merchants: &[MerchantId]) -> Config {
    let config = embedded_config(dir);
    let broker = broker(&config, open(&config).await).await;
    for (i, merchant) in merchants.iter().enumerate() {
        broker
            .adopt(*merchant, issued(i), GrantKind::JwtBearer)
            .await;
    }
    config
}

/// A broker over the embedded store `config` names, its tokens restored from the file.
pub async fn restored_broker(config: &Config) -> Broker {
    let broker = broker(config, open(config).await).await;
    broker.restore().await.expect("records restore");
    broker
}

/// A configuration naming the embedded store in `dir`.
pub fn embedded_config(dir: &Path) -> Config {
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/app-key-pkcs8.pem"
    );
    let yaml = format!(
        "poynt:\n  api_url: \"http://127.0.0.1:9\"\n  application_id: \"urn:aid:bench\"\n  private_key_file: {key:?}\nstore:\n  backend: embedded\n  path: {:?}\n",
        dir.join("tokens.redb").display().to_string()
    );
    Config::parse(&yaml, &KeySources::default()).expect("bench config")
}

async fn open(config: &Config) -> Store {
    Store::open(
        &config.store,
        "urn:aid:bench",
        &Metrics::new().expect("metrics"),
    )
    .await
    .expect("embedded store opens")
}

async fn broker(config: &Config, store: Store) -> Broker {
    let metrics = Metrics::new().expect("metrics");
    let http = upstream::client(&[], config.poynt.connect_timeout).expect("client");
    let client = TokenClient::new(
        http,
        config.poynt.token_url.clone(),
        config.poynt.api_version.clone(),
        signer(config),
        config.poynt.token_timeout,
        1,
        metrics.clone(),
    );
    Broker::new(
        client,
        config.tokens.clone(),
        metrics,
        tokio::runtime::Handle::current(),
        store,
    )
}

fn issued(seed: usize) -> IssuedToken {
    parse_token_response(
        &token_body(seed),
        tokio::time::Instant::now(),
        SystemTime::now(),
    )
    .expect("token body parses")
}
