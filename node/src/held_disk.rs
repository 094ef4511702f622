//! Held packets past the memory budget, on disk.
//!
//! A relay holds every packet for its mixing delay, a minute a hop on
//! average: at a core's worth of traffic that is hundreds of thousands of
//! packets, gigabytes. The timer keeps the first `limits.held_in_memory` in
//! memory and writes the rest into one file of fixed-size slots
//! (`DATA_DIR/held`), [`SLOT_LEN`] bytes each: the slot's key, the next
//! hop's peer id, the packet. The timer ([`Slots`]) decides which slot a
//! packet takes and frees it when the packet leaves or is evicted; a freed
//! slot is reused, lowest first, so the file is as large as the most
//! packets it held at once. Nothing is flushed: the file holds only what
//! memory would have (packets already accepted, their replay tags durable,
//! to be sent when due), and like memory it is emptied when the node
//! starts and when it stops. A slot read back must carry the key it was
//! written with, so a failed or torn write reads as missing, never as
//! another packet.

use std::{
    collections::BTreeSet,
    fs::File,
    os::unix::fs::{FileExt as _, OpenOptionsExt as _},
    path::Path,
};

use leak_protocol::{PACKET_LEN, Packet};
use libp2p::PeerId;

use crate::store::StoreError;

/// The bytes before the packet: the key (8), the peer id's length (1), the
/// peer id (an Ed25519 one is 38 bytes), zeros.
const HEADER_LEN: usize = 64;
/// The bytes of one slot.
pub const SLOT_LEN: usize = HEADER_LEN + PACKET_LEN;

/// Where a packet waits: its slot, and the key that slot was written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// The slot's index in the file.
    pub slot: u64,
    /// Unique per write: a slot reused holds another key.
    pub key: u64,
}

/// Which slots are taken: the timer's own bookkeeping, no I/O.
#[derive(Debug, Default)]
pub struct Slots {
    free: BTreeSet<u64>,
    len: u64,
    next_key: u64,
}

impl Slots {
    /// A place for one more packet: the lowest free slot, or a new one.
    pub fn take(&mut self) -> Place {
        let slot = self.free.pop_first().unwrap_or_else(|| {
            self.len += 1;
            self.len - 1
        });
        self.next_key += 1;
        Place {
            slot,
            key: self.next_key,
        }
    }

    /// Frees a place (its packet left, or was evicted or never written).
    pub fn give_back(&mut self, place: Place) {
        if place.slot < self.len {
            self.free.insert(place.slot);
        }
        // Once every slot is free, the file can start again from its first.
        if self.free.len() as u64 == self.len {
            self.free.clear();
            self.len = 0;
        }
    }

    /// Slots holding a packet.
    pub fn in_use(&self) -> u64 {
        self.len - self.free.len() as u64
    }
}

/// The slot file.
pub struct HeldDisk {
    file: File,
}

impl HeldDisk {
    /// An empty slot file at `path` (mode 0600); what a previous run left
    /// there is discarded.
    pub fn create(path: &Path) -> Result<Self, StoreError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| StoreError::Io {
                what: "cannot create the held packets' file",
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self { file })
    }

    /// Writes each packet into its place; returns the places whose write
    /// failed (they read as missing).
    pub fn write(&self, packets: &[(Place, PeerId, Packet)]) -> Vec<(Place, std::io::Error)> {
        let mut failed = Vec::new();
        let mut slot = vec![0u8; SLOT_LEN];
        for (place, next_hop, packet) in packets {
            let hop = next_hop.to_bytes();
            // A peer id is a multihash of at most 64 digest bytes; the
            // node's peers' are Ed25519 keys, 38 bytes.
            let Some(len) = u8::try_from(hop.len())
                .ok()
                .filter(|&len| 9 + usize::from(len) <= HEADER_LEN)
            else {
                failed.push((*place, std::io::ErrorKind::InvalidInput.into()));
                continue;
            };
            slot.fill(0);
            slot[..8].copy_from_slice(&place.key.to_le_bytes());
            slot[8] = len;
            slot[9..9 + hop.len()].copy_from_slice(&hop);
            slot[HEADER_LEN..].copy_from_slice(packet.as_bytes());
            if let Err(e) = self.file.write_all_at(&slot, offset(place.slot)) {
                failed.push((*place, e));
            }
        }
        failed
    }

    /// Reads each place back: its next hop and packet, or `None` if the
    /// slot does not hold what was written there under that key.
    pub fn read(&self, places: &[Place]) -> Vec<Option<(PeerId, Packet)>> {
        let mut slot = vec![0u8; SLOT_LEN];
        places
            .iter()
            .map(|place| {
                self.file
                    .read_exact_at(&mut slot, offset(place.slot))
                    .ok()
                    .and_then(|()| parse(&slot, place.key))
            })
            .collect()
    }

    /// Empties the file (when the node stops).
    pub fn clear(&self) -> std::io::Result<()> {
        self.file.set_len(0)
    }
}

fn offset(slot: u64) -> u64 {
    slot * SLOT_LEN as u64
}

fn parse(slot: &[u8], key: u64) -> Option<(PeerId, Packet)> {
    let (header, packet) = slot.split_at_checked(HEADER_LEN)?;
    if header.get(..8)? != key.to_le_bytes() {
        return None;
    }
    let len = usize::from(*header.get(8)?);
    let hop = PeerId::from_bytes(header.get(9..9 + len)?).ok()?;
    Some((hop, Packet::from_bytes(packet)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(fill: u8) -> Packet {
        Packet::from_bytes(&[fill; PACKET_LEN]).expect("PACKET_LEN bytes")
    }

    #[test]
    fn slots_are_reused_lowest_first_and_the_file_starts_over_when_empty() {
        let mut slots = Slots::default();
        let places: Vec<Place> = (0..4).map(|_| slots.take()).collect();
        assert_eq!(
            places.iter().map(|p| p.slot).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        slots.give_back(places[2]);
        slots.give_back(places[0]);
        assert_eq!(slots.in_use(), 2);
        let again = slots.take();
        assert_eq!(again.slot, 0, "the lowest free slot");
        assert!(again.key > places[3].key, "a new key for a reused slot");
        for place in [again, places[1], places[3]] {
            slots.give_back(place);
        }
        assert_eq!(slots.in_use(), 0);
        assert_eq!(slots.take().slot, 0);
    }

    #[test]
    fn packets_read_back_under_their_key_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = HeldDisk::create(&dir.path().join("held")).expect("create");
        let mut slots = Slots::default();
        let hops: Vec<PeerId> = (0..50).map(|_| PeerId::random()).collect();
        let written: Vec<(Place, PeerId, Packet)> = (0..50u8)
            .map(|i| (slots.take(), hops[usize::from(i)], packet(i)))
            .collect();
        assert!(disk.write(&written).is_empty());
        let places: Vec<Place> = written.iter().map(|(p, _, _)| *p).collect();
        let read = disk.read(&places);
        for (i, entry) in read.iter().enumerate() {
            let (hop, p) = entry.as_ref().expect("written");
            assert_eq!(hop, &hops[i]);
            assert_eq!(p.as_bytes(), &[u8::try_from(i).expect("small"); PACKET_LEN]);
        }
        // A reused slot under a new key: the old key reads as missing.
        slots.give_back(places[7]);
        let reused = slots.take();
        assert_eq!(reused.slot, places[7].slot);
        assert!(disk.write(&[(reused, hops[0], packet(99))]).is_empty());
        assert!(disk.read(&[places[7]])[0].is_none());
        assert_eq!(
            disk.read(&[reused])[0]
                .as_ref()
                .map(|(_, p)| p.as_bytes()[0]),
            Some(99)
        );
        // Past the end of the file, and after clearing: missing.
        let beyond = Place { slot: 1000, key: 1 };
        assert!(disk.read(&[beyond])[0].is_none());
        disk.clear().expect("clear");
        assert!(disk.read(&places[..1])[0].is_none());
    }

    #[test]
    fn a_new_file_forgets_the_previous_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("held");
        let place = Place { slot: 0, key: 1 };
        {
            let disk = HeldDisk::create(&path).expect("create");
            assert!(
                disk.write(&[(place, PeerId::random(), packet(1))])
                    .is_empty()
            );
        }
        let disk = HeldDisk::create(&path).expect("create again");
        assert!(disk.read(&[place])[0].is_none());
        assert_eq!(std::fs::metadata(&path).expect("file").len(), 0);
    }

    #[test]
    fn damaged_slots_read_as_missing() {
        let hop = PeerId::random().to_bytes();
        let mut slot = vec![0u8; SLOT_LEN];
        slot[..8].copy_from_slice(&5u64.to_le_bytes());
        slot[8] = u8::try_from(hop.len()).expect("short id");
        slot[9..9 + hop.len()].copy_from_slice(&hop);
        assert!(parse(&slot, 5).is_some());
        assert!(parse(&slot, 6).is_none(), "another key");
        assert!(parse(&slot[..100], 5).is_none(), "torn");
        slot[8] = 60;
        assert!(parse(&slot, 5).is_none(), "a length past the header");
        slot[8] = 3;
        assert!(parse(&slot, 5).is_none(), "not a peer id");
    }
}
