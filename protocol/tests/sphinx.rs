//! Properties of the packet format: delivery, constant size, tamper and
//! replay detection, reply blocks, and decoders that survive any input.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{ByteRng, label_bytes, path_of, test_nodes};
use leak_protocol::{
    DropReason, MixSecret, PACKET_LEN, Packet, Processed, build_packet, build_reply_block,
    key_hint, process_packet,
    sphinx::{FinalPayload, HEADER_LEN, MAX_HOPS, MESSAGE_CAPACITY, MailboxId, PAYLOAD_LEN},
};
use proptest::prelude::*;

/// Runs a packet through `secrets` in order and returns the exit's message.
fn run_path(mut packet: Packet, secrets: &[&MixSecret]) -> Result<Vec<u8>, (usize, DropReason)> {
    for (i, secret) in secrets.iter().enumerate() {
        assert_eq!(packet.as_bytes().len(), PACKET_LEN);
        match process_packet(packet.as_bytes(), secret) {
            Processed::Forward(f) => packet = f.packet,
            Processed::Final(f) => match f.payload {
                FinalPayload::Exit { message } => return Ok(message.to_vec()),
                FinalPayload::Mailbox { .. } => panic!("forward path ended at a mailbox"),
            },
            Processed::Drop(reason) => return Err((i, reason)),
        }
    }
    panic!("path ended without a final hop")
}

fn rng(seed: u64) -> ByteRng {
    ByteRng::from_label(&format!("proptest {seed}"), 4096)
}

prop_compose! {
    fn path_spec()(hops in 1..=MAX_HOPS, seed in any::<u64>())
        (delays in proptest::collection::vec(0u32..600_000, hops), seed in Just(seed))
        -> (Vec<u32>, u64) { (delays, seed) }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Every path length delivers the message; every hop sees the next hop and
    /// the delay the client chose, and every link carries PACKET_LEN bytes.
    #[test]
    fn round_trip_any_path(
        (delays, seed) in path_spec(),
        message in proptest::collection::vec(any::<u8>(), 0..=MESSAGE_CAPACITY),
    ) {
        let nodes = test_nodes(delays.len(), &format!("rt {seed}"));
        let path = path_of(&nodes, &delays, 7);
        let mut packet = build_packet(&path, &message, &mut rng(seed)).unwrap();
        for (i, node) in nodes.iter().enumerate() {
            prop_assert_eq!(packet.as_bytes().len(), PACKET_LEN);
            prop_assert_eq!(key_hint(packet.as_bytes()), Some(7));
            match process_packet(packet.as_bytes(), &node.secret) {
                Processed::Forward(f) => {
                    prop_assert!(i + 1 < nodes.len());
                    prop_assert_eq!(f.next_hop, nodes[i + 1].id);
                    prop_assert_eq!(f.delay.as_millis(), delays[i]);
                    packet = f.packet;
                }
                Processed::Final(f) => {
                    prop_assert_eq!(i + 1, nodes.len());
                    prop_assert_eq!(f.delay.as_millis(), delays[i]);
                    match f.payload {
                        FinalPayload::Exit { message: got } => prop_assert_eq!(&got[..], &message[..]),
                        FinalPayload::Mailbox { .. } => prop_assert!(false, "mailbox"),
                    }
                }
                Processed::Drop(r) => prop_assert!(false, "dropped at hop {i}: {r}"),
            }
        }
    }

    /// A flipped bit anywhere in the header of any link's packet is dropped
    /// by the hop that receives it.
    #[test]
    fn header_bit_flip_dropped_at_next_hop(
        (delays, seed) in path_spec(),
        link in 0usize..MAX_HOPS,
        bit in 0usize..HEADER_LEN * 8,
    ) {
        let nodes = test_nodes(delays.len(), &format!("hdr {seed}"));
        let link = link % nodes.len();
        let mut packet = build_packet(&path_of(&nodes, &delays, 0), b"hello", &mut rng(seed)).unwrap();
        for node in &nodes[..link] {
            match process_packet(packet.as_bytes(), &node.secret) {
                Processed::Forward(f) => packet = f.packet,
                other => prop_assert!(false, "unexpected {other:?}"),
            }
        }
        let mut bytes = packet.as_bytes().to_vec();
        bytes[bit / 8] ^= 1 << (bit % 8);
        let dropped = matches!(
            process_packet(&bytes, &nodes[link].secret),
            Processed::Drop(DropReason::BadMac | DropReason::UnknownVersion | DropReason::InvalidKey)
        );
        prop_assert!(dropped);
    }

    /// A flipped bit anywhere in the payload on any link is never delivered:
    /// relays pass it on, the exit drops it.
    #[test]
    fn payload_bit_flip_never_delivered(
        (delays, seed) in path_spec(),
        link in 0usize..MAX_HOPS,
        bit in 0usize..PAYLOAD_LEN * 8,
    ) {
        let nodes = test_nodes(delays.len(), &format!("pl {seed}"));
        let link = link % nodes.len();
        let mut packet = build_packet(&path_of(&nodes, &delays, 0), b"hello", &mut rng(seed)).unwrap();
        for node in &nodes[..link] {
            match process_packet(packet.as_bytes(), &node.secret) {
                Processed::Forward(f) => packet = f.packet,
                other => prop_assert!(false, "unexpected {other:?}"),
            }
        }
        let mut bytes = packet.as_bytes().to_vec();
        bytes[HEADER_LEN + bit / 8] ^= 1 << (bit % 8);
        let tampered = Packet::from_bytes(&bytes).unwrap();
        let secrets: Vec<_> = nodes[link..].iter().map(|n| &n.secret).collect();
        prop_assert_eq!(
            run_path(tampered, &secrets),
            Err((secrets.len() - 1, DropReason::PayloadIntegrity))
        );
    }

    /// A packet processed under any key but the one it was built for is dropped.
    #[test]
    fn wrong_key_dropped((delays, seed) in path_spec(), key in any::<[u8; 32]>()) {
        let nodes = test_nodes(delays.len(), &format!("wk {seed}"));
        let packet = build_packet(&path_of(&nodes, &delays, 0), b"x", &mut rng(seed)).unwrap();
        let wrong = MixSecret::from_bytes(key);
        prop_assume!(wrong.public() != nodes[0].secret.public());
        prop_assert_eq!(process_packet(packet.as_bytes(), &wrong), Processed::Drop(DropReason::BadMac));
    }

    /// Processing is deterministic: the same packet gives the same replay tag
    /// (and output), and another packet on the same path gives another tag.
    #[test]
    fn replay_tag_stable_and_unique((delays, seed) in path_spec()) {
        let nodes = test_nodes(delays.len(), &format!("tag {seed}"));
        let path = path_of(&nodes, &delays, 0);
        let a = build_packet(&path, b"x", &mut rng(seed)).unwrap();
        let b = build_packet(&path, b"x", &mut rng(seed.wrapping_add(1))).unwrap();
        let first = process_packet(a.as_bytes(), &nodes[0].secret);
        let again = process_packet(a.as_bytes(), &nodes[0].secret);
        let other = process_packet(b.as_bytes(), &nodes[0].secret);
        prop_assert!(first.replay_tag().is_some());
        prop_assert_eq!(first.replay_tag(), again.replay_tag());
        prop_assert_eq!(&first, &again);
        prop_assert_ne!(first.replay_tag(), other.replay_tag());
    }

    /// A reply block carries the exit's message to the mailbox, and only the
    /// client's kept keys open it.
    #[test]
    fn reply_block_round_trip(
        (delays, seed) in path_spec(),
        message in proptest::collection::vec(any::<u8>(), 0..=MESSAGE_CAPACITY),
        mailbox in any::<[u8; 32]>(),
    ) {
        let nodes = test_nodes(delays.len(), &format!("surb {seed}"));
        let (block, keys) = build_reply_block(&path_of(&nodes, &delays, 3), MailboxId(mailbox), &mut rng(seed)).unwrap();
        prop_assert_eq!(block.first_hop(), nodes[0].id);
        let (first, mut packet) = block.into_packet(&message).unwrap();
        prop_assert_eq!(first, nodes[0].id);
        let mut stored = None;
        for (i, node) in nodes.iter().enumerate() {
            prop_assert_eq!(packet.as_bytes().len(), PACKET_LEN);
            match process_packet(packet.as_bytes(), &node.secret) {
                Processed::Forward(f) => packet = f.packet,
                Processed::Final(f) => {
                    prop_assert_eq!(i + 1, nodes.len());
                    match f.payload {
                        FinalPayload::Mailbox { mailbox: m, reply } => {
                            prop_assert_eq!(m, MailboxId(mailbox));
                            stored = Some(reply);
                        }
                        FinalPayload::Exit { .. } => prop_assert!(false, "exit"),
                    }
                }
                Processed::Drop(r) => prop_assert!(false, "dropped: {r}"),
            }
        }
        let stored = stored.unwrap();
        prop_assert_eq!(&keys.open(stored.as_ref()).unwrap()[..], &message[..]);
        // Tampering is caught by the client.
        let mut bad = stored.to_vec();
        bad[seed as usize % PAYLOAD_LEN] ^= 0x20;
        prop_assert!(keys.open(&bad).is_err());
    }

    /// Packet processing survives arbitrary bytes of any length.
    #[test]
    fn process_survives_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..PACKET_LEN + 64)) {
        let node = &test_nodes(1, "fuzz")[0];
        let _ = process_packet(&bytes, &node.secret);
    }

    /// Full-length random packets with our version byte are dropped, not delivered.
    #[test]
    fn random_packets_dropped(mut bytes in proptest::collection::vec(any::<u8>(), PACKET_LEN)) {
        bytes[0] = leak_protocol::sphinx::VERSION;
        let node = &test_nodes(1, "fuzz")[0];
        prop_assert!(matches!(process_packet(&bytes, &node.secret), Processed::Drop(_)));
    }
}

#[test]
fn build_refuses_bad_paths_and_oversize_messages() {
    use leak_protocol::sphinx::BuildError;
    let nodes = test_nodes(6, "bad");
    let mut r = rng(1);
    assert_eq!(build_packet(&[], b"x", &mut r), Err(BuildError::EmptyPath));
    assert_eq!(
        build_packet(&path_of(&nodes, &[0; 6], 0), b"x", &mut r),
        Err(BuildError::TooManyHops {
            hops: 6,
            max: MAX_HOPS
        })
    );
    let big = vec![0u8; MESSAGE_CAPACITY + 1];
    assert_eq!(
        build_packet(&path_of(&nodes[..3], &[0; 3], 0), &big, &mut r),
        Err(BuildError::MessageTooLong {
            len: MESSAGE_CAPACITY + 1,
            max: MESSAGE_CAPACITY
        })
    );
    let mut path = path_of(&nodes[..2], &[0; 2], 0);
    path[1].key = leak_protocol::MixPublicKey([0u8; 32]);
    assert_eq!(
        build_packet(&path, b"x", &mut r),
        Err(BuildError::InvalidKey { hop: 1 })
    );
}

#[test]
fn wrong_length_and_version_dropped() {
    let node = &test_nodes(1, "len")[0];
    assert_eq!(
        process_packet(&[], &node.secret),
        Processed::Drop(DropReason::WrongLength)
    );
    assert_eq!(
        process_packet(&vec![1u8; PACKET_LEN - 1], &node.secret),
        Processed::Drop(DropReason::WrongLength)
    );
    let packet = build_packet(
        &path_of(std::slice::from_ref(node), &[0], 0),
        b"x",
        &mut rng(2),
    )
    .unwrap();
    // Version 1 (stream-cipher payload layers) and any later version.
    for version in [1, leak_protocol::sphinx::VERSION + 1] {
        let mut bytes = packet.as_bytes().to_vec();
        bytes[0] = version;
        assert_eq!(
            process_packet(&bytes, &node.secret),
            Processed::Drop(DropReason::UnknownVersion)
        );
    }
}

/// The last hop sees its own slot followed by bytes that look random whatever
/// the path length: no run of zeros gives the path length away.
#[test]
fn last_hop_cannot_read_path_length_from_padding() {
    for hops in 1..=MAX_HOPS {
        let nodes = test_nodes(hops, "len-leak");
        let seed_label = format!("pad {hops}");
        let mut r = ByteRng::new(label_bytes(&seed_label, 4096));
        let mut packet = build_packet(&path_of(&nodes, &vec![0; hops], 0), b"x", &mut r).unwrap();
        for node in &nodes[..hops - 1] {
            match process_packet(packet.as_bytes(), &node.secret) {
                Processed::Forward(f) => packet = f.packet,
                other => panic!("{other:?}"),
            }
        }
        // The header the last hop receives has no long zero run anywhere in beta.
        let beta = &packet.as_bytes()[34..34 + 480];
        let longest_zero_run = beta.split(|&b| b != 0).map(<[u8]>::len).max().unwrap_or(0);
        assert!(
            longest_zero_run < 4,
            "hops={hops}: zero run of {longest_zero_run}"
        );
    }
}
