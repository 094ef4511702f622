//! The virtual-time federation: relays, exits and senders in one process,
//! driven by one manual clock, with no sockets and no sleeps.
//!
//! Every relay runs the node's own decisions on the node's own state:
//! [`RelayCore`](leak_node::relay::RelayCore) through
//! [`process_batch`](leak_node::relay::process_batch), its
//! [`KeyRing`](leak_node::epoch::KeyRing) rotated on the UTC schedule, its
//! [`Store`](leak_node::store::Store) (redb, in memory) for replay tags and
//! mailboxes, its [`HeldQueue`](leak_node::held::HeldQueue) for mixing
//! delays. Senders choose exits and routes with `leak-client`'s path rules,
//! build real packets and reply blocks with `leak-protocol`, and retransmit
//! by `leak-client`'s [`Retransmit`](leak_client::retransmit::Retransmit)
//! policy. Exits open real leaks, deliver each message id once to a
//! scripted mail server (which can be down for a while), retry by the
//! exit's backoff, and answer with real receipts along the reply blocks.
//!
//! What replaces the network: a packet sent at `t` arrives at `t + link
//! latency`, in order; every transmission is recorded
//! ([`Transmission`]), which is what an observer of the links would see.
//!
//! Time only moves in [`VirtualFederation::run_until`]: events are taken in
//! time order (ties in the order they were scheduled), so a run is
//! deterministic for a given seed, and a day of epochs takes milliseconds.

mod agent;
mod exit;
mod fleet;
mod relay;
mod sender;
mod settings;

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    sync::Arc,
};

use leak_node::clock::{Clock as _, ManualClock};
use leak_protocol::{MessageId, NodeId, Outcome, Packet, directory::Descriptor};
use rand::{SeedableRng as _, rngs::StdRng};

pub use self::{
    agent::AgentLeak,
    exit::{Delivery, MailOutage},
    relay::VirtualRelay,
    sender::{SenderId, SentLeak},
    settings::{DepositSeen, Endpoint, Loss, Settings, Transmission},
};

/// An event in the queue: ordered by time, then by the order scheduled.
#[derive(Debug)]
struct Scheduled {
    at_ms: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at_ms, self.seq) == (other.at_ms, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at_ms, self.seq).cmp(&(other.at_ms, other.seq))
    }
}

#[derive(Debug)]
enum Event {
    /// A packet reaches a relay.
    Arrive {
        to: usize,
        from: Endpoint,
        packet: Box<Packet>,
        id: u64,
    },
    /// An agent's send slot.
    AgentSend { agent: usize },
    /// An agent's poll.
    AgentPoll { agent: usize },
    /// A relay sends one of its own loops.
    RelayLoop { relay: usize },
    /// A relay releases what is due.
    Release { relay: usize },
    /// A relay's periodic work (keys, descriptor, expiry).
    Maintain { relay: usize },
    /// An exit tries the deliveries that are due.
    Deliver { relay: usize },
    /// A sender looks in its mailboxes.
    Poll { sender: usize, leak: usize },
    /// A sender sends a leak again (if no receipt came).
    Resend {
        sender: usize,
        leak: usize,
        attempt: u32,
    },
    /// A sender gives up waiting.
    GiveUp { sender: usize, leak: usize },
}

/// A federation in virtual time.
pub struct VirtualFederation {
    settings: Settings,
    clock: Arc<ManualClock>,
    rng: StdRng,
    relays: Vec<VirtualRelay>,
    senders: Vec<sender::VirtualSender>,
    events: BinaryHeap<Reverse<Scheduled>>,
    next_seq: u64,
    /// Every relay's node id, by index (they never change).
    node_ids: Vec<NodeId>,
    links: Vec<Transmission>,
    losses: Vec<Loss>,
    lost: u64,
    /// The last packet identity handed out.
    last_packet: u64,
    agents: Vec<agent::Agent>,
    agent_leaks: Vec<AgentLeak>,
    /// Whose mailbox each agent mailbox id is.
    mailbox_owner: HashMap<[u8; 32], usize>,
    /// Deposits seen (when `record_links`).
    deposits: Vec<DepositSeen>,
    /// Agents' polls: (time, agent) (when `record_links`).
    polls: Vec<(u64, usize)>,
    /// The directory the agents build paths with (relay order).
    agent_directory: Vec<Descriptor>,
    _dir: tempfile::TempDir,
}

impl VirtualFederation {
    /// Starts `settings.relays` relays and `settings.exits` exits at
    /// `settings.start_ms`, each with its keys and descriptor.
    pub fn new(settings: Settings) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let clock = Arc::new(ManualClock::new(settings.start_ms));
        let mut rng = StdRng::seed_from_u64(settings.seed);
        let total = settings.relays + settings.exits;
        let relays = (0..total)
            .map(|i| {
                VirtualRelay::new(
                    i,
                    i >= settings.relays,
                    &settings,
                    &dir.path().join(format!("relay{i}")),
                    clock.now_ms(),
                    &mut rng,
                )
            })
            .collect::<Vec<VirtualRelay>>();
        let node_ids = relays.iter().map(VirtualRelay::node_id).collect();
        let agent_directory = relays.iter().map(|r| r.descriptor().clone()).collect();
        let mut fed = Self {
            settings,
            clock,
            rng,
            relays,
            senders: Vec::new(),
            events: BinaryHeap::new(),
            next_seq: 0,
            node_ids,
            links: Vec::new(),
            losses: Vec::new(),
            lost: 0,
            last_packet: 0,
            agents: Vec::new(),
            agent_leaks: Vec::new(),
            mailbox_owner: HashMap::new(),
            deposits: Vec::new(),
            polls: Vec::new(),
            agent_directory,
            _dir: dir,
        };
        let tick = fed.maintenance_tick_ms();
        for relay in 0..total {
            let at = fed.now_ms() + tick;
            fed.schedule(at, Event::Maintain { relay });
            if let Some(at) = fed.relays[relay].next_loop_ms() {
                fed.schedule(at, Event::RelayLoop { relay });
            }
        }
        fed
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The virtual time (Unix ms).
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The directory every sender sees: each relay's newest descriptor.
    pub fn directory(&self) -> Vec<Descriptor> {
        self.relays.iter().map(|r| r.descriptor().clone()).collect()
    }

    /// A relay, by index (exits come after the plain relays).
    pub fn relay(&self, index: usize) -> &VirtualRelay {
        &self.relays[index]
    }

    /// The index of the relay with node id `node`.
    pub fn relay_index(&self, node: &NodeId) -> Option<usize> {
        self.node_ids.iter().position(|n| n == node)
    }

    /// How many relays (exits included).
    pub fn relay_count(&self) -> usize {
        self.relays.len()
    }

    /// Packets dropped for `reason` (a metric label) at every relay.
    pub fn dropped(&self, reason: &str) -> u64 {
        self.relays.iter().map(|r| r.dropped(reason)).sum()
    }

    /// Every email the exits delivered, in order.
    pub fn deliveries(&self) -> Vec<&Delivery> {
        let mut all: Vec<&Delivery> = self
            .relays
            .iter()
            .filter_map(|r| r.exit())
            .flat_map(|e| e.deliveries())
            .collect();
        all.sort_by_key(|d| d.at_ms);
        all
    }

    /// Makes every exit's mail server refuse with a 4xx from `from_ms` to
    /// `until_ms`.
    pub fn mail_outage(&mut self, outage: MailOutage) {
        for relay in &mut self.relays {
            if let Some(exit) = relay.exit_mut() {
                exit.add_outage(outage);
            }
        }
    }

    /// Loses the packets of matching links for a while.
    pub fn lose(&mut self, loss: Loss) {
        self.losses.push(loss);
    }

    /// Packets lost on the links so far.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Every link transmission so far (when `record_links`).
    pub fn transmissions(&self) -> &[Transmission] {
        &self.links
    }

    /// A new sender.
    pub fn add_sender(&mut self) -> SenderId {
        let id = self.senders.len();
        self.senders.push(sender::VirtualSender::default());
        SenderId(id)
    }

    /// A leak a sender sent, with how it went.
    pub fn leak(&self, sender: SenderId, leak: usize) -> &SentLeak {
        self.senders[sender.0].leak(leak)
    }

    /// Sends a leak from `sender` now: a fresh message id, an exit chosen
    /// once, a route per attempt. Returns its index among the sender's
    /// leaks.
    pub fn send(&mut self, sender: SenderId, to: &str, text: &str) -> usize {
        let directory = self.directory();
        let now = self.now_ms();
        let leak = self.senders[sender.0].start(to, text, &directory, now, &mut self.rng);
        self.attempt(sender.0, leak, 1);
        leak
    }

    /// Delivers `packet` to relay `to` as if `from` had sent it now.
    pub fn inject(&mut self, from: Endpoint, to: usize, packet: Packet) {
        self.transmit(from, to, packet, 0);
    }

    /// Runs every event due up to `until_ms`, then sets the clock there.
    pub fn run_until(&mut self, until_ms: u64) {
        while self
            .events
            .peek()
            .is_some_and(|Reverse(next)| next.at_ms <= until_ms)
        {
            let Some(Reverse(next)) = self.events.pop() else {
                break;
            };
            self.clock.set_ms(next.at_ms);
            self.handle(next.event);
        }
        self.clock.set_ms(until_ms);
    }

    /// Runs for `ms` of virtual time.
    pub fn run_for(&mut self, ms: u64) {
        let until = self.now_ms() + ms;
        self.run_until(until);
    }

    /// Runs until every leak sent so far has ended (a receipt or given
    /// up), or `limit_ms` of virtual time passed. Returns whether all ended.
    pub fn run_until_settled(&mut self, limit_ms: u64) -> bool {
        let limit = self.now_ms() + limit_ms;
        while self.now_ms() < limit {
            if self.senders.iter().all(sender::VirtualSender::settled) {
                return true;
            }
            let step = (self.now_ms() + 1_000).min(limit);
            self.run_until(step);
        }
        self.senders.iter().all(sender::VirtualSender::settled)
    }

    fn maintenance_tick_ms(&self) -> u64 {
        // As the node: a quarter period, between 250 ms and 30 s.
        (self.settings.epoch_secs * 1000 / 4).clamp(250, 30_000)
    }

    fn schedule(&mut self, at_ms: u64, event: Event) {
        self.next_seq += 1;
        self.events.push(Reverse(Scheduled {
            at_ms,
            seq: self.next_seq,
            event,
        }));
    }

    /// Sends `packet` from `from` to relay `to` now; `id` is its
    /// identity (0: a fresh packet, given a new one). Returns the identity.
    fn transmit(&mut self, from: Endpoint, to: usize, packet: Packet, id: u64) -> u64 {
        let id = if id == 0 {
            self.last_packet += 1;
            self.last_packet
        } else {
            id
        };
        let now = self.now_ms();
        if self.settings.record_links {
            self.links.push(Transmission {
                at_ms: now,
                from,
                to: Endpoint::Relay(to),
                packet: id,
            });
        }
        if self.losses.iter().any(|l| l.matches(now, from, to)) {
            self.lost += 1;
            return id;
        }
        let at = now + self.settings.link_ms;
        self.schedule(
            at,
            Event::Arrive {
                to,
                from,
                packet: Box::new(packet),
                id,
            },
        );
        id
    }

    fn handle(&mut self, event: Event) {
        let now = self.now_ms();
        match event {
            Event::Arrive {
                to,
                from,
                packet,
                id,
            } => {
                let out =
                    self.relays[to].receive(now, from, *packet, id, &self.node_ids, &mut self.rng);
                if let Some(due) = out.wake_at {
                    self.schedule(due, Event::Release { relay: to });
                }
                if let Some(at) = out.deliver_at {
                    self.schedule(at, Event::Deliver { relay: to });
                }
                if self.settings.record_links {
                    for mailbox in out.deposited {
                        self.deposits.push(DepositSeen {
                            at_ms: now,
                            relay: to,
                            owner: self.mailbox_owner.get(&mailbox).copied(),
                            packet: id,
                        });
                    }
                }
                self.send_all(to, out.send);
            }
            Event::AgentSend { agent } => self.agent_send(agent),
            Event::AgentPoll { agent } => self.agent_poll(agent),
            Event::RelayLoop { relay } => self.relay_loop(relay),
            Event::Release { relay } => {
                let out = self.relays[relay].release(now);
                self.send_all(relay, out);
            }
            Event::Maintain { relay } => {
                self.relays[relay].maintain(now, &mut self.rng);
                self.agent_directory[relay] = self.relays[relay].descriptor().clone();
                let at = now + self.maintenance_tick_ms();
                self.schedule(at, Event::Maintain { relay });
            }
            Event::Deliver { relay } => {
                let (out, held_until) = self.relays[relay].deliver(now, &mut self.rng);
                if let Some(next) = out.wake_at {
                    self.schedule(next, Event::Deliver { relay });
                }
                if let Some(due) = held_until {
                    self.schedule(due, Event::Release { relay });
                }
                let send = out.send.into_iter().map(|(n, p)| (n, p, 0)).collect();
                self.send_all(relay, send);
            }
            Event::Poll { sender, leak } => self.poll(sender, leak),
            Event::Resend {
                sender,
                leak,
                attempt,
            } => {
                if !self.senders[sender].leak(leak).ended() {
                    self.attempt(sender, leak, attempt);
                }
            }
            Event::GiveUp { sender, leak } => self.senders[sender].give_up(leak, now),
        }
    }

    fn send_all(&mut self, from: usize, packets: Vec<(NodeId, Packet, u64)>) {
        for (node, packet, id) in packets {
            match self.relay_index(&node) {
                Some(to) => {
                    self.transmit(Endpoint::Relay(from), to, packet, id);
                }
                None => self.relays[from].count_drop("bad_next_hop"),
            }
        }
    }

    /// Builds and sends attempt `attempt` of a leak, and schedules what
    /// follows it: polls of its mailbox, and a resend or giving up.
    fn attempt(&mut self, sender: usize, leak: usize, attempt: u32) {
        let directory = self.directory();
        let now = self.now_ms();
        let settings = self.settings.clone();
        let built =
            self.senders[sender].build_attempt(leak, &directory, &settings, now, &mut self.rng);
        let Some(built) = built else {
            return;
        };
        if let Some(entry) = self.relay_index(&built.entry) {
            self.transmit(Endpoint::Sender(sender), entry, built.packet, 0);
        }
        // No receipt can be in the mailbox before the path's delays passed.
        self.schedule(now + built.path_delay_ms, Event::Poll { sender, leak });
        match settings
            .retransmit
            .after(attempt, now, built.path_delay_ms, &mut self.rng)
        {
            leak_client::retransmit::Next::Resend { attempt, at_ms } => {
                self.schedule(
                    at_ms,
                    Event::Resend {
                        sender,
                        leak,
                        attempt,
                    },
                );
            }
            leak_client::retransmit::Next::GiveUp { at_ms } => {
                self.schedule(at_ms, Event::GiveUp { sender, leak });
            }
        }
    }

    fn poll(&mut self, sender: usize, leak: usize) {
        if self.senders[sender].leak(leak).ended() {
            return;
        }
        let now = self.now_ms();
        let mailboxes = self.senders[sender].mailboxes(leak);
        for (entry, mailbox, keys_index) in mailboxes {
            let Some(index) = self.relay_index(&entry) else {
                continue;
            };
            let replies = self.relays[index].fetch_mailbox(&mailbox, now);
            for reply in replies {
                self.senders[sender].open_reply(leak, keys_index, &reply, now);
            }
        }
        if !self.senders[sender].leak(leak).ended() {
            let at = now + self.settings.poll_ms;
            self.schedule(at, Event::Poll { sender, leak });
        }
    }

    /// The outcome of a leak, if its receipt came.
    pub fn receipt(&self, sender: SenderId, leak: usize) -> Option<&Outcome> {
        self.senders[sender.0]
            .leak(leak)
            .receipt
            .as_ref()
            .map(|(o, _)| o)
    }

    /// Message ids of every leak sent (for matching deliveries).
    pub fn message_id(&self, sender: SenderId, leak: usize) -> MessageId {
        self.senders[sender.0].leak(leak).message_id
    }
}
