//! Held packets past the memory budget, on disk.
//!
//! A relay holds every packet for its mixing delay, a minute a hop on
//! average: at a core's worth of traffic that is hundreds of thousands of
//! packets, gigabytes. The timer keeps the first `limits.held_in_memory` in
//! memory and writes the rest here, in a database of their own
//! (`DATA_DIR/held.redb`) that nothing else shares, so its writes never
//! wait for the replay tags' flushes. What is written is only what memory
//! would have held: packets already accepted (their replay tags are
//! durable), to be sent when due. The file is not a promise: it is emptied
//! when the node starts, as the memory is, and its transactions are not
//! flushed one by one (every [`DURABLE_EVERY`]th is, which lets the
//! database reuse the pages freed since).

use std::{
    path::Path,
    sync::atomic::{AtomicU32, Ordering},
};

use leak_protocol::{PACKET_LEN, Packet};
use libp2p::PeerId;
use redb::{Database, ReadableDatabase, ReadableTableMetadata, TableDefinition};

use crate::store::StoreError;

/// ToDisk packets by the timer's key: the next hop's peer id (its length
/// in one byte first) and the packet.
const HELD: TableDefinition<u64, &[u8]> = TableDefinition::new("held");

/// One transaction in this many is durable: redb reuses the pages that
/// non-durable transactions freed only after a durable one.
const DURABLE_EVERY: u32 = 32;

/// A packet to write: its key, its next hop and itself.
pub type ToDisk = (u64, PeerId, Packet);

/// Held packets on disk, by key.
pub struct HeldDisk {
    db: Database,
    since_durable: AtomicU32,
}

impl HeldDisk {
    /// An empty store at `path`; what a previous run left there is
    /// removed first.
    pub fn create(path: &Path) -> Result<Self, StoreError> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(StoreError::Io {
                    what: "cannot remove the previous run's held packets",
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
        let db = Database::create(path).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Self::with_database(db)
    }

    /// A store in memory (tests).
    pub fn in_memory() -> Result<Self, StoreError> {
        let db = Database::builder().create_with_backend(redb::backends::InMemoryBackend::new())?;
        Self::with_database(db)
    }

    fn with_database(db: Database) -> Result<Self, StoreError> {
        let txn = db.begin_write()?;
        txn.open_table(HELD)?;
        txn.commit()?;
        Ok(Self {
            db,
            since_durable: AtomicU32::new(0),
        })
    }

    /// A write transaction, durable if it is the [`DURABLE_EVERY`]th.
    fn begin(&self) -> Result<redb::WriteTransaction, StoreError> {
        let mut txn = self.db.begin_write()?;
        if self.since_durable.fetch_add(1, Ordering::Relaxed) + 1 < DURABLE_EVERY {
            txn.set_durability(redb::Durability::None)
                .map_err(redb::Error::from)?;
        } else {
            self.since_durable.store(0, Ordering::Relaxed);
        }
        Ok(txn)
    }

    /// Writes `put` and removes the packets under `forget`, in one
    /// transaction.
    pub fn update(&self, put: &[ToDisk], forget: &[u64]) -> Result<(), StoreError> {
        if put.is_empty() && forget.is_empty() {
            return Ok(());
        }
        let txn = self.begin()?;
        {
            let mut table = txn.open_table(HELD)?;
            let mut value = Vec::with_capacity(1 + 64 + PACKET_LEN);
            for (key, next_hop, packet) in put {
                let hop = next_hop.to_bytes();
                // A peer id is a multihash of at most 64 digest bytes: its
                // encoding is well under 256 bytes.
                let Ok(len) = u8::try_from(hop.len()) else {
                    continue;
                };
                value.clear();
                value.push(len);
                value.extend_from_slice(&hop);
                value.extend_from_slice(packet.as_bytes());
                table.insert(key, value.as_slice())?;
            }
            for key in forget {
                table.remove(key)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Takes the packets under `keys` off the disk: for each key, its next
    /// hop and the packet, or `None` if nothing (readable) is there.
    pub fn take(&self, keys: &[u64]) -> Result<Vec<Option<(PeerId, Packet)>>, StoreError> {
        let mut taken = Vec::with_capacity(keys.len());
        if keys.is_empty() {
            return Ok(taken);
        }
        let txn = self.begin()?;
        {
            let mut table = txn.open_table(HELD)?;
            for key in keys {
                let entry = table.remove(key)?;
                taken.push(entry.and_then(|value| split(value.value())));
            }
        }
        txn.commit()?;
        Ok(taken)
    }

    /// Packets on disk.
    pub fn len(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(HELD)?.len()?)
    }

    /// Whether no packet is on disk.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }
}

fn split(value: &[u8]) -> Option<(PeerId, Packet)> {
    let (&len, rest) = value.split_first()?;
    let (next_hop, packet) = rest.split_at_checked(usize::from(len))?;
    Some((
        PeerId::from_bytes(next_hop).ok()?,
        Packet::from_bytes(packet)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(fill: u8) -> Packet {
        Packet::from_bytes(&[fill; PACKET_LEN]).expect("PACKET_LEN bytes")
    }

    #[test]
    fn packets_come_back_once_and_forgotten_ones_never() {
        let disk = HeldDisk::in_memory().expect("store");
        let hops: Vec<PeerId> = (0..100).map(|_| PeerId::random()).collect();
        let put: Vec<ToDisk> = (0..100u8)
            .map(|i| (u64::from(i), hops[usize::from(i)], packet(i)))
            .collect();
        disk.update(&put, &[]).expect("write");
        assert_eq!(disk.len().expect("len"), 100);
        disk.update(&[], &[3, 4]).expect("forget");
        let taken = disk.take(&[2, 3, 99, 1000]).expect("take");
        assert_eq!(taken.len(), 4);
        let (hop, p) = taken[0].as_ref().expect("2 is there");
        assert_eq!(hop, &hops[2]);
        assert_eq!(p.as_bytes(), packet(2).as_bytes());
        assert!(taken[1].is_none(), "3 was forgotten");
        assert!(taken[2].is_some());
        assert!(taken[3].is_none(), "1000 was never written");
        assert!(disk.take(&[2]).expect("take")[0].is_none(), "taken once");
        assert_eq!(disk.len().expect("len"), 96);
    }

    #[test]
    fn a_new_store_forgets_the_previous_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("held.redb");
        {
            let disk = HeldDisk::create(&path).expect("create");
            // More transactions than DURABLE_EVERY, so some are flushed.
            for i in 0..40u8 {
                disk.update(&[(u64::from(i), PeerId::random(), packet(i))], &[])
                    .expect("write");
            }
            assert_eq!(disk.len().expect("len"), 40);
        }
        let disk = HeldDisk::create(&path).expect("create again");
        assert!(disk.is_empty().expect("len"));
    }

    #[test]
    fn damaged_entries_read_as_missing() {
        assert!(split(&[]).is_none());
        assert!(
            split(&[5, 1, 2]).is_none(),
            "shorter than its length byte says"
        );
        let hop = PeerId::random().to_bytes();
        let mut short = vec![u8::try_from(hop.len()).expect("short id")];
        short.extend_from_slice(&hop);
        short.extend_from_slice(&[0; 100]);
        assert!(split(&short).is_none(), "not a whole packet");
        let mut bad_hop = vec![3, 1, 2, 3];
        bad_hop.extend_from_slice(&[0; PACKET_LEN]);
        assert!(split(&bad_hop).is_none(), "not a peer id");
        short.truncate(1 + hop.len());
        short.extend_from_slice(&[7; PACKET_LEN]);
        assert!(split(&short).is_some(), "a whole entry reads");
    }
}
