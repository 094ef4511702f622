//! Answers (SPEC.md §11.1): sealing opens only with the conversation's
//! secret, the payloads round-trip, and hostile bytes are refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{ByteRng, path_of, test_nodes};
use leak_protocol::{
    Leak, MessageId, Processed, Recipient, Relationship,
    answers::{
        Answer, AnswerTo, AnswerVia, Fetch, FetchReply, InboxId, MAX_ANSWER_LEN, MAX_SEALED_LEN,
        SealedAnswer, ThreadState, build_fetch, open_answer, seal_answer,
    },
    build_reply_block,
    crypto::x25519_public,
    payload::{PayloadError, Stamp},
    process_packet,
    sphinx::{FinalPayload, MailboxId},
};
use proptest::prelude::*;

fn answer(text: &str) -> Answer {
    Answer {
        via: AnswerVia::Web,
        received_minute: 29_630_880,
        text: text.to_owned(),
        dropped_attachments: 0,
    }
}

#[test]
fn a_sealed_answer_opens_only_with_its_secret_and_intact() {
    let secret = [3; 32];
    let key = x25519_public(&secret);
    let mut rng = ByteRng::from_label("seal", 4096);
    let a = answer("Thanks. I needed to hear that.");
    let sealed = seal_answer(&key, &a, &mut rng).unwrap();
    assert_eq!(open_answer(&secret, &sealed).unwrap(), a);
    // Another secret, or any flipped bit, opens nothing.
    assert!(open_answer(&[4; 32], &sealed).is_err());
    for i in [0, 31, 32, sealed.len() / 2, sealed.len() - 1] {
        let mut bad = sealed.clone();
        bad[i] ^= 1;
        assert!(open_answer(&secret, &bad).is_err(), "bit flipped at {i}");
    }
    assert!(open_answer(&secret, &sealed[..40]).is_err());
    // Two seals of one answer share nothing visible.
    let again = seal_answer(&key, &a, &mut rng).unwrap();
    assert_ne!(again[..32], sealed[..32]);
}

#[test]
fn the_longest_answer_fits_and_a_longer_one_is_refused() {
    let secret = [3; 32];
    let key = x25519_public(&secret);
    let mut rng = ByteRng::from_label("long", 4096);
    let longest = answer(&"é".repeat(MAX_ANSWER_LEN / 2));
    let sealed = seal_answer(&key, &longest, &mut rng).unwrap();
    assert!(sealed.len() <= MAX_SEALED_LEN);
    assert_eq!(open_answer(&secret, &sealed).unwrap(), longest);
    let reply = FetchReply {
        state: ThreadState::Open,
        answer: Some(SealedAnswer { seq: 1, sealed }),
        waiting: u32::MAX,
    };
    // The reply to a fetch carries the longest answer in one packet.
    let encoded = reply.encode().unwrap();
    assert!(encoded.len() <= leak_protocol::sphinx::MESSAGE_CAPACITY);
    assert!(matches!(
        seal_answer(&key, &answer(&"a".repeat(MAX_ANSWER_LEN + 1)), &mut rng),
        Err(PayloadError::Text(_))
    ));
    assert!(seal_answer(&key, &answer(" \n "), &mut rng).is_err());
    assert!(seal_answer(&key, &answer("bell\u{7}"), &mut rng).is_err());
}

#[test]
fn a_low_order_key_is_refused() {
    let mut rng = ByteRng::from_label("low", 4096);
    assert_eq!(
        seal_answer(&[0; 32], &answer("hi"), &mut rng),
        Err(PayloadError::Malformed)
    );
}

#[test]
fn a_fetch_reaches_the_exit_and_its_reply_block_answers() {
    let nodes = test_nodes(3, "fetch");
    let mut rng = ByteRng::from_label("fetch", 8192);
    let capability = [9; 32];
    let built = build_fetch(
        &path_of(&nodes, &[0, 1, 2], 0),
        &path_of(&nodes, &[2, 1, 0], 0),
        MailboxId([1; 32]),
        &capability,
        4,
        &mut rng,
    )
    .unwrap();
    let mut packet = built.packet;
    for node in &nodes {
        match process_packet(packet.as_bytes(), &node.secret) {
            Processed::Forward(f) => packet = f.packet,
            Processed::Final(f) => {
                let FinalPayload::Exit { message } = f.payload else {
                    panic!("not an exit payload")
                };
                let fetch = Fetch::decode(&message).unwrap();
                assert_eq!(fetch.capability, capability);
                assert_eq!(fetch.ack, 4);
                assert_eq!(
                    InboxId::from_capability(&fetch.capability),
                    InboxId::from_capability(&capability)
                );
                return;
            }
            Processed::Drop(r) => panic!("dropped: {r}"),
        }
    }
    panic!("the fetch never reached its exit");
}

#[test]
fn replies_with_a_zero_sequence_or_an_oversize_answer_are_refused() {
    let mut reply = FetchReply {
        state: ThreadState::Ended,
        answer: Some(SealedAnswer {
            seq: 0,
            sealed: vec![1; 64],
        }),
        waiting: 0,
    };
    assert!(reply.encode().is_err());
    reply.answer = Some(SealedAnswer {
        seq: 1,
        sealed: vec![1; MAX_SEALED_LEN + 1],
    });
    assert!(reply.encode().is_err());
    reply.answer = None;
    let encoded = reply.encode().unwrap();
    assert_eq!(FetchReply::decode(&encoded).unwrap(), reply);
}

#[test]
fn a_leak_takes_an_answer_to_or_nothing_after_its_reply_block() {
    let nodes = test_nodes(2, "leak");
    let mut rng = ByteRng::from_label("leak", 4096);
    let (block, _) =
        build_reply_block(&path_of(&nodes, &[0, 1], 0), MailboxId([2; 32]), &mut rng).unwrap();
    let mut leak = Leak {
        message_id: MessageId([1; 16]),
        recipient: Recipient::parse("sam@example.org").unwrap(),
        relationship: Relationship::Friend,
        text: "I still think about what you said.".into(),
        policy_version: 1,
        stamp: Stamp { epoch: 1, nonce: 2 },
        reply_block: block,
        answer_to: None,
    };
    let plain = leak.encode().unwrap();
    assert_eq!(Leak::decode(&plain).unwrap(), leak);
    leak.answer_to = Some(AnswerTo {
        key: [7; 32],
        inbox: InboxId([8; 32]),
    });
    let answerable = leak.encode().unwrap();
    assert_eq!(answerable.len(), plain.len() + 64);
    assert_eq!(Leak::decode(&answerable).unwrap(), leak);
    assert_eq!(
        Leak::decode_or_reject(&answerable).unwrap().answer_to,
        leak.answer_to
    );
    // Any other tail is refused, by both decoders.
    for cut in [1, 63, 65] {
        let mut bad = plain.clone();
        bad.extend(std::iter::repeat_n(0u8, cut));
        assert_eq!(Leak::decode(&bad), Err(PayloadError::TrailingBytes));
        assert!(Leak::decode_or_reject(&bad).is_err());
    }
}

proptest! {
    #[test]
    fn answer_decoders_survive_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2200)) {
        let _ = Fetch::decode(&bytes);
        let _ = FetchReply::decode(&bytes);
        let _ = open_answer(&[1; 32], &bytes);
        let mut framed = vec![1, 5];
        framed.extend_from_slice(&bytes);
        let _ = Fetch::decode(&framed);
        framed[1] = 6;
        let _ = FetchReply::decode(&framed);
    }
}
