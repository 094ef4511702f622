//! The queue as its operator sees and steers it (`leak-node queue`):
//! counts, a redacted listing, pause, retry now, purge.

use leak_protocol::{Leak, MessageId, Outcome};

use super::{
    Exit,
    error::ExitError,
    state::{EndState, QueueState},
    store::Entry,
};
use crate::metrics::Label as _;

/// One queued leak, as `leak-node queue` lists it: no recipient, no text.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct QueueItem {
    /// The message id.
    pub id: String,
    /// queued, retrying or sending ([`QueueState`]'s label).
    pub state: String,
    /// Attempts so far.
    pub attempts: u32,
    /// Seconds since it was accepted.
    pub age_secs: u64,
    /// Seconds until the next attempt (0: due).
    pub next_attempt_in_secs: u64,
    /// The last failure's code.
    pub last_error: String,
    /// The recipient's domain (only that).
    pub recipient_domain: String,
}

/// The queue at a glance.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct QueueCounts {
    /// Leaks waiting, by state ([`QueueState`]'s labels), and finished
    /// leaks still remembered, by how they ended ([`EndState`]'s labels).
    pub states: std::collections::BTreeMap<String, u64>,
    /// The current sending rate (emails per second).
    pub send_rate: f64,
    /// Whether delivery is paused.
    #[serde(default)]
    pub paused: bool,
}

impl Exit {
    /// Counts by state.
    pub fn counts(&self) -> Result<QueueCounts, ExitError> {
        let mut states = self.store.done_counts()?;
        let in_flight = self.lock_schedule().in_flight_ids();
        for (id, entry) in self.store.queued()? {
            let state = QueueState::of(entry.attempts, in_flight.contains(&id));
            *states.entry(state.as_label().into()).or_insert(0) += 1;
        }
        Ok(QueueCounts {
            states,
            send_rate: self.lock_pace().rate(),
            paused: self.is_paused(),
        })
    }

    /// The queued leaks, oldest first, redacted.
    pub fn list(&self, limit: usize) -> Result<Vec<QueueItem>, ExitError> {
        let now = self.now_ms();
        let in_flight = self.lock_schedule().in_flight_ids();
        let mut queued = self.store.queued()?;
        queued.sort_by_key(|(_, e)| e.accepted_ms);
        let mut out = Vec::new();
        for (id, entry) in queued.into_iter().take(limit) {
            let recipient_domain = self
                .store
                .body(&id)
                .ok()
                .flatten()
                .and_then(|b| Leak::decode(&b).ok())
                .map(|l| l.recipient.ascii_domain().to_owned())
                .unwrap_or_default();
            out.push(QueueItem {
                id: id.to_string(),
                state: QueueState::of(entry.attempts, in_flight.contains(&id))
                    .as_label()
                    .into(),
                attempts: entry.attempts,
                age_secs: now.saturating_sub(entry.accepted_ms) / 1000,
                next_attempt_in_secs: entry.next_attempt_ms.saturating_sub(now) / 1000,
                last_error: entry.last_error,
                recipient_domain,
            });
        }
        Ok(out)
    }

    fn queued_ids(&self, id: Option<&str>) -> Result<Vec<(MessageId, Entry)>, ExitError> {
        let queued = self.store.queued()?;
        match id {
            None => Ok(queued),
            Some(id) => {
                let wanted = id.trim().to_lowercase();
                // The listing's id is the leak's key ([`super::dedup`]); a
                // sender's message id (a sender asking the operator about
                // a stuck leak) names the same leak through its keys.
                let keys = parse_id(&wanted)
                    .map(|sender| self.keys.candidates(&sender))
                    .unwrap_or_default();
                let found: Vec<_> = queued
                    .into_iter()
                    .filter(|(m, _)| m.to_string() == wanted || keys.contains(m))
                    .collect();
                if found.is_empty() {
                    return Err(ExitError::NoSuchLeak(id.to_owned()));
                }
                Ok(found)
            }
        }
    }

    /// Whether delivery is paused.
    pub fn is_paused(&self) -> bool {
        self.paused.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Pauses delivery (leaks are still taken and queued) or resumes it.
    /// Not kept across a restart: a restarted exit delivers.
    pub fn set_paused(&self, paused: bool) {
        self.paused
            .store(paused, std::sync::atomic::Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Makes queued leaks (one, or all) due now, without changing their
    /// count of attempts. Returns how many.
    pub fn retry_now(&self, id: Option<&str>) -> Result<usize, ExitError> {
        let now = self.now_ms();
        let mut n = 0;
        for (id, _) in self.queued_ids(id)? {
            if self.lock_schedule().in_flight(&id) {
                continue;
            }
            if self.store.update_with(&id, |e| e.next_attempt_ms = now)? {
                self.lock_schedule().insert(now, id);
                n += 1;
            }
        }
        self.wake.notify_one();
        Ok(n)
    }

    /// Removes queued leaks (one, or all) without delivering them; their
    /// senders are told `Bounced`. Leaks being sent right now are skipped.
    pub fn purge(&self, id: Option<&str>) -> Result<usize, ExitError> {
        let mut n = 0;
        for (id, _) in self.queued_ids(id)? {
            {
                let mut schedule = self.lock_schedule();
                if schedule.in_flight(&id) {
                    continue;
                }
                schedule.remove(&id);
            }
            if self.finish(id, Outcome::Bounced, EndState::Purged)? {
                n += 1;
            }
        }
        Ok(n)
    }
}

/// A leak id (32 hex digits).
fn parse_id(text: &str) -> Option<MessageId> {
    let bytes = hex::decode(text).ok()?;
    Some(MessageId(bytes.try_into().ok()?))
}
