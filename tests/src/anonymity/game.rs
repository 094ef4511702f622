//! Loopix's ε (Piotrowska et al. 2017, §4.3, equation 3) against the
//! global passive adversary, played on the trace as the paper defines it.
//!
//! The game: two challenge senders S₀ and S₁ each send a payload message;
//! the adversary is told which of their messages are payload, so each
//! payload message carries its sender's label and every other message
//! (other senders' traffic, S₀'s and S₁'s cover, the relays' loops) is
//! unlabelled. Label probabilities propagate through every mix as pools
//! (their Theorem 1); at the final mix the adversary reads p₀ and p₁, the
//! probabilities that the observed output carries S₀'s or S₁'s label, and
//! ε = |ln(p₀/p₁)|. "This is a conservative approximation": what it
//! measures is how well the network mixes two messages sent at about the
//! same time, not how well the senders' cover hides who sent anything.
//!
//! On the trace, for each measured delivered leak L (true sender S₀, its
//! packet P₀, its email at T from exit X):
//!
//! - K = min(16, N − 1) challengers S₁, drawn uniformly among the other
//!   senders that emitted a packet of a leak's shape (an RNG seeded with
//!   L's index, so a run stays deterministic); a sender that emitted
//!   none has no challenge message and cannot play;
//! - S₁'s challenge message P₁ is the packet it emitted nearest in time to
//!   P₀'s emission that has a leak's forward shape: a drop (or a leak)
//!   that goes to its guard and ends at an exit, never in a mailbox;
//! - P₀ and every P₁ are labels of their own, propagated by
//!   [`pool::propagate`] exactly as A2 propagates senders, and p₀, p₁ are
//!   the labels' masses in X's pool at T (where A2 reads the email);
//! - each pair's advantage is |ln(p₀/p₁)|, infinite when one of the
//!   masses is zero (the adversary told the two apart outright: S₁'s
//!   packet was emitted after the email, or none of its mass had reached a
//!   pool feeding X yet).
//!
//! A run is summarised as differential privacy states a bound
//! ([`epsilon_delta`]): δ, the share of (leak, challenger) pairs told
//! apart outright, and ε, the mean advantage over the others. A plain
//! mean over all pairs would be dominated by the few infinite ones (with
//! masses floored at 1e-300, 9 of 6,864 pairs made 0.9 of a mean of 1.03
//! at N = 50 before the layered topology).
//!
//! A label matters only from its emission to the last email that reads
//! it, so labels share a small dense table: each gets a component for
//! that interval, and the component is cleared and reused afterwards.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap, HashMap, HashSet},
};

use rand::{SeedableRng as _, rngs::StdRng, seq::index};

use super::{
    Trace,
    pool::{self, Seen, Vector},
};
use crate::harness::Endpoint;

/// Challengers per leak (fewer when there are fewer other senders).
pub const CHALLENGERS: usize = 16;

/// Masses below this count as this (a ruled-out message is a large,
/// finite advantage).
const FLOOR: f64 = 1e-300;

/// One leak's round of the game: its packet and its challengers' packets.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Round {
    leak: usize,
    p0: u64,
    p1: Vec<u64>,
}

/// Per sender, the packets it emitted that have a leak's forward shape:
/// (emission time, packet), in time order.
fn leak_shaped(trace: &Trace) -> Vec<Vec<(u64, u64)>> {
    let deposited: HashSet<u64> = trace.deposits.iter().map(|d| d.packet).collect();
    // Each packet's last hop; the first hop of a sender's packet is its
    // guard by construction (the agent hands everything to it).
    let mut last_to: HashMap<u64, usize> = HashMap::new();
    let mut emitted: Vec<(u64, usize, u64)> = Vec::new();
    for l in &trace.links {
        let Endpoint::Relay(to) = l.to else { continue };
        if let Endpoint::Sender(s) = l.from
            && trace.guards.get(s) == Some(&to)
        {
            emitted.push((l.at_ms, s, l.packet));
        }
        last_to.insert(l.packet, to);
    }
    let mut shaped = vec![Vec::new(); trace.senders];
    for (at, s, packet) in emitted {
        let at_exit = last_to.get(&packet).is_some_and(|&r| r >= trace.first_exit);
        if at_exit
            && !deposited.contains(&packet)
            && let Some(list) = shaped.get_mut(s)
        {
            list.push((at, packet));
        }
    }
    shaped
}

/// The packet in `list` (time order) emitted nearest to `at_ms` (the
/// earlier one on a tie).
fn nearest(list: &[(u64, u64)], at_ms: u64) -> Option<u64> {
    let i = list.partition_point(|&(t, _)| t < at_ms);
    let after = list.get(i);
    let before = i.checked_sub(1).and_then(|j| list.get(j));
    match (before, after) {
        (Some(b), Some(a)) if at_ms - b.0 <= a.0 - at_ms => Some(b.1),
        (_, Some(a)) => Some(a.1),
        (Some(b), None) => Some(b.1),
        (None, None) => None,
    }
}

/// The rounds for `targets` (delivered leaks with a packet).
fn rounds(trace: &Trace, targets: &[usize]) -> Vec<Round> {
    let shaped = leak_shaped(trace);
    let mut out = Vec::new();
    for &leak in targets {
        let Some(l) = trace.leaks.get(leak) else {
            continue;
        };
        let (Some(p0), Some(at), Some(_)) = (l.packet, l.emitted_ms, l.email_ms) else {
            continue;
        };
        let eligible: Vec<usize> = (0..trace.senders)
            .filter(|&s| s != l.sender && !shaped[s].is_empty())
            .collect();
        let k = CHALLENGERS.min(eligible.len());
        let mut rng = StdRng::seed_from_u64(leak as u64);
        let p1 = index::sample(&mut rng, eligible.len(), k)
            .into_iter()
            .filter_map(|i| nearest(&shaped[eligible[i]], at))
            .collect::<Vec<u64>>();
        if !p1.is_empty() {
            out.push(Round { leak, p0, p1 });
        }
    }
    out
}

/// Each label's component, and when each component is retired: a label
/// lives from its packet's emission to just after the last email that
/// reads it; one emitted after every such email never reaches a reading
/// and gets none (its mass is zero).
fn components(trace: &Trace, rounds: &[Round]) -> (HashMap<u64, usize>, Vec<(u64, usize)>, usize) {
    let emitted: HashMap<u64, u64> = trace
        .links
        .iter()
        .filter(|l| matches!(l.from, Endpoint::Sender(_)))
        .map(|l| (l.packet, l.at_ms))
        .collect();
    // Per label: (emission, last reading).
    let mut live: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for r in rounds {
        let Some(t) = trace.leaks[r.leak].email_ms else {
            continue;
        };
        for &p in std::iter::once(&r.p0).chain(&r.p1) {
            if let Some(&e) = emitted.get(&p) {
                let entry = live.entry(p).or_insert((e, t));
                entry.1 = entry.1.max(t);
            }
        }
    }
    let mut by_start: Vec<(u64, u64, u64)> = live
        .into_iter()
        .filter(|(_, (e, t))| e <= t)
        .map(|(p, (e, t))| (e, t + 1, p))
        .collect();
    by_start.sort_unstable();
    let mut slot_of = HashMap::new();
    let mut retire = Vec::new();
    let mut busy: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
    let mut free: Vec<usize> = Vec::new();
    let mut width = 0;
    for (start, end, packet) in by_start {
        // A component retired at `end` is cleared before anything else at
        // that millisecond, so a label emitted then may take it.
        while let Some(&Reverse((e, c))) = busy.peek() {
            if e > start {
                break;
            }
            busy.pop();
            free.push(c);
        }
        let c = free.pop().unwrap_or_else(|| {
            width += 1;
            width - 1
        });
        slot_of.insert(packet, c);
        busy.push(Reverse((end, c)));
        retire.push((end, c));
    }
    retire.sort_unstable();
    (slot_of, retire, width)
}

/// One leak's round of the game, played: |ln(p₀/p₁)| against each
/// challenger, infinite where the adversary told the two apart outright
/// (one of the masses is zero: that message had not reached, or had
/// already left, every pool that fed the exit).
#[derive(Debug, Clone, PartialEq)]
pub struct Played {
    /// The leak (index into `trace.leaks`).
    pub leak: usize,
    /// Per challenger.
    pub advantages: Vec<f64>,
}

impl Played {
    /// ε_L: the mean advantage over the challengers, a pair told apart
    /// outright counted as 2·|ln 1e-300| ≈ 1381 (large, finite).
    pub fn floored_mean(&self) -> f64 {
        let floor = FLOOR.ln().abs();
        let n = self.advantages.len().max(1) as f64;
        self.advantages
            .iter()
            .map(|a| a.min(2.0 * floor))
            .sum::<f64>()
            / n
    }
}

/// ε and δ over every pair of a run, as differential privacy states a
/// bound: δ the share of pairs the adversary told apart outright, ε the
/// mean advantage |ln(p₀/p₁)| over the others.
pub fn epsilon_delta(played: &[Played]) -> (f64, f64) {
    let all: Vec<f64> = played
        .iter()
        .flat_map(|p| p.advantages.iter().copied())
        .collect();
    if all.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let finite: Vec<f64> = all.iter().copied().filter(|a| a.is_finite()).collect();
    let delta = 1.0 - finite.len() as f64 / all.len() as f64;
    let eps = if finite.is_empty() {
        f64::INFINITY
    } else {
        finite.iter().sum::<f64>() / finite.len() as f64
    };
    (eps, delta)
}

/// Plays Loopix's game for each of the `targets` (indices into
/// `trace.leaks`, delivered ones) against the global passive adversary.
/// Leaks without a packet or without a challenger are left out.
pub fn play(trace: &Trace, targets: &[usize]) -> Vec<Played> {
    let rounds = rounds(trace, targets);
    let (slot_of, retire, width) = components(trace, &rounds);
    let by_leak: HashMap<usize, &Round> = rounds.iter().map(|r| (r.leak, r)).collect();
    let readers: Vec<usize> = rounds.iter().map(|r| r.leak).collect();
    let mut out = Vec::new();
    pool::propagate(
        trace,
        width,
        None,
        &readers,
        |_, packet| {
            slot_of
                .get(&packet)
                .map_or(Vector::Nobody, |&c| Vector::One(c))
        },
        &retire,
        |leak, seen| {
            let (Seen::Pool(pool), Some(round)) = (seen, by_leak.get(&leak)) else {
                return;
            };
            let mass = |p: &u64| slot_of.get(p).map_or(0.0, |&c| pool.mass(c));
            let m0 = mass(&round.p0);
            let advantages = round
                .p1
                .iter()
                .map(|p| {
                    let m1 = mass(p);
                    if m0 > 0.0 && m1 > 0.0 {
                        (m0.ln() - m1.ln()).abs()
                    } else if m0 == m1 {
                        0.0
                    } else {
                        f64::INFINITY
                    }
                })
                .collect();
            out.push(Played { leak, advantages });
        },
    );
    out
}

/// Loopix's ε for each of the `targets`: (leak index, ε_L), ε_L the
/// floored mean over its challengers ([`Played::floored_mean`]).
pub fn epsilon(trace: &Trace, targets: &[usize]) -> Vec<(usize, f64)> {
    play(trace, targets)
        .iter()
        .map(|p| (p.leak, p.floored_mean()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        anonymity::{LeakRecord, Model, epsilon_sender},
        harness::{DepositSeen, Transmission},
    };

    fn link(at_ms: u64, from: Endpoint, to: usize, packet: u64) -> Transmission {
        Transmission {
            at_ms,
            from,
            to: Endpoint::Relay(to),
            packet,
        }
    }

    /// A trace of `senders` senders and `relays` relays (the last one the
    /// exit), every sender's guard relay 0, one leak by sender 0 (packet 1,
    /// emitted at 0) whose email leaves the exit at `email_ms`.
    fn trace(senders: usize, relays: usize, links: Vec<Transmission>, email_ms: u64) -> Trace {
        Trace {
            senders,
            relays,
            first_exit: relays - 1,
            guards: vec![0; senders],
            model: Model {
                mean_delay_ms: 100.0,
                hops: 2,
                link_ms: 1,
                send_interval_ms: 1_000.0,
                loop_share: 0.5,
                relay_loop_interval_ms: 0.0,
                receipt_hold: false,
            },
            links,
            deposits: Vec::new(),
            leaks: vec![LeakRecord {
                sender: 0,
                handed_ms: 0,
                emitted_ms: Some(0),
                packet: Some(1),
                exit: relays - 1,
                email_ms: Some(email_ms),
            }],
            polls: vec![0; senders],
            start_ms: 0,
            end_ms: 1_000,
            measured_from_ms: 0,
            measured_until_ms: 1_000,
        }
    }

    fn only(e: Vec<(usize, f64)>) -> f64 {
        assert_eq!(e.len(), 1, "{e:?}");
        e[0].1
    }

    #[test]
    fn two_challenge_packets_through_one_relay_are_indistinguishable() {
        let t = trace(
            2,
            2,
            vec![
                link(0, Endpoint::Sender(0), 0, 1),
                link(0, Endpoint::Sender(1), 0, 2),
                link(50, Endpoint::Relay(0), 1, 1),
                link(60, Endpoint::Relay(0), 1, 2),
            ],
            200,
        );
        assert_eq!(
            rounds(&t, &[0]),
            vec![Round {
                leak: 0,
                p0: 1,
                p1: vec![2]
            }]
        );
        let e = only(epsilon(&t, &[0]));
        assert!(e.abs() < 1e-12, "{e}");
    }

    #[test]
    fn a_challenge_packet_that_never_shared_a_pool_is_a_large_advantage() {
        // Sender 1's packet enters after the email left.
        let late = trace(
            2,
            2,
            vec![
                link(0, Endpoint::Sender(0), 0, 1),
                link(50, Endpoint::Relay(0), 1, 1),
                link(300, Endpoint::Sender(1), 0, 2),
                link(350, Endpoint::Relay(0), 1, 2),
            ],
            200,
        );
        assert!(only(epsilon(&late, &[0])) > 600.0);
        // Sender 1's packet goes through another relay to another exit at
        // the same time (relay 1: its guard, relay 2: an exit too).
        let mut apart = trace(
            2,
            4,
            vec![
                link(0, Endpoint::Sender(0), 0, 1),
                link(0, Endpoint::Sender(1), 1, 2),
                link(50, Endpoint::Relay(0), 3, 1),
                link(50, Endpoint::Relay(1), 2, 2),
            ],
            200,
        );
        apart.guards = vec![0, 1];
        apart.first_exit = 2;
        assert!(only(epsilon(&apart, &[0])) > 600.0);
    }

    #[test]
    fn challenge_packets_are_leak_shaped_and_nearest_in_time() {
        // Sender 1: a loop at 10 (deposited), drops at 40 and 500; the
        // leak left at 0, so its challenge is the drop at 40.
        let mut t = trace(
            2,
            2,
            vec![
                link(0, Endpoint::Sender(0), 0, 1),
                link(10, Endpoint::Sender(1), 0, 2),
                link(40, Endpoint::Sender(1), 0, 3),
                link(50, Endpoint::Relay(0), 1, 1),
                link(60, Endpoint::Relay(0), 1, 2),
                link(61, Endpoint::Relay(1), 0, 2),
                link(70, Endpoint::Relay(0), 1, 3),
                link(500, Endpoint::Sender(1), 0, 4),
                link(550, Endpoint::Relay(0), 1, 4),
            ],
            200,
        );
        t.deposits.push(DepositSeen {
            at_ms: 62,
            relay: 0,
            owner: Some(1),
            packet: 2,
        });
        let shaped = leak_shaped(&t);
        assert_eq!(shaped[1], vec![(40, 3), (500, 4)]);
        assert_eq!(rounds(&t, &[0])[0].p1, vec![3]);
        assert_eq!(nearest(&[(10, 1), (30, 2)], 20), Some(1));
        assert_eq!(nearest(&[(10, 1), (29, 2)], 20), Some(2));
        assert_eq!(nearest(&[], 20), None);
    }

    #[test]
    fn labels_agree_with_the_sender_posterior_when_each_sender_sends_once() {
        // Four senders, one packet each, through two mixes (relays 0, 1)
        // to the exit (relay 2), with a relay's loop in between: each
        // label's mass is its sender's share of the posterior, and with
        // every other sender a challenger the two ε are the same number.
        let mut t = trace(
            4,
            3,
            vec![
                link(0, Endpoint::Sender(0), 0, 1),
                link(5, Endpoint::Sender(1), 0, 2),
                link(8, Endpoint::Sender(2), 1, 3),
                link(20, Endpoint::Sender(3), 1, 4),
                link(30, Endpoint::Relay(0), 1, 1),
                link(40, Endpoint::Relay(1), 2, 9),
                link(45, Endpoint::Relay(0), 2, 2),
                link(60, Endpoint::Relay(1), 2, 1),
                link(70, Endpoint::Relay(1), 2, 3),
                link(90, Endpoint::Relay(1), 2, 4),
            ],
            120,
        );
        t.guards = vec![0, 0, 1, 1];
        t.model.relay_loop_interval_ms = 50.0;
        let posterior = pool::global(&t, None, &[0]);
        let sender = epsilon_sender(&posterior[0].1, 0);
        let game = only(epsilon(&t, &[0]));
        assert!(sender > 0.1, "{sender}");
        assert!((game - sender).abs() < 1e-9, "{game} vs {sender}");
    }
}

#[cfg(test)]
mod summary_tests {
    use super::*;

    #[test]
    fn delta_counts_the_pairs_told_apart_and_epsilon_averages_the_rest() {
        let played = vec![
            Played {
                leak: 0,
                advantages: vec![0.1, 0.3, f64::INFINITY, 0.2],
            },
            Played {
                leak: 1,
                advantages: vec![0.0, 0.4, 0.4, 0.2],
            },
        ];
        let (eps, delta) = epsilon_delta(&played);
        assert!((delta - 1.0 / 8.0).abs() < 1e-12, "{delta}");
        assert!((eps - 1.6 / 7.0).abs() < 1e-12, "{eps}");
        // The floored mean counts the pair told apart as about 1381.
        assert!(played[0].floored_mean() > 300.0);
        assert!((played[1].floored_mean() - 0.25).abs() < 1e-12);
        assert!(epsilon_delta(&[]).0.is_nan());
    }
}
