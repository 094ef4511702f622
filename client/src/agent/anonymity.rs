//! What the agent can tell its user about their anonymity, from what it
//! observes ([`crate::estimate`] does the arithmetic): the federation's
//! published per-epoch counts of packets from clients (aggregate, summed
//! over the directory) and the share of its own loops that came back.

use leak_protocol::directory::Descriptor;

use crate::estimate::{self, Estimate, Observed};

/// The agent's observations, or `None` while no node publishes counts.
pub fn observe(
    nodes: &[Descriptor],
    send_interval_ms: u64,
    mean_delay_ms: u32,
    hops: usize,
    loops_returned: u64,
    loops_lost: u64,
) -> Option<Observed> {
    let (client_packets, epoch_ms) = estimate::published_client_packets(nodes)?;
    let judged = loops_returned + loops_lost;
    let loop_return_ratio = if judged == 0 {
        1.0
    } else {
        loops_returned as f64 / judged as f64
    };
    Some(Observed {
        client_packets,
        epoch_ms,
        send_interval_ms,
        mean_delay_ms,
        hops,
        loop_return_ratio,
    })
}

/// The estimate for `observed`, aiming at `min_set` senders (0: no
/// minimum, the configured delay stays).
pub fn assess(observed: &Observed, min_set: u32) -> Estimate {
    if min_set == 0 {
        let active = estimate::estimate(observed, 1.0).active_senders;
        return Estimate {
            active_senders: active,
            anonymity_set: estimate::set_at(active, observed, f64::from(observed.mean_delay_ms)),
            mean_delay_ms: observed.mean_delay_ms,
            reaches_minimum: true,
        };
    }
    estimate::estimate(observed, f64::from(min_set))
}

/// The estimate in words, for `leak status` and `leak send`.
pub fn words(
    estimate: &Estimate,
    observed: &Observed,
    configured_delay_ms: u32,
    min_set: u32,
) -> String {
    let set = estimate.anonymity_set.round();
    let mut text = if set < 2.0 {
        "nobody else could have sent a leak of yours, as far as the federation's published counts show".to_owned()
    } else {
        format!("about {set} senders could have sent a leak of yours")
    };
    text.push_str(&format!(
        " (the federation reports about {} agent(s) on; {:.0} % of your loops came back)",
        estimate.active_senders.round(),
        observed.loop_return_ratio * 100.0
    ));
    if estimate.mean_delay_ms > configured_delay_ms {
        text.push_str(&format!(
            "; traffic is low, so hops hold packets {} on average instead of {}",
            duration(estimate.mean_delay_ms),
            duration(configured_delay_ms)
        ));
    }
    if !estimate.reaches_minimum {
        text.push_str(&format!(
            "; below the {min_set} the agent aims for even at the longest delay: consider waiting for more senders"
        ));
    }
    text
}

/// `90000` → `90 s`; `250` → `250 ms`.
fn duration(ms: u32) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{} s", ms / 1000)
    }
}

#[cfg(test)]
mod tests {
    use leak_protocol::{
        NodeId,
        directory::{EpochTraffic, Roles},
    };

    use super::*;

    fn node(n: u8, traffic: Option<(u64, u64)>) -> Descriptor {
        Descriptor {
            node: NodeId([n; 32]),
            addresses: vec![],
            roles: Roles {
                relay: true,
                exit: false,
            },
            family: String::new(),
            exit: None,
            epoch_period_secs: 3600,
            mix_keys: vec![],
            software: "test".into(),
            published_at: 0,
            traffic: traffic.map(|(epoch, from_clients)| EpochTraffic {
                epoch,
                from_clients,
                from_nodes: 1_000,
            }),
        }
    }

    #[test]
    fn counts_of_the_latest_epoch_are_added_up() {
        assert_eq!(observe(&[node(1, None)], 12_000, 60_000, 3, 0, 0), None);
        let nodes = [
            node(1, Some((8, 70_000))),
            node(2, Some((10, 9_000))),
            node(3, Some((9, 6_000))),
            node(4, None),
        ];
        let seen = observe(&nodes, 12_000, 60_000, 3, 3, 1).unwrap();
        assert_eq!(seen.client_packets, 15_000, "epochs 9 and 10; 8 is stale");
        assert_eq!(seen.epoch_ms, 3_600_000);
        assert!((seen.loop_return_ratio - 0.75).abs() < 1e-12);
        // 50 agents on: a minute per hop keeps a set above 20.
        let e = assess(&seen, 20);
        assert!((e.active_senders - 50.0).abs() < 1e-9);
        assert_eq!(e.mean_delay_ms, 60_000);
        let text = words(&e, &seen, 60_000, 20);
        assert!(text.starts_with("about "), "{text}");
        assert!(text.contains("senders could have sent"), "{text}");
        assert!(!text.contains("traffic is low"), "{text}");
    }

    #[test]
    fn few_senders_lengthen_the_delay_unless_no_minimum_is_asked() {
        // Two agents on: nothing reaches 20.
        let none = observe(&[node(1, Some((10, 0)))], 12_000, 60_000, 3, 0, 0).unwrap();
        let text = words(&assess(&none, 20), &none, 60_000, 20);
        assert!(text.starts_with("nobody else could have sent"), "{text}");
        let seen = observe(&[node(1, Some((10, 600)))], 12_000, 60_000, 3, 5, 0).unwrap();
        let e = assess(&seen, 20);
        assert!(e.mean_delay_ms > 60_000);
        assert!(!e.reaches_minimum);
        let text = words(&e, &seen, 60_000, 20);
        assert!(
            text.contains("traffic is low") && text.contains("below the 20"),
            "{text}"
        );
        let fixed = assess(&seen, 0);
        assert_eq!(
            fixed.mean_delay_ms, 60_000,
            "no minimum: the configured delay"
        );
        assert!(fixed.anonymity_set <= 2.0);
    }
}
