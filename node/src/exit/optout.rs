//! Opt-outs: a recipient's opt-out (or its opt-back-in) at this exit, by
//! one click or by email; the records other exits send, checked and kept;
//! the records held, passed on when the holders change. Abuse reports come
//! through the same endpoint.
//!
//! Who holds a recipient's record: the
//! [`OPT_OUT_HOLDERS`](leak_protocol::federation::OPT_OUT_HOLDERS) exits ranking
//! first for it ([`directory::holders`]): the exit responsible for it (the
//! one that delivers to it, and whose link the recipient used) and the
//! ones its leaks move to if that exit leaves. No relay, client or
//! gossip mesh sees a record, so nobody outside those exits can check a
//! guessed address against them.
//!
//! What goes to them: only a record that carries the recipient's own
//! opt-out email, DKIM-signed by its provider ([`super::evidence`]). A
//! one-click opt-out (RFC 8058) or a feedback-loop report holds at this
//! exit only: nothing in it shows another exit that the recipient acted,
//! and an exit that could send such records could opt out whomever it
//! holds. The opt-out page offers the email that makes it hold
//! everywhere.
//!
//! A holder takes a record only from an exit that is itself a holder of
//! that recipient, signed by its exit, replacing what it holds (newer, or
//! evidence over none), at most [`MAX_OPT_OUTS_PER_EXIT_PER_DAY`] a day from
//! one exit, and only when the evidence checks: the provider's signature
//! (its key from the DNS), the From address hashing to the record's
//! recipient, the Subject saying what the record says, at the record's
//! time. So an exit's opt-outs elsewhere are bounded by the recipients who
//! answered an email it delivered.

use std::{collections::HashMap, sync::Arc};

use leak_protocol::{
    MessageId, NodeId,
    directory::{self, Descriptor},
    federation::MAX_OPT_OUTS_PER_EXIT_PER_DAY,
    policy::optout::{self, OptOut},
};

use super::{Exit, ExitError, email::Link, provider::Provider};

/// Why a record from another exit was not kept, or that it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordResult {
    /// Kept: it changed what this exit holds.
    Accepted,
    /// Valid, but not newer than the record held.
    NotNewer,
    /// Its signature is not its exit's.
    Forged,
    /// The sender does not hold the recipient's opt-out here, or this exit
    /// does not.
    NotHolder,
    /// It carries no evidence (it holds at its own exit only).
    NoEvidence,
    /// Its evidence does not check, or says something else.
    BadEvidence,
    /// The sender already sent its day's share.
    OverQuota,
}

impl RecordResult {
    fn label(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::NotNewer => "not_newer",
            Self::Forged => "forged",
            Self::NotHolder => "not_holder",
            Self::NoEvidence => "no_evidence",
            Self::BadEvidence => "bad_evidence",
            Self::OverQuota => "over_quota",
        }
    }
}

/// Records taken from each exit per UTC day.
#[derive(Debug, Default)]
pub struct Quota {
    day: u64,
    taken: HashMap<NodeId, u32>,
}

impl Quota {
    /// Whether `from` may send one more record on `day` (counts it if so).
    pub fn take(&mut self, from: NodeId, day: u64) -> bool {
        if day != self.day {
            self.day = day;
            self.taken.clear();
        }
        let taken = self.taken.entry(from).or_insert(0);
        if *taken >= MAX_OPT_OUTS_PER_EXIT_PER_DAY {
            return false;
        }
        *taken += 1;
        true
    }
}

/// The opt-out holders of `recipient` among `exits` (this node's view).
fn holders_of(
    exits: &[Descriptor],
    recipient: &[u8; 32],
    version: u32,
    now_secs: u64,
) -> Vec<NodeId> {
    directory::holders(exits, recipient, version, now_secs)
        .into_iter()
        .map(|d| d.node)
        .collect()
}

impl Exit {
    /// Checks and keeps a batch of records `from` sent (an exit, by its
    /// authenticated connection). Returns what became of each; a batch
    /// that does not decode is `None`. Every result is counted.
    pub async fn take_opt_outs(
        self: &Arc<Self>,
        from: NodeId,
        batch: &[u8],
    ) -> Result<Option<Vec<RecordResult>>, ExitError> {
        let Some(records) = optout::decode_batch(batch) else {
            self.metrics
                .exit_opt_out_records
                .get_or_create(&vec![("result", "malformed")])
                .inc();
            return Ok(None);
        };
        let policy = self.policy();
        let now_ms = self.now_ms();
        let exits = (self.directory)();
        let recipients: Vec<[u8; 32]> = records.iter().map(|r| r.recipient).collect();
        let this = self.clone();
        let held =
            tokio::task::spawn_blocking(move || this.store.opt_out_records(&recipients)).await??;
        let mut results = Vec::with_capacity(records.len());
        let mut keep = Vec::new();
        for (record, held) in records.iter().zip(held) {
            let holders = holders_of(&exits, &record.recipient, policy.version(), now_ms / 1000);
            // Cheapest first: the signature, then the day's quota, then the
            // evidence (a DNS lookup); what is already held costs no quota
            // (holders pass everything on each half epoch).
            let result = if !holders.contains(&self.node_id) || !holders.contains(&from) {
                RecordResult::NotHolder
            } else if !record.has_evidence() {
                RecordResult::NoEvidence
            } else if held.as_ref().is_some_and(|h| !record.replaces(h)) {
                RecordResult::NotNewer
            } else if !record.verify() {
                RecordResult::Forged
            } else if !self
                .opt_out_quota
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(from, now_ms / super::DAY_MS)
            {
                RecordResult::OverQuota
            } else {
                match self
                    .evidence
                    .check_evidence(&record.evidence, now_ms / 1000)
                    .await
                {
                    Ok(v)
                        if v.out == record.out
                            && v.at == record.at
                            && v.recipient_hash(&policy) == Some(record.recipient) =>
                    {
                        keep.push(record.clone());
                        RecordResult::Accepted
                    }
                    Ok(_) => RecordResult::BadEvidence,
                    Err(refusal) => {
                        tracing::debug!(reason = refusal.label(), "opt-out evidence refused");
                        RecordResult::BadEvidence
                    }
                }
            };
            results.push(result);
        }
        let this = self.clone();
        let changed =
            tokio::task::spawn_blocking(move || this.store.record_opt_outs(&keep)).await??;
        let mut accepted = 0;
        for (record, result) in records.iter().zip(results.iter_mut()) {
            if *result == RecordResult::Accepted {
                if changed.contains(record) {
                    accepted += 1;
                } else {
                    *result = RecordResult::NotNewer;
                }
            }
            self.metrics
                .exit_opt_out_records
                .get_or_create(&vec![("result", result.label())])
                .inc();
        }
        if accepted > 0 {
            tracing::debug!(accepted, "took opt-out records from another exit");
        }
        Ok(Some(results))
    }

    /// Sends `records` (those with evidence) to the other exits that hold
    /// each one now.
    fn send_to_holders(&self, records: &[OptOut]) {
        let policy = self.policy();
        let now_secs = self.now_ms() / 1000;
        let exits = (self.directory)();
        let mut by_holder: HashMap<NodeId, Vec<OptOut>> = HashMap::new();
        for record in records.iter().filter(|r| r.has_evidence()) {
            for holder in holders_of(&exits, &record.recipient, policy.version(), now_secs) {
                if holder != self.node_id {
                    by_holder.entry(holder).or_default().push(record.clone());
                }
            }
        }
        for (holder, records) in by_holder {
            for chunk in records.chunks(optout::MAX_OPT_OUTS) {
                if let Some(batch) = optout::encode_batch(chunk) {
                    (self.send_opt_outs)(holder, batch);
                }
            }
        }
    }

    /// Passes every record this exit holds to the exits that hold it now
    /// (on each republication: exits join and leave, and a new holder must
    /// learn what the others hold). A holder that has it ignores it.
    pub fn pass_on_opt_outs(&self) -> Result<usize, ExitError> {
        let held = self.store.held_opt_outs()?;
        self.send_to_holders(&held);
        Ok(held.len())
    }

    /// Signs again this exit's opt-outs kept in an earlier form, once
    /// (without evidence: they hold here).
    pub(super) fn migrate_opt_outs(&self) -> Result<(), ExitError> {
        let own = self.store.take_earlier_opt_outs(&self.node_id.0)?;
        if own.is_empty() {
            return Ok(());
        }
        let records: Vec<OptOut> = own
            .iter()
            .map(|(recipient, at, out)| OptOut::sign(&self.seed, *recipient, *at, *out))
            .collect();
        self.store.record_opt_outs(&records)?;
        tracing::info!(count = records.len(), "signed this exit's opt-outs again");
        Ok(())
    }

    /// Whether the recipient a token was made for opted out; `None`: the
    /// token is not valid (counted).
    pub async fn opted_out_with_token(
        self: &Arc<Self>,
        token: &str,
    ) -> Result<Option<bool>, ExitError> {
        let Some((_, recipient)) = self.composer.tokens.check(Link::OptOut, token) else {
            self.metrics.exit_bad_tokens.inc();
            return Ok(None);
        };
        let this = self.clone();
        Ok(Some(
            tokio::task::spawn_blocking(move || this.store.opted_out(&recipient)).await??,
        ))
    }

    /// Opts the recipient a token was made for out (`out`) or back in, at
    /// this exit (a click shows other exits nothing: the record holds
    /// here). `Ok(false)`: the token is not valid.
    pub async fn opt_out_with_token(
        self: &Arc<Self>,
        token: &str,
        out: bool,
    ) -> Result<bool, ExitError> {
        let Some((_, recipient)) = self.composer.tokens.check(Link::OptOut, token) else {
            self.metrics.exit_bad_tokens.inc();
            return Ok(false);
        };
        let this = self.clone();
        let now = self.now_ms();
        let changed = tokio::task::spawn_blocking(move || {
            let held = this.store.opted_out(&recipient)?;
            if held == out {
                return Ok::<_, ExitError>(None);
            }
            // Strictly newer than what is held, so it replaces it.
            let held_at = this
                .store
                .opt_out_records(&[recipient])?
                .pop()
                .flatten()
                .map(|r| r.at);
            let at = (now / 1000).max(held_at.map_or(0, |at| at + 1));
            let record = OptOut::sign(&this.seed, recipient, at, out);
            this.store.record_opt_outs(std::slice::from_ref(&record))?;
            Ok(Some(record))
        })
        .await??;
        if changed.is_some() {
            if out {
                self.metrics.exit_opt_outs.inc();
            } else {
                self.metrics.exit_opt_ins.inc();
            }
        }
        Ok(true)
    }

    /// An email to the opt-out address (`unsubscribe@`): with its
    /// provider's signature over the recipient's address and this exit's
    /// token, a record with evidence, sent to the other holders; without,
    /// as a click (the token is all it shows). Counted either way.
    pub(super) async fn opt_out_by_mail(self: &Arc<Self>, message: &[u8]) -> Result<(), ExitError> {
        let count = |result: &'static str| {
            crate::metrics::Metrics::count(&self.metrics.exit_opt_out_mail, "result", result);
        };
        let checked = self.evidence.check(message, self.now_ms() / 1000).await;
        let said = match &checked {
            Ok(v) => Some((v.out, v.token.clone())),
            Err(_) => mail_parser::MessageParser::default()
                .parse(message)
                .and_then(|m| m.subject().and_then(super::evidence::parse_subject)),
        };
        let Some((out, token)) = said else {
            count("not_opt_out");
            return Ok(());
        };
        let Some((_, recipient)) = self.composer.tokens.check(Link::OptOut, &token) else {
            self.metrics.exit_bad_tokens.inc();
            count("unverified");
            return Ok(());
        };
        let verified = match checked {
            Ok(v) if v.recipient_hash(&self.policy()) == Some(recipient) => v,
            other => {
                if let Err(refusal) = other {
                    tracing::debug!(reason = refusal.label(), "opt-out email without evidence");
                }
                count("local");
                self.opt_out_with_token(&token, out).await?;
                return Ok(());
            }
        };
        let record = OptOut::sign_with_evidence(
            &self.seed,
            recipient,
            verified.at,
            verified.out,
            verified.evidence,
        );
        let this = self.clone();
        let kept = record.clone();
        let changed =
            tokio::task::spawn_blocking(move || this.store.record_opt_outs(&[kept])).await??;
        if changed.is_empty() {
            count("not_newer");
            return Ok(());
        }
        count("evidenced");
        if out {
            self.metrics.exit_opt_outs.inc();
        } else {
            self.metrics.exit_opt_ins.inc();
        }
        // The other holders refuse (or serve again) this recipient.
        self.send_to_holders(&[record]);
        Ok(())
    }

    /// Records an abuse report for the leak a token was made for.
    pub async fn report_with_token(self: &Arc<Self>, token: &str) -> Result<bool, ExitError> {
        let Some((id, _, provider)) = self.composer.tokens.check_report(token) else {
            self.metrics.exit_bad_tokens.inc();
            return Ok(false);
        };
        self.complaint(id, provider).await?;
        Ok(true)
    }

    /// A complaint about the leak the exit refers to as `reference` (a
    /// report link, a feedback-loop report), delivered at `provider`:
    /// counted once per leak, however often it comes.
    pub(super) async fn complaint(
        self: &Arc<Self>,
        reference: MessageId,
        provider: Provider,
    ) -> Result<(), ExitError> {
        let this = self.clone();
        let now = self.now_ms();
        tokio::task::spawn_blocking(move || {
            let new = this.store.report(&reference, now)?;
            if new {
                this.metrics.exit_abuse_reports.inc();
                this.complained(provider);
            }
            Ok::<_, ExitError>(())
        })
        .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_takes_at_most_the_quota_per_exit() {
        let mut quota = Quota::default();
        let (a, b) = (NodeId([1; 32]), NodeId([2; 32]));
        for _ in 0..MAX_OPT_OUTS_PER_EXIT_PER_DAY {
            assert!(quota.take(a, 10));
        }
        assert!(!quota.take(a, 10));
        assert!(quota.take(b, 10), "per exit");
        assert!(quota.take(a, 11), "per day");
    }
}
