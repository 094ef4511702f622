//! The anonymity measurement at a small scale (`leak_tests::anonymity` on
//! the virtual federation's always-on agents): what cover and email-scale
//! delays buy against each adversary, compared with the behaviour before
//! them (a leak emitted alone, 200 ms per hop), and that the agents' and
//! relays' cover works end to end (drops discarded, loops back, receipts
//! read).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;

use leak_tests::{
    anonymity::{Report, evaluate, trace_of},
    harness::{Settings, VirtualFederation},
};
use rand::{RngExt as _, SeedableRng as _, rngs::StdRng};

const MINUTE: u64 = 60_000;
const SENDERS: usize = 10;
const LEAKS: usize = 10;

/// What a run left: the report, and the cover's counters.
struct Run {
    report: Report,
    covers_discarded: u64,
    agent_loops: (u64, u64),
    relay_loops: (u64, u64),
    receipts: usize,
    /// Leaks emitted no earlier than they were handed over.
    in_order: bool,
    mailbox_full: u64,
    other_drops: u64,
}

/// `SENDERS` agents, 5 minutes of warm-up, a leak every 30 s from random
/// agents for 5 minutes, 25 minutes to drain (a receipt's round trip is
/// nine delays of a minute: its p99.9 is about 23 minutes).
fn run(settings: Settings) -> Run {
    let mut fed = VirtualFederation::new(Settings {
        relays: 6,
        exits: 2,
        record_links: true,
        ..settings
    });
    for _ in 0..SENDERS {
        fed.add_agent();
    }
    fed.run_for(5 * MINUTE);
    let from = fed.now_ms();
    let mut rng = StdRng::seed_from_u64(3);
    for i in 0..LEAKS {
        fed.run_for(MINUTE / 2);
        let agent = rng.random_range(0..SENDERS);
        fed.hand_off(agent, &format!("r{i}@example.org"), "It was me.");
    }
    let until = fed.now_ms() + 1;
    fed.run_for(25 * MINUTE);
    let trace = trace_of(&mut fed, from, until);
    let leaks: Vec<_> = (0..LEAKS).map(|i| fed.agent_leak(i).clone()).collect();
    Run {
        report: evaluate(&trace),
        covers_discarded: fed.covers_discarded(),
        agent_loops: (0..SENDERS)
            .map(|a| fed.agent_loops(a))
            .fold((0, 0), |(s, b), (x, y)| (s + x, b + y)),
        relay_loops: fed.relay_loops(),
        receipts: leaks.iter().filter(|l| l.receipt_ms.is_some()).count(),
        in_order: leaks
            .iter()
            .all(|l| l.emitted_ms.is_some_and(|e| e >= l.handed_ms)),
        mailbox_full: fed.dropped("mailbox_full"),
        other_drops: ["held_full", "unknown_epoch", "replay", "delay_too_long"]
            .iter()
            .map(|r| fed.dropped(r))
            .sum(),
    }
}

/// The run with cover and the default delays, shared by the tests.
fn with_cover() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| {
        run(Settings {
            mean_delay_ms: 60_000,
            receipt_delay_ms: 60_000,
            relay_loop_interval_ms: 20_000,
            cover: true,
            seed: 21,
            ..Settings::default()
        })
    })
}

fn before() -> Run {
    run(Settings {
        mean_delay_ms: 200,
        cover: false,
        seed: 21,
        ..Settings::default()
    })
}

/// Before: the leak is the only packet its sender emits, and reaches the
/// exit within seconds: the edge observer (A1) and the global one (A2)
/// name the sender. With cover and minute-scale delays, every sender
/// emits all the time and A1's set is most of the senders.
#[test]
fn cover_and_delays_hide_the_sender_that_timing_alone_reveals() {
    let old = before().report;
    let new = &with_cover().report;
    assert_eq!(old.delivered, LEAKS, "{old:?}");
    assert_eq!(new.delivered, LEAKS, "{new:?}");
    assert!(old.a1.median < 1.5, "before, A1: {:?}", old.a1);
    assert!(old.a2.median < 1.5, "before, A2: {:?}", old.a2);
    let n = SENDERS as f64;
    assert!(new.a1.median > 0.7 * n, "with cover, A1: {:?}", new.a1);
    assert!(new.a2.median > 0.5 * n, "with cover, A2: {:?}", new.a2);
    assert!(new.a4.median > 2.0, "with cover, A4: {:?}", new.a4);
    assert!(
        new.epsilon < old.epsilon,
        "{} vs {}",
        new.epsilon,
        old.epsilon
    );
    // Minutes, not seconds, and a sender's traffic all day.
    assert!(new.latency_p50_ms > MINUTE as f64);
    assert!(old.latency_p50_ms < 10_000.0);
    assert!(
        new.bytes_per_sender_day > 20e6,
        "{}",
        new.bytes_per_sender_day
    );
}

/// Drops reach an exit and are discarded there; agents' and relays' loops
/// come back to their mailboxes; the leaks' receipts are read.
#[test]
fn cover_goes_round_and_receipts_come_home() {
    let run = with_cover();
    assert!(run.covers_discarded > 50, "{}", run.covers_discarded);
    let (sent, back) = run.agent_loops;
    // A loop is an echo: nine delays of a minute (four hops out, the exit's
    // receipt hold, four back) and a poll, so the loops of the run's last
    // ten minutes or so (of 35) are not back when it ends.
    assert!(
        sent > 100 && back as f64 > 0.4 * sent as f64,
        "{back} of {sent}"
    );
    // A relay's loop takes three delays of a minute: those of the run's
    // last few minutes are still out.
    let (sent, back) = run.relay_loops;
    assert!(
        sent > 100 && back as f64 > 0.8 * sent as f64,
        "{back} of {sent}"
    );
    assert!(run.in_order);
    // An answer carries one reply: with a poll per 20 s against a loop per
    // 30 s, a mailbox's backlog sometimes grows, but a guard keeps up to 64
    // replies per mailbox (with 8, about 3 % of deposits were lost, receipts
    // among them): every receipt comes home, no deposit is refused.
    assert_eq!(run.receipts, LEAKS);
    assert_eq!(run.mailbox_full, 0);
    assert_eq!(run.other_drops, 0);
}
