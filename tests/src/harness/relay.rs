//! A relay (and, with its exit, an exit) of the virtual federation: the
//! node's own core, key ring, store and held queue.

use std::{collections::HashMap, path::Path};

use leak_node::{
    epoch::{EpochSchedule, KeyRing},
    held::{HeldQueue, Hold},
    relay::{
        Decision, LoopCounters, NextHop, RelayCore, RelayLimits, RelayLoops, choose_loop_path,
        process_batch,
    },
    release::release_at,
    store::{Deposit, MailboxLimits, Store},
};
use leak_protocol::{
    NodeId, Packet,
    directory::{Descriptor, ExitInfo, Roles, SignedDescriptor},
};
use rand::{RngExt as _, rngs::StdRng};

use super::{
    exit::{Delivered, VirtualExit},
    settings::{Endpoint, Settings},
};

/// What a relay does with an arriving packet.
#[derive(Debug, Default)]
pub(super) struct Received {
    /// Wake the relay then to release held packets.
    pub wake_at: Option<u64>,
    /// Wake the exit then to deliver.
    pub deliver_at: Option<u64>,
    /// Packets to send now, with their identity (0: a fresh packet).
    pub send: Vec<(NodeId, Packet, u64)>,
    /// Mailboxes a reply was deposited into (the relay's own returning
    /// loops are not: it recognises and counts them).
    pub deposited: Vec<[u8; 32]>,
}

/// One relay.
pub struct VirtualRelay {
    seed: [u8; 32],
    node: NodeId,
    index: usize,
    core: RelayCore,
    keys: KeyRing,
    store: Store,
    held: HeldQueue<Endpoint, u64, (NodeId, Packet, u64)>,
    mailbox_limits: MailboxLimits,
    descriptor: Descriptor,
    published_at: u64,
    policy_version: u32,
    dropped: HashMap<&'static str, u64>,
    exit: Option<VirtualExit>,
    /// The mean extra hold of a receipt at the exit (ms).
    receipt_delay_ms: u32,
    /// Its own loops (the node's pure loop machine).
    loops: RelayLoops,
}

impl VirtualRelay {
    pub(super) fn new(
        index: usize,
        is_exit: bool,
        settings: &Settings,
        dir: &Path,
        now_ms: u64,
        rng: &mut StdRng,
    ) -> Self {
        let config = leak_node::Config::defaults(std::path::PathBuf::new());
        let seed: [u8; 32] = rng.random();
        let node = NodeId(leak_protocol::crypto::ed25519_public(&seed));
        let store = Store::open_in_memory(&dir.join("mix-keys")).expect("an in-memory store");
        let mut keys = KeyRing::load(
            &store,
            EpochSchedule::new(settings.epoch_secs),
            settings.keys_ahead,
        )
        .expect("a key ring");
        keys.rotate(&store, now_ms / 1000, rng).expect("keys");
        let core = RelayCore::new(
            RelayLimits {
                max_delay_ms: config.limits.max_delay_ms.into(),
                mailbox_ttl_ms: config.mailbox.ttl_secs * 1000,
            },
            is_exit,
        );
        let mut relay = Self {
            seed,
            node,
            index,
            core,
            keys,
            store,
            held: HeldQueue::new(config.limits.held_packets),
            mailbox_limits: MailboxLimits {
                per_mailbox: config.mailbox.max_per_mailbox,
                total: config.mailbox.max_total,
            },
            descriptor: placeholder(node),
            published_at: 0,
            policy_version: settings.policy_version,
            dropped: HashMap::new(),
            exit: is_exit.then(VirtualExit::new),
            receipt_delay_ms: settings.receipt_delay_ms,
            loops: RelayLoops::new(
                leak_node::relay::LoopConfig {
                    interval_ms: settings.relay_loop_interval_ms,
                    // The same mean as the senders' hops, as the node's
                    // configuration advises.
                    mean_delay_ms: settings.mean_delay_ms,
                    ..config
                        .cover
                        .loops(leak_protocol::federation::MAX_HOP_DELAY_MS)
                },
                now_ms,
                rng,
            ),
        };
        relay.publish(now_ms);
        relay
    }

    /// Signs a fresh descriptor (as the node does after each rotation).
    fn publish(&mut self, now_ms: u64) {
        let now = now_ms / 1000;
        self.published_at = now.max(self.published_at + 1);
        let octet = u8::try_from(self.index % 250).unwrap_or(0);
        let descriptor = Descriptor {
            node: self.node,
            // One /16 per relay, so the path rules treat them as distinct
            // networks (addresses are never dialled here).
            addresses: vec![format!("/ip4/10.{octet}.0.1/tcp/4700")],
            roles: Roles {
                relay: true,
                exit: self.exit.is_some(),
            },
            family: format!("family-{}", self.index),
            exit: self.exit.as_ref().map(|_| ExitInfo {
                domain: format!("exit{}.leak.test", self.index),
                policy_version: self.policy_version,
                stamp_bits: 0,
            }),
            epoch_period_secs: self.keys.schedule().period_secs(),
            mix_keys: self.keys.published_keys(now),
            software: "leak-node (virtual)".to_owned(),
            published_at: self.published_at,
            traffic: None,
        };
        let signed: SignedDescriptor = descriptor.sign(&self.seed).expect("a valid descriptor");
        self.descriptor = signed
            .verify(leak_protocol::directory::Freshness {
                now,
                max_age_secs: u64::MAX / 2,
                max_clock_skew_secs: 0,
            })
            .expect("its own descriptor verifies");
    }

    /// This relay's node id.
    pub fn node_id(&self) -> NodeId {
        self.node
    }

    /// Its newest descriptor.
    pub fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    /// Epochs whose secrets it holds.
    pub fn key_epochs(&self) -> Vec<u64> {
        self.keys.epochs()
    }

    /// Packets held for their delay right now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Replies in its mailboxes.
    pub fn mailbox_replies(&self) -> u64 {
        self.store.mailbox_len().unwrap_or(0)
    }

    /// Packets it dropped for `reason`.
    pub fn dropped(&self, reason: &str) -> u64 {
        self.dropped.get(reason).copied().unwrap_or(0)
    }

    pub(super) fn count_drop(&mut self, reason: &'static str) {
        *self.dropped.entry(reason).or_default() += 1;
    }

    /// Its exit role.
    pub fn exit(&self) -> Option<&VirtualExit> {
        self.exit.as_ref()
    }

    pub(super) fn exit_mut(&mut self) -> Option<&mut VirtualExit> {
        self.exit.as_mut()
    }

    /// A packet arrives from `from` at `now_ms`: through the core.
    pub(super) fn receive(
        &mut self,
        now_ms: u64,
        from: Endpoint,
        packet: Packet,
        id: u64,
        directory: &[NodeId],
        rng: &mut StdRng,
    ) -> Received {
        let mut out = Received::default();
        let resolve = |node: &NodeId| {
            if directory.contains(node) {
                NextHop::Known(*node)
            } else {
                NextHop::Unknown
            }
        };
        let decided = process_batch(
            &self.core,
            &self.keys,
            &self.store,
            now_ms,
            vec![((from, id), packet)],
            resolve,
        );
        for opened in decided {
            match opened.decision {
                Decision::Hold {
                    due_ms,
                    next_hop,
                    packet,
                } => match self.held.push(
                    opened.source.0,
                    due_ms,
                    (next_hop, packet, opened.source.1),
                ) {
                    Hold::Held => {
                        let at = self.release_time(due_ms);
                        out.wake_at = Some(out.wake_at.map_or(at, |w| w.min(at)));
                    }
                    Hold::HeldEvictedOther(_) | Hold::DroppedFull(_) => {
                        self.count_drop("held_full")
                    }
                },
                Decision::Deposit {
                    mailbox,
                    reply,
                    visible_at_ms,
                    expires_at_ms,
                } => {
                    // Its own loop back: recognised before storage.
                    if self.loops.is_pending(&mailbox)
                        && self.loops.on_deposit(&mailbox, &reply, now_ms).is_some()
                    {
                        continue;
                    }
                    out.deposited.push(mailbox.0);
                    let deposit = Deposit {
                        mailbox: mailbox.0,
                        reply: &reply,
                        visible_at_ms,
                        expires_at_ms,
                    };
                    for result in leak_node::relay::deposit_all(
                        &self.store,
                        std::slice::from_ref(&deposit),
                        self.mailbox_limits,
                    ) {
                        if let Err(reason) = result {
                            self.count_drop(reason.label());
                        }
                    }
                }
                // An echo's answer is a fresh packet, as a receipt is, held
                // as the exit holds receipts.
                Decision::Echo {
                    due_ms,
                    next_hop,
                    packet,
                } => {
                    if let Some(due) = self.hold_answer(due_ms, next_hop, packet, rng) {
                        out.wake_at = Some(out.wake_at.map_or(due, |w| w.min(due)));
                    }
                }
                Decision::ToExit { message, delay } => match self.exit.as_mut() {
                    Some(exit) => {
                        let (due, receipts) = exit.ingest(now_ms, &message, delay);
                        out.deliver_at = due;
                        out.send
                            .extend(receipts.into_iter().map(|(n, p)| (n, p, 0)));
                    }
                    None => self.count_drop("not_an_exit"),
                },
                Decision::Drop(reason) => self.count_drop(reason.label()),
            }
        }
        out
    }

    /// When a packet due at `due_ms` leaves: on the node timer's grid.
    fn release_time(&self, due_ms: u64) -> u64 {
        release_at(due_ms, |when, limit| self.held.due_by(when, limit))
    }

    /// Releases every held packet that is due.
    pub(super) fn release(&mut self, now_ms: u64) -> Vec<(NodeId, Packet, u64)> {
        let mut out = Vec::new();
        while let Some(next) = self.held.pop_due(now_ms) {
            out.push(next);
        }
        out
    }

    /// The exit's delivery round: receipts leave at once, or after an
    /// exponential hold of mean `receipt_delay_ms` (so a receipt's time
    /// says less about the delivery's). Returns what to send now and when
    /// to wake for held receipts.
    pub(super) fn deliver(&mut self, now_ms: u64, rng: &mut StdRng) -> (Delivered, Option<u64>) {
        let Some(exit) = self.exit.as_mut() else {
            return (Delivered::default(), None);
        };
        let mut done = exit.deliver_due(now_ms, rng);
        if self.receipt_delay_ms == 0 {
            return (done, None);
        }
        let mut wake: Option<u64> = None;
        for (next_hop, packet) in done.send.drain(..) {
            if let Some(due) = self.hold_answer(now_ms, next_hop, packet, rng) {
                wake = Some(wake.map_or(due, |w| w.min(due)));
            }
        }
        (done, wake)
    }

    /// Holds an exit's answer (a receipt, or cover for an echo), a fresh
    /// packet, from `from_ms` plus the exponential receipt hold; returns
    /// when it leaves (on the grid), or `None` when the held queue refused
    /// it.
    fn hold_answer(
        &mut self,
        from_ms: u64,
        next_hop: NodeId,
        packet: Packet,
        rng: &mut StdRng,
    ) -> Option<u64> {
        let due = from_ms
            + leak_node::exit::schedule::receipt_delay_ms(u64::from(self.receipt_delay_ms), rng);
        match self
            .held
            .push(Endpoint::Relay(self.index), due, (next_hop, packet, 0))
        {
            Hold::Held => Some(self.release_time(due)),
            Hold::HeldEvictedOther(_) | Hold::DroppedFull(_) => {
                self.count_drop("held_full");
                None
            }
        }
    }

    /// When its next own loop is due.
    pub(super) fn next_loop_ms(&self) -> Option<u64> {
        self.loops.next_due_ms()
    }

    /// Its own loop, if one is due at `now_ms`: a path through two other
    /// nodes of `directory` and back, built and remembered by the node's
    /// loop machine. Returns the first hop and the packet.
    pub(super) fn take_loop(
        &mut self,
        directory: &[Descriptor],
        now_ms: u64,
        rng: &mut StdRng,
    ) -> Option<(NodeId, Packet)> {
        self.loops.expire(now_ms);
        if !self.loops.take_due(now_ms, rng) {
            return None;
        }
        let config = *self.loops.config();
        let path = choose_loop_path(directory.iter(), &self.node, &config, now_ms, rng).ok()?;
        let built = self.loops.build(now_ms, &path, rng).ok()?;
        Some((built.first_hop, built.packet))
    }

    /// Its own loops: sent, returned, lost.
    pub fn loop_counters(&self) -> LoopCounters {
        self.loops.counters()
    }

    /// The node's maintenance: rotate keys (and publish), expire mailboxes.
    pub(super) fn maintain(&mut self, now_ms: u64, rng: &mut StdRng) {
        let rotation = self
            .keys
            .rotate(&self.store, now_ms / 1000, rng)
            .expect("rotation");
        if !rotation.created.is_empty() || !rotation.deleted.is_empty() {
            self.publish(now_ms);
        }
        let _ = self.store.mailbox_expire(now_ms);
    }

    /// What the mailbox server answers (and then deletes).
    pub(super) fn fetch_mailbox(&mut self, mailbox: &[u8; 32], now_ms: u64) -> Vec<Vec<u8>> {
        self.fetch_mailbox_at_most(mailbox, now_ms, usize::MAX)
    }

    /// The same, at most `slots` replies, oldest first (`/leak/mailbox/2`
    /// answers a fixed number of slots).
    pub(super) fn fetch_mailbox_at_most(
        &mut self,
        mailbox: &[u8; 32],
        now_ms: u64,
        slots: usize,
    ) -> Vec<Vec<u8>> {
        let held = self.store.mailbox_peek(mailbox, now_ms).unwrap_or_default();
        let (seqs, replies): (Vec<u64>, Vec<Vec<u8>>) = held.into_iter().take(slots).unzip();
        if !seqs.is_empty() {
            let _ = self.store.mailbox_remove(mailbox, &seqs);
        }
        replies
    }
}

fn placeholder(node: NodeId) -> Descriptor {
    Descriptor {
        node,
        addresses: Vec::new(),
        roles: Roles {
            relay: true,
            exit: false,
        },
        family: String::new(),
        exit: None,
        epoch_period_secs: 1,
        mix_keys: Vec::new(),
        software: String::new(),
        published_at: 0,
        traffic: None,
    }
}
