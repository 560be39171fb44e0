//! JWT bearer tokens (Kubernetes projected service-account tokens, any OIDC issuer): the
//! algorithm is pinned by the key the `kid` names before the signature is looked at; `iss`,
//! `aud`, `exp` and `nbf` are checked with a stated leeway; the caller is the `sub` claim or
//! a configured one. A verified token is remembered (by its SHA-256) until it expires, so
//! the hot path hashes a token rather than checking a signature per request.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::config::{JwksSource, JwtConfig};
use super::error::{JwksError, JwtError, quoted};
use super::jwks::{Jwks, JwksFetcher};
use super::policy::valid_caller_name;

/// Verified tokens remembered at most: beyond it the least used are verified again.
const MAX_REMEMBERED: u64 = 100_000;
/// A remembered token is dropped after this long even if it lives longer, bounding how long
/// memory holds it; its `exp` still decides whether it is accepted.
const REMEMBER_AT_MOST: Duration = Duration::from_secs(600);
/// An unknown `kid` refetches a URL key set at most this often, so a stream of made-up
/// `kid`s cannot turn into a stream of fetches.
const REFETCH_EVERY: Duration = Duration::from_secs(60);

/// A verified token's caller and when the token stops being valid.
#[derive(Clone)]
struct Verified {
    caller: Arc<str>,
    expires: SystemTime,
}

/// Verifies bearer tokens for one `callers.authentication.jwt` configuration.
pub struct JwtVerifier {
    config: JwtConfig,
    keys: ArcSwap<Jwks>,
    remote: Option<Remote>,
    verified: moka::sync::Cache<[u8; 32], Verified>,
}

/// A URL key set: its fetcher, and when it was last fetched (which also serialises fetches).
struct Remote {
    fetcher: JwksFetcher,
    fetched: Mutex<Option<Instant>>,
}

impl JwtVerifier {
    /// A verifier over the configured key set; a URL is fetched on first need.
    pub fn new(config: JwtConfig) -> Result<Self, JwksError> {
        let (keys, remote) = match &config.jwks {
            JwksSource::File(jwks) => (jwks.clone(), None),
            JwksSource::Url { url, extra_roots } => (
                Jwks::default(),
                Some(Remote {
                    fetcher: JwksFetcher::new(url.clone(), extra_roots)?,
                    fetched: Mutex::new(None),
                }),
            ),
        };
        Ok(Self {
            config,
            keys: ArcSwap::from_pointee(keys),
            remote,
            verified: moka::sync::Cache::builder()
                .max_capacity(MAX_REMEMBERED)
                .time_to_live(REMEMBER_AT_MOST)
                .build(),
        })
    }

    /// The caller a bearer token names, once it verifies.
    pub async fn verify(&self, token: &str) -> Result<Arc<str>, JwtError> {
        let fingerprint: [u8; 32] = digest(&SHA256, token.as_bytes())
            .as_ref()
            .try_into()
            .unwrap_or_default();
        let now = SystemTime::now();
        if let Some(known) = self.verified.get(&fingerprint)
            && known.expires + self.config.leeway > now
        {
            return Ok(known.caller);
        }
        let verified = self.verify_signed(token).await?;
        let caller = verified.caller.clone();
        self.verified.insert(fingerprint, verified);
        Ok(caller)
    }

    async fn verify_signed(&self, token: &str) -> Result<Verified, JwtError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|error| match header_alg(token) {
                Some(alg) if !accepted(&alg) => JwtError::Algorithm(quoted(&alg)),
                _ => JwtError::Malformed(error.to_string()),
            })?;
        if !matches!(
            header.alg,
            Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA
        ) {
            return Err(JwtError::Algorithm(format!("{:?}", header.alg)));
        }
        let kid = header.kid.ok_or(JwtError::MissingKid)?;
        let key = self.key(&kid).await?;
        if key.algorithm != header.alg {
            return Err(JwtError::AlgorithmMismatch {
                kid: quoted(&kid),
                expected: format!("{:?}", key.algorithm),
                found: format!("{:?}", header.alg),
            });
        }
        let config = &self.config;
        let mut validation = Validation::new(key.algorithm);
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&config.audience);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = config.leeway.as_secs();
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|error| self.refused(&kid, error.into_kind()))?;
        let claims = data.claims;
        let claim = &config.identity_claim;
        let caller =
            claims
                .get(claim)
                .and_then(Value::as_str)
                .ok_or_else(|| JwtError::Identity {
                    claim: claim.clone(),
                    problem: "found it missing or not a string".into(),
                })?;
        valid_caller_name(caller).map_err(|problem| JwtError::Identity {
            claim: claim.clone(),
            problem,
        })?;
        let exp = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or_else(|| JwtError::Claim("exp".into()))?;
        Ok(Verified {
            caller: Arc::from(caller),
            expires: UNIX_EPOCH + Duration::from_secs(exp),
        })
    }

    /// The key `kid` names; for a URL key set, an unknown `kid` refetches it (at most once
    /// per [`REFETCH_EVERY`]) in case the issuer rotated its keys.
    async fn key(&self, kid: &str) -> Result<super::jwks::VerifyKey, JwtError> {
        if let Some(key) = self.keys.load().get(kid) {
            return Ok(key.clone());
        }
        let Some(remote) = &self.remote else {
            return Err(JwtError::UnknownKid(quoted(kid)));
        };
        let mut fetched = remote.fetched.lock().await;
        // Another request may have fetched while this one waited.
        if let Some(key) = self.keys.load().get(kid) {
            return Ok(key.clone());
        }
        let now = Instant::now();
        if fetched.is_none_or(|at| now >= at + REFETCH_EVERY) {
            *fetched = Some(now);
            let jwks = remote.fetcher.fetch().await?;
            self.keys.store(Arc::new(jwks));
        }
        self.keys
            .load()
            .get(kid)
            .cloned()
            .ok_or_else(|| JwtError::UnknownKid(quoted(kid)))
    }

    fn refused(&self, kid: &str, kind: ErrorKind) -> JwtError {
        let leeway = self.config.leeway;
        match kind {
            ErrorKind::InvalidSignature => JwtError::Signature(quoted(kid)),
            ErrorKind::ExpiredSignature => JwtError::Expired(leeway),
            ErrorKind::ImmatureSignature => JwtError::NotYetValid(leeway),
            ErrorKind::InvalidIssuer => JwtError::Issuer(self.config.issuer.clone()),
            ErrorKind::InvalidAudience => JwtError::Audience(self.config.audience.clone()),
            ErrorKind::MissingRequiredClaim(claim) | ErrorKind::InvalidClaimFormat(claim) => {
                JwtError::Claim(claim)
            }
            other => JwtError::Malformed(format!("{other:?}")),
        }
    }
}

fn accepted(alg: &str) -> bool {
    matches!(alg, "RS256" | "ES256" | "EdDSA")
}

/// The `alg` a header names, read leniently, for the message when the strict decoder
/// refuses an algorithm it has no name for (`none`).
fn header_alg(token: &str) -> Option<String> {
    let header = token.split('.').next()?;
    let json = URL_SAFE_NO_PAD.decode(header).ok()?;
    let value: Value = serde_json::from_slice(&json).ok()?;
    value.get("alg")?.as_str().map(str::to_owned)
}
