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
//! 7 respond  stream back; one metrics update with the head, one access line when the body
//!            ends (`respond`: bytes out, a failure of Poynt's body, a caller gone)
//! ```
//!
//! [`Proxy::handle`] is the outer shell (request id, error → JSON, the record step);
//! [`Proxy::handle_inner`] runs the phases in order.

pub mod admit;
pub mod body;
pub mod error;
pub mod headers;
pub mod path;
pub mod respond;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, Entry};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;
use tracing::{Instrument as _, Span};

use crate::access_log::{AccessLog, AccessRecord, Flags};
use crate::audit::Event;
use crate::callers::{Callers, UNKNOWN};
use crate::config::Config;
use crate::limits::{Admission, Governor};
use crate::metrics::Metrics;
use crate::report::error_chain;
use crate::token::broker::{Broker, TokenSource, UnauthorizedAction};
use crate::token::{BrokerError, Token};
use crate::traces::{self, propagate};
use crate::upstream::{
    BoxError, RequestBody, RequestHead, ResponseBody, SendError, Upstream, UpstreamBody,
};
use poynt_wire::MerchantId;

use self::body::{BodyError, CallerBody};
use self::error::ProxyError;
use self::headers::Rewritten;
pub use self::respond::ProxyBody;
use self::respond::{Recorder, Reply, Unanswered};

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
    /// `telemetry.traces.trust_incoming`: continue a caller's W3C trace.
    trust_traces: bool,
    /// `telemetry.traces.propagate`: send Poynt the upstream span's `traceparent`.
    propagate_traces: bool,
    metrics: Metrics,
    /// `metrics` and the access log, for each response body to record its end with.
    recorder: Arc<Recorder>,
}

/// What the phases learned, for the record step and the access line.
#[derive(Default)]
struct Context {
    /// The proven caller, for the access log.
    caller: Option<Arc<str>>,
    /// The `caller` metric label: a configured caller's name, or `unknown`.
    caller_label: Option<Arc<str>>,
    merchant: Option<MerchantId>,
    source: Option<TokenSource>,
    /// When the token lookup returned (with a token or without).
    token_done: Option<Instant>,
    upstream_elapsed: Option<Duration>,
    /// When the last upstream exchange returned: the record step's clock reading when
    /// nothing happened since (clock reads cost: docs/BENCHMARKS.md, "CPU per proxied
    /// request").
    upstream_done: Option<Instant>,
    /// The limit a request would have met, when limits only observe.
    limit_observed: Option<crate::metrics::LimitReason>,
    /// Exchanges with Poynt sent (2 after a 401 replay).
    attempts: u8,
    /// Request body bytes forwarded, when the body was kept whole.
    bytes_in: u64,
    /// The running count of a streamed request body.
    streamed: Option<Arc<AtomicU64>>,
    /// Flags a phase set (the error's own flag is added by the record step).
    flags: Flags,
    /// Whether the last exchange with Poynt went over a connection already open.
    reused: Option<bool>,
    /// The request's server span, when traces are on.
    span: Option<Span>,
}

/// What every attempt at a request sends, whatever its token: the caller's head and the
/// guarded path.
struct Outgoing<'a> {
    parts: &'a Parts,
    path: &'a str,
    /// The caller's target, when the guard forwards its path unchanged.
    target: Option<&'a PathAndQuery>,
    request_id: &'a HeaderValue,
    /// The limits' admission: what Poynt's answer is reported to.
    admission: &'a Admission,
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

impl Proxy {
    /// Builds the proxy over a broker and a worker's upstream client.
    #[allow(
        clippy::too_many_arguments,
        reason = "each is a separate shared service; a struct would only rename them"
    )]
    pub fn new(
        config: &Config,
        callers: Callers,
        broker: Broker,
        upstream: Upstream,
        governor: Governor,
        allow: AllowList,
        metrics: Metrics,
        access: AccessLog,
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
                trust_traces: config.traces.as_ref().is_some_and(|t| t.trust_incoming),
                propagate_traces: config.traces.as_ref().is_some_and(|t| t.propagate),
                recorder: Arc::new(Recorder {
                    metrics: metrics.clone(),
                    access,
                }),
                metrics,
            }),
        }
    }

    /// Answers one caller request from `peer`; never fails (failures become Poynt-shaped
    /// JSON errors).
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        let inner = &self.inner;
        let _inflight = Inflight::new(inner.metrics.inflight());
        let request_id = headers::request_id(request.headers());
        let (parts, body) = request.into_parts();
        let mut ctx = Context::default();
        let unanswered = Unanswered::new(
            &inner.recorder,
            &parts,
            &request_id,
            &inner.merchant_header,
            peer,
            started,
        );
        let result =
            if traces::on() && traces::sample_request(&parts.headers, self.inner.trust_traces) {
                // Boxed: only a traced request carries the span around its phases.
                let span = self.server_span(&parts, peer, &request_id);
                ctx.span = Some(span.clone());
                Box::pin(
                    self.handle_inner(&parts, body, &request_id, &mut ctx)
                        .instrument(span),
                )
                .await
            } else {
                self.handle_inner(&parts, body, &request_id, &mut ctx).await
            };
        unanswered.answered();
        let (response, error) = match result {
            Ok(response) => (response.map(Reply::Poynt), None),
            Err(error) => (error.to_response(&request_id).map(Reply::Own), Some(error)),
        };
        if let Some(span) = &ctx.span {
            end_server_span(span, response.status());
        }
        // Shares the id's bytes: no allocation.
        let record = self.record(
            parts,
            request_id.clone(),
            peer,
            &response,
            &ctx,
            started,
            error.as_ref(),
        );
        let recorder = inner.recorder.clone();
        // The server span ends with the body (`respond`), not with the head.
        let span = ctx.span.take();
        let mut response =
            response.map(|reply| ProxyBody::new(reply, recorder, record, started, span));
        // Moved, not cloned: a clone of a freshly made value would allocate.
        if let Entry::Vacant(slot) = response.headers_mut().entry(headers::REQUEST_ID) {
            slot.insert(request_id);
        }
        response
    }

    /// The request's server span (HTTP semantic conventions), a child of the caller's
    /// trace when `trust_incoming` allows it.
    fn server_span(&self, parts: &Parts, peer: SocketAddr, request_id: &HeaderValue) -> Span {
        // Ids become `{id}`, so the span name and route group requests as the audit trail does.
        let route = crate::audit::event::template(parts.uri.path());
        let name = format!("{} {route}", parts.method);
        let span = traces::root!(
            "request",
            otel.name = name.as_str(),
            otel.kind = "server",
            http.route = route.as_str(),
            otel.status_code = tracing::field::Empty,
            http.request.method = parts.method.as_str(),
            http.response.status_code = tracing::field::Empty,
            http.response.body.size = tracing::field::Empty,
            url.path = parts.uri.path(),
            url.scheme = "http",
            server.address = parts.uri.host().or_else(|| parts
                .headers
                .get(http::header::HOST)
                .and_then(|host| host.to_str().ok())),
            network.protocol.version = version_text(parts.version),
            client.address = %peer.ip(),
            client.port = peer.port(),
            poynt.request_id = request_id.to_str().unwrap_or_default(),
        );
        if self.inner.trust_traces {
            propagate::continue_caller(&span, &parts.headers);
        }
        span
    }

    async fn handle_inner(
        &self,
        parts: &Parts,
        body: Incoming,
        request_id: &HeaderValue,
        ctx: &mut Context,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let inner = &self.inner;
        // Phases 0 to 2b; ends (as it drops) when the request was admitted or refused.
        let admission_span = traces::span!(
            "admission",
            poynt.caller = tracing::field::Empty,
            poynt.merchant = tracing::field::Empty,
        );
        // 0 authenticate
        let identity = inner
            .callers
            .authenticate(&parts.headers, &parts.extensions)
            .await?;
        ctx.caller = identity.name().cloned();
        ctx.caller_label = identity.configured().cloned();
        if let Some(caller) = &ctx.caller {
            admission_span.record("poynt.caller", caller.as_ref());
        }
        // 1 admit
        if !is_forwarded_method(&parts.method) {
            return Err(ProxyError::MethodNotAllowed(parts.method.clone()));
        }
        let merchant = admit::merchant_from_headers(&parts.headers, &inner.merchant_header)?;
        ctx.merchant = Some(merchant);
        admission_span.record("poynt.merchant", tracing::field::display(merchant));
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
        let admission = inner
            .governor
            .admit(merchant, ctx.caller.as_deref())
            .await?;
        ctx.limit_observed = admission.observed;
        drop(admission_span);
        // 3 token
        let token = self.lookup(merchant).await;
        ctx.token_done = Some(Instant::now());
        let (token, source) = token?;
        ctx.source = Some(source);
        // 4 rewrite: decided field by field as the head is written, in `send`
        let outgoing = Outgoing {
            parts,
            path: &path,
            target: unchanged_target(&parts.uri, &path),
            request_id,
            admission: &admission,
        };
        // 5 send
        let bytes = match self.prepare_body(body, ctx).await? {
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
        ctx.bytes_in = bytes.len() as u64;
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
                Some(status) if inner.governor.before_retry(&mut retries, status).await => {}
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
        let replay = traces::span!("401 replay");
        // Boxed: rare, and as large as everything before it.
        Box::pin(self.retry_unauthorized(merchant, &outgoing, bytes, ctx))
            .instrument(replay)
            .await
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
        let (token, _) = self.lookup(merchant).await?;
        self.send(outgoing, &token, RequestBody::Full(body), ctx)
            .await
    }

    /// Phase 3: the broker's token, under a `token lookup` span that says where it came
    /// from (a grant it waits for runs under that span).
    async fn lookup(&self, merchant: MerchantId) -> Result<(Arc<Token>, TokenSource), BrokerError> {
        let span = traces::span!("token lookup", poynt.token = tracing::field::Empty);
        let found = self
            .inner
            .broker
            .token(merchant)
            .instrument(span.clone())
            .await;
        if let Ok((_, source)) = &found {
            span.record("poynt.token", source.as_str());
        }
        found
    }

    /// Keeps small bodies whole (they can be resent after a 401) and streams the rest under
    /// the size cap, so a large upload is never held in memory. Either way the body must
    /// keep arriving: a gap of `server.body_read_timeout` ends the request.
    async fn prepare_body(
        &self,
        body: Incoming,
        ctx: &mut Context,
    ) -> Result<Prepared, ProxyError> {
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
            let tally = ctx.streamed.insert(Arc::default()).clone();
            let body = body.tallied(tally);
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
        ctx.attempts += 1;
        let exchange = traces::span!(
            "upstream",
            otel.name = parts.method.as_str(),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            http.request.method = parts.method.as_str(),
            url.path = outgoing.path,
            server.address = inner.upstream.host(),
            poynt.attempt = ctx.attempts,
            http.response.status_code = tracing::field::Empty,
            network.protocol.version = tracing::field::Empty,
            poynt.connection.reused = tracing::field::Empty,
        );
        let trace_fields;
        let mut fields = Rewritten::new(
            &parts.headers,
            &inner.merchant_header,
            token.header(),
            &inner.api_version,
            outgoing.request_id,
        );
        if inner.propagate_traces && !exchange.is_none() {
            trace_fields = propagate::fields(&exchange);
            fields = fields.with_trace(&trace_fields);
        }
        let head = RequestHead {
            method: &parts.method,
            path: outgoing.path,
            query: parts.uri.query(),
            target: outgoing.target,
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
        if !matches!(result, Ok(Ok(_))) {
            exchange.record("otel.status_code", "error");
        }
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
                let reused = response.body().reused();
                ctx.reused = Some(reused);
                if !exchange.is_none() {
                    exchange.record("http.response.status_code", response.status().as_u16());
                    exchange.record("network.protocol.version", version_text(response.version()));
                    exchange.record("poynt.connection.reused", reused);
                }
                let status = response.status();
                inner
                    .governor
                    .answered(outgoing.admission, status, response.headers_mut());
                Ok(response)
            }
        }
    }

    /// Phase 7: the one metrics update of a request, and its access record, which the
    /// response body writes when it ends.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        parts: Parts,
        request_id: HeaderValue,
        peer: SocketAddr,
        response: &Response<Reply>,
        ctx: &Context,
        started: Instant,
        error: Option<&ProxyError>,
    ) -> AccessRecord {
        let elapsed = ctx.upstream_done.unwrap_or_else(Instant::now) - started;
        let status = response.status().as_u16();
        self.inner.metrics.observe_request(
            &parts.method,
            status,
            error.is_some(),
            ctx.caller_label.as_deref().unwrap_or(UNKNOWN),
            elapsed,
        );
        if let Some(merchant) = ctx.merchant {
            self.inner.metrics.audit(|| {
                Event::acted(
                    ctx.caller.as_deref(),
                    merchant,
                    &parts.method,
                    parts.uri.path(),
                    status,
                )
            });
        }
        let mut flags = ctx.flags;
        if let Some(error) = error {
            flags.set(error.flag());
        }
        AccessRecord {
            request_id,
            trace_id: ctx.span.as_ref().and_then(traces::trace_id),
            peer,
            caller: ctx.caller.clone(),
            merchant: ctx.merchant,
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            status,
            upstream_status: error.is_none().then_some(status),
            bytes_in: ctx
                .streamed
                .as_ref()
                .map_or(ctx.bytes_in, |tally| tally.load(Ordering::Relaxed)),
            bytes_out: 0,
            token: ctx.source.map(TokenSource::as_str),
            token_wait: ctx.token_done.map(|done| done - started),
            upstream: ctx.upstream_elapsed,
            attempts: ctx.attempts,
            reused: ctx.reused,
            limit_observed: ctx.limit_observed.map(crate::metrics::LimitReason::as_str),
            flags,
            error_code: error.map(ProxyError::code),
            error: error.map(ToString::to_string),
        }
    }
}

/// Ends what the server span learned: the status, and an error status for a 5xx (a 4xx is
/// the caller's mistake, not the server span's failure, in HTTP semantic conventions).
fn end_server_span(span: &Span, status: StatusCode) {
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
}

/// `network.protocol.version` as the semantic conventions spell it.
fn version_text(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// The caller's path and query as they came, when `path` (the guarded path) is the caller's
/// path itself: the very same bytes, not a copy (the guard borrows a path it leaves as it
/// is).
fn unchanged_target<'a>(uri: &'a Uri, path: &str) -> Option<&'a PathAndQuery> {
    let target = uri.path_and_query()?;
    (std::ptr::eq(path, target.path()) && target.as_str().starts_with('/')).then_some(target)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_callers_own_unchanged_path_reuses_its_target() {
        let uri = Uri::from_static("/businesses/b/orders?limit=10");
        let target = unchanged_target(&uri, uri.path()).map(PathAndQuery::as_str);
        assert_eq!(target, Some("/businesses/b/orders?limit=10"));
        // Equal text in another place is a normalised copy: Poynt must get the copy.
        let copy = uri.path().to_owned();
        assert_eq!(unchanged_target(&uri, &copy), None);
        let guarded = path::normalise("/a/%7Eb").unwrap();
        let uri = Uri::from_static("/a/%7Eb");
        assert_eq!(unchanged_target(&uri, &guarded), None);
        let absolute = Uri::from_static("http://example.com?x=1");
        assert_eq!(unchanged_target(&absolute, absolute.path()), None);
    }
}
