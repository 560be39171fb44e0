//! The merchant header parser on any header value bytes: a merchant or a typed error, and a
//! merchant only when the (trimmed) value is one hyphenated UUID.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use poynt_proxy::proxy::admit::merchant_from_headers;

fuzz_target!(|values: Vec<Vec<u8>>| {
    let name = HeaderName::from_static("x-poynt-merchant-id");
    let mut headers = HeaderMap::new();
    for value in values.iter().take(4) {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(&name, value);
        }
    }
    if let Ok(merchant) = merchant_from_headers(&headers, &name) {
        let text = headers[&name].to_str().expect("a parsed header is ASCII");
        assert_eq!(merchant.to_string(), text.trim().to_ascii_lowercase());
    }
});
