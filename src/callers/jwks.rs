//! JSON Web Key Sets: the public keys bearer tokens are verified with, by `kid`, each bound
//! to the one algorithm its kind allows (RSA: RS256, P-256: ES256, Ed25519: EdDSA). A token
//! whose header names another algorithm for the key is refused before any signature check,
//! which is what stops `none`, and HS256 "signed" with a public key.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt as _, Empty, Limited};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};
use rustls_pki_types::CertificateDer;

use super::error::JwksError;
use crate::report::error_chain;
use crate::upstream::{self, BoxError, HttpClient};

/// Largest JWKS document read: key sets are a few kilobytes.
const MAX_JWKS_BYTES: usize = 256 * 1024;
/// How long a fetch may take, connection included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// One verification key and the algorithm bound to it.
#[derive(Clone)]
pub struct VerifyKey {
    /// The public key.
    pub key: DecodingKey,
    /// The only algorithm accepted with it.
    pub algorithm: Algorithm,
}

/// Keys by `kid`.
#[derive(Clone, Default)]
pub struct Jwks {
    keys: HashMap<String, VerifyKey>,
}

/// The `kid`s and their algorithms: public, and what a reload's change report compares.
impl fmt::Debug for Jwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<_> = self
            .keys
            .iter()
            .map(|(kid, k)| (kid, k.algorithm))
            .collect();
        kids.sort_unstable_by_key(|(kid, _)| *kid);
        f.debug_map().entries(kids).finish()
    }
}

impl Jwks {
    /// Parses a JWKS document, keeping the keys of usable kinds that have a `kid`.
    pub fn parse(json: &[u8]) -> Result<Self, JwksError> {
        let set: JwkSet =
            serde_json::from_slice(json).map_err(|e| JwksError::Json(e.to_string()))?;
        let mut keys = HashMap::new();
        let mut skipped = 0;
        for jwk in &set.keys {
            match usable(jwk) {
                Some((kid, key)) => {
                    keys.insert(kid, key);
                }
                None => skipped += 1,
            }
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey { skipped });
        }
        Ok(Self { keys })
    }

    /// The key `kid` names.
    pub fn get(&self, kid: &str) -> Option<&VerifyKey> {
        self.keys.get(kid)
    }
}

fn usable(jwk: &Jwk) -> Option<(String, VerifyKey)> {
    let kid = jwk.common.key_id.clone()?;
    let algorithm = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => return None,
    };
    // A key that declares another algorithm (say RS512) is not used at all.
    if let Some(declared) = jwk.common.key_algorithm
        && declared.to_string() != format!("{algorithm:?}")
    {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some((kid, VerifyKey { key, algorithm }))
}

/// Fetches a key set over HTTPS with the crate's own client (system roots plus `ca_file`).
#[derive(Clone)]
pub struct JwksFetcher {
    client: HttpClient,
    url: Uri,
}

impl JwksFetcher {
    /// A fetcher for `url`, trusting `extra_roots` beside the system's.
    pub fn new(url: Uri, extra_roots: &[CertificateDer<'static>]) -> Result<Self, JwksError> {
        let client =
            upstream::client(extra_roots, FETCH_TIMEOUT).map_err(|e| JwksError::Fetch {
                url: url.to_string(),
                problem: e.to_string(),
            })?;
        Ok(Self { client, url })
    }

    /// Fetches and parses the key set.
    pub async fn fetch(&self) -> Result<Jwks, JwksError> {
        let failed = |problem: String| JwksError::Fetch {
            url: self.url.to_string(),
            problem,
        };
        let request = Request::get(self.url.clone())
            .header(http::header::ACCEPT, "application/json")
            .body(
                Empty::<Bytes>::new()
                    .map_err(|never| -> BoxError { match never {} })
                    .boxed(),
            )
            .map_err(|e| failed(e.to_string()))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| failed(error_chain(&e)))?;
            if !response.status().is_success() {
                return Err(failed(format!(
                    "expected status 200; found {}",
                    response.status()
                )));
            }
            Limited::new(response.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map(|body| body.to_bytes())
                .map_err(|e| failed(format!("reading the body: {e}")))
        };
        let body = tokio::time::timeout(FETCH_TIMEOUT, exchange)
            .await
            .map_err(|_| failed(format!("no answer within {FETCH_TIMEOUT:?}")))??;
        Jwks::parse(&body)
    }
}
