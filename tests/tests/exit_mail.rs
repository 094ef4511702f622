//! The exit against real mail servers: a private Postfix delivering into a
//! Maildir, and Postfix's `smtp-sink` answering 4xx, 5xx and 421.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{sync::Arc, time::Duration};

use leak_node::{StartOptions, clock::ManualClock, config::Transport};
use leak_protocol::{Outcome, Relationship};
use leak_tests::{
    exit::{Draft, Federation},
    mail::{Postfix, SmtpSink},
    wait_until,
};

const RECEIPT: Duration = Duration::from_secs(30);

fn smtp(url: String) -> impl FnOnce(&mut leak_node::Config) {
    move |c| {
        c.exit.transport = Transport::Smtp;
        c.exit.smtp_url = url;
    }
}

/// Every header of a leak delivered through Postfix is the exit's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_delivers_with_every_header() {
    let postfix = Postfix::start("leak.test");
    let dir = tempfile::tempdir().unwrap();
    let fed = Federation::start(dir.path(), 2, smtp(postfix.smtp_url())).await;
    let sender = fed.sender();
    let text = "Je t'aime bien, vraiment. Ça fait longtemps que je voulais le dire. 💛";
    let sent = sender
        .leak(
            &fed,
            &Draft {
                to: "zoé@leak.test",
                relationship: Relationship::FriendOfAFriend,
                text,
                id: None,
            },
        )
        .await;
    assert_eq!(
        sender.receipt(&sent, RECEIPT).await.unwrap().outcome,
        Outcome::Delivered
    );
    let mail = postfix
        .wait_for_messages_async(1, Duration::from_secs(30))
        .await
        .pop()
        .unwrap();
    let h = |name: &str| mail.header(name).unwrap_or_else(|| panic!("no {name}"));
    assert_eq!(
        h("From"),
        "\"A friend of a friend via Leak\" <leak@exit.test>"
    );
    assert_eq!(h("Subject"), "From a friend of a friend, anonymously.");
    assert!(h("To").contains("@leak.test"), "{}", h("To"));
    // Set by the exit, not by Postfix (which would use its own domain).
    assert!(
        h("Message-ID").ends_with("@exit.test>"),
        "{}",
        h("Message-ID")
    );
    assert!(h("Date").ends_with("+0000"), "{}", h("Date"));
    assert_eq!(h("List-Unsubscribe-Post"), "List-Unsubscribe=One-Click");
    assert!(h("List-Unsubscribe").starts_with("<http://127.0.0.1:"));
    assert!(h("Content-Type").contains("charset=utf-8"));
    assert_eq!(h("Auto-Submitted"), "auto-generated");
    let body = mail.body_text();
    assert!(body.contains(text), "{body}");
    assert!(body.contains("Never receive a message from Leak again"));
    // Nothing that could describe a sender.
    for name in ["User-Agent", "X-Mailer", "X-Originating-IP", "Reply-To"] {
        assert!(mail.header(name).is_none(), "{name}");
    }
    fed.shutdown().await;
}

/// 5xx bounces at once; 4xx retries until the leak's lifetime ends, then
/// bounces; both are told to the sender.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_and_temporary_failures() {
    let perm = SmtpSink::perm_failing();
    let dir = tempfile::tempdir().unwrap();
    let fed = Federation::start(dir.path(), 2, smtp(perm.smtp_url())).await;
    let sender = fed.sender();
    let sent = sender
        .leak(&fed, &Draft::new("x@leak.test", "I lied to you."))
        .await;
    assert_eq!(
        sender.receipt(&sent, RECEIPT).await.unwrap().outcome,
        Outcome::Bounced
    );
    let metrics = fed.exit.node.metrics();
    assert_eq!(
        leak_node::metrics::Metrics::get(&metrics.exit_attempts, "result", "permanent"),
        1
    );
    fed.shutdown().await;

    let temp = SmtpSink::temp_failing();
    let dir = tempfile::tempdir().unwrap();
    let url = temp.smtp_url();
    let fed = Federation::start(dir.path(), 2, move |c| {
        smtp(url)(c);
        c.exit.lifetime_secs = 4;
    })
    .await;
    let sender = fed.sender();
    let sent = sender
        .leak(&fed, &Draft::new("y@leak.test", "I lied to you."))
        .await;
    assert_eq!(
        sender.receipt(&sent, RECEIPT).await.unwrap().outcome,
        Outcome::Bounced
    );
    let metrics = fed.exit.node.metrics();
    let temporary = leak_node::metrics::Metrics::get(&metrics.exit_attempts, "result", "temporary");
    assert!(temporary >= 2, "retried: {temporary} attempts");
    let counts = fed.exit.node.exit().unwrap().counts().unwrap();
    assert_eq!(counts.states.get("expired"), Some(&1));
    fed.shutdown().await;
}

/// A 421 slows the exit down (multiplicative decrease) and the leak is
/// retried; once the server accepts again, it is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_421_slows_sending() {
    let sink = SmtpSink::deferring_421();
    let dir = tempfile::tempdir().unwrap();
    let fed = Federation::start(dir.path(), 2, smtp(sink.smtp_url())).await;
    let exit = fed.exit.node.exit().unwrap().clone();
    let before = exit.counts().unwrap().send_rate;
    let sender = fed.sender();
    let sent = sender
        .leak(&fed, &Draft::new("z@leak.test", "You are underpaid."))
        .await;
    let metrics = fed.exit.node.metrics();
    // The attempt is counted when the server answers and settled (back in
    // the queue) a moment later: wait for both.
    wait_until(Duration::from_secs(30), "a deferral, settled", || {
        let n = leak_node::metrics::Metrics::get(&metrics.exit_attempts, "result", "deferred");
        let sending = exit.counts().unwrap().states.contains_key("sending");
        async move { n >= 1 && !sending }
    })
    .await;
    let after = exit.counts().unwrap().send_rate;
    assert!(after <= before / 2.0, "rate {before} -> {after}");
    assert_eq!(
        exit.counts().unwrap().states.get("retrying"),
        Some(&1),
        "deferred, not bounced"
    );
    drop(sink);
    // The exit holds the node's shared state: let go of it before shutdown.
    drop(exit);
    fed.shutdown().await;
    let _ = sent;
}

/// The mail server is down for an hour: leaks accepted meanwhile wait,
/// retried by the exit's schedule (from a minute, doubling, at most ten),
/// and are all delivered once it is back. The exit runs on a manual clock:
/// the hour passes in virtual time, each retry is real SMTP to a real
/// (stopped, then restarted) Postfix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smtp_outage_of_an_hour() {
    let mut postfix = Postfix::start("leak.test");
    let dir = tempfile::tempdir().unwrap();
    let url = postfix.smtp_url();
    let clock = Arc::new(ManualClock::new(leak_tests::unix_time().as_millis() as u64));
    let options = StartOptions {
        clock: Some(clock.clone()),
        ..StartOptions::default()
    };
    let fed = Federation::start_with(dir.path(), 2, options, move |c| {
        smtp(url)(c);
        c.exit.retry_initial_secs = 60;
        c.exit.retry_max_secs = 600;
    })
    .await;
    postfix.stop();
    let sender = fed.sender();
    let mut sent = Vec::new();
    for i in 0..5 {
        let to = format!("outage{i}@leak.test");
        sent.push(
            sender
                .leak(&fed, &Draft::new(&to, "I broke your vase."))
                .await,
        );
    }
    let exit = fed.exit.node.exit().unwrap().clone();
    wait_until(Duration::from_secs(30), "five leaks waiting", || {
        let n = exit.counts().unwrap().states.get("retrying").copied();
        async move { n == Some(5) }
    })
    .await;
    // An hour in steps of ten minutes (the longest wait): each step makes
    // every leak due, and each is tried (and fails) before the next.
    let attempts = |exit: &leak_node::exit::Exit| -> Vec<u32> {
        exit.list(10).unwrap().iter().map(|i| i.attempts).collect()
    };
    assert_eq!(attempts(&exit), vec![1; 5]);
    for step in 1..=6u32 {
        clock.advance_ms(10 * 60_000);
        exit.clock_moved();
        wait_until(Duration::from_secs(30), "every leak tried again", || {
            let tried = attempts(&exit).iter().all(|&a| a == 1 + step);
            async move { tried }
        })
        .await;
    }
    assert_eq!(postfix.messages().len(), 0);
    postfix.restart();
    clock.advance_ms(10 * 60_000);
    exit.clock_moved();
    let delivered = postfix
        .wait_for_messages_async(5, Duration::from_secs(60))
        .await;
    assert_eq!(delivered.len(), 5);
    for s in &sent {
        assert_eq!(
            sender.receipt(s, RECEIPT).await.unwrap().outcome,
            Outcome::Delivered
        );
    }
    let counts = exit.counts().unwrap();
    assert_eq!(counts.states.get("delivered"), Some(&5));
    assert_eq!(counts.states.get("retrying"), None);
    drop(exit);
    fed.shutdown().await;
}

/// DKIM signatures (Ed25519 and RSA) over the List-Unsubscribe headers
/// verify with dkimpy against the test keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dkim_signatures_verify() {
    let keys = tempfile::tempdir().unwrap();
    // Ed25519 (RFC 8463): the private key is the base64 seed.
    let seed = leak_tests::random32();
    let ed_private = keys.path().join("ed25519.key");
    std::fs::write(&ed_private, b64(&seed)).unwrap();
    let ed_public = b64(&leak_protocol::crypto::ed25519_public(&seed));
    // RSA: a PKCS#1 PEM from openssl.
    let rsa_private = keys.path().join("rsa.key");
    let status = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&rsa_private)
        .arg("2048")
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let rsa_public = std::process::Command::new("openssl")
        .args(["rsa", "-pubout", "-outform", "DER", "-in"])
        .arg(&rsa_private)
        .stderr(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(rsa_public.status.success());
    let rsa_public = b64(&rsa_public.stdout);

    for (algorithm, key, dns) in [
        (
            "ed25519",
            &ed_private,
            format!("v=DKIM1; k=ed25519; p={ed_public}"),
        ),
        (
            "rsa",
            &rsa_private,
            format!("v=DKIM1; k=rsa; p={rsa_public}"),
        ),
    ] {
        let postfix = Postfix::start("leak.test");
        let dir = tempfile::tempdir().unwrap();
        let url = postfix.smtp_url();
        let key = key.display().to_string();
        let fed = Federation::start(dir.path(), 2, move |c| {
            smtp(url)(c);
            c.exit.dkim_selector = "leak2026".into();
            c.exit.dkim_key_file = key;
            c.exit.dkim_algorithm = algorithm.into();
        })
        .await;
        let sender = fed.sender();
        let sent = sender
            .leak(
                &fed,
                &Draft::new("dkim@leak.test", "I have a crush on you."),
            )
            .await;
        assert_eq!(
            sender.receipt(&sent, RECEIPT).await.unwrap().outcome,
            Outcome::Delivered
        );
        let mail = postfix
            .wait_for_messages_async(1, Duration::from_secs(30))
            .await
            .pop()
            .unwrap();
        let signature = mail.header("DKIM-Signature").expect("signed");
        assert!(signature.contains("d=exit.test"), "{signature}");
        assert!(signature.contains("s=leak2026"), "{signature}");
        let signed: String = signature
            .split(';')
            .find(|t| t.trim().starts_with("h="))
            .unwrap()
            .to_ascii_lowercase();
        assert!(signed.contains("list-unsubscribe"), "{signed}");
        assert!(signed.contains("list-unsubscribe-post"), "{signed}");
        assert!(
            verify_dkim(&mail.raw, &dns),
            "{algorithm}: dkimpy refused\n{signature}"
        );
        // A changed body no longer verifies.
        let mut tampered = mail.raw.clone();
        let at = tampered.len() - 10;
        tampered[at] = if tampered[at] == b'x' { b'y' } else { b'x' };
        assert!(
            !verify_dkim(&tampered, &dns),
            "{algorithm}: tampered mail verified"
        );
        fed.shutdown().await;
    }
}

fn b64(bytes: &[u8]) -> String {
    use std::io::Write as _;
    let mut child = std::process::Command::new("base64")
        .arg("-w0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()
}

/// dkimpy's verdict on `message`, with `record` as the selector's TXT.
fn verify_dkim(message: &[u8], record: &str) -> bool {
    use std::io::Write as _;
    let script = format!(
        "import sys, dkim\n\
         msg = sys.stdin.buffer.read()\n\
         ok = dkim.verify(msg, dnsfunc=lambda name, timeout=5: {record:?}.encode())\n\
         sys.exit(0 if ok else 1)\n"
    );
    // Debian's Python, where python3-dkim is installed (not a pyenv one).
    let mut child = std::process::Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Maildir files end lines in LF; on the wire (and for DKIM) it is CRLF.
    let text = String::from_utf8_lossy(message)
        .replace("\r\n", "\n")
        .replace('\n', "\r\n");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    child.wait().unwrap().success()
}
