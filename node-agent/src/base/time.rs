//! Time. The pure cores take [`Time`] — a duration since their owner's epoch — as an
//! input and never read a clock; the I/O shells get it from a [`Clock`] started with the
//! agent, and a simulation makes it up.

use std::time::Duration;

use tokio::time::Instant;

/// Monotonic time since the owner's epoch.
pub type Time = Duration;

/// Real time for the I/O shells.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Instant,
}

impl Clock {
    pub fn start() -> Self {
        Self {
            epoch: Instant::now(),
        }
    }

    pub fn now(&self) -> Time {
        self.epoch.elapsed()
    }

    pub fn instant(&self, t: Time) -> Instant {
        self.epoch + t
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
pub async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
