//! `leak-node` as an operator runs it: separate processes, each with its
//! own data directory made by `leak-node init`, started by `leak-node run`,
//! stopped by SIGTERM.
//!
//! The binary is found next to this test's executable (or through
//! `LEAK_NODE_BIN`); build it first with `cargo build -p leak-node --bins`
//! (`scripts/test.sh` does). Every child is a [`NodeProcess`], which sends
//! SIGTERM, then SIGKILL, when dropped: no node outlives its test, even a
//! failing one. Every file lives in a temporary directory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::HashSet,
    net::TcpListener,
    path::Path,
    time::{Duration, Instant},
};

use leak_node::{client::Peer, node::unix_now};
use leak_protocol::{
    MailboxId,
    directory::{Descriptor, Freshness},
};
use leak_tests::{
    NodeProcess, hop, init_node, opening,
    process::{Started, free_port, metric, scrape_metrics},
    random32,
};
use libp2p::Multiaddr;

/// How long a node may take to print its addresses.
const START: Duration = Duration::from_secs(30);
/// How long a node may take to exit with a start-up error.
const FAIL: Duration = Duration::from_secs(30);

/// `leak-node init` for a loopback node on any port, with metrics as given
/// ("" disables them) and `bootstrap` nodes.
fn init(dir: &Path, metrics: &str, bootstrap: &[Multiaddr]) -> std::path::PathBuf {
    let mut args = vec![
        "--listen".to_owned(),
        "/ip4/127.0.0.1/tcp/0".to_owned(),
        "--metrics".to_owned(),
        metrics.to_owned(),
        "--epoch-secs".to_owned(),
        "3600".to_owned(),
    ];
    for b in bootstrap {
        args.push("--bootstrap".to_owned());
        args.push(b.to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    init_node(dir, &args)
}

/// Starts `leak-node run` in `dir` (initialised by [`init`]).
fn start(name: &str, config: &Path, metrics: bool) -> (NodeProcess, Started) {
    let mut node = NodeProcess::run(name, config, &[], &[]);
    let started = tokio::task::block_in_place(|| node.wait_started(metrics, START));
    (node, started)
}

fn freshness() -> Freshness {
    Freshness {
        now: unix_now(),
        max_age_secs: 3 * 3600,
        max_clock_skew_secs: 300,
    }
}

/// Three nodes in three processes: the directory of the first lists all
/// three (each descriptor verified), and a reply crosses n1 -> n2 -> n3 to
/// n3's mailbox, where the client fetches it and opens it. SIGTERM stops
/// each node with status 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_carry_a_reply() {
    let dir = tempfile::tempdir().unwrap();
    let config1 = init(&dir.path().join("n1"), "", &[]);
    let (mut n1, s1) = start("n1", &config1, false);
    let bootstrap = vec![s1.dial_addr()];
    let config2 = init(&dir.path().join("n2"), "", &bootstrap);
    let config3 = init(&dir.path().join("n3"), "", &bootstrap);
    let (mut n2, s2) = start("n2", &config2, false);
    let (mut n3, s3) = start("n3", &config3, false);

    // A client that knows only n1's address learns everything else from the
    // directory n1 serves.
    let client = Peer::new().unwrap();
    client.add_node(s1.peer_id, s1.transport_addrs());
    let wanted: HashSet<_> = [s1.peer_id, s2.peer_id, s3.peer_id].into();
    let deadline = Instant::now() + Duration::from_secs(60);
    let directory: Vec<Descriptor> = loop {
        let verified: Vec<Descriptor> = match client.directory(s1.peer_id, 0).await {
            Ok(answer) => answer
                .descriptors
                .iter()
                .map(|s| {
                    s.verify(freshness())
                        .unwrap_or_else(|e| panic!("n1 served a descriptor that fails: {e}"))
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        let seen: HashSet<_> = verified
            .iter()
            .filter_map(|d| leak_node::identity::peer_id_of(&d.node))
            .collect();
        if wanted.is_subset(&seen) {
            break verified;
        }
        assert!(
            Instant::now() < deadline,
            "n1's directory never listed all three nodes; it lists {seen:?}.\n\
             n1:\n{}\nn2:\n{}\nn3:\n{}",
            n1.stdout(),
            n2.stdout(),
            n3.stdout()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let descriptor = |peer| {
        directory
            .iter()
            .find(|d| leak_node::identity::peer_id_of(&d.node) == Some(peer))
            .unwrap()
            .clone()
    };
    let (d1, d2, d3) = (
        descriptor(s1.peer_id),
        descriptor(s2.peer_id),
        descriptor(s3.peer_id),
    );
    // The descriptors publish the addresses the nodes printed.
    for (d, s) in [(&d1, &s1), (&d2, &s2), (&d3, &s3)] {
        let published: Vec<Multiaddr> = d.addresses.iter().map(|a| a.parse().unwrap()).collect();
        assert_eq!(published, s.transport_addrs());
    }
    // The mailbox node's address comes from its verified descriptor.
    client.add_node(
        s3.peer_id,
        d3.addresses.iter().map(|a| a.parse().unwrap()).collect(),
    );

    let path = vec![hop(&d1, 100), hop(&d2, 100), hop(&d3, 100)];
    let capability = random32();
    let (block, keys) = leak_protocol::build_reply_block(
        &path,
        MailboxId::from_capability(&capability),
        &mut rand::rng(),
    )
    .unwrap();
    let (first_hop, packet) = block.into_packet(b"a receipt across processes").unwrap();
    assert_eq!(first_hop, d1.node);
    let sent = Instant::now();
    client.send_packets(s1.peer_id, &[packet]).await.unwrap();
    let mut replies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while replies.is_empty() && Instant::now() < deadline {
        replies = opening(
            &keys,
            client.fetch_mailbox(s3.peer_id, &capability).await.unwrap(),
        );
        if replies.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let elapsed = sent.elapsed();
    assert_eq!(
        replies.len(),
        1,
        "the reply never reached n3's mailbox.\nn1:\n{}\nn2:\n{}\nn3:\n{}",
        n1.stdout(),
        n2.stdout(),
        n3.stdout()
    );
    assert_eq!(
        &keys.open(&replies[0]).unwrap()[..],
        b"a receipt across processes"
    );
    assert!(
        elapsed >= Duration::from_millis(300),
        "three 100 ms mixing delays took only {elapsed:?}"
    );
    // Taken: the mailbox is empty now.
    assert!(
        opening(
            &keys,
            client.fetch_mailbox(s3.peer_id, &capability).await.unwrap()
        )
        .is_empty()
    );

    drop(client);
    tokio::task::block_in_place(|| {
        for node in [&mut n3, &mut n2, &mut n1] {
            node.stop_cleanly();
        }
    });
    for node in [&n1, &n2, &n3] {
        assert!(
            node.stderr().contains("leak-node stopped"),
            "no shutdown log (logs go to stderr):\n{}",
            node.stderr()
        );
        assert!(
            !node.stderr().contains("panicked"),
            "a node panicked:\n{}",
            node.stderr()
        );
    }
}

/// `LEAK_<SECTION>__<KEY>` overrides the file: a node whose file disables
/// metrics serves them at the address `LEAK_METRICS__LISTEN` names.
#[test]
fn environment_overrides_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = init(&dir.path().join("n"), "", &[]);
    // The port is free now; another process could take it before the node
    // binds it, so retry a few times on "port taken".
    for attempt in 0.. {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut node = NodeProcess::run(
            "env-node",
            &config,
            &[],
            &[
                ("LEAK_METRICS__LISTEN", addr.as_str()),
                ("LEAK_LIMITS__GLOBAL_QUEUE", "77"),
            ],
        );
        if node.wait_exit(Duration::from_millis(300)).is_some()
            && node.stderr().contains("port taken")
            && attempt < 3
        {
            continue;
        }
        let started = node.wait_started(true, START);
        assert_eq!(started.metrics_addr().to_string(), addr);
        let body = scrape_metrics(started.metrics_addr()).unwrap();
        assert!(body.contains("leak_packets_forwarded"), "{body}");
        assert_eq!(metric(&body, "leak_packets_forwarded_total", None), 0.0);
        node.stop_cleanly();
        return;
    }
}

/// Started with Linux's usual soft open-files limit of a service (1,024,
/// here 512) and a higher hard one, `leak-node run` raises the soft limit
/// to what its connection cap needs (`max_connections` + 256); with a
/// hard limit below that, it takes the hard limit and says what is missing.
#[test]
fn the_node_raises_its_open_files_limit_to_what_its_connection_cap_needs() {
    let dir = tempfile::tempdir().unwrap();
    let config = init(&dir.path().join("n"), "", &[]);
    let needed = leak_node::open_files::needed(
        leak_node::Config::load(&config, &[])
            .unwrap()
            .limits
            .max_connections,
    );
    for (hard, expected) in [(needed + 1000, needed), (needed - 100, needed - 100)] {
        let mut command = std::process::Command::new("bash");
        command
            .arg("-c")
            .arg(format!(
                "ulimit -Sn 512 && ulimit -Hn {hard} && exec \"$0\" run --config \"$1\""
            ))
            .arg(leak_tests::process::leak_node_bin())
            .arg(&config);
        let mut node = NodeProcess::spawn("limits", command);
        node.wait_started(false, START);
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", node.pid())).unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap();
        let numbers: Vec<u64> = line
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        assert_eq!(numbers, [expected, hard], "{line}");
        if expected < needed {
            assert!(
                node.stderr().contains("open-files limit is below"),
                "{}",
                node.stderr()
            );
        }
        node.stop_cleanly();
    }
}

/// A listen port that is already bound, or a metrics port that is: the
/// node exits non-zero and says which address and why.
#[test]
fn a_taken_port_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = init(&dir.path().join("n"), "", &[]);

    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let mut node = NodeProcess::run("listen-taken", &config, &["--listen", &listen], &[]);
    let stderr = node.expect_failure(FAIL);
    assert!(stderr.contains(&listen), "names the address: {stderr}");
    assert!(stderr.contains("taken"), "says why: {stderr}");

    let metrics = format!("127.0.0.1:{port}");
    let mut node = NodeProcess::run("metrics-taken", &config, &["--metrics", &metrics], &[]);
    let stderr = node.expect_failure(FAIL);
    assert!(stderr.contains(&metrics), "names the address: {stderr}");
    assert!(stderr.contains("taken"), "says why: {stderr}");
    drop(taken);
}

/// A garbage, a group-readable or a missing identity key: the node exits
/// non-zero and names the file and the problem.
#[test]
fn a_bad_identity_key_is_a_clear_error() {
    use std::os::unix::fs::PermissionsExt as _;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("n");
    let config = init(&data, "", &[]);
    let key = data.join(leak_node::identity::IDENTITY_FILE);
    let key_name = key.display().to_string();

    // Garbage, with the right mode (writing keeps the file's 0600).
    std::fs::write(&key, b"this is not a protobuf-encoded ed25519 key").unwrap();
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let stderr = NodeProcess::run("garbage-key", &config, &[], &[]).expect_failure(FAIL);
    assert!(stderr.contains(&key_name), "names the file: {stderr}");
    assert!(
        stderr.contains("not a valid identity key"),
        "says why: {stderr}"
    );

    // Readable by others: refused whatever it holds.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let stderr = NodeProcess::run("open-key", &config, &[], &[]).expect_failure(FAIL);
    assert!(stderr.contains(&key_name), "names the file: {stderr}");
    assert!(stderr.contains("chmod 600"), "says what to do: {stderr}");

    // Missing.
    std::fs::remove_file(&key).unwrap();
    let stderr = NodeProcess::run("no-key", &config, &[], &[]).expect_failure(FAIL);
    assert!(stderr.contains(&key_name), "names the file: {stderr}");
    assert!(
        stderr.contains("leak-node init"),
        "says what to do: {stderr}"
    );
}

/// An unknown or ill-typed key, from `--set` or from the environment: the
/// node exits non-zero and names the key.
#[test]
fn a_bad_config_key_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = init(&dir.path().join("n"), "", &[]);

    let stderr = NodeProcess::run("unknown-section", &config, &["--set", "nosuch.key=1"], &[])
        .expect_failure(FAIL);
    assert!(stderr.contains("nosuch"), "names the key: {stderr}");

    let stderr = NodeProcess::run(
        "unknown-key",
        &config,
        &["--set", "limits.global_queu=1"],
        &[],
    )
    .expect_failure(FAIL);
    assert!(stderr.contains("global_queu"), "names the key: {stderr}");

    let stderr = NodeProcess::run(
        "bad-value",
        &config,
        &["--set", "limits.global_queue=lots"],
        &[],
    )
    .expect_failure(FAIL);
    assert!(stderr.contains("global_queue"), "names the key: {stderr}");

    let stderr = NodeProcess::run(
        "unknown-env-key",
        &config,
        &[],
        &[("LEAK_LIMITS__NOSUCH", "1")],
    )
    .expect_failure(FAIL);
    assert!(
        stderr.to_lowercase().contains("nosuch"),
        "names the key: {stderr}"
    );

    let stderr =
        NodeProcess::run("no-set-value", &config, &["--set", "limits"], &[]).expect_failure(FAIL);
    assert!(
        stderr.contains("section.key=value"),
        "says the form: {stderr}"
    );
}
