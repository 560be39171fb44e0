//! The merchant-facing side (poynt.net): `/applications/authorize`, which auto-approves and
//! redirects back with a signed authorization code, and `/auth/signout`.

use hyper::{Response, Uri};
use serde::Serialize;
use uuid::Uuid;

use super::body::ResponseBody;
use super::error::ApiError;
use super::reply::{self, RequestId, query_param};
use super::state::{Shared, now_secs};
use super::token::{POYNT_NET_ISSUER, user_number};
use crate::merchant::MerchantId;

/// Lifetime of an authorization code, seconds (Poynt's are about 15 minutes).
const CODE_TTL_SECS: u64 = 900;

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
    let code = mint_code(shared, merchant, &client_id)?;
    shared.record_code(&code, &redirect_uri);
    shared.remember_secret(&code);

    let mut answer = form_urlencoded::Serializer::new(String::new());
    answer
        .append_pair("code", &code)
        .append_pair("status", "AUTHORIZED");
    if let Some(context) = query_param(query, "context") {
        answer.append_pair("context", &context);
    }
    answer.append_pair("businessId", &merchant.to_string());
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

/// Signs an authorization code for `merchant` with the emulator's poynt.net key.
fn mint_code(shared: &Shared, merchant: MerchantId, client_id: &str) -> Result<String, ApiError> {
    let iat = now_secs();
    let claims = CodeClaims {
        iss: POYNT_NET_ISSUER,
        iat,
        exp: iat + CODE_TTL_SECS,
        sub: client_id,
        jti: Uuid::new_v4().to_string(),
        biz: merchant.to_string(),
        uid: user_number(merchant.uuid()),
    };
    shared.poynt_net_key.sign(&claims).map_err(|error| {
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
