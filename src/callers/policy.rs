//! What each caller may do: the merchants it may act for, and the methods and paths it may
//! use. Rules are matched against the guarded, normalised path (after `proxy::path`), so a
//! spelling the guard would rewrite or refuse cannot slip past a rule.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use http::Method;
use poynt_wire::MerchantId;

/// Longest caller name: a DNS name's length, which covers Kubernetes service-account
/// subjects and SPIFFE IDs in practice.
const MAX_NAME: usize = 253;

/// Every caller's rights, by caller name.
#[derive(Debug, Clone)]
pub struct Policy {
    callers: BTreeMap<Arc<str>, Arc<CallerPolicy>>,
}

/// One caller's rights.
#[derive(Debug)]
pub struct CallerPolicy {
    /// The merchants it may act for.
    pub merchants: Merchants,
    /// Method and path patterns it may use; a request must match one.
    pub rules: Vec<Rule>,
}

/// The merchants a caller may act for.
#[derive(Debug, PartialEq, Eq)]
pub enum Merchants {
    /// Any merchant the proxy serves.
    All,
    /// Merchants with a stored onboarding grant (they authorised the app themselves).
    Onboarded,
    /// These merchants (written inline or in a file).
    Listed(HashSet<MerchantId>),
}

/// `METHOD /path/pattern`: the method or `*` for any; in the path, `*` matches any run of
/// characters within one segment, and a pattern that ends in `*` also matches any further
/// segments (`GET /businesses/*/orders*` allows `/businesses/{id}/orders/{order}`).
#[derive(Debug, PartialEq, Eq)]
pub struct Rule {
    /// As written, for the refusal message and the log.
    pub text: String,
    method: Option<Method>,
    segments: Vec<Segment>,
    open_end: bool,
}

/// One segment of a rule's path pattern, split at its stars when the rule is read, so a
/// request's match allocates nothing.
#[derive(Debug, PartialEq, Eq)]
struct Segment {
    /// The literal runs between stars (one, without a star).
    pieces: Vec<String>,
}

impl Policy {
    /// A policy over these callers.
    pub fn new(callers: BTreeMap<Arc<str>, Arc<CallerPolicy>>) -> Self {
        Self { callers }
    }

    /// The rights of `caller`, when it has an entry.
    pub fn get(&self, caller: &str) -> Option<(&Arc<str>, &Arc<CallerPolicy>)> {
        self.callers.get_key_value(caller)
    }

    /// The configured caller names: the bounded set the `caller` metric label is drawn from.
    pub fn names(&self) -> impl Iterator<Item = &Arc<str>> {
        self.callers.keys()
    }
}

impl CallerPolicy {
    /// The first rule that allows `method` on `path`.
    pub fn rule_for(&self, method: &Method, path: &str) -> Option<&Rule> {
        self.rules.iter().find(|rule| rule.matches(method, path))
    }
}

impl Rule {
    /// Parses `METHOD /pattern`; the error says what was expected and what was found.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (method, path) = text.trim().split_once(' ').ok_or_else(|| {
            format!(
                "expected \"METHOD /path\" (e.g. \"GET /businesses/*/orders*\"); found {text:?}"
            )
        })?;
        let method = match method {
            "*" => None,
            name => Some(
                Method::from_bytes(name.as_bytes())
                    .ok()
                    .filter(|m| m.as_str().bytes().all(|b| b.is_ascii_uppercase()))
                    .ok_or_else(|| {
                        format!("expected an upper-case HTTP method or *; found {name:?}")
                    })?,
            ),
        };
        let path = path.trim();
        if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
            return Err(format!(
                "expected a path pattern starting with / (no query); found {path:?}"
            ));
        }
        let open_end = path.ends_with('*');
        let segments = path[1..]
            .split('/')
            .map(|segment| Segment {
                pieces: segment.split('*').map(str::to_owned).collect(),
            })
            .collect();
        Ok(Self {
            text: text.trim().to_owned(),
            method,
            segments,
            open_end,
        })
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        if self.method.as_ref().is_some_and(|m| m != method) {
            return false;
        }
        let Some(path) = path.strip_prefix('/') else {
            return false;
        };
        let mut rest = Some(path);
        let last = self.segments.len() - 1;
        for (index, segment) in self.segments.iter().enumerate() {
            if index == last && self.open_end {
                // The rest of the path, further segments included, against the last pattern.
                return segment.matches(rest.unwrap_or_default());
            }
            let Some(remaining) = rest else {
                return false;
            };
            // A byte search: segments are short, and `/` is ASCII.
            let (part, after) = match remaining.bytes().position(|b| b == b'/') {
                Some(at) => (&remaining[..at], Some(&remaining[at + 1..])),
                None => (remaining, None),
            };
            if !segment.matches(part) {
                return false;
            }
            rest = after;
        }
        rest.is_none()
    }
}

impl Segment {
    /// Whether `text` matches, each star standing for any run of characters.
    fn matches(&self, text: &str) -> bool {
        let Some((first, pieces)) = self.pieces.split_first() else {
            return text.is_empty();
        };
        let Some(mut rest) = text.strip_prefix(first.as_str()) else {
            return false;
        };
        let Some((last, middle)) = pieces.split_last() else {
            return rest.is_empty();
        };
        for piece in middle {
            match rest.find(piece.as_str()) {
                Some(at) => rest = &rest[at + piece.len()..],
                None => return false,
            }
        }
        rest.ends_with(last.as_str())
    }
}

/// A caller name is a metric label value and a log field: printable ASCII of the kinds
/// service-account subjects, SPIFFE IDs and DNS names use.
pub fn valid_caller_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:@/-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "expected a caller name of 1 to {MAX_NAME} characters from A-Z a-z 0-9 . _ : @ / -; found {name:?}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(rule: &str, method: Method, path: &str) -> bool {
        Rule::parse(rule).unwrap().matches(&method, path)
    }

    #[test]
    fn a_star_matches_within_a_segment_and_a_final_star_matches_the_rest() {
        let rule = "GET /businesses/*/orders*";
        assert!(allows(rule, Method::GET, "/businesses/b1/orders"));
        assert!(allows(rule, Method::GET, "/businesses/b1/orders/o1"));
        assert!(!allows(rule, Method::POST, "/businesses/b1/orders"));
        assert!(!allows(rule, Method::GET, "/businesses/b1/transactions"));
        assert!(!allows(rule, Method::GET, "/businesses/b1/x/orders"));
        let refunds = "POST /businesses/*/transactions/*/refunds";
        assert!(allows(
            refunds,
            Method::POST,
            "/businesses/b/transactions/t/refunds"
        ));
        assert!(!allows(
            refunds,
            Method::POST,
            "/businesses/b/transactions/t/refunds/x"
        ));
        assert!(allows("* /businesses/*", Method::DELETE, "/businesses/b"));
        assert!(allows("* /businesses/*", Method::DELETE, "/businesses/b/c"));
        assert!(!allows(
            "GET /businesses/*/x",
            Method::GET,
            "/businesses/b/c/x"
        ));
        assert!(!allows("GET /orders", Method::GET, "/orders/1"));
    }

    #[test]
    fn a_malformed_rule_or_name_is_refused_saying_what_was_expected() {
        for bad in ["GET", "get /x", "GET x", "GET /x?y=1"] {
            let error = Rule::parse(bad).unwrap_err();
            assert!(error.starts_with("expected"), "{bad}: {error}");
        }
        assert!(valid_caller_name("spiffe://prod/ns/shop/sa/payments").is_ok());
        assert!(valid_caller_name("a b").is_err());
        assert!(valid_caller_name("").is_err());
    }
}
