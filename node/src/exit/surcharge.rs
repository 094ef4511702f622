//! Stamp difficulty that rises with the exit's load.
//!
//! The policy sets the stamp's difficulty for the whole federation
//! (`stamp_bits`): cheap for one leak, costly for a thousand. An exit under
//! a flood of leaks with valid stamps asks more: for each doubling of the
//! leaks that passed its stamp check in the last hour beyond
//! `exit.busy_leaks_per_hour`, one more bit (twice the work), at most
//! [`MAX_EXTRA_BITS`]. It announces the bits it asks in its descriptor
//! ([`leak_protocol::directory::ExitInfo::stamp_bits`]), which clients
//! read when they solve a stamp.
//!
//! A client may solve against a descriptor it fetched a while ago (an agent
//! refreshes its directory every half hour), so the exit accepts a stamp
//! with the fewest bits it announced over the last [`GRACE_MS`]: a rise
//! binds every stamp after that long, a fall at once.
//!
//! Pure: the time comes in as an argument.

use std::collections::VecDeque;

/// The most bits an exit adds to the policy's (64 times the work).
pub const MAX_EXTRA_BITS: u8 = 6;
/// How long an announced difficulty is still accepted after the exit
/// announced a higher one: an agent's directory refresh (30 minutes) and
/// the descriptor's way to it.
pub const GRACE_MS: u64 = 40 * 60 * 1000;

const MINUTE_MS: u64 = 60_000;
/// The window the load is counted over, in minutes.
const WINDOW_MINUTES: usize = 60;

/// An exit's load and the extra bits it announced.
#[derive(Debug, Clone)]
pub struct Surcharge {
    busy_per_hour: u64,
    /// Leaks per minute over the last hour: (minute, count), oldest first.
    minutes: VecDeque<(u64, u64)>,
    /// Extra bits announced, with when (ms), oldest first; the last is in
    /// force. Entries older than [`GRACE_MS`] before the one after them
    /// are pruned.
    announced: VecDeque<(u64, u8)>,
}

impl Surcharge {
    /// An exit that counts as busy past `busy_per_hour` leaks an hour (0:
    /// never asks more than the policy).
    pub fn new(busy_per_hour: u64) -> Self {
        Self {
            busy_per_hour,
            minutes: VecDeque::new(),
            announced: VecDeque::from([(0, 0)]),
        }
    }

    /// A leak passed the stamp check at `now_ms`.
    pub fn record(&mut self, now_ms: u64) {
        let minute = now_ms / MINUTE_MS;
        match self.minutes.back_mut() {
            Some((m, count)) if *m == minute => *count += 1,
            _ => self.minutes.push_back((minute, 1)),
        }
        self.prune(now_ms);
    }

    fn prune(&mut self, now_ms: u64) {
        let first = (now_ms / MINUTE_MS).saturating_sub(WINDOW_MINUTES as u64 - 1);
        while self.minutes.front().is_some_and(|(m, _)| *m < first) {
            self.minutes.pop_front();
        }
    }

    /// Leaks counted over the last hour at `now_ms`.
    pub fn load(&self, now_ms: u64) -> u64 {
        let first = (now_ms / MINUTE_MS).saturating_sub(WINDOW_MINUTES as u64 - 1);
        self.minutes
            .iter()
            .filter(|(m, _)| *m >= first)
            .map(|(_, c)| c)
            .sum()
    }

    /// The extra bits the load at `now_ms` calls for: one per doubling
    /// beyond busy, rounded up.
    pub fn wanted(&self, now_ms: u64) -> u8 {
        if self.busy_per_hour == 0 {
            return 0;
        }
        let load = self.load(now_ms);
        let mut extra = 0u8;
        let mut threshold = self.busy_per_hour;
        while load > threshold && extra < MAX_EXTRA_BITS {
            extra += 1;
            threshold = threshold.saturating_mul(2);
        }
        extra
    }

    /// The extra bits in force (the last announced).
    pub fn current(&self) -> u8 {
        self.announced.back().map_or(0, |(_, e)| *e)
    }

    /// Whether the load calls for other bits than those in force.
    pub fn changed(&self, now_ms: u64) -> bool {
        self.wanted(now_ms) != self.current()
    }

    /// Announces the bits the load calls for at `now_ms` (the exit signs
    /// them into its descriptor) and returns them.
    pub fn announce(&mut self, now_ms: u64) -> u8 {
        let wanted = self.wanted(now_ms);
        if wanted != self.current() {
            self.announced.push_back((now_ms, wanted));
        }
        // An announcement stays acceptable until GRACE_MS after the next
        // one replaced it.
        while self.announced.len() > 1
            && self
                .announced
                .get(1)
                .is_some_and(|(since, _)| now_ms.saturating_sub(*since) > GRACE_MS)
        {
            self.announced.pop_front();
        }
        wanted
    }

    /// The fewest extra bits a stamp needs at `now_ms`: the least of those
    /// in force and those replaced within the last [`GRACE_MS`].
    pub fn required(&self, now_ms: u64) -> u8 {
        let mut least = self.current();
        for pair in self.announced.iter().zip(self.announced.iter().skip(1)) {
            let ((_, extra), (replaced_at, _)) = pair;
            if now_ms.saturating_sub(*replaced_at) <= GRACE_MS {
                least = least.min(*extra);
            }
        }
        least
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000;

    #[test]
    fn one_more_bit_per_doubling_of_the_load_beyond_busy() {
        let t0 = 10 * HOUR;
        for (leaks, extra) in [
            (0, 0),
            (100, 0),
            (101, 1),
            (200, 1),
            (201, 2),
            (400, 2),
            (401, 3),
        ] {
            let mut s = Surcharge::new(100);
            for i in 0..leaks {
                s.record(t0 + i * 1000);
            }
            assert_eq!(s.wanted(t0 + leaks * 1000), extra, "{leaks} leaks");
        }
        let mut flood = Surcharge::new(100);
        for i in 0..100_000 {
            flood.record(t0 + i * 30);
        }
        assert_eq!(flood.wanted(t0 + 3_000_000), MAX_EXTRA_BITS);
        // 0: never more than the policy.
        let mut off = Surcharge::new(0);
        for i in 0..1000 {
            off.record(t0 + i);
        }
        assert_eq!(off.wanted(t0 + 1000), 0);
    }

    #[test]
    fn the_load_is_the_last_hours() {
        let t0 = 10 * HOUR;
        let mut s = Surcharge::new(10);
        for i in 0..50 {
            s.record(t0 + i * 1000);
        }
        assert_eq!(s.load(t0 + 60_000), 50);
        assert!(s.wanted(t0 + 60_000) > 0);
        // An hour later those minutes have left the window.
        assert_eq!(s.load(t0 + HOUR + 60_000), 0);
        assert_eq!(s.wanted(t0 + HOUR + 60_000), 0);
    }

    #[test]
    fn a_rise_binds_after_the_grace_and_a_fall_at_once() {
        let t0 = 10 * HOUR;
        let mut s = Surcharge::new(10);
        assert_eq!(s.announce(t0), 0);
        for i in 0..30 {
            s.record(t0 + i * 1000);
        }
        assert!(s.changed(t0 + 30_000));
        assert_eq!(s.announce(t0 + 30_000), 2);
        assert_eq!(s.current(), 2);
        // Stamps solved against the old descriptor pass for the grace.
        assert_eq!(s.required(t0 + 30_000), 0);
        assert_eq!(s.required(t0 + 30_000 + GRACE_MS), 0);
        assert_eq!(s.required(t0 + 30_000 + GRACE_MS + 1), 2);
        // The load goes; the fall is announced and binds at once.
        let later = t0 + 2 * HOUR;
        assert!(s.changed(later));
        assert_eq!(s.announce(later), 0);
        assert_eq!(s.required(later), 0);
        assert!(!s.changed(later));
        // Old announcements are pruned.
        s.announce(later + GRACE_MS + 1);
        assert_eq!(s.announced.len(), 1);
    }
}
