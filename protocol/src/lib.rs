//! `leak-protocol`: the sans-IO core of Leak.
//!
//! Leak carries a short message (a *leak*) from a sender to an email
//! recipient through several independent relays, so that no single operator
//! can link the sender's address to the message. This crate is everything
//! about that which can be said without a socket, a clock or an operating
//! system's random number generator:
//!
//! - [`sphinx`]: fixed-size onion packets. The client wraps a message in one
//!   layer per hop; each hop removes its layer with [`sphinx::process_packet`]
//!   and learns only the next hop and how long to wait.
//! - [`reply`]: single-use reply blocks, so the exit can answer the sender
//!   without knowing where the answer goes.
//! - [`seal`]: [`seal::seal_leak`], the one way a sender turns a leak into
//!   its packet (reply block, encoding, onion layers).
//! - [`cover`]: drop and loop packets, built like real traffic, that hide
//!   when a sender (or a relay) has something to send.
//! - [`payload`]: the messages inside: a [`payload::Leak`] and its
//!   [`payload::Receipt`], versioned, bounded and validated on decode.
//! - [`address`]: recipient address validation.
//! - [`policy`]: the shared moderation policy: rules, limits, the
//!   anti-abuse stamp and signed policy documents.
//! - [`directory`]: node descriptors, signed with the node's identity, and
//!   the verified directory built from them.
//! - [`roster`]: the directory authorities' signed roster of admitted
//!   nodes (their roles and families): only its nodes enter a directory.
//! - [`signed`]: documents signed by a threshold of trusted keys (the
//!   policy and the roster).
//! - [`federation`]: the parameters every node and client agree on (the
//!   longest hop delay, the mailbox lifetime, the key-hint rule, …).
//! - [`crypto`]: the one module through which every primitive is used.
//!
//! Every function takes the bytes, keys and randomness it needs and returns
//! a value; the node and the client own all I/O. `SPEC.md` beside this crate
//! is the normative description of the formats; the test vectors in
//! `testvectors/` pin it to this code byte for byte.

pub mod address;
pub mod answers;
pub mod cover;
pub mod crypto;
pub mod directory;
pub mod federation;
pub mod payload;
pub mod policy;
pub mod reply;
pub mod roster;
pub mod seal;
pub mod signed;
pub mod sphinx;

pub use address::Recipient;
pub use crypto::{MixPublicKey, MixSecret};
pub use payload::{BounceClass, Leak, MessageId, Outcome, Receipt, Relationship};
pub use reply::{ReplyBlock, ReplyKeys, build_reply_block};
pub use sphinx::{
    Delay, DropReason, MailboxId, NodeId, PACKET_LEN, Packet, PathHop, Processed, ReplayTag,
    build_packet, key_hint, process_packet,
};

/// The first bytes of a key or id in hex, for `Debug` output.
pub(crate) fn hex_prefix(bytes: &[u8]) -> String {
    use core::fmt::Write;
    let mut out = String::with_capacity(10);
    for b in bytes.iter().take(4) {
        let _ = write!(out, "{b:02x}");
    }
    out.push('…');
    out
}
