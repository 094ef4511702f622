//! Writes the seed inputs in `seeds/<target>/`: valid encodings the fuzzer
//! would take a long time to find by itself. Run from `protocol/fuzz` with
//! `cargo run --example seeds` after a format change; the output is
//! deterministic, so unchanged formats give unchanged files.

use std::{fs, path::Path};

use leak_protocol::{
    MessageId, Outcome, Receipt, Recipient, Relationship, build_reply_block,
    payload::{Leak, Stamp},
    reply::REPLY_BLOCK_LEN,
    sphinx::MailboxId,
};
use leak_protocol_fuzz::{DetRng, path};

fn write(target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target);
    fs::create_dir_all(&dir)?;
    fs::write(dir.join(name), bytes)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (block, _keys) = build_reply_block(
        &path(&[3, 1, 0], &[5, 50, 500], 9),
        MailboxId([0x6d; 32]),
        &mut DetRng::new(3),
    )?;
    assert_eq!(block.to_bytes().len(), REPLY_BLOCK_LEN);
    write("reply_block", "valid_block", &block.to_bytes())?;
    // Selector bytes: even damages the fixed reply, odd builds a new one.
    write("reply_block", "intact_reply", &[0])?;
    write("reply_block", "built_reply", b"\x01\x02\x00\x01\x02hello")?;

    let leaks = [
        Leak {
            message_id: MessageId([0x11; 16]),
            recipient: Recipient::parse("alice@example.com")?,
            relationship: Relationship::Coworker,
            text: "The quarterly numbers were changed after the audit.".into(),
            policy_version: 1,
            stamp: Stamp {
                epoch: 20_000,
                nonce: 12_345,
            },
            reply_block: block.clone(),
            answer_to: None,
        },
        Leak {
            message_id: MessageId([0x22; 16]),
            recipient: Recipient::parse("josé@exämple.de")?,
            relationship: Relationship::FriendOfAFriend,
            text: "Zeile eins\n\tZeile zwei: äöü ✓".into(),
            policy_version: u32::MAX,
            stamp: Stamp {
                epoch: u64::MAX,
                nonce: 0,
            },
            reply_block: block.clone(),
            answer_to: Some(leak_protocol::answers::AnswerTo {
                key: leak_protocol::crypto::x25519_public(&[7; 32]),
                inbox: leak_protocol::answers::InboxId::from_capability(&[8; 32]),
            }),
        },
    ];
    for (i, leak) in leaks.iter().enumerate() {
        write("decode_leak", &format!("valid_{i}"), &leak.encode()?)?;
    }

    let outcomes = [
        Outcome::Delivered,
        Outcome::Refused {
            rule: "no-threats".into(),
            reason: "The message reads as a threat.".into(),
        },
        Outcome::RecipientOptedOut,
        Outcome::RateLimited,
        Outcome::Bounced,
    ];
    for (i, outcome) in outcomes.into_iter().enumerate() {
        let receipt = Receipt {
            message_id: MessageId([0x33; 16]),
            outcome,
        };
        write("decode_receipt", &format!("valid_{i}"), &receipt.encode()?)?;
    }

    {
        use leak_protocol::answers::{
            Answer, AnswerVia, Fetch, FetchReply, SealedAnswer, ThreadState, seal_answer,
        };
        let fetch = Fetch {
            capability: [8; 32],
            ack: 1,
            reply_block: block.clone(),
        };
        write("decode_answers", "fetch", &fetch.encode()?)?;
        let answer = Answer {
            via: AnswerVia::Web,
            received_minute: 29_000_000,
            text: "Merci. Qui es-tu ?".into(),
            dropped_attachments: 0,
        };
        let key = leak_protocol::crypto::x25519_public(&[7; 32]);
        let sealed = seal_answer(&key, &answer, &mut DetRng::new(7))?;
        write("decode_answers", "sealed", &sealed)?;
        let reply = FetchReply {
            state: ThreadState::Open,
            answer: Some(SealedAnswer { seq: 1, sealed }),
            waiting: 0,
        };
        write("decode_answers", "reply", &reply.encode()?)?;
    }

    for (i, address) in [
        "alice@example.com",
        "first.last+tag@mail.example.org",
        "用户@例子.广告",
        "a@xn--exmple-cua.de",
    ]
    .iter()
    .enumerate()
    {
        write("recipient", &format!("valid_{i}"), address.as_bytes())?;
    }

    // Selector bytes: 1, 6 and 11 deliver the intact fixed packet from link
    // 0, 1 and 2; 4 builds a packet the fuzzer describes.
    for selector in [1u8, 6, 11] {
        write("process_packet", &format!("intact_{selector}"), &[selector])?;
    }
    write("process_packet", "built", b"\x04\x03\x00\x01\x02hello")?;
    // Selector 131 (top bit set, 131 % 5 == 1) tags the payload after the
    // first hop and untags it before the exit: offset 3,400 (near the end,
    // where a leak's padding is), then the tag.
    let mut tag = vec![131u8, 0x0d, 0x48];
    tag.extend_from_slice(b"sender #4711, first seen 02:40");
    write("process_packet", "tagged", &tag)?;

    let seed = [0x42u8; 32];
    let descriptor = leak_protocol::directory::Descriptor {
        node: leak_protocol::NodeId(leak_protocol::crypto::ed25519_public(&seed)),
        addresses: vec!["/ip4/192.0.2.1/tcp/4700".into()],
        roles: leak_protocol::directory::Roles {
            relay: true,
            exit: true,
        },
        family: "seed".into(),
        exit: Some(leak_protocol::directory::ExitInfo {
            domain: "exit.example".into(),
            policy_version: 1,
            stamp_bits: 0,
        }),
        epoch_period_secs: 3600,
        mix_keys: vec![leak_protocol::directory::EpochKey {
            epoch: 497_222,
            key: leak_protocol::MixPublicKey([9; 32]),
        }],
        software: "leak-node 0.1.0".into(),
        published_at: 1_790_000_000,
        traffic: Some(leak_protocol::directory::EpochTraffic {
            epoch: 497_221,
            from_clients: 1_200,
            from_nodes: 40_000,
        }),
    };
    write("descriptor", "valid", &descriptor.sign(&seed)?.to_bytes())?;
    Ok(())
}
