//! Sphinx-style onion packets with a KEM-style header.
//!
//! A packet is [`PACKET_LEN`] bytes on every link: a header of [`HEADER_LEN`]
//! bytes and a payload of [`PAYLOAD_LEN`] bytes. The header carries one
//! ephemeral X25519 public key (`alpha`), the encrypted routing information
//! (`beta`, room for [`MAX_HOPS`] slots of [`ROUTING_INFO_LEN`] bytes) and a
//! MAC (`gamma`) over it.
//!
//! Each hop does one X25519 exchange between its mix secret and `alpha`,
//! derives its keys, checks the MAC, decrypts `beta`, reads its own slot and
//! shifts the rest up by one slot, padding the end with keystream so the
//! header keeps its length. Unlike classic Sphinx, the next hop's `alpha` is
//! not a blinding of this one: the client chose a fresh ephemeral key per hop
//! and put each one, encrypted, in the previous hop's slot. That costs 32
//! header bytes per hop and saves a second scalar multiplication at every hop
//! (see `SPEC.md`, "Why a KEM-style header").
//!
//! The payload is wrapped in one layer per hop of a wide-block cipher
//! (LIONESS, see [`crypto::LionessKey`]), so it looks different on every
//! link. Relays cannot check it; a payload modified anywhere on the way is
//! turned into noise by the next hop's layer, so the exit's check of the
//! zeros that end every forward payload fails whatever else is done to it
//! later: no relay can mark a payload and have a colluding later hop remove
//! the mark (tagging; SPEC.md §14). A reply's payload is also sealed
//! (ChaCha20-Poly1305) for the client that made its reply block.
//!
//! Everything here is pure: bytes, keys and randomness in, a decision out.

use rand_core::CryptoRng;
use zeroize::Zeroizing;

use crate::crypto::{self, KEY_LEN, MAC_LEN, MixPublicKey, MixSecret, SymmetricKey, TAG_LEN};

/// The packet format version this code reads and writes.
///
/// Version 2 replaced version 1's per-hop ChaCha20 payload layer with
/// LIONESS. Version 3 checks a forward payload's integrity by its zero
/// padding under the LIONESS layers (encode-then-encipher, as Sphinx does)
/// instead of a ChaCha20-Poly1305 seal, and derives each hop's keys, and
/// each LIONESS key's round keys, in one BLAKE3 pass (SPEC.md §14). The
/// version byte is covered by every hop's header MAC, so packets of
/// different versions cannot be mixed.
pub const VERSION: u8 = 3;
/// The most hops a packet can have.
pub const MAX_HOPS: usize = 5;
/// Bytes of routing information per hop.
pub const ROUTING_INFO_LEN: usize = 96;
/// Bytes of the encrypted routing information field (`beta`).
pub const BETA_LEN: usize = MAX_HOPS * ROUTING_INFO_LEN;
/// Bytes of the header: version, key hint, alpha, beta, gamma.
pub const HEADER_LEN: usize = 1 + 1 + KEY_LEN + BETA_LEN + MAC_LEN;
/// Bytes of every packet on every link.
pub const PACKET_LEN: usize = 4096;
/// Bytes of the payload field.
pub const PAYLOAD_LEN: usize = PACKET_LEN - HEADER_LEN;
/// Zero bytes that end every forward payload at the least: the exit checks
/// them (and any other padding) after removing its LIONESS layer, so a
/// payload changed on any link is dropped unless a 2^-128 chance holds.
/// A reply block's payload keeps the same room for its seal's tag.
pub const ZERO_CHECK_LEN: usize = TAG_LEN;
/// The most bytes of message a packet (or a reply) can carry end to end:
/// the payload less the checked zeros (or a reply's tag) and the two-byte
/// length prefix.
pub const MESSAGE_CAPACITY: usize = PAYLOAD_LEN - ZERO_CHECK_LEN - 2;

const OFF_VERSION: usize = 0;
const OFF_HINT: usize = 1;
const OFF_ALPHA: usize = 2;
const OFF_BETA: usize = OFF_ALPHA + KEY_LEN;
const OFF_GAMMA: usize = OFF_BETA + BETA_LEN;

// Routing information slot layout.
const RI_COMMAND: usize = 0;
const RI_HINT: usize = 1;
const RI_DELAY: usize = 2;
const RI_ADDRESS: usize = 6;
const RI_ALPHA: usize = RI_ADDRESS + 32;
const RI_GAMMA: usize = RI_ALPHA + KEY_LEN;
const RI_RESERVED: usize = RI_GAMMA + MAC_LEN;

const CMD_RELAY: u8 = 1;
const CMD_EXIT: u8 = 2;
const CMD_MAILBOX: u8 = 3;

// KDF contexts: one per purpose (BLAKE3 derive_key domain separation).
// A hop's four keys are the first 128 bytes of one extendable output, in
// this order: header stream, header MAC, payload layer, replay tag.
const KDF_HOP_KEYS: &str = "leak.sphinx v3 2026-12 hop keys";
const KDF_MAILBOX_ID: &str = "leak.mailbox v1 2026-11 id";

/// Associated data of every reply payload's seal.
pub(crate) const PAYLOAD_AAD: &[u8] = b"leak.sphinx v1 payload";

/// A node's long-term identity as it appears in routing information: the
/// 32 bytes of its Ed25519 public key (from which its libp2p `PeerId` follows).
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct NodeId(pub [u8; 32]);

impl core::fmt::Debug for NodeId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "NodeId({})", crate::hex_prefix(&self.0))
    }
}

/// Names a mailbox at the last hop of a reply block. Chosen by the client.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct MailboxId(pub [u8; 32]);

impl core::fmt::Debug for MailboxId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "MailboxId({})", crate::hex_prefix(&self.0))
    }
}

impl MailboxId {
    /// The mailbox a capability opens: whoever holds the 32-byte secret
    /// `capability` may fetch what the mailbox holds; the id alone (which
    /// travels in reply blocks) does not let anyone fetch.
    pub fn from_capability(capability: &[u8; 32]) -> Self {
        Self(crypto::derive_key(KDF_MAILBOX_ID, &[capability]).0)
    }
}

/// How long a hop holds a packet before it acts on it, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Delay(pub u32);

impl Delay {
    /// The delay in milliseconds.
    pub fn as_millis(self) -> u32 {
        self.0
    }
}

/// The per-hop secret a node keeps to detect replays: equal for two packets
/// exactly when they were built for this hop from the same ephemeral key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplayTag(pub [u8; 32]);

impl core::fmt::Debug for ReplayTag {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "ReplayTag({})", crate::hex_prefix(&self.0))
    }
}

/// One fixed-size packet, as it travels on a link.
#[derive(Clone, PartialEq, Eq)]
pub struct Packet(Box<[u8; PACKET_LEN]>);

impl Packet {
    /// Takes ownership of exactly [`PACKET_LEN`] bytes; `None` for any other length.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let array: [u8; PACKET_LEN] = bytes.try_into().ok()?;
        Some(Self(Box::new(array)))
    }

    /// The bytes to send.
    pub fn as_bytes(&self) -> &[u8; PACKET_LEN] {
        &self.0
    }

    fn zeroed() -> Self {
        Self(Box::new([0u8; PACKET_LEN]))
    }
}

impl core::fmt::Debug for Packet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Packet({} bytes)", PACKET_LEN)
    }
}

/// Which of a node's epoch keys a packet was built for: the low byte of the
/// epoch number, readable before any cryptography so a node does one X25519
/// exchange per packet, not one per key it holds.
pub fn key_hint(packet: &[u8]) -> Option<u8> {
    (packet.len() == PACKET_LEN).then(|| packet[OFF_HINT])
}

/// One hop of a path, as the client sees it in the directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathHop {
    /// The node's identity.
    pub node: NodeId,
    /// The node's mix public key for the epoch the packet will reach it in.
    pub key: MixPublicKey,
    /// The low byte of that epoch's number (see [`key_hint`]).
    pub key_hint: u8,
    /// How long this hop holds the packet.
    pub delay: Delay,
}

/// Why a packet could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A path needs at least one hop.
    #[error("a path needs at least one hop")]
    EmptyPath,
    /// A path has more hops than the header has room for.
    #[error("a path has at most {max} hops, this one has {hops}")]
    TooManyHops {
        /// The hops asked for.
        hops: usize,
        /// [`MAX_HOPS`].
        max: usize,
    },
    /// The message does not fit in one packet.
    #[error("the message is {len} bytes; one packet carries at most {max}")]
    MessageTooLong {
        /// The message's length.
        len: usize,
        /// [`MESSAGE_CAPACITY`].
        max: usize,
    },
    /// A hop's public key is a low-order point (no shared secret possible).
    #[error("the mix key of hop {hop} is invalid")]
    InvalidKey {
        /// Index of the hop in the path.
        hop: usize,
    },
}

/// Why a hop dropped a packet. Drops are silent on the wire; the node
/// counts them by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum DropReason {
    /// The packet is not [`PACKET_LEN`] bytes.
    #[error("wrong packet length")]
    WrongLength,
    /// The version byte is not one this code speaks.
    #[error("unknown packet version")]
    UnknownVersion,
    /// `alpha` is a low-order point.
    #[error("invalid ephemeral key")]
    InvalidKey,
    /// The header MAC does not verify: tampered, or built for another key.
    #[error("header MAC mismatch")]
    BadMac,
    /// The routing information names a command this code does not know.
    #[error("unknown routing command")]
    UnknownCommand,
    /// The routing information or the payload framing is malformed.
    #[error("malformed routing information or payload")]
    Malformed,
    /// The payload was changed on the way: at the exit, its checked zeros
    /// are not zero.
    #[error("payload failed authentication")]
    PayloadIntegrity,
}

impl DropReason {
    /// A short stable label, for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WrongLength => "wrong_length",
            Self::UnknownVersion => "unknown_version",
            Self::InvalidKey => "invalid_key",
            Self::BadMac => "bad_mac",
            Self::UnknownCommand => "unknown_command",
            Self::Malformed => "malformed",
            Self::PayloadIntegrity => "payload_integrity",
        }
    }
}

/// A packet to pass on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// Remember it; drop any later packet with the same tag under the same key.
    pub replay_tag: ReplayTag,
    /// Where to send the packet.
    pub next_hop: NodeId,
    /// How long to hold it first.
    pub delay: Delay,
    /// The packet for the next hop.
    pub packet: Packet,
}

/// What arrived at the last hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinalPayload {
    /// This node is the exit: the message, decrypted and authenticated.
    Exit {
        /// The message bytes the client sealed (see [`crate::payload`]).
        message: Zeroizing<Vec<u8>>,
    },
    /// This node keeps a mailbox: store the still-encrypted reply for the
    /// client who owns `mailbox`.
    Mailbox {
        /// The mailbox the reply belongs to.
        mailbox: MailboxId,
        /// The reply, opaque to this node ([`crate::reply::ReplyKeys::open`]).
        reply: Box<[u8; PAYLOAD_LEN]>,
    },
}

/// A packet that ends here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Final {
    /// Remember it; drop any later packet with the same tag under the same key.
    pub replay_tag: ReplayTag,
    /// How long to hold it before acting on it.
    pub delay: Delay,
    /// The payload.
    pub payload: FinalPayload,
}

/// The outcome of processing one packet at one hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Processed {
    /// Pass the packet on.
    Forward(Forward),
    /// The packet ends at this node.
    Final(Final),
    /// Drop the packet silently.
    Drop(DropReason),
}

impl Processed {
    /// The replay tag, for packets that passed the header MAC.
    pub fn replay_tag(&self) -> Option<ReplayTag> {
        match self {
            Self::Forward(f) => Some(f.replay_tag),
            Self::Final(f) => Some(f.replay_tag),
            Self::Drop(_) => None,
        }
    }
}

/// The keys one hop shares with the client.
pub(crate) struct HopKeys {
    header_stream: SymmetricKey,
    header_mac: SymmetricKey,
    pub(crate) payload_layer: SymmetricKey,
    replay_tag: SymmetricKey,
}

impl HopKeys {
    fn derive(shared: &crypto::SharedSecret, alpha: &[u8; KEY_LEN], node: &MixPublicKey) -> Self {
        let parts: [&[u8]; 3] = [shared.as_bytes(), alpha, &node.0];
        let [header_stream, header_mac, payload_layer, replay_tag] =
            crypto::derive_keys(KDF_HOP_KEYS, &parts);
        Self {
            header_stream,
            header_mac,
            payload_layer,
            replay_tag,
        }
    }

    fn header_stream(&self) -> Zeroizing<[u8; BETA_LEN + ROUTING_INFO_LEN]> {
        let mut stream = Zeroizing::new([0u8; BETA_LEN + ROUTING_INFO_LEN]);
        crypto::xor_keystream(&self.header_stream, stream.as_mut());
        stream
    }

    fn header_mac(&self, version: u8, hint: u8, beta: &[u8]) -> [u8; MAC_LEN] {
        crypto::mac(&self.header_mac, &[&[version, hint], beta])
    }
}

/// What the last slot of a header says.
#[derive(Clone, Copy)]
pub(crate) enum FinalCommand {
    Exit,
    Mailbox(MailboxId),
}

fn write_final_slot(slot: &mut [u8], command: FinalCommand, delay: Delay) {
    match command {
        FinalCommand::Exit => slot[RI_COMMAND] = CMD_EXIT,
        FinalCommand::Mailbox(id) => {
            slot[RI_COMMAND] = CMD_MAILBOX;
            slot[RI_ADDRESS..RI_ADDRESS + 32].copy_from_slice(&id.0);
        }
    }
    slot[RI_DELAY..RI_DELAY + 4].copy_from_slice(&delay.0.to_be_bytes());
}

/// Builds a header for `path`, the last hop receiving `last`. Consumes from
/// `rng`, in this order: 32 bytes of ephemeral secret per hop, then
/// `BETA_LEN - hops * ROUTING_INFO_LEN` bytes of padding.
pub(crate) fn build_header<R: CryptoRng + ?Sized>(
    path: &[PathHop],
    last: FinalCommand,
    rng: &mut R,
) -> Result<([u8; HEADER_LEN], Vec<HopKeys>), BuildError> {
    let hops = path.len();
    if hops == 0 {
        return Err(BuildError::EmptyPath);
    }
    if hops > MAX_HOPS {
        return Err(BuildError::TooManyHops {
            hops,
            max: MAX_HOPS,
        });
    }

    let mut ephemerals = Zeroizing::new(vec![[0u8; KEY_LEN]; hops]);
    for ephemeral in ephemerals.iter_mut() {
        rng.fill_bytes(ephemeral);
    }
    let exchanges =
        crypto::x25519_ephemerals(ephemerals.iter().zip(path.iter().map(|hop| &hop.key.0)));
    let mut alphas = Vec::with_capacity(hops);
    let mut keys = Vec::with_capacity(hops);
    for (index, ((alpha, shared), hop)) in exchanges.into_iter().zip(path).enumerate() {
        let shared = shared.ok_or(BuildError::InvalidKey { hop: index })?;
        keys.push(HopKeys::derive(&shared, &alpha, &hop.key));
        alphas.push(alpha);
    }
    let streams: Vec<_> = keys.iter().map(HopKeys::header_stream).collect();

    // The filler: what hops 0..n-2 append while shifting, as the last hop
    // will see it, so the client can compute every MAC in advance.
    let mut filler = Vec::with_capacity((hops - 1) * ROUTING_INFO_LEN);
    for (i, stream) in streams.iter().enumerate().take(hops - 1) {
        filler.extend_from_slice(&[0u8; ROUTING_INFO_LEN]);
        let start = BETA_LEN - i * ROUTING_INFO_LEN;
        for (f, s) in filler.iter_mut().zip(&stream[start..]) {
            *f ^= s;
        }
    }

    // The last hop's beta: its slot, random padding, then the filler.
    let mut beta = [0u8; BETA_LEN];
    let open_len = BETA_LEN - (hops - 1) * ROUTING_INFO_LEN;
    write_final_slot(&mut beta[..ROUTING_INFO_LEN], last, path[hops - 1].delay);
    rng.fill_bytes(&mut beta[ROUTING_INFO_LEN..open_len]);
    for (b, s) in beta[..open_len].iter_mut().zip(streams[hops - 1].iter()) {
        *b ^= s;
    }
    beta[open_len..].copy_from_slice(&filler);
    let mut gamma = keys[hops - 1].header_mac(VERSION, path[hops - 1].key_hint, &beta);

    // Wrap the earlier hops, last to first.
    for i in (0..hops - 1).rev() {
        let mut next = [0u8; BETA_LEN];
        let slot = &mut next[..ROUTING_INFO_LEN];
        slot[RI_COMMAND] = CMD_RELAY;
        slot[RI_HINT] = path[i + 1].key_hint;
        slot[RI_DELAY..RI_DELAY + 4].copy_from_slice(&path[i].delay.0.to_be_bytes());
        slot[RI_ADDRESS..RI_ADDRESS + 32].copy_from_slice(&path[i + 1].node.0);
        slot[RI_ALPHA..RI_ALPHA + KEY_LEN].copy_from_slice(&alphas[i + 1]);
        slot[RI_GAMMA..RI_GAMMA + MAC_LEN].copy_from_slice(&gamma);
        next[ROUTING_INFO_LEN..].copy_from_slice(&beta[..BETA_LEN - ROUTING_INFO_LEN]);
        for (b, s) in next.iter_mut().zip(streams[i].iter()) {
            *b ^= s;
        }
        beta = next;
        gamma = keys[i].header_mac(VERSION, path[i].key_hint, &beta);
    }

    let mut header = [0u8; HEADER_LEN];
    header[OFF_VERSION] = VERSION;
    header[OFF_HINT] = path[0].key_hint;
    header[OFF_ALPHA..OFF_BETA].copy_from_slice(&alphas[0]);
    header[OFF_BETA..OFF_GAMMA].copy_from_slice(&beta);
    header[OFF_GAMMA..].copy_from_slice(&gamma);
    Ok((header, keys))
}

/// Writes `message` into a payload-sized buffer: a two-byte big-endian length,
/// the message, zeros; at least the last [`ZERO_CHECK_LEN`] bytes are zero
/// (a forward packet's integrity check; a reply's seal writes its tag there).
pub(crate) fn frame_message(message: &[u8]) -> Result<Box<[u8; PAYLOAD_LEN]>, BuildError> {
    let len = u16::try_from(message.len())
        .ok()
        .filter(|&len| usize::from(len) <= MESSAGE_CAPACITY)
        .ok_or(BuildError::MessageTooLong {
            len: message.len(),
            max: MESSAGE_CAPACITY,
        })?;
    let mut buf = Box::new([0u8; PAYLOAD_LEN]);
    buf[..2].copy_from_slice(&len.to_be_bytes());
    buf[2..2 + message.len()].copy_from_slice(message);
    Ok(buf)
}

/// The inverse of [`frame_message`] on an opened payload.
pub(crate) fn unframe_message(opened: &[u8]) -> Option<&[u8]> {
    let body = opened.get(..PAYLOAD_LEN - ZERO_CHECK_LEN)?;
    let len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    if len > MESSAGE_CAPACITY {
        return None;
    }
    body.get(2..2 + len)
}

/// Builds a forward packet that carries `message` along `path` to its last
/// hop, which must be an exit. `message` is at most [`MESSAGE_CAPACITY`]
/// bytes. Randomness is consumed as [`build_header`] describes (SPEC.md §5).
pub fn build_packet<R: CryptoRng + ?Sized>(
    path: &[PathHop],
    message: &[u8],
    rng: &mut R,
) -> Result<Packet, BuildError> {
    let mut payload = frame_message(message)?;
    let (header, keys) = build_header(path, FinalCommand::Exit, rng)?;
    // No seal: the framed message ends in at least ZERO_CHECK_LEN zeros,
    // which the exit checks under the layers (encode-then-encipher).
    // Hop i decrypts with its layer key, so the client encrypts with the
    // last hop's key first and the first hop's key last.
    for hop in keys.iter().rev() {
        crypto::LionessKey::derive(&hop.payload_layer).encrypt(&mut payload);
    }
    Ok(assemble(&header, &payload))
}

pub(crate) fn assemble(header: &[u8; HEADER_LEN], payload: &[u8; PAYLOAD_LEN]) -> Packet {
    let mut packet = Packet::zeroed();
    packet.0[..HEADER_LEN].copy_from_slice(header);
    packet.0[HEADER_LEN..].copy_from_slice(payload);
    packet
}

/// Processes one packet at a hop holding `secret`. Never panics, whatever
/// the bytes; the caller picks `secret` by [`key_hint`] and then checks the
/// returned replay tag against the tags it has seen under that key.
pub fn process_packet(packet: &[u8], secret: &MixSecret) -> Processed {
    match process_inner(packet, secret) {
        Ok(processed) => processed,
        Err(reason) => Processed::Drop(reason),
    }
}

fn process_inner(packet: &[u8], secret: &MixSecret) -> Result<Processed, DropReason> {
    let packet: &[u8; PACKET_LEN] = packet.try_into().map_err(|_| DropReason::WrongLength)?;
    let version = packet[OFF_VERSION];
    if version != VERSION {
        return Err(DropReason::UnknownVersion);
    }
    let hint = packet[OFF_HINT];
    let mut alpha = [0u8; KEY_LEN];
    alpha.copy_from_slice(&packet[OFF_ALPHA..OFF_BETA]);
    let beta = &packet[OFF_BETA..OFF_GAMMA];
    let mut gamma = [0u8; MAC_LEN];
    gamma.copy_from_slice(&packet[OFF_GAMMA..HEADER_LEN]);

    let shared = secret
        .diffie_hellman(&alpha)
        .ok_or(DropReason::InvalidKey)?;
    let keys = HopKeys::derive(&shared, &alpha, &secret.public());
    if !crypto::mac_eq(&keys.header_mac(version, hint, beta), &gamma) {
        return Err(DropReason::BadMac);
    }
    let replay_tag = ReplayTag(keys.replay_tag.0);

    // Decrypt beta extended by one zero slot: our slot, then the next beta.
    let mut opened = keys.header_stream();
    for (o, b) in opened.iter_mut().zip(beta) {
        *o ^= b;
    }
    let slot = &opened[..ROUTING_INFO_LEN];
    let delay = Delay(u32::from_be_bytes([
        slot[RI_DELAY],
        slot[RI_DELAY + 1],
        slot[RI_DELAY + 2],
        slot[RI_DELAY + 3],
    ]));
    if slot[RI_RESERVED..].iter().any(|&b| b != 0) {
        return Err(DropReason::Malformed);
    }

    let mut payload = Box::new([0u8; PAYLOAD_LEN]);
    payload.copy_from_slice(&packet[HEADER_LEN..]);
    crypto::LionessKey::derive(&keys.payload_layer).decrypt(&mut payload);

    match slot[RI_COMMAND] {
        CMD_RELAY => {
            let mut next_hop = NodeId([0u8; 32]);
            next_hop
                .0
                .copy_from_slice(&slot[RI_ADDRESS..RI_ADDRESS + 32]);
            let mut out = Packet::zeroed();
            out.0[OFF_VERSION] = VERSION;
            out.0[OFF_HINT] = slot[RI_HINT];
            out.0[OFF_ALPHA..OFF_BETA].copy_from_slice(&slot[RI_ALPHA..RI_ALPHA + KEY_LEN]);
            out.0[OFF_BETA..OFF_GAMMA].copy_from_slice(&opened[ROUTING_INFO_LEN..]);
            out.0[OFF_GAMMA..HEADER_LEN].copy_from_slice(&slot[RI_GAMMA..RI_GAMMA + MAC_LEN]);
            out.0[HEADER_LEN..].copy_from_slice(payload.as_ref());
            Ok(Processed::Forward(Forward {
                replay_tag,
                next_hop,
                delay,
                packet: out,
            }))
        }
        CMD_EXIT => {
            if slot[RI_HINT..RI_DELAY].iter().any(|&b| b != 0)
                || slot[RI_ADDRESS..RI_RESERVED].iter().any(|&b| b != 0)
            {
                return Err(DropReason::Malformed);
            }
            // Encode-then-encipher: a payload changed on any link comes out
            // of the layers as noise, whose checked zeros are not zero.
            let check = &payload[PAYLOAD_LEN - ZERO_CHECK_LEN..];
            if check.iter().fold(0u8, |acc, &b| acc | b) != 0 {
                return Err(DropReason::PayloadIntegrity);
            }
            let message = unframe_message(payload.as_ref()).ok_or(DropReason::Malformed)?;
            let end = 2 + message.len();
            // Only the sender writes a payload that passes the check, and
            // it pads with zeros.
            if payload[end..].iter().any(|&b| b != 0) {
                return Err(DropReason::Malformed);
            }
            let message = Zeroizing::new(message.to_vec());
            // The rest is zeros: only the length and the message to wipe.
            zeroize::Zeroize::zeroize(&mut payload[..end]);
            Ok(Processed::Final(Final {
                replay_tag,
                delay,
                payload: FinalPayload::Exit { message },
            }))
        }
        CMD_MAILBOX => {
            if slot[RI_HINT..RI_DELAY].iter().any(|&b| b != 0)
                || slot[RI_ALPHA..RI_RESERVED].iter().any(|&b| b != 0)
            {
                return Err(DropReason::Malformed);
            }
            let mut mailbox = MailboxId([0u8; 32]);
            mailbox
                .0
                .copy_from_slice(&slot[RI_ADDRESS..RI_ADDRESS + 32]);
            Ok(Processed::Final(Final {
                replay_tag,
                delay,
                payload: FinalPayload::Mailbox {
                    mailbox,
                    reply: payload,
                },
            }))
        }
        _ => Err(DropReason::UnknownCommand),
    }
}

impl Delay {
    /// Draws a delay from the exponential distribution with mean `mean_ms`
    /// (Loopix-style mixing), using 8 bytes of `rng`. Saturates at `u32::MAX`.
    pub fn sample_exponential<R: CryptoRng + ?Sized>(mean_ms: u32, rng: &mut R) -> Self {
        // A uniform draw in (0, 1): never 0, so the logarithm is finite.
        let uniform = ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let millis = -uniform.ln() * f64::from(mean_ms);
        // `as` saturates for floats, which is the behaviour wanted here.
        Self(millis.round() as u32)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// Deterministic bytes for the builder: a BLAKE3 output stream.
    struct XofRng(blake3::OutputReader);

    impl rand_core::TryRng for XofRng {
        type Error = core::convert::Infallible;
        fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
            let mut b = [0u8; 4];
            self.0.fill(&mut b);
            Ok(u32::from_le_bytes(b))
        }
        fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
            let mut b = [0u8; 8];
            self.0.fill(&mut b);
            Ok(u64::from_le_bytes(b))
        }
        fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
            self.0.fill(dst);
            Ok(())
        }
    }

    impl rand_core::TryCryptoRng for XofRng {}

    /// A packet for one exit hop whose plaintext payload is `framed`
    /// exactly: what only a sender (who holds the layer key) can make.
    fn exit_packet(secret: &MixSecret, framed: &[u8; PAYLOAD_LEN]) -> Packet {
        let path = [PathHop {
            node: NodeId([7; 32]),
            key: secret.public(),
            key_hint: 0,
            delay: Delay(0),
        }];
        let mut rng = XofRng(blake3::Hasher::new().update(b"exit test").finalize_xof());
        let (header, keys) = build_header(&path, FinalCommand::Exit, &mut rng).unwrap();
        let mut payload = Box::new(*framed);
        crypto::LionessKey::derive(&keys[0].payload_layer).encrypt(&mut payload);
        assemble(&header, &payload)
    }

    fn at_exit(framed: &[u8; PAYLOAD_LEN]) -> Result<Vec<u8>, DropReason> {
        let secret = MixSecret::from_bytes([5; 32]);
        match process_packet(exit_packet(&secret, framed).as_bytes(), &secret) {
            Processed::Final(Final {
                payload: FinalPayload::Exit { message },
                ..
            }) => Ok(message.to_vec()),
            Processed::Drop(reason) => Err(reason),
            other => panic!("not an exit result: {other:?}"),
        }
    }

    #[test]
    fn the_exit_checks_the_zeros_and_the_framing() {
        let good = frame_message(b"hello").unwrap();
        assert_eq!(at_exit(&good).unwrap(), b"hello");

        // The longest message leaves exactly the checked zeros.
        let longest = frame_message(&[b'x'; MESSAGE_CAPACITY]).unwrap();
        assert_eq!(at_exit(&longest).unwrap().len(), MESSAGE_CAPACITY);

        // Any byte of the checked zeros set: as a change on a link would.
        for at in [PAYLOAD_LEN - ZERO_CHECK_LEN, PAYLOAD_LEN - 1] {
            let mut bad = good.clone();
            bad[at] = 1;
            assert_eq!(at_exit(&bad), Err(DropReason::PayloadIntegrity));
        }

        // Zeros intact, but padding after the message not zero, or a
        // length past the capacity: a malformed sender, not a change.
        let mut padded = good.clone();
        padded[2 + 5] = 1;
        assert_eq!(at_exit(&padded), Err(DropReason::Malformed));
        let mut too_long = good;
        too_long[..2].copy_from_slice(&u16::try_from(MESSAGE_CAPACITY + 1).unwrap().to_be_bytes());
        assert_eq!(at_exit(&too_long), Err(DropReason::Malformed));
    }
}
