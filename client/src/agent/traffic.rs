//! What the agent puts on the wire, and what it recognises in its mailbox.
//!
//! Every packet goes to the guard and is one fixed-size onion packet:
//! - a **drop**: `guard → middle → exit`, whose end-to-end payload says
//!   "cover"; the exit counts it and discards it;
//! - a **loop**: an echo ([`leak_protocol::cover::build_echo`]): the way
//!   out of a leak (`guard → middle → exit`) carrying a reply block the way
//!   back of a receipt (`relay → relay → guard (mailbox)`); the exit answers
//!   it with cover along the block after the random hold it gives receipts,
//!   and the answer comes back to the agent's mailbox. Every hop, the exit
//!   included, sees a loop as it sees a leak and its receipt;
//! - a **leak**: `guard → middle → exit`, with a reply block
//!   `relay → relay → guard (mailbox)` as long as the way out, whose receipt
//!   comes back to the mailbox in place of the loop whose slot it took.
//!
//! The mailbox answer holds random filler, returned loops and receipts; the
//! agent tries its keys on each entry: a pending leak's reply keys (a
//! receipt for that message id), then its pending loops' keys (a loop that
//! opens and says "cover"). Anything else is filler, or a reply nobody here
//! can read, and is ignored.

use std::collections::{HashMap, VecDeque};

use leak_protocol::{
    MailboxId, MessageId, NodeId, Outcome, Packet, Recipient, ReplyKeys, cover,
    directory::Descriptor,
    payload::Stamp,
    seal::{LeakContents, SealError, SealedLeak, seal_leak},
};
use rand::CryptoRng;

use crate::{
    path::{self, PathError, RouteRequest},
    receipts::open_receipt,
};

/// The most loops waiting to come back; the oldest are given up on first
/// (a bound on memory whatever the guard does with them).
pub const MAX_PENDING_LOOPS: usize = 4096;

/// Why a packet could not be built (its slot then carries another kind, or
/// nothing).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrafficError {
    /// No path through the directory.
    #[error(transparent)]
    Path(#[from] PathError),
    /// The path rules left the guard out (it lacks a key for the epoch).
    #[error("no path starts at the guard right now")]
    NotThroughGuard,
    /// The leak's exit is no longer in the directory.
    #[error("the leak's exit is not in the directory")]
    ExitGone,
    /// The leak does not seal.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// A cover packet does not build.
    #[error("a cover packet does not build: {0}")]
    Cover(String),
}

/// What every packet of the agent needs.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The verified directory.
    pub nodes: &'a [Descriptor],
    /// The guard.
    pub guard: NodeId,
    /// The agent's mailbox at the guard.
    pub mailbox: MailboxId,
    /// The per-hop mean delay (ms).
    pub mean_delay_ms: u32,
    /// Hops of a forward path, counting the exit.
    pub hops: usize,
    /// Now (Unix ms).
    pub now_ms: u64,
}

/// A drop cover packet: to a random exit through the guard.
pub fn build_drop<R: CryptoRng + ?Sized>(
    cx: &Context<'_>,
    policy_version: u32,
    rng: &mut R,
) -> Result<Packet, TrafficError> {
    let exit = path::choose_exit(cx.nodes, policy_version, None, cx.now_ms, rng)?;
    let route = route_through_guard(cx, &exit.descriptor, rng)?;
    cover::seal_drop(&route.forward, rng).map_err(|e| TrafficError::Cover(e.to_string()))
}

/// A loop (an echo through a random exit, on a route chosen as a leak's)
/// and the keys that recognise it when it comes back, with its route's
/// delays added up (the exit's receipt hold comes on top).
pub fn build_loop<R: CryptoRng + ?Sized>(
    cx: &Context<'_>,
    policy_version: u32,
    rng: &mut R,
) -> Result<(Packet, ReplyKeys, u64), TrafficError> {
    let exit = path::choose_exit(cx.nodes, policy_version, None, cx.now_ms, rng)?;
    let route = route_through_guard(cx, &exit.descriptor, rng)?;
    let built = cover::build_echo(&route.forward, &route.reply, cx.mailbox, rng)
        .map_err(|e| TrafficError::Cover(e.to_string()))?;
    Ok((built.packet, built.keys, route.total_delay_ms()))
}

/// A fetch of a conversation's next answer from `exit` (a route chosen as
/// a leak's, its reply coming back to the agent's mailbox like a loop's),
/// the keys that open the reply, and the route's delays added up.
pub fn build_fetch<R: CryptoRng + ?Sized>(
    cx: &Context<'_>,
    exit: NodeId,
    capability: &[u8; 32],
    ack: u32,
    rng: &mut R,
) -> Result<(Packet, ReplyKeys, u64), TrafficError> {
    let exit = cx
        .nodes
        .iter()
        .find(|d| d.node == exit)
        .ok_or(TrafficError::ExitGone)?;
    let route = route_through_guard(cx, exit, rng)?;
    let built = leak_protocol::answers::build_fetch(
        &route.forward,
        &route.reply,
        cx.mailbox,
        capability,
        ack,
        rng,
    )
    .map_err(|e| TrafficError::Cover(e.to_string()))?;
    Ok((built.packet, built.keys, route.total_delay_ms()))
}

/// What a leak's packet is sealed from.
pub struct LeakInput<'a> {
    /// Its message id (the same for every attempt).
    pub message_id: MessageId,
    /// The exit every attempt goes to.
    pub exit: NodeId,
    /// The recipient.
    pub recipient: &'a Recipient,
    /// Who the sender is to them.
    pub relationship: leak_protocol::Relationship,
    /// The text.
    pub text: &'a str,
    /// The policy version it was checked against.
    pub policy_version: u32,
    /// The anti-abuse stamp.
    pub stamp: Stamp,
    /// How the recipient's answers reach the sender (`None`: not
    /// answerable).
    pub answer_to: Option<leak_protocol::answers::AnswerTo>,
}

/// A leak's packet over a fresh route from the guard to its exit, with the
/// keys that open its receipt and the route's delays added up.
pub fn build_leak<R: CryptoRng + ?Sized>(
    cx: &Context<'_>,
    leak: &LeakInput<'_>,
    rng: &mut R,
) -> Result<(Packet, ReplyKeys, u64), TrafficError> {
    let exit = cx
        .nodes
        .iter()
        .find(|d| d.node == leak.exit)
        .ok_or(TrafficError::ExitGone)?;
    let route = route_through_guard(cx, exit, rng)?;
    let SealedLeak { packet, reply_keys } = seal_leak(
        &LeakContents {
            message_id: leak.message_id,
            recipient: leak.recipient,
            relationship: leak.relationship,
            text: leak.text,
            policy_version: leak.policy_version,
            stamp: leak.stamp,
            answer_to: leak.answer_to,
        },
        &route.forward,
        &route.reply,
        cx.mailbox,
        rng,
    )?;
    Ok((packet, reply_keys, route.total_delay_ms()))
}

/// A route from the guard to `exit` whose reply path is as long as the
/// forward path and ends at the guard.
fn route_through_guard<R: CryptoRng + ?Sized>(
    cx: &Context<'_>,
    exit: &Descriptor,
    rng: &mut R,
) -> Result<path::Route, TrafficError> {
    let route = path::choose_route_with_reply(
        cx.nodes,
        &RouteRequest {
            hops: cx.hops,
            mean_delay_ms: cx.mean_delay_ms,
            now_ms: cx.now_ms,
            exit,
            entry: Some(cx.guard),
            avoid: &[],
            exclude: &[],
        },
        cx.hops,
        rng,
    )?;
    if route.entry() != cx.guard {
        return Err(TrafficError::NotThroughGuard);
    }
    Ok(route)
}

/// Loops sent and not back yet.
#[derive(Default)]
pub struct PendingLoops {
    loops: VecDeque<(u64, ReplyKeys)>,
}

impl PendingLoops {
    /// Remembers a loop given up on at `expires_at_ms`; returns how many
    /// older loops were dropped to stay within [`MAX_PENDING_LOOPS`].
    pub fn push(&mut self, expires_at_ms: u64, keys: ReplyKeys) -> u64 {
        let mut dropped = 0;
        while self.loops.len() >= MAX_PENDING_LOOPS {
            self.loops.pop_front();
            dropped += 1;
        }
        self.loops.push_back((expires_at_ms, keys));
        dropped
    }

    /// Gives up on the loops whose time is past; returns how many.
    pub fn expire(&mut self, now_ms: u64) -> u64 {
        let before = self.loops.len();
        self.loops.retain(|(expires, _)| *expires > now_ms);
        (before - self.loops.len()) as u64
    }

    /// How many are waiting.
    pub fn len(&self) -> usize {
        self.loops.len()
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.loops.is_empty()
    }

    /// Whether `entry` is one of these loops come back (it is then forgotten).
    pub fn recognise(&mut self, entry: &[u8]) -> bool {
        let found = self.loops.iter().position(|(_, keys)| {
            keys.open(entry)
                .is_ok_and(|opened| cover::is_cover(&opened))
        });
        match found {
            Some(index) => {
                self.loops.remove(index);
                true
            }
            None => false,
        }
    }
}

/// The reply keys of every attempt of the leaks waiting for a receipt, by
/// message id (hex).
pub type PendingLeaks = HashMap<String, (MessageId, Vec<ReplyKeys>)>;

/// What one mailbox entry turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// A receipt for the leak with this id (hex).
    Receipt(String, Outcome),
    /// One of the agent's loops.
    Loop,
    /// Filler, or nothing this agent can read.
    Nothing,
}

/// Tries the agent's keys on one mailbox entry.
pub fn open_entry(leaks: &PendingLeaks, loops: &mut PendingLoops, entry: &[u8]) -> Opened {
    for (id, (message_id, keys)) in leaks {
        for key in keys {
            if let Some(outcome) = open_receipt(key, entry, *message_id) {
                return Opened::Receipt(id.clone(), outcome);
            }
        }
    }
    if loops.recognise(entry) {
        return Opened::Loop;
    }
    Opened::Nothing
}

#[cfg(test)]
mod tests {
    use leak_protocol::{
        Delay, MixSecret, Processed, Receipt, build_reply_block, process_packet,
        sphinx::{FinalPayload, PAYLOAD_LEN},
    };

    use super::*;

    fn hops(secrets: &[MixSecret]) -> Vec<leak_protocol::PathHop> {
        secrets
            .iter()
            .enumerate()
            .map(|(i, s)| leak_protocol::PathHop {
                node: NodeId([i as u8 + 1; 32]),
                key: s.public(),
                key_hint: 0,
                delay: Delay(10),
            })
            .collect()
    }

    /// What the mailbox holds once `packet` crossed every hop.
    fn deposit(mut packet: Packet, secrets: &[MixSecret]) -> Vec<u8> {
        for secret in secrets {
            match process_packet(packet.as_bytes(), secret) {
                Processed::Forward(f) => packet = f.packet,
                Processed::Final(f) => match f.payload {
                    FinalPayload::Mailbox { reply, .. } => return reply.to_vec(),
                    FinalPayload::Exit { .. } => panic!("ended at an exit"),
                },
                Processed::Drop(reason) => panic!("dropped: {reason:?}"),
            }
        }
        panic!("no final hop")
    }

    /// A mailbox answer holds returned loops, a receipt and filler: each is
    /// told for what it is, a loop counts once, and lost loops expire.
    #[test]
    fn loops_receipts_and_filler_are_told_apart() {
        let secrets: Vec<MixSecret> = (1..=3u8).map(|i| MixSecret::from_bytes([i; 32])).collect();
        let path = hops(&secrets);
        let mailbox = MailboxId([7; 32]);
        let mut rng = rand::rng();
        let mut loops = PendingLoops::default();
        let a = cover::build_loop(&path, mailbox, &mut rng).unwrap();
        let b = cover::build_loop(&path, mailbox, &mut rng).unwrap();
        assert_eq!(loops.push(1_000, a.keys), 0);
        assert_eq!(loops.push(5_000, b.keys), 0);
        let back_a = deposit(a.packet, &secrets);
        let back_b = deposit(b.packet, &secrets);

        let (block, keys) = build_reply_block(&path, mailbox, &mut rng).unwrap();
        let id = MessageId([4; 16]);
        let receipt = Receipt {
            message_id: id,
            outcome: Outcome::Delivered,
        };
        let (_, packet) = block.into_packet(&receipt.encode().unwrap()).unwrap();
        let back_receipt = deposit(packet, &secrets);
        let mut leaks = PendingLeaks::new();
        leaks.insert(id.to_string(), (id, vec![keys]));

        let filler = vec![0x5a; PAYLOAD_LEN];
        assert_eq!(open_entry(&leaks, &mut loops, &filler), Opened::Nothing);
        assert_eq!(
            open_entry(&leaks, &mut loops, &back_receipt),
            Opened::Receipt(id.to_string(), Outcome::Delivered)
        );
        // A receipt for another leak is not this one's.
        let other: PendingLeaks = HashMap::new();
        assert_eq!(
            open_entry(&other, &mut loops, &back_receipt),
            Opened::Nothing
        );
        assert_eq!(open_entry(&leaks, &mut loops, &back_a), Opened::Loop);
        assert_eq!(
            open_entry(&leaks, &mut loops, &back_a),
            Opened::Nothing,
            "a replayed loop counts once"
        );
        assert_eq!(loops.len(), 1);
        assert_eq!(loops.expire(4_999), 0);
        assert_eq!(loops.expire(5_000), 1, "b is given up on");
        assert!(loops.is_empty());
        assert_eq!(open_entry(&leaks, &mut loops, &back_b), Opened::Nothing);
    }

    #[test]
    fn pending_loops_are_bounded() {
        let secrets = [MixSecret::from_bytes([1; 32])];
        let path = hops(&secrets);
        let keys = || {
            cover::build_loop(&path, MailboxId([1; 32]), &mut rand::rng())
                .unwrap()
                .keys
        };
        let mut loops = PendingLoops::default();
        let one = keys();
        for _ in 0..MAX_PENDING_LOOPS {
            assert_eq!(loops.push(u64::MAX, one.clone()), 0);
        }
        assert_eq!(loops.push(u64::MAX, keys()), 1, "the oldest goes");
        assert_eq!(loops.len(), MAX_PENDING_LOOPS);
    }
}
