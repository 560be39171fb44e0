//! Phases 1 and 2 of a request: find the merchant the caller names, and make sure a
//! `/businesses/{id}` path names the same one, so a caller can never spend one merchant's
//! token on another merchant's data.

use http::{HeaderMap, HeaderName};

use crate::merchant::MerchantId;
use crate::proxy::error::ProxyError;

/// Reads exactly one business ID from `header`. Missing is its own error; empty, malformed,
/// repeated or non-UTF-8 values are all "invalid".
pub fn merchant_from_headers(
    headers: &HeaderMap,
    header: &HeaderName,
) -> Result<MerchantId, ProxyError> {
    let mut values = headers.get_all(header).iter();
    let Some(value) = values.next() else {
        return Err(ProxyError::MissingMerchantId {
            header: header.to_string(),
        });
    };
    let invalid = |found: String| ProxyError::InvalidMerchantId {
        header: header.to_string(),
        found,
    };
    if values.next().is_some() {
        return Err(invalid("the header more than once".into()));
    }
    let text = value
        .to_str()
        .map_err(|_| invalid("bytes that are not visible ASCII".into()))?;
    MerchantId::parse(text.trim()).map_err(|e| invalid(e.found))
}

/// Refuses dot segments (which an upstream could resolve to another merchant's path) and
/// a `/businesses/{id}` path whose `{id}` is not `merchant`.
pub fn guard_path(path: &str, merchant: MerchantId, header: &HeaderName) -> Result<(), ProxyError> {
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    if path.split('/').any(is_dot_segment) {
        return Err(ProxyError::InvalidPath(path.chars().take(200).collect()));
    }
    if !segments
        .next()
        .is_some_and(|first| first.eq_ignore_ascii_case("businesses"))
    {
        return Ok(());
    }
    let named = segments.next().unwrap_or_default();
    match MerchantId::parse(named) {
        Ok(id) if id == merchant => Ok(()),
        _ => Err(ProxyError::MerchantPathMismatch {
            header: header.to_string(),
            merchant: merchant.to_string(),
            path_merchant: format!("{:?}", named.chars().take(64).collect::<String>()),
        }),
    }
}

fn is_dot_segment(segment: &str) -> bool {
    let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
    decoded == "." || decoded == ".."
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const M: &str = "c9580c24-b61e-4e0d-ad26-1dd1d3943d2c";

    fn header() -> HeaderName {
        HeaderName::from_static("x-poynt-merchant-id")
    }

    fn with(values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(header(), HeaderValue::from_bytes(v).unwrap());
        }
        map
    }

    #[test]
    fn one_valid_header_is_the_merchant_in_lowercase() {
        let m = merchant_from_headers(&with(&[M.to_uppercase().as_bytes()]), &header()).unwrap();
        assert_eq!(m.to_string(), M);
    }

    #[test]
    fn missing_and_invalid_are_told_apart() {
        let err = merchant_from_headers(&HeaderMap::new(), &header()).unwrap_err();
        assert_eq!(err.code(), "MISSING_MERCHANT_ID");
        for bad in [
            &[b"".as_slice()][..],
            &[b"abc"],
            &[b"../x"],
            &["a".repeat(300).as_bytes()],
            &[b"\xff\xfe"],
            &[M.as_bytes(), M.as_bytes()],
        ] {
            let err = merchant_from_headers(&with(bad), &header()).unwrap_err();
            assert_eq!(err.code(), "INVALID_MERCHANT_ID", "{bad:?}");
        }
    }

    #[test]
    fn path_must_name_the_same_merchant() {
        let m = MerchantId::parse(M).unwrap();
        assert!(guard_path(&format!("/businesses/{M}/orders"), m, &header()).is_ok());
        assert!(guard_path(&format!("/BUSINESSES/{}", M.to_uppercase()), m, &header()).is_ok());
        assert!(guard_path("/catalogs/x", m, &header()).is_ok());
        let other = "/businesses/00000000-0000-4000-8000-000000000000/orders";
        assert_eq!(
            guard_path(other, m, &header()).unwrap_err().code(),
            "MERCHANT_PATH_MISMATCH"
        );
        assert_eq!(
            guard_path("/businesses", m, &header()).unwrap_err().code(),
            "MERCHANT_PATH_MISMATCH"
        );
        for sneaky in ["/x/../businesses/y", "/businesses/%2E%2e/y", "/./a"] {
            assert_eq!(
                guard_path(sneaky, m, &header()).unwrap_err().code(),
                "INVALID_PATH",
                "{sneaky}"
            );
        }
    }
}
