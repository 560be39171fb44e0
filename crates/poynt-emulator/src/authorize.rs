//! The merchant-facing side (poynt.net): `/applications/authorize`, which auto-approves and
//! redirects back with a signed authorization code, and `/auth/signout`.
//!
//! Codes are signed with the emulator's poynt.net key (the TLS leaf's key when serving TLS).
//! [`AuthorizeMode`] makes the page answer the way a verifier must refuse: a denial, or a
//! code that is tampered with, expired, for another app, or unsigned (`alg: none`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::{Response, Uri};
use serde::Serialize;
use uuid::Uuid;

use super::body::ResponseBody;
use super::error::ApiError;
use super::reply::{self, RequestId, query_param};
use super::state::{AuthorizeMode, Shared, now_secs};
use super::token::{POYNT_NET_ISSUER, user_number};
use poynt_wire::MerchantId;

/// Lifetime of an authorization code, seconds (Poynt's are about 15 minutes).
const CODE_TTL_SECS: u64 = 900;
/// The `status` sent back when the merchant authorized the app.
const STATUS_AUTHORIZED: &str = "AUTHORIZED";
/// The `status` sent back when the merchant declined.
const STATUS_DENIED: &str = "DENIED";

/// `GET /applications/authorize?redirect_uri=&client_id=&context=` (or the older
/// `callback=` and `applicationId=`), optionally `businessId=` to pick the merchant.
pub(crate) fn authorize(
    shared: &Shared,
    uri: &Uri,
    request_id: &RequestId,
) -> Response<ResponseBody> {
    match authorize_inner(shared, uri.query(), request_id) {
        Ok(response) => response,
        Err(error) => reply::error(&error, request_id),
    }
}

fn authorize_inner(
    shared: &Shared,
    query: Option<&str>,
    request_id: &RequestId,
) -> Result<Response<ResponseBody>, ApiError> {
    let redirect_uri = query_param(query, "redirect_uri")
        .or_else(|| query_param(query, "callback"))
        .ok_or_else(|| {
            ApiError::InvalidRequest(
                "expected query parameter redirect_uri (or callback); found none".to_owned(),
            )
        })?;
    if !(redirect_uri.starts_with("http://") || redirect_uri.starts_with("https://")) {
        return Err(ApiError::InvalidRequest(format!(
            "expected redirect_uri as an absolute http(s) URL; found {redirect_uri:?}"
        )));
    }
    let client_id = query_param(query, "client_id")
        .or_else(|| query_param(query, "applicationId"))
        .unwrap_or_default();
    if client_id != shared.app_id {
        return Err(ApiError::InvalidClient(format!(
            "expected client_id {:?} (the registered application); found {client_id:?}",
            shared.app_id
        )));
    }
    let merchant = match query_param(query, "businessId") {
        Some(text) => MerchantId::parse(&text).map_err(|error| ApiError::InvalidRequest(format!("businessId: {error}")))?,
        None => shared.default_merchant.ok_or_else(|| {
            ApiError::InvalidRequest(
                "expected a businessId query parameter or a configured merchant to approve; found neither".to_owned(),
            )
        })?,
    };
    let mode = shared.authorize_mode();
    let mut answer = form_urlencoded::Serializer::new(String::new());
    if mode == AuthorizeMode::Deny {
        answer.append_pair("status", STATUS_DENIED);
    } else {
        let code = mint_code(shared, merchant, &client_id, mode)?;
        shared.record_code(&code, &redirect_uri);
        shared.remember_secret(&code);
        answer
            .append_pair("code", &code)
            .append_pair("status", STATUS_AUTHORIZED);
    }
    if let Some(context) = query_param(query, "context") {
        answer.append_pair("context", &context);
    }
    if mode != AuthorizeMode::Deny {
        answer.append_pair("businessId", &merchant.to_string());
    }
    reply::redirect(&append_query(&redirect_uri, &answer.finish()), request_id)
}

/// Appends `query` to `url`, keeping any query it has and any fragment after it.
fn append_query(url: &str, query: &str) -> String {
    let (base, fragment) = match url.split_once('#') {
        Some((base, fragment)) => (base, Some(fragment)),
        None => (url, None),
    };
    let separator = if base.contains('?') { '&' } else { '?' };
    let mut joined = format!("{base}{separator}{query}");
    if let Some(fragment) = fragment {
        joined.push('#');
        joined.push_str(fragment);
    }
    joined
}

/// Claims of an authorization code, as poynt.net signs them.
#[derive(Serialize)]
struct CodeClaims<'a> {
    iss: &'static str,
    iat: u64,
    exp: u64,
    sub: &'a str,
    /// Not in Poynt's list; makes two codes minted in one second differ.
    jti: String,
    #[serde(rename = "poynt.biz")]
    biz: String,
    #[serde(rename = "poynt.uid")]
    uid: u64,
}

/// Makes an authorization code for `merchant` as `mode` says (never called with `Deny`):
/// signed with the emulator's poynt.net key, or spoilt in the one way the mode names.
fn mint_code(
    shared: &Shared,
    merchant: MerchantId,
    client_id: &str,
    mode: AuthorizeMode,
) -> Result<String, ApiError> {
    let now = now_secs();
    let iat = match mode {
        AuthorizeMode::ExpiredCode => now - 2 * CODE_TTL_SECS,
        _ => now,
    };
    let other_app = format!("urn:aid:{}", Uuid::new_v4());
    let claims = CodeClaims {
        iss: POYNT_NET_ISSUER,
        iat,
        exp: iat + CODE_TTL_SECS,
        sub: match mode {
            AuthorizeMode::OtherApp => &other_app,
            _ => client_id,
        },
        jti: Uuid::new_v4().to_string(),
        biz: merchant.to_string(),
        uid: user_number(merchant.uuid()),
    };
    match mode {
        AuthorizeMode::AlgNone => Ok(format!(
            "{}.{}.",
            json_part(&serde_json::json!({"alg": "none"})),
            json_part(&claims)
        )),
        AuthorizeMode::TamperedCode => {
            let signed = sign(shared, &claims)?;
            let signature = signed.rsplit('.').next().unwrap_or_default();
            let header = signed.split('.').next().unwrap_or_default();
            let forged = CodeClaims {
                biz: Uuid::new_v4().to_string(),
                ..claims
            };
            Ok(format!("{header}.{}.{signature}", json_part(&forged)))
        }
        _ => sign(shared, &claims),
    }
}

/// A JWT part: the value's JSON in unpadded base64url.
fn json_part<T: Serialize>(value: &T) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap_or_default())
}

fn sign(shared: &Shared, claims: &CodeClaims<'_>) -> Result<String, ApiError> {
    shared.poynt_net_key.sign(claims).map_err(|error| {
        ApiError::Internal(format!(
            "expected to sign an authorization code; signing failed: {error}"
        ))
    })
}

/// `GET /auth/signout?redirect=URL`: 302 to URL.
pub(crate) fn signout(uri: &Uri, request_id: &RequestId) -> Response<ResponseBody> {
    let result = query_param(uri.query(), "redirect")
        .ok_or_else(|| {
            ApiError::InvalidRequest("expected query parameter redirect; found none".to_owned())
        })
        .and_then(|target| reply::redirect(&target, request_id));
    match result {
        Ok(response) => response,
        Err(error) => reply::error(&error, request_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_appended_before_the_fragment() {
        assert_eq!(append_query("http://a/cb", "x=1"), "http://a/cb?x=1");
        assert_eq!(
            append_query("http://a/cb?s=2", "x=1"),
            "http://a/cb?s=2&x=1"
        );
        assert_eq!(append_query("http://a/cb#f", "x=1"), "http://a/cb?x=1#f");
    }
}
