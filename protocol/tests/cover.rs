//! Cover traffic: a drop opens as cover at the exit, a loop comes back to
//! its builder's mailbox and opens as cover with its own keys only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{ByteRng, path_of, test_nodes};
use leak_protocol::{
    MixSecret, Packet, Processed,
    cover::{COVER_MESSAGE, build_loop, is_cover, seal_drop},
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
