//! The timer: every packet is held for the mixing delay its sender chose,
//! in one bounded heap, fair between the peers it came from; past a memory
//! budget, the packets themselves wait on disk.

use std::{collections::BTreeMap, sync::Arc};

use leak_protocol::Packet;
use libp2p::PeerId;
use tokio::sync::{mpsc, watch};

use super::{links::send_to, shared::Shared};
use crate::{
    held::{HeldQueue, Hold},
    held_disk::{HeldDisk, ToDisk},
    relay::DropReason,
    store::StoreError,
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

/// A held packet: in memory, or on disk under its key.
enum Held {
    /// In memory: its next hop and itself.
    Memory(Box<(PeerId, Packet)>),
    /// On disk, under this key.
    Disk(u64),
}

/// Holds packets until they are due, then passes each to its link. The
/// first `limits.held_in_memory` wait in memory, the rest in the
/// [`HeldDisk`]; both count against `limits.held_packets`.
pub(super) async fn run_timer(
    mut incoming: mpsc::Receiver<Vec<TimerItem>>,
    shared: Arc<Shared>,
    disk: Arc<HeldDisk>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut held: HeldQueue<PeerId, u64, Held> = HeldQueue::new(shared.config.limits.held_packets);
    let memory_cap = shared.config.limits.held_in_memory;
    let mut in_memory = 0usize;
    let mut next_key = 0u64;
    loop {
        let wait = held.next_due().map(|due| {
            let release = due.saturating_add(RELEASE_GROUPING_MS);
            std::time::Duration::from_millis(release.saturating_sub(shared.clock.now_ms()))
        });
        tokio::select! {
            _ = shutdown.changed() => break,
            items = incoming.recv() => match items {
                Some(items) => {
                    // Written to disk after the batch is placed: the
                    // packets bound for it, and those it no longer needs
                    // to keep (evicted to make room).
                    let mut put: BTreeMap<u64, (PeerId, Packet)> = BTreeMap::new();
                    let mut forget = Vec::new();
                    for item in items {
                        let place = if in_memory < memory_cap {
                            in_memory += 1;
                            Held::Memory(Box::new((item.next_hop, item.packet)))
                        } else {
                            next_key += 1;
                            put.insert(next_key, (item.next_hop, item.packet));
                            Held::Disk(next_key)
                        };
                        let gone = match held.push(item.source, item.due_ms, place) {
                            Hold::Held => continue,
                            Hold::HeldEvictedOther(gone) | Hold::DroppedFull(gone) => gone,
                        };
                        shared.drop_packet(DropReason::HeldFull);
                        match gone {
                            Held::Memory(_) => in_memory -= 1,
                            Held::Disk(key) => {
                                if put.remove(&key).is_none() {
                                    forget.push(key);
                                }
                            }
                        }
                    }
                    let put: Vec<ToDisk> =
                        put.into_iter().map(|(key, (hop, packet))| (key, hop, packet)).collect();
                    let written = put.len();
                    if let Err(e) = disk_update(&disk, put, forget).await {
                        // Their places stay in the queue and read as
                        // missing when due: counted then.
                        tracing::error!(error = %e, packets = written, "cannot write held packets to disk");
                    }
                }
                None => break,
            },
            () = async {
                match wait {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => std::future::pending().await,
                }
            } => {
                let now = shared.clock.now_ms();
                let mut from_disk = Vec::new();
                while let Some(due) = held.pop_due(now) {
                    match due {
                        Held::Memory(boxed) => {
                            in_memory -= 1;
                            let (next_hop, packet) = *boxed;
                            send_to(&shared, next_hop, packet);
                        }
                        Held::Disk(key) => from_disk.push(key),
                    }
                }
                let wanted = from_disk.len();
                match disk_take(&disk, from_disk).await {
                    Ok(taken) => for entry in taken {
                        match entry {
                            Some((next_hop, packet)) => send_to(&shared, next_hop, packet),
                            None => shared.drop_packet(DropReason::StorageError),
                        }
                    },
                    Err(e) => {
                        tracing::error!(error = %e, packets = wanted, "cannot read held packets from disk");
                        for _ in 0..wanted {
                            shared.drop_packet(DropReason::StorageError);
                        }
                    }
                }
            }
        }
        shared.metrics.held_packets.set(held.len() as i64);
        shared
            .metrics
            .held_on_disk
            .set(held.len().saturating_sub(in_memory) as i64);
    }
    for _ in held.drain() {
        shared.drop_packet(DropReason::Shutdown);
    }
    shared.metrics.held_packets.set(0);
    shared.metrics.held_on_disk.set(0);
}

/// [`HeldDisk::update`] on a blocking thread (a disk write must not stall the
/// runtime's network tasks).
async fn disk_update(
    disk: &Arc<HeldDisk>,
    put: Vec<ToDisk>,
    forget: Vec<u64>,
) -> Result<(), StoreError> {
    if put.is_empty() && forget.is_empty() {
        return Ok(());
    }
    let disk = disk.clone();
    tokio::task::spawn_blocking(move || disk.update(&put, &forget))
        .await
        .unwrap_or_else(|e| Err(StoreError::Task(e.to_string())))
}

/// [`HeldDisk::take`] on a blocking thread.
async fn disk_take(
    disk: &Arc<HeldDisk>,
    keys: Vec<u64>,
) -> Result<Vec<Option<(PeerId, Packet)>>, StoreError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let disk = disk.clone();
    tokio::task::spawn_blocking(move || disk.take(&keys))
        .await
        .unwrap_or_else(|e| Err(StoreError::Task(e.to_string())))
}
