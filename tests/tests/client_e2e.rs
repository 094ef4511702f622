//! The sender's client `leak` against a federation of separate `leak-node`
//! processes on 127.0.0.1, as a sender and operators run them.
//!
//! The exit delivers with the file transport (one `.eml` file per email);
//! `client_postfix.rs` does the same through a real Postfix.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod client_common;

use std::{
    io::{BufRead as _, BufReader},
    process::Stdio,
};

use client_common::{Federation, Sender, header, http_post, json_line, stderr, stdout};
use libp2p::PeerId;

/// The whole path of a leak through real processes: delivery with the
/// right headers and text and a `Delivered` receipt, `--json`, `status`;
/// a refusal by a stricter exit; an opted-out recipient; and a middle relay
/// killed while the leak is in flight, after which the client sends again
/// over another path and exactly one email arrives.
#[test]
fn leaks_through_a_federation_of_processes() {
    let dir = tempfile::tempdir().unwrap();
    let mut fed = Federation::start(dir.path(), 4, true);
    let sender = Sender::new(
        dir.path(),
        "sender",
        &fed.bootstrap(),
        &["--mixing-delay-ms", "20", "--receipt-timeout-secs", "20"],
    );
    sender.wait_for_directory(5, 1);

    // Delivered: one email, the right headers, the text; the receipt says so.
    let text = "I always admired how calmly you handle the Monday meetings.";
    let out = sender.run(&[
        "send",
        "--direct",
        "--to",
        "alice@example.com",
        "--as",
        "friend",
        text,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("Delivered"), "{}", stdout(&out));
    let emails = fed.emails_to("alice@example.com");
    assert_eq!(emails.len(), 1, "{emails:?}");
    let email = &emails[0];
    assert_eq!(
        header(email, "Subject"),
        Some("From a friend, anonymously.")
    );
    assert_eq!(
        header(email, "From"),
        Some("\"A friend via Leak\" <leak@leak.test>")
    );
    assert!(email.contains(text), "{email}");
    assert!(header(email, "List-Unsubscribe").is_some());

    // --json: one object, parsed by its fields.
    let out = sender.run(&[
        "send",
        "--direct",
        "--json",
        "--to",
        "bob@example.com",
        "--as",
        "coworker",
        "Your slides last week were the clearest I have seen.",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json = json_line(&out);
    assert!(json.contains(r#""outcome":"delivered""#), "{json}");
    assert!(json.contains(r#""attempts":1"#), "{json}");
    assert!(json.contains(r#""elapsed_ms":"#), "{json}");
    assert_eq!(fed.emails_to("bob@example.com").len(), 1);
    let out = sender.run(&["status", "--json"]);
    assert_eq!(stdout(&out).matches(r#""outcome":"delivered""#).count(), 2);

    // The longest path: four relays and the exit, every one of a family of
    // its own, as the path rules require.
    let out = sender.run(&[
        "send",
        "--direct",
        "--hops",
        "5",
        "--to",
        "grace@example.com",
        "--as",
        "friend",
        "You make every team you join kinder.",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(fed.emails_to("grace@example.com").len(), 1);

    // A text the client's policy accepts but this exit's local rules refuse.
    let out = sender.run(&[
        "send",
        "--direct",
        "--json",
        "--to",
        "carol@example.com",
        "--as",
        "family",
        "I still think about the pineapple cake you made.",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let json = json_line(&out);
    assert!(json.contains(r#""outcome":"refused""#), "{json}");
    assert!(json.contains(r#""rule":"local.pineapple""#), "{json}");
    assert!(fed.emails_to("carol@example.com").is_empty());

    // The recipient opts out with the email's one-click link; the next leak
    // to them is answered RecipientOptedOut and nothing arrives.
    let link = leak_tests::mail::DeliveredMail::from_bytes(email.as_bytes())
        .header("List-Unsubscribe")
        .unwrap()
        .rsplit_once(", <")
        .unwrap()
        .1
        .trim_end_matches('>')
        .to_owned();
    let status = http_post(&link, "List-Unsubscribe=One-Click");
    assert!(status.contains("200"), "{status}");
    let out = sender.run(&[
        "send",
        "--direct",
        "--to",
        "alice@example.com",
        "--as",
        "friend",
        "One more thing I wanted to say.",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("RecipientOptedOut"),
        "{}",
        stdout(&out)
    );
    assert_eq!(fed.emails_to("alice@example.com").len(), 1);

    // A middle relay dies while the leak is in flight. Hops hold packets
    // for about a second here, so the packet is still before or at the
    // middle relay when the test kills it on reading the route. Three hops:
    // four relays leave a retransmission room to avoid the dead one.
    let slow = Sender::new(
        dir.path(),
        "slow-sender",
        &fed.bootstrap(),
        &[
            "--mixing-delay-ms",
            "1000",
            "--receipt-timeout-secs",
            "3",
            "--hops",
            "3",
        ],
    );
    let mut child = slow
        .command(&[
            "send",
            "--direct",
            "--verbose",
            "--json",
            "--to",
            "dave@example.com",
            "--as",
            "someone",
            "You were right about the budget, and I said nothing.",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let route = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("leak send ended without a route: {seen:?}"))
            .unwrap();
        seen.push(line.clone());
        if let Some(route) = line.split("attempt 1: route: ").nth(1) {
            break route.to_owned();
        }
    };
    let forward = route.split(" (exit)").next().unwrap();
    let hops: Vec<&str> = forward.split(" -> ").collect();
    assert_eq!(hops.len(), 3, "{route}");
    let middle: PeerId = hops[1].parse().unwrap();
    let node = fed
        .relay_by_peer(&middle)
        .unwrap_or_else(|| panic!("the middle {middle} is not a relay"));
    node.process.signal(nix::sys::signal::Signal::SIGKILL);
    // The rest of stderr, then the result.
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let out = child.wait_with_output().unwrap();
    let json = json_line(&out);
    assert_eq!(out.status.code(), Some(0), "{json} {seen:?} {rest:?}");
    assert!(json.contains(r#""outcome":"delivered""#), "{json}");
    assert!(
        rest.iter().any(|l| l.contains("attempt 2: route: ")),
        "sent again: {rest:?}"
    );
    let again = rest
        .iter()
        .find_map(|l| l.split("attempt 2: route: ").nth(1))
        .unwrap();
    assert!(
        !again
            .split(" (exit)")
            .next()
            .unwrap()
            .contains(&middle.to_string()),
        "the second path avoids the dead relay: {again}"
    );
    // Exactly one email. A first copy that got past the middle before it
    // died and arrives late is answered from the exit's record and never
    // sent (`exit.rs`: delivers_once_and_answers_every_copy), so there is
    // nothing to wait for here.
    assert_eq!(fed.emails_to("dave@example.com").len(), 1);
}

/// What a sender sees when the federation cannot carry a leak: no exit in
/// the directory, then too few nodes for the path rules. Both exit with 3.
#[test]
fn no_exit_and_too_few_nodes_are_failures() {
    let dir = tempfile::tempdir().unwrap();
    let mut fed = Federation::start(dir.path(), 2, false);
    let sender = Sender::new(
        dir.path(),
        "sender",
        &fed.bootstrap(),
        &["--mixing-delay-ms", "0"],
    );
    sender.wait_for_directory(2, 0);
    let text = "Thank you for standing up for me in that meeting.";
    let out = sender.run(&[
        "send",
        "--direct",
        "--to",
        "erin@example.com",
        "--as",
        "coworker",
        text,
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no exit in the directory"),
        "{}",
        stderr(&out)
    );
    let out = sender.run(&[
        "send",
        "--direct",
        "--json",
        "--to",
        "erin@example.com",
        "--as",
        "coworker",
        text,
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert!(json_line(&out).contains(r#""outcome":"failed""#));

    // With an exit, two relays carry a 3-hop leak but not a 5-hop one.
    fed.start_exit();
    sender.wait_for_directory(3, 1);
    let out = sender.run(&[
        "send",
        "--direct",
        "--hops",
        "5",
        "--to",
        "erin@example.com",
        "--as",
        "coworker",
        text,
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not enough nodes for a 5-hop path"),
        "{}",
        stderr(&out)
    );
    assert!(fed.emails().is_empty());
    let out = sender.run(&[
        "send",
        "--direct",
        "--hops",
        "3",
        "--to",
        "erin@example.com",
        "--as",
        "coworker",
        text,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(fed.emails_to("erin@example.com").len(), 1);
    // The shortest path: an entry relay and the exit; the receipt comes
    // straight back to the entry's mailbox.
    let out = sender.run(&[
        "send",
        "--direct",
        "--hops",
        "2",
        "--to",
        "heidi@example.com",
        "--as",
        "family",
        text,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(fed.emails_to("heidi@example.com").len(), 1);
}
