//! The Poynt emulator: a strict, in-process stand-in for services.poynt.net and poynt.net,
//! used by the test-suite, the `demo` command and benchmarks. What it checks and answers is
//! pinned by its own tests (`tests/emulator.rs` in this crate); it shares Poynt's spelling
//! of every name with the proxy through `poynt-wire`, its only dependency in the workspace.
//!
//! Parts:
//! - `server`: accept loop, router, graceful shutdown (HTTP/1.1 and h2, optional TLS);
//! - `token`: `POST /token` and its three grants; `jwt`: the assertion and code checks;
//! - `api`: `/businesses/{id}/...`, an echo with query knobs, on the benchmark hot path;
//! - `authorize`: poynt.net's `/applications/authorize` (signing codes with the TLS leaf's
//!   key, like poynt.net, with knobs for faulty answers) and `/auth/signout`;
//! - `control`: `/_emulator/...`, the control API; `state`, `stats`, `fault`: what it
//!   remembers, counts and simulates;
//! - `keys`, `tls`: the keys and certificates it makes; `cli`: the `emulator` subcommand.
//!
//! Start it with [`start`] on a listener the caller bound (port 0 in tests), drive it through
//! [`Emulator`], stop it with [`Emulator::shutdown`].

#![forbid(unsafe_code)]

mod api;
mod authorize;
mod body;
mod business;
mod cli;
mod control;
mod error;
mod fault;
mod jwt;
mod keys;
mod reply;
mod server;
mod state;
mod stats;
mod tls;
mod token;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use business::default_name;
pub use cli::{EmulatorArgs, run_cli};
pub use control::CONTROL_API_HELP;
pub use error::EmulatorError;
pub use fault::Fault;
pub use keys::generate_app_key;
pub use state::AuthorizeMode;
pub use stats::{GrantStats, Stats, TokenCalls};

use keys::SigningKey;
use poynt_wire::MerchantId;
use state::{Shared, SharedInit};

/// Poynt's default access token lifetime (24 h).
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(86_400);

/// How to set up an emulator: which application is registered, which merchants have
/// authorized it, and how it serves.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// The registered application id, `urn:aid:...`; assertions' `iss` and `sub`.
    pub app_id: String,
    /// The registered application's RSA public key (SPKI `PUBLIC KEY` or PKCS#1
    /// `RSA PUBLIC KEY` PEM); assertions must verify with it.
    pub app_public_key_pem: String,
    /// The `aud` assertions must carry; `None` means the emulator's own base URL (e.g.
    /// `http://127.0.0.1:PORT`, no trailing slash). Set it to `https://services.poynt.net`
    /// to check that a client sends production's audience.
    pub audience: Option<String>,
    /// Merchants that have authorized the app from the start; the first is also the one
    /// `/applications/authorize` approves when the call names none.
    pub merchants: Vec<MerchantId>,
    /// Access token lifetime (`expiresIn`); zero makes tokens that are expired on arrival.
    pub token_ttl: Duration,
    /// Serve HTTPS with a certificate from a CA made at start (see [`Emulator::ca_pem`]);
    /// the leaf certificate's RSA key then also signs authorization codes, as at poynt.net.
    pub tls: bool,
    /// Names the certificate covers besides `localhost` and `127.0.0.1`, for clients that
    /// reach the emulator under another name (a compose service); the first one is the host
    /// of [`Emulator::base_url`]. Unused without `tls`.
    pub tls_names: Vec<String>,
}

impl EmulatorConfig {
    /// A plain-HTTP configuration for `app_id` with the defaults: audience = base URL, no
    /// merchants, 24 h tokens.
    pub fn new(app_id: impl Into<String>, app_public_key_pem: impl Into<String>) -> Self {
        Self {
            app_id: app_id.into(),
            app_public_key_pem: app_public_key_pem.into(),
            audience: None,
            merchants: Vec::new(),
            token_ttl: DEFAULT_TOKEN_TTL,
            tls: false,
            tls_names: Vec::new(),
        }
    }
}

/// A running emulator. Dropping it stops it too (abruptly); [`Emulator::shutdown`] stops it
/// gracefully and waits.
pub struct Emulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    ca_pem: Option<String>,
    leaf_pem: Option<String>,
    spki_pin: Option<String>,
    shutdown: watch::Sender<()>,
    server: JoinHandle<()>,
}

/// Starts an emulator on `listener` (bound by the caller, so tests can use port 0) and
/// returns once it accepts connections. Generates the emulator's signing keys (and TLS
/// certificates when asked), which takes a moment.
pub async fn start(
    config: EmulatorConfig,
    listener: TcpListener,
) -> Result<Emulator, EmulatorError> {
    if !config.app_id.starts_with("urn:aid:") {
        return Err(EmulatorError::InvalidAppId {
            found: config.app_id,
        });
    }
    let app_key = keys::load_app_public_key(&config.app_public_key_pem)?;
    let addr = listener
        .local_addr()
        .map_err(|source| EmulatorError::LocalAddr { source })?;
    let codes = "authorization codes (poynt.net)";
    let tls_names = config.tls_names.clone();
    let (token_key, tls) =
        tokio::try_join!(SigningKey::generate_off_runtime("access tokens"), async {
            match config.tls {
                true => keys::off_runtime(move || tls::make(&tls_names))
                    .await
                    .map(Some),
                false => Ok(None),
            }
        },)?;
    let (tls, poynt_net_key) = match tls {
        Some(tls::Tls {
            ca_pem,
            config,
            leaf_pem,
            leaf_key,
            spki_pin,
        }) => (Some((ca_pem, config, leaf_pem, spki_pin)), leaf_key),
        None => (None, SigningKey::generate_off_runtime(codes).await?),
    };
    let tls_host = config
        .tls
        .then(|| config.tls_names.first().map_or("localhost", String::as_str));
    let base_url = base_url(addr, tls_host);
    let shared = Arc::new(Shared::new(SharedInit {
        app_id: config.app_id,
        audience: config.audience.unwrap_or_else(|| base_url.clone()),
        base_url,
        token_ttl_secs: config.token_ttl.as_secs(),
        merchants: config.merchants,
        app_key,
        token_key,
        poynt_net_key,
    }));
    let (shutdown, shutdown_rx) = watch::channel(());
    let acceptor = tls
        .as_ref()
        .map(|(_, config, _, _)| tokio_rustls::TlsAcceptor::from(config.clone()));
    let server = tokio::spawn(server::run(listener, shared.clone(), acceptor, shutdown_rx));
    tracing::info!(base_url = %shared.base_url, "poynt emulator listening");
    let (ca_pem, leaf_pem, spki_pin) = match tls {
        Some((ca, _, leaf, pin)) => (Some(ca), Some(leaf), Some(pin)),
        None => (None, None, None),
    };
    Ok(Emulator {
        shared,
        addr,
        ca_pem,
        leaf_pem,
        spki_pin,
        shutdown,
        server,
    })
}

/// `http://127.0.0.1:PORT`, or `https://HOST:PORT` with TLS, where `tls_host` is a name
/// the certificate covers. An unspecified bind address is shown as the loopback address of
/// its family.
fn base_url(addr: SocketAddr, tls_host: Option<&str>) -> String {
    if let Some(host) = tls_host {
        return format!("https://{host}:{}", addr.port());
    }
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

impl Emulator {
    /// Where to send requests: `http://127.0.0.1:PORT`, or `https://localhost:PORT` with TLS
    /// (the first of [`EmulatorConfig::tls_names`] instead of `localhost` when there is one).
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA certificate (PEM) a client must trust to reach it over TLS; `None` without TLS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// The public key (SPKI PEM) authorization codes are signed with: the proxy's
    /// configuration of "poynt.net's key". With TLS it is the leaf certificate's key.
    pub fn poynt_net_public_key_pem(&self) -> &str {
        self.shared.poynt_net_key.public_pem()
    }

    /// With TLS, the leaf certificate (PEM): its key is the one codes are signed with.
    pub fn tls_certificate_pem(&self) -> Option<&str> {
        self.leaf_pem.as_deref()
    }

    /// With TLS, the base64 SHA-256 of the leaf certificate's SubjectPublicKeyInfo: tell a
    /// browser to trust exactly this certificate with
    /// `--ignore-certificate-errors-spki-list=<pin>`.
    pub fn tls_spki_pin(&self) -> Option<&str> {
        self.spki_pin.as_deref()
    }

    /// How `/applications/authorize` answers from now on (`AuthorizeMode::Approve`, the
    /// default, mints good codes), as `POST /_emulator/authorize` sets it.
    pub fn set_authorize_mode(&self, mode: AuthorizeMode) {
        self.shared.set_authorize_mode(mode);
    }

    /// The counters, as `GET /_emulator/stats` reports them.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// Every access token, refresh token and authorization code issued and every assertion
    /// received, so tests can check that none of them leaks into logs, metrics or responses.
    pub fn issued_secrets(&self) -> Vec<String> {
        self.shared.secrets()
    }

    /// Replaces the faults injected into `/token` and the API (`Fault::default()` clears
    /// them), as `POST /_emulator/fault` does.
    pub fn set_fault(&self, fault: Fault) {
        self.shared.set_fault(fault);
    }

    /// Invalidates every access token issued to `merchant` so far (API calls with them get
    /// 401 `INVALID_ACCESS_TOKEN`); refresh tokens and the authorization stay valid.
    pub fn revoke(&self, merchant: MerchantId) {
        self.shared.revoke(merchant);
    }

    /// Registers a new public key for the app (SPKI or PKCS#1 PEM): assertions must be
    /// signed with its private key from now on, as after a key reset in the developer portal.
    pub fn set_app_public_key(&self, pem: &str) -> Result<(), EmulatorError> {
        self.shared.set_app_key(keys::load_app_public_key(pem)?);
        Ok(())
    }

    /// Records that `merchant` authorized the app, as if it had gone through onboarding.
    pub fn authorize(&self, merchant: MerchantId) {
        self.shared.authorize(merchant);
    }

    /// Gives `merchant` the name `GET /businesses/{id}` answers with (`doingBusinessAs` and
    /// `legalName`), or none: the call then answers 404. Unset, it is [`default_name`].
    pub fn set_business_name(&self, merchant: MerchantId, name: Option<String>) {
        self.shared.business_names.set(merchant, name);
    }

    /// Records that `merchant` removed the app: its access tokens stop working and its
    /// refresh tokens and assertions are refused with `MERCHANT_NOT_AUTHORIZED`.
    pub fn unauthorize(&self, merchant: MerchantId) {
        self.shared.unauthorize(merchant);
    }

    /// Makes every connection open now close gracefully, as `POST /_emulator/goaway` does:
    /// HTTP/2 connections send GOAWAY (streams in flight finish, later ones are refused
    /// unprocessed), HTTP/1.1 ones close after their current response. Returns how many
    /// connections were told.
    pub fn goaway(&self) -> usize {
        self.shared.goaway()
    }

    /// Clears counters, faults, revocations and the authorize mode; keys, authorized
    /// merchants and issued tokens stay.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Stops accepting, lets open connections finish their requests (for a bounded time),
    /// closes them and waits. Re-raises a panic of the server task.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(());
        if let Err(error) = self.server.await
            && error.is_panic()
        {
            std::panic::resume_unwind(error.into_panic());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_shows_a_connectable_address() {
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(base_url(any, None), "http://127.0.0.1:8080");
        let v6: SocketAddr = "[::]:8080".parse().unwrap();
        assert_eq!(base_url(v6, None), "http://[::1]:8080");
        assert_eq!(base_url(any, Some("localhost")), "https://localhost:8080");
        assert_eq!(base_url(any, Some("emulator")), "https://emulator:8080");
    }
}
