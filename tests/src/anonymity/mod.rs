//! How well a leak's sender is hidden: adversaries that read what the
//! virtual federation recorded ([`Trace`]) and each compute a posterior
//! over the senders for every leak, as a Bayesian who knows the protocol
//! and its parameters (the delay distribution, the cover rates) but not
//! the packets' contents.
//!
//! - **A1, edge + recipient** ([`edge::a1`]): sees every packet each
//!   sender's machine emits, and the time T the email arrived. A packet
//!   emitted at t is the leak with likelihood f(T − t), f the density of
//!   the forward path's delay (an Erlang of `hops` exponentials of mean
//!   μ); every sender emits on the same Poisson schedule whether it has a
//!   leak or not, so P(s) ∝ Σ over s's packets of f(T − t).
//! - **A4, the entry relay (guard) + recipient** ([`edge::a4`]): sees when
//!   each of its own clients' packets leave it (two hops from the email:
//!   an Erlang of `hops − 1`), and every deposit into each of its clients'
//!   mailboxes (the receipt lands there an Erlang of `hops + 1` after the
//!   email: the exit's hold and the reply path). Everyone else is an
//!   unobserved rest with the same prior. For an observed client the
//!   likelihood ratio against "not the sender" is Σ_k f(T − t_k)/λ ×
//!   Σ_d g(t_d − T)/λ_d (a Poisson process with one point moved to the
//!   leak's density, λ the process's rate); for the rest it is 1.
//! - **A2, global passive** ([`pool::global`]): sees every link. Each
//!   relay is a pool (Loopix's Poisson mix, Piotrowska et al. 2017,
//!   Theorem 1 and 2): a packet that enters adds its probability vector
//!   over senders to the pool, a packet that leaves carries the pool's
//!   average, diluted by the chance that it is one of the relay's own
//!   fresh loops. Packets that vanish without a trace (drops at the exit,
//!   deposits in a mailbox, emails) drain the pool evenly, which leaves
//!   its average unchanged. The email is an output of its exit's pool at
//!   T.
//! - **A3 = A2 + the target's guard and the exit** ([`pool::global`] with
//!   a compromised guard): the guard maps each packet it sends to the one
//!   it received, so its outputs carry their inputs' exact vectors; the
//!   exit knows which arriving packet was the leak, so the email carries
//!   that packet's vector.
//!
//! For each leak and adversary: the Shannon entropy H of the posterior
//! (bits) and the effective anonymity set 2^H (Serjantov–Danezis; Díaz et
//! al.). Against A2, two ε:
//!
//! - **ε (Loopix)** ([`game::epsilon`]): Loopix's sender–receiver
//!   unlinkability as the paper defines it (Piotrowska et al. 2017, §4.3,
//!   equation 3): the leak's packet and, for each of K = 16 challenger
//!   senders, the leak-shaped packet it emitted nearest in time carry
//!   labels (the adversary is told which messages are payload); the
//!   labels propagate through the pools like A2's vectors, and ε =
//!   |ln(p₀/p₁)| with p₀, p₁ the labels' masses in the exit's pool when
//!   the email leaves, mean over challengers. It measures how well the
//!   network mixes two messages sent at about the same time.
//! - **ε (sender)** ([`epsilon_sender`]): sender-level, stricter than the
//!   paper's game: on A2's posterior over all senders (cover included,
//!   the adversary not told which packets are payload), the mean
//!   |ln(p₀/p₁)| of the true sender against every other sender. It is
//!   dominated by the Poisson noise of how many packets each sender
//!   happened to emit around the leak.
//!
//! [`Report`] summarises a run: median and 10th percentile of 2^H over
//! leaks, both mean ε, latency and bytes per sender.

pub mod density;
pub mod edge;
pub mod game;
pub mod pool;
mod record;
mod report;

pub use report::{Report, Summary, evaluate};

pub use crate::harness::DepositSeen;
use crate::harness::{Endpoint, Transmission};
pub use record::trace_of;

/// A leak as the simulation knows it (the adversaries see only what their
/// model allows: the email's time, and for A3 which packet reached the
/// exit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeakRecord {
    /// The true sender.
    pub sender: usize,
    /// When the person handed it to the agent (Unix ms).
    pub handed_ms: u64,
    /// When the agent emitted it (its slot), if it did.
    pub emitted_ms: Option<u64>,
    /// The packet's identity on every hop (see [`Transmission::packet`]).
    pub packet: Option<u64>,
    /// The exit (relay index).
    pub exit: usize,
    /// When the email reached the recipient's server, if it did.
    pub email_ms: Option<u64>,
}

/// What the adversaries know of the protocol's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Model {
    /// The mean delay of every hop (ms).
    pub mean_delay_ms: f64,
    /// Hops of a forward path, the exit included.
    pub hops: usize,
    /// One-way latency of a link (ms).
    pub link_ms: u64,
    /// A sender's mean interval between packets (ms).
    pub send_interval_ms: f64,
    /// The share of a sender's packets that are loops (they, and receipts
    /// in their place, come back to its mailbox).
    pub loop_share: f64,
    /// A relay's mean interval between its own loops (ms; 0 = none).
    pub relay_loop_interval_ms: f64,
    /// Whether the exit holds a receipt an Exp(μ) before sending it.
    pub receipt_hold: bool,
}

/// Everything the virtual federation recorded in a run.
#[derive(Debug, Clone)]
pub struct Trace {
    /// Senders (indices `0..senders`).
    pub senders: usize,
    /// Relays, exits included (indices `0..relays`).
    pub relays: usize,
    /// Relays from this index on are exits.
    pub first_exit: usize,
    /// Each sender's guard (relay index).
    pub guards: Vec<usize>,
    /// The protocol's parameters.
    pub model: Model,
    /// Every link transmission, in time order.
    pub links: Vec<Transmission>,
    /// Every deposit into a mailbox, in time order.
    pub deposits: Vec<DepositSeen>,
    /// Every leak handed to an agent.
    pub leaks: Vec<LeakRecord>,
    /// Mailbox polls per sender within the measured window.
    pub polls: Vec<u64>,
    /// When the trace starts (Unix ms).
    pub start_ms: u64,
    /// When it ends.
    pub end_ms: u64,
    /// The measured window (after the warm-up): leaks handed in it are
    /// measured, and its traffic is the bandwidth.
    pub measured_from_ms: u64,
    /// Its end (excluded).
    pub measured_until_ms: u64,
}

impl Trace {
    /// The leaks that reached their recipient.
    pub fn delivered(&self) -> impl Iterator<Item = (usize, &LeakRecord)> {
        self.leaks
            .iter()
            .enumerate()
            .filter(|(_, l)| l.email_ms.is_some())
    }

    /// Packets the senders' machines emitted within the measured window.
    pub fn emitted_in_window(&self) -> u64 {
        let window = self.measured_from_ms..self.measured_until_ms;
        self.links
            .iter()
            .filter(|l| matches!(l.from, Endpoint::Sender(_)) && window.contains(&l.at_ms))
            .count() as u64
    }
}

/// The Shannon entropy of `p` in bits (`p` sums to 1; zeros are skipped).
pub fn entropy_bits(p: &[f64]) -> f64 {
    p.iter().filter(|&&x| x > 0.0).map(|&x| -x * x.log2()).sum()
}

/// Normalises `weights` into a probability vector; all zero (or not
/// finite) becomes uniform: the adversary learned nothing it can use.
pub fn normalise(weights: &mut [f64]) {
    let total: f64 = weights.iter().filter(|w| w.is_finite()).sum();
    if total > 0.0 && total.is_finite() {
        for w in weights.iter_mut() {
            *w = if w.is_finite() { *w / total } else { 0.0 };
        }
    } else {
        let n = weights.len().max(1) as f64;
        weights.fill(1.0 / n);
    }
}

/// The sender-level ε for one leak: the mean |ln(p₀/p₁)| over every
/// other sender s₁, p₀ the true sender's posterior probability and p₁
/// s₁'s. Stricter than Loopix's game ([`game::epsilon`]): the posterior
/// counts every packet a sender emitted, cover included. Probabilities
/// are floored at 1e-300 so that a sender the adversary has ruled out
/// counts as a large, finite advantage.
pub fn epsilon_sender(posterior: &[f64], sender: usize) -> f64 {
    const FLOOR: f64 = 1e-300;
    let Some(&p0) = posterior.get(sender) else {
        return f64::NAN;
    };
    let l0 = p0.max(FLOOR).ln();
    let others = posterior.len().saturating_sub(1);
    if others == 0 {
        return 0.0;
    }
    let sum: f64 = posterior
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != sender)
        .map(|(_, &p1)| (l0 - p1.max(FLOOR).ln()).abs())
        .sum();
    sum / others as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_of_uniform_and_certain() {
        let uniform = vec![0.25; 4];
        assert!((entropy_bits(&uniform) - 2.0).abs() < 1e-12);
        assert_eq!(entropy_bits(&[1.0, 0.0, 0.0]), 0.0);
    }

    #[test]
    fn epsilon_is_zero_when_uniform_and_grows_with_advantage() {
        assert!(epsilon_sender(&[0.25; 4], 1).abs() < 1e-12);
        let sharp = [0.7, 0.1, 0.1, 0.1];
        assert!((epsilon_sender(&sharp, 0) - 7f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn normalise_falls_back_to_uniform() {
        let mut w = vec![0.0; 5];
        normalise(&mut w);
        assert!(w.iter().all(|&x| (x - 0.2).abs() < 1e-12));
        let mut w = vec![1.0, 3.0];
        normalise(&mut w);
        assert_eq!(w, vec![0.25, 0.75]);
    }
}
