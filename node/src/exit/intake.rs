//! Intake: a leak that ended here is refused, answered again, or accepted
//! durably, one at a time and in order; and the receipts sent back.

use std::{sync::Arc, time::Duration};

use leak_protocol::{
    BounceClass, Delay, Leak, MessageId, Outcome, Receipt, ReplyBlock, directory,
    payload::{LeakDecodeError, MAX_REASON_LEN, MAX_RULE_LEN, PayloadError},
    policy::{self, Verdict},
};
use tokio::sync::{mpsc, watch};

use super::{
    DAY_MS, Exit, ExitDelivery, ExitError,
    schedule::receipt_delay_ms,
    state::{EndState, Intake},
    store::{Done, Entry, Known},
};
use crate::metrics::Metrics;

/// A refusal's rule name for an invalid leak.
fn invalid_rule(error: &PayloadError) -> &'static str {
    match error {
        PayloadError::Recipient(_) => "format.recipient",
        PayloadError::Text(_) => "format.text",
        PayloadError::InvalidUtf8(_) => "format.utf8",
        PayloadError::UnknownRelationship(_) => "format.relationship",
        _ => "format",
    }
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

fn refused(rule: &str, reason: &str) -> Outcome {
    Outcome::Refused {
        rule: truncate(rule, MAX_RULE_LEN),
        reason: truncate(reason, MAX_REASON_LEN),
    }
}

impl Exit {
    fn count(&self, intake: Intake) {
        Metrics::count_as(&self.metrics.exit_leaks, "outcome", &intake);
    }

    /// Sends `outcome` back along `reply_block`, after `delay` (the exit
    /// hop's own delay for an answer given at once) plus the receipt delay:
    /// exponential with mean `exit.receipt_delay_ms`, so the time a receipt
    /// leaves says nothing precise of when its leak arrived or was
    /// delivered. The node's timer holds it meanwhile.
    pub(super) fn answer(
        &self,
        reply_block: ReplyBlock,
        id: MessageId,
        outcome: Outcome,
        delay: Duration,
    ) {
        let receipt = Receipt {
            message_id: id,
            outcome,
        };
        let packet = match receipt.encode() {
            Ok(bytes) => reply_block.into_packet(&bytes).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match packet {
            Ok((first_hop, packet)) => {
                self.metrics.exit_receipts.inc();
                let due_ms = self
                    .now_ms()
                    .saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
                    .saturating_add(receipt_delay_ms(
                        self.config.exit.receipt_delay_ms,
                        &mut rand::rng(),
                    ));
                (self.send_packet)(first_hop, packet, due_ms);
            }
            Err(e) => tracing::warn!(error = %e, "cannot build a receipt"),
        }
    }

    /// Stores how the leak with key `key` ended at intake.
    fn record(&self, key: MessageId, outcome: Outcome, state: EndState) -> Result<(), ExitError> {
        self.store.record(
            &key,
            &Done {
                outcome,
                state,
                at_ms: self.now_ms(),
            },
        )
    }

    /// The refusal of a leak whose anti-abuse stamp is not valid for this
    /// exit, its recipient and id, today (one day either way) and the
    /// policy's difficulty. One hash: this is the first thing the exit does
    /// with a leak.
    ///
    /// Under load the exit asks more than the policy's bits
    /// ([`super::surcharge`]): the fewest it announced in its descriptor
    /// within the grace. A leak that passes counts towards the load.
    fn check_stamp(&self, leak: &Leak, recipient: &[u8; 32], now_ms: u64) -> Option<Outcome> {
        let extra = self.lock_surcharge().required(now_ms);
        let bits = self
            .policy()
            .limits()
            .stamp_bits
            .saturating_add(extra)
            .min(policy::MAX_STAMP_BITS);
        if bits == 0 {
            return None;
        }
        let epoch = now_ms / 1000 / policy::STAMP_EPOCH_SECS;
        let error = policy::verify_stamp(
            &leak.stamp,
            recipient,
            &self.node_id,
            &leak.message_id,
            bits,
            epoch,
        )
        .err();
        let Some(error) = error else {
            self.lock_surcharge().record(now_ms);
            return None;
        };
        Some(refused(
            "stamp",
            &format!("the anti-abuse stamp is not valid: {error}"),
        ))
    }

    fn lock_surcharge(&self) -> std::sync::MutexGuard<'_, super::surcharge::Surcharge> {
        self.surcharge.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The leading zero bits this exit asks of a stamp now, the policy's
    /// and its load's, announced: the node signs them into its descriptor
    /// ([`leak_protocol::directory::ExitInfo::stamp_bits`]).
    pub fn announce_stamp_bits(&self) -> u8 {
        let extra = self.lock_surcharge().announce(self.now_ms());
        self.policy()
            .limits()
            .stamp_bits
            .saturating_add(extra)
            .min(policy::MAX_STAMP_BITS)
    }

    /// Whether the load calls for other stamp bits than the descriptor
    /// announces (the node then publishes a new one).
    pub fn stamp_bits_changed(&self) -> bool {
        self.lock_surcharge().changed(self.now_ms())
    }

    /// Where the exit keeps the leak with id `id`, if it knows it: the key
    /// it is stored under (the current secret's or the previous one's,
    /// [`super::dedup`]) and what is known; a new leak gets the current key.
    pub(super) fn locate(&self, id: &MessageId) -> Result<(MessageId, Known), ExitError> {
        for key in self.keys.candidates(id) {
            match self.store.lookup(&key)? {
                Known::New => {}
                known => return Ok((key, known)),
            }
        }
        Ok((self.keys.current(id), Known::New))
    }

    /// The refusal of a leak whose recipient another exit is responsible
    /// for ([`directory::responsible_exit`]), in this node's directory,
    /// among the exits of this exit's policy version: the recipient's
    /// cap, count and opt-outs live there. An exit that is not among them
    /// (the roster in force does not admit it, or removed it; its
    /// descriptor lists another policy version) refuses every leak one of
    /// them could take: it knows neither the counts nor the opt-outs. Only
    /// while no exit at all is listed (a federation's first moments) does
    /// it take the leak.
    fn misdirected(&self, leak: &Leak, now_ms: u64) -> Option<Outcome> {
        let policy = self.policy();
        let nodes = (self.directory)();
        let now_secs = now_ms / 1000;
        let listed = nodes.iter().any(|d| {
            d.node == self.node_id && directory::is_exit_for(d, policy.version(), now_secs)
        });
        if !listed {
            let others = nodes
                .iter()
                .any(|d| directory::is_exit_for(d, policy.version(), now_secs));
            return others.then(|| {
                refused(
                    "exit.not_responsible",
                    "this exit is not in the federation's directory: another exit delivers to this recipient; send it again once your directory is fresh",
                )
            });
        }
        let recipient = policy.recipient_hash(&leak.recipient);
        let responsible =
            directory::responsible_exit(&nodes, &recipient, policy.version(), now_secs)?;
        (responsible.node != self.node_id).then(|| {
            refused(
                "exit.not_responsible",
                "another exit delivers to this recipient: send it again once your directory is fresh",
            )
        })
    }

    /// Why the exit will not deliver `leak`, if it will not (its stamp is
    /// checked before, [`Exit::check_stamp`]), with how it ends and how it
    /// is counted. In order: an opt-out (from any exit: the answer that
    /// holds everywhere), the policy, an undeliverable address, another
    /// exit's recipient ([`Exit::misdirected`]), the day's cap.
    ///
    /// Opt-outs and the day's count are looked up under every hash the
    /// recipient may have been recorded under
    /// ([`Policy::recipient_lookup_hashes`](leak_protocol::policy::Policy::recipient_lookup_hashes)):
    /// a policy that normalises addresses further keeps what was recorded
    /// under the one before.
    fn judge(
        &self,
        leak: &Leak,
        now_ms: u64,
    ) -> Result<Option<(Outcome, EndState, Intake)>, ExitError> {
        let ends = |outcome, state| Ok(Some((outcome, state, Intake::refusal(state))));
        let policy = self.policy();
        let lookup = policy.recipient_lookup_hashes(&leak.recipient);
        for hash in &lookup {
            if self.store.opted_out(hash)? {
                return ends(Outcome::RecipientOptedOut, EndState::OptedOut);
            }
        }
        // Its server said recently that this mailbox does not exist.
        if self
            .store
            .suppressed(&policy.recipient_hash(&leak.recipient), now_ms)?
        {
            return Ok(Some((
                Outcome::BouncedWith(BounceClass::UnknownUser),
                EndState::Bounced,
                Intake::Suppressed,
            )));
        }
        let verdicts = std::iter::once(policy.check_text(&leak.text))
            .chain(self.local_rules.iter().map(|p| p.check_text(&leak.text)));
        for verdict in verdicts {
            if let Verdict::Refused(r) = verdict {
                return ends(refused(&r.rule, &r.reason), EndState::Refused);
            }
        }
        if leak
            .recipient
            .to_ascii_address()
            .parse::<lettre::Address>()
            .is_err()
        {
            return ends(
                refused(
                    "address.undeliverable",
                    "this exit cannot deliver to that address",
                ),
                EndState::Refused,
            );
        }
        let follows = match self.thread_verdict(leak, &lookup)? {
            super::answers::ThreadVerdict::Refuse(outcome) => {
                let state = if outcome == Outcome::ThreadEnded {
                    EndState::OptedOut
                } else {
                    EndState::Refused
                };
                return ends(outcome, state);
            }
            super::answers::ThreadVerdict::Continues => true,
            super::answers::ThreadVerdict::None => false,
        };
        // A follow-up's conversation and answers are here: the
        // responsibility rule does not send it elsewhere.
        if !follows && let Some(outcome) = self.misdirected(leak, now_ms) {
            return Ok(Some((outcome, EndState::Refused, Intake::NotResponsible)));
        }
        let policy_limit = policy.limits().per_recipient_per_day;
        let local_limit = self.config.exit.per_recipient_per_day;
        let limit = match (policy_limit, local_limit) {
            (0, l) | (l, 0) => l,
            (p, l) => p.min(l),
        };
        if limit > 0 {
            let mut today = 0;
            for hash in &lookup {
                today += self.store.rate_count(hash, now_ms / DAY_MS)?;
            }
            if today >= limit {
                return ends(Outcome::RateLimited, EndState::RateLimited);
            }
        }
        Ok(None)
    }

    /// Takes one leak that ended here: refuses, answers again, or accepts
    /// it durably. Runs on a blocking thread.
    ///
    /// The order is the attacker's cost first: a leak whose stamp is not
    /// valid is refused (answered, counted as `bad_stamp`, nothing stored)
    /// before the exit reads its database or runs the moderation model.
    /// A stamp is valid a day either way of the day it was made for, far
    /// longer than a client retransmits a leak, so a retransmission of a
    /// queued leak is never refused for its stamp. The store names a leak
    /// by its key ([`super::dedup`]); only receipts carry its id.
    fn ingest(&self, message: &[u8], delay: Delay) -> Result<(), ExitError> {
        let now = self.now_ms();
        if let Err(e) = self.keys.rotate(now) {
            tracing::error!(error = %e, "cannot rotate the exit's leak keys");
        }
        let hold = Duration::from_millis(u64::from(delay.as_millis()));
        if leak_protocol::payload::peek_kind(message) == Some(leak_protocol::payload::Kind::Fetch) {
            return self.serve_fetch(message, hold);
        }
        let leak = match Leak::decode_or_reject(message) {
            Ok(leak) => leak,
            Err(LeakDecodeError::Unanswerable(_)) => {
                self.count(Intake::Unanswerable);
                return Ok(());
            }
            // No client of ours sends one, and its stamp cannot be checked
            // (the recipient may not even parse): refused, with nothing
            // read or stored. A copy sent again is refused the same way.
            Err(LeakDecodeError::Invalid {
                message_id,
                reply_block,
                error,
            }) => {
                let outcome = refused(invalid_rule(&error), &error.to_string());
                self.count(Intake::Invalid);
                self.answer(*reply_block, message_id, outcome, hold);
                return Ok(());
            }
        };
        let recipient = self.policy().recipient_hash(&leak.recipient);
        if let Some(outcome) = self.check_stamp(&leak, &recipient, now) {
            self.count(Intake::BadStamp);
            self.answer(leak.reply_block, leak.message_id, outcome, hold);
            return Ok(());
        }
        let (key, known) = self.locate(&leak.message_id)?;
        match known {
            Known::Done(done) => {
                self.count(Intake::Duplicate);
                self.answer(leak.reply_block, leak.message_id, done.outcome, hold);
                return Ok(());
            }
            Known::Awaiting(_) => {
                // Sent, its notification awaited: the receipt goes along
                // the newest reply block when it is known.
                self.count(Intake::Duplicate);
                let block = leak.reply_block.to_bytes().to_vec();
                self.store.update_awaiting_block(&key, &block)?;
                return Ok(());
            }
            Known::Queued(_) => {
                // A retransmission: its reply block is the one to answer.
                self.count(Intake::Duplicate);
                let block = leak.reply_block.to_bytes().to_vec();
                self.store.update_with(&key, |e| e.reply_block = block)?;
                return Ok(());
            }
            Known::New => {}
        }
        if let Some((outcome, state, intake)) = self.judge(&leak, now)? {
            self.record(key, outcome.clone(), state)?;
            self.count(intake);
            self.answer(leak.reply_block, leak.message_id, outcome, hold);
            return Ok(());
        }
        let due = now + u64::from(delay.as_millis());
        let entry = Entry {
            accepted_ms: now,
            next_attempt_ms: due,
            attempts: 0,
            last_error: String::new(),
            reply_block: leak.reply_block.to_bytes().to_vec(),
        };
        // The conversation first: a crash after it leaves a conversation
        // whose email was never sent (it expires), never an email whose
        // answer link leads nowhere.
        self.open_thread(&leak, &recipient, now)?;
        self.store
            .accept(&key, message, &entry, &recipient, now / DAY_MS)?;
        self.count(Intake::Accepted);
        self.metrics.exit_queue.inc();
        let provider = super::provider::Provider::of_domain(leak.recipient.ascii_domain());
        self.lock_schedule().insert_to(due, key, provider);
        self.wake.notify_one();
        Ok(())
    }

    /// Takes the leaks the node hands over, in order, until shutdown.
    pub(super) async fn run_intake(
        self: Arc<Self>,
        mut incoming: mpsc::Receiver<ExitDelivery>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let delivery = tokio::select! {
                _ = shutdown.changed() => break,
                d = incoming.recv() => match d {
                    Some(d) => d,
                    None => break,
                },
            };
            let this = self.clone();
            let result =
                tokio::task::spawn_blocking(move || this.ingest(&delivery.message, delivery.delay))
                    .await;
            match result {
                Ok(Ok(())) => {}
                // The leak was not acknowledged: the client retransmits.
                Ok(Err(e)) => {
                    self.count(Intake::StorageError);
                    tracing::error!(error = %e, "cannot take a leak");
                }
                Err(e) => tracing::error!(error = %e, "the ingest thread failed"),
            }
        }
    }
}
