//! Per-source mailbox quotas on a running node: one peer flooding replies
//! (spread over many mailboxes, then piled into the ones it reached) is cut
//! off with counted drops, while another peer's replies are still stored.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use leak_node::StartOptions;
use leak_tests::{
    TestNode, client_for, hop, mailbox_finals, own_descriptor, random32, reply_packet, test_config,
    wait_until,
};

const TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_cannot_flood_the_mailboxes() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir.path().join("n"), 3600, Vec::new());
    // One window for the whole test (a boundary would reset the counts).
    config.mailbox.deposit_window_secs = 100 * 365 * 86_400;
    config.mailbox.max_deposits_per_source = 300;
    config.mailbox.max_mailboxes_per_source = 100;
    config.mailbox.max_per_mailbox = 1000;
    let node = TestNode::start(dir.path().join("n"), config, StartOptions::default()).await;
    let target = &node.node;
    let own = own_descriptor(target);
    let replies = |capabilities: &[[u8; 32]]| {
        capabilities
            .iter()
            .map(|c| reply_packet(&[hop(&own, 0)], c, b"flood").0)
            .collect::<Vec<_>>()
    };
    let settled = |n: u64| {
        let metrics = target.metrics();
        let done = mailbox_finals(target)
            + metrics.dropped("mailbox_quota")
            + metrics.dropped("deposit_quota")
            >= n;
        async move { done }
    };

    // 100 mailboxes, then 300 more: only the first 100 are its to fill.
    let flooder = client_for(&[target]);
    let reached: Vec<[u8; 32]> = (0..100).map(|_| random32()).collect();
    let others: Vec<[u8; 32]> = (0..300).map(|_| random32()).collect();
    // One after the other: the node's workers may take packets of one
    // send out of order.
    flooder
        .send_packets(target.peer_id(), &replies(&reached))
        .await
        .unwrap();
    wait_until(TIMEOUT, "the first mailboxes reached", || settled(100)).await;
    for chunk in replies(&others).chunks(100) {
        flooder.send_packets(target.peer_id(), chunk).await.unwrap();
    }
    wait_until(TIMEOUT, "the spread flood processed", || settled(400)).await;
    assert_eq!(mailbox_finals(target), 100);
    assert_eq!(target.metrics().dropped("mailbox_quota"), 300);

    // Piled into the mailboxes it reached: 200 more deposits, then no more.
    let piled: Vec<[u8; 32]> = (0..250).map(|i| reached[i % 100]).collect();
    for chunk in replies(&piled).chunks(100) {
        flooder.send_packets(target.peer_id(), chunk).await.unwrap();
    }
    wait_until(TIMEOUT, "the piled flood processed", || settled(650)).await;
    assert_eq!(mailbox_finals(target), 300);
    assert_eq!(target.metrics().dropped("deposit_quota"), 50);

    // Another source is not affected.
    let honest = client_for(&[target]);
    let mine: Vec<[u8; 32]> = (0..10).map(|_| random32()).collect();
    honest
        .send_packets(target.peer_id(), &replies(&mine))
        .await
        .unwrap();
    wait_until(TIMEOUT, "the other source's replies stored", || {
        let done = mailbox_finals(target) == 310;
        async move { done }
    })
    .await;
    assert_eq!(target.metrics().dropped("deposit_quota"), 50);
    assert_eq!(target.metrics().dropped("mailbox_quota"), 300);
    node.node.shutdown().await.unwrap();
}
