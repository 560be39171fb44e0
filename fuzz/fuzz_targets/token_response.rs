//! The /token response parser on any body: a token with a lifetime between zero and 30 days,
//! or a typed error; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use poynt_proxy::token::grant::{MAX_TOKEN_LIFETIME, parse_token_response};

fuzz_target!(|body: &[u8]| {
    let now = tokio::time::Instant::now();
    if let Ok(token) = parse_token_response(body, now, std::time::SystemTime::now()) {
        assert!(!token.lifetime.is_zero() && token.lifetime <= MAX_TOKEN_LIFETIME);
    }
});
