//! The `oauth:` section: Poynt's authorization and sign-out pages. Builds [`OauthConfig`].

use serde::Deserialize;

use super::error::ConfigError;
use super::fields::parse_url;
use crate::onboarding::config::OauthConfig;

/// Where merchants are sent to grant the app access.
const DEFAULT_AUTHORIZE_URL: &str = "https://poynt.net/applications/authorize";
/// Where a merchant's poynt.net session is ended.
const DEFAULT_SIGNOUT_URL: &str = "https://services.poynt.net/auth/signout";

/// The `oauth:` section as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOauth {
    #[serde(default = "default_authorize_url")]
    authorize_url: String,
    #[serde(default = "default_signout_url")]
    signout_url: String,
    redirect_uri: Option<String>,
}

impl Default for RawOauth {
    fn default() -> Self {
        Self {
            authorize_url: default_authorize_url(),
            signout_url: default_signout_url(),
            redirect_uri: None,
        }
    }
}

fn default_authorize_url() -> String {
    DEFAULT_AUTHORIZE_URL.into()
}
fn default_signout_url() -> String {
    DEFAULT_SIGNOUT_URL.into()
}

impl RawOauth {
    pub(super) fn validate(self) -> Result<OauthConfig, ConfigError> {
        let authorize_url = parse_url("oauth.authorize_url", &self.authorize_url)?;
        let signout_url = parse_url("oauth.signout_url", &self.signout_url)?;
        if let Some(uri) = &self.redirect_uri {
            parse_url("oauth.redirect_uri", uri)?;
        }
        Ok(OauthConfig {
            authorize_url,
            signout_url,
            redirect_uri: self.redirect_uri,
        })
    }
}
