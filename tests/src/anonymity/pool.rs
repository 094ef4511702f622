//! The global passive adversary (A2) and A2 with the target's guard and
//! the exit (A3): probability vectors over senders propagated through
//! every relay as a pool.
//!
//! Every packet carries a vector over the senders plus one "nobody"
//! component (a relay's own loop). A packet a sender's machine emits
//! carries certainty about that sender. Each relay is a Poisson mix: with
//! exponential delays, every packet inside is equally likely to be the
//! next to leave, however long it has waited (Piotrowska et al. 2017,
//! Theorem 1), so the adversary keeps, per relay, the sum S of the vectors
//! of the packets inside and their expected count k:
//!
//! - a packet arrives: S += v, k += 1;
//! - a packet leaves: it is one of the k pooled packets with probability
//!   (k/μ) / (k/μ + λ_M), or one of the relay's own fresh loops (rate
//!   λ_M, Theorem 2); it carries S/k for the former, "nobody" for the
//!   latter, and S and k lose what it took;
//! - packets also vanish unseen (a drop opened by an exit, a reply
//!   deposited in a mailbox, an email): the adversary knows each relay's
//!   share q of such departures from its counts, so between events S and
//!   k decay by e^(−q·Δt/μ), which leaves the average S/k unchanged (an
//!   unseen departure is a uniformly random pooled packet).
//!
//! The email is an output of its exit's pool at its time (A2). In A3 the
//! target's guard maps each packet it sends to the one it received (its
//! outputs carry their inputs' exact vectors) and the exit knows which
//! arriving packet was the leak (the email carries that vector).
//!
//! The pool's expected count in place of the posterior over counts is
//! this model's one approximation beyond Loopix's (which assumes no unseen
//! departures); the adversary is also not told which packets are cover.
//!
//! The propagation ([`propagate`]) does not care what the components
//! stand for: A2 and A3 give every sender one, Loopix's challenge game
//! ([`super::game`]) gives one to each labelled challenge packet and
//! leaves everything else unlabelled ("nobody").

use std::collections::{HashMap, HashSet, VecDeque};

use super::{Trace, normalise};
use crate::harness::Endpoint;

/// A packet's vector: certain of one component (a sender, or a label),
/// "nobody", or a mixture (`width + 1` components, the last "nobody").
#[derive(Debug, Clone)]
pub(super) enum Vector {
    One(usize),
    Nobody,
    Mixed(Vec<f64>),
}

impl Vector {
    /// Forgets `component` (a retired label): its mass counts as nobody's
    /// from now on, which no reading looks at.
    fn clear(&mut self, component: usize) {
        match self {
            Vector::One(c) if *c == component => *self = Vector::Nobody,
            Vector::Mixed(m) => {
                if let Some(x) = m.get_mut(component) {
                    *x = 0.0;
                }
            }
            Vector::One(_) | Vector::Nobody => {}
        }
    }
}

/// One relay's pool, with a lazy scale: the true sum is `scale × sum`.
pub(super) struct Pool {
    sum: Vec<f64>,
    scale: f64,
    count: f64,
    last_ms: u64,
    /// Per pooled packet and ms, the rate of unseen departures.
    drain_per_ms: f64,
    /// Its own fresh loops per ms.
    loops_per_ms: f64,
}

impl Pool {
    fn decay_to(&mut self, now_ms: u64) {
        let dt = now_ms.saturating_sub(self.last_ms) as f64;
        self.last_ms = self.last_ms.max(now_ms);
        if dt > 0.0 && self.drain_per_ms > 0.0 {
            let f = (-self.drain_per_ms * dt).exp();
            self.scale *= f;
            self.count *= f;
        }
        if self.scale < 1e-150 {
            let s = self.scale;
            self.sum.iter_mut().for_each(|x| *x *= s);
            self.scale = 1.0;
        }
    }

    fn add(&mut self, v: &Vector) {
        let inv = 1.0 / self.scale;
        match v {
            Vector::One(s) => self.sum[*s] += inv,
            Vector::Nobody => {
                let last = self.sum.len() - 1;
                self.sum[last] += inv;
            }
            Vector::Mixed(m) => {
                for (x, y) in self.sum.iter_mut().zip(m) {
                    *x += y * inv;
                }
            }
        }
        self.count += 1.0;
    }

    /// What an output carries, and the pool without it.
    fn take(&mut self, mean_delay_ms: f64, spare: Option<Vec<f64>>) -> Vector {
        if self.count <= 1e-9 {
            return Vector::Nobody;
        }
        let pooled = self.count / mean_delay_ms;
        let frac = pooled / (pooled + self.loops_per_ms);
        let share = (frac / self.count).min(1.0);
        let taken_mass = self.count * share;
        let factor = self.scale * share;
        let mut v = spare.unwrap_or_default();
        v.clear();
        v.extend(self.sum.iter().map(|x| x * factor));
        if let Some(last) = v.last_mut() {
            *last += (1.0 - taken_mass).max(0.0);
        }
        self.scale *= 1.0 - share;
        self.count -= taken_mass;
        if self.scale <= 0.0 {
            self.sum.iter_mut().for_each(|x| *x = 0.0);
            self.scale = 1.0;
            self.count = 0.0;
        }
        Vector::Mixed(v)
    }

    /// The pool's mass of `component` (a packet leaving now carries it
    /// in proportion).
    pub(super) fn mass(&self, component: usize) -> f64 {
        self.sum.get(component).map_or(0.0, |x| x * self.scale)
    }

    fn clear(&mut self, component: usize) {
        if let Some(x) = self.sum.get_mut(component) {
            *x = 0.0;
        }
    }

    fn posterior(&self, senders: usize) -> Vec<f64> {
        let mut p: Vec<f64> = self.sum[..senders].to_vec();
        normalise(&mut p);
        p
    }
}

fn posterior_of(v: &Vector, senders: usize) -> Vec<f64> {
    let mut p = vec![0.0; senders];
    match v {
        Vector::One(s) => p[*s] = 1.0,
        Vector::Nobody => {}
        Vector::Mixed(m) => p.copy_from_slice(&m[..senders]),
    }
    normalise(&mut p);
    p
}

/// The posteriors over senders of the `targets` (indices into
/// `trace.leaks`, delivered ones) for the global passive adversary, and
/// with `compromised` = Some(guard) for A3 (the targets should then be
/// that guard's clients' leaks). Returns (leak index, posterior).
pub fn global(
    trace: &Trace,
    compromised: Option<usize>,
    targets: &[usize],
) -> Vec<(usize, Vec<f64>)> {
    let n = trace.senders;
    let mut out: Vec<(usize, Vec<f64>)> = Vec::new();
    propagate(
        trace,
        n,
        compromised,
        targets,
        |sender, _| Vector::One(sender),
        &[],
        |leak, seen| {
            out.push((
                leak,
                match seen {
                    Seen::Pool(pool) => pool.posterior(n),
                    Seen::Packet(v) => posterior_of(v, n),
                },
            ));
        },
    );
    out
}

/// Where a target's email is read: its exit's pool at the email's time
/// (A2), or the leak's own packet as it reached the exit (A3, whose exit
/// knows which arriving packet was the leak).
pub(super) enum Seen<'a> {
    Pool(&'a Pool),
    Packet(&'a Vector),
}

/// Propagates vectors of `width` components (plus "nobody") through
/// every relay of `trace` as pools, in time order, and hands each
/// target's email to `seen` as it happens.
///
/// What a component means is the caller's: `emitted(sender, packet)` is
/// the vector a packet carries when a sender's machine emits it (a sender
/// for A2's posterior, a challenge label for Loopix's game). `retire`
/// lists (time, component), in time order: from then on the component is
/// zero everywhere, so that the caller can reuse it for another label
/// (it is cleared before anything else that happens at that
/// millisecond).
pub(super) fn propagate(
    trace: &Trace,
    width: usize,
    compromised: Option<usize>,
    targets: &[usize],
    mut emitted: impl FnMut(usize, u64) -> Vector,
    retire: &[(u64, usize)],
    mut seen: impl FnMut(usize, Seen<'_>),
) {
    let m = trace.model;
    let mu = m.mean_delay_ms.max(1.0);
    let duration = (trace.end_ms.saturating_sub(trace.start_ms)).max(1) as f64;
    let loops_per_ms = if m.relay_loop_interval_ms > 0.0 {
        1.0 / m.relay_loop_interval_ms
    } else {
        0.0
    };
    // Each relay's share of unseen departures, from what anyone watching
    // the links counts: arrivals and departures, and the fresh loops the
    // relay's configured rate adds.
    let mut ins = vec![0f64; trace.relays];
    let mut outs = vec![0f64; trace.relays];
    for l in &trace.links {
        if let Endpoint::Relay(r) = l.to {
            ins[r] += 1.0;
        }
        if let Endpoint::Relay(r) = l.from {
            outs[r] += 1.0;
        }
    }
    let mut pools: Vec<Pool> = (0..trace.relays)
        .map(|r| {
            let fresh = loops_per_ms * duration;
            let unseen = (ins[r] + fresh - outs[r]).max(0.0);
            let q = if ins[r] > 0.0 { unseen / ins[r] } else { 0.0 };
            Pool {
                sum: vec![0.0; width + 1],
                scale: 1.0,
                count: 0.0,
                last_ms: trace.start_ms,
                drain_per_ms: q.min(1.0) / mu,
                loops_per_ms,
            }
        })
        .collect();

    // A3: what the compromised guard knows of the packets inside it, and
    // which packets end there (deposits).
    let mut inside: HashMap<u64, Vector> = HashMap::new();
    let ends_at_guard: HashSet<u64> = match compromised {
        Some(g) => trace
            .deposits
            .iter()
            .filter(|d| d.relay == g)
            .map(|d| d.packet)
            .collect(),
        None => HashSet::new(),
    };
    // A3: the targets' packets, by id, and the exit they go to.
    let by_packet: HashMap<u64, usize> = targets
        .iter()
        .filter_map(|&i| trace.leaks.get(i).and_then(|l| l.packet).map(|p| (p, i)))
        .collect();
    let mut emails: Vec<(u64, usize)> = targets
        .iter()
        .filter_map(|&i| trace.leaks.get(i).and_then(|l| l.email_ms).map(|t| (t, i)))
        .collect();
    emails.sort_unstable();
    let mut emails = emails.into_iter().peekable();
    let mut retire = retire.iter().peekable();

    let mut arrivals: VecDeque<(u64, usize, u64, Vector)> = VecDeque::new();
    let mut spare: Vec<Vec<f64>> = Vec::new();
    let mut links = trace.links.iter().peekable();
    loop {
        let next_retire = retire.peek().map(|r| r.0);
        let next_link = links.peek().map(|l| l.at_ms);
        let next_arrival = arrivals.front().map(|a| a.0);
        let next_email = emails.peek().map(|e| e.0);
        let Some(now) = [next_retire, next_link, next_arrival, next_email]
            .into_iter()
            .flatten()
            .min()
        else {
            break;
        };
        if next_retire == Some(now) {
            let Some(&(_, component)) = retire.next() else {
                break;
            };
            for pool in &mut pools {
                pool.clear(component);
            }
            let in_flight = arrivals.iter_mut().map(|a| &mut a.3);
            for v in in_flight.chain(inside.values_mut()) {
                v.clear(component);
            }
            continue;
        }
        if next_arrival == Some(now) {
            let Some((_, to, packet, v)) = arrivals.pop_front() else {
                break;
            };
            if compromised.is_some()
                && let Some(&leak) = by_packet.get(&packet)
                && trace.leaks[leak].exit == to
            {
                seen(leak, Seen::Packet(&v));
            }
            if compromised == Some(to) {
                if !ends_at_guard.contains(&packet) {
                    inside.insert(packet, v);
                }
                continue;
            }
            let pool = &mut pools[to];
            pool.decay_to(now);
            pool.add(&v);
            if let Vector::Mixed(buf) = v {
                spare.push(buf);
            }
            continue;
        }
        // The email leaves the exit before anything the exit sends at the
        // same millisecond (its receipt).
        if next_email == Some(now) {
            let Some((_, leak)) = emails.next() else {
                break;
            };
            if compromised.is_none() {
                let exit = trace.leaks[leak].exit;
                let pool = &mut pools[exit];
                pool.decay_to(now);
                seen(leak, Seen::Pool(pool));
            }
            continue;
        }
        let Some(l) = links.next() else { break };
        let Endpoint::Relay(to) = l.to else { continue };
        let v = match l.from {
            Endpoint::Sender(s) => emitted(s, l.packet),
            Endpoint::Relay(r) if compromised == Some(r) => {
                // The guard knows what it received; what it did not
                // receive is its own.
                inside.remove(&l.packet).unwrap_or(Vector::Nobody)
            }
            Endpoint::Relay(r) => {
                let pool = &mut pools[r];
                pool.decay_to(now);
                pool.take(mu, spare.pop())
            }
        };
        arrivals.push_back((now + m.link_ms, to, l.packet, v));
    }
}
