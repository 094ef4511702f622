//! Crash safety: an exit process killed with SIGKILL again and again while
//! it delivers 200 leaks into a real Postfix loses none of them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{collections::HashMap, time::Duration};

use leak_node::{StartOptions, identity::node_id_of};
use leak_tests::{
    NodeProcess, TestNode,
    exit::{Draft, Sender, assert_queue_scrubbed, cheap_policy},
    init_node,
    mail::Postfix,
    process::{free_port, leak_node_command},
    test_config, wait_until,
};
use nix::sys::signal::Signal;

const LEAKS: usize = 200;
const KILLS: usize = 4;
const CONNECTIONS: usize = 2;

/// `leak-node queue --json` against the running exit: (waiting, delivered).
fn queue_counts(config: &std::path::Path) -> Option<(u64, u64)> {
    let output = leak_node_command()
        .args(["queue", "--json", "--config"])
        .arg(config)
        .arg("counts")
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    let state = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix(&format!("\"{name}\": "))
                    .map(|v| v.trim_end_matches(',').parse().unwrap_or(0))
            })
            .unwrap_or(0)
    };
    Some((
        state("queued") + state("retrying") + state("sending"),
        state("delivered"),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_delivery_loses_nothing() {
    let postfix = Postfix::start("leak.test");
    let dir = tempfile::tempdir().unwrap();
    let (policy_config, policy) = cheap_policy(dir.path());
    let mut relays = Vec::new();
    for i in 0..2 {
        let d = dir.path().join(format!("relay{i}"));
        let bootstrap = relays
            .first()
            .map(|r: &TestNode| vec![r.node.dial_addr()])
            .unwrap_or_default();
        let mut config = test_config(&d, 3600, bootstrap);
        config.policy = policy_config.clone();
        relays.push(TestNode::start(d, config, StartOptions::default()).await);
    }

    let exit_dir = dir.path().join("exit");
    let port = free_port();
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let bootstrap = relays[0].node.dial_addr().to_string();
    let config = init_node(
        &exit_dir,
        &[
            "--listen",
            &listen,
            "--bootstrap",
            &bootstrap,
            "--exit-domain",
            "exit.test",
            "--metrics",
            "",
        ],
    );
    let sets = [
        "exit.transport=smtp".to_owned(),
        format!("exit.smtp_url={:?}", postfix.smtp_url()),
        format!("exit.smtp_connections={CONNECTIONS}"),
        "exit.max_rate=20.0".to_owned(),
        "exit.http_listen=\"127.0.0.1:0\"".to_owned(),
        "exit.retry_initial_secs=1".to_owned(),
        "exit.retry_max_secs=2".to_owned(),
        format!("policy.file={:?}", policy_config.file),
        format!("policy.trusted_keys=[{:?}]", policy_config.trusted_keys[0]),
    ];
    let args: Vec<String> = sets
        .iter()
        .flat_map(|s| ["--set".to_owned(), s.clone()])
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let start = || {
        let mut process = NodeProcess::run("exit", &config, &args, &[]);
        let started = process.wait_started(false, Duration::from_secs(30));
        (process, started)
    };
    let (mut exit, started) = start();
    let exit_id = node_id_of(&started.peer_id).unwrap();
    wait_until(
        Duration::from_secs(60),
        "the relays to know the exit",
        || {
            let done = relays.iter().all(|r| {
                r.node
                    .directory()
                    .iter()
                    .any(|d| d.node == exit_id && d.roles.exit)
            });
            async move { done }
        },
    )
    .await;

    let sender = Sender {
        peer: leak_node::client::Peer::new().unwrap(),
        policy,
    };
    for r in &relays {
        sender
            .peer
            .add_node(r.node.peer_id(), r.node.listen_addrs().to_vec());
    }
    let mut ids = Vec::new();
    for i in 0..LEAKS {
        let to = format!("crash{i}@leak.test");
        let text = format!("I lied to you, number {i}.");
        let (packet, sent) = sender.build_to(
            &relays[0].node,
            &relays[0].node,
            &relays[1].node,
            exit_id,
            &Draft::new(&to, &text),
        );
        sender
            .peer
            .send_packets(relays[0].node.peer_id(), &[packet])
            .await
            .unwrap();
        ids.push(sent.id);
    }
    // Every leak accepted (waiting or already delivered) before the kills.
    wait_until(Duration::from_secs(120), "200 leaks accepted", || {
        let counts = queue_counts(&config);
        async move { counts.is_some_and(|(waiting, delivered)| waiting + delivered == LEAKS as u64) }
    })
    .await;

    // Kill it at random points while it delivers, restarting it each time.
    let mut kills = 0;
    for _ in 0..KILLS {
        let pause = Duration::from_millis(200 + rand::random::<u64>() % 1500);
        tokio::time::sleep(pause).await;
        let (waiting, _) = queue_counts(&config).unwrap_or((0, 0));
        if waiting == 0 {
            break;
        }
        exit.signal(Signal::SIGKILL);
        exit.wait_exit(Duration::from_secs(10)).expect("killed");
        kills += 1;
        let (process, _) = start();
        exit = process;
    }
    assert!(kills >= 1, "the exit was killed during delivery");

    wait_until(Duration::from_secs(180), "every leak delivered", || {
        let counts = queue_counts(&config);
        async move { counts.is_some_and(|(waiting, _)| waiting == 0) }
    })
    .await;
    let messages = postfix
        .wait_for_messages_async(LEAKS, Duration::from_secs(60))
        .await;
    // Let anything still in Postfix's queue arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let messages = if postfix.messages().len() > messages.len() {
        postfix.messages()
    } else {
        messages
    };
    let mut by_id: HashMap<String, usize> = HashMap::new();
    let mut recipients = std::collections::HashSet::new();
    for m in &messages {
        *by_id.entry(m.header("Message-ID").unwrap()).or_default() += 1;
        recipients.insert(m.header("To").unwrap());
    }
    let duplicates = messages.len() - by_id.len();
    eprintln!(
        "{kills} kills; {} emails for {} leaks: {duplicates} duplicate(s)",
        messages.len(),
        by_id.len()
    );
    assert_eq!(by_id.len(), LEAKS, "every leak delivered, none lost");
    assert_eq!(recipients.len(), LEAKS);
    // A duplicate can only come from a leak in flight at a kill (between
    // the server's 250 and the commit of its outcome, a few milliseconds):
    // paced at 20 leaks a second, at most one per connection per kill.
    assert!(
        duplicates <= kills * CONNECTIONS,
        "{duplicates} duplicates for {kills} kills"
    );
    let (_, delivered) = queue_counts(&config).unwrap();
    assert_eq!(delivered, LEAKS as u64);
    // The queue directory holds nothing of the leaks any more.
    assert_queue_scrubbed(&exit_dir.join("exit-queue"));
    exit.stop_cleanly();
    for r in relays {
        r.node.shutdown().await.unwrap();
    }
    let _ = ids;
}
