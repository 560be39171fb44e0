//! `poynt-proxy store`: make a store key, or list what the token store holds.

use poynt_proxy::config::{Config, StoreBackend};
use poynt_proxy::metrics::Metrics;
use poynt_proxy::store::{Store, keys};
use secrecy::ExposeSecret as _;

/// Prints a new store key (the base64 of 32 random bytes).
pub fn keygen() {
    println!("{}", keys::generate().expose_secret());
}

/// Prints the stored merchants, one line each, sorted by ID; never a token.
pub async fn list_store(config: &Config) -> anyhow::Result<()> {
    if config.store.backend == StoreBackend::Embedded && !config.store.path.exists() {
        eprintln!(
            "nothing stored: {} does not exist yet",
            config.store.path.display()
        );
        return Ok(());
    }
    let metrics = Metrics::new()?;
    let store = Store::open(&config.store, &config.poynt.application_id, &metrics).await?;
    let mut records = store.load_all().await?;
    records.sort_by_key(|(merchant, _)| *merchant);
    println!(
        "{:<36}  {:<20}  {:<18}  {:<13}  {:<20}  generation",
        "merchant", "expires_at", "grant", "refresh_token", "onboarded_at"
    );
    for (merchant, record) in &records {
        let onboarded = record.onboarded_at.map_or_else(
            || "-".to_owned(),
            |t| humantime::format_rfc3339_seconds(t).to_string(),
        );
        println!(
            "{merchant:<36}  {:<20}  {:<18}  {:<13}  {onboarded:<20}  {}",
            humantime::format_rfc3339_seconds(record.expires_at).to_string(),
            record.grant.as_str(),
            if record.refresh_token.is_some() {
                "yes"
            } else {
                "no"
            },
            record.generation
        );
    }
    eprintln!("{} merchants ({})", records.len(), describe_store(config));
    let refused = store.refused_by_key();
    if !refused.is_empty() {
        let total: usize = refused.values().sum();
        let by_key = refused
            .iter()
            .map(|(key, count)| match key.as_str() {
                "none" => format!("{count} not sealed values"),
                key => format!("{count} sealed with key {key}"),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let records = if total == 1 { "record" } else { "records" };
        eprintln!(
            "{total} {records} could not be opened with the configured keys ({by_key}); they are kept as they are: list the key they were sealed with in store.previous_key_files to read them"
        );
    }
    Ok(())
}

/// One line naming the store `check` found.
pub fn describe_store(config: &Config) -> String {
    let store = &config.store;
    match store.backend {
        StoreBackend::Memory => "store: memory (tokens do not outlive the process)".into(),
        StoreBackend::Embedded => format!("store: embedded at {}", store.path.display()),
        StoreBackend::Redis => format!(
            "store: redis at {} (keys under {}:{}:)",
            store.redis_url.shown(),
            store.key_prefix,
            config.poynt.application_id
        ),
    }
}
