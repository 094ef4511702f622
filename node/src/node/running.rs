//! [`RunningNode`]: the handle a caller holds on a started node.

use std::{
    future::Future as _,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use leak_protocol::{
    NodeId,
    directory::{Descriptor, SignedDescriptor},
};
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, watch};

use super::shared::{Command, Shared};
use crate::{
    directory::{Offer, Refused},
    error::NodeError,
    metrics::Metrics,
    net::{DESCRIPTOR_TOPIC, POLICY_TOPIC},
};

/// A running node. Dropping it without [`RunningNode::shutdown`] aborts it.
pub struct RunningNode {
    pub(super) shared: Arc<Shared>,
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) shutdown: watch::Sender<bool>,
    /// The core tasks, by name; `None` once one has been seen to end.
    pub(super) tasks: Vec<(&'static str, Option<tokio::task::JoinHandle<()>>)>,
    pub(super) workers: Vec<std::thread::JoinHandle<()>>,
    pub(super) metrics_addr: Option<SocketAddr>,
    pub(super) exit: Option<Arc<crate::exit::Exit>>,
    pub(super) exit_http_addr: Option<SocketAddr>,
}

impl RunningNode {
    /// The node's libp2p peer id.
    pub fn peer_id(&self) -> PeerId {
        self.shared.local_peer
    }

    /// The node's Leak node id.
    pub fn node_id(&self) -> NodeId {
        self.shared.identity.node_id()
    }

    /// The addresses the node listens on (with real ports).
    pub fn listen_addrs(&self) -> &[Multiaddr] {
        &self.shared.listen_addrs
    }

    /// A dialable address of the node, with its `/p2p/` suffix.
    pub fn dial_addr(&self) -> Multiaddr {
        let addr = self
            .shared
            .listen_addrs
            .first()
            .cloned()
            .unwrap_or_else(Multiaddr::empty);
        addr.with(libp2p::multiaddr::Protocol::P2p(self.peer_id()))
    }

    /// The metrics endpoint's bound address.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The exit role, when the node has it. A clone of the `Arc` kept past
    /// [`RunningNode::shutdown`] holds the node's state (and its database)
    /// open: drop it first.
    pub fn exit(&self) -> Option<&Arc<crate::exit::Exit>> {
        self.exit.as_ref()
    }

    /// The exit's opt-out endpoint's bound address.
    pub fn exit_http_addr(&self) -> Option<SocketAddr> {
        self.exit_http_addr
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// This node's current signed descriptor.
    pub fn descriptor(&self) -> Option<SignedDescriptor> {
        self.shared.own_descriptor.read().ok()?.clone()
    }

    /// The verified descriptors this node knows (its own included).
    pub fn directory(&self) -> Vec<Descriptor> {
        self.shared
            .directory
            .read()
            .map(|d| d.descriptors().cloned().collect())
            .unwrap_or_default()
    }

    /// Offers a descriptor as if it had arrived from the network.
    pub fn offer_descriptor(&self, signed: SignedDescriptor) -> Result<Offer, Refused> {
        let result = self.shared.offer(signed);
        self.shared.refresh_addresses();
        result
    }

    /// Offers a signed roster as if a peer had served it: adopted if it
    /// verifies and is newer (`Ok(false)`: the roster in force).
    pub fn offer_roster(&self, bytes: &[u8]) -> Result<bool, leak_protocol::roster::RosterError> {
        self.shared.offer_roster(bytes)
    }

    /// The roster in force, if any.
    pub fn roster(&self) -> Option<leak_protocol::roster::Roster> {
        self.shared
            .directory
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .roster()
            .cloned()
    }

    /// Publishes arbitrary bytes on the descriptor topic, as a hostile or
    /// broken node might (for tests and tools; honest nodes publish their own
    /// descriptor by themselves).
    pub async fn publish_descriptor_bytes(&self, bytes: Vec<u8>) -> Result<(), NodeError> {
        self.commands
            .send(Command::Publish(DESCRIPTOR_TOPIC, bytes))
            .await
            .map_err(|_| NodeError::ShuttingDown)
    }

    /// Publishes arbitrary bytes on the policy topic (for tests and tools:
    /// nodes pass on the newest valid policy by themselves).
    pub async fn publish_policy_bytes(&self, bytes: Vec<u8>) -> Result<(), NodeError> {
        self.commands
            .send(Command::Publish(POLICY_TOPIC, bytes))
            .await
            .map_err(|_| NodeError::ShuttingDown)
    }

    /// Dials an address (a bootstrap node, say).
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NodeError> {
        self.commands
            .send(Command::Dial(addr))
            .await
            .map_err(|_| NodeError::ShuttingDown)
    }

    /// The epochs whose mix secrets the node holds.
    pub fn key_epochs(&self) -> Vec<u64> {
        self.shared
            .keys
            .read()
            .map(|k| k.epochs())
            .unwrap_or_default()
    }

    /// Resolves when a core task or worker thread has ended on its own (a
    /// panic, say): the node no longer works as it should, and the process
    /// should stop so its supervisor restarts it. Returns what ended.
    pub async fn failed(&mut self) -> String {
        let tasks = &mut self.tasks;
        let ended_task = std::future::poll_fn(|cx| {
            for (name, slot) in tasks.iter_mut() {
                if let Some(task) = slot
                    && std::pin::Pin::new(task).poll(cx).is_ready()
                {
                    *slot = None;
                    return std::task::Poll::Ready(*name);
                }
            }
            std::task::Poll::Pending
        });
        tokio::pin!(ended_task);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                name = &mut ended_task => return format!("the {name} task stopped"),
                _ = tick.tick() => {
                    if let Some(i) = self.workers.iter().position(std::thread::JoinHandle::is_finished) {
                        return format!("worker thread {i} stopped");
                    }
                }
            }
        }
    }

    /// Stops every task, lets the workers finish the packets they hold, and
    /// closes the database. Packets still held for their delay are dropped
    /// (counted as `shutdown`): releasing them early would break mixing.
    pub async fn shutdown(mut self) -> Result<(), NodeError> {
        let _ = self.shutdown.send(true);
        // The exit holds the shared state (to send receipts).
        self.exit = None;
        self.shared.inbound.close();
        for (_, task) in self.tasks {
            if let Some(task) = task {
                task.abort();
                let _ = task.await;
            }
        }
        let workers = self.workers;
        tokio::task::spawn_blocking(move || {
            for w in workers {
                let _ = w.join();
            }
        })
        .await
        .map_err(|e| NodeError::Io {
            what: "joining the worker threads".into(),
            source: std::io::Error::other(e),
        })?;
        self.shared
            .links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        // Connection tasks end once the swarm is gone; wait for them to let
        // go of the shared state so the database is closed when we return.
        let deadline = Instant::now() + Duration::from_secs(30);
        while Arc::strong_count(&self.shared) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if Arc::strong_count(&self.shared) > 1 {
            tracing::warn!("some connection tasks are still running at shutdown");
        }
        tracing::info!("leak-node stopped");
        Ok(())
    }
}
