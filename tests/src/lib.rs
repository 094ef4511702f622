//! Helpers for Leak's integration tests: start real nodes, build paths
//! from their descriptors, wait for conditions; [`process`] runs the
//! `leak-node` binary as child processes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    future::Future,
    path::{Path, PathBuf},
    time::Duration,
};

use leak_node::{Config, Identity, RunningNode, StartOptions, node::unix_now};
use leak_protocol::{
    Delay, PathHop,
    directory::{Descriptor, SignedDescriptor},
};
use libp2p::Multiaddr;

pub mod process;

pub use process::{NodeProcess, init_node, leak_node_bin};

/// A config for a test node in `dir`: loopback, any port, no metrics.
pub fn test_config(dir: &Path, period_secs: u64, bootstrap: Vec<Multiaddr>) -> Config {
    let mut config = Config::defaults(dir.to_path_buf());
    config.node.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    config.node.bootstrap = bootstrap;
    config.metrics.listen = String::new();
    config.epochs.period_secs = period_secs;
    config.epochs.keys_ahead = 1;
    config.directory.max_age_secs = 3 * period_secs.max(60);
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
        key_hint: epoch as u8,
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
