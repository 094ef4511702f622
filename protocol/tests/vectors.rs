//! The published test vectors in `protocol/testvectors/`, reproduced byte
//! for byte: packet creation for 1, 3 and 5 hops and every hop's processing,
//! a reply block's whole trip, and the payload encodings.
//!
//! The vectors are generated from fixed keys and fixed randomness. To
//! regenerate them after an intended format change (with a new `VERSION`):
//! `LEAK_WRITE_VECTORS=1 cargo test -p leak-protocol --test vectors`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;

use common::{ByteRng, label_bytes, path_of, test_nodes};
use leak_protocol::{
    BounceClass, Leak, MessageId, Outcome, Packet, Processed, Receipt, Recipient, Relationship,
    build_packet, build_reply_block,
    payload::Stamp,
    process_packet,
    sphinx::{FinalPayload, HEADER_LEN, MailboxId, PACKET_LEN, PAYLOAD_LEN, PathHop, VERSION},
};
use serde_json::{Value, json};

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testvectors")
}

/// Compares `actual` with the stored vector `name`, or writes it when
/// `LEAK_WRITE_VECTORS` is set. A missing file is a failure.
fn check(name: &str, actual: Value) {
    let path = vectors_dir().join(name);
    if std::env::var_os("LEAK_WRITE_VECTORS").is_some() {
        std::fs::create_dir_all(vectors_dir()).unwrap();
        let mut text = serde_json::to_string_pretty(&actual).unwrap();
        text.push('\n');
        std::fs::write(&path, text).unwrap();
        return;
    }
    let stored = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (generate with LEAK_WRITE_VECTORS=1)",
            path.display()
        )
    });
    let stored: Value = serde_json::from_str(&stored).unwrap();
    if stored != actual {
        // Find the first differing field for a readable failure.
        panic!(
            "{name} differs from the code's output:\n{}",
            first_difference(&stored, &actual, "$")
        );
    }
}

fn first_difference(a: &Value, b: &Value, at: &str) -> String {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                match y.get(k) {
                    Some(w) if v == w => {}
                    Some(w) => return first_difference(v, w, &format!("{at}.{k}")),
                    None => return format!("{at}.{k} missing from the output"),
                }
            }
            format!("{at}: output has extra fields")
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find(|(_, (v, w))| v != w)
            .map(|(i, (v, w))| first_difference(v, w, &format!("{at}[{i}]")))
            .unwrap_or_default(),
        _ => format!("{at}: stored {a} but code gives {b}"),
    }
}

/// A path whose hops all have different key hints (`first`, `first + 1`, …),
/// so the vectors pin which hint goes where.
fn path_with_hints(nodes: &[common::TestNode], delays: &[u32], first: u8) -> Vec<PathHop> {
    let mut path = path_of(nodes, delays, 0);
    for (i, hop) in path.iter_mut().enumerate() {
        hop.key_hint = first + i as u8;
    }
    path
}

fn hops_json(nodes: &[common::TestNode], path: &[PathHop]) -> Value {
    nodes
        .iter()
        .zip(path)
        .map(|(n, hop)| {
            json!({
                "node_id": hex::encode(n.id.0),
                "mix_secret": hex::encode(n.secret.to_bytes()),
                "mix_public": hex::encode(n.secret.public().0),
                "key_hint": hop.key_hint,
                "delay_ms": hop.delay.as_millis(),
            })
        })
        .collect()
}

/// Processes `packet` along `nodes`, recording each hop's result.
fn trace(mut packet: Packet, nodes: &[common::TestNode]) -> Vec<Value> {
    let mut steps = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let step = match process_packet(packet.as_bytes(), &node.secret) {
            Processed::Forward(f) => {
                let step = json!({
                    "hop": i,
                    "result": "forward",
                    "replay_tag": hex::encode(f.replay_tag.0),
                    "next_hop": hex::encode(f.next_hop.0),
                    "delay_ms": f.delay.as_millis(),
                    "packet": hex::encode(f.packet.as_bytes()),
                });
                packet = f.packet;
                step
            }
            Processed::Final(f) => match f.payload {
                FinalPayload::Exit { message } => json!({
                    "hop": i,
                    "result": "exit",
                    "replay_tag": hex::encode(f.replay_tag.0),
                    "delay_ms": f.delay.as_millis(),
                    "message": hex::encode(&message[..]),
                }),
                FinalPayload::Mailbox { mailbox, reply } => json!({
                    "hop": i,
                    "result": "mailbox",
                    "replay_tag": hex::encode(f.replay_tag.0),
                    "delay_ms": f.delay.as_millis(),
                    "mailbox": hex::encode(mailbox.0),
                    "reply": hex::encode(reply.as_ref()),
                }),
            },
            Processed::Drop(reason) => panic!("hop {i} dropped the vector packet: {reason}"),
        };
        steps.push(step);
    }
    steps
}

fn forward_vector(hops: usize) -> Value {
    let label = format!("forward {hops} hops");
    let nodes = test_nodes(hops, &label);
    let delays: Vec<u32> = (0..hops).map(|i| 1000 * (i as u32 + 1) + 7).collect();
    let message = b"I have a crush on you. I never dared to say it.".to_vec();
    let mut rng = ByteRng::from_label(&label, 4096);
    let path = path_with_hints(&nodes, &delays, 42);
    let packet = build_packet(&path, &message, &mut rng).unwrap();
    let randomness = hex::encode(rng.consumed());
    json!({
        "description": format!("a forward packet over {hops} hop(s), built and processed"),
        "version": VERSION,
        "packet_len": PACKET_LEN,
        "header_len": HEADER_LEN,
        "payload_len": PAYLOAD_LEN,
        "hops": hops_json(&nodes, &path),
        "message": hex::encode(&message),
        "randomness": randomness,
        "packet": hex::encode(packet.as_bytes()),
        "processing": trace(packet, &nodes),
    })
}

#[test]
fn forward_1_hop() {
    check("forward-1-hop.json", forward_vector(1));
}

#[test]
fn forward_3_hops() {
    check("forward-3-hops.json", forward_vector(3));
}

#[test]
fn forward_5_hops() {
    check("forward-5-hops.json", forward_vector(5));
}

#[test]
fn reply_block_3_hops() {
    let label = "reply block 3 hops";
    let nodes = test_nodes(3, label);
    let delays = [250, 500, 750];
    let mailbox = MailboxId(label_bytes("mailbox", 32).try_into().unwrap());
    let mut rng = ByteRng::from_label(label, 4096);
    let path = path_with_hints(&nodes, &delays, 9);
    let (block, keys) = build_reply_block(&path, mailbox, &mut rng).unwrap();
    let randomness = hex::encode(rng.consumed());
    let block_bytes = hex::encode(block.to_bytes());
    let message = Receipt {
        message_id: MessageId(label_bytes("message id", 16).try_into().unwrap()),
        outcome: Outcome::Delivered,
    }
    .encode()
    .unwrap();
    let (first_hop, packet) = block.into_packet(&message).unwrap();
    assert_eq!(first_hop, nodes[0].id);
    let processing = trace(packet.clone(), &nodes);
    let stored = hex::decode(processing[2]["reply"].as_str().unwrap()).unwrap();
    let opened = keys.open(&stored).unwrap();
    assert_eq!(&opened[..], &message[..]);
    check(
        "reply-block-3-hops.json",
        json!({
            "description": "a reply block over 3 hops to a mailbox: built by the client, \
                            sealed by the exit, processed by each hop, opened by the client",
            "version": VERSION,
            "hops": hops_json(&nodes, &path),
            "mailbox": hex::encode(mailbox.0),
            "randomness": randomness,
            "reply_block": block_bytes,
            "message": hex::encode(&message),
            "packet": hex::encode(packet.as_bytes()),
            "processing": processing,
            "opened": hex::encode(&opened[..]),
        }),
    );
}

#[test]
fn payload_encodings() {
    let nodes = test_nodes(2, "payload");
    let mut rng = ByteRng::from_label("payload", 4096);
    let (block, _) =
        build_reply_block(&path_of(&nodes, &[0, 0], 1), MailboxId([7; 32]), &mut rng).unwrap();
    let leak = Leak {
        message_id: MessageId(label_bytes("message id", 16).try_into().unwrap()),
        recipient: Recipient::parse("alex@example.org").unwrap(),
        relationship: Relationship::Coworker,
        text: "You're underpaid. Ask for the raise.".into(),
        policy_version: 3,
        stamp: Stamp {
            epoch: 493_812,
            nonce: 1_234_567,
        },
        reply_block: block.clone(),
        answer_to: None,
    };
    let receipts = [
        Outcome::Delivered,
        Outcome::Refused {
            rule: "threats.direct".into(),
            reason: "The message reads as a threat.".into(),
        },
        Outcome::RecipientOptedOut,
        Outcome::RateLimited,
        Outcome::Bounced,
        Outcome::Accepted,
        Outcome::BouncedWith(BounceClass::UnknownUser),
        Outcome::BouncedWith(BounceClass::Other),
        Outcome::ThreadEnded,
    ]
    .into_iter()
    .map(|outcome| {
        let r = Receipt {
            message_id: leak.message_id,
            outcome,
        };
        let encoded = r.encode().unwrap();
        assert_eq!(Receipt::decode(&encoded).unwrap(), r);
        let (variant, rule, reason) = match &r.outcome {
            Outcome::Delivered => ("Delivered", None, None),
            Outcome::Refused { rule, reason } => {
                ("Refused", Some(rule.clone()), Some(reason.clone()))
            }
            Outcome::RecipientOptedOut => ("RecipientOptedOut", None, None),
            Outcome::RateLimited => ("RateLimited", None, None),
            Outcome::Bounced => ("Bounced", None, None),
            Outcome::Accepted => ("Accepted", None, None),
            Outcome::BouncedWith(_) => ("BouncedWith", None, None),
            Outcome::ThreadEnded => ("ThreadEnded", None, None),
        };
        let class = match &r.outcome {
            Outcome::BouncedWith(class) => Some(format!("{class:?}")),
            _ => None,
        };
        json!({
            "message_id": hex::encode(r.message_id.0),
            "outcome": variant,
            "rule": rule,
            "reason": reason,
            "class": class,
            "encoded": hex::encode(encoded),
        })
    })
    .collect::<Vec<_>>();
    let encoded = leak.encode().unwrap();
    assert_eq!(Leak::decode(&encoded).unwrap(), leak);
    let answers = answer_vectors(&leak, &block, &mut rng);
    check(
        "payloads.json",
        json!({
            "description": "payload encodings: format version, kind, postcard body",
            "leak": {
                "message_id": hex::encode(leak.message_id.0),
                "recipient": leak.recipient.as_str(),
                "relationship": leak.relationship.as_str(),
                "text": leak.text,
                "policy_version": leak.policy_version,
                "stamp": { "epoch": leak.stamp.epoch, "nonce": leak.stamp.nonce },
                "reply_block": hex::encode(block.to_bytes()),
                "encoded": hex::encode(&encoded),
            },
            "receipts": receipts,
            "answers": answers,
        }),
    );
}

/// An answerable leak (the same leak with an [`AnswerTo`] appended), a
/// fetch, a sealed answer and the exit's reply carrying it.
fn answer_vectors(leak: &Leak, block: &leak_protocol::ReplyBlock, rng: &mut ByteRng) -> Value {
    use leak_protocol::answers::{
        Answer, AnswerTo, AnswerVia, Fetch, FetchReply, InboxId, SealedAnswer, ThreadState,
        open_answer, seal_answer,
    };
    let capability: [u8; 32] = label_bytes("inbox capability", 32).try_into().unwrap();
    let secret: [u8; 32] = label_bytes("answer secret", 32).try_into().unwrap();
    let answer_to = AnswerTo {
        key: leak_protocol::crypto::x25519_public(&secret),
        inbox: InboxId::from_capability(&capability),
    };
    let answerable = Leak {
        answer_to: Some(answer_to),
        ..leak.clone()
    };
    let encoded_leak = answerable.encode().unwrap();
    assert_eq!(Leak::decode(&encoded_leak).unwrap(), answerable);
    let fetch = Fetch {
        capability,
        ack: 2,
        reply_block: block.clone(),
    };
    let encoded_fetch = fetch.encode().unwrap();
    assert_eq!(Fetch::decode(&encoded_fetch).unwrap(), fetch);
    let answer = Answer {
        via: AnswerVia::Email,
        received_minute: 29_630_880,
        text: "Thank you. Who is this?".into(),
        dropped_attachments: 1,
    };
    let sealed = seal_answer(&answer_to.key, &answer, rng).unwrap();
    assert_eq!(open_answer(&secret, &sealed).unwrap(), answer);
    let reply = FetchReply {
        state: ThreadState::Open,
        answer: Some(SealedAnswer {
            seq: 3,
            sealed: sealed.clone(),
        }),
        waiting: 1,
    };
    let encoded_reply = reply.encode().unwrap();
    assert_eq!(FetchReply::decode(&encoded_reply).unwrap(), reply);
    json!({
        "capability": hex::encode(capability),
        "inbox": hex::encode(answer_to.inbox.0),
        "answer_secret": hex::encode(secret),
        "answer_key": hex::encode(answer_to.key),
        "leak_encoded": hex::encode(&encoded_leak),
        "fetch": { "ack": fetch.ack, "encoded": hex::encode(&encoded_fetch) },
        "answer": {
            "via": "Email",
            "received_minute": answer.received_minute,
            "text": answer.text,
            "dropped_attachments": answer.dropped_attachments,
            "sealed": hex::encode(&sealed),
        },
        "reply": {
            "state": "Open",
            "seq": 3,
            "waiting": 1,
            "encoded": hex::encode(&encoded_reply),
        },
    })
}

/// The vectors are also checked independently of the generator: every
/// stored packet, processed with the stored secret, gives the stored output.
#[test]
fn stored_vectors_process_as_recorded() {
    if std::env::var_os("LEAK_WRITE_VECTORS").is_some() {
        return;
    }
    for name in [
        "forward-1-hop.json",
        "forward-3-hops.json",
        "forward-5-hops.json",
        "reply-block-3-hops.json",
    ] {
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(vectors_dir().join(name)).unwrap())
                .unwrap();
        let mut packet = hex::decode(v["packet"].as_str().unwrap()).unwrap();
        for (hop, step) in v["hops"]
            .as_array()
            .unwrap()
            .iter()
            .zip(v["processing"].as_array().unwrap())
        {
            let secret: [u8; 32] = hex::decode(hop["mix_secret"].as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap();
            let secret = leak_protocol::MixSecret::from_bytes(secret);
            assert_eq!(
                hex::encode(secret.public().0),
                hop["mix_public"].as_str().unwrap()
            );
            match process_packet(&packet, &secret) {
                Processed::Forward(f) => {
                    assert_eq!(step["result"], "forward", "{name}");
                    assert_eq!(
                        hex::encode(f.replay_tag.0),
                        step["replay_tag"].as_str().unwrap()
                    );
                    packet = f.packet.as_bytes().to_vec();
                    assert_eq!(hex::encode(&packet), step["packet"].as_str().unwrap());
                }
                Processed::Final(f) => {
                    assert_ne!(step["result"], "forward", "{name}");
                    assert_eq!(
                        hex::encode(f.replay_tag.0),
                        step["replay_tag"].as_str().unwrap()
                    );
                }
                Processed::Drop(r) => panic!("{name}: dropped: {r}"),
            }
        }
    }
}
