//! A small federation with an exit, in one process, and a sender that
//! builds real leaks (stamp, reply block) and reads their receipts.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use leak_node::{Config, StartOptions, client::Peer, config::PolicyConfig, config::Role};
use leak_protocol::{
    MailboxId, MessageId, PathHop, Receipt, Recipient, Relationship, ReplyKeys, build_packet,
    build_reply_block,
    payload::Stamp,
    policy::{self, Policy, SignedPolicy},
    seal::{LeakContents, seal_leak},
};

use crate::{TestNode, descriptor_of, hop, random32, test_config, wait_until};

/// A policy like the built-in one, with a cheap stamp so tests can send
/// hundreds of leaks, signed by a fresh maintainer key that the returned
/// config trusts.
pub fn cheap_policy(dir: &Path) -> (PolicyConfig, Policy) {
    signed_policy(dir, "policy.signed", |toml| {
        toml.lines()
            .map(|l| {
                if l.trim_start().starts_with("stamp_bits") {
                    "stamp_bits = 6".to_owned()
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// The built-in policy's text, changed by `edit`, signed by a fresh key,
/// written to `dir/name`.
pub fn signed_policy(
    dir: &Path,
    name: &str,
    edit: impl FnOnce(&str) -> String,
) -> (PolicyConfig, Policy) {
    let toml = edit(Policy::builtin().source());
    let seed = random32();
    let signed = SignedPolicy::sign(&toml, &seed).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, signed.to_bytes()).unwrap();
    let public = leak_protocol::crypto::ed25519_public(&seed);
    let config = PolicyConfig {
        file: path.display().to_string(),
        trusted_keys: vec![hex_encode(&public)],
        threshold: 1,
    };
    let policy = leak_node::policy::load(&config).unwrap();
    (config, policy)
}

/// Starts `n` relays in `dir/relay<i>` (each bootstrapping from the
/// first), relay `i` with `policy(i)`.
pub async fn start_relays(
    dir: &Path,
    n: usize,
    policy: impl Fn(usize) -> PolicyConfig,
) -> Vec<TestNode> {
    let mut relays: Vec<TestNode> = Vec::new();
    for i in 0..n {
        let d = dir.join(format!("relay{i}"));
        let bootstrap = relays
            .first()
            .map(|r| vec![r.node.dial_addr()])
            .unwrap_or_default();
        let mut config = test_config(&d, 3600, bootstrap);
        config.policy = policy(i);
        relays.push(TestNode::start(d, config, StartOptions::default()).await);
    }
    relays
}

/// A reply block along `reply` to a fresh mailbox: its capability, the
/// block, and the keys that open what comes back.
fn reply_block_on(reply: &[PathHop]) -> ([u8; 32], leak_protocol::ReplyBlock, ReplyKeys) {
    let capability = random32();
    let (block, keys) = build_reply_block(
        reply,
        MailboxId::from_capability(&capability),
        &mut rand::rng(),
    )
    .unwrap();
    (capability, block, keys)
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An exit's config in `dir`: the file transport into `dir/outbox`, the
/// endpoint on a free loopback port.
pub fn exit_config(dir: &Path, bootstrap: Vec<libp2p::Multiaddr>, policy: &PolicyConfig) -> Config {
    let mut config = test_config(dir, 3600, bootstrap);
    config.node.roles = vec![Role::Relay, Role::Exit];
    config.exit.domain = "exit.test".into();
    config.exit.http_listen = "127.0.0.1:0".into();
    // No inbound mail unless a test sets it up (`exit_inbound.rs`): a 250
    // over SMTP then ends a leak as `Accepted`.
    config.exit.inbound_listen = String::new();
    // No outside DNS here: providers by domain name only, unless a test
    // runs its own DNS server.
    config.exit.dns_resolver = "off".into();
    config.exit.file_dir = dir.join("outbox").display().to_string();
    config.exit.retry_initial_secs = 1;
    config.exit.retry_max_secs = 2;
    config.policy = policy.clone();
    config
}

/// Relays and one exit (the last node), all knowing each other.
pub struct Federation {
    /// The relays.
    pub relays: Vec<TestNode>,
    /// The exit.
    pub exit: TestNode,
    /// The policy every node and the sender use.
    pub policy: Policy,
    /// Its config section.
    pub policy_config: PolicyConfig,
    /// The root directory.
    pub dir: PathBuf,
}

impl Federation {
    /// Starts `relays` relays and an exit configured by `configure`.
    pub async fn start(dir: &Path, relays: usize, configure: impl FnOnce(&mut Config)) -> Self {
        Self::start_with(dir, relays, StartOptions::default(), configure).await
    }

    /// As [`Federation::start`], the exit started with `exit_options` (a
    /// manual clock, say).
    pub async fn start_with(
        dir: &Path,
        relays: usize,
        exit_options: StartOptions,
        configure: impl FnOnce(&mut Config),
    ) -> Self {
        let (policy_config, policy) = cheap_policy(dir);
        let nodes = start_relays(dir, relays, |_| policy_config.clone()).await;
        let bootstrap = vec![nodes[0].node.dial_addr()];
        let exit_dir = dir.join("exit");
        let mut config = exit_config(&exit_dir, bootstrap, &policy_config);
        configure(&mut config);
        let exit = TestNode::start(exit_dir, config, exit_options).await;
        let federation = Self {
            relays: nodes,
            exit,
            policy,
            policy_config,
            dir: dir.to_path_buf(),
        };
        federation.converge().await;
        federation
    }

    /// Waits until every node knows every other.
    pub async fn converge(&self) {
        let n = self.relays.len() + 1;
        wait_until(Duration::from_secs(60), "the directory to converge", || {
            let done = self
                .relays
                .iter()
                .chain(std::iter::once(&self.exit))
                .all(|t| t.node.directory().len() == n);
            async move { done }
        })
        .await;
    }

    /// Stops the exit, then starts it again as the same node with its
    /// queue, after `configure` (as an operator fixes its config and
    /// restarts it).
    pub async fn restart_exit(self, configure: impl FnOnce(&mut Config)) -> Self {
        let Self {
            relays,
            exit,
            policy,
            policy_config,
            dir,
        } = self;
        exit.node.shutdown().await.unwrap();
        let exit_dir = dir.join("exit");
        let mut config = exit_config(&exit_dir, vec![relays[0].node.dial_addr()], &policy_config);
        configure(&mut config);
        let exit = TestNode::start(exit_dir, config, StartOptions::default()).await;
        let fed = Self {
            relays,
            exit,
            policy,
            policy_config,
            dir,
        };
        fed.converge().await;
        fed
    }

    /// A sender that knows every node.
    pub fn sender(&self) -> Sender {
        let peer = Peer::new().unwrap();
        for t in self.relays.iter().chain(std::iter::once(&self.exit)) {
            peer.add_node(t.node.peer_id(), t.node.listen_addrs().to_vec());
        }
        Sender {
            peer,
            policy: self.policy.clone(),
        }
    }

    /// The email files the exit wrote (file transport).
    pub fn outbox(&self) -> Vec<String> {
        let dir = self.dir.join("exit").join("outbox");
        let mut out: Vec<String> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                    .map(|e| std::fs::read_to_string(e.path()).unwrap())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// Shuts every node down.
    pub async fn shutdown(self) {
        for t in self.relays {
            t.node.shutdown().await.unwrap();
        }
        self.exit.node.shutdown().await.unwrap();
    }
}

/// A leak on its way, and how to read its receipt.
pub struct Sent {
    /// The leak's id.
    pub id: MessageId,
    capability: [u8; 32],
    keys: ReplyKeys,
    mailbox_node: libp2p::PeerId,
}

/// Builds and sends leaks as a client would.
pub struct Sender {
    /// The client's peer.
    pub peer: Peer,
    /// The policy the stamps are made for.
    pub policy: Policy,
}

/// What goes into a leak besides its route.
pub struct Draft<'a> {
    /// The recipient.
    pub to: &'a str,
    /// The relationship.
    pub relationship: Relationship,
    /// The text.
    pub text: &'a str,
    /// The message id (a fresh one when `None`).
    pub id: Option<MessageId>,
}

impl<'a> Draft<'a> {
    /// A draft from a friend.
    pub fn new(to: &'a str, text: &'a str) -> Self {
        Self {
            to,
            relationship: Relationship::Friend,
            text,
            id: None,
        }
    }
}

impl Sender {
    /// A stamp for `to` at `exit`.
    pub fn stamp(&self, to: &Recipient, exit: &leak_protocol::NodeId, id: &MessageId) -> Stamp {
        let epoch = crate::unix_time().as_secs() / policy::STAMP_EPOCH_SECS;
        policy::solve_stamp(
            &self.policy.recipient_hash(to),
            exit,
            epoch,
            self.policy.limits().stamp_bits,
            id,
        )
    }

    /// The forward path entry → middle → exit and a reply block middle →
    /// entry (the mailbox), both through `federation`'s first two relays
    /// (or `relays` when given).
    fn paths(
        federation: &Federation,
        relays: (usize, usize),
    ) -> (Vec<PathHop>, Vec<PathHop>, libp2p::PeerId) {
        Self::paths_to(
            &federation.relays[0].node,
            &federation.relays[relays.0].node,
            &federation.relays[relays.1].node,
            federation.exit.node.node_id(),
        )
    }

    fn paths_to(
        viewer: &leak_node::RunningNode,
        entry: &leak_node::RunningNode,
        middle: &leak_node::RunningNode,
        exit: leak_protocol::NodeId,
    ) -> (Vec<PathHop>, Vec<PathHop>, libp2p::PeerId) {
        let exit = viewer
            .directory()
            .into_iter()
            .find(|d| d.node == exit)
            .expect("the exit is in the directory");
        let forward = vec![
            hop(&descriptor_of(viewer, entry).unwrap(), 0),
            hop(&descriptor_of(viewer, middle).unwrap(), 0),
            hop(&exit, 0),
        ];
        let reply = vec![
            hop(&descriptor_of(viewer, middle).unwrap(), 0),
            hop(&descriptor_of(viewer, entry).unwrap(), 0),
        ];
        (forward, reply, entry.peer_id())
    }

    /// Encodes a leak for `federation`'s exit with a reply block to a
    /// mailbox on the entry relay; returns the packet's bytes and the
    /// receipt handle.
    pub fn build(
        &self,
        federation: &Federation,
        relays: (usize, usize),
        draft: &Draft<'_>,
    ) -> (leak_protocol::Packet, Sent) {
        let (forward, reply, mailbox_node) = Self::paths(federation, relays);
        self.build_on(forward, reply, mailbox_node, draft)
    }

    /// Like [`Sender::build`], for an exit that is not a [`TestNode`] (a
    /// `leak-node` process): `viewer`'s directory gives the descriptors.
    pub fn build_to(
        &self,
        viewer: &leak_node::RunningNode,
        entry: &leak_node::RunningNode,
        middle: &leak_node::RunningNode,
        exit: leak_protocol::NodeId,
        draft: &Draft<'_>,
    ) -> (leak_protocol::Packet, Sent) {
        let (forward, reply, mailbox_node) = Self::paths_to(viewer, entry, middle, exit);
        self.build_on(forward, reply, mailbox_node, draft)
    }

    fn build_on(
        &self,
        forward: Vec<PathHop>,
        reply: Vec<PathHop>,
        mailbox_node: libp2p::PeerId,
        draft: &Draft<'_>,
    ) -> (leak_protocol::Packet, Sent) {
        let exit_id = forward.last().unwrap().node;
        let capability = random32();
        let id = draft
            .id
            .unwrap_or_else(|| MessageId(random32()[..16].try_into().unwrap()));
        let recipient = Recipient::parse(draft.to).unwrap();
        let stamp = self.stamp(&recipient, &exit_id, &id);
        let sealed = seal_leak(
            &LeakContents {
                message_id: id,
                recipient: &recipient,
                relationship: draft.relationship,
                text: draft.text,
                policy_version: self.policy.version(),
                stamp,
                answer_to: None,
            },
            &forward,
            &reply,
            MailboxId::from_capability(&capability),
            &mut rand::rng(),
        )
        .unwrap();
        (
            sealed.packet,
            Sent {
                id,
                capability,
                keys: sealed.reply_keys,
                mailbox_node,
            },
        )
    }

    /// Wraps raw leak bytes (valid or not) for the exit, with a reply block
    /// as [`Sender::build`] makes.
    pub fn build_raw(
        &self,
        federation: &Federation,
        encode: impl FnOnce(MessageId, &leak_protocol::ReplyBlock) -> Vec<u8>,
    ) -> (leak_protocol::Packet, Sent) {
        let (forward, reply, mailbox_node) = Self::paths(federation, (0, 1));
        let (capability, reply_block, keys) = reply_block_on(&reply);
        let id = MessageId(random32()[..16].try_into().unwrap());
        let bytes = encode(id, &reply_block);
        let packet = build_packet(&forward, &bytes, &mut rand::rng()).unwrap();
        (
            packet,
            Sent {
                id,
                capability,
                keys,
                mailbox_node,
            },
        )
    }

    /// Sends a packet into the federation's entry relay.
    pub async fn send(&self, federation: &Federation, entry: usize, packet: leak_protocol::Packet) {
        self.peer
            .send_packets(federation.relays[entry].node.peer_id(), &[packet])
            .await
            .unwrap();
    }

    /// Builds and sends a leak through relays 0 and 1.
    pub async fn leak(&self, federation: &Federation, draft: &Draft<'_>) -> Sent {
        let (packet, sent) = self.build(federation, (0, 1), draft);
        self.send(federation, 0, packet).await;
        sent
    }

    /// The receipt for `sent`, waiting up to `timeout`.
    pub async fn receipt(&self, sent: &Sent, timeout: Duration) -> Option<Receipt> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let replies = self
                .peer
                .fetch_mailbox(sent.mailbox_node, &sent.capability)
                .await
                .unwrap();
            if let Some(opened) = replies.iter().find_map(|r| sent.keys.open(r).ok()) {
                let receipt = Receipt::decode(&opened).unwrap();
                assert_eq!(receipt.message_id, sent.id);
                return Some(receipt);
            }
            if tokio::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Panics unless an exit's queue directory holds nothing of any leak: no
/// file but the spool, and the spool all zeros (every slot scrubbed).
pub fn assert_queue_scrubbed(queue_dir: &Path) {
    for entry in std::fs::read_dir(queue_dir).unwrap() {
        let entry = entry.unwrap();
        assert_eq!(
            entry.file_name(),
            leak_node::exit::spool::SPOOL_FILE,
            "only the spool is left in {}",
            queue_dir.display()
        );
        let bytes = std::fs::read(entry.path()).unwrap();
        let left = bytes.iter().filter(|&&b| b != 0).count();
        assert_eq!(left, 0, "{left} bytes of the spool are not zeroed");
    }
}

/// Two relays in this process and an exit as a `leak-node` process of its
/// own (release or debug, as [`crate::leak_node_bin`] finds it) delivering
/// over SMTP: for tests that kill the exit and for benchmarks that measure
/// it alone.
pub struct ProcessFederation {
    /// The relays (the sender enters at the first).
    pub relays: Vec<TestNode>,
    /// The exit's process.
    pub exit: crate::NodeProcess,
    /// The exit's data directory.
    pub exit_dir: PathBuf,
    /// The exit's config file (for `leak-node queue --config`).
    pub config: PathBuf,
    /// The exit's node id.
    pub exit_id: leak_protocol::NodeId,
    policy: Policy,
    sets: Vec<String>,
    cpu: Option<usize>,
}

impl ProcessFederation {
    /// Starts the relays, then the exit delivering to `smtp_url` over
    /// `connections` connections, with `extra` config settings
    /// (`--set KEY=VALUE`), on `cpu` only if given; waits until the relays
    /// know the exit.
    pub async fn start(
        dir: &Path,
        smtp_url: &str,
        connections: u32,
        extra: &[String],
        cpu: Option<usize>,
    ) -> Self {
        let (policy_config, policy) = cheap_policy(dir);
        let relays = start_relays(dir, 2, |_| policy_config.clone()).await;
        let exit_dir = dir.join("exit");
        let listen = format!("/ip4/127.0.0.1/tcp/{}", crate::process::free_port());
        let bootstrap = relays[0].node.dial_addr().to_string();
        let config = crate::init_node(
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
        let mut sets = vec![
            "exit.transport=\"smtp\"".to_owned(),
            format!("exit.smtp_url={smtp_url:?}"),
            format!("exit.smtp_connections={connections}"),
            "exit.http_listen=\"127.0.0.1:0\"".to_owned(),
            "exit.inbound_listen=\"\"".to_owned(),
            "exit.dns_resolver=\"off\"".to_owned(),
            "exit.receipt_delay_ms=0".to_owned(),
            format!("policy.file={:?}", policy_config.file),
            format!("policy.trusted_keys=[{:?}]", policy_config.trusted_keys[0]),
        ];
        sets.extend_from_slice(extra);
        let (exit, exit_id) = spawn_exit(&config, &sets, cpu);
        let federation = Self {
            relays,
            exit,
            exit_dir,
            config,
            exit_id,
            policy,
            sets,
            cpu,
        };
        wait_until(
            Duration::from_secs(60),
            "the relays to know the exit",
            || {
                let done = federation.relays.iter().all(|r| {
                    r.node
                        .directory()
                        .iter()
                        .any(|d| d.node == exit_id && d.roles.exit)
                });
                async move { done }
            },
        )
        .await;
        federation
    }

    /// Starts the exit's process again (after a kill) and waits until it
    /// runs.
    pub fn restart_exit(&mut self) {
        self.exit = spawn_exit(&self.config, &self.sets, self.cpu).0;
    }

    /// A sender that knows the relays.
    pub fn sender(&self) -> Sender {
        let peer = Peer::new().unwrap();
        for r in &self.relays {
            peer.add_node(r.node.peer_id(), r.node.listen_addrs().to_vec());
        }
        Sender {
            peer,
            policy: self.policy.clone(),
        }
    }

    /// A leak through both relays to the exit.
    pub fn build(&self, sender: &Sender, draft: &Draft<'_>) -> (leak_protocol::Packet, Sent) {
        let (entry, middle) = (&self.relays[0].node, &self.relays[1].node);
        sender.build_to(entry, entry, middle, self.exit_id, draft)
    }

    /// `leak-node queue --json ARGS` against the running exit; `None` if
    /// it fails (the exit not running).
    pub fn queue(&self, args: &[&str]) -> Option<String> {
        let output = crate::process::leak_node_command()
            .args(["queue", "--json", "--config"])
            .arg(&self.config)
            .args(args)
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The exit's queue: (waiting: queued, retrying or sending;
    /// delivered), or `None` if it cannot be asked.
    pub fn queue_counts(&self) -> Option<(u64, u64)> {
        let json: serde_json::Value = serde_json::from_str(&self.queue(&["counts"])?).ok()?;
        let state = |name: &str| json["states"][name].as_u64().unwrap_or(0);
        Some((
            state("queued") + state("retrying") + state("sending"),
            // Taken by the mail server (without inbound mail, the outcome
            // is unknown: `unconfirmed`).
            state("delivered") + state("unconfirmed") + state("sent"),
        ))
    }

    /// Stops the exit cleanly and the relays.
    pub async fn shutdown(mut self) {
        self.exit.stop_cleanly();
        for r in self.relays {
            r.node.shutdown().await.unwrap();
        }
    }
}

/// Runs `leak-node run --config CONFIG --set SET...` (on `cpu` only, if
/// given) and waits until it runs; returns it and its node id.
fn spawn_exit(
    config: &Path,
    sets: &[String],
    cpu: Option<usize>,
) -> (crate::NodeProcess, leak_protocol::NodeId) {
    let mut command = crate::process::leak_node_command_on(cpu);
    command.arg("run").arg("--config").arg(config);
    for set in sets {
        command.args(["--set", set]);
    }
    let mut exit = crate::NodeProcess::spawn("exit", command);
    let started = exit.wait_started(false, Duration::from_secs(60));
    let id = leak_node::identity::node_id_of(&started.peer_id).unwrap();
    (exit, id)
}
