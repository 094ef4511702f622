//! A flood of garbage packets that each cost the node an X25519 exchange:
//! the node stays bounded, counts every dropped packet, and still forwards
//! an honest peer's packets during and after the flood.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::Duration,
};

use futures::AsyncWriteExt as _;
use leak_node::{StartOptions, client::Peer, node::unix_now, wire};
use leak_protocol::{PACKET_LEN, Packet};
use leak_tests::{
    TestNode, client_for, count_panics, descriptor_of, fetch_replies, hop, knows, random32,
    reply_packet, test_config, wait_until,
};
use rand::Rng as _;

const FLOODERS: usize = 5;
const FLOOD_PER_PEER: usize = 4_000;
const FLOOD: usize = FLOODERS * FLOOD_PER_PEER;
/// Honest packets sent during the flood (one more goes before, one after).
const HONEST: usize = 20;
const PEER_QUEUE: usize = 64;
const GLOBAL_QUEUE: usize = 256;
const TIMEOUT: Duration = Duration::from_secs(120);

/// A packet that passes every check before the header MAC: the right
/// version and the current epoch's key hint, then random bytes.
fn garbage_packet() -> Packet {
    let mut bytes = vec![0u8; PACKET_LEN];
    rand::rng().fill_bytes(&mut bytes);
    bytes[0] = leak_protocol::sphinx::VERSION;
    bytes[1] = (unix_now() / 3600) as u8;
    Packet::from_bytes(&bytes).unwrap()
}

/// Writes `count` garbage packets to `target` on a fresh stream, as fast as
/// the link takes them; returns how many were written, and the peer
/// (dropping it would cut the connection before the last packets leave).
async fn flood(peer: Peer, target: libp2p::PeerId, count: usize) -> (usize, Peer) {
    let mut stream = peer.open_packet_stream(target).await.unwrap();
    let mut written = 0;
    for _ in 0..count {
        if let Err(e) = wire::write_packet(&mut stream, &garbage_packet()).await {
            eprintln!("flooder {}: writing packet {written}: {e}", peer.peer_id());
            break;
        }
        written += 1;
    }
    let _ = stream.flush().await;
    let _ = stream.close().await;
    (written, peer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_stays_bounded_and_honest_packets_get_through() {
    let panics = count_panics();
    let root = tempfile::tempdir().unwrap();
    let (dir_b, dir_c) = (root.path().join("b"), root.path().join("c"));
    let c = TestNode::start(
        dir_c.clone(),
        test_config(&dir_c, 3600, vec![]),
        StartOptions::default(),
    )
    .await;
    let mut b_config = test_config(&dir_b, 3600, vec![c.node.dial_addr()]);
    b_config.limits.peer_queue = PEER_QUEUE;
    b_config.limits.global_queue = GLOBAL_QUEUE;
    let b = TestNode::start(dir_b, b_config, StartOptions::default()).await;
    let (bn, cn) = (&b.node, &c.node);
    wait_until(TIMEOUT, "B to know C", || {
        let done = knows(bn, cn.node_id());
        async move { done }
    })
    .await;

    // B -> C, C keeps a mailbox per packet.
    let path = vec![
        hop(&descriptor_of(bn, bn).unwrap(), 0),
        hop(&descriptor_of(bn, cn).unwrap(), 0),
    ];
    let honest: Vec<_> = (0..HONEST + 2)
        .map(|i| {
            let capability = random32();
            let (packet, keys) = reply_packet(&path, &capability, format!("reply {i}").as_bytes());
            (capability, packet, keys)
        })
        .collect();
    let check_reply = async |client: &Peer, i: usize| {
        let (capability, _, keys) = &honest[i];
        let replies = fetch_replies(client, cn, capability, keys, TIMEOUT).await;
        assert_eq!(replies.len(), 1, "honest reply {i} reached C");
        assert_eq!(
            &keys.open(&replies[0]).unwrap()[..],
            format!("reply {i}").as_bytes()
        );
    };

    // The honest peer's link to B, in use before the flood starts.
    let client = client_for(&[bn, cn]);
    let mut honest_stream = client.open_packet_stream(bn.peer_id()).await.unwrap();
    wire::write_packet(&mut honest_stream, &honest[0].1)
        .await
        .unwrap();
    honest_stream.flush().await.unwrap();
    check_reply(&client, 0).await;

    // Watch the queue while the flood runs.
    let watching = Arc::new(AtomicBool::new(true));
    let deepest = Arc::new(AtomicI64::new(0));
    let sampler = {
        let (watching, deepest) = (watching.clone(), deepest.clone());
        let gauge = bn.metrics().queue_depth.clone();
        tokio::spawn(async move {
            let mut samples = 0u64;
            while watching.load(Ordering::SeqCst) {
                deepest.fetch_max(gauge.get(), Ordering::SeqCst);
                samples += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            samples
        })
    };

    // The flooders connect and open their streams all at once.
    let flooders: Vec<_> = (0..FLOODERS)
        .map(|_| tokio::spawn(flood(client_for(&[bn]), bn.peer_id(), FLOOD_PER_PEER)))
        .collect();

    // The honest peer sends its packets a few ms apart, during the flood.
    for (_, packet, _) in &honest[1..=HONEST] {
        wire::write_packet(&mut honest_stream, packet)
            .await
            .unwrap();
        honest_stream.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut written = 0;
    let mut flooding_peers = Vec::new();
    for flooder in flooders {
        let (n, peer) = flooder.await.unwrap();
        written += n;
        flooding_peers.push(peer);
    }
    assert_eq!(written, FLOOD, "the flooders wrote the whole flood");
    for i in 1..=HONEST {
        check_reply(&client, i).await;
    }

    // Every flood packet is counted once, for one reason.
    let metrics = bn.metrics();
    let flood_drops = || {
        ["bad_mac", "invalid_key", "peer_queue_full", "queue_full"]
            .iter()
            .map(|&r| metrics.dropped(r))
            .sum::<u64>()
    };
    wait_until(TIMEOUT, "every flood packet to be accounted for", || {
        let done = metrics.packets_received.get() == (FLOOD + 1 + HONEST) as u64
            && flood_drops() == FLOOD as u64
            && metrics.packets_forwarded.get() == (1 + HONEST) as u64;
        async move { done }
    })
    .await;
    watching.store(false, Ordering::SeqCst);
    let samples = sampler.await.unwrap();
    let deepest = deepest.load(Ordering::SeqCst);
    assert!(
        deepest <= GLOBAL_QUEUE as i64,
        "queue depth {deepest} over the bound {GLOBAL_QUEUE}"
    );
    let (bad_mac, peer_full, full) = (
        metrics.dropped("bad_mac"),
        metrics.dropped("peer_queue_full"),
        metrics.dropped("queue_full"),
    );
    assert!(bad_mac > 0, "garbage was processed and dropped");
    assert!(peer_full + full > 0, "the queue limits dropped some of it");
    assert_eq!(
        metrics.inbound_streams_refused.get(),
        0,
        "every stream taken"
    );
    println!(
        "flood of {FLOOD}: bad_mac {bad_mac}, peer_queue_full {peer_full}, queue_full {full}, \
         deepest queue {deepest} ({samples} samples)"
    );

    // After the flood, the node still forwards.
    wire::write_packet(&mut honest_stream, &honest[HONEST + 1].1)
        .await
        .unwrap();
    honest_stream.flush().await.unwrap();
    check_reply(&client, HONEST + 1).await;
    honest_stream.close().await.unwrap();
    drop(flooding_peers);

    b.node.shutdown().await.unwrap();
    c.node.shutdown().await.unwrap();
    assert_eq!(panics.load(Ordering::SeqCst), 0, "nothing panicked");
}
