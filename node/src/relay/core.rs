//! [`RelayCore`]: a processed packet, the time, the limits and the known
//! peers in; a [`Decision`] out.

use leak_protocol::{
    Delay, NodeId, Packet, Processed, key_hint, process_packet,
    sphinx::{FinalPayload, MailboxId},
};
use zeroize::Zeroizing;

use crate::epoch::KeyRing;

/// Why a relay dropped a packet. Each is counted under its
/// [`label`](DropReason::label) in `leak_packets_dropped_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// The protocol refused the packet (length, version, MAC, framing...).
    Protocol(leak_protocol::DropReason),
    /// No mix secret of the current or previous epoch matches its key hint.
    UnknownEpoch,
    /// Its replay tag was seen before in that epoch.
    Replay,
    /// The replay tags or the mailbox could not be written.
    StorageError,
    /// It asks to be held longer than this relay's limit.
    DelayTooLong,
    /// Its next hop is not in this relay's directory.
    UnknownNextHop,
    /// Its next hop's id is not an Ed25519 key.
    BadNextHop,
    /// It is for an exit, and this relay is not one.
    NotAnExit,
    /// The exit role's intake is full.
    ExitBacklog,
    /// The timer holds as many packets as it may.
    HeldFull,
    /// The inbound queue was full (another peer's packet was evicted, or this one).
    QueueFull,
    /// The sending peer's share of the inbound queue was full.
    PeerQueueFull,
    /// Too many packet streams from one peer.
    TooManyStreams,
    /// The mailbox (or all mailboxes) of this relay are full.
    MailboxFull,
    /// The link to the next hop has too many packets queued.
    LinkCongested,
    /// The next hop could not be reached.
    NextHopUnreachable,
    /// The node stopped while holding it.
    Shutdown,
}

impl DropReason {
    /// The stable metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Protocol(reason) => reason.as_str(),
            Self::UnknownEpoch => "unknown_epoch",
            Self::Replay => "replay",
            Self::StorageError => "storage_error",
            Self::DelayTooLong => "delay_too_long",
            Self::UnknownNextHop => "unknown_next_hop",
            Self::BadNextHop => "bad_next_hop",
            Self::NotAnExit => "not_an_exit",
            Self::ExitBacklog => "exit_backlog",
            Self::HeldFull => "held_full",
            Self::QueueFull => "queue_full",
            Self::PeerQueueFull => "peer_queue_full",
            Self::TooManyStreams => "too_many_streams",
            Self::MailboxFull => "mailbox_full",
            Self::LinkCongested => "link_congested",
            Self::NextHopUnreachable => "next_hop_unreachable",
            Self::Shutdown => "shutdown",
        }
    }
}

/// What the relay's directory says of a packet's next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextHop<P> {
    /// A node of the directory (or this one), reached as `P`.
    Known(P),
    /// A valid id this relay does not know: a packet cannot make a relay
    /// dial arbitrary keys and hold queues for them.
    Unknown,
    /// Not a node id at all (not an Ed25519 key).
    Invalid,
}

/// What a relay must do with a processed packet; `P` is how the caller
/// reaches a next hop (a libp2p `PeerId` in the node).
#[derive(Debug)]
pub enum Decision<P> {
    /// Hold it until `due_ms`, then pass it to `next_hop`.
    Hold {
        /// When to release it (Unix ms).
        due_ms: u64,
        /// The next hop.
        next_hop: P,
        /// The re-encrypted packet.
        packet: Packet,
    },
    /// Store a reply in one of this relay's mailboxes, shown to its client
    /// once its delay has passed (stored at once, so a restart loses no
    /// receipt).
    Deposit {
        /// The mailbox.
        mailbox: MailboxId,
        /// The sealed reply.
        reply: Vec<u8>,
        /// Shown from then (Unix ms).
        visible_at_ms: u64,
        /// Forgotten then (Unix ms).
        expires_at_ms: u64,
    },
    /// Hand a leak to the exit role, to be held for `delay` there.
    ToExit {
        /// The decrypted message (an encoded `Leak`).
        message: Zeroizing<Vec<u8>>,
        /// The delay the sender chose for the exit hop.
        delay: Delay,
    },
    /// Drop it, counted under its reason.
    Drop(DropReason),
}

/// The limits a relay enforces on what a packet may ask of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayLimits {
    /// The longest a packet may ask to be held (ms).
    pub max_delay_ms: u64,
    /// How long a mailbox reply is kept once visible (ms).
    pub mailbox_ttl_ms: u64,
}

/// A relay's decisions, without I/O.
#[derive(Debug, Clone)]
pub struct RelayCore {
    limits: RelayLimits,
    exit: bool,
}

impl RelayCore {
    /// A relay's core, with the exit role if `exit`.
    pub fn new(limits: RelayLimits, exit: bool) -> Self {
        Self { limits, exit }
    }

    /// The limits in force.
    pub fn limits(&self) -> RelayLimits {
        self.limits
    }

    /// Peels one layer of `packet` with the secret of the epoch its key
    /// hint names (the current or the previous one at `now_secs`). Returns
    /// the epoch with what the protocol made of it.
    pub fn open(
        &self,
        packet: &Packet,
        keys: &KeyRing,
        now_secs: u64,
    ) -> Result<(u64, Processed), DropReason> {
        let (epoch, secret) = key_hint(packet.as_bytes())
            .and_then(|hint| keys.secret_for_hint(hint, now_secs))
            .ok_or(DropReason::UnknownEpoch)?;
        match process_packet(packet.as_bytes(), secret) {
            Processed::Drop(reason) => Err(DropReason::Protocol(reason)),
            processed => Ok((epoch, processed)),
        }
    }

    /// Decides what to do with a packet processed (and found fresh) at
    /// `now_ms`. `resolve` looks a next hop up in this relay's directory
    /// (this relay itself counts as known: a path may pass it twice).
    pub fn decide<P>(
        &self,
        processed: Processed,
        now_ms: u64,
        resolve: impl Fn(&NodeId) -> NextHop<P>,
    ) -> Decision<P> {
        let too_long = |delay: Delay| u64::from(delay.as_millis()) > self.limits.max_delay_ms;
        match processed {
            Processed::Forward(forward) => match resolve(&forward.next_hop) {
                NextHop::Invalid => Decision::Drop(DropReason::BadNextHop),
                NextHop::Unknown => Decision::Drop(DropReason::UnknownNextHop),
                NextHop::Known(_) if too_long(forward.delay) => {
                    Decision::Drop(DropReason::DelayTooLong)
                }
                NextHop::Known(next_hop) => Decision::Hold {
                    due_ms: now_ms + u64::from(forward.delay.as_millis()),
                    next_hop,
                    packet: forward.packet,
                },
            },
            Processed::Final(done) => match done.payload {
                FinalPayload::Mailbox { mailbox, reply } => {
                    if too_long(done.delay) {
                        return Decision::Drop(DropReason::DelayTooLong);
                    }
                    let visible_at_ms = now_ms + u64::from(done.delay.as_millis());
                    Decision::Deposit {
                        mailbox,
                        reply: reply.as_slice().to_vec(),
                        visible_at_ms,
                        expires_at_ms: visible_at_ms + self.limits.mailbox_ttl_ms,
                    }
                }
                FinalPayload::Exit { message } if self.exit => Decision::ToExit {
                    message,
                    delay: done.delay,
                },
                FinalPayload::Exit { .. } => Decision::Drop(DropReason::NotAnExit),
            },
            Processed::Drop(reason) => Decision::Drop(DropReason::Protocol(reason)),
        }
    }
}
