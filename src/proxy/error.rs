//! Every way a request can fail inside the proxy, and the one place that turns a failure
//! into Poynt's JSON error shape. Upstream answers (errors included) are never rewritten:
//! only failures of the proxy itself come through here.

use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;

use crate::access_log::Flag;
use crate::callers::error::{AuthError, Forbidden, JwksError, JwtError, Refusal};
use crate::limits::{LIMIT_SOURCE_HEADER, LimitError};
use crate::token::BrokerError;
use poynt_wire::{ErrorBody, REQUEST_ID_HEADER};

/// The methods forwarded to Poynt, as the `Allow` header of a 405 lists them.
pub const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// Which side of the proxy a failure belongs to, for logs and alerts: a caller's mistake,
/// Poynt's, or the proxy's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The caller sent something unacceptable.
    Downstream,
    /// Poynt failed or could not be reached.
    Upstream,
}

impl Side {
    /// The log field value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Downstream => "downstream",
            Self::Upstream => "upstream",
        }
    }
}

/// A failure of one request, one variant per error code.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No merchant header.
    #[error("expected the {header} header naming one merchant; found none")]
    MissingMerchantId {
        /// The configured header name.
        header: String,
    },
    /// The merchant header is not exactly one business ID.
    #[error("expected the {header} header to hold one business ID (a UUID); found {found}")]
    InvalidMerchantId {
        /// The configured header name.
        header: String,
        /// What was there (capped, escaped).
        found: String,
    },
    /// The path names another merchant than the header.
    #[error("the path names merchant {path_merchant}, but the {header} header names {merchant}")]
    MerchantPathMismatch {
        /// The configured header name.
        header: String,
        /// The header's merchant.
        merchant: String,
        /// What the path named.
        path_merchant: String,
    },
    /// The header names a merchant outside `merchant.allow`.
    #[error("expected a merchant this proxy is configured to serve; found {merchant}")]
    MerchantNotAllowed {
        /// The header's merchant.
        merchant: String,
    },
    /// A request target the path guard refuses (see `proxy::path`): what was expected and
    /// what was found.
    #[error("{0}")]
    InvalidPath(String),
    /// A method outside the ones Poynt's API uses (CONNECT, TRACE, extension methods).
    #[error("expected one of {ALLOWED_METHODS}; found {0}")]
    MethodNotAllowed(Method),
    /// The caller's body is malformed (broken chunked framing, cut short).
    #[error("{0}")]
    InvalidRequestBody(String),
    /// The caller stopped sending its body.
    #[error("{0}")]
    RequestTimeout(String),
    /// The request body is larger than the configured cap.
    #[error("expected a request body of at most {limit} bytes; found {found}")]
    PayloadTooLarge {
        /// The cap.
        limit: u64,
        /// The declared length, or "more" for a stream that passed the cap.
        found: String,
    },
    /// A limit of the merchant's refused the request before any call to Poynt.
    #[error("{0}")]
    Limited(#[from] LimitError),
    /// The caller proved no identity (no credential, or one that does not verify).
    #[error("{error}")]
    CallerUnauthenticated {
        /// Why.
        #[source]
        error: AuthError,
        /// Whether to answer `WWW-Authenticate: Bearer` (JWT bearer configured).
        challenge: bool,
    },
    /// The caller's policy does not allow this merchant, method or path.
    #[error(transparent)]
    CallerForbidden(Forbidden),
    /// What the caller check depends on failed (a JWKS URL that does not answer, the token
    /// store behind `merchants: onboarded`): not the caller's fault, so not a 401 or 403.
    #[error("the caller could not be checked: {0}")]
    CallerCheckUnavailable(String),
    /// No token could be had for the merchant.
    #[error("no access token for this merchant: {0}")]
    Token(#[from] BrokerError),
    /// Poynt could not be reached or the exchange broke.
    #[error("Poynt could not be reached: {0}")]
    UpstreamUnavailable(String),
    /// Poynt did not send response headers in time.
    #[error("Poynt did not answer within {}", humantime::format_duration(*.0))]
    UpstreamTimeout(Duration),
}

impl From<Refusal> for ProxyError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Unauthenticated {
                error: AuthError::Jwt(JwtError::Jwks(error @ JwksError::Fetch { .. })),
                ..
            } => Self::CallerCheckUnavailable(error.to_string()),
            Refusal::Forbidden(forbidden @ Forbidden::OnboardedUnknown { .. }) => {
                Self::CallerCheckUnavailable(forbidden.to_string())
            }
            Refusal::Unauthenticated { error, challenge } => {
                Self::CallerUnauthenticated { error, challenge }
            }
            Refusal::Forbidden(forbidden) => Self::CallerForbidden(forbidden),
        }
    }
}

impl ProxyError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingMerchantId { .. } | Self::InvalidMerchantId { .. } => {
                StatusCode::BAD_REQUEST
            }
            Self::InvalidPath(_) | Self::InvalidRequestBody(_) => StatusCode::BAD_REQUEST,
            Self::MerchantPathMismatch { .. } | Self::MerchantNotAllowed { .. } => {
                StatusCode::FORBIDDEN
            }
            Self::CallerUnauthenticated { .. } => StatusCode::UNAUTHORIZED,
            Self::CallerForbidden(_) => StatusCode::FORBIDDEN,
            Self::CallerCheckUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Limited(
                LimitError::RateLimited { .. }
                | LimitError::CoolingDown(_)
                | LimitError::InFlight { .. },
            ) => StatusCode::TOO_MANY_REQUESTS,
            Self::Limited(LimitError::BreakerOpen(_)) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Token(BrokerError::NotAuthorized { .. }) => StatusCode::FORBIDDEN,
            Self::Token(BrokerError::Refused { .. }) => StatusCode::BAD_GATEWAY,
            Self::Token(
                BrokerError::Unavailable { .. }
                | BrokerError::BackingOff { .. }
                | BrokerError::Throttled { .. },
            ) => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpstreamUnavailable(_) => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The stable error code callers and alerts match on.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingMerchantId { .. } => "MISSING_MERCHANT_ID",
            Self::InvalidMerchantId { .. } => "INVALID_MERCHANT_ID",
            Self::MerchantPathMismatch { .. } => "MERCHANT_PATH_MISMATCH",
            Self::MerchantNotAllowed { .. } => "MERCHANT_NOT_ALLOWED",
            Self::InvalidPath(_) => "INVALID_PATH",
            Self::MethodNotAllowed(_) => "METHOD_NOT_ALLOWED",
            Self::InvalidRequestBody(_) => "INVALID_REQUEST_BODY",
            Self::RequestTimeout(_) => "REQUEST_TIMEOUT",
            Self::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            Self::Limited(LimitError::RateLimited { .. }) => "RATE_LIMITED",
            Self::Limited(LimitError::CoolingDown(_)) => "POYNT_RATE_LIMITED",
            Self::Limited(LimitError::InFlight { .. }) => "TOO_MANY_IN_FLIGHT",
            Self::Limited(LimitError::BreakerOpen(_)) => "UPSTREAM_UNAVAILABLE",
            Self::CallerUnauthenticated { .. } => "CALLER_UNAUTHENTICATED",
            Self::CallerForbidden(_) => "CALLER_FORBIDDEN",
            Self::CallerCheckUnavailable(_) => "CALLER_CHECK_UNAVAILABLE",
            Self::Token(BrokerError::NotAuthorized { .. }) => "MERCHANT_NOT_AUTHORIZED",
            Self::Token(_) => "TOKEN_UNAVAILABLE",
            Self::UpstreamUnavailable(_) => "UPSTREAM_UNAVAILABLE",
            Self::UpstreamTimeout(_) => "UPSTREAM_TIMEOUT",
        }
    }

    /// Whose failure it is.
    pub fn side(&self) -> Side {
        match self {
            Self::MissingMerchantId { .. }
            | Self::InvalidMerchantId { .. }
            | Self::MerchantPathMismatch { .. }
            | Self::MerchantNotAllowed { .. }
            | Self::InvalidPath(_)
            | Self::MethodNotAllowed(_)
            | Self::InvalidRequestBody(_)
            | Self::RequestTimeout(_)
            | Self::PayloadTooLarge { .. }
            | Self::Limited(LimitError::RateLimited { .. } | LimitError::InFlight { .. })
            | Self::CallerUnauthenticated { .. }
            | Self::CallerForbidden(_)
            | Self::Token(BrokerError::NotAuthorized { .. }) => Side::Downstream,
            Self::Limited(LimitError::CoolingDown(_) | LimitError::BreakerOpen(_))
            | Self::CallerCheckUnavailable(_)
            | Self::Token(_)
            | Self::UpstreamUnavailable(_)
            | Self::UpstreamTimeout(_) => Side::Upstream,
        }
    }

    /// The access log's response flag for this failure.
    pub fn flag(&self) -> Flag {
        match self {
            Self::MissingMerchantId { .. }
            | Self::InvalidMerchantId { .. }
            | Self::MerchantNotAllowed { .. } => Flag::MerchantRefused,
            Self::MerchantPathMismatch { .. } | Self::InvalidPath(_) => Flag::PathGuard,
            Self::MethodNotAllowed(_) | Self::InvalidRequestBody(_) => Flag::DownstreamProtocol,
            Self::RequestTimeout(_) => Flag::DownstreamIdle,
            Self::PayloadTooLarge { .. } => Flag::BodyLimit,
            Self::CallerUnauthenticated { .. } => Flag::CallerUnauthenticated,
            Self::CallerForbidden(_) => Flag::CallerForbidden,
            Self::CallerCheckUnavailable(_) => Flag::CallerCheckUnavailable,
            Self::Limited(LimitError::RateLimited { .. }) => Flag::RateLimited,
            Self::Limited(LimitError::CoolingDown(_)) => Flag::CoolingDown,
            Self::Limited(LimitError::InFlight { .. }) => Flag::InFlightOverflow,
            Self::Limited(LimitError::BreakerOpen(_)) => Flag::BreakerOpen,
            Self::Token(_) => Flag::TokenUnavailable,
            Self::UpstreamUnavailable(_) => Flag::UpstreamConnection,
            Self::UpstreamTimeout(_) => Flag::UpstreamTimeout,
        }
    }

    /// Seconds a caller should wait before retrying, when that is known.
    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Token(
                BrokerError::Unavailable { retry_after, .. }
                | BrokerError::BackingOff { retry_after, .. }
                | BrokerError::Throttled { retry_after },
            ) => Some(*retry_after),
            Self::Limited(limit) => Some(limit.retry_after()),
            Self::CallerCheckUnavailable(_) => Some(Duration::from_secs(1)),
            _ => None,
        }
    }

    /// The JSON error response, carrying the request id in the body and the header.
    pub fn to_response(&self, request_id: &HeaderValue) -> Response<Full<Bytes>> {
        let status = self.status();
        let mut body = ErrorBody::new(self.code(), status.as_u16(), self.to_string());
        body.request_id = request_id.to_str().ok().map(str::to_owned);
        let mut response = Response::new(Full::new(body.to_json()));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(REQUEST_ID_HEADER, request_id.clone());
        if matches!(self, Self::MethodNotAllowed(_)) {
            headers.insert(ALLOW, HeaderValue::from_static(ALLOWED_METHODS));
        }
        if matches!(
            self,
            Self::CallerUnauthenticated {
                challenge: true,
                ..
            }
        ) {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(wait) = self.retry_after() {
            headers.insert(RETRY_AFTER, HeaderValue::from(whole_seconds(wait).max(1)));
        }
        if let Self::Limited(limit) = self
            && limit.is_rate_limit()
        {
            headers.insert(LIMIT_SOURCE_HEADER, HeaderValue::from_static("proxy"));
            if let LimitError::RateLimited { burst, reset, .. } = limit {
                headers.insert(RATELIMIT_LIMIT, HeaderValue::from(*burst));
                headers.insert(RATELIMIT_REMAINING, HeaderValue::from(0u32));
                headers.insert(RATELIMIT_RESET, HeaderValue::from(whole_seconds(*reset)));
            }
        }
        response
    }
}

/// `RateLimit-Limit` (draft-ietf-httpapi-ratelimit-headers): the bucket's size.
const RATELIMIT_LIMIT: http::HeaderName = http::HeaderName::from_static("ratelimit-limit");
/// `RateLimit-Remaining`: requests left now.
const RATELIMIT_REMAINING: http::HeaderName = http::HeaderName::from_static("ratelimit-remaining");
/// `RateLimit-Reset`: seconds until the bucket is full again.
const RATELIMIT_RESET: http::HeaderName = http::HeaderName::from_static("ratelimit-reset");

/// `wait` in whole seconds, rounded up: a caller that waits that long is never early.
fn whole_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<ProxyError> {
        let h = || "X-Poynt-Merchant-Id".to_string();
        vec![
            ProxyError::MissingMerchantId { header: h() },
            ProxyError::InvalidMerchantId {
                header: h(),
                found: "\"abc\"".into(),
            },
            ProxyError::MerchantPathMismatch {
                header: h(),
                merchant: "a".into(),
                path_merchant: "b".into(),
            },
            ProxyError::MerchantNotAllowed {
                merchant: "a".into(),
            },
            ProxyError::InvalidPath("/a/../b".into()),
            ProxyError::MethodNotAllowed(Method::TRACE),
            ProxyError::InvalidRequestBody("bad chunk".into()),
            ProxyError::RequestTimeout("stalled".into()),
            ProxyError::PayloadTooLarge {
                limit: 1,
                found: "2".into(),
            },
            ProxyError::CallerUnauthenticated {
                error: AuthError::UnknownKey,
                challenge: false,
            },
            ProxyError::CallerForbidden(Forbidden::NoPolicy {
                caller: "analytics".into(),
            }),
            ProxyError::CallerCheckUnavailable("the token store failed".into()),
            ProxyError::Token(BrokerError::NotAuthorized {
                reason: "no".into(),
            }),
            ProxyError::Token(BrokerError::Refused {
                reason: "no".into(),
            }),
            ProxyError::Token(BrokerError::Unavailable {
                reason: "down".into(),
                retry_after: Duration::from_millis(1500),
            }),
            ProxyError::Token(BrokerError::BackingOff {
                last_error: "down".into(),
                retry_after: Duration::from_secs(4),
            }),
            ProxyError::Token(BrokerError::Throttled {
                retry_after: Duration::from_millis(50),
            }),
            ProxyError::UpstreamUnavailable("reset".into()),
            ProxyError::UpstreamTimeout(Duration::from_secs(60)),
            ProxyError::Limited(LimitError::RateLimited {
                scope: "this merchant".into(),
                burst: 10,
                per_second: 5.0,
                retry_after: Duration::from_millis(200),
                reset: Duration::from_millis(2100),
            }),
            ProxyError::Limited(LimitError::CoolingDown(Duration::from_secs(5))),
            ProxyError::Limited(LimitError::InFlight {
                limit: 64,
                waited: Duration::from_secs(1),
            }),
            ProxyError::Limited(LimitError::BreakerOpen(Duration::from_secs(5))),
        ]
    }

    #[test]
    fn a_caller_check_that_could_not_run_is_a_503_not_a_refusal() {
        let jwks_down = ProxyError::from(Refusal::Unauthenticated {
            error: AuthError::Jwt(JwtError::Jwks(JwksError::Fetch {
                url: "https://issuer.test/jwks.json".into(),
                problem: "connection refused".into(),
            })),
            challenge: true,
        });
        let store_down = ProxyError::from(Refusal::Forbidden(Forbidden::OnboardedUnknown {
            caller: "payments".into(),
            merchant: "m".into(),
            problem: "store unreachable".into(),
        }));
        let bad_kid = ProxyError::from(Refusal::Unauthenticated {
            error: AuthError::Jwt(JwtError::UnknownKid("k".into())),
            challenge: true,
        });
        for error in [&jwks_down, &store_down] {
            assert_eq!(error.code(), "CALLER_CHECK_UNAVAILABLE", "{error:?}");
            let response = error.to_response(&HeaderValue::from_static("r"));
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers()[RETRY_AFTER], "1");
        }
        assert_eq!(bad_kid.code(), "CALLER_UNAUTHENTICATED");
    }

    #[test]
    fn every_variant_maps_to_its_status_code_side_and_flag() {
        let expected = [
            (400, "MISSING_MERCHANT_ID", Side::Downstream, "MH"),
            (400, "INVALID_MERCHANT_ID", Side::Downstream, "MH"),
            (403, "MERCHANT_PATH_MISMATCH", Side::Downstream, "PG"),
            (403, "MERCHANT_NOT_ALLOWED", Side::Downstream, "MH"),
            (400, "INVALID_PATH", Side::Downstream, "PG"),
            (405, "METHOD_NOT_ALLOWED", Side::Downstream, "DPE"),
            (400, "INVALID_REQUEST_BODY", Side::Downstream, "DPE"),
            (408, "REQUEST_TIMEOUT", Side::Downstream, "SI"),
            (413, "PAYLOAD_TOO_LARGE", Side::Downstream, "BL"),
            (401, "CALLER_UNAUTHENTICATED", Side::Downstream, "CA"),
            (403, "CALLER_FORBIDDEN", Side::Downstream, "CP"),
            (503, "CALLER_CHECK_UNAVAILABLE", Side::Upstream, "CX"),
            (403, "MERCHANT_NOT_AUTHORIZED", Side::Downstream, "TK"),
            (502, "TOKEN_UNAVAILABLE", Side::Upstream, "TK"),
            (503, "TOKEN_UNAVAILABLE", Side::Upstream, "TK"),
            (503, "TOKEN_UNAVAILABLE", Side::Upstream, "TK"),
            (503, "TOKEN_UNAVAILABLE", Side::Upstream, "TK"),
            (502, "UPSTREAM_UNAVAILABLE", Side::Upstream, "UC"),
            (504, "UPSTREAM_TIMEOUT", Side::Upstream, "UT"),
            (429, "RATE_LIMITED", Side::Downstream, "RL"),
            (429, "POYNT_RATE_LIMITED", Side::Upstream, "CD"),
            (429, "TOO_MANY_IN_FLIGHT", Side::Downstream, "UO"),
            (503, "UPSTREAM_UNAVAILABLE", Side::Upstream, "UH"),
        ];
        assert_eq!(all().len(), expected.len());
        for (error, (status, code, side, flag)) in all().iter().zip(expected) {
            assert_eq!(error.status().as_u16(), status, "{error:?}");
            assert_eq!(error.code(), code, "{error:?}");
            assert_eq!(error.side(), side, "{error:?}");
            assert_eq!(error.flag().code(), flag, "{error:?}");
        }
    }

    #[test]
    fn response_is_poynt_shaped_with_retry_after_rounded_up() {
        let id = HeaderValue::from_static("req-1");
        let error = ProxyError::Token(BrokerError::Unavailable {
            reason: "down".into(),
            retry_after: Duration::from_millis(1500),
        });
        let response = error.to_response(&id);
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[RETRY_AFTER], "2");
        assert_eq!(response.headers()[REQUEST_ID_HEADER], "req-1");
        let throttled = ProxyError::Token(BrokerError::Throttled {
            retry_after: Duration::from_millis(50),
        });
        assert_eq!(throttled.to_response(&id).headers()[RETRY_AFTER], "1");
        let trace = ProxyError::MethodNotAllowed(Method::TRACE).to_response(&id);
        assert_eq!(trace.headers()[ALLOW], ALLOWED_METHODS);
        let bearer = ProxyError::CallerUnauthenticated {
            error: AuthError::NotBearer,
            challenge: true,
        };
        assert_eq!(
            bearer.to_response(&id).headers()[WWW_AUTHENTICATE],
            "Bearer"
        );
    }

    #[test]
    fn the_proxys_own_429s_say_so_and_a_rate_limit_carries_its_headers() {
        let id = HeaderValue::from_static("req-1");
        for error in all() {
            let response = error.to_response(&id);
            let marked = response.headers().get(LIMIT_SOURCE_HEADER);
            if response.status() == StatusCode::TOO_MANY_REQUESTS {
                assert_eq!(marked.unwrap(), "proxy", "{error:?}");
            } else {
                assert!(marked.is_none(), "{error:?}");
            }
        }
        let rate = ProxyError::Limited(LimitError::RateLimited {
            scope: "caller analytics".into(),
            burst: 10,
            per_second: 5.0,
            retry_after: Duration::from_millis(200),
            reset: Duration::from_millis(2100),
        })
        .to_response(&id);
        let headers = rate.headers();
        assert_eq!(headers[RETRY_AFTER], "1");
        assert_eq!(headers[RATELIMIT_LIMIT], "10");
        assert_eq!(headers[RATELIMIT_REMAINING], "0");
        assert_eq!(headers[RATELIMIT_RESET], "3");
    }
}
