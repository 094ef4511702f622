//! The worker threads: batches from the fair inbound queue through the
//! [relay core](crate::relay), and each decision carried out.

use std::{sync::Arc, time::Duration};

use leak_protocol::NodeId;
use tokio::sync::mpsc;

use super::{
    cover::{LoopDeposit, loop_deposit},
    shared::Shared,
    timer::TimerItem,
};
use crate::{
    exit::{ExitDelivery, schedule::receipt_delay_ms},
    relay::{Decision, DropReason, NextHop, Unsynced, settle_batch},
    store::{Deposit, MailboxLimits},
};

/// Packets a worker takes from the queue at once (one database transaction).
const WORKER_BATCH: usize = 128;
/// How long an idle worker sleeps before it looks again (closing the queue
/// wakes it at once; this only bounds a missed wake-up).
const IDLE_WAIT: Duration = Duration::from_secs(5);

/// One worker thread: take batches fairly, open them, record replay tags in
/// one transaction, and carry out what the core decided.
pub(super) fn run_worker(shared: &Arc<Shared>, timer: &mpsc::Sender<Vec<TimerItem>>) {
    let gather = Duration::from_millis(shared.config.limits.batch_gather_ms);
    loop {
        let batch = shared.inbound.pop_batch(WORKER_BATCH, IDLE_WAIT, gather);
        if batch.is_empty() {
            if shared.inbound.is_closed() {
                return;
            }
            continue;
        }
        shared.metrics.queue_depth.set(shared.inbound.len() as i64);
        let now_ms = shared.clock.now_ms();
        let mut opened = Vec::with_capacity(batch.len());
        {
            let keys = shared.keys.read().unwrap_or_else(|e| e.into_inner());
            for (source, packet) in batch {
                let started = std::time::Instant::now();
                let result = shared.core.open(&packet, &keys, now_ms / 1000);
                shared
                    .metrics
                    .processing_seconds
                    .observe(started.elapsed().as_secs_f64());
                match result {
                    Ok((epoch, processed)) => opened.push((source, epoch, processed)),
                    Err(reason) => shared.drop_packet(reason),
                }
            }
        }
        // A next hop's Ed25519 key is decoded once, then remembered.
        let known =
            |peer: &libp2p::PeerId| *peer == shared.local_peer || shared.book.contains(peer);
        let resolve = |node: &NodeId| match shared.peer_ids.resolve(node, known) {
            None => NextHop::Invalid,
            Some(peer) if known(&peer) => NextHop::Known(peer),
            Some(_) => NextHop::Unknown,
        };
        // The tags become durable with the batch's deposits, or with a
        // sync below, before any packet of the batch leaves: one disk
        // flush per batch.
        let recorded = !opened.is_empty();
        let decided = settle_batch(
            &shared.core,
            &Unsynced(&shared.store),
            now_ms,
            opened,
            resolve,
        );
        let mut deposits = Vec::new();
        let mut holds = Vec::new();
        let mut exits = Vec::new();
        for opened in decided {
            match opened.decision {
                Decision::Hold {
                    due_ms,
                    next_hop,
                    packet,
                } => holds.push(TimerItem {
                    due_ms,
                    source: opened.source,
                    next_hop,
                    packet,
                }),
                Decision::Deposit {
                    mailbox,
                    reply,
                    visible_at_ms,
                    expires_at_ms,
                } => match loop_deposit(shared, &mailbox, &reply, now_ms) {
                    LoopDeposit::NotOurs => {
                        let admitted = shared
                            .deposit_quota
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .admit(&opened.source, &mailbox.0, now_ms);
                        match admitted {
                            Ok(()) => {
                                deposits.push((mailbox.0, reply, visible_at_ms, expires_at_ms));
                            }
                            Err(reason) => shared.drop_packet(reason),
                        }
                    }
                    LoopDeposit::Returned => shared.metrics.final_packet("loop"),
                    LoopDeposit::Tampered => shared.drop_packet(DropReason::TamperedLoop),
                },
                Decision::Echo {
                    due_ms,
                    next_hop,
                    packet,
                } => {
                    // Held like a receipt: the exit hop's delay, then the
                    // exit's random receipt hold.
                    let hold_ms =
                        receipt_delay_ms(shared.config.exit.receipt_delay_ms, &mut rand::rng());
                    shared.metrics.final_packet("echo");
                    holds.push(TimerItem {
                        due_ms: due_ms + hold_ms,
                        source: opened.source,
                        next_hop,
                        packet,
                    });
                }
                Decision::ToExit { message, delay } => exits.push(ExitDelivery { message, delay }),
                Decision::Drop(reason) => shared.drop_packet(reason),
            }
        }
        let synced = deposit(shared, &deposits);
        if recorded
            && !synced
            && let Err(e) = shared.store.sync()
        {
            // The tags may not be on disk: nothing of the batch leaves.
            tracing::error!(error = %e, "cannot flush replay tags; dropping the batch");
            for _ in 0..holds.len() + exits.len() {
                shared.drop_packet(DropReason::StorageError);
            }
            continue;
        }
        hold(shared, timer, holds);
        for delivery in exits {
            to_exit(shared, delivery);
        }
    }
}

/// Hands a batch's packets to the timer, each to be released at its
/// `due_ms`.
fn hold(shared: &Shared, timer: &mpsc::Sender<Vec<TimerItem>>, holds: Vec<TimerItem>) {
    if holds.is_empty() {
        return;
    }
    let count = holds.len();
    if timer.blocking_send(holds).is_err() {
        for _ in 0..count {
            shared.drop_packet(DropReason::Shutdown);
        }
    }
}

fn to_exit(shared: &Shared, delivery: ExitDelivery) {
    let Some(sink) = &shared.exit_sink else {
        shared.drop_packet(DropReason::NotAnExit);
        return;
    };
    match sink.try_send(delivery) {
        Ok(()) => shared.metrics.final_packet("exit"),
        Err(_) => shared.drop_packet(DropReason::ExitBacklog),
    }
}

/// Stores a batch's replies in their mailboxes (one durable transaction),
/// each visible once its delay has passed. Whether that transaction
/// committed (and so made the batch's replay tags durable too).
fn deposit(shared: &Shared, pending: &[([u8; 32], Vec<u8>, u64, u64)]) -> bool {
    if pending.is_empty() {
        return false;
    }
    let limits = MailboxLimits {
        per_mailbox: shared.config.mailbox.max_per_mailbox,
        total: shared.config.mailbox.max_total,
    };
    let deposits: Vec<Deposit<'_>> = pending
        .iter()
        .map(|(mailbox, reply, visible_at_ms, expires_at_ms)| Deposit {
            mailbox: *mailbox,
            reply,
            visible_at_ms: *visible_at_ms,
            expires_at_ms: *expires_at_ms,
        })
        .collect();
    let mut committed = true;
    for result in crate::relay::deposit_all(&shared.store, &deposits, limits) {
        match result {
            Ok(()) => {
                shared.metrics.final_packet("mailbox");
                shared.metrics.mailbox_replies.inc();
            }
            Err(reason) => {
                committed &= reason != DropReason::StorageError;
                shared.drop_packet(reason);
            }
        }
    }
    committed
}
