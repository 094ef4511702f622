//! The exit with its own mail server, as `leak-node postfix-config`
//! configures it: a private Postfix (the exit's MTA, "A") relays the
//! exit's emails to a second Postfix on loopback playing the recipients'
//! provider ("B", routing by transport maps, no outside DNS), and hands
//! the mail for `exit.test` (delivery notifications, feedback-loop reports,
//! postmaster@, answers) to the exit over LMTP. Receipts follow the real
//! notifications Postfix sends.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{sync::Arc, time::Duration};

use leak_node::{
    StartOptions, clock::ManualClock, config::Transport, exit::postfix_config, metrics::Metrics,
};
use leak_protocol::{BounceClass, Outcome};
use leak_tests::{
    exit::{Draft, Federation, Sender, Sent},
    mail::{DeliveredMail, Dnsmasq, Postfix},
    wait_until,
};
use lettre::{Transport as _, address::Envelope};

const RECEIPT: Duration = Duration::from_secs(60);
/// The recipients' provider hosts these: one "other" domain, one that
/// counts as Gmail by its name, and a company whose MX hosts are Google's.
const DOMAINS: [&str; 3] = ["leak.test", "gmail.com", "company.test"];

/// A and B, the LMTP port the exit listens on, and the DNS server that
/// names company.test's MX host.
struct Mail {
    a: Postfix,
    b: Postfix,
    lmtp: u16,
    dns: Dnsmasq,
}

impl Mail {
    fn start() -> Self {
        let lmtp = leak_tests::process::free_port();
        // B: known mailboxes only; `busy` and `slow` are deferred (450) for
        // now; what B sends back to exit.test goes to A (set below, once
        // A's port is known).
        let b = Postfix::builder(&DOMAINS)
            .mailboxes(&["zoe", "ann", "busy", "slow", "ops"])
            .main_cf(
                "smtpd_recipient_restrictions = check_recipient_access \
                 inline:{{busy@leak.test=450 4.2.1 Mailbox busy}, \
                 {slow@leak.test=450 4.2.1 Mailbox busy}}, permit_mynetworks, \
                 reject_unauth_destination",
            )
            .master_cf("smtp unix - - n - - smtp")
            .start();
        let printed = postfix_config::render(
            "exit.test",
            "mail.exit.test",
            format!("127.0.0.1:{lmtp}").parse().unwrap(),
            "leak",
            "abuse",
        );
        // A: the printed settings, then what a machine without outside DNS
        // needs (the recipients' domains routed to B, IPv4 only).
        let routes = DOMAINS
            .iter()
            .map(|d| format!("{d}=smtp:[127.0.0.1]:{}", b.port()))
            .collect::<Vec<_>>()
            .join(", ");
        let a = Postfix::builder(&["a.invalid"])
            .main_cf(&printed.main_cf)
            .main_cf(&format!(
                "mynetworks = 127.0.0.0/8\n\
                 transport_maps = inline:{{exit.test=lmtp:inet:127.0.0.1:{lmtp}, {routes}}}\n"
            ))
            .master_cf(
                "smtp unix - - n - - smtp\nlmtp unix - - n - - lmtp\n\
                 tlsmgr unix - - n 1000? 1 tlsmgr",
            )
            .start();
        b.postconf(&[&format!(
            "transport_maps = inline:{{exit.test=smtp:[127.0.0.1]:{}}}",
            a.port()
        )]);
        let dns = Dnsmasq::start(&[("company.test", "aspmx.l.google.com")]);
        Self { a, b, lmtp, dns }
    }

    /// B's messages whose `X-Original-To` is `to`.
    fn at_b(&self, to: &str) -> Vec<DeliveredMail> {
        self.b
            .messages()
            .into_iter()
            .filter(|m| m.header("X-Original-To").as_deref() == Some(to))
            .collect()
    }

    /// Sends `message` to A by SMTP, from `from` to `to`.
    fn send_to_a(&self, from: Option<&str>, to: &str, message: &[u8]) {
        let transport = lettre::SmtpTransport::builder_dangerous("127.0.0.1")
            .port(self.a.port())
            .build();
        let envelope =
            Envelope::new(from.map(|f| f.parse().unwrap()), vec![to.parse().unwrap()]).unwrap();
        transport
            .send_raw(&envelope, message)
            .unwrap_or_else(|e| panic!("A refused mail to {to}: {e}\n{}", self.a.log()));
    }
}

async fn receipt(fed: &Federation, sender: &Sender, sent: &Sent, mail: &Mail) -> Outcome {
    match sender.receipt(sent, RECEIPT).await {
        Some(r) => r.outcome,
        None => {
            // What every node counted: where the leak or its receipt went.
            let counted = std::iter::once(&fed.exit.node)
                .chain(fed.relays.iter().map(|r| &r.node))
                .map(|n| {
                    n.metrics()
                        .encode()
                        .lines()
                        .filter(|l| !l.starts_with('#') && !l.ends_with(" 0"))
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .collect::<Vec<_>>()
                .join("\n--\n");
            panic!(
                "no receipt\nnodes counted:\n{counted}\nA logged:\n{}\nB logged:\n{}",
                mail.a.log(),
                mail.b.log()
            )
        }
    }
}

fn inbound(fed: &Federation, kind: &'static str) -> u64 {
    Metrics::get(&fed.exit.node.metrics().exit_inbound, "kind", kind)
}

/// An ARF report (RFC 5965) about `reported` (its headers), as Yahoo's or
/// Microsoft's feedback loop sends it.
fn arf(reported: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(reported).replace("\r\n", "\n");
    let headers = text.split("\n\n").next().unwrap_or(&text);
    let headers = headers.replace('\n', "\r\n");
    format!(
        "From: feedback@fbl.gmail.com\r\nTo: abuse@exit.test\r\nSubject: Complaint\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=feedback-report;\r\n\
         \tboundary=\"arf\"\r\n\r\n--arf\r\nContent-Type: text/plain\r\n\r\n\
         This is an email abuse report.\r\n--arf\r\nContent-Type: message/feedback-report\r\n\r\n\
         Feedback-Type: abuse\r\nUser-Agent: fbl/1.0\r\nVersion: 1\r\n\r\n\
         --arf\r\nContent-Type: text/rfc822-headers\r\n\r\n{headers}\r\n\r\n--arf--\r\n"
    )
    .into_bytes()
}

/// Real notifications decide the receipts: a success notice from B gives
/// `Delivered`, A's bounce of an unknown user `Bounced (unknown user)`, a
/// deferral keeps the leak waiting until the retry goes through, and no
/// notification at all gives `Accepted` after `exit.notify_wait_secs`.
/// Then mail to the exit's domain: a feedback-loop report opts its
/// recipient out and pauses that provider only, forged reports and
/// notifications change nothing, postmaster@ is forwarded to the
/// operator, and a person who answers the From address gets an
/// explanation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_reports_and_mail_to_the_exit() {
    let mail = Mail::start();
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(leak_tests::unix_time().as_millis() as u64));
    let options = StartOptions {
        clock: Some(clock.clone()),
        ..StartOptions::default()
    };
    let (url, lmtp, dns) = (mail.a.smtp_url(), mail.lmtp, mail.dns.addr());
    let fed = Federation::start_with(dir.path(), 2, options, move |c| {
        c.exit.transport = Transport::Smtp;
        c.exit.smtp_url = url;
        c.exit.inbound_listen = format!("127.0.0.1:{lmtp}");
        c.exit.operator_address = "ops@leak.test".into();
        c.exit.dns_resolver = dns;
        // One complaint among few deliveries crosses the threshold.
        c.exit.complaint_min_deliveries = 1;
        c.exit.forward_per_hour = 1;
    })
    .await;
    let exit = fed.exit.node.exit().unwrap().clone();
    let sender = fed.sender();
    let leak = |to: &'static str| {
        let sender = &sender;
        let fed = &fed;
        async move {
            sender
                .leak(fed, &Draft::new(to, "I have admired your work for years."))
                .await
        }
    };

    // Delivered: B's success notification.
    let zoe = leak("zoe@gmail.com").await;
    let nobody = leak("nobody@leak.test").await;
    let busy = leak("busy@leak.test").await;
    let slow = leak("slow@leak.test").await;
    assert_eq!(
        receipt(&fed, &sender, &zoe, &mail).await,
        Outcome::Delivered
    );
    // A's bounce: B refused the unknown user.
    assert_eq!(
        receipt(&fed, &sender, &nobody, &mail).await,
        Outcome::BouncedWith(BounceClass::UnknownUser)
    );
    // Its next leak bounces at once: providers count a sender that keeps
    // writing to nonexistent mailboxes as a spammer.
    let nobody_again = leak("nobody@leak.test").await;
    assert_eq!(
        receipt(&fed, &sender, &nobody_again, &mail).await,
        Outcome::BouncedWith(BounceClass::UnknownUser)
    );
    let leaks = &fed.exit.node.metrics().exit_leaks;
    assert_eq!(Metrics::get(leaks, "outcome", "suppressed"), 1);
    // Deferred by B: no receipt yet; both wait for their notification.
    assert!(
        sender
            .receipt(&busy, Duration::from_secs(2))
            .await
            .is_none()
    );
    wait_until(Duration::from_secs(30), "two leaks waiting", || {
        let waiting = exit
            .counts()
            .unwrap()
            .states
            .get("awaiting_notification")
            .copied();
        async move { waiting == Some(2) }
    })
    .await;
    // B takes busy's mail again; A's next try goes through.
    mail.b
        .postconf(&["smtpd_recipient_restrictions = check_recipient_access \
         inline:{{slow@leak.test=450 4.2.1 Mailbox busy}}, permit_mynetworks, \
         reject_unauth_destination"]);
    // Daemons B started before its reload (one may hold A's cached
    // connection) finish with the old settings: A tries until B's new
    // ones answer.
    let deadline = tokio::time::Instant::now() + RECEIPT;
    let busy_receipt = loop {
        mail.a.flush();
        if let Some(r) = sender.receipt(&busy, Duration::from_secs(3)).await {
            break r.outcome;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no receipt for busy\nA logged:\n{}\nB logged:\n{}",
            mail.a.log(),
            mail.b.log()
        );
    };
    assert_eq!(busy_receipt, Outcome::Delivered);
    // Nothing comes for slow: past the wait, its sender hears Accepted.
    clock.advance_ms(1801 * 1000);
    exit.clock_moved();
    assert_eq!(
        receipt(&fed, &sender, &slow, &mail).await,
        Outcome::Accepted
    );
    let notes = &fed.exit.node.metrics().exit_notifications;
    assert_eq!(Metrics::get(notes, "result", "delivered"), 2);
    assert_eq!(Metrics::get(notes, "result", "bounced"), 1);
    assert_eq!(Metrics::get(notes, "result", "timeout"), 1);

    // A forged notification (a token of no leak) and a forged report
    // (an opt-out link the exit never made): counted, nothing else.
    let forged_dsn = format!(
        "From: MAILER-DAEMON@mx.test\r\nTo: b-{hex}@exit.test\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"d\"\r\n\r\n\
         --d\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.test\r\n\r\n\
         Final-Recipient: rfc822; zoe@gmail.com\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n--d--\r\n",
        hex = "ab".repeat(27)
    );
    mail.send_to_a(
        None,
        &format!("b-{}@exit.test", "ab".repeat(27)),
        forged_dsn.as_bytes(),
    );
    let forged_arf = arf(format!(
        "To: ann@gmail.com\r\nList-Unsubscribe: <http://x/opt-out/{}>\r\n",
        "cd".repeat(64)
    )
    .as_bytes());
    mail.send_to_a(Some("fbl@fbl.test"), "abuse@exit.test", &forged_arf);
    wait_until(Duration::from_secs(30), "the forgeries counted", || {
        let n = inbound(&fed, "unverified");
        async move { n == 2 }
    })
    .await;
    assert_eq!(fed.exit.node.metrics().exit_opt_outs.get(), 0);
    // A failure notice for zoe's email, replayed after its success (to its
    // real return path, as B's copy shows it): too late to change her
    // sender's receipt; counted.
    let return_path = mail.at_b("zoe@gmail.com")[0].header("Return-Path").unwrap();
    let return_path = return_path.trim_matches(['<', '>', ' ']).to_owned();
    assert!(return_path.starts_with("b-"), "{return_path}");
    let replayed = forged_dsn.replace(&format!("b-{}", "ab".repeat(27)), "x");
    mail.send_to_a(None, &return_path, replayed.as_bytes());
    wait_until(Duration::from_secs(30), "the late notice counted", || {
        let n = Metrics::get(
            &fed.exit.node.metrics().exit_notifications,
            "result",
            "late",
        );
        async move { n == 1 }
    })
    .await;

    // A feedback-loop report about zoe's email: zoe opts out, and Gmail's
    // complaint rate (1 of 1) pauses Gmail, and only Gmail.
    let delivered = mail.at_b("zoe@gmail.com");
    assert_eq!(delivered.len(), 1, "zoe's email at B");
    mail.send_to_a(
        Some("fbl@fbl.test"),
        "abuse@exit.test",
        &arf(&delivered[0].raw),
    );
    wait_until(Duration::from_secs(30), "the report taken", || {
        let n = fed.exit.node.metrics().exit_opt_outs.get();
        async move { n == 1 }
    })
    .await;
    let providers = exit.providers();
    let gmail = providers.iter().find(|p| p.provider == "gmail").unwrap();
    assert_eq!(gmail.complaints, 1);
    assert!(gmail.paused_since_ms.is_some(), "{gmail:?}");
    let other = providers.iter().find(|p| p.provider == "other").unwrap();
    assert!(other.paused_since_ms.is_none(), "{other:?}");
    let again = leak("zoe@gmail.com").await;
    assert_eq!(
        receipt(&fed, &sender, &again, &mail).await,
        Outcome::RecipientOptedOut
    );
    // Gmail waits, and so does the company whose MX hosts are Google's;
    // the other provider's mail goes on.
    let ann = leak("ann@gmail.com").await;
    let ann_at_work = leak("ann@company.test").await;
    let zoe2 = leak("zoe@leak.test").await;
    assert_eq!(
        receipt(&fed, &sender, &zoe2, &mail).await,
        Outcome::Delivered
    );
    assert!(sender.receipt(&ann, Duration::from_secs(2)).await.is_none());
    assert!(
        sender
            .receipt(&ann_at_work, Duration::from_secs(1))
            .await
            .is_none()
    );
    assert!(mail.at_b("ann@gmail.com").is_empty());
    assert!(mail.at_b("ann@company.test").is_empty());
    assert_eq!(exit.counts().unwrap().states.get("queued"), Some(&2));

    // postmaster@: forwarded to the operator, as an attachment; past the
    // hour's cap (one, here), counted and not forwarded.
    for _ in 0..2 {
        mail.send_to_a(
            Some("someone@leak.test"),
            "postmaster@exit.test",
            b"From: someone@leak.test\r\nTo: postmaster@exit.test\r\nSubject: Hello\r\n\r\nAre you real?\r\n",
        );
    }
    // An answer to the From address, by a person: an explanation back.
    mail.send_to_a(
        Some("zoe@leak.test"),
        "leak@exit.test",
        b"From: zoe@leak.test\r\nTo: leak@exit.test\r\nSubject: Re: From a friend\r\n\r\nWho is this?\r\n",
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (forward, explanation) = loop {
        let forward = mail.at_b("ops@leak.test").pop();
        let explanation = mail.at_b("zoe@leak.test").into_iter().find(|m| {
            m.header("Subject").as_deref() == Some("About your answer to a Leak message")
        });
        if let (Some(f), Some(e)) = (&forward, &explanation) {
            break (f.clone(), e.clone());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no forward or explanation at B\nA logged:\n{}",
            mail.a.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        forward.header("Subject").as_deref(),
        Some("Mail to postmaster@exit.test")
    );
    assert!(String::from_utf8_lossy(&forward.raw).contains("Are you real?"));
    assert_eq!(
        explanation.header("Auto-Submitted").as_deref(),
        Some("auto-replied")
    );
    // Both left with the null return path: nothing can bounce back.
    assert_eq!(forward.header("Return-Path").as_deref(), Some("<>"));
    wait_until(
        Duration::from_secs(30),
        "the second postmaster mail",
        || {
            let n = inbound(&fed, "not_forwarded");
            async move { n == 1 }
        },
    )
    .await;
    assert_eq!(inbound(&fed, "postmaster"), 2);
    assert_eq!(mail.at_b("ops@leak.test").len(), 1);
    assert_eq!(inbound(&fed, "reply"), 1);
    drop(exit);
    fed.shutdown().await;
}
