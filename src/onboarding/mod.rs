//! Merchant onboarding: the one listener meant for merchants' browsers (behind the
//! operator's TLS ingress).
//!
//! `GET /connect` sends the browser to Poynt's authorize page with a state the proxy can
//! later prove it issued; `GET /oauth/callback` is where Poynt sends it back: the state, the
//! merchant's answer and Poynt's signed code are verified in that order, the code is
//! exchanged for the merchant's token and refresh token (kept by the broker), and a page
//! says how it went; `GET /connect/signed-out` is where Poynt's sign-out returns.
//!
//! Parts: `routes` (the handlers), [`state`] (state values), [`spent`] (the spent
//! set), [`verify`] (the code), [`code_key`] (the key that verifies it), [`business`] (the
//! business's name, from Poynt), [`seal`] (what lets the success page show that name),
//! [`pages`] (HTML and the security headers), [`config`] (its settings). This file is the outer shell: the router, and for each callback one
//! metric update and one log line, which never carry a code, a state or a token.

pub mod business;
pub mod code_key;
pub mod config;
pub mod pages;
mod routes;
pub mod seal;
pub mod spent;
pub mod state;
pub mod verify;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::metrics::Metrics;
use crate::server::{self, Limits};
use crate::store::seal::Key;
use crate::token::broker::Broker;
use crate::token::config::PoyntConfig;
use crate::upstream::{self, UpstreamError};
use business::BusinessLookup;
use code_key::{CodeKeySource, CodeKeys};
use config::{OauthConfig, OnboardingConfig};
use spent::SpentStates;
use state::StateKey;

/// Path that starts onboarding.
pub const CONNECT_PATH: &str = "/connect";
/// Path Poynt redirects back to; `public_url` + this is the redirect URI.
pub const CALLBACK_PATH: &str = "/oauth/callback";
/// Path Poynt's sign-out returns to.
pub const SIGNED_OUT_PATH: &str = "/connect/signed-out";
/// Where a callback that stored the grant sends the browser (303, `?businessId=`), so the
/// code leaves the address bar and a reload shows the success again.
pub const CONNECTED_PATH: &str = "/connect/connected";

/// Why onboarding could not start or a URL could not be built.
#[derive(Debug, thiserror::Error)]
pub enum OnboardingError {
    /// A `return_to` outside the allowed origins.
    #[error(
        "return_to: expected an absolute URL on the origin of onboarding.public_url or onboarding.success_redirect; found {0:?}"
    )]
    ReturnTo(String),
    /// The TLS configuration for fetching the code key was refused.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The listener's address could not be read.
    #[error("cannot read the onboarding listener's address: {0}")]
    Addr(#[source] std::io::Error),
}

/// What the handlers need from the configuration, resolved once.
struct Settings {
    authorize_url: String,
    client_id: String,
    redirect_uri: String,
    public_url: String,
    signout_url: String,
    success_redirect: Option<String>,
    code_issuer: String,
    state_ttl: Duration,
    app_name: String,
}

impl Settings {
    fn new(onboarding: &OnboardingConfig, oauth: &OauthConfig, client_id: &str) -> Self {
        Self {
            authorize_url: oauth.authorize_url.to_string(),
            client_id: client_id.to_owned(),
            redirect_uri: onboarding.redirect_uri.clone(),
            public_url: onboarding.public_url.clone(),
            signout_url: oauth.signout_url.to_string(),
            success_redirect: onboarding.success_redirect.clone(),
            code_issuer: onboarding.code_issuer.clone(),
            state_ttl: onboarding.state_ttl,
            app_name: onboarding.app_name.clone(),
        }
    }

    /// Whether `url` may be a `return_to`: absolute, on `public_url`'s origin or
    /// `success_redirect`'s, so `/connect` can never redirect a browser elsewhere.
    fn allows_return_to(&self, url: &str) -> bool {
        let Some(target) = origin(url) else {
            return false;
        };
        std::iter::once(self.public_url.as_str())
            .chain(self.success_redirect.as_deref())
            .any(|allowed| origin(allowed).as_ref() == Some(&target))
    }

    /// Poynt's authorize URL carrying `state` as the `context`.
    fn authorize_url(&self, state: &str) -> String {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("redirect_uri", &self.redirect_uri)
            .append_pair("client_id", &self.client_id)
            .append_pair("context", state)
            .finish();
        format!("{}?{query}", self.authorize_url)
    }
}

/// Scheme, host (lowercase) and port of an absolute http(s) URL; `None` for anything else,
/// including text with spaces, backslashes or control characters that browsers might read
/// differently from this parser.
fn origin(url: &str) -> Option<(String, String, u16)> {
    if url
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
    {
        return None;
    }
    let uri: Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => 443,
        "http" => 80,
        _ => return None,
    };
    let host = uri.host()?.to_ascii_lowercase();
    Some((scheme, host, uri.port_u16().unwrap_or(default_port)))
}

/// What the state key is derived under from the store key.
const STATE_KEY_PURPOSE: &[u8] = b"poynt-proxy onboarding state key v1";

/// The key states are authenticated with: `onboarding.state_key_file` when configured, else
/// one derived from the token store's key — which every replica sharing the store, and
/// `poynt-proxy authorize-url` reading the same configuration, hold — else (the memory
/// backend) `None`.
pub fn state_key(onboarding: &OnboardingConfig, store_key: Option<&Key>) -> Option<StateKey> {
    onboarding.state_key.clone().or_else(|| {
        store_key.map(|key| {
            StateKey::new(*secrecy::ExposeSecret::expose_secret(
                &key.derive(STATE_KEY_PURPOSE),
            ))
        })
    })
}

/// `poynt-proxy authorize-url`: Poynt's authorize URL for the app `client_id` with a fresh
/// state issued under `key`, carrying `return_to` when given (checked as `/connect` checks it).
pub fn authorize_url(
    onboarding: &OnboardingConfig,
    oauth: &OauthConfig,
    client_id: &str,
    key: &StateKey,
    return_to: Option<&str>,
) -> Result<String, OnboardingError> {
    let settings = Settings::new(onboarding, oauth, client_id);
    if let Some(url) = return_to
        && !settings.allows_return_to(url)
    {
        return Err(OnboardingError::ReturnTo(url.to_owned()));
    }
    let state = key.issue(return_to, settings.state_ttl, std::time::SystemTime::now());
    Ok(settings.authorize_url(secrecy::ExposeSecret::expose_secret(&state)))
}

/// The onboarding service. Cloning shares it.
#[derive(Clone)]
pub struct Onboarding {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    state_key: StateKey,
    spent: SpentStates,
    keys: CodeKeys,
    broker: Broker,
    business: BusinessLookup,
    metrics: Metrics,
}

impl Onboarding {
    /// Builds the service from its own section, Poynt's pages (`oauth`) and the app's
    /// identity and TLS settings (`poynt`). With `code_key: tls`, fetches the authorize host's
    /// key now (a failure is logged, and fetching is tried again at the first callback).
    pub async fn new(
        onboarding: &OnboardingConfig,
        oauth: &OauthConfig,
        poynt: &PoyntConfig,
        state_key: StateKey,
        spent: SpentStates,
        broker: Broker,
        metrics: Metrics,
    ) -> Result<Self, OnboardingError> {
        let settings = Settings::new(onboarding, oauth, &poynt.application_id);
        let keys = match &onboarding.code_key {
            CodeKeySource::Fixed(key) => CodeKeys::fixed(key.clone()),
            CodeKeySource::Tls => {
                let keys = CodeKeys::tls(
                    &oauth.authorize_url,
                    upstream::tls_config(&poynt.extra_roots)?,
                    poynt.connect_timeout,
                );
                let _ = keys.refetch().await;
                keys
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                state_key,
                spent,
                keys,
                broker,
                business: BusinessLookup::new(poynt)?,
                metrics,
            }),
        })
    }

    /// Answers one request.
    pub async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        self.answer(request.method(), request.uri()).await
    }

    /// The router: only `GET` on the four paths; anything else gets a page too. Every
    /// request gets a fresh id: the reference an error page shows and its log line carries.
    pub async fn answer(&self, method: &Method, uri: &Uri) -> Response<Full<Bytes>> {
        let inner = &self.inner;
        let app = inner.settings.app_name.as_str();
        let path = uri.path();
        let known = matches!(
            path,
            CONNECT_PATH | CALLBACK_PATH | SIGNED_OUT_PATH | CONNECTED_PATH
        );
        if !known {
            return pages::respond(StatusCode::NOT_FOUND, pages::not_found(app));
        }
        if method != Method::GET {
            let mut response =
                pages::respond(StatusCode::METHOD_NOT_ALLOWED, pages::not_found(app));
            response
                .headers_mut()
                .insert(http::header::ALLOW, http::HeaderValue::from_static("GET"));
            return response;
        }
        let reference = uuid::Uuid::new_v4().to_string();
        match path {
            CONNECT_PATH => {
                routes::connect(&inner.settings, &inner.state_key, uri.query(), &reference)
            }
            SIGNED_OUT_PATH => pages::respond(StatusCode::OK, pages::signed_out(app)),
            CONNECTED_PATH => routes::connected(inner, uri.query(), &reference).await,
            _ => {
                let started = tokio::time::Instant::now();
                let (response, record) = routes::callback(inner, uri.query(), &reference).await;
                record.finish(&inner.metrics, started.elapsed());
                response
            }
        }
    }
}

/// The onboarding listener, served on the caller's runtime.
pub struct OnboardingServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Starts serving `onboarding` on `listener` with its own connection `limits`.
pub fn spawn(
    onboarding: Onboarding,
    listener: TcpListener,
    limits: Limits,
) -> Result<OnboardingServer, OnboardingError> {
    let addr = listener.local_addr().map_err(OnboardingError::Addr)?;
    let (stop, signal) = watch::channel(false);
    let task = tokio::spawn(server::serve(
        listener,
        move |request, _peer| {
            let onboarding = onboarding.clone();
            async move { onboarding.handle(request).await }
        },
        limits,
        signal,
    ));
    Ok(OnboardingServer { addr, stop, task })
}

impl OnboardingServer {
    /// Where merchants' browsers (through the ingress) connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting; open connections finish within the grace period.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }

    /// Waits for the drain to end.
    pub async fn wait(self) {
        if let Err(error) = self.task.await {
            tracing::error!(%error, "onboarding server task failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(success_redirect: Option<&str>) -> Settings {
        Settings {
            authorize_url: "https://poynt.net/applications/authorize".into(),
            client_id: "urn:aid:x".into(),
            redirect_uri: "https://connect.example.com/oauth/callback".into(),
            public_url: "https://connect.example.com".into(),
            signout_url: "https://services.poynt.net/auth/signout".into(),
            success_redirect: success_redirect.map(str::to_owned),
            code_issuer: "https://poynt.net".into(),
            state_ttl: Duration::from_secs(600),
            app_name: "Acme".into(),
        }
    }

    #[test]
    fn return_to_is_honoured_only_on_the_allowed_origins() {
        let s = settings(Some("https://app.example.com/welcome"));
        for good in [
            "https://connect.example.com/anything?x=1",
            "https://CONNECT.example.com:443/",
            "https://app.example.com/other",
        ] {
            assert!(s.allows_return_to(good), "{good}");
        }
        for bad in [
            "https://evil.example/",
            "//evil.example/",
            "/relative",
            "http://connect.example.com/",
            "https://connect.example.com:8443/",
            "https://connect.example.com@evil.example/",
            "https://connect.example.com\\@evil.example/",
            "javascript:alert(1)",
            "https://connect.example.com.evil.example/",
            "https://app.example.com /x",
        ] {
            assert!(!s.allows_return_to(bad), "{bad}");
        }
        assert!(!settings(None).allows_return_to("https://app.example.com/other"));
    }

    #[test]
    fn the_authorize_url_carries_redirect_client_and_state() {
        let url = settings(None).authorize_url("st&ate");
        assert_eq!(
            url,
            "https://poynt.net/applications/authorize?redirect_uri=https%3A%2F%2Fconnect.example.com%2Foauth%2Fcallback&client_id=urn%3Aaid%3Ax&context=st%26ate"
        );
    }
}
