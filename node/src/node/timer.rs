//! The timer: every packet is held for the mixing delay its sender chose,
//! in one bounded heap, fair between the peers it came from.

use std::sync::Arc;

use leak_protocol::Packet;
use libp2p::PeerId;
use tokio::sync::{mpsc, watch};

use super::{links::send_to, shared::Shared};
use crate::{
    held::{HeldQueue, Hold},
    relay::DropReason,
};

/// A packet for the timer: when, from whom, to whom.
pub(super) struct TimerItem {
    /// When to release it (Unix ms, by the node's clock).
    pub due_ms: u64,
    /// The peer it came from (for fairness when the heap is full).
    pub source: PeerId,
    /// Where it goes.
    pub next_hop: PeerId,
    /// The packet.
    pub packet: Packet,
}

/// Batches of [`TimerItem`]s waiting for the timer (each up to a worker's
/// batch of packets).
pub(super) const TIMER_BATCHES: usize = 64;

/// How long past the first due packet the timer waits before it releases:
/// packets due within this of one another leave on one wake-up of the
/// node, not one each (a quiet relay's CPU goes mostly to waking up). A
/// packet is never released before its delay, and at most this much after
/// it (a mixing delay is a minute on average); a burst is at most the
/// packets due in this long.
const RELEASE_GROUPING_MS: u64 = 50;

/// Holds packets until they are due, then passes each to its link.
pub(super) async fn run_timer(
    mut incoming: mpsc::Receiver<Vec<TimerItem>>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut held: HeldQueue<PeerId, u64, (PeerId, Packet)> =
        HeldQueue::new(shared.config.limits.held_packets);
    loop {
        let wait = held.next_due().map(|due| {
            let release = due.saturating_add(RELEASE_GROUPING_MS);
            std::time::Duration::from_millis(release.saturating_sub(shared.clock.now_ms()))
        });
        tokio::select! {
            _ = shutdown.changed() => break,
            items = incoming.recv() => match items {
                Some(items) => for item in items {
                    match held.push(item.source, item.due_ms, (item.next_hop, item.packet)) {
                        Hold::Held => {}
                        Hold::HeldEvictedOther | Hold::DroppedFull => shared.drop_packet(DropReason::HeldFull),
                    }
                },
                None => break,
            },
            () = async {
                match wait {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => std::future::pending().await,
                }
            } => {
                let now = shared.clock.now_ms();
                while let Some((next_hop, packet)) = held.pop_due(now) {
                    send_to(&shared, next_hop, packet);
                }
            }
        }
        shared.metrics.held_packets.set(held.len() as i64);
    }
    for _ in 0..held.clear() {
        shared.drop_packet(DropReason::Shutdown);
    }
    shared.metrics.held_packets.set(0);
}
