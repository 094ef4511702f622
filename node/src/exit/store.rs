//! The exit's durable state, in the node's database plus the spool of
//! queued leaks ([`super::spool`]).
//!
//! | where | key | value | kept |
//! |---|---|---|---|
//! | `exit-queue/spool`, one slot per leak | leak key | the leak as received (recipient, text, and the only copy of its message id) | until delivered or bounced: then the slot is overwritten with zeros and synced |
//! | table `exit_queue` | leak key | attempts, next attempt, last SMTP code, reply block | until the leak leaves the queue |
//! | table `exit_awaiting` | leak key | reply block, provider, when sent, until when to wait | from the mail server's 250 until its delivery notification (or `exit.notify_wait_secs`); the leak's slot then holds only its message id |
//! | table `exit_done` | leak key | outcome, when | `exit.dedup_secs` (so a retransmission is answered, not delivered again) |
//! | table `exit_opt_out_v3` | recipient hash | the signed opt-out or opt-back-in record that holds (postcard; with the recipient's DKIM-signed email when there is one, see [`super::evidence`]) | for good |
//! | table `exit_suppressed` | recipient hash | until when its mailbox counts as nonexistent | 30 days after the bounce |
//! | table `exit_rate` | (recipient hash, UTC day) | leaks accepted | two days |
//! | table `exit_reports` | the exit's reference of a leak (not its id) | when | `exit.dedup_secs` |
//!
//! Recipient and text never enter the database: redb is copy-on-write and
//! does not scrub freed pages, so a deleted leak could be read back from the
//! file. They live only in the leak's slot of the spool, scrubbed on delivery. The
//! recipient hash is the policy's keyed hash of the normalised address. A
//! leak key is the keyed hash of the sender's message id under a rotating
//! secret of this exit ([`super::dedup`]): the functions here take keys,
//! whatever their parameters are called, and never see a message id.

use std::{
    collections::{BTreeMap, HashSet},
    os::unix::fs::DirBuilderExt as _,
    path::PathBuf,
    sync::Arc,
};

use leak_protocol::{MessageId, Outcome, policy::optout::OptOut};
use redb::{
    ReadableDatabase as _, ReadableTable as _, ReadableTableMetadata as _, TableDefinition,
};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{error::ExitError, spool::Spool, state::EndState};

mod earlier;
use crate::{metrics::Label as _, store::Store};

const QUEUE: TableDefinition<[u8; 16], &[u8]> = TableDefinition::new("exit_queue");
const DONE: TableDefinition<[u8; 16], &[u8]> = TableDefinition::new("exit_done");
const AWAITING: TableDefinition<[u8; 16], &[u8]> = TableDefinition::new("exit_awaiting");
/// Recipient hash → until when (Unix ms) leaks to it bounce at once: its
/// server said the mailbox does not exist.
const SUPPRESSED: TableDefinition<[u8; 32], u64> = TableDefinition::new("exit_suppressed");
const OPT_OUT: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("exit_opt_out_v3");

const RATE: TableDefinition<([u8; 32], u64), u32> = TableDefinition::new("exit_rate");
const REPORTS: TableDefinition<[u8; 16], u64> = TableDefinition::new("exit_reports");
/// The exit's standing with each provider ([`super::provider::Health`]).
const STANDING: TableDefinition<&str, &[u8]> = TableDefinition::new("exit_standing");

/// A leak waiting in the queue (everything but its recipient and text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// When the exit accepted it (Unix ms).
    pub accepted_ms: u64,
    /// When to try next (Unix ms).
    pub next_attempt_ms: u64,
    /// Attempts so far.
    pub attempts: u32,
    /// The last failure: an SMTP code such as `451 4.7.1`, or `network`,
    /// `tls`, `timeout`, `io` (never the server's text, which can name the
    /// recipient).
    pub last_error: String,
    /// The newest reply block the leak arrived with (a retransmission
    /// replaces it: the older path may be gone).
    pub reply_block: Vec<u8>,
}

/// How a leak left the exit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    /// The outcome its sender was told.
    pub outcome: Outcome,
    /// Why, for the operator (stored as its label, a string).
    pub state: EndState,
    /// When (Unix ms).
    pub at_ms: u64,
}

/// A leak the exit's mail server took, waiting for the delivery status
/// notification that says what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Awaiting {
    /// The newest reply block (a retransmission replaces it).
    pub reply_block: Vec<u8>,
    /// The recipient's provider ([`super::provider::Provider::to_byte`]).
    pub provider: u8,
    /// When the mail server took it (Unix ms).
    pub sent_ms: u64,
    /// When its sender is told `Accepted` if no notification came (Unix ms).
    pub deadline_ms: u64,
    /// The recipient hash (an unknown user's is suppressed); `None` for a
    /// leak whose wait was recorded after a crash, from its slot alone.
    pub recipient: Option<[u8; 32]>,
}

/// The body a leak's slot holds while it waits for its notification: its
/// message id (for the receipt), nothing of its recipient or text.
const SENT_STUB: &[u8; 4] = b"SENT";

/// The slot body of a leak waiting for its notification.
pub fn sent_stub(sender: &MessageId) -> [u8; 20] {
    let mut out = [0u8; 20];
    out[..4].copy_from_slice(SENT_STUB);
    out[4..].copy_from_slice(&sender.0);
    out
}

/// The message id in a slot body written by [`sent_stub`].
pub fn read_sent_stub(body: &[u8]) -> Option<MessageId> {
    (body.len() == 20 && body.starts_with(SENT_STUB))
        .then(|| body[4..].try_into().ok().map(MessageId))
        .flatten()
}

/// What the exit knows of a message id.
#[derive(Debug)]
pub enum Known {
    /// Never seen (or forgotten).
    New,
    /// Waiting for delivery.
    Queued(Entry),
    /// Sent, waiting for its delivery notification.
    Awaiting(Awaiting),
    /// Finished.
    Done(Done),
}

/// The exit's tables and queue directory.
pub struct ExitStore {
    store: Arc<Store>,
    spool: Arc<Spool>,
    /// Finished leaks go to one committer thread, which commits all that
    /// are waiting in one transaction (group commit).
    finisher: std::sync::Mutex<Option<std::sync::mpsc::SyncSender<FinishJob>>>,
    committer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ExitStore {
    /// Stops the commit thread (after what it holds) and waits for it, so
    /// the database is released when the store is.
    fn drop(&mut self) {
        self.finisher
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(thread) = self.committer.take() {
            let _ = thread.join();
        }
    }
}

/// A leak to take out of the queue, and where its answer goes.
type FinishJob = (MessageId, Done, tokio::sync::oneshot::Sender<Finished>);
/// What finishing a leak gave: its last entry (`None`: no longer queued).
type Finished = Result<Option<Entry>, String>;

/// Most finished leaks committed in one transaction.
const FINISH_BATCH: usize = 256;
/// Finished leaks waiting for the commit thread, at most (more than the
/// delivery loop keeps in flight, so a delivery task rarely waits to hand
/// one over).
const FINISH_QUEUE: usize = 4096;
/// How long a commit waits for more finished leaks to join it.
const COMMIT_WINDOW: std::time::Duration = std::time::Duration::from_millis(2);

/// Takes finished leaks out of the queue, as many per transaction as are
/// waiting, then scrubs their slots. Ends when the store is dropped.
fn run_finisher(store: &Store, spool: &Spool, jobs: &std::sync::mpsc::Receiver<FinishJob>) {
    let mut unscrubbed: Vec<MessageId> = Vec::new();
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        // What else finishes within a short window joins this commit: one
        // sync of the database and one of the spool for all of them.
        let until = std::time::Instant::now() + COMMIT_WINDOW;
        while batch.len() < FINISH_BATCH {
            let left = until.saturating_duration_since(std::time::Instant::now());
            match jobs.recv_timeout(left) {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let result = (|| -> Result<Vec<Option<Entry>>, ExitError> {
            let txn = store.db().begin_write()?;
            let mut entries = Vec::with_capacity(batch.len());
            {
                let mut queue = txn.open_table(QUEUE)?;
                let mut done_table = txn.open_table(DONE)?;
                for (id, done, _) in &batch {
                    // One entry that does not decode fails only itself: it
                    // is finished without a receipt.
                    let entry = queue.remove(id.0)?.map(|v| {
                        decode::<Entry>(v.value()).unwrap_or_else(|e| {
                            tracing::warn!(error = %e, "a queued leak's entry does not decode");
                            Entry {
                                accepted_ms: 0,
                                next_attempt_ms: 0,
                                attempts: 0,
                                last_error: String::new(),
                                reply_block: Vec::new(),
                            }
                        })
                    });
                    if entry.is_some() {
                        done_table.insert(id.0, encode(done)?.as_slice())?;
                    }
                    entries.push(entry);
                }
            }
            txn.commit()?;
            Ok(entries)
        })();
        match result {
            Ok(entries) => {
                // The outcome holds once committed; a slot that cannot be
                // zeroed now is zeroed with a later batch (or at start).
                unscrubbed.extend(
                    batch
                        .iter()
                        .zip(&entries)
                        .filter(|(_, entry)| entry.is_some())
                        .map(|((id, _, _), _)| *id),
                );
                match spool.scrub(&unscrubbed) {
                    Ok(()) => unscrubbed.clear(),
                    Err(e) => tracing::error!(
                        error = %format!("{e:#}"),
                        waiting = unscrubbed.len(),
                        "cannot zero finished leaks' slots; trying again with the next batch"
                    ),
                }
                for ((_, _, reply), entry) in batch.into_iter().zip(entries) {
                    let _ = reply.send(Ok(entry));
                }
            }
            Err(e) => {
                for (_, _, reply) in batch {
                    let _ = reply.send(Err(e.to_string()));
                }
            }
        }
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ExitError> {
    Ok(postcard::to_allocvec(value)?)
}

fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ExitError> {
    Ok(postcard::from_bytes(bytes)?)
}

impl ExitStore {
    /// Opens the exit's tables and its queue directory `dir` with its
    /// spool, whose slots no queue entry points to are zeroed (a crash
    /// between writing a leak and committing its entry: that leak was never
    /// acknowledged; or between committing an outcome and the scrub).
    pub fn open(store: Arc<Store>, dir: PathBuf) -> Result<Self, ExitError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| ExitError::io(format!("cannot create {}", dir.display()), e))?;
        if let Some(parent) = dir.parent() {
            crate::store::sync_dir(parent)
                .map_err(|e| ExitError::io(format!("cannot sync {}", parent.display()), e))?;
        }
        let txn = store.db().begin_write()?;
        txn.open_table(QUEUE)?;
        txn.open_table(DONE)?;
        txn.open_table(AWAITING)?;
        txn.open_table(SUPPRESSED)?;
        txn.open_table(OPT_OUT)?;
        txn.open_table(RATE)?;
        txn.open_table(REPORTS)?;
        txn.open_table(STANDING)?;
        txn.commit()?;
        let queued: HashSet<MessageId> = {
            let txn = store.db().begin_read()?;
            let table = txn.open_table(QUEUE)?;
            let mut ids = HashSet::new();
            for item in table.iter()? {
                ids.insert(MessageId(item?.0.value()));
            }
            // A waiting leak's slot holds its message id.
            for item in txn.open_table(AWAITING)?.iter()? {
                ids.insert(MessageId(item?.0.value()));
            }
            ids
        };
        let spool = Arc::new(Spool::open(&dir, &queued)?);
        let (finisher, jobs) = std::sync::mpsc::sync_channel::<FinishJob>(FINISH_QUEUE);
        let committer = {
            let store = store.clone();
            let spool = spool.clone();
            std::thread::Builder::new()
                .name("leak-exit-commit".into())
                .spawn(move || run_finisher(&store, &spool, &jobs))
                .map_err(|e| ExitError::io("cannot start the exit's commit thread", e))?
        };
        Ok(Self {
            store,
            spool,
            finisher: std::sync::Mutex::new(Some(finisher)),
            committer: Some(committer),
        })
    }

    /// What is known of `id`.
    pub fn lookup(&self, id: &MessageId) -> Result<Known, ExitError> {
        let txn = self.store.db().begin_read()?;
        if let Some(v) = txn.open_table(QUEUE)?.get(id.0)? {
            return Ok(Known::Queued(decode(v.value())?));
        }
        if let Some(v) = txn.open_table(AWAITING)?.get(id.0)? {
            return Ok(Known::Awaiting(decode(v.value())?));
        }
        if let Some(v) = txn.open_table(DONE)?.get(id.0)? {
            return Ok(Known::Done(decode(v.value())?));
        }
        Ok(Known::New)
    }

    /// The mail server took queued leak `id` and will notify: its slot is
    /// rewritten to hold only `sender` (its message id), then, in one
    /// transaction, it leaves the queue, waits as `awaiting`, and its
    /// outcome so far (`done`) is recorded. Returns false if it was no
    /// longer queued.
    /// `awaiting` makes the waiting record from the leak's last entry.
    pub fn await_notification(
        &self,
        id: &MessageId,
        sender: &MessageId,
        awaiting: impl FnOnce(Entry) -> Awaiting,
        done: &Done,
    ) -> Result<bool, ExitError> {
        self.spool.put(id, &sent_stub(sender))?;
        let txn = self.store.db().begin_write()?;
        let queued = {
            let mut queue = txn.open_table(QUEUE)?;
            let entry = match queue.remove(id.0)? {
                Some(v) => Some(decode::<Entry>(v.value())?),
                None => None,
            };
            let queued = entry.is_some();
            if let Some(entry) = entry {
                txn.open_table(AWAITING)?
                    .insert(id.0, encode(&awaiting(entry))?.as_slice())?;
                txn.open_table(DONE)?
                    .insert(id.0, encode(done)?.as_slice())?;
            }
            queued
        };
        txn.commit()?;
        Ok(queued)
    }

    /// A retransmission's newer reply block for a waiting leak; false if
    /// it no longer waits.
    pub fn update_awaiting_block(&self, id: &MessageId, block: &[u8]) -> Result<bool, ExitError> {
        let txn = self.store.db().begin_write()?;
        let present = {
            let mut table = txn.open_table(AWAITING)?;
            let current = match table.get(id.0)? {
                Some(v) => Some(decode::<Awaiting>(v.value())?),
                None => None,
            };
            if let Some(mut awaiting) = current {
                awaiting.reply_block = block.to_vec();
                table.insert(id.0, encode(&awaiting)?.as_slice())?;
                true
            } else {
                false
            }
        };
        txn.commit()?;
        Ok(present)
    }

    /// Ends waiting leak `id` with its outcome `done` (one transaction),
    /// then reads its message id from its slot and scrubs the slot.
    /// `None` if it was not waiting (already resolved). With
    /// `suppress_until_ms`, leaks to its recipient bounce at once until
    /// then, recorded in the same transaction: its sender, told of the
    /// bounce, may write again at once.
    pub fn resolve(
        &self,
        id: &MessageId,
        done: &Done,
        suppress_until_ms: Option<u64>,
    ) -> Result<Option<(Awaiting, Option<MessageId>)>, ExitError> {
        let txn = self.store.db().begin_write()?;
        let awaiting = {
            let mut table = txn.open_table(AWAITING)?;
            let awaiting = match table.remove(id.0)? {
                Some(v) => Some(decode::<Awaiting>(v.value())?),
                None => None,
            };
            if let Some(awaiting) = &awaiting {
                txn.open_table(DONE)?
                    .insert(id.0, encode(done)?.as_slice())?;
                if let (Some(until), Some(recipient)) = (suppress_until_ms, awaiting.recipient) {
                    txn.open_table(SUPPRESSED)?.insert(recipient, until)?;
                }
            }
            awaiting
        };
        txn.commit()?;
        let Some(awaiting) = awaiting else {
            return Ok(None);
        };
        let sender = self.spool.get(id)?.and_then(|body| read_sent_stub(&body));
        self.spool.scrub(&[*id])?;
        Ok(Some((awaiting, sender)))
    }

    /// The waiting leaks whose deadline is at or before `now_ms`, and the
    /// earliest deadline of the others.
    pub fn awaiting_due(&self, now_ms: u64) -> Result<(Vec<MessageId>, Option<u64>), ExitError> {
        let txn = self.store.db().begin_read()?;
        let mut due = Vec::new();
        let mut next: Option<u64> = None;
        for item in txn.open_table(AWAITING)?.iter()? {
            let (k, v) = item?;
            let awaiting: Awaiting = decode(v.value())?;
            if awaiting.deadline_ms <= now_ms {
                due.push(MessageId(k.value()));
            } else {
                next = Some(next.map_or(awaiting.deadline_ms, |n| n.min(awaiting.deadline_ms)));
            }
        }
        Ok((due, next))
    }

    /// Leaks to `recipient` bounce at once until `until_ms`: its server
    /// said there is no such mailbox.
    pub fn suppress(&self, recipient: &[u8; 32], until_ms: u64) -> Result<(), ExitError> {
        let txn = self.store.db().begin_write()?;
        txn.open_table(SUPPRESSED)?.insert(*recipient, until_ms)?;
        txn.commit()?;
        Ok(())
    }

    /// Whether leaks to `recipient` bounce at once at `now_ms`.
    pub fn suppressed(&self, recipient: &[u8; 32], now_ms: u64) -> Result<bool, ExitError> {
        let txn = self.store.db().begin_read()?;
        let until = txn
            .open_table(SUPPRESSED)?
            .get(*recipient)?
            .map(|v| v.value());
        Ok(until.is_some_and(|until| until > now_ms))
    }

    /// Whether the recipient opted out (and did not opt back in since).
    pub fn opted_out(&self, recipient: &[u8; 32]) -> Result<bool, ExitError> {
        let txn = self.store.db().begin_read()?;
        let record = txn
            .open_table(OPT_OUT)?
            .get(recipient)?
            .map(|v| v.value().to_vec());
        Ok(record
            .and_then(|bytes| postcard::from_bytes::<OptOut>(&bytes).ok())
            .is_some_and(|r| r.out))
    }

    /// Keeps signed opt-out and opt-back-in records (checked by the
    /// caller): for each recipient, the one that holds
    /// ([`OptOut::replaces`]: the newest, and evidence over none). Returns
    /// the records that changed what is held.
    pub fn record_opt_outs(&self, records: &[OptOut]) -> Result<Vec<OptOut>, ExitError> {
        let txn = self.store.db().begin_write()?;
        let mut changed = Vec::new();
        {
            let mut table = txn.open_table(OPT_OUT)?;
            for record in records {
                let held = table
                    .get(&record.recipient)?
                    .and_then(|v| postcard::from_bytes::<OptOut>(v.value()).ok());
                if held.is_some_and(|h| !record.replaces(&h)) {
                    continue;
                }
                let bytes = postcard::to_allocvec(record)?;
                table.insert(&record.recipient, bytes.as_slice())?;
                changed.push(record.clone());
            }
        }
        txn.commit()?;
        Ok(changed)
    }

    /// The record held for each of `recipients` (`None`: none held).
    pub fn opt_out_records(
        &self,
        recipients: &[[u8; 32]],
    ) -> Result<Vec<Option<OptOut>>, ExitError> {
        let txn = self.store.db().begin_read()?;
        let table = txn.open_table(OPT_OUT)?;
        let mut out = Vec::with_capacity(recipients.len());
        for recipient in recipients {
            let held = table
                .get(recipient)?
                .and_then(|v| postcard::from_bytes::<OptOut>(v.value()).ok());
            out.push(held);
        }
        Ok(out)
    }

    /// Every record held that carries evidence, to pass on to the exits
    /// that hold each one (a record without it holds here only).
    pub fn held_opt_outs(&self) -> Result<Vec<OptOut>, ExitError> {
        let txn = self.store.db().begin_read()?;
        let mut out = Vec::new();
        for item in txn.open_table(OPT_OUT)?.iter()? {
            let (_, v) = item?;
            if let Ok(record) = postcard::from_bytes::<OptOut>(v.value())
                && record.has_evidence()
            {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Records an abuse report about a delivered leak. Returns whether it
    /// is new.
    pub fn report(&self, id: &MessageId, now_ms: u64) -> Result<bool, ExitError> {
        let txn = self.store.db().begin_write()?;
        let new = {
            let mut table = txn.open_table(REPORTS)?;
            let new = table.get(id.0)?.is_none();
            if new {
                table.insert(id.0, now_ms)?;
            }
            new
        };
        txn.commit()?;
        Ok(new)
    }

    /// The standing kept by [`ExitStore::save_standing`], if any.
    pub fn standing(&self) -> Result<Option<Vec<u8>>, ExitError> {
        let txn = self.store.db().begin_read()?;
        let table = txn.open_table(STANDING)?;
        Ok(table.get("providers")?.map(|v| v.value().to_vec()))
    }

    /// Keeps the exit's standing with the providers (durably: a pause must
    /// survive a crash).
    pub fn save_standing(&self, bytes: &[u8]) -> Result<(), ExitError> {
        let txn = self.store.db().begin_write()?;
        txn.open_table(STANDING)?.insert("providers", bytes)?;
        txn.commit()?;
        Ok(())
    }

    /// Leaks accepted for `recipient` on UTC day `day`.
    pub fn rate_count(&self, recipient: &[u8; 32], day: u64) -> Result<u32, ExitError> {
        let txn = self.store.db().begin_read()?;
        Ok(txn
            .open_table(RATE)?
            .get((*recipient, day))?
            .map_or(0, |v| v.value()))
    }

    /// Accepts a leak: it is written into a slot of the spool and synced,
    /// then its entry and the recipient's count are committed in one
    /// transaction. Only then may anything else happen.
    pub fn accept(
        &self,
        id: &MessageId,
        leak: &[u8],
        entry: &Entry,
        recipient: &[u8; 32],
        day: u64,
    ) -> Result<(), ExitError> {
        self.spool.put(id, leak)?;
        let committed = (|| -> Result<(), ExitError> {
            let txn = self.store.db().begin_write()?;
            {
                txn.open_table(QUEUE)?
                    .insert(id.0, encode(entry)?.as_slice())?;
                let mut rate = txn.open_table(RATE)?;
                let count = rate.get((*recipient, day))?.map_or(0, |v| v.value());
                rate.insert((*recipient, day), count.saturating_add(1))?;
            }
            txn.commit()?;
            Ok(())
        })();
        if committed.is_err() {
            // Not acknowledged: its text does not stay (else the start
            // zeroes it).
            if let Err(e) = self.spool.scrub(&[*id]) {
                tracing::error!(error = %format!("{e:#}"), "cannot zero an unacknowledged leak's slot");
            }
        }
        committed
    }

    /// Changes a queued leak's entry in place (a new reply block, a new
    /// schedule), read and written in one transaction so that concurrent
    /// changes of other fields are kept. Returns false if it is no longer
    /// queued.
    pub fn update_with(
        &self,
        id: &MessageId,
        change: impl FnOnce(&mut Entry),
    ) -> Result<bool, ExitError> {
        let txn = self.store.db().begin_write()?;
        let present = {
            let mut table = txn.open_table(QUEUE)?;
            let entry = match table.get(id.0)? {
                Some(v) => Some(decode::<Entry>(v.value())?),
                None => None,
            };
            match entry {
                Some(mut entry) => {
                    change(&mut entry);
                    table.insert(id.0, encode(&entry)?.as_slice())?;
                    true
                }
                None => false,
            }
        };
        txn.commit()?;
        Ok(present)
    }

    /// Records the outcome of a leak that was never queued (refused).
    pub fn record(&self, id: &MessageId, done: &Done) -> Result<(), ExitError> {
        let txn = self.store.db().begin_write()?;
        txn.open_table(DONE)?
            .insert(id.0, encode(done)?.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// Takes a leak out of the queue with its outcome (committed first,
    /// together with whatever else finished meanwhile), then scrubs its
    /// slot. Returns its last entry (for the reply block), or `None` if it
    /// was no longer queued. Blocks: call it from a blocking thread, or use
    /// [`ExitStore::finish_async`].
    pub fn finish(&self, id: &MessageId, done: &Done) -> Result<Option<Entry>, ExitError> {
        let (sender, job, answer) = self.job(id, done)?;
        sender.send(job).map_err(|_| ExitError::CommitStopped)?;
        Self::answered(answer.blocking_recv())
    }

    /// [`ExitStore::finish`] for async code: waits without a thread.
    pub async fn finish_async(
        &self,
        id: &MessageId,
        done: &Done,
    ) -> Result<Option<Entry>, ExitError> {
        let (sender, job, answer) = self.job(id, done)?;
        match sender.try_send(job) {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full(job)) => {
                tokio::task::spawn_blocking(move || sender.send(job))
                    .await?
                    .map_err(|_| ExitError::CommitStopped)?;
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                return Err(ExitError::CommitStopped);
            }
        }
        Self::answered(answer.await)
    }

    /// The commit thread's queue, and a job for it with its answer.
    fn job(
        &self,
        id: &MessageId,
        done: &Done,
    ) -> Result<
        (
            std::sync::mpsc::SyncSender<FinishJob>,
            FinishJob,
            tokio::sync::oneshot::Receiver<Finished>,
        ),
        ExitError,
    > {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let sender = self
            .finisher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(ExitError::CommitStopped)?;
        Ok((sender, (*id, done.clone(), reply), answer))
    }

    fn answered(
        answer: Result<Finished, tokio::sync::oneshot::error::RecvError>,
    ) -> Result<Option<Entry>, ExitError> {
        answer
            .map_err(|_| ExitError::CommitStopped)?
            .map_err(ExitError::Commit)
    }

    /// The leak as received (recipient and text): only while queued.
    /// `None` if the spool holds no intact slot for it.
    pub fn body(&self, id: &MessageId) -> Result<Option<Zeroizing<Vec<u8>>>, ExitError> {
        self.spool.get(id)
    }

    /// Every queued leak.
    pub fn queued(&self) -> Result<Vec<(MessageId, Entry)>, ExitError> {
        let txn = self.store.db().begin_read()?;
        let table = txn.open_table(QUEUE)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (k, v) = item?;
            out.push((MessageId(k.value()), decode(v.value())?));
        }
        Ok(out)
    }

    /// Counts of finished leaks still remembered, by state.
    pub fn done_counts(&self) -> Result<BTreeMap<String, u64>, ExitError> {
        let txn = self.store.db().begin_read()?;
        let mut out = BTreeMap::new();
        for item in txn.open_table(DONE)?.iter()? {
            let (_, v) = item?;
            let done: Done = decode(v.value())?;
            *out.entry(done.state.as_label().to_owned()).or_insert(0) += 1;
        }
        let mut opted_out = 0;
        for item in txn.open_table(OPT_OUT)?.iter()? {
            let (_, v) = item?;
            if postcard::from_bytes::<OptOut>(v.value()).is_ok_and(|r| r.out) {
                opted_out += 1;
            }
        }
        out.insert("opted_out_recipients".into(), opted_out);
        out.insert("abuse_reports".into(), txn.open_table(REPORTS)?.len()?);
        out.insert(
            "awaiting_notification".into(),
            txn.open_table(AWAITING)?.len()?,
        );
        Ok(out)
    }

    /// Forgets finished leaks and reports older than `before_ms`, rate
    /// counts of days before `oldest_day`, and suppressions over at
    /// `now_ms`.
    pub fn prune(&self, now_ms: u64, before_ms: u64, oldest_day: u64) -> Result<(), ExitError> {
        let txn = self.store.db().begin_write()?;
        {
            let mut done = txn.open_table(DONE)?;
            done.retain(|_, v| decode::<Done>(v).is_ok_and(|d| d.at_ms >= before_ms))?;
            txn.open_table(REPORTS)?.retain(|_, at| at >= before_ms)?;
            txn.open_table(RATE)?
                .retain(|(_, day), _| day >= oldest_day)?;
            txn.open_table(SUPPRESSED)?
                .retain(|_, until| until > now_ms)?;
        }
        txn.commit()?;
        Ok(())
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
