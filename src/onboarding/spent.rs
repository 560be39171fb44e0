//! The spent-state set: the nonces of states already used, so each state opens one callback.
//! Kept in the token store, so with Redis a state used at one replica is refused at every
//! other; [`state`](super::state) issues and opens states without any storage.

use std::time::Duration;

use super::state::NONCE_LEN;
use crate::store::{Store, StoreError};

/// Why a nonce could not be recorded as spent.
#[derive(Debug, thiserror::Error)]
pub enum SpentError {
    /// The token store did not record it (unreachable, or its bounded memory full).
    #[error("expected the token store to record the state as used: {0}")]
    Store(#[from] StoreError),
}

/// The nonces of states already used, each remembered until its state expires, in the
/// token store: with Redis a state used at one replica is refused at every other.
pub struct SpentStates {
    store: Store,
}

impl SpentStates {
    /// Spent states kept in `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Records `nonce` as spent for `ttl`. `Ok(true)` the first time, `Ok(false)` when it was
    /// spent already (a replay).
    pub async fn spend(&self, nonce: &[u8; NONCE_LEN], ttl: Duration) -> Result<bool, SpentError> {
        Ok(self.store.spend_state(nonce, ttl).await?)
    }
}
