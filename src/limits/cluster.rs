//! `limits.scope: cluster`: the merchants' and callers' buckets and the merchants'
//! cool-downs are kept in the Redis store, so replicas hold one limit between them. One
//! script call per request asks the cool-down and every bucket that applies.
//!
//! While Redis is known to be unreachable (the store's own reachability state, kept by its
//! calls and its probe) nothing is asked of it: each replica enforces its local share of
//! every rate (`limits.local_share`) in its local buckets, and the switch either way is
//! logged once and shown by `poynt_proxy_limits_scope`. A call that meets the outage
//! first waits at most `store.timeout`, and that request is decided locally too.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::metrics::{LimitScope, LimitsMetrics};
use crate::store::{Owner, SharedBucket, SharedLimits, Verdict};
use poynt_wire::MerchantId;

use super::config::Rate;

/// What the cluster-wide limits said about a request.
pub(super) enum Shared<'a> {
    /// Every bucket that applies took one.
    Allowed,
    /// The merchant cools down for this long yet (another replica met Poynt's 429).
    CoolingDown(Duration),
    /// A bucket had no room; nothing was taken.
    Refused {
        /// The caller whose bucket it was; `None`: the merchant's.
        caller: Option<&'a str>,
        /// That bucket's rate.
        rate: Rate,
        /// When one request fits again.
        retry_after: Duration,
        /// When the bucket is full again.
        reset: Duration,
    },
}

/// The cluster-wide limits and the state of the fallback to local shares.
pub(super) struct Cluster {
    shared: SharedLimits,
    /// The share of each rate enforced here while Redis is away.
    share: f64,
    /// True while the local share is enforced.
    local: AtomicBool,
    metrics: LimitsMetrics,
}

impl Cluster {
    pub(super) fn new(shared: SharedLimits, share: f64, metrics: LimitsMetrics) -> Self {
        metrics.scope(LimitScope::Cluster);
        Self {
            shared,
            share,
            local: AtomicBool::new(false),
            metrics,
        }
    }

    /// Asks Redis about a request for `merchant`, with the merchant's rate and the caller's
    /// (name and rate) when they apply. `None`: Redis is unreachable, decide locally with
    /// [`Cluster::share`]d rates.
    pub(super) async fn check<'a>(
        &self,
        merchant: MerchantId,
        rate: Option<Rate>,
        caller: Option<(&'a str, Rate)>,
    ) -> Option<Shared<'a>> {
        if !self.shared.is_reachable() {
            self.fall_back(true);
            return None;
        }
        let merchant_bucket = rate.map(|rate| bucket(Owner::Merchant(merchant), rate));
        let caller_bucket = caller.map(|(name, rate)| bucket(Owner::Caller(name), rate));
        let buckets: Vec<SharedBucket<'_>> =
            merchant_bucket.into_iter().chain(caller_bucket).collect();
        match self.shared.check(merchant, &buckets).await {
            Ok(verdict) => {
                self.fall_back(false);
                Some(match verdict {
                    Verdict::Allowed => Shared::Allowed,
                    Verdict::CoolingDown(wait) => Shared::CoolingDown(wait),
                    // The merchant's bucket, when it has one, was asked first.
                    Verdict::Refused {
                        bucket,
                        retry_after,
                        reset,
                    } => {
                        let (caller, rate) = match (rate, caller) {
                            (Some(rate), _) if bucket == 0 => (None, rate),
                            (_, Some((name, rate))) => (Some(name), rate),
                            (rate, None) => (None, rate?),
                        };
                        Shared::Refused {
                            caller,
                            rate,
                            retry_after,
                            reset,
                        }
                    }
                })
            }
            // Counted by the store's metrics; an outage is logged there and here, once.
            Err(error) => {
                tracing::debug!(%error, "the cluster-wide limits did not answer; this request is decided by the local share");
                self.fall_back(!self.shared.is_reachable());
                None
            }
        }
    }

    /// What one replica enforces of `rate` alone.
    pub(super) fn share(&self, rate: Rate) -> Rate {
        rate.share(self.share)
    }

    /// Tells the other replicas that `merchant` cools down for `wait`, beside the request
    /// (a 429 is answered without waiting for Redis); skipped while Redis is away, where
    /// each replica meets Poynt's 429 on its own.
    pub(super) fn cool_down(&self, merchant: MerchantId, wait: Duration) {
        if !self.shared.is_reachable() {
            return;
        }
        let shared = self.shared.clone();
        tokio::spawn(async move {
            if let Err(error) = shared.cool_down(merchant, wait).await {
                tracing::warn!(%merchant, %error, "the cool-down was not shared with the other replicas; they meet Poynt's 429 on their own");
            }
        });
    }

    /// Switches to (`true`) or from the local share, saying so once per switch.
    fn fall_back(&self, local: bool) {
        if self.local.swap(local, Ordering::AcqRel) == local {
            return;
        }
        if local {
            self.metrics.scope(LimitScope::LocalShare);
            tracing::warn!(
                share = self.share,
                "cluster-wide limits unreachable (the store is down); this replica enforces its local share of each limit until it returns"
            );
        } else {
            self.metrics.scope(LimitScope::Cluster);
            tracing::info!(
                "cluster-wide limits reachable again; limits are shared by the replicas"
            );
        }
    }
}

/// The shared bucket of `owner` at `rate`.
fn bucket(owner: Owner<'_>, rate: Rate) -> SharedBucket<'_> {
    SharedBucket {
        owner,
        interval: Duration::from_secs_f64(1.0 / rate.per_second),
        burst: rate.burst,
    }
}
