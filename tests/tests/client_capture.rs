//! What the sender's machine shows the network does not say whether it
//! sent a leak: the TCP segments a running `leak agent` emits, captured with
//! `tcpdump` on loopback, are compared between a period without a leak and
//! a period in which five leaks are handed to it and delivered. Segments per
//! second, sizes and gaps (each a two-sample Kolmogorov–Smirnov test) must
//! not tell the two apart; a control shows that the same tests do tell
//! apart the same agent at a different cover rate, so they could fail.
//!
//! Cover intervals are short here (150 ms, as in the other agent tests) so
//! that a period of 40 s holds hundreds of segments; the mechanism (a leak
//! takes a loop slot, polls run on their own clock, answers have one size)
//! does not depend on the rate. Needs `tcpdump`, `ss` and the right to
//! capture (root): `scripts/test.sh` installs and runs it so.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod client_common;

use std::{
    collections::HashSet,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use client_common::{AgentProcess, Federation, Sender, stderr, stdout};
use leak_tests::capture::{
    Capture, Segment, counts_per_bin, emitted, gaps, ks_two_sample, local_ports_of,
};

/// How long each compared period lasts.
const PERIOD: Duration = Duration::from_secs(40);
/// Below this p-value, two periods count as told apart.
const ALPHA: f64 = 0.001;

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The agent's connections over one period: its local ports, sampled every
/// 200 ms while `during` runs its steps (connections may be reopened).
fn watch(agent: &AgentProcess, mut during: impl FnMut(Duration)) -> (HashSet<u16>, f64, f64) {
    let pid = agent.pid().expect("the agent runs");
    let mut ports = HashSet::new();
    let from = now();
    let start = Instant::now();
    while start.elapsed() < PERIOD {
        ports.extend(local_ports_of(pid).unwrap());
        during(start.elapsed());
        std::thread::sleep(Duration::from_millis(200));
    }
    ports.extend(local_ports_of(pid).unwrap());
    (ports, from, now())
}

/// The p-values of the three tests comparing two periods' segments.
struct Comparison {
    counts: f64,
    sizes: f64,
    gaps: f64,
    n: (usize, usize),
    bytes: (u64, u64),
}

impl Comparison {
    fn of(
        a: &[Segment],
        (from_a, to_a): (f64, f64),
        b: &[Segment],
        (from_b, to_b): (f64, f64),
    ) -> Self {
        let sizes = |s: &[Segment]| s.iter().map(|x| f64::from(x.len)).collect::<Vec<_>>();
        let counts_a = counts_per_bin(a, from_a, to_a, 1.0);
        let counts_b = counts_per_bin(b, from_b, to_b, 1.0);
        Self {
            counts: ks_two_sample(&counts_a, &counts_b).unwrap().1,
            sizes: ks_two_sample(&sizes(a), &sizes(b)).unwrap().1,
            gaps: ks_two_sample(&gaps(a), &gaps(b)).unwrap().1,
            n: (a.len(), b.len()),
            bytes: (
                a.iter().map(|x| u64::from(x.len)).sum(),
                b.iter().map(|x| u64::from(x.len)).sum(),
            ),
        }
    }

    fn min_p(&self) -> f64 {
        self.counts.min(self.sizes).min(self.gaps)
    }
}

impl std::fmt::Display for Comparison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} vs {} segments ({} vs {} bytes); p(per-second counts) {:.4}, p(sizes) {:.4}, p(gaps) {:.4}",
            self.n.0, self.n.1, self.bytes.0, self.bytes.1, self.counts, self.sizes, self.gaps
        )
    }
}

#[test]
fn a_leak_does_not_change_what_the_senders_machine_emits() {
    let dir = tempfile::tempdir().unwrap();
    let fed = Federation::start(dir.path(), 4, true);
    let sender = Sender::fast(dir.path(), &fed);
    let mut agent = sender.start_agent();
    let capture = Capture::start().expect("tcpdump runs (scripts/test.sh installs it)");
    // Let the capture and the agent's connections settle.
    std::thread::sleep(Duration::from_secs(3));

    // Period A: idle.
    let (ports_a, from_a, to_a) = watch(&agent, |_| {});

    // Period B: five leaks handed over, one every 8 s.
    let mut handed = 0;
    let (ports_b, from_b, to_b) = watch(&agent, |elapsed| {
        if handed < 5 && elapsed >= Duration::from_secs(8 * handed) {
            let out = sender.run(&[
                "send",
                "--to",
                &format!("reader{handed}@example.com"),
                "--as",
                "coworker",
                "The minutes of the last meeting were changed afterwards.",
            ]);
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
            handed += 1;
        }
    });
    // The leaks went out and were delivered (so they crossed the agent's
    // connections during period B or just after).
    sender.wait_status(&["--json"], "five delivered", |s| {
        s.matches(r#""outcome":"delivered""#).count() == 5
    });

    // Period C (the control): the same agent restarted with cover twice as
    // frequent.
    agent.kill();
    sender.set_config_line("send_interval_ms = 150", "send_interval_ms = 75");
    let agent = sender.start_agent();
    std::thread::sleep(Duration::from_secs(3));
    let (ports_c, from_c, to_c) = watch(&agent, |_| {});
    let segments = capture.stop();

    let a = emitted(&segments, &ports_a, from_a, to_a);
    let b = emitted(&segments, &ports_b, from_b, to_b);
    let c = emitted(&segments, &ports_c, from_c, to_c);
    assert!(
        a.len() > 200 && b.len() > 200,
        "too few segments captured: {} and {} (is tcpdump allowed to capture?)",
        a.len(),
        b.len()
    );

    let with_leaks = Comparison::of(&a, (from_a, to_a), &b, (from_b, to_b));
    eprintln!("idle vs five leaks: {with_leaks}");
    let control = Comparison::of(&a, (from_a, to_a), &c, (from_c, to_c));
    eprintln!("idle vs twice the cover rate (control): {control}");

    assert!(
        with_leaks.min_p() > ALPHA,
        "a period with leaks is distinguishable from an idle one: {with_leaks}; {}",
        stdout(&sender.run(&["status"]))
    );
    assert!(
        control.min_p() < ALPHA,
        "the tests cannot even tell a doubled cover rate apart: {control}"
    );
}
