//! How many senders could have sent a leak, as the agent can tell from
//! what it observes, and the per-hop delay that keeps that number up.
//!
//! The agent knows its own send rate (every agent runs the same Poisson
//! schedule), the federation's published per-epoch counts of packets
//! received from clients (aggregate, summed over the directory), and how
//! many of its own loops came back. From them:
//!
//! 1. **Active senders.** Every always-on agent emits one packet per send
//!    interval s on average, so a federation that received C client
//!    packets in an epoch of length E had about N = C · s / E agents on.
//! 2. **The set a timing adversary leaves.** A leak's email arrives an
//!    Erlang(hops, μ) time after its packet left; each sender's
//!    likelihood is a sum of that density over its emissions (a Poisson
//!    process of rate 1/s). For many senders the effective set 2^H is
//!    N · exp(−κ · s/μ): the sums vary less between senders the more
//!    emissions a delay's width covers. For the edge observer (A1) theory
//!    gives κ = Γ(2k−1) / (2 Γ(k)² 2^(2k−1)) (k = hops; 0.094 for 3 hops);
//!    the global passive adversary (A2), who also follows packets through
//!    the relays, is sharper: [`KAPPA_GLOBAL`] is fitted on the virtual
//!    federation's measurement (`scripts/anonymity.sh`, every row with
//!    cover: the median of −ln(2^H/N) · μ/s), and the estimate uses the
//!    larger of the two (the edge's, as measured).
//!
//! What this does not cover: an adversary who also runs the sender's
//! guard and the exit (A3 of the measurement) keeps about 0.6–0.7 of the
//! set whatever μ and s are; `leak status` should say the estimate assumes
//! the guard is honest.
//! 3. **Loss.** Loops that do not come back mean packets are being
//!    dropped (a broken link, or an (n−1) attack isolating this sender):
//!    the set is scaled by the return ratio, so a relay that drops half
//!    the traffic halves the promise.
//!
//! To keep a minimum set, the per-hop delay is lengthened to the μ with
//! N · r · exp(−κ · s/μ) = minimum (at most the federation's
//! [`MAX_HOP_DELAY_MS`]); when even that cannot reach it (too few senders
//! on), the longest delay is used and the estimate says so.
//!
//! Pure: the caller passes every observation in.

use leak_protocol::{directory::Descriptor, federation::MAX_HOP_DELAY_MS};

/// κ of the global passive adversary (see the module doc), fitted on the
/// simulation: over the 13 rows with cover of `scripts/anonymity.sh`
/// (N = 50, 200, 1,000; μ 20–120 s; send interval 6–24 s; loop share
/// 0.2–0.4), −ln(2^H/N) · μ/s of A2's median ranged 0.063–0.081, median
/// 0.071. The same fit of A1 gave 0.091–0.094, as the theory's 0.094.
pub const KAPPA_GLOBAL: f64 = 0.071;

/// The smallest set the agent aims for by default.
pub const DEFAULT_MIN_SET: f64 = 20.0;

/// What the agent observed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observed {
    /// Packets received from clients in the last complete epoch, summed
    /// over the directory's nodes.
    pub client_packets: u64,
    /// The epoch's length (ms).
    pub epoch_ms: u64,
    /// The agent's mean interval between packets (ms).
    pub send_interval_ms: u64,
    /// The configured per-hop mean delay (ms).
    pub mean_delay_ms: u32,
    /// Hops of a forward path, the exit included.
    pub hops: usize,
    /// The share of its loops that came back (1.0 when none were sent
    /// yet).
    pub loop_return_ratio: f64,
}

/// What the agent tells its user and uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// Agents on, by the published counts.
    pub active_senders: f64,
    /// About how many senders could have sent a leak at `mean_delay_ms`.
    pub anonymity_set: f64,
    /// The per-hop mean delay to use (ms): the configured one, lengthened
    /// if needed to keep the minimum set, at most [`MAX_HOP_DELAY_MS`].
    pub mean_delay_ms: u32,
    /// Whether the minimum set is reached at that delay.
    pub reaches_minimum: bool,
}

/// The federation's published client traffic: the packets received from
/// clients in each node's last complete epoch, summed over the nodes whose
/// epoch is the newest any node reports or the one before (nodes publish at
/// their own times, so a count may lag an epoch; an older one is stale),
/// and the epoch's length (ms). `None` when no node publishes counts.
/// Nodes without a recent count are left out, which can only lower the
/// estimate.
pub fn published_client_packets(directory: &[Descriptor]) -> Option<(u64, u64)> {
    let newest = directory
        .iter()
        .filter_map(|d| d.traffic.map(|t| t.epoch))
        .max()?;
    let mut packets = 0u64;
    let mut epoch_ms = 0u64;
    for d in directory {
        if let Some(t) = d.traffic.filter(|t| t.epoch.saturating_add(1) >= newest) {
            packets = packets.saturating_add(t.from_clients);
            epoch_ms = epoch_ms.max(d.epoch_period_secs.saturating_mul(1000));
        }
    }
    Some((packets, epoch_ms))
}

/// κ of the edge observer for `hops` hops (module doc, step 2).
pub fn kappa_edge(hops: usize) -> f64 {
    let k = hops.max(1) as f64;
    // ln Γ(n) for integer n, as a sum of logarithms.
    let ln_gamma = |n: f64| (1..n as u64).map(|i| (i as f64).ln()).sum::<f64>();
    (ln_gamma(2.0 * k - 1.0) - 2.0 * ln_gamma(k) - (2.0 * k - 1.0) * 2f64.ln()).exp() / 2.0
}

/// The anonymity set at per-hop mean `mean_delay_ms` for `senders`
/// active senders.
pub fn set_at(senders: f64, observed: &Observed, mean_delay_ms: f64) -> f64 {
    let kappa = kappa_edge(observed.hops).max(KAPPA_GLOBAL);
    let ratio = observed.send_interval_ms as f64 / mean_delay_ms.max(1.0);
    let returned = observed.loop_return_ratio.clamp(0.0, 1.0);
    (senders * returned * (-kappa * ratio).exp()).max(1.0_f64.min(senders))
}

/// Estimates the set and the delay that keeps at least `min_set`.
pub fn estimate(observed: &Observed, min_set: f64) -> Estimate {
    let senders = if observed.epoch_ms == 0 {
        0.0
    } else {
        observed.client_packets as f64 * observed.send_interval_ms as f64 / observed.epoch_ms as f64
    };
    let configured = f64::from(observed.mean_delay_ms);
    let max = f64::from(MAX_HOP_DELAY_MS);
    let kappa = kappa_edge(observed.hops).max(KAPPA_GLOBAL);
    let reachable = senders * observed.loop_return_ratio.clamp(0.0, 1.0);
    let needed = if reachable > min_set {
        kappa * observed.send_interval_ms as f64 / (reachable / min_set).ln()
    } else {
        f64::INFINITY
    };
    let delay = configured.max(needed).min(max).max(0.0);
    let anonymity_set = set_at(senders, observed, delay);
    Estimate {
        active_senders: senders,
        anonymity_set,
        mean_delay_ms: delay.round() as u32,
        reaches_minimum: anonymity_set + 1e-9 >= min_set,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(client_packets: u64, ratio: f64) -> Observed {
        Observed {
            client_packets,
            epoch_ms: 3_600_000,
            send_interval_ms: 12_000,
            mean_delay_ms: 60_000,
            hops: 3,
            loop_return_ratio: ratio,
        }
    }

    #[test]
    fn the_edge_constant_matches_the_erlang_integral() {
        // k = 3: Γ(5) / (2 · Γ(3)² · 2^5) = 24 / 256.
        assert!((kappa_edge(3) - 24.0 / 256.0).abs() < 1e-12);
        // k = 1 (exponential): 1 / (2 · 2) .
        assert!((kappa_edge(1) - 0.25).abs() < 1e-12);
    }

    #[test]
    fn active_senders_come_from_the_published_counts() {
        // 50 agents, one packet per 12 s, for an hour: 15,000 packets.
        let e = estimate(&observed(15_000, 1.0), DEFAULT_MIN_SET);
        assert!((e.active_senders - 50.0).abs() < 1e-9);
        assert!(e.anonymity_set < 50.0 && e.anonymity_set > 0.8 * 50.0);
        assert_eq!(e.mean_delay_ms, 60_000, "enough senders: no change");
        assert!(e.reaches_minimum);
    }

    #[test]
    fn few_senders_lengthen_the_delay_up_to_the_cap() {
        // 20.1 agents: the configured minute leaves fewer than 20.
        let few = estimate(&observed(6_030, 1.0), DEFAULT_MIN_SET);
        assert!(few.mean_delay_ms > 60_000, "{few:?}");
        assert!(few.mean_delay_ms <= MAX_HOP_DELAY_MS);
        assert!((few.anonymity_set - DEFAULT_MIN_SET).abs() < 0.5, "{few:?}");
        // 10 agents: unreachable; the longest delay, and it says so.
        let lonely = estimate(&observed(3_000, 1.0), DEFAULT_MIN_SET);
        assert_eq!(lonely.mean_delay_ms, MAX_HOP_DELAY_MS);
        assert!(!lonely.reaches_minimum);
        assert!(lonely.anonymity_set <= 10.0);
    }

    #[test]
    fn lost_loops_shrink_the_promise() {
        let whole = estimate(&observed(15_000, 1.0), DEFAULT_MIN_SET);
        let half = estimate(&observed(15_000, 0.5), DEFAULT_MIN_SET);
        assert!(half.anonymity_set < 0.6 * whole.anonymity_set);
    }

    #[test]
    fn the_two_newest_published_epochs_are_summed() {
        use leak_protocol::directory::{EpochTraffic, Roles};
        let node = |epoch: u64, from_clients: u64| Descriptor {
            node: leak_protocol::NodeId([0; 32]),
            addresses: Vec::new(),
            roles: Roles {
                relay: true,
                exit: false,
            },
            family: String::new(),
            exit: None,
            epoch_period_secs: 3600,
            mix_keys: Vec::new(),
            software: String::new(),
            published_at: 0,
            traffic: Some(EpochTraffic {
                epoch,
                from_clients,
                from_nodes: 9,
            }),
        };
        let mut silent = node(0, 0);
        silent.traffic = None;
        let directory = [
            node(6, 50),
            node(7, 100),
            node(8, 200),
            node(8, 300),
            silent,
        ];
        // Epoch 6 is stale; 7 lags the newest by one and counts.
        assert_eq!(published_client_packets(&directory), Some((600, 3_600_000)));
        assert_eq!(published_client_packets(&directory[4..]), None);
    }

    #[test]
    fn nothing_published_means_nobody_to_hide_among() {
        let e = estimate(&observed(0, 1.0), DEFAULT_MIN_SET);
        assert_eq!(e.active_senders, 0.0);
        assert!(!e.reaches_minimum);
        let e = estimate(
            &Observed {
                epoch_ms: 0,
                ..observed(100, 1.0)
            },
            DEFAULT_MIN_SET,
        );
        assert_eq!(e.active_senders, 0.0);
    }
}
