//! [`RelayCore`]: a processed packet, the time, the limits and the known
//! peers in; a [`Decision`] out.

use leak_protocol::{
    Delay, NodeId, Packet, Processed,
    cover::{COVER_MESSAGE, is_cover, is_echo, open_echo},
    key_hint, process_packet,
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
    /// The replay tags or the mailbox could not be written, or a held
    /// packet could not be written to disk or read back.
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
    /// The previous hop deposited as many replies as it may this window
    /// ([`super::quota`]).
    DepositQuota,
    /// The previous hop deposited into as many distinct mailboxes as it
    /// may this window ([`super::quota`]).
    MailboxQuota,
    /// The link to the next hop has too many packets queued.
    LinkCongested,
    /// The next hop could not be reached.
    NextHopUnreachable,
    /// The node stopped while holding it.
    Shutdown,
    /// Cover (a drop) that reached its exit: discarded there by design,
    /// counted apart from the errors.
    Cover,
    /// A reply for one of this node's own loops that does not open with
    /// the loop's keys: a hop altered it.
    TamperedLoop,
    /// An echo whose reply block does not read, or is refused by its own
    /// encoding: nothing can be answered.
    BadEcho,
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
            Self::DepositQuota => "deposit_quota",
            Self::MailboxQuota => "mailbox_quota",
            Self::LinkCongested => "link_congested",
            Self::NextHopUnreachable => "next_hop_unreachable",
            Self::Shutdown => "shutdown",
            Self::Cover => "cover",
            Self::TamperedLoop => "tampered_loop",
            Self::BadEcho => "bad_echo",
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
    /// Answer an echo (a sender's loop, [`leak_protocol::cover::build_echo`]):
    /// `packet` is cover along the echo's reply block, to be held from
    /// `due_ms` (the exit hop's delay) plus the exit's random receipt hold,
    /// as a leak's receipt is, then passed to `next_hop`.
    Echo {
        /// When the exit hop's delay is over (Unix ms); the caller adds the
        /// receipt hold.
        due_ms: u64,
        /// The reply block's first hop.
        next_hop: P,
        /// The answer.
        packet: Packet,
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
                // Before any other exit work: a drop is opened, counted and
                // discarded, and nothing of it is stored or answered.
                FinalPayload::Exit { message } if self.exit && is_cover(&message) => {
                    Decision::Drop(DropReason::Cover)
                }
                // An echo is answered like a leak, with cover for a receipt;
                // nothing of it is stored.
                FinalPayload::Exit { message } if self.exit && is_echo(&message) => {
                    if too_long(done.delay) {
                        return Decision::Drop(DropReason::DelayTooLong);
                    }
                    let Some(block) = open_echo(&message) else {
                        return Decision::Drop(DropReason::BadEcho);
                    };
                    let Ok((first_hop, packet)) = block.into_packet(&COVER_MESSAGE) else {
                        return Decision::Drop(DropReason::BadEcho);
                    };
                    match resolve(&first_hop) {
                        NextHop::Invalid => Decision::Drop(DropReason::BadNextHop),
                        NextHop::Unknown => Decision::Drop(DropReason::UnknownNextHop),
                        NextHop::Known(next_hop) => Decision::Echo {
                            due_ms: now_ms + u64::from(done.delay.as_millis()),
                            next_hop,
                            packet,
                        },
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

#[cfg(test)]
mod tests {
    use leak_protocol::{
        MailboxId, MixSecret, PathHop, build_packet, build_reply_block, process_packet,
    };
    use rand::{SeedableRng as _, rngs::StdRng};

    use super::*;

    const LIMITS: RelayLimits = RelayLimits {
        max_delay_ms: 10_000,
        mailbox_ttl_ms: 86_400_000,
    };

    fn node(n: u8) -> NodeId {
        NodeId(leak_protocol::crypto::ed25519_public(&[n; 32]))
    }

    fn hop(node: NodeId, secret: &MixSecret, delay_ms: u32) -> PathHop {
        PathHop {
            node,
            key: secret.public(),
            key_hint: 7,
            delay: Delay(delay_ms),
        }
    }

    /// What the first of two hops makes of a packet whose first delay is
    /// `delay_ms`, going on to `next`.
    fn forward(delay_ms: u32, next: NodeId) -> Processed {
        let mut rng = StdRng::seed_from_u64(1);
        let (a, b) = (MixSecret::generate(&mut rng), MixSecret::generate(&mut rng));
        let path = [hop(node(1), &a, delay_ms), hop(next, &b, 0)];
        let packet = build_packet(&path, b"a leak", &mut rng).unwrap();
        process_packet(packet.as_bytes(), &a)
    }

    fn resolve_all(peer: &'static str) -> impl Fn(&NodeId) -> NextHop<&'static str> {
        move |_| NextHop::Known(peer)
    }

    #[test]
    fn a_packet_for_a_known_hop_is_held_for_its_delay() {
        let core = RelayCore::new(LIMITS, false);
        match core.decide(forward(1_500, node(2)), 1_000_000, resolve_all("B")) {
            Decision::Hold {
                due_ms, next_hop, ..
            } => {
                assert_eq!(due_ms, 1_001_500);
                assert_eq!(next_hop, "B");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_invalid_and_too_slow_hops_are_dropped_with_their_reason() {
        let core = RelayCore::new(LIMITS, false);
        let unknown = |_: &NodeId| NextHop::<()>::Unknown;
        let invalid = |_: &NodeId| NextHop::<()>::Invalid;
        assert!(matches!(
            core.decide(forward(0, node(2)), 0, unknown),
            Decision::Drop(DropReason::UnknownNextHop)
        ));
        assert!(matches!(
            core.decide(forward(0, node(2)), 0, invalid),
            Decision::Drop(DropReason::BadNextHop)
        ));
        assert!(matches!(
            core.decide(forward(10_001, node(2)), 0, resolve_all("B")),
            Decision::Drop(DropReason::DelayTooLong)
        ));
        assert_eq!(DropReason::DelayTooLong.label(), "delay_too_long");
    }

    #[test]
    fn a_reply_is_deposited_visible_after_its_delay_until_its_lifetime() {
        let mut rng = StdRng::seed_from_u64(2);
        let a = MixSecret::generate(&mut rng);
        let (block, _keys) = build_reply_block(
            &[hop(node(1), &a, 2_000)],
            MailboxId::from_capability(&[9; 32]),
            &mut rng,
        )
        .unwrap();
        let (_, packet) = block.into_packet(b"a receipt").unwrap();
        let processed = process_packet(packet.as_bytes(), &a);
        let core = RelayCore::new(LIMITS, false);
        match core.decide(processed, 50_000, resolve_all("unused")) {
            Decision::Deposit {
                mailbox,
                visible_at_ms,
                expires_at_ms,
                ..
            } => {
                assert_eq!(mailbox, MailboxId::from_capability(&[9; 32]));
                assert_eq!(visible_at_ms, 52_000);
                assert_eq!(expires_at_ms, 52_000 + LIMITS.mailbox_ttl_ms);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_an_exit_takes_a_leak() {
        let mut rng = StdRng::seed_from_u64(3);
        let a = MixSecret::generate(&mut rng);
        let packet = build_packet(&[hop(node(1), &a, 0)], b"a leak", &mut rng).unwrap();
        let relay = RelayCore::new(LIMITS, false);
        let exit = RelayCore::new(LIMITS, true);
        let processed = process_packet(packet.as_bytes(), &a);
        assert!(matches!(
            relay.decide(processed.clone(), 0, resolve_all("x")),
            Decision::Drop(DropReason::NotAnExit)
        ));
        match exit.decide(processed, 0, resolve_all("x")) {
            Decision::ToExit { message, .. } => assert_eq!(&message[..], b"a leak"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_exit_discards_a_drop_before_any_exit_work() {
        let mut rng = StdRng::seed_from_u64(4);
        let a = MixSecret::generate(&mut rng);
        let packet = leak_protocol::cover::seal_drop(&[hop(node(1), &a, 500)], &mut rng).unwrap();
        let processed = process_packet(packet.as_bytes(), &a);
        let exit = RelayCore::new(LIMITS, true);
        assert!(matches!(
            exit.decide(processed.clone(), 0, resolve_all("x")),
            Decision::Drop(DropReason::Cover)
        ));
        assert_eq!(DropReason::Cover.label(), "cover");
        // A relay that is not an exit says so, as for any exit payload.
        assert!(matches!(
            RelayCore::new(LIMITS, false).decide(processed, 0, resolve_all("x")),
            Decision::Drop(DropReason::NotAnExit)
        ));
    }

    #[test]
    fn an_exit_answers_an_echo_with_cover_along_its_block() {
        let mut rng = StdRng::seed_from_u64(5);
        let (a, b) = (MixSecret::generate(&mut rng), MixSecret::generate(&mut rng));
        let mailbox = MailboxId::from_capability(&[3; 32]);
        let echo = leak_protocol::cover::build_echo(
            &[hop(node(1), &a, 700)],
            &[hop(node(2), &b, 900)],
            mailbox,
            &mut rng,
        )
        .unwrap();
        let processed = process_packet(echo.packet.as_bytes(), &a);
        let exit = RelayCore::new(LIMITS, true);
        let Decision::Echo {
            due_ms,
            next_hop,
            packet,
        } = exit.decide(processed.clone(), 10_000, resolve_all("B"))
        else {
            panic!("not answered");
        };
        assert_eq!((due_ms, next_hop), (10_700, "B"));
        // The answer deposits cover in the builder's mailbox.
        let Processed::Final(done) = process_packet(packet.as_bytes(), &b) else {
            panic!("the answer did not end at the mailbox");
        };
        let FinalPayload::Mailbox { mailbox: at, reply } = done.payload else {
            panic!("not a mailbox payload");
        };
        assert_eq!(at, mailbox);
        assert!(is_cover(&echo.keys.open(&reply[..]).unwrap()));
        // The block's first hop must be known, as any next hop.
        assert!(matches!(
            exit.decide(processed.clone(), 0, |_: &NodeId| NextHop::<()>::Unknown),
            Decision::Drop(DropReason::UnknownNextHop)
        ));
        assert!(matches!(
            RelayCore::new(LIMITS, false).decide(processed, 0, resolve_all("x")),
            Decision::Drop(DropReason::NotAnExit)
        ));
    }

    #[test]
    fn an_echo_without_a_readable_block_is_dropped() {
        let mut rng = StdRng::seed_from_u64(6);
        let a = MixSecret::generate(&mut rng);
        let short = [leak_protocol::payload::FORMAT_VERSION, 4, 1, 2, 3];
        let packet = build_packet(&[hop(node(1), &a, 0)], &short, &mut rng).unwrap();
        let processed = process_packet(packet.as_bytes(), &a);
        assert!(matches!(
            RelayCore::new(LIMITS, true).decide(processed, 0, resolve_all("x")),
            Decision::Drop(DropReason::BadEcho)
        ));
        assert_eq!(DropReason::BadEcho.label(), "bad_echo");
    }
}
