//! The body idle timeout, shared by HTTP/1.1 connections (`h1`, which keep theirs across
//! requests) and HTTP/2 response bodies (`body`).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// The body idle timeout: a reusable timer, armed when a read would block and disarmed by
/// any byte, so the clock is read once per wait rather than once per read.
pub(crate) struct IdleTimer {
    limit: Duration,
    /// Made the first time a read blocks, then reset in place.
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl IdleTimer {
    pub(crate) fn new(limit: Duration) -> Self {
        Self {
            limit,
            sleep: None,
            armed: false,
        }
    }

    /// Bytes arrived.
    pub(crate) fn progressed(&mut self) {
        self.armed = false;
    }

    /// A read would block: starts the wait if it is not running, and tells whether it ran
    /// out (registering `cx` to be woken when it does).
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<Duration> {
        let limit = self.limit;
        let made = self.sleep.is_none();
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if !self.armed && !made {
            sleep.as_mut().reset(Instant::now() + limit);
        }
        self.armed = true;
        sleep.as_mut().poll(cx).map(|()| limit)
    }
}
