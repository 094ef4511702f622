//! What the exit sends about inbound mail: mail to postmaster@ and abuse@
//! forwarded to its operator, and a short explanation to a person who
//! answered the From address. Both leave with the null return path (no
//! bounce comes back) and are capped per hour; a person gets at most one
//! explanation a day (remembered in memory by a keyed hash, never the
//! address).

use std::{collections::HashSet, sync::Arc};

use leak_protocol::crypto::{SymmetricKey, derive_key, mac};
use lettre::{
    Message,
    address::Envelope,
    message::{Attachment, Mailbox, MultiPart, SinglePart, header::ContentType},
};

use super::Recipient;
use crate::{
    exit::{Exit, email::AutoSubmitted},
    metrics::Metrics,
};

const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 86_400_000;

/// What the exit says to someone who answers its From address.
pub const EXPLANATION: &str = "\
Hello,

you wrote to the address that delivers Leak's anonymous messages. Nobody
reads mail sent to this address, and the person who wrote to you cannot
see your answer: Leak keeps no way to reach them.

If you do not want to receive messages through Leak any more, follow the
\"Never receive a message from Leak again\" link at the end of the message
you received: it stops them from every Leak exit.

This is an automatic answer; you will get at most one a day.
";

/// The hourly caps and who had an explanation today.
pub struct Budget {
    key: SymmetricKey,
    hour: u64,
    forwarded: u32,
    explained: u32,
    noticed: u32,
    day: u64,
    answered: HashSet<[u8; 16]>,
}

impl Budget {
    /// A budget keyed from the exit's seed.
    pub fn new(seed: &[u8; 32]) -> Self {
        Self {
            key: derive_key("leak exit inbound answers v1", &[seed]),
            hour: 0,
            forwarded: 0,
            explained: 0,
            noticed: 0,
            day: 0,
            answered: HashSet::new(),
        }
    }

    fn roll(&mut self, now_ms: u64) {
        if now_ms / HOUR_MS != self.hour {
            self.hour = now_ms / HOUR_MS;
            self.forwarded = 0;
            self.explained = 0;
            self.noticed = 0;
        }
        if now_ms / DAY_MS != self.day {
            self.day = now_ms / DAY_MS;
            self.answered.clear();
        }
    }

    /// Whether one more forward fits this hour (and takes it).
    pub fn forward(&mut self, now_ms: u64, per_hour: u32) -> bool {
        self.roll(now_ms);
        let fits = self.forwarded < per_hour;
        self.forwarded += u32::from(fits);
        fits
    }

    /// Whether one more notice to a person who answered a conversation
    /// fits this hour (and takes it).
    pub fn notice(&mut self, now_ms: u64, per_hour: u32) -> bool {
        self.roll(now_ms);
        let fits = self.noticed < per_hour;
        self.noticed += u32::from(fits);
        fits
    }

    /// Whether `address` may get an explanation now (and takes it): once a
    /// day per address, `per_hour` in all.
    pub fn explain(&mut self, now_ms: u64, per_hour: u32, address: &str) -> bool {
        self.roll(now_ms);
        let hashed = mac(&self.key, &[address.to_ascii_lowercase().as_bytes()]);
        let mut id = [0u8; 16];
        id.copy_from_slice(&hashed[..16]);
        if self.explained >= per_hour || self.answered.contains(&id) {
            return false;
        }
        self.explained += 1;
        self.answered.insert(id);
        true
    }
}

impl Exit {
    /// Forwards mail for postmaster@ or abuse@ to the operator, as an
    /// attachment, if an address is configured and the hour's cap allows.
    pub(super) async fn forward(self: &Arc<Self>, recipient: &Recipient, raw: &[u8]) {
        let operator = self.config.exit.operator_address.trim();
        if operator.is_empty() {
            return;
        }
        let allowed = self
            .lock_budget()
            .forward(self.now_ms(), self.config.exit.forward_per_hour);
        if !allowed {
            Metrics::count(&self.metrics.exit_inbound, "kind", "not_forwarded");
            return;
        }
        let local = if *recipient == Recipient::Postmaster {
            "postmaster"
        } else {
            "abuse"
        };
        let domain = &self.composer.domain;
        let message = (|| {
            let from: Mailbox = format!("{local}@{domain}").parse().ok()?;
            let to: Mailbox = operator.parse().ok()?;
            let attachment = Attachment::new("message.eml".into())
                .body(raw.to_vec(), ContentType::parse("message/rfc822").ok()?);
            Message::builder()
                .from(from)
                .to(to)
                .subject(format!("Mail to {local}@{domain}"))
                .multipart(
                    MultiPart::mixed()
                        .singlepart(SinglePart::plain(format!(
                            "leak-node received this message for {local}@{domain}; it is \
                             attached as it came. Nothing of it is kept by the exit.\n"
                        )))
                        .singlepart(attachment),
                )
                .ok()
        })();
        if let Some(message) = message {
            self.send_unbounced(message, "forwarded").await;
        }
    }

    /// Answers a person who wrote to the From address with
    /// [`EXPLANATION`] (once a day per address, capped per hour).
    pub(super) async fn explain(self: &Arc<Self>, sender: &str) {
        let Ok(to) = sender.parse::<Mailbox>() else {
            // The null sender, or no address: nobody to answer.
            return;
        };
        let allowed =
            self.lock_budget()
                .explain(self.now_ms(), self.config.exit.forward_per_hour, sender);
        if !allowed {
            Metrics::count(&self.metrics.exit_inbound, "kind", "not_answered");
            return;
        }
        self.send_auto_reply(
            to,
            "About your answer to a Leak message",
            EXPLANATION.to_owned(),
            "answered",
        )
        .await;
    }

    /// Sends `body` to `to` from the exit's From address as an automatic
    /// answer (`Auto-Submitted: auto-replied`, the null return path),
    /// counted as `label` once the mail server took it.
    pub(super) async fn send_auto_reply(
        self: &Arc<Self>,
        to: Mailbox,
        subject: &str,
        body: String,
        label: &'static str,
    ) {
        let message = Message::builder()
            .from(Mailbox::new(
                Some("Leak".into()),
                self.composer.from.clone(),
            ))
            .to(to)
            .subject(subject)
            .header(AutoSubmitted::Replied)
            .header(ContentType::TEXT_PLAIN)
            .body(body);
        if let Ok(message) = message {
            self.send_unbounced(message, label).await;
        }
    }

    /// Sends `message` DKIM-signed with the null return path, counting it
    /// as `label` once the mail server took it.
    pub(super) async fn send_unbounced(self: &Arc<Self>, message: Message, label: &'static str) {
        let (envelope, bytes) = crate::exit::email::signed(message, &self.dkim);
        let Ok(envelope) = Envelope::new(None, envelope.to().to_vec()) else {
            return;
        };
        let (attempt, _) = self.mailer.send(&envelope, &bytes, None).await;
        if attempt == crate::exit::smtp::Attempt::Delivered {
            Metrics::count(&self.metrics.exit_inbound, "kind", label);
        } else {
            tracing::info!("an answer to inbound mail could not be sent; it is dropped");
        }
    }

    pub(super) fn lock_budget(&self) -> std::sync::MutexGuard<'_, Budget> {
        self.answers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_are_capped_per_hour() {
        let mut budget = Budget::new(&[1; 32]);
        assert!(budget.forward(0, 2));
        assert!(budget.forward(1, 2));
        assert!(!budget.forward(2, 2));
        assert!(budget.forward(HOUR_MS, 2));
    }

    #[test]
    fn one_explanation_a_day_per_address() {
        let mut budget = Budget::new(&[1; 32]);
        assert!(budget.explain(0, 10, "Zoe@leak.test"));
        assert!(!budget.explain(HOUR_MS, 10, "zoe@leak.test"));
        assert!(budget.explain(HOUR_MS, 10, "ann@leak.test"));
        assert!(budget.explain(DAY_MS, 10, "zoe@leak.test"));
        let mut capped = Budget::new(&[1; 32]);
        assert!(capped.explain(0, 1, "a@x.test"));
        assert!(!capped.explain(0, 1, "b@x.test"));
    }
}
