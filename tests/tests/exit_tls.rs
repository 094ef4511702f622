//! The exit's SMTP delivery over TLS and with AUTH, against a real Postfix
//! (tests/src/mail/postfix.rs): STARTTLS, implicit TLS (`smtps://`), AUTH PLAIN
//! through Cyrus SASL, a private CA named in `exit.smtp_ca_file`; and what
//! an operator's mistake does: a wrong password, an untrusted certificate,
//! `tls=required` against a server without STARTTLS. Those never bounce a
//! leak nor send it in plaintext: it stays queued, and once the mistake is
//! fixed (the exit restarted) it is delivered.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{path::Path, time::Duration};

use leak_node::{config::Transport, exit::queue::QueueItem, metrics::Metrics};
use leak_protocol::{Outcome, Relationship};
use leak_tests::{
    exit::{Draft, Federation, Sender, Sent},
    mail::{DeliveredMail, Postfix},
    wait_until,
};

const RECEIPT: Duration = Duration::from_secs(30);
const USER: &str = "leak-exit";
const PASSWORD: &str = "correct horse battery staple";

/// The exit's `[exit]` settings for `url`, with `password` (written to a
/// file in `dir`) and the CA file, if given.
fn smarthost(
    dir: &Path,
    url: String,
    password: Option<&str>,
    ca_file: Option<&Path>,
) -> impl FnOnce(&mut leak_node::Config) + use<> {
    let password_file = password.map(|password| {
        let path = dir.join(format!("smtp-password-{}", rand::random::<u32>()));
        std::fs::write(&path, format!("{password}\n")).unwrap();
        path.display().to_string()
    });
    let ca_file = ca_file.map(|p| p.display().to_string());
    move |c| {
        c.exit.transport = Transport::Smtp;
        c.exit.smtp_url = url;
        c.exit.smtp_password_file = password_file.unwrap_or_default();
        c.exit.smtp_ca_file = ca_file.unwrap_or_default();
    }
}

/// Sends one leak to `to` and returns it.
async fn send(fed: &Federation, sender: &Sender, to: &str) -> Sent {
    sender
        .leak(
            fed,
            &Draft {
                to,
                relationship: Relationship::Coworker,
                text: "The audit report was rewritten before it reached the board.",
                id: None,
            },
        )
        .await
}

/// Waits for the receipt of `sent` and checks it says Accepted (taken by the mail server); says
/// what the exit's queue and Postfix's log hold if not.
async fn assert_delivered(fed: &Federation, sender: &Sender, sent: &Sent, postfix: &Postfix) {
    let receipt = sender.receipt(sent, RECEIPT).await;
    let outcome = receipt.map(|r| r.outcome);
    // No inbound mail here: Postfix's 250 is all the exit learns.
    if outcome != Some(Outcome::Accepted) {
        let queue = fed.exit.node.exit().unwrap().list(10).unwrap();
        panic!(
            "outcome {outcome:?}; the exit's queue: {queue:?}\nPostfix logged:\n{}",
            postfix.log()
        );
    }
}

/// The delivered leak: the only message in the Maildir, to `to`, with the
/// leak's text.
async fn the_delivered_leak(postfix: &Postfix, to: &str) -> DeliveredMail {
    let mut messages = postfix
        .wait_for_messages_async(1, Duration::from_secs(30))
        .await;
    assert_eq!(messages.len(), 1, "one email");
    let mail = messages.pop().unwrap();
    let header_to = mail.header("To").unwrap_or_default();
    assert!(header_to.contains(to), "{}", mail.text());
    assert!(
        mail.body_text()
            .contains("The audit report was rewritten before it reached the board."),
        "{}",
        mail.text()
    );
    mail
}

/// The `Received` field Postfix added for the exit's session.
fn received(mail: &DeliveredMail) -> String {
    mail.header("Received")
        .unwrap_or_else(|| panic!("no Received field:\n{}", mail.text()))
}

/// Waits until the exit's only queued leak has failed `n` attempts, and
/// returns it; panics at once if it was delivered or bounced instead.
async fn retried(fed: &Federation, n: u32) -> QueueItem {
    let exit = fed.exit.node.exit().unwrap().clone();
    wait_until(Duration::from_secs(60), "failed attempts", || {
        let items = exit.list(10).unwrap();
        let states = exit.counts().unwrap().states;
        let finished = ["delivered", "unconfirmed", "bounced", "expired"]
            .iter()
            .any(|done| states.get(*done).is_some_and(|n| *n > 0));
        async move { finished || (items.len() == 1 && items[0].attempts >= n) }
    })
    .await;
    let mut items = exit.list(10).unwrap();
    assert_eq!(
        items.len(),
        1,
        "the leak left the queue: {:?}",
        exit.counts().unwrap()
    );
    items.pop().unwrap()
}

/// Checks that the leak was neither delivered nor bounced: still queued
/// for a retry, with the failure's code, no permanent attempt, no receipt
/// yet, and nothing in the Maildir.
async fn assert_still_queued(
    fed: &Federation,
    sender: &Sender,
    sent: &Sent,
    postfix: &Postfix,
    code: &str,
) {
    let item = retried(fed, 2).await;
    assert_eq!(item.last_error, code, "{item:?}");
    assert_eq!(item.recipient_domain, "leak.test");
    let exit = fed.exit.node.exit().unwrap().clone();
    let counts = exit.counts().unwrap();
    for done in ["delivered", "unconfirmed", "bounced", "expired"] {
        assert_eq!(counts.states.get(done), None, "{done}: {counts:?}");
    }
    let metrics = fed.exit.node.metrics();
    assert_eq!(
        Metrics::get(&metrics.exit_attempts, "result", "permanent"),
        0
    );
    assert_eq!(Metrics::get(&metrics.exit_attempts, "result", "ok"), 0);
    assert!(Metrics::get(&metrics.exit_attempts, "result", "temporary") >= 2);
    drop(exit);
    // No receipt is ever sent for a leak still queued: a short look.
    assert!(
        sender.receipt(sent, Duration::from_secs(1)).await.is_none(),
        "a receipt for a leak still queued"
    );
    assert!(postfix.messages().is_empty(), "{}", postfix.log());
}

/// Postfix's `Received` field says the email came over TLS, authenticated
/// as [`USER`] (ESMTPSA: ESMTP with STARTTLS or TLS (S) and AUTH (A), RFC
/// 3848).
fn assert_tls_and_auth(mail: &DeliveredMail) {
    let received = received(mail);
    assert!(received.contains("with ESMTPSA"), "{received}");
    assert!(received.contains("(using TLSv1."), "{received}");
    assert!(
        received.contains(&format!("(Authenticated sender: {USER}")),
        "{received}"
    );
}

/// STARTTLS required, AUTH PLAIN, the server's certificate from a private
/// CA named in `exit.smtp_ca_file`: delivered, over TLS, authenticated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_and_auth_deliver() {
    let postfix = Postfix::builder(&["leak.test"])
        .require_tls()
        .auth_user(USER, PASSWORD)
        .start();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("smtp://{USER}@127.0.0.1:{}?tls=required", postfix.port());
    let fed = Federation::start(
        dir.path(),
        2,
        smarthost(dir.path(), url, Some(PASSWORD), Some(&postfix.ca_file())),
    )
    .await;
    let sender = fed.sender();
    let sent = send(&fed, &sender, "board@leak.test").await;
    assert_delivered(&fed, &sender, &sent, &postfix).await;
    let mail = the_delivered_leak(&postfix, "board@leak.test").await;
    assert_tls_and_auth(&mail);
    let log = postfix.log();
    assert!(log.contains("TLS connection established"), "{log}");
    // What the tests of leaks that must not arrive look for.
    assert!(log.contains("from=<leak@exit.test>"), "{log}");
    assert!(
        log.contains(&format!("sasl_method=PLAIN, sasl_username={USER}")),
        "{log}"
    );
    fed.shutdown().await;
}

/// Implicit TLS (`smtps://`) with AUTH: delivered, over TLS,
/// authenticated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_and_auth_deliver() {
    let postfix = Postfix::builder(&["leak.test"])
        .implicit_tls()
        .auth_user(USER, PASSWORD)
        .start();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("smtps://{USER}@127.0.0.1:{}", postfix.smtps_port());
    let fed = Federation::start(
        dir.path(),
        2,
        smarthost(dir.path(), url, Some(PASSWORD), Some(&postfix.ca_file())),
    )
    .await;
    let sender = fed.sender();
    let sent = send(&fed, &sender, "press@leak.test").await;
    assert_delivered(&fed, &sender, &sent, &postfix).await;
    let mail = the_delivered_leak(&postfix, "press@leak.test").await;
    assert_tls_and_auth(&mail);
    fed.shutdown().await;
}

/// A wrong password: the server refuses AUTH (535); the leak is not
/// bounced but stays queued with code `auth`, and nothing is sent. With
/// the right password (the exit restarted), it is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_keeps_the_leak_queued() {
    let postfix = Postfix::builder(&["leak.test"])
        .require_tls()
        .auth_user(USER, PASSWORD)
        .start();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("smtp://{USER}@127.0.0.1:{}?tls=required", postfix.port());
    let ca = postfix.ca_file();
    let fed = Federation::start(
        dir.path(),
        2,
        smarthost(dir.path(), url.clone(), Some("wrong password"), Some(&ca)),
    )
    .await;
    let sender = fed.sender();
    let sent = send(&fed, &sender, "hr@leak.test").await;
    assert_still_queued(&fed, &sender, &sent, &postfix, "auth").await;
    let log = postfix.log();
    assert!(log.contains("authentication failed"), "{log}");

    let fed = fed
        .restart_exit(smarthost(dir.path(), url, Some(PASSWORD), Some(&ca)))
        .await;
    assert_delivered(&fed, &sender, &sent, &postfix).await;
    let mail = the_delivered_leak(&postfix, "hr@leak.test").await;
    assert!(received(&mail).contains("with ESMTPSA"));
    fed.shutdown().await;
}

/// No AUTH configured for a smarthost that requires it (it refuses the
/// RCPT with `554 5.7.1`): the operator's mistake, so the leak stays
/// queued with code `auth` instead of bouncing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_credentials_keep_the_leak_queued() {
    let postfix = Postfix::builder(&["leak.test"])
        .require_tls()
        .auth_user(USER, PASSWORD)
        .start();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("smtp://127.0.0.1:{}?tls=required", postfix.port());
    let ca = postfix.ca_file();
    let fed = Federation::start(dir.path(), 2, smarthost(dir.path(), url, None, Some(&ca))).await;
    let sender = fed.sender();
    let sent = send(&fed, &sender, "legal@leak.test").await;
    assert_still_queued(&fed, &sender, &sent, &postfix, "auth").await;
    let log = postfix.log();
    assert!(log.contains("NOQUEUE: reject: RCPT"), "{log}");
    fed.shutdown().await;
}

/// A certificate from a CA the exit does not trust (no `smtp_ca_file`):
/// over STARTTLS against a server that would also take mail in plaintext,
/// and over implicit TLS. Never delivered, never in plaintext, never
/// bounced: queued with code `tls`. Trusting the CA delivers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_keeps_the_leak_queued() {
    // TLS offered, not required: a fallback to plaintext would deliver.
    let postfix = Postfix::builder(&["leak.test"])
        .starttls()
        .implicit_tls()
        .start();
    for url in [
        format!("smtp://127.0.0.1:{}?tls=required", postfix.port()),
        format!("smtp://127.0.0.1:{}?tls=opportunistic", postfix.port()),
        postfix.smtps_url(),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let fed = Federation::start(
            dir.path(),
            2,
            smarthost(dir.path(), url.clone(), None, None),
        )
        .await;
        let sender = fed.sender();
        let sent = send(&fed, &sender, "audit@leak.test").await;
        assert_still_queued(&fed, &sender, &sent, &postfix, "tls").await;
        let log = postfix.log();
        assert!(!log.contains("from=<leak@exit.test>"), "{url}: {log}");

        if url.starts_with("smtps:") {
            let ca = postfix.ca_file();
            let fed = fed
                .restart_exit(smarthost(dir.path(), url, None, Some(&ca)))
                .await;
            assert_delivered(&fed, &sender, &sent, &postfix).await;
            let mail = the_delivered_leak(&postfix, "audit@leak.test").await;
            assert!(received(&mail).contains("(using TLSv1."));
            fed.shutdown().await;
        } else {
            fed.shutdown().await;
        }
    }
}

/// `tls=required` against a server that offers no STARTTLS: nothing is
/// sent, in plaintext or otherwise; the leak stays queued with code `tls`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_tls_without_starttls_sends_nothing() {
    let postfix = Postfix::start("leak.test");
    let dir = tempfile::tempdir().unwrap();
    let url = format!("smtp://127.0.0.1:{}?tls=required", postfix.port());
    let fed = Federation::start(dir.path(), 2, smarthost(dir.path(), url, None, None)).await;
    let sender = fed.sender();
    let sent = send(&fed, &sender, "ceo@leak.test").await;
    assert_still_queued(&fed, &sender, &sent, &postfix, "tls").await;
    let log = postfix.log();
    assert!(!log.contains("from=<leak@exit.test>"), "{log}");
    fed.shutdown().await;
}
