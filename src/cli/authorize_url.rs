//! `poynt-proxy authorize-url`: a URL that sends a merchant to Poynt to authorize the app,
//! with a state the running proxy's onboarding listener accepts.

use std::path::Path;

use anyhow::Context as _;
use poynt_proxy::config::Config;
use poynt_proxy::onboarding;
use poynt_proxy::store::keys;

/// Prints the URL, with the state key the running proxy holds (configured, or derived from
/// the store key it uses); `return_to` is where the browser goes after success.
pub fn authorize_url(path: &Path, return_to: Option<&str>) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let settings = config
        .onboarding
        .as_ref()
        .context("onboarding: missing; expected the onboarding section the running proxy serves callbacks with")?;
    // The store key as the running proxy holds it: configured, or created beside the
    // embedded file at its first start (read here, never created).
    let store_key = match &config.store.key {
        Some(key) => Some(key.key.clone()),
        None => config
            .store
            .key_beside_data()
            .filter(|path| path.exists())
            .map(|path| keys::read_file(&path))
            .transpose()?,
    };
    let key = onboarding::state_key(settings, store_key.as_ref()).context(
        "onboarding.state_key_file: missing, and no store key to derive the state key from (the memory backend has none); expected one of them, shared with the running proxy",
    )?;
    let url = onboarding::authorize_url(
        settings,
        &config.oauth,
        &config.poynt.application_id,
        &key,
        return_to,
    )
    .context("cannot build the authorization URL")?;
    println!("{url}");
    Ok(())
}
