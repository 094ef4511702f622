//! Fetches of conversations' answers waiting for their replies.
//!
//! A fetch takes the place of a loop in the agent's schedule (SPEC.md
//! §11.1): it is built like one and its reply comes back to the agent's
//! mailbox like one. Which conversation is fetched, and when, follows the
//! agent's own timer ([`next_fetch_ms`]), never the moment a leak left.

use std::collections::VecDeque;

use leak_protocol::{ReplyKeys, answers::FetchReply};
use rand::RngExt as _;

/// At most this many fetches wait for their replies (older ones are
/// given up on).
pub const MAX_PENDING_FETCHES: usize = 64;

/// Fetches sent and not answered yet.
#[derive(Default)]
pub struct PendingFetches {
    fetches: VecDeque<(u64, String, ReplyKeys)>,
}

impl PendingFetches {
    /// Remembers a fetch of conversation `label`, given up on at
    /// `expires_at_ms`.
    pub fn push(&mut self, expires_at_ms: u64, label: String, keys: ReplyKeys) {
        while self.fetches.len() >= MAX_PENDING_FETCHES {
            self.fetches.pop_front();
        }
        self.fetches.push_back((expires_at_ms, label, keys));
    }

    /// Gives up on the fetches whose time is past.
    pub fn expire(&mut self, now_ms: u64) {
        self.fetches.retain(|(expires, _, _)| *expires > now_ms);
    }

    /// Whether a fetch of `label` waits for its reply.
    pub fn waiting_for(&self, label: &str) -> bool {
        self.fetches.iter().any(|(_, l, _)| l == label)
    }

    /// The conversation and the reply, if `entry` is the reply to one of
    /// these fetches (it is then forgotten).
    pub fn recognise(&mut self, entry: &[u8]) -> Option<(String, FetchReply)> {
        let (index, reply) = self
            .fetches
            .iter()
            .enumerate()
            .find_map(|(i, (_, _, keys))| {
                let opened = keys.open(entry).ok()?;
                FetchReply::decode(&opened).ok().map(|r| (i, r))
            })?;
        let (_, label, _) = self.fetches.remove(index)?;
        Some((label, reply))
    }
}

/// When to fetch a conversation next: a uniform draw between half and one
/// and a half of the mean interval, so fetches of several conversations do
/// not line up and none follows a send.
pub fn next_fetch_ms<R: rand::Rng + ?Sized>(now_ms: u64, mean_secs: u64, rng: &mut R) -> u64 {
    let mean_ms = mean_secs.saturating_mul(1000).max(1);
    now_ms.saturating_add(rng.random_range(mean_ms / 2..=mean_ms + mean_ms / 2))
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng as _;

    use super::*;

    #[test]
    fn fetch_times_spread_around_the_mean() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let draws: Vec<u64> = (0..1000).map(|_| next_fetch_ms(0, 100, &mut rng)).collect();
        assert!(draws.iter().all(|d| (50_000..=150_000).contains(d)));
        let mean = draws.iter().sum::<u64>() / 1000;
        assert!((90_000..110_000).contains(&mean), "{mean}");
    }
}
