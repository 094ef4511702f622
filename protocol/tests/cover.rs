//! Cover traffic: a drop opens as cover at the exit, a loop comes back to
//! its builder's mailbox and opens as cover with its own keys only, an echo
//! reaches its exit carrying a reply block whose answer opens as cover with
//! the builder's keys.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{ByteRng, path_of, test_nodes};
use leak_protocol::{
    MixSecret, Packet, Processed,
    cover::{
        COVER_MESSAGE, ECHO_LEN, build_echo, build_loop, is_cover, is_echo, open_echo, seal_drop,
    },
    payload::{FORMAT_VERSION, Kind, peek_kind},
    process_packet,
    sphinx::{FinalPayload, MailboxId},
};

/// Runs `packet` through `secrets` in order; returns the final payload.
fn run(mut packet: Packet, secrets: &[&MixSecret]) -> FinalPayload {
    for secret in secrets {
        match process_packet(packet.as_bytes(), secret) {
            Processed::Forward(f) => packet = f.packet,
            Processed::Final(f) => return f.payload,
            Processed::Drop(reason) => panic!("dropped: {reason:?}"),
        }
    }
    panic!("the path ended without a final hop")
}

#[test]
fn an_exit_opens_a_drop_and_sees_cover() {
    let nodes = test_nodes(3, "cover drop");
    let path = path_of(&nodes, &[1000, 2000, 3000], 7);
    let mut rng = ByteRng::from_label("cover drop rng", 4096);
    let packet = seal_drop(&path, &mut rng).expect("builds");
    let secrets: Vec<&MixSecret> = nodes.iter().map(|n| &n.secret).collect();
    match run(packet, &secrets) {
        FinalPayload::Exit { message } => {
            assert!(is_cover(&message));
            assert_eq!(peek_kind(&message), Some(Kind::Cover));
        }
        FinalPayload::Mailbox { .. } => panic!("a drop ended at a mailbox"),
    }
}

#[test]
fn a_loop_comes_back_to_its_mailbox_and_opens_as_cover() {
    let nodes = test_nodes(5, "cover loop");
    let path = path_of(&nodes, &[1000, 2000, 3000, 4000, 5000], 7);
    let mut rng = ByteRng::from_label("cover loop rng", 4096);
    let mailbox = MailboxId([9; 32]);
    let built = build_loop(&path, mailbox, &mut rng).expect("builds");
    assert_eq!(built.first_hop, nodes[0].id);
    let secrets: Vec<&MixSecret> = nodes.iter().map(|n| &n.secret).collect();
    match run(built.packet, &secrets) {
        FinalPayload::Mailbox { mailbox: id, reply } => {
            assert_eq!(id, mailbox);
            let opened = built.keys.open(&reply[..]).expect("opens");
            assert!(is_cover(&opened));
        }
        FinalPayload::Exit { .. } => panic!("a loop ended at an exit"),
    }
}

#[test]
fn another_loops_keys_do_not_open_it() {
    let nodes = test_nodes(3, "cover loop keys");
    let path = path_of(&nodes, &[10, 20, 30], 1);
    let mut rng = ByteRng::from_label("cover loop keys rng", 8192);
    let mailbox = MailboxId([1; 32]);
    let first = build_loop(&path, mailbox, &mut rng).expect("builds");
    let second = build_loop(&path, mailbox, &mut rng).expect("builds");
    let secrets: Vec<&MixSecret> = nodes.iter().map(|n| &n.secret).collect();
    let FinalPayload::Mailbox { reply, .. } = run(first.packet, &secrets) else {
        panic!("not a mailbox payload");
    };
    assert!(second.keys.open(&reply[..]).is_err());
    assert!(first.keys.open(&reply[..]).is_ok());
}

#[test]
fn only_the_exact_cover_message_is_cover() {
    assert_eq!(COVER_MESSAGE, [FORMAT_VERSION, Kind::Cover as u8]);
    assert!(!is_cover(&[FORMAT_VERSION, Kind::Leak as u8]));
    assert!(!is_cover(&[FORMAT_VERSION, Kind::Cover as u8, 0]));
    assert!(!is_cover(&[]));
}

#[test]
fn an_echo_reaches_its_exit_and_its_answer_comes_back_as_cover() {
    let nodes = test_nodes(6, "cover echo");
    let forward = path_of(&nodes[..3], &[1000, 2000, 3000], 7);
    let reply = path_of(&nodes[3..], &[4000, 5000, 6000], 8);
    let mut rng = ByteRng::from_label("cover echo rng", 8192);
    let mailbox = MailboxId([5; 32]);
    let built = build_echo(&forward, &reply, mailbox, &mut rng).expect("builds");
    assert_eq!(built.first_hop, nodes[0].id);
    let secrets: Vec<&MixSecret> = nodes.iter().map(|n| &n.secret).collect();
    let FinalPayload::Exit { message } = run(built.packet, &secrets[..3]) else {
        panic!("an echo ended at a mailbox");
    };
    assert!(is_echo(&message));
    assert!(!is_cover(&message));
    assert_eq!(peek_kind(&message), Some(Kind::Echo));
    assert_eq!(message.len(), ECHO_LEN);
    // The exit answers along the block, as it sends a receipt.
    let block = open_echo(&message).expect("a well-formed echo");
    assert_eq!(block.first_hop(), nodes[3].id);
    let (first, answer) = block.into_packet(&COVER_MESSAGE).expect("answers");
    assert_eq!(first, nodes[3].id);
    let FinalPayload::Mailbox { mailbox: id, reply } = run(answer, &secrets[3..]) else {
        panic!("the answer ended at an exit");
    };
    assert_eq!(id, mailbox);
    let opened = built
        .keys
        .open(&reply[..])
        .expect("opens with the echo's keys");
    assert!(is_cover(&opened));
}

#[test]
fn a_malformed_echo_has_no_reply_block() {
    let nodes = test_nodes(3, "cover echo malformed");
    let forward = path_of(&nodes[..2], &[10, 20], 1);
    let reply = path_of(&nodes[2..], &[30], 2);
    let mut rng = ByteRng::from_label("cover echo malformed rng", 8192);
    let built = build_echo(&forward, &reply, MailboxId([1; 32]), &mut rng).expect("builds");
    let secrets: Vec<&MixSecret> = nodes.iter().map(|n| &n.secret).collect();
    let FinalPayload::Exit { message } = run(built.packet, &secrets[..2]) else {
        panic!("not an exit payload");
    };
    assert!(open_echo(&message).is_some());
    // Truncated, extended, or another kind: no block.
    assert!(open_echo(&message[..ECHO_LEN - 1]).is_none());
    let mut longer = message.to_vec();
    longer.push(0);
    assert!(open_echo(&longer).is_none());
    let mut other = message.to_vec();
    other[1] = Kind::Cover as u8;
    assert!(open_echo(&other).is_none());
    assert!(open_echo(&[FORMAT_VERSION, Kind::Echo as u8]).is_none());
    assert!(open_echo(&[]).is_none());
    // An empty forward path builds nothing.
    assert!(build_echo(&[], &reply, MailboxId([1; 32]), &mut rng).is_err());
}
