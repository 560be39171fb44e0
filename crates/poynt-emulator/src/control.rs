//! `/_emulator/...`: the control API, so a test-suite or demo driving the emulator from
//! another process can do what the Rust API does (stats, faults, revocation, authorization,
//! the authorize page's mode, reset, keys, closing every connection gracefully), plus `POST merchants/{id}/token`, which mints a token pair for a merchant
//! without a grant (not counted in the stats): the load benchmark gives nginx and HAProxy
//! a static bearer token with it.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use serde_json::json;

use super::body::ResponseBody;
use super::error::ApiError;
use super::fault::Fault;
use super::reply::{self, RequestId};
use super::state::{AuthorizeMode, Shared};
use poynt_wire::MerchantId;

/// The control API as `poynt-proxy emulator --help` lists it (and docs/OPERATIONS.md).
pub const CONTROL_API_HELP: &str = "\
Control API (JSON; under the base URL the start line prints):
  GET  /_emulator/stats                     counters: /token calls by grant and outcome, API calls, 401s,
                                            the last traceparent received per path
  GET  /_emulator/fault                     the faults injected into /token now
  POST /_emulator/fault                     {\"token_status\": 503, \"token_drop\": true, \"token_delay_ms\": 2000,
                                            \"token_expires_in\": 60}, any of them; {} clears them all
  GET  /_emulator/authorize                 how /applications/authorize answers
  POST /_emulator/authorize                 {\"mode\": \"approve\" | \"deny\" | \"tampered_code\" | \"expired_code\" |
                                            \"other_app\" | \"alg_none\"}
  POST /_emulator/goaway                    every open connection closes gracefully (HTTP/2: GOAWAY)
  POST /_emulator/reset                     clears counters, faults, revocations and the authorize mode
  GET  /_emulator/keys                      the PEM public keys of poynt.net's code key and the token key
  POST /_emulator/merchants/{id}/revoke     the merchant's access tokens stop working (401)
  POST /_emulator/merchants/{id}/authorize  the merchant authorizes the app
  POST /_emulator/merchants/{id}/unauthorize  the merchant removes the app (MERCHANT_NOT_AUTHORIZED)
  POST /_emulator/merchants/{id}/token      a token pair for the merchant, without a grant
Example: curl -s -X POST 'http://127.0.0.1:9443/_emulator/fault' -d '{\"token_status\": 503}'";

/// Path prefix of the control API.
pub(crate) const CONTROL_PREFIX: &str = "/_emulator/";
/// Largest control body accepted.
const MAX_CONTROL_BYTES: usize = 16 * 1024;

/// Handles one call under `/_emulator/`.
pub(crate) async fn handle(
    shared: &Shared,
    request: Request<Incoming>,
    request_id: &RequestId,
) -> Response<ResponseBody> {
    match handle_inner(shared, request).await {
        Ok(body) => reply::ok_json(Bytes::from(body.to_string()), request_id),
        Err(error) => reply::error(&error, request_id),
    }
}

async fn handle_inner(
    shared: &Shared,
    request: Request<Incoming>,
) -> Result<serde_json::Value, ApiError> {
    let path = request
        .uri()
        .path()
        .strip_prefix(CONTROL_PREFIX)
        .unwrap_or("")
        .to_owned();
    let method = request.method().clone();
    let segments: Vec<&str> = path.split('/').collect();
    match (segments.as_slice(), method) {
        (["stats"], Method::GET) => serde_json::to_value(shared.counters.snapshot())
            .map_err(|error| ApiError::Internal(format!("expected to serialise stats: {error}"))),
        (["fault"], Method::GET) => Ok(json!(shared.fault())),
        (["fault"], Method::POST) => {
            let fault: Fault = read_json(
                request,
                "a fault object with any of token_status, token_drop, token_delay_ms, \
                 token_expires_in, api_throttle ({merchant: seconds}), api_error_every, \
                 api_error_status, api_delay_ms, api_drop, api_blackhole",
            )
            .await?;
            fault.validate().map_err(ApiError::InvalidRequest)?;
            shared.set_fault(fault.clone());
            Ok(json!(fault))
        }
        (["authorize"], Method::GET) => Ok(json!({ "mode": shared.authorize_mode() })),
        (["authorize"], Method::POST) => {
            let body: AuthorizeBody = read_json(
                request,
                "{\"mode\": \"approve\" | \"deny\" | \"tampered_code\" | \"expired_code\" | \"other_app\" | \"alg_none\"}",
            )
            .await?;
            shared.set_authorize_mode(body.mode);
            Ok(json!({ "mode": body.mode }))
        }
        (["goaway"], Method::POST) => Ok(json!({ "connections": shared.goaway() })),
        (["reset"], Method::POST) => {
            shared.reset();
            Ok(json!({ "reset": true }))
        }
        (["keys"], Method::GET) => Ok(json!({
            "poynt_net_public_key_pem": shared.poynt_net_key.public_pem(),
            "access_token_public_key_pem": shared.token_key.public_pem(),
        })),
        (["merchants", id, action], Method::POST) => {
            let merchant =
                MerchantId::parse(id).map_err(|error| ApiError::NotFound(error.to_string()))?;
            match *action {
                "revoke" => {
                    let revoked = shared.revoke(merchant);
                    Ok(
                        json!({ "merchant": merchant.to_string(), "revoked_access_tokens": revoked }),
                    )
                }
                "authorize" => {
                    shared.authorize(merchant);
                    Ok(json!({ "merchant": merchant.to_string(), "authorized": true }))
                }
                "token" => {
                    let body = super::token::issue(shared, Some(merchant))?;
                    serde_json::from_slice(&body).map_err(|error| {
                        ApiError::Internal(format!("expected the issued token as JSON: {error}"))
                    })
                }
                "unauthorize" => {
                    shared.unauthorize(merchant);
                    Ok(json!({ "merchant": merchant.to_string(), "authorized": false }))
                }
                other => Err(not_found(&format!("merchants/{id}/{other}"))),
            }
        }
        (_, method) => Err(ApiError::NotFound(format!(
            "no control endpoint {method} {CONTROL_PREFIX}{path}; expected GET stats, GET|POST fault, GET|POST authorize, \
             POST goaway, POST reset, GET keys, POST merchants/{{id}}/(revoke|authorize|unauthorize|token)"
        ))),
    }
}

/// Body of `POST /_emulator/authorize`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthorizeBody {
    mode: AuthorizeMode,
}

/// Reads a bounded JSON body; `expected` describes it in the error.
async fn read_json<T: serde::de::DeserializeOwned>(
    request: Request<Incoming>,
    expected: &str,
) -> Result<T, ApiError> {
    let bytes = Limited::new(request.into_body(), MAX_CONTROL_BYTES)
        .collect()
        .await
        .map_err(|_| {
            ApiError::InvalidRequest(format!(
                "expected a JSON body of at most {MAX_CONTROL_BYTES} bytes"
            ))
        })?
        .to_bytes();
    serde_json::from_slice(&bytes)
        .map_err(|error| ApiError::InvalidRequest(format!("expected {expected}; {error}")))
}

fn not_found(path: &str) -> ApiError {
    ApiError::NotFound(format!(
        "no control endpoint {CONTROL_PREFIX}{path}; expected merchants/{{id}}/(revoke|authorize|unauthorize|token)"
    ))
}
