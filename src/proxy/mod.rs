//! The life of one proxied request, as phases:
//!
//! ```text
//! 0 authenticate  with `callers` configured: the caller its credentials prove, or 401
//!            (before anything looks at the merchant)
//! 1 admit    method (GET HEAD POST PUT PATCH DELETE OPTIONS, else 405), declared body
//!            size, merchant header -> MerchantId, allow-list
//! 2 guard    the normalised path; a /businesses/{id}/... path must name the same merchant
//! 2a authorize the caller's policy allows this merchant, method and guarded path, or 403
//!            (so a refused caller never causes a token lookup, a grant or a request)
//! 2b limit   the circuit breaker (503 while open), then the merchant's limits (see
//!            `limits`): a cool-down after Poynt's 429, its token bucket, an in-flight slot
//!            (held until Poynt's head arrives); refused -> 429 before any token lookup or
//!            call to Poynt
//! 3 token    broker.token(merchant): cache hit, or one shared grant for all waiters
//! 4 rewrite  drop hop-by-hop, merchant header, caller Authorization, forwarding headers;
//!            add Authorization, api-version, Poynt-Request-Id (decided as the head is
//!            written upstream, see `headers`)
//! 5 send     the worker's upstream client with a response-header timeout; bodies stream
//!            both ways, the caller's under a size cap and a progress deadline, trailers
//!            dropped
//!            a kept body whose exchange failed (no connection or head, 502/503/504) is sent
//!            again when `limits.retries` allows it (idempotent, within the budget)
//! 6 retry    upstream 401 -> drop exactly that token (rate-limited by the broker), get a
//!            fresh one, send once more (only when the request body was small enough to keep)
//!            (after every exchange: a Poynt 429 starts the merchant's cool-down and is
//!            marked as Poynt's; a 5xx, timeout or connection failure counts toward the
//!            breaker, any other answer closes it)
//! 7 respond  stream back; one metrics update and one log line per request (and, when Poynt's
//!            body fails after its head went out, one more of each, from the body)
//! ```
//!
//! [`Proxy::handle`] is the outer shell (request id, error → JSON, the record step);
//! [`Proxy::handle_inner`] runs the phases in order.

pub mod admit;
pub mod body;
pub mod error;
pub mod headers;
pub mod path;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, Entry};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::callers::{Callers, UNKNOWN};
use crate::config::Config;
use crate::limits::Governor;
use crate::metrics::{BodyFailure, Metrics};
use crate::report::error_chain;
use crate::token::Token;
use crate::token::broker::{Broker, TokenSource, UnauthorizedAction};
use crate::upstream::{
    BodyWatcher, BoxError, RequestBody, RequestHead, ResponseBody, SendError, Upstream,
    UpstreamBody,
};
use poynt_wire::MerchantId;

use self::body::{BodyError, CallerBody};
use self::error::ProxyError;
use self::headers::Rewritten;

/// Body of every response to callers: Poynt's, streamed untouched, or the proxy's own error.
pub type ProxyBody = Either<ResponseBody, Full<Bytes>>;

/// The merchants served when `merchant.allow` is set, shared by every worker and replaced
/// whole by a reload; `None` when every merchant is served.
pub type AllowList = Arc<ArcSwapOption<HashSet<MerchantId>>>;

/// The forwarding service. Cloning shares it.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<ProxyInner>,
}

struct ProxyInner {
    callers: Callers,
    broker: Broker,
    upstream: Upstream,
    governor: Governor,
    merchant_header: HeaderName,
    allow: AllowList,
    api_version: HeaderValue,
    max_body: u64,
    retry_buffer: usize,
    body_read_timeout: Duration,
    response_timeout: Duration,
    metrics: Metrics,
    /// `metrics` again, as what hears of a response body failing after its head was sent.
    body_watcher: Arc<dyn BodyWatcher>,
}

/// What the phases learned, for the record step.
#[derive(Default)]
struct Context {
    /// The proven caller, for the access log.
    caller: Option<Arc<str>>,
    /// The `caller` metric label: a configured caller's name, or `unknown`.
    caller_label: Option<Arc<str>>,
    merchant: Option<MerchantId>,
    source: Option<TokenSource>,
    upstream_elapsed: Option<Duration>,
    /// When the last upstream exchange returned: the record step's clock reading when
    /// nothing happened since (clock reads cost: docs/BENCHMARKS.md, "CPU per proxied
    /// request").
    upstream_done: Option<Instant>,
    retried: bool,
    /// The limit a request would have met, when limits only observe (Envoy's `RL` flag).
    limit_observed: Option<crate::metrics::LimitReason>,
}

/// What every attempt at a request sends, whatever its token: the caller's head and the
/// guarded path.
struct Outgoing<'a> {
    parts: &'a Parts,
    path: &'a str,
    request_id: &'a HeaderValue,
}

/// A request body ready to send: kept whole (so a 401 can be retried) or streamed.
enum Prepared {
    Buffered(Bytes),
    Streamed(UpstreamBody),
}

/// Raises the in-flight gauge for as long as it lives, so a request whose connection drops
/// mid-way still lowers it.
struct Inflight<'a>(&'a prometheus::IntGauge);

impl<'a> Inflight<'a> {
    fn new(gauge: &'a prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for Inflight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A response body that failed after its head went to the caller: one access-log line
/// (`response_flags="body_failed"`) and the count by reason.
impl BodyWatcher for Metrics {
    fn body_failed(&self, request_id: &HeaderValue, error: &SendError) {
        let failure = match error {
            SendError::BodyIdle(_) => BodyFailure::IdleTimeout,
            SendError::Malformed(_) => BodyFailure::Framing,
            SendError::Closed(_) => BodyFailure::Closed,
            _ => BodyFailure::Reset,
        };
        self.response_body_failed(failure);
        tracing::warn!(
            target: "poynt_proxy::access",
            request_id = request_id.to_str().unwrap_or_default(),
            response_flags = "body_failed",
            reason = failure.as_str(),
            %error,
            "response body failed after its head was sent; the caller's response is aborted"
        );
    }
}

impl Proxy {
    /// Builds the proxy over a broker and a worker's upstream client.
    pub fn new(
        config: &Config,
        callers: Callers,
        broker: Broker,
        upstream: Upstream,
        governor: Governor,
        allow: AllowList,
        metrics: Metrics,
    ) -> Self {
        Self {
            inner: Arc::new(ProxyInner {
                callers,
                broker,
                upstream,
                governor,
                merchant_header: config.merchant.header.clone(),
                allow,
                api_version: config.poynt.api_version.clone(),
                max_body: config.server.max_request_body_bytes,
                retry_buffer: config.server.retry_buffer_bytes,
                body_read_timeout: config.server.body_read_timeout,
                response_timeout: config.poynt.response_timeout,
                body_watcher: Arc::new(metrics.clone()),
                metrics,
            }),
        }
    }

    /// Answers one caller request; never fails (failures become Poynt-shaped JSON errors).
    pub async fn handle(&self, request: Request<Incoming>) -> Response<ProxyBody> {
        let started = Instant::now();
        let inner = &self.inner;
        let _inflight = Inflight::new(inner.metrics.inflight());
        let request_id = headers::request_id(request.headers());
        let (parts, body) = request.into_parts();
        let mut ctx = Context::default();
        let (mut response, error) =
            match self.handle_inner(&parts, body, &request_id, &mut ctx).await {
                Ok(mut response) => {
                    // Shares the id's bytes and the watcher: no allocation.
                    response
                        .body_mut()
                        .watch(request_id.clone(), inner.body_watcher.clone());
                    (response.map(Either::Left), None)
                }
                Err(error) => (
                    error.to_response(&request_id).map(Either::Right),
                    Some(error),
                ),
            };
        self.record(
            &parts,
            &request_id,
            &response,
            &ctx,
            started,
            error.as_ref(),
        );
        // Moved, not cloned: a clone of a freshly made value would allocate.
        if let Entry::Vacant(slot) = response.headers_mut().entry(headers::REQUEST_ID) {
            slot.insert(request_id);
        }
        response
    }

    async fn handle_inner(
        &self,
        parts: &Parts,
        body: Incoming,
        request_id: &HeaderValue,
        ctx: &mut Context,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let inner = &self.inner;
        // 0 authenticate
        let identity = inner
            .callers
            .authenticate(&parts.headers, &parts.extensions)
            .await?;
        ctx.caller = identity.name().cloned();
        ctx.caller_label = identity.configured().cloned();
        // 1 admit
        if !is_forwarded_method(&parts.method) {
            return Err(ProxyError::MethodNotAllowed(parts.method.clone()));
        }
        let merchant = admit::merchant_from_headers(&parts.headers, &inner.merchant_header)?;
        ctx.merchant = Some(merchant);
        if let Some(allow) = &*inner.allow.load()
            && !allow.contains(&merchant)
        {
            return Err(ProxyError::MerchantNotAllowed {
                merchant: merchant.to_string(),
            });
        }
        let declared = declared_length(&parts.headers);
        if let Some(length) = declared
            && length > inner.max_body
        {
            return Err(ProxyError::PayloadTooLarge {
                limit: inner.max_body,
                found: length.to_string(),
            });
        }
        // 2 guard
        let path = path::guard_path(parts.uri.path(), merchant, &inner.merchant_header)?;
        // 2a authorize
        inner
            .callers
            .authorize(&identity, merchant, &parts.method, &path)
            .await?;
        // 2b limit: the admission holds the merchant's in-flight slot until this returns
        let admission = inner.governor.admit(merchant).await?;
        ctx.limit_observed = admission.observed;
        // 3 token
        let (token, source) = inner.broker.token(merchant).await?;
        ctx.source = Some(source);
        // 4 rewrite: decided field by field as the head is written, in `send`
        let outgoing = Outgoing {
            parts,
            path: &path,
            request_id,
        };
        // 5 send
        let bytes = match self.prepare_body(body).await? {
            Prepared::Streamed(stream) => {
                let response = self
                    .send(&outgoing, &token, RequestBody::Stream(stream), ctx)
                    .await?;
                if response.status() == StatusCode::UNAUTHORIZED {
                    // Not resendable, but the refused token must not serve the next request.
                    inner.broker.unauthorized(merchant, &token).await;
                    ctx.upstream_done = None;
                }
                return Ok(response);
            }
            Prepared::Buffered(bytes) => bytes,
        };
        let named = parts.headers.get(headers::REQUEST_ID) == Some(request_id);
        let mut retries = inner.governor.retries(&parts.method, named);
        // Bounded by limits.retries.max: `before_retry` says no once they are spent.
        let response = loop {
            let result = self
                .send(&outgoing, &token, RequestBody::Full(bytes.clone()), ctx)
                .await;
            let failed = match &result {
                Ok(response) => Some(Some(response.status())),
                Err(ProxyError::UpstreamUnavailable(_)) => Some(None),
                Err(_) => None,
            };
            match failed {
                Some(status) if inner.governor.before_retry(&mut retries, status).await => {
                    ctx.retried = true;
                }
                _ => break result?,
            }
        };
        // 6 retry
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let action = inner.broker.unauthorized(merchant, &token).await;
        ctx.upstream_done = None;
        if action != UnauthorizedAction::Renew {
            return Ok(response);
        }
        drop(response);
        // Boxed: rare, and as large as everything before it.
        Box::pin(self.retry_unauthorized(merchant, &outgoing, bytes, ctx)).await
    }

    /// Phase 6: the refused token is gone; get a fresh one and send once more.
    async fn retry_unauthorized(
        &self,
        merchant: MerchantId,
        outgoing: &Outgoing<'_>,
        body: Bytes,
        ctx: &mut Context,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let inner = &self.inner;
        inner.metrics.unauthorized_retry();
        ctx.retried = true;
        let (token, _) = inner.broker.token(merchant).await?;
        self.send(outgoing, &token, RequestBody::Full(body), ctx)
            .await
    }

    /// Keeps small bodies whole (they can be resent after a 401) and streams the rest under
    /// the size cap, so a large upload is never held in memory. Either way the body must
    /// keep arriving: a gap of `server.body_read_timeout` ends the request.
    async fn prepare_body(&self, body: Incoming) -> Result<Prepared, ProxyError> {
        let inner = &self.inner;
        if body.is_end_stream() {
            return Ok(Prepared::Buffered(Bytes::new()));
        }
        let keep = body
            .size_hint()
            .upper()
            .is_some_and(|upper| upper <= inner.retry_buffer as u64);
        let body = CallerBody::new(body, inner.max_body, inner.body_read_timeout);
        if !keep {
            return Ok(Prepared::Streamed(body.map_err(BoxError::from).boxed()));
        }
        let collected = body
            .collect()
            .await
            .map_err(|error| self.body_error(&error))?;
        Ok(Prepared::Buffered(collected.to_bytes()))
    }

    /// What the caller is told when its body failed.
    fn body_error(&self, error: &BodyError) -> ProxyError {
        match error {
            BodyError::Stalled(_) => ProxyError::RequestTimeout(error.to_string()),
            BodyError::TooLarge { limit } => ProxyError::PayloadTooLarge {
                limit: *limit,
                found: "a longer stream".into(),
            },
            BodyError::Malformed(_) => ProxyError::InvalidRequestBody(error_chain(error)),
        }
    }

    /// Phases 4 and 5: one exchange with Poynt with `token` injected, bounded by the
    /// response-header timeout.
    async fn send(
        &self,
        outgoing: &Outgoing<'_>,
        token: &Token,
        body: RequestBody,
        ctx: &mut Context,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let inner = &self.inner;
        let parts = outgoing.parts;
        let fields = Rewritten::new(
            &parts.headers,
            &inner.merchant_header,
            token.header(),
            &inner.api_version,
            outgoing.request_id,
        );
        let head = RequestHead {
            method: &parts.method,
            path: outgoing.path,
            query: parts.uri.query(),
            fields: &fields,
        };
        let started = Instant::now();
        let result = tokio::time::timeout_at(
            started + inner.response_timeout,
            inner.upstream.send(&head, body),
        )
        .await;
        let done = Instant::now();
        ctx.upstream_done = Some(done);
        let elapsed = done - started;
        inner.metrics.observe_upstream(elapsed);
        *ctx.upstream_elapsed.get_or_insert_default() += elapsed;
        match result {
            Err(_) => {
                inner.governor.upstream_failed();
                Err(ProxyError::UpstreamTimeout(inner.response_timeout))
            }
            Ok(Err(error)) => match caller_body_error(&error) {
                Some(body_error) => Err(self.body_error(body_error)),
                None => {
                    inner.governor.upstream_failed();
                    Err(ProxyError::UpstreamUnavailable(error_chain(&error)))
                }
            },
            Ok(Ok(mut response)) => {
                if let Some(merchant) = ctx.merchant {
                    let status = response.status();
                    inner
                        .governor
                        .answered(merchant, status, response.headers_mut());
                }
                Ok(response)
            }
        }
    }

    /// Phase 7: the one metrics update and the one access-log line of a request.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        parts: &Parts,
        request_id: &HeaderValue,
        response: &Response<ProxyBody>,
        ctx: &Context,
        started: Instant,
        error: Option<&ProxyError>,
    ) {
        let elapsed = ctx.upstream_done.unwrap_or_else(Instant::now) - started;
        let status = response.status().as_u16();
        let method = &parts.method;
        self.inner.metrics.observe_request(
            method,
            status,
            error.is_some(),
            ctx.caller_label.as_deref().unwrap_or(UNKNOWN),
            elapsed,
        );
        tracing::info!(
            target: "poynt_proxy::access",
            request_id = request_id.to_str().unwrap_or_default(),
            caller = ctx.caller.as_deref(),
            merchant = ctx.merchant.map(tracing::field::display),
            method = method.as_str(),
            path = parts.uri.path(),
            status,
            upstream_ms = ctx.upstream_elapsed.map(|d| d.as_secs_f64() * 1e3),
            total_ms = elapsed.as_secs_f64() * 1e3,
            token = ctx.source.map(TokenSource::as_str),
            retried = ctx.retried,
            limit_observed = ctx.limit_observed.map(crate::metrics::LimitReason::as_str),
            error_code = error.map(ProxyError::code),
            error_side = error.map(|e| e.side().as_str()),
            error = error.map(tracing::field::display),
            "request"
        );
    }
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The caller's body error behind a failed upstream exchange, if that is what failed it.
fn caller_body_error(error: &SendError) -> Option<&BodyError> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(body_error) = e.downcast_ref::<BodyError>() {
            return Some(body_error);
        }
        current = e.source();
    }
    None
}

/// The methods Poynt's API uses; anything else (CONNECT, TRACE, extensions) is refused.
fn is_forwarded_method(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET
            | Method::HEAD
            | Method::POST
            | Method::PUT
            | Method::PATCH
            | Method::DELETE
            | Method::OPTIONS
    )
}
