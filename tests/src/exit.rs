//! A small federation with an exit, in one process, and a sender that
//! builds real leaks (stamp, reply block) and reads their receipts.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use leak_node::{Config, StartOptions, client::Peer, config::PolicyConfig, config::Role};
use leak_protocol::{
    Leak, MailboxId, MessageId, PathHop, Receipt, Recipient, Relationship, ReplyKeys, build_packet,
    build_reply_block,
    payload::Stamp,
    policy::{self, Policy, SignedPolicy},
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
        let (policy_config, policy) = cheap_policy(dir);
        let first_dir = dir.join("relay0");
        let mut first_config = test_config(&first_dir, 3600, vec![]);
        first_config.policy = policy_config.clone();
        let first = TestNode::start(first_dir, first_config, StartOptions::default()).await;
        let bootstrap = vec![first.node.dial_addr()];
        let mut nodes = vec![first];
        for i in 1..relays {
            let d = dir.join(format!("relay{i}"));
            let mut config = test_config(&d, 3600, bootstrap.clone());
            config.policy = policy_config.clone();
            nodes.push(TestNode::start(d, config, StartOptions::default()).await);
        }
        let exit_dir = dir.join("exit");
        let mut config = exit_config(&exit_dir, bootstrap, &policy_config);
        configure(&mut config);
        let exit = TestNode::start(exit_dir, config, StartOptions::default()).await;
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
        let (reply_block, keys) = build_reply_block(
            &reply,
            MailboxId::from_capability(&capability),
            &mut rand::rng(),
        )
        .unwrap();
        let id = draft
            .id
            .unwrap_or_else(|| MessageId(random32()[..16].try_into().unwrap()));
        let recipient = Recipient::parse(draft.to).unwrap();
        let stamp = self.stamp(&recipient, &exit_id, &id);
        let leak = Leak {
            message_id: id,
            recipient,
            relationship: draft.relationship,
            text: draft.text.to_owned(),
            policy_version: self.policy.version(),
            stamp,
            reply_block,
        };
        let packet = build_packet(&forward, &leak.encode().unwrap(), &mut rand::rng()).unwrap();
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

    /// Wraps raw leak bytes (valid or not) for the exit, with a reply block
    /// as [`Sender::build`] makes.
    pub fn build_raw(
        &self,
        federation: &Federation,
        encode: impl FnOnce(MessageId, &leak_protocol::ReplyBlock) -> Vec<u8>,
    ) -> (leak_protocol::Packet, Sent) {
        let (forward, reply, mailbox_node) = Self::paths(federation, (0, 1));
        let capability = random32();
        let (reply_block, keys) = build_reply_block(
            &reply,
            MailboxId::from_capability(&capability),
            &mut rand::rng(),
        )
        .unwrap();
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
            if let Some(reply) = replies.first() {
                let opened = sent.keys.open(reply).unwrap();
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
