//! API keys: the simplest caller credential. The proxy holds only SHA-256 digests of keys
//! (a file of `name:hex-digest` lines), never the keys. Keys are 256 random bits, so a plain
//! digest is as strong as a slow hash would be; a presented key's digest is compared with
//! every configured one in constant time, so timing does not tell how close a guess came.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::error::ApiKeyFileError;
use super::policy::valid_caller_name;

/// The header a caller's API key travels in (lower case, as header maps hold names). Its own
/// header, not `Authorization`, so a bearer token and a key can be told apart and checked
/// against each other.
pub const API_KEY_HEADER: &str = "x-poynt-proxy-key";

/// Every key starts so, which makes a leaked key easy to recognise in a secret scanner.
const KEY_PREFIX: &str = "ppk_";

const DIGEST_LEN: usize = 32;

/// The configured keys: caller names and the digests of their keys.
#[derive(Clone)]
pub struct ApiKeys {
    entries: Vec<(Arc<str>, [u8; DIGEST_LEN])>,
}

/// Names only: digests are not keys, but they are nobody's business in a log either.
impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|(name, _)| name))
            .finish()
    }
}

impl ApiKeys {
    /// Reads a key file: `name:hex-sha256` per line; `#` starts a comment. A name may hold
    /// colons (the digest is what follows the last one).
    pub fn parse(text: &str) -> Result<Self, ApiKeyFileError> {
        let mut entries = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let number = index + 1;
            let Some((name, hex)) = line.rsplit_once(':') else {
                return Err(ApiKeyFileError::Line {
                    number,
                    problem: "expected name:sha256-hex; found no colon".into(),
                });
            };
            let name = name.trim();
            if let Err(problem) = valid_caller_name(name) {
                return Err(ApiKeyFileError::Line { number, problem });
            }
            let digest = parse_digest(hex.trim()).ok_or_else(|| ApiKeyFileError::Line {
                number,
                problem: format!(
                    "expected 64 hex digits (the SHA-256 of the key) after the last colon; found {} characters",
                    hex.trim().len()
                ),
            })?;
            entries.push((Arc::from(name), digest));
        }
        if entries.is_empty() {
            return Err(ApiKeyFileError::Empty);
        }
        Ok(Self { entries })
    }

    /// The caller whose key `presented` is, comparing its digest with every entry (all of
    /// them, in constant time each).
    pub fn identify(&self, presented: &[u8]) -> Option<Arc<str>> {
        let found = digest(&SHA256, presented);
        let mut matched = None;
        for (name, expected) in &self.entries {
            if aws_lc_rs::constant_time::verify_slices_are_equal(found.as_ref(), expected).is_ok() {
                matched = Some(name.clone());
            }
        }
        matched
    }

    /// The names of the callers that have keys.
    pub fn names(&self) -> impl Iterator<Item = &Arc<str>> {
        self.entries.iter().map(|(name, _)| name)
    }
}

/// A new key (the prefix and 32 random bytes, base64url) and the key-file line naming
/// `name` with its digest.
pub fn generate(name: &str) -> Result<(String, String), ApiKeyFileError> {
    valid_caller_name(name).map_err(|problem| ApiKeyFileError::Line { number: 0, problem })?;
    let mut bytes = [0u8; DIGEST_LEN];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ApiKeyFileError::Random)?;
    let key = format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hex: String = digest(&SHA256, key.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((key, format!("{name}:{hex}")))
}

fn parse_digest(hex: &str) -> Option<[u8; DIGEST_LEN]> {
    if hex.len() != DIGEST_LEN * 2 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; DIGEST_LEN];
    for (slot, pair) in out.iter_mut().zip(hex.as_bytes().chunks(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *slot = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_is_identified_by_its_line_and_no_other_key_is() {
        let (key, line) = generate("system:serviceaccount:shop:payments").unwrap();
        assert!(key.starts_with(KEY_PREFIX));
        let (other, other_line) = generate("analytics").unwrap();
        let keys = ApiKeys::parse(&format!("# callers\n{line}\n\n{other_line} # note\n")).unwrap();
        assert_eq!(
            keys.identify(key.as_bytes()).as_deref(),
            Some("system:serviceaccount:shop:payments")
        );
        assert_eq!(
            keys.identify(other.as_bytes()).as_deref(),
            Some("analytics")
        );
        assert_eq!(keys.identify(b"ppk_guess"), None);
        assert!(!format!("{keys:?}").contains(line.rsplit(':').next().unwrap()));
    }

    #[test]
    fn a_bad_line_is_refused_with_its_number() {
        let error = ApiKeys::parse("ok:zz\n").unwrap_err().to_string();
        assert!(error.contains("line 1"), "{error}");
        assert!(error.contains("64 hex digits"), "{error}");
        assert!(matches!(
            ApiKeys::parse("# only\n"),
            Err(ApiKeyFileError::Empty)
        ));
    }
}
