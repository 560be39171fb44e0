//! The admin listener: liveness, readiness, Prometheus metrics, the token admin API and the
//! onboarded merchants. It binds to loopback by default; `/admin/*` can also require a
//! bearer secret.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use secrecy::ExposeSecret;

use crate::audit::Event;
use crate::callers::Callers;
use crate::metrics::Metrics;
use crate::reload::{AdminSecret, ReloadError, Reloader};
use crate::server::Limits;
use crate::token::broker::Broker;
use poynt_wire::ErrorBody;
use poynt_wire::MerchantId;

/// Merchants per page of `GET /admin/tokens` unless `limit` says otherwise.
const DEFAULT_PAGE: usize = 100;
/// The largest page `limit` may ask for.
const MAX_PAGE: usize = 1000;

/// The admin service. Cloning shares it.
#[derive(Clone)]
pub struct Admin {
    inner: Arc<AdminInner>,
}

struct AdminInner {
    metrics: Metrics,
    broker: Broker,
    /// Who used which merchant lately, shown in `/admin/tokens`.
    callers: Callers,
    phase: Phase,
    proxy_limits: Limits,
    listeners: Vec<(&'static str, Limits)>,
    bearer: AdminSecret,
    reloader: Option<Reloader>,
}

/// Where the process is in its life, shared by the lifecycle (which moves it on) and
/// `/readyz` (which says it), so a probe's answer tells a slow start from a drain.
#[derive(Clone, Default)]
pub struct Phase(Arc<AtomicU8>);

const STARTING: u8 = 0;
const SERVING: u8 = 1;
const DRAINING: u8 = 2;

impl Phase {
    /// Every listener serves.
    pub fn serving(&self) {
        self.0.store(SERVING, Ordering::Release);
    }

    /// Shutdown began: no new connections, in-flight requests finish.
    pub fn draining(&self) {
        self.0.store(DRAINING, Ordering::Release);
    }

    /// Why the process cannot take traffic in this phase, if it cannot.
    fn not_serving(&self) -> Option<&'static str> {
        match self.0.load(Ordering::Acquire) {
            SERVING => None,
            STARTING => Some("not ready: starting; the listeners are not serving yet\n"),
            _ => Some(
                "not ready: draining; in-flight requests finish, new connections are refused\n",
            ),
        }
    }
}

impl Admin {
    /// `phase` is shared with the lifecycle: starting until the listeners serve, draining once
    /// shutdown starts, so a load balancer stops sending traffic before connections close.
    /// `proxy_limits` is the callers' listener's: with every connection permit taken the
    /// proxy cannot take a new caller, so it is not ready either. `listeners` are every
    /// listener's limits by name (`proxy`, `admin`, `onboarding`), for the connection gauges.
    #[allow(clippy::too_many_arguments)] // each is a distinct shared handle; a struct of them would only rename this list
    pub fn new(
        metrics: Metrics,
        broker: Broker,
        callers: Callers,
        phase: Phase,
        proxy_limits: Limits,
        listeners: Vec<(&'static str, Limits)>,
        bearer: AdminSecret,
        reloader: Option<Reloader>,
    ) -> Self {
        Self {
            inner: Arc::new(AdminInner {
                metrics,
                broker,
                callers,
                phase,
                proxy_limits,
                listeners,
                bearer,
                reloader,
            }),
        }
    }

    /// Ready: started, not draining, with a store key that was not refused, and with room
    /// for one more caller connection.
    fn readiness(&self) -> Result<(), &'static str> {
        let inner = &self.inner;
        if let Some(why) = inner.phase.not_serving() {
            return Err(why);
        }
        if inner.broker.store_key_refused() {
            return Err(
                "not ready: the token store answered and no configured key opens it; this replica is read-only until restarted with the right store key\n",
            );
        }
        if inner.proxy_limits.connection_counts().1 == 0 {
            return Err(
                "not ready: every caller connection permit is taken (server.max_connections)\n",
            );
        }
        Ok(())
    }

    /// Answers one admin request.
    pub async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let inner = &self.inner;
        let path = request.uri().path().to_owned();
        let method = request.method().clone();
        match (&method, path.as_str()) {
            (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
            (&Method::GET, "/readyz") => match self.readiness() {
                Ok(()) => text(StatusCode::OK, "ready\n"),
                Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, why),
            },
            (&Method::GET, "/metrics") => {
                let (cached, backing_off) = inner.broker.counts().await;
                inner.metrics.set_token_gauges(cached, backing_off);
                for (listener, limits) in &inner.listeners {
                    let (open, available) = limits.connection_counts();
                    inner.metrics.set_connections(listener, open, available);
                    for (reason, count) in limits.handshake_failures.counts() {
                        inner
                            .metrics
                            .set_handshake_failures(listener, reason, count);
                    }
                }
                let mut response = text(StatusCode::OK, inner.metrics.render());
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
            (_, p) if p == "/admin" || p.starts_with("/admin/") => {
                let credential = self.credential(&request);
                let response = self.admin_api(credential, &method, request.uri()).await;
                let status = response.status().as_u16();
                let credential = credential.unwrap_or(NO_CREDENTIAL);
                inner
                    .metrics
                    .audit(|| Event::admin(credential, &method, p, status));
                response
            }
            _ => not_found(&method, &path),
        }
    }

    /// `/admin/*` for a request that presented `credential` (`None`: a wrong one).
    async fn admin_api(
        &self,
        credential: Option<&'static str>,
        method: &Method,
        uri: &http::Uri,
    ) -> Response<Full<Bytes>> {
        if credential.is_none() {
            return error(
                StatusCode::UNAUTHORIZED,
                "ADMIN_UNAUTHORIZED",
                "expected Authorization: Bearer <admin secret>; found none or a wrong one",
            );
        }
        let p = uri.path();
        if p == RELOAD_PATH {
            return self.reload(method).await;
        }
        if p == MERCHANTS_PATH || p.starts_with("/admin/merchants/") {
            return self.merchants_api(method, p, uri.query()).await;
        }
        if p == TOKENS_PATH || p.starts_with("/admin/tokens/") {
            return self.tokens_api(method, uri).await;
        }
        not_found(method, p)
    }

    /// The admin credential `request` proves, by name for the audit trail: `admin.bearer_token`,
    /// or [`NO_CREDENTIAL`] when no secret is configured; `None` when one is and the request
    /// does not present it.
    fn credential(&self, request: &Request<Incoming>) -> Option<&'static str> {
        let secret = self.inner.bearer.load();
        let Some(secret) = &*secret else {
            return Some(NO_CREDENTIAL);
        };
        let presented = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        presented
            .is_some_and(|p| {
                aws_lc_rs::constant_time::verify_slices_are_equal(
                    p.as_bytes(),
                    secret.expose_secret().as_bytes(),
                )
                .is_ok()
            })
            .then_some("admin.bearer_token")
    }

    /// `value` (a status or a page of them) with each merchant's recent callers added as
    /// `callers`, so the token view answers "who uses this merchant?" too.
    fn with_callers(&self, value: &impl serde::Serialize) -> serde_json::Value {
        let mut value = serde_json::to_value(value).unwrap_or_default();
        let callers = &self.inner.callers;
        let mut add = |status: &mut serde_json::Value| {
            let merchant = status["merchant"]
                .as_str()
                .and_then(|m| MerchantId::parse(m).ok());
            if let Some(merchant) = merchant {
                status["callers"] = serde_json::json!(callers.recent(merchant));
            }
        };
        match value
            .get_mut("merchants")
            .and_then(serde_json::Value::as_array_mut)
        {
            Some(page) => page.iter_mut().for_each(&mut add),
            None => add(&mut value),
        }
        value
    }

    async fn tokens_api(&self, method: &Method, uri: &http::Uri) -> Response<Full<Bytes>> {
        let broker = &self.inner.broker;
        let path = uri.path();
        let rest = path.trim_start_matches(TOKENS_PATH);
        if rest.is_empty() || rest == "/" {
            return match *method {
                Method::GET => match page(uri.query()) {
                    Ok((after, limit)) => json(
                        StatusCode::OK,
                        &self.with_callers(&broker.statuses(after, limit).await),
                    ),
                    Err(message) => error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message),
                },
                _ => method_not_allowed(method, path),
            };
        }
        let mut parts = rest.trim_start_matches('/').splitn(2, '/');
        let id = parts.next().unwrap_or_default();
        let action = parts.next();
        let Ok(merchant) = MerchantId::parse(id) else {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_MERCHANT_ID",
                format!("expected /admin/tokens/<business id>; found {path:?}"),
            );
        };
        match (method, action) {
            (&Method::GET, None) => match broker.status(merchant).await {
                Some(status) => json(StatusCode::OK, &self.with_callers(&status)),
                None => error(
                    StatusCode::NOT_FOUND,
                    "UNKNOWN_MERCHANT",
                    format!("expected a merchant the proxy holds state for; found {merchant}"),
                ),
            },
            (&Method::DELETE, None) => match broker.evict(merchant).await {
                Ok(evicted) => json(StatusCode::OK, &serde_json::json!({ "evicted": evicted })),
                Err(e) => store_unavailable(&e),
            },
            (&Method::POST, Some("refresh")) => match broker.renew_now(merchant).await {
                Ok(token) => match broker.confirm_stored(merchant, &token).await {
                    Ok(()) => match broker.status(merchant).await {
                        Some(status) => json(StatusCode::OK, &status),
                        None => json(StatusCode::OK, &serde_json::json!({})),
                    },
                    Err(e) => store_unavailable(&e),
                },
                Err(e) => error(StatusCode::BAD_GATEWAY, "TOKEN_UNAVAILABLE", e.to_string()),
            },
            _ => method_not_allowed(method, path),
        }
    }
}

/// The admin credential of a call that proved none: no secret is configured, or the
/// request did not present it.
const NO_CREDENTIAL: &str = "none";

/// The cached tokens' collection.
const TOKENS_PATH: &str = "/admin/tokens";

/// 404 for a path the admin listener does not serve, naming the ones it does.
fn not_found(method: &Method, path: &str) -> Response<Full<Bytes>> {
    error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!(
            "expected /healthz, /readyz, /metrics, /admin/tokens, /admin/merchants or /admin/reload; found {method} {path}"
        ),
    )
}

// --- Configuration reload ---------------------------------------------------------------

/// `POST` here reloads the configuration file, as SIGHUP does.
const RELOAD_PATH: &str = "/admin/reload";

impl Admin {
    /// `POST /admin/reload`: 200 with what changed when applied, 409 when a change needs a
    /// restart, 422 when the file does not validate (the running configuration stays).
    async fn reload(&self, method: &Method) -> Response<Full<Bytes>> {
        if method != Method::POST {
            return method_not_allowed(method, RELOAD_PATH);
        }
        let Some(reloader) = &self.inner.reloader else {
            return error(
                StatusCode::CONFLICT,
                "RELOAD_UNAVAILABLE",
                "expected a configuration file to reload; found a configuration that was not read from one",
            );
        };
        match reloader.reload().await {
            Ok(applied) => json(StatusCode::OK, &applied),
            Err(refused @ ReloadError::RestartNeeded { .. }) => error(
                StatusCode::CONFLICT,
                "RESTART_REQUIRED",
                refused.to_string(),
            ),
            Err(refused) => error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "INVALID_CONFIG",
                refused.to_string(),
            ),
        }
    }
}

// --- Onboarded merchants -----------------------------------------------------------------

/// The onboarded merchants' collection.
const MERCHANTS_PATH: &str = "/admin/merchants";

/// One page of onboarded merchants; `next_after` is the `after` value of the next page.
#[derive(serde::Serialize)]
struct MerchantsPage {
    merchants: Vec<crate::token::broker::OnboardedMerchant>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after: Option<String>,
}

/// `?limit=&after=` of a paged list: how many, after which business ID.
fn page(query: Option<&str>) -> Result<(Option<MerchantId>, usize), String> {
    let mut after = None;
    let mut limit = DEFAULT_PAGE;
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match &*key {
            "after" => {
                after = Some(MerchantId::parse(&value).map_err(|e| format!("after: {e}"))?);
            }
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| {
                        format!("limit: expected a number from 1 to {MAX_PAGE}; found {value:?}")
                    })?;
            }
            other => {
                return Err(format!(
                    "expected only the query parameters limit and after; found {other:?}"
                ));
            }
        }
    }
    Ok((after, limit))
}

impl Admin {
    /// `GET /admin/merchants?limit=&after=` (sorted by business ID, `after` exclusive) and
    /// `DELETE /admin/merchants/{id}` (forget that merchant's grant).
    async fn merchants_api(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
    ) -> Response<Full<Bytes>> {
        let broker = &self.inner.broker;
        if path == MERCHANTS_PATH {
            if method != Method::GET {
                return method_not_allowed(method, path);
            }
            let (after, limit) = match page(query) {
                Ok(params) => params,
                Err(message) => return error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message),
            };
            let onboarded = match broker.onboarded().await {
                Ok(onboarded) => onboarded,
                Err(e) => return store_unavailable(&e),
            };
            let mut merchants: Vec<_> = onboarded
                .into_iter()
                .filter(|m| {
                    after.is_none_or(|after| {
                        MerchantId::parse(&m.business_id).is_ok_and(|id| id > after)
                    })
                })
                .take(limit + 1)
                .collect();
            let next_after = (merchants.len() > limit).then(|| {
                merchants.truncate(limit);
                merchants
                    .last()
                    .map(|m| m.business_id.clone())
                    .unwrap_or_default()
            });
            return json(
                StatusCode::OK,
                &MerchantsPage {
                    merchants,
                    next_after,
                },
            );
        }
        let id = path.trim_start_matches("/admin/merchants/");
        let Ok(merchant) = MerchantId::parse(id) else {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_MERCHANT_ID",
                format!("expected /admin/merchants/<business id>; found {path:?}"),
            );
        };
        match *method {
            Method::DELETE => match broker.forget(merchant).await {
                Ok(forgotten) => json(
                    StatusCode::OK,
                    &serde_json::json!({ "forgotten": forgotten }),
                ),
                Err(e) => store_unavailable(&e),
            },
            _ => method_not_allowed(method, path),
        }
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response<Full<Bytes>> {
    json(status, &ErrorBody::new(code, status.as_u16(), message))
}

/// An admin write (or read) the store did not take: 503, so a caller retries instead of
/// believing an eviction or renewal that no other replica, and no restart, would see.
fn store_unavailable(cause: &crate::store::StoreError) -> Response<Full<Bytes>> {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "STORE_UNAVAILABLE",
        format!("expected the token store to take the change; found: {cause}"),
    )
}

fn method_not_allowed(method: &Method, path: &str) -> Response<Full<Bytes>> {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        format!("{method} is not supported on {path}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_says_which_phase_keeps_it_from_serving() {
        let phase = Phase::default();
        assert_eq!(
            phase.not_serving(),
            Some("not ready: starting; the listeners are not serving yet\n")
        );
        phase.serving();
        assert_eq!(phase.not_serving(), None);
        phase.draining();
        assert!(
            phase
                .not_serving()
                .is_some_and(|why| why.contains("draining"))
        );
    }
}
