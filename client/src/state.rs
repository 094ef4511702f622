//! What the client remembers between commands, in its state directory.
//!
//! ```text
//! STATE_DIR/               mode 0700
//!   directory.json         the last verified directory fetched, with its time
//!   leaks/ID.json          one pending leak (mode 0600)
//!   ended/LABEL.json       what is left of a leak that ended (mode 0600)
//! ```
//!
//! A pending leak's record holds what `leak status` needs to fetch a receipt
//! that arrives after `leak send` stopped waiting: for each attempt, the
//! mailbox node, the mailbox capability and the reply keys (secrets: whoever
//! holds them can read the receipt, so the files are 0600). It never holds
//! the message text, and the recipient only in a redacted form
//! (`a…@example.com`) for the sender's own listing.
//!
//! **Nothing that matches.** The message id, the exit and the send times are
//! what would tie a seized laptop to an exit's records or to a delivered
//! email, so they are kept only while the leak is pending. When it ends
//! (a receipt, or given up), [`StateDir::end`] replaces the record with an
//! [`EndedRecord`]: the outcome, the UTC day it ended and the redacted
//! recipient, which is all `leak status` shows of it, under a random label
//! drawn when the leak was created (never derived from the id). Summaries
//! are deleted after `[agent] forget_ended_after_days` whole days
//! ([`StateDir::forget_ended`]). The end is two steps that each leave a
//! whole file: the record is first replaced in place by its summary (from
//! then on no file holds the id), then renamed into `ended/`; a crash
//! between the two is finished when the directory is next opened. Records
//! of finished leaks written by versions that kept them are ended the same
//! way.
//!
//! Every file is written to a temporary name, synced and renamed over the
//! old one, so a crash leaves the old or the new version, never a torn one.

use std::{
    fs,
    os::unix::fs::DirBuilderExt as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use leak_net::durable::{self, Access};
use leak_protocol::{BounceClass, MessageId, Outcome, ReplyKeys};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

/// One leak, as the client remembers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeakRecord {
    /// The message id, in hex.
    pub message_id: String,
    /// The recipient, redacted ([`redact_recipient`]).
    pub recipient: String,
    /// The relationship given.
    pub relationship: String,
    /// The exit every attempt goes to.
    pub exit: ExitRecord,
    /// When the leak was first sent, Unix milliseconds.
    pub created_at_ms: u64,
    /// Every attempt, oldest first.
    pub attempts: Vec<AttemptRecord>,
    /// The name of the summary the leak leaves when it ends
    /// (`ended/LABEL.json`): random, so that the summary cannot be matched
    /// to the message id. Empty in records of older versions (one is drawn
    /// when such a leak ends).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub label: String,
    /// How it ended. Only records written by versions that kept finished
    /// leaks have one: [`StateDir::open`] ends such a record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<FinalRecord>,
}

/// What is left of a leak once it ended: what `leak status` shows, and
/// nothing that matches the leak elsewhere (no message id, no exit, no send
/// times).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndedRecord {
    /// The recipient, redacted ([`redact_recipient`]).
    pub recipient: String,
    /// The UTC day the leak ended, in days since 1970-01-01: coarse, so it
    /// does not line up with an exit's delivery time.
    pub ended_day: u64,
    /// What happened.
    pub result: Finished,
}

/// An ended leak's summary with its label (the file's name).
pub type LabelledSummary = (String, EndedRecord);

/// Milliseconds in a day.
const DAY_MS: u64 = 86_400_000;

/// A fresh random label for a leak's summary ([`LeakRecord::label`]).
pub fn new_label() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Whether `label` is one [`new_label`] could have drawn (it becomes a file
/// name).
fn is_label(label: &str) -> bool {
    label.len() == 32 && label.bytes().all(|b| b.is_ascii_hexdigit())
}

pub use leak_net::dates::day_to_date;

/// The exit a leak goes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitRecord {
    /// Its libp2p peer id.
    pub peer: String,
    /// The mail domain it sends from.
    pub domain: String,
}

/// One transmission of a leak.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttemptRecord {
    /// When the packet was handed to the entry relay, Unix milliseconds.
    pub sent_at_ms: u64,
    /// The delays of the forward and reply paths added up: no receipt can
    /// arrive sooner.
    pub path_delay_ms: u64,
    /// The entry relay's peer id, which also keeps the mailbox.
    pub mailbox_peer: String,
    /// The mailbox node's addresses, from its descriptor.
    pub mailbox_addresses: Vec<String>,
    /// Whether the entry relay took the packet.
    pub sent: bool,
    /// The capability and reply keys; erased when the leak is finished.
    pub secrets: Option<AttemptSecrets>,
}

/// What opens an attempt's mailbox and its receipt. Secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttemptSecrets {
    /// The mailbox capability, hex.
    pub capability: String,
    /// The reply keys, postcard then hex.
    pub reply_keys: String,
}

impl std::fmt::Debug for AttemptSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AttemptSecrets([redacted])")
    }
}

impl AttemptSecrets {
    /// Encodes the secrets of one attempt.
    pub fn new(capability: &[u8; 32], keys: &ReplyKeys) -> anyhow::Result<Self> {
        let encoded = Zeroizing::new(postcard::to_allocvec(keys).context("encoding reply keys")?);
        Ok(Self {
            capability: hex::encode(capability),
            reply_keys: hex::encode(&*encoded),
        })
    }

    /// The mailbox capability.
    pub fn capability(&self) -> anyhow::Result<Zeroizing<[u8; 32]>> {
        let bytes = Zeroizing::new(hex::decode(&self.capability).context("capability")?);
        let mut out = Zeroizing::new([0u8; 32]);
        if bytes.len() != 32 {
            anyhow::bail!("a stored capability is not 32 bytes");
        }
        out.copy_from_slice(&bytes);
        Ok(out)
    }

    /// The reply keys.
    pub fn reply_keys(&self) -> anyhow::Result<ReplyKeys> {
        let bytes = Zeroizing::new(hex::decode(&self.reply_keys).context("reply keys")?);
        postcard::from_bytes(&bytes).context("stored reply keys do not decode")
    }
}

/// How a leak ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinalRecord {
    /// When it was known, Unix milliseconds.
    pub at_ms: u64,
    /// What happened.
    pub result: Finished,
}

/// What happened to a leak.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case", deny_unknown_fields)]
pub enum Finished {
    /// The exit's receipt says so.
    Receipt {
        /// The exit's outcome.
        #[serde(with = "outcome_serde")]
        receipt: Outcome,
    },
    /// No receipt came after every retransmission.
    NoReceipt,
    /// It never left, and its text, kept sealed under a key in memory only,
    /// was lost when the machine restarted: it must be sent again.
    Lost,
}

mod outcome_serde {
    //! Outcomes as `{ "kind": "refused", "rule": .., "reason": .. }`.
    use leak_protocol::{BounceClass, Outcome};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wire {
        kind: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    }

    pub fn serialize<S: Serializer>(outcome: &Outcome, s: S) -> Result<S::Ok, S::Error> {
        let (rule, reason) = match outcome {
            Outcome::Refused { rule, reason } => (Some(rule.clone()), Some(reason.clone())),
            _ => (None, None),
        };
        Wire {
            kind: super::outcome_name(outcome).to_owned(),
            rule,
            reason,
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Outcome, D::Error> {
        let wire = Wire::deserialize(d)?;
        Ok(match wire.kind.as_str() {
            "delivered" => Outcome::Delivered,
            "refused" => Outcome::Refused {
                rule: wire.rule.unwrap_or_default(),
                reason: wire.reason.unwrap_or_default(),
            },
            "recipient_opted_out" => Outcome::RecipientOptedOut,
            "rate_limited" => Outcome::RateLimited,
            "bounced" => Outcome::Bounced,
            "accepted" => Outcome::Accepted,
            "bounced_unknown_user" => Outcome::BouncedWith(BounceClass::UnknownUser),
            "bounced_mailbox_full" => Outcome::BouncedWith(BounceClass::MailboxFull),
            "bounced_policy" => Outcome::BouncedWith(BounceClass::Policy),
            "bounced_other" => Outcome::BouncedWith(BounceClass::Other),
            "thread_ended" => Outcome::ThreadEnded,
            other => {
                return Err(serde::de::Error::custom(format!(
                    "unknown outcome {other:?}"
                )));
            }
        })
    }
}

/// The stable snake-case name of an outcome (JSON output, state files).
pub fn outcome_name(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Delivered => "delivered",
        Outcome::Refused { .. } => "refused",
        Outcome::RecipientOptedOut => "recipient_opted_out",
        Outcome::RateLimited => "rate_limited",
        Outcome::Bounced => "bounced",
        Outcome::Accepted => "accepted",
        Outcome::BouncedWith(BounceClass::UnknownUser) => "bounced_unknown_user",
        Outcome::BouncedWith(BounceClass::MailboxFull) => "bounced_mailbox_full",
        Outcome::BouncedWith(BounceClass::Policy) => "bounced_policy",
        Outcome::BouncedWith(BounceClass::Other) => "bounced_other",
        Outcome::ThreadEnded => "thread_ended",
    }
}

impl LeakRecord {
    /// The message id.
    pub fn id(&self) -> anyhow::Result<MessageId> {
        parse_message_id(&self.message_id)
    }

    /// Whether the leak still waits for a receipt.
    pub fn is_pending(&self) -> bool {
        self.outcome.is_none()
    }
}

/// Parses a message id in hex.
pub fn parse_message_id(hex_id: &str) -> anyhow::Result<MessageId> {
    let bytes = hex::decode(hex_id).ok().filter(|b| b.len() == 16);
    let Some(bytes) = bytes else {
        anyhow::bail!("{hex_id:?} is not a message id (32 hex digits)");
    };
    let mut id = [0u8; 16];
    id.copy_from_slice(&bytes);
    Ok(MessageId(id))
}

/// `alice@example.com` → `a…@example.com`: enough for the sender to tell
/// their leaks apart, not the whole address.
pub fn redact_recipient(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}…@{domain}")
        }
        None => "…".to_owned(),
    }
}

impl StateDir {
    /// The state directory at `root`, created (mode 0700) if missing.
    /// Ends what a crash or an older version left half-ended (see the
    /// module doc).
    pub fn open(root: &Path) -> anyhow::Result<Self> {
        create_private_dir(root)?;
        create_private_dir(&root.join("leaks"))?;
        create_private_dir(&root.join("ended"))?;
        let state = Self {
            root: root.to_path_buf(),
        };
        state.settle()?;
        Ok(state)
    }

    /// Moves summaries a crash left under a leak's id into `ended/`, and
    /// ends finished records of older versions.
    fn settle(&self) -> anyhow::Result<()> {
        for id in self.ids()? {
            let path = self.leak_path(&id);
            let Ok(bytes) = fs::read(&path).map(Zeroizing::new) else {
                continue;
            };
            if serde_json::from_slice::<EndedRecord>(&bytes).is_ok() {
                self.move_to_ended(&path, &new_label())?;
            } else if let Ok(record) = serde_json::from_slice::<LeakRecord>(&bytes)
                && let Some(done) = record.outcome.clone()
            {
                self.end(&record, done.result, done.at_ms)?;
            }
        }
        Ok(())
    }

    fn ended_path(&self, label: &str) -> PathBuf {
        self.root.join("ended").join(format!("{label}.json"))
    }

    fn move_to_ended(&self, from: &Path, label: &str) -> anyhow::Result<()> {
        let to = self.ended_path(label);
        // Never the path in an error: a leak's file name is its message id,
        // and the agent's errors reach its log.
        fs::rename(from, &to).context("cannot move a leak's record into ended/")?;
        durable::sync_dir(&self.root.join("leaks"))
            .and_then(|()| durable::sync_dir(&self.root.join("ended")))
            .context("cannot sync the state directory")
    }

    /// Ends a leak: its record is replaced by its [`EndedRecord`], which is
    /// returned. From then on nothing in the state directory holds the
    /// message id, the exit, the send times or the reply keys.
    pub fn end(
        &self,
        record: &LeakRecord,
        result: Finished,
        now_ms: u64,
    ) -> anyhow::Result<EndedRecord> {
        parse_message_id(&record.message_id)?;
        let summary = EndedRecord {
            recipient: record.recipient.clone(),
            ended_day: now_ms / DAY_MS,
            result,
        };
        let label = if is_label(&record.label) {
            record.label.clone()
        } else {
            new_label()
        };
        let json = serde_json::to_vec_pretty(&summary).context("encoding a leak's summary")?;
        let path = self.leak_path(&record.message_id);
        // In place first: a crash before the rename leaves a whole summary
        // (which `settle` moves), never a record half gone.
        write_record(&path, &json)?;
        self.move_to_ended(&path, &label)?;
        Ok(summary)
    }

    /// The summary a leak with this label left, if it ended (and is not
    /// forgotten yet).
    pub fn load_ended(&self, label: &str) -> anyhow::Result<Option<EndedRecord>> {
        if !is_label(label) {
            return Ok(None);
        }
        let path = self.ended_path(label);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .with_context(|| format!("{} is corrupt", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
        }
    }

    /// Every ended leak's summary, oldest first, with its label.
    /// Unreadable ones are reported, not fatal.
    pub fn list_ended(&self) -> anyhow::Result<(Vec<LabelledSummary>, Vec<String>)> {
        let dir = self.root.join("ended");
        let mut ended = Vec::new();
        let mut errors = Vec::new();
        for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
            let name = entry?.file_name();
            let Some(label) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            match self.load_ended(label) {
                Ok(Some(summary)) => ended.push((label.to_owned(), summary)),
                Ok(None) => {}
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        ended.sort_by_key(|(_, s)| s.ended_day);
        Ok((ended, errors))
    }

    /// Deletes the summaries of leaks that ended `keep_days` or more whole
    /// days before `now_ms` (0: every summary). Returns how many.
    pub fn forget_ended(&self, now_ms: u64, keep_days: u32) -> anyhow::Result<usize> {
        let today = now_ms / DAY_MS;
        let (ended, _) = self.list_ended()?;
        let mut forgotten = 0;
        for (label, summary) in ended {
            if summary.ended_day + u64::from(keep_days) <= today {
                let path = self.ended_path(&label);
                match fs::remove_file(&path) {
                    Ok(()) => forgotten += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => anyhow::bail!("cannot remove {}: {e}", path.display()),
                }
            }
        }
        if forgotten > 0 {
            durable::sync_dir(&self.root.join("ended"))
                .context("cannot sync the state directory")?;
        }
        Ok(forgotten)
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the directory cache lives.
    pub fn directory_cache(&self) -> PathBuf {
        self.root.join("directory.json")
    }

    fn leak_path(&self, id: &str) -> PathBuf {
        self.root.join("leaks").join(format!("{id}.json"))
    }

    /// Saves a leak's record (atomically, mode 0600).
    pub fn save(&self, record: &LeakRecord) -> anyhow::Result<()> {
        // The id becomes a file name: it must be exactly hex.
        parse_message_id(&record.message_id)?;
        let json =
            Zeroizing::new(serde_json::to_vec_pretty(record).context("encoding a leak record")?);
        write_record(&self.leak_path(&record.message_id), &json)
    }

    /// Forgets a leak (one that never left the client).
    pub fn remove(&self, id: &str) -> anyhow::Result<()> {
        parse_message_id(id)?;
        match fs::remove_file(self.leak_path(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(anyhow::anyhow!("cannot remove a leak's record: {e}")),
        }
    }

    /// Loads the leak with this id, or with the only id starting with this
    /// prefix (at least 4 hex digits).
    pub fn load(&self, id_or_prefix: &str) -> anyhow::Result<LeakRecord> {
        let wanted = id_or_prefix.to_ascii_lowercase();
        if wanted.len() < 4 || wanted.len() > 32 || !wanted.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(BadMessageId(id_or_prefix.to_owned()).into());
        }
        let matches: Vec<String> = self
            .ids()?
            .into_iter()
            .filter(|id| id.starts_with(&wanted))
            .collect();
        match matches.as_slice() {
            [id] => self.load_exact(id),
            [] => Err(UnknownLeak(id_or_prefix.to_owned()).into()),
            _ => anyhow::bail!("{id_or_prefix:?} matches several leaks: give more digits"),
        }
    }

    fn load_exact(&self, id: &str) -> anyhow::Result<LeakRecord> {
        let path = self.leak_path(id);
        let bytes = Zeroizing::new(fs::read(&path).context("cannot read a leak's record")?);
        serde_json::from_slice(&bytes).context("a leak's record is corrupt")
    }

    /// The ids of every stored leak.
    pub fn ids(&self) -> anyhow::Result<Vec<String>> {
        let dir = self.root.join("leaks");
        let mut ids = Vec::new();
        for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
            let name = entry?.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if parse_message_id(id).is_ok() {
                ids.push(id.to_owned());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Every stored leak, oldest first. Unreadable records are reported, not fatal.
    pub fn list(&self) -> anyhow::Result<(Vec<LeakRecord>, Vec<String>)> {
        let mut records = Vec::new();
        let mut errors = Vec::new();
        for id in self.ids()? {
            match self.load_exact(&id) {
                Ok(record) => records.push(record),
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        records.sort_by_key(|r| r.created_at_ms);
        Ok((records, errors))
    }
}

/// Not a message id or a prefix of one.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a message id (32 hex digits, or at least the first 4)")]
pub struct BadMessageId(pub String);

/// No pending leak has this id (an ended one is kept without it).
#[derive(Debug, thiserror::Error)]
#[error(
    "no leak {0} in the state directory (a leak that ended is kept without its id: `leak status` lists it)"
)]
pub struct UnknownLeak(pub String);

/// Creates `dir` with mode 0700 if it does not exist.
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// Writes a leak's record (`leaks/ID.json`) durably; an error names no path.
fn write_record(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    durable::write(path, bytes, Access::Private).context("cannot write a leak's record")
}

/// Writes `bytes` to `path` the one durable way ([`durable::write`]),
/// readable by its owner only.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    durable::write(path, bytes, Access::Private)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use leak_protocol::{Delay, MailboxId, NodeId, PathHop, build_reply_block};

    use super::*;

    fn keys() -> ReplyKeys {
        let hop = PathHop {
            node: NodeId([1; 32]),
            key: leak_protocol::MixSecret::from_bytes([7; 32]).public(),
            key_hint: 1,
            delay: Delay(0),
        };
        build_reply_block(&[hop], MailboxId([3; 32]), &mut rand::rng())
            .unwrap()
            .1
    }

    fn record(id: u8) -> LeakRecord {
        LeakRecord {
            message_id: MessageId([id; 16]).to_string(),
            recipient: redact_recipient("alice@example.com"),
            relationship: "friend".into(),
            exit: ExitRecord {
                peer: "12D3KooW".into(),
                domain: "leak.test".into(),
            },
            created_at_ms: u64::from(id),
            label: String::new(),
            attempts: vec![AttemptRecord {
                sent_at_ms: 5,
                path_delay_ms: 600,
                mailbox_peer: "12D3KooX".into(),
                mailbox_addresses: vec!["/ip4/127.0.0.1/tcp/1".into()],
                sent: true,
                secrets: Some(AttemptSecrets::new(&[9; 32], &keys()).unwrap()),
            }],
            outcome: None,
        }
    }

    #[test]
    fn records_round_trip_privately() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(&dir.path().join("state")).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(state.root()), 0o700);
        let mut a = record(1);
        state.save(&a).unwrap();
        state.save(&record(2)).unwrap();
        let path = state.leak_path(&a.message_id);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(state.load(&a.message_id).unwrap(), a);
        let secrets = a.attempts[0].secrets.clone().unwrap();
        assert_eq!(*secrets.capability().unwrap(), [9; 32]);
        assert_eq!(secrets.reply_keys().unwrap(), keys_like(&secrets));
        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.contains("alice"), "the recipient is redacted");

        let (all, errors) = state.list().unwrap();
        assert_eq!(all.len(), 2);
        assert!(errors.is_empty());
        assert_eq!(all[0].message_id, a.message_id, "oldest first");
        // No temporary files left behind.
        assert_eq!(fs::read_dir(state.root().join("leaks")).unwrap().count(), 2);

        // Ending leaves the summary only, under the label.
        a.label = new_label();
        state.save(&a).unwrap();
        let refused = Finished::Receipt {
            receipt: Outcome::Refused {
                rule: "threat.direct".into(),
                reason: "no".into(),
            },
        };
        let summary = state.end(&a, refused.clone(), 3 * DAY_MS + 5).unwrap();
        assert_eq!(summary.ended_day, 3);
        assert!(!path.exists());
        assert!(state.load(&a.message_id).unwrap_err().is::<UnknownLeak>());
        assert_eq!(state.load_ended(&a.label).unwrap(), Some(summary.clone()));
        assert_eq!(mode(&state.ended_path(&a.label)), 0o600);
        let (ended, errors) = state.list_ended().unwrap();
        assert!(errors.is_empty());
        assert_eq!(ended, vec![(a.label.clone(), summary)]);
        assert_eq!(state.list().unwrap().0.len(), 1, "the other is pending");
    }

    /// Every byte of every file under `dir`.
    fn all_bytes(dir: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(all_bytes(&path));
            } else {
                out.extend(fs::read(&path).unwrap());
                out.extend(path.file_name().unwrap().as_encoded_bytes());
            }
        }
        out
    }

    fn holds(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    /// After a leak ends, no file (name or contents) holds its message id
    /// (in hex or raw), its exit, its mailbox node or its send times.
    #[test]
    fn an_ended_leak_leaves_nothing_that_matches() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let mut a = record(0x5a);
        a.label = new_label();
        a.attempts[0].sent_at_ms = 1_764_900_000_123;
        state.save(&a).unwrap();
        let before = all_bytes(dir.path());
        let id = a.id().unwrap();
        assert!(holds(&before, a.message_id.as_bytes()), "the scan can fail");
        state
            .end(&a, Finished::NoReceipt, 1_764_900_100_000)
            .unwrap();
        let after = all_bytes(dir.path());
        for needle in [
            a.message_id.as_bytes(),
            &id.0[..],
            a.exit.peer.as_bytes(),
            a.exit.domain.as_bytes(),
            a.attempts[0].mailbox_peer.as_bytes(),
            b"1764900000123",
            b"1764900100000",
            b"reply_keys",
        ] {
            assert!(
                !holds(&after, needle),
                "{:?} is still there",
                String::from_utf8_lossy(needle)
            );
        }
        assert!(holds(&after, "a…@example.com".as_bytes()));
    }

    /// A crash between the two steps of an end leaves a summary under the
    /// id; opening the directory finishes the move. A finished record of an
    /// older version is ended when the directory is opened.
    #[test]
    fn half_ended_and_old_finished_records_are_ended_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let a = record(1);
        let summary = EndedRecord {
            recipient: a.recipient.clone(),
            ended_day: 9,
            result: Finished::NoReceipt,
        };
        write_atomically(
            &state.leak_path(&a.message_id),
            &serde_json::to_vec(&summary).unwrap(),
        )
        .unwrap();
        let mut old = record(2);
        old.outcome = Some(FinalRecord {
            at_ms: 10 * DAY_MS,
            result: Finished::Receipt {
                receipt: Outcome::Delivered,
            },
        });
        state.save(&old).unwrap();
        state.save(&record(3)).unwrap();

        let state = StateDir::open(dir.path()).unwrap();
        assert_eq!(state.ids().unwrap(), vec![record(3).message_id]);
        let (ended, errors) = state.list_ended().unwrap();
        assert!(errors.is_empty());
        let days: Vec<u64> = ended.iter().map(|(_, s)| s.ended_day).collect();
        assert_eq!(days, vec![9, 10]);
        assert!(!holds(&all_bytes(dir.path()), old.message_id.as_bytes()));
    }

    #[test]
    fn summaries_are_forgotten_after_the_days_configured() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        for (id, day) in [(1, 10), (2, 12), (3, 16)] {
            state
                .end(&record(id), Finished::NoReceipt, day * DAY_MS + 1)
                .unwrap();
        }
        // Day 17, seven days kept: the one of day 10 goes.
        assert_eq!(state.forget_ended(17 * DAY_MS, 7).unwrap(), 1);
        assert_eq!(state.list_ended().unwrap().0.len(), 2);
        assert_eq!(state.forget_ended(17 * DAY_MS, 7).unwrap(), 0);
        assert_eq!(state.forget_ended(19 * DAY_MS + 5, 7).unwrap(), 1);
        assert_eq!(state.forget_ended(19 * DAY_MS, 0).unwrap(), 1);
        assert_eq!(fs::read_dir(dir.path().join("ended")).unwrap().count(), 0);
    }

    #[test]
    fn dates_of_days() {
        assert_eq!(day_to_date(0), "1970-01-01");
        assert_eq!(day_to_date(59), "1970-03-01");
        assert_eq!(day_to_date(11_016), "2000-02-29");
        assert_eq!(day_to_date(1_764_892_800_000 / DAY_MS), "2025-12-05");
    }

    fn keys_like(secrets: &AttemptSecrets) -> ReplyKeys {
        secrets.reply_keys().unwrap()
    }

    #[test]
    fn lookups_by_prefix_and_bad_ids() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        state.save(&record(0x11)).unwrap();
        assert!(state.load("1111").is_ok());
        assert!(state.load("2222").unwrap_err().is::<UnknownLeak>());
        assert!(state.load("11").is_err(), "too short");
        assert!(state.load("../../etc/passwd").is_err());
        let mut bad = record(3);
        bad.message_id = "../x".into();
        assert!(state.save(&bad).is_err());
        // A corrupt file is reported, the others still listed.
        fs::write(state.leak_path(&MessageId([4; 16]).to_string()), b"{").unwrap();
        let (all, errors) = state.list().unwrap();
        assert_eq!((all.len(), errors.len()), (1, 1));
    }

    #[test]
    fn outcomes_serialise_by_name() {
        for outcome in [
            Outcome::Delivered,
            Outcome::Refused {
                rule: "r".into(),
                reason: "why".into(),
            },
            Outcome::RecipientOptedOut,
            Outcome::RateLimited,
            Outcome::Bounced,
        ] {
            let finished = Finished::Receipt {
                receipt: outcome.clone(),
            };
            let json = serde_json::to_string(&finished).unwrap();
            assert!(json.contains(outcome_name(&outcome)), "{json}");
            assert_eq!(serde_json::from_str::<Finished>(&json).unwrap(), finished);
        }
        let json = serde_json::to_string(&Finished::NoReceipt).unwrap();
        assert_eq!(json, r#"{"outcome":"no_receipt"}"#);
        let json = serde_json::to_string(&Finished::Lost).unwrap();
        assert_eq!(json, r#"{"outcome":"lost"}"#);
        assert_eq!(
            serde_json::from_str::<Finished>(&json).unwrap(),
            Finished::Lost
        );
    }

    #[test]
    fn redaction() {
        assert_eq!(redact_recipient("alice@example.com"), "a…@example.com");
        assert_eq!(redact_recipient("josé@exämple.de"), "j…@exämple.de");
        assert_eq!(redact_recipient("nope"), "…");
    }
}
