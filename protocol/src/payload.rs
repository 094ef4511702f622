//! The messages packets carry: a [`Leak`] to the exit, a [`Receipt`] back.
//!
//! Encoding: one byte of format version ([`FORMAT_VERSION`]), one byte of
//! kind ([`Kind`]), then the message in `postcard`'s documented wire format,
//! with nothing after it. Decoding checks the version, the kind and that every
//! byte was used, then validates every field, so a decoded value is always a
//! valid one. Strings are length-checked against the input before they are
//! allocated (postcard reads a length, then that many bytes of input), and
//! there are no other variable-length fields: decoding never allocates more
//! than its input.

use core::fmt;

use serde::{Deserialize, Serialize};

use crate::{
    address::{AddressError, Recipient},
    reply::ReplyBlock,
    sphinx::MESSAGE_CAPACITY,
};

/// The payload format version this code reads and writes.
pub const FORMAT_VERSION: u8 = 1;
/// The most bytes of UTF-8 text in one leak. With the largest recipient
/// address and a reply block, a leak still fits in one packet (tested).
pub const MAX_TEXT_LEN: usize = 2500;
/// The most bytes of a refusal's rule name.
pub const MAX_RULE_LEN: usize = 64;
/// The most bytes of a refusal's reason.
pub const MAX_REASON_LEN: usize = 512;

/// What a payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A [`Leak`].
    Leak = 1,
    /// A [`Receipt`].
    Receipt = 2,
    /// Cover traffic ([`crate::cover`]): nothing inside, discarded by the
    /// exit, recognised by the builder of a loop.
    Cover = 3,
    /// An echo ([`crate::cover::build_echo`]): cover that the exit answers
    /// with cover along the reply block it carries, as it answers a leak
    /// with a receipt.
    Echo = 4,
    /// A [`crate::answers::Fetch`]: a sender asks the exit for an answer.
    Fetch = 5,
    /// A [`crate::answers::FetchReply`]: the exit's reply to a fetch.
    Answers = 6,
}

/// A random identifier the client gives a leak; retransmissions keep it, so
/// the exit delivers a leak once however often it arrives.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageId(pub [u8; 16]);

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

/// Who the sender is to the recipient; it sets the email's subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Relationship {
    /// "a coworker"
    Coworker,
    /// "a friend"
    Friend,
    /// "a friend of a friend"
    FriendOfAFriend,
    /// "a family member"
    Family,
    /// "someone"
    Someone,
}

impl Relationship {
    /// Every relationship, in a stable order.
    pub const ALL: [Self; 5] = [
        Self::Coworker,
        Self::Friend,
        Self::FriendOfAFriend,
        Self::Family,
        Self::Someone,
    ];

    /// The name used on the command line and in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Coworker => "coworker",
            Self::Friend => "friend",
            Self::FriendOfAFriend => "friend-of-a-friend",
            Self::Family => "family",
            Self::Someone => "someone",
        }
    }

    /// The noun phrase for the email's subject: "From a friend, anonymously."
    pub fn noun_phrase(self) -> &'static str {
        match self {
            Self::Coworker => "a coworker",
            Self::Friend => "a friend",
            Self::FriendOfAFriend => "a friend of a friend",
            Self::Family => "a family member",
            Self::Someone => "someone",
        }
    }
}

impl fmt::Display for Relationship {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown relationship name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown relationship {0:?}: expected coworker, friend, friend-of-a-friend, family or someone"
)]
pub struct UnknownRelationship(pub String);

impl core::str::FromStr for Relationship {
    type Err = UnknownRelationship;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRelationship(s.to_owned()))
    }
}

/// The anti-abuse stamp: a proof of work whose binding (recipient, exit,
/// epoch) and difficulty the shared moderation policy defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// The epoch the work was done for.
    pub epoch: u64,
    /// The nonce found.
    pub nonce: u64,
}

const INBOX_CONTEXT: &str = "leak.answers v1 2026-12 inbox id";

/// The name of a conversation's answers at the exit: the hash of the
/// capability the sender keeps ([`InboxId::from_capability`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InboxId(pub [u8; 32]);

impl InboxId {
    /// The inbox a capability opens.
    pub fn from_capability(capability: &[u8; 32]) -> Self {
        Self(crate::crypto::derive_key(INBOX_CONTEXT, &[capability]).0)
    }
}

impl fmt::Debug for InboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InboxId({})", crate::hex_prefix(&self.0))
    }
}

/// What a leak carries so that its recipient can answer
/// ([`crate::answers`]).
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerTo {
    /// The X25519 public key answers are sealed to.
    pub key: [u8; 32],
    /// Where the exit keeps them.
    pub inbox: InboxId,
}

impl fmt::Debug for AnswerTo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnswerTo")
            .field("inbox", &self.inbox)
            .finish_non_exhaustive()
    }
}

/// The encoded length of an [`AnswerTo`] (two fixed 32-byte arrays).
const ANSWER_TO_LEN: usize = 64;

/// A leak, as the exit receives it.
#[derive(Clone, PartialEq, Eq)]
pub struct Leak {
    /// Random; kept across retransmissions.
    pub message_id: MessageId,
    /// Who receives the email.
    pub recipient: Recipient,
    /// Who the sender is to them.
    pub relationship: Relationship,
    /// The message: valid UTF-8, at most [`MAX_TEXT_LEN`] bytes (see [`validate_text`]).
    pub text: String,
    /// The moderation policy version the client checked the text against.
    pub policy_version: u32,
    /// The anti-abuse stamp.
    pub stamp: Stamp,
    /// Where the receipt goes.
    pub reply_block: ReplyBlock,
    /// How the recipient's answers reach the sender; `None`: the leak
    /// cannot be answered.
    pub answer_to: Option<AnswerTo>,
}

/// Redacted: recipient and text must never reach a log line by accident.
impl fmt::Debug for Leak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leak")
            .field("message_id", &self.message_id)
            .field("relationship", &self.relationship)
            .field("text_len", &self.text.len())
            .field("policy_version", &self.policy_version)
            .finish_non_exhaustive()
    }
}

/// What happened to a leak.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Handed to the recipient's mail system.
    Delivered,
    /// The moderation policy refused it.
    Refused {
        /// The rule that refused it (at most [`MAX_RULE_LEN`] bytes).
        rule: String,
        /// Why, for the sender (at most [`MAX_REASON_LEN`] bytes).
        reason: String,
    },
    /// The recipient asked never to receive leaks.
    RecipientOptedOut,
    /// The recipient has received as many leaks as the policy allows for now.
    RateLimited,
    /// The recipient's mail system refused it permanently (or it could not
    /// be delivered within the exit's lifetime), with no finer reason.
    Bounced,
    /// The exit's own mail server took it, and no notification of what
    /// happened next came back in time: the outcome is unknown (not
    /// `Delivered`, which needs the recipient's server's word).
    Accepted,
    /// The recipient's mail system refused it permanently, for this kind of
    /// reason (from the SMTP answer or the delivery status notification).
    BouncedWith(BounceClass),
    /// A follow-up in a conversation whose recipient ended it: not
    /// delivered.
    ThreadEnded,
}

/// Why a recipient's mail system refused a leak, as far as its answer
/// says (from the RFC 3463 status code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BounceClass {
    /// No such mailbox (`5.1.1`, and the other `5.1.x`).
    UnknownUser,
    /// The mailbox is full or over quota (`5.2.2`, `4.2.2` given up).
    MailboxFull,
    /// Refused by the receiving system's policy or spam filter (`5.7.x`).
    Policy,
    /// Any other permanent failure.
    Other,
}

impl BounceClass {
    /// The class of an enhanced status code such as `5.1.1` (RFC 3463);
    /// `Other` for anything it cannot read.
    pub fn from_status(status: &str) -> Self {
        let mut parts = status.trim().split('.');
        let (_, subject, detail) = (parts.next(), parts.next(), parts.next());
        match (subject, detail) {
            (Some("1"), _) => Self::UnknownUser,
            (Some("2"), Some("2")) => Self::MailboxFull,
            (Some("7"), _) => Self::Policy,
            _ => Self::Other,
        }
    }
}

/// The exit's answer, sent back along the leak's reply block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The leak this answers.
    pub message_id: MessageId,
    /// What happened.
    pub outcome: Outcome,
}

/// Why a payload could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// The input is empty or shorter than its own header.
    #[error("the payload is truncated")]
    Truncated,
    /// A format version this code does not read.
    #[error("unknown payload format version {0}")]
    UnknownVersion(u8),
    /// Not the kind of payload expected here.
    #[error("expected a {expected:?} payload, got kind {got}")]
    WrongKind {
        /// What the caller asked for.
        expected: Kind,
        /// The kind byte found.
        got: u8,
    },
    /// The postcard body does not decode.
    #[error("the payload does not decode")]
    Malformed,
    /// Bytes left over after the message.
    #[error("the payload has trailing bytes")]
    TrailingBytes,
    /// The encoded message does not fit in one packet.
    #[error("the encoded payload is {len} bytes; a packet carries at most {max}")]
    TooLarge {
        /// The encoded length.
        len: usize,
        /// [`MESSAGE_CAPACITY`].
        max: usize,
    },
    /// The recipient address is invalid.
    #[error("invalid recipient: {0}")]
    Recipient(#[from] AddressError),
    /// The text is invalid.
    #[error("invalid text: {0}")]
    Text(#[from] TextError),
    /// A text field is not valid UTF-8.
    #[error("the {0} is not valid UTF-8")]
    InvalidUtf8(&'static str),
    /// A relationship this code does not know.
    #[error("unknown relationship (code {0})")]
    UnknownRelationship(u32),
    /// A refusal's rule or reason is too long.
    #[error("a refusal's rule or reason is too long")]
    RefusalTooLong,
}

/// Why a leak's text was refused before any policy looked at it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TextError {
    /// Nothing but whitespace.
    #[error("the message is empty")]
    Empty,
    /// Over [`MAX_TEXT_LEN`] bytes.
    #[error("the message is {0} bytes; at most {MAX_TEXT_LEN} are allowed")]
    TooLong(usize),
    /// A control character other than newline and tab.
    #[error("the message contains a control character (U+{0:04X})")]
    ControlCharacter(u32),
}

/// Checks a leak's text: not blank, at most [`MAX_TEXT_LEN`] bytes, and no
/// control characters but `\n` and `\t` (clients turn CRLF into LF first).
pub fn validate_text(text: &str) -> Result<(), TextError> {
    if text.len() > MAX_TEXT_LEN {
        return Err(TextError::TooLong(text.len()));
    }
    if let Some(c) = text
        .chars()
        .find(|&c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(TextError::ControlCharacter(u32::from(c)));
    }
    if text.trim().is_empty() {
        return Err(TextError::Empty);
    }
    Ok(())
}

#[derive(Serialize, Deserialize)]
struct LeakWire<'a> {
    message_id: MessageId,
    recipient: &'a str,
    relationship: Relationship,
    text: &'a str,
    policy_version: u32,
    stamp: Stamp,
    reply_block: ReplyBlock,
}

pub(crate) fn encode<T: Serialize>(kind: Kind, value: &T) -> Result<Vec<u8>, PayloadError> {
    let mut out = vec![FORMAT_VERSION, kind as u8];
    let body = postcard::to_allocvec(value).map_err(|_| PayloadError::Malformed)?;
    out.extend_from_slice(&body);
    if out.len() > MESSAGE_CAPACITY {
        return Err(PayloadError::TooLarge {
            len: out.len(),
            max: MESSAGE_CAPACITY,
        });
    }
    Ok(out)
}

pub(crate) fn decode<'a, T: Deserialize<'a>>(
    kind: Kind,
    bytes: &'a [u8],
) -> Result<T, PayloadError> {
    let (value, rest) = decode_prefix(kind, bytes)?;
    if !rest.is_empty() {
        return Err(PayloadError::TrailingBytes);
    }
    Ok(value)
}

/// Decodes a message of `kind` at the start of `bytes`; returns it and
/// the bytes after it.
fn decode_prefix<'a, T: Deserialize<'a>>(
    kind: Kind,
    bytes: &'a [u8],
) -> Result<(T, &'a [u8]), PayloadError> {
    let [version, got, body @ ..] = bytes else {
        return Err(PayloadError::Truncated);
    };
    if *version != FORMAT_VERSION {
        return Err(PayloadError::UnknownVersion(*version));
    }
    if *got != kind as u8 {
        return Err(PayloadError::WrongKind {
            expected: kind,
            got: *got,
        });
    }
    postcard::take_from_bytes(body).map_err(|_| PayloadError::Malformed)
}

/// A leak's optional last field ([`AnswerTo`]): absent in leaks that
/// cannot be answered (and in every leak encoded before answers existed,
/// which therefore decode unchanged), else its fixed 64 bytes.
fn answer_to_from(rest: &[u8]) -> Result<Option<AnswerTo>, PayloadError> {
    match rest.len() {
        0 => Ok(None),
        ANSWER_TO_LEN => postcard::from_bytes(rest)
            .map(Some)
            .map_err(|_| PayloadError::Malformed),
        _ => Err(PayloadError::TrailingBytes),
    }
}

fn with_answer_to(
    mut encoded: Vec<u8>,
    answer_to: Option<&AnswerTo>,
) -> Result<Vec<u8>, PayloadError> {
    if let Some(answer_to) = answer_to {
        let tail = postcard::to_allocvec(answer_to).map_err(|_| PayloadError::Malformed)?;
        encoded.extend_from_slice(&tail);
        if encoded.len() > MESSAGE_CAPACITY {
            return Err(PayloadError::TooLarge {
                len: encoded.len(),
                max: MESSAGE_CAPACITY,
            });
        }
    }
    Ok(encoded)
}

/// The kind byte of an encoded payload, if it has a known version.
pub fn peek_kind(bytes: &[u8]) -> Option<Kind> {
    match bytes {
        [FORMAT_VERSION, 1, ..] => Some(Kind::Leak),
        [FORMAT_VERSION, 2, ..] => Some(Kind::Receipt),
        [FORMAT_VERSION, 3, ..] => Some(Kind::Cover),
        [FORMAT_VERSION, 4, ..] => Some(Kind::Echo),
        [FORMAT_VERSION, 5, ..] => Some(Kind::Fetch),
        [FORMAT_VERSION, 6, ..] => Some(Kind::Answers),
        _ => None,
    }
}

/// The same bytes as [`LeakWire`], read without trusting the fields: postcard
/// encodes a `str` and a byte string alike, and an enum's variant as a
/// varint `u32`.
#[derive(Deserialize)]
struct LenientLeakWire<'a> {
    message_id: MessageId,
    recipient: &'a [u8],
    relationship: u32,
    text: &'a [u8],
    policy_version: u32,
    stamp: Stamp,
    reply_block: ReplyBlock,
}

/// Why a leak could not be accepted as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum LeakDecodeError {
    /// Not even the envelope decodes: there is no one to answer.
    Unanswerable(PayloadError),
    /// The envelope decodes but a field is invalid: the exit can answer
    /// along the reply block, saying why.
    Invalid {
        /// The leak's id.
        message_id: MessageId,
        /// Where the answer goes.
        reply_block: Box<ReplyBlock>,
        /// What is wrong.
        error: PayloadError,
    },
}

impl Leak {
    /// Decodes a leak from untrusted bytes like [`Leak::decode`], but when
    /// the envelope (message id, reply block) is intact and only a field is
    /// invalid (an address, the text, the relationship, bad UTF-8), returns
    /// what is needed to refuse it with a reason instead of dropping it.
    pub fn decode_or_reject(bytes: &[u8]) -> Result<Self, LeakDecodeError> {
        let (wire, rest): (LenientLeakWire<'_>, _) =
            decode_prefix(Kind::Leak, bytes).map_err(LeakDecodeError::Unanswerable)?;
        let answer_to = answer_to_from(rest).map_err(LeakDecodeError::Unanswerable)?;
        let invalid = |error| LeakDecodeError::Invalid {
            message_id: wire.message_id,
            reply_block: Box::new(wire.reply_block.clone()),
            error,
        };
        let recipient = core::str::from_utf8(wire.recipient)
            .map_err(|_| invalid(PayloadError::InvalidUtf8("recipient address")))?;
        let recipient = Recipient::parse(recipient).map_err(|e| invalid(e.into()))?;
        let text = core::str::from_utf8(wire.text)
            .map_err(|_| invalid(PayloadError::InvalidUtf8("message text")))?;
        validate_text(text).map_err(|e| invalid(e.into()))?;
        let relationship = usize::try_from(wire.relationship)
            .ok()
            .and_then(|i| Relationship::ALL.get(i).copied())
            .ok_or_else(|| invalid(PayloadError::UnknownRelationship(wire.relationship)))?;
        Ok(Self {
            message_id: wire.message_id,
            recipient,
            relationship,
            text: text.to_owned(),
            policy_version: wire.policy_version,
            stamp: wire.stamp,
            reply_block: wire.reply_block,
            answer_to,
        })
    }

    /// Encodes a leak without validating it: for tests of how exits refuse
    /// bad input. `recipient` and `text` may be any bytes; `relationship` is
    /// the variant index.
    #[doc(hidden)]
    pub fn encode_unchecked(
        message_id: MessageId,
        recipient: &[u8],
        relationship: u32,
        text: &[u8],
        policy_version: u32,
        stamp: Stamp,
        reply_block: &ReplyBlock,
    ) -> Result<Vec<u8>, PayloadError> {
        #[derive(Serialize)]
        struct RawWire<'a> {
            message_id: MessageId,
            #[serde(with = "bytes")]
            recipient: &'a [u8],
            relationship: u32,
            #[serde(with = "bytes")]
            text: &'a [u8],
            policy_version: u32,
            stamp: Stamp,
            reply_block: &'a ReplyBlock,
        }
        mod bytes {
            pub(super) fn serialize<S: serde::Serializer>(
                v: &&[u8],
                s: S,
            ) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(v)
            }
        }
        encode(
            Kind::Leak,
            &RawWire {
                message_id,
                recipient,
                relationship,
                text,
                policy_version,
                stamp,
                reply_block,
            },
        )
    }

    /// Encodes the leak, checking its text first.
    pub fn encode(&self) -> Result<Vec<u8>, PayloadError> {
        validate_text(&self.text)?;
        let encoded = encode(
            Kind::Leak,
            &LeakWire {
                message_id: self.message_id,
                recipient: self.recipient.as_str(),
                relationship: self.relationship,
                text: &self.text,
                policy_version: self.policy_version,
                stamp: self.stamp,
                reply_block: self.reply_block.clone(),
            },
        )?;
        with_answer_to(encoded, self.answer_to.as_ref())
    }

    /// Decodes and validates a leak from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, PayloadError> {
        let (wire, rest): (LeakWire<'_>, _) = decode_prefix(Kind::Leak, bytes)?;
        let answer_to = answer_to_from(rest)?;
        let recipient = Recipient::parse(wire.recipient)?;
        validate_text(wire.text)?;
        Ok(Self {
            message_id: wire.message_id,
            recipient,
            relationship: wire.relationship,
            text: wire.text.to_owned(),
            policy_version: wire.policy_version,
            stamp: wire.stamp,
            reply_block: wire.reply_block,
            answer_to,
        })
    }
}

impl Receipt {
    /// Encodes the receipt.
    pub fn encode(&self) -> Result<Vec<u8>, PayloadError> {
        self.validate()?;
        encode(Kind::Receipt, self)
    }

    /// Decodes and validates a receipt from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, PayloadError> {
        let receipt: Self = decode(Kind::Receipt, bytes)?;
        receipt.validate()?;
        Ok(receipt)
    }

    fn validate(&self) -> Result<(), PayloadError> {
        if let Outcome::Refused { rule, reason } = &self.outcome
            && (rule.len() > MAX_RULE_LEN || reason.len() > MAX_REASON_LEN)
        {
            return Err(PayloadError::RefusalTooLong);
        }
        Ok(())
    }
}
