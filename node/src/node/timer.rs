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
    held_disk::{HeldDisk, Place, Slots},
    relay::DropReason,
    release::release_at,
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

/// A held packet: in memory, or on disk.
enum Held {
    /// In memory: its next hop and itself.
    Memory(Box<(PeerId, Packet)>),
    /// In the held packets' file, there.
    Disk(Place),
}

/// Holds packets until they are due, then passes each to its link. The
/// first `limits.held_in_memory` wait in memory, the rest in the
/// [`HeldDisk`] file; both count against `limits.held_packets`.
pub(super) async fn run_timer(
    mut incoming: mpsc::Receiver<Vec<TimerItem>>,
    shared: Arc<Shared>,
    disk: Arc<HeldDisk>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut held: HeldQueue<PeerId, u64, Held> = HeldQueue::new(shared.config.limits.held_packets);
    let memory_cap = shared.config.limits.held_in_memory;
    let mut in_memory = 0usize;
    let mut slots = Slots::default();
    loop {
        // Packets leave on the clock's grid, all those due by a line at
        // once (see [`release_at`]).
        let wait = held.next_due().map(|due| {
            let at = release_at(due, |when, limit| held.due_by(when, limit));
            std::time::Duration::from_millis(at.saturating_sub(shared.clock.now_ms()))
        });
        tokio::select! {
            _ = shutdown.changed() => break,
            items = incoming.recv() => match items {
                Some(items) => {
                    // Written once the batch is placed, less what was
                    // evicted meanwhile; by key.
                    let mut writes: BTreeMap<u64, (Place, PeerId, Packet)> = BTreeMap::new();
                    for item in items {
                        let place = if in_memory < memory_cap {
                            in_memory += 1;
                            Held::Memory(Box::new((item.next_hop, item.packet)))
                        } else {
                            let place = slots.take();
                            writes.insert(place.key, (place, item.next_hop, item.packet));
                            Held::Disk(place)
                        };
                        let gone = match held.push(item.source, item.due_ms, place) {
                            Hold::Held => continue,
                            Hold::HeldEvictedOther(gone) | Hold::DroppedFull(gone) => gone,
                        };
                        shared.drop_packet(DropReason::HeldFull);
                        match gone {
                            Held::Memory(_) => in_memory -= 1,
                            Held::Disk(place) => {
                                writes.remove(&place.key);
                                slots.give_back(place);
                            }
                        }
                    }
                    if !writes.is_empty() {
                        let writes: Vec<_> = writes.into_values().collect();
                        let failed = on_disk(&disk, move |disk| disk.write(&writes)).await;
                        if let Some((_, e)) = failed.first() {
                            // Those read as missing when due, and are
                            // counted then.
                            tracing::error!(error = %e, packets = failed.len(), "cannot write held packets to disk");
                        }
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
                        Held::Disk(place) => from_disk.push(place),
                    }
                }
                if !from_disk.is_empty() {
                    let places = from_disk.clone();
                    let mut read = on_disk(&disk, move |disk| disk.read(&places))
                        .await
                        .into_iter();
                    for place in from_disk {
                        slots.give_back(place);
                        match read.next().flatten() {
                            Some((next_hop, packet)) => send_to(&shared, next_hop, packet),
                            None => shared.drop_packet(DropReason::StorageError),
                        }
                    }
                }
            }
        }
        shared.metrics.held_packets.set(held.len() as i64);
        shared.metrics.held_on_disk.set(slots.in_use() as i64);
    }
    // The file is emptied below: no slot needs giving back.
    for _ in 0..held.clear() {
        shared.drop_packet(DropReason::Shutdown);
    }
    if let Err(e) = disk.clear() {
        tracing::warn!(error = %e, "cannot empty the held packets' file");
    }
    shared.metrics.held_packets.set(0);
    shared.metrics.held_on_disk.set(0);
}

/// Runs `work` on the held packets' file on a blocking thread (disk I/O
/// must not stall the runtime's network tasks). A read of a stopped
/// thread's results is empty: its packets count as missing.
async fn on_disk<T: Default + Send + 'static>(
    disk: &Arc<HeldDisk>,
    work: impl FnOnce(&HeldDisk) -> T + Send + 'static,
) -> T {
    let disk = disk.clone();
    tokio::task::spawn_blocking(move || work(&disk))
        .await
        .unwrap_or_default()
}
