//! Helpers for Leak's integration tests: start real nodes, build paths
//! from their descriptors, wait for conditions; [`process`] runs the
//! `leak-node` binary as child processes; [`exit`] starts federations with
//! an exit; [`mail`] runs real mail servers (Postfix, smtp-sink, a test CA)
//! on ports from [`ports`].

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use leak_node::{Config, Identity, RunningNode, StartOptions, client::Peer, node::unix_now};
use leak_protocol::{
    Delay, MailboxId, NodeId, Packet, PathHop, ReplyKeys, build_reply_block,
    directory::{Descriptor, SignedDescriptor},
};
use libp2p::Multiaddr;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

pub mod anonymity;
pub mod capture;
pub mod exit;
pub mod harness;
pub mod mail;
pub mod ports;
pub mod process;
pub mod roster;

pub use process::{NodeProcess, init_node, leak_node_bin};
pub use roster::{test_authority, trust_test_authority};

/// A config for a test node in `dir`: loopback, any port, no metrics.
pub fn test_config(dir: &Path, period_secs: u64, bootstrap: Vec<Multiaddr>) -> Config {
    let mut config = Config::defaults(dir.to_path_buf());
    config.node.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    config.node.bootstrap = bootstrap;
    config.metrics.listen = String::new();
    config.epochs.period_secs = period_secs;
    config.epochs.keys_ahead = 1;
    config.directory.max_age_secs = 3 * period_secs.max(60);
    // Tests count packets exactly: no loops of the nodes' own (tests of
    // loops turn them on), and receipts leave after the exit hop's delay.
    config.cover.loop_interval_ms = 0;
    config.exit.receipt_delay_ms = 0;
    // The test federation's authority; the node is admitted to the roster
    // beside its data directory when it starts (`TestNode::start`).
    trust_test_authority(&mut config);
    config
}

/// A node under test with its directory.
pub struct TestNode {
    /// The running node.
    pub node: RunningNode,
    /// Its data directory.
    pub dir: PathBuf,
    /// Its identity (to restart it as the same node).
    pub identity: Identity,
}

impl TestNode {
    /// Starts a node in `dir` with `config`.
    pub async fn start(dir: PathBuf, config: Config, options: StartOptions) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        let identity_path = config.identity_path();
        let identity = if identity_path.exists() {
            Identity::load(&identity_path).unwrap()
        } else {
            Identity::create(&identity_path).unwrap()
        };
        // Admitted to the test roster first, so it starts admitted.
        if !config.directory.roster_file.is_empty() {
            roster::admit_config(&config, identity.node_id());
        }
        let node = leak_node::start(config, identity.clone(), options)
            .await
            .unwrap();
        Self {
            node,
            dir,
            identity,
        }
    }
}

/// Starts node `name` in `root/name` with [`test_config`] (epochs of
/// `period_secs`), bootstrapping from `bootstrap`.
pub async fn start_test_node(
    root: &Path,
    name: &str,
    period_secs: u64,
    bootstrap: Vec<Multiaddr>,
) -> TestNode {
    let dir = root.join(name);
    let config = test_config(&dir, period_secs, bootstrap);
    TestNode::start(dir, config, StartOptions::default()).await
}

/// Starts `count` nodes `n0`, `n1`, … in `root` (see [`start_test_node`]),
/// every one after the first bootstrapping from `n0`.
pub async fn start_test_nodes(root: &Path, count: usize, period_secs: u64) -> Vec<TestNode> {
    let first = start_test_node(root, "n0", period_secs, vec![]).await;
    let bootstrap = vec![first.node.dial_addr()];
    let mut nodes = vec![first];
    for i in 1..count {
        nodes.push(start_test_node(root, &format!("n{i}"), period_secs, bootstrap.clone()).await);
    }
    nodes
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A path hop for `descriptor` with the key of the current epoch.
pub fn hop(descriptor: &Descriptor, delay_ms: u32) -> PathHop {
    let epoch = descriptor.epoch_at(unix_now());
    hop_for_epoch(descriptor, epoch, delay_ms)
}

/// A path hop for `descriptor` with the key of `epoch`.
pub fn hop_for_epoch(descriptor: &Descriptor, epoch: u64, delay_ms: u32) -> PathHop {
    PathHop {
        node: descriptor.node,
        key: descriptor
            .mix_key(epoch)
            .unwrap_or_else(|| panic!("no key for epoch {epoch}")),
        key_hint: leak_protocol::federation::epoch_key_hint(epoch),
        delay: Delay(delay_ms),
    }
}

/// The verified descriptor of `node` as `from` sees it, if any.
pub fn descriptor_of(from: &RunningNode, node: &RunningNode) -> Option<Descriptor> {
    from.directory()
        .into_iter()
        .find(|d| d.node == node.node_id())
}

/// The node's own descriptor, verified.
pub fn own_descriptor(node: &RunningNode) -> Descriptor {
    let signed: SignedDescriptor = node.descriptor().unwrap();
    signed
        .verify(leak_protocol::directory::Freshness {
            now: unix_now(),
            max_age_secs: 86_400,
            max_clock_skew_secs: 300,
        })
        .unwrap()
}

/// Random 32 bytes.
pub fn random32() -> [u8; 32] {
    use rand::Rng as _;
    let mut out = [0u8; 32];
    rand::rng().fill_bytes(&mut out);
    out
}

/// Whether `from` holds a verified descriptor of `node`.
pub fn knows(from: &RunningNode, node: NodeId) -> bool {
    from.directory().iter().any(|d| d.node == node)
}

/// Packets `node` delivered into its mailboxes so far.
pub fn mailbox_finals(node: &RunningNode) -> u64 {
    node.metrics()
        .packets_final
        .get_or_create(&vec![("kind", "mailbox")])
        .get()
}

/// Waits until `node` has counted at least `n` drops for `reason`.
pub async fn wait_for_drops(node: &RunningNode, reason: &'static str, n: u64, timeout: Duration) {
    wait_until(timeout, &format!("{n} drop(s) for {reason:?}"), || {
        let done = node.metrics().dropped(reason) >= n;
        async move { done }
    })
    .await;
}

/// A client peer that knows where `nodes` listen.
pub fn client_for(nodes: &[&RunningNode]) -> Peer {
    let client = Peer::new().unwrap();
    for node in nodes {
        client.add_node(node.peer_id(), node.listen_addrs().to_vec());
    }
    client
}

/// A reply packet for `path` (its last hop keeps the mailbox of
/// `capability`) carrying `message`, and the keys to open the reply.
pub fn reply_packet(
    path: &[PathHop],
    capability: &[u8; 32],
    message: &[u8],
) -> (Packet, ReplyKeys) {
    let (block, keys) = build_reply_block(
        path,
        MailboxId::from_capability(capability),
        &mut rand::rng(),
    )
    .unwrap();
    let (first_hop, packet) = block.into_packet(message).unwrap();
    assert_eq!(first_hop, path[0].node);
    (packet, keys)
}

/// The entries of a mailbox answer that open with `keys`: the replies for
/// them (random filler and replies sealed for other keys never open).
pub fn opening(keys: &ReplyKeys, entries: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    entries
        .into_iter()
        .filter(|entry| keys.open(entry).is_ok())
        .collect()
}

/// Fetches the mailbox of `capability` at `node` until it yields at least
/// one reply that opens with `keys` or `timeout` passes; returns those
/// replies (possibly none).
pub async fn fetch_replies(
    client: &Peer,
    node: &RunningNode,
    capability: &[u8; 32],
    keys: &ReplyKeys,
    timeout: Duration,
) -> Vec<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let replies = opening(
            keys,
            client
                .fetch_mailbox(node.peer_id(), capability)
                .await
                .unwrap(),
        );
        if !replies.is_empty() || tokio::time::Instant::now() > deadline {
            return replies;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The time since the Unix epoch, with sub-second precision.
pub fn unix_time() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
}

/// A minimal `GET path` over HTTP/1.1; returns the status line and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    http_request(addr, "GET", path, "").await
}

/// A minimal HTTP/1.1 request; returns the status line and the body.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (String, String) {
    let mut stream = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .unwrap()
    .unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.lines().next().unwrap_or_default().to_owned();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

/// A descriptor for `identity`, otherwise a copy of `template` (a real
/// node's, so its fields are consistent), published at `published_at`.
pub fn descriptor_for(identity: &Identity, template: &Descriptor, published_at: u64) -> Descriptor {
    Descriptor {
        node: identity.node_id(),
        published_at,
        // The template's counts may be of an epoch not over at `published_at`.
        traffic: None,
        ..template.clone()
    }
}

/// Counts the panics of this process from now on (on any thread), still
/// printing them as usual.
pub fn count_panics() -> Arc<AtomicUsize> {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        seen.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));
    count
}
