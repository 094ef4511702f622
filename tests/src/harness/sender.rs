//! A sender of the virtual federation: `leak-client`'s exit choice, path
//! rules and retransmission policy, real packets and reply blocks.

use leak_client::path::{self, RouteRequest};
use leak_protocol::{
    MailboxId, MessageId, NodeId, Outcome, Packet, Receipt, Recipient, Relationship, ReplyKeys,
    directory::Descriptor,
    payload::Stamp,
    seal::{LeakContents, seal_leak},
};
use rand::{RngExt as _, rngs::StdRng};

use super::settings::Settings;

/// A sender, by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SenderId(pub usize);

struct Attempt {
    mailbox_node: NodeId,
    mailbox: [u8; 32],
    keys: ReplyKeys,
}

/// A leak a sender sent, and how it went.
pub struct SentLeak {
    /// Its id.
    pub message_id: MessageId,
    recipient: Recipient,
    text: String,
    exit: Option<Descriptor>,
    entry: Option<NodeId>,
    used: Vec<NodeId>,
    attempts: Vec<Attempt>,
    /// When the sender first handed it to its entry (Unix ms).
    pub first_sent_ms: u64,
    /// The receipt and when it was read.
    pub receipt: Option<(Outcome, u64)>,
    /// When the sender stopped waiting without a receipt.
    pub gave_up_ms: Option<u64>,
    /// Why no packet could be built, if none could.
    pub error: Option<String>,
}

impl SentLeak {
    /// A receipt came, or the sender gave up.
    pub fn ended(&self) -> bool {
        self.receipt.is_some() || self.gave_up_ms.is_some() || self.error.is_some()
    }

    /// Packets sent for it.
    pub fn attempts(&self) -> usize {
        self.attempts.len()
    }
}

/// Built attempt, ready to hand to the entry.
pub(super) struct Built {
    pub entry: NodeId,
    pub packet: Packet,
    pub path_delay_ms: u64,
}

#[derive(Default)]
pub(super) struct VirtualSender {
    leaks: Vec<SentLeak>,
}

impl VirtualSender {
    pub(super) fn leak(&self, index: usize) -> &SentLeak {
        &self.leaks[index]
    }

    pub(super) fn settled(&self) -> bool {
        self.leaks.iter().all(SentLeak::ended)
    }

    pub(super) fn start(
        &mut self,
        to: &str,
        text: &str,
        directory: &[Descriptor],
        now_ms: u64,
        rng: &mut StdRng,
    ) -> usize {
        let policy_version = directory
            .iter()
            .find_map(|d| d.exit.as_ref().map(|e| e.policy_version))
            .unwrap_or(0);
        let recipient = Recipient::parse(to).expect("a valid recipient");
        // The exit responsible for the recipient, as the client chooses it.
        let hash = leak_protocol::policy::Policy::builtin().recipient_hash(&recipient);
        let exit = path::choose_exit(directory, policy_version, Some(&hash), now_ms, rng);
        let error = exit.as_ref().err().map(ToString::to_string);
        self.leaks.push(SentLeak {
            message_id: MessageId(rng.random()),
            recipient,
            text: text.to_owned(),
            exit: exit.ok().map(|e| e.descriptor),
            entry: None,
            used: Vec::new(),
            attempts: Vec::new(),
            first_sent_ms: now_ms,
            receipt: None,
            gave_up_ms: None,
            error,
        });
        self.leaks.len() - 1
    }

    pub(super) fn build_attempt(
        &mut self,
        index: usize,
        directory: &[Descriptor],
        settings: &Settings,
        now_ms: u64,
        rng: &mut StdRng,
    ) -> Option<Built> {
        let leak = &mut self.leaks[index];
        let exit = leak.exit.clone()?;
        // The exit's newest descriptor (its keys rotate).
        let exit = directory
            .iter()
            .find(|d| d.node == exit.node)
            .cloned()
            .unwrap_or(exit);
        let route = match path::choose_route(
            directory,
            &RouteRequest {
                hops: settings.hops,
                mean_delay_ms: settings.mean_delay_ms,
                now_ms,
                exit: &exit,
                entry: leak.entry,
                avoid: &leak.used,
                exclude: &[],
            },
            rng,
        ) {
            Ok(route) => route,
            Err(e) => {
                leak.error = Some(e.to_string());
                return None;
            }
        };
        let capability: [u8; 32] = rng.random();
        let mailbox = MailboxId::from_capability(&capability);
        let sealed = seal_leak(
            &LeakContents {
                message_id: leak.message_id,
                recipient: &leak.recipient,
                relationship: Relationship::Friend,
                text: &leak.text,
                policy_version: settings.policy_version,
                stamp: Stamp { epoch: 0, nonce: 0 },
                answer_to: None,
            },
            &route.forward,
            &route.reply,
            mailbox,
            rng,
        )
        .ok()?;
        let (packet, keys) = (sealed.packet, sealed.reply_keys);
        leak.entry = Some(route.entry());
        leak.used.extend(route.middles().iter().map(|h| h.node));
        leak.used
            .extend(route.reply[..route.reply.len() - 1].iter().map(|h| h.node));
        leak.attempts.push(Attempt {
            mailbox_node: route.mailbox_node(),
            mailbox: mailbox.0,
            keys,
        });
        Some(Built {
            entry: route.entry(),
            packet,
            path_delay_ms: route.total_delay_ms(),
        })
    }

    pub(super) fn mailboxes(&self, index: usize) -> Vec<(NodeId, [u8; 32], usize)> {
        self.leaks[index]
            .attempts
            .iter()
            .enumerate()
            .map(|(i, a)| (a.mailbox_node, a.mailbox, i))
            .collect()
    }

    pub(super) fn open_reply(&mut self, index: usize, attempt: usize, reply: &[u8], now_ms: u64) {
        let leak = &mut self.leaks[index];
        let Some(a) = leak.attempts.get(attempt) else {
            return;
        };
        let Ok(bytes) = a.keys.open(reply) else {
            return;
        };
        if let Ok(receipt) = Receipt::decode(&bytes)
            && receipt.message_id == leak.message_id
            && leak.receipt.is_none()
        {
            leak.receipt = Some((receipt.outcome, now_ms));
        }
    }

    pub(super) fn give_up(&mut self, index: usize, now_ms: u64) {
        let leak = &mut self.leaks[index];
        if !leak.ended() {
            leak.gave_up_ms = Some(now_ms);
        }
    }
}
