//! The token broker's settings, and how the app reaches and authenticates to Poynt. Built by
//! `config/` from the `tokens:` and `poynt:` sections.

use std::time::Duration;

use http::{HeaderValue, Uri};
use rustls_pki_types::CertificateDer;

use super::assertion::AppKey;

/// How the proxy talks to Poynt.
#[derive(Debug, Clone)]
pub struct PoyntConfig {
    /// Scheme and authority every forwarded call goes to; never taken from a caller.
    pub api_url: Uri,
    /// The `/token` endpoint.
    pub token_url: Uri,
    /// `aud` of self-signed assertions: Poynt expects its API host.
    pub audience: String,
    /// Value of the `api-version` header added to every call.
    pub api_version: HeaderValue,
    /// The app's ID (`urn:aid:...`), `iss` and `sub` of every assertion.
    pub application_id: String,
    /// The app's RSA private key, loaded and checked at start-up.
    pub private_key: AppKey,
    /// Extra trust anchors for Poynt's TLS (tests, private CAs), read from `ca_file` at
    /// start-up and added to the platform roots.
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// Bound on establishing a TCP+TLS connection to Poynt.
    pub connect_timeout: Duration,
    /// Bound on waiting for Poynt's response headers on a forwarded call.
    pub response_timeout: Duration,
    /// Longest a response body may bring no byte before the caller's response is aborted
    /// and the upstream connection closed: `response_timeout` ends at the head, and a body
    /// that stalls after it would otherwise hold the caller for as long as Poynt keeps the
    /// connection open.
    pub body_idle_timeout: Duration,
    /// Bound on a whole `/token` exchange.
    pub token_timeout: Duration,
}

/// Token broker tuning.
#[derive(Debug, Clone)]
pub struct TokensConfig {
    /// Fraction of a token's lifetime after which it is renewed in the background.
    pub refresh_at: f64,
    /// Random spread (± fraction of the lifetime) on the refresh point.
    pub refresh_jitter: f64,
    /// A token is not used this close to its expiry, even when renewal keeps failing
    /// (capped at a twentieth of the token's lifetime).
    pub expiry_margin: Duration,
    /// First back-off after a failed grant for a merchant.
    pub backoff_initial: Duration,
    /// Longest back-off.
    pub backoff_max: Duration,
    /// Cap on concurrent `/token` calls across all merchants.
    pub max_concurrent_grants: usize,
    /// Bound on merchants held in the cache.
    pub max_merchants: u64,
    /// Grants per second for merchants never granted before (a token bucket's rate).
    pub new_merchant_grants_per_second: u32,
    /// How many such grants may happen at once before the rate applies (the bucket's size).
    pub new_merchant_grant_burst: u32,
    /// A token younger than this that Poynt answers 401 is not renewed (a fresh token
    /// refused is not fixed by another one); the 401 reaches the caller.
    pub unauthorized_min_token_age: Duration,
    /// At most one 401-driven renewal per merchant within this interval.
    pub unauthorized_renewal_interval: Duration,
}
