//! `POST /token`: the three grants (JWT-bearer, refresh, authorization code), checked as
//! strictly as Poynt does, and the token pair issued on success.
//!
//! Phases, in order: count the call; apply injected faults; read the form; check
//! `api-version`; run the grant's checks; issue tokens; count the outcome.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap};
use hyper::{Request, Response};
use rand::RngCore;
use serde::Serialize;
use uuid::Uuid;

use super::body::ResponseBody;
use super::error::ApiError;
use super::jwt::{self, AssertionRules, CheckedAssertion};
use super::reply::{self, RequestId};
use super::state::{AccessRecord, Shared, now_secs};
use super::stats::Grant;
use poynt_wire::MerchantId;
use poynt_wire::{
    API_VERSION_HEADER, CLAIM_BUSINESS, GRANT_AUTHORIZATION_CODE, GRANT_JWT_BEARER,
    GRANT_REFRESH_TOKEN,
};

/// Largest `/token` form accepted; real forms are a few kilobytes.
const MAX_FORM_BYTES: usize = 64 * 1024;
/// Issuer of authorization codes.
pub(crate) const POYNT_NET_ISSUER: &str = "https://poynt.net";
/// Prefix Poynt's refresh tokens carry.
const REFRESH_PREFIX: &str = "1:1:1:2:";

/// The service function asks hyper to abort the connection when it gets this error: the
/// `token_drop` fault (Poynt unreachable), or the API's `_drop_reused` knob.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped on purpose by an injected fault")]
pub(crate) struct DropConnection;

/// Handles one `/token` call.
pub(crate) async fn handle(
    shared: &Shared,
    request: Request<Incoming>,
    request_id: &RequestId,
) -> Result<Response<ResponseBody>, DropConnection> {
    shared.counters.token_call_arrived();
    let fault = shared.fault();
    if let Some(delay) = fault.delay() {
        tokio::time::sleep(delay).await;
    }
    if fault.token_drop {
        shared.counters.token_call_faulted();
        return Err(DropConnection);
    }
    if let Some(status) = fault.status() {
        shared.counters.token_call_faulted();
        return Ok(reply::error(&ApiError::InjectedFault(status), request_id));
    }

    let (parts, body) = request.into_parts();
    let outcome = match read_form(&parts.headers, body).await {
        Ok(form) => exchange(shared, &parts.headers, &form),
        Err(error) => Outcome {
            grant: Grant::Unknown,
            merchant: None,
            result: Err(error),
        },
    };
    shared
        .counters
        .token_call_finished(outcome.grant, outcome.merchant, outcome.result.is_err());
    Ok(match outcome.result {
        Ok(body) => reply::ok_json(body, request_id),
        Err(error) => reply::error(&error, request_id),
    })
}

/// The form fields of the three grants, each under either spelling.
#[derive(Debug, Default)]
struct TokenForm {
    grant_type: Option<String>,
    assertion: Option<String>,
    refresh_token: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    client_id: Option<String>,
}

impl TokenForm {
    /// Parses a form body; the first occurrence of a field wins, under either spelling.
    fn parse(body: &[u8]) -> Self {
        let mut form = Self::default();
        for (key, value) in form_urlencoded::parse(body) {
            let slot = match key.as_ref() {
                "grantType" | "grant_type" => &mut form.grant_type,
                "assertion" => &mut form.assertion,
                "refreshToken" | "refresh_token" => &mut form.refresh_token,
                "code" => &mut form.code,
                "redirectUri" | "redirect_uri" => &mut form.redirect_uri,
                "clientId" | "client_id" => &mut form.client_id,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(value.into_owned());
            }
        }
        form
    }
}

/// Reads a form-encoded body of bounded size.
async fn read_form(headers: &HeaderMap, body: Incoming) -> Result<TokenForm, ApiError> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(ApiError::InvalidRequest(format!(
            "expected content-type application/x-www-form-urlencoded; found {content_type:?}"
        )));
    }
    let bytes = Limited::new(body, MAX_FORM_BYTES)
        .collect()
        .await
        .map_err(|_| {
            ApiError::InvalidRequest(format!(
                "expected a complete form body of at most {MAX_FORM_BYTES} bytes; found a larger or broken one"
            ))
        })?
        .to_bytes();
    Ok(TokenForm::parse(&bytes))
}

/// A grant's result, with what stats need.
struct Outcome {
    grant: Grant,
    merchant: Option<MerchantId>,
    result: Result<Bytes, ApiError>,
}

/// Dispatches to the grant named in the form.
fn exchange(shared: &Shared, headers: &HeaderMap, form: &TokenForm) -> Outcome {
    let grant = match form.grant_type.as_deref() {
        Some(GRANT_JWT_BEARER) => Grant::JwtBearer,
        Some(GRANT_REFRESH_TOKEN) => Grant::RefreshToken,
        Some(GRANT_AUTHORIZATION_CODE) => Grant::AuthorizationCode,
        _ => Grant::Unknown,
    };
    if !headers.contains_key(API_VERSION_HEADER) {
        return Outcome {
            grant,
            merchant: None,
            result: Err(ApiError::MissingApiVersion),
        };
    }
    let (merchant, result) = match grant {
        Grant::JwtBearer => jwt_bearer(shared, form),
        Grant::RefreshToken => refresh(shared, form),
        Grant::AuthorizationCode => authorization_code(shared, headers, form),
        Grant::Unknown => (
            None,
            Err(ApiError::InvalidGrantType(format!(
                "expected grantType {GRANT_JWT_BEARER}, {GRANT_REFRESH_TOKEN} or grant_type \
                 {GRANT_AUTHORIZATION_CODE}; found {:?}",
                form.grant_type.as_deref().unwrap_or("none")
            ))),
        ),
    };
    Outcome {
        grant,
        merchant,
        result,
    }
}

/// Checks an assertion fully: the stateless rules, then that its `jti` is fresh.
fn check_assertion(shared: &Shared, assertion: &str) -> Result<CheckedAssertion, ApiError> {
    shared.remember_secret(assertion);
    let now = now_secs();
    let rules = AssertionRules {
        app_id: &shared.app_id,
        audience: &shared.audience,
        now,
    };
    let jwt = jwt::parse(assertion).map_err(ApiError::InvalidAssertion)?;
    let checked = jwt::check_assertion(&jwt, &shared.app_key(), &rules)
        .map_err(ApiError::InvalidAssertion)?;
    shared.accept_jti(&checked, now)?;
    Ok(checked)
}

/// Grant 1: `grantType=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=JWT`.
fn jwt_bearer(shared: &Shared, form: &TokenForm) -> (Option<MerchantId>, Result<Bytes, ApiError>) {
    let Some(assertion) = form.assertion.as_deref() else {
        return (
            None,
            Err(ApiError::InvalidAssertion(
                "expected form field assertion; found none".to_owned(),
            )),
        );
    };
    let hint = jwt::parse(assertion)
        .ok()
        .and_then(|jwt| jwt.business_hint());
    let result = check_assertion(shared, assertion).and_then(|checked| {
        if let Some(merchant) = checked.business
            && !shared.is_authorized(merchant)
        {
            return Err(ApiError::MerchantNotAuthorized(merchant));
        }
        issue(shared, checked.business)
    });
    (hint, result)
}

/// Grant 2: `grantType=REFRESH_TOKEN&refreshToken=...`; the token is spent, a new pair issued.
fn refresh(shared: &Shared, form: &TokenForm) -> (Option<MerchantId>, Result<Bytes, ApiError>) {
    let Some(token) = form.refresh_token.as_deref() else {
        return (
            None,
            Err(ApiError::InvalidRefreshToken(
                "expected form field refreshToken; found none",
            )),
        );
    };
    match shared.redeem_refresh(token) {
        Ok(merchant) => (merchant, issue(shared, merchant)),
        Err((merchant, error)) => (merchant, Err(error)),
    }
}

/// Grant 3: `grant_type=authorization_code&redirect_uri&client_id&code`, authenticated by
/// `Authorization: Bearer <assertion>`. Authorizes the code's merchant.
fn authorization_code(
    shared: &Shared,
    headers: &HeaderMap,
    form: &TokenForm,
) -> (Option<MerchantId>, Result<Bytes, ApiError>) {
    let code = form.code.as_deref().unwrap_or("");
    let parsed_code = jwt::parse(code);
    let hint = parsed_code
        .as_ref()
        .ok()
        .and_then(|jwt| jwt.business_hint());
    let result = (|| {
        let assertion = bearer_token(headers).ok_or_else(|| {
            ApiError::InvalidAssertion(
                "expected header Authorization: Bearer <assertion>; found none".to_owned(),
            )
        })?;
        check_assertion(shared, assertion)?;
        let client_id = form.client_id.as_deref().unwrap_or("");
        if client_id != shared.app_id {
            return Err(ApiError::InvalidAuthorizationCode(format!(
                "expected client_id {:?}; found {client_id:?}",
                shared.app_id
            )));
        }
        let Some(redirect_uri) = form.redirect_uri.as_deref() else {
            return Err(ApiError::InvalidAuthorizationCode(
                "expected form field redirect_uri; found none".to_owned(),
            ));
        };
        if code.is_empty() {
            return Err(ApiError::InvalidAuthorizationCode(
                "expected form field code; found none".to_owned(),
            ));
        }
        let jwt = parsed_code.map_err(ApiError::InvalidAuthorizationCode)?;
        let merchant =
            check_code(shared, &jwt, client_id).map_err(ApiError::InvalidAuthorizationCode)?;
        shared.redeem_code(code, redirect_uri, merchant)?;
        issue(shared, Some(merchant))
    })();
    (hint, result)
}

/// The stateless checks of an authorization code: poynt.net's signature, issuer, subject,
/// expiry and merchant.
fn check_code(
    shared: &Shared,
    jwt: &jwt::UnverifiedJwt<'_>,
    client_id: &str,
) -> Result<MerchantId, String> {
    jwt.verify(shared.poynt_net_key.decoding(), "poynt.net")?;
    let issuer = jwt.str_claim("iss")?;
    if issuer != POYNT_NET_ISSUER {
        return Err(format!(
            "expected iss {POYNT_NET_ISSUER:?}; found {issuer:?}"
        ));
    }
    let subject = jwt.str_claim("sub")?;
    if subject != client_id {
        return Err(format!(
            "expected sub {client_id:?} (the client_id); found {subject:?}"
        ));
    }
    let exp = jwt.secs_claim("exp")?;
    let now = now_secs();
    if exp <= now {
        return Err(format!(
            "expected an unexpired code; found exp {exp}, now {now}"
        ));
    }
    jwt.business()?
        .ok_or_else(|| format!("expected claim {CLAIM_BUSINESS}; found none"))
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is case-insensitive.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Claims of an emulator access token, shaped like Poynt's.
#[derive(Serialize)]
struct AccessClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
    iat: u64,
    jti: String,
    #[serde(rename = "poynt.biz", skip_serializing_if = "Option::is_none")]
    biz: Option<String>,
    #[serde(rename = "poynt.uid")]
    uid: u64,
    #[serde(rename = "poynt.org")]
    org: String,
    #[serde(rename = "poynt.aur")]
    aur: &'static str,
    #[serde(rename = "poynt.sct")]
    sct: &'static str,
    #[serde(rename = "poynt.kid")]
    kid: u64,
}

/// The success body of `/token`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenResponse<'a> {
    expires_in: u64,
    access_token: &'a str,
    refresh_token: &'a str,
    scope: &'static str,
    token_type: &'static str,
}

/// A stable number standing for the user who authorized, derived from an id.
pub(crate) fn user_number(id: uuid::Uuid) -> u64 {
    let bytes = id.as_bytes();
    u64::from(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) & 0x7fff_ffff)
}

/// Issues an access token and a refresh token for `merchant` (or the app) and records both.
pub(crate) fn issue(shared: &Shared, merchant: Option<MerchantId>) -> Result<Bytes, ApiError> {
    let iat = now_secs();
    let expires_in = shared
        .fault()
        .token_expires_in
        .unwrap_or(shared.token_ttl_secs);
    let exp = iat.saturating_add(expires_in);
    let claims = AccessClaims {
        iss: &shared.base_url,
        sub: &shared.app_id,
        aud: &shared.app_id,
        exp,
        iat,
        jti: Uuid::new_v4().to_string(),
        biz: merchant.map(|merchant| merchant.to_string()),
        uid: user_number(merchant.map_or(shared.org_id, |merchant| merchant.uuid())),
        org: shared.org_id.to_string(),
        aur: "urn:poynt:emulator:aur",
        sct: "J",
        kid: 1,
    };
    let access_token = shared.token_key.sign(&claims).map_err(|error| {
        ApiError::Internal(format!(
            "expected to sign an access token; signing failed: {error}"
        ))
    })?;
    let refresh_token = new_refresh_token();
    shared.record_access(
        &access_token,
        AccessRecord {
            merchant,
            exp,
            revoked: false,
        },
    );
    shared.record_refresh(&refresh_token, merchant);
    shared.remember_secret(&access_token);
    shared.remember_secret(&refresh_token);
    let body = TokenResponse {
        expires_in,
        access_token: &access_token,
        refresh_token: &refresh_token,
        scope: "ALL",
        token_type: "BEARER",
    };
    serde_json::to_vec(&body).map(Bytes::from).map_err(|error| {
        ApiError::Internal(format!("expected to serialise the token response: {error}"))
    })
}

/// A refresh token in Poynt's shape: `1:1:1:2:` and 48 random bytes in base64.
fn new_refresh_token() -> String {
    let mut random = [0u8; 48];
    rand::rng().fill_bytes(&mut random);
    let mut token = String::with_capacity(REFRESH_PREFIX.len() + 64);
    token.push_str(REFRESH_PREFIX);
    STANDARD.encode_string(random, &mut token);
    token
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    #[test]
    fn form_accepts_both_spellings_and_first_wins() {
        let form = TokenForm::parse(
            b"grant_type=authorization_code&grantType=x&redirectUri=r&client_id=c&code=k",
        );
        assert_eq!(form.grant_type.as_deref(), Some("authorization_code"));
        assert_eq!(form.redirect_uri.as_deref(), Some("r"));
        assert_eq!(form.client_id.as_deref(), Some("c"));
        assert_eq!(form.code.as_deref(), Some("k"));
        let form = TokenForm::parse(b"grantType=REFRESH_TOKEN&refresh_token=1%3A1%3A1%3A2%3Aab%2B");
        assert_eq!(form.refresh_token.as_deref(), Some("1:1:1:2:ab+"));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_static("BEARER abc"));
        assert_eq!(bearer_token(&headers), Some("abc"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer_token(&headers), None);
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer_token(&headers), None);
    }

    #[test]
    fn refresh_tokens_look_like_poynts_and_differ() {
        let first = new_refresh_token();
        assert!(first.starts_with(REFRESH_PREFIX));
        assert_eq!(first.len(), REFRESH_PREFIX.len() + 64);
        assert_ne!(first, new_refresh_token());
    }
}
