//! Streams between peers and a node: what a peer writes arrives, however
//! many peers open streams at once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use futures::future::join_all;
use leak_node::StartOptions;
use leak_protocol::{PACKET_LEN, Packet};
use leak_tests::{TestNode, client_for, random32, test_config};

async fn start_node(root: &std::path::Path) -> TestNode {
    let dir = root.join("a");
    TestNode::start(
        dir.clone(),
        test_config(&dir, 3600, vec![]),
        StartOptions::default(),
    )
    .await
}

/// `Peer::send_packets` returns once the node has read every packet, so a
/// client that exits right after sending (drops its peer, and with it the
/// connection) loses nothing. It used to return as soon as the packets were
/// buffered, and about half of them were lost that way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_sent_by_a_peer_dropped_at_once_all_arrive() {
    const PEERS: usize = 20;
    const PER_PEER: usize = 8;
    let root = tempfile::tempdir().unwrap();
    let a = start_node(root.path()).await;
    for i in 0..PEERS {
        let client = client_for(&[&a.node]);
        let packets = vec![Packet::from_bytes(&[i as u8; PACKET_LEN]).unwrap(); PER_PEER];
        client
            .send_packets(a.node.peer_id(), &packets)
            .await
            .unwrap();
        drop(client);
    }
    assert_eq!(
        a.node.metrics().packets_received.get(),
        (PEERS * PER_PEER) as u64,
        "every packet was read before send_packets returned"
    );
    a.node.shutdown().await.unwrap();
}

/// Many peers opening streams at the same moment are all served. (With
/// libp2p-stream's `accept`, the node took one waiting stream at a time and
/// reset the others: a third of these sends failed, and before
/// `send_packets` waited for the node, their packets were lost silently.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_opened_at_once_are_all_served() {
    const PEERS: usize = 20;
    const ROUNDS: usize = 5;
    let root = tempfile::tempdir().unwrap();
    let a = start_node(root.path()).await;
    let node = a.node.peer_id();
    let clients: Vec<_> = (0..PEERS).map(|_| client_for(&[&a.node])).collect();
    // Connected first, one at a time.
    for client in &clients {
        client.fetch_mailbox(node, &random32()).await.unwrap();
    }

    for round in 0..ROUNDS {
        let packet = Packet::from_bytes(&[round as u8; PACKET_LEN]).unwrap();
        let sent = join_all(
            clients
                .iter()
                .map(|c| c.send_packets(node, std::slice::from_ref(&packet))),
        )
        .await;
        for (i, result) in sent.into_iter().enumerate() {
            result.unwrap_or_else(|e| panic!("round {round}, peer {i}: {e}"));
        }
    }
    assert_eq!(
        a.node.metrics().packets_received.get(),
        (PEERS * ROUNDS) as u64
    );

    let capability = random32();
    let fetched = join_all(clients.iter().map(|c| c.fetch_mailbox(node, &capability))).await;
    for (i, result) in fetched.into_iter().enumerate() {
        // An empty mailbox answers one entry of filler, like any other.
        let entries = result.unwrap_or_else(|e| panic!("mailbox, peer {i}: {e}"));
        assert_eq!(entries.len(), leak_node::wire::MAILBOX_ANSWER_SLOTS);
        assert!(
            entries
                .iter()
                .all(|e| e.len() == leak_protocol::sphinx::PAYLOAD_LEN)
        );
    }
    let directories = join_all(clients.iter().map(|c| c.directory(node, 0))).await;
    for (i, result) in directories.into_iter().enumerate() {
        let answer = result.unwrap_or_else(|e| panic!("directory, peer {i}: {e}"));
        assert_eq!(answer.descriptors.len(), 1);
        assert!(answer.roster.is_some(), "the node serves its roster");
    }
    assert_eq!(a.node.metrics().inbound_streams_refused.get(), 0);
    a.node.shutdown().await.unwrap();
}

/// A sender's agent polls its guard over one long-lived mailbox stream:
/// the node answers request after request on it. One peer holds at most
/// two mailbox streams: a third is reset and counted, and once one of the
/// two ends, the peer is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailbox_stream_serves_many_polls_and_one_peer_few_streams() {
    let root = tempfile::tempdir().unwrap();
    let a = start_node(root.path()).await;
    let node = a.node.peer_id();
    let client = client_for(&[&a.node]);
    let link = client.mailbox_link(node);
    let capability = random32();
    for _ in 0..5 {
        let entries = link.fetch(&capability).await.unwrap();
        assert_eq!(entries.len(), leak_node::wire::MAILBOX_ANSWER_SLOTS);
    }
    assert_eq!(a.node.metrics().inbound_streams_refused.get(), 0);

    // Two more streams that ask nothing: the link's own makes three.
    let other = client_for(&[&a.node]);
    let first = other
        .open_stream(node, leak_node::wire::MAILBOX_PROTOCOL)
        .await
        .unwrap();
    let second = other
        .open_stream(node, leak_node::wire::MAILBOX_PROTOCOL)
        .await
        .unwrap();
    let third = other.mailbox_link(node);
    assert!(third.fetch(&capability).await.is_err());
    assert_eq!(a.node.metrics().inbound_streams_refused.get(), 1);
    // The first peer's link is not affected.
    link.fetch(&capability).await.unwrap();
    drop((first, second));
    let mut served = false;
    for _ in 0..50 {
        if third.fetch(&capability).await.is_ok() {
            served = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(served, "a freed slot serves the peer again");
    a.node.shutdown().await.unwrap();
}
