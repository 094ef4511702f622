//! [`start`]: opens the database, rotates the keys, listens, and spawns
//! every task.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use futures::StreamExt as _;
use leak_protocol::{NodeId, Packet, directory::ExitInfo, roster::RosterError};
use libp2p::{gossipsub, swarm::SwarmEvent};
use tokio::sync::{mpsc, watch};

use super::{
    cover::{new_loops, run_loops},
    fetch::pull_directories,
    links::send_to,
    maintenance::maintain,
    pipeline::run_worker,
    running::RunningNode,
    serve::{accept_packets, serve_directories, serve_mailboxes, serve_opt_outs},
    shared::{Command, Shared},
    swarm::run_swarm,
    timer::{TIMER_BATCHES, TimerItem, run_timer},
};
use crate::{
    clock::{SharedClock, SystemClock},
    config::Config,
    directory::{Directory, Refused},
    epoch::{EpochSchedule, KeyRing},
    error::NodeError,
    exit::ExitDelivery,
    held_disk::HeldDisk,
    identity::{Identity, peer_id_of},
    metrics::Metrics,
    net::{self, AddressBook, DESCRIPTOR_TOPIC, POLICY_TOPIC},
    policy::PolicyState,
    queue::FairQueue,
    relay::{
        DropReason, RelayCore, RelayLimits,
        quota::{DepositLimits, DepositQuota},
    },
    roster::RosterState,
    store::Store,
    traffic::TrafficCounter,
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
    /// The clock the node decides by (the system's wall clock when `None`).
    pub clock: Option<SharedClock>,
}

/// Leaks waiting for the exit's ingest task.
const EXIT_BACKLOG: usize = 1024;

/// Inbound streams of one protocol that may wait for the node to take them.
const INBOUND_BACKLOG: usize = 64;

/// Starts a node: opens its database, rotates its keys, listens, and spawns
/// every task. Returns once the node is listening.
pub async fn start(
    config: Config,
    identity: Identity,
    options: StartOptions,
) -> Result<RunningNode, NodeError> {
    config.validate()?;
    std::fs::create_dir_all(&config.node.data_dir).map_err(|source| NodeError::Io {
        what: format!(
            "cannot create the data directory {}",
            config.node.data_dir.display()
        ),
        source,
    })?;
    let store = Arc::new(Store::open(&config.database_path())?);
    let held_disk = Arc::new(HeldDisk::create(&config.held_path())?);
    let schedule = EpochSchedule::new(config.epochs.period_secs);
    let mut keys = KeyRing::load(&store, schedule, config.epochs.keys_ahead)?;
    let clock: SharedClock = options
        .clock
        .clone()
        .unwrap_or_else(|| Arc::new(SystemClock));
    keys.rotate(&store, clock.now_secs(), &mut rand::rng())?;

    let metrics = Arc::new(Metrics::new());
    let book = AddressBook::default();
    let (inbound, mut incoming) = net::InboundStreams::new(
        &[
            wire::PACKET_PROTOCOL,
            wire::DIRECTORY_PROTOCOL,
            wire::MAILBOX_PROTOCOL,
            wire::OPT_OUT_PROTOCOL,
        ],
        INBOUND_BACKLOG,
        metrics.inbound_streams_refused.clone(),
    );
    let mut take_incoming = |protocol| {
        incoming
            .remove(&protocol)
            .ok_or_else(|| NodeError::Network(format!("no inbound queue for {protocol}")))
    };
    let packets = take_incoming(wire::PACKET_PROTOCOL)?;
    let directory_streams = take_incoming(wire::DIRECTORY_PROTOCOL)?;
    let mailbox_streams = take_incoming(wire::MAILBOX_PROTOCOL)?;
    let opt_out_streams = take_incoming(wire::OPT_OUT_PROTOCOL)?;
    let mut swarm = net::build_swarm(identity.keypair(), &config, book.clone(), inbound)?;
    let topic = gossipsub::IdentTopic::new(DESCRIPTOR_TOPIC);
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&topic)
        .map_err(|e| NodeError::Network(format!("subscribing to descriptors: {e}")))?;
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&gossipsub::IdentTopic::new(POLICY_TOPIC))
        .map_err(|e| NodeError::Network(format!("subscribing to {POLICY_TOPIC}: {e}")))?;
    let mut listeners = Vec::new();
    for addr in &config.node.listen {
        // `TransportError::Other` displays as nothing: show the I/O error itself.
        let id = swarm.listen_on(addr.clone()).map_err(|e| match e {
            libp2p::TransportError::Other(io) => NodeError::Network(format!(
                "cannot listen on {addr}: {io} (is the port taken?)"
            )),
            other => NodeError::Network(format!("cannot listen on {addr}: {other}")),
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
            Err(_) => {
                return Err(NodeError::Network(
                    "timed out waiting for the listeners to start".into(),
                ));
            }
        };
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                started.insert(listener_id);
                listen_addrs.push(address);
            }
            SwarmEvent::ListenerError { error, .. } => {
                return Err(NodeError::Network(format!("listener failed: {error}")));
            }
            SwarmEvent::ListenerClosed {
                reason: Err(error), ..
            } => {
                return Err(NodeError::Network(format!(
                    "cannot listen: {error} (is the port taken?)"
                )));
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
    config.check_runnable()?;
    let roster = RosterState::new(&config)
        .map_err(|e| NodeError::Descriptor(format!("the directory authorities: {e}")))?;
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
                // Set by the exit from its load at each signing.
                stamp_bits: 0,
            });
        }
    }
    let has_exit = options.exit_sink.is_some();
    let (shutdown, shutdown_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        local_peer: identity.peer_id(),
        identity,
        store,
        keys: RwLock::new(keys),
        directory: RwLock::new(directory),
        book,
        peer_ids: Default::default(),
        metrics: metrics.clone(),
        inbound: FairQueue::new(config.limits.peer_queue, config.limits.global_queue),
        links: Mutex::new(HashMap::new()),
        control: Mutex::new(control.clone()),
        exit_sink: options.exit_sink,
        exit_info: options.exit_info,
        exit: std::sync::OnceLock::new(),
        policy: policy.clone(),
        roster,
        prompted_fetches: Mutex::new(HashMap::new()),
        republish: tokio::sync::Notify::new(),
        last_published_at: std::sync::atomic::AtomicU64::new(0),
        own_descriptor: RwLock::new(None),
        listen_addrs,
        inbound_streams: Default::default(),
        core: RelayCore::new(
            RelayLimits {
                max_delay_ms: config.limits.max_delay_ms.into(),
                mailbox_ttl_ms: config.mailbox.ttl_secs.saturating_mul(1000),
            },
            has_exit,
        ),
        loops: std::sync::Mutex::new(new_loops(&config, clock.now_ms())),
        deposit_quota: std::sync::Mutex::new(DepositQuota::new(DepositLimits {
            window_ms: config.mailbox.deposit_window_secs.saturating_mul(1000),
            max_deposits: config.mailbox.max_deposits_per_source,
            max_mailboxes: config.mailbox.max_mailboxes_per_source,
        })),
        traffic: std::sync::Mutex::new(TrafficCounter::start(
            clock.now_secs() / config.epochs.period_secs.max(1),
        )),
        stopping: shutdown_rx.clone(),
        clock,
        config,
    });
    // The newest roster on disk (the one adopted before a restart, the
    // configured file), before this node's own descriptor: it gives the
    // family.
    for bytes in shared.roster.on_disk() {
        match shared.offer_roster(&bytes) {
            Ok(_) | Err(RosterError::NotNewer { .. }) => {}
            Err(e) => tracing::warn!(error = %e, "a roster on disk was not adopted"),
        }
    }
    let own = shared.sign_descriptor()?;
    match shared.offer(own.clone()) {
        Ok(_) => {}
        // Not (yet) admitted: the node runs, and enters directories once a
        // roster admits it.
        Err(refused @ (Refused::NoRoster | Refused::NotRostered | Refused::BeyondRoster)) => {
            tracing::warn!(
                node = %leak_protocol::signed::hex(&shared.identity.node_id().0),
                reason = %refused,
                "this node is not admitted by the roster in force: other nodes and clients ignore it until a directory authority admits it"
            );
        }
        Err(e) => return Err(NodeError::Descriptor(format!("it does not verify: {e}"))),
    }
    *shared
        .own_descriptor
        .write()
        .unwrap_or_else(|e| e.into_inner()) = Some(own);

    let (commands_tx, commands_rx) = mpsc::channel(64);
    // Batches: a worker hands over a whole batch's held packets at once
    // (one wake-up of the timer, not one per packet).
    let (timer_tx, timer_rx) = mpsc::channel(TIMER_BATCHES);
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
        "opt-out server",
        tokio::spawn(serve_opt_outs(
            opt_out_streams,
            shared.clone(),
            shutdown_rx.clone(),
        )),
    ));
    tasks.push((
        "timer",
        tokio::spawn(run_timer(
            timer_rx,
            shared.clone(),
            held_disk,
            shutdown_rx.clone(),
        )),
    ));
    tasks.push((
        "maintenance",
        tokio::spawn(maintain(shared.clone(), commands_tx, shutdown_rx.clone())),
    ));
    tasks.push((
        "directory pull",
        tokio::spawn(pull_directories(shared.clone(), shutdown_rx.clone())),
    ));
    tasks.push((
        "loops",
        tokio::spawn(run_loops(shared.clone(), shutdown_rx.clone())),
    ));

    let workers = (0..std::thread::available_parallelism().map_or(2, |n| n.get()))
        .map(|i| {
            let shared = shared.clone();
            let timer_tx = timer_tx.clone();
            std::thread::Builder::new()
                .name(format!("leak-worker-{i}"))
                .spawn(move || run_worker(&shared, &timer_tx))
                .map_err(|source| NodeError::Io {
                    what: "starting a worker thread".into(),
                    source,
                })
        })
        .collect::<Result<Vec<_>, NodeError>>()?;
    let receipt_timer = timer_tx.clone();
    drop(timer_tx);

    let mut exit = None;
    let mut exit_http_addr = None;
    if let Some(incoming) = exit_incoming {
        let send_shared = shared.clone();
        // A receipt due later waits in the timer, with every packet held
        // for its delay (by the node's clock, bounded, fair between
        // sources). It is not durable: a receipt held when the node stops
        // is lost, and the sender's retransmission, which comes after a
        // generous window, is answered from the exit's record.
        let send: crate::exit::SendPacket = Arc::new(
            move |node: NodeId, packet: Packet, due_ms: u64| match peer_id_of(&node) {
                Some(peer) if due_ms <= send_shared.clock.now_ms() => {
                    send_to(&send_shared, peer, packet);
                }
                Some(peer) => {
                    let item = TimerItem {
                        due_ms,
                        source: send_shared.local_peer,
                        next_hop: peer,
                        packet,
                    };
                    if receipt_timer.try_send(vec![item]).is_err() {
                        send_shared.drop_packet(DropReason::HeldFull);
                    }
                }
                None => send_shared.drop_packet(DropReason::BadNextHop),
            },
        );
        let opt_out_shared = shared.clone();
        let send_opt_outs: crate::exit::SendOptOuts = Arc::new(move |exit, batch| {
            tokio::spawn(super::serve::send_opt_outs(
                opt_out_shared.clone(),
                exit,
                batch,
            ));
        });
        let directory_shared = shared.clone();
        let directory: crate::exit::DirectoryNodes = Arc::new(move || {
            directory_shared
                .directory
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .descriptors()
                .filter(|d| d.roles.exit)
                .cloned()
                .collect()
        });
        let started = crate::exit::start(
            crate::exit::Parts {
                config: shared.config.clone(),
                seed: *shared.identity.seed(),
                store: shared.store.clone(),
                metrics: metrics.clone(),
                policy: shared.policy.clone(),
                send_packet: send,
                send_opt_outs,
                directory,
                clock: shared.clock.clone(),
            },
            incoming,
            shutdown_rx.clone(),
        )
        .await?;
        let _ = shared.exit.set(Arc::downgrade(&started.exit));
        shared.republish.notify_one();
        tasks.extend(started.tasks);
        exit_http_addr = Some(started.http_addr);
        if let Some(addr) = started.inbound_addr {
            tracing::info!(%addr, "the exit takes its domain's mail over LMTP");
        }
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

    // Which layer of the stratified topology clients put this node in
    // (`federation::layer`): operators see why their relay carries first
    // hops and mailboxes, or only middle hops.
    let layer = if shared
        .config
        .node
        .roles
        .contains(&crate::config::Role::Exit)
    {
        "exit"
    } else {
        match leak_protocol::federation::layer(&shared.identity.node_id()) {
            leak_protocol::federation::Layer::Entry => "entry (agents' guard, mailboxes)",
            leak_protocol::federation::Layer::Mix => "mix (between guards and exits)",
        }
    };
    tracing::info!(
        peer_id = %shared.local_peer,
        listeners = shared.listen_addrs.len(),
        layer,
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
