//! Merchant onboarding: the URL that sends a merchant to Poynt to authorize the app.

use crate::config::Config;

/// Why no authorization URL could be built.
#[derive(Debug, thiserror::Error)]
#[error("oauth.redirect_uri: missing; expected the HTTPS URL Poynt sends the merchant back to")]
pub struct MissingRedirectUri;

/// `https://poynt.net/applications/authorize?redirect_uri=..&client_id=..&context=..`, with
/// every value form-encoded.
pub fn authorize_url(config: &Config, context: Option<&str>) -> Result<String, MissingRedirectUri> {
    let redirect = config
        .oauth
        .redirect_uri
        .as_deref()
        .ok_or(MissingRedirectUri)?;
    let mut query = form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("redirect_uri", redirect)
        .append_pair("client_id", &config.poynt.application_id);
    if let Some(context) = context {
        query.append_pair("context", context);
    }
    Ok(format!("{}?{}", config.oauth.authorize_url, query.finish()))
}
