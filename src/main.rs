//! The `poynt-proxy` command: run the proxy, check a config, run the Poynt emulator or the
//! demo, print a merchant authorization URL, make a caller's API key, verify the audit
//! trail, or make a store key and list the store. This
//! file parses the command line and dispatches; each command's work is in `cli/`.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use poynt_proxy::config::Config;
use poynt_proxy::report::error_chain;
use poynt_proxy::telemetry;

mod cli;

use cli::demo;
use cli::signals::Signals;

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
    #[command(after_help = poynt_emulator::CONTROL_API_HELP)]
    Emulator(poynt_emulator::EmulatorArgs),
    /// Run the emulator and the proxy wired to it, and print curl commands to try.
    Demo(demo::DemoArgs),
    /// Print a URL that sends a merchant to Poynt to authorize the app, with a state the
    /// running proxy's onboarding listener accepts (the same as its /connect issues).
    AuthorizeUrl {
        /// The YAML configuration the running proxy uses (its onboarding section, and the
        /// state key it checks states with: state_key_file, or the key derived from the
        /// store key).
        #[arg(long, short)]
        config: PathBuf,
        /// Where to send the browser after success (on public_url's or success_redirect's
        /// origin).
        #[arg(long)]
        return_to: Option<String>,
    },
    /// Manage caller credentials.
    Callers {
        #[command(subcommand)]
        command: CallersCommand,
    },
    /// Check the audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Make a store key, or list what the token store holds.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
}

#[derive(Subcommand)]
enum CallersCommand {
    /// Print a new API key for caller NAME (once: only its hash is kept) and the line for
    /// callers.authentication.api_keys.file.
    AddKey {
        /// The caller's name, as callers.policy names it.
        name: String,
        /// Append the line to this key file instead of printing it.
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check that audit files form one unbroken hash chain: exit 0, or 1 naming the file and
    /// line where a line was edited, inserted or deleted.
    Verify {
        /// The files, oldest first (after rotation: audit.log.N … audit.log.1 audit.log).
        #[arg(required = true)]
        files: Vec<PathBuf>,
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
            eprintln!("error: {}", error_chain(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { config } => cli::run::run(&config).await,
        Command::Check { config } => cli::check::check(&config).await,
        Command::Callers {
            command: CallersCommand::AddKey { name, file },
        } => cli::callers::add_key(&name, file.as_deref()),
        Command::Audit {
            command: AuditCommand::Verify { files },
        } => cli::audit::verify_files(&files),
        Command::Store {
            command: StoreCommand::Keygen,
        } => {
            cli::store::keygen();
            Ok(())
        }
        Command::Store {
            command: StoreCommand::List { config },
        } => cli::store::list_store(&Config::load(&config)?).await,
        Command::Emulator(args) => {
            telemetry::init(&cli::plain_log(), None);
            poynt_emulator::run_cli(args).await?;
            Ok(())
        }
        Command::Demo(args) => {
            telemetry::init(&cli::plain_log(), None);
            let mut signals = Signals::install()?;
            let stop = async move { Ok::<_, std::convert::Infallible>(signals.stop().await) };
            Ok(demo::run(args, async move { stop.await.map(drop) }).await?)
        }
        Command::AuthorizeUrl { config, return_to } => {
            cli::authorize_url::authorize_url(&config, return_to.as_deref())
        }
    }
}

/// Threads of the control runtime's blocking pool.
const BLOCKING_THREADS: usize = 4;
