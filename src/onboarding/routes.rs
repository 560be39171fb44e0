//! The handlers: `/connect` starts onboarding, `/oauth/callback` finishes it. The callback's
//! checks run in a fixed order and the first failure ends it, with nothing stored and no
//! `/token` call: the state (authentic, unexpired, unused), the merchant's answer, the code
//! (algorithm, signature, claims), and only then the exchange.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use secrecy::{ExposeSecret, SecretString};

use super::business::LookupError;
use super::code_key::CodeKey;
use super::state::{StateError, StateKey};
use super::verify::{self, CodeError, CodeRules, VerifiedCode};
use super::{CONNECTED_PATH, Inner, OnboardingError, SIGNED_OUT_PATH, Settings, pages, seal};
use crate::audit::Event;
use crate::metrics::{Metrics, OnboardingOutcome};
use crate::telemetry;
use poynt_wire::MerchantId;

/// The merchant's answer when they authorized the app.
const AUTHORIZED: &str = "AUTHORIZED";
/// The success page's query parameters for the business's name and its seal.
const NAME: &str = "name";
const SEAL: &str = "seal";

/// The first value of query parameter `name`, percent-decoded.
fn param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// `GET /connect[?return_to=...]`: 302 to Poynt's authorize page with a fresh state.
pub(super) fn connect(
    settings: &Settings,
    key: &StateKey,
    query: Option<&str>,
    reference: &str,
) -> Response<Full<Bytes>> {
    let return_to = param(query, "return_to");
    if let Some(url) = &return_to
        && (url.len() > super::state::MAX_RETURN_TO || !settings.allows_return_to(url))
    {
        tracing::info!(target: "poynt_proxy::onboarding", request_id = reference, error = %OnboardingError::ReturnTo(url.chars().take(200).collect()), "connect refused");
        return pages::respond(
            StatusCode::BAD_REQUEST,
            pages::refused(
                &settings.app_name,
                "The page that sent you here asked to return to an address this service does not send browsers to.",
                reference,
            ),
        );
    }
    let state = key.issue(return_to.as_deref(), settings.state_ttl, SystemTime::now());
    pages::redirect(
        StatusCode::FOUND,
        &settings.authorize_url(state.expose_secret()),
    )
}

/// Why a callback did not onboard the merchant: the outcome it counts as, the status and
/// plain-language reason the browser sees, and the detailed reason for the log.
struct Refusal {
    outcome: OnboardingOutcome,
    detail: String,
}

impl Refusal {
    /// The page's reason when the service itself cannot answer.
    const UNAVAILABLE: &'static str =
        "The service cannot complete sign-ins right now. Please try again in a minute.";

    fn new(outcome: OnboardingOutcome, detail: impl std::fmt::Display) -> Self {
        Self {
            outcome,
            detail: detail.to_string(),
        }
    }

    fn status(&self) -> StatusCode {
        match self.outcome {
            OnboardingOutcome::Success => StatusCode::OK,
            OnboardingOutcome::Denied
            | OnboardingOutcome::BadState
            | OnboardingOutcome::Replayed
            | OnboardingOutcome::BadCode => StatusCode::BAD_REQUEST,
            OnboardingOutcome::ExchangeFailed => StatusCode::BAD_GATEWAY,
            OnboardingOutcome::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn page_reason(&self) -> &'static str {
        match self.outcome {
            OnboardingOutcome::Success => "",
            OnboardingOutcome::Denied => "The business did not authorize the app on Poynt.",
            OnboardingOutcome::BadState => {
                "This sign-in did not start here, or took too long. Please start again."
            }
            OnboardingOutcome::Replayed => "This sign-in was already used. Please start again.",
            OnboardingOutcome::BadCode => "Poynt's answer could not be verified.",
            OnboardingOutcome::ExchangeFailed => {
                "Poynt did not grant access for this business. Please try again."
            }
            OnboardingOutcome::Unavailable => Self::UNAVAILABLE,
        }
    }
}

/// What one callback did, for its metric and log line.
pub(super) struct Record {
    outcome: OnboardingOutcome,
    business: Option<MerchantId>,
    claimed_business: Option<MerchantId>,
    detail: Option<String>,
    reference: String,
}

impl Record {
    /// Counts the callback and writes its one log line (never a code, state or token).
    pub(super) fn finish(self, metrics: &Metrics, elapsed: Duration) {
        metrics.onboarding(self.outcome);
        metrics.audit(|| Event::onboarding(self.business, self.outcome.as_str()));
        let outcome = self.outcome.as_str();
        let business_id = self.business.map(tracing::field::display);
        let claimed_business_id = self.claimed_business.map(tracing::field::display);
        let latency_ms = telemetry::ms(elapsed);
        let request_id = self.reference.as_str();
        match &self.detail {
            None => {
                tracing::info!(target: "poynt_proxy::onboarding", request_id, outcome, business_id, latency_ms, "onboarding callback")
            }
            Some(error) => {
                tracing::warn!(target: "poynt_proxy::onboarding", request_id, outcome, business_id, claimed_business_id, latency_ms, %error, "onboarding callback")
            }
        }
    }
}

/// `GET /oauth/callback?code=&status=&context=&businessId=`. `reference` is the request's
/// id, shown on an error page and logged.
pub(super) async fn callback(
    inner: &Inner,
    query: Option<&str>,
    reference: &str,
) -> (Response<Full<Bytes>>, Record) {
    let claimed_business = param(query, "businessId").and_then(|id| MerchantId::parse(&id).ok());
    let mut verified = None;
    let result = finish(inner, query, &mut verified).await;
    let business = verified.as_ref().map(|(merchant, _)| *merchant);
    let app = inner.settings.app_name.as_str();
    let response = match &result {
        Ok(()) => match verified {
            Some((merchant, return_to)) => success(inner, merchant, return_to, reference).await,
            None => pages::respond(StatusCode::INTERNAL_SERVER_ERROR, pages::not_found(app)),
        },
        Err(refusal) => pages::respond(
            refusal.status(),
            pages::refused(app, refusal.page_reason(), reference),
        ),
    };
    let record = Record {
        outcome: result
            .as_ref()
            .map_or_else(|r| r.outcome, |()| OnboardingOutcome::Success),
        business,
        claimed_business,
        detail: result.err().map(|r| r.detail),
        reference: reference.to_owned(),
    };
    (response, record)
}

/// `GET /connect/connected?businessId=`: the success page, for as long as the token store
/// holds the grant that business gave through onboarding — so a reload or a restored tab,
/// on any replica, shows it again.
pub(super) async fn connected(
    inner: &Inner,
    query: Option<&str>,
    reference: &str,
) -> Response<Full<Bytes>> {
    let settings = &inner.settings;
    let app = settings.app_name.as_str();
    let not_connected = || {
        tracing::info!(target: "poynt_proxy::onboarding", request_id = reference, "success page: no business connected under this address");
        pages::respond(
            StatusCode::NOT_FOUND,
            pages::refused(
                app,
                "No business is connected under this address. Please start again.",
                reference,
            ),
        )
    };
    let Some(merchant) = param(query, "businessId").and_then(|id| MerchantId::parse(&id).ok())
    else {
        return not_connected();
    };
    let name = param(query, NAME).filter(|name| {
        param(query, SEAL).is_some_and(|sealed| {
            seal::opens(&inner.state_key, merchant, name, &sealed, SystemTime::now())
        })
    });
    match inner.broker.is_onboarded(merchant).await {
        Ok(true) => pages::respond(
            StatusCode::OK,
            pages::success(
                app,
                merchant,
                name.as_deref(),
                &settings.signout_url,
                &format!("{}{SIGNED_OUT_PATH}", settings.public_url),
            ),
        ),
        Ok(false) => not_connected(),
        Err(error) => {
            tracing::warn!(target: "poynt_proxy::onboarding", request_id = reference, %error, "success page: the token store did not answer");
            pages::respond(
                StatusCode::SERVICE_UNAVAILABLE,
                pages::refused(app, Refusal::UNAVAILABLE, reference),
            )
        }
    }
}

/// The checks in order, then the exchange. On success `verified` holds the merchant and the
/// state's `return_to`; it is also set once the code verified, so a failed exchange is
/// logged with its merchant.
async fn finish(
    inner: &Inner,
    query: Option<&str>,
    verified: &mut Option<(MerchantId, Option<String>)>,
) -> Result<(), Refusal> {
    let now = SystemTime::now();
    let bad_state = |e: StateError| Refusal::new(OnboardingOutcome::BadState, e);
    let context = param(query, "context").ok_or_else(|| bad_state(StateError::Missing))?;
    let state = inner.state_key.open(&context, now).map_err(bad_state)?;
    let fresh = inner
        .spent
        .spend(&state.nonce, state.remaining(now))
        .await
        .map_err(|e| Refusal::new(OnboardingOutcome::Unavailable, e))?;
    if !fresh {
        return Err(Refusal::new(
            OnboardingOutcome::Replayed,
            StateError::Replayed,
        ));
    }
    let status = param(query, "status").unwrap_or_default();
    if status != AUTHORIZED {
        return Err(Refusal::new(
            OnboardingOutcome::Denied,
            format!(
                "expected status {AUTHORIZED}; found {:?}",
                status.chars().take(40).collect::<String>()
            ),
        ));
    }
    let code: SecretString = param(query, "code")
        .ok_or_else(|| Refusal::new(OnboardingOutcome::BadCode, CodeError::Missing))?
        .into();
    let business = param(query, "businessId");
    let code_result = verify_code(inner, code.expose_secret(), business.as_deref(), now).await?;
    let merchant = code_result.merchant;
    let return_to = state
        .return_to
        .filter(|url| inner.settings.allows_return_to(url));
    *verified = Some((merchant, return_to));
    inner
        .broker
        .exchange_code(merchant, code, inner.settings.redirect_uri.clone())
        .await
        .map_err(|e| Refusal::new(OnboardingOutcome::ExchangeFailed, e))
}

/// The algorithm first (no key involved), then the key; a signature failure with a key
/// fetched from TLS fetches it again (at most once a minute) and retries once.
async fn verify_code(
    inner: &Inner,
    code: &str,
    business: Option<&str>,
    now: SystemTime,
) -> Result<VerifiedCode, Refusal> {
    let bad_code = |e: CodeError| Refusal::new(OnboardingOutcome::BadCode, e);
    verify::check_algorithm(code).map_err(bad_code)?;
    let key = inner
        .keys
        .current()
        .await
        .map_err(|e| Refusal::new(OnboardingOutcome::Unavailable, e))?;
    let rules = CodeRules {
        issuer: &inner.settings.code_issuer,
        application_id: &inner.settings.client_id,
        now: now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
    };
    let check = |key: &CodeKey| verify::verify(code, key, &rules, business);
    match check(&key) {
        Err(error @ CodeError::Signature { .. }) => match inner.keys.replacement_for(&key).await {
            Some(newer) => check(&newer).map_err(bad_code),
            None => Err(bad_code(error)),
        },
        result => result.map_err(bad_code),
    }
}

/// The success answer, always a 303 with `businessId` (the code and state stay out of the
/// address bar and history): to `return_to` or `success_redirect`, else to this listener's
/// own success page, with the business's name and its seal when Poynt gave the name.
async fn success(
    inner: &Inner,
    merchant: MerchantId,
    return_to: Option<String>,
    reference: &str,
) -> Response<Full<Bytes>> {
    let settings = &inner.settings;
    let id = merchant.to_string();
    let url = match return_to.or_else(|| settings.success_redirect.clone()) {
        Some(url) => append_query(&url, &[("businessId", &id)]),
        None => {
            let own = format!("{}{CONNECTED_PATH}", settings.public_url);
            match business_name(inner, merchant, reference).await {
                Some(name) => {
                    let sealed = seal::seal(&inner.state_key, merchant, &name, SystemTime::now());
                    append_query(&own, &[("businessId", &id), (NAME, &name), (SEAL, &sealed)])
                }
                None => append_query(&own, &[("businessId", &id)]),
            }
        }
    };
    pages::redirect(StatusCode::SEE_OTHER, &url)
}

/// The business's name from Poynt, with the token the exchange just stored; `None` (logged)
/// on any failure, and the page shows the ID.
async fn business_name(inner: &Inner, merchant: MerchantId, reference: &str) -> Option<String> {
    let looked_up = match inner.broker.token(merchant).await {
        Ok((token, _)) => inner.business.name(merchant, token.header()).await,
        Err(error) => Err(LookupError::Transport(error.to_string())),
    };
    looked_up
        .inspect_err(|error| {
            tracing::info!(target: "poynt_proxy::onboarding", request_id = reference, business_id = %merchant, %error, "no business name for the success page; it shows the ID");
        })
        .ok()
}

/// Adds the `pairs` to `url`'s query, before any fragment.
fn append_query(url: &str, pairs: &[(&str, &str)]) -> String {
    let (base, fragment) = url
        .split_once('#')
        .map_or((url, None), |(b, f)| (b, Some(f)));
    let pair = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    let separator = if base.contains('?') { '&' } else { '?' };
    let mut out = format!("{base}{separator}{pair}");
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn business_id_is_appended_before_the_fragment() {
        assert_eq!(
            append_query("https://a/x", &[("businessId", "b")]),
            "https://a/x?businessId=b"
        );
        assert_eq!(
            append_query(
                "https://a/x?y=1#f",
                &[("businessId", "b"), ("name", "A & B")]
            ),
            "https://a/x?y=1&businessId=b&name=A+%26+B#f"
        );
    }

    #[test]
    fn every_refusal_has_a_reason_and_a_client_or_server_status() {
        for outcome in OnboardingOutcome::ALL {
            let refusal = Refusal::new(outcome, "x");
            if outcome == OnboardingOutcome::Success {
                continue;
            }
            assert!(!refusal.page_reason().is_empty(), "{outcome:?}");
            assert!(refusal.status().as_u16() >= 400, "{outcome:?}");
        }
    }
}
