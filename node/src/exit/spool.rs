//! The queued leaks' bodies (recipient and text), in one file of fixed-size
//! slots: `exit-queue/spool`.
//!
//! A leak is written into a free slot and synced before its queue entry is
//! committed; once its outcome is committed, its slot is overwritten with
//! zeros and synced, and only then reused. Overwriting in place scrubs the
//! very blocks that held the text, and a batch of finished leaks costs one
//! `fdatasync` of one file: no file is created, renamed or unlinked per
//! leak (on ext4 an unlink also frees, and may discard, the file's blocks).
//!
//! A slot is [`SLOT_LEN`] bytes: a header (`LKS1`, the leak's key, which
//! the exit names it by instead of its message id, [`super::dedup`]; the
//! length), the leak, zeros. A slot of zeros is free. At start, every slot
//! whose id is not queued (written, but its entry never committed; or
//! finished, but not yet zeroed) is zeroed, and the free slots at the end
//! are cut off once zeroed and synced.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    fs::File,
    os::unix::fs::{FileExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    sync::Mutex,
};

use leak_protocol::{MessageId, sphinx::MESSAGE_CAPACITY};
use zeroize::{Zeroize as _, Zeroizing};

use super::ExitError;

/// The bytes of one slot.
pub const SLOT_LEN: usize = 4096;
const MAGIC: &[u8; 4] = b"LKS1";
/// Magic, message id, length (u32, little-endian).
const HEADER_LEN: usize = 4 + 16 + 4;
/// The largest leak a slot holds.
pub const MAX_BODY_LEN: usize = SLOT_LEN - HEADER_LEN;
const _: () = assert!(MESSAGE_CAPACITY <= MAX_BODY_LEN, "a leak fits a slot");

/// The file's name in the queue directory.
pub const SPOOL_FILE: &str = "spool";

struct Slots {
    by_id: HashMap<MessageId, u64>,
    free: BTreeSet<u64>,
    /// Slots in the file.
    len: u64,
}

impl Slots {
    fn take(&mut self) -> u64 {
        match self.free.pop_first() {
            Some(slot) => slot,
            None => {
                self.len += 1;
                self.len - 1
            }
        }
    }
}

/// The spool file.
pub struct Spool {
    /// For writing and reading leaks.
    file: File,
    /// For zeroing them: a descriptor of its own, so that a write-back
    /// error of a leak being accepted is reported to `put`'s sync, not
    /// consumed by a scrub's (Linux reports it once per open file).
    scrubber: File,
    path: PathBuf,
    slots: Mutex<Slots>,
}

fn offset(slot: u64) -> u64 {
    slot * SLOT_LEN as u64
}

/// The id in a slot's bytes, if it holds a leak.
fn slot_id(bytes: &[u8]) -> Option<MessageId> {
    if bytes.len() < HEADER_LEN || &bytes[..4] != MAGIC {
        return None;
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&bytes[4..20]);
    Some(MessageId(id))
}

impl Spool {
    /// Opens (or creates) `dir/spool`. Every slot not holding one of
    /// `queued` is zeroed; leak files of the older layout
    /// (`dir/<id>.leak`) are moved into slots if queued, and scrubbed.
    pub fn open(dir: &Path, queued: &HashSet<MessageId>) -> Result<Self, ExitError> {
        let path = dir.join(SPOOL_FILE);
        let created = !path.exists();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| ExitError::io(format!("cannot open {}", path.display()), e))?;
        if created {
            crate::store::sync_dir(dir)?;
        }
        let scrubber = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| ExitError::io(format!("cannot open {}", path.display()), e))?;
        let size = file.metadata()?.len();
        let len = size.div_ceil(SLOT_LEN as u64);
        let mut slots = Slots {
            by_id: HashMap::new(),
            free: BTreeSet::new(),
            len,
        };
        let mut buf = Zeroizing::new(vec![0u8; SLOT_LEN]);
        let zeros = vec![0u8; SLOT_LEN];
        let mut zeroed = false;
        for slot in 0..len {
            buf.fill(0);
            let got = read_at_most(&file, &mut buf, offset(slot))?;
            let id = slot_id(&buf[..got]);
            match id {
                Some(id) if queued.contains(&id) && !slots.by_id.contains_key(&id) => {
                    slots.by_id.insert(id, slot);
                }
                _ => {
                    if buf[..got].iter().any(|&b| b != 0) {
                        file.write_all_at(&zeros, offset(slot))?;
                        zeroed = true;
                    }
                    slots.free.insert(slot);
                }
            }
        }
        let spool = Self {
            file,
            scrubber,
            path,
            slots: Mutex::new(slots),
        };
        if zeroed {
            spool.file.sync_data()?;
        }
        spool.shrink()?;
        spool.import_files(dir, queued)?;
        Ok(spool)
    }

    /// Moves queued leaks from files of the older layout into slots (again
    /// if a slot already holds one: its write may have been torn), and
    /// scrubs every other file in `dir`. Anything but a plain file is left
    /// alone (with a warning).
    fn import_files(&self, dir: &Path, queued: &HashSet<MessageId>) -> Result<(), ExitError> {
        let names: HashMap<String, MessageId> = queued
            .iter()
            .map(|id| (format!("{id}.leak"), *id))
            .collect();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == SPOOL_FILE {
                continue;
            }
            if !entry.file_type()?.is_file() {
                tracing::warn!(
                    path = %entry.path().display(),
                    "not a file: left alone in the exit's queue directory"
                );
                continue;
            }
            if let Some(id) = names.get(&name) {
                let body = Zeroizing::new(std::fs::read(entry.path())?);
                self.put(id, &body)?;
            }
            crate::store::scrub(&entry.path()).map_err(|e| {
                ExitError::io(format!("cannot scrub {}", entry.path().display()), e)
            })?;
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes leak `id` into a free slot and syncs it.
    pub fn put(&self, id: &MessageId, body: &[u8]) -> Result<(), ExitError> {
        if body.len() > MAX_BODY_LEN {
            return Err(ExitError::TooLarge(body.len()));
        }
        let slot = {
            let mut slots = self.lock();
            match slots.by_id.get(id) {
                Some(&slot) => slot,
                None => slots.take(),
            }
        };
        let mut bytes = Zeroizing::new(vec![0u8; SLOT_LEN]);
        bytes[..4].copy_from_slice(MAGIC);
        bytes[4..20].copy_from_slice(&id.0);
        bytes[20..24].copy_from_slice(&(body.len() as u32).to_le_bytes());
        bytes[HEADER_LEN..HEADER_LEN + body.len()].copy_from_slice(body);
        let written = self
            .file
            .write_all_at(&bytes, offset(slot))
            .and_then(|()| self.file.sync_data());
        bytes.zeroize();
        match written {
            Ok(()) => {
                self.lock().by_id.insert(*id, slot);
                Ok(())
            }
            Err(e) => {
                // Whatever reached the slot is zeroed before it is reused;
                // if even that fails, it is not reused before the start
                // zeroes it.
                let zeroed = self
                    .scrubber
                    .write_all_at(&[0u8; SLOT_LEN], offset(slot))
                    .and_then(|()| self.scrubber.sync_data());
                let mut slots = self.lock();
                if zeroed.is_ok() && !slots.by_id.values().any(|&s| s == slot) {
                    slots.free.insert(slot);
                }
                Err(ExitError::io(
                    format!("cannot write {}", self.path.display()),
                    e,
                ))
            }
        }
    }

    /// Leak `id`'s body; `None` if no intact slot holds it.
    pub fn get(&self, id: &MessageId) -> Result<Option<Zeroizing<Vec<u8>>>, ExitError> {
        let Some(slot) = self.lock().by_id.get(id).copied() else {
            return Ok(None);
        };
        let mut bytes = Zeroizing::new(vec![0u8; SLOT_LEN]);
        self.file
            .read_exact_at(&mut bytes, offset(slot))
            .map_err(|e| ExitError::io(format!("cannot read {}", self.path.display()), e))?;
        if slot_id(&bytes) != Some(*id) {
            return Ok(None);
        }
        let mut len = [0u8; 4];
        len.copy_from_slice(&bytes[20..24]);
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_BODY_LEN {
            return Ok(None);
        }
        Ok(Some(Zeroizing::new(
            bytes[HEADER_LEN..HEADER_LEN + len].to_vec(),
        )))
    }

    /// Zeroes the slots of `ids` (those it holds), syncs them with one
    /// `fdatasync`, and frees them. Ids it does not hold are skipped.
    pub fn scrub(&self, ids: &[MessageId]) -> Result<(), ExitError> {
        let taken: Vec<u64> = {
            let slots = self.lock();
            ids.iter()
                .filter_map(|id| slots.by_id.get(id).copied())
                .collect()
        };
        if taken.is_empty() {
            return Ok(());
        }
        let zeros = [0u8; SLOT_LEN];
        for &slot in &taken {
            self.scrubber
                .write_all_at(&zeros, offset(slot))
                .map_err(|e| ExitError::io(format!("cannot scrub {}", self.path.display()), e))?;
        }
        self.scrubber
            .sync_data()
            .map_err(|e| ExitError::io(format!("cannot sync {}", self.path.display()), e))?;
        let mut slots = self.lock();
        for id in ids {
            if let Some(slot) = slots.by_id.remove(id) {
                slots.free.insert(slot);
            }
        }
        Ok(())
    }

    /// Cuts off the free (zeroed and synced) slots at the end of the file.
    fn shrink(&self) -> Result<(), ExitError> {
        let mut slots = self.lock();
        let before = slots.len;
        while slots.len > 0 && slots.free.contains(&(slots.len - 1)) {
            slots.len -= 1;
            let last = slots.len;
            slots.free.remove(&last);
        }
        if slots.len < before || self.file.metadata()?.len() != offset(slots.len) {
            self.file.set_len(offset(slots.len))?;
            self.file.sync_all()?;
        }
        Ok(())
    }

    /// Leaks held.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.lock().by_id.len()
    }
}

/// Reads up to `buf.len()` bytes at `offset` (fewer at the end of the file).
fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64)? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn all_zero(path: &Path) -> bool {
        std::fs::read(path).unwrap().iter().all(|&b| b == 0)
    }

    #[test]
    fn put_get_scrub_and_reuse() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), &HashSet::new()).unwrap();
        let (a, b) = (MessageId([1; 16]), MessageId([2; 16]));
        spool.put(&a, b"first secret").unwrap();
        spool.put(&b, &vec![7u8; MAX_BODY_LEN]).unwrap();
        assert_eq!(spool.get(&a).unwrap().unwrap().as_slice(), b"first secret");
        assert_eq!(spool.get(&b).unwrap().unwrap().len(), MAX_BODY_LEN);
        assert!(
            spool
                .put(&MessageId([3; 16]), &vec![0u8; MAX_BODY_LEN + 1])
                .is_err()
        );
        let path = dir.path().join(SPOOL_FILE);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * SLOT_LEN as u64);
        spool.scrub(&[a]).unwrap();
        assert!(spool.get(&a).unwrap().is_none());
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            bytes[..SLOT_LEN].iter().all(|&x| x == 0),
            "a's slot is zeroed"
        );
        assert!(!bytes.windows(12).any(|w| w == b"first secret"));
        // The freed slot is reused: the file does not grow.
        spool.put(&MessageId([4; 16]), b"second").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * SLOT_LEN as u64);
        spool
            .scrub(&[b, MessageId([4; 16]), MessageId([9; 16])])
            .unwrap();
        assert!(all_zero(&path));
        assert_eq!(spool.held(), 0);
    }

    #[test]
    fn reopening_keeps_the_queued_and_zeroes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let (kept, orphan, tail) = (MessageId([1; 16]), MessageId([2; 16]), MessageId([3; 16]));
        {
            let spool = Spool::open(dir.path(), &HashSet::new()).unwrap();
            spool.put(&orphan, b"never acknowledged").unwrap();
            spool.put(&kept, b"kept").unwrap();
            spool.put(&tail, b"finished, not yet zeroed").unwrap();
        }
        // A leak file of the older layout, queued, and one not queued.
        let legacy = MessageId([5; 16]);
        std::fs::write(dir.path().join(format!("{legacy}.leak")), b"from a file").unwrap();
        std::fs::write(dir.path().join("gone.leak"), b"not queued").unwrap();
        let queued: HashSet<MessageId> = [kept, legacy].into_iter().collect();
        let spool = Spool::open(dir.path(), &queued).unwrap();
        assert_eq!(spool.get(&kept).unwrap().unwrap().as_slice(), b"kept");
        assert_eq!(
            spool.get(&legacy).unwrap().unwrap().as_slice(),
            b"from a file"
        );
        assert!(spool.get(&orphan).unwrap().is_none());
        assert_eq!(spool.held(), 2);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![SPOOL_FILE.to_owned()], "the files are scrubbed");
        let bytes = std::fs::read(dir.path().join(SPOOL_FILE)).unwrap();
        assert!(!bytes.windows(10).any(|w| w == b"never ackn"));
        assert!(!bytes.windows(10).any(|w| w == b"finished, "));
        // The free tail was cut off; the legacy leak took the orphan's slot.
        assert_eq!(bytes.len(), 2 * SLOT_LEN);
        spool.scrub(&[kept, legacy]).unwrap();
        assert!(all_zero(&dir.path().join(SPOOL_FILE)));
    }

    #[test]
    fn a_damaged_slot_reads_as_missing_and_a_torn_import_is_redone() {
        let dir = tempfile::tempdir().unwrap();
        let id = MessageId([7; 16]);
        {
            let spool = Spool::open(dir.path(), &HashSet::new()).unwrap();
            spool.put(&id, b"whole").unwrap();
            // Its body torn away (the header alone reached the disk).
            spool
                .file
                .write_all_at(&[0u8; SLOT_LEN - HEADER_LEN], HEADER_LEN as u64)
                .unwrap();
            // A length no slot holds.
            spool
                .file
                .write_all_at(&u32::MAX.to_le_bytes(), 20)
                .unwrap();
            assert!(spool.get(&id).unwrap().is_none());
        }
        // The old layout's file still holds it: imported again over the
        // torn slot, and a directory there is left alone.
        std::fs::write(dir.path().join(format!("{id}.leak")), b"whole").unwrap();
        std::fs::create_dir(dir.path().join("not-a-leak")).unwrap();
        let queued: HashSet<MessageId> = [id].into_iter().collect();
        let spool = Spool::open(dir.path(), &queued).unwrap();
        assert_eq!(spool.get(&id).unwrap().unwrap().as_slice(), b"whole");
        assert!(dir.path().join("not-a-leak").is_dir());
        assert!(!dir.path().join(format!("{id}.leak")).exists());
    }
}
