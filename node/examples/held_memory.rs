//! What the timer's bookkeeping costs per held packet: fills a
//! [`HeldQueue`] as a relay's timer keys it (by the sending peer, due
//! time), at `limits.held_packets`' default, from 300 peers, and prints
//! the growth of this process's resident memory per entry. The packets
//! themselves are not counted (in memory, 4 KB each up to
//! `limits.held_in_memory`; the rest on disk): each entry carries a place
//! of the timer's size instead.
//!
//! ```text
//! cargo run --release -p leak-node --example held_memory
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

use leak_node::{Config, held::HeldQueue};
use libp2p::PeerId;

fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

fn main() {
    let cap = Config::defaults(std::path::PathBuf::new())
        .limits
        .held_packets;
    let peers: Vec<PeerId> = (0..300).map(|_| PeerId::random()).collect();
    let before = resident_kib();
    // The timer's place of a packet: a pointer or a slot and key (24 bytes).
    let mut queue: HeldQueue<PeerId, u64, [u64; 3]> = HeldQueue::new(cap);
    for i in 0..cap as u64 {
        let peer = peers[(i % 300) as usize];
        // Due times spread over ten minutes, in no order.
        queue.push(peer, 1_000_000 + (i * 7_919) % 600_000, [i; 3]);
    }
    let grown = resident_kib().saturating_sub(before);
    println!(
        "{} held packets: {} KiB of bookkeeping, {} bytes a packet",
        queue.len(),
        grown,
        grown * 1024 / queue.len().max(1) as u64
    );
}
