//! Conversations: leaks their recipients can answer, and the answers.
//!
//! ```text
//! STATE_DIR/threads/         mode 0700
//!   LABEL.json               one conversation (mode 0600)
//! ```
//!
//! A conversation holds what the agent needs to fetch its answers and to
//! send follow-ups: the exit that keeps them, the X25519 secret answers are
//! sealed to and the capability that opens the inbox (SPEC.md §11.1); the
//! recipient's full address (a follow-up goes to them); the answers read
//! so far; when each of the sender's messages left (days only). It never
//! holds the text the sender wrote. Its label is random, never derived
//! from anything the exit sees.
//!
//! **What it costs.** A seized machine shows the conversations it holds:
//! the recipient and the answers. They are deleted `[agent]
//! keep_threads_days` after the last message or answer (default 30, as
//! long as an exit keeps answers), or by `leak inbox --forget LABEL`.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use leak_protocol::{
    NodeId,
    answers::{Answer, AnswerTo, AnswerVia, InboxId, ThreadState},
    crypto::x25519_public,
};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::state::{create_private_dir, new_label, redact_recipient, write_atomically};

const DAY_MS: u64 = 86_400_000;

/// One answer, as read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerRecord {
    /// Its number in the exit's inbox.
    pub seq: u32,
    /// "web" or "email".
    pub via: String,
    /// When the exit received it (Unix minutes).
    pub received_minute: u64,
    /// The recipient's words.
    pub text: String,
    /// Attachments the exit left out.
    pub dropped_attachments: u8,
}

/// One conversation.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreadRecord {
    /// Its random label (what `leak reply` names).
    pub label: String,
    /// The exit that delivered it and keeps its answers (node id, hex).
    pub exit_node: String,
    /// That exit's mail domain.
    pub exit_domain: String,
    /// The recipient's full address (follow-ups go to them).
    pub recipient: String,
    /// Who the sender is to them.
    pub relationship: String,
    /// The X25519 secret answers are sealed to (hex).
    pub answer_secret: String,
    /// The capability that opens the inbox (hex).
    pub capability: String,
    /// The UTC days the sender's messages were handed over, oldest first.
    pub sent_days: Vec<u64>,
    /// "open", "ended" (the recipient ended it) or "gone" (the exit keeps
    /// nothing of it any more).
    pub state: String,
    /// The highest answer number stored here (the next fetch says so, and
    /// the exit deletes those).
    pub acked: u32,
    /// The answers, in order.
    pub answers: Vec<AnswerRecord>,
    /// When it was last active: a message or an answer (Unix ms).
    pub last_ms: u64,
    /// When to fetch next (Unix ms).
    pub next_fetch_ms: u64,
    /// Fetches in a row that found nothing new (each one doubles the wait
    /// before the next, up to [`MAX_BACKOFF`]).
    #[serde(default)]
    pub empty_fetches: u32,
}

/// The longest wait between two fetches of a quiet conversation, in mean
/// intervals (`[agent] fetch_every_secs`): 16 (8 hours at the default).
pub const MAX_BACKOFF: u64 = 16;

impl std::fmt::Debug for ThreadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadRecord")
            .field("label", &self.label)
            .field("state", &self.state)
            .field("answers", &self.answers.len())
            .finish_non_exhaustive()
    }
}

fn key32(hex_str: &str, what: &str) -> anyhow::Result<Zeroizing<[u8; 32]>> {
    let bytes = Zeroizing::new(hex::decode(hex_str).with_context(|| format!("stored {what}"))?);
    let array: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| anyhow::anyhow!("stored {what} is not 32 bytes"))?;
    Ok(Zeroizing::new(array))
}

impl ThreadRecord {
    /// A new conversation with `recipient` through `exit`, its secrets
    /// drawn from `rng`.
    pub fn new<R: rand::CryptoRng + ?Sized>(
        recipient: &str,
        relationship: &str,
        exit: NodeId,
        exit_domain: &str,
        now_ms: u64,
        rng: &mut R,
    ) -> Self {
        let mut secret = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(secret.as_mut());
        let mut capability = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(capability.as_mut());
        Self {
            label: new_label(),
            exit_node: hex::encode(exit.0),
            exit_domain: exit_domain.to_owned(),
            recipient: recipient.to_owned(),
            relationship: relationship.to_owned(),
            answer_secret: hex::encode(secret.as_ref()),
            capability: hex::encode(capability.as_ref()),
            sent_days: Vec::new(),
            state: "open".into(),
            acked: 0,
            answers: Vec::new(),
            last_ms: now_ms,
            // Set by the agent's timer when the leak is stored.
            next_fetch_ms: u64::MAX,
            empty_fetches: 0,
        }
    }

    /// What its leaks carry.
    pub fn answer_to(&self) -> anyhow::Result<AnswerTo> {
        let secret = key32(&self.answer_secret, "answer secret")?;
        let capability = key32(&self.capability, "capability")?;
        Ok(AnswerTo {
            key: x25519_public(&secret),
            inbox: InboxId::from_capability(&capability),
        })
    }

    /// The capability, for a fetch.
    pub fn capability(&self) -> anyhow::Result<Zeroizing<[u8; 32]>> {
        key32(&self.capability, "capability")
    }

    /// The secret answers open with.
    pub fn secret(&self) -> anyhow::Result<Zeroizing<[u8; 32]>> {
        key32(&self.answer_secret, "answer secret")
    }

    /// The exit's node id.
    pub fn exit(&self) -> Option<NodeId> {
        let bytes = hex::decode(&self.exit_node).ok()?;
        Some(NodeId(bytes.try_into().ok()?))
    }

    /// How many mean intervals to wait before the next fetch: doubling
    /// with each fetch in a row that found nothing, at most
    /// [`MAX_BACKOFF`]. Every fetch is one more packet the exit can tie to
    /// this conversation: a quiet one is asked less often.
    pub fn backoff(&self) -> u64 {
        1u64.checked_shl(self.empty_fetches.min(8))
            .unwrap_or(MAX_BACKOFF)
            .min(MAX_BACKOFF)
    }

    /// The recipient, redacted (for listings).
    pub fn redacted_recipient(&self) -> String {
        redact_recipient(&self.recipient)
    }

    /// Records the exit's reply to a fetch: its state, and an answer
    /// opened with the conversation's secret. Returns whether a new
    /// answer was stored.
    pub fn apply(
        &mut self,
        state: ThreadState,
        answer: Option<(u32, Answer)>,
        now_ms: u64,
    ) -> bool {
        self.state = match state {
            ThreadState::Open => "open",
            ThreadState::Ended => "ended",
            ThreadState::Unknown if self.answers.is_empty() && self.acked == 0 => {
                // The exit records a conversation when it accepts its
                // leak, which can leave hours after it was handed over
                // (`--within`, retransmissions): until an answer came,
                // "unknown" may mean "not there yet". (A leak that ends
                // undelivered marks its conversation gone.)
                self.state.as_str()
            }
            ThreadState::Unknown => "gone",
        }
        .to_owned();
        let Some((seq, answer)) = answer else {
            self.empty_fetches = self.empty_fetches.saturating_add(1);
            return false;
        };
        if seq <= self.acked {
            self.empty_fetches = self.empty_fetches.saturating_add(1);
            return false;
        }
        self.empty_fetches = 0;
        self.acked = seq;
        self.last_ms = now_ms;
        self.answers.push(AnswerRecord {
            seq,
            via: match answer.via {
                AnswerVia::Web => "web",
                AnswerVia::Email => "email",
            }
            .into(),
            received_minute: answer.received_minute,
            text: answer.text.clone(),
            dropped_attachments: answer.dropped_attachments,
        });
        true
    }
}

/// The conversations directory.
#[derive(Debug, Clone)]
pub struct Threads {
    dir: PathBuf,
}

impl Threads {
    /// Opens (creates) `STATE_DIR/threads`.
    pub fn open(state_root: &Path) -> anyhow::Result<Self> {
        let dir = state_root.join("threads");
        create_private_dir(&dir)?;
        Ok(Self { dir })
    }

    fn path(&self, label: &str) -> PathBuf {
        self.dir.join(format!("{label}.json"))
    }

    /// Writes a conversation (atomically, synced).
    pub fn save(&self, thread: &ThreadRecord) -> anyhow::Result<()> {
        let bytes = Zeroizing::new(serde_json::to_vec_pretty(thread)?);
        write_atomically(&self.path(&thread.label), &bytes)
    }

    /// The conversation with label `label` (or the only one starting so).
    pub fn load(&self, label: &str) -> anyhow::Result<ThreadRecord> {
        if label.is_empty() || !label.chars().all(|c| c.is_ascii_alphanumeric()) {
            anyhow::bail!("no conversation {label:?}: labels are letters and digits");
        }
        let exact = self.path(label);
        let path = if exact.exists() {
            exact
        } else {
            let matches: Vec<_> = self
                .labels()?
                .into_iter()
                .filter(|l| l.starts_with(label))
                .collect();
            match matches.as_slice() {
                [one] => self.path(one),
                [] => anyhow::bail!("no conversation {label:?} (see `leak inbox`)"),
                _ => anyhow::bail!("{label:?} names more than one conversation"),
            }
        };
        let bytes =
            Zeroizing::new(fs::read(&path).with_context(|| format!("reading {}", path.display()))?);
        serde_json::from_slice(&bytes).with_context(|| format!("{} is corrupt", path.display()))
    }

    /// Every conversation's label.
    pub fn labels(&self) -> anyhow::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            if let Some(label) = name.to_str().and_then(|n| n.strip_suffix(".json")) {
                out.push(label.to_owned());
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every conversation that reads (newest activity first), and the
    /// labels of those that do not.
    pub fn list(&self) -> anyhow::Result<(Vec<ThreadRecord>, Vec<String>)> {
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for label in self.labels()? {
            match self.load(&label) {
                Ok(t) => good.push(t),
                Err(_) => bad.push(label),
            }
        }
        good.sort_by_key(|t| std::cmp::Reverse(t.last_ms));
        Ok((good, bad))
    }

    /// Deletes a conversation.
    pub fn forget(&self, label: &str) -> anyhow::Result<()> {
        let thread = self.load(label)?;
        let path = self.path(&thread.label);
        fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))
    }

    /// Deletes the conversations idle for more than `keep_days` days;
    /// returns how many.
    pub fn forget_idle(&self, now_ms: u64, keep_days: u32) -> anyhow::Result<usize> {
        let mut gone = 0;
        for thread in self.list()?.0 {
            if now_ms.saturating_sub(thread.last_ms) > u64::from(keep_days) * DAY_MS {
                self.forget(&thread.label)?;
                gone += 1;
            }
        }
        Ok(gone)
    }
}

#[cfg(test)]
mod tests {
    use leak_protocol::answers::{open_answer, seal_answer};
    use rand::SeedableRng as _;

    use super::*;

    #[test]
    fn a_conversation_reads_its_sealed_answers_once_and_is_forgotten_when_idle() {
        let dir = tempfile::tempdir().unwrap();
        let threads = Threads::open(dir.path()).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut t = ThreadRecord::new(
            "sam@example.org",
            "friend",
            NodeId([1; 32]),
            "x.test",
            0,
            &mut rng,
        );
        threads.save(&t).unwrap();
        let to = t.answer_to().unwrap();
        let answer = Answer {
            via: AnswerVia::Email,
            received_minute: 5,
            text: "Who is this?".into(),
            dropped_attachments: 0,
        };
        let sealed = seal_answer(&to.key, &answer, &mut rng).unwrap();
        let opened = open_answer(&t.secret().unwrap(), &sealed).unwrap();
        assert!(t.apply(ThreadState::Open, Some((1, opened.clone())), 10));
        // The same answer again (a lost acknowledgement) is not stored twice.
        assert!(!t.apply(ThreadState::Open, Some((1, opened)), 11));
        assert_eq!(t.answers.len(), 1);
        t.apply(ThreadState::Ended, None, 12);
        assert_eq!(t.state, "ended");
        threads.save(&t).unwrap();
        let back = threads.load(&t.label[..4]).unwrap();
        assert_eq!(back.answers, t.answers);
        assert_eq!(threads.forget_idle(10 + 31 * DAY_MS, 30).unwrap(), 1);
        assert!(threads.load(&t.label).is_err());
        assert!(threads.load("../x").is_err());
    }

    #[test]
    fn nothing_known_before_the_first_answer_is_not_gone() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let mut t = ThreadRecord::new("a@b.test", "friend", NodeId([1; 32]), "x.test", 0, &mut rng);
        t.apply(ThreadState::Unknown, None, 1);
        assert_eq!(t.state, "open");
        t.acked = 1;
        t.apply(ThreadState::Unknown, None, 2);
        assert_eq!(t.state, "gone");
    }

    #[test]
    fn a_quiet_conversation_is_asked_less_often_and_an_answer_resets_it() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut t = ThreadRecord::new("a@b.test", "friend", NodeId([1; 32]), "x.test", 0, &mut rng);
        assert_eq!(t.backoff(), 1);
        for expected in [2, 4, 8, 16, 16, 16] {
            t.apply(ThreadState::Open, None, 1);
            assert_eq!(t.backoff(), expected);
        }
        let answer = Answer {
            via: AnswerVia::Web,
            received_minute: 1,
            text: "hi".into(),
            dropped_attachments: 0,
        };
        assert!(t.apply(ThreadState::Open, Some((1, answer)), 2));
        assert_eq!(t.backoff(), 1);
    }
}
