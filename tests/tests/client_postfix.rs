//! `leak send` through five `leak-node` processes to a real Postfix that
//! delivers into a Maildir, and what each party knows afterwards.
//!
//! Needs Debian's `postfix` package and root (see `leak_tests::mail`);
//! `scripts/test.sh` installs it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod client_common;

use std::{path::Path, time::Duration};

use client_common::{Federation, Node, Sender, json_line, stderr};
use leak_tests::mail::Postfix;
use libp2p::PeerId;

/// Every byte a node holds or said: its stdout and stderr, and every file
/// under its data directory.
fn everything_of(node: &Node, data_dir: &Path) -> Vec<u8> {
    let mut out = node.process.stdout().into_bytes();
    out.extend(node.process.stderr().into_bytes());
    let mut stack = vec![data_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.extend(bytes);
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// One leak, delivered by Postfix into a Maildir, with the right headers and
/// text, reported `Delivered` in `--json`. Then the privacy audit: no node's
/// logs and data directory hold both something that identifies the client
/// (its peer id, as text or bytes) and anything of the leak (recipient,
/// text); no relay holds anything of the leak; the exit holds nothing of it
/// once it is delivered; the email holds nothing about the client.
#[test]
fn a_leak_through_postfix_and_what_each_node_knows() {
    let postfix = Postfix::start("example.org");
    let dir = tempfile::tempdir().unwrap();
    let mut fed = Federation::start(dir.path(), 4, false);
    let smtp = format!("exit.smtp_url={:?}", postfix.smtp_url());
    fed.start_exit_with(&["--set", "exit.transport=\"smtp\"", "--set", &smtp]);
    let sender = Sender::new(
        dir.path(),
        "sender",
        &fed.bootstrap(),
        &["--mixing-delay-ms", "20"],
    );
    sender.wait_for_directory(5, 1);

    let recipient = "frank.quietly@example.org";
    let text = "Your garden is the loveliest on our street; I never told you.";
    let out = sender.run(&[
        "send",
        "--verbose",
        "--json",
        "--to",
        recipient,
        "--as",
        "friend-of-a-friend",
        text,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json = json_line(&out);
    assert!(json.contains(r#""outcome":"delivered""#), "{json}");
    let client: PeerId = stderr(&out)
        .lines()
        .find_map(|l| l.split("client peer id: ").nth(1))
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    let messages = postfix.wait_for_messages(1, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1));
    let messages_later = postfix.messages();
    assert_eq!(messages_later.len(), 1, "exactly one email");
    let mail = &messages[0];
    assert_eq!(
        mail.subject().as_deref(),
        Some("From a friend of a friend, anonymously.")
    );
    assert!(
        mail.header("To").unwrap().contains(recipient),
        "{}",
        mail.text()
    );
    assert!(
        mail.header("From").unwrap().contains("leak@leak.test"),
        "{}",
        mail.text()
    );
    assert!(mail.body_text().contains(text), "{}", mail.text());

    // The audit.
    let client_text = client.to_string();
    let client_bytes = client.to_bytes();
    let identifies_client =
        |b: &[u8]| contains(b, client_text.as_bytes()) || contains(b, &client_bytes);
    let holds_leak = |b: &[u8]| contains(b, recipient.as_bytes()) || contains(b, text.as_bytes());
    let mut anyone_saw_client = false;
    for (i, relay) in fed.relays.iter().enumerate() {
        let knows = everything_of(relay, &fed.dir.join(format!("relay-{i}")));
        anyone_saw_client |= identifies_client(&knows);
        assert!(
            !holds_leak(&knows),
            "relay-{i} holds the recipient or the text"
        );
    }
    let exit = fed.exit.as_ref().unwrap();
    let knows = everything_of(exit, &fed.dir.join("exit"));
    assert!(
        !identifies_client(&knows),
        "the exit knows the client's peer id"
    );
    assert!(
        !holds_leak(&knows),
        "the exit still holds the recipient or the text after delivery"
    );
    assert!(
        holds_leak(&mail.raw),
        "the detector finds the leak where it is"
    );
    assert!(!contains(&mail.raw, client_text.as_bytes()));
    assert!(!contains(&mail.raw, &client_bytes));
    // Nothing identifying was found anywhere, or it was found only where
    // nothing of the leak is: both are fine; say which, for the record.
    eprintln!("a relay holds the client's peer id: {anyone_saw_client}");
}
