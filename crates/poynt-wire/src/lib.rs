//! The Poynt Cloud API's wire vocabulary and the merchant ID, shared by the proxy (which
//! speaks it) and the emulator (which answers it), so both sides agree on one spelling of
//! every name. A crate of its own so the emulator can depend on it without the proxy.

#![forbid(unsafe_code)]

mod merchant;

use serde::{Deserialize, Serialize};

pub use merchant::{InvalidMerchantId, MerchantId};

/// Header carrying the API version; Poynt requires it on every call, `/token` included.
pub const API_VERSION_HEADER: &str = "api-version";
/// Header the SDKs send on every call and Poynt echoes back, to correlate logs on both sides.
pub const REQUEST_ID_HEADER: &str = "poynt-request-id";
/// `grantType` of the RFC 7523 JWT-bearer grant.
pub const GRANT_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// `grantType` of the refresh grant.
pub const GRANT_REFRESH_TOKEN: &str = "REFRESH_TOKEN";
/// `grant_type` of the authorization-code grant (snake_case on the wire, unlike the others).
pub const GRANT_AUTHORIZATION_CODE: &str = "authorization_code";
/// Custom claim naming the merchant (business) a token or assertion acts for.
pub const CLAIM_BUSINESS: &str = "poynt.biz";
/// Longest lifetime Poynt accepts for a self-signed assertion (`exp - iat`), in seconds.
pub const MAX_ASSERTION_LIFETIME_SECS: u64 = 300;

/// Poynt's error body. The proxy answers its own errors in this shape so that callers
/// written against Poynt parse them unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `INVALID_ACCESS_TOKEN`.
    pub code: String,
    /// The HTTP status repeated in the body, as Poynt does.
    pub http_status: u16,
    /// Human-readable explanation: what was expected and what was found.
    pub message: String,
    /// Extra detail Poynt sometimes adds; the proxy leaves it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub developer_message: Option<String>,
    /// The request's `Poynt-Request-Id`, so a caller can quote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl ErrorBody {
    /// Builds a body with the given code, status and message and no request id yet.
    pub fn new(code: impl Into<String>, http_status: u16, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            http_status,
            message: message.into(),
            developer_message: None,
            request_id: None,
        }
    }

    /// Serialises the body; infallible because every field is a plain string or number.
    pub fn to_json(&self) -> bytes::Bytes {
        bytes::Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// Which grant produced a token, as a bounded label for metrics, logs, the admin API and the
/// token store (which must not depend on the token module).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantKind {
    /// RFC 7523 JWT-bearer.
    JwtBearer,
    /// Refresh token.
    RefreshToken,
    /// Authorization code.
    AuthorizationCode,
}

impl GrantKind {
    /// Every grant, so metrics can export each one's series from the start.
    pub const ALL: [Self; 3] = [Self::JwtBearer, Self::RefreshToken, Self::AuthorizationCode];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::JwtBearer => "jwt_bearer",
            Self::RefreshToken => "refresh_token",
            Self::AuthorizationCode => "authorization_code",
        }
    }
}
