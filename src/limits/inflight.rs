//! Fairness: at most N of a merchant's requests in flight toward Poynt at once, so one busy
//! merchant cannot hold every upstream connection the others need. Over the cap a request
//! waits a bounded time for a slot (a short burst is absorbed), then is refused.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One merchant's in-flight slots.
pub(super) struct Slots {
    semaphore: Arc<Semaphore>,
}

impl Slots {
    /// `cap` slots.
    pub(super) fn new(cap: u32) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(cap as usize)),
        }
    }

    /// A slot, held until the permit drops; `None` when none freed up within `wait`.
    pub(super) async fn acquire(&self, wait: Duration) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.semaphore.clone().try_acquire_owned() {
            return Some(permit);
        }
        tokio::time::timeout(wait, self.semaphore.clone().acquire_owned())
            .await
            .ok()?
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn over_the_cap_waits_for_a_slot_then_gives_up() {
        let slots = Slots::new(2);
        let wait = Duration::from_secs(1);
        let first = slots.acquire(wait).await.expect("a free slot");
        let _second = slots.acquire(wait).await.expect("a free slot");
        assert!(slots.acquire(wait).await.is_none());
        let release = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            drop(first);
        };
        let (waited, ()) = tokio::join!(slots.acquire(wait), release);
        assert!(
            waited.is_some(),
            "a slot freed within the wait goes to the waiter"
        );
    }
}
