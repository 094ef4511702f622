//! Time, injected.
//!
//! Every decision of the node (when a held packet is due, which mix key is in
//! force, when a mailbox reply becomes visible or expires, when the exit
//! retries) takes the current time as a value. The I/O code asks a [`Clock`]
//! for it: [`SystemClock`] in a running node, [`ManualClock`] in the
//! virtual-time harness and in unit tests, where a test moves time forward
//! by hand and days of epochs pass in milliseconds.
//!
//! Time is Unix milliseconds (UTC): the federation's epochs are on a UTC
//! schedule, so the clock must be the wall clock, not a monotonic one.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

/// A source of the current time, in Unix milliseconds.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current Unix time in milliseconds.
    fn now_ms(&self) -> u64;

    /// The current Unix time in whole seconds.
    fn now_secs(&self) -> u64 {
        self.now_ms() / 1000
    }
}

/// A shared clock, as the node's tasks hold it.
pub type SharedClock = Arc<dyn Clock>;

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        unix_now_ms()
    }
}

/// A clock that moves only when told to: virtual time.
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ms: AtomicU64,
}

impl ManualClock {
    /// A clock that reads `now_ms` until moved.
    pub fn new(now_ms: u64) -> Self {
        Self {
            now_ms: AtomicU64::new(now_ms),
        }
    }

    /// Moves the clock forward by `ms` milliseconds.
    pub fn advance_ms(&self, ms: u64) {
        self.now_ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sets the clock to `now_ms`, which may not be earlier than it reads.
    pub fn set_ms(&self, now_ms: u64) {
        self.now_ms.fetch_max(now_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

/// The system's current Unix time in milliseconds.
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The system's current Unix time in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_forward_and_only_when_told() {
        let clock = ManualClock::new(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        clock.advance_ms(500);
        assert_eq!(clock.now_ms(), 1_500);
        assert_eq!(clock.now_secs(), 1);
        clock.set_ms(1_200);
        assert_eq!(clock.now_ms(), 1_500, "never backwards");
        clock.set_ms(90_000);
        assert_eq!(clock.now_ms(), 90_000);
    }
}
