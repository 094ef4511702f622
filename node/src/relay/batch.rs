//! One batch through the core: open every packet, record the survivors'
//! replay tags in one durable transaction, decide. The worker threads of a
//! `leak-node` process and the virtual-time harness both run this.

use leak_protocol::{Packet, Processed};

use super::core::{Decision, DropReason, NextHop, RelayCore};
use crate::{
    epoch::KeyRing,
    store::{Deposit, MailboxLimits, Store, StoreError},
};

/// Where replay tags are remembered: durably, before any packet of the
/// batch leaves (a crash must not let a replay through). Either the log
/// flushes them itself ([`Store`]) or its user flushes before the batch's
/// packets leave ([`Unsynced`]).
pub trait ReplayLog {
    /// Records `(epoch, tag)` pairs; for each, whether it was new.
    fn record_replay_tags(&self, tags: &[(u64, [u8; 32])]) -> Result<Vec<bool>, StoreError>;
}

impl ReplayLog for Store {
    fn record_replay_tags(&self, tags: &[(u64, [u8; 32])]) -> Result<Vec<bool>, StoreError> {
        Store::record_replay_tags(self, tags)
    }
}

/// A [`Store`] whose replay tags wait for the caller's next durable
/// transaction ([`Store::record_replay_tags_unsynced`]): the worker
/// commits its batch's deposits, or [`Store::sync`]s, before it releases
/// any packet.
pub struct Unsynced<'a>(pub &'a Store);

impl ReplayLog for Unsynced<'_> {
    fn record_replay_tags(&self, tags: &[(u64, [u8; 32])]) -> Result<Vec<bool>, StoreError> {
        self.0.record_replay_tags_unsynced(tags)
    }
}

/// A packet of a batch, decided, with where it came from.
#[derive(Debug)]
pub struct Opened<S, P> {
    /// The peer that sent it.
    pub source: S,
    /// What to do with it.
    pub decision: Decision<P>,
}

/// Processes a batch of packets at `now_ms`: peels each with the key of
/// its epoch ([`RelayCore::open`]), then [`settle_batch`].
pub fn process_batch<S, P>(
    core: &RelayCore,
    keys: &KeyRing,
    replay: &impl ReplayLog,
    now_ms: u64,
    batch: Vec<(S, Packet)>,
    resolve: impl Fn(&leak_protocol::NodeId) -> NextHop<P>,
) -> Vec<Opened<S, P>> {
    let mut dropped = Vec::new();
    let mut opened = Vec::with_capacity(batch.len());
    for (source, packet) in batch {
        match core.open(&packet, keys, now_ms / 1000) {
            Ok((epoch, processed)) => opened.push((source, epoch, processed)),
            Err(reason) => dropped.push(Opened {
                source,
                decision: Decision::Drop(reason),
            }),
        }
    }
    dropped.extend(settle_batch(core, replay, now_ms, opened, resolve));
    dropped
}

/// Settles packets opened at `now_ms` (with their epochs): records the
/// replay tags of all of them in one transaction (none passes on unless its
/// tag is durably recorded) and decides each. `resolve` is the directory
/// look-up of [`RelayCore::decide`].
pub fn settle_batch<S, P>(
    core: &RelayCore,
    replay: &impl ReplayLog,
    now_ms: u64,
    opened: Vec<(S, u64, Processed)>,
    resolve: impl Fn(&leak_protocol::NodeId) -> NextHop<P>,
) -> Vec<Opened<S, P>> {
    if opened.is_empty() {
        return Vec::new();
    }
    let tags: Vec<(u64, [u8; 32])> = opened
        .iter()
        .filter_map(|(_, epoch, p)| p.replay_tag().map(|t| (*epoch, t.0)))
        .collect();
    let fresh = match replay.record_replay_tags(&tags) {
        Ok(fresh) => fresh,
        Err(e) => {
            tracing::error!(error = %e, "cannot record replay tags; dropping the batch");
            return opened
                .into_iter()
                .map(|(source, _, _)| Opened {
                    source,
                    decision: Decision::Drop(DropReason::StorageError),
                })
                .collect();
        }
    };
    opened
        .into_iter()
        .zip(fresh)
        .map(|((source, _, processed), fresh)| Opened {
            source,
            decision: if fresh {
                core.decide(processed, now_ms, &resolve)
            } else {
                Decision::Drop(DropReason::Replay)
            },
        })
        .collect()
}

/// Stores the replies of a batch in their mailboxes (one durable
/// transaction, which also makes every earlier one durable). For each,
/// `Ok` or why it was dropped; all of them `StorageError` when the
/// transaction failed.
pub fn deposit_all(
    store: &Store,
    deposits: &[Deposit<'_>],
    limits: MailboxLimits,
) -> Vec<Result<(), DropReason>> {
    if deposits.is_empty() {
        return Vec::new();
    }
    match store.mailbox_put_all(deposits, limits) {
        Ok(results) => results
            .into_iter()
            .map(|r| r.map_err(|_| DropReason::MailboxFull))
            .collect(),
        Err(e) => {
            tracing::error!(error = %e, "cannot store replies");
            vec![Err(DropReason::StorageError); deposits.len()]
        }
    }
}
