//! Why a caller was refused, and why a callers file was. Messages say what was expected and
//! what was found, and never carry a credential: a token or key is named by its kind, a
//! `kid` or claim by its (capped) value only.

use std::time::Duration;

use http::Method;

/// Longest piece of caller-supplied text (a `kid`, a claim) quoted in a message.
const MAX_QUOTED: usize = 64;

/// Quotes caller-supplied text for a message: escaped and capped.
pub(super) fn quoted(text: &str) -> String {
    let capped: String = text.chars().take(MAX_QUOTED).collect();
    let more = if text.chars().count() > MAX_QUOTED {
        "…"
    } else {
        ""
    };
    format!("{capped:?}{more}")
}

/// A refusal: the caller could not be identified, or may not do what it asked.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// No acceptable credential: 401 `CALLER_UNAUTHENTICATED`.
    #[error("{error}")]
    Unauthenticated {
        /// Why.
        #[source]
        error: AuthError,
        /// Whether the answer carries `WWW-Authenticate: Bearer` (JWT bearer configured).
        challenge: bool,
    },
    /// An identified caller asked for something its policy does not allow: 403
    /// `CALLER_FORBIDDEN`.
    #[error(transparent)]
    Forbidden(#[from] Forbidden),
}

/// Why no caller could be identified.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No credential of a configured kind.
    #[error("expected a caller credential ({expected}); found none")]
    Missing {
        /// The configured kinds, as a caller would send them.
        expected: String,
    },
    /// The client certificate carries no name of the configured kinds that is a valid
    /// caller name.
    #[error("expected a client certificate naming the caller ({expected}); found none usable")]
    NoCertificateName {
        /// The configured kinds, in order.
        expected: String,
    },
    /// A credential header was sent more than once.
    #[error("expected at most one {header} header; found {count}")]
    Repeated {
        /// The header.
        header: &'static str,
        /// How many.
        count: usize,
    },
    /// `Authorization` holds something other than a bearer token.
    #[error("expected Authorization: Bearer <token>; found another scheme")]
    NotBearer,
    /// The API key matches no configured caller (unknown, or its caller was removed).
    #[error("expected an API key of a configured caller; found a key that matches none")]
    UnknownKey,
    /// The bearer token did not verify.
    #[error("expected a valid bearer token; {0}")]
    Jwt(#[from] JwtError),
    /// Two credentials name different callers.
    #[error(
        "expected the credentials presented to name one caller; the {first} names {first_caller} and the {second} names {second_caller}"
    )]
    Disagree {
        /// The first credential's kind.
        first: &'static str,
        /// Its caller.
        first_caller: String,
        /// The other credential's kind.
        second: &'static str,
        /// Its caller.
        second_caller: String,
    },
}

/// Why a bearer token did not verify.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// Not three base64url parts with a JSON header.
    #[error("found a token that does not decode: {0}")]
    Malformed(String),
    /// An algorithm other than RS256, ES256, EdDSA (`none` and HS* included).
    #[error("expected alg RS256, ES256 or EdDSA; found {0}")]
    Algorithm(String),
    /// No `kid` in the header.
    #[error("expected a kid in the token header; found none")]
    MissingKid,
    /// A `kid` the key set does not hold (after a refetch, for a URL).
    #[error("expected a kid of the configured key set; found {0}")]
    UnknownKid(String),
    /// The header's algorithm is not the one of the key the `kid` names.
    #[error("expected alg {expected} for key {kid}; found {found}")]
    AlgorithmMismatch {
        /// The key.
        kid: String,
        /// The key's algorithm.
        expected: String,
        /// The header's.
        found: String,
    },
    /// The signature does not match.
    #[error("found a signature that does not match the key {0}")]
    Signature(String),
    /// `exp` has passed (beyond the leeway).
    #[error("expected an unexpired token (leeway {}); found exp in the past", humantime::format_duration(*.0))]
    Expired(Duration),
    /// `nbf` is ahead (beyond the leeway).
    #[error("expected a token already valid (leeway {}); found nbf in the future", humantime::format_duration(*.0))]
    NotYetValid(Duration),
    /// `iss` is not the configured issuer.
    #[error("expected iss {0:?}; found another issuer")]
    Issuer(String),
    /// `aud` names none of the configured audiences.
    #[error("expected aud to name one of {0:?}; found none of them")]
    Audience(Vec<String>),
    /// A required claim is absent or not of its type.
    #[error("expected claim {0}; found it missing or not of its type")]
    Claim(String),
    /// The identity claim is not a usable caller name.
    #[error("expected claim {claim} to name a caller; {problem}")]
    Identity {
        /// The identity claim.
        claim: String,
        /// What was wrong with it.
        problem: String,
    },
    /// The key set could not be had (a URL that failed to answer).
    #[error("expected the key set to be reachable; {0}")]
    Jwks(#[from] JwksError),
}

/// Why a key set was refused.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// Not a JWKS document.
    #[error("expected a JWKS document ({{\"keys\": [...]}}); found {0}")]
    Json(String),
    /// No key of a usable kind with a `kid`.
    #[error(
        "expected at least one RSA, P-256 or Ed25519 public key with a kid; found none ({skipped} keys of other kinds or without kid skipped)"
    )]
    NoUsableKey {
        /// Keys left out.
        skipped: usize,
    },
    /// The URL could not be fetched.
    #[error("fetching {url}: {problem}")]
    Fetch {
        /// The JWKS URL.
        url: String,
        /// What failed.
        problem: String,
    },
}

/// Why an API key file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApiKeyFileError {
    /// A line that is not `name:hex-sha256`.
    #[error("line {number}: {problem}")]
    Line {
        /// 1-based (0: the name given to `add-key`).
        number: usize,
        /// What was expected and what was found.
        problem: String,
    },
    /// No entries.
    #[error("expected at least one name:sha256-hex line; found none")]
    Empty,
    /// The system's random source failed.
    #[error("expected random bytes for a new key; the system's random source failed")]
    Random,
}

/// Why an identified caller was refused.
#[derive(Debug, thiserror::Error)]
pub enum Forbidden {
    /// The caller has no entry in `callers.policy` (default deny).
    #[error(
        "caller {caller} has no entry in callers.policy; expected a configured caller (default deny)"
    )]
    NoPolicy {
        /// The caller.
        caller: String,
    },
    /// The merchant is outside the caller's merchants.
    #[error("callers.policy.{caller}.merchants: expected {expected}; found merchant {merchant}")]
    Merchant {
        /// The caller.
        caller: String,
        /// What the caller may act for.
        expected: &'static str,
        /// The merchant asked for.
        merchant: String,
    },
    /// No rule allows the method and path.
    #[error(
        "callers.policy.{caller}.allow: expected a request one of its rules allows; found {method} {path}"
    )]
    Route {
        /// The caller.
        caller: String,
        /// The method.
        method: Method,
        /// The guarded path.
        path: String,
    },
    /// Whether the merchant is onboarded could not be read.
    #[error(
        "callers.policy.{caller}.merchants: expected to read whether {merchant} is onboarded; the token store failed: {problem}"
    )]
    OnboardedUnknown {
        /// The caller.
        caller: String,
        /// The merchant.
        merchant: String,
        /// What failed.
        problem: String,
    },
}

impl Forbidden {
    /// The part of the caller's policy that refused, for the audit trail: `callers.policy`
    /// (no entry), `merchants` or `allow`.
    pub fn rule(&self) -> &'static str {
        match self {
            Self::NoPolicy { .. } => "callers.policy",
            Self::Merchant { .. } | Self::OnboardedUnknown { .. } => "merchants",
            Self::Route { .. } => "allow",
        }
    }
}
