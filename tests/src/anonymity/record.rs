//! A [`Trace`] from a virtual federation's run.

use std::collections::HashMap;

use super::{LeakRecord, Model, Trace};
use crate::harness::VirtualFederation;

/// What `fed` recorded (it must run with `record_links`), for the
/// adversaries; the leaks handed over within `[from_ms, until_ms)` are
/// the measured ones. The link and deposit records move into the trace.
pub fn trace_of(fed: &mut VirtualFederation, from_ms: u64, until_ms: u64) -> Trace {
    let emails: HashMap<_, u64> = fed
        .deliveries()
        .iter()
        .map(|d| (d.message_id, d.at_ms))
        .collect();
    let leaks = fed
        .agent_leaks()
        .iter()
        .map(|l| LeakRecord {
            sender: l.sender,
            handed_ms: l.handed_ms,
            emitted_ms: l.emitted_ms,
            packet: l.packet,
            exit: l.exit,
            email_ms: emails.get(&l.message_id).copied(),
        })
        .collect();
    let polls = fed.polls_between(from_ms, until_ms);
    let guards = (0..fed.agent_count()).map(|a| fed.guard_of(a)).collect();
    let s = fed.settings();
    let senders = fed.agent_count().max(1) as f64;
    let window = until_ms.saturating_sub(from_ms).max(1) as f64;
    let handed = fed.agent_leaks().len().max(1) as f64;
    // Without cover a sender's machine emits its leaks and nothing else,
    // and every packet's receipt comes back: the adversary knows that
    // rate (one sender's share of the leaks) instead of the cover's.
    let (send_interval_ms, loop_share) = if s.cover {
        (s.agents.send_interval_ms as f64, s.agents.loop_share)
    } else {
        (window * senders / handed, 1.0)
    };
    let model = Model {
        mean_delay_ms: f64::from(s.mean_delay_ms),
        hops: s.hops,
        link_ms: s.link_ms,
        send_interval_ms,
        loop_share,
        relay_loop_interval_ms: s.relay_loop_interval_ms as f64,
        receipt_hold: s.receipt_delay_ms > 0,
    };
    let start_ms = s.start_ms;
    let first_exit = s.relays;
    let (links, deposits) = fed.take_records();
    Trace {
        senders: fed.agent_count(),
        relays: fed.relay_count(),
        first_exit,
        guards,
        model,
        links,
        deposits,
        leaks,
        polls,
        start_ms,
        end_ms: fed.now_ms(),
        measured_from_ms: from_ms,
        measured_until_ms: until_ms,
    }
}
