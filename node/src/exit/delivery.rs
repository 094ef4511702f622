//! Delivery: the loop that takes due leaks (as the [`Schedule`] and the
//! [`Pace`] allow), one attempt per leak, and what is recorded after it.
//! Every failed attempt ends in [`Exit::failed`], which asks the one
//! retry policy ([`super::retry`]) when to try again.
//!
//! [`Schedule`]: super::schedule::Schedule
//! [`Pace`]: super::schedule::Pace

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use leak_protocol::{BounceClass, Leak, MessageId, Outcome, ReplyBlock, payload::LeakDecodeError};
use lettre::address::Envelope;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::{
    DAY_MS, Exit, ExitError,
    provider::Provider,
    retry::{COMMIT_BACKOFF, Decision},
    smtp::{Attempt, Handoff},
    state::EndState,
    store::{Done, Entry, Known},
};
use crate::metrics::Metrics;

/// How often finished leaks and old counters are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Most leaks in flight at once per SMTP connection: being read, sent, or
/// waiting for their outcome's commit (which holds no connection).
const IN_FLIGHT_PER_CONNECTION: usize = 8;
/// An SMTP connection held by one leak's attempt, counted against the
/// leak's provider; both are given back when it is dropped (once the SMTP
/// exchange is over, before the outcome's commit).
pub(super) struct Connection {
    _permit: OwnedSemaphorePermit,
    _sending: ProviderSending,
}

/// One leak being sent to a provider ([`Exit::provider_sending`]).
pub(super) struct ProviderSending {
    counts: Arc<[AtomicUsize; 4]>,
    index: usize,
}

impl ProviderSending {
    fn start(counts: &Arc<[AtomicUsize; 4]>, provider: Provider) -> Self {
        counts[provider.index()].fetch_add(1, Ordering::AcqRel);
        Self {
            counts: counts.clone(),
            index: provider.index(),
        }
    }
}

impl Drop for ProviderSending {
    fn drop(&mut self) {
        self.counts[self.index].fetch_sub(1, Ordering::AcqRel);
    }
}

/// The code recorded for an attempt that failed on the exit's side (its
/// storage), not the mail server's.
const LOCAL_FAILURE: &str = "local";

impl Exit {
    /// Starts due leaks' attempts, at most `exit.smtp_connections` sending
    /// at once, until shutdown.
    pub(super) async fn run_delivery(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let connections = self.config.exit.smtp_connections.max(1) as usize;
        // A leak holds an SMTP connection only while it is sent: its
        // outcome's durable commit (grouped with others) and its receipt
        // follow without one, so the connection takes the next leak at once.
        let sending = Arc::new(Semaphore::new(connections));
        let max_in_flight = connections * IN_FLIGHT_PER_CONNECTION;
        let mut running = tokio::task::JoinSet::new();
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        loop {
            let mut wait_ms: u64 = 3_600_000;
            while running.len() < max_in_flight && !self.is_paused() {
                let Ok(permit) = sending.clone().try_acquire_owned() else {
                    break;
                };
                let now_ms = self.now_ms();
                let (mut blocked, ready_in) = self.blocked_providers(now_ms);
                // At most `exit.provider_connections` leaks to one provider
                // hold a connection at once: the others keep connections
                // free (a connection given back wakes this loop).
                let per_provider = self.config.exit.provider_connections.max(1) as usize;
                for (blocked, busy) in blocked.iter_mut().zip(self.provider_sending.iter()) {
                    *blocked |= busy.load(Ordering::Acquire) >= per_provider;
                }
                if let Some(ready_in) = ready_in {
                    wait_ms = wait_ms.min(ready_in.max(1));
                }
                let paused = |p: Provider| blocked[p.index()];
                let next_at = self.lock_schedule().next_at(paused);
                match next_at {
                    None => break,
                    Some(at) if at > now_ms => {
                        wait_ms = wait_ms.min(at - now_ms);
                        break;
                    }
                    Some(_) => {}
                }
                if let Err(until_token_ms) = self.lock_pace().take(now_ms) {
                    wait_ms = wait_ms.min(until_token_ms);
                    break;
                }
                let taken = {
                    let mut schedule = self.lock_schedule();
                    schedule
                        .take_due(now_ms, paused)
                        .map(|id| (id, schedule.provider(&id)))
                };
                let Some((id, provider)) = taken else {
                    break;
                };
                self.starting(provider, now_ms);
                let connection = Connection {
                    _permit: permit,
                    _sending: ProviderSending::start(&self.provider_sending, provider),
                };
                running.spawn(self.clone().deliver(id, connection));
            }
            tokio::select! {
                _ = shutdown.changed() => break,
                () = self.wake.notified() => {}
                Some(_) = running.join_next(), if !running.is_empty() => {}
                () = tokio::time::sleep(Duration::from_millis(wait_ms)) => {}
                _ = prune.tick() => {
                    let this = self.clone();
                    let now = self.now_ms();
                    let before = now.saturating_sub(this.config.exit.dedup_secs * 1000);
                    let oldest_day = (now / DAY_MS).saturating_sub(1);
                    let result = tokio::task::spawn_blocking(move || {
                        this.save_standing();
                        if let Err(e) = this.threads.store.prune(now) {
                            tracing::warn!(error = %e, "cannot prune the exit's conversations");
                        }
                        this.store.prune(now, before, oldest_day)
                    }).await;
                    if let Ok(Err(e)) = result {
                        tracing::warn!(error = %e, "cannot prune the exit's records");
                    }
                }
            }
        }
        // Deliveries in flight stop here; they are retried after a restart.
        running.abort_all();
        // The counts since the last save (every ten minutes, and at each
        // complaint and pause).
        let this = self.clone();
        let _ = tokio::task::spawn_blocking(move || this.save_standing()).await;
    }

    /// One delivery attempt of a queued leak (marked in flight by the
    /// schedule); `connection` is given back once the SMTP exchange is
    /// over. Whatever fails, the leak ends or is scheduled again.
    async fn deliver(self: Arc<Self>, id: MessageId, connection: Connection) {
        // Quick (a read transaction): done here rather than on another thread.
        let failed = match self.store.lookup(&id) {
            Ok(Known::Queued(entry)) => match self.attempt(id, &entry, connection).await {
                Ok(()) => None,
                Err(e) => Some((e, Some(entry))),
            },
            // Purged meanwhile.
            Ok(_) => None,
            Err(e) => Some((e, None)),
        };
        if let Some((error, entry)) = failed {
            tracing::error!(%error, "a delivery attempt failed on the exit's side; retrying later");
            self.settle(id, entry, Attempt::temporary(LOCAL_FAILURE))
                .await;
        }
        self.lock_schedule().landed(&id);
        self.wake.notify_one();
    }

    /// Reads, composes and sends the leak; records the outcome.
    async fn attempt(
        self: &Arc<Self>,
        id: MessageId,
        entry: &Entry,
        connection: Connection,
    ) -> Result<(), ExitError> {
        // One read of a slot of the spool, in the page cache: done here.
        let Some(body) = self.store.body(&id)? else {
            // Its slot is gone or damaged (the spool restored or edited, a
            // failed disk): it cannot be delivered, and retrying would not
            // change that. Its sender is told.
            tracing::error!("a queued leak's text is missing from the spool; it is bounced");
            self.finish_async(id, Outcome::Bounced, EndState::Lost)
                .await?;
            return Ok(());
        };
        if let Some(sender) = super::store::read_sent_stub(&body) {
            // Sent before a crash that came before its wait was recorded.
            drop(connection);
            let provider = self.lock_schedule().provider(&id);
            self.await_notification(id, sender, provider, None).await;
            return Ok(());
        }
        let Ok(leak) = Leak::decode(&body) else {
            self.finish_async(id, Outcome::Bounced, EndState::Bounced)
                .await?;
            return Ok(());
        };
        let policy = self.policy();
        let recipient = policy.recipient_hash(&leak.recipient);
        let now = self.now_ms();
        let provider = self.mx.provider(leak.recipient.ascii_domain(), now).await;
        if self.lock_schedule().provider(&id) != provider {
            // Its MX hosts name another provider than its domain did: that
            // provider's pause, pace and ramp apply.
            let blocked = self.blocked_providers(now).0[provider.index()];
            self.lock_schedule().set_provider(&id, provider);
            if blocked {
                self.lock_schedule().insert_to(now, id, provider);
                return Ok(());
            }
        }
        // The recipient ended its conversation after it was accepted.
        if self.thread_ended(&leak).unwrap_or(false) {
            self.finish_async(id, Outcome::ThreadEnded, EndState::OptedOut)
                .await?;
            return Ok(());
        }
        // A conversation whose record cannot be read is sent without its
        // answer links (as a leak that cannot be answered), not held back.
        let links = self.thread_links(&leak, &recipient).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read a leak's conversation");
            None
        });
        let Ok(message) = self.composer.compose(
            &leak,
            &recipient,
            provider,
            policy.version(),
            links.as_ref(),
        ) else {
            self.finish_async(id, Outcome::Bounced, EndState::Bounced)
                .await?;
            return Ok(());
        };
        let sender = leak.message_id;
        drop(leak);
        let (envelope, bytes) = super::email::signed(message, &self.dkim);
        // With inbound mail, the leak's own return path (VERP), where its
        // delivery notification comes back.
        let envid = self
            .inbound
            .then(|| self.composer.tokens.make_return(&id, provider));
        let envelope = match &envid {
            Some(local) => self.return_envelope(local, envelope),
            None => envelope,
        };
        let (attempt, handoff) = self.mailer.send(&envelope, &bytes, envid.as_deref()).await;
        drop(connection);
        self.wake.notify_one();
        if let Attempt::Permanent { code } = &attempt {
            self.lock_health().bounced(provider, self.now_ms());
            Metrics::count_as(&self.metrics.exit_attempts, "result", &attempt);
            tracing::info!(%code, "a leak bounced");
            let class = BounceClass::from_status(code.split_whitespace().nth(1).unwrap_or(""));
            if class == BounceClass::UnknownUser {
                self.suppress(recipient).await;
            }
            self.finish_async(id, Outcome::BouncedWith(class), EndState::Bounced)
                .await?;
            return Ok(());
        }
        match attempt {
            Attempt::Delivered => {
                self.delivered(id, provider, handoff, (sender, recipient))
                    .await;
            }
            temporary => self.settle(id, Some(entry.clone()), temporary).await,
        }
        Ok(())
    }

    /// The envelope with the return path `local@DOMAIN` (the same
    /// recipients); the original if that is not an address.
    fn return_envelope(&self, local: &str, envelope: Envelope) -> Envelope {
        let from = format!("{local}@{}", self.composer.domain).parse().ok();
        match from {
            Some(from) => Envelope::new(Some(from), envelope.to().to_vec()).unwrap_or(envelope),
            None => envelope,
        }
    }

    /// The mail server took the leak: it is never sent again for a failed
    /// commit (only a crash before the commit resends it). The commit is
    /// retried until it holds; the leak stays in flight meanwhile. What
    /// its sender is told depends on what the 250 means (`handoff`).
    async fn delivered(
        self: &Arc<Self>,
        id: MessageId,
        provider: Provider,
        handoff: Handoff,
        (sender, recipient): (MessageId, [u8; 32]),
    ) {
        Metrics::count_as(&self.metrics.exit_attempts, "result", &Attempt::Delivered);
        self.lock_health().delivered(provider, self.now_ms());
        self.lock_pace().succeeded();
        self.lock_provider_pace()[provider.index()].succeeded();
        self.show_rate();
        let (outcome, state) = match handoff {
            Handoff::Notified => {
                return self
                    .await_notification(id, sender, provider, Some(recipient))
                    .await;
            }
            Handoff::Final => (Outcome::Delivered, EndState::Delivered),
            Handoff::Unknown => (Outcome::Accepted, EndState::Unconfirmed),
        };
        let mut failures = 0u32;
        while let Err(e) = self.finish_async(id, outcome.clone(), state).await {
            failures = failures.saturating_add(1);
            tracing::error!(error = %e, "cannot record a delivered leak; retrying");
            tokio::time::sleep(COMMIT_BACKOFF.delay(failures, rand::random::<f64>())).await;
        }
    }

    /// A failed attempt (`Attempt::Temporary`: the mail server's, or the
    /// exit's own with code `local`): counted, the pace slowed on a
    /// deferral, and the leak's next attempt set by the retry policy, or
    /// the leak given up past its lifetime. `entry` is the leak's entry
    /// before the attempt, if it could be read.
    async fn settle(self: &Arc<Self>, id: MessageId, entry: Option<Entry>, attempt: Attempt) {
        Metrics::count_as(&self.metrics.exit_attempts, "result", &attempt);
        let Attempt::Temporary { code, deferral } = attempt else {
            return;
        };
        let now = self.now_ms();
        if deferral {
            // 421 is the server's own (it is busy, or closing): everything
            // slows. A 4.7.x is a provider's throttling of this sender:
            // that provider slows, the others go on.
            if code.starts_with("421") {
                self.lock_pace().deferred(now);
            } else {
                let provider = self.lock_schedule().provider(&id);
                self.lock_provider_pace()[provider.index()].deferred(now);
            }
        }
        self.show_rate();
        // An entry that could not be read counts as a first attempt of a
        // leak accepted now: the next try reads it again.
        let (attempts, accepted_ms) = entry
            .as_ref()
            .map_or((1, now), |e| (e.attempts.saturating_add(1), e.accepted_ms));
        let decision = self
            .retry
            .after_failure(attempts, accepted_ms, now, rand::random::<f64>());
        let recorded = match decision {
            Decision::GiveUp => {
                tracing::info!(attempts, "a leak expired undelivered");
                self.finish_async(id, Outcome::Bounced, EndState::Expired)
                    .await
                    .map(drop)
            }
            Decision::RetryAt(at_ms) => self.retry_at(id, attempts, code, at_ms).await,
        };
        if let Err(e) = recorded {
            // Not even the failure could be recorded: the leak is tried
            // again when the policy says (the storage gets that long to
            // recover); its count is kept in memory only until then.
            tracing::error!(error = %e, "cannot record a failed attempt; retrying later");
            let at_ms = match decision {
                Decision::RetryAt(at_ms) => at_ms,
                Decision::GiveUp => now.saturating_add(
                    u64::try_from(
                        self.retry
                            .backoff
                            .delay(attempts, rand::random::<f64>())
                            .as_millis(),
                    )
                    .unwrap_or(u64::MAX),
                ),
            };
            self.lock_schedule().insert(at_ms, id);
        }
    }

    /// Records a failed attempt and schedules the next one at `at_ms`.
    async fn retry_at(
        self: &Arc<Self>,
        id: MessageId,
        attempts: u32,
        code: String,
        at_ms: u64,
    ) -> Result<(), ExitError> {
        let this = self.clone();
        // Changed in place: a reply block a retransmission brought
        // meanwhile is kept.
        let kept = tokio::task::spawn_blocking(move || {
            this.store.update_with(&id, |e| {
                e.attempts = attempts;
                e.last_error = code;
                e.next_attempt_ms = at_ms;
            })
        })
        .await??;
        if kept {
            self.lock_schedule().insert(at_ms, id);
        }
        Ok(())
    }

    /// Ends a queued leak with `outcome` and answers its sender. Blocks.
    pub(super) fn finish(
        &self,
        id: MessageId,
        outcome: Outcome,
        state: EndState,
    ) -> Result<bool, ExitError> {
        let done = self.done(&outcome, state);
        let sender = self.sender_id(&id);
        let entry = self.store.finish(&id, &done)?;
        Ok(self.finished(sender, outcome, state, entry))
    }

    /// [`Exit::finish`] for the delivery tasks: waits for the group commit
    /// without holding a thread.
    async fn finish_async(
        &self,
        id: MessageId,
        outcome: Outcome,
        state: EndState,
    ) -> Result<bool, ExitError> {
        let done = self.done(&outcome, state);
        let sender = self.sender_id(&id);
        let entry = self.store.finish_async(&id, &done).await?;
        Ok(self.finished(sender, outcome, state, entry))
    }

    fn done(&self, outcome: &Outcome, state: EndState) -> Done {
        Done {
            outcome: outcome.clone(),
            state,
            at_ms: self.now_ms(),
        }
    }

    /// The sender's message id of the queued leak with key `key`, for its
    /// receipt: read from the leak's slot of the spool, the only place the
    /// exit keeps it ([`super::dedup`]), before the slot is scrubbed.
    fn sender_id(&self, key: &MessageId) -> Option<MessageId> {
        let body = self.store.body(key).ok()??;
        if let Some(sender) = super::store::read_sent_stub(&body) {
            return Some(sender);
        }
        match Leak::decode_or_reject(&body) {
            Ok(leak) => Some(leak.message_id),
            Err(LeakDecodeError::Invalid { message_id, .. }) => Some(message_id),
            Err(_) => None,
        }
    }

    /// Counts a finished leak and answers its sender (`sender`: its message
    /// id, [`Exit::sender_id`]); false if it was no longer queued.
    fn finished(
        &self,
        sender: Option<MessageId>,
        outcome: Outcome,
        state: EndState,
        entry: Option<Entry>,
    ) -> bool {
        let Some(entry) = entry else {
            return false;
        };
        self.metrics.exit_queue.dec();
        Metrics::count_as(&self.metrics.exit_finished, "outcome", &state);
        match (sender, ReplyBlock::from_bytes(&entry.reply_block)) {
            (Some(id), Some(block)) => self.answer(block, id, outcome, Duration::ZERO),
            (None, _) => tracing::warn!("a finished leak's text is gone: it cannot be answered"),
            (_, None) => tracing::warn!("a queued leak's reply block does not decode"),
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Label as _;

    #[test]
    fn attempt_results_keep_their_metric_labels() {
        let permanent = Attempt::Permanent {
            code: "550 5.1.1".into(),
        };
        assert_eq!(permanent.as_label(), "permanent");
        assert_eq!(Attempt::Delivered.as_label(), "ok");
        assert_eq!(Attempt::temporary(LOCAL_FAILURE).as_label(), "temporary");
        let deferral = Attempt::Temporary {
            code: "421".into(),
            deferral: true,
        };
        assert_eq!(deferral.as_label(), "deferred");
    }
}
