//! Reply blocks and replies must never make their parsers panic.
//!
//! - `ReplyBlock::from_bytes` on any bytes: accepted exactly at
//!   `REPLY_BLOCK_LEN`, and then `to_bytes` gives the input back.
//! - `ReplyKeys::open` (keys of a fixed reply block) on the input as is, and
//!   on the input cut or zero-padded to `PAYLOAD_LEN`.
//! - The reply that really arrived at the fixed block's mailbox, XORed with
//!   the input: opens to the exit's message when unchanged, fails otherwise.
//! - A reply block the fuzzer chose the path, mailbox, randomness and message
//!   of: the reply reaches that mailbox and opens to that message.

#![no_main]

use std::sync::OnceLock;

use leak_protocol::{
    MixSecret, Processed, ReplyBlock, ReplyKeys, build_reply_block,
    reply::REPLY_BLOCK_LEN,
    sphinx::{MAX_HOPS, MESSAGE_CAPACITY, MailboxId, PAYLOAD_LEN},
};
use leak_protocol_fuzz::{DetRng, Walk, nodes, path, walk};
use libfuzzer_sys::{arbitrary::Unstructured, fuzz_target};

const HOPS: usize = 3;
const MAILBOX: MailboxId = MailboxId([0x4d; 32]);
const REPLY: &[u8] = b"a fixed reply through a fixed reply block";

struct Fixture {
    keys: ReplyKeys,
    /// The reply as the mailbox stored it.
    stored: Box<[u8; PAYLOAD_LEN]>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let path = path(&[0, 1, 2], &[10, 20, 30], 3);
        let (block, keys) = build_reply_block(&path, MAILBOX, &mut DetRng::new(2))
            .expect("the fixed reply block builds");
        let (_, packet) = block.into_packet(REPLY).expect("the fixed reply fits");
        let secrets: Vec<&MixSecret> = nodes()[..HOPS].iter().map(|n| &n.secret).collect();
        match walk(packet.as_bytes(), &secrets, |_, _| {}) {
            Walk::Mailbox { mailbox, reply, .. } if mailbox == MAILBOX => Fixture {
                keys,
                stored: reply,
            },
            other => panic!("the fixed reply did not reach its mailbox: {other:?}"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    if let Some(block) = ReplyBlock::from_bytes(data) {
        assert_eq!(data.len(), REPLY_BLOCK_LEN);
        assert_eq!(&block.to_bytes()[..], data, "reply block round trip");
        // Any 594 bytes are a block an exit could be handed: it must be
        // able to seal a short reply into it without panicking.
        let _ = block.into_packet(b"receipt");
    } else {
        assert_ne!(data.len(), REPLY_BLOCK_LEN);
    }

    let fixture = fixture();
    let _ = fixture.keys.open(data);
    let mut padded = vec![0u8; PAYLOAD_LEN];
    let len = data.len().min(PAYLOAD_LEN);
    padded[..len].copy_from_slice(&data[..len]);
    let _ = fixture.keys.open(&padded);

    match data.split_first() {
        Some((selector, rest)) if selector % 2 == 1 => built_by_fuzzer(rest),
        _ => damaged_reply(fixture, data),
    }
});

/// The stored reply XORed with `data` (from the start, wrapping).
fn damaged_reply(fixture: &Fixture, data: &[u8]) {
    let mut reply = fixture.stored.to_vec();
    for (i, b) in data.iter().enumerate() {
        reply[i % PAYLOAD_LEN] ^= b;
    }
    let changed = reply[..] != fixture.stored[..];
    match fixture.keys.open(&reply) {
        Ok(message) => {
            assert!(!changed, "a modified reply opened");
            assert_eq!(&message[..], REPLY);
        }
        Err(e) => assert!(changed, "the intact reply failed to open: {e:?}"),
    }
}

/// A reply block the fuzzer chose everything of, used once.
fn built_by_fuzzer(rest: &[u8]) {
    let mut u = Unstructured::new(rest);
    let hops = u.int_in_range(1..=MAX_HOPS).unwrap_or(1);
    let indices: Vec<usize> = (0..hops)
        .map(|_| u.int_in_range(0..=MAX_HOPS - 1).unwrap_or(0))
        .collect();
    let delays: Vec<u32> = (0..hops).map(|_| u.arbitrary().unwrap_or(0)).collect();
    let hint: u8 = u.arbitrary().unwrap_or(0);
    let mailbox = MailboxId(u.arbitrary().unwrap_or([0u8; 32]));
    let seed: u64 = u.arbitrary().unwrap_or(0);
    let message = u.take_rest();
    let message = &message[..message.len().min(MESSAGE_CAPACITY)];

    let path = path(&indices, &delays, hint);
    let (block, keys) = build_reply_block(&path, mailbox, &mut DetRng::new(seed))
        .expect("a valid path always builds a reply block");
    assert_eq!(keys.mailbox(), mailbox);
    let encoded = block.to_bytes();
    let block = ReplyBlock::from_bytes(&encoded).expect("an encoded reply block parses");
    assert_eq!(block.first_hop(), nodes()[indices[0]].id);
    let (first_hop, packet) = block
        .into_packet(message)
        .expect("a message that fits always seals");
    assert_eq!(first_hop, nodes()[indices[0]].id);

    let nodes = nodes();
    let secrets: Vec<&MixSecret> = indices.iter().map(|&i| &nodes[i].secret).collect();
    let result = walk(
        packet.as_bytes(),
        &secrets,
        |i, processed| match processed {
            Processed::Forward(f) => {
                assert!(i + 1 < hops, "the mailbox forwarded");
                assert_eq!(f.next_hop, nodes[indices[i + 1]].id);
                assert_eq!(f.delay.as_millis(), delays[i]);
            }
            Processed::Final(f) => assert_eq!(f.delay.as_millis(), delays[i]),
            Processed::Drop(reason) => panic!("hop {i} dropped a valid reply: {reason:?}"),
        },
    );
    match result {
        Walk::Mailbox {
            hop,
            mailbox: got,
            reply,
        } => {
            assert_eq!(hop, hops - 1);
            assert_eq!(got, mailbox);
            let opened = keys.open(&reply[..]).expect("the reply opens");
            assert_eq!(&opened[..], message);
        }
        other => panic!("a valid reply did not reach its mailbox: {other:?}"),
    }
}
