//! This node's loops, driven by the clock: the [`RelayLoops`] state machine
//! of [`crate::relay::cover`] with a timer, the directory and the links.
//!
//! Each loop leaves by the same link queue as every forwarded packet
//! ([`send_to`]), and returns as a mailbox deposit, which the pipeline
//! hands to [`loop_returned`] before anything is stored. Every
//! `cover.ratio_window_secs`, the share of the window's settled loops that
//! came back is checked, and a warning logged when it is low.

use std::{sync::Arc, time::Duration};

use leak_protocol::sphinx::MailboxId;
use tokio::sync::watch;

use super::{links::send_to, shared::Shared};
use crate::{
    identity::peer_id_of,
    relay::{LoopCounters, RelayLoops, choose_loop_path, cover::LoopPathError},
};

/// The fewest loops settled in a window before its return ratio means
/// anything.
const MIN_SETTLED: u64 = 10;

/// The longest the task sleeps: it looks at the (injected) clock again at
/// least this often, so a clock moved by a test is noticed.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// What a deposit was to this node's loops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LoopDeposit {
    /// Not a loop of this node's: an ordinary reply, to store.
    NotOurs,
    /// One of this node's loops, back (counted; nothing to store).
    Returned,
    /// For one of this node's loops, but it does not open with its keys: a
    /// hop altered it. Not a client's reply either (only this node knows
    /// the id): drop it; the loop stays awaited and will count as lost.
    Tampered,
}

/// A reply deposited for `mailbox` at `now_ms`, checked against this node's
/// loops.
pub(super) fn loop_deposit(
    shared: &Shared,
    mailbox: &MailboxId,
    reply: &[u8],
    now_ms: u64,
) -> LoopDeposit {
    let mut loops = shared.loops.lock().unwrap_or_else(|e| e.into_inner());
    if !loops.is_pending(mailbox) {
        return LoopDeposit::NotOurs;
    }
    match loops.on_deposit(mailbox, reply, now_ms) {
        Some(_) => {
            shared.metrics.loops_returned.inc();
            shared.metrics.loops_pending.set(loops.pending() as i64);
            LoopDeposit::Returned
        }
        None => LoopDeposit::Tampered,
    }
}

/// Sends this node's loops when due, counts the lost ones, and checks the
/// return ratio, until shutdown.
pub(super) async fn run_loops(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let me = shared.identity.node_id();
    let window_ms = shared.config.cover.ratio_window_secs.saturating_mul(1000);
    let mut window_start = shared.clock.now_ms();
    let mut window_counters = LoopCounters::default();
    let mut path_problem: Option<LoopPathError> = None;
    loop {
        let now = shared.clock.now_ms();
        let wake = {
            let loops = shared.loops.lock().unwrap_or_else(|e| e.into_inner());
            [
                loops.next_due_ms(),
                loops.next_deadline_ms().map(|d| d + 1),
                Some(window_start + window_ms),
            ]
            .into_iter()
            .flatten()
            .min()
        };
        let sleep = wake.map_or(MAX_SLEEP, |at| {
            Duration::from_millis(at.saturating_sub(now)).min(MAX_SLEEP)
        });
        tokio::select! {
            _ = shutdown.changed() => return,
            () = tokio::time::sleep(sleep) => {}
        }
        let now = shared.clock.now_ms();
        let mut to_send = Vec::new();
        {
            let mut loops = shared.loops.lock().unwrap_or_else(|e| e.into_inner());
            let before = loops.counters();
            loops.expire(now);
            let mut rng = rand::rng();
            while loops.take_due(now, &mut rng) {
                let path = {
                    let directory = shared.directory.read().unwrap_or_else(|e| e.into_inner());
                    choose_loop_path(directory.descriptors(), &me, loops.config(), now, &mut rng)
                };
                match path {
                    Ok(path) => {
                        if path_problem.take().is_some() {
                            tracing::info!("this node's loops are leaving again");
                        }
                        match loops.build(now, &path, &mut rng) {
                            Ok(built) => to_send.push(built),
                            Err(e) => tracing::warn!(error = %e, "cannot build a loop"),
                        }
                    }
                    Err(problem) => {
                        // Said once per change: a node alone, or starting
                        // before it knows two relays, tries every loop.
                        if path_problem != Some(problem) {
                            tracing::info!(reason = %problem, "no loop sent");
                            path_problem = Some(problem);
                        }
                    }
                }
            }
            let after = loops.counters();
            let delta = after.since(&before);
            shared.metrics.loops_sent.inc_by(delta.sent);
            shared.metrics.loops_lost.inc_by(delta.lost);
            shared.metrics.loops_pending.set(loops.pending() as i64);
        }
        for built in to_send {
            match peer_id_of(&built.first_hop) {
                Some(peer) => send_to(&shared, peer, built.packet),
                None => shared.drop_packet(crate::relay::DropReason::BadNextHop),
            }
        }
        if now >= window_start + window_ms {
            let counters = shared
                .loops
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .counters();
            let window = counters.since(&window_counters);
            if let Some(ratio) = window.return_ratio()
                && window.returned + window.lost >= MIN_SETTLED
                && ratio < shared.config.cover.min_return_ratio
            {
                tracing::warn!(
                    returned = window.returned,
                    lost = window.lost,
                    ratio,
                    "few of this node's loops came back: a relay or a link on their paths drops packets, or this node is isolated by an (n-1) attack"
                );
            }
            window_counters = counters;
            window_start = now;
        }
    }
}

/// The pure loop machine for `shared`'s configuration at `now_ms`.
pub(super) fn new_loops(config: &crate::Config, now_ms: u64) -> RelayLoops {
    let max_hop = leak_protocol::federation::MAX_HOP_DELAY_MS.min(config.limits.max_delay_ms);
    RelayLoops::new(config.cover.loops(max_hop), now_ms, &mut rand::rng())
}
