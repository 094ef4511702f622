//! Fetching a leak's receipt from the mailboxes its attempts named.
//!
//! Each attempt's reply block ends at a mailbox on its entry relay; the
//! client fetches it with the attempt's capability (the relay deletes what
//! it hands over), strips the reply's layers with the attempt's keys and
//! decodes the exit's [`Receipt`]. A reply that does not open, does not
//! decode or answers another message id is ignored: only the exit that got
//! this leak can have sealed a valid one.

use std::time::Duration;

use leak_net::Peer;
use leak_protocol::{MessageId, Outcome, Receipt};
use libp2p::{Multiaddr, PeerId};

use crate::{directory::short_network_error, state::LeakRecord};

/// What one round of fetching found.
#[derive(Debug, Default)]
pub struct Poll {
    /// The exit's answer, if it arrived.
    pub outcome: Option<Outcome>,
    /// Mailboxes that could not be fetched, with why.
    pub errors: Vec<String>,
    /// Replies that were not a valid receipt for this leak.
    pub ignored: usize,
}

/// Fetches every mailbox of `record`'s sent attempts once.
pub async fn poll(peer: &Peer, record: &LeakRecord, timeout: Duration) -> Poll {
    let mut result = Poll::default();
    let Ok(message_id) = record.id() else {
        result.errors.push("corrupt message id".into());
        return result;
    };
    for attempt in record.attempts.iter().filter(|a| a.sent) {
        let Some(secrets) = &attempt.secrets else {
            continue;
        };
        let (Ok(capability), Ok(keys)) = (secrets.capability(), secrets.reply_keys()) else {
            result.errors.push("corrupt stored secrets".into());
            continue;
        };
        let Ok(mailbox) = attempt.mailbox_peer.parse::<PeerId>() else {
            result.errors.push("corrupt mailbox peer id".into());
            continue;
        };
        let addresses: Vec<Multiaddr> = attempt
            .mailbox_addresses
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect();
        peer.add_node(mailbox, addresses);
        let replies =
            match tokio::time::timeout(timeout, peer.fetch_mailbox(mailbox, &capability)).await {
                Ok(Ok(replies)) => replies,
                Ok(Err(e)) => {
                    result
                        .errors
                        .push(format!("mailbox at {mailbox}: {}", short_network_error(&e)));
                    continue;
                }
                Err(_) => {
                    result
                        .errors
                        .push(format!("mailbox at {mailbox}: no answer"));
                    continue;
                }
            };
        for reply in replies {
            match open_receipt(&keys, &reply, message_id) {
                Some(outcome) if result.outcome.is_none() => result.outcome = Some(outcome),
                Some(_) => {}
                None => result.ignored += 1,
            }
        }
    }
    result
}

/// Opens one reply: the outcome if it is a receipt for `message_id`.
pub fn open_receipt(
    keys: &leak_protocol::ReplyKeys,
    reply: &[u8],
    message_id: MessageId,
) -> Option<Outcome> {
    let opened = keys.open(reply).ok()?;
    let receipt = Receipt::decode(&opened).ok()?;
    (receipt.message_id == message_id).then_some(receipt.outcome)
}
