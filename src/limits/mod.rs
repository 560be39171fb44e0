//! Traffic governance toward Poynt, per merchant: the one thing the proxy asks before it
//! spends a token lookup or an upstream connection on a request ([`Governor::admit`]), and
//! tells after Poynt answered ([`Governor::answered`]).
//!
//! In the order `admit` checks them, the cheapest refusal first (a request the bucket let
//! through but no in-flight slot took has still spent its token):
//! - `breaker`: Poynt failed too often in a row; every request is refused at once (503)
//!   until a probe gets through (when `limits.breaker` is set);
//! - `cooldown`: Poynt answered the merchant 429; until its `Retry-After` (capped) or an
//!   exponential back-off ends, the merchant's requests are answered here;
//! - `bucket`: the merchant's token bucket (GCRA), when `limits.rate` or an override sets one;
//! - `inflight`: at most N of the merchant's requests at Poynt at once, a bounded wait for a
//!   slot.
//!
//! After a failed exchange, [`Governor::before_retry`] decides whether to send it again
//! (`retry`: which methods and answers, the back-off; `budget`: how many retries in all).
//!
//! Limits are per merchant; with callers authenticated, a caller named in `limits.callers`
//! also has a token bucket of its own, taken after the merchant's. Everything here is local
//! to the replica, except with `limits.scope: cluster`: then `cluster` keeps the buckets and
//! cool-downs in the Redis store for every replica (in-flight slots, the breaker and the
//! retry budget stay per replica). `retry_after` reads Poynt's header; `states` keeps the
//! merchants' state; `config` holds the checked settings and `error` the refusals.

mod breaker;
mod bucket;
mod budget;
mod cluster;
pub mod config;
mod cooldown;
mod error;
mod inflight;
mod retry;
mod retry_after;
mod states;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::metrics::{LimitReason, LimitScope, LimitsMetrics};
use crate::store::SharedLimits;
use poynt_wire::MerchantId;

use self::breaker::{Breaker, Probe, Transition};
use self::bucket::Bucket;
use self::budget::Budget;
use self::cluster::{Cluster, Shared};
use self::config::{LimitsConfig, MerchantLimits, Mode, Rate, Scope};
use self::cooldown::{Backoff, Cooldown};
pub use self::error::LimitError;
use self::inflight::Slots;
use self::states::States;

/// On every 429, whose it is: `poynt` when Poynt sent it (passed through untouched
/// otherwise), `proxy` when the limits here refused the request.
pub const LIMIT_SOURCE_HEADER: HeaderName = HeaderName::from_static("poynt-proxy-limit-source");

/// How many merchants' limit state is kept; the least recently seen beyond it are dropped
/// (their buckets start full again, which errs toward the caller).
const MAX_MERCHANTS: u64 = 1_000_000;
/// A merchant unseen this long loses its state: longer than any cool-down or bucket window
/// the configuration allows, so only the memory is lost.
const IDLE_TTL: Duration = Duration::from_secs(3600);

/// The limits of every merchant, shared by every worker. Cloning shares it.
#[derive(Clone)]
pub struct Governor {
    inner: Arc<Inner>,
}

struct Inner {
    config: LimitsConfig,
    /// The zero of the nanosecond clock the atomics keep.
    origin: Instant,
    /// Per-merchant state, bounded in count and idle time.
    states: States,
    /// The upstream's circuit breaker, when configured.
    breaker: Option<Breaker>,
    /// The retry budget, when retries are configured.
    budget: Option<Budget>,
    /// Each rate-limited caller's rate and bucket (`limits.callers`), fixed at start.
    callers: HashMap<String, (Rate, Bucket)>,
    /// The cluster-wide limits, with `limits.scope: cluster`; the local buckets then hold
    /// this replica's share while Redis is away.
    cluster: Option<Cluster>,
    metrics: LimitsMetrics,
}

/// One merchant's limit state.
struct State {
    limits: MerchantLimits,
    cooldown: Cooldown,
    bucket: Bucket,
    slots: Slots,
    /// When the cache's bounds last heard of a use (the governor's clock): `states`.
    touched: AtomicU64,
}

/// The retries one request has left; see [`Governor::retries`].
#[derive(Debug)]
pub struct Retries {
    /// Retries still allowed by `limits.retries.max` (0: none, or not repeatable).
    left: u32,
    /// Retries sent so far.
    sent: u32,
}

/// A request the limits let through. It holds the merchant's in-flight slot until dropped:
/// keep it until Poynt's response head has arrived.
#[must_use = "dropping the admission frees the in-flight slot at once"]
pub struct Admission {
    merchant: MerchantId,
    /// The merchant's state, looked up once at admission and kept for its answer.
    state: Arc<State>,
    _slot: Option<OwnedSemaphorePermit>,
    /// Set when this request is the open breaker's probe.
    _probe: Option<Probe>,
    /// The limit the request would have met, when `limits.mode` is `observe`.
    pub observed: Option<LimitReason>,
}

impl Governor {
    /// The limits `config` describes, counting into `metrics`; `shared` keeps them
    /// cluster-wide when the scope is `cluster` (the configuration made sure the store is
    /// Redis, so it is there).
    pub fn new(config: LimitsConfig, metrics: LimitsMetrics, shared: Option<SharedLimits>) -> Self {
        let cluster = match (config.scope, shared) {
            (Scope::Cluster, Some(shared)) => {
                Some(Cluster::new(shared, config.local_share, metrics.clone()))
            }
            _ => {
                metrics.scope(LimitScope::Local);
                None
            }
        };
        Self {
            inner: Arc::new(Inner {
                origin: Instant::now(),
                states: States::new(MAX_MERCHANTS, IDLE_TTL),
                breaker: config
                    .breaker
                    .map(|breaker| Breaker::new(breaker.failures, breaker.open_for)),
                budget: config
                    .retries
                    .map(|r| Budget::new(r.budget_ratio, r.budget_per_second)),
                callers: config
                    .callers
                    .iter()
                    .map(|(name, rate)| (name.clone(), (*rate, Bucket::default())))
                    .collect(),
                cluster,
                config,
                metrics,
            }),
        }
    }

    /// Lets a request for `merchant` by `caller` (when callers are authenticated) through,
    /// or refuses it. In `observe` mode it always lets it through, reporting what it would
    /// have refused.
    pub async fn admit(
        &self,
        merchant: MerchantId,
        caller: Option<&str>,
    ) -> Result<Admission, LimitError> {
        let inner = &self.inner;
        let now = self.now();
        let probe = match inner.breaker.as_ref().map(|breaker| breaker.admit(now)) {
            Some(Err(wait)) => {
                inner.metrics.breaker_refused();
                return Err(LimitError::BreakerOpen(round_up(wait)));
            }
            Some(Ok(probe)) => probe,
            None => None,
        };
        let state = self.state(merchant, now);
        let mut observed = None;
        if let Some(wait) = state.cooldown.remaining(now) {
            self.limited(LimitError::CoolingDown(round_up(wait)), &mut observed)?;
        }
        let caller = caller.and_then(|name| inner.callers.get_key_value(name));
        let verdict = match &inner.cluster {
            Some(cluster) => {
                let caller = caller.map(|(name, (rate, _))| (name.as_str(), *rate));
                cluster.check(merchant, state.limits.rate, caller).await
            }
            None => None,
        };
        match verdict {
            Some(Shared::Allowed) => {}
            Some(Shared::CoolingDown(wait)) => {
                // Kept here too: until it ends, this replica answers without asking Redis.
                state.cooldown.hold(now, wait);
                self.limited(LimitError::CoolingDown(round_up(wait)), &mut observed)?;
            }
            Some(Shared::Refused {
                caller,
                rate,
                retry_after,
                reset,
            }) => {
                let scope =
                    caller.map_or_else(|| "this merchant".into(), |n| format!("caller {n}"));
                self.limited(rate_limited(scope, rate, retry_after, reset), &mut observed)?;
            }
            None => {
                let local = |rate: Rate| match &inner.cluster {
                    Some(cluster) => cluster.share(rate),
                    None => rate,
                };
                if let Some(rate) = state.limits.rate {
                    self.take(
                        &state.bucket,
                        local(rate),
                        now,
                        || "this merchant".into(),
                        &mut observed,
                    )?;
                }
                if let Some((name, (rate, bucket))) = caller {
                    self.take(
                        bucket,
                        local(*rate),
                        now,
                        || format!("caller {name}"),
                        &mut observed,
                    )?;
                }
            }
        }
        let wait = match observed {
            Some(_) => Duration::ZERO,
            None => inner.config.in_flight_wait,
        };
        let slot = state.slots.acquire(wait).await;
        if slot.is_none() {
            self.limited(
                LimitError::InFlight {
                    limit: state.limits.max_in_flight,
                    waited: wait,
                },
                &mut observed,
            )?;
        }
        Ok(Admission {
            merchant,
            state,
            _slot: slot,
            _probe: probe,
            observed,
        })
    }

    /// Poynt answered the `admitted` request with `status`: a 429 starts the merchant's
    /// cool-down and is marked as Poynt's in `headers`; anything else ends a run of 429s.
    pub fn answered(&self, admitted: &Admission, status: StatusCode, headers: &mut HeaderMap) {
        let inner = &self.inner;
        let merchant = admitted.merchant;
        if let Some(breaker) = &inner.breaker {
            let transition = if status.is_server_error() {
                breaker.failed(self.now())
            } else {
                breaker.succeeded()
            };
            self.breaker_moved(transition, status.as_str());
        }
        if status != StatusCode::TOO_MANY_REQUESTS {
            admitted.state.cooldown.answered();
            return;
        }
        inner.metrics.poynt_throttled();
        // The marker goes on before anything can fail, so Poynt's 429 is always labelled.
        headers.insert(LIMIT_SOURCE_HEADER, HeaderValue::from_static("poynt"));
        let retry_after = headers
            .get(http::header::RETRY_AFTER)
            .and_then(|value| retry_after::parse(value, SystemTime::now()));
        let backoff = Backoff {
            initial: inner.config.cooldown_initial,
            max: inner.config.cooldown_max,
        };
        let wait =
            admitted
                .state
                .cooldown
                .start(self.now(), retry_after, backoff, rand::random::<f64>());
        if let Some(cluster) = &inner.cluster {
            cluster.cool_down(merchant, wait);
        }
        tracing::info!(
            %merchant,
            cooldown_ms = wait.as_millis() as u64,
            retry_after_given = retry_after.is_some(),
            "Poynt answered 429; the merchant's requests are held back"
        );
    }

    /// A request with a kept body is about to be sent: its share of the retry budget, and how
    /// many retries it may have (none unless `limits.retries` is enabled and `method` may be
    /// repeated; `named`: the caller sent the `Poynt-Request-Id` Poynt will see).
    pub fn retries(&self, method: &Method, named: bool) -> Retries {
        let (Some(config), Some(budget)) = (self.inner.config.retries, &self.inner.budget) else {
            return Retries { left: 0, sent: 0 };
        };
        budget.deposit(self.now());
        let left = if retry::may_repeat(method, named, config.post_with_request_id) {
            config.max
        } else {
            0
        };
        Retries { left, sent: 0 }
    }

    /// An exchange failed with `status` (`None`: no connection or no response head): whether
    /// to send it again. When it is retryable, retries are left and the budget has one, it
    /// waits out the back-off and answers `true`.
    pub async fn before_retry(&self, retries: &mut Retries, status: Option<StatusCode>) -> bool {
        let inner = &self.inner;
        let (Some(config), Some(budget)) = (inner.config.retries, &inner.budget) else {
            return false;
        };
        if retries.left == 0 || !status.is_none_or(retry::retryable_status) {
            return false;
        }
        if !budget.take(self.now()) {
            inner.metrics.retry(false);
            return false;
        }
        retries.left -= 1;
        retries.sent += 1;
        inner.metrics.retry(true);
        let pause = retry::backoff(config.backoff, retries.sent, rand::random::<f64>());
        tokio::time::sleep(pause).await;
        true
    }

    /// Poynt could not be reached or did not answer in time: a failure for the breaker.
    pub fn upstream_failed(&self) {
        if let Some(breaker) = &self.inner.breaker {
            self.breaker_moved(breaker.failed(self.now()), "no answer");
        }
    }

    /// Reports a change of the breaker's state, with the failure or status behind it.
    fn breaker_moved(&self, transition: Option<Transition>, outcome: &str) {
        match transition {
            None => {}
            Some(Transition::Opened) => {
                self.inner.metrics.breaker_open(true);
                tracing::warn!(
                    outcome,
                    "circuit breaker open: Poynt failed too often in a row; requests are refused until a probe succeeds"
                );
            }
            Some(Transition::Closed) => {
                self.inner.metrics.breaker_open(false);
                tracing::info!(outcome, "circuit breaker closed: a probe reached Poynt");
            }
        }
    }

    /// Takes one request from `bucket`; an empty one is a limit met (`scope` names whose).
    fn take(
        &self,
        bucket: &Bucket,
        rate: Rate,
        now: u64,
        scope: impl FnOnce() -> String,
        observed: &mut Option<LimitReason>,
    ) -> Result<(), LimitError> {
        let decision = bucket.take(rate, now);
        if decision.allowed {
            return Ok(());
        }
        self.limited(
            rate_limited(scope(), rate, decision.retry_after, decision.reset),
            observed,
        )
    }

    /// Counts a limit met; `Err` refuses the request unless the mode only observes.
    fn limited(
        &self,
        error: LimitError,
        observed: &mut Option<LimitReason>,
    ) -> Result<(), LimitError> {
        let reason = match error {
            LimitError::RateLimited { .. } => LimitReason::RateLimited,
            LimitError::CoolingDown(_) => LimitReason::CoolingDown,
            LimitError::InFlight { .. } => LimitReason::InFlight,
            LimitError::BreakerOpen(_) => return Err(error),
        };
        let refuse = self.inner.config.mode == Mode::Enforce;
        self.inner.metrics.limited(reason, refuse);
        if refuse {
            return Err(error);
        }
        observed.get_or_insert(reason);
        Ok(())
    }

    /// The merchant's state, made on first sight with its configured limits.
    fn state(&self, merchant: MerchantId, now: u64) -> Arc<State> {
        let config = &self.inner.config;
        self.inner.states.get(merchant, now, || {
            let limits = config.for_merchant(merchant);
            Arc::new(State {
                limits,
                cooldown: Cooldown::default(),
                bucket: Bucket::default(),
                slots: Slots::new(limits.max_in_flight),
                touched: AtomicU64::new(now),
            })
        })
    }

    /// Nanoseconds since the origin, on Tokio's clock.
    fn now(&self) -> u64 {
        u64::try_from(self.inner.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// The refusal of a bucket (`scope` names whose) at `rate`.
fn rate_limited(scope: String, rate: Rate, retry_after: Duration, reset: Duration) -> LimitError {
    LimitError::RateLimited {
        scope,
        burst: rate.burst,
        per_second: rate.per_second,
        retry_after: round_up(retry_after),
        reset,
    }
}

/// `wait` rounded up to whole milliseconds, for messages and headers.
fn round_up(wait: Duration) -> Duration {
    Duration::from_millis(u64::try_from(wait.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX))
}
