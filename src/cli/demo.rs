//! `poynt-proxy demo`: the emulator (with a generated app key and a few authorized
//! merchants) and the proxy wired to it over TLS, onboarding included, started through the
//! same [`start`] as production, printing curl commands to paste and the `/connect` URL to
//! open in a browser.

use std::future::Future;
use std::net::SocketAddr;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use poynt_emulator::{self as emulator, EmulatorConfig, EmulatorError};
use poynt_proxy::config::{Config, ConfigError, KeySources};
use poynt_proxy::lifecycle::{Listeners, StartError, start};
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

/// Where the demo listens.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Proxy listener for callers.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Admin listener (health, metrics, admin API).
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub admin_listen: SocketAddr,
    /// Onboarding listener (merchants' browsers); its address is also the public URL.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub onboarding_listen: SocketAddr,
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

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, StartError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
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
    let emulator_listener = bind(args.emulator_listen).await?;
    // Bound first: with port 0 the public URL needs the port picked.
    let onboarding_listener = bind(args.onboarding_listen).await?;
    let onboarding_addr = onboarding_listener.local_addr().map_err(StartError::Addr)?;
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
        .replace("{LISTEN}", &args.listen.to_string())
        .replace("{ADMIN_LISTEN}", &args.admin_listen.to_string())
        .replace("{EMULATOR_URL}", &emulator.base_url())
        .replace("{APP_ID}", DEMO_APP_ID)
        .replace("{ONBOARDING_LISTEN}", &onboarding_addr.to_string());
    let sources = KeySources {
        base_dir: None,
        private_key_env: Some(private_pem.into()),
        ..KeySources::default()
    };
    let mut config = Config::parse(&text, &sources)?;
    let ca = emulator.ca_pem().unwrap_or_default();
    config.poynt.extra_roots = CertificateDer::pem_slice_iter(ca.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| DemoError::Ca(e.to_string()))?;
    let listeners = Listeners {
        proxy: bind(config.listen).await?,
        admin: bind(config.admin_listen).await?,
        onboarding: Some(onboarding_listener),
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
    println!("curl -s http://{proxy}/businesses/{first}/orders?limit=5 -H '{header}: {first}'");
    println!(
        "curl -s -X POST http://{proxy}/businesses/{second}/orders -H '{header}: {second}' -H 'Content-Type: application/json' -d '{{\"amount\": 1200}}'"
    );
    println!("curl -s http://{admin}/admin/tokens");
    println!("curl -s http://{admin}/metrics");
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
