//! `poynt-proxy run`: serve until SIGTERM or SIGINT, reload on SIGHUP, then drain.

use std::path::Path;

use poynt_proxy::config::Config;
use poynt_proxy::traces::Traces;
use poynt_proxy::{Listeners, start, telemetry};

use super::signals::{Received, Signals};

/// Exit status when a second stop signal cuts the drain short (128 + SIGINT, as shells do).
const FORCED_EXIT: i32 = 130;

/// Runs the proxy the configuration at `path` describes until a stop signal, then drains
/// in-flight requests (a second stop signal exits at once).
pub async fn run(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let (traces, layer) = match &config.traces {
        Some(settings) => {
            let (traces, layer) = Traces::start(settings)?;
            (Some(traces), Some(layer))
        }
        None => (None, None),
    };
    telemetry::init(&config.log, layer);
    if let Some(settings) = &config.traces {
        tracing::info!(endpoint = %settings.endpoint, sample_ratio = settings.sample_ratio, "exporting traces");
    }
    // Installed before anything starts, so no signal ever meets the default action
    // (which for SIGHUP is to die without draining).
    let mut signals = Signals::install()?;
    let listeners = Listeners::bind(&config).await?;
    let running = start(config, listeners).await?;
    let signal = loop {
        match signals.next().await {
            Received::Stop(signal) => break signal,
            // The reloader logs and counts the outcome.
            Received::Reload => {
                let _ = running.reload().await;
            }
        }
    };
    tracing::info!(
        signal,
        "shutdown requested; draining (a second SIGTERM or SIGINT exits at once)"
    );
    running.shutdown();
    tokio::select! {
        () = running.wait() => {}
        signal = signals.stop() => {
            tracing::warn!(signal, "second stop signal; exiting without finishing the drain");
            std::process::exit(FORCED_EXIT);
        }
    }
    if let Some(traces) = traces {
        // Joins the export thread after its last batch: not on a runtime worker.
        tokio::task::spawn_blocking(move || traces.shutdown()).await?;
    }
    tracing::info!("stopped");
    Ok(())
}
