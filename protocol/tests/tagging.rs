//! The tagging attack, played against the real packet code, and the
//! one-bit changes it is made of.
//!
//! An entry relay and an exit that collude want to link a sender to a leak
//! without relying on timing. The entry XORs a marker (what it knows of
//! the sender) into the payload of the packet it forwards: a leak never
//! fills the payload, so under the layers its tail is zero padding. The
//! exit XORs the same marker out before processing the packet. Under
//! version 1's per-hop stream-cipher layers the marker crossed the middle
//! hop unchanged, the XOR cancelled it, the end-to-end seal verified, the
//! leak was delivered and the sender saw `Delivered`: a silent channel.
//! Under LIONESS layers (since version 2, SPEC.md §14) the middle hop's
//! decryption turns the marked payload into noise, the exit's XOR cannot
//! repair it, its checked zeros (version 3) are no longer zero, and the
//! exit drops the packet with `PayloadIntegrity` (which a node counts as
//! `payload_integrity`). A reply block's payload (a
//! receipt, a loop) fails the client's check the same way.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{ByteRng, label_bytes, path_of, test_nodes};
use leak_protocol::{
    DropReason, Leak, MessageId, MixSecret, Outcome, Packet, Processed, Receipt, Recipient,
    Relationship, build_packet, build_reply_block, cover,
    payload::Stamp,
    process_packet,
    reply::ReplyError,
    seal::{LeakContents, seal_leak},
    sphinx::{FinalPayload, HEADER_LEN, MailboxId, PAYLOAD_LEN},
};

/// What the entry writes into the payload: 128 bytes naming the sender.
fn marker() -> Vec<u8> {
    b"sender #4711, first seen 02:40 UTC, guard of 38 clients; "
        .iter()
        .copied()
        .cycle()
        .take(128)
        .collect()
}

/// Where the marker goes: the end of the payload, just before the seal's
/// tag, where a leak's framing has zero padding under the layers.
const MARKER_AT: usize = PAYLOAD_LEN - 16 - 128;

/// `packet` with `marker` XORed into its payload at `at`.
fn xor_payload(packet: &Packet, marker: &[u8], at: usize) -> Packet {
    let mut bytes = packet.as_bytes().to_vec();
    for (b, m) in bytes[HEADER_LEN + at..].iter_mut().zip(marker) {
        *b ^= m;
    }
    Packet::from_bytes(&bytes).unwrap()
}

/// `packet` with one payload bit flipped.
fn flip_payload_bit(packet: &Packet, bit: usize) -> Packet {
    xor_payload(packet, &[1 << (bit % 8)], bit / 8)
}

/// Processes `packet` at a hop that must forward it.
fn relay(packet: &Packet, secret: &MixSecret) -> Packet {
    match process_packet(packet.as_bytes(), secret) {
        Processed::Forward(forward) => forward.packet,
        other => panic!("a relay did not forward: {other:?}"),
    }
}

/// What the last hop makes of `packet`: the exit's message, the mailbox's
/// stored reply, or the drop reason.
enum End {
    Exit(Vec<u8>),
    Mailbox(Vec<u8>),
    Dropped(DropReason),
}

fn finish(packet: &Packet, secret: &MixSecret) -> End {
    match process_packet(packet.as_bytes(), secret) {
        Processed::Final(done) => match done.payload {
            FinalPayload::Exit { message } => End::Exit(message.to_vec()),
            FinalPayload::Mailbox { reply, .. } => End::Mailbox(reply.to_vec()),
        },
        Processed::Drop(reason) => End::Dropped(reason),
        Processed::Forward(_) => panic!("the last hop forwarded"),
    }
}

/// Runs `packet` through every hop of `secrets`; `tamper(link, packet)`
/// may change the packet on each link (link `i` arrives at hop `i`).
fn run(
    mut packet: Packet,
    secrets: &[&MixSecret],
    mut tamper: impl FnMut(usize, Packet) -> Packet,
) -> End {
    let (last, relays) = secrets.split_last().unwrap();
    for (link, secret) in relays.iter().enumerate() {
        packet = relay(&tamper(link, packet), secret);
    }
    finish(&tamper(relays.len(), packet), last)
}

/// The XOR the entry applies after its processing and the exit removes
/// before its own, on a path of three hops: links 1 and 2.
fn tag_on_link_1_untag_on_link_2(link: usize, packet: Packet) -> Packet {
    match link {
        1 | 2 => xor_payload(&packet, &marker(), MARKER_AT),
        _ => packet,
    }
}

fn contents(recipient: &Recipient) -> LeakContents<'_> {
    LeakContents {
        message_id: MessageId(label_bytes("tagging message id", 16).try_into().unwrap()),
        recipient,
        relationship: Relationship::Coworker,
        text: "The audit of the third quarter was changed after it was signed.",
        policy_version: 1,
        stamp: Stamp {
            epoch: 20_000,
            nonce: 77,
        },
        answer_to: None,
    }
}

/// The attack on a real leak through [entry, middle, exit]: untagged it
/// is delivered; tagged by the entry and untagged by the exit it is
/// dropped by the exit with a counted reason; the same XOR put in and taken
/// out on one link (no hop between) is delivered, so the drop is the
/// middle hop's cipher at work and not a mistake in the marker.
#[test]
fn a_tag_removed_by_a_colluding_exit_is_dropped_not_delivered() {
    let nodes = test_nodes(3, "tagging forward");
    let secrets: Vec<_> = nodes.iter().map(|n| &n.secret).collect();
    let recipient = Recipient::parse("editor@example.org").unwrap();
    let contents = contents(&recipient);
    let mailbox = MailboxId([5; 32]);
    let mut rng = ByteRng::from_label("tagging forward", 4096);
    let sealed = seal_leak(
        &contents,
        &path_of(&nodes, &[100, 200, 300], 1),
        &path_of(&nodes, &[100, 200, 300], 1),
        mailbox,
        &mut rng,
    )
    .unwrap();

    let End::Exit(message) = run(sealed.packet.clone(), &secrets, |_, p| p) else {
        panic!("the untagged leak was not delivered");
    };
    let leak = Leak::decode(&message).unwrap();
    assert_eq!(leak.text, contents.text);

    match run(
        sealed.packet.clone(),
        &secrets,
        tag_on_link_1_untag_on_link_2,
    ) {
        End::Dropped(reason) => {
            assert_eq!(reason, DropReason::PayloadIntegrity);
            assert_eq!(reason.as_str(), "payload_integrity");
        }
        End::Exit(_) => panic!("the tagged leak was delivered"),
        End::Mailbox(_) => panic!("a forward packet reached a mailbox"),
    }

    let same_link = |link, packet: Packet| match link {
        1 => {
            let tagged = xor_payload(&packet, &marker(), MARKER_AT);
            assert_ne!(tagged, packet);
            xor_payload(&tagged, &marker(), MARKER_AT)
        }
        _ => packet,
    };
    assert!(matches!(
        run(sealed.packet, &secrets, same_link),
        End::Exit(m) if m == message
    ));
}

/// The marker can go anywhere, not only where the padding is: at every
/// offset tried, the tagged leak is dropped.
#[test]
fn a_tag_anywhere_in_the_payload_is_dropped() {
    let nodes = test_nodes(3, "tagging offsets");
    let secrets: Vec<_> = nodes.iter().map(|n| &n.secret).collect();
    let mut rng = ByteRng::from_label("tagging offsets", 4096);
    let packet = build_packet(&path_of(&nodes, &[0, 0, 0], 2), b"short leak", &mut rng).unwrap();
    let marker = marker();
    for at in (0..=PAYLOAD_LEN - marker.len()).step_by(181) {
        let tag = |link, p: Packet| match link {
            1 | 2 => xor_payload(&p, &marker, at),
            _ => p,
        };
        assert!(
            matches!(
                run(packet.clone(), &secrets, tag),
                End::Dropped(DropReason::PayloadIntegrity)
            ),
            "marker at {at}"
        );
    }
}

/// The same attack on a receipt's way back: the exit seals a receipt into
/// the sender's reply block; the first hop tags it, the mailbox's node
/// untags it before storing; the sender's keys refuse it.
#[test]
fn a_tagged_receipt_fails_the_senders_check() {
    let nodes = test_nodes(3, "tagging reply");
    let secrets: Vec<_> = nodes.iter().map(|n| &n.secret).collect();
    let mut rng = ByteRng::from_label("tagging reply", 4096);
    let (block, keys) = build_reply_block(
        &path_of(&nodes, &[0, 0, 0], 3),
        MailboxId([6; 32]),
        &mut rng,
    )
    .unwrap();
    let receipt = Receipt {
        message_id: MessageId([1; 16]),
        outcome: Outcome::Delivered,
    }
    .encode()
    .unwrap();
    let (_, packet) = block.into_packet(&receipt).unwrap();

    let End::Mailbox(stored) = run(packet.clone(), &secrets, |_, p| p) else {
        panic!("the reply did not reach its mailbox");
    };
    assert_eq!(&keys.open(&stored).unwrap()[..], &receipt[..]);

    let End::Mailbox(tagged) = run(packet, &secrets, tag_on_link_1_untag_on_link_2) else {
        panic!("relays cannot check a reply, so it reaches the mailbox");
    };
    assert_eq!(keys.open(&tagged), Err(ReplyError::Integrity));
}

/// Loops and drops, the cover traffic, behave as leaks and receipts do.
#[test]
fn tagged_cover_is_refused_too() {
    let nodes = test_nodes(3, "tagging cover");
    let secrets: Vec<_> = nodes.iter().map(|n| &n.secret).collect();
    let path = path_of(&nodes, &[0, 0, 0], 4);
    let mut rng = ByteRng::from_label("tagging cover", 4096);

    let drop = cover::seal_drop(&path, &mut rng).unwrap();
    assert!(matches!(
        run(drop.clone(), &secrets, |_, p| p),
        End::Exit(m) if cover::is_cover(&m)
    ));
    assert!(matches!(
        run(drop, &secrets, tag_on_link_1_untag_on_link_2),
        End::Dropped(DropReason::PayloadIntegrity)
    ));

    let looped = cover::build_loop(&path, MailboxId([8; 32]), &mut rng).unwrap();
    assert_eq!(looped.first_hop, nodes[0].id);
    let End::Mailbox(stored) = run(looped.packet.clone(), &secrets, |_, p| p) else {
        panic!("the loop did not come back");
    };
    assert!(cover::is_cover(&looped.keys.open(&stored).unwrap()));
    let End::Mailbox(tagged) = run(looped.packet, &secrets, tag_on_link_1_untag_on_link_2) else {
        panic!("relays cannot check a loop, so it reaches the mailbox");
    };
    assert_eq!(looped.keys.open(&tagged), Err(ReplyError::Integrity));
}

/// Payload bit positions to try: every 89th bit, and both ends of the
/// payload and of LIONESS's left part.
fn sampled_bits() -> impl Iterator<Item = usize> {
    (0..PAYLOAD_LEN * 8)
        .step_by(251)
        .chain([255, 256, PAYLOAD_LEN * 8 - 1])
}

/// One flipped payload bit on any link of a forward path, at sampled
/// positions across the whole payload, is never delivered: the exit drops
/// it; and a bit flipped on one link and flipped back on a later one (a
/// one-bit tag) is dropped too whenever a hop lies between.
#[test]
fn any_single_bit_flip_at_any_hop_breaks_a_forward_payload() {
    for hops in [1, 3, 5] {
        let nodes = test_nodes(hops, &format!("bit flips {hops}"));
        let secrets: Vec<_> = nodes.iter().map(|n| &n.secret).collect();
        let mut rng = ByteRng::from_label(&format!("bit flips {hops}"), 4096);
        let packet = build_packet(&path_of(&nodes, &vec![0; hops], 5), b"x", &mut rng).unwrap();
        for link in 0..hops {
            for bit in sampled_bits() {
                let flip = |l, p: Packet| {
                    if l == link {
                        flip_payload_bit(&p, bit)
                    } else {
                        p
                    }
                };
                assert!(
                    matches!(
                        run(packet.clone(), &secrets, flip),
                        End::Dropped(DropReason::PayloadIntegrity)
                    ),
                    "{hops} hops, bit {bit} on link {link}"
                );
            }
            for back in link + 1..hops {
                let bit = 8 * MARKER_AT + link;
                let tag = |l, p: Packet| {
                    if l == link || l == back {
                        flip_payload_bit(&p, bit)
                    } else {
                        p
                    }
                };
                assert!(
                    matches!(
                        run(packet.clone(), &secrets, tag),
                        End::Dropped(DropReason::PayloadIntegrity)
                    ),
                    "{hops} hops, one-bit tag from link {link} to link {back}"
                );
            }
        }
    }
}

/// The same for a reply on any link of its path: the client's check fails.
#[test]
fn any_single_bit_flip_at_any_hop_breaks_a_reply() {
    let nodes = test_nodes(3, "reply bit flips");
    let secrets: Vec<_> = nodes.iter().map(|n| &n.secret).collect();
    let mut rng = ByteRng::from_label("reply bit flips", 4096);
    let (block, keys) =
        build_reply_block(&path_of(&nodes, &[0; 3], 6), MailboxId([9; 32]), &mut rng).unwrap();
    let (_, packet) = block.into_packet(b"a reply").unwrap();
    for link in 0..3 {
        for bit in sampled_bits().step_by(3) {
            let flip = |l, p: Packet| {
                if l == link {
                    flip_payload_bit(&p, bit)
                } else {
                    p
                }
            };
            let End::Mailbox(stored) = run(packet.clone(), &secrets, flip) else {
                panic!("relays cannot check a reply, so it reaches the mailbox");
            };
            assert_eq!(
                keys.open(&stored),
                Err(ReplyError::Integrity),
                "bit {bit} on link {link}"
            );
        }
    }
}
