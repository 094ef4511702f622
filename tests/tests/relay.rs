//! Real `leak-node` relays in one process, over loopback TCP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use leak_node::{StartOptions, client::Peer, exit::ExitDelivery};
use leak_protocol::{MailboxId, build_packet, build_reply_block};
use leak_tests::{
    TestNode, descriptor_of, hop, opening, own_descriptor, random32, test_config, wait_until,
};
use tokio::sync::mpsc;

/// Five nodes: a packet crosses three hops to a mailbox, and another three
/// hops to an exit; each hop holds the packet for the delay asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_three_hops() {
    let dir = tempfile::tempdir().unwrap();
    let first = TestNode::start(
        dir.path().join("n0"),
        test_config(&dir.path().join("n0"), 3600, vec![]),
        StartOptions::default(),
    )
    .await;
    let bootstrap = vec![first.node.dial_addr()];
    let mut nodes = vec![first];
    let (exit_tx, mut exit_rx) = mpsc::channel::<ExitDelivery>(8);
    for i in 1..5 {
        let d = dir.path().join(format!("n{i}"));
        let options = if i == 4 {
            StartOptions {
                exit_sink: Some(exit_tx.clone()),
                ..StartOptions::default()
            }
        } else {
            StartOptions::default()
        };
        nodes.push(
            TestNode::start(d.clone(), test_config(&d, 3600, bootstrap.clone()), options).await,
        );
    }
    // Every node learns every descriptor.
    wait_until(Duration::from_secs(30), "the directory to converge", || {
        let done = nodes.iter().all(|n| n.node.directory().len() == 5);
        async move { done }
    })
    .await;

    // A reply block B -> C -> D ending at D's mailbox, used like an exit would.
    let (b, c, d) = (&nodes[1].node, &nodes[2].node, &nodes[3].node);
    let path = vec![
        hop(&descriptor_of(b, b).unwrap(), 300),
        hop(&descriptor_of(b, c).unwrap(), 200),
        hop(&descriptor_of(b, d).unwrap(), 100),
    ];
    let capability = random32();
    let (block, keys) = build_reply_block(
        &path,
        MailboxId::from_capability(&capability),
        &mut rand::rng(),
    )
    .unwrap();
    let (first_hop, packet) = block.into_packet(b"a receipt").unwrap();
    assert_eq!(first_hop, b.node_id());

    let client = Peer::new().unwrap();
    client.add_node(b.peer_id(), b.listen_addrs().to_vec());
    client.add_node(d.peer_id(), d.listen_addrs().to_vec());
    let sent = Instant::now();
    client.send_packets(b.peer_id(), &[packet]).await.unwrap();
    let mut replies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while replies.is_empty() && Instant::now() < deadline {
        replies = opening(
            &keys,
            client
                .fetch_mailbox(d.peer_id(), &capability)
                .await
                .unwrap(),
        );
        if replies.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let elapsed = sent.elapsed();
    assert_eq!(replies.len(), 1, "the reply reached D's mailbox");
    assert_eq!(&keys.open(&replies[0]).unwrap()[..], b"a receipt");
    assert!(
        elapsed >= Duration::from_millis(600),
        "mixing delays respected: {elapsed:?}"
    );
    // Fetching acknowledged it: it is gone.
    assert!(
        opening(
            &keys,
            client
                .fetch_mailbox(d.peer_id(), &capability)
                .await
                .unwrap()
        )
        .is_empty()
    );

    // A forward packet B -> C -> E where E is an exit.
    let e = &nodes[4].node;
    let path = vec![
        hop(&descriptor_of(b, b).unwrap(), 0),
        hop(&descriptor_of(b, c).unwrap(), 0),
        hop(&descriptor_of(b, e).unwrap(), 0),
    ];
    let packet = build_packet(&path, b"an encoded leak", &mut rand::rng()).unwrap();
    client.send_packets(b.peer_id(), &[packet]).await.unwrap();
    let delivered = tokio::time::timeout(Duration::from_secs(20), exit_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&delivered.message[..], b"an encoded leak");

    for n in nodes {
        n.node.shutdown().await.unwrap();
    }
    let _ = own_descriptor;
}

/// A healthy node reports no failed part, and still shuts down cleanly after
/// being watched (the supervisor in `leak-node run` relies on both).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_node_reports_no_failure() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = TestNode::start(
        dir.path().join("n"),
        test_config(&dir.path().join("n"), 3600, vec![]),
        StartOptions::default(),
    )
    .await;
    let watched = tokio::time::timeout(Duration::from_secs(3), node.node.failed()).await;
    assert!(watched.is_err(), "a part stopped: {watched:?}");
    node.node.shutdown().await.unwrap();
}
