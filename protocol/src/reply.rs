//! Single-use reply blocks (SURBs).
//!
//! The client builds a header for a path that ends at a mailbox (usually its
//! own entry relay) and hands the exit a [`ReplyBlock`]: the first hop, that
//! header, and a one-time payload key. The exit seals its reply with the key,
//! sends the packet to the first hop, and learns nothing of the path. Every hop
//! applies its payload layer (a LIONESS decryption, as on every packet); the
//! mailbox stores what arrives. The client, who kept the per-hop layer keys in
//! [`ReplyKeys`], undoes the layers (LIONESS encryptions, last hop's first)
//! and opens the seal. A reply modified on any link comes out of that as
//! noise, and the seal does not open.
//!
//! A reply block must be used once: a second use is dropped by the first
//! hop's replay check, and would reuse the payload key.

use rand_core::CryptoRng;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::{
    crypto::{self, KEY_LEN, SymmetricKey},
    sphinx::{
        self, BuildError, FinalCommand, HEADER_LEN, MESSAGE_CAPACITY, MailboxId, NodeId,
        PAYLOAD_AAD, PAYLOAD_LEN, Packet, PathHop,
    },
};

/// Bytes of an encoded reply block: first hop, header, payload key.
pub const REPLY_BLOCK_LEN: usize = 32 + HEADER_LEN + KEY_LEN;

/// What the exit needs to send one reply without learning where it goes.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct ReplyBlock {
    first_hop: [u8; 32],
    header: [u8; HEADER_LEN],
    payload_key: [u8; KEY_LEN],
}

impl core::fmt::Debug for ReplyBlock {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReplyBlock")
            .field("first_hop", &self.first_hop())
            .finish_non_exhaustive()
    }
}

/// What the client keeps to read the reply. Zeroed on drop.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop, Serialize, Deserialize)]
pub struct ReplyKeys {
    #[zeroize(skip)]
    mailbox: MailboxId,
    payload_key: SymmetricKey,
    layer_keys: Vec<SymmetricKey>,
}

impl core::fmt::Debug for ReplyKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReplyKeys")
            .field("mailbox", &self.mailbox)
            .field("hops", &self.layer_keys.len())
            .finish_non_exhaustive()
    }
}

/// Why a reply could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// The stored reply is not [`PAYLOAD_LEN`] bytes.
    #[error("a reply payload is {expected} bytes, got {got}")]
    WrongLength {
        /// What was given.
        got: usize,
        /// [`PAYLOAD_LEN`].
        expected: usize,
    },
    /// The reply was modified, or belongs to another reply block.
    #[error("the reply failed authentication")]
    Integrity,
    /// The reply authenticated but its framing is invalid.
    #[error("the reply is malformed")]
    Malformed,
}

/// Builds a reply block for `path`, whose last hop keeps `mailbox`.
/// Consumes from `rng` what [`sphinx::build_packet`] does, then 32 bytes of
/// payload key.
pub fn build_reply_block<R: CryptoRng + ?Sized>(
    path: &[PathHop],
    mailbox: MailboxId,
    rng: &mut R,
) -> Result<(ReplyBlock, ReplyKeys), BuildError> {
    let (header, keys) = sphinx::build_header(path, FinalCommand::Mailbox(mailbox), rng)?;
    let mut payload_key = [0u8; KEY_LEN];
    rng.fill_bytes(&mut payload_key);
    let first_hop = path.first().ok_or(BuildError::EmptyPath)?.node.0;
    let block = ReplyBlock {
        first_hop,
        header,
        payload_key,
    };
    let reply_keys = ReplyKeys {
        mailbox,
        payload_key: SymmetricKey(payload_key),
        layer_keys: keys.iter().map(|k| k.payload_layer.clone()).collect(),
    };
    payload_key.zeroize();
    Ok((block, reply_keys))
}

impl ReplyBlock {
    /// The node to send the reply packet to.
    pub fn first_hop(&self) -> NodeId {
        NodeId(self.first_hop)
    }

    /// Seals `message` (at most [`MESSAGE_CAPACITY`] bytes) into a packet
    /// for [`Self::first_hop`]. Consumes the block: it is single-use.
    pub fn into_packet(self, message: &[u8]) -> Result<(NodeId, Packet), BuildError> {
        let mut payload = sphinx::frame_message(message)?;
        crypto::aead_seal(
            &SymmetricKey(self.payload_key),
            PAYLOAD_AAD,
            payload.as_mut(),
        )
        .map_err(|_| BuildError::MessageTooLong {
            len: message.len(),
            max: MESSAGE_CAPACITY,
        })?;
        Ok((self.first_hop(), sphinx::assemble(&self.header, &payload)))
    }

    /// The fixed-length encoding: first hop, header, payload key.
    pub fn to_bytes(&self) -> [u8; REPLY_BLOCK_LEN] {
        let mut out = [0u8; REPLY_BLOCK_LEN];
        out[..32].copy_from_slice(&self.first_hop);
        out[32..32 + HEADER_LEN].copy_from_slice(&self.header);
        out[32 + HEADER_LEN..].copy_from_slice(&self.payload_key);
        out
    }

    /// Parses [`Self::to_bytes`]; `None` unless exactly [`REPLY_BLOCK_LEN`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != REPLY_BLOCK_LEN {
            return None;
        }
        let mut block = Self {
            first_hop: [0u8; 32],
            header: [0u8; HEADER_LEN],
            payload_key: [0u8; KEY_LEN],
        };
        block.first_hop.copy_from_slice(&bytes[..32]);
        block.header.copy_from_slice(&bytes[32..32 + HEADER_LEN]);
        block.payload_key.copy_from_slice(&bytes[32 + HEADER_LEN..]);
        Some(block)
    }
}

impl Serialize for ReplyBlock {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.to_bytes())
    }
}

impl<'de> Deserialize<'de> for ReplyBlock {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BytesVisitor;
        impl de::Visitor<'_> for BytesVisitor {
            type Value = ReplyBlock;
            fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                write!(f, "{REPLY_BLOCK_LEN} bytes of reply block")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<ReplyBlock, E> {
                ReplyBlock::from_bytes(v).ok_or_else(|| E::invalid_length(v.len(), &self))
            }
        }
        deserializer.deserialize_bytes(BytesVisitor)
    }
}

impl ReplyKeys {
    /// The mailbox the reply will be stored in.
    pub fn mailbox(&self) -> MailboxId {
        self.mailbox
    }

    /// Undoes every hop's layer on a reply taken from the mailbox and opens
    /// the exit's seal: returns the message the exit sealed.
    pub fn open(&self, reply: &[u8]) -> Result<Zeroizing<Vec<u8>>, ReplyError> {
        let wrong_length = ReplyError::WrongLength {
            got: reply.len(),
            expected: PAYLOAD_LEN,
        };
        let reply: &[u8; PAYLOAD_LEN] = reply.try_into().map_err(|_| wrong_length)?;
        let mut buf = Zeroizing::new(*reply);
        // Hop i applied its layer's decryption, first hop first: undo them
        // with the encryptions, last hop first.
        for key in self.layer_keys.iter().rev() {
            crypto::LionessKey::derive(key).encrypt(&mut buf);
        }
        crypto::aead_open(&self.payload_key, PAYLOAD_AAD, &mut buf[..])
            .map_err(|_| ReplyError::Integrity)?;
        let message = sphinx::unframe_message(&buf[..]).ok_or(ReplyError::Malformed)?;
        Ok(Zeroizing::new(message.to_vec()))
    }
}
