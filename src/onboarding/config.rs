//! Onboarding's settings: its listener, how codes and states are checked, and Poynt's
//! merchant-facing pages. Built by `config/` from the `onboarding:` and `oauth:` sections.

use std::net::SocketAddr;
use std::time::Duration;

use http::Uri;

use super::code_key::CodeKeySource;
use super::state::StateKey;

/// Poynt's merchant-facing pages.
#[derive(Debug, Clone)]
pub struct OauthConfig {
    /// Poynt's authorization page.
    pub authorize_url: Uri,
    /// Poynt's sign-out, offered on the success page.
    pub signout_url: Uri,
    /// `oauth.redirect_uri` as written. Onboarding uses its own derived one
    /// ([`OnboardingConfig::redirect_uri`]); the configuration's warnings say when they differ.
    pub redirect_uri: Option<String>,
}

/// The onboarding listener.
#[derive(Debug, Clone)]
pub struct OnboardingConfig {
    /// Where the onboarding listener binds (behind the operator's TLS ingress).
    pub listen: SocketAddr,
    /// Scheme and host browsers use to reach it, no trailing slash.
    pub public_url: String,
    /// `public_url` + [`CALLBACK_PATH`](super::CALLBACK_PATH): what Poynt redirects to, and what the
    /// code exchange names.
    pub redirect_uri: String,
    /// How Poynt's signed codes are verified.
    pub code_key: CodeKeySource,
    /// The `iss` codes must carry.
    pub code_issuer: String,
    /// How long a state from `/connect` stays valid.
    pub state_ttl: Duration,
    /// After success, 303 to this URL with `?businessId=` instead of the success page.
    pub success_redirect: Option<String>,
    /// The state key read from `onboarding.state_key_file`; `None` means a random key per
    /// process.
    pub state_key: Option<StateKey>,
    /// The app's name as merchants know it, shown on the onboarding pages.
    pub app_name: String,
}
