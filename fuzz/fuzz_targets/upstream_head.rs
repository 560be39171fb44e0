//! The upstream response head parser on any bytes, split anywhere across reads: the same
//! head (status, fields, framing, reuse) and rest, the same failure, or incomplete alike,
//! as when the bytes arrive in one read (`upstream::fuzzing::check_head`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| poynt_proxy::upstream::fuzzing::check_head(data));
