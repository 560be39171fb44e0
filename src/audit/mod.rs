//! The audit trail: secret-free JSON lines, one per grant, refresh, eviction, onboarding
//! outcome, admin call, policy refusal and "caller X acted for merchant Y", each carrying
//! the SHA-256 of the line before it so an edited, inserted or deleted line is found by
//! `poynt-proxy audit verify`.
//!
//! One job per file: `event` (what a line says; merchant ids, caller names, grant kinds and
//! outcomes, never a credential), `chain` (the line format and its hash chain), `writer`
//! (a dedicated thread fed by a bounded queue, so a request worker never waits on a disk),
//! `rotation` (size-based files whose chain continues from one file into the next),
//! `verify` (the check) and `config` (the checked `audit:` settings).
//!
//! Hooks reach the trail through [`crate::metrics::Metrics::audit`], the observability
//! handle already threaded to every place an event happens; with `audit` off it is a branch
//! on an empty cell and the event is never built.

pub mod chain;
pub mod config;
pub mod event;
mod rotation;
pub mod verify;
mod writer;

pub use self::event::Event;
pub use self::writer::{Audit, AuditError};
