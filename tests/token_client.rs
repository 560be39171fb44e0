//! The self-signed assertion and the /token client, against the emulator over HTTP and TLS.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use poynt_proxy::config::{Config, KeySources};
use poynt_proxy::metrics::Metrics;
use poynt_proxy::token::assertion::{AppKey, AssertionSigner};
use poynt_proxy::token::grant::{Grant, GrantError, TokenClient};
use poynt_proxy::upstream::{self, HttpClient};
use poynt_wire::MerchantId;
use secrecy::{ExposeSecret, SecretString};
use support::{APP_ID, Builder, fixture};

fn signer(audience: &str) -> AssertionSigner {
    let key = AppKey::from_pem_file(&fixture("app-key-pkcs1.pem")).expect("key");
    AssertionSigner::new(APP_ID.into(), audience.into(), key)
}

#[test]
fn assertion_verifies_with_the_public_key_and_carries_exactly_poynts_claims() {
    let merchant = support::merchant();
    let assertion = signer("https://services.poynt.net")
        .sign(Some(merchant))
        .expect("signs");
    let public = std::fs::read(fixture("app-key-public.pem")).unwrap();
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(&public).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&["https://services.poynt.net"]);
    validation.set_issuer(&[APP_ID]);
    validation.set_required_spec_claims(&["iss", "sub", "aud", "exp", "iat", "jti"]);
    let data =
        jsonwebtoken::decode::<serde_json::Value>(assertion.expose_secret(), &key, &validation)
            .expect("signature and claims verify");
    assert_eq!(data.header.alg, jsonwebtoken::Algorithm::RS256);
    let claims = data.claims.as_object().unwrap();
    let mut names: Vec<&str> = claims.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["aud", "exp", "iat", "iss", "jti", "poynt.biz", "sub"]
    );
    assert_eq!(claims["sub"], APP_ID);
    assert_eq!(claims["poynt.biz"], merchant.to_string());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let iat = claims["iat"].as_u64().unwrap();
    let exp = claims["exp"].as_u64().unwrap();
    assert!(
        iat.abs_diff(now) <= 5,
        "iat {iat} is not seconds near {now}"
    );
    assert!(exp > iat && exp - iat <= 300, "lifetime {} s", exp - iat);
    let jti = claims["jti"].as_str().unwrap();
    uuid::Uuid::parse_str(jti).expect("jti is a UUID");

    let other = signer("https://services.poynt.net").sign(None).unwrap();
    let other = jsonwebtoken::decode::<serde_json::Value>(other.expose_secret(), &key, &validation)
        .unwrap();
    assert_ne!(other.claims["jti"], jti, "jti reused");
    assert!(
        other.claims.get("poynt.biz").is_none(),
        "app-level assertion names a merchant"
    );
}

struct Setup {
    _harness_dir: tempfile::TempDir,
    emulator: poynt_emulator::Emulator,
    config: Config,
    merchant: MerchantId,
}

async fn setup(tls: bool, with_ca: bool) -> Setup {
    let merchant = support::merchant();
    let mut builder = Builder::default();
    if tls {
        builder = builder.tls();
    }
    let emulator = builder.emulator(&[merchant]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = support::proxy_yaml(&emulator, &dir, "");
    if !with_ca {
        yaml = yaml
            .lines()
            .filter(|l| !l.contains("ca_file"))
            .collect::<Vec<_>>()
            .join("\n");
    }
    let config = Config::parse(&yaml, &KeySources::default()).expect("config");
    Setup {
        _harness_dir: dir,
        emulator,
        config,
        merchant,
    }
}

fn http_client(config: &Config) -> HttpClient {
    upstream::client(&config.poynt.extra_roots, Duration::from_secs(5)).expect("client")
}

fn token_client(config: &Config) -> TokenClient {
    let poynt = &config.poynt;
    TokenClient::new(
        http_client(config),
        poynt.token_url.clone(),
        poynt.api_version.clone(),
        AssertionSigner::new(
            poynt.application_id.clone(),
            poynt.audience.clone(),
            poynt.private_key.clone(),
        ),
        poynt.token_timeout,
        4,
        Metrics::new().unwrap(),
    )
}

async fn authorization_code(setup: &Setup, redirect_uri: &str) -> SecretString {
    let location =
        support::authorization_redirect(&setup.emulator, setup.merchant, redirect_uri).await;
    assert_eq!(location.split_once('?').unwrap().0, redirect_uri);
    assert_eq!(
        support::query_param(&location, "context").as_deref(),
        Some("csrf-123")
    );
    assert_eq!(
        support::query_param(&location, "status").as_deref(),
        Some("AUTHORIZED")
    );
    support::query_param(&location, "code")
        .expect("code in redirect")
        .into()
}

async fn three_grants_round_trip(tls: bool) {
    let setup = setup(tls, true).await;
    let client = token_client(&setup.config);

    let issued = client
        .request(&Grant::JwtBearer(setup.merchant), Some(setup.merchant))
        .await
        .expect("JWT-bearer grant");
    assert_eq!(issued.merchant, Some(setup.merchant));
    assert!(
        issued.lifetime > Duration::from_secs(3000),
        "{:?}",
        issued.lifetime
    );
    let refresh = issued.refresh_token.expect("refresh token");

    let renewed = client
        .request(&Grant::RefreshToken(refresh), Some(setup.merchant))
        .await
        .expect("refresh grant");
    assert_eq!(renewed.merchant, Some(setup.merchant));
    assert!(renewed.refresh_token.is_some(), "rotated refresh token");

    let redirect = "https://app.example.com/return";
    let code = authorization_code(&setup, redirect).await;
    let onboarded = client
        .request(
            &Grant::AuthorizationCode {
                code,
                redirect_uri: redirect.into(),
            },
            None,
        )
        .await
        .expect("authorization-code grant");
    assert_eq!(onboarded.merchant, Some(setup.merchant));

    let stats = setup.emulator.stats();
    assert_eq!(stats.token_calls_total, 3, "{stats:?}");
    setup.emulator.shutdown().await;
}

#[tokio::test]
async fn each_grant_round_trips_over_http() {
    three_grants_round_trip(false).await;
}

#[tokio::test]
async fn each_grant_round_trips_over_tls_with_ca_file() {
    three_grants_round_trip(true).await;
}

#[tokio::test]
async fn tls_without_ca_file_fails_with_a_certificate_error() {
    let setup = setup(true, false).await;
    let error = token_client(&setup.config)
        .request(&Grant::JwtBearer(setup.merchant), Some(setup.merchant))
        .await
        .err()
        .expect("untrusted certificate refused");
    let message = error.to_string();
    assert!(matches!(error, GrantError::Transport { .. }), "{message}");
    assert!(message.to_lowercase().contains("certificate"), "{message}");
    assert_eq!(setup.emulator.stats().token_calls_total, 0);
    setup.emulator.shutdown().await;
}

#[tokio::test]
async fn refusals_are_typed_with_poynts_code() {
    let setup = setup(false, true).await;
    let client = token_client(&setup.config);
    let stranger = support::merchant();
    let error = client
        .request(&Grant::JwtBearer(stranger), Some(stranger))
        .await
        .err()
        .expect("unauthorized merchant refused");
    assert!(error.is_refused(), "{error}");
    assert_eq!(error.poynt_code(), Some("MERCHANT_NOT_AUTHORIZED"));
    let error = client
        .request(
            &Grant::RefreshToken("1:1:1:2:nope".to_string().into()),
            None,
        )
        .await
        .err()
        .expect("unknown refresh token refused");
    assert!(error.is_refused(), "{error}");
    assert!(
        !error.to_string().contains("nope"),
        "refresh token in error: {error}"
    );
    setup.emulator.shutdown().await;
}
