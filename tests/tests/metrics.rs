//! The Prometheus endpoint: the node's own metrics and libp2p's, and no
//! network address anywhere in them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use leak_node::StartOptions;
use leak_tests::{
    TestNode, client_for, descriptor_of, fetch_replies, hop, http_get, knows, random32,
    reply_packet, test_config, wait_for_drops, wait_until,
};

const TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_endpoint_serves_every_family_and_no_address() {
    let root = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (root.path().join("a"), root.path().join("b"));
    let b = TestNode::start(
        dir_b.clone(),
        test_config(&dir_b, 3600, vec![]),
        StartOptions::default(),
    )
    .await;
    let mut a_config = test_config(&dir_a, 3600, vec![b.node.dial_addr()]);
    a_config.metrics.listen = "127.0.0.1:0".into();
    let a = TestNode::start(dir_a, a_config, StartOptions::default()).await;
    let (an, bn) = (&a.node, &b.node);
    let addr = an.metrics_addr().expect("the metrics endpoint is on");
    assert!(bn.metrics_addr().is_none());
    wait_until(TIMEOUT, "A to know B", || {
        let done = knows(an, bn.node_id());
        async move { done }
    })
    .await;

    // Some traffic: a packet through A to B's mailbox, and a replay of it.
    let capability = random32();
    let path = [
        hop(&descriptor_of(an, an).unwrap(), 0),
        hop(&descriptor_of(an, bn).unwrap(), 0),
    ];
    let (packet, keys) = reply_packet(&path, &capability, b"counted");
    let client = client_for(&[an, bn]);
    client
        .send_packets(an.peer_id(), &[packet.clone(), packet])
        .await
        .unwrap();
    wait_for_drops(an, "replay", 1, TIMEOUT).await;
    assert_eq!(
        fetch_replies(&client, bn, &capability, &keys, TIMEOUT)
            .await
            .len(),
        1
    );
    wait_until(TIMEOUT, "A to count the packet forwarded", || {
        let done = an.metrics().packets_forwarded.get() == 1;
        async move { done }
    })
    .await;

    let (status, body) = http_get(addr, "/metrics").await;
    assert!(status.contains(" 200 "), "{status}");
    for family in [
        "leak_packets_received_total 2",
        "leak_packets_forwarded_total 1",
        "leak_packets_dropped_total{reason=\"replay\"} 1",
        "leak_queue_depth",
        "leak_processing_seconds_bucket",
        "leak_processing_seconds_count 2",
        "leak_peers",
        "leak_epoch",
        "leak_directory_nodes 2",
        "leak_inbound_streams_refused_total 0",
        "leak_libp2p_",
    ] {
        assert!(body.contains(family), "no {family:?} in:\n{body}");
    }
    // libp2p labels connections by protocol stack ("/ip4/tcp"), never by
    // address: no IP, port or peer id may appear.
    if let Some(address) = find_address(&body) {
        panic!("an address ({address:?}) in the metrics:\n{body}");
    }
    for id in [an.peer_id(), bn.peer_id(), client.peer_id()] {
        assert!(!body.contains(&id.to_string()), "a peer id in the metrics");
    }

    let (status, _) = http_get(addr, "/nothing-here").await;
    assert!(status.contains(" 404 "), "{status}");

    a.node.shutdown().await.unwrap();
    b.node.shutdown().await.unwrap();
}

/// The first thing in `text` that looks like a network address: a
/// multiaddr component with a value (`/ip4/1…`, `/ip6/…:`, `/tcp/4…`,
/// `/p2p/12D…`) or a dotted quad.
fn find_address(text: &str) -> Option<&str> {
    for component in [
        "/ip4/", "/ip6/", "/dns/", "/dns4/", "/dns6/", "/tcp/", "/udp/", "/p2p/",
    ] {
        for (at, _) in text.match_indices(component) {
            let rest = &text[at + component.len()..];
            // A protocol stack continues with a protocol name ("/ip4/tcp"),
            // an address with a value (a digit, a hex digit or a colon).
            if rest
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit() || c == ':' || c.is_ascii_uppercase())
            {
                return Some(&text[at..(at + 24).min(text.len())]);
            }
        }
    }
    text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .find(|word| {
            let parts: Vec<&str> = word.split('.').collect();
            parts.len() == 4
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.len() <= 3 && p.parse::<u8>().is_ok())
        })
}

#[test]
fn find_address_tells_addresses_from_protocol_stacks() {
    assert_eq!(find_address(r#"x{protocols="/ip4/tcp/p2p"} 1"#), None);
    assert_eq!(find_address("le=\"0.00512\"} 2\nleak_epoch 498678"), None);
    assert!(find_address("/ip4/10.0.0.1/tcp/4700").is_some());
    assert!(find_address("/ip6/::1/tcp/1").is_some());
    assert!(find_address("at 192.168.1.20 now").is_some());
    assert!(find_address("/p2p/12D3KooW").is_some());
}
