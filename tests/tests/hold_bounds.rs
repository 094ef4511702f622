//! Per-hop holding is what the header asks, never more: a relay forwards a
//! packet once its header's delay has passed (plus scheduling slack), and
//! drops one whose header asks more than the relay's cap (which the
//! configuration bounds by the federation's, see `leak-node`'s config
//! tests) instead of holding it. Past its memory budget a relay holds the
//! packets on disk: they leave as promptly, and a full hold evicts from
//! disk as from memory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use leak_node::StartOptions;
use leak_tests::{
    TestNode, client_for, hop, mailbox_finals, own_descriptor, random32, reply_packet, test_config,
    wait_until,
};

const TIMEOUT: Duration = Duration::from_secs(60);
/// What a hop may add to the header's delay: the release grid's coarsest
/// step (a packet leaves at the grid's first line after it is due), the
/// timer's wake-up, one packet's processing and a local link, on a loaded
/// test machine.
const SLACK: Duration = Duration::from_millis(leak_node::release::MAX_STEP_MS + 1500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_holds_a_packet_for_its_header_delay_and_no_longer() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_relays(dir.path(), |a| {
        a.limits.max_delay_ms = 1000;
        a.cover.loop_delay_ms = 100;
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

/// Two relays, A (its configuration changed by `configure`) and B, where
/// every test packet ends in a mailbox. Measured is the hold alone: no
/// batch gathering before it.
async fn two_relays(
    dir: &std::path::Path,
    configure: impl FnOnce(&mut leak_node::Config),
) -> (TestNode, TestNode) {
    let mut config = test_config(&dir.join("a"), 3600, Vec::new());
    config.limits.batch_gather_ms = 0;
    configure(&mut config);
    let a = TestNode::start(dir.join("a"), config, StartOptions::default()).await;
    let mut config = test_config(&dir.join("b"), 3600, vec![a.node.dial_addr()]);
    config.limits.batch_gather_ms = 0;
    let b = TestNode::start(dir.join("b"), config, StartOptions::default()).await;
    wait_until(TIMEOUT, "the directories to converge", || {
        let done = a.node.directory().len() == 2 && b.node.directory().len() == 2;
        async move { done }
    })
    .await;
    (a, b)
}

/// A's hold: at most `held` packets, `in_memory` of them in memory.
fn hold(held: usize, in_memory: usize) -> impl FnOnce(&mut leak_node::Config) {
    move |a| {
        a.limits.held_packets = held;
        a.limits.held_in_memory = in_memory;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_past_the_memory_budget_wait_on_disk_and_all_leave_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_relays(dir.path(), hold(1000, 4)).await;
    let (da, db) = (own_descriptor(&a.node), own_descriptor(&b.node));
    let client = client_for(&[&a.node]);
    let packets: Vec<_> = (0..40)
        .map(|_| reply_packet(&[hop(&da, 8000), hop(&db, 0)], &random32(), b"spooled").0)
        .collect();
    let sent = Instant::now();
    client
        .send_packets(a.node.peer_id(), &packets)
        .await
        .unwrap();
    wait_until(TIMEOUT, "36 of the 40 packets on A's disk", || {
        let done = a.node.metrics().held_on_disk.get() == 36;
        async move { done }
    })
    .await;
    assert_eq!(a.node.metrics().held_packets.get(), 40);
    wait_until(TIMEOUT, "all 40 at B", || {
        let done = mailbox_finals(&b.node) == 40;
        async move { done }
    })
    .await;
    let took = sent.elapsed();
    assert!(
        took >= Duration::from_millis(8000),
        "released early: {took:?}"
    );
    assert!(
        took <= Duration::from_millis(8000) + SLACK,
        "the disk made them late: {took:?}"
    );
    let metrics = a.node.metrics();
    assert_eq!(metrics.held_packets.get(), 0);
    assert_eq!(metrics.held_on_disk.get(), 0);
    for reason in ["held_full", "storage_error", "shutdown"] {
        assert_eq!(metrics.dropped(reason), 0, "{reason}");
    }
    b.node.shutdown().await.unwrap();
    a.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_hold_evicts_the_biggest_holders_packets_from_disk_too() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_relays(dir.path(), hold(8, 2)).await;
    let (da, db) = (own_descriptor(&a.node), own_descriptor(&b.node));

    // The first peer fills the hold (two in memory, six on disk); its
    // four more are its own overflow, refused.
    let first = client_for(&[&a.node]);
    let packets: Vec<_> = (0..12)
        .map(|i| {
            reply_packet(
                &[hop(&da, 9000 + i * 10), hop(&db, 0)],
                &random32(),
                b"first",
            )
            .0
        })
        .collect();
    first
        .send_packets(a.node.peer_id(), &packets)
        .await
        .unwrap();
    wait_until(TIMEOUT, "the first peer's packets held or refused", || {
        let m = a.node.metrics();
        let done = m.held_packets.get() == 8 && m.dropped("held_full") == 4;
        async move { done }
    })
    .await;
    assert_eq!(a.node.metrics().held_on_disk.get(), 6);

    // A second peer's three evict the first's three latest-due (on disk,
    // unless the two worker threads handed the first peer's batches to
    // the timer out of order).
    let second = client_for(&[&a.node]);
    let packets: Vec<_> = (0..3)
        .map(|_| reply_packet(&[hop(&da, 1000), hop(&db, 0)], &random32(), b"second").0)
        .collect();
    second
        .send_packets(a.node.peer_id(), &packets)
        .await
        .unwrap();
    wait_until(TIMEOUT, "the second peer's packets delivered", || {
        let done = mailbox_finals(&b.node) == 3;
        async move { done }
    })
    .await;
    assert_eq!(a.node.metrics().dropped("held_full"), 7);
    wait_until(TIMEOUT, "the first peer's five left", || {
        let done = mailbox_finals(&b.node) == 8;
        async move { done }
    })
    .await;
    let metrics = a.node.metrics();
    assert_eq!(metrics.held_packets.get(), 0);
    assert_eq!(metrics.held_on_disk.get(), 0);
    assert_eq!(
        metrics.dropped("storage_error"),
        0,
        "no evicted packet read back"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(mailbox_finals(&b.node), 8, "nothing evicted came back");
    b.node.shutdown().await.unwrap();
    a.node.shutdown().await.unwrap();
}
