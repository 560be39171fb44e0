//! What operators see of the broker: one merchant's status and paged lists, never a token.

use std::time::SystemTime;

use tokio::time::Instant;

use crate::token::broker::Broker;
use poynt_wire::GrantKind;
use poynt_wire::MerchantId;

/// What the admin API shows of a merchant (never a token or refresh token).
#[derive(Debug, Clone, serde::Serialize)]
pub struct MerchantStatus {
    /// The merchant.
    pub merchant: String,
    /// Token expiry, RFC 3339, when a token is cached.
    pub expires_at: Option<String>,
    /// When the next renewal starts, RFC 3339.
    pub refresh_at: Option<String>,
    /// Grant of the cached token.
    pub grant: Option<GrantKind>,
    /// The cached token's record generation: replicas sharing a store converge on one.
    pub generation: Option<u64>,
    /// Whether a refresh token is held.
    pub has_refresh_token: bool,
    /// When the last successful grant arrived, RFC 3339.
    pub last_renewal: Option<String>,
    /// The last grant failure.
    pub last_error: Option<String>,
    /// Seconds until the next grant attempt is allowed; 0 when not backing off.
    pub backoff_remaining_secs: u64,
    /// Consecutive failures.
    pub failures: u32,
    /// Whether a grant for this merchant is in flight now.
    pub renewing: bool,
}

/// One page of statuses, in business-ID order.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatusPage {
    /// The statuses on this page.
    pub merchants: Vec<MerchantStatus>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

impl Broker {
    /// Number of cached tokens and of merchants backing off, for the gauges.
    pub async fn counts(&self) -> (u64, u64) {
        let inner = self.inner();
        (
            inner.tokens.len().await,
            inner.states.backing_off(Instant::now()),
        )
    }

    /// Up to `limit` merchants whose business ID sorts after `after`, in order.
    pub async fn statuses(&self, after: Option<MerchantId>, limit: usize) -> StatusPage {
        let inner = self.inner();
        let mut merchants: Vec<MerchantId> = inner
            .states
            .merchants()
            .chain(inner.tokens.merchants())
            .filter(|m| after.is_none_or(|after| *m > after))
            .collect();
        merchants.sort_unstable();
        merchants.dedup();
        let more = merchants.len() > limit;
        merchants.truncate(limit);
        let next_after = more
            .then(|| merchants.last().map(ToString::to_string))
            .flatten();
        let mut statuses = Vec::with_capacity(merchants.len());
        for merchant in merchants {
            statuses.extend(self.status(merchant).await);
        }
        StatusPage {
            merchants: statuses,
            next_after,
        }
    }

    /// What the broker holds for one merchant, if anything.
    pub async fn status(&self, merchant: MerchantId) -> Option<MerchantStatus> {
        let inner = self.inner();
        let token = inner.tokens.get(merchant).await;
        let state = inner.states.get(merchant);
        if token.is_none() && state.is_none() {
            return None;
        }
        let now = Instant::now();
        let mut status = MerchantStatus {
            merchant: merchant.to_string(),
            expires_at: token.as_ref().map(|t| rfc3339(t.expires_at())),
            refresh_at: token.as_ref().map(|t| rfc3339(t.refresh_at())),
            grant: token.as_ref().map(|t| t.grant()),
            generation: token.as_ref().map(|t| t.generation()),
            has_refresh_token: false,
            last_renewal: None,
            last_error: None,
            backoff_remaining_secs: 0,
            failures: 0,
            renewing: false,
        };
        if let Some(state) = state {
            let s = state.lock();
            status.has_refresh_token = s.refresh_token.is_some();
            status.last_renewal = s.last_renewal.map(rfc3339);
            status.last_error.clone_from(&s.last_error);
            status.backoff_remaining_secs = s.backoff_until.map_or(0, |u| {
                u.saturating_duration_since(now).as_secs_f64().ceil() as u64
            });
            status.failures = s.failures;
            status.renewing = s.flight.is_some();
        }
        Some(status)
    }
}
