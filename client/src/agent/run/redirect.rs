//! A leak refused as `exit.not_responsible` goes to the responsible exit.
//!
//! One exit is responsible for each recipient (rendezvous hashing over the
//! exits of the directory), and the agent sends a leak through the one its
//! directory names. When exits join or leave, the agent's directory (fetched
//! every `agent.directory_refresh_secs`) can name another exit than the
//! exits' own directories do, and the exit refuses the leak as
//! `exit.not_responsible`: it never reached a recipient, so nothing was
//! delivered. The agent then fetches the directory at once and, once it
//! names another exit, solves a stamp for that exit (off the emitting task,
//! as for a new leak) and sends the same leak, under the same message id,
//! through it. Once only: a second such refusal ends the leak. When the
//! fresh directory still names the same exit, the agent waits for the next
//! directories until [`REDIRECT_WAIT_MS`] is up, then ends the leak with the
//! refusal.

use leak_protocol::{NodeId, Outcome, Recipient, payload::Stamp, policy};
use libp2p::PeerId;

use super::{Agent, Event, log, peer_id_of, solve_stamp_aside, unix_ms};
use crate::{agent::outbox::OutboxError, path, state::Finished};

/// How long a refused leak waits for a directory that names another exit.
pub const REDIRECT_WAIT_MS: u64 = 3_600_000;

/// The rule of the refusal that sends a leak to another exit.
pub const NOT_RESPONSIBLE: &str = "exit.not_responsible";

/// A refused leak waiting for its responsible exit.
#[derive(Debug, Clone)]
pub struct Redirect {
    /// The refusal, should no other exit be found in time.
    refusal: Outcome,
    /// Until when to look for another exit (Unix ms).
    until_ms: u64,
    /// A stamp is being solved for the new exit.
    solving: bool,
}

/// The new exit of a refused leak, with its stamp solved.
#[derive(Debug)]
pub struct Restamped {
    /// The leak.
    pub message_id: String,
    /// The exit responsible for its recipient now.
    pub exit_node: NodeId,
    /// Its peer id.
    pub exit_peer: PeerId,
    /// Its mail domain.
    pub exit_domain: String,
    /// The stamp for that exit (or why it could not be solved).
    pub stamp: Result<Stamp, String>,
}

/// Whether `outcome` sends a leak to another exit.
pub fn is_not_responsible(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Refused { rule, .. } if rule == NOT_RESPONSIBLE)
}

impl Agent {
    /// Handles a receipt refusing leak `id` as `exit.not_responsible`: true
    /// when the leak waits for another exit (the receipt is not its end).
    pub(super) fn redirect_on_refusal(&mut self, id: &str, outcome: &Outcome) -> bool {
        if !is_not_responsible(outcome) {
            return false;
        }
        // Parked already: another attempt's refusal is old news.
        if self.redirects.contains_key(id) {
            return true;
        }
        let Some(entry) = self.entries.iter_mut().find(|e| e.message_id == id) else {
            return false;
        };
        if entry.redirected {
            return false;
        }
        let now = unix_ms();
        let until_ms = now + REDIRECT_WAIT_MS;
        entry.redirected = true;
        entry.redirect_until_ms = Some(until_ms);
        // Receipts of the earlier attempts (the refusing exit answering a
        // retransmission) are not this leak's news any more: their keys go.
        if let Some((_, keys)) = self.leaks.get_mut(id) {
            keys.clear();
        }
        // Parked: no attempt leaves, and it does not expire, until a new
        // exit is found (or the wait is up).
        entry.next_at_ms = u64::MAX;
        if let Err(e) = self.outbox.update(entry) {
            log(format!("cannot update the outbox: {e}"));
        }
        // Nor after a restart: the record forgets the earlier attempts'
        // receipt keys too.
        if let Ok(mut record) = self.state.load(id) {
            for attempt in &mut record.attempts {
                attempt.secrets = None;
            }
            if let Err(e) = self.state.save(&record) {
                log(format!("recording a parked leak: {e:#}"));
            }
        }
        self.redirects.insert(
            id.to_owned(),
            Redirect {
                refusal: outcome.clone(),
                until_ms,
                solving: false,
            },
        );
        log(
            "an exit refused a leak as not responsible for its recipient: fetching the directory to send it through the one that is",
        );
        // A fetch in flight (`u64::MAX`) brings the directory anyway.
        if self.next_directory_ms != u64::MAX {
            self.next_directory_ms = now;
        }
        true
    }

    /// Leaks parked by an earlier run (see [`Self::redirect_on_refusal`])
    /// wait again, until the time they were given.
    pub(super) fn resume_redirects(&mut self) {
        for entry in &self.entries {
            if let Some(until_ms) = entry.redirect_until_ms {
                self.redirects.insert(
                    entry.message_id.clone(),
                    Redirect {
                        refusal: Outcome::Refused {
                            rule: NOT_RESPONSIBLE.to_owned(),
                            reason: "another exit delivers to this recipient, and none could be found in time".to_owned(),
                        },
                        until_ms,
                        solving: false,
                    },
                );
            }
        }
    }

    /// After a directory arrived: each parked leak whose responsible exit
    /// is now another gets a stamp for it; one whose wait is up ends.
    pub(super) fn continue_redirects(&mut self) {
        let now = unix_ms();
        let ids: Vec<String> = self.redirects.keys().cloned().collect();
        for id in ids {
            let Some(redirect) = self.redirects.get(&id).cloned() else {
                continue;
            };
            if redirect.solving {
                continue;
            }
            let ending = match self.responsible_exit_now(&id, now) {
                Ok(Some(target)) => {
                    self.restamp(&id, target, now);
                    None
                }
                // Its text is gone (the machine restarted): it never left
                // through a responsible exit and cannot now.
                Err(OutboxError::Lost) => Some(Finished::Lost),
                _ if now >= redirect.until_ms => {
                    log("no other exit took a refused leak in time: it ends refused");
                    Some(Finished::Receipt {
                        receipt: redirect.refusal,
                    })
                }
                _ => None,
            };
            if let Some(result) = ending {
                match self.finish(&id, result) {
                    Ok(()) => {
                        self.redirects.remove(&id);
                    }
                    Err(e) => log(format!("recording a refused leak: {e:#}")),
                }
            }
        }
    }

    /// The exit the directory names for leak `id`'s recipient, when it is
    /// not the one that refused it; the outbox's error when its secret
    /// cannot be read.
    fn responsible_exit_now(
        &self,
        id: &str,
        now: u64,
    ) -> Result<Option<(NodeId, PeerId, String, u8)>, OutboxError> {
        let secret = self.outbox.secret(id)?;
        Ok(self.exit_for(id, &secret.recipient, now))
    }

    fn exit_for(
        &self,
        id: &str,
        recipient: &str,
        now: u64,
    ) -> Option<(NodeId, PeerId, String, u8)> {
        let entry = self.entries.iter().find(|e| e.message_id == id)?;
        let directory = self.directory.as_ref()?;
        let recipient = Recipient::parse(recipient).ok()?;
        let hash = self.policy.recipient_hash(&recipient);
        let choice = path::choose_exit(
            &directory.nodes,
            self.policy.version(),
            Some(&hash),
            now,
            &mut rand::rng(),
        )
        .ok()?;
        let node = choice.descriptor.node;
        if Some(node) == entry.exit() {
            return None;
        }
        let info = choice.descriptor.exit.as_ref()?;
        let bits = info.stamp_bits_for(self.policy.limits().stamp_bits);
        Some((node, peer_id_of(&node)?, info.domain.clone(), bits))
    }

    /// Solves leak `id`'s stamp for its new exit on a blocking thread;
    /// [`Event::Restamped`] brings it back.
    fn restamp(&mut self, id: &str, target: (NodeId, PeerId, String, u8), now: u64) {
        let Some(redirect) = self.redirects.get_mut(id) else {
            return;
        };
        let (Ok(secret), Some(entry)) = (
            self.outbox.secret(id),
            self.entries.iter().find(|e| e.message_id == id),
        ) else {
            return;
        };
        let Some(message_id) = entry.id() else {
            return;
        };
        let Ok(recipient) = Recipient::parse(&secret.recipient) else {
            return;
        };
        redirect.solving = true;
        let hash = self.policy.recipient_hash(&recipient);
        let (exit_node, exit_peer, exit_domain, bits) = target;
        let epoch = now / 1000 / policy::STAMP_EPOCH_SECS;
        let tx = self.tx.clone();
        let message = id.to_owned();
        tokio::spawn(async move {
            let stamp = solve_stamp_aside(hash, exit_node, epoch, bits, message_id).await;
            let _ = tx
                .send(Event::Restamped(Box::new(Restamped {
                    message_id: message,
                    exit_node,
                    exit_peer,
                    exit_domain,
                    stamp,
                })))
                .await;
        });
    }

    /// A parked leak's new exit and stamp: it leaves through that exit
    /// (its attempts counted afresh), and its record and a conversation it
    /// began name that exit.
    pub(super) fn on_restamped(&mut self, r: Restamped) {
        let stamp = match r.stamp {
            Ok(stamp) => stamp,
            Err(e) => {
                if let Some(redirect) = self.redirects.get_mut(&r.message_id) {
                    redirect.solving = false;
                }
                log(format!("a refused leak's new stamp: {e}"));
                return;
            }
        };
        if self.redirects.remove(&r.message_id).is_none() {
            return;
        }
        let now = unix_ms();
        let Some(entry) = self
            .entries
            .iter_mut()
            .find(|e| e.message_id == r.message_id)
        else {
            return;
        };
        entry.exit_node = hex::encode(r.exit_node.0);
        entry.stamp_epoch = stamp.epoch;
        entry.stamp_nonce = stamp.nonce;
        entry.attempts_sent = 0;
        entry.redirect_until_ms = None;
        entry.next_at_ms = now;
        let entry = entry.clone();
        let result = self
            .outbox
            .update(&entry)
            .map_err(anyhow::Error::from)
            .and_then(|()| {
                let mut record = self.state.load(&r.message_id)?;
                for attempt in &mut record.attempts {
                    attempt.secrets = None;
                }
                record.exit.peer = r.exit_peer.to_string();
                record.exit.domain.clone_from(&r.exit_domain);
                self.state.save(&record)
            })
            .and_then(|()| {
                // A conversation this leak began lives at the new exit; one
                // with earlier messages or answers stays where it is.
                let Some(label) = &entry.thread else {
                    return Ok(());
                };
                let mut thread = self.threads.load(label)?;
                if thread.answers.is_empty() && thread.sent_days.len() <= 1 {
                    thread.exit_node = hex::encode(r.exit_node.0);
                    thread.exit_domain = r.exit_domain.clone();
                    self.threads.save(&thread)?;
                }
                Ok(())
            });
        self.entries.sort_by_key(|e| e.next_at_ms);
        match result {
            Ok(()) => log("a refused leak goes through the exit responsible for its recipient now"),
            Err(e) => log(format!("recording a leak's new exit: {e:#}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use leak_protocol::{MessageId, Relationship, policy::Policy};
    use zeroize::Zeroizing;

    use super::*;
    use crate::{
        agent::run::{Accepted, Agent},
        config::Config,
        state::StateDir,
    };

    fn refused() -> Outcome {
        Outcome::Refused {
            rule: NOT_RESPONSIBLE.to_owned(),
            reason: "another exit delivers to this recipient".to_owned(),
        }
    }

    /// An agent on `root` (no network is used) holding one leak, sent once.
    fn agent_with_a_sent_leak(root: &std::path::Path) -> (Agent, String) {
        let state = StateDir::open(root).unwrap();
        let mut agent = Agent::new(Config::default(), state, Policy::builtin()).unwrap();
        let exit = NodeId(leak_protocol::crypto::ed25519_public(&[5; 32]));
        let accepted = Accepted {
            recipient: Recipient::parse("moved@example.com").unwrap(),
            relationship: Relationship::Friend,
            text: Zeroizing::new("I kept the postcard.".to_owned()),
            hops: 4,
            created_at_ms: unix_ms(),
            exit_node: exit,
            exit_peer: peer_id_of(&exit).unwrap(),
            exit_domain: "a.example".to_owned(),
            stamp_bits: 0,
            release_at_ms: unix_ms(),
            message_id: MessageId([9; 16]),
            thread: None,
        };
        agent.store(accepted, Stamp { epoch: 1, nonce: 2 }).unwrap();
        let id = MessageId([9; 16]).to_string();
        agent.after_attempt(&id, true).unwrap();
        (agent, id)
    }

    fn entry(agent: &Agent, id: &str) -> crate::agent::outbox::OutboxEntry {
        agent
            .entries
            .iter()
            .find(|e| e.message_id == id)
            .unwrap()
            .clone()
    }

    #[tokio::test]
    async fn a_refused_leak_is_parked_once_and_survives_a_restart_until_its_time() {
        let dir = tempfile::tempdir().unwrap();
        let (mut agent, id) = agent_with_a_sent_leak(dir.path());
        // Another refusal is not a redirect; this one is.
        let other = Outcome::Refused {
            rule: "threat.direct".to_owned(),
            reason: "r".to_owned(),
        };
        assert!(!agent.redirect_on_refusal(&id, &other));
        assert!(agent.redirect_on_refusal(&id, &refused()));
        let parked = entry(&agent, &id);
        assert_eq!(parked.next_at_ms, u64::MAX);
        assert!(parked.redirected && parked.redirect_until_ms.is_some());
        // The earlier attempts' receipt keys are gone, on disk too.
        assert!(agent.leaks[&id].1.is_empty());
        let record = agent.state.load(&id).unwrap();
        assert!(record.attempts.iter().all(|a| a.secrets.is_none()));
        // A late refusal of an earlier attempt is old news.
        assert!(agent.redirect_on_refusal(&id, &refused()));
        // An attempt that was in flight comes back: still parked.
        agent.after_attempt(&id, true).unwrap();
        assert_eq!(entry(&agent, &id).next_at_ms, u64::MAX);
        // No directory names another exit: nothing happens before its time.
        agent.continue_redirects();
        assert!(agent.redirects.contains_key(&id));
        assert!(agent.state.load(&id).unwrap().outcome.is_none());

        // A restart: still parked, with the same deadline.
        let until = parked.redirect_until_ms.unwrap();
        drop(agent);
        let state = StateDir::open(dir.path()).unwrap();
        let mut agent = Agent::new(Config::default(), state, Policy::builtin()).unwrap();
        assert_eq!(agent.redirects[&id].until_ms, until);
        assert_eq!(entry(&agent, &id).next_at_ms, u64::MAX);

        // Its time is up (made so here): it ends refused, its files go.
        agent.redirects.get_mut(&id).unwrap().until_ms = 0;
        agent.continue_redirects();
        assert!(!agent.redirects.contains_key(&id));
        assert!(agent.entries.is_empty());
        assert!(
            agent.state.load(&id).is_err(),
            "ended: only its summary is left"
        );
        let (ended, _) = agent.state.list_ended().unwrap();
        assert!(matches!(
            &ended[0].1.result,
            Finished::Receipt { receipt } if is_not_responsible(receipt)
        ));
        agent.outbox.close().unwrap(); // nothing waits: the key file goes
        // A second refusal of a leak redirected once ends it.
        let dir = tempfile::tempdir().unwrap();
        let (mut agent, id) = agent_with_a_sent_leak(dir.path());
        agent.entries.iter_mut().for_each(|e| e.redirected = true);
        assert!(!agent.redirect_on_refusal(&id, &refused()));
        if let Some(crate::agent::outbox_key::KeyPlace::Memory(key)) =
            agent.outbox.key().map(|k| k.place().clone())
        {
            std::fs::remove_file(key).unwrap();
        }
    }

    #[test]
    fn only_the_responsibility_refusal_redirects() {
        let refused = |rule: &str| Outcome::Refused {
            rule: rule.to_owned(),
            reason: "r".to_owned(),
        };
        assert!(is_not_responsible(&refused("exit.not_responsible")));
        assert!(!is_not_responsible(&refused("threat.direct")));
        assert!(!is_not_responsible(&refused("limits.per_recipient")));
        assert!(!is_not_responsible(&Outcome::Delivered));
    }
}
