//! Integration tests of the Poynt emulator: each starts its own emulator on 127.0.0.1:0 and
//! talks to it over real sockets, as the proxy will.

use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest;
use bytes::Bytes;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use poynt_emulator::{self as emulator, Emulator, EmulatorConfig, Fault, Stats};
use poynt_wire::ErrorBody;
use poynt_wire::MerchantId;
use serde_json::{Value, json};
use uuid::Uuid;

const APP_ID: &str = "urn:aid:43d223e7-0783-4889-822a-b1df827352c2";
const MERCHANT_A: &str = "c9580c24-b61e-4e0d-ad26-1dd1d3943d2c";
const MERCHANT_B: &str = "1f0a6f22-8d1c-4a51-9b0e-5b7d0c2e9a11";
const MERCHANT_C: &str = "7d3e2b10-4c5a-4f6e-8a9b-0c1d2e3f4a5b";

/// An app key pair, generated once per test binary: RSA key generation costs time.
struct AppKey {
    public_pem: String,
    signing: EncodingKey,
}

fn app_key() -> &'static AppKey {
    static KEY: OnceLock<AppKey> = OnceLock::new();
    KEY.get_or_init(make_key)
}

/// A second key, standing for an attacker's or a stale one.
fn other_key() -> &'static AppKey {
    static KEY: OnceLock<AppKey> = OnceLock::new();
    KEY.get_or_init(make_key)
}

fn make_key() -> AppKey {
    let (private_pem, public_pem) = emulator::generate_app_key().expect("generate app key");
    AppKey {
        signing: EncodingKey::from_rsa_pem(private_pem.as_bytes()).expect("load private key"),
        public_pem,
    }
}

fn merchant(text: &str) -> MerchantId {
    MerchantId::parse(text).expect("test merchant id")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A running emulator with merchants A and B authorized, plus a client for it.
struct Fixture {
    emulator: Emulator,
    base: String,
    client: reqwest::Client,
}

async fn fixture() -> Fixture {
    fixture_with(|_| {}).await
}

async fn fixture_with(adjust: impl FnOnce(&mut EmulatorConfig)) -> Fixture {
    let mut config = EmulatorConfig::new(APP_ID, app_key().public_pem.clone());
    config.merchants = vec![merchant(MERCHANT_A), merchant(MERCHANT_B)];
    adjust(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let emulator = emulator::start(config, listener)
        .await
        .expect("start emulator");
    let base = emulator.base_url();
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    Fixture {
        emulator,
        base,
        client,
    }
}

/// Claims of a well-formed assertion for `aud`, acting for `business` when given.
fn claims(aud: &str, business: Option<&str>) -> Value {
    let iat = now();
    let mut claims = json!({
        "iss": APP_ID, "sub": APP_ID, "aud": aud,
        "iat": iat, "exp": iat + 300, "jti": Uuid::new_v4().to_string(),
    });
    if let Some(business) = business {
        claims["poynt.biz"] = json!(business);
    }
    claims
}

fn sign(claims: &Value, key: &AppKey) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &key.signing)
        .expect("sign assertion")
}

fn form(pairs: &[(&str, &str)]) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs {
        serializer.append_pair(key, value);
    }
    serializer.finish()
}

impl Fixture {
    async fn post_token(&self, pairs: &[(&str, &str)]) -> reqwest::Response {
        self.client
            .post(format!("{}/token", self.base))
            .header("api-version", "1.2")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(pairs))
            .send()
            .await
            .expect("POST /token")
    }

    async fn jwt_bearer(&self, assertion: &str) -> reqwest::Response {
        self.post_token(&[
            ("grantType", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", assertion),
        ])
        .await
    }

    /// A token pair for `business`, asserting the grant succeeded.
    async fn tokens_for(&self, business: &str) -> Value {
        let response = self
            .jwt_bearer(&sign(&claims(&self.base, Some(business)), app_key()))
            .await;
        assert_eq!(response.status(), 200);
        response.json().await.expect("token JSON")
    }

    async fn api(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        token: &str,
    ) -> reqwest::Response {
        self.client
            .request(method, format!("{}{path_and_query}", self.base))
            .header("api-version", "1.2")
            .bearer_auth(token)
            .send()
            .await
            .expect("API call")
    }

    async fn stats(&self) -> Stats {
        let stats: Stats = self
            .client
            .get(format!("{}/_emulator/stats", self.base))
            .send()
            .await
            .expect("GET stats")
            .json()
            .await
            .expect("stats JSON");
        assert_eq!(
            stats,
            self.emulator.stats(),
            "control endpoint and Rust API disagree"
        );
        stats
    }
}

/// Asserts a Poynt error with `status` and `code`; returns its message.
async fn expect_error(response: reqwest::Response, status: u16, code: &str) -> String {
    assert_eq!(response.status(), status);
    let request_id = response
        .headers()
        .get("poynt-request-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body: ErrorBody = response.json().await.expect("Poynt error body");
    assert_eq!(body.code, code, "message: {}", body.message);
    assert_eq!(body.http_status, status);
    assert!(
        request_id.is_some(),
        "no Poynt-Request-Id header on an error"
    );
    assert_eq!(body.request_id, request_id);
    body.message
}

fn sha256_hex(bytes: &[u8]) -> String {
    digest::digest(&digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[tokio::test]
async fn jwt_bearer_grant_issues_a_token_that_the_api_accepts() {
    let fx = fixture().await;
    let tokens = fx.tokens_for(MERCHANT_A).await;
    assert_eq!(tokens["expiresIn"], 86_400);
    assert_eq!(tokens["scope"], "ALL");
    assert_eq!(tokens["tokenType"], "BEARER");
    assert!(
        tokens["refreshToken"]
            .as_str()
            .unwrap()
            .starts_with("1:1:1:2:")
    );
    let access = tokens["accessToken"].as_str().unwrap();
    assert!(
        (600..1200).contains(&access.len()),
        "access token is {} bytes",
        access.len()
    );

    // The access token is an RS256 JWT signed by the emulator's published key.
    let keys: Value = fx
        .client
        .get(format!("{}/_emulator/keys", fx.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = DecodingKey::from_rsa_pem(
        keys["access_token_public_key_pem"]
            .as_str()
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[APP_ID]);
    validation.set_issuer(&[fx.base.as_str()]);
    let decoded =
        jsonwebtoken::decode::<Value>(access, &key, &validation).expect("access token verifies");
    assert_eq!(decoded.claims["poynt.biz"], MERCHANT_A);
    assert_eq!(decoded.claims["sub"], APP_ID);
    assert_eq!(
        decoded.claims["exp"].as_u64().unwrap() - decoded.claims["iat"].as_u64().unwrap(),
        86_400
    );
    assert!(decoded.claims["poynt.uid"].is_u64());
    assert!(Uuid::try_parse(decoded.claims["poynt.org"].as_str().unwrap()).is_ok());

    let body = b"{\"amount\": 100}";
    let response = fx
        .client
        .post(format!(
            "{}/businesses/{MERCHANT_A}/orders?limit=5&x=%20y",
            fx.base
        ))
        .header("api-version", "1.2")
        .header("poynt-request-id", "req-42")
        .header("x-multi", "one")
        .header("x-multi", "two")
        .header("authorization", format!("bearer {access}"))
        .body(&body[..])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["poynt-request-id"], "req-42");
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(
        response.headers()["x-emulator-request-body-sha256"],
        sha256_hex(body).as_str()
    );
    let echo: Value = response.json().await.unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], format!("/businesses/{MERCHANT_A}/orders"));
    assert_eq!(echo["query"], "limit=5&x=%20y");
    assert_eq!(echo["body_len"], body.len());
    assert_eq!(echo["body_sha256"], sha256_hex(body));
    assert_eq!(echo["headers"]["api-version"], "1.2");
    assert_eq!(echo["headers"]["x-multi"], "one, two");
    assert!(
        !echo.to_string().contains(access),
        "the echo must not hand the access token back"
    );

    let stats = fx.stats().await;
    assert_eq!(stats.token_calls.jwt_bearer.total, 1);
    assert_eq!(stats.token_calls.jwt_bearer.refused, 0);
    assert_eq!(stats.token_calls.jwt_bearer.by_merchant[MERCHANT_A], 1);
    assert_eq!(stats.token_calls_total, 1);
    assert_eq!(stats.api_calls, 1);
    let secrets = fx.emulator.issued_secrets();
    assert!(secrets.iter().any(|secret| secret == access));
    assert!(
        secrets
            .iter()
            .any(|secret| secret == tokens["refreshToken"].as_str().unwrap())
    );
    assert_eq!(
        secrets.len(),
        3,
        "assertion, access token and refresh token"
    );
    fx.emulator.shutdown().await;
}

#[tokio::test]
async fn app_level_token_without_business_is_issued_but_cannot_act_for_a_merchant() {
    let fx = fixture().await;
    let response = fx
        .jwt_bearer(&sign(&claims(&fx.base, None), app_key()))
        .await;
    assert_eq!(response.status(), 200);
    let tokens: Value = response.json().await.unwrap();
    let response = fx
        .api(
            reqwest::Method::GET,
            &format!("/businesses/{MERCHANT_A}"),
            tokens["accessToken"].as_str().unwrap(),
        )
        .await;
    expect_error(response, 403, "ACCESS_DENIED").await;
}

#[tokio::test]
async fn replayed_jti_is_refused() {
    let fx = fixture().await;
    let assertion = sign(&claims(&fx.base, Some(MERCHANT_A)), app_key());
    assert_eq!(fx.jwt_bearer(&assertion).await.status(), 200);
    let message = expect_error(fx.jwt_bearer(&assertion).await, 401, "INVALID_ASSERTION").await;
    assert!(message.contains("jti"), "{message}");
    let stats = fx.stats().await;
    assert_eq!(stats.token_calls.jwt_bearer.total, 2);
    assert_eq!(stats.token_calls.jwt_bearer.refused, 1);
    assert_eq!(stats.token_calls.jwt_bearer.by_merchant[MERCHANT_A], 2);
}

#[tokio::test]
async fn wrong_audience_is_refused() {
    let fx = fixture().await;
    let assertion = sign(
        &claims("https://services.poynt.net", Some(MERCHANT_A)),
        app_key(),
    );
    let message = expect_error(fx.jwt_bearer(&assertion).await, 401, "INVALID_ASSERTION").await;
    assert!(message.contains("aud"), "{message}");
}

#[tokio::test]
async fn configured_audience_replaces_the_base_url() {
    let fx = fixture_with(|config| config.audience = Some("https://services.poynt.net".to_owned()))
        .await;
    let production = sign(
        &claims("https://services.poynt.net", Some(MERCHANT_A)),
        app_key(),
    );
    assert_eq!(fx.jwt_bearer(&production).await.status(), 200);
    let local = sign(&claims(&fx.base, Some(MERCHANT_A)), app_key());
    expect_error(fx.jwt_bearer(&local).await, 401, "INVALID_ASSERTION").await;
}

#[tokio::test]
async fn one_year_lifetime_is_refused() {
    let fx = fixture().await;
    let mut claims = claims(&fx.base, Some(MERCHANT_A));
    claims["exp"] = json!(now() + 365 * 86_400);
    let message = expect_error(
        fx.jwt_bearer(&sign(&claims, app_key())).await,
        401,
        "INVALID_ASSERTION",
    )
    .await;
    assert!(message.contains("lifetime"), "{message}");
}

#[tokio::test]
async fn millisecond_timestamps_are_refused() {
    let fx = fixture().await;
    let mut claims = claims(&fx.base, Some(MERCHANT_A));
    let now_ms = now() * 1000;
    claims["iat"] = json!(now_ms);
    claims["exp"] = json!(now_ms + 300);
    let message = expect_error(
        fx.jwt_bearer(&sign(&claims, app_key())).await,
        401,
        "INVALID_ASSERTION",
    )
    .await;
    assert!(message.contains("iat"), "{message}");
}

#[tokio::test]
async fn signature_by_another_key_is_refused() {
    let fx = fixture().await;
    let assertion = sign(&claims(&fx.base, Some(MERCHANT_A)), other_key());
    let message = expect_error(fx.jwt_bearer(&assertion).await, 401, "INVALID_ASSERTION").await;
    assert!(message.contains("signature"), "{message}");
}

#[tokio::test]
async fn unauthorized_merchant_is_refused_until_authorized() {
    let fx = fixture().await;
    let response = fx
        .jwt_bearer(&sign(&claims(&fx.base, Some(MERCHANT_C)), app_key()))
        .await;
    expect_error(response, 401, "MERCHANT_NOT_AUTHORIZED").await;
    fx.emulator.authorize(merchant(MERCHANT_C));
    let response = fx
        .jwt_bearer(&sign(&claims(&fx.base, Some(MERCHANT_C)), app_key()))
        .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn refresh_rotates_and_a_reused_refresh_token_is_refused_and_counted() {
    let fx = fixture().await;
    let first = fx.tokens_for(MERCHANT_A).await;
    let old_refresh = first["refreshToken"].as_str().unwrap();

    let response = fx
        .post_token(&[
            ("grantType", "REFRESH_TOKEN"),
            ("refreshToken", old_refresh),
        ])
        .await;
    assert_eq!(response.status(), 200);
    let second: Value = response.json().await.unwrap();
    assert_ne!(second["refreshToken"], first["refreshToken"]);
    let response = fx
        .api(
            reqwest::Method::GET,
            &format!("/businesses/{MERCHANT_A}/orders"),
            second["accessToken"].as_str().unwrap(),
        )
        .await;
    assert_eq!(response.status(), 200);

    // snake_case spelling, same (spent) token.
    let response = fx
        .post_token(&[
            ("grant_type", "REFRESH_TOKEN"),
            ("refresh_token", old_refresh),
        ])
        .await;
    expect_error(response, 401, "INVALID_REFRESH_TOKEN").await;
    let response = fx
        .post_token(&[
            ("grantType", "REFRESH_TOKEN"),
            ("refreshToken", "1:1:1:2:nope"),
        ])
        .await;
    expect_error(response, 401, "INVALID_REFRESH_TOKEN").await;

    let stats = fx.stats().await;
    assert_eq!(stats.refresh_token_reuse, 1);
    assert_eq!(stats.token_calls.refresh_token.total, 3);
    assert_eq!(stats.token_calls.refresh_token.refused, 2);
    assert_eq!(stats.token_calls.refresh_token.by_merchant[MERCHANT_A], 2);
}

#[tokio::test]
async fn refresh_is_refused_once_the_merchant_withdraws() {
    let fx = fixture().await;
    let tokens = fx.tokens_for(MERCHANT_A).await;
    fx.emulator.unauthorize(merchant(MERCHANT_A));
    let response = fx
        .post_token(&[
            ("grantType", "REFRESH_TOKEN"),
            ("refreshToken", tokens["refreshToken"].as_str().unwrap()),
        ])
        .await;
    expect_error(response, 401, "MERCHANT_NOT_AUTHORIZED").await;
    let response = fx
        .api(
            reqwest::Method::GET,
            &format!("/businesses/{MERCHANT_A}"),
            tokens["accessToken"].as_str().unwrap(),
        )
        .await;
    expect_error(response, 401, "INVALID_ACCESS_TOKEN").await;
}

#[tokio::test]
async fn missing_api_version_is_refused_on_token_and_api() {
    let fx = fixture().await;
    let response = fx
        .client
        .post(format!("{}/token", fx.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("grantType", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            (
                "assertion",
                &sign(&claims(&fx.base, Some(MERCHANT_A)), app_key()),
            ),
        ]))
        .send()
        .await
        .unwrap();
    expect_error(response, 400, "MISSING_API_VERSION").await;

    let tokens = fx.tokens_for(MERCHANT_A).await;
    let response = fx
        .client
        .get(format!("{}/businesses/{MERCHANT_A}/orders", fx.base))
        .bearer_auth(tokens["accessToken"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    expect_error(response, 400, "MISSING_API_VERSION").await;
}

#[tokio::test]
async fn non_form_bodies_and_unknown_grants_are_refused() {
    let fx = fixture().await;
    let response = fx
        .client
        .post(format!("{}/token", fx.base))
        .header("api-version", "1.2")
        .header("content-type", "application/json")
        .body(r#"{"grantType":"REFRESH_TOKEN"}"#)
        .send()
        .await
        .unwrap();
    expect_error(response, 400, "INVALID_REQUEST").await;
    expect_error(
        fx.post_token(&[("grantType", "password")]).await,
        400,
        "INVALID_GRANT_TYPE",
    )
    .await;
    expect_error(fx.post_token(&[]).await, 400, "INVALID_GRANT_TYPE").await;
    let stats = fx.stats().await;
    assert_eq!(stats.token_calls.unknown.total, 3);
    assert_eq!(stats.token_calls.unknown.refused, 3);
}

#[tokio::test]
async fn authorize_redirect_code_exchange_authorizes_the_merchant_once() {
    let fx = fixture().await;
    let redirect_uri = "http://127.0.0.1:1/callback";
    let before = fx
        .jwt_bearer(&sign(&claims(&fx.base, Some(MERCHANT_C)), app_key()))
        .await;
    expect_error(before, 401, "MERCHANT_NOT_AUTHORIZED").await;

    let url = format!(
        "{}/applications/authorize?{}",
        fx.base,
        form(&[
            ("redirect_uri", redirect_uri),
            ("client_id", APP_ID),
            ("context", "csrf-123"),
            ("businessId", MERCHANT_C)
        ])
    );
    let response = fx.client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 302);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let (target, query) = location.split_once('?').expect("redirect carries a query");
    assert_eq!(target, redirect_uri);
    let params: std::collections::HashMap<String, String> =
        form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
    assert_eq!(params["status"], "AUTHORIZED");
    assert_eq!(params["context"], "csrf-123");
    assert_eq!(params["businessId"], MERCHANT_C);
    let code = params["code"].clone();

    // The code verifies with the published poynt.net key and names the merchant.
    let key = DecodingKey::from_rsa_pem(fx.emulator.poynt_net_public_key_pem().as_bytes()).unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&["https://poynt.net"]);
    let decoded = jsonwebtoken::decode::<Value>(&code, &key, &validation).expect("code verifies");
    assert_eq!(decoded.claims["sub"], APP_ID);
    assert_eq!(decoded.claims["poynt.biz"], MERCHANT_C);
    let lifetime =
        decoded.claims["exp"].as_u64().unwrap() - decoded.claims["iat"].as_u64().unwrap();
    assert_eq!(lifetime, 900);

    let exchange = |code: String| {
        let fx = &fx;
        async move {
            fx.client
                .post(format!("{}/token", fx.base))
                .header("api-version", "1.2")
                .header("content-type", "application/x-www-form-urlencoded")
                .bearer_auth(sign(&claims(&fx.base, None), app_key()))
                .body(form(&[
                    ("grant_type", "authorization_code"),
                    ("redirect_uri", redirect_uri),
                    ("client_id", APP_ID),
                    ("code", &code),
                ]))
                .send()
                .await
                .unwrap()
        }
    };
    let response = exchange(code.clone()).await;
    assert_eq!(response.status(), 200);
    let tokens: Value = response.json().await.unwrap();
    let response = fx
        .api(
            reqwest::Method::GET,
            &format!("/businesses/{MERCHANT_C}/orders"),
            tokens["accessToken"].as_str().unwrap(),
        )
        .await;
    assert_eq!(response.status(), 200);
    let after = fx
        .jwt_bearer(&sign(&claims(&fx.base, Some(MERCHANT_C)), app_key()))
        .await;
    assert_eq!(
        after.status(),
        200,
        "the code exchange authorizes the merchant"
    );

    let message = expect_error(exchange(code).await, 401, "INVALID_AUTHORIZATION_CODE").await;
    assert!(message.contains("already"), "{message}");
    let stats = fx.stats().await;
    assert_eq!(stats.token_calls.authorization_code.total, 2);
    assert_eq!(stats.token_calls.authorization_code.refused, 1);
    assert_eq!(
        stats.token_calls.authorization_code.by_merchant[MERCHANT_C],
        2
    );
    assert!(fx.emulator.issued_secrets().contains(&params["code"]));
}

#[tokio::test]
async fn code_exchange_needs_the_bearer_assertion_and_a_genuine_code() {
    let fx = fixture().await;
    let forged_claims = json!({
        "iss": "https://poynt.net", "sub": APP_ID, "poynt.biz": MERCHANT_C,
        "iat": now(), "exp": now() + 900,
    });
    let forged = sign(&forged_claims, app_key());
    let pairs = [
        ("grant_type", "authorization_code"),
        ("redirect_uri", "http://127.0.0.1:1/cb"),
        ("client_id", APP_ID),
        ("code", forged.as_str()),
    ];
    expect_error(fx.post_token(&pairs).await, 401, "INVALID_ASSERTION").await;
    let response = fx
        .client
        .post(format!("{}/token", fx.base))
        .header("api-version", "1.2")
        .header("content-type", "application/x-www-form-urlencoded")
        .bearer_auth(sign(&claims(&fx.base, None), app_key()))
        .body(form(&pairs))
        .send()
        .await
        .unwrap();
    let message = expect_error(response, 401, "INVALID_AUTHORIZATION_CODE").await;
    assert!(message.contains("poynt.net"), "{message}");
}

#[tokio::test]
async fn signout_redirects() {
    let fx = fixture().await;
    let response = fx
        .client
        .get(format!(
            "{}/auth/signout?redirect=http%3A%2F%2F127.0.0.1%3A1%2Fbye",
            fx.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    assert_eq!(response.headers()["location"], "http://127.0.0.1:1/bye");
}

#[tokio::test]
async fn another_merchants_token_is_forbidden() {
    let fx = fixture().await;
    let tokens = fx.tokens_for(MERCHANT_A).await;
    let response = fx
        .api(
            reqwest::Method::GET,
            &format!("/businesses/{MERCHANT_B}/orders"),
            tokens["accessToken"].as_str().unwrap(),
        )
        .await;
    expect_error(response, 403, "ACCESS_DENIED").await;
    assert_eq!(
        fx.stats().await.api_unauthorized,
        0,
        "403 is not a token refusal"
    );
}

#[tokio::test]
async fn minted_tokens_work_without_counting_as_grants() {
    let fx = fixture().await;
    let response = fx
        .client
        .post(format!(
            "{}/_emulator/merchants/{MERCHANT_A}/token",
            fx.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let tokens: Value = response.json().await.unwrap();
    let response = fx
        .api(
            reqwest::Method::GET,
            &format!("/businesses/{MERCHANT_A}/orders"),
            tokens["accessToken"].as_str().unwrap(),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(fx.stats().await.token_calls_total, 0);
}

#[tokio::test]
async fn revoked_token_is_refused_while_its_refresh_token_still_works() {
    let fx = fixture().await;
    let tokens = fx.tokens_for(MERCHANT_A).await;
    let access = tokens["accessToken"].as_str().unwrap();
    let path = format!("/businesses/{MERCHANT_A}/orders");
    assert_eq!(
        fx.api(reqwest::Method::GET, &path, access).await.status(),
        200
    );

    let response = fx
        .client
        .post(format!(
            "{}/_emulator/merchants/{MERCHANT_A}/revoke",
            fx.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    expect_error(
        fx.api(reqwest::Method::GET, &path, access).await,
        401,
        "INVALID_ACCESS_TOKEN",
    )
    .await;
    expect_error(
        fx.api(reqwest::Method::GET, &path, "garbage").await,
        401,
        "INVALID_ACCESS_TOKEN",
    )
    .await;
    let no_token = fx
        .client
        .get(format!("{}{path}", fx.base))
        .header("api-version", "1.2")
        .send()
        .await
        .unwrap();
    expect_error(no_token, 401, "INVALID_ACCESS_TOKEN").await;
    assert_eq!(fx.stats().await.api_unauthorized, 3);

    let response = fx
        .post_token(&[
            ("grantType", "REFRESH_TOKEN"),
            ("refreshToken", tokens["refreshToken"].as_str().unwrap()),
        ])
        .await;
    assert_eq!(response.status(), 200);
    let fresh: Value = response.json().await.unwrap();
    assert_eq!(
        fx.api(
            reqwest::Method::GET,
            &path,
            fresh["accessToken"].as_str().unwrap()
        )
        .await
        .status(),
        200
    );
}

#[tokio::test]
async fn expired_token_is_refused() {
    let fx = fixture_with(|config| config.token_ttl = std::time::Duration::ZERO).await;
    let tokens = fx.tokens_for(MERCHANT_A).await;
    assert_eq!(tokens["expiresIn"], 0);
    let response = fx
        .api(
            reqwest::Method::GET,
            &format!("/businesses/{MERCHANT_A}"),
            tokens["accessToken"].as_str().unwrap(),
        )
        .await;
    let message = expect_error(response, 401, "INVALID_ACCESS_TOKEN").await;
    assert!(message.contains("expired"), "{message}");
}

#[tokio::test]
async fn token_faults_status_drop_and_clear() {
    let fx = fixture().await;
    let response = fx
        .client
        .post(format!("{}/_emulator/fault", fx.base))
        .json(&json!({"token_status": 503}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let assertion = sign(&claims(&fx.base, Some(MERCHANT_A)), app_key());
    expect_error(fx.jwt_bearer(&assertion).await, 503, "EMULATED_FAULT").await;

    let bad = fx
        .client
        .post(format!("{}/_emulator/fault", fx.base))
        .json(&json!({"token_status": 200}))
        .send()
        .await
        .unwrap();
    expect_error(bad, 400, "INVALID_REQUEST").await;

    fx.emulator.set_fault(Fault {
        token_drop: true,
        ..Fault::default()
    });
    let dropped = fx
        .client
        .post(format!("{}/token", fx.base))
        .header("api-version", "1.2")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("grantType", "REFRESH_TOKEN"),
            ("refreshToken", "x"),
        ]))
        .send()
        .await;
    let error = dropped.expect_err("a dropped connection is an error, not a response");
    assert!(!error.is_status(), "{error:?}");

    let cleared = fx
        .client
        .post(format!("{}/_emulator/fault", fx.base))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status(), 200);
    let assertion = sign(&claims(&fx.base, Some(MERCHANT_A)), app_key());
    assert_eq!(fx.jwt_bearer(&assertion).await.status(), 200);

    let stats = fx.stats().await;
    assert_eq!(stats.token_calls_total, 3);
    assert_eq!(stats.token_faulted, 2);
    assert_eq!(stats.token_calls.jwt_bearer.total, 1);
}

#[tokio::test]
async fn api_faults_throttle_fail_drop_and_blackhole_at_run_time() {
    let fx = fixture().await;
    let a = fx.tokens_for(MERCHANT_A).await;
    let b = fx.tokens_for(MERCHANT_B).await;
    let a = a["accessToken"].as_str().unwrap();
    let b = b["accessToken"].as_str().unwrap();
    let path_a = format!("/businesses/{MERCHANT_A}");
    let path_b = format!("/businesses/{MERCHANT_B}");
    let set = |fault: Value| {
        let request = fx
            .client
            .post(format!("{}/_emulator/fault", fx.base))
            .json(&fault);
        async move { request.send().await.expect("POST fault") }
    };

    // A throttled merchant gets 429 with Retry-After; the other is served.
    assert_eq!(
        set(json!({"api_throttle": {MERCHANT_A: 7}})).await.status(),
        200
    );
    let throttled = fx.api(reqwest::Method::GET, &path_a, a).await;
    assert_eq!(throttled.headers()["retry-after"], "7");
    expect_error(throttled, 429, "TOO_MANY_REQUESTS").await;
    assert_eq!(fx.api(reqwest::Method::GET, &path_b, b).await.status(), 200);

    // Every 2nd call fails with the chosen 5xx.
    set(json!({"api_error_every": 2, "api_error_status": 502})).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            fx.api(reqwest::Method::GET, &path_b, b)
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 502, 200, 502]);
    let refused = set(json!({"api_error_status": 404})).await;
    let message = expect_error(refused, 400, "INVALID_REQUEST").await;
    assert!(message.contains("found 404"), "{message}");

    // Dropped: the connection closes unanswered.
    set(json!({"api_drop": true})).await;
    let dropped = fx
        .client
        .get(format!("{}{path_b}", fx.base))
        .header("api-version", "1.2")
        .bearer_auth(b)
        .send()
        .await
        .expect_err("a dropped connection is an error, not a response");
    assert!(!dropped.is_status(), "{dropped:?}");

    // Black-holed: the call is held until the fault is replaced, then its connection closes.
    set(json!({"api_blackhole": true})).await;
    let held = tokio::spawn(
        fx.client
            .get(format!("{}{path_b}", fx.base))
            .header("api-version", "1.2")
            .bearer_auth(b)
            .send(),
    );
    let expected_faulted = 5;
    for _ in 0..200 {
        if fx.emulator.stats().api_faulted == expected_faulted {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(fx.emulator.stats().api_faulted, expected_faulted);
    assert!(!held.is_finished(), "a black-holed call was answered");
    set(json!({})).await;
    let ended = held.await.unwrap();
    assert!(ended.is_err(), "{ended:?}");
    assert_eq!(fx.api(reqwest::Method::GET, &path_a, a).await.status(), 200);

    let stats = fx.stats().await;
    assert_eq!(stats.api_calls_by_merchant[MERCHANT_A], 2);
    assert_eq!(stats.api_calls_by_merchant[MERCHANT_B], 7);
    assert_eq!(stats.api_calls, 9);
}

#[tokio::test]
async fn reset_clears_counters_faults_and_revocations() {
    let fx = fixture().await;
    let tokens = fx.tokens_for(MERCHANT_A).await;
    let access = tokens["accessToken"].as_str().unwrap();
    fx.emulator.revoke(merchant(MERCHANT_A));
    fx.emulator.set_fault(Fault {
        token_status: Some(500),
        ..Fault::default()
    });
    let response = fx
        .client
        .post(format!("{}/_emulator/reset", fx.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(fx.emulator.stats(), Stats::default());
    let path = format!("/businesses/{MERCHANT_A}");
    assert_eq!(
        fx.api(reqwest::Method::GET, &path, access).await.status(),
        200
    );
    let assertion = sign(&claims(&fx.base, Some(MERCHANT_A)), app_key());
    assert_eq!(fx.jwt_bearer(&assertion).await.status(), 200);
}

#[tokio::test]
async fn size_knob_streams_exactly_n_bytes_of_the_pattern() {
    use futures_util::StreamExt;

    let fx = fixture().await;
    let tokens = fx.tokens_for(MERCHANT_A).await;
    let access = tokens["accessToken"].as_str().unwrap();
    let size = 3_000_017usize;
    let response = fx
        .client
        .put(format!(
            "{}/businesses/{MERCHANT_A}/blob?_size={size}",
            fx.base
        ))
        .header("api-version", "1.2")
        .bearer_auth(access)
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.content_length(), Some(size as u64));
    assert_eq!(
        response.headers()["x-emulator-request-body-sha256"],
        sha256_hex(b"payload").as_str()
    );
    let mut received = 0usize;
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        for (offset, byte) in chunk.iter().enumerate() {
            assert_eq!(
                *byte,
                ((received + offset) % 251) as u8,
                "byte {}",
                received + offset
            );
        }
        received += chunk.len();
    }
    assert_eq!(received, size);

    let response = fx
        .api(
            reqwest::Method::GET,
            &format!("/businesses/{MERCHANT_A}/x?_size=1000&_chunked=1"),
            access,
        )
        .await;
    assert_eq!(response.headers().get("content-length"), None);
    assert_eq!(response.headers()["transfer-encoding"], "chunked");
    assert_eq!(response.bytes().await.unwrap().len(), 1000);
}

#[tokio::test]
async fn bytes_status_and_delay_knobs() {
    let fx = fixture().await;
    let tokens = fx.tokens_for(MERCHANT_A).await;
    let access = tokens["accessToken"].as_str().unwrap();
    let response = fx
        .api(
            reqwest::Method::GET,
            &format!("/businesses/{MERCHANT_A}/x?_bytes=1024&_delay_ms=1"),
            access,
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = response.bytes().await.unwrap();
    assert_eq!(body.len(), 1024);
    assert!(serde_json::from_slice::<Value>(&body).is_ok());

    let response = fx
        .api(
            reqwest::Method::DELETE,
            &format!("/businesses/{MERCHANT_A}/x?_status=502"),
            access,
        )
        .await;
    assert_eq!(response.status(), 502);
    let echo: Value = response.json().await.unwrap();
    assert_eq!(echo["method"], "DELETE");
    assert_eq!(echo["query"], "_status=502");
}

#[tokio::test]
async fn large_upload_is_hashed_while_streaming() {
    let fx = fixture().await;
    let tokens = fx.tokens_for(MERCHANT_A).await;
    let chunk = Bytes::from(vec![7u8; 256 * 1024]);
    let chunks = 40;
    let mut expected = digest::Context::new(&digest::SHA256);
    for _ in 0..chunks {
        expected.update(&chunk);
    }
    let expected: String = expected
        .finish()
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let stream = futures_util::stream::iter(
        (0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    let response = fx
        .client
        .post(format!("{}/businesses/{MERCHANT_A}/uploads", fx.base))
        .header("api-version", "1.2")
        .bearer_auth(tokens["accessToken"].as_str().unwrap())
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echo: Value = response.json().await.unwrap();
    assert_eq!(echo["body_len"], 256 * 1024 * chunks);
    assert_eq!(echo["body_sha256"], expected);
}

#[tokio::test]
async fn unknown_paths_and_methods_get_poynt_errors() {
    let fx = fixture().await;
    let response = fx
        .client
        .get(format!("{}/nope", fx.base))
        .send()
        .await
        .unwrap();
    expect_error(response, 404, "NOT_FOUND").await;
    let response = fx
        .client
        .get(format!("{}/token", fx.base))
        .send()
        .await
        .unwrap();
    expect_error(response, 405, "METHOD_NOT_ALLOWED").await;
}

#[tokio::test]
async fn the_last_traceparent_per_path_is_recorded_and_otlp_exports_are_taken() {
    let fx = fixture().await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = fx
        .client
        .get(format!("{}/nope", fx.base))
        .header("traceparent", traceparent)
        .send()
        .await
        .unwrap();
    expect_error(response, 404, "NOT_FOUND").await;
    let stats = fx.stats().await;
    assert_eq!(stats.last_traceparent["/nope"], traceparent);
    assert_eq!(
        stats.last_traceparent.len(),
        1,
        "only paths that carried one"
    );
    let response = fx
        .client
        .post(format!("{}/v1/traces", fx.base))
        .header("content-type", "application/x-protobuf")
        .body(vec![0u8; 64])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.bytes().await.unwrap().is_empty(),
        "an empty export response"
    );
    fx.emulator.reset();
    assert!(
        fx.stats().await.last_traceparent.is_empty(),
        "reset clears them"
    );
}

#[tokio::test]
async fn http2_prior_knowledge_is_served() {
    let fx = fixture().await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = client
        .get(format!("{}/_emulator/stats", fx.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn tls_mode_serves_h2_and_http1_to_a_client_trusting_the_ca() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName};

    let fx = fixture_with(|config| config.tls = true).await;
    assert!(fx.base.starts_with("https://localhost:"), "{}", fx.base);
    let ca_pem = fx.emulator.ca_pem().expect("CA in TLS mode");
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("CA PEM"))
        .expect("add CA");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());

    for (alpn, name) in [
        (b"h2".as_slice(), "localhost"),
        (b"http/1.1".as_slice(), "127.0.0.1"),
    ] {
        let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(fx.emulator.addr())
            .await
            .unwrap();
        let tls = connector
            .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
            .await
            .expect("TLS handshake with a client trusting the CA");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
        let request = hyper::Request::get(format!("{}/_emulator/keys", fx.base))
            .header("host", format!("localhost:{}", fx.emulator.addr().port()))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = if alpn == b"h2" {
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                    .await
                    .unwrap();
            tokio::spawn(connection);
            sender.send_request(request).await.unwrap()
        } else {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .unwrap();
            tokio::spawn(connection);
            sender.send_request(request).await.unwrap()
        };
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let keys: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            keys["poynt_net_public_key_pem"],
            fx.emulator.poynt_net_public_key_pem()
        );
    }

    // A client that does not trust the CA is refused.
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(fx.emulator.addr())
        .await
        .unwrap();
    let refused = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await;
    assert!(refused.is_err());
    fx.emulator.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let fx = fixture().await;
    let addr = fx.emulator.addr();
    assert_eq!(
        fx.client
            .get(format!("{}/_emulator/stats", fx.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    fx.emulator.shutdown().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test]
async fn start_refuses_a_bad_app_id_or_key() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = EmulatorConfig::new("my-app", app_key().public_pem.clone());
    let error = emulator::start(config, listener)
        .await
        .err()
        .expect("bad app id refused");
    assert!(error.to_string().contains("urn:aid:"), "{error}");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = EmulatorConfig::new(APP_ID, "not a key");
    let error = emulator::start(config, listener)
        .await
        .err()
        .expect("bad key refused");
    assert!(error.to_string().contains("RSA public key"), "{error}");
}

#[tokio::test]
async fn authorize_accepts_the_older_names_and_refuses_other_apps_and_missing_merchants() {
    let fx = fixture().await;
    let url = format!(
        "{}/applications/authorize?{}",
        fx.base,
        form(&[
            ("callback", "http://127.0.0.1:1/cb?keep=1"),
            ("applicationId", APP_ID)
        ])
    );
    let response = fx.client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 302);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with("http://127.0.0.1:1/cb?keep=1&code="),
        "{location}"
    );
    assert!(
        location.contains(&format!("businessId={MERCHANT_A}")),
        "first configured merchant: {location}"
    );

    let url = format!(
        "{}/applications/authorize?{}",
        fx.base,
        form(&[
            ("redirect_uri", "http://127.0.0.1:1/cb"),
            ("client_id", "urn:aid:someone-else")
        ])
    );
    expect_error(
        fx.client.get(url).send().await.unwrap(),
        400,
        "INVALID_CLIENT",
    )
    .await;

    let bare = fixture_with(|config| config.merchants.clear()).await;
    let url = format!(
        "{}/applications/authorize?{}",
        bare.base,
        form(&[
            ("redirect_uri", "http://127.0.0.1:1/cb"),
            ("client_id", APP_ID)
        ])
    );
    expect_error(
        bare.client.get(url).send().await.unwrap(),
        400,
        "INVALID_REQUEST",
    )
    .await;
}

/// GET the authorize page for `business` and return the redirect's query parameters.
async fn authorize_params(
    fx: &Fixture,
    business: &str,
) -> std::collections::HashMap<String, String> {
    let url = format!(
        "{}/applications/authorize?{}",
        fx.base,
        form(&[
            ("redirect_uri", "http://127.0.0.1:1/cb"),
            ("client_id", APP_ID),
            ("context", "s"),
            ("businessId", business)
        ])
    );
    let response = fx.client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 302);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    form_urlencoded::parse(location.split_once('?').unwrap().1.as_bytes())
        .into_owned()
        .collect()
}

#[tokio::test]
async fn authorize_modes_spoil_codes_that_the_token_endpoint_refuses_too() {
    let fx = fixture().await;
    let control = format!("{}/_emulator/authorize", fx.base);
    for (mode, needle) in [
        ("tampered_code", "does not verify"),
        ("alg_none", "RS256"),
        ("expired_code", "unexpired"),
        ("other_app", "expected sub"),
    ] {
        let set: Value = fx
            .client
            .post(&control)
            .json(&json!({ "mode": mode }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(set, json!({ "mode": mode }));
        let params = authorize_params(&fx, MERCHANT_C).await;
        assert_eq!(params["status"], "AUTHORIZED");
        let response = fx
            .client
            .post(format!("{}/token", fx.base))
            .header("api-version", "1.2")
            .header("content-type", "application/x-www-form-urlencoded")
            .bearer_auth(sign(&claims(&fx.base, None), app_key()))
            .body(form(&[
                ("grant_type", "authorization_code"),
                ("redirect_uri", "http://127.0.0.1:1/cb"),
                ("client_id", APP_ID),
                ("code", &params["code"]),
            ]))
            .send()
            .await
            .unwrap();
        let message = expect_error(response, 401, "INVALID_AUTHORIZATION_CODE").await;
        assert!(message.contains(needle), "{mode}: {message}");
    }
    fx.emulator
        .set_authorize_mode(emulator::AuthorizeMode::Deny);
    let params = authorize_params(&fx, MERCHANT_C).await;
    assert_eq!(params["status"], "DENIED");
    assert!(!params.contains_key("code"), "{params:?}");
    assert_eq!(params["context"], "s");
    let bad = fx
        .client
        .post(&control)
        .json(&json!({ "mode": "maybe" }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    fx.emulator.reset();
    let current: Value = fx
        .client
        .get(&control)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(current, json!({ "mode": "approve" }));
}
