//! What an audit line says. Every field is an identifier, a kind or an outcome: the types
//! have no place for a token, assertion, key or code, so a line cannot carry one.

use http::Method;
use poynt_wire::{GrantKind, MerchantId};
use serde::Serialize;

/// Longest path template written; a longer caller-sent path is cut (and marked `…`).
const MAX_TEMPLATE: usize = 256;

/// One audited event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A `/token` call (a JWT-bearer grant, a refresh or a code exchange) and how it ended.
    Grant {
        /// `jwt_bearer`, `refresh_token` or `authorization_code`.
        grant: &'static str,
        /// The merchant, when the grant names one.
        merchant: Option<String>,
        /// `success`, `rejected` or `error`.
        outcome: &'static str,
    },
    /// A cached token dropped by an admin eviction.
    Eviction {
        /// The merchant.
        merchant: String,
        /// Whether a token was cached.
        evicted: bool,
    },
    /// An onboarding callback's outcome.
    Onboarding {
        /// The merchant, once known.
        merchant: Option<String>,
        /// The outcome (`success`, `denied`, `bad_state`, ...).
        outcome: &'static str,
    },
    /// A call to `/admin/*`.
    Admin {
        /// The admin credential that was accepted: `admin.bearer_token`, or `none` (no
        /// secret configured, or none or a wrong one presented).
        credential: &'static str,
        /// The method.
        method: String,
        /// The path (admin paths name merchants, never secrets).
        path: String,
        /// The answer's status.
        status: u16,
    },
    /// A caller refused by its policy.
    Refusal {
        /// The caller.
        caller: String,
        /// The merchant asked for.
        merchant: String,
        /// The rule that refused (`callers.policy`, `merchants`, `allow`).
        rule: &'static str,
        /// `enforce` (answered 403) or `observe` (served anyway).
        mode: &'static str,
    },
    /// A caller acted for a merchant: one proxied request.
    Acted {
        /// The proven caller; `None` without `callers`.
        caller: Option<String>,
        /// The merchant.
        merchant: String,
        /// The method.
        method: String,
        /// The path with its ids replaced by `{id}`.
        path: String,
        /// The status answered.
        status: u16,
    },
}

impl Event {
    /// A grant of `kind` for `merchant` that ended with `outcome`.
    pub fn grant(kind: GrantKind, merchant: Option<MerchantId>, outcome: &'static str) -> Self {
        Self::Grant {
            grant: kind.as_str(),
            merchant: merchant.map(|m| m.to_string()),
            outcome,
        }
    }

    /// An admin eviction of `merchant`'s token; `evicted`: whether one was cached.
    pub fn eviction(merchant: MerchantId, evicted: bool) -> Self {
        Self::Eviction {
            merchant: merchant.to_string(),
            evicted,
        }
    }

    /// An onboarding callback for `merchant` (once known) that ended with `outcome`.
    pub fn onboarding(merchant: Option<MerchantId>, outcome: &'static str) -> Self {
        Self::Onboarding {
            merchant: merchant.map(|m| m.to_string()),
            outcome,
        }
    }

    /// `caller` refused for `merchant` by `rule`, in `mode`.
    pub fn refusal(
        caller: &str,
        merchant: MerchantId,
        rule: &'static str,
        mode: &'static str,
    ) -> Self {
        Self::Refusal {
            caller: caller.to_owned(),
            merchant: merchant.to_string(),
            rule,
            mode,
        }
    }

    /// A call to the admin API with `credential`, answered with `status`.
    pub fn admin(credential: &'static str, method: &Method, path: &str, status: u16) -> Self {
        Self::Admin {
            credential,
            method: method.as_str().to_owned(),
            path: capped(path.to_owned()),
            status,
        }
    }

    /// A request `caller` sent for `merchant`, answered with `status`.
    pub fn acted(
        caller: Option<&str>,
        merchant: MerchantId,
        method: &Method,
        path: &str,
        status: u16,
    ) -> Self {
        Self::Acted {
            caller: caller.map(str::to_owned),
            merchant: merchant.to_string(),
            method: method.as_str().to_owned(),
            path: template(path),
            status,
        }
    }
}

/// `path` with every segment that holds a digit (Poynt's ids are UUIDs and numbers)
/// replaced by `{id}`, so the trail shows what kind of thing was touched without growing a
/// line per object, capped at [`MAX_TEMPLATE`] bytes.
pub fn template(path: &str) -> String {
    let segments: Vec<&str> = path
        .split('/')
        .map(|segment| {
            if segment.bytes().any(|b| b.is_ascii_digit()) {
                "{id}"
            } else {
                segment
            }
        })
        .collect();
    capped(segments.join("/"))
}

/// `text` cut to [`MAX_TEMPLATE`] bytes (at a character boundary) and marked `…` when it
/// was longer: a caller-sent path cannot make a line unbounded.
fn capped(mut text: String) -> String {
    if text.len() > MAX_TEMPLATE {
        let cut = (0..=MAX_TEMPLATE)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_replaces_ids_and_keeps_names() {
        assert_eq!(
            template("/businesses/5f4e3b1a-0000-4000-8000-000000000001/orders/42"),
            "/businesses/{id}/orders/{id}"
        );
        assert_eq!(template("/businesses/x/catalogs"), "/businesses/x/catalogs");
    }

    #[test]
    fn template_is_capped() {
        let long = format!("/{}", "a".repeat(1000));
        let t = template(&long);
        assert!(t.chars().count() <= MAX_TEMPLATE + 1, "{}", t.len());
        assert!(t.ends_with('…'));
    }
}
