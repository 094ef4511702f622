//! The node's one embedded database (redb): everything that must survive a
//! restart, nothing that identifies a sender.
//!
//! | table | key | value | why |
//! |---|---|---|---|
//! | `replay_<epoch>` | 32-byte replay tag | () | packets already processed under that epoch's key; the table goes with the key |
//! | `mailbox` | (mailbox id, sequence) | (visible from, expiry, sealed reply) | replies waiting for their client, stored on arrival and shown once their delay has passed |
//! | `meta` | name | u64 | counters |
//!
//! No table holds an address, a peer id, a recipient or message text.
//!
//! Mix secrets are not in the database: redb is copy-on-write and does not
//! scrub the pages it frees, so a deleted secret could be read back from the
//! file, which would void forward secrecy. They live in `mix-keys/` beside it,
//! one file per epoch (mode 0600), and are deleted by overwriting the file
//! with zeros, syncing it, and unlinking it.

use std::{
    io::Write as _,
    os::unix::fs::DirBuilderExt as _,
    path::{Path, PathBuf},
};

use leak_net::durable::{self, Access};
use redb::{
    Database, ReadableDatabase as _, ReadableTable as _, ReadableTableMetadata as _,
    TableDefinition, TableHandle as _,
};
use zeroize::Zeroizing;

/// (mailbox id, sequence) → (expiry, sealed reply).
/// Value: (visible from, expires at) in Unix milliseconds, and the reply.
type MailboxTable<'a> = TableDefinition<'a, ([u8; 32], u64), (u64, u64, &'static [u8])>;
const MAILBOX: MailboxTable<'static> = TableDefinition::new("mailbox");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const MAILBOX_SEQ: &str = "mailbox_seq";

fn replay_table_name(epoch: u64) -> String {
    format!("replay_{epoch}")
}

/// A mix secret as stored: 32 bytes, zeroed when dropped.
pub type MixKeyBytes = Zeroizing<[u8; 32]>;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database cannot be opened: another `leak-node` holds it, or the
    /// file is damaged.
    #[error(
        "cannot open the database {path} (is another leak-node using this data directory?): {source}"
    )]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: redb::DatabaseError,
    },
    /// A read, write or commit of the database failed.
    #[error("the node's database: {0}")]
    Database(#[from] redb::Error),
    /// A file beside the database (the mix keys) cannot be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A mix key file is not 32 bytes.
    #[error("{0} is not a 32-byte mix key")]
    BadKey(PathBuf),
}

impl StoreError {
    fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| Self::Io { what, path, source }
    }
}

/// redb reports each step with its own error type; all are the database's.
macro_rules! database_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                Self::Database(e.into())
            }
        }
    )*};
}

database_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Why a reply could not be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MailboxFull {
    /// The mailbox already holds its maximum.
    #[error("the mailbox is full")]
    Mailbox,
    /// The node holds its maximum of replies.
    #[error("the node's mailbox storage is full")]
    Node,
}

/// Limits for storing a reply.
#[derive(Debug, Clone, Copy)]
pub struct MailboxLimits {
    /// Most replies per mailbox.
    pub per_mailbox: u32,
    /// Most replies in all.
    pub total: u64,
}

/// The node's database, and its directory of mix secrets.
pub struct Store {
    db: Database,
    keys_dir: PathBuf,
}

fn key_file_name(epoch: u64) -> String {
    format!("epoch-{epoch}.key")
}

// The exit's spool syncs its directory the same way.
pub(crate) use leak_net::durable::sync_dir;

/// Overwrites a file with zeros, syncs it and unlinks it (a secret or a
/// leak must not be readable from the disk after it is deleted).
pub(crate) fn scrub(path: &Path) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new().write(true).open(path)?;
    let mut left = file.metadata()?.len();
    let zeros = [0u8; 64 * 1024];
    while left > 0 {
        let n = usize::try_from(left.min(zeros.len() as u64)).unwrap_or(zeros.len());
        file.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    file.sync_all()?;
    drop(file);
    std::fs::remove_file(path)
}

/// A sealed reply to store in a mailbox ([`Store::mailbox_put_all`]).
#[derive(Debug, Clone, Copy)]
pub struct Deposit<'a> {
    /// The mailbox.
    pub mailbox: [u8; 32],
    /// The sealed reply.
    pub reply: &'a [u8],
    /// Shown from then (Unix ms), when its mixing delay has passed.
    pub visible_at_ms: u64,
    /// Forgotten then (Unix ms).
    pub expires_at_ms: u64,
}

impl Store {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let keys_dir = path
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join("mix-keys");
        Self::with_database(db, keys_dir)
    }

    /// A store whose database lives in memory (the virtual-time harness:
    /// the same tables and transactions, without a sync per batch); mix
    /// keys still go to `keys_dir`, as files.
    pub fn open_in_memory(keys_dir: &Path) -> Result<Self, StoreError> {
        let db = Database::builder().create_with_backend(redb::backends::InMemoryBackend::new())?;
        Self::with_database(db, keys_dir.to_path_buf())
    }

    fn with_database(db: Database, keys_dir: PathBuf) -> Result<Self, StoreError> {
        let txn = db.begin_write()?;
        txn.open_table(MAILBOX)?;
        txn.open_table(META)?;
        txn.commit()?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&keys_dir)
            .map_err(StoreError::io("cannot create", &keys_dir))?;
        Ok(Self { db, keys_dir })
    }

    /// The database itself, for the exit's tables (in `exit/store.rs`).
    pub(crate) fn db(&self) -> &Database {
        &self.db
    }

    /// Every stored mix key, by epoch.
    pub fn mix_keys(&self) -> Result<Vec<(u64, MixKeyBytes)>, StoreError> {
        let mut out = Vec::new();
        let entries = std::fs::read_dir(&self.keys_dir)
            .map_err(StoreError::io("cannot read", &self.keys_dir))?;
        for entry in entries {
            let entry = entry.map_err(StoreError::io("cannot read", &self.keys_dir))?;
            let name = entry.file_name();
            let Some(epoch) = name
                .to_str()
                .and_then(|n| n.strip_prefix("epoch-"))
                .and_then(|n| n.strip_suffix(".key"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let path = entry.path();
            let bytes =
                Zeroizing::new(std::fs::read(&path).map_err(StoreError::io("cannot read", &path))?);
            let secret: [u8; 32] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| StoreError::BadKey(path.clone()))?;
            out.push((epoch, Zeroizing::new(secret)));
        }
        out.sort_by_key(|(epoch, _)| *epoch);
        Ok(out)
    }

    /// Stores the secret of `epoch` durably (before it is published).
    pub fn put_mix_key(&self, epoch: u64, secret: &[u8; 32]) -> Result<(), StoreError> {
        let path = self.keys_dir.join(key_file_name(epoch));
        durable::write(&path, secret, Access::Private)
            .map_err(StoreError::io("cannot write", &path))
    }

    /// Deletes every epoch before `oldest_kept`: its secret (overwritten,
    /// synced, unlinked) and its replay tags (no packet for that key can be
    /// processed any more). Returns the epochs whose secrets were deleted.
    pub fn delete_epochs_before(&self, oldest_kept: u64) -> Result<Vec<u64>, StoreError> {
        let mut deleted = Vec::new();
        for (epoch, _) in self.mix_keys()? {
            if epoch >= oldest_kept {
                continue;
            }
            let path = self.keys_dir.join(key_file_name(epoch));
            scrub(&path).map_err(StoreError::io("cannot scrub", &path))?;
            deleted.push(epoch);
        }
        if !deleted.is_empty() {
            sync_dir(&self.keys_dir).map_err(StoreError::io("cannot sync", &self.keys_dir))?;
        }
        let txn = self.db.begin_write()?;
        let stale: Vec<String> = txn
            .list_tables()?
            .map(|t| t.name().to_owned())
            .filter(|name| {
                name.strip_prefix("replay_")
                    .and_then(|e| e.parse::<u64>().ok())
                    .is_some_and(|e| e < oldest_kept)
            })
            .collect();
        for name in &stale {
            txn.delete_table(TableDefinition::<&[u8; 32], ()>::new(name))?;
        }
        txn.commit()?;
        Ok(deleted)
    }

    /// Records a batch of replay tags, each under its epoch, in one durable
    /// transaction. Returns, for each, whether it was new (`true`) or a
    /// replay (`false`). A tag repeated within the batch is a replay too.
    pub fn record_replay_tags(&self, tags: &[(u64, [u8; 32])]) -> Result<Vec<bool>, StoreError> {
        self.record_tags(tags, redb::Durability::Immediate)
    }

    /// Records replay tags as [`Self::record_replay_tags`] does, without a
    /// disk flush of their own: they become durable with the next durable
    /// transaction ([`Self::sync`], or a batch's deposits), which the
    /// caller must commit before any packet of the batch leaves. A worker's
    /// batch then costs one flush, not one for its tags and another for its
    /// replies.
    pub fn record_replay_tags_unsynced(
        &self,
        tags: &[(u64, [u8; 32])],
    ) -> Result<Vec<bool>, StoreError> {
        self.record_tags(tags, redb::Durability::None)
    }

    /// Makes every earlier transaction durable (one disk flush).
    pub fn sync(&self) -> Result<(), StoreError> {
        self.db.begin_write()?.commit()?;
        Ok(())
    }

    fn record_tags(
        &self,
        tags: &[(u64, [u8; 32])],
        durability: redb::Durability,
    ) -> Result<Vec<bool>, StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(durability).map_err(redb::Error::from)?;
        let mut fresh = Vec::with_capacity(tags.len());
        {
            let mut epochs: Vec<u64> = tags.iter().map(|(e, _)| *e).collect();
            epochs.sort_unstable();
            epochs.dedup();
            let names: Vec<String> = epochs.iter().map(|e| replay_table_name(*e)).collect();
            let mut tables = Vec::with_capacity(names.len());
            for name in &names {
                tables.push(txn.open_table(TableDefinition::<&[u8; 32], ()>::new(name))?);
            }
            for (epoch, tag) in tags {
                let index = epochs.binary_search(epoch).unwrap_or_default();
                let table = &mut tables[index];
                fresh.push(table.insert(tag, ())?.is_none());
            }
        }
        txn.commit()?;
        Ok(fresh)
    }

    /// Stores a sealed reply for `mailbox`, to be shown from `visible_at_ms`
    /// (when its mixing delay has passed) until `expires_at_ms` (Unix ms).
    pub fn mailbox_put(
        &self,
        mailbox: &[u8; 32],
        reply: &[u8],
        visible_at_ms: u64,
        expires_at_ms: u64,
        limits: MailboxLimits,
    ) -> Result<Result<(), MailboxFull>, StoreError> {
        let deposit = Deposit {
            mailbox: *mailbox,
            reply,
            visible_at_ms,
            expires_at_ms,
        };
        let mut results = self.mailbox_put_all(std::slice::from_ref(&deposit), limits)?;
        Ok(results.pop().unwrap_or(Err(MailboxFull::Node)))
    }

    /// Stores many replies, as [`Store::mailbox_put`] does one, in one
    /// durable transaction (one sync for a worker's whole batch). The
    /// result for each, in order; a full mailbox refuses only its own.
    pub fn mailbox_put_all(
        &self,
        deposits: &[Deposit<'_>],
        limits: MailboxLimits,
    ) -> Result<Vec<Result<(), MailboxFull>>, StoreError> {
        let mut results = Vec::with_capacity(deposits.len());
        if deposits.is_empty() {
            return Ok(results);
        }
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(MAILBOX)?;
            let mut meta = txn.open_table(META)?;
            let mut total = table.len()?;
            let mut seq = meta.get(MAILBOX_SEQ)?.map_or(0, |v| v.value());
            for deposit in deposits {
                if total >= limits.total {
                    results.push(Err(MailboxFull::Node));
                    continue;
                }
                let mailbox = deposit.mailbox;
                let held = table.range((mailbox, 0)..=(mailbox, u64::MAX))?.count();
                if held >= limits.per_mailbox as usize {
                    results.push(Err(MailboxFull::Mailbox));
                    continue;
                }
                seq += 1;
                table.insert(
                    (mailbox, seq),
                    (deposit.visible_at_ms, deposit.expires_at_ms, deposit.reply),
                )?;
                total += 1;
                results.push(Ok(()));
            }
            meta.insert(MAILBOX_SEQ, seq)?;
        }
        txn.commit()?;
        Ok(results)
    }

    /// The replies of `mailbox` visible at `now_ms` and not yet expired, with
    /// their sequence numbers.
    pub fn mailbox_peek(
        &self,
        mailbox: &[u8; 32],
        now_ms: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(MAILBOX)?;
        let mut out = Vec::new();
        for entry in table.range((*mailbox, 0)..=(*mailbox, u64::MAX))? {
            let (key, value) = entry?;
            let (visible_at, expires_at, reply) = value.value();
            if visible_at <= now_ms && expires_at > now_ms {
                out.push((key.value().1, reply.to_vec()));
            }
        }
        Ok(out)
    }

    /// Deletes the given replies of `mailbox` (after the client confirmed).
    ///
    /// Without a sync of its own: the deletion reaches the disk with the
    /// next durable transaction (a worker's batch, within a second or so on
    /// a node with traffic). A crash before that hands the replies out once
    /// more, and a client drops a reply it already has (its key was used),
    /// whereas a sync per poll was most of the cost of a poll.
    pub fn mailbox_remove(&self, mailbox: &[u8; 32], seqs: &[u64]) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::None)
            .map_err(redb::Error::from)?;
        {
            let mut table = txn.open_table(MAILBOX)?;
            for seq in seqs {
                table.remove((*mailbox, *seq))?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Deletes expired replies; returns how many.
    pub fn mailbox_expire(&self, now_ms: u64) -> Result<usize, StoreError> {
        let txn = self.db.begin_write()?;
        let removed = {
            let mut table = txn.open_table(MAILBOX)?;
            let mut n = 0;
            for entry in table.extract_if(|_, (_, expires_at, _)| expires_at <= now_ms)? {
                entry?;
                n += 1;
            }
            n
        };
        txn.commit()?;
        Ok(removed)
    }

    /// How many replies are held.
    pub fn mailbox_len(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(MAILBOX)?.len()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: MailboxLimits = MailboxLimits {
        per_mailbox: 2,
        total: 3,
    };

    #[test]
    fn replay_tags_survive_reopen_and_go_with_their_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.redb");
        {
            let store = Store::open(&path).unwrap();
            store.put_mix_key(5, &[5; 32]).unwrap();
            store.put_mix_key(6, &[6; 32]).unwrap();
            assert_eq!(
                store
                    .record_replay_tags(&[(5, [1; 32]), (6, [1; 32]), (5, [1; 32])])
                    .unwrap(),
                vec![true, true, false]
            );
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store.record_replay_tags(&[(5, [1; 32])]).unwrap(),
            vec![false]
        );
        let key5 = dir.path().join("mix-keys").join("epoch-5.key");
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&key5).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(store.delete_epochs_before(6).unwrap(), vec![5]);
        assert!(!key5.exists(), "the secret's file is gone");
        let epochs: Vec<u64> = store.mix_keys().unwrap().iter().map(|(e, _)| *e).collect();
        assert_eq!(epochs, vec![6]);
        // Epoch 5's tags are gone with its key; epoch 6's remain.
        assert_eq!(
            store.record_replay_tags(&[(5, [1; 32])]).unwrap(),
            vec![true]
        );
        assert_eq!(
            store.record_replay_tags(&[(6, [1; 32])]).unwrap(),
            vec![false]
        );
    }

    #[test]
    fn unsynced_replay_tags_are_on_disk_after_a_sync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.redb");
        let store = Store::open(&path).unwrap();
        store.put_mix_key(5, &[5; 32]).unwrap();
        assert_eq!(
            store
                .record_replay_tags_unsynced(&[(5, [1; 32]), (5, [1; 32])])
                .unwrap(),
            vec![true, false]
        );
        store.sync().unwrap();
        // The file as a crash right now would leave it: a copy taken while
        // the store is still open, never closed cleanly.
        let copy = dir.path().join("crashed.redb");
        std::fs::copy(&path, &copy).unwrap();
        let after_crash = Store::open(&copy).unwrap();
        assert_eq!(
            after_crash.record_replay_tags(&[(5, [1; 32])]).unwrap(),
            vec![false]
        );
        // Still answered from memory in the running store.
        assert_eq!(
            store.record_replay_tags_unsynced(&[(5, [1; 32])]).unwrap(),
            vec![false]
        );
    }

    #[test]
    fn mailbox_limits_visibility_expiry_and_removal() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("node.redb")).unwrap();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert_eq!(
            store.mailbox_put(&a, b"r1", 0, 100, LIMITS).unwrap(),
            Ok(())
        );
        assert_eq!(
            store.mailbox_put(&a, b"r2", 120, 200, LIMITS).unwrap(),
            Ok(())
        );
        assert_eq!(
            store.mailbox_put(&a, b"r3", 0, 200, LIMITS).unwrap(),
            Err(MailboxFull::Mailbox)
        );
        assert_eq!(
            store.mailbox_put(&b, b"s1", 0, 200, LIMITS).unwrap(),
            Ok(())
        );
        assert_eq!(
            store.mailbox_put(&[3; 32], b"t", 0, 200, LIMITS).unwrap(),
            Err(MailboxFull::Node)
        );
        // r2's delay has not passed at 110: only r1 shows.
        let held = store.mailbox_peek(&a, 110).unwrap();
        assert_eq!(held.len(), 0, "r1 expired at 100, r2 shows from 120");
        let held = store.mailbox_peek(&a, 90).unwrap();
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].1, b"r1");
        let held = store.mailbox_peek(&a, 150).unwrap();
        assert_eq!(held.len(), 1, "r1 expired at 100");
        assert_eq!(held[0].1, b"r2");
        store.mailbox_remove(&a, &[held[0].0]).unwrap();
        assert_eq!(store.mailbox_expire(150).unwrap(), 1);
        assert_eq!(store.mailbox_len().unwrap(), 1);
        assert!(store.mailbox_peek(&a, 150).unwrap().is_empty());
    }

    #[test]
    fn a_batch_of_deposits_keeps_the_limits_and_the_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("node.redb")).unwrap();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let deposit = |mailbox, reply| Deposit {
            mailbox,
            reply,
            visible_at_ms: 0,
            expires_at_ms: 200,
        };
        let results = store
            .mailbox_put_all(
                &[
                    deposit(a, b"r1"),
                    deposit(a, b"r2"),
                    deposit(a, b"r3"),
                    deposit(b, b"s1"),
                    deposit([3; 32], b"t"),
                ],
                LIMITS,
            )
            .unwrap();
        assert_eq!(
            results,
            vec![
                Ok(()),
                Ok(()),
                Err(MailboxFull::Mailbox),
                Ok(()),
                Err(MailboxFull::Node)
            ]
        );
        let held: Vec<Vec<u8>> = store
            .mailbox_peek(&a, 10)
            .unwrap()
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        assert_eq!(held, vec![b"r1".to_vec(), b"r2".to_vec()]);
        // Sequence numbers go on after the batch.
        store
            .mailbox_remove(&b, &[store.mailbox_peek(&b, 10).unwrap()[0].0])
            .unwrap();
        assert_eq!(
            store.mailbox_put(&b, b"s2", 0, 200, LIMITS).unwrap(),
            Ok(())
        );
        let seqs: Vec<u64> = store
            .mailbox_peek(&a, 10)
            .unwrap()
            .iter()
            .chain(&store.mailbox_peek(&b, 10).unwrap())
            .map(|(seq, _)| *seq)
            .collect();
        assert_eq!(seqs, vec![1, 2, 4]);
        assert!(store.mailbox_put_all(&[], LIMITS).unwrap().is_empty());
    }
}
