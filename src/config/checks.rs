//! Rules that span sections: listeners that would collide, an exposed admin listener without
//! a secret, and settings that are valid but probably not meant.

use std::net::SocketAddr;

use super::admin::AdminConfig;
use super::callers::CallersConfig;
use super::error::ConfigError;
use super::fields::invalid;
use super::tls::TlsConfig;
use crate::limits::config::{LimitsConfig, Scope};
use crate::onboarding::CALLBACK_PATH;
use crate::onboarding::config::{OauthConfig, OnboardingConfig};
use crate::store::config::StoreBackend;

/// Refuses an admin listener reachable from other hosts without a bearer secret: `/admin/*`
/// can evict and refresh tokens.
pub(super) fn admin_protected(
    admin_listen: SocketAddr,
    admin: &AdminConfig,
) -> Result<(), ConfigError> {
    if !admin_listen.ip().is_loopback() && admin.bearer_token.is_none() {
        return Err(invalid(
            "admin.bearer_token_file",
            format!(
                "admin_listen {admin_listen} is reachable from other hosts; expected a bearer secret file protecting /admin/*, found none"
            ),
        ));
    }
    Ok(())
}

/// Refuses two listeners that would bind the same port on overlapping addresses (the same
/// address, or either the unspecified one): the second bind would fail at start with a bare
/// "address in use". Port 0 (an ephemeral port each) never collides.
pub(super) fn distinct_listeners(
    listen: SocketAddr,
    admin_listen: SocketAddr,
    onboarding: Option<SocketAddr>,
) -> Result<(), ConfigError> {
    let overlap = |a: SocketAddr, b: SocketAddr| {
        a.port() != 0
            && a.port() == b.port()
            && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
    };
    let mut pairs = vec![("admin_listen", admin_listen, "listen", listen)];
    if let Some(onboarding) = onboarding {
        pairs.push(("onboarding.listen", onboarding, "listen", listen));
        pairs.push((
            "onboarding.listen",
            onboarding,
            "admin_listen",
            admin_listen,
        ));
    }
    match pairs.into_iter().find(|(_, a, _, b)| overlap(*a, *b)) {
        Some((key, addr, other, taken)) => Err(invalid(
            key,
            format!(
                "expected an address no other listener binds; found {addr}, which collides with {other} ({taken})"
            ),
        )),
        None => Ok(()),
    }
}

/// A caller named in `limits.callers` must be one `callers.policy` names: any other name
/// is never proven, so its bucket would never apply.
pub(super) fn limited_callers_exist(
    limits: &LimitsConfig,
    callers: Option<&CallersConfig>,
) -> Result<(), ConfigError> {
    let unknown = limits
        .callers
        .keys()
        .filter(|name| callers.is_none_or(|c| c.policy.get(name).is_none()))
        .min();
    match unknown {
        Some(name) => Err(invalid(
            "limits.callers",
            format!(
                "expected the names of callers in callers.policy; found {name:?}, which is not one"
            ),
        )),
        None => Ok(()),
    }
}

/// `limits.scope: cluster` keeps the limits in Redis: any other store is one process's, so
/// the limits would silently stay per replica.
pub(super) fn cluster_limits_shared(
    limits: &LimitsConfig,
    backend: StoreBackend,
) -> Result<(), ConfigError> {
    if limits.scope == Scope::Cluster && backend != StoreBackend::Redis {
        return Err(invalid(
            "limits.scope",
            format!(
                "cluster keeps the limits in the shared store; expected store.backend redis, found {}",
                backend.as_str()
            ),
        ));
    }
    Ok(())
}

/// Without `callers`, anyone who reaches `listen` may act as any merchant: valid (the
/// network may be the boundary), but said once at `check` and at start-up — unless `listen`
/// is a loopback address, which no network peer reaches (the default, a sidecar, the demo).
pub(super) fn callers_open(callers: Option<&CallersConfig>, listen: SocketAddr) -> Option<String> {
    (callers.is_none() && !listen.ip().is_loopback()).then(|| {
        "no callers section: any network peer that reaches listen may act as any merchant (configure callers.authentication and callers.policy; see OPERATIONS, Callers)".to_owned()
    })
}

/// `oauth.redirect_uri` when it differs from the one onboarding derives and uses: valid, but
/// probably not meant, since Poynt must be told the one in use.
pub(super) fn redirect_uri_differs(
    oauth: &OauthConfig,
    onboarding: Option<&OnboardingConfig>,
) -> Option<String> {
    let (configured, onboarding) = (oauth.redirect_uri.as_ref()?, onboarding?);
    (configured != &onboarding.redirect_uri).then(|| {
        format!(
            "oauth.redirect_uri: {configured:?} differs from onboarding.public_url + {CALLBACK_PATH} ({:?}); onboarding uses the latter, so register that one in Poynt's developer portal",
            onboarding.redirect_uri
        )
    })
}

/// Refuses `callers.authentication.mtls` without a TLS listener that asks for client
/// certificates: the method could then never apply, and every caller would be refused.
pub(super) fn mtls_has_client_ca(
    callers: Option<&CallersConfig>,
    tls: Option<&TlsConfig>,
) -> Result<(), ConfigError> {
    let mtls = callers.is_some_and(|callers| callers.mtls.is_some());
    if mtls && tls.is_none_or(|tls| tls.client_ca_file.is_none()) {
        return Err(invalid(
            "callers.authentication.mtls",
            "expected a tls section with client_ca_file (the CAs client certificates chain to); found none",
        ));
    }
    Ok(())
}
