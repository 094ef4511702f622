//! The federation's always-on agents and the relays' own loops: adding
//! agents, handing them leaks, their send slots and polls, and what the
//! anonymity measurement reads of them.

use leak_client::cover::Slot;

use super::{
    DepositSeen, Endpoint, Event, Transmission, VirtualFederation,
    agent::{Agent, AgentLeak},
};

/// What one `/leak/mailbox/2` answer carries.
const ANSWER_SLOTS: usize = 1;

impl VirtualFederation {
    /// A new always-on agent: a guard chosen once by the agent's rule
    /// (`Guard::choose`: an entry relay), a mailbox there, and its send and poll clocks
    /// started now. Agents are numbered apart from the one-shot senders
    /// ([`Endpoint::Sender`] carries the agent's number on its links).
    pub fn add_agent(&mut self) -> usize {
        let now = self.now_ms();
        let id = self.agents.len();
        // The agent's own rule (an entry relay that is not an exit).
        let chosen = leak_client::agent::guard::Guard::choose(
            &self.agent_directory[..self.settings.relays],
            None,
            now,
            &mut self.rng,
        )
        .and_then(|g| g.node_id());
        let guard = self.agent_directory[..self.settings.relays]
            .iter()
            .position(|d| Some(d.node) == chosen)
            .expect("the federation has relays with keys");
        let agent = Agent::new(guard, &self.settings, now, &mut self.rng);
        self.mailbox_owner.insert(agent.mailbox.0, id);
        let (send, poll) = (agent.schedule.next_send_ms(), agent.schedule.next_poll_ms());
        self.agents.push(agent);
        // Without cover the agent stands for the client before it: one
        // packet per leak, no polls counted (its receipt is not read).
        if self.settings.cover {
            self.schedule(send, Event::AgentSend { agent: id });
            self.schedule(poll, Event::AgentPoll { agent: id });
        }
        id
    }

    /// The agents.
    pub fn agent_count(&self) -> usize {
        self.agents.len()
    }

    /// An agent's guard (relay index).
    pub fn guard_of(&self, agent: usize) -> usize {
        self.agents[agent].guard
    }

    /// An agent's loops sent, and come back.
    pub fn agent_loops(&self, agent: usize) -> (u64, u64) {
        let a = &self.agents[agent];
        (a.loops_sent, a.loops_back)
    }

    /// Every relay's own loops sent, and come back.
    pub fn relay_loops(&self) -> (u64, u64) {
        self.relays
            .iter()
            .map(|r| r.loop_counters())
            .fold((0, 0), |(s, r), c| (s + c.sent, r + c.returned))
    }

    /// Drops opened and discarded by the exits (the relay core's "cover"
    /// drop reason).
    pub fn covers_discarded(&self) -> u64 {
        self.dropped("cover")
    }

    /// Hands a leak to `agent` now: its exit is the one responsible for
    /// its recipient, as the agent chooses it
    /// ([`leak_protocol::federation::exit_rank`]); it leaves in the
    /// agent's next loop slot (at once when agents emit no cover).
    /// Returns its index among the agents' leaks.
    pub fn hand_off(&mut self, agent: usize, to: &str, text: &str) -> usize {
        let now = self.now_ms();
        let first_exit = self.settings.relays;
        let exits = self.settings.exits.max(1);
        let recipient = leak_protocol::Recipient::parse(to).expect("a valid recipient");
        let hash = leak_protocol::policy::Policy::builtin().recipient_hash(&recipient);
        let exit = (first_exit..first_exit + exits)
            .max_by_key(|&i| {
                let node = self.agent_directory[i].node;
                (leak_protocol::federation::exit_rank(&hash, &node), node.0)
            })
            .unwrap_or(first_exit);
        let index = self.agent_leaks.len();
        self.agent_leaks
            .push(AgentLeak::new(agent, to, text, exit, now, &mut self.rng));
        self.agents[agent].queue(index);
        if !self.settings.cover {
            self.emit(agent, Slot::Real);
        }
        index
    }

    /// A leak handed to an agent.
    pub fn agent_leak(&self, index: usize) -> &AgentLeak {
        &self.agent_leaks[index]
    }

    pub(super) fn agent_send(&mut self, agent: usize) {
        let now = self.now_ms();
        let waiting = self.agents[agent].waiting();
        let slot = self.agents[agent]
            .schedule
            .take_send_slot(now, waiting, &mut self.rng);
        if let Some(slot) = slot {
            self.emit(agent, slot);
        }
        let next = self.agents[agent].schedule.next_send_ms();
        self.schedule(next, Event::AgentSend { agent });
    }

    fn emit(&mut self, agent: usize, slot: Slot) {
        let now = self.now_ms();
        let built = self.agents[agent].build(
            slot,
            &mut self.agent_leaks,
            &self.agent_directory,
            &self.settings,
            now,
            &mut self.rng,
        );
        let Some(built) = built else {
            return;
        };
        let guard = self.agents[agent].guard;
        let id = self.transmit(Endpoint::Sender(agent), guard, built.packet, 0);
        if let Some(leak) = built.leak {
            self.agent_leaks[leak].packet = Some(id);
        }
    }

    pub(super) fn agent_poll(&mut self, agent: usize) {
        let now = self.now_ms();
        if self.agents[agent].schedule.take_poll(now, &mut self.rng) {
            if self.settings.record_links {
                self.polls.push((now, agent));
            }
            let guard = self.agents[agent].guard;
            let mailbox = self.agents[agent].mailbox.0;
            let entries = self.relays[guard].fetch_mailbox_at_most(&mailbox, now, ANSWER_SLOTS);
            self.agents[agent].open(&entries, &mut self.agent_leaks, now);
        }
        let next = self.agents[agent].schedule.next_poll_ms();
        self.schedule(next, Event::AgentPoll { agent });
    }

    /// A relay's own loop (Loopix mix loop), by the node's own loop
    /// machine ([`leak_node::relay::RelayLoops`]).
    pub(super) fn relay_loop(&mut self, relay: usize) {
        let now = self.now_ms();
        if let Some((first, packet)) =
            self.relays[relay].take_loop(&self.agent_directory, now, &mut self.rng)
            && let Some(to) = self.relay_index(&first)
        {
            self.transmit(Endpoint::Relay(relay), to, packet, 0);
        }
        if let Some(next) = self.relays[relay].next_loop_ms() {
            self.schedule(next.max(now + 1), Event::RelayLoop { relay });
        }
    }

    /// Takes what the run recorded so far (needs `record_links`): every
    /// link transmission and every deposit into a mailbox, in time order.
    /// The federation records afresh from here.
    pub fn take_records(&mut self) -> (Vec<Transmission>, Vec<DepositSeen>) {
        (
            std::mem::take(&mut self.links),
            std::mem::take(&mut self.deposits),
        )
    }

    /// Every leak handed to an agent, in order.
    pub fn agent_leaks(&self) -> &[AgentLeak] {
        &self.agent_leaks
    }

    /// Each agent's polls within `[from_ms, until_ms)` (needs
    /// `record_links`).
    pub fn polls_between(&self, from_ms: u64, until_ms: u64) -> Vec<u64> {
        let mut polls = vec![0; self.agents.len()];
        for &(at, agent) in &self.polls {
            if (from_ms..until_ms).contains(&at) {
                polls[agent] += 1;
            }
        }
        polls
    }
}
