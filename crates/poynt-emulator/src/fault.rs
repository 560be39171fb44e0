//! Faults the test-suite injects into `/token` and into the resource API (`/businesses/...`),
//! to exercise the proxy's behaviour when Poynt is slow, failing, throttling or unreachable.
//! API faults are decided before the token check, as Poynt's own edge refuses before its API
//! does; every faulted API call still counts in `api_calls` and `api_calls_by_merchant`.

use std::collections::BTreeMap;
use std::time::Duration;

use hyper::StatusCode;
use serde::{Deserialize, Serialize};

use poynt_wire::MerchantId;

/// The faults `/token` and the API currently simulate; the JSON of `POST /_emulator/fault`.
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
    /// Answer every API call for these merchants (hyphenated UUID -> seconds) 429
    /// `TOO_MANY_REQUESTS` with `Retry-After` set to the seconds: Poynt throttling a merchant.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub api_throttle: BTreeMap<String, u64>,
    /// Answer every Nth API call (counted from when the fault was set, so 2 means "every
    /// other call, the 2nd, 4th, ...") with `api_error_status`: a deterministic error rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_error_every: Option<u64>,
    /// The status `api_error_every` answers (500–599); 503 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_error_status: Option<u16>,
    /// Wait this long before deciding every API call (Poynt slow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_delay_ms: Option<u64>,
    /// Close the connection of every API call without answering (Poynt dropping connections).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub api_drop: bool,
    /// Hold every API call unanswered until this fault is replaced, then close its
    /// connection (Poynt black-holed: connections accepted, nothing ever answered).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub api_blackhole: bool,
}

/// What an injected fault does to one API call, decided before the call is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ApiFault {
    /// Hold the call until the fault changes, then close the connection.
    Blackhole,
    /// Close the connection unanswered.
    Drop,
    /// Answer 429 with `Retry-After` in seconds.
    Throttle(u64),
    /// Answer this 5xx.
    Error(StatusCode),
}

impl Fault {
    /// Checks what serde cannot: the status must be an error status. The message says what
    /// was expected and what was found.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(status) = self.token_status
            && !(400..=599).contains(&status)
        {
            return Err(format!(
                "expected token_status between 400 and 599; found {status}"
            ));
        }
        if let Some(status) = self.api_error_status
            && !(500..=599).contains(&status)
        {
            return Err(format!(
                "expected api_error_status between 500 and 599; found {status}"
            ));
        }
        if self.api_error_every == Some(0) {
            return Err("expected api_error_every of at least 1; found 0".to_owned());
        }
        match self
            .api_throttle
            .keys()
            .find(|merchant| MerchantId::parse(merchant).is_err())
        {
            Some(merchant) => Err(format!(
                "expected api_throttle keys as hyphenated merchant UUIDs; found {merchant:?}"
            )),
            None => Ok(()),
        }
    }

    /// What the fault does to an API call for `merchant` that is the `sequence`th (from 1)
    /// since the fault was set; `None` serves it normally. Hot path: no allocation unless a
    /// merchant is throttled.
    pub(crate) fn api(&self, merchant: Option<MerchantId>, sequence: u64) -> Option<ApiFault> {
        if self.api_blackhole {
            return Some(ApiFault::Blackhole);
        }
        if self.api_drop {
            return Some(ApiFault::Drop);
        }
        if !self.api_throttle.is_empty()
            && let Some(merchant) = merchant
            && let Some(seconds) = self.api_throttle.get(&merchant.to_string())
        {
            return Some(ApiFault::Throttle(*seconds));
        }
        match self.api_error_every {
            Some(every) if every > 0 && sequence.is_multiple_of(every) => Some(ApiFault::Error(
                self.api_error_status
                    .and_then(|status| StatusCode::from_u16(status).ok())
                    .filter(StatusCode::is_server_error)
                    .unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            )),
            _ => None,
        }
    }

    /// The injected API delay, if any.
    pub(crate) fn api_delay(&self) -> Option<Duration> {
        self.api_delay_ms.map(Duration::from_millis)
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
        for (json, found) in [
            (r#"{"api_error_status": 429}"#, "found 429"),
            (r#"{"api_error_every": 0}"#, "found 0"),
            (r#"{"api_throttle": {"abc": 5}}"#, "found \"abc\""),
        ] {
            let fault: Fault = serde_json::from_str(json).unwrap();
            assert!(fault.validate().unwrap_err().contains(found), "{json}");
        }
    }

    #[test]
    fn api_faults_throttle_one_merchant_and_fail_every_nth_call() {
        let a = MerchantId::parse("c9580c24-b61e-4e0d-ad26-1dd1d3943d2c").unwrap();
        let b = MerchantId::parse("0c4a2d3e-5f60-4a7b-8c9d-0e1f2a3b4c5d").unwrap();
        let fault: Fault = serde_json::from_str(&format!(
            r#"{{"api_throttle": {{"{a}": 5}}, "api_error_every": 2}}"#
        ))
        .unwrap();
        assert!(fault.validate().is_ok());
        assert_eq!(fault.api(Some(a), 1), Some(ApiFault::Throttle(5)));
        assert_eq!(fault.api(Some(b), 1), None);
        assert_eq!(
            fault.api(Some(b), 2),
            Some(ApiFault::Error(StatusCode::SERVICE_UNAVAILABLE))
        );
        assert_eq!(fault.api(None, 3), None);
        let held = Fault {
            api_blackhole: true,
            api_drop: true,
            ..Fault::default()
        };
        assert_eq!(held.api(Some(b), 1), Some(ApiFault::Blackhole));
        assert_eq!(Fault::default().api(Some(a), 2), None);
    }
}
