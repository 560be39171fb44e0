//! Merchant onboarding end to end: a real browser through the emulator's authorize page over
//! TLS, every refusal of the callback (each with nothing stored and no /token call), the
//! pages' security headers, and `return_to`.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use poynt_emulator::AuthorizeMode;
use poynt_proxy::onboarding::pages::SECURITY_HEADERS;
use poynt_proxy::onboarding::state::StateKey;
use poynt_wire::MerchantId;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use support::{APP_ID, Builder, Harness, fixture};

/// The state key every onboarding harness here shares with the tests.
fn state_key_line() -> String {
    format!(
        "  state_key_file: {:?}\n",
        fixture("state-key.b64").display().to_string()
    )
}

/// A TLS emulator and a proxy onboarding through it, the code key taken from TLS.
async fn tls_harness() -> Harness {
    Builder::default()
        .tls()
        .onboarding(&format!("  code_key: tls\n{}", state_key_line()))
        .start()
        .await
}

/// A proxy whose code key is the fixture app key's public half, so tests sign codes.
async fn crafted_harness() -> Harness {
    Builder::default()
        .onboarding(&format!(
            "  code_key: {:?}\n{}",
            fixture("app-key-public.pem").display().to_string(),
            state_key_line()
        ))
        .start()
        .await
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `GET /connect{suffix}`: the authorize URL it redirects to.
async fn connect(h: &Harness, suffix: &str) -> String {
    let response = no_redirects()
        .get(h.onboarding_url(&format!("/connect{suffix}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    response.headers()["location"].to_str().unwrap().to_owned()
}

/// A fresh state from `/connect`.
async fn fresh_state(h: &Harness) -> String {
    support::query_param(&connect(h, "").await, "context").expect("context")
}

/// What Poynt's redirect hands the callback after `/connect`, through the emulator's page.
async fn callback_params(h: &Harness) -> Vec<(String, String)> {
    let authorize = connect(h, "").await;
    support::query_pairs(&support::redirect_from(&h.emulator, &authorize).await)
}

fn with(params: &[(String, String)], name: &str, value: Option<&str>) -> Vec<(String, String)> {
    let mut out: Vec<_> = params.iter().filter(|(k, _)| k != name).cloned().collect();
    if let Some(value) = value {
        out.push((name.to_owned(), value.to_owned()));
    }
    out
}

async fn call_back(h: &Harness, params: &[(String, String)]) -> reqwest::Response {
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    no_redirects()
        .get(h.onboarding_url(&format!("/oauth/callback?{query}")))
        .send()
        .await
        .unwrap()
}

async fn admin_merchants(h: &Harness, query: &str) -> Value {
    h.client
        .get(h.admin_url(&format!("/admin/merchants{query}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn outcome_count(h: &Harness, outcome: &str) -> u64 {
    h.metric(&format!(
        "poynt_proxy_onboarding_total{{outcome=\"{outcome}\"}} "
    ))
    .await as u64
}

fn assert_security_headers(response: &reqwest::Response) {
    for (name, value) in SECURITY_HEADERS {
        assert_eq!(
            response
                .headers()
                .get(name.as_str())
                .map(|v| v.to_str().unwrap()),
            Some(value),
            "{name} on {}",
            response.url()
        );
    }
}

/// The refused page (400), nothing stored, no /token call, counted under `outcome`.
async fn assert_refused(h: &Harness, response: reqwest::Response, outcome: &str) {
    assert_eq!(response.status(), 400);
    assert_security_headers(&response);
    let page = response.text().await.unwrap();
    assert!(page.contains("<h1>Not connected</h1>"), "{page}");
    assert!(page.contains(r#"href="/connect""#), "{page}");
    assert_eq!(admin_merchants(h, "").await["merchants"], json!([]));
    assert_eq!(h.stats().token_calls_total, 0, "{:?}", h.stats());
    assert_eq!(outcome_count(h, outcome).await, 1);
}

// --- A real browser ------------------------------------------------------------------------

async fn onboard_in_a_browser(code_key: &str) {
    let h = Builder::default()
        .tls()
        .onboarding(&format!("  code_key: {code_key}\n"))
        .start()
        .await;
    let m = h.merchants[0];
    let pin = h.emulator.tls_spki_pin().expect("TLS");
    let page = support::browser::dump_dom(&h.onboarding_url("/connect"), pin).await;
    assert!(
        page.contains(&format!(r#"<code id="business-id">{m}</code>"#)),
        "{page}"
    );
    assert!(page.contains("Sign out of Poynt"), "{page}");
    let listed = admin_merchants(&h, "").await;
    assert_eq!(
        listed["merchants"][0]["business_id"],
        m.to_string(),
        "{listed}"
    );
    assert_eq!(
        listed["merchants"][0]["has_refresh_token"], true,
        "{listed}"
    );
    assert_eq!(
        listed["merchants"][0]["grant"], "authorization_code",
        "{listed}"
    );
    assert_eq!(h.get(m, "/orders").await.status(), 200);
    let stats = h.stats();
    assert_eq!(stats.token_calls.jwt_bearer.total, 0, "{stats:?}");
    assert_eq!(stats.token_calls.authorization_code.total, 1, "{stats:?}");
    assert_eq!(outcome_count(&h, "success").await, 1);
    h.stop().await;
}

#[tokio::test]
async fn a_browser_onboards_a_merchant_with_the_code_key_taken_from_tls() {
    onboard_in_a_browser("tls").await;
}

#[tokio::test]
async fn a_browser_onboards_a_merchant_with_the_code_key_as_a_pem_public_key() {
    onboard_in_a_browser("{EMULATOR_KEY_FILE}").await;
}

#[tokio::test]
async fn a_browser_onboards_a_merchant_with_the_code_key_as_a_certificate() {
    onboard_in_a_browser("{EMULATOR_CERT_FILE}").await;
}

/// Where this test binary's screenshots go: under the target directory, to be looked at.
fn screenshot_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("onboarding-screenshots")
        .join(format!("{name}.png"))
}

/// The success page's greeting as a browser renders it: the business (by name when the
/// page may show one) and its ID.
fn greeting(name: Option<&str>, m: MerchantId) -> String {
    match name {
        Some(name) => format!(
            r#"<p>Your Poynt business <strong id="business-name">{name}</strong> (<code id="business-id">{m}</code>) is connected to <strong id="app-name">Acme Payments</strong>.</p>"#
        ),
        None => format!(
            r#"<p>Your Poynt business <code id="business-id">{m}</code> is connected to <strong id="app-name">Acme Payments</strong>.</p>"#
        ),
    }
}

/// A TLS harness whose success pages name the app "Acme Payments".
async fn named_app_harness() -> Harness {
    Builder::default()
        .tls()
        .onboarding("  code_key: tls\n  app_name: \"Acme Payments\"\n")
        .start()
        .await
}

#[tokio::test]
async fn the_success_page_is_a_clean_url_that_names_the_business_again_on_reload() {
    let h = named_app_harness().await;
    let m = h.merchants[0];
    h.emulator
        .set_business_name(m, Some("Bob's <Corner> Café".to_owned()));
    let params = callback_params(&h).await;
    let done = call_back(&h, &params).await;
    assert_eq!(done.status(), 303);
    let location = done.headers()["location"].to_str().unwrap().to_owned();
    let clean = h.onboarding_url(&format!("/connect/connected?businessId={m}"));
    let rest = location
        .strip_prefix(&format!(
            "{clean}&name=Bob%27s+%3CCorner%3E+Caf%C3%A9&seal="
        ))
        .unwrap_or_else(|| panic!("{location}"));
    assert!(!rest.contains(['&', '#']), "{location}");
    // A reload, a restored tab: the same URL, as often as it is asked.
    let named = greeting(Some("Bob's &lt;Corner&gt; Café"), m);
    for _ in 0..2 {
        let page = no_redirects().get(&location).send().await.unwrap();
        assert_eq!(page.status(), 200);
        let page = page.text().await.unwrap();
        assert!(page.contains(&named.replace('\'', "&#39;")), "{page}");
    }
    // The callback URL itself, replayed, is refused and stores nothing new.
    assert_eq!(call_back(&h, &params).await.status(), 400);
    let pin = h.emulator.tls_spki_pin().expect("TLS");
    let rendered = support::browser::dump_dom(&location, pin).await;
    assert!(rendered.contains(&named), "{rendered}");
    support::browser::screenshot(&location, pin, &screenshot_path("success-after-reload")).await;
    // The name is shown only under the seal the callback made for it: another name, or the
    // address without it, shows the ID alone.
    let forged = location.replace("name=Bob%27s", "name=Evil");
    for url in [forged.as_str(), clean.as_str()] {
        let page = no_redirects().get(url).send().await.unwrap();
        assert_eq!(page.status(), 200);
        let page = page.text().await.unwrap();
        assert!(page.contains(&greeting(None, m)), "{url}: {page}");
        assert!(!page.contains("business-name"), "{url}: {page}");
    }
    // A business that did not connect has no success page.
    let stranger = h.onboarding_url(&format!(
        "/connect/connected?businessId={}",
        support::merchant()
    ));
    assert_eq!(
        no_redirects().get(&stranger).send().await.unwrap().status(),
        404
    );
    h.stop().await;
}

#[tokio::test]
async fn the_success_page_shows_the_business_id_when_poynt_gives_no_name() {
    let h = named_app_harness().await;
    let m = h.merchants[0];
    h.emulator.set_business_name(m, None);
    let done = call_back(&h, &callback_params(&h).await).await;
    assert_eq!(done.status(), 303);
    let location = done.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(
        location,
        h.onboarding_url(&format!("/connect/connected?businessId={m}"))
    );
    let pin = h.emulator.tls_spki_pin().expect("TLS");
    let rendered = support::browser::dump_dom(&location, pin).await;
    assert!(rendered.contains(&greeting(None, m)), "{rendered}");
    support::browser::screenshot(&location, pin, &screenshot_path("success-unnamed")).await;
    h.stop().await;
}

/// The URL of failure page `name`, made afresh for every load (a callback spends its
/// state); `spent` are the parameters of a callback that already succeeded.
async fn failure_url(h: &Harness, spent: &[(String, String)], name: &str) -> String {
    let fresh = callback_params(h).await;
    let callback = |params: &[(String, String)]| {
        h.onboarding_url(&format!(
            "/oauth/callback?{}",
            form_urlencoded::Serializer::new(String::new())
                .extend_pairs(params)
                .finish()
        ))
    };
    match name {
        "replayed" => callback(spent),
        "bad-state" => callback(&with(&fresh, "context", None)),
        "denied" => callback(&with(&fresh, "status", Some("DENIED"))),
        "bad-code" => callback(&with(&fresh, "code", Some("not.a.code"))),
        "bad-return-to" => h.onboarding_url("/connect?return_to=https%3A%2F%2Fevil.example%2F"),
        _ => h.onboarding_url(&format!(
            "/connect/connected?businessId={}",
            support::merchant()
        )),
    }
}

#[tokio::test]
async fn every_failure_page_names_the_app_and_carries_a_reference() {
    let h = named_app_harness().await;
    let pin = h.emulator.tls_spki_pin().expect("TLS").to_owned();
    let params = callback_params(&h).await;
    assert_eq!(call_back(&h, &params).await.status(), 303);
    let pages = [
        ("replayed", 400, "already used"),
        ("bad-state", 400, "did not start here"),
        ("denied", 400, "did not authorize"),
        ("bad-code", 400, "could not be verified"),
        ("bad-return-to", 400, "does not send browsers to"),
        ("not-connected", 404, "No business is connected"),
    ];
    let mut references = std::collections::BTreeSet::new();
    for (name, status, reason) in pages {
        let response = no_redirects()
            .get(failure_url(&h, &params, name).await)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{name}");
        let page = response.text().await.unwrap();
        assert!(page.contains("<h1>Not connected</h1>"), "{name}: {page}");
        assert!(page.contains(reason), "{name}: {page}");
        assert!(
            page.contains(r#"<strong id="app-name">Acme Payments</strong>"#),
            "{name}: {page}"
        );
        let reference = page
            .split(r#"<code id="reference">"#)
            .nth(1)
            .and_then(|rest| rest.split('<').next())
            .unwrap_or_else(|| panic!("{name}: no reference in {page}"));
        assert!(
            uuid::Uuid::parse_str(reference).is_ok(),
            "{name}: {reference}"
        );
        assert!(
            references.insert(reference.to_owned()),
            "{name}: {reference} again"
        );
        let rendered =
            support::browser::dump_dom(&failure_url(&h, &params, name).await, &pin).await;
        assert!(rendered.contains(reason), "{name}: {rendered}");
        assert!(
            rendered.contains("quote this reference to support"),
            "{name}: {rendered}"
        );
        let url = failure_url(&h, &params, name).await;
        support::browser::screenshot(&url, &pin, &screenshot_path(name)).await;
    }
    h.stop().await;
}

// --- Refusals from the emulator's knobs ---------------------------------------------------

async fn refused_by_the_emulator(mode: AuthorizeMode, outcome: &str) {
    let h = tls_harness().await;
    h.emulator.set_authorize_mode(mode);
    let params = callback_params(&h).await;
    let response = call_back(&h, &params).await;
    assert_refused(&h, response, outcome).await;
    h.stop().await;
}

#[tokio::test]
async fn a_tampered_code_is_refused_as_a_forged_signature() {
    refused_by_the_emulator(AuthorizeMode::TamperedCode, "bad_code").await;
}

#[tokio::test]
async fn an_unsigned_alg_none_code_is_refused() {
    refused_by_the_emulator(AuthorizeMode::AlgNone, "bad_code").await;
}

#[tokio::test]
async fn an_expired_code_is_refused() {
    refused_by_the_emulator(AuthorizeMode::ExpiredCode, "bad_code").await;
}

#[tokio::test]
async fn a_code_for_another_app_is_refused() {
    refused_by_the_emulator(AuthorizeMode::OtherApp, "bad_code").await;
}

#[tokio::test]
async fn a_denied_authorization_is_refused() {
    refused_by_the_emulator(AuthorizeMode::Deny, "denied").await;
}

#[tokio::test]
async fn an_hs256_code_keyed_with_the_public_key_is_refused() {
    let h = tls_harness().await;
    let params = callback_params(&h).await;
    let m = h.merchants[0];
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &good_claims(m),
        &EncodingKey::from_secret(h.emulator.poynt_net_public_key_pem().as_bytes()),
    )
    .unwrap();
    let response = call_back(&h, &with(&params, "code", Some(&forged))).await;
    assert_refused(&h, response, "bad_code").await;
    h.stop().await;
}

#[tokio::test]
async fn a_business_id_other_than_the_codes_is_refused() {
    let h = tls_harness().await;
    let params = callback_params(&h).await;
    let other = support::merchant().to_string();
    let response = call_back(&h, &with(&params, "businessId", Some(&other))).await;
    assert_refused(&h, response, "bad_code").await;
    h.stop().await;
}

// --- Refusals of codes signed here (the proxy trusts the fixture key) ---------------------

fn good_claims(m: MerchantId) -> Value {
    let now = now();
    json!({"iss": "https://poynt.net", "iat": now, "exp": now + 900, "sub": APP_ID,
           "poynt.biz": m.to_string(), "poynt.uid": 1})
}

fn sign(claims: &Value) -> String {
    let key = std::fs::read(fixture("app-key-pkcs8.pem")).unwrap();
    jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        claims,
        &EncodingKey::from_rsa_pem(&key).unwrap(),
    )
    .unwrap()
}

async fn crafted_callback(h: &Harness, claims: &Value) -> reqwest::Response {
    let state = fresh_state(h).await;
    let params = [
        ("code", sign(claims)),
        ("status", "AUTHORIZED".to_owned()),
        ("context", state),
        (
            "businessId",
            claims["poynt.biz"].as_str().unwrap().to_owned(),
        ),
    ]
    .map(|(k, v)| (k.to_owned(), v));
    call_back(h, &params).await
}

async fn refused_claims(change: &str, value: Value) {
    let h = crafted_harness().await;
    let mut claims = good_claims(support::merchant());
    claims[change] = value;
    let response = crafted_callback(&h, &claims).await;
    assert_refused(&h, response, "bad_code").await;
    h.stop().await;
}

#[tokio::test]
async fn a_code_that_verifies_goes_to_the_exchange_and_a_refused_exchange_stores_nothing() {
    // The control for the crafted refusals below: the same code, unchanged, passes every
    // check, so each refusal is caused by the one claim it changes. The emulator never
    // minted it, so the exchange is refused.
    let h = crafted_harness().await;
    let response = crafted_callback(&h, &good_claims(support::merchant())).await;
    assert_eq!(response.status(), 502);
    assert_security_headers(&response);
    assert_eq!(h.stats().token_calls.authorization_code.total, 1);
    assert_eq!(admin_merchants(&h, "").await["merchants"], json!([]));
    assert_eq!(outcome_count(&h, "exchange_failed").await, 1);
    h.stop().await;
}

#[tokio::test]
async fn a_code_from_another_issuer_is_refused() {
    refused_claims("iss", json!("https://evil.example")).await;
}

#[tokio::test]
async fn a_code_with_another_subject_is_refused() {
    refused_claims("sub", json!("urn:aid:00000000-0000-4000-8000-000000000bad")).await;
}

#[tokio::test]
async fn a_code_past_its_expiry_and_leeway_is_refused() {
    refused_claims("exp", json!(now() - 61)).await;
}

#[tokio::test]
async fn the_seed_sample_code_is_refused_as_a_bad_signature_against_the_seed_key() {
    let h = Builder::default()
        .onboarding(&format!(
            "  code_key: {:?}\n",
            fixture("poynt-merchant-authorization-key-fixed.pem")
                .display()
                .to_string()
        ))
        .start()
        .await;
    let code = std::fs::read_to_string(fixture("poynt-merchant-authorization-code.txt")).unwrap();
    let params = [
        ("code", code.trim().to_owned()),
        ("status", "AUTHORIZED".to_owned()),
        ("context", fresh_state(&h).await),
        (
            "businessId",
            "c9580c24-b61e-4e0d-ad26-1dd1d3943d2c".to_owned(),
        ),
    ]
    .map(|(k, v)| (k.to_owned(), v));
    let response = call_back(&h, &params).await;
    assert_refused(&h, response, "bad_code").await;
    h.stop().await;
}

// --- Refusals of the state ---------------------------------------------------------------

#[tokio::test]
async fn a_callback_without_a_state_is_refused() {
    let h = tls_harness().await;
    let params = callback_params(&h).await;
    let response = call_back(&h, &with(&params, "context", None)).await;
    assert_refused(&h, response, "bad_state").await;
    h.stop().await;
}

#[tokio::test]
async fn a_state_made_with_another_key_is_refused() {
    let h = tls_harness().await;
    let params = callback_params(&h).await;
    let forged = StateKey::random().issue(None, Duration::from_secs(600), SystemTime::now());
    let response = call_back(&h, &with(&params, "context", Some(forged.expose_secret()))).await;
    assert_refused(&h, response, "bad_state").await;
    h.stop().await;
}

#[tokio::test]
async fn an_expired_state_is_refused() {
    let h = tls_harness().await;
    let params = callback_params(&h).await;
    let key = StateKey::from_base64_file(&fixture("state-key.b64")).unwrap();
    let ttl = Duration::from_secs(600);
    let expired = key.issue(None, ttl, SystemTime::now() - 2 * ttl);
    let response = call_back(&h, &with(&params, "context", Some(expired.expose_secret()))).await;
    assert_refused(&h, response, "bad_state").await;
    h.stop().await;
}

#[tokio::test]
async fn a_replayed_state_is_refused() {
    let h = tls_harness().await;
    let params = callback_params(&h).await;
    // The first use (a denial) spends the state; its good code then arrives with it again.
    let denied = call_back(&h, &with(&params, "status", Some("DENIED"))).await;
    assert_eq!(denied.status(), 400);
    let response = call_back(&h, &params).await;
    assert_refused(&h, response, "replayed").await;
    assert_eq!(outcome_count(&h, "denied").await, 1);
    h.stop().await;
}

// --- Pages, headers, return_to ------------------------------------------------------------

#[tokio::test]
async fn every_onboarding_response_carries_the_security_headers() {
    let h = tls_harness().await;
    let client = no_redirects();
    let get = |path: &str| client.get(h.onboarding_url(path)).send();
    let mut responses = vec![
        (get("/connect").await.unwrap(), 302),
        (
            get("/connect?return_to=https%3A%2F%2Fevil.example%2F")
                .await
                .unwrap(),
            400,
        ),
        (get("/oauth/callback").await.unwrap(), 400),
        (get("/connect/signed-out").await.unwrap(), 200),
        (get("/nowhere").await.unwrap(), 404),
        (
            client
                .post(h.onboarding_url("/connect"))
                .send()
                .await
                .unwrap(),
            405,
        ),
    ];
    let params = callback_params(&h).await;
    responses.push((call_back(&h, &params).await, 303));
    let connected = format!("/connect/connected?businessId={}", h.merchants[0]);
    responses.push((get(&connected).await.unwrap(), 200));
    responses.push((get("/connect/connected").await.unwrap(), 404));
    for (response, status) in responses {
        assert_eq!(response.status(), status, "{}", response.url());
        assert_security_headers(&response);
        assert_eq!(
            response.headers()["content-type"],
            "text/html; charset=utf-8"
        );
    }
    h.stop().await;
}

#[tokio::test]
async fn return_to_is_kept_in_the_state_and_honoured_only_on_the_allowed_origins() {
    let h = Builder::default()
        .tls()
        .onboarding("  code_key: tls\n  success_redirect: \"https://app.example.com/welcome\"\n")
        .start()
        .await;
    let m = h.merchants[0];
    let refused = no_redirects()
        .get(h.onboarding_url("/connect?return_to=https%3A%2F%2Fevil.example%2Fphish"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    // Allowed: success_redirect's origin. The browser comes back there with the business.
    let authorize = connect(
        &h,
        "?return_to=https%3A%2F%2Fapp.example.com%2Fafter%3Fx%3D1",
    )
    .await;
    let params = support::query_pairs(&support::redirect_from(&h.emulator, &authorize).await);
    let done = call_back(&h, &params).await;
    assert_eq!(done.status(), 303);
    assert_eq!(
        done.headers()["location"],
        format!("https://app.example.com/after?x=1&businessId={m}").as_str()
    );
    // Without return_to, success_redirect.
    let params = callback_params(&h).await;
    let done = call_back(&h, &params).await;
    assert_eq!(done.status(), 303);
    assert_eq!(
        done.headers()["location"],
        format!("https://app.example.com/welcome?businessId={m}").as_str()
    );
    h.stop().await;
}

#[tokio::test]
async fn admin_lists_onboarded_merchants_in_pages_and_forgets_one() {
    let h = tls_harness().await;
    let merchants: Vec<MerchantId> = (0..3).map(|_| support::merchant()).collect();
    for m in &merchants {
        h.emulator.authorize(*m);
        let authorize = connect(&h, "").await;
        let location =
            support::redirect_from(&h.emulator, &format!("{authorize}&businessId={m}")).await;
        let params = support::query_pairs(&location);
        assert_eq!(call_back(&h, &params).await.status(), 303);
    }
    let mut sorted = merchants.clone();
    sorted.sort();
    let first = admin_merchants(&h, "?limit=2").await;
    let ids = |page: &Value| -> Vec<String> {
        page["merchants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["business_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&first), [sorted[0].to_string(), sorted[1].to_string()]);
    assert_eq!(first["next_after"], sorted[1].to_string());
    let second = admin_merchants(&h, &format!("?limit=2&after={}", sorted[1])).await;
    assert_eq!(ids(&second), [sorted[2].to_string()]);
    assert!(second.get("next_after").is_none());
    let bad = h
        .client
        .get(h.admin_url("/admin/merchants?limit=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    let forgotten: Value = h
        .client
        .delete(h.admin_url(&format!("/admin/merchants/{}", sorted[0])))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(forgotten, json!({"forgotten": true}));
    assert_eq!(
        ids(&admin_merchants(&h, "").await),
        [sorted[1].to_string(), sorted[2].to_string()]
    );
    // Forgotten means a new grant is needed: the next call makes one.
    assert_eq!(h.get(sorted[0], "/orders").await.status(), 200);
    assert_eq!(h.stats().token_calls.jwt_bearer.total, 1);
    h.stop().await;
}

/// The proxy's code key taken from TLS is the key the emulator signs codes with: its TLS
/// leaf's, the one it publishes as poynt.net's (moved here from the emulator's tests: it
/// needs the proxy's `CodeKeys`).
#[tokio::test]
async fn with_tls_codes_are_signed_by_the_leaf_certificates_key() {
    use poynt_proxy::onboarding::code_key::{CodeKey, CodeKeys};
    use rustls_pki_types::pem::PemObject;
    let h = Builder::default().tls().start().await;
    let roots =
        rustls_pki_types::CertificateDer::pem_slice_iter(h.emulator.ca_pem().unwrap().as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
    let authorize: http::Uri = format!("{}/applications/authorize", h.emulator.base_url())
        .parse()
        .unwrap();
    let keys = CodeKeys::tls(
        &authorize,
        poynt_proxy::upstream::tls_config(&roots).unwrap(),
        Duration::from_secs(5),
    );
    let from_tls = keys
        .current()
        .await
        .expect("the key from the TLS handshake");
    let published = CodeKey::from_pem(h.emulator.poynt_net_public_key_pem()).unwrap();
    let certificate = CodeKey::from_pem(h.emulator.tls_certificate_pem().unwrap()).unwrap();
    assert_eq!(from_tls.fingerprint(), published.fingerprint());
    assert_eq!(from_tls.fingerprint(), certificate.fingerprint());
    let pin = h.emulator.tls_spki_pin().unwrap();
    assert_eq!(pin.len(), 44, "base64 of a SHA-256: {pin}");
}
