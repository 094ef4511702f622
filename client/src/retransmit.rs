//! When a leak without a receipt is sent again: one pure policy that the
//! `leak send` loop and the virtual-time harness both follow.
//!
//! | step | time |
//! |---|---|
//! | attempt *n* handed to the entry relay | `sent_at` |
//! | its receipt cannot be in the mailbox before | `sent_at + path delay` |
//! | waited for, up to | `sent_at + path delay + receipt timeout` |
//! | then, if attempts remain, a pause uniform in [½, 1½] × the mean (a receipt arriving meanwhile still ends it) | `… + pause` |
//! | attempt *n + 1*: the same message id, the same exit, a fresh path | |
//!
//! The exit delivers a message id once however often it arrives, and
//! answers a repeat with the outcome it recorded.

use std::time::Duration;

use crate::config::SendConfig;

/// What the sender does next when a receipt has not come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Send attempt `attempt` at `at_ms`, unless a receipt comes first.
    Resend {
        /// The attempt's number (the first is 1).
        attempt: u32,
        /// When (Unix ms).
        at_ms: u64,
    },
    /// No attempt is left: without a receipt by `at_ms`, the send ends
    /// with no receipt.
    GiveUp {
        /// When (Unix ms).
        at_ms: u64,
    },
}

/// The sender's retransmission policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retransmit {
    /// Attempts in all (the first included).
    pub max_attempts: u32,
    /// How long a receipt is waited for once it could be there (ms).
    pub receipt_timeout_ms: u64,
    /// The mean pause before an attempt after the first (ms).
    pub mean_pause_ms: u64,
}

impl Retransmit {
    /// The policy of a client's `[send]` settings.
    pub fn from_config(send: &SendConfig) -> Self {
        Self {
            max_attempts: 1 + send.retransmissions,
            receipt_timeout_ms: send.receipt_timeout_secs.saturating_mul(1000),
            mean_pause_ms: send.retransmit_delay_ms,
        }
    }

    /// How long after it was sent a receipt to an attempt whose path holds
    /// it `path_delay_ms` in all is waited for.
    pub fn window(&self, path_delay_ms: u64) -> Duration {
        Duration::from_millis(path_delay_ms.saturating_add(self.receipt_timeout_ms))
    }

    /// A pause before the next attempt: uniform between half and one and a
    /// half times the mean.
    pub fn pause<R: rand::Rng + ?Sized>(&self, rng: &mut R) -> Duration {
        let mean = self.mean_pause_ms;
        let low = mean / 2;
        let high = mean.saturating_add(mean / 2);
        let span = high - low + 1;
        Duration::from_millis(low + rng.next_u64() % span)
    }

    /// What follows attempt `attempt`, sent at `sent_at_ms` over a path of
    /// `path_delay_ms`, if no receipt comes.
    pub fn after<R: rand::Rng + ?Sized>(
        &self,
        attempt: u32,
        sent_at_ms: u64,
        path_delay_ms: u64,
        rng: &mut R,
    ) -> Next {
        let waited = sent_at_ms.saturating_add(ms(self.window(path_delay_ms)));
        if attempt >= self.max_attempts {
            Next::GiveUp { at_ms: waited }
        } else {
            Next::Resend {
                attempt: attempt + 1,
                at_ms: waited.saturating_add(ms(self.pause(rng))),
            }
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use rand::{SeedableRng as _, rngs::StdRng};

    use super::*;

    const POLICY: Retransmit = Retransmit {
        max_attempts: 3,
        receipt_timeout_ms: 60_000,
        mean_pause_ms: 2_000,
    };

    #[test]
    fn pauses_are_within_bounds() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..1000 {
            let p = POLICY.pause(&mut rng);
            assert!((1000..=3000).contains(&p.as_millis()), "{p:?}");
        }
        let none = Retransmit {
            mean_pause_ms: 0,
            ..POLICY
        };
        assert_eq!(none.pause(&mut rng), Duration::ZERO);
    }

    #[test]
    fn each_attempt_waits_for_its_path_and_the_timeout_then_pauses() {
        let mut rng = StdRng::seed_from_u64(2);
        match POLICY.after(1, 10_000, 700, &mut rng) {
            Next::Resend { attempt, at_ms } => {
                assert_eq!(attempt, 2);
                assert!(
                    (10_000 + 700 + 60_000 + 1_000..=10_000 + 700 + 60_000 + 3_000)
                        .contains(&at_ms)
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            POLICY.after(2, 0, 0, &mut rng),
            Next::Resend { attempt: 3, .. }
        ));
        assert_eq!(
            POLICY.after(3, 5_000, 300, &mut rng),
            Next::GiveUp {
                at_ms: 5_000 + 300 + 60_000
            }
        );
    }
}
