//! Phase 1, admit: the one business ID the caller names in the merchant header (the
//! allow-list and the method check are in `mod.rs`). The `MerchantId` type itself is
//! `poynt_wire::MerchantId`.

use http::{HeaderMap, HeaderName};

use crate::proxy::error::ProxyError;
use poynt_wire::MerchantId;

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
}
