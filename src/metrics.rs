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

use poynt_wire::GrantKind;

use crate::audit::config::AuditConfig;
use crate::audit::{Audit, AuditError, Event};

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

/// How a `/token` call ended: the `outcome` label of `poynt_proxy_token_requests_total`. The
/// alerts page on `Error` and only ticket on `Rejected`, which is Poynt refusing one merchant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantOutcome {
    /// A token was issued.
    Success,
    /// Poynt refused the grant (4xx): this merchant or credential is not acceptable.
    Rejected,
    /// No usable answer: transport failure, timeout, no call slot, 5xx, a malformed body.
    Error,
}

impl GrantOutcome {
    /// Every outcome, so each series exists (at 0) before the first call ends that way.
    const ALL: [Self; 3] = [Self::Success, Self::Rejected, Self::Error];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Rejected => "rejected",
            Self::Error => "error",
        }
    }
}

/// How a configuration reload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// Applied.
    Success,
    /// The file did not validate; nothing changed.
    Invalid,
    /// The file changed settings that need a restart; nothing changed.
    RestartNeeded,
}

/// Why a response body failed after its head went to the caller (whose response was then
/// aborted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFailure {
    /// No byte came for `poynt.body_idle_timeout`.
    IdleTimeout,
    /// The body broke its framing (a bad chunk, say).
    Framing,
    /// Poynt closed the connection before the body's end.
    Closed,
    /// The connection or the HTTP/2 stream failed otherwise (reset, I/O error).
    Reset,
}

impl BodyFailure {
    const ALL: [BodyFailure; 4] = [Self::IdleTimeout, Self::Framing, Self::Closed, Self::Reset];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IdleTimeout => "idle_timeout",
            Self::Framing => "framing",
            Self::Closed => "closed",
            Self::Reset => "reset",
        }
    }
}

/// All metric handles. Cloning is cheap (one `Arc`).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    requests: IntCounterVec,
    caller_refusals: IntCounterVec,
    body_failures: [IntCounter; 4],
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
    access_log_dropped: IntCounter,
    connections: IntGaugeVec,
    handshake_failures: IntCounterVec,
    reloads: [IntCounter; 3],
    last_reload: prometheus::Gauge,
    inflight: IntGauge,
    store: StoreMetrics,
    onboarding: OnboardingCounters,
    limits: LimitsMetrics,
    audit_dropped: IntCounter,
    /// The audit trail, once [`Metrics::start_audit`] ran (never, with `audit` off).
    audit: std::sync::OnceLock<Audit>,
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
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
                "Requests answered to callers, by method, HTTP status, source: upstream (Poynt's answer, passed through) or proxy (the proxy's own error), and caller (a name configured under callers.policy, else unknown).",
            ),
            &["method", "code", "source", "caller"],
        )?;
        let caller_refusals = IntCounterVec::new(
            Opts::new(
                "poynt_proxy_caller_refusals_total",
                "Callers refused by callers.policy, by kind (unauthenticated, forbidden) and mode: enforce (answered 401/403) or observe (logged and served).",
            ),
            &["kind", "mode"],
        )?;
        let body_failure_vec = IntCounterVec::new(
            Opts::new(
                "poynt_proxy_response_body_failures_total",
                "Responses whose body from Poynt failed after the head was sent to the caller (the caller's response aborted; requests_total counted its status), by reason: idle_timeout, framing, closed, reset.",
            ),
            &["reason"],
        )?;
        let body_failures =
            BodyFailure::ALL.map(|reason| body_failure_vec.with_label_values(&[reason.as_str()]));
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
        // Every grant × outcome series from the start: a rule such as "no success" or
        // "errors increased" needs the series before the first call ends that way (a series
        // born at 1 shows no increase, an absent one makes the rule an empty vector).
        for grant in GrantKind::ALL {
            for outcome in GrantOutcome::ALL {
                token_requests.with_label_values(&[grant.as_str(), outcome.as_str()]);
            }
            token_duration.with_label_values(&[grant.as_str()]);
        }
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
        let access_log_dropped = IntCounter::new(
            "poynt_proxy_access_log_dropped_total",
            "Access log lines dropped because stdout could not take them as fast as requests ended.",
        )?;
        let connections = IntGaugeVec::new(
            Opts::new(
                "poynt_proxy_connections",
                "Connections per listener: open now, and available (permits left under the listener's cap).",
            ),
            &["listener", "state"],
        )?;
        let handshake_failures = IntCounterVec::new(
            Opts::new(
                "poynt_proxy_tls_handshake_failures_total",
                "TLS handshakes a listener refused, by reason: client_certificate (missing, or not chained to tls.client_ca_file, or expired), protocol (anything else TLS refused), timeout (not done within server.header_read_timeout).",
            ),
            &["listener", "reason"],
        )?;
        let reload_vec = IntCounterVec::new(
            Opts::new(
                "poynt_proxy_config_reloads_total",
                "Configuration reloads (SIGHUP or POST /admin/reload), by outcome: success, invalid (the file did not validate), restart_required.",
            ),
            &["outcome"],
        )?;
        let reloads = ["success", "invalid", "restart_required"]
            .map(|outcome| reload_vec.with_label_values(&[outcome]));
        let last_reload = prometheus::Gauge::new(
            "poynt_proxy_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully (start-up or reload), Unix seconds.",
        )?;
        last_reload.set(unix_now());
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
        registry.register(Box::new(caller_refusals.clone()))?;
        registry.register(Box::new(body_failure_vec))?;
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
        registry.register(Box::new(access_log_dropped.clone()))?;
        registry.register(Box::new(crate::traces::export_failures().clone()))?;
        registry.register(Box::new(connections.clone()))?;
        registry.register(Box::new(handshake_failures.clone()))?;
        registry.register(Box::new(reload_vec))?;
        registry.register(Box::new(last_reload.clone()))?;
        registry.register(Box::new(inflight.clone()))?;
        registry.register(Box::new(build_info))?;
        let store = StoreMetrics::register(&registry)?;
        let onboarding = OnboardingCounters::register(&registry)?;
        let limits = LimitsMetrics::register(&registry)?;
        registry.register(Box::new(ProcessMetrics::new()?))?;
        let audit_dropped = IntCounter::new(
            "poynt_proxy_audit_dropped_total",
            "Audit events dropped because the audit writer's queue (audit.queue) was full; the next audit line says how many.",
        )?;
        registry.register(Box::new(audit_dropped.clone()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                registry,
                requests,
                caller_refusals,
                body_failures,
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
                access_log_dropped,
                connections,
                handshake_failures,
                reloads,
                last_reload,
                inflight,
                store,
                onboarding,
                limits,
                audit_dropped,
                audit: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Counts one answered request and its latency; `own` when the proxy answered with its
    /// own error rather than passing Poynt's answer on.
    pub fn observe_request(
        &self,
        method: &Method,
        status: u16,
        own: bool,
        caller: &str,
        elapsed: Duration,
    ) {
        let method = KNOWN_METHODS
            .iter()
            .find(|m| *m == method)
            .map_or("OTHER", Method::as_str);
        let mut code = itoa::Buffer::new();
        let source = if own { "proxy" } else { "upstream" };
        self.inner
            .requests
            .with_label_values(&[method, code.format(status), source, caller])
            .inc();
        self.inner.request_duration.observe(elapsed.as_secs_f64());
    }

    /// Counts a caller refusal (`kind`: unauthenticated or forbidden) in `mode` (enforce or
    /// observe); both label sets are fixed by the callers module.
    pub fn caller_refused(&self, kind: &'static str, mode: &'static str) {
        self.inner
            .caller_refusals
            .with_label_values(&[kind, mode])
            .inc();
    }

    /// Counts a response body that failed after its head was sent on.
    pub fn response_body_failed(&self, reason: BodyFailure) {
        self.inner.body_failures[reason as usize].inc();
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
    pub fn observe_grant(&self, grant: GrantKind, outcome: GrantOutcome, elapsed: Duration) {
        self.inner
            .token_requests
            .with_label_values(&[grant.as_str(), outcome.as_str()])
            .inc();
        self.inner
            .token_duration
            .with_label_values(&[grant.as_str()])
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

    /// The counter of access lines dropped for a full batch, for the access log's writer.
    pub fn access_log_dropped(&self) -> IntCounter {
        self.inner.access_log_dropped.clone()
    }

    /// Counts a configuration reload, and times a successful one.
    pub fn config_reloaded(&self, outcome: ReloadOutcome) {
        let index = match outcome {
            ReloadOutcome::Success => 0,
            ReloadOutcome::Invalid => 1,
            ReloadOutcome::RestartNeeded => 2,
        };
        self.inner.reloads[index].inc();
        if outcome == ReloadOutcome::Success {
            self.inner.last_reload.set(unix_now());
        }
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

    /// Raises a listener's refused-handshake counter to `count`, read from the listener at
    /// scrape time (a counter only ever rises; a series appears at its first refusal).
    pub fn set_handshake_failures(&self, listener: &str, reason: &str, count: u64) {
        let counter = self
            .inner
            .handshake_failures
            .with_label_values(&[listener, reason]);
        if let Some(rise) = count.checked_sub(counter.get()).filter(|rise| *rise > 0) {
            counter.inc_by(rise);
        }
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

    /// The token store's handles.
    pub fn store(&self) -> &StoreMetrics {
        &self.inner.store
    }

    /// The traffic limits' handles.
    pub fn limits(&self) -> &LimitsMetrics {
        &self.inner.limits
    }

    /// Starts the audit trail every holder of these metrics then writes to.
    pub fn start_audit(&self, config: &AuditConfig) -> Result<(), AuditError> {
        let audit = Audit::start(config, self.inner.audit_dropped.clone())?;
        self.inner.audit.get_or_init(|| audit);
        Ok(())
    }

    /// Queues the event `event` builds, which it builds only when the trail is on.
    pub fn audit(&self, event: impl FnOnce() -> Event) {
        if let Some(audit) = self.inner.audit.get() {
            audit.record(event());
        }
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

// ---------------------------------------------------------------------------------------------
// Process metrics: the prometheus crate's, with CPU time at clock-tick resolution.
// ---------------------------------------------------------------------------------------------

/// The CPU family's name, as every Prometheus client exports it.
const CPU_SECONDS: &str = "process_cpu_seconds_total";

/// The prometheus crate's process collector (memory, file descriptors, start time, threads)
/// with its CPU counter replaced: that one divides clock ticks by the tick rate in integers,
/// so it moves in whole seconds and a `rate()` over minutes reads 0 or a spike.
struct ProcessMetrics {
    process: prometheus::process_collector::ProcessCollector,
    cpu: prometheus::Counter,
    scrape: std::sync::Mutex<()>,
    descs: Vec<prometheus::core::Desc>,
}

impl ProcessMetrics {
    fn new() -> Result<Self, prometheus::Error> {
        use prometheus::core::Collector;
        let process = prometheus::process_collector::ProcessCollector::for_self();
        let cpu = prometheus::Counter::new(
            CPU_SECONDS,
            "Total user and system CPU time spent in seconds.",
        )?;
        let descs = process
            .desc()
            .into_iter()
            .filter(|d| d.fq_name != CPU_SECONDS)
            .chain(cpu.desc())
            .cloned()
            .collect();
        Ok(Self {
            process,
            cpu,
            scrape: std::sync::Mutex::default(),
            descs,
        })
    }
}

/// User plus system CPU time of this process, from `/proc/self/stat`, in seconds.
fn cpu_seconds() -> Option<f64> {
    let stat = procfs::process::Process::myself().ok()?.stat().ok()?;
    let ticks = stat.utime.saturating_add(stat.stime);
    Some(ticks as f64 / procfs::ticks_per_second() as f64)
}

impl prometheus::core::Collector for ProcessMetrics {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let mut families: Vec<_> = self
            .process
            .collect()
            .into_iter()
            .filter(|family| family.name() != CPU_SECONDS)
            .collect();
        if let Some(total) = cpu_seconds() {
            // Read and raised under one lock, so concurrent scrapes do not both add.
            let _one = self
                .scrape
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let past = self.cpu.get();
            if total > past {
                self.cpu.inc_by(total - past);
            }
            families.extend(self.cpu.collect());
        }
        families
    }
}

// ---------------------------------------------------------------------------------------------
// Token store (src/store): operations, lock waits, records loaded at start-up, reachability.
// ---------------------------------------------------------------------------------------------

/// A store operation, as a bounded label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    /// Read one merchant's record.
    Load,
    /// Read every record (start-up, `store list`).
    LoadAll,
    /// Compare-and-set one record.
    Save,
    /// Forget one record.
    Delete,
    /// Take a merchant's cluster-wide lock.
    Lock,
    /// Give a lock back.
    Release,
    /// Extend a held lock's lease.
    Extend,
    /// Mark an onboarding state as used.
    SpendState,
    /// Check a request against the cluster-wide limits (cool-down and buckets).
    Limit,
    /// Share a merchant's cool-down with the other replicas.
    Cooldown,
}

impl StoreOp {
    const ALL: [StoreOp; 10] = [
        Self::Load,
        Self::LoadAll,
        Self::Save,
        Self::Delete,
        Self::Lock,
        Self::Release,
        Self::Extend,
        Self::SpendState,
        Self::Limit,
        Self::Cooldown,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Load => "load",
            Self::LoadAll => "load_all",
            Self::Save => "save",
            Self::Delete => "delete",
            Self::Lock => "lock",
            Self::Release => "release",
            Self::Extend => "extend",
            Self::SpendState => "spend_state",
            Self::Limit => "limit",
            Self::Cooldown => "cooldown",
        }
    }
}

/// How a store operation ended, as a bounded label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    /// Done.
    Ok,
    /// A save lost the compare-and-set: the store holds the same or a newer generation.
    Stale,
    /// A lock is held by another replica.
    Busy,
    /// A held lock had expired when its holder extended or released it.
    Lost,
    /// The store could not be reached in time.
    Unavailable,
    /// The store answered with an error.
    Error,
    /// Not attempted: a write that could destroy a record this replica cannot open, or any
    /// write before the store key is proven.
    Withheld,
}

impl StoreOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Stale => "stale",
            Self::Busy => "busy",
            Self::Lost => "lost",
            Self::Unavailable => "unavailable",
            Self::Error => "error",
            Self::Withheld => "withheld",
        }
    }
}

/// How a wait for another replica's lock on a merchant ended (counted by the broker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockWait {
    /// The holder's record arrived and was adopted.
    Adopted,
    /// The lock came free and this replica took it.
    Acquired,
    /// The wait was given up; this replica granted on its own.
    TimedOut,
}

impl LockWait {
    const ALL: [LockWait; 3] = [Self::Adopted, Self::Acquired, Self::TimedOut];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Adopted => "adopted",
            Self::Acquired => "acquired",
            Self::TimedOut => "timed_out",
        }
    }
}

/// The token store's metric handles. Every family is registered (and every op has an `ok`
/// series) even with the memory store, so dashboards and alerts find them on any backend.
#[derive(Clone)]
pub struct StoreMetrics {
    operations: IntCounterVec,
    duration: HistogramVec,
    lock_waits: IntCounterVec,
    lock_wait_duration: HistogramVec,
    records_loaded: IntGauge,
    reachable: IntGauge,
    refused: IntCounter,
    withheld: IntCounter,
}

impl StoreMetrics {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let operations = IntCounterVec::new(
            Opts::new(
                "poynt_proxy_store_operations_total",
                "Token store operations, by operation and outcome.",
            ),
            &["op", "outcome"],
        )?;
        let duration = HistogramVec::new(
            histogram(
                "poynt_proxy_store_operation_duration_seconds",
                "Duration of token store operations.",
            ),
            &["op"],
        )?;
        let lock_waits = IntCounterVec::new(
            Opts::new(
                "poynt_proxy_store_lock_waits_total",
                "Waits for another replica's lock on a merchant, by how they ended.",
            ),
            &["outcome"],
        )?;
        let lock_wait_duration = HistogramVec::new(
            histogram(
                "poynt_proxy_store_lock_wait_duration_seconds",
                "How long waits for another replica's lock on a merchant lasted, by how they ended.",
            ),
            &["outcome"],
        )?;
        let records_loaded = IntGauge::new(
            "poynt_proxy_store_records_loaded",
            "Records read from the token store by the last full load (start-up).",
        )?;
        let reachable = IntGauge::new(
            "poynt_proxy_store_reachable",
            "1 while the token store answers, 0 while it cannot be reached.",
        )?;
        let refused = IntCounter::new(
            "poynt_proxy_store_records_refused_total",
            "Stored records that failed to open (unknown key, tampered, or copied under another merchant); they are not used and never overwritten.",
        )?;
        let withheld = IntCounter::new(
            "poynt_proxy_store_saves_withheld_total",
            "Saves not made because the merchant's stored record opens with none of the configured keys (its tokens are served unsaved).",
        )?;
        for op in StoreOp::ALL {
            operations.with_label_values(&[op.as_str(), StoreOutcome::Ok.as_str()]);
            duration.with_label_values(&[op.as_str()]);
        }
        for wait in LockWait::ALL {
            lock_waits.with_label_values(&[wait.as_str()]);
            lock_wait_duration.with_label_values(&[wait.as_str()]);
        }
        reachable.set(1);
        registry.register(Box::new(operations.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(lock_waits.clone()))?;
        registry.register(Box::new(lock_wait_duration.clone()))?;
        registry.register(Box::new(records_loaded.clone()))?;
        registry.register(Box::new(reachable.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        registry.register(Box::new(withheld.clone()))?;
        Ok(Self {
            operations,
            duration,
            lock_waits,
            lock_wait_duration,
            records_loaded,
            reachable,
            refused,
            withheld,
        })
    }

    /// Counts and times one store operation.
    pub fn observe(&self, op: StoreOp, outcome: StoreOutcome, elapsed: Duration) {
        self.operations
            .with_label_values(&[op.as_str(), outcome.as_str()])
            .inc();
        self.duration
            .with_label_values(&[op.as_str()])
            .observe(elapsed.as_secs_f64());
    }

    /// Counts how a wait for another replica's lock ended, and how long it lasted (a dead
    /// holder shows as `acquired` after about one lease).
    pub fn lock_wait(&self, outcome: LockWait, waited: Duration) {
        self.lock_waits.with_label_values(&[outcome.as_str()]).inc();
        self.lock_wait_duration
            .with_label_values(&[outcome.as_str()])
            .observe(waited.as_secs_f64());
    }

    /// Records how many records the last full load read.
    pub fn set_records_loaded(&self, count: usize) {
        self.records_loaded
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Says whether the store answers.
    pub fn set_reachable(&self, reachable: bool) {
        self.reachable.set(i64::from(reachable));
    }

    /// Counts a stored record that failed to open.
    pub fn record_refused(&self) {
        self.refused.inc();
    }

    /// Counts a save withheld to keep a record this replica cannot open.
    pub fn save_withheld(&self) {
        self.withheld.inc();
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

// --- Traffic limits toward Poynt ---------------------------------------------------------

/// Which limit a request met: a fixed set, so the label stays bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitReason {
    /// The merchant's token bucket was empty.
    RateLimited,
    /// Every one of the merchant's in-flight slots stayed busy.
    InFlight,
    /// Poynt had answered the merchant 429 and its cool-down ran.
    CoolingDown,
}

impl LimitReason {
    /// Every reason, in label order.
    pub const ALL: [Self; 3] = [Self::RateLimited, Self::InFlight, Self::CoolingDown];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::InFlight => "in_flight",
            Self::CoolingDown => "cooling_down",
        }
    }
}

/// Where the rate limits and cool-downs are kept, as a bounded label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitScope {
    /// In this replica only (`limits.scope: local`).
    Local,
    /// Cluster-wide, in the shared store (`limits.scope: cluster`, the store answering).
    Cluster,
    /// `limits.scope: cluster` while the store is unreachable: this replica's share.
    LocalShare,
}

impl LimitScope {
    /// Every scope, in label order.
    const ALL: [Self; 3] = [Self::Local, Self::Cluster, Self::LocalShare];

    /// The `scope` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Cluster => "cluster",
            Self::LocalShare => "local_share",
        }
    }
}

/// The limits' metric handles; every series exists from the start (zero), so rates and
/// alerts see them before the first refusal.
#[derive(Clone)]
pub struct LimitsMetrics {
    /// By reason (label order) then by action: refused, observed.
    decisions: [[IntCounter; 2]; 3],
    poynt_throttled: IntCounter,
    breaker_open: IntGauge,
    breaker_refused: IntCounter,
    /// Retries sent, then retries the budget refused.
    retries: [IntCounter; 2],
    /// 1 on the scope in force, by [`LimitScope`] label order.
    scope: [IntGauge; 3],
}

impl LimitsMetrics {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let decisions = IntCounterVec::new(
            Opts::new(
                "poynt_proxy_limited_requests_total",
                "Requests that met a limit before reaching Poynt, by reason (rate_limited, in_flight, cooling_down) and action: refused (answered 429 by the proxy) or observed (limits.mode observe: counted, forwarded).",
            ),
            &["reason", "action"],
        )?;
        let poynt_throttled = IntCounter::new(
            "poynt_proxy_upstream_throttled_total",
            "Poynt 429 answers, each starting (or lengthening) a cool-down for its merchant.",
        )?;
        let breaker_open = IntGauge::new(
            "poynt_proxy_upstream_breaker_open",
            "1 while the circuit breaker toward Poynt is open (or half-open, probing), else 0.",
        )?;
        let breaker_refused = IntCounter::new(
            "poynt_proxy_upstream_breaker_refused_total",
            "Requests answered 503 UPSTREAM_UNAVAILABLE at once because the circuit breaker was open.",
        )?;
        let retries = IntCounterVec::new(
            Opts::new(
                "poynt_proxy_upstream_retries_total",
                "Exchanges with Poynt that failed (connection failure, 502/503/504) and could be retried, by outcome: retried, or budget_exhausted (the retry budget refused; the failure reached the caller).",
            ),
            &["outcome"],
        )?;
        let scope = IntGaugeVec::new(
            Opts::new(
                "poynt_proxy_limits_scope",
                "1 on where rate limits and cool-downs are kept now: local (this replica), cluster (shared through Redis), or local_share (scope cluster while Redis is unreachable: this replica enforces its share of each limit).",
            ),
            &["scope"],
        )?;
        registry.register(Box::new(scope.clone()))?;
        registry.register(Box::new(retries.clone()))?;
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(poynt_throttled.clone()))?;
        registry.register(Box::new(breaker_open.clone()))?;
        registry.register(Box::new(breaker_refused.clone()))?;
        Ok(Self {
            decisions: LimitReason::ALL.map(|reason| {
                ["refused", "observed"]
                    .map(|action| decisions.with_label_values(&[reason.as_str(), action]))
            }),
            poynt_throttled,
            breaker_open,
            breaker_refused,
            retries: ["retried", "budget_exhausted"]
                .map(|outcome| retries.with_label_values(&[outcome])),
            scope: LimitScope::ALL.map(|each| scope.with_label_values(&[each.as_str()])),
        })
    }

    /// Marks `now` as the scope in force, and no other.
    pub fn scope(&self, now: LimitScope) {
        for (gauge, scope) in self.scope.iter().zip(LimitScope::ALL) {
            gauge.set(i64::from(scope == now));
        }
    }

    /// Counts a request that met `reason`: refused, or only observed.
    pub fn limited(&self, reason: LimitReason, refused: bool) {
        self.decisions[reason as usize][usize::from(!refused)].inc();
    }

    /// Counts a Poynt 429.
    pub fn poynt_throttled(&self) {
        self.poynt_throttled.inc();
    }

    /// Sets whether the circuit breaker is open.
    pub fn breaker_open(&self, open: bool) {
        self.breaker_open.set(i64::from(open));
    }

    /// Counts a retry sent (`true`) or refused by the budget (`false`).
    pub fn retry(&self, sent: bool) {
        self.retries[usize::from(!sent)].inc();
    }

    /// Counts a request refused by the open breaker.
    pub fn breaker_refused(&self) {
        self.breaker_refused.inc();
    }
}
