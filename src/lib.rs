//! poynt-proxy: a token-brokering reverse proxy for the Poynt Cloud API.
//!
//! Internal callers send plain HTTP naming a merchant in a header; the proxy injects that
//! merchant's Poynt access token (obtained, cached and renewed by the token broker) and
//! forwards the call to Poynt over TLS.
//!
//! The parts:
//! - [`config`]: YAML → the checked `Config`.
//! - [`lifecycle`]: [`start`], used by `main`, the demo and the tests alike.
//! - [`server`]: listeners, connection limits, graceful drain.
//! - [`proxy`]: the request phases (admit, guard, authorize, limit, token, rewrite, send, retry, respond).
//! - [`limits`]: per-merchant rate limits, in-flight caps and cool-downs after Poynt's 429s.
//! - [`callers`]: who is asking (API keys, JWT bearer tokens) and what each caller may do.
//! - [`token`]: the self-signed assertion, the `/token` client, the per-merchant broker.
//! - [`upstream`]: connections to Poynt (each worker's HTTP/1.1 and HTTP/2 client, and the
//!   pooled client for `/token`).
//! - [`store`]: where tokens outlive the process (memory, an embedded file, or Redis), sealed.
//! - [`onboarding`]: the merchant-facing listener: `/connect`, the verified callback, pages.
//! - [`traces`]: OpenTelemetry spans for each request, grant and renewal (`telemetry.traces`).
//! - [`admin`], [`metrics`], [`telemetry`], [`access_log`]: what operators see; [`reload`]:
//!   applying a changed configuration file without a restart; [`report`]: an error chain as
//!   one line.
//! - [`audit`]: the hash-chained, secret-free trail of grants, refusals and who acted for whom.
//! - [`armour`]: PEM armour checked line by line, for every key read from a file.
//!
//! Poynt's wire vocabulary and the merchant ID live in the `poynt-wire` crate, shared with
//! the emulator (`poynt-emulator`), the stand-in for Poynt the tests, the demo and the
//! benchmarks run against.

#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod armour;
pub mod audit;
pub mod callers;
pub mod config;
pub mod lifecycle;
pub mod limits;
pub mod metrics;
pub mod onboarding;
pub mod proxy;
pub mod reload;
pub mod report;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod token;
pub mod traces;
pub mod upstream;
pub mod workers;

pub use lifecycle::{Listeners, Running, StartError, start};
