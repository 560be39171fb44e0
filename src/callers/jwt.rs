//! JWT bearer tokens (Kubernetes projected service-account tokens, any OIDC issuer): the
//! algorithm is pinned by the key the `kid` names before the signature is looked at; `iss`,
//! `aud`, `exp` and `nbf` are checked with a stated leeway; the caller is the `sub` claim or
//! a configured one. A verified token is remembered until it expires, so the hot path does
//! not check a signature per request: each worker thread recalls the tokens it saw last by
//! their exact bytes (a caller sends the same bearer on every request, so this is one
//! comparison), and behind that the verifier remembers every token it verified by its
//! SHA-256, shared by all workers.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use secrecy::{ExposeSecret as _, SecretSlice};
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

/// Tokens each worker thread recalls. A token's slot is picked by its last bytes (its
/// signature's, which no one can choose for a token that verifies), so a thread serving a
/// handful of callers recalls them all; a collision only sends a request on to the shared
/// memory.
const RECALLED_SLOTS: usize = 64;

/// Numbers verifiers, so a thread's recalled tokens are never taken for another
/// configuration's (a reload makes a new verifier, and every token is verified again).
static VERIFIERS: AtomicU64 = AtomicU64::new(0);

/// A verified token's caller and when the token stops being valid.
#[derive(Clone)]
struct Verified {
    caller: Arc<str>,
    expires: SystemTime,
}

/// A token a worker thread saw verified, kept whole (zeroed when replaced) so the next
/// request that presents it is recognised by comparing bytes.
struct Recalled {
    verifier: u64,
    token: SecretSlice<u8>,
    verified: Verified,
}

thread_local! {
    static RECALLED: RefCell<[Option<Recalled>; RECALLED_SLOTS]> =
        const { RefCell::new([const { None }; RECALLED_SLOTS]) };
}

/// Verifies bearer tokens for one `callers.authentication.jwt` configuration.
pub struct JwtVerifier {
    id: u64,
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
            id: VERIFIERS.fetch_add(1, Ordering::Relaxed),
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
    pub async fn verify(&self, token: &[u8]) -> Result<Arc<str>, JwtError> {
        let now = SystemTime::now();
        let slot = slot_of(token);
        let recalled = RECALLED.with_borrow(|slots| {
            slots[slot]
                .as_ref()
                .filter(|recalled| {
                    recalled.verifier == self.id
                        && aws_lc_rs::constant_time::verify_slices_are_equal(
                            recalled.token.expose_secret(),
                            token,
                        )
                        .is_ok()
                })
                .map(|recalled| recalled.verified.clone())
        });
        if let Some(known) = recalled
            && self.live(&known, now)
        {
            return Ok(known.caller);
        }
        let text = std::str::from_utf8(token)
            .map_err(|_| JwtError::Malformed("expected ASCII; found other bytes".into()))?;
        let verified = self.remembered_or_verified(text, now).await?;
        let caller = verified.caller.clone();
        RECALLED.with_borrow_mut(|slots| {
            slots[slot] = Some(Recalled {
                verifier: self.id,
                token: token.to_vec().into(),
                verified,
            });
        });
        Ok(caller)
    }

    /// Whether a verified token is still valid at `now` (within the leeway).
    fn live(&self, verified: &Verified, now: SystemTime) -> bool {
        verified.expires + self.config.leeway > now
    }

    /// The token's verification as the shared memory has it, or checked now and remembered.
    async fn remembered_or_verified(
        &self,
        token: &str,
        now: SystemTime,
    ) -> Result<Verified, JwtError> {
        let fingerprint: [u8; 32] = digest(&SHA256, token.as_bytes())
            .as_ref()
            .try_into()
            .unwrap_or_default();
        if let Some(known) = self.verified.get(&fingerprint)
            && self.live(&known, now)
        {
            return Ok(known);
        }
        let verified = self.verify_signed(token).await?;
        self.verified.insert(fingerprint, verified.clone());
        Ok(verified)
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

/// The recalled-token slot of `token`: its last eight bytes, mixed.
fn slot_of(token: &[u8]) -> usize {
    let mut tail = [0u8; 8];
    let start = token.len().saturating_sub(tail.len());
    tail[..token.len() - start].copy_from_slice(&token[start..]);
    let mixed = u64::from_le_bytes(tail).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    // The top bits of the product depend on every byte of the tail.
    (mixed >> (u64::BITS - RECALLED_SLOTS.trailing_zeros())) as usize
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

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header};

    use super::*;

    fn verifier(jwks: &Jwks, issuer: &str) -> JwtVerifier {
        JwtVerifier::new(JwtConfig {
            issuer: issuer.to_owned(),
            audience: vec!["poynt-proxy".to_owned()],
            jwks: JwksSource::File(jwks.clone()),
            identity_claim: "sub".to_owned(),
            leeway: Duration::from_secs(5),
        })
        .expect("a file key set")
    }

    #[tokio::test]
    async fn a_recalled_token_is_recognised_only_whole_and_only_by_its_own_verifier() {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ed25519");
        let key = EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).expect("key");
        let jwks = Jwks::parse(
            serde_json::json!({"keys": [{
                "kty": "OKP", "crv": "Ed25519", "kid": "k",
                "x": URL_SAFE_NO_PAD.encode(pair.public_key_raw()),
            }]})
            .to_string()
            .as_bytes(),
        )
        .expect("jwks");
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some("k".to_owned());
        let claims = serde_json::json!({
            "iss": "https://a.test", "aud": "poynt-proxy", "sub": "payments", "exp": exp,
        });
        let token = jsonwebtoken::encode(&header, &claims, &key).expect("sign");
        let first = verifier(&jwks, "https://a.test");
        for _ in 0..2 {
            assert_eq!(&*first.verify(token.as_bytes()).await.unwrap(), "payments");
        }
        // One byte of the claims changed: the same slot (the tail is the same), not the
        // same token, so the signature is checked and fails.
        let mut altered = token.clone().into_bytes();
        let at = token.find('.').unwrap() + 4;
        altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
        assert_eq!(slot_of(&altered), slot_of(token.as_bytes()));
        assert!(first.verify(&altered).await.is_err());
        // A reload's verifier (another issuer trusted) checks the token again: refused.
        let reloaded = verifier(&jwks, "https://b.test");
        assert!(matches!(
            reloaded.verify(token.as_bytes()).await,
            Err(JwtError::Issuer(_))
        ));
    }
}
