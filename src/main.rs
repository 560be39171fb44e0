//! The `poynt-proxy` command: run the proxy, check a config, run the Poynt emulator or the
//! demo, or print a merchant authorization URL.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use poynt_proxy::config::{Config, LogFormat};
use poynt_proxy::{Listeners, demo, emulator, onboarding, start, telemetry};

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
    /// Validate a configuration and load its private key; exit 0, or 1 with the reason.
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
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
            telemetry::init(config.log.format);
            let listeners = Listeners::bind(&config).await?;
            let running = start(config, listeners).await?;
            shutdown_signal().await?;
            tracing::info!("shutdown requested; draining");
            running.shutdown();
            running.wait().await;
            tracing::info!("stopped");
            Ok(())
        }
        Command::Check { config: path } => {
            let config = Config::load(&path)?;
            for warning in config.warnings() {
                println!("warning: {warning}");
            }
            println!(
                "{}: ok (listen {}, admin {}, upstream {}, app {})",
                path.display(),
                config.listen,
                config.admin_listen,
                config.poynt.api_url,
                config.poynt.application_id
            );
            Ok(())
        }
        Command::Emulator(args) => {
            telemetry::init(LogFormat::Text);
            emulator::run_cli(args).await?;
            Ok(())
        }
        Command::Demo(args) => {
            telemetry::init(LogFormat::Text);
            Ok(demo::run(args, shutdown_signal()).await?)
        }
        Command::AuthorizeUrl { config, return_to } => {
            let config = Config::load(&config)?;
            let key = config
                .onboarding
                .as_ref()
                .and_then(|o| o.state_key.clone())
                .context("onboarding.state_key_file: missing; expected the file holding the state key the running proxy checks states with (without it, states are valid in one process only)")?;
            let url = onboarding::authorize_url(&config, &key, return_to.as_deref())
                .context("cannot build the authorization URL")?;
            println!("{url}");
            Ok(())
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    tokio::select! {
        _ = term.recv() => {}
        result = tokio::signal::ctrl_c() => result.context("cannot watch SIGINT")?,
    }
    Ok(())
}
