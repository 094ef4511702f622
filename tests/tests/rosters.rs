//! The directory's authority: nodes take only the nodes of the newest
//! roster the federation's authorities signed.
//!
//! - A roster that removes a node, published by writing one node's
//!   `directory.roster_file`, reaches every node (with their directory
//!   pulls) and the removed node leaves every directory.
//! - Rosters a peer could hand over (tampered, signed by too few or
//!   untrusted authorities, expired, not yet valid, older, a second roster
//!   under a held serial, garbage) are refused with a counted reason and
//!   change nothing.
//! - A relay (a separate `leak-node` process) flooded with 100,000
//!   descriptors of nodes no roster admits refuses each before checking a
//!   signature, stays within bounded memory, and keeps serving its
//!   directory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use leak_node::{StartOptions, client::Peer, directory::Refused, node::unix_now};
use leak_protocol::{
    NodeId,
    directory::{Roles, SignedDescriptor},
    roster::{Admission, SignedRoster},
};
use leak_tests::{
    TestNode, knows, own_descriptor,
    process::{metric, peak_rss_mib, rss_mib, scrape_metrics, start_node},
    roster::TEST_AUTHORITY_SEED,
    start_test_nodes, test_config, wait_until,
};

const TIMEOUT: Duration = Duration::from_secs(120);
/// The flood's size: the target.
const FLOOD: usize = 100_000;
/// Descriptors published before waiting for the relay to have refused them
/// all (gossip drops what overflows a peer's queue; pacing makes every one
/// arrive, so the count is exact).
const BATCH: usize = 500;
/// How long gossip remembers the ids of messages it saw (libp2p's
/// `duplicate_cache_time`, 60 s by default).
const GOSSIP_MEMORY: Duration = Duration::from_secs(60);

fn relay() -> Roles {
    Roles {
        relay: true,
        exit: false,
    }
}

fn refused(node: &leak_node::RunningNode, reason: &'static str) -> u64 {
    leak_node::metrics::Metrics::get(&node.metrics().rosters_refused, "reason", reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roster_removing_a_node_spreads_and_hostile_rosters_change_nothing() {
    let root = tempfile::tempdir().unwrap();
    let nodes = start_test_nodes(root.path(), 4, 3600).await;
    wait_until(TIMEOUT, "every node to know every node", || {
        let done = nodes
            .iter()
            .all(|a| nodes.iter().all(|b| knows(&a.node, b.node.node_id())));
        async move { done }
    })
    .await;
    // Each node's family is the roster's: its directory name here.
    for n in &nodes {
        let own = own_descriptor(&n.node);
        assert_eq!(own.family, n.dir.file_name().unwrap().to_string_lossy());
    }
    let held = nodes[0].node.roster().unwrap();
    let held_bytes = std::fs::read(root.path().join("roster.signed")).unwrap();

    // The authority removes n3 and publishes by rewriting the file n0..n3
    // read: every node drops n3 (n3 too keeps no descriptor of itself).
    let mut without = held.clone();
    without.remove(&nodes[3].node.node_id());
    without.serial += 1;
    let signed = SignedRoster::sign(&without, &TEST_AUTHORITY_SEED).unwrap();
    let file = root.path().join("roster.signed");
    std::fs::write(file.with_extension("partial"), signed.to_bytes()).unwrap();
    std::fs::rename(file.with_extension("partial"), &file).unwrap();
    let removed = nodes[3].node.node_id();
    wait_until(TIMEOUT, "every node to drop the removed node", || {
        let done = nodes.iter().all(|n| {
            n.node.roster().map(|r| r.serial) == Some(without.serial) && !knows(&n.node, removed)
        });
        async move { done }
    })
    .await;
    // Its descriptor, offered again, is refused before its signature is
    // looked at.
    let removed_descriptor = nodes[3].node.descriptor().unwrap();
    assert_eq!(
        nodes[0].node.offer_descriptor(removed_descriptor),
        Err(Refused::NotRostered)
    );

    // Hostile rosters, as a peer's directory answer would carry them.
    let node = &nodes[0].node;
    let now = unix_now();
    let next = |serial: u64| {
        let mut r = without.clone();
        r.serial = serial;
        r
    };
    let stranger = [0x55; 32];
    let expired = {
        let mut r = next(without.serial + 10);
        r.valid_from = now - 3 * 86_400;
        r.valid_until = now - 86_400;
        r
    };
    let future = {
        let mut r = next(without.serial + 11);
        r.valid_from = now + 86_400;
        r.valid_until = now + 2 * 86_400;
        r
    };
    let mut tampered = SignedRoster::sign(&next(without.serial + 12), &TEST_AUTHORITY_SEED)
        .unwrap()
        .to_bytes();
    // One family renamed in the signed text (same length): the signature
    // no longer holds.
    let at = tampered.windows(4).position(|w| w == b"\"n1\"").unwrap();
    tampered[at + 2] = b'9';
    let equivocating = {
        let mut r = without.clone();
        r.admit(
            NodeId([9; 32]),
            Admission {
                roles: relay(),
                family: "extra".into(),
            },
        )
        .unwrap();
        r
    };
    let cases: Vec<(&'static str, Vec<u8>)> = vec![
        (
            "too_few_signatures",
            SignedRoster::sign(&next(without.serial + 13), &stranger)
                .unwrap()
                .to_bytes(),
        ),
        ("forged", tampered),
        (
            "expired",
            SignedRoster::sign(&expired, &TEST_AUTHORITY_SEED)
                .unwrap()
                .to_bytes(),
        ),
        (
            "not_yet_valid",
            SignedRoster::sign(&future, &TEST_AUTHORITY_SEED)
                .unwrap()
                .to_bytes(),
        ),
        // A replay of the older roster, which still admitted n3.
        ("not_newer", held_bytes),
        (
            "equivocation",
            SignedRoster::sign(&equivocating, &TEST_AUTHORITY_SEED)
                .unwrap()
                .to_bytes(),
        ),
        ("malformed", b"LEAKROS\x01\xff\xff\xff\xff".to_vec()),
        ("malformed", vec![0; 64]),
    ];
    for (reason, bytes) in cases {
        let before = refused(node, reason);
        let result = node.offer_roster(&bytes);
        assert_eq!(
            result.as_ref().map_err(|e| e.as_str()),
            Err(reason),
            "{reason}"
        );
        assert_eq!(refused(node, reason), before + 1, "{reason} counted");
        assert_eq!(node.roster().map(|r| r.serial), Some(without.serial));
        assert!(!knows(node, removed));
        assert_eq!(node.directory().len(), 3);
    }
    // The roster in force again: nothing to do, nothing counted.
    assert_eq!(node.offer_roster(&signed.to_bytes()), Ok(false));

    for n in nodes {
        n.node.shutdown().await.unwrap();
    }
}

/// An unrostered descriptor: a real node's descriptor with another node
/// id (the signature, left as it was, is never checked).
fn unrostered(template: &SignedDescriptor, i: u64) -> Vec<u8> {
    let (body, signature): (Vec<u8>, Vec<u8>) = postcard::from_bytes(&template.to_bytes()).unwrap();
    let (version, rest) = body.split_first().unwrap();
    let mut descriptor: leak_protocol::directory::Descriptor = postcard::from_bytes(rest).unwrap();
    let mut id = [0u8; 32];
    id[..8].copy_from_slice(&i.to_be_bytes());
    id[8..].copy_from_slice(&leak_tests::random32()[8..]);
    descriptor.node = NodeId(id);
    let mut body = vec![*version];
    body.extend(postcard::to_allocvec(&descriptor).unwrap());
    postcard::to_allocvec(&(body, signature)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_refuses_a_flood_of_unrostered_descriptors_in_bounded_memory() {
    let root = tempfile::tempdir().unwrap();
    // The relay under flood: its own process, metrics on.
    let mut relay_process = start_node(root.path(), "relay", None, true, &[], &[]);
    let metrics_addr = relay_process.started.metrics_addr();
    let relay_peer = relay_process.started.peer_id;
    let refused_count = || {
        let text = scrape_metrics(metrics_addr).unwrap_or_default();
        metric(
            &text,
            "leak_descriptors_refused_total",
            Some("reason=\"not_rostered\""),
        ) as usize
    };
    // The flooder: a node the roster admits, turned hostile.
    let dir = root.path().join("flooder");
    let config = test_config(&dir, 3600, vec![relay_process.started.dial_addr()]);
    let flooder = TestNode::start(dir, config, StartOptions::default()).await;
    let client = Peer::new().unwrap();
    client.add_node(relay_peer, relay_process.started.transport_addrs());
    let serves = |answer: &leak_node::wire::DirectoryAnswer| {
        answer.roster.is_some()
            && answer.descriptors.len() == 2
            && answer
                .descriptors
                .iter()
                .filter_map(|s| {
                    s.verify(leak_protocol::directory::Freshness {
                        now: unix_now(),
                        max_age_secs: 3 * 3600,
                        max_clock_skew_secs: 300,
                    })
                    .ok()
                })
                .count()
                == 2
    };
    wait_until(TIMEOUT, "the relay to list both nodes", || {
        let client = &client;
        async move { matches!(client.directory(relay_peer, 0).await, Ok(a) if serves(&a)) }
    })
    .await;
    // And the flooder to have the relay in its gossip mesh (it publishes
    // to its peers on the topic).
    let template = flooder.node.descriptor().unwrap();
    let pid = relay_process.process.pid();
    let start_refused = refused_count();
    let sent = std::cell::Cell::new(0usize);
    let flood = |count: usize| {
        let (flooder, template, refused_count, sent) = (&flooder, &template, &refused_count, &sent);
        async move {
            let until = sent.get() + count;
            while sent.get() < until {
                for _ in 0..BATCH {
                    let bytes = unrostered(template, sent.get() as u64);
                    flooder.node.publish_descriptor_bytes(bytes).await.unwrap();
                    sent.set(sent.get() + 1);
                }
                // Paced: the whole batch refused before the next.
                let goal = start_refused + sent.get();
                let deadline = tokio::time::Instant::now() + TIMEOUT;
                loop {
                    let n = refused_count();
                    if n >= goal {
                        break;
                    }
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "the relay refused {} of {} descriptors sent",
                        n - start_refused,
                        sent.get()
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    };
    let before = rss_mib(pid);
    flood(FLOOD).await;
    let after_first = rss_mib(pid);
    let text = scrape_metrics(metrics_addr).unwrap();
    let refused_total = metric(
        &text,
        "leak_descriptors_refused_total",
        Some("reason=\"not_rostered\""),
    ) as usize
        - start_refused;
    assert_eq!(refused_total, FLOOD, "every flooded descriptor refused");
    assert_eq!(
        metric(&text, "leak_directory_nodes", None),
        2.0,
        "nothing of the flood stored"
    );
    // Each refused before its signature (which does not hold) was checked.
    assert_eq!(
        metric(
            &text,
            "leak_descriptors_refused_total",
            Some("reason=\"bad_signature\"")
        ),
        0.0
    );
    // What the flood costs is gossip's memory of the messages it saw (to
    // drop copies of them), kept for a minute: past that window, a second
    // flood reuses that memory instead of adding to it.
    tokio::time::sleep(GOSSIP_MEMORY + Duration::from_secs(5)).await;
    flood(FLOOD).await;
    let after_second = rss_mib(pid);
    let peak = peak_rss_mib(pid);
    eprintln!(
        "floods of {FLOOD} unrostered descriptors: relay RSS {before:.1} MiB before, \
         {after_first:.1} MiB after the first, {after_second:.1} MiB after the second \
         (a minute later); peak {peak:.1} MiB"
    );
    assert!(
        after_second < after_first + 16.0,
        "the relay's memory grew with a second flood: {after_first:.1} → {after_second:.1} MiB"
    );
    // It still serves its directory: the roster and both nodes.
    let answer = client.directory(relay_peer, 0).await.unwrap();
    assert!(serves(&answer), "{answer:?}");
    flooder.node.shutdown().await.unwrap();
    relay_process.process.stop_cleanly();
}
