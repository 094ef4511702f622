//! How the exit retries: the one retry policy, pure.
//!
//! Every failure of the exit that is worth another try comes here, and
//! nowhere else decides when that try is:
//!
//! | failure                                   | counted as an attempt | decision            |
//! |-------------------------------------------|-----------------------|---------------------|
//! | the mail server says 4xx, or no connection, TLS, AUTH, timeout ([`Attempt::Temporary`](super::smtp::Attempt)) | yes | [`RetryPolicy::after_failure`] |
//! | the exit's own storage fails during an attempt (code `local`) | yes | [`RetryPolicy::after_failure`] |
//! | the outcome of a *delivered* leak cannot be committed | no (the email is never sent again) | [`Backoff::delay`] of [`COMMIT_BACKOFF`], never gives up |
//!
//! Within one attempt, the SMTP pool sends once more on a fresh connection
//! when an idle one it reused turns out closed by the server: that is the
//! same attempt, not a retry.
//!
//! The wait before attempt `n + 1` is `exit.retry_initial_secs` doubled per
//! attempt (`initial · 2ⁿ⁻¹`), capped at `exit.retry_max_secs`, then drawn
//! uniformly from its upper half: the jitter keeps leaks deferred together
//! (a smarthost's outage) from coming back together. A leak still
//! undelivered `exit.lifetime_secs` after it was accepted is given up
//! ([`Decision::GiveUp`]): it ends `Bounced` (state `expired`).
//!
//! Beside the policy: [`super::schedule::Schedule`] holds each queued leak's
//! next attempt time, and [`super::schedule::Pace`] spaces attempts out
//! (a token bucket that slows on a 421 or 4.7.x). An operator's `leak-node
//! queue retry` makes leaks due now without changing their count.
//!
//! Nothing here reads a clock or draws a random number: the caller passes
//! `now_ms` (from the exit's injected [`crate::clock::Clock`]) and a uniform
//! number in `[0, 1]`, so the schedule runs in virtual time and the tests
//! below pin every case. The shape follows arti's
//! `tor-basic-utils/src/retry.rs` (a randomized, capped, growing delay
//! whose properties are tested, not its exact draws).

use std::time::Duration;

use crate::config::Config;

/// A delay that doubles per attempt, up to a cap, with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failed attempt (before jitter).
    pub initial: Duration,
    /// The longest wait (before jitter).
    pub max: Duration,
}

/// How the commit of a delivered leak's outcome is retried: from 1 s,
/// doubling, up to a minute, for ever (the email is never sent again, so
/// giving up would forget a delivery).
pub const COMMIT_BACKOFF: Backoff = Backoff {
    initial: Duration::from_secs(1),
    max: Duration::from_secs(60),
};

impl Backoff {
    /// The wait after `attempts` failed attempts (1 for the first):
    /// `initial` doubled `attempts - 1` times, at most `max`, then drawn
    /// from its upper half by `unit_random` (uniform in `[0, 1]`; values
    /// outside are clamped).
    pub fn delay(&self, attempts: u32, unit_random: f64) -> Duration {
        // 2^30 · initial is past any sensible cap; more would overflow.
        let doublings = attempts.saturating_sub(1).min(30);
        let base = self.initial.saturating_mul(1u32 << doublings).min(self.max);
        base.mul_f64(0.5 + 0.5 * unit_random.clamp(0.0, 1.0))
    }
}

/// What to do with a leak after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Try again at this time (Unix ms).
    RetryAt(u64),
    /// Past its lifetime: give up (the leak bounces, state `expired`).
    GiveUp,
}

/// The exit's retry policy: backoff with jitter for each counted attempt,
/// and a lifetime after which a leak is given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The wait between attempts.
    pub backoff: Backoff,
    /// How long after its acceptance a leak may still be tried.
    pub lifetime: Duration,
}

impl RetryPolicy {
    /// The policy `exit.retry_initial_secs`, `exit.retry_max_secs` and
    /// `exit.lifetime_secs` describe.
    pub fn from_config(config: &Config) -> Self {
        Self {
            backoff: Backoff {
                initial: Duration::from_secs(config.exit.retry_initial_secs),
                max: Duration::from_secs(config.exit.retry_max_secs),
            },
            lifetime: Duration::from_secs(config.exit.lifetime_secs),
        }
    }

    /// After a failed attempt: `attempts` counts every attempt so far,
    /// this one included (so at least 1); `accepted_ms` is when the exit
    /// accepted the leak and `now_ms` when the attempt ended.
    pub fn after_failure(
        &self,
        attempts: u32,
        accepted_ms: u64,
        now_ms: u64,
        unit_random: f64,
    ) -> Decision {
        let lifetime_ms = u64::try_from(self.lifetime.as_millis()).unwrap_or(u64::MAX);
        if now_ms.saturating_sub(accepted_ms) >= lifetime_ms {
            return Decision::GiveUp;
        }
        let wait = self.backoff.delay(attempts.max(1), unit_random);
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        Decision::RetryAt(now_ms.saturating_add(wait_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            backoff: Backoff {
                initial: S(60),
                max: S(3600),
            },
            lifetime: S(5 * 86_400),
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_a_cap() {
        let b = policy().backoff;
        assert_eq!(b.delay(1, 1.0), S(60));
        assert_eq!(b.delay(1, 0.0), S(30));
        assert_eq!(b.delay(3, 1.0), S(240));
        assert_eq!(b.delay(30, 1.0), S(3600));
        assert_eq!(b.delay(u32::MAX, 0.5), S(2700));
        // Attempt 0 is treated as the first; randomness out of range is clamped.
        assert_eq!(b.delay(0, 2.0), S(60));
        assert_eq!(b.delay(2, -1.0), S(60));
    }

    /// Like arti's tests: whatever the draw, the delay stays in the upper
    /// half of its step, and the steps never shrink.
    #[test]
    fn delays_stay_in_their_band_and_grow() {
        let b = policy().backoff;
        let mut previous_floor = Duration::ZERO;
        for attempts in 1..40u32 {
            let step = S(60)
                .saturating_mul(1u32 << attempts.saturating_sub(1).min(30))
                .min(S(3600));
            for i in 0..=20 {
                let d = b.delay(attempts, f64::from(i) / 20.0);
                assert!(d >= step / 2 && d <= step, "attempt {attempts}: {d:?}");
            }
            assert!(step / 2 >= previous_floor);
            previous_floor = step / 2;
        }
    }

    #[test]
    fn a_failure_is_retried_after_the_backoff_of_its_count() {
        let p = policy();
        let accepted = 1_000_000;
        assert_eq!(
            p.after_failure(1, accepted, accepted + 5, 1.0),
            Decision::RetryAt(accepted + 5 + 60_000)
        );
        assert_eq!(
            p.after_failure(2, accepted, accepted + 5, 1.0),
            Decision::RetryAt(accepted + 5 + 120_000)
        );
        // Every attempt counts: the same failure a second time waits longer.
        let Decision::RetryAt(first) = p.after_failure(1, accepted, accepted, 0.0) else {
            panic!("retried");
        };
        let Decision::RetryAt(second) = p.after_failure(2, accepted, accepted, 0.0) else {
            panic!("retried");
        };
        assert!(second > first);
    }

    #[test]
    fn a_leak_past_its_lifetime_is_given_up() {
        let p = policy();
        let lifetime = 5 * 86_400_000;
        assert!(matches!(
            p.after_failure(3, 0, lifetime - 1, 0.5),
            Decision::RetryAt(_)
        ));
        assert_eq!(p.after_failure(3, 0, lifetime, 0.5), Decision::GiveUp);
        assert_eq!(p.after_failure(1, 0, u64::MAX, 0.5), Decision::GiveUp);
        // A clock before the acceptance (stepped back) does not give up.
        assert!(matches!(
            p.after_failure(1, 10_000, 5_000, 0.5),
            Decision::RetryAt(_)
        ));
    }

    #[test]
    fn the_config_names_the_policy() {
        let dir = std::path::PathBuf::from("/nonexistent");
        let mut config = Config::defaults(dir);
        config.exit.retry_initial_secs = 2;
        config.exit.retry_max_secs = 8;
        config.exit.lifetime_secs = 30;
        let p = RetryPolicy::from_config(&config);
        assert_eq!(p.backoff.delay(9, 1.0), S(8));
        assert_eq!(p.after_failure(1, 0, 30_000, 0.0), Decision::GiveUp);
    }

    #[test]
    fn the_commit_of_a_delivery_is_retried_for_ever_up_to_a_minute() {
        assert_eq!(COMMIT_BACKOFF.delay(1, 1.0), S(1));
        assert_eq!(COMMIT_BACKOFF.delay(1_000, 1.0), S(60));
    }

    /// The whole life of a leak whose every attempt fails, driven by a
    /// manual clock through the schedule and the policy as the delivery
    /// loop drives them: no runtime, no sleep, five days in microseconds.
    #[test]
    fn a_leak_that_never_gets_through_is_tried_until_its_lifetime_in_virtual_time() {
        use crate::clock::{Clock as _, ManualClock};
        use leak_protocol::MessageId;

        use super::super::schedule::Schedule;

        for (draw, expected_attempts, given_up_at_s) in [(1.0, 126, 432_180), (0.0, 246, 432_090)] {
            let accepted = 1_700_000_000_000;
            let clock = ManualClock::new(accepted);
            let mut schedule = Schedule::default();
            let id = MessageId([7; 16]);
            schedule.insert(accepted, id);
            let mut attempts = 0u32;
            loop {
                let at = schedule.next_at(|_| false).unwrap();
                clock.set_ms(at);
                assert_eq!(schedule.take_due(clock.now_ms(), |_| false), Some(id));
                attempts += 1;
                let decision = policy().after_failure(attempts, accepted, clock.now_ms(), draw);
                schedule.landed(&id);
                match decision {
                    Decision::RetryAt(next) => schedule.insert(next, id),
                    Decision::GiveUp => break,
                }
            }
            assert_eq!(attempts, expected_attempts, "draw {draw}");
            assert_eq!(clock.now_ms() - accepted, given_up_at_s * 1000);
            assert_eq!(schedule.next_at(|_| false), None);
        }
    }
}
