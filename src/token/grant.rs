//! The `/token` client. Every call to Poynt's token endpoint, whatever the grant, goes
//! through [`TokenClient::request`], which caps concurrency, bounds time, logs one line
//! and counts the outcome — and never lets a token, assertion or key reach a log or error.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::audit::Event;
use crate::metrics::{GrantOutcome, Metrics};
use crate::report::error_chain;
use crate::telemetry;
use crate::token::assertion::{AssertionSigner, SignError};
use crate::upstream::{BoxError, HttpClient};
use poynt_wire::GrantKind;
use poynt_wire::MerchantId;
use poynt_wire::{self as poynt, ErrorBody};

/// Largest `/token` response read; Poynt's are about 1.5 KB.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Longest token lifetime believed: Poynt's are a day; a larger `expiresIn` (up to
/// `u64::MAX`) is clamped to this, so no instant computed from it can overflow.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 86_400);

/// A way to obtain an access token.
pub enum Grant {
    /// A self-signed assertion naming the merchant (`poynt.biz`): needs no stored credential.
    JwtBearer(MerchantId),
    /// The merchant's single-use refresh token.
    RefreshToken(SecretString),
    /// The code Poynt's authorization redirect delivered, with the redirect URI it was sent to.
    AuthorizationCode {
        /// The code (a JWT signed by poynt.net).
        code: SecretString,
        /// Must equal the URI the merchant was redirected to.
        redirect_uri: String,
    },
}

impl Grant {
    /// The grant's kind.
    pub fn kind(&self) -> GrantKind {
        match self {
            Self::JwtBearer(_) => GrantKind::JwtBearer,
            Self::RefreshToken(_) => GrantKind::RefreshToken,
            Self::AuthorizationCode { .. } => GrantKind::AuthorizationCode,
        }
    }
}

/// A token Poynt issued.
pub struct IssuedToken {
    /// The access token itself, for the token store.
    pub access_token: SecretString,
    /// `Bearer <access token>`, ready to inject and marked sensitive (its `Debug` prints
    /// nothing of the token).
    pub bearer: HeaderValue,
    /// The rotated refresh token, when Poynt sent one.
    pub refresh_token: Option<SecretString>,
    /// How long the token is good for from `received_at`: the earlier of `expiresIn` and the
    /// token's own `exp` claim, so a skewed or inconsistent answer never overstates it.
    pub lifetime: Duration,
    /// When the response arrived (the clock the broker schedules renewals on).
    pub received_at: Instant,
    /// Wall-clock twin of `received_at`, for the admin API.
    pub received_wall: SystemTime,
    /// The merchant named by the token's `poynt.biz` claim, when present and well-formed.
    pub merchant: Option<MerchantId>,
}

/// Why a `/token` call did not produce a token.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// No HTTP answer arrived (DNS, connect, TLS, reset...).
    #[error("cannot reach Poynt's /token endpoint: {detail}")]
    Transport {
        /// The error chain, flattened (it names a certificate problem, for instance).
        detail: String,
        /// Whether the request certainly never reached Poynt (no connection was made).
        unsent: bool,
    },
    /// Poynt did not answer within the configured time.
    #[error("Poynt's /token endpoint did not answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// The call waited for a slot under `tokens.max_concurrent_grants` for the whole
    /// `poynt.token_timeout` and was never sent.
    #[error("no /token call slot became free within {}", humantime::format_duration(*.0))]
    Queued(Duration),
    /// Poynt refused the grant (4xx): the credential or merchant is not acceptable.
    #[error("Poynt refused the {grant} grant: HTTP {status}{}: {message}", code_part(code.as_deref()))]
    Refused {
        /// The grant.
        grant: &'static str,
        /// HTTP status.
        status: u16,
        /// Poynt's error `code`, when the body had one.
        code: Option<String>,
        /// Poynt's message, when the body had one.
        message: String,
    },
    /// Poynt failed (5xx, 429): worth retrying later.
    #[error("Poynt's /token endpoint failed: HTTP {status}{}", code_part(code.as_deref()))]
    Unavailable {
        /// HTTP status.
        status: u16,
        /// Poynt's error `code`, when the body had one.
        code: Option<String>,
    },
    /// A 200 whose body is not a token response.
    #[error("Poynt's /token answer is malformed: {0}")]
    Malformed(String),
    /// The assertion could not be signed.
    #[error(transparent)]
    Sign(#[from] SignError),
}

/// `, code X` for an error body's code, nothing when Poynt sent none.
fn code_part(code: Option<&str>) -> String {
    code.map(|code| format!(", code {code}"))
        .unwrap_or_default()
}

/// Poynt's `/token` code for a merchant that has not authorized the app (or removed it).
pub const MERCHANT_NOT_AUTHORIZED: &str = "MERCHANT_NOT_AUTHORIZED";

impl GrantError {
    /// Whether Poynt itself said no (as opposed to not answering properly).
    pub fn is_refused(&self) -> bool {
        matches!(self, Self::Refused { .. })
    }

    /// Whether Poynt said no because the merchant has not authorized the app: only the
    /// merchant can fix that, by connecting through onboarding.
    pub fn is_merchant_not_authorized(&self) -> bool {
        self.is_refused() && self.poynt_code() == Some(MERCHANT_NOT_AUTHORIZED)
    }

    /// Whether the request certainly never reached Poynt, so a refresh token it carried is
    /// still unused and may be presented again.
    pub fn is_unsent(&self) -> bool {
        match self {
            Self::Transport { unsent, .. } => *unsent,
            Self::Queued(_) | Self::Sign(_) => true,
            Self::Timeout(_)
            | Self::Refused { .. }
            | Self::Unavailable { .. }
            | Self::Malformed(_) => false,
        }
    }

    /// Poynt's error code, if it sent one.
    pub fn poynt_code(&self) -> Option<&str> {
        match self {
            Self::Refused { code, .. } | Self::Unavailable { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    fn outcome(&self) -> GrantOutcome {
        if self.is_refused() {
            GrantOutcome::Rejected
        } else {
            GrantOutcome::Error
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenResponse {
    expires_in: u64,
    access_token: SecretString,
    refresh_token: Option<SecretString>,
}

#[derive(Deserialize)]
struct AccessClaims {
    exp: Option<u64>,
    #[serde(rename = "poynt.biz")]
    biz: Option<String>,
}

/// Talks to `/token`.
#[derive(Clone)]
pub struct TokenClient {
    http: HttpClient,
    token_url: Uri,
    api_version: HeaderValue,
    signer: AssertionSigner,
    timeout: Duration,
    permits: Arc<Semaphore>,
    metrics: Metrics,
}

impl TokenClient {
    /// `max_concurrent` caps `/token` calls in flight across all merchants.
    pub fn new(
        http: HttpClient,
        token_url: Uri,
        api_version: HeaderValue,
        signer: AssertionSigner,
        timeout: Duration,
        max_concurrent: usize,
        metrics: Metrics,
    ) -> Self {
        Self {
            http,
            token_url,
            api_version,
            signer,
            timeout,
            permits: Arc::new(Semaphore::new(max_concurrent)),
            metrics,
        }
    }

    /// The bound on one `/token` exchange (`poynt.token_timeout`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Performs one grant. `merchant` is for the log line only (a refresh token does not
    /// name its merchant on the wire).
    pub async fn request(
        &self,
        grant: &Grant,
        merchant: Option<MerchantId>,
    ) -> Result<IssuedToken, GrantError> {
        let kind = grant.kind();
        let request_id = uuid::Uuid::new_v4();
        // A leaf under the grant's span; its attributes name the grant, never its secrets.
        let span = crate::traces::span!(
            "POST /token",
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            poynt.grant.kind = kind.as_str(),
            poynt.grant.outcome = tracing::field::Empty,
            poynt.request_id = %request_id,
        );
        let started = Instant::now();
        let result = match tokio::time::timeout(self.timeout, self.permits.acquire()).await {
            Err(_) => Err(GrantError::Queued(self.timeout)),
            Ok(Err(_)) => Err(GrantError::Transport {
                detail: "the token client is shutting down".into(),
                unsent: true,
            }),
            Ok(Ok(_permit)) => {
                match tokio::time::timeout(self.timeout, self.exchange(grant, request_id)).await {
                    Ok(result) => result,
                    Err(_) => Err(GrantError::Timeout(self.timeout)),
                }
            }
        };
        let elapsed = started.elapsed();
        let outcome = match &result {
            Ok(_) => GrantOutcome::Success,
            Err(e) => e.outcome(),
        };
        self.metrics.observe_grant(kind, outcome, elapsed);
        span.record("poynt.grant.outcome", outcome.as_str());
        if result.is_err() {
            span.record("otel.status_code", "error");
        }
        self.metrics
            .audit(|| Event::grant(kind, merchant, outcome.as_str()));
        let merchant = merchant.map(tracing::field::display);
        match &result {
            Ok(token) => tracing::info!(
                target: "poynt_proxy::token",
                grant = kind.as_str(),
                merchant,
                outcome = outcome.as_str(),
                latency_ms = telemetry::ms(elapsed),
                lifetime_s = token.lifetime.as_secs(),
                %request_id,
                "token request"
            ),
            Err(error) => tracing::warn!(
                target: "poynt_proxy::token",
                grant = kind.as_str(),
                merchant,
                outcome = outcome.as_str(),
                latency_ms = telemetry::ms(elapsed),
                poynt_code = error.poynt_code(),
                %error,
                %request_id,
                "token request"
            ),
        }
        result
    }

    async fn exchange(
        &self,
        grant: &Grant,
        request_id: uuid::Uuid,
    ) -> Result<IssuedToken, GrantError> {
        let request = self.build_request(grant, request_id)?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| GrantError::Transport {
                detail: error_chain(&e),
                unsent: e.is_connect(),
            })?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| GrantError::Transport {
                detail: format!("reading the response body failed: {e}"),
                unsent: false,
            })?
            .to_bytes();
        let received_at = Instant::now();
        let received_wall = SystemTime::now();
        if status != StatusCode::OK {
            return Err(status_error(grant.kind(), status, &body));
        }
        parse_token_response(&body, received_at, received_wall)
    }

    fn build_request(
        &self,
        grant: &Grant,
        request_id: uuid::Uuid,
    ) -> Result<Request<crate::upstream::UpstreamBody>, GrantError> {
        let mut form = form_urlencoded::Serializer::new(String::new());
        let mut bearer = None;
        match grant {
            Grant::JwtBearer(merchant) => {
                let assertion = self.signer.sign(Some(*merchant))?;
                form.append_pair("grantType", poynt::GRANT_JWT_BEARER)
                    .append_pair("assertion", assertion.expose_secret());
            }
            Grant::RefreshToken(refresh) => {
                form.append_pair("grantType", poynt::GRANT_REFRESH_TOKEN)
                    .append_pair("refreshToken", refresh.expose_secret());
            }
            Grant::AuthorizationCode { code, redirect_uri } => {
                let assertion = self.signer.sign(None)?;
                let mut value =
                    HeaderValue::try_from(format!("Bearer {}", assertion.expose_secret()))
                        .map_err(|_| {
                            GrantError::Malformed("assertion is not header-safe".into())
                        })?;
                value.set_sensitive(true);
                bearer = Some(value);
                form.append_pair("grant_type", poynt::GRANT_AUTHORIZATION_CODE)
                    .append_pair("redirect_uri", redirect_uri)
                    .append_pair("client_id", self.signer.application_id())
                    .append_pair("code", code.expose_secret());
            }
        }
        let body: Bytes = form.finish().into();
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(self.token_url.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .header(poynt::API_VERSION_HEADER, self.api_version.clone())
            .header(poynt::REQUEST_ID_HEADER, request_id.to_string());
        if let Some(value) = bearer {
            builder = builder.header(AUTHORIZATION, value);
        }
        builder
            .body(
                Full::new(body)
                    .map_err(|never| -> BoxError { match never {} })
                    .boxed(),
            )
            .map_err(|e| GrantError::Malformed(format!("cannot build the request: {e}")))
    }
}

fn status_error(kind: GrantKind, status: StatusCode, body: &[u8]) -> GrantError {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let code = parsed.as_ref().map(|b| b.code.clone());
    if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
        GrantError::Refused {
            grant: kind.as_str(),
            status: status.as_u16(),
            code,
            message: parsed.map(|b| b.message).unwrap_or_default(),
        }
    } else {
        GrantError::Unavailable {
            status: status.as_u16(),
            code,
        }
    }
}

/// `Bearer <access token>` as a header value marked sensitive (HTTP/2 never indexes it, and
/// its `Debug` prints nothing of it); `None` if the token is not visible ASCII.
pub fn bearer_header(access_token: &SecretString) -> Option<HeaderValue> {
    let mut value =
        HeaderValue::try_from(format!("Bearer {}", access_token.expose_secret())).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// Parses a 200 answer. Public for the benchmarks: this runs once per grant.
pub fn parse_token_response(
    body: &[u8],
    received_at: Instant,
    received_wall: SystemTime,
) -> Result<IssuedToken, GrantError> {
    let response: TokenResponse = serde_json::from_slice(body).map_err(|e| {
        GrantError::Malformed(format!(
            "expected JSON with expiresIn and accessToken; found a body that fails with: {e}"
        ))
    })?;
    let claims: Option<AccessClaims> =
        jsonwebtoken::dangerous::insecure_decode_claims(response.access_token.expose_secret()).ok();
    let declared = Duration::from_secs(response.expires_in).min(MAX_TOKEN_LIFETIME);
    let exp = claims.as_ref().and_then(|c| c.exp);
    let lifetime = match exp.map(|exp| UNIX_EPOCH.checked_add(Duration::from_secs(exp))) {
        Some(Some(exp)) => exp
            .duration_since(received_wall)
            .unwrap_or_default()
            .min(declared),
        // No `exp`, or one beyond what the clock can represent: `expiresIn` (clamped) rules.
        Some(None) | None => declared,
    };
    if lifetime.is_zero() {
        return Err(GrantError::Malformed(format!(
            "expected a token with a positive lifetime; found expiresIn {} and exp {}",
            response.expires_in,
            exp.map_or_else(|| "absent".to_owned(), |exp| exp.to_string())
        )));
    }
    let bearer = bearer_header(&response.access_token).ok_or_else(|| {
        GrantError::Malformed(
            "expected an access token of visible ASCII characters; found other bytes".into(),
        )
    })?;
    Ok(IssuedToken {
        access_token: response.access_token,
        bearer,
        refresh_token: response.refresh_token,
        lifetime,
        received_at,
        received_wall,
        merchant: claims
            .and_then(|c| c.biz)
            .and_then(|b| MerchantId::parse(&b).ok()),
    })
}
