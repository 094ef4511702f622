//! What a virtual federation is made of and how it is observed: its
//! [`Settings`], the [`Endpoint`]s of its links, the [`Transmission`]s an
//! observer sees and the [`Loss`]es a test imposes.

use leak_client::{cover::CoverConfig, retransmit::Retransmit};

/// Who is at either end of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    /// A sender's machine.
    Sender(usize),
    /// A relay (or exit), by index.
    Relay(usize),
}

/// One packet on one link, as a global observer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmission {
    /// When it left (Unix ms).
    pub at_ms: u64,
    /// From.
    pub from: Endpoint,
    /// To.
    pub to: Endpoint,
    /// The packet's identity in the simulation: the same on every hop of
    /// one packet's path (a relay's output keeps its input's), fresh for
    /// a packet a relay makes (a receipt, its own loop). An observer of
    /// the links does not see it; the anonymity measurement uses it only
    /// for a node it assumes compromised (which maps its inputs to its
    /// outputs).
    pub packet: u64,
}

/// A reply deposited in a mailbox, as the mailbox's relay sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DepositSeen {
    /// When (Unix ms).
    pub at_ms: u64,
    /// The relay holding the mailbox.
    pub relay: usize,
    /// Whose mailbox: a sender's (its guard knows its clients' mailboxes),
    /// or `None` (a relay's own loop, or a mailbox nobody polls).
    pub owner: Option<usize>,
    /// The packet's identity.
    pub packet: u64,
}

/// Packets on the matching links are lost (sent, never received) until
/// `until_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loss {
    /// Only packets from here (any sender when `None`).
    pub from: Option<Endpoint>,
    /// Only packets to this relay (any when `None`).
    pub to: Option<usize>,
    /// Until (Unix ms, excluded).
    pub until_ms: u64,
}

impl Loss {
    pub(super) fn matches(&self, now_ms: u64, from: Endpoint, to: usize) -> bool {
        now_ms < self.until_ms
            && self.from.is_none_or(|f| f == from)
            && self.to.is_none_or(|t| t == to)
    }
}

/// How the virtual federation is set up.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Relays that are not exits.
    pub relays: usize,
    /// Exits (also relays).
    pub exits: usize,
    /// Seconds per key epoch.
    pub epoch_secs: u64,
    /// Future epochs whose keys are published.
    pub keys_ahead: u32,
    /// One-way latency of every link (ms).
    pub link_ms: u64,
    /// Hops of each forward path (the exit included).
    pub hops: usize,
    /// The senders' mean mixing delay per hop (ms).
    pub mean_delay_ms: u32,
    /// The senders' retransmission policy.
    pub retransmit: Retransmit,
    /// How often a waiting sender looks in its mailbox (ms).
    pub poll_ms: u64,
    /// Seed of every random choice.
    pub seed: u64,
    /// The virtual clock's start (Unix ms).
    pub start_ms: u64,
    /// Record every link transmission.
    pub record_links: bool,
    /// The policy version the exits enforce (and the senders hold).
    pub policy_version: u32,
    /// The always-on agents' cover schedule (agents only; the one-shot
    /// senders ignore it).
    pub agents: CoverConfig,
    /// Whether agents emit cover: when false, an agent emits a leak as
    /// soon as it is handed one and nothing else (the behaviour before the
    /// agent, kept as the measurement's baseline).
    pub cover: bool,
    /// Mean interval between a relay's own loops (ms, Poisson; 0: none).
    pub relay_loop_interval_ms: u64,
    /// Mean extra time an exit holds a receipt before sending it (ms,
    /// exponential; 0: sent at once).
    pub receipt_delay_ms: u32,
}

impl Default for Settings {
    fn default() -> Self {
        let client = leak_client::config::Config::default();
        let node = leak_node::Config::defaults(std::path::PathBuf::new());
        Self {
            relays: 4,
            exits: 1,
            epoch_secs: node.epochs.period_secs,
            keys_ahead: node.epochs.keys_ahead,
            link_ms: 5,
            hops: client.send.hops,
            mean_delay_ms: client.send.mixing_delay_ms,
            retransmit: Retransmit::from_config(&client.send),
            poll_ms: 1_000,
            seed: 1,
            // 2026-12-01T00:00:00Z.
            start_ms: 1_796_083_200_000,
            record_links: false,
            policy_version: leak_protocol::policy::Policy::builtin().version(),
            agents: CoverConfig::default(),
            cover: true,
            relay_loop_interval_ms: 0,
            receipt_delay_ms: 0,
        }
    }
}
