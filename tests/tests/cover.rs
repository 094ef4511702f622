//! Cover traffic at the nodes, over real libp2p: a relay's own loops come
//! back (between `leak-node` processes), an exit discards drops and
//! delivers nothing, a mailbox answer has one size on the wire whether
//! empty or full, a flood of fake loop replies and fetches stays bounded,
//! and descriptors publish their epoch's traffic counts.
//!
//! No test asserts on wall-clock time: intervals are configured short, and
//! every wait is "until this holds, or fail after a generous timeout".

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{path::Path, time::Duration};

use futures::{AsyncReadExt as _, AsyncWriteExt as _, future::join_all};
use leak_node::{StartOptions, config::Config, wire};
use leak_protocol::{
    cover::seal_drop,
    federation::{Layer, layer},
    sphinx::PAYLOAD_LEN,
};
use leak_tests::{
    NodeProcess, TestNode, client_for, descriptor_of,
    exit::ProcessFederation,
    hop, init_node, mailbox_finals, own_descriptor,
    process::{free_port, metric, scrape_metrics},
    random32, reply_packet, test_config, wait_until,
};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Loops every 100 ms on average, 20 ms per hop: many loops in a second.
fn fast_loops(config: &mut Config) {
    config.cover.loop_interval_ms = 100;
    config.cover.loop_delay_ms = 20;
    config.cover.loop_grace_ms = 10_000;
    // Loops of a few tens of milliseconds: no batch gathering (a second a
    // hop) to swamp them.
    config.limits.batch_gather_ms = 0;
}

/// Four `leak-node` processes, each sending loops through two of the
/// others: every one counts loops returned, over real libp2p links.
/// Starts `count` in-process nodes in `dir` (the first is everyone's
/// bootstrap) with epochs of `period_secs`, fast loops, and `configure`;
/// returns them once every directory lists them all.
async fn start_looping_nodes(
    dir: &Path,
    count: usize,
    period_secs: u64,
    configure: impl Fn(&mut Config),
) -> Vec<TestNode> {
    let mut nodes: Vec<TestNode> = Vec::new();
    for _ in 0..count {
        add_looping_node(dir, &mut nodes, period_secs, &configure).await;
    }
    wait_for_directories(&nodes).await;
    nodes
}

/// Starts one more node like [`start_looping_nodes`]'s, bootstrapping
/// from the first.
async fn add_looping_node(
    dir: &Path,
    nodes: &mut Vec<TestNode>,
    period_secs: u64,
    configure: impl Fn(&mut Config),
) {
    let d = dir.join(format!("n{}", nodes.len()));
    let bootstrap = nodes
        .first()
        .map(|n| vec![n.node.dial_addr()])
        .unwrap_or_default();
    let mut config = test_config(&d, period_secs, bootstrap);
    fast_loops(&mut config);
    configure(&mut config);
    nodes.push(TestNode::start(d, config, StartOptions::default()).await);
}

/// Waits until every node's directory lists every node.
async fn wait_for_directories(nodes: &[TestNode]) {
    let count = nodes.len();
    wait_until(TIMEOUT, "the directory to converge", || {
        let done = nodes.iter().all(|n| n.node.directory().len() == count);
        async move { done }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_loops_come_back_between_processes() {
    let dir = tempfile::tempdir().unwrap();
    let sets = [
        "--set",
        "cover.loop_interval_ms=100",
        "--set",
        "cover.loop_delay_ms=20",
        "--set",
        "cover.loop_grace_ms=10000",
    ];
    let mut nodes: Vec<(NodeProcess, leak_tests::process::Started)> = Vec::new();
    for i in 0..4 {
        let metrics = format!("127.0.0.1:{}", free_port());
        let mut args = vec![
            "--listen".to_owned(),
            "/ip4/127.0.0.1/tcp/0".to_owned(),
            "--metrics".to_owned(),
            metrics,
        ];
        if let Some((_, first)) = nodes.first() {
            args.push("--bootstrap".to_owned());
            args.push(first.dial_addr().to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let config = init_node(&dir.path().join(format!("n{i}")), &args);
        let mut node = NodeProcess::run(&format!("n{i}"), &config, &sets, &[]);
        let started = tokio::task::block_in_place(|| node.wait_started(true, TIMEOUT));
        nodes.push((node, started));
    }
    let scrape = |i: usize, name: &str| -> f64 {
        scrape_metrics(nodes[i].1.metrics_addr())
            .map(|text| metric(&text, name, None))
            .unwrap_or(0.0)
    };
    wait_until(TIMEOUT, "every node to count loops returned", || {
        let done = (0..nodes.len()).all(|i| scrape(i, "leak_loops_returned_total") > 0.0);
        async move { done }
    })
    .await;
    for i in 0..nodes.len() {
        let (sent, returned) = (
            scrape(i, "leak_loops_sent_total"),
            scrape(i, "leak_loops_returned_total"),
        );
        assert!(returned <= sent, "node {i}: {returned} returned of {sent}");
        // A returned loop is not a client's reply: nothing was stored.
        assert_eq!(scrape(i, "leak_mailbox_replies"), 0.0, "node {i}");
    }
    for (node, _) in &mut nodes {
        tokio::task::block_in_place(|| node.stop_cleanly());
    }
}

/// Drops sealed to an exit (a `leak-node` process) cross two relays like
/// leaks; the exit opens them, counts them as cover and discards them: no
/// delivery attempt, no receipt, nothing queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_counts_drops_and_delivers_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    // Nothing listens on port 1: any delivery attempt would be counted.
    let fed = ProcessFederation::start(
        dir.path(),
        "smtp://127.0.0.1:1",
        1,
        &[format!("metrics.listen={metrics:?}")],
        None,
    )
    .await;
    let (entry, middle) = (&fed.relays[0].node, &fed.relays[1].node);
    let exit = entry
        .directory()
        .into_iter()
        .find(|d| d.node == fed.exit_id)
        .unwrap();
    let path = [
        hop(&descriptor_of(entry, entry).unwrap(), 10),
        hop(&descriptor_of(entry, middle).unwrap(), 10),
        hop(&exit, 10),
    ];
    let drops: Vec<_> = (0..3)
        .map(|_| seal_drop(&path, &mut rand::rng()).unwrap())
        .collect();
    let client = client_for(&[entry]);
    client.send_packets(entry.peer_id(), &drops).await.unwrap();
    let addr = metrics.parse().unwrap();
    let scrape = |name: &str, label: Option<&str>| {
        scrape_metrics(addr).map_or(0.0, |text| metric(&text, name, label))
    };
    wait_until(TIMEOUT, "the exit to count three drops", || {
        let done = scrape("leak_packets_dropped_total", Some("reason=\"cover\"")) == 3.0;
        async move { done }
    })
    .await;
    assert_eq!(scrape("leak_exit_receipts_total", None), 0.0, "no receipt");
    assert_eq!(scrape("leak_exit_leaks_total", None), 0.0, "no leak taken");
    assert_eq!(
        scrape("leak_exit_delivery_attempts_total", None),
        0.0,
        "no delivery attempt"
    );
    assert_eq!(fed.queue_counts(), Some((0, 0)), "nothing queued");
    for relay in &fed.relays {
        assert_eq!(mailbox_finals(&relay.node), 0);
    }
    fed.shutdown().await;
}

/// One mailbox exchange read byte by byte on a raw `/leak/mailbox/2`
/// stream: the bytes of the answer, and whether anything followed it
/// before the acknowledgement, and the bytes after.
async fn raw_exchange(
    client: &leak_node::client::Peer,
    node: libp2p::PeerId,
    capability: &[u8; 32],
) -> (Vec<u8>, usize) {
    let mut stream = client
        .open_stream(node, wire::MAILBOX_PROTOCOL)
        .await
        .unwrap();
    let mut request = vec![2u8];
    request.extend_from_slice(capability);
    stream.write_all(&request).await.unwrap();
    stream.flush().await.unwrap();
    let mut answer = vec![0u8; wire::MAILBOX_ANSWER_LEN];
    stream.read_exact(&mut answer).await.unwrap();
    // Nothing more comes before the acknowledgement.
    let mut extra = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), stream.read(&mut extra))
            .await
            .is_err(),
        "the node wrote past its answer"
    );
    stream.write_all(&[1]).await.unwrap();
    stream.flush().await.unwrap();
    let mut confirmation = [0u8; 1];
    stream.read_exact(&mut confirmation).await.unwrap();
    // The stream would carry the next request; ending our side ends it,
    // and nothing more comes.
    stream.close().await.unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    (answer, 1 + rest.len())
}

/// An empty mailbox and one holding a reply answer with the same bytes on
/// the wire (one slot, then one byte of confirmation); only the keys tell
/// the reply from the filler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailbox_answer_has_one_size_empty_or_full() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(
        dir.path().join("a"),
        test_config(&dir.path().join("a"), 3600, vec![]),
        StartOptions::default(),
    )
    .await;
    let an = &node.node;
    let client = client_for(&[an]);
    let capability = random32();
    let (packet, keys) = reply_packet(&[hop(&own_descriptor(an), 0)], &capability, b"full");

    let (empty, empty_rest) = raw_exchange(&client, an.peer_id(), &capability).await;
    client.send_packets(an.peer_id(), &[packet]).await.unwrap();
    wait_until(TIMEOUT, "the reply to be stored", || {
        let done = mailbox_finals(an) == 1;
        async move { done }
    })
    .await;
    let (full, full_rest) = raw_exchange(&client, an.peer_id(), &capability).await;
    let (after, after_rest) = raw_exchange(&client, an.peer_id(), &capability).await;

    assert_eq!(empty.len(), PAYLOAD_LEN * wire::MAILBOX_ANSWER_SLOTS);
    assert_eq!(full.len(), empty.len());
    assert_eq!((empty_rest, full_rest, after_rest), (1, 1, 1));
    assert!(keys.open(&empty).is_err(), "filler never opens");
    assert_eq!(&keys.open(&full).unwrap()[..], b"full");
    assert!(keys.open(&after).is_err(), "taken: filler again");
    assert_ne!(empty, after, "filler is random, not a constant");
    node.node.shutdown().await.unwrap();
}

/// A node sending loops, flooded with replies for random mailbox ids (fake
/// loop returns, as anyone can address a reply to a node) and with
/// concurrent fetches: its mailbox store stays within its bound, no fake
/// counts as a returned loop, and its own loops keep coming back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_fake_loop_replies_and_fetches_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_looping_nodes(dir.path(), 3, 3600, |config| {
        config.mailbox.max_total = 50;
        config.mailbox.max_per_mailbox = 2;
    })
    .await;
    let target = &nodes[0].node;
    let own = own_descriptor(target);
    let fakes: Vec<_> = (0..400)
        .map(|i| reply_packet(&[hop(&own, 0)], &random32(), format!("fake {i}").as_bytes()).0)
        .collect();
    let client = client_for(&[target]);
    for chunk in fakes.chunks(100) {
        client.send_packets(target.peer_id(), chunk).await.unwrap();
    }
    let fetchers: Vec<_> = (0..8).map(|_| client_for(&[target])).collect();
    let capability = random32();
    let fetched = join_all(
        fetchers
            .iter()
            .flat_map(|c| (0..8).map(|_| c.fetch_mailbox(target.peer_id(), &capability))),
    )
    .await;
    // Every fetch that was served got one slot; none opens for anyone.
    for entries in fetched.into_iter().flatten() {
        assert_eq!(entries.len(), wire::MAILBOX_ANSWER_SLOTS);
    }
    wait_until(TIMEOUT, "the flood to be processed", || {
        let done = mailbox_finals(target) + target.metrics().dropped("mailbox_full") >= 400;
        async move { done }
    })
    .await;
    let metrics = target.metrics();
    assert!(metrics.mailbox_replies.get() <= 50, "the store is bounded");
    assert!(metrics.dropped("mailbox_full") >= 350);
    assert_eq!(metrics.dropped("tampered_loop"), 0, "no fake hit a loop id");
    let returned = metrics.loops_returned.get();
    assert!(returned <= metrics.loops_sent.get());
    wait_until(TIMEOUT, "loops to keep coming back", || {
        let done = target.metrics().loops_returned.get() > returned + 3;
        async move { done }
    })
    .await;
    assert!(target.metrics().loops_pending.get() <= 4096);
    for n in nodes {
        n.node.shutdown().await.unwrap();
    }
}

/// Nodes with short epochs publish, for their last complete epoch, how many
/// packets came from clients and from nodes: the loops they exchange count
/// as from nodes, a client's packets as from clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptors_publish_the_last_epochs_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_looping_nodes(dir.path(), 3, 2, |_| {}).await;
    let target = &nodes[0].node;
    let client = client_for(&[target]);
    // Packets that fail at the target still count as received from a client.
    let junk = leak_protocol::Packet::from_bytes(&[0u8; leak_protocol::PACKET_LEN]).unwrap();
    let observer = &nodes[1].node;
    let client = &client;
    wait_until(
        TIMEOUT,
        "a descriptor with clients' and nodes' packets",
        || {
            let junk = junk.clone();
            async move {
                let _ = client.send_packets(target.peer_id(), &[junk]).await;
                let seen = descriptor_of(observer, target).and_then(|d| d.traffic);
                seen.is_some_and(|t| t.from_clients > 0 && t.from_nodes > 0)
            }
        },
    )
    .await;
    let descriptor = descriptor_of(observer, target).unwrap();
    let traffic = descriptor.traffic.unwrap();
    assert!(traffic.epoch < descriptor.epoch_at(descriptor.published_at));
    for n in nodes {
        n.node.shutdown().await.unwrap();
    }
}

/// A relay that stops dropping everything (as an (n−1) attacker holding
/// packets back would look from outside) shows up in the others' loops:
/// the loops that cross it are counted lost, while those that avoid it
/// still come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_stops_shows_up_as_lost_loops() {
    let dir = tempfile::tempdir().unwrap();
    let configure = |config: &mut Config| config.cover.loop_grace_ms = 500;
    let mut nodes = start_looping_nodes(dir.path(), 4, 3600, configure).await;
    // The watcher's loops cross two of the others, mix relays when at
    // least two of them are (`choose_loop_path`). With exactly two mixes
    // every loop would cross a stopped mix and none would cross a stopped
    // entry relay: add nodes until the test can see both kinds of loop.
    let mixes = |nodes: &[TestNode]| -> Vec<usize> {
        (1..nodes.len())
            .filter(|&i| layer(&nodes[i].node.node_id()) == Layer::Mix)
            .collect()
    };
    while mixes(&nodes).len() == 2 {
        add_looping_node(dir.path(), &mut nodes, 3600, configure).await;
        wait_for_directories(&nodes).await;
    }
    let watcher = &nodes[0].node;
    wait_until(
        TIMEOUT,
        "loops to come back while every relay works",
        || {
            let done = watcher.metrics().loops_returned.get() >= 5;
            async move { done }
        },
    )
    .await;
    // Loops sent while the directories converged may have been lost: count
    // from here.
    let lost_before = watcher.metrics().loops_lost.get();
    // A relay the watcher's loops cross, and there are paths around it:
    // one of three or more mixes, or any relay when loops use them all.
    let mixes = mixes(&nodes);
    let victim = if mixes.len() >= 3 {
        mixes[0]
    } else {
        nodes.len() - 1
    };
    let stopped = nodes.remove(victim);
    stopped.node.shutdown().await.unwrap();
    let watcher = &nodes[0].node;
    wait_until(
        TIMEOUT,
        "the loops through the stopped relay to be lost",
        || {
            let done = watcher.metrics().loops_lost.get() >= lost_before + 3;
            async move { done }
        },
    )
    .await;
    let returned = watcher.metrics().loops_returned.get();
    wait_until(TIMEOUT, "loops avoiding it to keep coming back", || {
        let done = watcher.metrics().loops_returned.get() > returned;
        async move { done }
    })
    .await;
    for n in nodes {
        n.node.shutdown().await.unwrap();
    }
}
