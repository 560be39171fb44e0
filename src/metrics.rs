//! The Prometheus registry and typed handles. Families and label sets are fixed here, and
//! no label ever takes a merchant ID, a path or a token, so the number of series stays
//! bounded whatever callers send.

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets from 100 µs to 30 s, roughly ×2.5 apart.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Methods that get their own label value; anything else is counted as `OTHER`, because a
/// caller can send any token as a method and labels must stay bounded.
const KNOWN_METHODS: &[Method] = &[
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::HEAD,
    Method::OPTIONS,
];

/// How a token lookup was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// A cached token before its refresh point.
    Hit,
    /// No usable token: the caller waited for a grant.
    Miss,
    /// A cached token past its refresh point; a background renewal is under way.
    RefreshAhead,
    /// A cached token past its refresh point whose renewal is failing.
    Stale,
}

/// What the broker did with an upstream 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unauthorized {
    /// The refused token was dropped so the next request gets a new one.
    Renewed,
    /// Renewing was rate-limited (token too young, or a 401 renewal happened recently); the
    /// 401 went to the caller and the token stayed.
    PassedThrough,
}

/// All metric handles. Cloning is cheap (one `Arc`).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: Histogram,
    upstream_duration: Histogram,
    lookups: [IntCounter; 4],
    token_requests: IntCounterVec,
    token_duration: HistogramVec,
    tokens_cached: IntGauge,
    merchants_backing_off: IntGauge,
    unauthorized_retries: IntCounter,
    unauthorized: [IntCounter; 2],
    grants_throttled: IntCounter,
    connections: IntGaugeVec,
    inflight: IntGauge,
}

fn histogram(name: &str, help: &str) -> HistogramOpts {
    HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec())
}

impl Metrics {
    /// Registers every family in a fresh registry (one per proxy instance, so tests running
    /// several proxies in one process do not share counters).
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "poynt_proxy_requests_total",
                "Requests answered to callers, by method and HTTP status.",
            ),
            &["method", "code"],
        )?;
        let request_duration = Histogram::with_opts(histogram(
            "poynt_proxy_request_duration_seconds",
            "Time from request head to response head, as callers see it.",
        ))?;
        let upstream_duration = Histogram::with_opts(histogram(
            "poynt_proxy_upstream_request_duration_seconds",
            "Time from sending a request to Poynt to receiving its response head.",
        ))?;
        let lookup_vec = IntCounterVec::new(
            Opts::new(
                "poynt_proxy_token_cache_lookups_total",
                "Token lookups on the request path, by result.",
            ),
            &["result"],
        )?;
        let lookups = ["hit", "miss", "refresh_ahead", "stale"]
            .map(|result| lookup_vec.with_label_values(&[result]));
        let token_requests = IntCounterVec::new(
            Opts::new(
                "poynt_proxy_token_requests_total",
                "Calls to Poynt's /token endpoint, by grant and outcome.",
            ),
            &["grant", "outcome"],
        )?;
        let token_duration = HistogramVec::new(
            histogram(
                "poynt_proxy_token_request_duration_seconds",
                "Duration of calls to Poynt's /token endpoint.",
            ),
            &["grant"],
        )?;
        let tokens_cached = IntGauge::new(
            "poynt_proxy_tokens_cached",
            "Merchants with an access token in the cache.",
        )?;
        let merchants_backing_off = IntGauge::new(
            "poynt_proxy_merchants_backing_off",
            "Merchants whose last grant failed and who wait before the next attempt.",
        )?;
        let unauthorized_retries = IntCounter::new(
            "poynt_proxy_upstream_unauthorized_retries_total",
            "Requests resent with a fresh token after Poynt answered 401.",
        )?;
        let unauthorized_vec = IntCounterVec::new(
            Opts::new(
                "poynt_proxy_upstream_unauthorized_total",
                "Upstream 401 answers, by what the broker did: renewed (the token was dropped) or passed_through (renewal rate-limited; the 401 reached the caller).",
            ),
            &["action"],
        )?;
        let unauthorized = ["renewed", "passed_through"]
            .map(|action| unauthorized_vec.with_label_values(&[action]));
        let grants_throttled = IntCounter::new(
            "poynt_proxy_token_grants_throttled_total",
            "Grants for never-granted merchants refused because the new-merchant grant budget was spent.",
        )?;
        let connections = IntGaugeVec::new(
            Opts::new(
                "poynt_proxy_connections",
                "Connections per listener: open now, and available (permits left under the listener's cap).",
            ),
            &["listener", "state"],
        )?;
        let inflight = IntGauge::new(
            "poynt_proxy_inflight_requests",
            "Caller requests being processed now.",
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "poynt_proxy_build_info",
                "Always 1; labelled with the version.",
            ),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(upstream_duration.clone()))?;
        registry.register(Box::new(lookup_vec))?;
        registry.register(Box::new(token_requests.clone()))?;
        registry.register(Box::new(token_duration.clone()))?;
        registry.register(Box::new(tokens_cached.clone()))?;
        registry.register(Box::new(merchants_backing_off.clone()))?;
        registry.register(Box::new(unauthorized_retries.clone()))?;
        registry.register(Box::new(unauthorized_vec))?;
        registry.register(Box::new(grants_throttled.clone()))?;
        registry.register(Box::new(connections.clone()))?;
        registry.register(Box::new(inflight.clone()))?;
        registry.register(Box::new(build_info))?;
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Self {
            inner: Arc::new(Inner {
                registry,
                requests,
                request_duration,
                upstream_duration,
                lookups,
                token_requests,
                token_duration,
                tokens_cached,
                merchants_backing_off,
                unauthorized_retries,
                unauthorized,
                grants_throttled,
                connections,
                inflight,
            }),
        })
    }

    /// Counts one answered request and its latency.
    pub fn observe_request(&self, method: &Method, status: u16, elapsed: Duration) {
        let method = KNOWN_METHODS
            .iter()
            .find(|m| *m == method)
            .map_or("OTHER", Method::as_str);
        let mut code = itoa::Buffer::new();
        self.inner
            .requests
            .with_label_values(&[method, code.format(status)])
            .inc();
        self.inner.request_duration.observe(elapsed.as_secs_f64());
    }

    /// Records the time Poynt took to answer a forwarded request.
    pub fn observe_upstream(&self, elapsed: Duration) {
        self.inner.upstream_duration.observe(elapsed.as_secs_f64());
    }

    /// Counts a token lookup.
    pub fn lookup(&self, result: Lookup) {
        let index = match result {
            Lookup::Hit => 0,
            Lookup::Miss => 1,
            Lookup::RefreshAhead => 2,
            Lookup::Stale => 3,
        };
        self.inner.lookups[index].inc();
    }

    /// Counts and times one `/token` call.
    pub fn observe_grant(&self, grant: &str, outcome: &str, elapsed: Duration) {
        self.inner
            .token_requests
            .with_label_values(&[grant, outcome])
            .inc();
        self.inner
            .token_duration
            .with_label_values(&[grant])
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a 401 that was retried with a fresh token.
    pub fn unauthorized_retry(&self) {
        self.inner.unauthorized_retries.inc();
    }

    /// Counts what the broker did with an upstream 401.
    pub fn unauthorized(&self, action: Unauthorized) {
        let index = match action {
            Unauthorized::Renewed => 0,
            Unauthorized::PassedThrough => 1,
        };
        self.inner.unauthorized[index].inc();
    }

    /// Counts a new merchant's grant refused by the grant budget.
    pub fn grant_throttled(&self) {
        self.inner.grants_throttled.inc();
    }

    /// Sets a listener's connection gauges (read from its cap at scrape time).
    pub fn set_connections(&self, listener: &str, open: usize, available: usize) {
        let set = |state: &str, value: usize| {
            self.inner
                .connections
                .with_label_values(&[listener, state])
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        };
        set("open", open);
        set("available", available);
    }

    /// The in-flight gauge, raised for the life of a request by the caller.
    pub fn inflight(&self) -> &IntGauge {
        &self.inner.inflight
    }

    /// Sets the gauges that are read from the broker at scrape time.
    pub fn set_token_gauges(&self, cached: u64, backing_off: u64) {
        self.inner
            .tokens_cached
            .set(i64::try_from(cached).unwrap_or(i64::MAX));
        self.inner
            .merchants_backing_off
            .set(i64::try_from(backing_off).unwrap_or(i64::MAX));
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let families = self.inner.registry.gather();
        if let Err(error) = TextEncoder::new().encode(&families, &mut out) {
            tracing::error!(%error, "encoding metrics failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}
