//! Key epochs: a packet built for epoch e is accepted during epoch e + 1
//! (the previous epoch's key is kept) and dropped from epoch e + 2 on, when
//! the secret of e is gone from memory and from disk.
//!
//! A real node over real sockets, on a manual clock: the test moves the
//! node's time across the epoch boundaries instead of sleeping through
//! them (the many-epoch, many-node version is in `virtual_time.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{sync::Arc, time::Duration};

use leak_node::{StartOptions, clock::ManualClock, store::Store};
use leak_tests::{
    TestNode, client_for, fetch_replies, hop_for_epoch, mailbox_finals, opening, own_descriptor,
    random32, reply_packet, test_config, unix_time, wait_for_drops, wait_until,
};

/// Seconds per epoch: short, so the test crosses two boundaries.
const PERIOD: u64 = 4;
/// How far into an epoch a packet is sent: far from both boundaries.
const INTO_EPOCH: Duration = Duration::from_millis(1500);
const TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packet_is_accepted_one_epoch_late_and_dropped_two_epochs_late() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("a");
    let config = test_config(&dir, PERIOD, vec![]);
    let clock = Arc::new(ManualClock::new(unix_time().as_millis() as u64));
    let options = StartOptions {
        clock: Some(clock.clone()),
        ..StartOptions::default()
    };
    let a = TestNode::start(dir.clone(), config.clone(), options).await;
    let an = &a.node;

    // The epoch the node's first descriptor was signed in: it published
    // that epoch's key (and the next one's).
    let descriptor = own_descriptor(an);
    let e = descriptor.epoch_at(descriptor.published_at);
    let (late_cap, too_late_cap) = (random32(), random32());
    let path = [hop_for_epoch(&descriptor, e, 0)];
    let (late, late_keys) = reply_packet(&path, &late_cap, b"one epoch late");
    let (too_late, too_late_keys) = reply_packet(&path, &too_late_cap, b"two epochs late");

    // Connect the client now, so sending later takes no handshake.
    let client = client_for(&[an]);
    assert!(
        opening(
            &late_keys,
            client.fetch_mailbox(an.peer_id(), &late_cap).await.unwrap()
        )
        .is_empty()
    );

    // Well into epoch e + 1: the key of e is the previous epoch's, accepted.
    let start_of = |epoch: u64| Duration::from_secs(epoch * PERIOD);
    clock.set_ms((start_of(e + 1) + INTO_EPOCH).as_millis() as u64);
    client.send_packets(an.peer_id(), &[late]).await.unwrap();
    let replies = fetch_replies(&client, an, &late_cap, &late_keys, TIMEOUT).await;
    assert_eq!(replies.len(), 1, "the reply one epoch late was stored");
    assert_eq!(&late_keys.open(&replies[0]).unwrap()[..], b"one epoch late");
    assert_eq!(an.metrics().dropped("unknown_epoch"), 0);

    // Well into epoch e + 2: the key of e is gone.
    clock.set_ms((start_of(e + 2) + INTO_EPOCH).as_millis() as u64);
    client
        .send_packets(an.peer_id(), &[too_late])
        .await
        .unwrap();
    wait_for_drops(an, "unknown_epoch", 1, TIMEOUT).await;
    assert_eq!(an.metrics().dropped("unknown_epoch"), 1);
    assert_eq!(mailbox_finals(an), 1, "nothing more stored");
    assert!(
        opening(
            &too_late_keys,
            client
                .fetch_mailbox(an.peer_id(), &too_late_cap)
                .await
                .unwrap()
        )
        .is_empty()
    );
    // The maintenance tick (a quarter period) rotates the ring.
    wait_until(TIMEOUT, "the key of epoch e to be forgotten", || {
        let epochs = an.key_epochs();
        let done = !epochs.is_empty() && epochs.iter().all(|&k| k > e);
        async move { done }
    })
    .await;

    a.node.shutdown().await.unwrap();
    let store = Store::open(&config.database_path()).unwrap();
    let on_disk: Vec<u64> = store
        .mix_keys()
        .unwrap()
        .iter()
        .map(|(epoch, _)| *epoch)
        .collect();
    assert!(!on_disk.is_empty(), "the live keys are kept");
    assert!(
        on_disk.iter().all(|&epoch| epoch > e),
        "no secret of epoch {e} or older on disk: {on_disk:?}"
    );
}
