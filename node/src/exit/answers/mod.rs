//! Conversations: a recipient answers a leak, the exit keeps the answer
//! sealed for its sender, and the sender fetches it through the mix
//! (SPEC.md §11.1).
//!
//! ```text
//!  leak with an answer-to ─▶ judge: the conversation is this recipient's,
//!                            not ended (else ThreadEnded) ─▶ accepted:
//!                            conversation recorded (store.rs), the email
//!                            gets an answer link, a Reply-To address and
//!                            In-Reply-To/References of the earlier emails
//!  answer (form: form.rs; mail: inbound/answer.rs)
//!        ─▶ token verified ─▶ the policy ─▶ caps ─▶ sealed, stored
//!  fetch ─▶ capability hashes to the conversation's inbox ─▶ answers up
//!           to `ack` deleted ─▶ the next one along the reply block
//! ```
//!
//! A conversation is named at the exit by its *thread key*, a keyed hash
//! of the inbox id under this exit's secret: the links and the Reply-To
//! address carry it, under a MAC, and nothing in them matches anything the
//! sender holds.

pub mod form;
pub mod store;

use leak_protocol::{
    Leak, Outcome, ReplyBlock,
    answers::{Answer, AnswerVia, Fetch, FetchReply, InboxId, seal_answer, validate_answer_text},
    crypto::{SymmetricKey, derive_key, mac},
    policy::Verdict,
};

use self::store::{AnswerStore, NotStored, Thread};
use super::{
    Exit, ExitError,
    email::{ThreadLinks, tag_eq},
};
use crate::metrics::Metrics;

const DAY_MS: u64 = 86_400_000;
/// How a Reply-To local part starts.
pub const ANSWER_PREFIX: &str = "a-";
const TOKEN_MAC_LEN: usize = 16;
const ADDRESS_MAC_LEN: usize = 10;

/// What a link about a conversation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadLink {
    /// Answer the sender (the form).
    Answer,
    /// End the conversation: no more follow-ups.
    End,
}

impl ThreadLink {
    fn tag(self) -> &'static [u8] {
        match self {
            Self::Answer => b"answer",
            Self::End => b"end",
        }
    }
}

/// The conversations: their keys, tokens and store.
pub struct Threads {
    key: SymmetricKey,
    /// The tables.
    pub store: AnswerStore,
}

/// What a leak's conversation allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThreadVerdict {
    /// Not a follow-up of a conversation kept here (or not answerable).
    None,
    /// A follow-up of a conversation kept here, open.
    Continues,
    /// Refused with this outcome.
    Refuse(Outcome),
}

/// What became of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// Sealed and stored for the sender.
    Stored,
    /// The policy refused it: the rule's reason, for the recipient.
    Refused(String),
    /// Empty, too long, or with control characters: why.
    Invalid(String),
    /// The conversation is unknown (expired) or the token not this
    /// recipient's.
    Unknown,
    /// The recipient ended the conversation.
    Ended,
    /// Not from the conversation's recipient (an emailed answer from
    /// another address, a form token of another recipient).
    NotRecipient,
    /// The conversation took its answers for today.
    Flood,
    /// As many answers wait as the conversation keeps.
    Full,
}

impl Taken {
    fn label(&self) -> &'static str {
        match self {
            Self::Stored => "stored",
            Self::Refused(_) => "refused",
            Self::Invalid(_) => "invalid",
            Self::Unknown => "unknown",
            Self::Ended => "ended",
            Self::NotRecipient => "not_recipient",
            Self::Flood => "flood",
            Self::Full => "full",
        }
    }
}

impl Threads {
    /// The conversations of the exit with seed `seed`, in `store`.
    pub fn new(seed: &[u8; 32], store: AnswerStore) -> Self {
        Self {
            key: derive_key("leak exit threads v1", &[seed]),
            store,
        }
    }

    /// The thread key of `inbox`.
    pub fn thread_key(&self, inbox: &InboxId) -> [u8; 16] {
        let full = mac(&self.key, &[b"thread key", &inbox.0]);
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }

    fn tag(&self, link: ThreadLink, key: &[u8; 16], recipient: &[u8; 32]) -> [u8; TOKEN_MAC_LEN] {
        let full = mac(&self.key, &[link.tag(), key, recipient]);
        let mut out = [0u8; TOKEN_MAC_LEN];
        out.copy_from_slice(&full[..TOKEN_MAC_LEN]);
        out
    }

    /// The token of `link` for conversation `key` with `recipient` (hex).
    pub fn token(&self, link: ThreadLink, key: &[u8; 16], recipient: &[u8; 32]) -> String {
        let mut bytes = Vec::with_capacity(16 + 32 + TOKEN_MAC_LEN);
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(recipient);
        bytes.extend_from_slice(&self.tag(link, key, recipient));
        hex::encode(bytes)
    }

    /// The conversation and recipient of a valid token.
    pub fn check(&self, link: ThreadLink, token: &str) -> Option<([u8; 16], [u8; 32])> {
        if token.len() != 2 * (16 + 32 + TOKEN_MAC_LEN) {
            return None;
        }
        let bytes = hex::decode(token).ok()?;
        let key: [u8; 16] = bytes.get(..16)?.try_into().ok()?;
        let recipient: [u8; 32] = bytes.get(16..48)?.try_into().ok()?;
        let tag: [u8; TOKEN_MAC_LEN] = bytes.get(48..)?.try_into().ok()?;
        tag_eq(&tag, &self.tag(link, &key, &recipient)).then_some((key, recipient))
    }

    /// The Reply-To local part of conversation `key`: `a-` and 26 bytes
    /// of hex (the key and an 80-bit MAC: a local part has room for no
    /// more).
    pub fn address_local(&self, key: &[u8; 16]) -> String {
        format!(
            "{ANSWER_PREFIX}{}{}",
            hex::encode(key),
            hex::encode(self.address_tag(key))
        )
    }

    fn address_tag(&self, key: &[u8; 16]) -> [u8; ADDRESS_MAC_LEN] {
        let full = mac(&self.key, &[b"reply-to", key]);
        let mut out = [0u8; ADDRESS_MAC_LEN];
        out.copy_from_slice(&full[..ADDRESS_MAC_LEN]);
        out
    }

    /// The conversation a Reply-To local part names, if its MAC verifies.
    pub fn check_address(&self, local: &str) -> Option<[u8; 16]> {
        let hex_part = local
            .get(..ANSWER_PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(ANSWER_PREFIX))
            .and_then(|_| local.get(ANSWER_PREFIX.len()..))?;
        if hex_part.len() != 2 * (16 + ADDRESS_MAC_LEN) {
            return None;
        }
        let bytes = hex::decode(hex_part.to_ascii_lowercase()).ok()?;
        let key: [u8; 16] = bytes.get(..16)?.try_into().ok()?;
        let tag: [u8; ADDRESS_MAC_LEN] = bytes.get(16..)?.try_into().ok()?;
        tag_eq(&tag, &self.address_tag(&key)).then_some(key)
    }
}

impl Exit {
    /// A leak that names a conversation may go on only if its answer key
    /// is a usable one and the conversation is its recipient's (under any
    /// hash the policy may have recorded them by, `recipient_hashes`) and
    /// not ended. A follow-up of a conversation kept here `Continues`:
    /// this exit takes it even if the directory now names another exit
    /// for the recipient, since the answers are here.
    pub(super) fn thread_verdict(
        &self,
        leak: &Leak,
        recipient_hashes: &[[u8; 32]],
    ) -> Result<ThreadVerdict, ExitError> {
        let Some(answer_to) = &leak.answer_to else {
            return Ok(ThreadVerdict::None);
        };
        // A low-order key gives no shared secret: no answer could be sealed.
        if leak_protocol::crypto::x25519(&[1; 32], &answer_to.key).is_none() {
            return Ok(ThreadVerdict::Refuse(Outcome::Refused {
                rule: "answer_to.invalid".into(),
                reason: "the key for answers is not a usable X25519 key".into(),
            }));
        }
        let key = self.threads.thread_key(&answer_to.inbox);
        let Some(thread) = self.threads.store.thread(&key)? else {
            return Ok(ThreadVerdict::None);
        };
        if !recipient_hashes.contains(&thread.recipient) || thread.key != answer_to.key {
            return Ok(ThreadVerdict::Refuse(Outcome::Refused {
                rule: "thread.mismatch".into(),
                reason: "this conversation is with another recipient".into(),
            }));
        }
        if thread.ended {
            return Ok(ThreadVerdict::Refuse(Outcome::ThreadEnded));
        }
        Ok(ThreadVerdict::Continues)
    }

    /// Whether the conversation of `leak` was ended by its recipient (a
    /// follow-up accepted before is then not delivered).
    pub(super) fn thread_ended(&self, leak: &Leak) -> Result<bool, ExitError> {
        let Some(answer_to) = &leak.answer_to else {
            return Ok(false);
        };
        let key = self.threads.thread_key(&answer_to.inbox);
        Ok(self.threads.store.thread(&key)?.is_some_and(|t| t.ended))
    }

    /// Records (or extends) the conversation of an accepted leak.
    pub(super) fn open_thread(
        &self,
        leak: &Leak,
        recipient: &[u8; 32],
        now_ms: u64,
    ) -> Result<(), ExitError> {
        let Some(answer_to) = leak.answer_to else {
            return Ok(());
        };
        let key = self.threads.thread_key(&answer_to.inbox);
        let message_id = self.email_message_id(leak);
        let until = now_ms.saturating_add(self.answer_keep_ms());
        self.threads.store.update_thread(&key, |current| {
            let mut thread = current.unwrap_or(Thread {
                inbox: answer_to.inbox.0,
                key: answer_to.key,
                recipient: *recipient,
                message_ids: Vec::new(),
                ended: false,
                expires_ms: until,
                // Numbered from the minute it was recorded: if the exit
                // forgot an earlier conversation of this inbox (its time
                // ran out) and a follow-up records it again, its answers
                // are numbered above every earlier one (a conversation
                // takes far fewer than one answer a minute), so the
                // sender's acknowledgement of those deletes none of these.
                next_seq: u32::try_from(now_ms / 60_000)
                    .unwrap_or(u32::MAX / 2)
                    .max(1),
                day: now_ms / DAY_MS,
                answers_today: 0,
            });
            thread.push_message_id(message_id);
            thread.expires_ms = thread.expires_ms.max(until);
            (Some(thread), ())
        })
    }

    fn email_message_id(&self, leak: &Leak) -> String {
        format!(
            "<{}@{}>",
            self.composer.tokens.message_id(&leak.message_id),
            self.composer.domain
        )
    }

    fn answer_keep_ms(&self) -> u64 {
        u64::from(self.config.exit.answer_keep_days) * DAY_MS
    }

    /// What the email of `leak` carries for its conversation (`None`: the
    /// leak cannot be answered, or its conversation is gone).
    pub(super) fn thread_links(
        &self,
        leak: &Leak,
        recipient: &[u8; 32],
    ) -> Result<Option<ThreadLinks>, ExitError> {
        let Some(answer_to) = &leak.answer_to else {
            return Ok(None);
        };
        let key = self.threads.thread_key(&answer_to.inbox);
        let Some(thread) = self.threads.store.thread(&key)? else {
            return Ok(None);
        };
        let own = self.email_message_id(leak);
        let references = thread
            .message_ids
            .iter()
            .take_while(|id| **id != own)
            .cloned()
            .collect();
        let base = &self.composer.public_url;
        Ok(Some(ThreadLinks {
            answer_url: format!(
                "{base}/answer/{}",
                self.threads.token(ThreadLink::Answer, &key, recipient)
            ),
            end_url: format!(
                "{base}/end/{}",
                self.threads.token(ThreadLink::End, &key, recipient)
            ),
            reply_to: self.inbound.then(|| {
                format!(
                    "{}@{}",
                    self.threads.address_local(&key),
                    self.composer.domain
                )
            }),
            references,
        }))
    }

    /// Takes an answer to conversation `key` from a recipient known by
    /// these hashes (the form token's; an email's From address under
    /// every hash the policy may have recorded it by): only the
    /// conversation's recipient answers. Checked like a leak's text, by
    /// the same policy, then sealed and stored.
    pub(crate) fn take_answer(
        &self,
        key: &[u8; 16],
        recipient: &[[u8; 32]],
        text: &str,
        via: AnswerVia,
        dropped_attachments: usize,
    ) -> Result<Taken, ExitError> {
        let taken = self.judge_answer(key, recipient, text, via, dropped_attachments)?;
        Metrics::count(&self.metrics.exit_answers, "result", taken.label());
        Ok(taken)
    }

    fn judge_answer(
        &self,
        key: &[u8; 16],
        recipient: &[[u8; 32]],
        text: &str,
        via: AnswerVia,
        dropped_attachments: usize,
    ) -> Result<Taken, ExitError> {
        let Some(thread) = self.threads.store.thread(key)? else {
            return Ok(Taken::Unknown);
        };
        if !recipient.contains(&thread.recipient) {
            return Ok(Taken::NotRecipient);
        }
        if thread.ended {
            return Ok(Taken::Ended);
        }
        let text = text.replace("\r\n", "\n").replace('\r', "\n");
        let text = text.trim();
        if let Err(e) = validate_answer_text(text) {
            return Ok(Taken::Invalid(e.to_string()));
        }
        let policy = self.policy();
        let verdicts = std::iter::once(policy.check_text(text))
            .chain(self.local_rules.iter().map(|p| p.check_text(text)));
        for verdict in verdicts {
            if let Verdict::Refused(r) = verdict {
                return Ok(Taken::Refused(r.reason));
            }
        }
        let now = self.now_ms();
        let answer = Answer {
            via,
            received_minute: now / 60_000,
            text: text.to_owned(),
            dropped_attachments: u8::try_from(dropped_attachments).unwrap_or(u8::MAX),
        };
        let stored = self.threads.store.put_answer(
            key,
            now,
            self.answer_keep_ms(),
            self.config.exit.answers_per_day,
            self.config.exit.answers_waiting,
            |thread| Ok(seal_answer(&thread.key, &answer, &mut rand::rng()).ok()),
        )?;
        Ok(match stored {
            Ok(_) => Taken::Stored,
            Err(NotStored::Unsealable) => Taken::Unknown,
            Err(NotStored::Unknown) => Taken::Unknown,
            Err(NotStored::Flood) => Taken::Flood,
            Err(NotStored::Full) => Taken::Full,
        })
    }

    /// The recipient of conversation `key` ends it: no follow-up will be
    /// delivered. Returns whether the token's conversation exists.
    pub(crate) fn end_thread(
        &self,
        key: &[u8; 16],
        recipient: &[u8; 32],
    ) -> Result<bool, ExitError> {
        let now = self.now_ms();
        self.threads
            .store
            .update_thread(key, |current| match current {
                Some(mut thread) if thread.recipient == *recipient => {
                    thread.ended = true;
                    // Its "no more" outlives the answers' keeping time, so
                    // a late follow-up cannot revive it (a year; a small
                    // record).
                    let year = now.saturating_add(365 * DAY_MS);
                    thread.expires_ms = thread.expires_ms.max(year);
                    (Some(thread), true)
                }
                _ => (None, false),
            })
    }

    /// A sender's fetch: answers up to its `ack` are deleted and the next
    /// one goes back along its reply block, held like a receipt. A fetch
    /// that does not decode is dropped (counted): there is no one to
    /// answer.
    pub(super) fn serve_fetch(
        &self,
        message: &[u8],
        hold: std::time::Duration,
    ) -> Result<(), ExitError> {
        let count = |result| Metrics::count(&self.metrics.exit_fetches, "result", result);
        let Ok(fetch) = Fetch::decode(message) else {
            count("invalid");
            return Ok(());
        };
        let Fetch {
            capability,
            ack,
            reply_block,
        } = fetch;
        let inbox = InboxId::from_capability(&capability);
        let key = self.threads.thread_key(&inbox);
        let (state, answer, waiting) =
            self.threads.store.fetch(&key, &inbox, ack, self.now_ms())?;
        count(match (&answer, state) {
            (_, leak_protocol::answers::ThreadState::Unknown) => "unknown",
            (Some(_), _) => "answer",
            (None, _) => "empty",
        });
        let reply = FetchReply {
            state,
            answer,
            waiting,
        };
        self.send_along(reply_block, &reply.encode(), hold);
        Ok(())
    }

    /// Sends an encoded reply along `block` after `hold` plus the receipt
    /// delay (as [`Exit::answer`] sends a receipt).
    fn send_along(
        &self,
        block: ReplyBlock,
        encoded: &Result<Vec<u8>, leak_protocol::payload::PayloadError>,
        hold: std::time::Duration,
    ) {
        let packet = match encoded {
            Ok(bytes) => block.into_packet(bytes).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match packet {
            Ok((first_hop, packet)) => {
                let due_ms = self
                    .now_ms()
                    .saturating_add(u64::try_from(hold.as_millis()).unwrap_or(u64::MAX))
                    .saturating_add(super::schedule::receipt_delay_ms(
                        self.config.exit.receipt_delay_ms,
                        &mut rand::rng(),
                    ));
                (self.send_packet)(first_hop, packet, due_ms);
            }
            Err(e) => tracing::warn!(error = %e, "cannot build a fetch's reply"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn threads() -> (tempfile::TempDir, Threads) {
        threads_of(&[1; 32])
    }

    /// The conversations of an exit with seed `seed`, in a fresh database.
    fn threads_of(seed: &[u8; 32]) -> (tempfile::TempDir, Threads) {
        let dir = tempfile::tempdir().unwrap();
        let db = std::sync::Arc::new(crate::store::Store::open(&dir.path().join("db")).unwrap());
        (dir, Threads::new(seed, AnswerStore::open(db).unwrap()))
    }

    #[test]
    fn tokens_name_their_conversation_and_recipient_only_under_the_mac() {
        let (_dir, t) = threads();
        let key = t.thread_key(&InboxId([5; 32]));
        assert_ne!(key, t.thread_key(&InboxId([6; 32])));
        let token = t.token(ThreadLink::Answer, &key, &[7; 32]);
        assert_eq!(t.check(ThreadLink::Answer, &token), Some((key, [7; 32])));
        // Not an end token, and no other recipient's.
        assert_eq!(t.check(ThreadLink::End, &token), None);
        let mut forged = token.clone().into_bytes();
        forged[40] = if forged[40] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            t.check(ThreadLink::Answer, &String::from_utf8(forged).unwrap()),
            None
        );
        assert_eq!(t.check(ThreadLink::Answer, "00"), None);
        assert_eq!(t.check(ThreadLink::Answer, &"zz".repeat(64)), None);
        // Another exit's key verifies nothing.
        let (_d2, other) = threads_of(&[2; 32]);
        assert_eq!(other.check(ThreadLink::Answer, &token), None);
    }

    #[test]
    fn reply_to_addresses_fit_a_local_part_and_verify() {
        let (_dir, t) = threads();
        let key = t.thread_key(&InboxId([5; 32]));
        let local = t.address_local(&key);
        assert!(local.len() <= 64, "{}", local.len());
        assert_eq!(t.check_address(&local), Some(key));
        assert_eq!(t.check_address(&local.to_ascii_uppercase()), Some(key));
        let mut bad = local.clone();
        bad.pop();
        bad.push('0');
        if bad != local {
            assert_eq!(t.check_address(&bad), None);
        }
        assert_eq!(t.check_address("a-"), None);
        assert_eq!(t.check_address("leak"), None);
        assert_eq!(t.check_address("a-é"), None);
    }
}
