//! Sealing a leak: the one way a sender turns a leak into the packet that
//! carries it (the client, the tests and the benchmarks all go through
//! [`seal_leak`]).
//!
//! 1. A single-use reply block along the `reply` path, to the mailbox whose
//!    id is derived from a capability only the sender holds
//!    ([`MailboxId::from_capability`]): the exit answers through it.
//! 2. The [`Leak`] (recipient, relationship, text, policy version, stamp and
//!    that reply block), encoded and validated ([`Leak::encode`]).
//! 3. One onion layer per hop of the `forward` path, ending at the exit
//!    ([`build_packet`]).
//!
//! The randomness is drawn in that order (the reply block's, then the
//! packet's). The encoded leak and the copy of its text are zeroed once the
//! packet is built; the caller keeps the reply keys (to open the receipt)
//! and the capability (to fetch it).

use rand_core::CryptoRng;
use zeroize::Zeroizing;

use crate::{
    address::Recipient,
    answers::AnswerTo,
    payload::{Leak, MessageId, PayloadError, Relationship, Stamp},
    reply::{ReplyKeys, build_reply_block},
    sphinx::{BuildError, MailboxId, Packet, PathHop, build_packet},
};

/// What a leak says, and the proofs the exit asks for.
#[derive(Clone, Copy)]
pub struct LeakContents<'a> {
    /// Random; the same for every retransmission of one leak.
    pub message_id: MessageId,
    /// Who receives the email.
    pub recipient: &'a Recipient,
    /// Who the sender is to them.
    pub relationship: Relationship,
    /// The message, already checked against the policy.
    pub text: &'a str,
    /// The moderation policy version the text was checked against.
    pub policy_version: u32,
    /// The anti-abuse stamp, bound to the recipient, the exit, the message
    /// id and the day.
    pub stamp: Stamp,
    /// How answers reach the sender (`None`: the leak cannot be answered).
    pub answer_to: Option<AnswerTo>,
}

/// Redacted: the recipient and the text never reach a log line.
impl core::fmt::Debug for LeakContents<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LeakContents")
            .field("message_id", &self.message_id)
            .field("relationship", &self.relationship)
            .field("text_len", &self.text.len())
            .field("policy_version", &self.policy_version)
            .finish_non_exhaustive()
    }
}

/// A sealed leak: the packet for the first hop of the forward path, and
/// the keys that open the receipt coming back through the reply block.
pub struct SealedLeak {
    /// The packet to hand to the forward path's first hop.
    pub packet: Packet,
    /// The keys that open the exit's receipt.
    pub reply_keys: ReplyKeys,
}

/// Why a leak could not be sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The reply path cannot carry a reply block.
    #[error("cannot build the reply block: {0}")]
    Reply(BuildError),
    /// The leak does not encode (a field is out of bounds).
    #[error("cannot encode the leak: {0}")]
    Encode(#[from] PayloadError),
    /// The forward path cannot carry the leak.
    #[error("cannot build the packet: {0}")]
    Packet(BuildError),
}

/// Seals `contents` for the `forward` path (entry first, exit last), with a
/// reply block along `reply` to the mailbox `mailbox` (see the module doc).
pub fn seal_leak<R: CryptoRng + ?Sized>(
    contents: &LeakContents<'_>,
    forward: &[PathHop],
    reply: &[PathHop],
    mailbox: MailboxId,
    rng: &mut R,
) -> Result<SealedLeak, SealError> {
    let (reply_block, reply_keys) =
        build_reply_block(reply, mailbox, rng).map_err(SealError::Reply)?;
    let leak = Leak {
        message_id: contents.message_id,
        recipient: contents.recipient.clone(),
        relationship: contents.relationship,
        text: contents.text.to_owned(),
        policy_version: contents.policy_version,
        stamp: contents.stamp,
        reply_block,
        answer_to: contents.answer_to,
    };
    let encoded = leak.encode().map(Zeroizing::new);
    drop(Zeroizing::new(leak.text));
    let packet = build_packet(forward, &encoded?, rng).map_err(SealError::Packet)?;
    Ok(SealedLeak { packet, reply_keys })
}
