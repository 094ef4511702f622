//! An exit of the virtual federation: opens leaks, delivers each message
//! id once to a scripted mail server, and answers along the reply block.
//! When the server is down, the exit's own [`Schedule`] and
//! [`RetryPolicy`] (`leak_node::exit::retry`, the one home of its retries)
//! decide when each leak is tried again and when it is given up.

use std::collections::HashMap;

use leak_node::exit::{
    retry::{Decision, RetryPolicy},
    schedule::Schedule,
};
use leak_protocol::{Leak, MessageId, NodeId, Outcome, Packet, Receipt, ReplyBlock};
use rand::{RngExt as _, rngs::StdRng};

/// What an exit's delivery round did.
#[derive(Debug, Default)]
pub(super) struct Delivered {
    /// Wake the exit again then.
    pub wake_at: Option<u64>,
    /// Receipts to send now.
    pub send: Vec<(NodeId, Packet)>,
}

/// A window during which the exit's mail server answers 4xx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailOutage {
    /// From (Unix ms).
    pub from_ms: u64,
    /// Until (Unix ms, excluded).
    pub until_ms: u64,
}

/// An email the exit's mail server accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// When (Unix ms).
    pub at_ms: u64,
    /// The leak's id.
    pub message_id: MessageId,
    /// To whom.
    pub recipient: String,
    /// The text.
    pub text: String,
    /// Delivery attempts it took.
    pub attempts: u32,
}

struct Queued {
    leak: Leak,
    accepted_ms: u64,
    attempts: u32,
}

/// The exit role of a virtual relay.
pub struct VirtualExit {
    queue: HashMap<MessageId, Queued>,
    done: HashMap<MessageId, Outcome>,
    deliveries: Vec<Delivery>,
    outages: Vec<MailOutage>,
    schedule: Schedule,
    retry: RetryPolicy,
    /// Leaks that arrived again after they were queued or finished.
    pub repeats: u64,
    /// Failed delivery attempts (server down).
    pub deferrals: u64,
}

impl VirtualExit {
    pub(super) fn new() -> Self {
        let config = leak_node::Config::defaults(std::path::PathBuf::new());
        Self {
            queue: HashMap::new(),
            done: HashMap::new(),
            deliveries: Vec::new(),
            outages: Vec::new(),
            schedule: Schedule::default(),
            retry: RetryPolicy::from_config(&config),
            repeats: 0,
            deferrals: 0,
        }
    }

    /// What it delivered.
    pub fn deliveries(&self) -> &[Delivery] {
        &self.deliveries
    }

    /// How a leak ended here, if it did.
    pub fn outcome(&self, id: &MessageId) -> Option<&Outcome> {
        self.done.get(id)
    }

    /// Leaks waiting for delivery.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    pub(super) fn add_outage(&mut self, outage: MailOutage) {
        self.outages.push(outage);
    }

    fn server_down(&self, now_ms: u64) -> bool {
        self.outages
            .iter()
            .any(|o| (o.from_ms..o.until_ms).contains(&now_ms))
    }

    /// Takes a leak in: queued for after its delay; a repeat of a finished
    /// one is answered at once with the recorded outcome, a repeat of a
    /// queued one brings its newer reply block.
    pub(super) fn ingest(
        &mut self,
        now_ms: u64,
        message: &[u8],
        delay: leak_protocol::Delay,
    ) -> (Option<u64>, Vec<(NodeId, Packet)>) {
        let Ok(leak) = Leak::decode(message) else {
            return (None, Vec::new());
        };
        let id = leak.message_id;
        if let Some(outcome) = self.done.get(&id) {
            self.repeats += 1;
            return (None, answer(leak.reply_block, id, outcome.clone()));
        }
        if let Some(queued) = self.queue.get_mut(&id) {
            self.repeats += 1;
            queued.leak.reply_block = leak.reply_block;
            return (None, Vec::new());
        }
        let next_ms = now_ms + u64::from(delay.as_millis());
        self.queue.insert(
            id,
            Queued {
                leak,
                accepted_ms: now_ms,
                attempts: 0,
            },
        );
        self.schedule.insert(next_ms, id);
        (Some(next_ms), Vec::new())
    }

    /// Tries every leak that is due.
    pub(super) fn deliver_due(&mut self, now_ms: u64, rng: &mut StdRng) -> Delivered {
        let mut out = Delivered::default();
        let down = self.server_down(now_ms);
        while let Some(id) = self.schedule.take_due(now_ms, |_| false) {
            self.schedule.landed(&id);
            let Some(mut queued) = self.queue.remove(&id) else {
                continue;
            };
            queued.attempts += 1;
            let outcome = if down {
                self.deferrals += 1;
                match self.retry.after_failure(
                    queued.attempts,
                    queued.accepted_ms,
                    now_ms,
                    rng.random::<f64>(),
                ) {
                    Decision::RetryAt(at_ms) => {
                        self.schedule.insert(at_ms, id);
                        self.queue.insert(id, queued);
                        continue;
                    }
                    Decision::GiveUp => Outcome::Bounced,
                }
            } else {
                self.deliveries.push(Delivery {
                    at_ms: now_ms,
                    message_id: id,
                    recipient: queued.leak.recipient.as_str().to_owned(),
                    text: queued.leak.text.clone(),
                    attempts: queued.attempts,
                });
                Outcome::Delivered
            };
            self.done.insert(id, outcome.clone());
            out.send
                .extend(answer(queued.leak.reply_block, id, outcome));
        }
        out.wake_at = self.schedule.next_at(|_| false);
        out
    }
}

fn answer(reply_block: ReplyBlock, id: MessageId, outcome: Outcome) -> Vec<(NodeId, Packet)> {
    let receipt = Receipt {
        message_id: id,
        outcome,
    };
    receipt
        .encode()
        .ok()
        .and_then(|bytes| reply_block.into_packet(&bytes).ok())
        .into_iter()
        .collect()
}
