//! The exit, in one process with its relays: moderation, receipts,
//! deduplication, opt-out and the operator's queue, with the file transport.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use leak_node::exit::admin::{Request, Response};
use leak_protocol::{MessageId, Outcome, Relationship, payload::Stamp};
use leak_tests::{
    exit::{Draft, Federation, assert_queue_scrubbed},
    http_request,
    mail::DeliveredMail,
    wait_until,
};

const RECEIPT: Duration = Duration::from_secs(30);

/// The decoded text body of an email.
fn body_text(email: &str) -> String {
    mail_parser::MessageParser::default()
        .parse(email.as_bytes())
        .unwrap()
        .body_text(0)
        .unwrap()
        .replace("\r\n", "\n")
}

fn header<'a>(email: &'a str, name: &str) -> Option<&'a str> {
    let head = email.split("\r\n\r\n").next()?;
    head.split("\r\n")
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_once_and_answers_every_copy() {
    let dir = tempfile::tempdir().unwrap();
    let fed = Federation::start(dir.path(), 2, |_| {}).await;
    let sender = fed.sender();
    let draft = Draft {
        to: "alice@example.org",
        relationship: Relationship::Coworker,
        text: "You killed it at karaoke last night.\nI mean it.",
        id: None,
    };
    let sent = sender.leak(&fed, &draft).await;
    let receipt = sender.receipt(&sent, RECEIPT).await.expect("a receipt");
    assert_eq!(receipt.outcome, Outcome::Delivered);
    let outbox = fed.outbox();
    assert_eq!(outbox.len(), 1);
    let email = &outbox[0];
    assert_eq!(
        header(email, "From"),
        Some("\"A coworker via Leak\" <leak@exit.test>")
    );
    assert_eq!(header(email, "To"), Some("alice@example.org"));
    assert_eq!(
        header(email, "Subject"),
        Some("From a coworker, anonymously.")
    );
    assert_eq!(
        header(email, "List-Unsubscribe-Post"),
        Some("List-Unsubscribe=One-Click")
    );
    // The opt-out email first (signed by the recipient's provider, it holds
    // at every exit), then the one-click URL.
    let unsubscribe = DeliveredMail::from_bytes(email.as_bytes())
        .header("List-Unsubscribe")
        .unwrap();
    assert!(
        unsubscribe.starts_with("<mailto:unsubscribe@exit.test?subject=unsubscribe%20")
            && unsubscribe.contains(">, <http://127.0.0.1:"),
        "{unsubscribe}"
    );
    let message_id = header(email, "Message-ID").unwrap();
    assert!(message_id.ends_with("@exit.test>"), "{message_id}");
    // The sender's client chose the leak's id (and shows it to its user):
    // it appears nowhere in the email, links included.
    assert!(!email.contains(&sent.id.to_string()), "{email}");
    assert!(header(email, "Date").unwrap().contains("+0000"));
    let body = body_text(email);
    assert!(
        body.starts_with("You killed it at karaoke last night.\nI mean it.\n"),
        "{body}"
    );
    assert!(body.contains("Never receive a message from Leak again"));
    assert!(body.contains("Report this message as abuse"));
    // Nothing else from the sender: only the exit's own headers.
    let names: Vec<&str> = email
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .split("\r\n")
        .filter(|l| !l.starts_with([' ', '\t']))
        .filter_map(|l| l.split_once(':').map(|(n, _)| n))
        .collect();
    assert_eq!(
        names,
        [
            "From",
            "To",
            "Subject",
            "Message-ID",
            "Date",
            "List-Unsubscribe",
            "List-Unsubscribe-Post",
            "Auto-Submitted",
            "Feedback-ID",
            "MIME-Version",
            "Content-Type",
            "Content-Transfer-Encoding",
        ]
    );

    // The same message id again, over a new reply block: answered, not
    // delivered again.
    let again = Draft {
        id: Some(sent.id),
        ..draft
    };
    let (packet, resent) = sender.build(&fed, (1, 0), &again);
    sender.send(&fed, 1, packet).await;
    let receipt = sender.receipt(&resent, RECEIPT).await.expect("a receipt");
    assert_eq!(receipt.outcome, Outcome::Delivered);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fed.outbox().len(), 1, "delivered once");

    // Nothing of the leak is left in the exit's queue directory.
    assert_queue_scrubbed(&fed.dir.join("exit").join("exit-queue"));
    let exit = fed.exit.node.exit().unwrap();
    let counts = exit.counts().unwrap();
    assert_eq!(counts.states.get("delivered"), Some(&1));
    let data_dir = fed.dir.join("exit");
    fed.shutdown().await;
    // Nothing that matches: the exit deduplicates by a key of its own, so
    // no file of its data directory (the database included, freed pages
    // and all) holds the id the sender's client knows, as bytes or in hex.
    let holding = files_holding(&data_dir, &[&sent.id.0, sent.id.to_string().as_bytes()]);
    assert!(
        holding.is_empty(),
        "the exit keeps the message id in {holding:?}"
    );
    assert!(
        !files_holding(&data_dir, &[b"karaoke"]).is_empty(),
        "the scan finds what is there (the delivered email)"
    );
}

/// The files under `dir` (recursively) whose bytes hold any of `needles`.
fn files_holding(dir: &std::path::Path, needles: &[&[u8]]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_holding(&path, needles));
        } else if let Ok(bytes) = std::fs::read(&path)
            && needles
                .iter()
                .any(|n| bytes.windows(n.len()).any(|w| w == *n))
        {
            found.push(path.display().to_string());
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_their_rule() {
    let dir = tempfile::tempdir().unwrap();
    let fed = Federation::start(dir.path(), 2, |_| {}).await;
    let sender = fed.sender();

    let refused = |outcome: Outcome| match outcome {
        Outcome::Refused { rule, reason } => (rule, reason),
        other => panic!("expected a refusal, got {other:?}"),
    };

    // The shared policy.
    let sent = sender
        .leak(
            &fed,
            &Draft::new("bob@example.org", "I will kill you tomorrow."),
        )
        .await;
    let (rule, reason) = refused(sender.receipt(&sent, RECEIPT).await.unwrap().outcome);
    assert!(rule.starts_with("threat"), "{rule}: {reason}");
    let sent = sender
        .leak(
            &fed,
            &Draft::new("bob@example.org", "Look at https://example.com/x"),
        )
        .await;
    let (rule, _) = refused(sender.receipt(&sent, RECEIPT).await.unwrap().outcome);
    assert!(rule.starts_with("link"), "{rule}");
    let long = "I lied to you. ".repeat(150);
    let sent = sender
        .leak(&fed, &Draft::new("bob@example.org", &long))
        .await;
    let (rule, _) = refused(sender.receipt(&sent, RECEIPT).await.unwrap().outcome);
    assert!(rule.starts_with("length"), "{rule}");

    // Invalid fields, which no honest client sends: header injection in the
    // address and the text, bad UTF-8, an unknown relationship.
    let stamp = Stamp { epoch: 0, nonce: 0 };
    let raw = |recipient: &'static [u8], relationship: u32, text: &'static [u8]| {
        move |id: MessageId, block: &leak_protocol::ReplyBlock| {
            leak_protocol::Leak::encode_unchecked(
                id,
                recipient,
                relationship,
                text,
                1,
                stamp,
                block,
            )
            .unwrap()
        }
    };
    for (encode, expected) in [
        (
            raw(b"bob@example.org\r\nBcc: all@example.org", 1, b"hi"),
            "format.recipient",
        ),
        (
            raw(b"bob@example.org", 1, b"hi\r\nBcc: all@example.org"),
            "format.text",
        ),
        (raw(b"bob@example.org", 1, b"caf\xc3("), "format.utf8"),
        (raw(b"b\xffob@example.org", 1, b"hi"), "format.utf8"),
        (raw(b"not an address", 1, b"hi"), "format.recipient"),
        (raw(b"bob@example.org", 77, b"hi"), "format.relationship"),
    ] {
        let (packet, sent) = sender.build_raw(&fed, encode);
        sender.send(&fed, 0, packet).await;
        let (rule, reason) = refused(sender.receipt(&sent, RECEIPT).await.unwrap().outcome);
        assert_eq!(rule, expected, "{reason}");
        assert!(!reason.is_empty());
    }
    // Refused without a trace: invalid leaks cost the exit no write.
    let counts = fed.exit.node.exit().unwrap().counts().unwrap();
    assert_eq!(counts.states.get("invalid"), None, "{:?}", counts.states);

    // A stamp made for another exit.
    let (packet, sent) = sender.build_raw(&fed, |id, block| {
        let recipient = leak_protocol::Recipient::parse("bob@example.org").unwrap();
        let other_exit = fed.relays[0].node.node_id();
        let stamp = sender.stamp(&recipient, &other_exit, &id);
        // Make sure the wrong stamp does not pass by luck at 6 bits.
        let stamp = Stamp {
            nonce: stamp.nonce + 1,
            ..stamp
        };
        leak_protocol::Leak {
            message_id: id,
            recipient,
            relationship: Relationship::Friend,
            text: "I have a crush on you.".into(),
            policy_version: 1,
            stamp,
            reply_block: block.clone(),
            answer_to: None,
        }
        .encode()
        .unwrap()
    });
    sender.send(&fed, 0, packet).await;
    let receipt = sender.receipt(&sent, RECEIPT).await.unwrap();
    // At 6 bits a wrong nonce still passes once in 64; then it is delivered.
    if let Outcome::Refused { rule, .. } = &receipt.outcome {
        assert_eq!(rule, "stamp");
    }

    // The per-recipient daily limit (3 in the policy).
    let mut outcomes = Vec::new();
    for i in 0..4 {
        let text = format!("I broke your vase, number {i}.");
        let sent = sender
            .leak(&fed, &Draft::new("carol@example.org", &text))
            .await;
        outcomes.push(sender.receipt(&sent, RECEIPT).await.unwrap().outcome);
    }
    assert_eq!(
        outcomes,
        vec![
            Outcome::Delivered,
            Outcome::Delivered,
            Outcome::Delivered,
            Outcome::RateLimited
        ]
    );
    assert!(
        fed.outbox()
            .iter()
            .all(|e| !e.contains("kill") && !e.contains("Bcc: all")),
        "nothing refused was delivered"
    );
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opt_out_with_the_emails_link() {
    let dir = tempfile::tempdir().unwrap();
    let fed = Federation::start(dir.path(), 2, |_| {}).await;
    let sender = fed.sender();
    let sent = sender
        .leak(
            &fed,
            &Draft::new("dave@example.org", "I have a crush on you."),
        )
        .await;
    assert_eq!(
        sender.receipt(&sent, RECEIPT).await.unwrap().outcome,
        Outcome::Delivered
    );
    let email = fed.outbox().pop().unwrap();
    let link = DeliveredMail::from_bytes(email.as_bytes())
        .header("List-Unsubscribe")
        .unwrap()
        .rsplit_once(", <")
        .unwrap()
        .1
        .trim_end_matches('>')
        .to_owned();
    let (addr, path) = link
        .strip_prefix("http://")
        .unwrap()
        .split_once('/')
        .unwrap();
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let path = format!("/{path}");

    // A forged token: refused, nothing recorded.
    let mut forged = path.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    let (status, _) = http_request(addr, "POST", &forged, "List-Unsubscribe=One-Click").await;
    assert!(status.contains("400"), "{status}");
    // The page behind the link asks to confirm; a GET changes nothing.
    let (status, body) = http_request(addr, "GET", &path, "").await;
    assert!(status.contains("200"), "{status}");
    assert!(body.contains("<form method=\"post\">"), "{body}");
    let sent = sender
        .leak(&fed, &Draft::new("dave@example.org", "You are underpaid."))
        .await;
    assert_eq!(
        sender.receipt(&sent, RECEIPT).await.unwrap().outcome,
        Outcome::Delivered
    );

    // The RFC 8058 one-click POST.
    let (status, _) = http_request(addr, "POST", &path, "List-Unsubscribe=One-Click").await;
    assert!(status.contains("200"), "{status}");
    let sent = sender
        .leak(
            &fed,
            &Draft::new("Dave+leaks@EXAMPLE.org", "One more thing."),
        )
        .await;
    assert_eq!(
        sender.receipt(&sent, RECEIPT).await.unwrap().outcome,
        Outcome::RecipientOptedOut,
        "the opt-out holds for the normalised address"
    );
    // Others still receive leaks.
    let sent = sender
        .leak(&fed, &Draft::new("erin@example.org", "I lied to you."))
        .await;
    assert_eq!(
        sender.receipt(&sent, RECEIPT).await.unwrap().outcome,
        Outcome::Delivered
    );
    assert_eq!(fed.outbox().len(), 3);

    // The report link records a report.
    let body = body_text(&email);
    assert!(body.contains(&link), "the footer carries the same link");
    let report = body
        .lines()
        .find(|l| l.contains("/report/"))
        .unwrap()
        .trim()
        .to_owned();
    let report_path = format!("/{}", report.split_once("/report/").unwrap().1);
    let report_path = format!("/report/{}", report_path.trim_start_matches('/'));
    let (status, _) = http_request(addr, "POST", &report_path, "").await;
    assert!(status.contains("200"), "{status}");
    let counts = fed.exit.node.exit().unwrap().counts().unwrap();
    assert_eq!(counts.states.get("abuse_reports"), Some(&1));
    assert_eq!(counts.states.get("opted_out_recipients"), Some(&1));

    // The link's page now offers to opt back in; a GET of the opt-in page
    // changes nothing, its POST does, and a forged token does not.
    let (status, body) = http_request(addr, "GET", &path, "").await;
    assert!(status.contains("200"), "{status}");
    let opt_in = path.replacen("/opt-out/", "/opt-in/", 1);
    assert!(body.contains(&format!("action=\"{opt_in}\"")), "{body}");
    let (status, _) = http_request(addr, "GET", &opt_in, "").await;
    assert!(status.contains("200"), "{status}");
    let forged_in = forged.replacen("/opt-out/", "/opt-in/", 1);
    let (status, _) = http_request(addr, "POST", &forged_in, "").await;
    assert!(status.contains("400"), "{status}");
    let sent = sender
        .leak(&fed, &Draft::new("dave@example.org", "Still there?"))
        .await;
    assert_eq!(
        sender.receipt(&sent, RECEIPT).await.unwrap().outcome,
        Outcome::RecipientOptedOut
    );
    let (status, _) = http_request(addr, "POST", &opt_in, "").await;
    assert!(status.contains("200"), "{status}");
    let sent = sender
        .leak(&fed, &Draft::new("dave@example.org", "Welcome back."))
        .await;
    assert_eq!(
        sender.receipt(&sent, RECEIPT).await.unwrap().outcome,
        Outcome::Delivered,
        "opted back in"
    );
    let counts = fed.exit.node.exit().unwrap().counts().unwrap();
    assert_eq!(counts.states.get("opted_out_recipients"), Some(&0));
    fed.shutdown().await;
}

/// `leak-node queue`'s socket: counts, listing, retry and purge against a
/// running exit whose mail server is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_queue() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on this port: every attempt fails temporarily.
    let dead = leak_tests::process::free_port();
    let fed = Federation::start(dir.path(), 2, |c| {
        c.exit.transport = leak_node::config::Transport::Smtp;
        c.exit.smtp_url = format!("smtp://127.0.0.1:{dead}");
        c.exit.retry_initial_secs = 3600;
        c.exit.retry_max_secs = 3600;
    })
    .await;
    let sender = fed.sender();
    let mut sent = Vec::new();
    for to in ["f@example.org", "g@example.net"] {
        sent.push(sender.leak(&fed, &Draft::new(to, "I lied to you.")).await);
    }
    let socket = fed.dir.join("exit").join("admin.sock");
    let ask = |r: Request| {
        let socket = socket.clone();
        async move { leak_node::exit::admin::request(&socket, &r).await.unwrap() }
    };
    wait_until(
        Duration::from_secs(30),
        "two failed attempts",
        || async move {
            match ask(Request::Counts).await {
                Response::Counts(c) => c.states.get("retrying") == Some(&2),
                _ => false,
            }
        },
    )
    .await;
    let Response::List { items } = ask(Request::List { limit: 10 }).await else {
        panic!("not a list");
    };
    assert_eq!(items.len(), 2);
    for item in &items {
        assert_eq!(item.attempts, 1);
        assert_eq!(item.last_error, "network");
        assert!(item.next_attempt_in_secs > 1000);
        assert!(item.recipient_domain.starts_with("example."));
    }
    let listing = format!("{items:?}");
    assert!(!listing.contains("f@example.org") && !listing.contains("lied"));

    // Retry one now: it fails again at once.
    let Response::Done { count } = ask(Request::Retry {
        id: Some(sent[0].id.to_string()),
    })
    .await
    else {
        panic!()
    };
    assert_eq!(count, 1);
    wait_until(Duration::from_secs(30), "a second attempt", || async move {
        match ask(Request::List { limit: 10 }).await {
            Response::List { items } => items.iter().any(|i| i.attempts == 2),
            _ => false,
        }
    })
    .await;
    // Purge one: its sender hears it bounced.
    let Response::Done { count } = ask(Request::Purge {
        id: Some(sent[1].id.to_string()),
    })
    .await
    else {
        panic!()
    };
    assert_eq!(count, 1);
    assert_eq!(
        sender.receipt(&sent[1], RECEIPT).await.unwrap().outcome,
        Outcome::Bounced
    );
    let Response::Error { message } = ask(Request::Purge {
        id: Some("00".repeat(16)),
    })
    .await
    else {
        panic!()
    };
    assert!(message.contains("no queued leak"), "{message}");
    let Response::Counts(counts) = ask(Request::Counts).await else {
        panic!()
    };
    assert_eq!(counts.states.get("retrying"), Some(&1));
    assert_eq!(counts.states.get("purged"), Some(&1));
    fed.shutdown().await;
}

/// `leak-node queue pause`: leaks are still taken and queued, none is
/// delivered until `resume`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_delivery_keeps_leaks_queued() {
    let dir = tempfile::tempdir().unwrap();
    let fed = Federation::start(dir.path(), 2, |_| {}).await;
    let socket = fed.dir.join("exit").join("admin.sock");
    let ask = |r: Request| {
        let socket = socket.clone();
        async move { leak_node::exit::admin::request(&socket, &r).await.unwrap() }
    };
    assert!(matches!(
        ask(Request::Pause { provider: None }).await,
        Response::Done { .. }
    ));
    let sender = fed.sender();
    let sent = sender
        .leak(&fed, &Draft::new("hal@example.org", "I lied to you."))
        .await;
    wait_until(Duration::from_secs(30), "the leak queued", || async {
        matches!(ask(Request::Counts).await, Response::Counts(c) if c.paused && c.states.get("queued") == Some(&1))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(fed.outbox().is_empty(), "nothing delivered while paused");
    assert!(matches!(
        ask(Request::Resume { provider: None }).await,
        Response::Done { .. }
    ));
    assert_eq!(
        sender.receipt(&sent, RECEIPT).await.unwrap().outcome,
        Outcome::Delivered
    );
    assert_eq!(fed.outbox().len(), 1);
    fed.shutdown().await;
}

/// A queued leak whose text is gone from the spool (the file restored from
/// an old backup, a failed disk) is not retried for ever: the operator
/// sees it as `lost`, nothing is sent, and its sender's retransmission is
/// answered `Bounced`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leak_lost_from_the_spool_bounces() {
    let dir = tempfile::tempdir().unwrap();
    let fed = Federation::start(dir.path(), 2, |_| {}).await;
    let exit = fed.exit.node.exit().unwrap().clone();
    exit.set_paused(true);
    let sender = fed.sender();
    let sent = sender
        .leak(&fed, &Draft::new("hal@example.org", "I lied to you."))
        .await;
    wait_until(Duration::from_secs(30), "the leak queued", || {
        let queued = exit.counts().unwrap().states.get("queued") == Some(&1);
        async move { queued }
    })
    .await;
    let spool = fed
        .dir
        .join("exit")
        .join("exit-queue")
        .join(leak_node::exit::spool::SPOOL_FILE);
    let len = std::fs::metadata(&spool).unwrap().len();
    std::fs::write(&spool, vec![0u8; usize::try_from(len).unwrap()]).unwrap();
    exit.set_paused(false);
    wait_until(Duration::from_secs(30), "the leak lost", || {
        let lost = exit.counts().unwrap().states.get("lost") == Some(&1);
        async move { lost }
    })
    .await;
    // The spool was the only place of the sender's id (the exit keys its
    // records by a value of its own): the retransmission, with its id, is
    // answered.
    let draft = Draft {
        id: Some(sent.id),
        ..Draft::new("hal@example.org", "I lied to you.")
    };
    let (packet, resent) = sender.build(&fed, (1, 0), &draft);
    sender.send(&fed, 1, packet).await;
    assert_eq!(
        sender.receipt(&resent, RECEIPT).await.unwrap().outcome,
        Outcome::Bounced
    );
    assert_eq!(exit.counts().unwrap().states.get("lost"), Some(&1));
    assert!(fed.outbox().is_empty(), "nothing to send");
    drop(exit);
    fed.shutdown().await;
}
