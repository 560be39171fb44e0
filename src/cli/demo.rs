//! `poynt-proxy demo`: the emulator (with a generated app key and a few authorized
//! merchants) and the proxy wired to it over TLS, onboarding included, started through the
//! same [`start`] as production, printing curl commands to paste and the `/connect` URL to
//! open in a browser.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use poynt_emulator::{self as emulator, EmulatorConfig, EmulatorError};
use poynt_proxy::config::{Config, ConfigError, KeySources};
use poynt_proxy::lifecycle::{Listeners, StartError, start};
use poynt_proxy::onboarding::state::StateKey;
use poynt_wire::MerchantId;

/// The embedded demo configuration.
const DEMO_CONFIG: &str = include_str!("../../config/demo.yaml");
/// The demo app's ID.
const DEMO_APP_ID: &str = "urn:aid:00000000-0000-4000-8000-00000000de30";
/// Merchants that have authorized the demo app.
const DEMO_MERCHANTS: [&str; 3] = [
    "11111111-1111-4111-8111-111111111111",
    "22222222-2222-4222-8222-222222222222",
    "33333333-3333-4333-8333-333333333333",
];

/// The demo's usual addresses, taken when free; when one is taken (another server on 8080),
/// the demo takes a free port instead and says so, rather than failing on a first try.
const DEFAULT_LISTEN: SocketAddr = loopback(8080);
const DEFAULT_ADMIN_LISTEN: SocketAddr = loopback(9090);
const DEFAULT_ONBOARDING_LISTEN: SocketAddr = loopback(8081);

const fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

/// Where the demo listens.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Proxy listener for callers [default: 127.0.0.1:8080, or a free port when it is taken].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Admin listener (health, metrics, admin API) [default: 127.0.0.1:9090, or a free port
    /// when it is taken].
    #[arg(long)]
    pub admin_listen: Option<SocketAddr>,
    /// Onboarding listener (merchants' browsers); its address is also the public URL
    /// [default: 127.0.0.1:8081, or a free port when it is taken].
    #[arg(long)]
    pub onboarding_listen: Option<SocketAddr>,
    /// Emulator listener (HTTPS); port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub emulator_listen: SocketAddr,
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The emulator failed to start.
    #[error("emulator: {0}")]
    Emulator(#[from] EmulatorError),
    /// The embedded configuration was refused (a bug in the demo).
    #[error("demo configuration: {0}")]
    Config(#[from] ConfigError),
    /// The proxy failed to start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The emulator's CA certificate did not parse.
    #[error("the emulator's CA certificate does not parse: {0}")]
    Ca(String),
    /// Waiting for the stop signal failed.
    #[error("waiting for the stop signal failed: {0}")]
    Signal(String),
}

async fn bind(
    listener: &'static str,
    addr: SocketAddr,
) -> Result<tokio::net::TcpListener, StartError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            listener,
            addr,
            source,
        })
}

/// Binds `asked` exactly when the flag `flag` gave it; else `default`, or a free port on the
/// same address when `default` is taken (saying which flag picks another).
async fn bind_or_fallback(
    flag: &'static str,
    asked: Option<SocketAddr>,
    default: SocketAddr,
) -> Result<tokio::net::TcpListener, StartError> {
    if let Some(addr) = asked {
        return bind(flag, addr).await;
    }
    match tokio::net::TcpListener::bind(default).await {
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => {
            let listener = bind(flag, SocketAddr::new(default.ip(), 0)).await?;
            let took = listener.local_addr().map_err(StartError::Addr)?;
            println!(
                "note: {default} is taken, so the demo took {took} instead ({flag} picks another)"
            );
            Ok(listener)
        }
        result => result.map_err(|source| StartError::Bind {
            listener: flag,
            addr: default,
            source,
        }),
    }
}

/// Runs until `until` resolves, then drains and stops both.
pub async fn run<E: std::fmt::Display>(
    args: DemoArgs,
    until: impl Future<Output = Result<(), E>>,
) -> Result<(), DemoError> {
    let (private_pem, public_pem) = emulator::generate_app_key()?;
    let merchants: Vec<MerchantId> = DEMO_MERCHANTS
        .iter()
        .filter_map(|m| MerchantId::parse(m).ok())
        .collect();
    let emulator_listener = bind("--emulator-listen", args.emulator_listen).await?;
    // Bound before the configuration is written: it names the ports actually taken.
    let proxy_listener = bind_or_fallback("--listen", args.listen, DEFAULT_LISTEN).await?;
    let admin_listener =
        bind_or_fallback("--admin-listen", args.admin_listen, DEFAULT_ADMIN_LISTEN).await?;
    let onboarding_listener = bind_or_fallback(
        "--onboarding-listen",
        args.onboarding_listen,
        DEFAULT_ONBOARDING_LISTEN,
    )
    .await?;
    let addr = |listener: &tokio::net::TcpListener| listener.local_addr().map_err(StartError::Addr);
    let onboarding_addr = addr(&onboarding_listener)?;
    let emulator = emulator::start(
        EmulatorConfig {
            app_id: DEMO_APP_ID.into(),
            app_public_key_pem: public_pem,
            audience: None,
            merchants: merchants.clone(),
            token_ttl: std::time::Duration::from_secs(3600),
            tls: true,
            tls_names: Vec::new(),
        },
        emulator_listener,
    )
    .await?;
    let text = DEMO_CONFIG
        .replace("{LISTEN}", &addr(&proxy_listener)?.to_string())
        .replace("{ADMIN_LISTEN}", &addr(&admin_listener)?.to_string())
        .replace("{EMULATOR_URL}", &emulator.base_url())
        .replace("{APP_ID}", DEMO_APP_ID)
        .replace("{ONBOARDING_LISTEN}", &onboarding_addr.to_string());
    let sources = KeySources {
        base_dir: None,
        private_key_env: Some(private_pem.into()),
        ..KeySources::default()
    };
    let mut config = Config::parse(&text, &sources)?;
    // The demo lives in one process with a memory store: a state key of its own says so
    // up front, instead of a start-up warning about a file the newcomer has no use for.
    if let Some(onboarding) = &mut config.onboarding {
        onboarding.state_key = Some(StateKey::random());
    }
    let ca = emulator.ca_pem().unwrap_or_default();
    config.poynt.extra_roots = CertificateDer::pem_slice_iter(ca.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| DemoError::Ca(e.to_string()))?;
    let listeners = Listeners {
        proxy: proxy_listener,
        admin: admin_listener,
        onboarding: Some(onboarding_listener),
        tls: None,
    };
    let header = config.merchant.header.to_string();
    let running = start(config, listeners).await?;
    let proxy = running.proxy_addr();
    let admin = running.admin_addr();
    println!("poynt-proxy demo is running (Ctrl-C to stop)");
    println!("  proxy     http://{proxy}  (callers)");
    println!("  admin     http://{admin}  (health, metrics, admin API)");
    println!(
        "  emulator  {}  (stand-in for services.poynt.net)",
        emulator.base_url()
    );
    println!("Try:");
    let [first, second, ..] = DEMO_MERCHANTS;
    // URLs quoted: zsh reads an unquoted `?` as a glob and stops.
    println!("curl -s 'http://{proxy}/businesses/{first}/orders?limit=5' -H '{header}: {first}'");
    println!(
        "curl -s -X POST 'http://{proxy}/businesses/{second}/orders' -H '{header}: {second}' -H 'Content-Type: application/json' -d '{{\"amount\": 1200}}'"
    );
    println!("curl -s 'http://{admin}/admin/tokens'");
    println!("curl -s 'http://{admin}/metrics'");
    println!("Onboard a merchant: open http://{onboarding_addr}/connect in a browser");
    if let Some(pin) = emulator.tls_spki_pin() {
        println!(
            "  (the emulator's certificate is from a CA made at start: accept it once, or start Chromium with --ignore-certificate-errors-spki-list={pin})"
        );
    }
    let waited = until.await;
    running.shutdown();
    running.wait().await;
    emulator.shutdown().await;
    waited.map_err(|e| DemoError::Signal(e.to_string()))
}
