//! An always-on agent of the virtual federation (the sender's `leak agent`
//! process): `leak_client::cover`'s [`Schedule`] decides when it emits and
//! what, and when it polls; it keeps one guard and one long-lived mailbox
//! there; its packets are built by the agent's own code
//! (`leak_client::agent::traffic`: drops, loops and leaks along the client's
//! path rules), and every poll answers one fixed-size slot, opened with
//! the agent's [`open_entry`].

use std::collections::{HashMap, VecDeque};

use leak_client::{
    agent::traffic::{
        Context, LeakInput, Opened, PendingLeaks, PendingLoops, build_drop, build_leak, build_loop,
        open_entry,
    },
    cover::{Schedule, Slot},
};
use leak_protocol::{
    MailboxId, MessageId, Packet, Recipient, Relationship, directory::Descriptor, payload::Stamp,
};
use rand::{RngExt as _, rngs::StdRng};

use super::settings::Settings;

/// A leak handed to an agent, and how it went.
#[derive(Debug, Clone)]
pub struct AgentLeak {
    /// The agent (sender) it was handed to.
    pub sender: usize,
    /// Its id.
    pub message_id: MessageId,
    recipient: Recipient,
    text: String,
    /// Its exit (relay index), chosen when handed over.
    pub exit: usize,
    /// When it was handed over (Unix ms).
    pub handed_ms: u64,
    /// When it left in a send slot.
    pub emitted_ms: Option<u64>,
    /// Its packet's identity on the links.
    pub packet: Option<u64>,
    /// When the agent read its receipt.
    pub receipt_ms: Option<u64>,
}

/// What an agent hands to its guard in a slot.
pub(super) struct Emitted {
    pub packet: Packet,
    /// The leak it carries, if any.
    pub leak: Option<usize>,
}

/// One agent.
pub(super) struct Agent {
    /// Its guard (relay index).
    pub guard: usize,
    /// Its mailbox on the guard.
    pub mailbox: MailboxId,
    pub schedule: Schedule,
    outbox: VecDeque<usize>,
    loops: PendingLoops,
    /// Leaks waiting for a receipt, keyed by their index (as text).
    pending: PendingLeaks,
    /// Loops sent and come back.
    pub loops_sent: u64,
    /// Come back.
    pub loops_back: u64,
}

impl Agent {
    pub(super) fn new(guard: usize, settings: &Settings, now_ms: u64, rng: &mut StdRng) -> Self {
        let capability: [u8; 32] = rng.random();
        Self {
            guard,
            mailbox: MailboxId::from_capability(&capability),
            schedule: Schedule::new(settings.agents, now_ms, rng),
            outbox: VecDeque::new(),
            loops: PendingLoops::default(),
            pending: HashMap::new(),
            loops_sent: 0,
            loops_back: 0,
        }
    }

    pub(super) fn queue(&mut self, leak: usize) {
        self.outbox.push_back(leak);
    }

    pub(super) fn waiting(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// Builds what `slot` carries at `now_ms` with the agent's own
    /// builders. `None` when no path could be built (the slot passes
    /// empty; the directory lacked keys).
    pub(super) fn build(
        &mut self,
        slot: Slot,
        leaks: &mut [AgentLeak],
        directory: &[Descriptor],
        settings: &Settings,
        now_ms: u64,
        rng: &mut StdRng,
    ) -> Option<Emitted> {
        let cx = Context {
            nodes: directory,
            guard: directory.get(self.guard)?.node,
            mailbox: self.mailbox,
            mean_delay_ms: settings.mean_delay_ms,
            hops: settings.hops,
            now_ms,
        };
        match slot {
            Slot::Drop => {
                let packet = build_drop(&cx, settings.policy_version, rng).ok()?;
                Some(Emitted { packet, leak: None })
            }
            Slot::Loop => {
                let (packet, keys, total_ms) =
                    build_loop(&cx, settings.policy_version, rng).ok()?;
                // Given up on well after its delays (as the agent).
                self.loops.push(now_ms + 2 * total_ms + 3_600_000, keys);
                self.loops_sent += 1;
                Some(Emitted { packet, leak: None })
            }
            Slot::Real => {
                let index = self.outbox.pop_front()?;
                let leak = leaks.get_mut(index)?;
                let (packet, keys, _) = build_leak(
                    &cx,
                    &LeakInput {
                        message_id: leak.message_id,
                        exit: directory.get(leak.exit)?.node,
                        recipient: &leak.recipient,
                        relationship: Relationship::Friend,
                        text: &leak.text,
                        policy_version: settings.policy_version,
                        stamp: Stamp { epoch: 0, nonce: 0 },
                        answer_to: None,
                    },
                    rng,
                )
                .ok()?;
                leak.emitted_ms = Some(now_ms);
                self.pending
                    .insert(index.to_string(), (leak.message_id, vec![keys]));
                Some(Emitted {
                    packet,
                    leak: Some(index),
                })
            }
        }
    }

    /// Opens what a poll brought back with the agent's own code: a loop
    /// of its own, or a leak's receipt (filler opens with no key).
    pub(super) fn open(&mut self, entries: &[Vec<u8>], leaks: &mut [AgentLeak], now_ms: u64) {
        for entry in entries {
            match open_entry(&self.pending, &mut self.loops, entry) {
                Opened::Loop => self.loops_back += 1,
                Opened::Receipt(id, _) => {
                    self.pending.remove(&id);
                    if let Some(leak) = id.parse::<usize>().ok().and_then(|i| leaks.get_mut(i)) {
                        leak.receipt_ms.get_or_insert(now_ms);
                    }
                }
                Opened::Nothing => {}
            }
        }
        self.loops.expire(now_ms);
    }
}

impl AgentLeak {
    pub(super) fn new(
        sender: usize,
        to: &str,
        text: &str,
        exit: usize,
        now_ms: u64,
        rng: &mut StdRng,
    ) -> Self {
        Self {
            sender,
            message_id: MessageId(rng.random()),
            recipient: Recipient::parse(to).expect("a valid recipient"),
            text: text.to_owned(),
            exit,
            handed_ms: now_ms,
            emitted_ms: None,
            packet: None,
            receipt_ms: None,
        }
    }
}
