//! Cover traffic: packets that carry nothing and look like everything else.
//!
//! An observer who sees when a sender's machine emits packets learns nothing
//! if the machine emits them all the time, on a schedule that does not
//! depend on whether it has something to say (Loopix, Piotrowska et al.
//! 2017). Two kinds of cover exist, and both are ordinary packets built with
//! the same functions as real traffic, so no hop can tell them apart by their
//! bytes:
//!
//! - A **drop** ([`seal_drop`]) travels a forward path to an exit, exactly
//!   like a leak. Under the exit's payload layer it carries a
//!   [`Kind::Cover`](crate::payload::Kind::Cover) payload, which the exit
//!   discards. Only the exit learns that it was cover, and only after the
//!   packet has crossed every hop as a leak would.
//! - An **echo** ([`build_echo`]) is a sender's loop: a forward packet to an
//!   exit, exactly like a leak, carrying a reply block as a leak does; the
//!   exit answers it after a random hold with cover along that block, as it
//!   answers a leak with a receipt, and the builder recognises the answer in
//!   its mailbox. Every relay on the way out and back, the exit included,
//!   sees what it sees of a leak and its receipt: the same hops, the same
//!   links, the same holds.
//! - A **loop** ([`build_loop`]) is a relay's own loop: it travels a path that ends in a mailbox the
//!   builder owns, so it comes back to the builder, like a receipt. It is a
//!   reply block that the builder uses itself: the hops see a reply packet,
//!   the mailbox's node sees one more deposit, and the builder recognises its
//!   loop by opening it with the keys it kept. A loop that does not come back
//!   reveals that a hop drops packets (an (n−1) attack, a broken link).
//!
//! Everything here is pure: the caller chooses the paths and delays and
//! passes the randomness in.

use rand_core::CryptoRng;

use crate::{
    payload::{FORMAT_VERSION, Kind},
    reply::{REPLY_BLOCK_LEN, ReplyBlock, ReplyKeys, build_reply_block},
    sphinx::{BuildError, MailboxId, NodeId, Packet, PathHop, build_packet},
};

/// The encoded cover payload: the payload format version and the cover
/// kind, nothing else. The packet is the same size whatever the payload's
/// length; only the holder of the end-to-end key sees these bytes.
pub const COVER_MESSAGE: [u8; 2] = [FORMAT_VERSION, Kind::Cover as u8];

/// Builds a drop: a packet along `forward` (entry first, an exit last)
/// that the exit opens and discards.
pub fn seal_drop<R: CryptoRng + ?Sized>(
    forward: &[PathHop],
    rng: &mut R,
) -> Result<Packet, BuildError> {
    build_packet(forward, &COVER_MESSAGE, rng)
}

/// A loop packet and what its builder needs to recognise it when it comes
/// back.
pub struct Loop {
    /// The node to hand the packet to: the first hop of the loop's path.
    pub first_hop: NodeId,
    /// The packet.
    pub packet: Packet,
    /// The keys that open the loop once it is back in the mailbox.
    pub keys: ReplyKeys,
}

impl core::fmt::Debug for Loop {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Loop")
            .field("first_hop", &self.first_hop)
            .finish_non_exhaustive()
    }
}

/// Builds a loop along `path`, whose last hop keeps `mailbox` (a mailbox
/// the builder reads). Randomness is consumed as [`build_reply_block`] does.
pub fn build_loop<R: CryptoRng + ?Sized>(
    path: &[PathHop],
    mailbox: MailboxId,
    rng: &mut R,
) -> Result<Loop, BuildError> {
    let (block, keys) = build_reply_block(path, mailbox, rng)?;
    let (first_hop, packet) = block.into_packet(&COVER_MESSAGE)?;
    Ok(Loop {
        first_hop,
        packet,
        keys,
    })
}

/// The length of an encoded echo: version, kind, the reply block.
pub const ECHO_LEN: usize = 2 + REPLY_BLOCK_LEN;

/// Builds an echo: a packet along `forward` (entry first, an exit last)
/// carrying a reply block along `reply` (its last hop keeps `mailbox`, a
/// mailbox the builder reads). The exit answers it with
/// [`COVER_MESSAGE`] along the block; the returned [`Loop`]'s keys open
/// that answer. Randomness is consumed by [`build_reply_block`], then by
/// [`build_packet`].
pub fn build_echo<R: CryptoRng + ?Sized>(
    forward: &[PathHop],
    reply: &[PathHop],
    mailbox: MailboxId,
    rng: &mut R,
) -> Result<Loop, BuildError> {
    let first_hop = forward.first().ok_or(BuildError::EmptyPath)?.node;
    let (block, keys) = build_reply_block(reply, mailbox, rng)?;
    let mut message = [0u8; ECHO_LEN];
    message[0] = FORMAT_VERSION;
    message[1] = Kind::Echo as u8;
    message[2..].copy_from_slice(&block.to_bytes());
    let packet = build_packet(forward, &message, rng)?;
    Ok(Loop {
        first_hop,
        packet,
        keys,
    })
}

/// Whether an opened forward message is an echo (whether or not its reply
/// block reads: see [`open_echo`]).
pub fn is_echo(message: &[u8]) -> bool {
    matches!(message, [FORMAT_VERSION, kind, ..] if *kind == Kind::Echo as u8)
}

/// The reply block of an echo, if `message` is a well-formed one (exactly
/// [`ECHO_LEN`] bytes, a block that parses).
pub fn open_echo(message: &[u8]) -> Option<ReplyBlock> {
    if message.len() != ECHO_LEN || !is_echo(message) {
        return None;
    }
    ReplyBlock::from_bytes(&message[2..])
}

/// Whether an opened message (what [`ReplyKeys::open`] returns, or what an
/// exit finds inside a forward packet) is cover.
pub fn is_cover(message: &[u8]) -> bool {
    message == COVER_MESSAGE
}
