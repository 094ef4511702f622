//! Per-source quotas on mailbox deposits: what one previous hop may store
//! on this relay.
//!
//! A reply reaches its mailbox from the hop before it, and storing it
//! costs this relay disk and a database write; the per-mailbox and total
//! caps ([`crate::store::MailboxLimits`]) bound the storage but not who
//! fills it: one peer forwarding a flood of replies (to one mailbox, or
//! spread over many so that no mailbox cap applies) could take the whole
//! node's storage and push every other client's receipts out. So each
//! previous-hop peer, per window of the node's clock, may deposit at most
//! `max_deposits` replies, into at most `max_mailboxes` distinct mailboxes.
//! What is over is dropped and counted (`deposit_quota`, `mailbox_quota`).
//!
//! Pure: the source, the mailbox and the time in, a decision out. Memory is
//! bounded: at most [`MAX_SOURCES`] sources are tracked per window (a new
//! source beyond that is refused as over its quota), and each source's set
//! of mailboxes holds at most `max_mailboxes`.

use std::{
    collections::{HashMap, HashSet},
    hash::Hash,
};

use super::core::DropReason;

/// Sources tracked in one window, at most. A relay has far fewer peers
/// (every source is a connected node); a flood of sources is refused.
pub const MAX_SOURCES: usize = 4096;

/// The quotas (from `[mailbox]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DepositLimits {
    /// The window's length, in ms.
    pub window_ms: u64,
    /// Most replies one source may deposit per window (0: no limit).
    pub max_deposits: u32,
    /// Most distinct mailboxes one source may deposit into per window
    /// (0: no limit).
    pub max_mailboxes: u32,
}

#[derive(Debug, Default)]
struct SourceUse {
    deposits: u32,
    mailboxes: HashSet<[u8; 32]>,
}

/// The deposits of the current window, per source.
#[derive(Debug)]
pub struct DepositQuota<S> {
    limits: DepositLimits,
    window: u64,
    sources: HashMap<S, SourceUse>,
}

impl<S: Hash + Eq + Clone> DepositQuota<S> {
    /// No deposits yet.
    pub fn new(limits: DepositLimits) -> Self {
        Self {
            limits,
            window: 0,
            sources: HashMap::new(),
        }
    }

    /// Whether `source` may deposit a reply into `mailbox` at `now_ms`;
    /// if so, the deposit is counted.
    pub fn admit(&mut self, source: &S, mailbox: &[u8; 32], now_ms: u64) -> Result<(), DropReason> {
        let window = now_ms / self.limits.window_ms.max(1);
        if window != self.window {
            self.window = window;
            self.sources.clear();
        }
        if !self.sources.contains_key(source) && self.sources.len() >= MAX_SOURCES {
            return Err(DropReason::DepositQuota);
        }
        let used = self.sources.entry(source.clone()).or_default();
        if self.limits.max_deposits > 0 && used.deposits >= self.limits.max_deposits {
            return Err(DropReason::DepositQuota);
        }
        if !used.mailboxes.contains(mailbox) {
            if self.limits.max_mailboxes > 0
                && used.mailboxes.len() >= self.limits.max_mailboxes as usize
            {
                return Err(DropReason::MailboxQuota);
            }
            used.mailboxes.insert(*mailbox);
        }
        used.deposits += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const LIMITS: DepositLimits = DepositLimits {
        window_ms: 60_000,
        max_deposits: 100,
        max_mailboxes: 10,
    };

    /// One source floods: its deposits beyond the quota are dropped, as
    /// deposit_quota; another source is not affected; the next window
    /// starts afresh.
    #[test]
    fn a_flooding_source_is_cut_off_and_others_are_not() {
        let mut quota = DepositQuota::new(LIMITS);
        let (flooder, honest) = ("flooder", "honest");
        let mut refused = 0;
        for i in 0..10_000u32 {
            let mailbox = [u8::try_from(i % 5).unwrap(); 32];
            match quota.admit(&flooder, &mailbox, 1_000) {
                Ok(()) => {}
                Err(reason) => {
                    assert_eq!(reason, DropReason::DepositQuota);
                    refused += 1;
                }
            }
        }
        assert_eq!(refused, 10_000 - 100);
        assert!(quota.admit(&honest, &[1; 32], 2_000).is_ok());
        // The next window.
        assert!(quota.admit(&flooder, &[1; 32], 60_000).is_ok());
    }

    /// One source spreads its replies over many mailboxes (so that no
    /// per-mailbox cap applies): beyond the distinct-mailbox quota they are
    /// dropped as mailbox_quota, while the mailboxes it already reached
    /// still take its replies.
    #[test]
    fn one_source_cannot_fill_many_mailboxes() {
        let mut quota = DepositQuota::new(LIMITS);
        for i in 0..10u8 {
            quota.admit(&"s", &[i; 32], 0).unwrap();
        }
        assert_eq!(
            quota.admit(&"s", &[99; 32], 0),
            Err(DropReason::MailboxQuota)
        );
        assert!(quota.admit(&"s", &[3; 32], 0).is_ok());
        assert!(quota.admit(&"other", &[99; 32], 0).is_ok());
    }

    /// A flood of sources is bounded in memory: beyond MAX_SOURCES a new
    /// one is refused until the window turns.
    #[test]
    fn sources_tracked_are_bounded() {
        let mut quota = DepositQuota::new(LIMITS);
        for i in 0..MAX_SOURCES {
            quota.admit(&i, &[0; 32], 5).unwrap();
        }
        assert_eq!(
            quota.admit(&MAX_SOURCES, &[0; 32], 5),
            Err(DropReason::DepositQuota)
        );
        assert!(
            quota.admit(&0, &[0; 32], 5).is_ok(),
            "a known source goes on"
        );
        assert!(quota.admit(&MAX_SOURCES, &[0; 32], 60_000).is_ok());
    }

    #[test]
    fn zero_means_no_limit() {
        let mut quota = DepositQuota::new(DepositLimits {
            window_ms: 60_000,
            max_deposits: 0,
            max_mailboxes: 0,
        });
        for i in 0..1_000u32 {
            quota
                .admit(&"s", &[u8::try_from(i % 256).unwrap(); 32], 0)
                .unwrap();
        }
    }
}
