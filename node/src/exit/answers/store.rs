//! The conversations and their sealed answers, in the node's database.
//!
//! | table | key | value | kept |
//! |---|---|---|---|
//! | `exit_threads` | thread key (keyed hash of the inbox id) | [`Thread`]: inbox id, answer key, recipient hash, the emails' `Message-ID`s, ended, counts | `exit.answer_keep_days` after its last leak or answer |
//! | `exit_answers` | (thread key, sequence number) | (until when, the answer sealed to the sender's key) | until the sender's fetch acknowledges it, or `exit.answer_keep_days` |
//!
//! No answer's text enters the database in the clear: it is sealed to the
//! sender's key before it is written ([`leak_protocol::answers::seal_answer`]),
//! so the pages redb frees (and does not scrub) hold only ciphertext.

use leak_protocol::answers::{InboxId, SealedAnswer, ThreadState};
use redb::{ReadableDatabase as _, ReadableTable as _, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::{exit::error::ExitError, store::Store};

const THREADS: TableDefinition<[u8; 16], &[u8]> = TableDefinition::new("exit_threads");
/// (thread key, sequence number) → (until when in Unix ms, sealed answer).
type AnswersTable = TableDefinition<'static, ([u8; 16], u32), (u64, &'static [u8])>;
const ANSWERS: AnswersTable = TableDefinition::new("exit_answers");

/// The most `Message-ID`s a conversation keeps for `References:`.
pub const MAX_REFERENCES: usize = 10;

/// A conversation: what the exit needs to take answers and thread
/// follow-ups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thread {
    /// The inbox id the sender's fetches name (by its capability).
    pub inbox: [u8; 32],
    /// The X25519 key answers are sealed to.
    pub key: [u8; 32],
    /// The recipient's hash: follow-ups go to them only, and only their
    /// answer token is valid.
    pub recipient: [u8; 32],
    /// The `Message-ID`s of the conversation's emails, oldest first (at
    /// most [`MAX_REFERENCES`]: the first and the latest ones).
    pub message_ids: Vec<String>,
    /// The recipient ended the conversation.
    pub ended: bool,
    /// Until when it is kept (Unix ms).
    pub expires_ms: u64,
    /// The next answer's sequence number (from 1).
    pub next_seq: u32,
    /// The UTC day of `answers_today`.
    pub day: u64,
    /// Answers taken on `day`.
    pub answers_today: u32,
}

impl Thread {
    /// Adds the `Message-ID` of an email of the conversation (keeping the
    /// first one and the latest ones).
    pub fn push_message_id(&mut self, id: String) {
        if self.message_ids.contains(&id) {
            return;
        }
        self.message_ids.push(id);
        if self.message_ids.len() > MAX_REFERENCES {
            self.message_ids.remove(1);
        }
    }
}

/// Why an answer was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// No such conversation (expired, or never recorded).
    Unknown,
    /// The conversation took its answers for the day.
    Flood,
    /// As many answers wait as the conversation may keep.
    Full,
    /// The answer could not be sealed to the conversation's key.
    Unsealable,
}

fn decode_thread(bytes: &[u8]) -> Option<Thread> {
    postcard::from_bytes(bytes).ok()
}

fn encode_thread(thread: &Thread) -> Result<Vec<u8>, ExitError> {
    Ok(postcard::to_allocvec(thread)?)
}

/// The two tables.
pub struct AnswerStore {
    store: std::sync::Arc<Store>,
}

impl AnswerStore {
    /// Opens (creates) the tables.
    pub fn open(store: std::sync::Arc<Store>) -> Result<Self, ExitError> {
        let txn = store.db().begin_write()?;
        txn.open_table(THREADS)?;
        txn.open_table(ANSWERS)?;
        txn.commit()?;
        Ok(Self { store })
    }

    /// The conversation `key`, if kept.
    pub fn thread(&self, key: &[u8; 16]) -> Result<Option<Thread>, ExitError> {
        let txn = self.store.db().begin_read()?;
        let table = txn.open_table(THREADS)?;
        Ok(table.get(key)?.and_then(|v| decode_thread(v.value())))
    }

    /// Writes the conversation `key` as `update` makes it from what is
    /// kept (`None`: new); `update` returns `None` to leave it unchanged.
    pub fn update_thread<T>(
        &self,
        key: &[u8; 16],
        update: impl FnOnce(Option<Thread>) -> (Option<Thread>, T),
    ) -> Result<T, ExitError> {
        let txn = self.store.db().begin_write()?;
        let result = {
            let mut table = txn.open_table(THREADS)?;
            let current = table.get(key)?.and_then(|v| decode_thread(v.value()));
            let (new, result) = update(current);
            if let Some(new) = new {
                table.insert(key, encode_thread(&new)?.as_slice())?;
            }
            result
        };
        txn.commit()?;
        Ok(result)
    }

    /// Stores an answer of conversation `key`, sealed by `seal` (given its
    /// sequence number), unless the day's or the waiting cap is reached.
    /// Returns its sequence number.
    #[allow(clippy::too_many_arguments)]
    pub fn put_answer(
        &self,
        key: &[u8; 16],
        now_ms: u64,
        keep_ms: u64,
        per_day: u32,
        max_waiting: u32,
        seal: impl FnOnce(&Thread) -> Result<Option<Vec<u8>>, ExitError>,
    ) -> Result<Result<u32, NotStored>, ExitError> {
        let txn = self.store.db().begin_write()?;
        let result = {
            let mut threads = txn.open_table(THREADS)?;
            let Some(mut thread) = threads.get(key)?.and_then(|v| decode_thread(v.value())) else {
                return Ok(Err(NotStored::Unknown));
            };
            let day = now_ms / 86_400_000;
            if thread.day != day {
                thread.day = day;
                thread.answers_today = 0;
            }
            if per_day > 0 && thread.answers_today >= per_day {
                return Ok(Err(NotStored::Flood));
            }
            let mut answers = txn.open_table(ANSWERS)?;
            let waiting = answers.range((*key, 0)..=(*key, u32::MAX))?.count();
            if max_waiting > 0 && waiting >= max_waiting as usize {
                return Ok(Err(NotStored::Full));
            }
            let seq = thread.next_seq.max(1);
            let Some(sealed) = seal(&thread)? else {
                return Ok(Err(NotStored::Unsealable));
            };
            answers.insert(
                (*key, seq),
                (now_ms.saturating_add(keep_ms), sealed.as_slice()),
            )?;
            thread.next_seq = seq.saturating_add(1);
            thread.answers_today += 1;
            thread.expires_ms = thread.expires_ms.max(now_ms.saturating_add(keep_ms));
            threads.insert(key, encode_thread(&thread)?.as_slice())?;
            Ok(seq)
        };
        txn.commit()?;
        Ok(result)
    }

    /// A fetch of inbox `inbox` (conversation `key`) that has stored every
    /// answer up to `ack`: those are deleted; returns the thread's state,
    /// the next answer and how many more wait.
    pub fn fetch(
        &self,
        key: &[u8; 16],
        inbox: &InboxId,
        ack: u32,
        now_ms: u64,
    ) -> Result<(ThreadState, Option<SealedAnswer>, u32), ExitError> {
        // A read first: most fetches find nothing to delete, and a fetch
        // costs its sender no stamp, so it must not cost the exit a
        // synced write.
        let (state, next, waiting, acknowledged) = {
            let txn = self.store.db().begin_read()?;
            let threads = txn.open_table(THREADS)?;
            let thread = threads.get(key)?.and_then(|v| decode_thread(v.value()));
            // A capability that does not hash to the kept inbox opens
            // nothing (a thread key is 128 bits of a keyed hash: a
            // collision is not a way in either).
            let Some(thread) = thread.filter(|t| t.inbox == inbox.0) else {
                return Ok((ThreadState::Unknown, None, 0));
            };
            let answers = txn.open_table(ANSWERS)?;
            let acknowledged = ack > 0 && answers.range((*key, 0)..=(*key, ack))?.next().is_some();
            let mut next = None;
            let mut waiting = 0u32;
            for item in answers.range((*key, ack.saturating_add(1))..=(*key, u32::MAX))? {
                let (k, v) = item?;
                let (expires, sealed) = v.value();
                if expires <= now_ms {
                    continue;
                }
                if next.is_none() {
                    next = Some(SealedAnswer {
                        seq: k.value().1,
                        sealed: sealed.to_vec(),
                    });
                } else {
                    waiting += 1;
                }
            }
            let state = if thread.ended {
                ThreadState::Ended
            } else {
                ThreadState::Open
            };
            (state, next, waiting, acknowledged)
        };
        if acknowledged {
            let txn = self.store.db().begin_write()?;
            txn.open_table(ANSWERS)?
                .retain_in((*key, 0)..=(*key, ack), |_, _| false)?;
            txn.commit()?;
        }
        Ok((state, next, waiting))
    }

    /// How many answers are kept, over all conversations.
    pub fn answers_kept(&self) -> Result<u64, ExitError> {
        use redb::ReadableTableMetadata as _;
        let txn = self.store.db().begin_read()?;
        Ok(txn.open_table(ANSWERS)?.len()?)
    }

    /// Deletes answers and conversations whose time is over at `now_ms`;
    /// returns how many answers went.
    pub fn prune(&self, now_ms: u64) -> Result<u64, ExitError> {
        let txn = self.store.db().begin_write()?;
        let mut gone = 0;
        {
            let mut answers = txn.open_table(ANSWERS)?;
            answers.retain(|_, (expires, _)| {
                let keep = expires > now_ms;
                gone += u64::from(!keep);
                keep
            })?;
            txn.open_table(THREADS)?
                .retain(|_, v| decode_thread(v).is_some_and(|t| t.expires_ms > now_ms))?;
        }
        txn.commit()?;
        Ok(gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread(now: u64) -> Thread {
        Thread {
            inbox: [1; 32],
            key: [2; 32],
            recipient: [3; 32],
            message_ids: vec![],
            ended: false,
            expires_ms: now + 1000,
            next_seq: 1,
            day: 0,
            answers_today: 0,
        }
    }

    fn store() -> (tempfile::TempDir, AnswerStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = std::sync::Arc::new(Store::open(&dir.path().join("db")).unwrap());
        (dir, AnswerStore::open(db).unwrap())
    }

    #[test]
    fn answers_are_kept_in_order_deleted_once_acknowledged_and_expire() {
        let (_dir, s) = store();
        let key = [9; 16];
        let inbox = InboxId([1; 32]);
        assert_eq!(
            s.put_answer(&key, 0, 100, 0, 0, |_| Ok(Some(vec![1])))
                .unwrap(),
            Err(NotStored::Unknown)
        );
        s.update_thread(&key, |_| (Some(thread(0)), ())).unwrap();
        for i in 1..=3u8 {
            let seq = s
                .put_answer(&key, 10, 100, 0, 0, |_| Ok(Some(vec![i])))
                .unwrap();
            assert_eq!(seq, Ok(u32::from(i)));
        }
        let (state, next, waiting) = s.fetch(&key, &inbox, 0, 20).unwrap();
        assert_eq!(state, ThreadState::Open);
        assert_eq!(next.unwrap().sealed, vec![1]);
        assert_eq!(waiting, 2);
        // Acknowledged answers are deleted; the next one comes.
        let (_, next, waiting) = s.fetch(&key, &inbox, 2, 20).unwrap();
        assert_eq!(next.unwrap().seq, 3);
        assert_eq!((waiting, s.answers_kept().unwrap()), (0, 1));
        // Another inbox's capability opens nothing.
        let (state, next, _) = s.fetch(&key, &InboxId([7; 32]), 0, 20).unwrap();
        assert_eq!((state, next), (ThreadState::Unknown, None));
        // Past its time the answer is gone, and so is the thread.
        assert_eq!(s.prune(1_000_000).unwrap(), 1);
        assert_eq!(s.answers_kept().unwrap(), 0);
        assert!(s.thread(&key).unwrap().is_none());
    }

    #[test]
    fn a_conversation_takes_its_days_answers_and_keeps_a_bounded_number() {
        let (_dir, s) = store();
        let key = [9; 16];
        s.update_thread(&key, |_| (Some(thread(0)), ())).unwrap();
        for _ in 0..2 {
            assert!(
                s.put_answer(&key, 10, 100, 2, 0, |_| Ok(Some(vec![1])))
                    .unwrap()
                    .is_ok()
            );
        }
        assert_eq!(
            s.put_answer(&key, 10, 100, 2, 0, |_| Ok(Some(vec![1])))
                .unwrap(),
            Err(NotStored::Flood)
        );
        // The next day counts afresh, but three may wait at most.
        let tomorrow = 86_400_000 + 10;
        assert!(
            s.put_answer(&key, tomorrow, 100, 2, 3, |_| Ok(Some(vec![1])))
                .unwrap()
                .is_ok()
        );
        assert_eq!(
            s.put_answer(&key, tomorrow, 100, 2, 3, |_| Ok(Some(vec![1])))
                .unwrap(),
            Err(NotStored::Full)
        );
    }

    #[test]
    fn references_keep_the_first_and_the_latest() {
        let mut t = thread(0);
        for i in 0..15 {
            t.push_message_id(format!("<{i}@x>"));
        }
        t.push_message_id("<14@x>".into());
        assert_eq!(t.message_ids.len(), MAX_REFERENCES);
        assert_eq!(t.message_ids[0], "<0@x>");
        assert_eq!(t.message_ids.last().unwrap(), "<14@x>");
    }
}
