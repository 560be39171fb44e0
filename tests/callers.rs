//! Caller identity and rights through the real proxy and emulator: API keys from a key file,
//! JWTs signed here (RS256, ES256, EdDSA) against a JWKS file and one served over HTTPS,
//! the policy's merchants and rules, observe mode, and a reload that removes a caller. Every
//! refusal is checked to cost nothing: no upstream call, no token lookup, no grant.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use poynt_proxy::callers::api_key;
use poynt_wire::MerchantId;
use serde_json::{Value, json};
use support::{Builder, HEADER, Harness, assert_poynt_error};

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "poynt-proxy";
const REPORTS: &str = "system:serviceaccount:shop:reports";

/// A key tokens are signed with, and its public half as a JWK.
struct Signer {
    kid: String,
    alg: Algorithm,
    key: EncodingKey,
    jwk: Jwk,
}

impl Signer {
    fn new(kid: &str, alg: Algorithm, key: EncodingKey) -> Self {
        let mut jwk = Jwk::from_encoding_key(&key, alg).expect("jwk");
        jwk.common.key_id = Some(kid.to_owned());
        Self {
            kid: kid.to_owned(),
            alg,
            key,
            jwk,
        }
    }

    fn rsa(kid: &str, pem: &str) -> Self {
        Self::new(
            kid,
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(pem.as_bytes()).expect("rsa"),
        )
    }

    fn es256(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("p-256");
        let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("key");
        Self::new(kid, Algorithm::ES256, key)
    }

    /// Ed25519, its JWK written out (`x` is the raw public key).
    fn eddsa(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ed25519");
        let key = EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).expect("key");
        let jwk = serde_json::from_value(json!({
            "kty": "OKP", "crv": "Ed25519", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(pair.public_key_raw()),
        }))
        .expect("jwk");
        Self {
            kid: kid.to_owned(),
            alg: Algorithm::EdDSA,
            key,
            jwk,
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).expect("sign")
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(sub: &str) -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now(), "nbf": now() - 5, "exp": now() + 600})
}

fn with(sub: &str, key: &str, value: Value) -> Value {
    let mut claims = claims(sub);
    claims[key] = value;
    claims
}

fn without(sub: &str, key: &str) -> Value {
    let mut claims = claims(sub);
    claims.as_object_mut().unwrap().remove(key);
    claims
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

fn jwks(signers: &[&Signer]) -> String {
    serde_json::to_string(&JwkSet {
        keys: signers.iter().map(|s| s.jwk.clone()).collect(),
    })
    .unwrap()
}

/// The proxy with callers configured, its key files, and the credentials the tests use.
struct World {
    h: Harness,
    dir: PathBuf,
    rsa: Signer,
    ec: Signer,
    ed: Signer,
    rotated: Signer,
    payments_key: String,
    analytics_key: String,
    payments_line: String,
}

fn policy_yaml(mode: &str, m0: MerchantId, jwt: &str, analytics: bool) -> String {
    let analytics = if analytics {
        format!(
            "    analytics:\n      merchants: [\"{m0}\"]\n      allow: [\"GET /businesses/*/orders*\"]\n"
        )
    } else {
        String::new()
    };
    format!(
        "callers:\n  mode: {mode}\n  authentication:\n    api_keys:\n      file: keys\n    jwt:\n      issuer: \"{ISSUER}\"\n      audience: {AUDIENCE}\n{jwt}  policy:\n    payments:\n      merchants: all\n      allow:\n        - \"GET /businesses/*\"\n        - \"POST /businesses/*/transactions/*/refunds\"\n{analytics}    \"{REPORTS}\":\n      merchants_file: reports-merchants\n      allow: [\"GET /businesses/*/orders*\"]\n"
    )
}

const JWKS_FILE: &str = "      jwks_file: jwks.json\n";

async fn world(mode: &str) -> World {
    world_with(mode, "").await
}

/// The world, with `extra` YAML after the callers section.
async fn world_with(mode: &str, extra: &str) -> World {
    let builder = Builder::default().merchants(2);
    let merchants: Vec<MerchantId> = (0..2).map(|_| support::merchant()).collect();
    let emulator = builder.emulator(&merchants).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let rsa = Signer::rsa(
        "rsa-1",
        &std::fs::read_to_string(support::fixture("app-key-pkcs8.pem")).unwrap(),
    );
    let (rotated_pem, _) = poynt_emulator::generate_app_key().unwrap();
    let rotated = Signer::rsa("rsa-2", &rotated_pem);
    let ec = Signer::es256("ec-1");
    let ed = Signer::eddsa("ed-1");
    std::fs::write(path.join("jwks.json"), jwks(&[&rsa, &ec, &ed, &rotated])).unwrap();
    let (payments_key, payments_line) = api_key::generate("payments").unwrap();
    let (analytics_key, analytics_line) = api_key::generate("analytics").unwrap();
    std::fs::write(
        path.join("keys"),
        format!("{payments_line}\n{analytics_line}\n"),
    )
    .unwrap();
    std::fs::write(
        path.join("reports-merchants"),
        format!("# reports\n{}\n", merchants[1]),
    )
    .unwrap();
    let yaml = support::proxy_yaml(
        &emulator,
        &dir,
        &format!(
            "{}{extra}",
            policy_yaml(mode, merchants[0], JWKS_FILE, true)
        ),
    );
    let h = support::launch_file(emulator, merchants, yaml, dir).await;
    World {
        h,
        dir: path,
        rsa,
        ec,
        ed,
        rotated,
        payments_key,
        analytics_key,
        payments_line,
    }
}

/// A credential a request carries.
#[derive(Clone)]
enum Cred {
    Bearer(String),
    Key(String),
    Raw(&'static str, String),
}

async fn call(
    h: &Harness,
    method: &str,
    merchant: MerchantId,
    path: &str,
    creds: &[Cred],
) -> (u16, Value, reqwest::header::HeaderMap) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = h
        .client
        .request(method, h.url(path))
        .header(HEADER, merchant.to_string());
    for cred in creds {
        request = match cred {
            Cred::Bearer(token) => request.header("authorization", format!("Bearer {token}")),
            Cred::Key(key) => request.header("x-poynt-proxy-key", key),
            Cred::Raw(name, value) => request.header(*name, value),
        };
    }
    let response = request.send().await.expect("proxy answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body, headers)
}

/// Nothing a refusal could have caused: no upstream call, no grant, no token lookup.
async fn assert_nothing_spent(h: &Harness, what: &str) {
    let stats = h.stats();
    assert_eq!(stats.api_calls, 0, "{what}: upstream calls");
    assert_eq!(stats.token_calls_total, 0, "{what}: grants");
    assert_eq!(
        h.metric("poynt_proxy_token_cache_lookups_total").await,
        0.0,
        "{what}: token lookups"
    );
}

/// What is sent (description, method, merchant, path, credentials) and the status and code
/// expected.
type Case = (
    &'static str,
    &'static str,
    MerchantId,
    String,
    Vec<Cred>,
    u16,
    &'static str,
);

#[tokio::test]
async fn every_bad_credential_or_request_is_refused_with_its_code_and_costs_nothing() {
    let w = world("enforce").await;
    let (m0, m1) = (w.h.merchants[0], w.h.merchants[1]);
    let orders = format!("/businesses/{m0}/orders");
    let rsa = &w.rsa;
    let valid = rsa.sign(&claims("analytics"));
    let parts: Vec<&str> = valid.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], b64(&claims("payments")), parts[2]);
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT", "kid": "rsa-1"})),
        b64(&claims("analytics"))
    );
    let public_pem = support::app_public_key();
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some("rsa-1".into());
    let hs256 = jsonwebtoken::encode(
        &hs_header,
        &claims("analytics"),
        &EncodingKey::from_secret(public_pem.as_bytes()),
    )
    .unwrap();
    let unknown_kid = Signer::rsa("nobody", &poynt_emulator::generate_app_key().unwrap().0);
    let impostor = {
        let (pem, _) = poynt_emulator::generate_app_key().unwrap();
        Signer::rsa("rsa-1", &pem)
    };
    let mut rs_as_ec = Header::new(Algorithm::RS256);
    rs_as_ec.kid = Some("ec-1".into());
    let alg_mismatch = jsonwebtoken::encode(&rs_as_ec, &claims("analytics"), &rsa.key).unwrap();
    let no_kid = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims("analytics"),
        &rsa.key,
    )
    .unwrap();
    let bearer = |t: String| vec![Cred::Bearer(t)];
    let (u, f) = ("CALLER_UNAUTHENTICATED", "CALLER_FORBIDDEN");
    let cases: Vec<Case> = vec![
        ("no credential", "GET", m0, orders.clone(), vec![], 401, u),
        (
            "expired",
            "GET",
            m0,
            orders.clone(),
            bearer(rsa.sign(&with("analytics", "exp", json!(now() - 3600)))),
            401,
            u,
        ),
        (
            "not yet valid",
            "GET",
            m0,
            orders.clone(),
            bearer(rsa.sign(&with("analytics", "nbf", json!(now() + 3600)))),
            401,
            u,
        ),
        (
            "wrong aud",
            "GET",
            m0,
            orders.clone(),
            bearer(rsa.sign(&with("analytics", "aud", json!("someone-else")))),
            401,
            u,
        ),
        (
            "wrong iss",
            "GET",
            m0,
            orders.clone(),
            bearer(rsa.sign(&with("analytics", "iss", json!("https://evil.test")))),
            401,
            u,
        ),
        ("alg none", "GET", m0, orders.clone(), bearer(none), 401, u),
        (
            "HS256 with the RSA public key",
            "GET",
            m0,
            orders.clone(),
            bearer(hs256),
            401,
            u,
        ),
        (
            "unknown kid",
            "GET",
            m0,
            orders.clone(),
            bearer(unknown_kid.sign(&claims("analytics"))),
            401,
            u,
        ),
        (
            "tampered payload",
            "GET",
            m0,
            orders.clone(),
            bearer(tampered),
            401,
            u,
        ),
        (
            "signed by another key under a known kid",
            "GET",
            m0,
            orders.clone(),
            bearer(impostor.sign(&claims("analytics"))),
            401,
            u,
        ),
        (
            "RS256 header on the EC key",
            "GET",
            m0,
            orders.clone(),
            bearer(alg_mismatch),
            401,
            u,
        ),
        ("no kid", "GET", m0, orders.clone(), bearer(no_kid), 401, u),
        (
            "no exp",
            "GET",
            m0,
            orders.clone(),
            bearer(rsa.sign(&without("analytics", "exp"))),
            401,
            u,
        ),
        (
            "no sub",
            "GET",
            m0,
            orders.clone(),
            bearer(rsa.sign(&without("analytics", "sub"))),
            401,
            u,
        ),
        (
            "sub not a caller name",
            "GET",
            m0,
            orders.clone(),
            bearer(rsa.sign(&claims("a b"))),
            401,
            u,
        ),
        (
            "not a JWT",
            "GET",
            m0,
            orders.clone(),
            bearer("abc.def".into()),
            401,
            u,
        ),
        (
            "Basic scheme",
            "GET",
            m0,
            orders.clone(),
            vec![Cred::Raw("authorization", "Basic YTpi".into())],
            401,
            u,
        ),
        (
            "empty bearer",
            "GET",
            m0,
            orders.clone(),
            vec![Cred::Raw("authorization", "Bearer ".into())],
            401,
            u,
        ),
        (
            "two bearer tokens",
            "GET",
            m0,
            orders.clone(),
            vec![Cred::Bearer(valid.clone()), Cred::Bearer(valid.clone())],
            401,
            u,
        ),
        (
            "unknown API key",
            "GET",
            m0,
            orders.clone(),
            vec![Cred::Key("ppk_guessed".into())],
            401,
            u,
        ),
        (
            "two API keys",
            "GET",
            m0,
            orders.clone(),
            vec![
                Cred::Key(w.analytics_key.clone()),
                Cred::Key(w.analytics_key.clone()),
            ],
            401,
            u,
        ),
        (
            "credentials that disagree",
            "GET",
            m0,
            orders.clone(),
            vec![
                Cred::Bearer(valid.clone()),
                Cred::Key(w.payments_key.clone()),
            ],
            401,
            u,
        ),
        (
            "a caller with no policy",
            "GET",
            m0,
            orders.clone(),
            bearer(rsa.sign(&claims("stranger"))),
            403,
            f,
        ),
        (
            "a path outside its rules",
            "GET",
            m0,
            format!("/businesses/{m0}/transactions"),
            vec![Cred::Key(w.analytics_key.clone())],
            403,
            f,
        ),
        (
            "a method outside its rules",
            "POST",
            m0,
            orders.clone(),
            vec![Cred::Key(w.analytics_key.clone())],
            403,
            f,
        ),
        (
            "a merchant outside its list",
            "GET",
            m1,
            format!("/businesses/{m1}/orders"),
            vec![Cred::Key(w.analytics_key.clone())],
            403,
            f,
        ),
        (
            "a merchant outside its file",
            "GET",
            m0,
            orders.clone(),
            bearer(w.ed.sign(&claims(REPORTS))),
            403,
            f,
        ),
        (
            "payments may not refund under another path",
            "POST",
            m0,
            format!("/businesses/{m0}/orders/1/refunds"),
            vec![Cred::Key(w.payments_key.clone())],
            403,
            f,
        ),
        (
            "a path the guard refuses: path parameter",
            "GET",
            m0,
            format!("/businesses/{m0}/orders;v=1"),
            vec![Cred::Key(w.analytics_key.clone())],
            400,
            "INVALID_PATH",
        ),
        (
            "a path the guard refuses: encoded slash",
            "GET",
            m0,
            format!("/businesses/{m0}%2Forders"),
            vec![Cred::Key(w.analytics_key.clone())],
            400,
            "INVALID_PATH",
        ),
        (
            "a path the guard refuses: encoded backslash",
            "GET",
            m0,
            format!("/businesses/{m0}%5Corders"),
            vec![Cred::Key(w.analytics_key.clone())],
            400,
            "INVALID_PATH",
        ),
        (
            "a path naming another merchant",
            "GET",
            m0,
            format!("/businesses/{m1}/orders"),
            vec![Cred::Key(w.payments_key.clone())],
            403,
            "MERCHANT_PATH_MISMATCH",
        ),
    ];
    assert!(cases.len() >= 25);
    for (what, method, merchant, path, creds, status, code) in &cases {
        let (got, body, headers) = call(&w.h, method, *merchant, path, creds).await;
        assert_eq!(got, *status, "{what}: {body}");
        assert_poynt_error(&body, code, *status);
        if *status == 401 {
            assert_eq!(headers["www-authenticate"], "Bearer", "{what}");
        }
        let message = body["message"].as_str().unwrap();
        assert!(
            !message.contains(&w.payments_key) && !message.contains(&valid),
            "{what}: {message}"
        );
    }
    assert_nothing_spent(&w.h, "after every refusal").await;
    assert_eq!(
        w.h.metric("poynt_proxy_caller_refusals_total{kind=\"unauthenticated\",mode=\"enforce\"}")
            .await,
        22.0
    );
}

#[tokio::test]
async fn each_method_and_each_algorithm_lets_its_caller_through_and_names_it() {
    let w = world("enforce").await;
    let (m0, m1) = (w.h.merchants[0], w.h.merchants[1]);
    let orders = format!("/businesses/{m0}/orders");
    let ok = [
        (
            "API key",
            m0,
            orders.clone(),
            vec![Cred::Key(w.analytics_key.clone())],
        ),
        (
            "RS256",
            m0,
            orders.clone(),
            vec![Cred::Bearer(w.rsa.sign(&claims("analytics")))],
        ),
        (
            "ES256",
            m0,
            orders.clone(),
            vec![Cred::Bearer(w.ec.sign(&claims("analytics")))],
        ),
        (
            "EdDSA from the merchants file",
            m1,
            format!("/businesses/{m1}/orders/7"),
            vec![Cred::Bearer(w.ed.sign(&claims(REPORTS)))],
        ),
        (
            "agreeing credentials",
            m0,
            orders.clone(),
            vec![
                Cred::Bearer(w.rsa.sign(&claims("payments"))),
                Cred::Key(w.payments_key.clone()),
            ],
        ),
        (
            "an unreserved character encoded",
            m0,
            format!("/businesses/{m0}/%6Frders"),
            vec![Cred::Key(w.analytics_key.clone())],
        ),
    ];
    for (what, merchant, path, creds) in &ok {
        let (status, body, _) = call(&w.h, "GET", *merchant, path, creds).await;
        assert_eq!(status, 200, "{what}: {body}");
        // The emulator echoes what reached it: neither credential did.
        let forwarded = &body["headers"];
        assert!(
            forwarded.get("x-poynt-proxy-key").is_none(),
            "{what}: {body}"
        );
        assert_eq!(
            forwarded["authorization"], "Bearer [redacted]",
            "{what}: {body}"
        );
    }
    let tokens = w.h.admin_json(&format!("/admin/tokens/{m0}")).await;
    let names: Vec<&str> = tokens["callers"]
        .as_array()
        .expect("callers listed")
        .iter()
        .map(|seen| seen["caller"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"analytics") && names.contains(&"payments"),
        "{tokens}"
    );
    assert!(!names.contains(&REPORTS), "{tokens}");
    // A verified token is remembered: the same token again still passes.
    let token = w.rsa.sign(&claims("analytics"));
    for _ in 0..2 {
        let (status, _, _) = call(&w.h, "GET", m0, &orders, &[Cred::Bearer(token.clone())]).await;
        assert_eq!(status, 200);
    }
    assert!(w.h.metric("poynt_proxy_requests_total{caller=\"analytics\",code=\"200\",method=\"GET\",source=\"upstream\"}").await >= 5.0);
    assert_eq!(w.h.metric(&format!("poynt_proxy_requests_total{{caller=\"{REPORTS}\",code=\"200\",method=\"GET\",source=\"upstream\"}}")).await, 1.0);
}

#[tokio::test]
async fn observe_mode_serves_what_enforce_would_refuse_and_counts_it() {
    let w = world("observe").await;
    let m0 = w.h.merchants[0];
    let (status, _, _) = call(&w.h, "GET", m0, &format!("/businesses/{m0}/orders"), &[]).await;
    assert_eq!(status, 200);
    let (status, _, _) = call(
        &w.h,
        "GET",
        m0,
        &format!("/businesses/{m0}/transactions"),
        &[Cred::Key(w.analytics_key.clone())],
    )
    .await;
    assert_eq!(status, 200);
    let refusals = |kind: &'static str| {
        let h = &w.h;
        async move {
            h.metric(&format!(
                "poynt_proxy_caller_refusals_total{{kind=\"{kind}\",mode=\"observe\"}}"
            ))
            .await
        }
    };
    assert_eq!(refusals("unauthenticated").await, 1.0);
    assert_eq!(refusals("forbidden").await, 1.0);
    assert_eq!(w.h.stats().api_calls, 2);
}

#[tokio::test]
async fn a_caller_over_its_own_rate_is_refused_while_another_caller_is_served_for_the_same_merchant()
 {
    let w = world_with(
        "enforce",
        "limits:\n  callers:\n    analytics: {per_second: 0.01, burst: 3}\n",
    )
    .await;
    let m0 = w.h.merchants[0];
    let orders = format!("/businesses/{m0}/orders");
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let (status, body, headers) = call(
            &w.h,
            "GET",
            m0,
            &orders,
            &[Cred::Key(w.analytics_key.clone())],
        )
        .await;
        statuses.push(status);
        if status == 429 {
            assert_eq!(body["code"], "RATE_LIMITED", "{body}");
            assert!(
                body["message"]
                    .as_str()
                    .unwrap()
                    .contains("caller analytics"),
                "{body}"
            );
            assert_eq!(headers["ratelimit-limit"], "3");
            let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=100).contains(&wait), "{wait}");
        }
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
    for _ in 0..6 {
        let (status, body, _) = call(
            &w.h,
            "GET",
            m0,
            &orders,
            &[Cred::Key(w.payments_key.clone())],
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(
        w.h.stats().api_calls,
        9,
        "the refused ones never reached Poynt"
    );
}

#[test]
fn a_rate_for_a_caller_the_policy_does_not_name_is_refused() {
    let yaml = format!(
        "poynt:\n  application_id: \"urn:aid:x\"\n  private_key_file: {:?}\nlimits:\n  callers:\n    analytcs: {{per_second: 1, burst: 1}}\n",
        support::fixture("app-key-pkcs1.pem").display().to_string()
    );
    let error = poynt_proxy::config::Config::parse(&yaml, &Default::default())
        .map(drop)
        .expect_err("refused")
        .to_string();
    assert!(
        error.contains("limits.callers")
            && error
                .contains("expected the names of callers in callers.policy; found \"analytcs\""),
        "{error}"
    );
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[tokio::test]
async fn a_reload_removes_a_caller_its_key_and_a_signing_key_on_the_next_request() {
    let w = world("enforce").await;
    let m0 = w.h.merchants[0];
    let orders = format!("/businesses/{m0}/orders");
    let key = vec![Cred::Key(w.analytics_key.clone())];
    let rotated = vec![Cred::Bearer(w.rotated.sign(&claims("payments")))];
    let jwt_analytics = vec![Cred::Bearer(w.rsa.sign(&claims("analytics")))];
    for creds in [&key, &rotated, &jwt_analytics] {
        assert_eq!(call(&w.h, "GET", m0, &orders, creds).await.0, 200);
    }
    // The key file loses analytics, the key set loses rsa-2, the policy loses analytics.
    write(&w.dir, "keys", &format!("{}\n", w.payments_line));
    write(&w.dir, "jwks.json", &jwks(&[&w.rsa, &w.ec, &w.ed]));
    let yaml = w.h.config_yaml.replace(
        &policy_yaml("enforce", m0, JWKS_FILE, true),
        &policy_yaml("enforce", m0, JWKS_FILE, false),
    );
    assert_ne!(yaml, w.h.config_yaml);
    write(&w.dir, "proxy.yaml", &yaml);
    let applied =
        w.h.proxy
            .reload()
            .await
            .expect("from a file")
            .expect("applied");
    assert!(
        applied.changed.contains(&"callers"),
        "{:?}",
        applied.changed
    );
    let before = w.h.stats().api_calls;
    let (status, body, _) = call(&w.h, "GET", m0, &orders, &key).await;
    assert_eq!(status, 401, "{body}");
    let (status, body, _) = call(&w.h, "GET", m0, &orders, &rotated).await;
    assert_eq!(status, 401, "{body}");
    assert!(body["message"].as_str().unwrap().contains("kid"), "{body}");
    let (status, body, _) = call(&w.h, "GET", m0, &orders, &jwt_analytics).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(w.h.stats().api_calls, before);
    assert_eq!(
        call(
            &w.h,
            "GET",
            m0,
            &orders,
            &[Cred::Key(w.payments_key.clone())]
        )
        .await
        .0,
        200
    );
}

/// A JWKS served over HTTPS by a self-signed CA the proxy trusts through `ca_file`,
/// counting the fetches.
async fn serve_jwks(body: String) -> (String, String, Arc<AtomicUsize>) {
    use http_body_util::Full;
    use hyper::service::service_fn;
    let ca = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_pem = ca.cert.pem();
    let cert = ca.cert.der().clone();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(ca.signing_key.serialize_der().into());
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .unwrap();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = fetches.clone();
    tokio::spawn(async move {
        // Bounded: the tests fetch a handful of times.
        for _ in 0..100 {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let Ok(stream) = acceptor.accept(tcp).await else {
                continue;
            };
            let (body, counter) = (body.clone(), counter.clone());
            tokio::spawn(async move {
                let service = service_fn(move |_request| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let body = body.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            bytes::Bytes::from(body),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (
        format!("https://localhost:{port}/jwks.json"),
        cert_pem,
        fetches,
    )
}

#[tokio::test]
async fn a_jwks_over_https_is_fetched_once_and_an_unknown_kid_refetches_at_most_once_a_minute() {
    let rsa = Signer::rsa(
        "rsa-1",
        &std::fs::read_to_string(support::fixture("app-key-pkcs8.pem")).unwrap(),
    );
    let (url, ca_pem, fetches) = serve_jwks(jwks(&[&rsa])).await;
    let merchants = vec![support::merchant()];
    let builder = Builder::default();
    let emulator = builder.emulator(&merchants).await;
    let dir = tempfile::tempdir().unwrap();
    let m0 = merchants[0];
    write(dir.path(), "jwks-ca.pem", &ca_pem);
    let (_, line) = api_key::generate("payments").unwrap();
    write(dir.path(), "keys", &line);
    write(dir.path(), "reports-merchants", &m0.to_string());
    let jwt = format!("      jwks_url: \"{url}\"\n      ca_file: jwks-ca.pem\n");
    let yaml = support::proxy_yaml(&emulator, &dir, &policy_yaml("enforce", m0, &jwt, true));
    let h = support::launch_file(emulator, merchants, yaml, dir).await;
    let orders = format!("/businesses/{m0}/orders");
    for _ in 0..3 {
        let token = rsa.sign(&claims("analytics"));
        let (status, body, _) = call(&h, "GET", m0, &orders, &[Cred::Bearer(token)]).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    let stranger = Signer::rsa(
        "rotated-away",
        &poynt_emulator::generate_app_key().unwrap().0,
    );
    for _ in 0..3 {
        let token = stranger.sign(&claims("analytics"));
        let (status, body, _) = call(&h, "GET", m0, &orders, &[Cred::Bearer(token)]).await;
        assert_eq!(status, 401, "{body}");
    }
    // The first fetch was just now: an unknown kid within the minute fetches nothing more.
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
}

#[test]
fn the_example_callers_section_is_valid_once_uncommented() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.yaml"))
            .unwrap()
            .replace(
                "app-key.pem",
                &support::fixture("app-key-pkcs1.pem").display().to_string(),
            );
    let start = text.find("\n# callers:").expect("callers example");
    let end = start + text[start..].find("\n\n").expect("its end");
    let section = text[start..end]
        .replace("\n# callers:", "\ncallers:")
        .replace("\n#   ", "\n  ");
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "callers.keys",
        &api_key::generate("analytics").unwrap().1,
    );
    write(dir.path(), "jwks.json", &jwks(&[&Signer::es256("k")]));
    write(
        dir.path(),
        "analytics-merchants.txt",
        &support::merchant().to_string(),
    );
    let sources = poynt_proxy::config::KeySources {
        base_dir: Some(dir.path().to_owned()),
        ..Default::default()
    };
    let config = poynt_proxy::config::Config::parse(
        &format!("{}{section}{}", &text[..start], &text[end..]),
        &sources,
    )
    .expect("the callers example is valid");
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
    let callers = config.callers.expect("callers on");
    assert_eq!(callers.mode, poynt_proxy::config::Mode::Enforce);
    assert!(callers.policy.get("analytics").is_some());
}

#[test]
fn the_readmes_shortest_secure_set_up_is_valid_and_allows_what_it_says() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let setup = &readme[readme
        .find("### The shortest secure set-up")
        .expect("the README's set-up")..];
    let start = setup.find("```yaml\n").expect("its YAML") + "```yaml\n".len();
    let section = &setup[start..start + setup[start..].find("```").expect("its end")];
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "callers.keys",
        &api_key::generate("payments").unwrap().1,
    );
    let yaml = format!(
        "poynt:\n  application_id: \"urn:aid:x\"\n  private_key_file: {:?}\n{section}",
        support::fixture("app-key-pkcs1.pem").display().to_string()
    );
    let sources = poynt_proxy::config::KeySources {
        base_dir: Some(dir.path().to_owned()),
        ..Default::default()
    };
    let config =
        poynt_proxy::config::Config::parse(&yaml, &sources).expect("the README's set-up is valid");
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
    let callers = config.callers.expect("callers on");
    assert_eq!(callers.mode, poynt_proxy::config::Mode::Enforce);
    let (_, payments) = callers.policy.get("payments").expect("payments' rights");
    let merchant = support::merchant();
    let refunds = format!("/businesses/{merchant}/transactions/t1/refunds");
    assert!(payments.rule_for(&http::Method::POST, &refunds).is_some());
    let orders = format!("/businesses/{merchant}/orders");
    assert!(payments.rule_for(&http::Method::POST, &orders).is_none());
}

#[test]
fn add_key_prints_a_key_once_and_check_warns_while_callers_is_absent() {
    use poynt_proxy::callers::api_key::ApiKeys;
    use std::ffi::OsStr;
    use std::process::{Command, Output};
    use support::process::BIN;
    /// Runs the binary; `ok` says whether it must succeed.
    fn run(args: &[&OsStr], ok: bool) -> Output {
        let out = Command::new(BIN).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.success(), ok, "{stderr}");
        out
    }
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("callers.keys");
    let add = ["callers", "add-key"].map(OsStr::new);
    let file = [OsStr::new("--file"), keys.as_os_str()];
    let out = run(&[&add[..], &[OsStr::new("payments")], &file].concat(), true);
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(key.starts_with("ppk_"), "{key}");
    let file = std::fs::read_to_string(&keys).unwrap();
    assert!(
        !file.contains(&key),
        "the file holds the key itself: {file}"
    );
    let parsed = ApiKeys::parse(&file).unwrap();
    assert_eq!(parsed.identify(key.as_bytes()).as_deref(), Some("payments"));

    let out = run(&[&add[..], &[OsStr::new("two words")]].concat(), false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("expected a caller name"), "{stderr}");

    let config = dir.path().join("proxy.yaml");
    // Reachable from the network: a loopback listener (the default) is not warned about.
    let yaml = format!(
        "listen: \"0.0.0.0:8080\"\npoynt:\n  application_id: \"urn:aid:x\"\n  private_key_file: {:?}\n",
        support::fixture("app-key-pkcs1.pem").display().to_string()
    );
    write(dir.path(), "proxy.yaml", &yaml);
    let out = run(
        &[
            OsStr::new("check"),
            OsStr::new("--config"),
            config.as_os_str(),
        ],
        true,
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("any network peer that reaches listen may act as any merchant"),
        "{said}"
    );
}

#[tokio::test]
async fn onboarded_merchants_are_served_once_their_grant_is_stored_and_no_sooner() {
    let dir = tempfile::tempdir().unwrap();
    let (key, line) = api_key::generate("payments").unwrap();
    write(dir.path(), "keys", &line);
    let yaml = format!(
        "callers:\n  authentication:\n    api_keys:\n      file: {:?}\n  policy:\n    payments:\n      merchants: onboarded\n      allow: [\"GET /businesses/*\"]\n",
        dir.path().join("keys").display().to_string()
    );
    let h = Builder::default()
        .onboarding(&format!(
            "  code_key: \"{{EMULATOR_KEY_FILE}}\"\n  state_key_file: {:?}\n",
            support::fixture("state-key.b64").display().to_string()
        ))
        .yaml(&yaml)
        .start()
        .await;
    let m0 = h.merchants[0];
    let orders = format!("/businesses/{m0}/orders");
    let creds = [Cred::Key(key)];
    let (status, body, _) = call(&h, "GET", m0, &orders, &creds).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("onboarding grant"),
        "{body}"
    );
    assert_eq!(h.stats().token_calls_total, 0);

    // The merchant authorizes the app through /connect and Poynt's page.
    let no_redirects = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let connect = no_redirects
        .get(h.onboarding_url("/connect"))
        .send()
        .await
        .unwrap();
    let authorize = connect.headers()["location"].to_str().unwrap().to_owned();
    let callback = support::redirect_from(&h.emulator, &authorize).await;
    let query = callback.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let done = no_redirects
        .get(h.onboarding_url(&format!("/oauth/callback?{query}")))
        .send()
        .await
        .unwrap();
    assert!(
        done.status().is_success() || done.status().is_redirection(),
        "{}",
        done.status()
    );
    let (status, body, _) = call(&h, "GET", m0, &orders, &creds).await;
    assert_eq!(status, 200, "{body}");
}
