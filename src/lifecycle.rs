//! Starting and stopping the proxy: the one [`start`] that `main`, the demo and every test
//! use, on listeners the caller bound, returning the real addresses and a handle to stop.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::access_log::{AccessLog, Drain};
use crate::admin::{Admin, Phase};
use crate::audit::AuditError;
use crate::callers::Callers;
use crate::callers::error::JwksError;
use crate::config::Config;
use crate::limits::Governor;
use crate::metrics::Metrics;
use crate::onboarding::spent::SpentStates;
use crate::onboarding::state::StateKey;
use crate::onboarding::{self, Onboarding, OnboardingError, OnboardingServer};
use crate::proxy::AllowList;
use crate::proxy::Proxy;
use crate::reload::{AdminSecret, Applied, ReloadError, Reloadable, Reloader};
use crate::server::{self, Limits};
use crate::store::{Store, StoreError};
use crate::telemetry;
use crate::tls::ServerTls;
use crate::token::assertion::AssertionSigner;
use crate::token::broker::Broker;
use crate::token::grant::TokenClient;
use crate::upstream::{self, UpstreamError};
use crate::workers::cpus::CpuBudget;
use crate::workers::{self, WorkerError, Workers};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("{listener}: cannot listen on {addr}: {source}")]
    Bind {
        /// The key that names the listener (`listen`, `admin_listen`, `onboarding.listen`).
        listener: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A listener's address could not be read.
    #[error("cannot read a listener's address: {0}")]
    Addr(#[source] std::io::Error),
    /// The metrics registry refused a family (a programming error).
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The upstream client could not be built.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// A worker could not be started.
    #[error(transparent)]
    Workers(#[from] WorkerError),
    /// The token store could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The onboarding listener could not be started.
    #[error(transparent)]
    Onboarding(#[from] OnboardingError),
    /// The audit trail could not start.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The JWKS client for `callers.authentication.jwt.jwks_url` could not be built.
    #[error("callers.authentication.jwt.jwks_url: {0}")]
    Callers(#[from] JwksError),
    /// The access log's writer thread could not be started.
    #[error("cannot start the access log's writer thread: {0}")]
    AccessLog(#[source] std::io::Error),
}

/// The bound listeners.
pub struct Listeners {
    /// For callers.
    pub proxy: TcpListener,
    /// For health, metrics and admin.
    pub admin: TcpListener,
    /// For merchants' browsers; bound only when `onboarding` is configured.
    pub onboarding: Option<TcpListener>,
    /// For callers over TLS; bound only when `tls` is configured.
    pub tls: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses the configuration names.
    pub async fn bind(config: &Config) -> Result<Self, StartError> {
        let bind = |listener: &'static str, addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind {
                    listener,
                    addr,
                    source,
                })
        };
        Ok(Self {
            proxy: bind("listen", config.listen).await?,
            admin: bind("admin_listen", config.admin_listen).await?,
            onboarding: match &config.onboarding {
                Some(onboarding) => Some(bind("onboarding.listen", onboarding.listen).await?),
                None => None,
            },
            tls: match &config.tls {
                Some(tls) => Some(bind("tls.listen", tls.listen).await?),
                None => None,
            },
        })
    }
}

/// A running proxy.
pub struct Running {
    proxy_addr: SocketAddr,
    admin_addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    stop_proxy: watch::Sender<bool>,
    stop_admin: watch::Sender<bool>,
    phase: Phase,
    workers: Workers,
    admin_task: JoinHandle<()>,
    onboarding: Option<OnboardingServer>,
    reloader: Option<Reloader>,
    /// Writes the access lines left at shutdown; none without installed logging.
    access_drain: Option<Drain>,
}

/// Starts the proxy and its admin listener on already-bound listeners: `server.workers`
/// threads serve callers; the admin listener and background token renewals run on the
/// caller's runtime, which must outlive the returned [`Running`].
pub async fn start(config: Config, listeners: Listeners) -> Result<Running, StartError> {
    let proxy_addr = listeners.proxy.local_addr().map_err(StartError::Addr)?;
    let admin_addr = listeners.admin.local_addr().map_err(StartError::Addr)?;
    let tls_addr = listeners
        .tls
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()
        .map_err(StartError::Addr)?;
    let metrics = Metrics::new()?;
    if let Some(audit) = &config.audit {
        metrics.start_audit(audit)?;
    }
    let poynt = &config.poynt;
    let tls = upstream::tls_config(&poynt.extra_roots)?;
    let origin = upstream::Origin::new(
        &poynt.api_url,
        tls.clone(),
        poynt.connect_timeout,
        poynt.body_idle_timeout,
    )?;
    let connector = upstream::connector(tls, poynt.connect_timeout);
    let signer = AssertionSigner::new(
        poynt.application_id.clone(),
        poynt.audience.clone(),
        poynt.private_key.clone(),
    );
    let token_client = TokenClient::new(
        upstream::pooled(connector.clone()),
        poynt.token_url.clone(),
        poynt.api_version.clone(),
        signer.clone(),
        poynt.token_timeout,
        config.tokens.max_concurrent_grants,
        metrics.clone(),
    );
    let store = Store::open(&config.store, &poynt.application_id, &metrics).await?;
    let broker = Broker::new(
        token_client,
        config.tokens.clone(),
        metrics.clone(),
        Handle::current(),
        store.clone(),
    );
    match broker.restore().await {
        Ok(cached) => tracing::info!(cached, "tokens restored from the store"),
        // A shared store that is down at start-up is an outage like any other: callers are
        // served with local grants meanwhile, and the events task reconciles when it returns.
        Err(error @ StoreError::Unavailable { .. }) => {
            tracing::warn!(%error, "the token store is unavailable at start-up; starting without its records");
        }
        Err(error) => return Err(error.into()),
    }
    broker.watch_store();
    let callers = Callers::new(config.callers.as_ref(), broker.clone(), metrics.clone())?;
    let allow: AllowList = Arc::new(ArcSwapOption::new(config.merchant.allow.clone()));
    let admin_secret: AdminSecret = Arc::new(ArcSwapOption::new(
        config.admin.bearer_token.clone().map(Arc::new),
    ));
    let tls_server = config
        .tls
        .as_ref()
        .map(|tls| ServerTls::new(tls.server.clone()));
    let reloader = Reloader::new(
        &config,
        Reloadable {
            signer,
            callers: callers.clone(),
            tls: tls_server.clone(),
            broker: broker.clone(),
            allow: allow.clone(),
            admin_secret: admin_secret.clone(),
            metrics: metrics.clone(),
        },
    );
    let governor = Governor::new(
        config.limits.clone(),
        metrics.limits().clone(),
        store.shared_limits(),
    );
    let phase = Phase::default();
    // Each listener has its own connection cap, shared by whatever serves it.
    let server = &config.server;
    let limits = || Limits {
        header_read_timeout: server.header_read_timeout,
        keepalive_timeout: server.keepalive_timeout,
        max_header_bytes: server.max_header_bytes,
        connections: Arc::new(Semaphore::new(server.max_connections)),
        max_connections: server.max_connections,
        open: Arc::default(),
        handshake_failures: Arc::default(),
        max_concurrent_streams: server.http2_max_concurrent_streams,
        idle_timeout: server.idle_timeout,
        keep_alive_interval: server.http2_keep_alive_interval,
        keep_alive_timeout: server.http2_keep_alive_timeout,
        grace: server.shutdown_grace,
    };
    let proxy_limits = limits();
    let admin_limits = limits();
    let onboarding_limits = limits();
    let mut served = vec![
        ("proxy", proxy_limits.clone()),
        ("admin", admin_limits.clone()),
    ];
    if listeners.onboarding.is_some() {
        served.push(("onboarding", onboarding_limits.clone()));
    }
    let admin = Admin::new(
        metrics.clone(),
        broker.clone(),
        callers.clone(),
        phase.clone(),
        proxy_limits.clone(),
        served,
        admin_secret,
        reloader.clone(),
    );
    let (access, access_drain) = if telemetry::installed() {
        let (log, drain) =
            AccessLog::start(metrics.access_log_dropped()).map_err(StartError::AccessLog)?;
        (log, Some(drain))
    } else {
        (AccessLog::off(), None)
    };
    let (stop_proxy, proxy_signal) = watch::channel(false);
    let (stop_admin, admin_signal) = watch::channel(false);
    let workers = workers::spawn(
        listeners.proxy,
        listeners.tls.zip(tls_server),
        config.server.workers,
        || {
            let proxy = Proxy::new(
                &config,
                callers.clone(),
                broker.clone(),
                upstream::Upstream::new(origin.clone()),
                governor.clone(),
                allow.clone(),
                metrics.clone(),
                access.clone(),
            );
            move |request, peer| {
                let proxy = proxy.clone();
                async move { proxy.handle(request, peer).await }
            }
        },
        proxy_limits,
        proxy_signal,
    )
    .await?;
    let admin_task = tokio::spawn(server::serve(
        listeners.admin,
        move |request, _peer| {
            let admin = admin.clone();
            async move { admin.handle(request).await }
        },
        admin_limits,
        admin_signal,
    ));
    let onboarding = match (listeners.onboarding, &config.onboarding) {
        (Some(listener), Some(settings)) => {
            let state_key = onboarding::state_key(settings, store.key()).unwrap_or_else(|| {
                tracing::warn!("no state key configured and the memory store has none to derive it from: onboarding states are valid in this process only (set onboarding.state_key_file)");
                StateKey::random()
            });
            let service = Onboarding::new(
                settings,
                &config.oauth,
                &config.poynt,
                state_key,
                SpentStates::new(store.clone()),
                broker.clone(),
                metrics.clone(),
            )
            .await?;
            Some(onboarding::spawn(service, listener, onboarding_limits)?)
        }
        _ => None,
    };
    for warning in config.warnings() {
        tracing::warn!(%warning, "configuration");
    }
    phase.serving();
    let onboarding_addr = onboarding
        .as_ref()
        .map(|o| tracing::field::display(o.addr()));
    tracing::info!(%proxy_addr, %admin_addr, onboarding_addr, upstream = %config.poynt.api_url, workers = config.server.workers, cpus = %CpuBudget::of_this_process(), "poynt-proxy ready");
    Ok(Running {
        proxy_addr,
        admin_addr,
        tls_addr,
        stop_proxy,
        stop_admin,
        phase,
        workers,
        admin_task,
        onboarding,
        reloader,
        access_drain,
    })
}

impl Running {
    /// Reloads the configuration file (SIGHUP): `None` when the configuration was not read
    /// from a file, else what was applied or why nothing was.
    pub async fn reload(&self) -> Option<Result<Applied, ReloadError>> {
        Some(self.reloader.as_ref()?.reload().await)
    }

    /// Where callers connect.
    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy_addr
    }

    /// Where callers connect over TLS, when `tls` is configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// Where health, metrics and admin are served.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Where merchants' browsers connect, when onboarding is configured.
    pub fn onboarding_addr(&self) -> Option<SocketAddr> {
        self.onboarding.as_ref().map(OnboardingServer::addr)
    }

    /// Starts draining: not ready, no new connections, in-flight requests finish.
    pub fn shutdown(&self) {
        self.phase.draining();
        self.stop_proxy.send_replace(true);
        if let Some(onboarding) = &self.onboarding {
            onboarding.shutdown();
        }
    }

    /// Waits until the proxy has drained (after [`Running::shutdown`]) and its last access
    /// lines are written, then stops the admin listener, which stays up meanwhile so the
    /// drain can be watched.
    pub async fn wait(self) {
        self.workers.wait().await;
        if let Some(drain) = self.access_drain {
            drain.finish().await;
        }
        if let Some(onboarding) = self.onboarding {
            onboarding.wait().await;
        }
        self.stop_admin.send_replace(true);
        if let Err(error) = self.admin_task.await {
            tracing::error!(%error, "admin server task failed");
        }
    }
}
