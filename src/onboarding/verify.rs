//! Verifying Poynt's authorization code the way `openidconnect-rs` verifies ID tokens: the
//! algorithm is pinned to RS256 and decided from the header before any key is touched (so
//! `none`, HS256 keyed with the public key, or ES256 never reach a verifier), then the
//! signature, then `iss`, `sub`, `exp`/`iat` with a stated leeway, and only then are the
//! claims read: `poynt.biz` must be a business ID, and the deprecated `businessId` query
//! parameter, when present, must agree with it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

use crate::onboarding::code_key::CodeKey;
use poynt_wire::MerchantId;

/// Clock skew tolerated on `exp` and `iat`, in seconds.
pub const LEEWAY_SECS: u64 = 60;
/// Claim values quoted in errors are cut to this many characters.
const QUOTED: usize = 80;

/// Why a code was refused. Messages quote claims (never the code itself).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodeError {
    /// The callback carried no `code`.
    #[error("expected a code parameter; found none")]
    Missing,
    /// Not a compact JWT with a JSON header.
    #[error("expected the code as a compact JWT; {0}")]
    Malformed(String),
    /// The header names another algorithm.
    #[error("expected header alg RS256; found {0}")]
    Algorithm(String),
    /// The signature does not verify with the code key.
    #[error(
        "expected a signature by the code key (fingerprint {fingerprint}); the signature does not verify"
    )]
    Signature {
        /// The key tried.
        fingerprint: String,
    },
    /// A required claim is absent or of the wrong type.
    #[error("expected claim {0}; found none, or not of the expected type")]
    MissingClaim(String),
    /// `iss` is not the configured issuer.
    #[error("expected iss {expected:?}; found {found:?}")]
    Issuer {
        /// `onboarding.code_issuer`.
        expected: String,
        /// The claim.
        found: String,
    },
    /// `sub` is not this application.
    #[error("expected sub {expected:?} (this application); found {found:?}")]
    Subject {
        /// `poynt.application_id`.
        expected: String,
        /// The claim.
        found: String,
    },
    /// `exp` has passed (beyond the leeway).
    #[error("expected an unexpired code; found exp {exp}, now {now} (leeway {LEEWAY_SECS} s)")]
    Expired {
        /// The claim.
        exp: u64,
        /// The verifier's clock.
        now: u64,
    },
    /// `iat` is in the future (beyond the leeway).
    #[error("expected iat not in the future; found iat {iat}, now {now} (leeway {LEEWAY_SECS} s)")]
    IssuedInFuture {
        /// The claim.
        iat: u64,
        /// The verifier's clock.
        now: u64,
    },
    /// `poynt.biz` is not a business ID.
    #[error("expected claim poynt.biz as a business ID; found {0:?}")]
    Business(String),
    /// The `businessId` parameter names another merchant than the code.
    #[error(
        "expected the businessId parameter to equal the code's poynt.biz {code}; found {parameter:?}"
    )]
    BusinessMismatch {
        /// The verified merchant.
        code: MerchantId,
        /// The parameter as sent.
        parameter: String,
    },
}

/// What a code must match.
#[derive(Debug, Clone, Copy)]
pub struct CodeRules<'a> {
    /// `onboarding.code_issuer`.
    pub issuer: &'a str,
    /// `poynt.application_id`.
    pub application_id: &'a str,
    /// The verifier's clock, unix seconds.
    pub now: u64,
}

/// A code whose signature and claims were verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedCode {
    /// The merchant that authorized the app (`poynt.biz`).
    pub merchant: MerchantId,
}

#[derive(Deserialize)]
struct Header {
    alg: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    exp: u64,
    iat: u64,
    #[serde(rename = "poynt.biz")]
    biz: Option<serde_json::Value>,
}

fn quoted(text: &str) -> String {
    text.chars().take(QUOTED).collect()
}

/// Step one, before any key is used: the header must say exactly `RS256`.
pub fn check_algorithm(code: &str) -> Result<(), CodeError> {
    let header = code.split('.').next().unwrap_or_default();
    if code.split('.').count() != 3 {
        return Err(CodeError::Malformed(
            "found another number of '.'-separated parts than three".to_owned(),
        ));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| CodeError::Malformed("its header is not unpadded base64url".to_owned()))?;
    let header: Header = serde_json::from_slice(&bytes)
        .map_err(|_| CodeError::Malformed("its header is not a JSON object".to_owned()))?;
    match header.alg {
        Some(serde_json::Value::String(alg)) if alg == "RS256" => Ok(()),
        Some(serde_json::Value::String(alg)) => {
            Err(CodeError::Algorithm(format!("{:?}", quoted(&alg))))
        }
        Some(other) => Err(CodeError::Algorithm(quoted(&other.to_string()))),
        None => Err(CodeError::Algorithm("no alg".to_owned())),
    }
}

/// Steps two on: signature with `key` (RS256 only), then `iss`, `sub`, `exp`, `iat`,
/// `poynt.biz`, and agreement with the `businessId` parameter. Call [`check_algorithm`]
/// first.
pub fn verify(
    code: &str,
    key: &CodeKey,
    rules: &CodeRules<'_>,
    business_parameter: Option<&str>,
) -> Result<VerifiedCode, CodeError> {
    let mut validation = Validation::new(Algorithm::RS256);
    // Time and identity are checked below against `rules.now`, with their evidence.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = match jsonwebtoken::decode::<serde_json::Value>(code, key.decoding(), &validation)
    {
        Ok(data) => data.claims,
        Err(error) => {
            return Err(match error.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => CodeError::Signature {
                    fingerprint: key.fingerprint().to_owned(),
                },
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => {
                    CodeError::Algorithm("an algorithm this key cannot verify".to_owned())
                }
                _ => CodeError::Malformed(format!("it does not decode: {error}")),
            });
        }
    };
    for name in ["iss", "sub", "exp", "iat"] {
        let present = match claims.get(name) {
            Some(serde_json::Value::String(_)) => matches!(name, "iss" | "sub"),
            Some(serde_json::Value::Number(n)) => {
                matches!(name, "exp" | "iat") && n.as_u64().is_some()
            }
            _ => false,
        };
        if !present {
            return Err(CodeError::MissingClaim(name.to_owned()));
        }
    }
    let claims: Claims = serde_json::from_value(claims)
        .map_err(|e| CodeError::Malformed(format!("its claims do not read: {e}")))?;
    if claims.iss != rules.issuer {
        return Err(CodeError::Issuer {
            expected: rules.issuer.to_owned(),
            found: quoted(&claims.iss),
        });
    }
    if claims.sub != rules.application_id {
        return Err(CodeError::Subject {
            expected: rules.application_id.to_owned(),
            found: quoted(&claims.sub),
        });
    }
    if claims.exp.saturating_add(LEEWAY_SECS) <= rules.now {
        return Err(CodeError::Expired {
            exp: claims.exp,
            now: rules.now,
        });
    }
    if claims.iat > rules.now.saturating_add(LEEWAY_SECS) {
        return Err(CodeError::IssuedInFuture {
            iat: claims.iat,
            now: rules.now,
        });
    }
    let merchant = match claims.biz {
        Some(serde_json::Value::String(text)) => {
            MerchantId::parse(&text).map_err(|_| CodeError::Business(quoted(&text)))?
        }
        Some(other) => return Err(CodeError::Business(quoted(&other.to_string()))),
        None => return Err(CodeError::MissingClaim("poynt.biz".to_owned())),
    };
    if let Some(parameter) = business_parameter
        && MerchantId::parse(parameter).ok() != Some(merchant)
    {
        return Err(CodeError::BusinessMismatch {
            code: merchant,
            parameter: quoted(parameter),
        });
    }
    Ok(VerifiedCode { merchant })
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use jsonwebtoken::{EncodingKey, Header as JwtHeader};
    use serde_json::{Value, json};

    use super::*;

    const APP: &str = "urn:aid:1b03aed3-5826-4163-9d07-aa9adcb94fe9";
    const BIZ: &str = "c9580c24-b61e-4e0d-ad26-1dd1d3943d2c";
    const NOW: u64 = 1_700_000_000;
    const RULES: CodeRules<'static> = CodeRules {
        issuer: "https://poynt.net",
        application_id: APP,
        now: NOW,
    };

    /// The sample code printed in Poynt's merchant-authorization document.
    const SEED_CODE: &str =
        include_str!("../../tests/fixtures/poynt-merchant-authorization-code.txt");

    fn pair() -> &'static (EncodingKey, CodeKey, String) {
        static PAIR: OnceLock<(EncodingKey, CodeKey, String)> = OnceLock::new();
        PAIR.get_or_init(|| {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
            (
                EncodingKey::from_rsa_pem(key.serialize_pem().as_bytes()).unwrap(),
                CodeKey::from_pem(&key.public_key_pem()).unwrap(),
                key.public_key_pem(),
            )
        })
    }

    fn claims() -> Value {
        json!({"iss": "https://poynt.net", "iat": NOW - 10, "exp": NOW + 890, "sub": APP,
               "poynt.biz": BIZ, "poynt.uid": 34415083})
    }

    fn with(name: &str, value: Value) -> Value {
        let mut claims = claims();
        claims[name] = value;
        claims
    }

    fn sign(claims: &Value) -> String {
        jsonwebtoken::encode(&JwtHeader::new(Algorithm::RS256), claims, &pair().0).unwrap()
    }

    fn check(code: &str, business: Option<&str>) -> Result<VerifiedCode, CodeError> {
        check_algorithm(code)?;
        verify(code, &pair().1, &RULES, business)
    }

    #[test]
    fn a_good_code_names_its_merchant() {
        let verified = check(&sign(&claims()), Some(BIZ)).unwrap();
        assert_eq!(verified.merchant, MerchantId::parse(BIZ).unwrap());
        assert!(check(&sign(&claims()), None).is_ok());
    }

    #[test]
    fn the_seed_sample_is_a_bad_signature_against_the_seed_key() {
        let key = CodeKey::from_pem(crate::onboarding::code_key::tests::SEED_KEY_FIXED).unwrap();
        let code = SEED_CODE.trim();
        check_algorithm(code).unwrap();
        let err = verify(code, &key, &RULES, Some(BIZ)).unwrap_err();
        assert!(matches!(err, CodeError::Signature { .. }), "{err}");
        // Its unverified claims name the merchant the protocol notes say.
        let claims: Value = jsonwebtoken::dangerous::insecure_decode_claims(code).unwrap();
        assert_eq!(claims["poynt.biz"], BIZ);
    }

    #[test]
    fn other_algorithms_are_refused_before_any_key_is_used() {
        let body = URL_SAFE_NO_PAD.encode(claims().to_string());
        let none = format!("{}.{body}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#));
        assert_eq!(
            check(&none, None),
            Err(CodeError::Algorithm("\"none\"".into()))
        );
        let hs256 = jsonwebtoken::encode(
            &JwtHeader::new(Algorithm::HS256),
            &claims(),
            &EncodingKey::from_secret(pair().2.as_bytes()),
        )
        .unwrap();
        assert_eq!(
            check(&hs256, None),
            Err(CodeError::Algorithm("\"HS256\"".into()))
        );
        let ec = rcgen::KeyPair::generate().unwrap();
        let es256 = jsonwebtoken::encode(
            &JwtHeader::new(Algorithm::ES256),
            &claims(),
            &EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(
            check(&es256, None),
            Err(CodeError::Algorithm("\"ES256\"".into()))
        );
        let no_alg = format!("{}.{body}.x", URL_SAFE_NO_PAD.encode("{}"));
        assert_eq!(
            check(&no_alg, None),
            Err(CodeError::Algorithm("no alg".into()))
        );
        for garbage in ["", "a.b", "a.b.c.d", "!!.e30.x"] {
            assert!(
                matches!(check(garbage, None), Err(CodeError::Malformed(_))),
                "{garbage}"
            );
        }
    }

    #[test]
    fn a_tampered_payload_is_a_bad_signature() {
        let code = sign(&claims());
        let mut parts: Vec<String> = code.split('.').map(str::to_owned).collect();
        parts[1] = URL_SAFE_NO_PAD
            .encode(with("poynt.biz", json!("11111111-1111-4111-8111-111111111111")).to_string());
        let err = check(&parts.join("."), None).unwrap_err();
        assert!(matches!(err, CodeError::Signature { .. }), "{err}");
    }

    #[test]
    fn each_claim_rule_names_itself() {
        let cases = [
            (with("iss", json!("https://evil.example")), "expected iss"),
            (with("sub", json!("urn:aid:other")), "expected sub"),
            (with("exp", json!(NOW - 61)), "unexpired"),
            (with("iat", json!(NOW + 61)), "iat not in the future"),
            (
                with("poynt.biz", json!("not-a-uuid")),
                "poynt.biz as a business ID",
            ),
            (with("poynt.biz", json!(7)), "poynt.biz as a business ID"),
            (with("exp", json!("soon")), "claim exp"),
        ];
        for (claims, needle) in cases {
            let err = check(&sign(&claims), None).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle:?} not in {err:?}");
        }
        let mut no_biz = claims();
        no_biz.as_object_mut().unwrap().remove("poynt.biz");
        assert_eq!(
            check(&sign(&no_biz), None),
            Err(CodeError::MissingClaim("poynt.biz".into()))
        );
    }

    #[test]
    fn the_leeway_is_sixty_seconds() {
        assert!(check(&sign(&with("exp", json!(NOW - 59))), None).is_ok());
        assert!(check(&sign(&with("iat", json!(NOW + 60))), None).is_ok());
    }

    #[test]
    fn the_business_parameter_must_agree() {
        let err = check(
            &sign(&claims()),
            Some("11111111-1111-4111-8111-111111111111"),
        )
        .unwrap_err();
        assert!(matches!(err, CodeError::BusinessMismatch { .. }), "{err}");
        assert!(check(&sign(&claims()), Some("garbage")).is_err());
        assert!(check(&sign(&claims()), Some(&BIZ.to_uppercase())).is_ok());
    }
}
