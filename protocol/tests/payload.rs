//! Payload encodings: round trips, the one-packet size budget, validation on
//! decode, and decoders that survive any input.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{ByteRng, path_of, test_nodes};
use leak_protocol::{
    Leak, MessageId, Outcome, Processed, Receipt, Recipient, Relationship, ReplyBlock,
    build_packet, build_reply_block,
    payload::{
        FORMAT_VERSION, MAX_REASON_LEN, MAX_TEXT_LEN, PayloadError, Stamp, TextError, validate_text,
    },
    process_packet,
    seal::{LeakContents, SealError, seal_leak},
    sphinx::{FinalPayload, MAX_HOPS, MESSAGE_CAPACITY, MailboxId},
};
use proptest::prelude::*;

fn reply_block(label: &str) -> ReplyBlock {
    let nodes = test_nodes(MAX_HOPS, label);
    let mut rng = ByteRng::from_label(label, 4096);
    build_reply_block(
        &path_of(&nodes, &[0; MAX_HOPS], 0),
        MailboxId([9; 32]),
        &mut rng,
    )
    .unwrap()
    .0
}

fn leak(recipient: &str, text: &str) -> Leak {
    Leak {
        message_id: MessageId([1; 16]),
        recipient: Recipient::parse(recipient).unwrap(),
        relationship: Relationship::FriendOfAFriend,
        text: text.to_owned(),
        policy_version: u32::MAX,
        stamp: Stamp {
            epoch: u64::MAX,
            nonce: u64::MAX,
        },
        reply_block: reply_block("leak"),
        answer_to: None,
    }
}

/// The largest leak the rules allow (longest address, longest text, largest
/// integers, a reply block) still fits in one packet, and arrives intact
/// across the longest path.
#[test]
fn largest_leak_fits_in_one_packet() {
    let local = "a".repeat(64);
    let domain = format!(
        "{}.{}.{}.com",
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(57)
    );
    let recipient = format!("{local}@{domain}");
    assert_eq!(recipient.len(), 254);
    // Multi-byte characters up to exactly the limit.
    let text = "é".repeat(MAX_TEXT_LEN / 2);
    assert_eq!(text.len(), MAX_TEXT_LEN);
    let mut leak = leak(&recipient, &text);
    // SPEC.md §11 states both sizes.
    assert_eq!(leak.encode().unwrap().len(), 3398);
    leak.answer_to = Some(leak_protocol::answers::AnswerTo {
        key: [5; 32],
        inbox: leak_protocol::answers::InboxId([6; 32]),
    });
    let encoded = leak.encode().unwrap();
    assert_eq!(encoded.len(), 3462);
    assert!(
        encoded.len() <= MESSAGE_CAPACITY,
        "{} > {MESSAGE_CAPACITY}",
        encoded.len()
    );

    let nodes = test_nodes(MAX_HOPS, "big");
    let mut rng = ByteRng::from_label("big", 4096);
    let mut packet = build_packet(&path_of(&nodes, &[0; MAX_HOPS], 0), &encoded, &mut rng).unwrap();
    for node in &nodes {
        match process_packet(packet.as_bytes(), &node.secret) {
            Processed::Forward(f) => packet = f.packet,
            Processed::Final(f) => match f.payload {
                FinalPayload::Exit { message } => {
                    assert_eq!(Leak::decode(&message).unwrap(), leak);
                    return;
                }
                FinalPayload::Mailbox { .. } => panic!("mailbox"),
            },
            Processed::Drop(r) => panic!("dropped: {r}"),
        }
    }
    panic!("not delivered");
}

#[test]
fn text_validation() {
    assert_eq!(validate_text("I lied to you.\n\tSorry."), Ok(()));
    assert_eq!(validate_text("  \n\t "), Err(TextError::Empty));
    assert_eq!(validate_text(""), Err(TextError::Empty));
    assert_eq!(
        validate_text("line\r\nBcc: x@y.z"),
        Err(TextError::ControlCharacter(0x0d))
    );
    assert_eq!(
        validate_text("bell\u{7}"),
        Err(TextError::ControlCharacter(7))
    );
    assert_eq!(
        validate_text("c1 \u{85}"),
        Err(TextError::ControlCharacter(0x85))
    );
    let long = "x".repeat(MAX_TEXT_LEN + 1);
    assert_eq!(
        validate_text(&long),
        Err(TextError::TooLong(MAX_TEXT_LEN + 1))
    );
    // An invalid leak is refused on encode too.
    let mut bad = leak("a@example.com", "ok");
    bad.text = long;
    assert!(matches!(bad.encode(), Err(PayloadError::Text(_))));
}

#[test]
fn relationship_names_round_trip() {
    for r in Relationship::ALL {
        assert_eq!(r.as_str().parse::<Relationship>(), Ok(r));
        assert_eq!(r.to_string(), r.as_str());
    }
    assert!("boss".parse::<Relationship>().is_err());
    assert_eq!(Relationship::Family.noun_phrase(), "a family member");
}

#[test]
fn decode_checks_version_kind_and_trailing_bytes() {
    let encoded = leak("a@example.com", "hello").encode().unwrap();
    assert_eq!(encoded[0], FORMAT_VERSION);

    let mut v2 = encoded.clone();
    v2[0] = 2;
    assert_eq!(Leak::decode(&v2), Err(PayloadError::UnknownVersion(2)));
    assert!(matches!(
        Receipt::decode(&encoded),
        Err(PayloadError::WrongKind { .. })
    ));
    let mut trailing = encoded.clone();
    trailing.push(0);
    assert_eq!(Leak::decode(&trailing), Err(PayloadError::TrailingBytes));
    assert_eq!(Leak::decode(&[]), Err(PayloadError::Truncated));
    for cut in 0..encoded.len() {
        assert!(Leak::decode(&encoded[..cut]).is_err(), "cut at {cut}");
    }
}

/// A hostile client cannot get an invalid recipient past the exit's decoder
/// by encoding it by hand.
#[test]
fn decode_validates_recipient_and_text() {
    let good = leak("a@example.com", "hello").encode().unwrap();
    // The recipient is the first string, after the 16-byte id; postcard
    // writes its length as one byte here. Swap in "a@b.com\r\nX:y" by hand.
    let evil = b"a@b.co\r\nX: y";
    let mut bytes = good[..2 + 16].to_vec();
    bytes.push(u8::try_from(evil.len()).unwrap());
    bytes.extend_from_slice(evil);
    bytes.extend_from_slice(&good[2 + 16 + 1 + "a@example.com".len()..]);
    assert!(matches!(
        Leak::decode(&bytes),
        Err(PayloadError::Recipient(_))
    ));
}

#[test]
fn receipt_refusal_lengths_are_bounded() {
    let receipt = Receipt {
        message_id: MessageId([3; 16]),
        outcome: Outcome::Refused {
            rule: "threat.direct".into(),
            reason: "x".repeat(MAX_REASON_LEN + 1),
        },
    };
    assert_eq!(receipt.encode(), Err(PayloadError::RefusalTooLong));
}

fn outcome_strategy() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        Just(Outcome::Delivered),
        ("[a-z._]{0,64}", "\\PC{0,100}")
            .prop_map(|(rule, reason)| Outcome::Refused { rule, reason }),
        Just(Outcome::RecipientOptedOut),
        Just(Outcome::RateLimited),
        Just(Outcome::Bounced),
    ]
}

proptest! {
    #[test]
    fn leak_round_trip(
        id in any::<[u8; 16]>(),
        rel in 0usize..5,
        text in "[^\\p{Cc}]{1,600}",
        policy in any::<u32>(),
        epoch in any::<u64>(),
        nonce in any::<u64>(),
    ) {
        prop_assume!(!text.trim().is_empty());
        let mut l = leak("someone@example.org", "x");
        l.message_id = MessageId(id);
        l.relationship = Relationship::ALL[rel];
        l.text = text;
        l.policy_version = policy;
        l.stamp = Stamp { epoch, nonce };
        let encoded = l.encode().unwrap();
        prop_assert!(encoded.len() <= MESSAGE_CAPACITY);
        prop_assert_eq!(Leak::decode(&encoded).unwrap(), l);
    }

    #[test]
    fn receipt_round_trip(id in any::<[u8; 16]>(), outcome in outcome_strategy()) {
        let r = Receipt { message_id: MessageId(id), outcome };
        let encoded = r.encode().unwrap();
        prop_assert_eq!(Receipt::decode(&encoded).unwrap(), r);
    }

    /// The decoders survive arbitrary bytes, and arbitrary bytes behind a
    /// valid version and kind.
    #[test]
    fn decoders_survive_arbitrary_bytes(mut bytes in proptest::collection::vec(any::<u8>(), 0..4096), kind in 1u8..=2) {
        let _ = Leak::decode(&bytes);
        let _ = Receipt::decode(&bytes);
        let _ = ReplyBlock::from_bytes(&bytes);
        if bytes.len() >= 2 {
            bytes[0] = FORMAT_VERSION;
            bytes[1] = kind;
            let _ = Leak::decode(&bytes);
            let _ = Receipt::decode(&bytes);
        }
    }

    /// Mutating one byte of a valid encoding never panics and never yields
    /// an invalid leak.
    #[test]
    fn mutated_leaks_stay_valid_or_fail(pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut encoded = leak("a@example.com", "hello there").encode().unwrap();
        let i = pos.index(encoded.len());
        encoded[i] = byte;
        if let Ok(decoded) = Leak::decode(&encoded) {
            prop_assert!(Recipient::parse(decoded.recipient.as_str()).is_ok());
            prop_assert!(validate_text(&decoded.text).is_ok());
        }
    }
}

/// A leak whose envelope is intact but whose fields are bad can still be
/// answered: the exit learns its id and reply block and why it is invalid.
#[test]
fn invalid_fields_are_answerable() {
    use leak_protocol::payload::LeakDecodeError;
    let block = reply_block("reject");
    let stamp = Stamp { epoch: 1, nonce: 2 };
    let id = MessageId([7; 16]);
    let encode = |recipient: &[u8], relationship: u32, text: &[u8]| {
        Leak::encode_unchecked(id, recipient, relationship, text, 1, stamp, &block).unwrap()
    };
    let reason = |bytes: Vec<u8>| match Leak::decode_or_reject(&bytes) {
        Err(LeakDecodeError::Invalid {
            message_id,
            reply_block,
            error,
        }) => {
            assert_eq!(message_id, id);
            assert!(*reply_block == block);
            // The strict decoder refuses the same bytes.
            assert!(Leak::decode(&bytes).is_err());
            error
        }
        other => panic!("expected Invalid, got {other:?}"),
    };
    assert_eq!(
        reason(encode(b"a@example.org", 1, b"caf\xc3")),
        PayloadError::InvalidUtf8("message text")
    );
    assert_eq!(
        reason(encode(b"\xffa@example.org", 1, b"hello")),
        PayloadError::InvalidUtf8("recipient address")
    );
    assert!(matches!(
        reason(encode(b"a@example.org\r\nBcc: x@y.z", 1, b"hello")),
        PayloadError::Recipient(_)
    ));
    assert!(matches!(
        reason(encode(b"a@example.org", 1, b"hi\r\nSubject: x")),
        PayloadError::Text(TextError::ControlCharacter(0x0d))
    ));
    assert!(matches!(
        reason(encode(
            b"a@example.org",
            1,
            "x".repeat(MAX_TEXT_LEN + 1).as_bytes()
        )),
        PayloadError::Text(TextError::TooLong(_))
    ));
    assert_eq!(
        reason(encode(b"a@example.org", 9, b"hello")),
        PayloadError::UnknownRelationship(9)
    );
    // Valid fields decode as the strict decoder does.
    let good = encode(b"a@example.org", 2, b"hello");
    assert!(Leak::decode_or_reject(&good).unwrap() == Leak::decode(&good).unwrap());
    // Garbage has no envelope to answer.
    assert!(matches!(
        Leak::decode_or_reject(&[FORMAT_VERSION, 1, 0xff]),
        Err(LeakDecodeError::Unanswerable(_))
    ));
}

/// A sealed leak crosses its forward path whole, carries a reply block
/// to the sender's mailbox on the reply path, and its receipt opens with
/// the keys `seal_leak` returned.
#[test]
fn a_sealed_leak_reaches_the_exit_and_its_receipt_opens() {
    let nodes = test_nodes(4, "seal");
    let forward = path_of(&nodes[..3], &[0, 0, 0], 1);
    let reply = path_of(&nodes[3..], &[0], 1);
    let recipient = Recipient::parse("bob@example.org").unwrap();
    let contents = LeakContents {
        message_id: MessageId([9; 16]),
        recipient: &recipient,
        relationship: Relationship::Friend,
        text: "You were right about the budget.",
        policy_version: 1,
        stamp: Stamp { epoch: 3, nonce: 4 },
        answer_to: None,
    };
    let capability = [5u8; 32];
    let mut rng = ByteRng::from_label("seal", 4096);
    let sealed = seal_leak(
        &contents,
        &forward,
        &reply,
        MailboxId::from_capability(&capability),
        &mut rng,
    )
    .unwrap();
    let mut packet = sealed.packet;
    let mut message = None;
    for node in &nodes[..3] {
        match process_packet(packet.as_bytes(), &node.secret) {
            Processed::Forward(f) => packet = f.packet,
            Processed::Final(f) => match f.payload {
                FinalPayload::Exit { message: m } => {
                    message = Some(m);
                    break;
                }
                FinalPayload::Mailbox { .. } => panic!("ended at a mailbox"),
            },
            Processed::Drop(reason) => panic!("dropped: {reason:?}"),
        }
    }
    let message = message.expect("the exit got the message");
    let leak = Leak::decode(&message).unwrap();
    assert_eq!(leak.message_id, contents.message_id);
    assert_eq!(leak.recipient, recipient);
    assert_eq!(leak.relationship, Relationship::Friend);
    assert_eq!(leak.text, contents.text);
    assert_eq!(leak.stamp, contents.stamp);
    assert_eq!(leak.reply_block.first_hop(), nodes[3].id);

    // The exit answers through the reply block; the mailbox node stores
    // it; the sender opens it with the keys seal_leak gave.
    let receipt = Receipt {
        message_id: contents.message_id,
        outcome: Outcome::Delivered,
    };
    let (_, reply_packet) = leak
        .reply_block
        .into_packet(&receipt.encode().unwrap())
        .unwrap();
    let Processed::Final(f) = process_packet(reply_packet.as_bytes(), &nodes[3].secret) else {
        panic!("the mailbox node did not keep the reply");
    };
    let FinalPayload::Mailbox {
        mailbox,
        reply: stored,
    } = f.payload
    else {
        panic!("the reply did not end in a mailbox");
    };
    assert_eq!(mailbox, MailboxId::from_capability(&capability));
    let opened = sealed.reply_keys.open(stored.as_ref()).unwrap();
    assert_eq!(Receipt::decode(&opened).unwrap(), receipt);

    // A text over the limit is refused before any packet is built.
    let long = "a".repeat(MAX_TEXT_LEN + 1);
    let too_long = LeakContents {
        text: &long,
        ..contents
    };
    assert!(matches!(
        seal_leak(&too_long, &forward, &reply, MailboxId([0; 32]), &mut rng),
        Err(SealError::Encode(_))
    ));
}
