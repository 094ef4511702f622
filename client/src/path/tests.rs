//! Path selection's rules, checked on made-up directories.

use leak_protocol::{
    MixPublicKey,
    directory::{EpochKey, ExitInfo, Roles},
};
use rand::{SeedableRng as _, rngs::StdRng};

use super::*;

const PERIOD: u64 = 3600;
const NOW_MS: u64 = 100 * PERIOD * 1000 + 1000;

fn node(n: u8, family: &str, ip: &str, exit: bool) -> Descriptor {
    Descriptor {
        node: NodeId([n; 32]),
        addresses: vec![format!("/ip4/{ip}/tcp/4700")],
        roles: Roles { relay: true, exit },
        family: family.into(),
        exit: exit.then(|| ExitInfo {
            domain: "leak.test".into(),
            policy_version: 1,
            stamp_bits: 0,
        }),
        epoch_period_secs: PERIOD,
        mix_keys: vec![
            EpochKey {
                epoch: 100,
                key: MixPublicKey([n; 32]),
            },
            EpochKey {
                epoch: 101,
                key: MixPublicKey([n ^ 0xff; 32]),
            },
        ],
        software: "test".into(),
        published_at: 100 * PERIOD,
        traffic: None,
    }
}

fn request<'a>(exit: &'a Descriptor, hops: usize) -> RouteRequest<'a> {
    RouteRequest {
        hops,
        mean_delay_ms: 200,
        now_ms: NOW_MS,
        exit,
        entry: None,
        avoid: &[],
        exclude: &[],
    }
}

fn distinct(nodes: impl IntoIterator<Item = NodeId>) -> bool {
    let nodes: Vec<NodeId> = nodes.into_iter().collect();
    let set: HashSet<NodeId> = nodes.iter().copied().collect();
    set.len() == nodes.len()
}

fn check_rules(directory: &[Descriptor], route: &Route) {
    let by_id = |id: NodeId| directory.iter().find(|d| d.node == id).unwrap();
    let exit = route.forward.last().unwrap().node;
    for path in [
        route.forward.iter().map(|h| h.node).collect::<Vec<_>>(),
        std::iter::once(exit)
            .chain(route.reply.iter().map(|h| h.node))
            .collect(),
    ] {
        assert!(distinct(path.iter().copied()), "a node twice: {path:?}");
        for (i, a) in path.iter().enumerate() {
            for b in &path[i + 1..] {
                assert!(compatible(by_id(*a), by_id(*b)), "{a:?} and {b:?}");
            }
        }
    }
    assert_eq!(route.mailbox_node(), route.entry());
}

#[test]
fn routes_follow_the_rules() {
    let mut directory: Vec<Descriptor> = (1..=12)
        .map(|n| {
            node(
                n,
                &format!("family-{}", n % 4),
                &format!("10.{}.0.{n}", n % 5),
                false,
            )
        })
        .collect();
    directory.push(node(50, "exit-family", "192.0.2.1", true));
    let mut rng = StdRng::seed_from_u64(1);
    for hops in MIN_HOPS..=MAX_HOPS {
        for _ in 0..50 {
            let exit = choose_exit(&directory, 1, None, NOW_MS, &mut rng).unwrap();
            assert!(exit.same_policy);
            let route =
                choose_route(&directory, &request(&exit.descriptor, hops), &mut rng).unwrap();
            assert_eq!(route.forward.len(), hops);
            assert_eq!(route.reply.len(), hops - 1);
            assert_eq!(route.forward.last().unwrap().node, NodeId([50; 32]));
            check_rules(&directory, &route);
        }
    }
}

#[test]
fn one_family_is_never_used_twice() {
    // Six relays, but only two families besides the exit's: a 3-hop
    // forward path (entry, middle, exit) fits, a 4-hop one does not.
    let mut directory: Vec<Descriptor> = (1..=6)
        .map(|n| {
            node(
                n,
                if n % 2 == 0 { "even" } else { "odd" },
                "127.0.0.1",
                false,
            )
        })
        .collect();
    directory.push(node(50, "", "127.0.0.1", true));
    let exit = directory[6].clone();
    let mut rng = StdRng::seed_from_u64(2);
    let route = choose_route(&directory, &request(&exit, 3), &mut rng).unwrap();
    check_rules(&directory, &route);
    assert_eq!(
        choose_route(&directory, &request(&exit, 4), &mut rng),
        Err(PathError::NotEnoughNodes { hops: 4, relays: 6 })
    );
}

#[test]
fn one_network_is_never_used_twice_but_loopback_is_exempt() {
    // All relays in 203.0.113.0/24 (one /16): no 3-hop path.
    let mut directory: Vec<Descriptor> = (1..=6)
        .map(|n| node(n, "", &format!("203.0.113.{n}"), false))
        .collect();
    directory.push(node(50, "", "198.51.100.1", true));
    let exit = directory[6].clone();
    let mut rng = StdRng::seed_from_u64(3);
    assert!(matches!(
        choose_route(&directory, &request(&exit, 3), &mut rng),
        Err(PathError::NotEnoughNodes { .. })
    ));
    // The same on loopback: fine.
    for d in &mut directory {
        d.addresses = vec!["/ip4/127.0.0.1/tcp/4700".into()];
    }
    let exit = directory[6].clone();
    let route = choose_route(&directory, &request(&exit, 5), &mut rng).unwrap();
    check_rules(&directory, &route);
    // IPv6: one /32 counts as one network.
    let a = Descriptor {
        addresses: vec!["/ip6/2001:db8:1::1/tcp/1".into()],
        ..node(1, "", "127.0.0.1", false)
    };
    let b = Descriptor {
        addresses: vec!["/ip6/2001:db8:2::1/tcp/1".into()],
        ..node(2, "", "127.0.0.1", false)
    };
    assert!(!compatible(&a, &b));
    assert!(compatible(&a, &node(3, "", "127.0.0.1", false)));
}

#[test]
fn nodes_without_a_key_for_their_epoch_are_not_used() {
    let mut directory: Vec<Descriptor> = (1..=4).map(|n| node(n, "", "127.0.0.1", false)).collect();
    directory.push(node(50, "", "127.0.0.1", true));
    // Two relays only have keys for epochs long gone.
    for d in &mut directory[..2] {
        for (i, k) in d.mix_keys.iter_mut().enumerate() {
            k.epoch = 10 + i as u64;
        }
    }
    let exit = directory[4].clone();
    let mut rng = StdRng::seed_from_u64(4);
    for _ in 0..20 {
        let route = choose_route(&directory, &request(&exit, 3), &mut rng).unwrap();
        for hop in route.forward.iter().chain(&route.reply) {
            assert!(hop.node != NodeId([1; 32]) && hop.node != NodeId([2; 32]));
            assert_eq!(hop.key_hint, 100, "the current epoch's key");
        }
    }
    // A packet that will reach a hop in the next epoch uses that epoch's key.
    let late = RouteRequest {
        now_ms: 101 * PERIOD * 1000 - 1,
        mean_delay_ms: 0,
        ..request(&exit, 3)
    };
    let route = choose_route(&directory, &late, &mut rng).unwrap();
    assert!(route.forward.iter().all(|h| h.key_hint == 100));
    let late = RouteRequest {
        now_ms: 101 * PERIOD * 1000,
        ..late
    };
    let route = choose_route(&directory, &late, &mut rng).unwrap();
    assert!(route.forward.iter().all(|h| h.key_hint == 101));
    assert_eq!(route.forward[2].key, MixPublicKey([50 ^ 0xff; 32]));
}

#[test]
fn epochs_follow_the_delays() {
    // A long mean delay pushes later hops into the next epoch.
    let mut directory: Vec<Descriptor> = (1..=8).map(|n| node(n, "", "127.0.0.1", false)).collect();
    directory.push(node(50, "", "127.0.0.1", true));
    let exit = directory[8].clone();
    let mut rng = StdRng::seed_from_u64(5);
    let start = 101 * PERIOD * 1000 - 30_000;
    for _ in 0..30 {
        let req = RouteRequest {
            now_ms: start,
            mean_delay_ms: 20_000,
            ..request(&exit, 4)
        };
        let Ok(route) = choose_route(&directory, &req, &mut rng) else {
            continue; // Delays past the last published epoch: no route.
        };
        let mut at = start;
        for hop in route.forward.iter().chain(&route.reply) {
            assert_eq!(u64::from(hop.key_hint), at / 1000 / PERIOD);
            at += u64::from(hop.delay.as_millis());
        }
    }
}

#[test]
fn retransmissions_keep_the_entry_and_avoid_earlier_relays() {
    let mut directory: Vec<Descriptor> = (1..=8).map(|n| node(n, "", "127.0.0.1", false)).collect();
    directory.push(node(50, "", "127.0.0.1", true));
    let exit = directory[8].clone();
    let mut rng = StdRng::seed_from_u64(6);
    for _ in 0..20 {
        let first = choose_route(&directory, &request(&exit, 3), &mut rng).unwrap();
        let avoid: Vec<NodeId> = first.middles().iter().map(|h| h.node).collect();
        let again = RouteRequest {
            entry: Some(first.entry()),
            avoid: &avoid,
            ..request(&exit, 3)
        };
        let second = choose_route(&directory, &again, &mut rng).unwrap();
        assert_eq!(second.entry(), first.entry());
        assert_eq!(second.forward[2].node, first.forward[2].node);
        assert!(second.middles().iter().all(|h| !avoid.contains(&h.node)));
        // An unreachable entry is replaced.
        let exclude = [first.entry()];
        let third = choose_route(
            &directory,
            &RouteRequest {
                entry: Some(first.entry()),
                exclude: &exclude,
                ..request(&exit, 3)
            },
            &mut rng,
        )
        .unwrap();
        assert_ne!(third.entry(), first.entry());
    }
    // When avoiding is impossible, earlier relays are used again.
    let small: Vec<Descriptor> = directory[..3]
        .iter()
        .cloned()
        .chain([exit.clone()])
        .collect();
    let avoid = [NodeId([1; 32]), NodeId([2; 32]), NodeId([3; 32])];
    let route = choose_route(
        &small,
        &RouteRequest {
            avoid: &avoid,
            ..request(&exit, 3)
        },
        &mut rng,
    )
    .unwrap();
    check_rules(&small, &route);
}

#[test]
fn no_exit_and_bad_hop_counts_are_errors() {
    let directory: Vec<Descriptor> = (1..=4).map(|n| node(n, "", "127.0.0.1", false)).collect();
    let mut rng = StdRng::seed_from_u64(7);
    assert!(matches!(
        choose_exit(&directory, 1, None, NOW_MS, &mut rng),
        Err(PathError::NoExit)
    ));
    let exit = node(50, "", "127.0.0.1", true);
    for hops in [0, 1, 6] {
        assert_eq!(
            choose_route(&directory, &request(&exit, hops), &mut rng),
            Err(PathError::HopCount(hops))
        );
    }
}

#[test]
fn exits_of_the_client_policy_version_are_preferred() {
    let mut old = node(50, "", "127.0.0.1", true);
    old.exit.as_mut().unwrap().policy_version = 0;
    let new = node(51, "", "127.0.0.1", true);
    let mut rng = StdRng::seed_from_u64(8);
    for _ in 0..20 {
        let choice = choose_exit(&[old.clone(), new.clone()], 1, None, NOW_MS, &mut rng).unwrap();
        assert_eq!(choice.descriptor.node, new.node);
        assert!(choice.same_policy);
    }
    let choice = choose_exit(std::slice::from_ref(&old), 1, None, NOW_MS, &mut rng).unwrap();
    assert!(!choice.same_policy);
}

/// A leak goes to the exit responsible for its recipient: the same one
/// whatever the randomness, the one the protocol's rule names (which the
/// exits apply), among the exits of the client's policy version; the
/// recipients spread over the exits. A loop's exit is random.
#[test]
fn a_leak_goes_to_its_recipients_exit_and_a_loop_anywhere() {
    let mut other_policy = node(60, "", "127.0.0.1", true);
    other_policy.exit.as_mut().unwrap().policy_version = 0;
    let mut directory: Vec<Descriptor> = (50..54).map(|n| node(n, "", "127.0.0.1", true)).collect();
    directory.push(other_policy.clone());
    let mut rng = StdRng::seed_from_u64(10);
    let mut used = std::collections::HashSet::new();
    for r in 0..200u32 {
        let mut recipient = [0u8; 32];
        recipient[..4].copy_from_slice(&r.to_le_bytes());
        let responsible =
            leak_protocol::directory::responsible_exit(&directory, &recipient, 1, NOW_MS / 1000)
                .unwrap()
                .node;
        for _ in 0..3 {
            let choice = choose_exit(&directory, 1, Some(&recipient), NOW_MS, &mut rng).unwrap();
            assert_eq!(choice.descriptor.node, responsible);
            assert!(choice.same_policy);
        }
        used.insert(responsible);
    }
    assert_eq!(
        used.len(),
        4,
        "every exit of the policy version is someone's"
    );
    assert!(!used.contains(&other_policy.node));
    let loops: std::collections::HashSet<NodeId> = (0..100)
        .map(|_| {
            choose_exit(&directory, 1, None, NOW_MS, &mut rng)
                .unwrap()
                .descriptor
                .node
        })
        .collect();
    assert_eq!(loops.len(), 4);
}

#[test]
fn delays_are_exponential_and_capped() {
    let mut rng = StdRng::seed_from_u64(9);
    let n = 20_000;
    let total: u64 = (0..n)
        .map(|_| u64::from(sample_delay(200, &mut rng).as_millis()))
        .sum();
    let mean = total / n;
    assert!((185..=215).contains(&mean), "mean {mean}");
    assert_eq!(sample_delay(0, &mut rng), Delay(0));
    assert!((0..1000).all(|_| sample_delay(60_000, &mut rng).as_millis() <= MAX_HOP_DELAY_MS));
}

/// The agent's routes: a reply path as long as the forward path, ending at
/// the guard, under the same rules.
#[test]
fn agent_routes_have_replies_as_long_as_the_way_out() {
    let mut directory: Vec<Descriptor> = (1..=8)
        .map(|n| node(n, &format!("f{n}"), &format!("10.{n}.0.1"), false))
        .collect();
    directory.push(node(50, "exit-family", "192.0.2.1", true));
    let exit = directory[8].clone();
    let mut rng = StdRng::seed_from_u64(5);
    for _ in 0..50 {
        let mut req = request(&exit, 3);
        req.entry = Some(NodeId([2; 32]));
        let route = choose_route_with_reply(&directory, &req, 3, &mut rng).unwrap();
        assert_eq!(route.forward.len(), 3);
        assert_eq!(route.reply.len(), 3);
        assert_eq!(route.entry(), NodeId([2; 32]));
        check_rules(&directory, &route);
    }
    assert_eq!(
        choose_route_with_reply(&directory, &request(&exit, 3), 0, &mut rng),
        Err(PathError::HopCount(0))
    );
}

#[test]
fn routes_cross_mix_relays_between_the_guard_and_the_exit() {
    // Twenty relays on their own networks: both layers have several.
    let mut directory: Vec<Descriptor> = (1..=20)
        .map(|n| node(n, "", &format!("10.{n}.0.1"), false))
        .collect();
    directory.push(node(50, "", "192.0.2.1", true));
    let exit = directory.last().unwrap().clone();
    let entries: Vec<&Descriptor> = directory.iter().filter(|d| d.is_entry()).collect();
    let mixes = directory
        .iter()
        .filter(|d| d.is_mix() && !d.roles.exit)
        .count();
    assert!(
        entries.len() >= 3 && mixes >= 3,
        "{} entries, {mixes} mixes",
        entries.len()
    );
    let by_id = |id: NodeId| directory.iter().find(|d| d.node == id).unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    for _ in 0..40 {
        // Without a guard (`--direct`): an entry relay, mixes after it.
        let route = choose_route(&directory, &request(&exit, 3), &mut rng).unwrap();
        assert!(by_id(route.entry()).is_entry());
        assert!(route.middles().iter().all(|h| by_id(h.node).is_mix()));
        let reply = &route.reply[..route.reply.len() - 1];
        assert!(reply.iter().all(|h| by_id(h.node).is_mix()));
        // An agent's guard, with replies as long as the way out.
        let guard = entries[0].node;
        let agent = RouteRequest {
            entry: Some(guard),
            ..request(&exit, 3)
        };
        let route = choose_route_with_reply(&directory, &agent, 3, &mut rng).unwrap();
        assert_eq!(route.entry(), guard);
        assert!(route.middles().iter().all(|h| by_id(h.node).is_mix()));
        assert!(route.reply[..2].iter().all(|h| by_id(h.node).is_mix()));
    }
    // Only entry relays besides the exit: routes still exist, through them.
    let only_entries: Vec<Descriptor> = directory
        .iter()
        .filter(|d| d.is_entry() || d.roles.exit)
        .cloned()
        .collect();
    let route = choose_route(&only_entries, &request(&exit, 3), &mut rng).unwrap();
    check_rules(&only_entries, &route);
}
