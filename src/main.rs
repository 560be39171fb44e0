//! The `poynt-proxy` command: run the proxy, check a config, run the Poynt emulator or the
//! demo, print a merchant authorization URL, or make a store key and list the store.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use poynt_proxy::config::{Config, LogConfig, LogFormat, StoreBackend};
use poynt_proxy::metrics::Metrics;
use poynt_proxy::store::embedded::{self, Preflight};
use poynt_proxy::store::{Store, keys};
use poynt_proxy::{Listeners, demo, emulator, onboarding, start, telemetry};
use secrecy::ExposeSecret as _;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// jemalloc rather than glibc's allocator: after a burst (hundreds of callers waiting out a
/// slow /token), glibc kept the burst's high-water mark resident for the life of the
/// process, while jemalloc hands freed pages back (measured in the soak run,
/// docs/BENCHMARKS.md). Its background threads (the `background_threads` feature) purge
/// them on a timer, so an arena whose threads have gone quiet gives its pages back too.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A token-brokering reverse proxy for the Poynt Cloud API.
///
/// Internal services call the proxy over plain HTTP, naming a merchant in a header; the
/// proxy injects that merchant's Poynt access token and forwards the call to Poynt.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy until SIGTERM or SIGINT, then drain in-flight requests and exit 0.
    Run {
        /// The YAML configuration (see config/example.yaml).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a configuration as `run` would, without serving: every file it names read, the
    /// listeners distinct, the embedded store opened read-only and its key checked; exit 0,
    /// or 1 with the reason.
    Check {
        /// The YAML configuration.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the Poynt emulator: a strict local stand-in for services.poynt.net.
    Emulator(emulator::EmulatorArgs),
    /// Run the emulator and the proxy wired to it, and print curl commands to try.
    Demo(demo::DemoArgs),
    /// Print a URL that sends a merchant to Poynt to authorize the app, with a state the
    /// running proxy's onboarding listener accepts (the same as its /connect issues).
    AuthorizeUrl {
        /// The YAML configuration (needs an onboarding section with state_key_file, the key
        /// the running proxy checks states with).
        #[arg(long, short)]
        config: PathBuf,
        /// Where to send the browser after success (on public_url's or success_redirect's
        /// origin).
        #[arg(long)]
        return_to: Option<String>,
    },
    /// Make a store key, or list what the token store holds.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Print a new store key (the base64 of 32 random bytes) for store.key_file or
    /// POYNT_PROXY_STORE_KEY.
    Keygen,
    /// List the stored merchants (id, token expiry, grant, whether a refresh token is held,
    /// when onboarded) without starting the proxy. Never prints a token. The embedded file
    /// cannot be read while a proxy holds it (use GET /admin/tokens on that proxy instead).
    List {
        /// The YAML configuration.
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The control runtime (admin, renewals, the store). Its blocking pool runs the embedded
    // store's transactions, which redb serialises anyway: a few threads serve them, where
    // Tokio's default (up to 512) would start one per concurrent save under a burst of
    // renewals, each thread with its own allocator arena, and keep the memory.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the Tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { config } => {
            let config = Config::load(&config)?;
            telemetry::init(&config.log);
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
            tracing::info!("stopped");
            Ok(())
        }
        Command::Check { config: path } => {
            let config = Config::load(&path)?;
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
        Command::Store {
            command: StoreCommand::Keygen,
        } => {
            println!("{}", keys::generate().expose_secret());
            Ok(())
        }
        Command::Store {
            command: StoreCommand::List { config },
        } => list_store(&Config::load(&config)?).await,
        Command::Emulator(args) => {
            telemetry::init(&plain_log());
            emulator::run_cli(args).await?;
            Ok(())
        }
        Command::Demo(args) => {
            telemetry::init(&plain_log());
            let mut signals = Signals::install()?;
            let stop = async move { Ok::<_, std::convert::Infallible>(signals.stop().await) };
            Ok(demo::run(args, async move { stop.await.map(drop) }).await?)
        }
        Command::AuthorizeUrl { config, return_to } => {
            let config = Config::load(&config)?;
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
                return_to.as_deref(),
            )
            .context("cannot build the authorization URL")?;
            println!("{url}");
            Ok(())
        }
    }
}

/// Threads of the control runtime's blocking pool.
const BLOCKING_THREADS: usize = 4;

/// Exit status when a second stop signal cuts the drain short (128 + SIGINT, as shells do).
const FORCED_EXIT: i32 = 130;

/// The signals the process answers: SIGTERM and SIGINT stop it; SIGHUP reloads the
/// configuration and never kills it.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

/// What a signal asks for.
enum Received {
    /// Stop (the signal's name).
    Stop(&'static str),
    /// Reload the configuration.
    Reload,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
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
    async fn next(&mut self) -> Received {
        tokio::select! {
            _ = self.term.recv() => Received::Stop("SIGTERM"),
            _ = self.int.recv() => Received::Stop("SIGINT"),
            _ = self.hup.recv() => Received::Reload,
        }
    }

    /// Waits for SIGTERM or SIGINT and names it; a SIGHUP meanwhile (nothing to reload) is
    /// logged and ignored.
    async fn stop(&mut self) -> &'static str {
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

/// One line naming the store `check` found.
fn describe_store(config: &Config) -> String {
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

/// Prints the stored merchants, one line each, sorted by ID; never a token.
async fn list_store(config: &Config) -> anyhow::Result<()> {
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

/// Text lines at the default level, for the commands that have no configuration.
fn plain_log() -> LogConfig {
    LogConfig {
        format: LogFormat::Text,
        level: telemetry::DEFAULT_LOG_LEVEL.into(),
    }
}
