//! `process_packet` must never panic, whatever a relay is sent.
//!
//! Besides raw bytes (which almost all stop at the length, version or MAC
//! check), the target starts from a valid packet for a fixed 3-hop path and
//! damages it at any link (XOR, sparse bit flips or a splice), then walks
//! it down the rest of the path. A damaged header must be dropped by the hop
//! that receives it, a damaged payload by the exit, and an undamaged packet
//! must deliver. A tagging mode XORs the fuzzer's bytes into the payload
//! after the first hop and XORs them out again before the exit, as a
//! colluding entry and exit would: any tag at all must be dropped by the
//! exit. A last mode lets the fuzzer pick the path, delays, key hint,
//! randomness and message, and checks that the packet arrives intact.

#![no_main]

use std::sync::OnceLock;

use leak_protocol::{
    DropReason, MixSecret, PACKET_LEN, Packet, Processed, build_packet, key_hint, process_packet,
    sphinx::{FinalPayload, HEADER_LEN, MAX_HOPS, MESSAGE_CAPACITY, PAYLOAD_LEN},
};
use leak_protocol_fuzz::{DetRng, Walk, nodes, path, walk};
use libfuzzer_sys::{arbitrary::Unstructured, fuzz_target};

const HOPS: usize = 3;
const DELAYS: [u32; HOPS] = [100, 2_000, 30_000];
const HINT: u8 = 7;
const MESSAGE: &[u8] = b"a fixed message on a fixed three-hop path";

/// The valid packet as it arrives at each hop of the fixed path.
fn links() -> &'static [Packet] {
    static LINKS: OnceLock<Vec<Packet>> = OnceLock::new();
    LINKS.get_or_init(|| {
        let path = path(&[0, 1, 2], &DELAYS, HINT);
        let mut packet =
            build_packet(&path, MESSAGE, &mut DetRng::new(1)).expect("the fixed path builds");
        let mut links = vec![packet.clone()];
        for node in &nodes()[..HOPS - 1] {
            match process_packet(packet.as_bytes(), &node.secret) {
                Processed::Forward(f) => packet = f.packet,
                other => panic!("the fixed packet was not forwarded: {other:?}"),
            }
            links.push(packet.clone());
        }
        links
    })
}

fn secrets() -> Vec<&'static MixSecret> {
    nodes().iter().map(|n| &n.secret).collect()
}

fuzz_target!(|data: &[u8]| {
    // Whatever arrives on the wire, at the first hop.
    let _ = process_packet(data, &nodes()[0].secret);

    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 5 {
        0 => padded(rest),
        1 if selector & 0x80 != 0 => tagged(rest),
        1..=3 => damaged(selector, rest),
        _ => built_by_fuzzer(rest),
    }
});

/// The input, zero-padded or cut to a packet's length, at the first hop:
/// this reaches the key exchange and the MAC check with short inputs.
fn padded(rest: &[u8]) {
    let mut packet = vec![0u8; PACKET_LEN];
    let len = rest.len().min(PACKET_LEN);
    packet[..len].copy_from_slice(&rest[..len]);
    let _ = process_packet(&packet, &nodes()[0].secret);
}

/// The fixed packet, damaged on one link, then processed from there on.
fn damaged(selector: u8, rest: &[u8]) {
    let link = usize::from(selector / 5) % HOPS;
    let original = links()[link].as_bytes();
    let mut packet = original.to_vec();
    let offset = match rest {
        [a, b, ..] => usize::from(u16::from_be_bytes([*a, *b])) % PACKET_LEN,
        _ => 0,
    };
    let tail = rest.get(2..).unwrap_or_default();
    match selector % 5 {
        1 => {
            for (i, b) in tail.iter().enumerate() {
                packet[(offset + i) % PACKET_LEN] ^= b;
            }
        }
        2 => {
            for edit in rest.chunks_exact(3) {
                let at = usize::from(u16::from_be_bytes([edit[0], edit[1]])) % PACKET_LEN;
                packet[at] ^= edit[2];
            }
        }
        _ => {
            for (i, b) in tail.iter().take(PACKET_LEN).enumerate() {
                packet[(offset + i) % PACKET_LEN] = *b;
            }
        }
    }

    let header_changed = packet[..HEADER_LEN] != original[..HEADER_LEN];
    let payload_changed = packet[HEADER_LEN..] != original[HEADER_LEN..];
    let secrets = secrets();
    let hops = &secrets[link..HOPS];
    let last = hops.len() - 1;
    let nodes = nodes();
    let result = walk(&packet, hops, |i, processed| {
        if let Processed::Forward(f) = processed {
            // Only an intact header gets past the MAC, so it routes as built.
            assert_eq!(f.next_hop, nodes[link + i + 1].id);
            assert_eq!(f.delay.as_millis(), DELAYS[link + i]);
            assert_eq!(key_hint(f.packet.as_bytes()), Some(HINT));
        }
    });
    match result {
        Walk::Dropped { hop: 0, reason } if header_changed => assert!(
            matches!(
                reason,
                DropReason::BadMac | DropReason::UnknownVersion | DropReason::InvalidKey
            ),
            "damaged header dropped for {reason:?}"
        ),
        Walk::Dropped {
            hop,
            reason: DropReason::PayloadIntegrity,
        } if !header_changed && payload_changed && hop == last => {}
        Walk::Exit { hop, message } if !header_changed && !payload_changed && hop == last => {
            assert_eq!(message, MESSAGE);
        }
        other => panic!(
            "link {link}, header changed {header_changed}, payload changed {payload_changed}: {other:?}"
        ),
    }
}

/// A tag: the fuzzer's bytes XORed into the payload of the packet the
/// first hop forwards and XORed out again before the exit processes it. The
/// middle hop's LIONESS layer turns a tagged payload into noise the second
/// XOR cannot repair, so the exit drops every tagged packet; with nothing
/// XORed in, the packet delivers.
fn tagged(rest: &[u8]) {
    let [a, b, tail @ ..] = rest else {
        return;
    };
    let offset = usize::from(u16::from_be_bytes([*a, *b])) % PAYLOAD_LEN;
    // At most one byte per payload position, so no part of the tag cancels
    // another.
    let tag = &tail[..tail.len().min(PAYLOAD_LEN)];
    let xor_tag = |packet: &mut [u8]| {
        for (i, m) in tag.iter().enumerate() {
            packet[HEADER_LEN + (offset + i) % PAYLOAD_LEN] ^= m;
        }
    };
    let secrets = secrets();
    let mut at_middle = links()[1].as_bytes().to_vec();
    xor_tag(&mut at_middle);
    let mut at_exit = match process_packet(&at_middle, secrets[1]) {
        Processed::Forward(f) => f.packet.as_bytes().to_vec(),
        other => panic!("the middle hop did not forward an intact header: {other:?}"),
    };
    xor_tag(&mut at_exit);
    let is_tagged = tag.iter().any(|&m| m != 0);
    match process_packet(&at_exit, secrets[2]) {
        Processed::Drop(DropReason::PayloadIntegrity) if is_tagged => {}
        Processed::Final(f) if !is_tagged => match f.payload {
            FinalPayload::Exit { message } => assert_eq!(&message[..], MESSAGE),
            FinalPayload::Mailbox { .. } => panic!("the exit hop found a mailbox"),
        },
        other => panic!("tagged {is_tagged}: the exit gave {other:?}"),
    }
}

/// A packet the fuzzer chose the path, delays, hint, randomness and message
/// of: it must be built, routed exactly as chosen, and delivered intact.
fn built_by_fuzzer(rest: &[u8]) {
    let mut u = Unstructured::new(rest);
    let hops = u.int_in_range(1..=MAX_HOPS).unwrap_or(1);
    let indices: Vec<usize> = (0..hops)
        .map(|_| u.int_in_range(0..=MAX_HOPS - 1).unwrap_or(0))
        .collect();
    let delays: Vec<u32> = (0..hops).map(|_| u.arbitrary().unwrap_or(0)).collect();
    let hint: u8 = u.arbitrary().unwrap_or(0);
    let seed: u64 = u.arbitrary().unwrap_or(0);
    let message = u.take_rest();
    let message = &message[..message.len().min(MESSAGE_CAPACITY)];

    let path = path(&indices, &delays, hint);
    let packet = build_packet(&path, message, &mut DetRng::new(seed))
        .expect("a valid path and a message that fits always build");
    assert_eq!(key_hint(packet.as_bytes()), Some(hint));

    let nodes = nodes();
    let hop_secrets: Vec<&MixSecret> = indices.iter().map(|&i| &nodes[i].secret).collect();
    let result = walk(
        packet.as_bytes(),
        &hop_secrets,
        |i, processed| match processed {
            Processed::Forward(f) => {
                assert!(i + 1 < hops, "the exit forwarded");
                assert_eq!(f.next_hop, nodes[indices[i + 1]].id);
                assert_eq!(f.delay.as_millis(), delays[i]);
                assert_eq!(key_hint(f.packet.as_bytes()), Some(hint));
            }
            Processed::Final(f) => assert_eq!(f.delay.as_millis(), delays[i]),
            Processed::Drop(reason) => panic!("hop {i} dropped a valid packet: {reason:?}"),
        },
    );
    match result {
        Walk::Exit { hop, message: got } => {
            assert_eq!(hop, hops - 1);
            assert_eq!(got, message);
        }
        other => panic!("a valid packet did not reach its exit: {other:?}"),
    }
}
