//! Faults the test-suite injects into `/token`, to exercise the proxy's behaviour when Poynt
//! is slow, failing or unreachable.

use std::time::Duration;

use hyper::StatusCode;
use serde::{Deserialize, Serialize};

/// The faults `/token` currently simulates; the JSON of `POST /_emulator/fault`.
/// `Fault::default()` (JSON `{}`) clears them all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Answer every `/token` call with this status (400–599) and a Poynt error body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_status: Option<u16>,
    /// Close the connection of every `/token` call without answering (Poynt unreachable).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub token_drop: bool,
    /// Wait this long before handling every `/token` call (Poynt slow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_delay_ms: Option<u64>,
    /// Issue tokens with this `expiresIn` (and an `exp` that far ahead, saturating), instead
    /// of the configured lifetime: a hostile or broken Poynt, e.g. `u64::MAX`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_expires_in: Option<u64>,
}

impl Fault {
    /// Checks what serde cannot: the status must be an error status. The message says what
    /// was expected and what was found.
    pub fn validate(&self) -> Result<(), String> {
        match self.token_status {
            Some(status) if !(400..=599).contains(&status) => Err(format!(
                "expected token_status between 400 and 599; found {status}"
            )),
            _ => Ok(()),
        }
    }

    /// The injected status, if any; out-of-range values (possible only through the Rust
    /// API, which cannot refuse) become 503.
    pub(crate) fn status(&self) -> Option<StatusCode> {
        self.token_status
            .map(|status| match StatusCode::from_u16(status) {
                Ok(code) if code.as_u16() >= 400 => code,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            })
    }

    /// The injected delay, if any.
    pub(crate) fn delay(&self) -> Option<Duration> {
        self.token_delay_ms.map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_json_clears_and_unknown_fields_are_refused() {
        assert_eq!(
            serde_json::from_str::<Fault>("{}").unwrap(),
            Fault::default()
        );
        assert!(serde_json::from_str::<Fault>(r#"{"token_stat": 503}"#).is_err());
        let fault: Fault =
            serde_json::from_str(r#"{"token_status": 503, "token_delay_ms": 5}"#).unwrap();
        assert_eq!(fault.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(fault.delay(), Some(Duration::from_millis(5)));
    }

    #[test]
    fn only_error_statuses_are_valid() {
        let ok = Fault {
            token_status: Some(429),
            ..Fault::default()
        };
        assert!(ok.validate().is_ok());
        let bad = Fault {
            token_status: Some(200),
            ..Fault::default()
        };
        assert!(bad.validate().unwrap_err().contains("found 200"));
        assert_eq!(bad.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    }
}
