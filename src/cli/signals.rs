//! The signals the process answers: SIGTERM and SIGINT stop it; SIGHUP reloads the
//! configuration and never kills it.

use anyhow::Context as _;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// The watched signals; installed before anything starts, so no signal ever meets the
/// default action (which for SIGHUP is to die without draining).
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

/// What a signal asks for.
pub enum Received {
    /// Stop (the signal's name).
    Stop(&'static str),
    /// Reload the configuration.
    Reload,
}

impl Signals {
    pub fn install() -> anyhow::Result<Self> {
        let watch = |kind: SignalKind, name: &str| {
            signal(kind).with_context(|| format!("cannot watch {name}"))
        };
        Ok(Self {
            term: watch(SignalKind::terminate(), "SIGTERM")?,
            int: watch(SignalKind::interrupt(), "SIGINT")?,
            hup: watch(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    /// The next signal.
    pub async fn next(&mut self) -> Received {
        tokio::select! {
            _ = self.term.recv() => Received::Stop("SIGTERM"),
            _ = self.int.recv() => Received::Stop("SIGINT"),
            _ = self.hup.recv() => Received::Reload,
        }
    }

    /// Waits for SIGTERM or SIGINT and names it; a SIGHUP meanwhile (nothing to reload) is
    /// logged and ignored.
    pub async fn stop(&mut self) -> &'static str {
        loop {
            match self.next().await {
                Received::Stop(signal) => return signal,
                Received::Reload => {
                    tracing::info!(
                        "SIGHUP received: this command has no configuration file to reload; ignored"
                    );
                }
            }
        }
    }
}
