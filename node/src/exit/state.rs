//! The exit's states, typed: how a leak ended, where a queued leak is, what
//! became of a leak at intake. Their labels (in metrics, in `leak-node
//! queue`, in the database) come from [`Label::as_label`], one place.

use serde::{Deserialize, Serialize};

use crate::metrics::Label;

/// How a leak left the exit (kept with its outcome while its message id
/// is remembered).
///
/// Stored in the database as its label (a string), as it always was, so
/// records written before this type existed read back unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub enum EndState {
    /// The recipient's mail system took it (a success notification, a 250
    /// from the file transport).
    Delivered,
    /// The exit's mail server took it; its delivery notification is
    /// awaited (no receipt yet).
    Sent,
    /// The exit's mail server took it and no notification came in time
    /// (`Accepted`: outcome unknown).
    Unconfirmed,
    /// The mail system refused it for good (5xx), or it could not be
    /// composed.
    Bounced,
    /// Undelivered past `exit.lifetime_secs` (bounced).
    Expired,
    /// Removed by the operator (`leak-node queue purge`; bounced).
    Purged,
    /// Its text is missing or damaged in the spool (bounced).
    Lost,
    /// Refused at intake: the policy, the local rules, the stamp, or an
    /// undeliverable address.
    Refused,
    /// Refused at intake: the recipient opted out.
    OptedOut,
    /// Refused at intake: the recipient's daily limit.
    RateLimited,
    /// Refused at intake: it does not decode as a valid leak.
    Invalid,
}

impl EndState {
    /// Every end state, for tests and listings.
    pub const ALL: [Self; 11] = [
        Self::Delivered,
        Self::Sent,
        Self::Unconfirmed,
        Self::Bounced,
        Self::Expired,
        Self::Purged,
        Self::Lost,
        Self::Refused,
        Self::OptedOut,
        Self::RateLimited,
        Self::Invalid,
    ];
}

impl Label for EndState {
    fn as_label(&self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Sent => "sent",
            Self::Unconfirmed => "unconfirmed",
            Self::Bounced => "bounced",
            Self::Expired => "expired",
            Self::Purged => "purged",
            Self::Lost => "lost",
            Self::Refused => "refused",
            Self::OptedOut => "opted_out",
            Self::RateLimited => "rate_limited",
            Self::Invalid => "invalid",
        }
    }
}

impl From<EndState> for &'static str {
    fn from(state: EndState) -> Self {
        state.as_label()
    }
}

/// A stored state that names no [`EndState`].
#[derive(Debug, thiserror::Error)]
#[error("unknown end state {0:?}")]
pub struct UnknownState(String);

impl TryFrom<String> for EndState {
    type Error = UnknownState;

    fn try_from(label: String) -> Result<Self, Self::Error> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_label() == label)
            .ok_or(UnknownState(label))
    }
}

/// Where a queued leak is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueState {
    /// Waiting for its first attempt.
    Queued,
    /// Tried at least once, waiting for the next attempt.
    Retrying,
    /// Being sent right now.
    Sending,
}

impl QueueState {
    /// The state of a leak with `attempts` so far, `sending` or not.
    pub fn of(attempts: u32, sending: bool) -> Self {
        if sending {
            Self::Sending
        } else if attempts > 0 {
            Self::Retrying
        } else {
            Self::Queued
        }
    }
}

impl Label for QueueState {
    fn as_label(&self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Retrying => "retrying",
            Self::Sending => "sending",
        }
    }
}

/// What became of a leak that reached the exit (the `exit_leaks` metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intake {
    /// Queued for delivery.
    Accepted,
    /// Seen before: answered again (or its reply block kept).
    Duplicate,
    /// Without a usable reply block: dropped unanswered.
    Unanswerable,
    /// Does not decode as a valid leak: refused.
    Invalid,
    /// The recipient opted out.
    OptedOut,
    /// The recipient's daily limit.
    RateLimited,
    /// Its anti-abuse stamp is not valid: refused before anything else,
    /// nothing stored.
    BadStamp,
    /// Another exit is responsible for its recipient: refused.
    NotResponsible,
    /// The policy, the local rules or the address refused it.
    Refused,
    /// The exit could not store it (not acknowledged: the client retransmits).
    StorageError,
    /// Its recipient's server said recently that the mailbox does not
    /// exist: bounced at once.
    Suppressed,
}

impl Intake {
    /// The intake that ends a leak in `state` (a refusal at intake).
    pub fn refusal(state: EndState) -> Self {
        match state {
            EndState::OptedOut => Self::OptedOut,
            EndState::RateLimited => Self::RateLimited,
            EndState::Invalid => Self::Invalid,
            _ => Self::Refused,
        }
    }
}

impl Label for Intake {
    fn as_label(&self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Duplicate => "duplicate",
            Self::Unanswerable => "unanswerable",
            Self::Invalid => "invalid",
            Self::OptedOut => "opted_out",
            Self::RateLimited => "rate_limited",
            Self::BadStamp => "bad_stamp",
            Self::NotResponsible => "not_responsible",
            Self::Refused => "refused",
            Self::StorageError => "storage_error",
            Self::Suppressed => "suppressed",
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The database holds end states as strings: the encoding must be the
    /// one of the `String` it replaced, both ways.
    #[test]
    fn end_states_are_stored_as_their_old_strings() {
        for state in EndState::ALL {
            let new = postcard::to_allocvec(&state).unwrap();
            let old = postcard::to_allocvec(&state.as_label().to_owned()).unwrap();
            assert_eq!(new, old, "{state:?}");
            assert_eq!(postcard::from_bytes::<EndState>(&old).unwrap(), state);
        }
        let unknown = postcard::to_allocvec(&"sideways".to_owned()).unwrap();
        assert!(postcard::from_bytes::<EndState>(&unknown).is_err());
    }

    #[test]
    fn labels_are_distinct() {
        let labels: std::collections::HashSet<_> =
            EndState::ALL.iter().map(Label::as_label).collect();
        assert_eq!(labels.len(), EndState::ALL.len());
    }

    #[test]
    fn queue_states() {
        assert_eq!(QueueState::of(0, false), QueueState::Queued);
        assert_eq!(QueueState::of(2, false), QueueState::Retrying);
        assert_eq!(QueueState::of(0, true), QueueState::Sending);
        assert_eq!(QueueState::of(0, true).as_label(), "sending");
    }
}
