//! What happens after the exit's mail server said 250: the leak waits for
//! the delivery status notification that says what became of it.
//!
//! ```text
//!  250 with NOTIFY asked ─▶ waiting (slot: message id only)   store::Awaiting
//!     success DSN (delivered, relayed) ─▶ Delivered
//!     failure DSN ─▶ BouncedWith(class)
//!     delay DSN ─▶ still waiting
//!     nothing by exit.notify_wait_secs ─▶ Accepted (outcome unknown)
//!  then the receipt leaves along the newest reply block
//! ```
//!
//! A notification after that (a bounce days later) still counts toward the
//! provider's standing; the sender was already told `Accepted`.

use std::{sync::Arc, time::Duration};

use leak_protocol::{BounceClass, MessageId, Outcome, ReplyBlock};
use tokio::sync::watch;

use super::{
    Exit, ExitError,
    inbound::report::DsnAction,
    provider::Provider,
    retry::COMMIT_BACKOFF,
    state::EndState,
    store::{Awaiting, Done},
};
use crate::metrics::Metrics;

/// How long leaks to a recipient whose server said "no such mailbox"
/// bounce at once (30 days).
pub const SUPPRESS_UNKNOWN_MS: u64 = 30 * 86_400_000;

/// How often, and how far apart, a notification that came before its
/// leak's wait was recorded is tried again (60 s in all: the record is a
/// durable commit, slow on a loaded disk; the mail server waits for the
/// answer far longer).
const EARLY_RETRIES: u32 = 600;
const EARLY_PAUSE: Duration = Duration::from_millis(100);

/// Longest sleep of the deadline loop (so a clock moved by tests or
/// resumed after a suspend is noticed).
const DEADLINE_POLL: Duration = Duration::from_secs(5);

impl Exit {
    /// The mail server took queued leak `id` (sender's id `sender`, to
    /// `provider`) and will notify: it waits, its receipt held until the
    /// notification or the deadline. Retried until it is recorded.
    pub(super) async fn await_notification(
        self: &Arc<Self>,
        id: MessageId,
        sender: MessageId,
        provider: Provider,
        recipient: Option<[u8; 32]>,
    ) {
        let mut failures = 0u32;
        loop {
            let now = self.now_ms();
            let deadline_ms =
                now.saturating_add(self.config.exit.notify_wait_secs.saturating_mul(1000));
            let done = Done {
                outcome: Outcome::Accepted,
                state: EndState::Sent,
                at_ms: now,
            };
            let this = self.clone();
            let result = tokio::task::spawn_blocking(move || {
                this.store.await_notification(
                    &id,
                    &sender,
                    |entry| Awaiting {
                        reply_block: entry.reply_block,
                        provider: provider.to_byte(),
                        sent_ms: now,
                        deadline_ms,
                        recipient,
                    },
                    &done,
                )
            })
            .await
            .map_err(ExitError::from)
            .and_then(|r| r);
            match result {
                Ok(waiting) => {
                    if waiting {
                        self.metrics.exit_queue.dec();
                        Metrics::count_as(&self.metrics.exit_finished, "outcome", &EndState::Sent);
                        self.deadlines.notify_one();
                    }
                    return;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::error!(error = %e, "cannot record a sent leak; retrying");
                    tokio::time::sleep(COMMIT_BACKOFF.delay(failures, rand::random::<f64>())).await;
                }
            }
        }
    }

    /// Ends waiting leak `id` with `outcome` and answers its sender; what
    /// it waited with, or `None` if it was not waiting (resolved before, or
    /// never sent here). An `UnknownUser` bounce suppresses the recipient
    /// ([`SUPPRESS_UNKNOWN_MS`]) before the sender hears of it, so a leak
    /// written on hearing is not sent again.
    pub(super) async fn resolve(
        self: &Arc<Self>,
        id: MessageId,
        outcome: Outcome,
        state: EndState,
    ) -> Result<Option<Awaiting>, ExitError> {
        let now = self.now_ms();
        let suppress_until = (outcome == Outcome::BouncedWith(BounceClass::UnknownUser))
            .then(|| now.saturating_add(SUPPRESS_UNKNOWN_MS));
        let done = Done {
            outcome: outcome.clone(),
            state,
            at_ms: now,
        };
        let this = self.clone();
        let resolved =
            tokio::task::spawn_blocking(move || this.store.resolve(&id, &done, suppress_until))
                .await??;
        let Some((awaiting, sender)) = resolved else {
            return Ok(None);
        };
        match (sender, ReplyBlock::from_bytes(&awaiting.reply_block)) {
            (Some(sender), Some(block)) => self.answer(block, sender, outcome, Duration::ZERO),
            _ => tracing::warn!("a sent leak's receipt cannot be built (its slot or reply block)"),
        }
        Ok(Some(awaiting))
    }

    /// Leaks to `recipient` bounce at once for [`SUPPRESS_UNKNOWN_MS`]:
    /// its server said there is no such mailbox (providers count a sender
    /// that keeps writing to nonexistent mailboxes as a spammer).
    pub(super) async fn suppress(self: &Arc<Self>, recipient: [u8; 32]) {
        let this = self.clone();
        let until = self.now_ms().saturating_add(SUPPRESS_UNKNOWN_MS);
        let result =
            tokio::task::spawn_blocking(move || this.store.suppress(&recipient, until)).await;
        if !matches!(result, Ok(Ok(()))) {
            tracing::warn!("cannot record an unknown recipient; its next leak is sent");
        }
    }

    /// A delivery status notification for the leak with store key `id` at
    /// `provider` (its return path verified).
    pub(super) async fn notified(
        self: &Arc<Self>,
        id: MessageId,
        provider: Provider,
        action: DsnAction,
    ) -> Result<(), ExitError> {
        let (outcome, state, label) = match action {
            DsnAction::Delivered | DsnAction::Relayed => {
                (Outcome::Delivered, EndState::Delivered, "delivered")
            }
            DsnAction::Failed(class) => {
                self.lock_health().bounced(provider, self.now_ms());
                (Outcome::BouncedWith(class), EndState::Bounced, "bounced")
            }
            DsnAction::Delayed => {
                Metrics::count(&self.metrics.exit_notifications, "result", "delayed");
                return Ok(());
            }
        };
        let mut resolved = self.resolve(id, outcome.clone(), state).await?;
        // A notification can overtake the record of the wait it ends (the
        // mail server answered 250 and notified before the exit committed
        // what it sent): while the leak is still being sent, look again.
        for _ in 0..EARLY_RETRIES {
            if resolved.is_some() || !self.lock_schedule().in_flight(&id) {
                break;
            }
            tokio::time::sleep(EARLY_PAUSE).await;
            resolved = self.resolve(id, outcome.clone(), state).await?;
        }
        Metrics::count(
            &self.metrics.exit_notifications,
            "result",
            if resolved.is_some() { label } else { "late" },
        );
        Ok(())
    }

    /// Tells `Accepted` (outcome unknown) to the senders of leaks whose
    /// notification did not come by their deadline, until shutdown.
    pub(super) async fn run_deadlines(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let this = self.clone();
            let now = self.now_ms();
            let due = tokio::task::spawn_blocking(move || this.store.awaiting_due(now)).await;
            let mut wait = DEADLINE_POLL;
            match due {
                Ok(Ok((due, next))) => {
                    for id in due {
                        match self
                            .resolve(id, Outcome::Accepted, EndState::Unconfirmed)
                            .await
                        {
                            Ok(Some(_)) => Metrics::count(
                                &self.metrics.exit_notifications,
                                "result",
                                "timeout",
                            ),
                            Ok(None) => {}
                            Err(e) => tracing::error!(error = %e, "cannot end a sent leak's wait"),
                        }
                    }
                    if let Some(next) = next {
                        wait = wait.min(Duration::from_millis(next.saturating_sub(now)));
                    }
                }
                Ok(Err(e)) => tracing::error!(error = %e, "cannot read the sent leaks"),
                Err(e) => tracing::error!(error = %e, "cannot read the sent leaks"),
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                () = self.deadlines.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}
