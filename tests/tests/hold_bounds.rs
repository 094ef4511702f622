//! Per-hop holding is what the header asks, never more: a relay forwards a
//! packet once its header's delay has passed (plus scheduling slack), and
//! drops one whose header asks more than the relay's cap (which the
//! configuration bounds by the federation's, see `leak-node`'s config
//! tests) instead of holding it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use leak_node::StartOptions;
use leak_tests::{
    TestNode, client_for, hop, mailbox_finals, own_descriptor, random32, reply_packet, test_config,
    wait_until,
};

const TIMEOUT: Duration = Duration::from_secs(60);
/// What a hop may add to the header's delay: the timer's wake-up, one
/// packet's processing and a local link, on a loaded test machine.
const SLACK: Duration = Duration::from_millis(1500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_holds_a_packet_for_its_header_delay_and_no_longer() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir.path().join("a"), 3600, Vec::new());
    config.limits.max_delay_ms = 1000;
    config.cover.loop_delay_ms = 100;
    // Measured is the hold alone: no batch gathering before it.
    config.limits.batch_gather_ms = 0;
    let a = TestNode::start(dir.path().join("a"), config, StartOptions::default()).await;
    let mut config = test_config(&dir.path().join("b"), 3600, vec![a.node.dial_addr()]);
    config.limits.batch_gather_ms = 0;
    let b = TestNode::start(dir.path().join("b"), config, StartOptions::default()).await;
    wait_until(TIMEOUT, "the directories to converge", || {
        let done = a.node.directory().len() == 2 && b.node.directory().len() == 2;
        async move { done }
    })
    .await;
    let (da, db) = (own_descriptor(&a.node), own_descriptor(&b.node));
    let client = client_for(&[&a.node]);

    // Held 800 ms at A (within its cap of 1000), then deposited at B.
    let (packet, _) = reply_packet(&[hop(&da, 800), hop(&db, 0)], &random32(), b"held");
    let sent = Instant::now();
    client
        .send_packets(a.node.peer_id(), &[packet])
        .await
        .unwrap();
    wait_until(TIMEOUT, "the held packet at B", || {
        let done = mailbox_finals(&b.node) == 1;
        async move { done }
    })
    .await;
    let took = sent.elapsed();
    assert!(
        took >= Duration::from_millis(800),
        "released early: {took:?}"
    );
    assert!(
        took <= Duration::from_millis(800) + SLACK,
        "held longer than its header asks: {took:?}"
    );
    assert_eq!(a.node.metrics().held_packets.get(), 0);

    // Asking 1500 ms of A, whose cap is 1000: dropped, not held.
    let (packet, _) = reply_packet(&[hop(&da, 1500), hop(&db, 0)], &random32(), b"long");
    client
        .send_packets(a.node.peer_id(), &[packet])
        .await
        .unwrap();
    wait_until(TIMEOUT, "the too-long packet dropped", || {
        let done = a.node.metrics().dropped("delay_too_long") == 1;
        async move { done }
    })
    .await;
    assert_eq!(a.node.metrics().held_packets.get(), 0);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(mailbox_finals(&b.node), 1, "nothing more reached B");
    b.node.shutdown().await.unwrap();
    a.node.shutdown().await.unwrap();
}
