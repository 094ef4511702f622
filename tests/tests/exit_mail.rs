//! The exit against real mail servers: a private Postfix delivering into a
//! Maildir, and Postfix's `smtp-sink` answering 4xx, 5xx and 421.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{sync::Arc, time::Duration};

use leak_node::{StartOptions, clock::ManualClock, config::Transport};
use leak_protocol::{BounceClass, Outcome, Relationship};
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
        Outcome::Accepted
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
    // The opt-out email (to the exit's domain), then the one-click URL.
    let unsubscribe = h("List-Unsubscribe");
    assert!(
        unsubscribe.starts_with("<mailto:unsubscribe@exit.test?subject=unsubscribe%20")
            && unsubscribe.contains(">, <http://127.0.0.1:"),
        "{unsubscribe}"
    );
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
    // `500 5.3.0`: a permanent failure of no finer class.
    assert_eq!(
        sender.receipt(&sent, RECEIPT).await.unwrap().outcome,
        Outcome::BouncedWith(BounceClass::Other)
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
            Outcome::Accepted
        );
    }
    let counts = exit.counts().unwrap();
    // No inbound mail in this test: sent, outcome unknown.
    assert_eq!(counts.states.get("unconfirmed"), Some(&5));
    assert_eq!(counts.states.get("retrying"), None);
    drop(exit);
    fed.shutdown().await;
}

/// `leak-node dkim-keys` makes an RSA and an Ed25519 key and prints their
/// DNS records; an exit configured with both signs every email twice, over
/// `Feedback-ID` and the unsubscribe headers, and dkimpy verifies each
/// signature against the printed records (a changed body fails both).
/// Without any DKIM setting the email goes out unsigned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dkim_signatures_verify() {
    let keys = tempfile::tempdir().unwrap();
    let out = leak_tests::process::leak_node_command()
        .args([
            "dkim-keys",
            "--domain",
            "exit.test",
            "--selector",
            "leak2026",
        ])
        .arg("--dir")
        .arg(keys.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    let record = |name: &str| -> String {
        printed
            .lines()
            .find(|l| l.starts_with(&format!("{name}. TXT")))
            .unwrap_or_else(|| panic!("no record for {name} in\n{printed}"))
            .split('"')
            .skip(1)
            .step_by(2)
            .collect()
    };
    let rsa_record = record("leak2026._domainkey.exit.test");
    let ed_record = record("leak2026-ed25519._domainkey.exit.test");
    assert!(rsa_record.starts_with("v=DKIM1; k=rsa; p="), "{rsa_record}");
    assert!(
        ed_record.starts_with("v=DKIM1; k=ed25519; p="),
        "{ed_record}"
    );
    assert!(printed.contains("_dmarc.exit.test. TXT"), "{printed}");
    assert!(printed.contains("dkim_ed25519_selector = \"leak2026-ed25519\""));
    // Never over existing keys.
    let again = leak_tests::process::leak_node_command()
        .args(["dkim-keys", "--domain", "exit.test", "--dir"])
        .arg(keys.path())
        .output()
        .unwrap();
    assert!(!again.status.success());

    for signed in [true, false] {
        let postfix = Postfix::start("leak.test");
        let dir = tempfile::tempdir().unwrap();
        let url = postfix.smtp_url();
        let keys_dir = keys.path().to_path_buf();
        let fed = Federation::start(dir.path(), 2, move |c| {
            smtp(url)(c);
            if signed {
                c.exit.dkim_selector = "leak2026".into();
                c.exit.dkim_key_file = keys_dir.join("dkim-rsa.key").display().to_string();
                c.exit.dkim_ed25519_selector = "leak2026-ed25519".into();
                c.exit.dkim_ed25519_key_file =
                    keys_dir.join("dkim-ed25519.key").display().to_string();
            }
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
            Outcome::Accepted
        );
        let mail = postfix
            .wait_for_messages_async(1, Duration::from_secs(30))
            .await
            .pop()
            .unwrap();
        // Stable across messages: relationship, policy version, exit.
        let feedback = mail.header("Feedback-ID").expect("a Feedback-ID");
        let fields: Vec<&str> = feedback.trim().split(':').collect();
        assert_eq!(fields.len(), 4, "{feedback}");
        assert_eq!(
            fields[0],
            Draft::new("x@leak.test", "x").relationship.as_str()
        );
        assert!(fields[1].starts_with("policy-"), "{feedback}");
        assert_eq!(fields[2], "leak");
        assert_eq!(fields[3].len(), 10, "{feedback}");
        let signatures = mail.header_all("DKIM-Signature");
        if !signed {
            assert!(signatures.is_empty(), "{signatures:?}");
            fed.shutdown().await;
            continue;
        }
        assert_eq!(signatures.len(), 2, "{signatures:?}");
        for (algorithm, selector) in [
            ("rsa-sha256", "leak2026"),
            ("ed25519-sha256", "leak2026-ed25519"),
        ] {
            let signature = signatures
                .iter()
                .find(|s| s.contains(&format!("a={algorithm}")))
                .unwrap_or_else(|| panic!("no {algorithm} signature in {signatures:?}"));
            assert!(signature.contains("d=exit.test"), "{signature}");
            assert!(signature.contains(&format!("s={selector};")), "{signature}");
            let covered: String = signature
                .split(';')
                .find(|t| t.trim().starts_with("h="))
                .unwrap()
                .to_ascii_lowercase();
            for header in [
                "list-unsubscribe",
                "list-unsubscribe-post",
                "feedback-id",
                "from",
            ] {
                assert!(
                    covered.contains(header),
                    "{algorithm} leaves out {header}: {covered}"
                );
            }
        }
        let dns = [
            ("leak2026._domainkey.exit.test.", rsa_record.as_str()),
            ("leak2026-ed25519._domainkey.exit.test.", ed_record.as_str()),
        ];
        for index in 0..2 {
            assert!(
                verify_dkim(&mail.raw, index, &dns),
                "dkimpy refused signature {index}\n{signatures:?}"
            );
        }
        // A changed body verifies under neither.
        let mut tampered = mail.raw.clone();
        let at = tampered.len() - 10;
        tampered[at] = if tampered[at] == b'x' { b'y' } else { b'x' };
        for index in 0..2 {
            assert!(
                !verify_dkim(&tampered, index, &dns),
                "tampered mail verified"
            );
        }
        fed.shutdown().await;
    }
}

/// dkimpy's verdict on the `index`th DKIM signature of `message`, with
/// `records` (name, TXT) as the DNS.
fn verify_dkim(message: &[u8], index: usize, records: &[(&str, &str)]) -> bool {
    use std::io::Write as _;
    let zone: String = records
        .iter()
        .map(|(name, txt)| format!("{name:?}: {txt:?}.encode(), "))
        .collect();
    let script = format!(
        "import sys, dkim\n\
         zone = {{{zone}}}\n\
         msg = sys.stdin.buffer.read()\n\
         d = dkim.DKIM(msg)\n\
         ok = d.verify(idx={index}, dnsfunc=lambda name, timeout=5: zone.get(name.decode() if isinstance(name, bytes) else name))\n\
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
