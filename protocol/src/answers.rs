//! Answers: the recipient of a leak answers it, and its sender reads the
//! answer without anyone learning who the sender is.
//!
//! ```text
//!  sender                    exit                          recipient
//!  leak + AnswerTo{key, inbox} ──▶ email with an answer link
//!                                  and a Reply-To address ──▶ reads it
//!                            answer ◀── form (HTTP) or Reply (mail)
//!                            seal_answer(key, answer):
//!                            stored under `inbox`, sealed
//!  Fetch{capability, ack} ──▶ inbox = H(capability):
//!  (through the mix, on the   drop answers ≤ ack, send the next
//!   sender's own schedule) ◀── FetchReply (along the fetch's reply block)
//!  open_answer(secret, …)
//! ```
//!
//! - The leak carries an [`AnswerTo`]: an X25519 public key drawn for this
//!   conversation and the [`InboxId`] that names its answers at the exit,
//!   the hash of a capability only the sender holds. Follow-ups of the same
//!   conversation carry the same `AnswerTo`: the inbox is the thread.
//! - The exit seals every answer to the key as it arrives
//!   ([`seal_answer`]: an ephemeral X25519 key and ChaCha20-Poly1305) and
//!   keeps only the ciphertext: a later seizure of the exit's disk yields
//!   nothing readable.
//! - A [`Fetch`] carries the capability (the exit checks it hashes to an
//!   inbox it keeps), the highest sequence number the sender has stored
//!   (`ack`: the exit deletes those answers, so an answer is deleted once
//!   its fetch's reply is known to have arrived, never before) and a fresh
//!   reply block. The exit answers with a [`FetchReply`]: the next answer
//!   after `ack`, how many more wait, and whether the thread is still open.
//!   A fetch is built like an echo ([`crate::cover::build_echo`]) and is
//!   the same size as every packet: no relay can tell it from cover.
//!
//! Everything here is pure: randomness is passed in.

use core::fmt;

use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub use crate::payload::{AnswerTo, InboxId};
use crate::{
    cover::Loop,
    crypto::{KEY_LEN, TAG_LEN, aead_open, aead_seal, derive_key, x25519, x25519_public},
    payload::{Kind, PayloadError, TextError, decode, encode},
    reply::{ReplyBlock, build_reply_block},
    sphinx::{BuildError, MESSAGE_CAPACITY, MailboxId, PathHop, build_packet},
};

/// The most bytes of UTF-8 text in one answer.
pub const MAX_ANSWER_LEN: usize = 2000;
/// The most bytes of a sealed answer: the ephemeral key, the encoded
/// answer (its text at most [`MAX_ANSWER_LEN`]) and the tag.
pub const MAX_SEALED_LEN: usize = KEY_LEN + MAX_ANSWER_LEN + 32 + TAG_LEN;

const SEAL_CONTEXT: &str = "leak.answers v1 2026-12 answer seal";
const SEAL_AAD: &[u8] = b"leak.answers v1 answer";

/// A sender's request for the next answer in an inbox.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fetch {
    /// The secret whose hash names the inbox.
    pub capability: [u8; 32],
    /// The highest sequence number the sender has stored (0: none); the
    /// exit deletes the answers up to it.
    pub ack: u32,
    /// Where the reply goes.
    pub reply_block: ReplyBlock,
}

/// Redacted: the capability opens the inbox.
impl fmt::Debug for Fetch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fetch")
            .field("ack", &self.ack)
            .finish_non_exhaustive()
    }
}

impl Fetch {
    /// Encodes the fetch.
    pub fn encode(&self) -> Result<Vec<u8>, PayloadError> {
        encode(Kind::Fetch, self)
    }

    /// Decodes a fetch from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, PayloadError> {
        decode(Kind::Fetch, bytes)
    }
}

/// Whether the recipient can still receive the conversation's follow-ups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ThreadState {
    /// Open: follow-ups are delivered.
    Open,
    /// The recipient ended the conversation: no follow-up will be
    /// delivered; answers already given are still kept.
    Ended,
    /// The exit keeps no such inbox (never answered within its keeping
    /// time, expired, or a wrong capability).
    Unknown,
}

/// One answer as the exit keeps it: sealed to the sender's key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedAnswer {
    /// Its place in the inbox, from 1.
    pub seq: u32,
    /// [`seal_answer`]'s output, at most [`MAX_SEALED_LEN`] bytes.
    pub sealed: Vec<u8>,
}

impl fmt::Debug for SealedAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedAnswer")
            .field("seq", &self.seq)
            .field("len", &self.sealed.len())
            .finish()
    }
}

/// The exit's reply to a [`Fetch`], along its reply block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchReply {
    /// The thread's state.
    pub state: ThreadState,
    /// The first answer after the fetch's `ack`, if any.
    pub answer: Option<SealedAnswer>,
    /// How many answers wait after that one.
    pub waiting: u32,
}

impl FetchReply {
    /// Encodes the reply.
    pub fn encode(&self) -> Result<Vec<u8>, PayloadError> {
        self.validate()?;
        encode(Kind::Answers, self)
    }

    /// Decodes and validates a reply from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, PayloadError> {
        let reply: Self = decode(Kind::Answers, bytes)?;
        reply.validate()?;
        Ok(reply)
    }

    fn validate(&self) -> Result<(), PayloadError> {
        match &self.answer {
            Some(a) if a.sealed.len() > MAX_SEALED_LEN || a.seq == 0 => {
                Err(PayloadError::Malformed)
            }
            _ => Ok(()),
        }
    }
}

/// How the recipient answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AnswerVia {
    /// The form behind the email's answer link.
    Web,
    /// Reply in their mail program.
    Email,
}

/// An answer, as the sender reads it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// How it came.
    pub via: AnswerVia,
    /// When the exit received it, in whole minutes since the Unix epoch.
    pub received_minute: u64,
    /// What the recipient wrote (quoted text and signatures trimmed), at
    /// most [`MAX_ANSWER_LEN`] bytes, checked like a leak's text.
    pub text: String,
    /// How many attachments the exit dropped (answers carry text only).
    pub dropped_attachments: u8,
}

/// Redacted: the text never reaches a log line.
impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Answer")
            .field("via", &self.via)
            .field("text_len", &self.text.len())
            .finish_non_exhaustive()
    }
}

/// Checks an answer's text: like a leak's ([`crate::payload::validate_text`])
/// but at most [`MAX_ANSWER_LEN`] bytes.
pub fn validate_answer_text(text: &str) -> Result<(), TextError> {
    if text.len() > MAX_ANSWER_LEN {
        return Err(TextError::TooLong(text.len()));
    }
    crate::payload::validate_text(text)
}

fn seal_key(shared: &[u8; 32], ephemeral: &[u8; 32], to: &[u8; 32]) -> crate::crypto::SymmetricKey {
    derive_key(SEAL_CONTEXT, &[shared, ephemeral, to])
}

/// Seals `answer` to the X25519 public key `to`: `ephemeral public key ‖
/// ChaCha20-Poly1305(postcard(answer))` under a key derived from the
/// ephemeral Diffie-Hellman (fresh per answer, so the zero nonce is safe).
pub fn seal_answer<R: CryptoRng + ?Sized>(
    to: &[u8; 32],
    answer: &Answer,
    rng: &mut R,
) -> Result<Vec<u8>, PayloadError> {
    validate_answer_text(&answer.text)?;
    let mut secret = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(secret.as_mut());
    let ephemeral = x25519_public(&secret);
    // A low-order key gives no shared secret: refuse it rather than seal
    // under a key anyone can compute.
    let shared = x25519(&secret, to).ok_or(PayloadError::Malformed)?;
    let key = seal_key(shared.as_bytes(), &ephemeral, to);
    let body = Zeroizing::new(postcard::to_allocvec(answer).map_err(|_| PayloadError::Malformed)?);
    let mut out = Vec::with_capacity(KEY_LEN + body.len() + TAG_LEN);
    out.extend_from_slice(&ephemeral);
    out.extend_from_slice(&body);
    out.extend_from_slice(&[0; TAG_LEN]);
    aead_seal(&key, SEAL_AAD, &mut out[KEY_LEN..]).map_err(|_| PayloadError::Malformed)?;
    if out.len() > MAX_SEALED_LEN {
        return Err(PayloadError::TooLarge {
            len: out.len(),
            max: MAX_SEALED_LEN,
        });
    }
    Ok(out)
}

/// Opens a sealed answer with the conversation's X25519 secret, and
/// validates it.
pub fn open_answer(secret: &[u8; 32], sealed: &[u8]) -> Result<Answer, PayloadError> {
    if sealed.len() < KEY_LEN + TAG_LEN || sealed.len() > MAX_SEALED_LEN {
        return Err(PayloadError::Truncated);
    }
    let ephemeral: [u8; 32] = sealed[..KEY_LEN]
        .try_into()
        .map_err(|_| PayloadError::Truncated)?;
    let shared = x25519(secret, &ephemeral).ok_or(PayloadError::Malformed)?;
    let key = seal_key(shared.as_bytes(), &ephemeral, &x25519_public(secret));
    let mut body = Zeroizing::new(sealed[KEY_LEN..].to_vec());
    aead_open(&key, SEAL_AAD, &mut body).map_err(|_| PayloadError::Malformed)?;
    let plain = &body[..body.len() - TAG_LEN];
    let (answer, rest): (Answer, _) =
        postcard::take_from_bytes(plain).map_err(|_| PayloadError::Malformed)?;
    if !rest.is_empty() {
        return Err(PayloadError::TrailingBytes);
    }
    validate_answer_text(&answer.text)?;
    Ok(answer)
}

/// Builds a fetch: a packet along `forward` (entry first, the thread's exit
/// last) carrying a [`Fetch`] with a reply block along `reply` to
/// `mailbox`. The returned [`Loop`]'s keys open the [`FetchReply`].
/// Randomness is consumed by [`build_reply_block`], then [`build_packet`].
pub fn build_fetch<R: CryptoRng + ?Sized>(
    forward: &[PathHop],
    reply: &[PathHop],
    mailbox: MailboxId,
    capability: &[u8; 32],
    ack: u32,
    rng: &mut R,
) -> Result<Loop, BuildError> {
    let first_hop = forward.first().ok_or(BuildError::EmptyPath)?.node;
    let (reply_block, keys) = build_reply_block(reply, mailbox, rng)?;
    let fetch = Fetch {
        capability: *capability,
        ack,
        reply_block,
    };
    let message = Zeroizing::new(fetch.encode().map_err(|_| BuildError::MessageTooLong {
        len: usize::MAX,
        max: MESSAGE_CAPACITY,
    })?);
    let packet = build_packet(forward, &message, rng)?;
    Ok(Loop {
        first_hop,
        packet,
        keys,
    })
}
