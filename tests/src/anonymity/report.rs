//! One run's numbers: every adversary's 2^H over the measured leaks, the
//! two ε against A2 (Loopix's game, Piotrowska et al. 2017 §4.3, and the
//! stricter sender-level one; see the module above), latency and
//! bandwidth.

use std::collections::BTreeMap;

use leak_protocol::sphinx::{PACKET_LEN, PAYLOAD_LEN};

use super::{Trace, edge::Edges, entropy_bits, epsilon_sender, game, pool};

/// A poll on `/leak/mailbox/2`: version byte and capability, one
/// fixed-size answer slot, the acknowledgement and the confirmation.
pub const POLL_BYTES: usize = 1 + 32 + PAYLOAD_LEN + 1 + 1;

/// How many guards' clients A3 is computed for (one propagation each).
pub const A3_GUARDS: usize = 4;

/// The distribution of 2^H over leaks.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Summary {
    /// Median.
    pub median: f64,
    /// 10th percentile (the worse-protected leaks).
    pub p10: f64,
    /// Leaks measured.
    pub leaks: usize,
}

impl Summary {
    fn of(mut sets: Vec<f64>) -> Self {
        sets.retain(|x| x.is_finite());
        sets.sort_by(f64::total_cmp);
        Self {
            median: quantile(&sets, 0.5),
            p10: quantile(&sets, 0.1),
            leaks: sets.len(),
        }
    }
}

/// One run, measured.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    /// Senders.
    pub senders: usize,
    /// 2^H against A1 (edge + recipient).
    pub a1: Summary,
    /// Against A2 (global passive).
    pub a2: Summary,
    /// Against A3 (global + guard + exit).
    pub a3: Summary,
    /// Against A4 (guard + recipient).
    pub a4: Summary,
    /// Loopix's ε against A2 (§4.3, equation 3: the leak's packet against
    /// challengers' packets sent at about the same time, the adversary
    /// told which messages are payload): the mean advantage |ln(p₀/p₁)|
    /// over the (leak, challenger) pairs not told apart outright
    /// ([`game::epsilon_delta`]).
    pub epsilon: f64,
    /// The share of pairs told apart outright (one mass zero): the δ of an
    /// (ε, δ) statement.
    pub epsilon_delta: f64,
    /// Sender-level: the posterior over all senders, cover included, mean
    /// |ln| against every other sender — stricter than the paper's game;
    /// mean over leaks.
    pub epsilon_sender: f64,
    /// Leaks handed in the window, and delivered.
    pub handed: usize,
    /// Delivered.
    pub delivered: usize,
    /// Hand-off to email, median (ms).
    pub latency_p50_ms: f64,
    /// 99th percentile.
    pub latency_p99_ms: f64,
    /// Bytes a sender's machine sends and receives per day (packets and
    /// polls).
    pub bytes_per_sender_day: f64,
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        f64::NAN
    } else {
        xs.iter().sum::<f64>() / xs.len() as f64
    }
}

/// Measures `trace`: the leaks handed within its measured window that
/// were delivered.
pub fn evaluate(trace: &Trace) -> Report {
    let window = trace.measured_from_ms..trace.measured_until_ms;
    let measured: Vec<usize> = trace
        .leaks
        .iter()
        .enumerate()
        .filter(|(_, l)| window.contains(&l.handed_ms))
        .map(|(i, _)| i)
        .collect();
    let delivered: Vec<usize> = measured
        .iter()
        .copied()
        .filter(|&i| trace.leaks[i].email_ms.is_some())
        .collect();
    let set = |p: &[f64]| entropy_bits(p).exp2();

    let edges = Edges::new(trace);
    let a1 = delivered
        .iter()
        .filter_map(|&i| edges.a1(&trace.leaks[i]))
        .map(|p| set(&p))
        .collect();
    let a4 = delivered
        .iter()
        .filter_map(|&i| edges.a4(&trace.leaks[i]))
        .map(|p| set(&p))
        .collect();

    let global = pool::global(trace, None, &delivered);
    let a2 = global.iter().map(|(_, p)| set(p)).collect();
    let eps_sender: Vec<f64> = global
        .iter()
        .map(|(i, p)| epsilon_sender(p, trace.leaks[*i].sender))
        .collect();
    let (epsilon, epsilon_delta) = game::epsilon_delta(&game::play(trace, &delivered));

    // A3: per guard, its clients' leaks (the guards with the most leaks).
    let mut by_guard: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for &i in &delivered {
        if let Some(&g) = trace.guards.get(trace.leaks[i].sender) {
            by_guard.entry(g).or_default().push(i);
        }
    }
    let mut guards: Vec<(usize, Vec<usize>)> = by_guard.into_iter().collect();
    guards.sort_by_key(|(g, leaks)| (std::cmp::Reverse(leaks.len()), *g));
    let a3 = guards
        .iter()
        .take(A3_GUARDS)
        .flat_map(|(g, leaks)| pool::global(trace, Some(*g), leaks))
        .map(|(_, p)| set(&p))
        .collect();

    let mut latency: Vec<f64> = delivered
        .iter()
        .filter_map(|&i| {
            let l = &trace.leaks[i];
            l.email_ms.map(|t| t.saturating_sub(l.handed_ms) as f64)
        })
        .collect();
    latency.sort_by(f64::total_cmp);
    let window_ms = trace
        .measured_until_ms
        .saturating_sub(trace.measured_from_ms)
        .max(1) as f64;
    let bytes = trace.emitted_in_window() as f64 * PACKET_LEN as f64
        + trace.polls.iter().sum::<u64>() as f64 * POLL_BYTES as f64;
    Report {
        senders: trace.senders,
        a1: Summary::of(a1),
        a2: Summary::of(a2),
        a3: Summary::of(a3),
        a4: Summary::of(a4),
        epsilon,
        epsilon_delta,
        epsilon_sender: mean(&eps_sender),
        handed: measured.len(),
        delivered: delivered.len(),
        latency_p50_ms: quantile(&latency, 0.5),
        latency_p99_ms: quantile(&latency, 0.99),
        bytes_per_sender_day: bytes / trace.senders.max(1) as f64 / window_ms * 86_400_000.0,
    }
}
