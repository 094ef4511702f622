//! The policy and the opt-outs are federation-wide: a newer signed policy
//! spreads to every node; an opt-out the recipient's provider signed (its
//! email to the exit) is enforced by the other exits that hold it (and an
//! opt-back-in too), while a click or an unsigned email holds at the exit
//! that took it; and one exit is responsible for each recipient (its cap).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use leak_node::{
    StartOptions,
    config::{PolicyConfig, Transport},
    metrics::Metrics,
};
use leak_protocol::{Outcome, policy::SignedPolicy};
use leak_tests::{
    TestNode,
    exit::{Draft, Sender, exit_config, start_relays},
    http_request,
    mail::{
        SmtpSink,
        dns::Dnsmasq,
        provider::{Provider, lmtp_send},
    },
    ports::free_port,
    random32, wait_until,
};

const RECEIPT: Duration = Duration::from_secs(30);

/// The `n`th policy version of these tests: 1 is the built-in policy's
/// (a node refuses an older one), 2 the next.
fn v(n: u32) -> u32 {
    leak_protocol::policy::Policy::builtin().version() - 1 + n
}

/// `toml` as version [`v`]`(version)`, with cheap stamps and this cap.
fn cheap(toml: &str, version: u32, per_day: u32) -> String {
    toml.lines()
        .map(|l| {
            let t = l.trim_start();
            if t.starts_with("stamp_bits") {
                "stamp_bits = 6".to_owned()
            } else if t.starts_with("version =") {
                format!("version = {}", v(version))
            } else if t.starts_with("per_recipient_per_day") {
                format!("per_recipient_per_day = {per_day}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

struct Setup {
    relays: Vec<TestNode>,
    exits: Vec<TestNode>,
    /// Each exit's LMTP address (its domain's mail).
    lmtp: Vec<std::net::SocketAddr>,
    sender: Sender,
}

/// Two relays and two exits, all trusting `maintainer`; each node's policy
/// file is `files[i]` (relays first). With `mail`, the exits send their
/// email to `mail[i]` over SMTP, take their domain's mail over LMTP and
/// look DKIM keys up at the DNS server `dns`; without, they write their
/// email to files.
async fn start(
    dir: &std::path::Path,
    maintainer: &[u8; 32],
    files: [Vec<u8>; 4],
    mail: Option<(&[SmtpSink; 2], String)>,
) -> Setup {
    let public = leak_protocol::crypto::ed25519_public(maintainer);
    let trusted: String = public.iter().map(|b| format!("{b:02x}")).collect();
    let policy_config = |i: usize| {
        let path = dir.join(format!("policy{i}.signed"));
        std::fs::write(&path, &files[i]).unwrap();
        PolicyConfig {
            file: path.display().to_string(),
            trusted_keys: vec![trusted.clone()],
            threshold: 1,
        }
    };
    let relays = start_relays(dir, 2, policy_config).await;
    let mut exits = Vec::new();
    let mut lmtp = Vec::new();
    for i in 0..2 {
        let d = dir.join(format!("exit{i}"));
        let mut config = exit_config(&d, vec![relays[0].node.dial_addr()], &policy_config(2 + i));
        if let Some((sinks, dns)) = &mail {
            let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            config.exit.transport = Transport::Smtp;
            config.exit.smtp_url = sinks[i].smtp_url();
            config.exit.inbound_listen = addr.to_string();
            // smtp-sink sends no delivery notifications: a leak ends
            // `Accepted` a second after the sink took it.
            config.exit.notify_wait_secs = 1;
            config.exit.dns_resolver = dns.clone();
            lmtp.push(addr);
        }
        exits.push(TestNode::start(d, config, StartOptions::default()).await);
    }
    wait_until(Duration::from_secs(60), "the directory to converge", || {
        let done = relays
            .iter()
            .chain(&exits)
            .all(|t| t.node.directory().len() == 4);
        async move { done }
    })
    .await;
    let peer = leak_node::client::Peer::new().unwrap();
    for t in relays.iter().chain(&exits) {
        peer.add_node(t.node.peer_id(), t.node.listen_addrs().to_vec());
    }
    let policy = leak_node::policy::load(&policy_config(0)).unwrap();
    Setup {
        relays,
        exits,
        lmtp,
        sender: Sender { peer, policy },
    }
}

impl Setup {
    /// An address `name-N@example.org` whose recipient exit `exit` is
    /// responsible for (in its own directory, under the policy it
    /// enforces): the exit every client would send it through.
    fn recipient_of(&self, exit: usize, name: &str) -> String {
        let node = &self.exits[exit].node;
        let policy = node.exit().unwrap().policy();
        let directory = node.directory();
        let now = leak_node::clock::unix_now_ms() / 1000;
        (0..1000)
            .map(|i| format!("{name}-{i}@example.org"))
            .find(|to| {
                let hash = policy.recipient_hash(&leak_protocol::Recipient::parse(to).unwrap());
                leak_protocol::directory::responsible_exit(&directory, &hash, policy.version(), now)
                    .is_some_and(|d| d.node == node.node_id())
            })
            .expect("a recipient of that exit")
    }

    async fn leak(&self, exit: usize, to: &str, text: &str) -> Outcome {
        let (packet, sent) = self.sender.build_to(
            &self.relays[0].node,
            &self.relays[0].node,
            &self.relays[1].node,
            self.exits[exit].node.node_id(),
            &Draft::new(to, text),
        );
        self.sender
            .peer
            .send_packets(self.relays[0].node.peer_id(), &[packet])
            .await
            .unwrap();
        self.sender
            .receipt(&sent, RECEIPT)
            .await
            .expect("a receipt")
            .outcome
    }

    /// Hands `message` from `from` to exit `exit`'s opt-out address, as
    /// its mail server would; the exit must take it.
    fn mail_opt_out(&self, exit: usize, from: &str, message: &[u8]) {
        let answer = lmtp_send(self.lmtp[exit], from, "unsubscribe@exit.test", message);
        assert!(answer.starts_with("250"), "{answer}");
    }

    async fn shutdown(self) {
        for t in self.relays.into_iter().chain(self.exits) {
            t.node.shutdown().await.unwrap();
        }
    }
}

/// The `mailto:` and the URL of the `List-Unsubscribe` field of the one
/// email `sink` received.
fn unsubscribe_links(sink: &SmtpSink) -> (String, String) {
    let emails = sink.messages();
    assert_eq!(emails.len(), 1);
    let field = emails[0].header("List-Unsubscribe").unwrap();
    let links: Vec<&str> = field
        .split(',')
        .map(|l| l.trim().trim_start_matches('<').trim_end_matches('>'))
        .collect();
    assert_eq!(links.len(), 2, "{field}");
    assert!(links[0].starts_with("mailto:unsubscribe@exit.test?subject=unsubscribe%20"));
    assert!(links[1].starts_with("http://"));
    (links[0].to_owned(), links[1].to_owned())
}

fn opted_out_at(t: &TestNode) -> Option<u64> {
    t.node
        .exit()
        .unwrap()
        .counts()
        .unwrap()
        .states
        .get("opted_out_recipients")
        .copied()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opt_out_at_one_exit_holds_at_another() {
    let dir = tempfile::tempdir().unwrap();
    let maintainer = random32();
    let v1 = SignedPolicy::sign(
        &cheap(leak_protocol::policy::BUILTIN_TOML, 1, 3),
        &maintainer,
    )
    .unwrap()
    .to_bytes();
    // The recipients' mail provider, its key in the DNS; and a key nobody
    // published (what an exit forging a recipient's email would sign with).
    let provider = Provider::new("example.org");
    let forger = Provider::new("example.org");
    let (name, text) = provider.key_record();
    let dns = Dnsmasq::start_with(&[], &[(&name, &text)]);
    let sinks = [SmtpSink::accepting(), SmtpSink::accepting()];
    let setup = start(
        dir.path(),
        &maintainer,
        [v1.clone(), v1.clone(), v1.clone(), v1],
        Some((&sinks, dns.addr())),
    )
    .await;
    // A mail server took it (smtp-sink sends no delivery notifications).
    let sent = |o: &Outcome| matches!(o, Outcome::Delivered | Outcome::Accepted);

    // Each recipient's leaks go through the exit responsible for it.
    let dan = setup.recipient_of(0, "dan");
    let eve = setup.recipient_of(1, "eve");
    assert!(sent(&setup.leak(0, &dan, "I lied to you.").await));
    let (mailto, link) = unsubscribe_links(&sinks[0]);
    let (addr, path) = link
        .strip_prefix("http://")
        .unwrap()
        .split_once('/')
        .unwrap();
    // One click (RFC 8058): exit 0 refuses dan from now on; nothing in a
    // click shows exit 1 that dan acted, so it is not sent there.
    let (status, body) = http_request(
        addr.parse().unwrap(),
        "POST",
        &format!("/{path}"),
        "List-Unsubscribe=One-Click",
    )
    .await;
    assert!(status.contains("200"), "{status}");
    assert!(
        body.contains(&mailto.replace('&', "&amp;")),
        "the page offers the email: {body}"
    );
    assert_eq!(opted_out_at(&setup.exits[0]), Some(1));
    assert_eq!(
        setup.leak(0, &dan, "I lied to you again.").await,
        Outcome::RecipientOptedOut
    );
    // Dan sends the email the link prepares, from dan's address: dan's
    // provider signs it, exit 0's mail server hands it over, and exit 0
    // sends the record with that email to exit 1, which checks the
    // provider's signature (its key from the DNS) and refuses dan too.
    setup.mail_opt_out(0, &dan, &provider.mailto(&dan, &mailto));
    let metrics0 = setup.exits[0].node.metrics();
    assert_eq!(
        Metrics::get(&metrics0.exit_opt_out_mail, "result", "evidenced"),
        1
    );
    wait_until(
        Duration::from_secs(30),
        "the opt-out to reach exit 1",
        || {
            let n = opted_out_at(&setup.exits[1]);
            async move { n == Some(1) }
        },
    )
    .await;
    let records1 = &setup.exits[1].node.metrics().exit_opt_out_records;
    assert_eq!(Metrics::get(records1, "result", "accepted"), 1);
    assert_eq!(Metrics::get(records1, "result", "no_evidence"), 0);
    // Exit 1 refuses dan in any spelling of the address (an opt-out is
    // checked before whose recipient it is).
    assert_eq!(
        setup
            .leak(
                1,
                &dan.replace("dan", "Dan")
                    .replace("@", "+again@")
                    .to_uppercase(),
                "You are underpaid."
            )
            .await,
        Outcome::RecipientOptedOut
    );
    assert!(sent(&setup.leak(1, &eve, "You are underpaid.").await));
    // An email for eve that eve's provider did not sign (a forger's key):
    // exit 1 takes it as a click (its token is valid) and keeps it to
    // itself; exit 0 never hears of it.
    let (eve_mailto, _) = unsubscribe_links(&sinks[1]);
    setup.mail_opt_out(1, &eve, &forger.mailto(&eve, &eve_mailto));
    let metrics1 = setup.exits[1].node.metrics();
    assert_eq!(
        Metrics::get(&metrics1.exit_opt_out_mail, "result", "local"),
        1
    );
    assert_eq!(opted_out_at(&setup.exits[1]), Some(2));
    // A leak to a recipient of exit 0 sent through exit 1 is refused there:
    // the recipient's daily cap lives on one exit.
    let other = setup.recipient_of(0, "fay");
    assert!(matches!(
        setup.leak(1, &other, "You are underpaid.").await,
        Outcome::Refused { rule, .. } if rule == "exit.not_responsible"
    ));
    // Dan changes its mind and sends the opt-back-in email (a second
    // later: the provider's time orders them): exit 0 and exit 1 serve
    // dan again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let back = mailto.replace("subject=unsubscribe", "subject=resubscribe");
    setup.mail_opt_out(0, &dan, &provider.mailto(&dan, &back));
    wait_until(
        Duration::from_secs(30),
        "the opt-back-in to reach exit 1",
        || {
            let n = opted_out_at(&setup.exits[1]);
            async move { n == Some(1) }
        },
    )
    .await;
    assert_eq!(opted_out_at(&setup.exits[0]), Some(0));
    assert!(sent(
        &setup.leak(0, &dan, "I lied to you, and I am sorry.").await
    ));
    // Nothing of eve's forged opt-out reached exit 0.
    let records0 = &setup.exits[0].node.metrics().exit_opt_out_records;
    assert_eq!(Metrics::get(records0, "result", "accepted"), 0);
    assert_eq!(Metrics::get(records0, "result", "no_evidence"), 0);
    drop(dns);
    setup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_signed_policy_spreads_and_a_forged_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let maintainer = random32();
    let builtin = leak_protocol::policy::BUILTIN_TOML;
    let v1 = SignedPolicy::sign(&cheap(builtin, 1, 3), &maintainer)
        .unwrap()
        .to_bytes();
    // Version 2 allows one leak per recipient per day; only relay 1 has it.
    let v2 = SignedPolicy::sign(&cheap(builtin, 2, 1), &maintainer)
        .unwrap()
        .to_bytes();
    let setup = start(
        dir.path(),
        &maintainer,
        [v1.clone(), v2, v1.clone(), v1],
        None,
    )
    .await;

    for exit in &setup.exits {
        let exit = exit.node.exit().unwrap().clone();
        wait_until(
            Duration::from_secs(60),
            "version 2 to reach the exits",
            || {
                let version = exit.policy().version();
                async move { version == v(2) }
            },
        )
        .await;
    }
    // The exits now publish that they enforce version 2.
    let viewer = &setup.relays[0].node;
    let ids: Vec<_> = setup.exits.iter().map(|e| e.node.node_id()).collect();
    wait_until(
        Duration::from_secs(60),
        "descriptors with version 2",
        || {
            let done = viewer
                .directory()
                .iter()
                .filter(|d| ids.contains(&d.node))
                .all(|d| d.exit.as_ref().is_some_and(|e| e.policy_version == v(2)));
            async move { done }
        },
    )
    .await;
    let fay = setup.recipient_of(0, "fay");
    assert_eq!(
        setup.leak(0, &fay, "I lied to you.").await,
        Outcome::Delivered
    );
    assert_eq!(
        setup.leak(0, &fay, "I lied again.").await,
        Outcome::RateLimited,
        "version 2's limit is enforced"
    );

    // A version 3 signed by an unknown key, and one with a forged
    // signature of the trusted key: neither is adopted.
    let stranger = SignedPolicy::sign(&cheap(builtin, 3, 100), &random32())
        .unwrap()
        .to_bytes();
    setup.relays[0]
        .node
        .publish_policy_bytes(stranger)
        .await
        .unwrap();
    let mut forged = SignedPolicy::sign(&cheap(builtin, 3, 100), &maintainer)
        .unwrap()
        .to_bytes();
    let at = forged.len() - 5;
    forged[at] ^= 1;
    setup.relays[0]
        .node
        .publish_policy_bytes(forged)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    for t in setup.relays.iter().chain(&setup.exits) {
        let adopted = t.dir.join(leak_node::policy::ADOPTED_FILE);
        if adopted.exists() {
            let bytes = std::fs::read(adopted).unwrap();
            let version = SignedPolicy::from_bytes(&bytes).unwrap();
            assert!(version.toml().contains(&format!("version = {}", v(2))));
        }
    }
    for exit in &setup.exits {
        assert_eq!(exit.node.exit().unwrap().policy().version(), v(2));
    }
    setup.shutdown().await;
}
