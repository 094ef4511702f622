//! The adversaries at the edge: A1 (every sender's link, plus the email's
//! time) and A4 (the target's guard, plus the email's time). See the
//! module above for their models.

use std::collections::HashMap;

use super::{LeakRecord, Trace, density::Erlang, normalise};
use crate::harness::Endpoint;

/// What the edge adversaries read from a trace, indexed once.
pub struct Edges<'a> {
    trace: &'a Trace,
    /// Every packet a sender's machine emitted: (time, sender), in time
    /// order.
    emissions: Vec<(u64, usize)>,
    /// Per guard: when each of its clients' packets left it, (time,
    /// sender), in time order.
    departures: HashMap<usize, Vec<(u64, usize)>>,
    /// Per sender: deposits into its mailbox, in time order.
    deposits: Vec<Vec<u64>>,
    forward: Erlang,
    after_guard: Erlang,
    receipt: Erlang,
}

impl<'a> Edges<'a> {
    /// Indexes `trace`.
    pub fn new(trace: &'a Trace) -> Self {
        let m = trace.model;
        let hops = u32::try_from(m.hops).unwrap_or(3).max(1);
        let link = m.link_ms as f64;
        let mut emissions = Vec::new();
        let mut owner: HashMap<u64, usize> = HashMap::new();
        let mut departures: HashMap<usize, Vec<(u64, usize)>> = HashMap::new();
        for l in &trace.links {
            match l.from {
                Endpoint::Sender(s) => {
                    emissions.push((l.at_ms, s));
                    owner.insert(l.packet, s);
                }
                Endpoint::Relay(r) => {
                    // The first time a client's packet leaves its guard.
                    if let Some(s) = owner.get(&l.packet).copied()
                        && trace.guards.get(s) == Some(&r)
                    {
                        departures.entry(r).or_default().push((l.at_ms, s));
                        owner.remove(&l.packet);
                    }
                }
            }
        }
        let mut deposits = vec![Vec::new(); trace.senders];
        for d in &trace.deposits {
            if let Some(s) = d.owner
                && let Some(list) = deposits.get_mut(s)
            {
                list.push(d.at_ms);
            }
        }
        Self {
            trace,
            emissions,
            departures,
            deposits,
            // Links: sender→guard→middle→exit (hops links).
            forward: Erlang::new(hops, m.mean_delay_ms, link * f64::from(hops)),
            after_guard: Erlang::new(hops - 1, m.mean_delay_ms, link * f64::from(hops - 1)),
            // The exit's hold of the receipt (if it holds them), then the
            // reply path's relays up to the deposit at the guard (its own
            // hop delay only delays the reply's visibility).
            receipt: Erlang::new(
                hops - u32::from(!m.receipt_hold),
                m.mean_delay_ms,
                link * f64::from(hops),
            ),
        }
    }

    /// A1's posterior over senders for `leak` (None if it never arrived).
    pub fn a1(&self, leak: &LeakRecord) -> Option<Vec<f64>> {
        let t = leak.email_ms?;
        let mut w = vec![0.0; self.trace.senders];
        accumulate(&self.emissions, t, &self.forward, &mut w);
        normalise(&mut w);
        Some(w)
    }

    /// A4's posterior over senders for `leak`: the leak's sender's guard
    /// is the adversary.
    pub fn a4(&self, leak: &LeakRecord) -> Option<Vec<f64>> {
        let t = leak.email_ms?;
        let n = self.trace.senders;
        let guard = *self.trace.guards.get(leak.sender)?;
        let m = self.trace.model;
        let rate = 1.0 / m.send_interval_ms.max(1.0);
        let deposit_rate = (m.loop_share * rate).max(1e-12);
        // Likelihood ratios against "not the sender": 1 for everyone the
        // guard does not serve.
        let mut w = vec![1.0; n];
        let clients: Vec<usize> = (0..n)
            .filter(|&s| self.trace.guards.get(s) == Some(&guard))
            .collect();
        let mut emit = vec![0.0; n];
        if let Some(list) = self.departures.get(&guard) {
            accumulate(list, t, &self.after_guard, &mut emit);
        }
        for &s in &clients {
            let sent = emit[s] / rate;
            let came_back: f64 = self.deposits[s]
                .iter()
                .map(|&d| self.receipt.pdf(d as f64 - t as f64))
                .sum::<f64>()
                / deposit_rate;
            w[s] = sent * came_back;
        }
        normalise(&mut w);
        Some(w)
    }
}

/// Adds f(t − tᵢ) to `weights[sender]` for every (tᵢ, sender) of `events`
/// (time-ordered) within the density's horizon before `t`.
fn accumulate(events: &[(u64, usize)], t: u64, f: &Erlang, weights: &mut [f64]) {
    let horizon = f.horizon_ms() as u64;
    let from = t.saturating_sub(horizon);
    let start = events.partition_point(|(at, _)| *at < from);
    for &(at, s) in &events[start..] {
        if at > t {
            break;
        }
        if let Some(w) = weights.get_mut(s) {
            *w += f.pdf((t - at) as f64);
        }
    }
}
