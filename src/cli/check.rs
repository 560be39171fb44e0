//! `poynt-proxy check`: a configuration checked as `run` would, without serving.

use std::path::Path;

use poynt_proxy::config::{Config, StoreBackend};
use poynt_proxy::metrics::Metrics;
use poynt_proxy::store::embedded::{self, Preflight};
use poynt_proxy::store::keys;

use super::store::describe_store;

/// Loads the configuration at `path` (every file it names read), looks at the embedded
/// store read-only, and prints what it found; an error names the first thing wrong.
pub async fn check(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    for warning in config.warnings() {
        println!("warning: {warning}");
    }
    let store = preflight_store(&config).await?;
    println!(
        "{}: ok (listen {}, admin {}, upstream {}, app {}, app key {})",
        path.display(),
        config.listen,
        config.admin_listen,
        config.poynt.api_url,
        config.poynt.application_id,
        config.poynt.private_key.fingerprint()
    );
    println!("{}{store}", describe_store(&config));
    if let Some(key) = config.store.key_beside_data() {
        eprintln!(
            "warning: no store key is configured, so the key sits beside the data at {} (created at first start): whoever copies that directory can read every stored token; keep the key elsewhere with store.key_file or {}",
            key.display(),
            keys::STORE_KEY_ENV
        );
    }
    Ok(())
}

/// Looks at the embedded store without changing it, failing as `run` would (a wrong key, a
/// missing key beside the data, an unreadable file); what it found, to end the store line.
async fn preflight_store(config: &Config) -> anyhow::Result<&'static str> {
    if config.store.backend != StoreBackend::Embedded {
        return Ok("");
    }
    let metrics = Metrics::new()?;
    let found = embedded::preflight(
        &config.store,
        &config.poynt.application_id,
        metrics.store().clone(),
    )
    .await?;
    let path = config.store.path.display();
    Ok(match found {
        Preflight::New => " (not created yet: the first start creates it)",
        Preflight::KeyFits => " (opened read-only: the store key opens it)",
        Preflight::InUse => {
            eprintln!(
                "warning: store.path: {path} is open in another process (a running proxy?), so its key was not checked here"
            );
            " (in use: not opened)"
        }
        Preflight::NeedsRepair => {
            eprintln!(
                "warning: store.path: {path} was not closed cleanly, so its key was not checked here; the next start repairs it, then checks the key"
            );
            " (needs repair: not opened)"
        }
    })
}
