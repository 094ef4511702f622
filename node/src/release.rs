//! When the timer releases held packets: on a grid of the clock, coarse
//! when few packets are due and fine when many are.
//!
//! A packet leaves at a line of a grid at or after its due time, never
//! before. The grid's step is a power of two milliseconds counted from the
//! Unix epoch, between [`MIN_STEP_MS`] and [`MAX_STEP_MS`]: the coarsest
//! whose first line after the earliest due packet releases at most
//! [`BURST`] packets. So a quiet relay wakes about once a second for all
//! the packets that fell due meanwhile instead of once for each (at a few
//! packets a second, the wake-ups, not the cryptography, are most of what
//! a packet costs), and a busy one releases in small bursts that its links'
//! queues absorb.
//!
//! Every node's grid is the same clock's, and a coarser step's lines are
//! lines of every finer one: quiet nodes release together, so their packets
//! reach the next hop together too, and one wake-up there handles many.
//! A grid shows an observer less than exact release times would: a
//! packet's departure says its due time only to within a step.
//!
//! Pure: the caller says how many packets are due by a time.

/// The finest step: the grouping of a busy relay.
pub const MIN_STEP_MS: u64 = 32;
/// The coarsest step: what the grid adds to a hop's delay at most (the
/// mean mixing delay is a minute).
pub const MAX_STEP_MS: u64 = 1024;
/// At most this many packets leave on one line, unless more than that
/// fall due within the finest step.
pub const BURST: usize = 64;

/// When to release the held packets, the earliest of which is due at
/// `first_due_ms`: a line of the coarsest grid whose first line at or after
/// it has at most [`BURST`] packets due by it. `due_by(t, limit)` counts the
/// held packets due at or before `t`, stopping at `limit`.
pub fn release_at(first_due_ms: u64, mut due_by: impl FnMut(u64, usize) -> usize) -> u64 {
    let mut step = MAX_STEP_MS;
    loop {
        let line = line_after(first_due_ms, step);
        if step == MIN_STEP_MS || due_by(line, BURST + 1) <= BURST {
            return line;
        }
        step /= 2;
    }
}

/// The first line of the grid of `step` at or after `ms`.
fn line_after(ms: u64, step: u64) -> u64 {
    ms.div_ceil(step).saturating_mul(step)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The count of `dues` at or before `t`, as a held queue gives it.
    fn counter(dues: &[u64]) -> impl FnMut(u64, usize) -> usize + '_ {
        |t, limit| dues.iter().filter(|&&d| d <= t).take(limit).count()
    }

    #[test]
    fn a_quiet_relay_releases_on_the_coarsest_grid() {
        // The lines of 1,024 ms about there: 9,999,360 and 10,000,384.
        let dues = [9_999_400, 10_000_300, 10_005_000];
        let at = release_at(dues[0], counter(&dues));
        assert_eq!(at % MAX_STEP_MS, 0);
        assert!(at >= dues[0] && at - dues[0] < MAX_STEP_MS);
        // Both packets due by the line leave together, the third later.
        assert_eq!(at, 10_000_384);
        assert!(at < dues[2]);
    }

    #[test]
    fn a_busy_relay_releases_in_small_bursts() {
        // 5,000 packets a second, one every 200 µs: a line of 1,024 ms
        // would release about 5,000 at once.
        let dues: Vec<u64> = (0..20_000u64).map(|i| 1_000_000 + i / 5).collect();
        let at = release_at(dues[0], counter(&dues));
        let released = dues.iter().filter(|&&d| d <= at).count();
        assert!(
            released <= BURST || at - dues[0] < MIN_STEP_MS,
            "{released} at once"
        );
        assert!(at >= dues[0]);
        assert_eq!(at % MIN_STEP_MS, 0);
    }

    #[test]
    fn the_step_is_the_coarsest_that_keeps_the_burst() {
        // 100 packets a second: 1,024 ms would release about 102, 512 ms
        // about 51.
        let dues: Vec<u64> = (0..1_000u64).map(|i| 2_048_000 + i * 10).collect();
        let at = release_at(dues[0], counter(&dues));
        assert_eq!(at, 2_048_000);
        let dues: Vec<u64> = (0..1_000u64).map(|i| 2_048_001 + i * 10).collect();
        let at = release_at(dues[0], counter(&dues));
        assert_eq!(at, 2_048_512);
        assert!(dues.iter().filter(|&&d| d <= at).count() <= BURST);
    }

    #[test]
    fn release_is_never_early_and_at_most_a_step_late() {
        for first in [0u64, 1, 31, 32, 1_023, 1_024, 1_025, 77_777_777] {
            let dues = [first];
            let at = release_at(first, counter(&dues));
            assert!(at >= first);
            assert!(at - first < MAX_STEP_MS);
        }
        let at = release_at(u64::MAX - 5, |_, _| 1);
        assert!(at >= u64::MAX - 5 || at == u64::MAX);
    }

    #[test]
    fn coarse_lines_are_lines_of_every_finer_grid() {
        // A quiet relay's release time is a line of a busy relay's grid
        // too: the nodes' bursts line up.
        for due in [1u64, 999, 1_025, 77_777] {
            let quiet = release_at(due, |_, _| 1);
            let mut step = MAX_STEP_MS;
            while step >= MIN_STEP_MS {
                assert_eq!(quiet % step, 0);
                step /= 2;
            }
        }
    }
}
