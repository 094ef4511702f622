//! A running node: the tasks that tie the protocol, the network and the
//! database together.
//!
//! ```text
//!  peers ──/leak/packet/1──▶ readers ──▶ FairQueue (per-peer + global bound)
//!                                           │  round robin
//!                                           ▼
//!                              worker threads: leak-protocol processing,
//!                              replay tags recorded durably (one redb
//!                              transaction per batch) before anything leaves
//!                                           │
//!                                           ▼
//!                              timer queue (one task, bounded heap): holds
//!                              each packet for its mixing delay
//!                                           │
//!                     ┌─────────────────────┼──────────────────────┐
//!                     ▼                     ▼                      ▼
//!             link writers (one      mailbox (redb)         exit sink (the
//!             stream per next hop,                          exit role)
//!             bounded queue each)
//! ```
//!
//! Nothing here logs or stores a peer's address, a recipient or a message:
//! addresses of next hops come from signed descriptors, and peers appear in
//! logs only through [`Sensitive`](crate::safelog::Sensitive).

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use futures::StreamExt as _;
use leak_protocol::{
    Delay, NodeId, Packet, Processed,
    directory::{Descriptor, ExitInfo, Roles, SignedDescriptor},
    key_hint, process_packet,
    sphinx::{FinalPayload, MailboxId},
};
use libp2p::{Multiaddr, PeerId, gossipsub, swarm::SwarmEvent};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::{
    config::{Config, Role},
    directory::{Directory, Offer, Refused},
    epoch::{EpochSchedule, KeyRing},
    exit::ExitDelivery,
    held::{HeldQueue, Hold},
    identity::{Identity, peer_id_of},
    metrics::Metrics,
    net::{
        self, AddressBook, Behaviour, BehaviourEvent, DESCRIPTOR_TOPIC, OPT_OUT_TOPIC, POLICY_TOPIC,
    },
    policy::{Offered, PolicyState},
    queue::{FairQueue, Pushed},
    safelog::Sensitive,
    store::{Deposit, MailboxLimits, Store},
    wire,
};

/// What a node is started with besides its configuration.
#[derive(Default)]
pub struct StartOptions {
    /// Where packets that end here as at an exit go, instead of the exit
    /// role's own delivery (for tests). Without one, and without the exit
    /// role, such packets are dropped (`not_an_exit`).
    pub exit_sink: Option<mpsc::Sender<ExitDelivery>>,
    /// Exit details to publish, instead of those of the exit role.
    pub exit_info: Option<ExitInfo>,
}

/// Leaks waiting for the exit's ingest task.
const EXIT_BACKLOG: usize = 1024;

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

pub use crate::clock::{unix_now, unix_now_ms};

/// State shared by the node's tasks.
struct Shared {
    config: Config,
    identity: Identity,
    local_peer: PeerId,
    store: Arc<Store>,
    keys: RwLock<KeyRing>,
    directory: RwLock<Directory>,
    book: AddressBook,
    metrics: Arc<Metrics>,
    inbound: FairQueue<PeerId, Packet>,
    links: Mutex<HashMap<PeerId, mpsc::Sender<Packet>>>,
    control: Mutex<libp2p_stream::Control>,
    exit_sink: Option<mpsc::Sender<ExitDelivery>>,
    exit_info: Option<ExitInfo>,
    /// The exit role, if running (weak: the exit holds the shared state).
    exit: std::sync::OnceLock<std::sync::Weak<crate::exit::Exit>>,
    policy: Arc<PolicyState>,
    /// Wakes maintenance to sign and publish a new descriptor at once.
    republish: tokio::sync::Notify,
    /// The `published_at` of the last descriptor signed.
    last_published_at: std::sync::atomic::AtomicU64,
    own_descriptor: RwLock<Option<SignedDescriptor>>,
    listen_addrs: Vec<Multiaddr>,
    inbound_streams: Mutex<HashMap<PeerId, usize>>,
}

/// Most concurrent inbound packet streams per peer.
const MAX_PACKET_STREAMS_PER_PEER: usize = 2;
/// Most concurrent directory and mailbox requests being served.
const MAX_CONCURRENT_REQUESTS: usize = 32;
/// How long a request may take before it is abandoned.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Inbound streams of one protocol that may wait for the node to take them.
const INBOUND_BACKLOG: usize = 64;
/// Packets a worker takes from the queue at once (one database transaction).
const WORKER_BATCH: usize = 128;

enum Command {
    /// Publish on a gossip topic.
    Publish(&'static str, Vec<u8>),
    Dial(Multiaddr),
}

/// A running node. Dropping it without [`RunningNode::shutdown`] aborts it.
pub struct RunningNode {
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    shutdown: watch::Sender<bool>,
    /// The core tasks, by name; `None` once one has been seen to end.
    tasks: Vec<(&'static str, Option<tokio::task::JoinHandle<()>>)>,
    workers: Vec<std::thread::JoinHandle<()>>,
    metrics_addr: Option<SocketAddr>,
    exit: Option<Arc<crate::exit::Exit>>,
    exit_http_addr: Option<SocketAddr>,
}

impl Shared {
    fn now(&self) -> u64 {
        unix_now()
    }

    /// Verifies and keeps a descriptor from the network.
    fn offer(&self, signed: SignedDescriptor) -> Result<Offer, Refused> {
        let mut directory = self.directory.write().unwrap_or_else(|e| e.into_inner());
        let offer = directory.offer(signed, self.now());
        if let Err(refused) = &offer {
            self.metrics.refuse_descriptor(refused.as_str());
        }
        self.metrics.directory_nodes.set(directory.len() as i64);
        offer
    }

    /// Updates the address book from the directory.
    fn refresh_addresses(&self) {
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
    fn exit(&self) -> Option<Arc<crate::exit::Exit>> {
        self.exit.get().and_then(std::sync::Weak::upgrade)
    }

    fn drop_packet(&self, reason: &'static str) {
        self.metrics.drop_packet(reason);
    }

    /// Signs a fresh descriptor of this node.
    fn sign_descriptor(&self) -> anyhow::Result<SignedDescriptor> {
        let now = self.now();
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let addresses = if self.config.node.external_addresses.is_empty() {
            publishable(&self.listen_addrs)
        } else {
            self.config.node.external_addresses.clone()
        };
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
            family: self.config.node.family.clone(),
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
        };
        descriptor
            .sign(self.identity.seed())
            .context("signing this node's descriptor")
    }
}

/// Starts a node: opens its database, rotates its keys, listens, and spawns
/// every task. Returns once the node is listening.
pub async fn start(
    config: Config,
    identity: Identity,
    options: StartOptions,
) -> anyhow::Result<RunningNode> {
    config.validate()?;
    std::fs::create_dir_all(&config.node.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.node.data_dir.display()
        )
    })?;
    let store = Arc::new(Store::open(&config.database_path())?);
    let schedule = EpochSchedule::new(config.epochs.period_secs);
    let mut keys = KeyRing::load(&store, schedule, config.epochs.keys_ahead)?;
    keys.rotate(&store, unix_now(), &mut rand::rng())?;

    let metrics = Arc::new(Metrics::new());
    let book = AddressBook::default();
    let (inbound, mut incoming) = net::InboundStreams::new(
        &[
            wire::PACKET_PROTOCOL,
            wire::DIRECTORY_PROTOCOL,
            wire::MAILBOX_PROTOCOL,
        ],
        INBOUND_BACKLOG,
        metrics.inbound_streams_refused.clone(),
    );
    let mut take_incoming = |protocol| {
        incoming
            .remove(&protocol)
            .with_context(|| format!("no inbound queue for {protocol}"))
    };
    let packets = take_incoming(wire::PACKET_PROTOCOL)?;
    let directory_streams = take_incoming(wire::DIRECTORY_PROTOCOL)?;
    let mailbox_streams = take_incoming(wire::MAILBOX_PROTOCOL)?;
    let mut swarm = net::build_swarm(identity.keypair(), &config, book.clone(), inbound)?;
    let topic = gossipsub::IdentTopic::new(DESCRIPTOR_TOPIC);
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&topic)
        .map_err(|e| anyhow::anyhow!("subscribing to descriptors: {e}"))?;
    for name in [POLICY_TOPIC, OPT_OUT_TOPIC] {
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&gossipsub::IdentTopic::new(name))
            .map_err(|e| anyhow::anyhow!("subscribing to {name}: {e}"))?;
    }
    let mut listeners = Vec::new();
    for addr in &config.node.listen {
        // `TransportError::Other` displays as nothing: show the I/O error itself.
        let id = swarm.listen_on(addr.clone()).map_err(|e| match e {
            libp2p::TransportError::Other(io) => {
                anyhow::anyhow!("cannot listen on {addr}: {io} (is the port taken?)")
            }
            other => anyhow::anyhow!("cannot listen on {addr}: {other}"),
        })?;
        listeners.push(id);
    }
    // Learn the bound addresses (port 0 becomes a real port).
    let mut listen_addrs = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    // A listener on 0.0.0.0 reports one address per interface: once every
    // listener has reported, keep collecting briefly.
    let mut started = std::collections::HashSet::new();
    let mut grace: Option<tokio::time::Instant> = None;
    loop {
        if started.len() == listeners.len() && grace.is_none() {
            grace = Some(tokio::time::Instant::now() + Duration::from_millis(300));
        }
        let wait_until = grace.unwrap_or(deadline).min(deadline);
        let event = match tokio::time::timeout_at(wait_until, swarm.select_next_some()).await {
            Ok(event) => event,
            Err(_) if grace.is_some() => break,
            Err(_) => anyhow::bail!("timed out waiting for the listeners to start"),
        };
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                started.insert(listener_id);
                listen_addrs.push(address);
            }
            SwarmEvent::ListenerError { error, .. } => anyhow::bail!("listener failed: {error}"),
            SwarmEvent::ListenerClosed {
                reason: Err(error), ..
            } => {
                anyhow::bail!("cannot listen: {error} (is the port taken?)")
            }
            _ => {}
        }
    }

    let directory = Directory::new(
        config.directory.max_age_secs,
        config.directory.max_clock_skew_secs,
        config.directory.max_nodes,
    );
    let control = swarm.behaviour().stream.new_control();
    let policy = Arc::new(PolicyState::load(&config.policy, &config.node.data_dir)?);
    let mut options = options;
    let mut exit_incoming = None;
    if config.is_exit() && options.exit_sink.is_none() {
        let (tx, rx) = mpsc::channel(EXIT_BACKLOG);
        options.exit_sink = Some(tx);
        exit_incoming = Some(rx);
        if options.exit_info.is_none() {
            options.exit_info = Some(ExitInfo {
                domain: config.exit.domain.trim().to_owned(),
                // Set from the policy in force whenever it is signed.
                policy_version: 0,
            });
        }
    }
    let shared = Arc::new(Shared {
        local_peer: identity.peer_id(),
        identity,
        store,
        keys: RwLock::new(keys),
        directory: RwLock::new(directory),
        book,
        metrics: metrics.clone(),
        inbound: FairQueue::new(config.limits.peer_queue, config.limits.global_queue),
        links: Mutex::new(HashMap::new()),
        control: Mutex::new(control.clone()),
        exit_sink: options.exit_sink,
        exit_info: options.exit_info,
        exit: std::sync::OnceLock::new(),
        policy: policy.clone(),
        republish: tokio::sync::Notify::new(),
        last_published_at: std::sync::atomic::AtomicU64::new(0),
        own_descriptor: RwLock::new(None),
        listen_addrs,
        inbound_streams: Mutex::new(HashMap::new()),
        config,
    });
    let own = shared.sign_descriptor()?;
    shared
        .offer(own.clone())
        .context("this node's own descriptor does not verify")?;
    *shared
        .own_descriptor
        .write()
        .unwrap_or_else(|e| e.into_inner()) = Some(own);

    let (shutdown, shutdown_rx) = watch::channel(false);
    let (commands_tx, commands_rx) = mpsc::channel(64);
    let (timer_tx, timer_rx) = mpsc::channel(1024);
    let mut tasks: Vec<(&'static str, tokio::task::JoinHandle<()>)> = Vec::new();

    for addr in &shared.config.node.bootstrap {
        let _ = commands_tx.try_send(Command::Dial(addr.clone()));
    }
    let commands = commands_tx.clone();

    tasks.push((
        "swarm",
        tokio::spawn(run_swarm(
            swarm,
            topic,
            commands_rx,
            shared.clone(),
            shutdown_rx.clone(),
        )),
    ));
    tasks.push((
        "packet reader",
        tokio::spawn(accept_packets(packets, shared.clone(), shutdown_rx.clone())),
    ));
    tasks.push((
        "directory server",
        tokio::spawn(serve_directories(
            directory_streams,
            shared.clone(),
            shutdown_rx.clone(),
        )),
    ));
    tasks.push((
        "mailbox server",
        tokio::spawn(serve_mailboxes(
            mailbox_streams,
            shared.clone(),
            shutdown_rx.clone(),
        )),
    ));
    tasks.push((
        "timer",
        tokio::spawn(run_timer(timer_rx, shared.clone(), shutdown_rx.clone())),
    ));
    tasks.push((
        "maintenance",
        tokio::spawn(maintain(shared.clone(), commands_tx, shutdown_rx.clone())),
    ));
    tasks.push((
        "directory pull",
        tokio::spawn(pull_directories(shared.clone(), shutdown_rx.clone())),
    ));

    let workers = (0..std::thread::available_parallelism().map_or(2, |n| n.get()))
        .map(|i| {
            let shared = shared.clone();
            let timer_tx = timer_tx.clone();
            std::thread::Builder::new()
                .name(format!("leak-worker-{i}"))
                .spawn(move || run_worker(&shared, &timer_tx))
                .context("starting a worker thread")
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    drop(timer_tx);

    let mut exit = None;
    let mut exit_http_addr = None;
    if let Some(incoming) = exit_incoming {
        let send_shared = shared.clone();
        let send: crate::exit::SendPacket =
            Arc::new(
                move |node: NodeId, packet: Packet| match peer_id_of(&node) {
                    Some(peer) => send_to(&send_shared, peer, packet),
                    None => send_shared.drop_packet("bad_next_hop"),
                },
            );
        let publish_commands = commands.clone();
        let publish: crate::exit::PublishOptOuts = Arc::new(move |batch| {
            let _ = publish_commands.try_send(Command::Publish(OPT_OUT_TOPIC, batch));
        });
        let started = crate::exit::start(
            crate::exit::Parts {
                config: shared.config.clone(),
                seed: *shared.identity.seed(),
                store: shared.store.clone(),
                metrics: metrics.clone(),
                policy: shared.policy.clone(),
                send_packet: send,
                publish_opt_outs: publish,
                clock: Arc::new(crate::clock::SystemClock),
            },
            incoming,
            shutdown_rx.clone(),
        )
        .await?;
        let _ = shared.exit.set(Arc::downgrade(&started.exit));
        shared.republish.notify_one();
        tasks.extend(started.tasks);
        exit_http_addr = Some(started.http_addr);
        exit = Some(started.exit);
    }

    let metrics_addr = match shared.config.metrics_addr()? {
        Some(addr) => {
            let (bound, task) = crate::metrics::serve(addr, metrics).await?;
            tasks.push(("metrics endpoint", task));
            Some(bound)
        }
        None => None,
    };

    tracing::info!(
        peer_id = %shared.local_peer,
        listeners = shared.listen_addrs.len(),
        "leak-node started"
    );
    Ok(RunningNode {
        shared,
        commands,
        shutdown,
        tasks: tasks.into_iter().map(|(n, t)| (n, Some(t))).collect(),
        workers,
        metrics_addr,
        exit,
        exit_http_addr,
    })
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

    /// Publishes arbitrary bytes on the descriptor topic, as a hostile or
    /// broken node might (for tests and tools; honest nodes publish their own
    /// descriptor by themselves).
    pub async fn publish_descriptor_bytes(&self, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.commands
            .send(Command::Publish(DESCRIPTOR_TOPIC, bytes))
            .await
            .map_err(|_| anyhow::anyhow!("the node is shutting down"))
    }

    /// Publishes arbitrary bytes on the policy topic (for tests and tools:
    /// nodes pass on the newest valid policy by themselves).
    pub async fn publish_policy_bytes(&self, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.commands
            .send(Command::Publish(POLICY_TOPIC, bytes))
            .await
            .map_err(|_| anyhow::anyhow!("the node is shutting down"))
    }

    /// Dials an address (a bootstrap node, say).
    pub async fn dial(&self, addr: Multiaddr) -> anyhow::Result<()> {
        self.commands
            .send(Command::Dial(addr))
            .await
            .map_err(|_| anyhow::anyhow!("the node is shutting down"))
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
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
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
        .context("joining the worker threads")?;
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

async fn run_swarm(
    mut swarm: libp2p::Swarm<Behaviour>,
    topic: gossipsub::IdentTopic,
    mut commands: mpsc::Receiver<Command>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    use libp2p::metrics::Recorder as _;
    let mut last_welcome: HashMap<gossipsub::TopicHash, Option<Instant>> = HashMap::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            Some(command) = commands.recv() => match command {
                Command::Publish(name, bytes) => {
                    let topic = gossipsub::IdentTopic::new(name);
                    if let Err(e) = swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
                        tracing::debug!(error = %e, topic = name, "not published yet");
                    }
                }
                Command::Dial(addr) => {
                    if let Err(e) = swarm.dial(addr) {
                        tracing::warn!(error = %Sensitive::new(e), "cannot dial a bootstrap node");
                    }
                }
            },
            event = swarm.select_next_some() => {
                shared.metrics.libp2p.record(&event);
                match event {
                    SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(event)) => {
                        shared.metrics.libp2p.record(&event);
                        match event {
                            gossipsub::Event::Message { propagation_source, message_id, message }
                                if message.topic != topic.hash() =>
                            {
                                let acceptance = offer_gossip(&shared, &message);
                                swarm.behaviour_mut().gossipsub.report_message_validation_result(
                                    &message_id,
                                    &propagation_source,
                                    acceptance,
                                );
                            }
                            gossipsub::Event::Message { propagation_source, message_id, message } => {
                                let acceptance = match SignedDescriptor::from_bytes(&message.data)
                                    .map_err(|e| {
                                        let refused = Refused::from(e);
                                        shared.metrics.refuse_descriptor(refused.as_str());
                                        refused
                                    })
                                    .and_then(|signed| shared.offer(signed))
                                {
                                    Ok(_) => {
                                        shared.refresh_addresses();
                                        gossipsub::MessageAcceptance::Accept
                                    }
                                    Err(Refused::Full) => gossipsub::MessageAcceptance::Ignore,
                                    Err(Refused::Invalid(e)) => {
                                        tracing::debug!(reason = %e, "refused a descriptor");
                                        gossipsub::MessageAcceptance::Reject
                                    }
                                };
                                swarm.behaviour_mut().gossipsub.report_message_validation_result(
                                    &message_id,
                                    &propagation_source,
                                    acceptance,
                                );
                            }
                            // A new subscriber: make sure it hears of us
                            // (our descriptor, the policy in force, this
                            // exit's opt-outs) soon, at most once a second
                            // per topic however many join.
                            gossipsub::Event::Subscribed { topic: subscribed, .. } => {
                                let last = last_welcome.entry(subscribed.clone()).or_insert(None);
                                if last.is_some_and(|t: Instant| t.elapsed() < Duration::from_secs(1)) {
                                    continue;
                                }
                                let mut messages = Vec::new();
                                if subscribed == topic.hash() {
                                    let own = shared.own_descriptor.read().ok().and_then(|d| d.clone());
                                    messages.extend(own.map(|d| d.to_bytes()));
                                } else if subscribed == gossipsub::IdentTopic::new(POLICY_TOPIC).hash() {
                                    messages.extend(shared.policy.signed());
                                } else if subscribed == gossipsub::IdentTopic::new(OPT_OUT_TOPIC).hash()
                                    && let Some(exit) = shared.exit()
                                {
                                    messages.extend(exit.own_opt_outs().unwrap_or_default());
                                }
                                for bytes in messages {
                                    let _ = swarm.behaviour_mut().gossipsub.publish(subscribed.clone(), bytes);
                                }
                                *last = Some(Instant::now());
                            }
                            _ => {}
                        }
                    }
                    SwarmEvent::Behaviour(BehaviourEvent::Identify(event)) => {
                        shared.metrics.libp2p.record(&event);
                    }
                    SwarmEvent::Behaviour(BehaviourEvent::Ping(event)) => {
                        shared.metrics.libp2p.record(&event);
                    }
                    SwarmEvent::ConnectionEstablished { peer_id, endpoint, num_established, .. } => {
                        shared.metrics.peers.set(swarm.connected_peers().count() as i64);
                        if endpoint.is_dialer() && num_established.get() == 1 {
                            tokio::spawn(fetch_directory(peer_id, shared.clone()));
                        }
                    }
                    SwarmEvent::ConnectionClosed { .. } => {
                        shared.metrics.peers.set(swarm.connected_peers().count() as i64);
                    }
                    SwarmEvent::OutgoingConnectionError { error, .. } => {
                        tracing::debug!(error = %Sensitive::new(error), "an outgoing connection failed");
                    }
                    _ => {}
                }
            }
        }
    }
}

/// A policy or opt-out message from the gossip mesh: checked, kept, and
/// passed on only if valid.
fn offer_gossip(
    shared: &Arc<Shared>,
    message: &gossipsub::Message,
) -> gossipsub::MessageAcceptance {
    use gossipsub::MessageAcceptance::{Accept, Ignore, Reject};
    if message.topic == gossipsub::IdentTopic::new(POLICY_TOPIC).hash() {
        return match shared.policy.offer(&message.data) {
            Offered::Adopted(_) => {
                shared.republish.notify_one();
                Accept
            }
            Offered::NotNewer => Accept,
            Offered::Invalid(e) => {
                tracing::debug!(error = %e, "refused a policy");
                Reject
            }
        };
    }
    if message.topic == gossipsub::IdentTopic::new(OPT_OUT_TOPIC).hash() {
        // Only from exits in the directory, signed by them.
        let listed = |node: &NodeId| {
            let directory = shared.directory.read().unwrap_or_else(|e| e.into_inner());
            directory
                .descriptors()
                .any(|d| d.node == *node && d.roles.exit)
        };
        return crate::exit::optout::offer(&message.data, listed, shared.exit().as_deref()).into();
    }
    Ignore
}

/// Fetches a node's directory (after connecting to it, and from time to time
/// from a node at random: [`pull_directories`]) and keeps what verifies.
async fn fetch_directory(peer: PeerId, shared: Arc<Shared>) {
    let mut control = shared
        .control
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let result = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut stream = control
            .open_stream(peer, wire::DIRECTORY_PROTOCOL)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        wire::request_directory(&mut stream).await
    })
    .await;
    match result {
        Ok(Ok(descriptors)) => {
            let mut accepted = 0;
            for signed in descriptors {
                if matches!(shared.offer(signed), Ok(Offer::Accepted)) {
                    accepted += 1;
                }
            }
            shared.refresh_addresses();
            tracing::debug!(accepted, "fetched a directory");
        }
        Ok(Err(e)) => tracing::debug!(error = %Sensitive::new(e), "directory fetch failed"),
        Err(_) => tracing::debug!("directory fetch timed out"),
    }
}

async fn accept_packets(
    mut incoming: net::Incoming,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (peer, stream) = tokio::select! {
            _ = shutdown.changed() => return,
            next = incoming.recv() => match next {
                Some(next) => next,
                None => return,
            },
        };
        {
            let mut streams = shared
                .inbound_streams
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let count = streams.entry(peer).or_insert(0);
            if *count >= MAX_PACKET_STREAMS_PER_PEER {
                shared.drop_packet("too_many_streams");
                continue;
            }
            *count += 1;
        }
        tokio::spawn(read_packets(peer, stream, shared.clone()));
    }
}

async fn read_packets(peer: PeerId, mut stream: libp2p::Stream, shared: Arc<Shared>) {
    loop {
        match wire::read_packet(&mut stream).await {
            Ok(Some(packet)) => {
                shared.metrics.packets_received.inc();
                match shared.inbound.push(peer, packet) {
                    Pushed::Queued => {}
                    Pushed::QueuedEvictedOther => shared.drop_packet("queue_full"),
                    Pushed::DroppedPeerFull => shared.drop_packet("peer_queue_full"),
                    Pushed::Closed => break,
                }
                shared.metrics.queue_depth.set(shared.inbound.len() as i64);
            }
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %Sensitive::new(e), "a packet stream ended");
                break;
            }
        }
    }
    let mut streams = shared
        .inbound_streams
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(count) = streams.get_mut(&peer) {
        *count -= 1;
        if *count == 0 {
            streams.remove(&peer);
        }
    }
}

/// Serves each request stream of one protocol with `handle`, at most
/// [`MAX_CONCURRENT_REQUESTS`] at once (streams beyond that are dropped),
/// each within [`REQUEST_TIMEOUT`].
async fn serve_requests<F, Fut>(
    mut incoming: net::Incoming,
    mut shutdown: watch::Receiver<bool>,
    what: &'static str,
    handle: F,
) where
    F: Fn(libp2p::Stream) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_REQUESTS));
    loop {
        let (_, stream) = tokio::select! {
            _ = shutdown.changed() => return,
            next = incoming.recv() => match next { Some(n) => n, None => return },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            continue;
        };
        let request = handle(stream);
        tokio::spawn(async move {
            let _permit = permit;
            if let Ok(Err(e)) = tokio::time::timeout(REQUEST_TIMEOUT, request).await {
                tracing::debug!(error = %Sensitive::new(e), "a {what} request failed");
            }
        });
    }
}

async fn serve_directories(
    incoming: net::Incoming,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) {
    serve_requests(incoming, shutdown, "directory", move |mut stream| {
        let descriptors = shared
            .directory
            .read()
            .map(|d| d.signed())
            .unwrap_or_default();
        async move { wire::serve_directory(&mut stream, &descriptors).await }
    })
    .await;
}

async fn serve_mailboxes(
    incoming: net::Incoming,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) {
    serve_requests(incoming, shutdown, "mailbox", move |mut stream| {
        let shared = shared.clone();
        async move {
            let capability = wire::read_mailbox_request(&mut stream).await?;
            let mailbox = MailboxId::from_capability(&capability).0;
            let now = unix_now_ms();
            let lookup = shared.clone();
            let held =
                tokio::task::spawn_blocking(move || lookup.store.mailbox_peek(&mailbox, now))
                    .await
                    .map_err(std::io::Error::other)?
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
            let (seqs, replies): (Vec<u64>, Vec<Vec<u8>>) = held
                .into_iter()
                .take(usize::from(wire::MAX_MAILBOX_REPLIES))
                .unzip();
            if wire::answer_mailbox(&mut stream, &replies).await? {
                if !seqs.is_empty() {
                    let store = shared.clone();
                    let held = tokio::task::spawn_blocking(move || {
                        store.store.mailbox_remove(&mailbox, &seqs)?;
                        store.store.mailbox_len()
                    })
                    .await
                    .map_err(std::io::Error::other)?
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                    shared.metrics.mailbox_replies.set(held as i64);
                }
                wire::confirm_mailbox_deletion(&mut stream).await?;
            }
            Ok(())
        }
    })
    .await;
}

/// What the timer holds.
enum HeldAction {
    Forward { next_hop: PeerId, packet: Packet },
}

/// One worker thread: take batches fairly, process, record replay tags in
/// one transaction, hand survivors to the timer.
fn run_worker(shared: &Arc<Shared>, timer: &mpsc::Sender<TimerItem>) {
    loop {
        let batch = shared
            .inbound
            .pop_batch(WORKER_BATCH, Duration::from_millis(250));
        if batch.is_empty() {
            if shared.inbound.is_closed() {
                return;
            }
            continue;
        }
        shared.metrics.queue_depth.set(shared.inbound.len() as i64);
        let now = unix_now();
        let mut survivors = Vec::with_capacity(batch.len());
        {
            let keys = shared.keys.read().unwrap_or_else(|e| e.into_inner());
            for (source, packet) in batch {
                let started = Instant::now();
                let Some((epoch, secret)) =
                    key_hint(packet.as_bytes()).and_then(|h| keys.secret_for_hint(h, now))
                else {
                    shared.drop_packet("unknown_epoch");
                    continue;
                };
                let processed = process_packet(packet.as_bytes(), secret);
                shared
                    .metrics
                    .processing_seconds
                    .observe(started.elapsed().as_secs_f64());
                match processed {
                    Processed::Drop(reason) => shared.drop_packet(reason.as_str()),
                    other => survivors.push((source, epoch, other)),
                }
            }
        }
        if survivors.is_empty() {
            continue;
        }
        let tags: Vec<(u64, [u8; 32])> = survivors
            .iter()
            .filter_map(|(_, epoch, p)| p.replay_tag().map(|t| (*epoch, t.0)))
            .collect();
        let fresh = match shared.store.record_replay_tags(&tags) {
            Ok(fresh) => fresh,
            Err(e) => {
                // Never pass a packet on whose tag is not durably recorded.
                tracing::error!(error = %e, "cannot record replay tags; dropping the batch");
                for _ in &survivors {
                    shared.drop_packet("storage_error");
                }
                continue;
            }
        };
        let mut deposits = Vec::new();
        for ((source, _, processed), fresh) in survivors.into_iter().zip(fresh) {
            if !fresh {
                shared.drop_packet("replay");
                continue;
            }
            if let Some(deposit) = dispatch(shared, timer, source, processed) {
                deposits.push(deposit);
            }
        }
        deposit_all(shared, &deposits);
    }
}

/// A reply for a mailbox of this node, stored with the rest of its batch.
struct PendingDeposit {
    mailbox: MailboxId,
    reply: Vec<u8>,
    delay: Delay,
}

/// A packet for the timer: when, from whom, what to do.
type TimerItem = (Instant, PeerId, HeldAction);

/// Sends a processed packet on its way; a reply for one of this node's
/// mailboxes is handed back, to be stored with the rest of the batch.
fn dispatch(
    shared: &Arc<Shared>,
    timer: &mpsc::Sender<TimerItem>,
    source: PeerId,
    processed: Processed,
) -> Option<PendingDeposit> {
    let max_delay = shared.config.limits.max_delay_ms;
    let hold = |delay: Delay, action: HeldAction| {
        if delay.as_millis() > max_delay {
            shared.drop_packet("delay_too_long");
            return;
        }
        let due = Instant::now() + Duration::from_millis(u64::from(delay.as_millis()));
        if timer.blocking_send((due, source, action)).is_err() {
            shared.drop_packet("shutdown");
        }
    };
    match processed {
        Processed::Forward(forward) => match peer_id_of(&forward.next_hop) {
            // Only nodes of the directory (or this one): a packet cannot make
            // the node dial arbitrary keys and hold queues for them.
            Some(next_hop)
                if next_hop != shared.local_peer && shared.book.get(&next_hop).is_empty() =>
            {
                shared.drop_packet("unknown_next_hop");
            }
            Some(next_hop) => hold(
                forward.delay,
                HeldAction::Forward {
                    next_hop,
                    packet: forward.packet,
                },
            ),
            None => shared.drop_packet("bad_next_hop"),
        },
        Processed::Final(done) => match done.payload {
            // Stored at once (so a restart loses no receipt), shown to its
            // client only once the delay has passed, as if held until then.
            FinalPayload::Mailbox { mailbox, reply } => {
                if done.delay.as_millis() > max_delay {
                    shared.drop_packet("delay_too_long");
                    return None;
                }
                return Some(PendingDeposit {
                    mailbox,
                    reply: reply.as_slice().to_vec(),
                    delay: done.delay,
                });
            }
            FinalPayload::Exit { message } => match &shared.exit_sink {
                Some(sink) => {
                    let delivery = ExitDelivery {
                        message,
                        delay: done.delay,
                    };
                    match sink.try_send(delivery) {
                        Ok(()) => shared.metrics.final_packet("exit"),
                        Err(_) => shared.drop_packet("exit_backlog"),
                    }
                }
                None => shared.drop_packet("not_an_exit"),
            },
        },
        Processed::Drop(reason) => shared.drop_packet(reason.as_str()),
    }
    None
}

async fn run_timer(
    mut incoming: mpsc::Receiver<TimerItem>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut held: HeldQueue<PeerId, tokio::time::Instant, HeldAction> =
        HeldQueue::new(shared.config.limits.held_packets);
    loop {
        let next_due = held.next_due();
        tokio::select! {
            _ = shutdown.changed() => break,
            item = incoming.recv() => match item {
                Some((due, source, action)) => match held.push(source, due.into(), action) {
                    Hold::Held => {}
                    Hold::HeldEvictedOther | Hold::DroppedFull => shared.drop_packet("held_full"),
                },
                None => break,
            },
            () = async {
                match next_due {
                    Some(due) => tokio::time::sleep_until(due).await,
                    None => std::future::pending().await,
                }
            } => {
                let now = tokio::time::Instant::now();
                while let Some(action) = held.pop_due(now) {
                    release(&shared, action);
                }
            }
        }
        shared.metrics.held_packets.set(held.len() as i64);
    }
    for _ in 0..held.clear() {
        shared.drop_packet("shutdown");
    }
    shared.metrics.held_packets.set(0);
}

fn release(shared: &Arc<Shared>, action: HeldAction) {
    match action {
        HeldAction::Forward { next_hop, packet } => send_to(shared, next_hop, packet),
    }
}

/// Stores replies in their mailboxes (one durable transaction), each
/// visible once its delay has passed.
fn deposit_all(shared: &Arc<Shared>, pending: &[PendingDeposit]) {
    if pending.is_empty() {
        return;
    }
    let limits = MailboxLimits {
        per_mailbox: shared.config.mailbox.max_per_mailbox,
        total: shared.config.mailbox.max_total,
    };
    let now = unix_now_ms();
    let deposits: Vec<Deposit<'_>> = pending
        .iter()
        .map(|p| {
            let visible = now + u64::from(p.delay.as_millis());
            Deposit {
                mailbox: p.mailbox.0,
                reply: &p.reply,
                visible_at_ms: visible,
                expires_at_ms: visible + shared.config.mailbox.ttl_secs * 1000,
            }
        })
        .collect();
    match shared.store.mailbox_put_all(&deposits, limits) {
        Ok(results) => {
            for result in results {
                match result {
                    Ok(()) => {
                        shared.metrics.final_packet("mailbox");
                        shared.metrics.mailbox_replies.inc();
                    }
                    Err(_) => shared.drop_packet("mailbox_full"),
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot store replies");
            for _ in &deposits {
                shared.drop_packet("storage_error");
            }
        }
    }
}

/// Queues `packet` on the link to `peer`, starting a writer if needed.
fn send_to(shared: &Arc<Shared>, peer: PeerId, packet: Packet) {
    if peer == shared.local_peer {
        // A path may pass through this node twice; skip the network.
        match shared.inbound.push(peer, packet) {
            Pushed::Queued | Pushed::QueuedEvictedOther => {
                shared.metrics.packets_forwarded.inc();
            }
            _ => shared.drop_packet("queue_full"),
        }
        return;
    }
    let mut links = shared.links.lock().unwrap_or_else(|e| e.into_inner());
    let sender = links.entry(peer).or_insert_with(|| {
        let (tx, rx) = mpsc::channel(shared.config.limits.link_queue);
        tokio::spawn(write_link(peer, rx, shared.clone()));
        tx
    });
    match sender.try_send(packet) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => shared.drop_packet("link_congested"),
        Err(mpsc::error::TrySendError::Closed(packet)) => {
            // The writer ended (link failed); start a fresh one.
            let (tx, rx) = mpsc::channel(shared.config.limits.link_queue);
            let _ = tx.try_send(packet);
            tokio::spawn(write_link(peer, rx, shared.clone()));
            links.insert(peer, tx);
        }
    }
}

async fn open_packet_stream(shared: &Arc<Shared>, peer: PeerId) -> Option<libp2p::Stream> {
    let mut control = shared
        .control
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    match tokio::time::timeout(
        REQUEST_TIMEOUT,
        control.open_stream(peer, wire::PACKET_PROTOCOL),
    )
    .await
    {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(error = %Sensitive::new(e), "cannot open a link to the next hop");
            None
        }
        Err(_) => None,
    }
}

/// Writes packets to one next hop over a long-lived stream, reopening it once
/// if it fails; when the hop is unreachable the queued packets are dropped.
async fn write_link(peer: PeerId, mut rx: mpsc::Receiver<Packet>, shared: Arc<Shared>) {
    let mut stream = open_packet_stream(&shared, peer).await;
    while let Some(packet) = rx.recv().await {
        let mut sent = false;
        for _attempt in 0..2 {
            if stream.is_none() {
                stream = open_packet_stream(&shared, peer).await;
            }
            let Some(s) = stream.as_mut() else {
                break;
            };
            if wire::write_packet(s, &packet).await.is_ok() {
                sent = true;
                break;
            }
            stream = None;
        }
        if sent {
            shared.metrics.packets_forwarded.inc();
        } else {
            shared.drop_packet("next_hop_unreachable");
            // Drain what is queued for this dead link rather than retrying
            // each; close first so nothing slips in uncounted.
            rx.close();
            while rx.try_recv().is_ok() {
                shared.drop_packet("next_hop_unreachable");
            }
            break;
        }
    }
    drop(rx);
    let mut links = shared.links.lock().unwrap_or_else(|e| e.into_inner());
    if links.get(&peer).is_some_and(mpsc::Sender::is_closed) {
        links.remove(&peer);
    }
}

/// Anti-entropy: pulls the directory of one known node, chosen at random,
/// every so often: after 1 s, then twice as long each time up to the
/// maintenance tick. Without it a descriptor can be missed for half an
/// epoch (until its node publishes again): one that reaches the bootstrap
/// node while a newcomer's first directory fetch is in flight goes only to
/// the gossip mesh of that moment, and a directory request can fail.
async fn pull_directories(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let period = shared.config.epochs.period_secs;
    let most = Duration::from_millis((period * 1000 / 4).clamp(1000, 30_000));
    let mut every = Duration::from_secs(1);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            () = tokio::time::sleep(every) => {}
        }
        every = (every * 2).min(most);
        let peers = shared.book.peers();
        if peers.is_empty() {
            continue;
        }
        let peer = {
            use rand::RngExt as _;
            peers[rand::rng().random_range(0..peers.len())]
        };
        fetch_directory(peer, shared.clone()).await;
    }
}

/// Periodic work: key rotation, descriptor publication, expiry.
async fn maintain(
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    mut shutdown: watch::Receiver<bool>,
) {
    let period = shared.config.epochs.period_secs;
    let tick = Duration::from_millis((period * 1000 / 4).clamp(250, 30_000));
    let republish = (period / 2)
        .min(shared.config.directory.max_age_secs / 3)
        .max(1);
    let mut last_epoch = u64::MAX;
    let mut last_publish = 0u64;
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = interval.tick() => {}
            () = shared.republish.notified() => last_publish = 0,
        }
        let now = unix_now();
        let epoch = EpochSchedule::new(period).epoch_at(now);
        shared.metrics.epoch.set(epoch as i64);
        if epoch != last_epoch || now.saturating_sub(last_publish) >= republish {
            let rotated = {
                let shared = shared.clone();
                tokio::task::spawn_blocking(move || {
                    let mut keys = shared.keys.write().unwrap_or_else(|e| e.into_inner());
                    keys.rotate(&shared.store, now, &mut rand::rng())
                })
                .await
            };
            match rotated {
                Ok(Ok(rotation))
                    if !rotation.deleted.is_empty() || !rotation.created.is_empty() =>
                {
                    tracing::info!(epoch, created = ?rotation.created, deleted = ?rotation.deleted, "rotated mix keys");
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "key rotation failed"),
                Err(e) => tracing::error!(error = %e, "key rotation task failed"),
            }
            match shared.sign_descriptor() {
                Ok(signed) => {
                    let _ = shared.offer(signed.clone());
                    let bytes = signed.to_bytes();
                    *shared
                        .own_descriptor
                        .write()
                        .unwrap_or_else(|e| e.into_inner()) = Some(signed);
                    let _ = commands.try_send(Command::Publish(DESCRIPTOR_TOPIC, bytes));
                    last_publish = now;
                    // The policy and this exit's opt-outs, for nodes that
                    // joined since they were last published.
                    if let Some(policy) = shared.policy.signed() {
                        let _ = commands.try_send(Command::Publish(POLICY_TOPIC, policy));
                    }
                    if let Some(exit) = shared.exit() {
                        let batches =
                            tokio::task::spawn_blocking(move || exit.own_opt_outs()).await;
                        if let Ok(Ok(batches)) = batches {
                            for batch in batches {
                                let _ = commands.try_send(Command::Publish(OPT_OUT_TOPIC, batch));
                            }
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot sign this node's descriptor"),
            }
            last_epoch = epoch;
        }
        let expired = shared
            .directory
            .write()
            .map(|mut d| {
                let n = d.expire(now);
                shared.metrics.directory_nodes.set(d.len() as i64);
                n
            })
            .unwrap_or(0);
        if expired > 0 {
            shared.refresh_addresses();
        }
        let store_shared = shared.clone();
        if let Ok(Ok(held)) = tokio::task::spawn_blocking(move || {
            store_shared.store.mailbox_expire(unix_now_ms())?;
            store_shared.store.mailbox_len()
        })
        .await
        {
            shared.metrics.mailbox_replies.set(held as i64);
        }
    }
}
