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
    inflight: IntGauge,
    onboarding: OnboardingCounters,
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
        registry.register(Box::new(inflight.clone()))?;
        registry.register(Box::new(build_info))?;
        let onboarding = OnboardingCounters::register(&registry)?;
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
                inflight,
                onboarding,
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

    /// Counts one onboarding callback.
    pub fn onboarding(&self, outcome: OnboardingOutcome) {
        self.inner.onboarding.by_outcome[outcome as usize].inc();
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

// --- Onboarding (the merchant-facing listener) ------------------------------------------

/// How an onboarding callback ended: a fixed set, so the label stays bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnboardingOutcome {
    /// The merchant's grant was exchanged and kept.
    Success,
    /// The merchant did not authorize the app (`status` was not `AUTHORIZED`).
    Denied,
    /// The state was missing, malformed, forged or expired.
    BadState,
    /// The state had been used by an earlier callback.
    Replayed,
    /// The code was missing, not RS256, badly signed, or its claims were wrong.
    BadCode,
    /// Poynt refused or failed the code exchange.
    ExchangeFailed,
    /// The proxy could not check the callback (code key unavailable, spent-state set full).
    Unavailable,
}

impl OnboardingOutcome {
    /// Every outcome, in label order.
    pub const ALL: [Self; 7] = [
        Self::Success,
        Self::Denied,
        Self::BadState,
        Self::Replayed,
        Self::BadCode,
        Self::ExchangeFailed,
        Self::Unavailable,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Denied => "denied",
            Self::BadState => "bad_state",
            Self::Replayed => "replayed",
            Self::BadCode => "bad_code",
            Self::ExchangeFailed => "exchange_failed",
            Self::Unavailable => "unavailable",
        }
    }
}

/// `poynt_proxy_onboarding_total{outcome}`, every outcome exported from the start.
struct OnboardingCounters {
    by_outcome: [IntCounter; 7],
}

impl OnboardingCounters {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let family = IntCounterVec::new(
            Opts::new(
                "poynt_proxy_onboarding_total",
                "Onboarding callbacks, by outcome.",
            ),
            &["outcome"],
        )?;
        let by_outcome = OnboardingOutcome::ALL.map(|o| family.with_label_values(&[o.as_str()]));
        registry.register(Box::new(family))?;
        Ok(Self { by_outcome })
    }
}

#[cfg(test)]
mod onboarding_tests {
    use super::*;

    #[test]
    fn every_onboarding_outcome_is_exported_and_counted_under_its_label() {
        let metrics = Metrics::new().unwrap();
        for (index, outcome) in OnboardingOutcome::ALL.into_iter().enumerate() {
            assert_eq!(outcome as usize, index);
            metrics.onboarding(outcome);
        }
        metrics.onboarding(OnboardingOutcome::BadCode);
        let text = metrics.render();
        assert!(
            text.contains("poynt_proxy_onboarding_total{outcome=\"bad_code\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("poynt_proxy_onboarding_total{outcome=\"unavailable\"} 1"),
            "{text}"
        );
    }
}
