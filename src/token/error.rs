//! Why the broker could not give a caller a token. Everyone waiting on a grant in flight
//! shares its outcome (`state.rs`), so the error lives below both the broker and the state.

use std::time::Duration;

use crate::token::grant::GrantError;

/// Why no token could be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// Poynt refused every grant the broker could try for this merchant.
    #[error("Poynt refused a token for this merchant: {reason}")]
    Refused {
        /// The refusal, without any secret.
        reason: String,
    },
    /// Poynt said the merchant has not authorized the app (or removed it): only the
    /// merchant can fix that, by connecting through onboarding.
    #[error(
        "the merchant has not authorized this application on Poynt; it must connect through the onboarding listener's /connect first ({reason})"
    )]
    NotAuthorized {
        /// Poynt's refusal, without any secret.
        reason: String,
    },
    /// Poynt could not be reached or failed.
    #[error("Poynt's token endpoint is unavailable: {reason}")]
    Unavailable {
        /// What went wrong.
        reason: String,
        /// When it is worth trying again.
        retry_after: Duration,
    },
    /// The merchant's last grant failed and it is waiting before the next attempt.
    #[error("token grants for this merchant are backing off after a failure: {last_error}")]
    BackingOff {
        /// The failure that started the back-off.
        last_error: String,
        /// Time left.
        retry_after: Duration,
    },
    /// The merchant was never granted a token and the budget for such grants is spent.
    #[error(
        "expected a merchant granted before, or room in the budget for new merchants' grants; found the budget spent"
    )]
    Throttled {
        /// When the budget has room again.
        retry_after: Duration,
    },
}

impl BrokerError {
    /// Classifies a failed grant: Poynt said no, or Poynt could not answer (worth a retry
    /// after `retry_after`).
    pub(super) fn from_grant(error: &GrantError, retry_after: Duration) -> Self {
        let reason = error.to_string();
        if error.is_merchant_not_authorized() {
            Self::NotAuthorized { reason }
        } else if error.is_refused() {
            Self::Refused { reason }
        } else {
            Self::Unavailable {
                reason,
                retry_after,
            }
        }
    }
}
