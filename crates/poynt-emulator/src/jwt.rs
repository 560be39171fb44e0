//! Reading and checking the JWTs the emulator receives: the app's self-signed assertions and
//! the authorization codes it minted itself. Pure functions of the token, a key and `now`,
//! so every rule is unit-tested here; the single-use bookkeeping lives in `state`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

use poynt_wire::MerchantId;
use poynt_wire::{CLAIM_BUSINESS, MAX_ASSERTION_LIFETIME_SECS};

/// Clock skew tolerated on assertion `iat` and `exp`, in seconds.
pub(crate) const CLOCK_SKEW_SECS: u64 = 30;

/// A JWT split into its parts, claims decoded but not yet trusted.
pub(crate) struct UnverifiedJwt<'a> {
    /// `header.payload`, the bytes the signature covers.
    signing_input: &'a str,
    /// The base64url signature.
    signature: &'a str,
    /// The header's `alg`, as written.
    alg: Option<String>,
    /// The decoded claims.
    pub(crate) claims: Map<String, Value>,
}

/// Splits and decodes a compact JWT. The error says what was wrong with its shape.
pub(crate) fn parse(token: &str) -> Result<UnverifiedJwt<'_>, String> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(
            "expected a compact JWT (three base64url parts joined by '.'); found another shape"
                .to_owned(),
        );
    };
    let header: Map<String, Value> = decode_part(header, "header")?;
    let claims: Map<String, Value> = decode_part(payload, "claims")?;
    let alg = header.get("alg").and_then(Value::as_str).map(str::to_owned);
    Ok(UnverifiedJwt {
        signing_input: &token[..token.len() - signature.len() - 1],
        signature,
        alg,
        claims,
    })
}

fn decode_part(part: &str, name: &str) -> Result<Map<String, Value>, String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| format!("expected the JWT {name} in unpadded base64url; it did not decode"))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| format!("expected the JWT {name} to be a JSON object; it was not"))
}

impl UnverifiedJwt<'_> {
    /// Checks that the token is RS256 and signed by `key`.
    pub(crate) fn verify(&self, key: &DecodingKey, signer: &str) -> Result<(), String> {
        match self.alg.as_deref() {
            Some("RS256") => {}
            Some(other) => return Err(format!("expected header alg RS256; found {other:?}")),
            None => return Err("expected header alg RS256; found no alg".to_owned()),
        }
        match jsonwebtoken::crypto::verify(
            self.signature,
            self.signing_input.as_bytes(),
            key,
            Algorithm::RS256,
        ) {
            Ok(true) => Ok(()),
            Ok(false) | Err(_) => Err(format!(
                "expected a signature by {signer}; the signature does not verify"
            )),
        }
    }

    /// A string claim, or an error naming it.
    pub(crate) fn str_claim(&self, name: &str) -> Result<&str, String> {
        match self.claims.get(name) {
            Some(Value::String(text)) => Ok(text),
            Some(other) => Err(format!("expected claim {name} as a string; found {other}")),
            None => Err(format!("expected claim {name}; found none")),
        }
    }

    /// An integer-seconds claim, or an error naming it.
    pub(crate) fn secs_claim(&self, name: &str) -> Result<u64, String> {
        match self.claims.get(name) {
            Some(value) => value.as_u64().ok_or_else(|| {
                format!("expected claim {name} as integer seconds since the epoch; found {value}")
            }),
            None => Err(format!("expected claim {name}; found none")),
        }
    }

    /// The optional `poynt.biz` claim, parsed. `Err` if present but not a business ID.
    pub(crate) fn business(&self) -> Result<Option<MerchantId>, String> {
        match self.claims.get(CLAIM_BUSINESS) {
            None => Ok(None),
            Some(Value::String(text)) => MerchantId::parse(text)
                .map(Some)
                .map_err(|err| format!("claim {CLAIM_BUSINESS}: {err}")),
            Some(other) => Err(format!(
                "expected claim {CLAIM_BUSINESS} as a business ID string; found {other}"
            )),
        }
    }

    /// The `poynt.biz` claim if it parses, for attributing a call in stats even when refused.
    pub(crate) fn business_hint(&self) -> Option<MerchantId> {
        self.business().ok().flatten()
    }
}

/// What an assertion must match.
pub(crate) struct AssertionRules<'a> {
    /// The registered application id (`iss` and `sub`).
    pub(crate) app_id: &'a str,
    /// The expected `aud`.
    pub(crate) audience: &'a str,
    /// Current time, seconds since the epoch.
    pub(crate) now: u64,
}

/// The facts of an assertion that passed every stateless check.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct CheckedAssertion {
    /// Its `jti`, to be remembered until `exp`.
    pub(crate) jti: String,
    /// Its `exp`.
    pub(crate) exp: u64,
    /// The merchant it acts for, if any.
    pub(crate) business: Option<MerchantId>,
}

/// Every stateless check on a self-signed assertion, in the order a reader would make them:
/// signature, who, for whom, when, which. The error says which check failed.
pub(crate) fn check_assertion(
    jwt: &UnverifiedJwt<'_>,
    key: &DecodingKey,
    rules: &AssertionRules<'_>,
) -> Result<CheckedAssertion, String> {
    jwt.verify(key, "the registered application key")?;
    for name in ["iss", "sub"] {
        let found = jwt.str_claim(name)?;
        if found != rules.app_id {
            return Err(format!(
                "expected claim {name} {:?} (the application id); found {found:?}",
                rules.app_id
            ));
        }
    }
    check_audience(jwt.claims.get("aud"), rules.audience)?;
    let iat = jwt.secs_claim("iat")?;
    let exp = jwt.secs_claim("exp")?;
    if exp < iat {
        return Err(format!(
            "expected exp after iat; found iat {iat} and exp {exp}"
        ));
    }
    if exp - iat > MAX_ASSERTION_LIFETIME_SECS {
        return Err(format!(
            "expected a lifetime (exp - iat) of at most {MAX_ASSERTION_LIFETIME_SECS} s; found {} s",
            exp - iat
        ));
    }
    if exp + CLOCK_SKEW_SECS <= rules.now {
        return Err(format!(
            "expected exp in the future; found exp {exp}, now {}",
            rules.now
        ));
    }
    if iat > rules.now + CLOCK_SKEW_SECS {
        return Err(format!(
            "expected iat not in the future; found iat {iat}, now {}",
            rules.now
        ));
    }
    let jti = jwt.str_claim("jti")?;
    if jti.is_empty() {
        return Err("expected a non-empty jti; found an empty one".to_owned());
    }
    let business = jwt.business()?;
    Ok(CheckedAssertion {
        jti: jti.to_owned(),
        exp,
        business,
    })
}

/// `aud` may be a string or (RFC 7519) an array; it must name the expected audience.
fn check_audience(aud: Option<&Value>, expected: &str) -> Result<(), String> {
    let matches = match aud {
        Some(Value::String(found)) => found == expected,
        Some(Value::Array(items)) => items.iter().any(|item| item.as_str() == Some(expected)),
        _ => false,
    };
    if matches {
        return Ok(());
    }
    match aud {
        Some(found) => Err(format!("expected claim aud {expected:?}; found {found}")),
        None => Err(format!("expected claim aud {expected:?}; found none")),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;

    const APP: &str = "urn:aid:00000000-0000-4000-8000-000000000001";
    const AUD: &str = "http://127.0.0.1:1";
    const NOW: u64 = 1_700_000_000;

    fn keys() -> &'static (EncodingKey, DecodingKey) {
        static KEYS: OnceLock<(EncodingKey, DecodingKey)> = OnceLock::new();
        KEYS.get_or_init(|| {
            let (private_pem, public_pem) = super::super::keys::generate_app_key().unwrap();
            (
                EncodingKey::from_rsa_pem(private_pem.as_bytes()).unwrap(),
                DecodingKey::from_rsa_pem(public_pem.as_bytes()).unwrap(),
            )
        })
    }

    fn good_claims() -> Value {
        json!({"iss": APP, "sub": APP, "aud": AUD, "iat": NOW, "exp": NOW + 300, "jti": "j-1"})
    }

    fn check(claims: &Value) -> Result<CheckedAssertion, String> {
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &keys().0).unwrap();
        let jwt = parse(&token)?;
        let rules = AssertionRules {
            app_id: APP,
            audience: AUD,
            now: NOW,
        };
        check_assertion(&jwt, &keys().1, &rules)
    }

    fn with(field: &str, value: Value) -> Value {
        let mut claims = good_claims();
        claims[field] = value;
        claims
    }

    #[test]
    fn accepts_a_good_assertion_and_reads_the_business() {
        let merchant = "c9580c24-b61e-4e0d-ad26-1dd1d3943d2c";
        let checked = check(&with(CLAIM_BUSINESS, json!(merchant))).unwrap();
        assert_eq!(checked.jti, "j-1");
        assert_eq!(checked.exp, NOW + 300);
        assert_eq!(checked.business, Some(MerchantId::parse(merchant).unwrap()));
    }

    #[test]
    fn each_rule_names_itself() {
        let cases = [
            (with("iss", json!("urn:aid:other")), "iss"),
            (with("sub", json!("urn:aid:other")), "sub"),
            (with("aud", json!("https://services.poynt.net")), "aud"),
            (with("iat", json!(NOW as f64 + 0.5)), "integer seconds"),
            (with("exp", json!(NOW + 365 * 86_400)), "lifetime"),
            (with("exp", json!((NOW + 60) * 1000)), "lifetime"),
            (with("iat", json!(NOW - 400)), "lifetime"),
            (
                {
                    let mut claims = with("iat", json!(NOW - 200));
                    claims["exp"] = json!(NOW - 31);
                    claims
                },
                "exp in the future",
            ),
            (
                {
                    let mut claims = with("iat", json!(NOW + 60));
                    claims["exp"] = json!(NOW + 120);
                    claims
                },
                "iat not in the future",
            ),
            (with("jti", json!("")), "jti"),
            (with(CLAIM_BUSINESS, json!("not-a-uuid")), CLAIM_BUSINESS),
        ];
        for (claims, needle) in cases {
            let err = check(&claims).unwrap_err();
            assert!(err.contains(needle), "{needle:?} not in {err:?}");
        }
        let mut no_jti = good_claims();
        no_jti.as_object_mut().unwrap().remove("jti");
        assert!(check(&no_jti).unwrap_err().contains("jti"));
    }

    #[test]
    fn audience_may_be_an_array() {
        assert!(check(&with("aud", json!(["x", AUD]))).is_ok());
    }

    #[test]
    fn skew_is_tolerated() {
        let mut claims = with("iat", json!(NOW - 290));
        claims["exp"] = json!(NOW - 10);
        assert!(check(&claims).is_ok());
    }

    #[test]
    fn refuses_bad_shapes_and_other_algorithms() {
        assert!(parse("a.b").is_err());
        assert!(parse("a.b.c.d").is_err());
        assert!(parse("!!.e30.x").is_err());
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &good_claims(),
            &EncodingKey::from_secret(b"k"),
        )
        .unwrap();
        let err = parse(&token).unwrap().verify(&keys().1, "k").unwrap_err();
        assert!(err.contains("RS256"), "{err}");
    }

    #[test]
    fn refuses_a_tampered_payload() {
        let token = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &good_claims(), &keys().0)
            .unwrap();
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged =
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&with("sub", json!("urn:aid:x"))).unwrap());
        parts[1] = &forged;
        let forged_token = parts.join(".");
        let err = parse(&forged_token)
            .unwrap()
            .verify(&keys().1, "the key")
            .unwrap_err();
        assert!(err.contains("does not verify"), "{err}");
    }
}
