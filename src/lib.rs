//! poynt-proxy: a token-brokering reverse proxy for the Poynt Cloud API.
//!
//! Internal callers send plain HTTP naming a merchant in a header; the proxy injects that
//! merchant's Poynt access token (obtained, cached and renewed by the token broker) and
//! forwards the call to Poynt over TLS.

#![forbid(unsafe_code)]

pub mod emulator;
pub mod merchant;
pub mod poynt;
