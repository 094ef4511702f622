//! Replays: a packet seen once is dropped the second time, even after the
//! node restarts (its replay tags live in its database).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use leak_node::StartOptions;
use leak_tests::{
    TestNode, client_for, descriptor_of, fetch_replies, hop, knows, mailbox_finals, opening,
    random32, reply_packet, test_config, wait_for_drops, wait_until,
};

const TIMEOUT: Duration = Duration::from_secs(60);

/// B -> C, C keeps the mailbox. The same packet sent twice to B is
/// forwarded once; after B restarts (same identity, same database) it is
/// still a replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_packet_is_forwarded_once_even_across_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let (dir_b, dir_c) = (root.path().join("b"), root.path().join("c"));
    let c = TestNode::start(
        dir_c.clone(),
        test_config(&dir_c, 3600, vec![]),
        StartOptions::default(),
    )
    .await;
    let b_config = test_config(&dir_b, 3600, vec![c.node.dial_addr()]);
    let b = TestNode::start(dir_b.clone(), b_config.clone(), StartOptions::default()).await;
    let (bn, cn) = (&b.node, &c.node);
    wait_until(TIMEOUT, "B to know C", || {
        let done = knows(bn, cn.node_id());
        async move { done }
    })
    .await;

    let capability = random32();
    let path = vec![
        hop(&descriptor_of(bn, bn).unwrap(), 50),
        hop(&descriptor_of(bn, cn).unwrap(), 50),
    ];
    let (packet, keys) = reply_packet(&path, &capability, b"once only");

    let client = client_for(&[bn, cn]);
    client
        .send_packets(bn.peer_id(), std::slice::from_ref(&packet))
        .await
        .unwrap();
    client
        .send_packets(bn.peer_id(), std::slice::from_ref(&packet))
        .await
        .unwrap();
    wait_for_drops(bn, "replay", 1, TIMEOUT).await;
    wait_until(TIMEOUT, "C to store the reply", || {
        let done = mailbox_finals(cn) == 1;
        async move { done }
    })
    .await;
    let replies = fetch_replies(&client, cn, &capability, &keys, TIMEOUT).await;
    assert_eq!(replies.len(), 1, "exactly one reply stored");
    assert_eq!(&keys.open(&replies[0]).unwrap()[..], b"once only");
    wait_until(TIMEOUT, "B to count the packet forwarded", || {
        let done = bn.metrics().packets_forwarded.get() >= 1;
        async move { done }
    })
    .await;
    assert_eq!(bn.metrics().dropped("replay"), 1);
    assert_eq!(bn.metrics().packets_received.get(), 2);
    assert_eq!(bn.metrics().packets_forwarded.get(), 1, "forwarded once");
    assert_eq!(cn.metrics().packets_received.get(), 1);

    // Restart B with the same data directory (so the same identity.key and
    // database); it listens on a new port.
    let b_peer = bn.peer_id();
    b.node.shutdown().await.unwrap();
    let b = TestNode::start(dir_b.clone(), b_config, StartOptions::default()).await;
    let bn = &b.node;
    assert_eq!(bn.peer_id(), b_peer, "same identity after the restart");
    wait_until(TIMEOUT, "the restarted B to know C again", || {
        let done = knows(bn, cn.node_id());
        async move { done }
    })
    .await;
    assert_eq!(
        bn.metrics().dropped("replay"),
        0,
        "a fresh metrics instance"
    );

    let client = client_for(&[bn, cn]);
    client
        .send_packets(bn.peer_id(), std::slice::from_ref(&packet))
        .await
        .unwrap();
    wait_for_drops(bn, "replay", 1, TIMEOUT).await;
    assert_eq!(bn.metrics().dropped("replay"), 1);
    assert_eq!(bn.metrics().packets_forwarded.get(), 0);
    // Give a wrongly forwarded packet time to arrive (the path's delays are
    // 100 ms in all), then check C got nothing new.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(cn.metrics().packets_received.get(), 1, "C got nothing new");
    assert_eq!(mailbox_finals(cn), 1);
    assert!(
        opening(
            &keys,
            client
                .fetch_mailbox(cn.peer_id(), &capability)
                .await
                .unwrap()
        )
        .is_empty()
    );

    b.node.shutdown().await.unwrap();
    c.node.shutdown().await.unwrap();
}

/// A reply that reached its mailbox is stored at once, shown only after
/// its delay, and survives a restart of the mailbox node in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposited_reply_survives_a_restart_and_waits_for_its_delay() {
    let root = tempfile::tempdir().unwrap();
    let dir_c = root.path().join("c");
    let config = test_config(&dir_c, 3600, vec![]);
    let c = TestNode::start(dir_c.clone(), config.clone(), StartOptions::default()).await;
    let capability = random32();
    let path = vec![hop(&descriptor_of(&c.node, &c.node).unwrap(), 4_000)];
    let (packet, keys) = reply_packet(&path, &capability, b"kept");
    let client = client_for(&[&c.node]);
    client
        .send_packets(c.node.peer_id(), std::slice::from_ref(&packet))
        .await
        .unwrap();
    wait_until(TIMEOUT, "C to store the reply", || {
        let done = mailbox_finals(&c.node) == 1;
        async move { done }
    })
    .await;
    // Stored, but its delay has not passed: nothing to fetch yet.
    assert!(
        opening(
            &keys,
            client
                .fetch_mailbox(c.node.peer_id(), &capability)
                .await
                .unwrap()
        )
        .is_empty()
    );
    c.node.shutdown().await.unwrap();
    let c = TestNode::start(dir_c, config, StartOptions::default()).await;
    let client = client_for(&[&c.node]);
    let replies = fetch_replies(&client, &c.node, &capability, &keys, TIMEOUT).await;
    assert_eq!(replies.len(), 1);
    assert_eq!(&keys.open(&replies[0]).unwrap()[..], b"kept");
    c.node.shutdown().await.unwrap();
}
