//! Getting and keeping Poynt access tokens: the self-signed assertion, the `/token` client
//! and the per-merchant broker that caches and renews.

pub mod assertion;
pub mod broker;
mod budget;
mod cache;
pub mod config;
mod error;
pub mod grant;
mod persist;
mod state;
pub mod status;

pub use self::cache::Token;
pub use self::error::BrokerError;
