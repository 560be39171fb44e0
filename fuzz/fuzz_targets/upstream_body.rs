//! The upstream response body decoder (chunked, a length, or until close) on any bytes,
//! split anywhere across reads: the same body and rest, the same failure, or incomplete
//! alike, as when the bytes arrive in one read (`upstream::fuzzing::check_body`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| poynt_proxy::upstream::fuzzing::check_body(data));
