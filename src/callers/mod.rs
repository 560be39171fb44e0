//! Caller identity and rights (`callers:`): who is asking, proven by an API key or a JWT
//! bearer token, and whether its policy lets it act for this merchant on this path.
//!
//! The proxy calls [`Callers::authenticate`] before anything looks at the merchant, and
//! [`Callers::authorize`] after the path guard and before the token lookup, so a refused
//! caller never causes a token lookup, a grant or an upstream request. Without `callers`
//! both answer yes at the cost of one atomic load. A reload replaces the whole state
//! (keys, key set, policy) at once; requests already past `authenticate` finish under the
//! state they started with.
//!
//! One job per file: `config` (the checked settings), `api_key`, `jwt`, `jwks` and `mtls`
//! (the credentials), `policy` (rights), `recent` (who used which merchant lately, for
//! `/admin/tokens`), `error` (refusals and their messages).

pub mod api_key;
pub mod config;
pub mod error;
pub mod jwks;
pub mod jwt;
pub mod mtls;
pub mod policy;
pub mod recent;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::header::AUTHORIZATION;
use http::{Extensions, HeaderMap, HeaderValue, Method};
use poynt_wire::MerchantId;

use self::api_key::API_KEY_HEADER;
use self::config::{CallersConfig, Mode};
use self::error::{AuthError, Forbidden, JwksError, Refusal};
use self::jwt::JwtVerifier;
use self::policy::{CallerPolicy, Merchants};
use self::recent::{Recent, Seen};
use crate::audit::Event;
use crate::metrics::Metrics;
use crate::tls::peer::PeerNames;
use crate::token::broker::Broker;

/// The `caller` label of requests whose caller is not a configured one (or when `callers`
/// is not configured): labels stay bounded by the configuration.
pub const UNKNOWN: &str = "unknown";

/// How long a merchant seen onboarded is taken as onboarded without asking the store again.
const ONBOARDED_FOR: Duration = Duration::from_secs(60);
/// Onboarded merchants remembered at most.
const MAX_ONBOARDED: u64 = 100_000;

/// The callers service, shared by every worker. Cloning shares it.
#[derive(Clone)]
pub struct Callers {
    inner: Arc<Inner>,
}

struct Inner {
    state: ArcSwapOption<State>,
    /// Who acted for which merchant lately; kept across reloads.
    recent: Recent,
    broker: Broker,
    metrics: Metrics,
}

/// One configuration's worth of everything: replaced whole by a reload.
struct State {
    config: CallersConfig,
    jwt: Option<JwtVerifier>,
    /// Merchants recently read as onboarded, for `merchants: onboarded`.
    onboarded: moka::future::Cache<MerchantId, ()>,
}

/// Who is asking, as far as [`Callers::authenticate`] could tell.
pub struct Identity {
    /// The state it was identified under, so authorization uses the same policy; `None`
    /// when there is nothing to authorize (no `callers`, or an unidentified caller let
    /// through by `observe`).
    state: Option<Arc<State>>,
    /// The proven caller name.
    caller: Option<Arc<str>>,
    /// Its policy entry, when it has one (its name is then a configured one).
    policy: Option<Arc<CallerPolicy>>,
}

impl Identity {
    fn anyone() -> Self {
        Self {
            state: None,
            caller: None,
            policy: None,
        }
    }

    /// The proven caller name, for the access log.
    pub fn name(&self) -> Option<&Arc<str>> {
        self.caller.as_ref()
    }

    /// The caller's name when it is a configured one (a policy entry): the `caller` metric
    /// label, which [`UNKNOWN`] stands in for otherwise, so labels stay bounded.
    pub fn configured(&self) -> Option<&Arc<str>> {
        self.policy.as_ref().and(self.caller.as_ref())
    }
}

impl Callers {
    /// The service for `config` (`None`: every caller may act as any merchant).
    pub fn new(
        config: Option<&CallersConfig>,
        broker: Broker,
        metrics: Metrics,
    ) -> Result<Self, JwksError> {
        let callers = Self {
            inner: Arc::new(Inner {
                state: ArcSwapOption::empty(),
                recent: Recent::default(),
                broker,
                metrics,
            }),
        };
        callers.replace(config)?;
        Ok(callers)
    }

    /// Applies a new configuration whole (a reload): keys, key set, policy, and a fresh
    /// memory of verified tokens, so a removed key or caller is refused on its next request.
    pub fn replace(&self, config: Option<&CallersConfig>) -> Result<(), JwksError> {
        let state = match config {
            None => None,
            Some(config) => Some(Arc::new(State {
                jwt: config.jwt.clone().map(JwtVerifier::new).transpose()?,
                config: config.clone(),
                onboarded: moka::future::Cache::builder()
                    .max_capacity(MAX_ONBOARDED)
                    .time_to_live(ONBOARDED_FOR)
                    .build(),
            })),
        };
        self.inner.state.store(state);
        Ok(())
    }

    /// Who sent `headers` (over the connection whose client certificate's names the
    /// `extensions` carry, if any): the caller its credentials prove. In `observe` mode an
    /// unidentified caller is logged, counted and let through.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> Result<Identity, Refusal> {
        let Some(state) = self.inner.state.load_full() else {
            return Ok(Identity::anyone());
        };
        let peer = extensions.get::<Arc<PeerNames>>().map(Arc::as_ref);
        match state.identify(headers, peer).await {
            Ok(caller) => {
                let policy = state.config.policy.get(&caller).map(|(_, p)| p.clone());
                Ok(Identity {
                    state: Some(state),
                    caller: Some(caller),
                    policy,
                })
            }
            Err(error) => {
                let challenge = state.jwt.is_some();
                self.refuse(&state, Refusal::Unauthenticated { error, challenge })?;
                Ok(Identity::anyone())
            }
        }
    }

    /// Whether `identity` may send `method` to `path` (the guarded path) for `merchant`. In
    /// `observe` mode a refusal is logged, counted and let through.
    pub async fn authorize(
        &self,
        identity: &Identity,
        merchant: MerchantId,
        method: &Method,
        path: &str,
    ) -> Result<(), Refusal> {
        let (Some(state), Some(caller)) = (&identity.state, &identity.caller) else {
            return Ok(());
        };
        let verdict = match &identity.policy {
            None => Err(Forbidden::NoPolicy {
                caller: caller.to_string(),
            }),
            Some(policy) => {
                self.check(state, caller, policy, merchant, method, path)
                    .await
            }
        };
        match verdict {
            Ok(()) => {
                self.inner.recent.saw(merchant, caller);
                Ok(())
            }
            Err(forbidden) => {
                self.inner.metrics.audit(|| {
                    Event::refusal(
                        caller,
                        merchant,
                        forbidden.rule(),
                        state.config.mode.as_str(),
                    )
                });
                self.refuse(state, Refusal::Forbidden(forbidden))
            }
        }
    }

    /// The callers that acted for `merchant` lately (empty without `callers`), for
    /// `/admin/tokens`.
    pub fn recent(&self, merchant: MerchantId) -> Vec<Seen> {
        self.inner.recent.of(merchant)
    }

    async fn check(
        &self,
        state: &State,
        caller: &str,
        policy: &CallerPolicy,
        merchant: MerchantId,
        method: &Method,
        path: &str,
    ) -> Result<(), Forbidden> {
        let merchant_refused = |expected| Forbidden::Merchant {
            caller: caller.to_owned(),
            expected,
            merchant: merchant.to_string(),
        };
        match &policy.merchants {
            Merchants::All => {}
            Merchants::Listed(listed) => {
                if !listed.contains(&merchant) {
                    return Err(merchant_refused("a merchant of its list"));
                }
            }
            Merchants::Onboarded => {
                if !state.onboarded.contains_key(&merchant) {
                    match self.inner.broker.is_onboarded(merchant).await {
                        Ok(true) => state.onboarded.insert(merchant, ()).await,
                        Ok(false) => {
                            return Err(merchant_refused(
                                "a merchant with a stored onboarding grant",
                            ));
                        }
                        Err(error) => {
                            return Err(Forbidden::OnboardedUnknown {
                                caller: caller.to_owned(),
                                merchant: merchant.to_string(),
                                problem: error.to_string(),
                            });
                        }
                    }
                }
            }
        }
        if policy.rule_for(method, path).is_none() {
            return Err(Forbidden::Route {
                caller: caller.to_owned(),
                method: method.clone(),
                path: path.to_owned(),
            });
        }
        Ok(())
    }

    /// Counts a refusal; answers it in `enforce` mode, logs it and lets it through in
    /// `observe` mode.
    fn refuse(&self, state: &State, refusal: Refusal) -> Result<(), Refusal> {
        let mode = state.config.mode;
        self.inner
            .metrics
            .caller_refused(refusal.kind(), mode.as_str());
        match mode {
            Mode::Enforce => Err(refusal),
            Mode::Observe => {
                tracing::warn!(refusal = refusal.kind(), reason = %refusal, "callers.mode is observe: serving a request enforce would refuse");
                Ok(())
            }
        }
    }
}

impl State {
    /// The caller the credentials prove. Every credential presented is checked, and they
    /// must agree: a client certificate, a bearer token and an API key naming different
    /// callers are refused.
    async fn identify(
        &self,
        headers: &HeaderMap,
        peer: Option<&PeerNames>,
    ) -> Result<Arc<str>, AuthError> {
        let certificate = match (&self.config.mtls, peer) {
            (Some(config), Some(peer)) => Some(mtls::identify(config, peer)?),
            _ => None,
        };
        let bearer = match &self.jwt {
            Some(jwt) => match single(headers, AUTHORIZATION.as_str())? {
                Some(value) => Some(jwt.verify(bearer_token(value)?).await?),
                None => None,
            },
            None => None,
        };
        let key = match &self.config.api_keys {
            Some(keys) => match single(headers, API_KEY_HEADER)? {
                Some(value) => Some(
                    keys.identify(value.as_bytes())
                        .ok_or(AuthError::UnknownKey)?,
                ),
                None => None,
            },
            None => None,
        };
        let mut proven: Option<(&'static str, Arc<str>)> = None;
        for (kind, caller) in [
            ("client certificate", certificate),
            ("bearer token", bearer),
            ("API key", key),
        ] {
            let Some(caller) = caller else { continue };
            match &proven {
                Some((first, first_caller)) if *first_caller != caller => {
                    return Err(AuthError::Disagree {
                        first,
                        first_caller: first_caller.to_string(),
                        second: kind,
                        second_caller: caller.to_string(),
                    });
                }
                Some(_) => {}
                None => proven = Some((kind, caller)),
            }
        }
        proven.map(|(_, caller)| caller).ok_or_else(|| {
            let config = &self.config;
            let expected = [
                (
                    config.mtls.is_some(),
                    "a client certificate on the TLS listener",
                ),
                (self.jwt.is_some(), "Authorization: Bearer <token>"),
                (config.api_keys.is_some(), "an X-Poynt-Proxy-Key header"),
            ];
            AuthError::Missing {
                expected: expected
                    .iter()
                    .filter_map(|(on, kind)| on.then_some(*kind))
                    .collect::<Vec<_>>()
                    .join(", or "),
            }
        })
    }
}

/// The one value of `name`, if any; a repeated credential header is refused.
fn single<'a>(
    headers: &'a HeaderMap,
    name: &'static str,
) -> Result<Option<&'a HeaderValue>, AuthError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    match values.count() {
        0 => Ok(first),
        more => Err(AuthError::Repeated {
            header: name,
            count: more + 1,
        }),
    }
}

/// The token of `Bearer <token>` (the scheme case-insensitive, as RFC 9110 has it), as
/// bytes: a token seen before is recognised without reading it as text.
fn bearer_token(value: &HeaderValue) -> Result<&[u8], AuthError> {
    let bytes = value.as_bytes();
    let space = bytes
        .iter()
        .position(|&b| b == b' ')
        .ok_or(AuthError::NotBearer)?;
    let (scheme, token) = (&bytes[..space], bytes[space + 1..].trim_ascii());
    if scheme.eq_ignore_ascii_case(b"bearer") && !token.is_empty() {
        Ok(token)
    } else {
        Err(AuthError::NotBearer)
    }
}

impl Refusal {
    /// The `kind` label of `poynt_proxy_caller_refusals_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unauthenticated { .. } => "unauthenticated",
            Self::Forbidden(_) => "forbidden",
        }
    }
}
