//! The state every task of a node shares, and this node's descriptor.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use leak_protocol::{
    NodeId, Packet,
    directory::{Descriptor, ExitInfo, Roles, SignedDescriptor},
    roster::RosterError,
};
use libp2p::{Multiaddr, PeerId};
use tokio::sync::mpsc;

use crate::{
    clock::SharedClock,
    config::{Config, Role},
    directory::{Directory, Offer, Refused},
    epoch::KeyRing,
    error::NodeError,
    exit::ExitDelivery,
    identity::{Identity, peer_id_of},
    metrics::Metrics,
    net::AddressBook,
    policy::PolicyState,
    queue::FairQueue,
    relay::{DropReason, RelayCore, RelayLoops, quota::DepositQuota},
    roster::RosterState,
    store::Store,
    traffic::{Source, TrafficCounter},
};

/// The shortest gap between two directory fetches from one peer prompted
/// by its claim of a newer roster.
pub(super) const PROMPTED_FETCH_GAP_MS: u64 = 30_000;
/// At most this many peers remembered for [`PROMPTED_FETCH_GAP_MS`].
const MAX_PROMPTED_PEERS: usize = 4096;

/// How long a request may take before it is abandoned.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What other tasks ask of the swarm task.
pub(super) enum Command {
    /// Publish on a gossip topic.
    Publish(&'static str, Vec<u8>),
    /// Dial an address.
    Dial(Multiaddr),
}

/// The listen addresses worth publishing: loopback ones only when there is
/// nothing else (a federation on one machine).
fn publishable(listen: &[Multiaddr]) -> Vec<Multiaddr> {
    use libp2p::multiaddr::Protocol;
    let is_loopback = |a: &Multiaddr| {
        a.iter().any(|p| match p {
            Protocol::Ip4(ip) => ip.is_loopback() || ip.is_unspecified(),
            Protocol::Ip6(ip) => ip.is_loopback() || ip.is_unspecified(),
            _ => false,
        })
    };
    let outside: Vec<Multiaddr> = listen.iter().filter(|a| !is_loopback(a)).cloned().collect();
    if outside.is_empty() {
        listen.to_vec()
    } else {
        outside
    }
}

/// The libp2p peer ids of next hops, by node id, remembered: decoding a
/// node id (an Ed25519 key) costs a point decompression, which every
/// forwarded packet would otherwise pay. Only ids that resolve to a peer
/// this node knows are remembered (a hostile packet can name any id), and
/// at most [`PeerIds::MAX`] of them: past that the memory starts afresh.
#[derive(Default)]
pub(super) struct PeerIds(Mutex<HashMap<NodeId, PeerId>>);

impl PeerIds {
    /// Most ids remembered.
    const MAX: usize = 16_384;

    /// The peer id of `node`, if it decodes to one; `known` says whether
    /// that peer is worth remembering.
    pub(super) fn resolve(&self, node: &NodeId, known: impl Fn(&PeerId) -> bool) -> Option<PeerId> {
        if let Some(peer) = self.0.lock().unwrap_or_else(|e| e.into_inner()).get(node) {
            return Some(*peer);
        }
        let peer = peer_id_of(node)?;
        if known(&peer) {
            let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
            if map.len() >= Self::MAX {
                map.clear();
            }
            map.insert(*node, peer);
        }
        Some(peer)
    }
}

/// State shared by the node's tasks.
pub(super) struct Shared {
    pub(super) config: Config,
    pub(super) identity: Identity,
    pub(super) local_peer: PeerId,
    pub(super) store: Arc<Store>,
    pub(super) keys: RwLock<KeyRing>,
    pub(super) directory: RwLock<Directory>,
    pub(super) book: AddressBook,
    /// Next hops' peer ids, remembered.
    pub(super) peer_ids: PeerIds,
    pub(super) metrics: Arc<Metrics>,
    pub(super) inbound: FairQueue<PeerId, Packet>,
    pub(super) links: Mutex<HashMap<PeerId, mpsc::Sender<Packet>>>,
    pub(super) control: Mutex<libp2p_stream::Control>,
    pub(super) exit_sink: Option<mpsc::Sender<ExitDelivery>>,
    pub(super) exit_info: Option<ExitInfo>,
    /// The exit role, if running (weak: the exit holds the shared state).
    pub(super) exit: std::sync::OnceLock<std::sync::Weak<crate::exit::Exit>>,
    pub(super) policy: Arc<PolicyState>,
    /// The roster in force and where new ones come from.
    pub(super) roster: RosterState,
    /// When a peer's claim of a newer roster last prompted a fetch.
    pub(super) prompted_fetches: Mutex<HashMap<PeerId, u64>>,
    /// Wakes maintenance to sign and publish a new descriptor at once.
    pub(super) republish: tokio::sync::Notify,
    /// The `published_at` of the last descriptor signed.
    pub(super) last_published_at: std::sync::atomic::AtomicU64,
    pub(super) own_descriptor: RwLock<Option<SignedDescriptor>>,
    pub(super) listen_addrs: Vec<Multiaddr>,
    pub(super) inbound_streams: super::serve::StreamCounts,
    /// The time, injected.
    pub(super) clock: SharedClock,
    /// The relay's decisions.
    pub(super) core: RelayCore,
    /// This node's own loops (see `node::cover`).
    pub(super) loops: Mutex<RelayLoops>,
    /// Mailbox deposits of this window, per previous hop.
    pub(super) deposit_quota: Mutex<DepositQuota<PeerId>>,
    /// Packets received this epoch and the last, for the descriptor.
    pub(super) traffic: Mutex<TrafficCounter>,
    /// Becomes true when the node stops: tasks that hold this state end.
    pub(super) stopping: tokio::sync::watch::Receiver<bool>,
}

impl Shared {
    /// The current Unix time in seconds, by the node's clock.
    pub(super) fn now(&self) -> u64 {
        self.clock.now_secs()
    }

    /// Verifies and keeps a descriptor from the network.
    pub(super) fn offer(&self, signed: SignedDescriptor) -> Result<Offer, Refused> {
        let mut directory = self.directory.write().unwrap_or_else(|e| e.into_inner());
        let offer = directory.offer(signed, self.now());
        if let Err(refused) = &offer {
            self.metrics.refuse_descriptor(refused.as_str());
        }
        self.metrics.directory_nodes.set(directory.len() as i64);
        offer
    }

    /// A signed roster from the configured file or another node: adopted
    /// if it verifies and is newer than the one in force (the directory
    /// then drops the descriptors it does not admit, and this node signs
    /// its descriptor again under the family the roster gives it).
    /// `Ok(false)`: it is the roster in force. Refusals are counted.
    pub(super) fn offer_roster(&self, bytes: &[u8]) -> Result<bool, RosterError> {
        if self.roster.is_held(bytes) {
            return Ok(false);
        }
        let adopted = self.roster.verify(bytes, self.now()).and_then(|roster| {
            let serial = roster.serial;
            let mut directory = self.directory.write().unwrap_or_else(|e| e.into_inner());
            let dropped = directory.adopt_roster(roster)?;
            self.roster.hold(serial, bytes);
            self.metrics.directory_nodes.set(directory.len() as i64);
            Ok((serial, dropped))
        });
        match adopted {
            Ok((serial, dropped)) => {
                self.metrics.roster_serial.set(serial as i64);
                tracing::info!(serial, dropped, "adopted a roster");
                self.refresh_addresses();
                self.republish.notify_one();
                Ok(true)
            }
            Err(e) => {
                self.metrics
                    .rosters_refused
                    .get_or_create(&vec![("reason", e.as_str())])
                    .inc();
                Err(e)
            }
        }
    }

    /// Whether a directory fetch from `peer` may be started because it
    /// claimed a newer roster: once per [`PROMPTED_FETCH_GAP_MS`] per peer.
    pub(super) fn may_prompt_fetch(&self, peer: PeerId) -> bool {
        let now = self.clock.now_ms();
        let mut prompted = self
            .prompted_fetches
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if prompted.len() >= MAX_PROMPTED_PEERS {
            prompted.retain(|_, at| now.saturating_sub(*at) < PROMPTED_FETCH_GAP_MS);
            if prompted.len() >= MAX_PROMPTED_PEERS {
                return false;
            }
        }
        match prompted.get(&peer) {
            Some(at) if now.saturating_sub(*at) < PROMPTED_FETCH_GAP_MS => false,
            _ => {
                prompted.insert(peer, now);
                true
            }
        }
    }

    /// Opens a stream of `protocol` to `peer` (dialling it if need be).
    pub(super) async fn open_stream(
        &self,
        peer: PeerId,
        protocol: libp2p::StreamProtocol,
    ) -> std::io::Result<libp2p::Stream> {
        let mut control = self
            .control
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        control
            .open_stream(peer, protocol)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
    }

    /// Updates the address book from the directory.
    pub(super) fn refresh_addresses(&self) {
        let directory = self.directory.read().unwrap_or_else(|e| e.into_inner());
        let mut known = std::collections::HashSet::new();
        for d in directory.descriptors() {
            let Some(peer) = peer_id_of(&d.node) else {
                continue;
            };
            if peer == self.local_peer {
                continue;
            }
            let addrs: Vec<Multiaddr> = d.addresses.iter().filter_map(|a| a.parse().ok()).collect();
            self.book.set(peer, addrs);
            known.insert(peer);
        }
        self.book.retain(|p| known.contains(p));
    }

    /// The exit role, while it runs.
    pub(super) fn exit(&self) -> Option<Arc<crate::exit::Exit>> {
        self.exit.get().and_then(std::sync::Weak::upgrade)
    }

    pub(super) fn drop_packet(&self, reason: DropReason) {
        self.metrics.drop_packet(reason.label());
    }

    /// The epoch `now_secs` falls in on this node's schedule.
    fn epoch_at(&self, now_secs: u64) -> u64 {
        now_secs / self.config.epochs.period_secs.max(1)
    }

    /// Counts a packet received from `peer` for the published traffic
    /// counts: from a node if `peer` is a node of the directory.
    pub(super) fn count_received(&self, peer: &PeerId) {
        let source = if self.book.contains(peer) {
            Source::Node
        } else {
            Source::Client
        };
        let epoch = self.epoch_at(self.now());
        self.traffic
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(epoch, source);
    }

    /// Signs a fresh descriptor of this node.
    pub(super) fn sign_descriptor(&self) -> Result<SignedDescriptor, NodeError> {
        let now = self.now();
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let addresses = if self.config.node.external_addresses.is_empty() {
            publishable(&self.listen_addrs)
        } else {
            self.config.node.external_addresses.clone()
        };
        let traffic = self
            .traffic
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_complete(self.epoch_at(now));
        let descriptor = Descriptor {
            node: self.identity.node_id(),
            addresses: addresses
                .iter()
                .take(leak_protocol::directory::MAX_ADDRESSES)
                .map(ToString::to_string)
                .collect(),
            roles: Roles {
                relay: self.config.node.roles.contains(&Role::Relay),
                exit: self.config.node.roles.contains(&Role::Exit) && self.exit_info.is_some(),
            },
            // The roster's word on the family, once it admits this node.
            family: self
                .directory
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .roster()
                .and_then(|r| r.get(&self.identity.node_id()))
                .map_or_else(|| self.config.node.family.clone(), |a| a.family.clone()),
            exit: self
                .exit_info
                .clone()
                .filter(|_| self.config.node.roles.contains(&Role::Exit))
                .map(|info| ExitInfo {
                    policy_version: if self.exit.get().is_some() || info.policy_version == 0 {
                        self.policy.version()
                    } else {
                        info.policy_version
                    },
                    // What the exit asks now, policy and load; the policy's
                    // until the exit runs.
                    stamp_bits: self
                        .exit()
                        .map_or(self.policy.current().limits().stamp_bits, |exit| {
                            exit.announce_stamp_bits()
                        }),
                    ..info
                }),
            epoch_period_secs: keys.schedule().period_secs(),
            mix_keys: keys.published_keys(now),
            software: format!("leak-node {}", env!("CARGO_PKG_VERSION")),
            // Strictly newer than the last one, so a change made within the
            // same second (a newer policy adopted) still replaces it.
            published_at: {
                use std::sync::atomic::Ordering;
                let last = self.last_published_at.load(Ordering::Relaxed);
                let at = now.max(last.saturating_add(1));
                self.last_published_at.store(at, Ordering::Relaxed);
                at
            },
            traffic,
        };
        descriptor
            .sign(self.identity.seed())
            .map_err(|e| NodeError::Descriptor(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_ids_match_decoding_and_remember_only_known_peers() {
        let ids = PeerIds::default();
        let known = Identity::generate();
        let stranger = Identity::generate();
        let yes = |_: &PeerId| true;
        let no = |_: &PeerId| false;
        for _ in 0..2 {
            assert_eq!(
                ids.resolve(&known.node_id(), yes),
                Some(known.peer_id()),
                "decoded, then remembered"
            );
        }
        assert_eq!(
            ids.resolve(&stranger.node_id(), no),
            Some(stranger.peer_id())
        );
        let remembered = ids.0.lock().unwrap().clone();
        assert_eq!(remembered.len(), 1, "a peer not known is not remembered");
        assert_eq!(remembered.get(&known.node_id()), Some(&known.peer_id()));
        // Not a point on the curve: no peer id, nothing remembered.
        let mut bad = None;
        for b in 0u8..=255 {
            let node = NodeId([b; 32]);
            if peer_id_of(&node).is_none() {
                bad = Some(node);
                break;
            }
        }
        let bad = bad.expect("some constant is not a valid key");
        assert_eq!(ids.resolve(&bad, yes), None);
        assert_eq!(ids.0.lock().unwrap().len(), 1);
    }

    #[test]
    fn peer_ids_stay_bounded() {
        let ids = PeerIds::default();
        for _ in 0..PeerIds::MAX + 3 {
            let id = Identity::generate();
            assert_eq!(ids.resolve(&id.node_id(), |_| true), Some(id.peer_id()));
        }
        let len = ids.0.lock().unwrap().len();
        assert!((1..=PeerIds::MAX).contains(&len), "{len} remembered");
    }
}
