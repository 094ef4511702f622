//! What the `leak` commands share: exit statuses, usage errors, and how an
//! exit's outcome is said to the sender.

use std::process::ExitCode;

use leak_client::state::{Finished, LeakRecord};
use leak_protocol::{BounceClass, Outcome};

/// Exit statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok = 0,
    Refused = 1,
    Usage = 2,
    Failed = 3,
}

impl From<Status> for ExitCode {
    fn from(status: Status) -> Self {
        ExitCode::from(status as u8)
    }
}

/// An error that is the user's to fix (exit status 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// The exit status and the sentence for an exit's outcome.
pub fn describe(outcome: &Outcome, exit_domain: &str) -> (Status, String) {
    match outcome {
        Outcome::Delivered => (
            Status::Ok,
            format!("Delivered: the recipient's mail system accepted the email from {exit_domain}"),
        ),
        Outcome::Refused { rule, reason } => (
            Status::Refused,
            format!("Refused by the exit ({rule}): {reason}"),
        ),
        Outcome::RecipientOptedOut => (
            Status::Refused,
            "RecipientOptedOut: the recipient asked never to receive leaks".to_owned(),
        ),
        Outcome::RateLimited => (
            Status::Refused,
            "RateLimited: the recipient has received as many leaks as allowed for now; try again tomorrow".to_owned(),
        ),
        Outcome::Bounced => (
            Status::Failed,
            "Bounced: the recipient's mail system refused the email".to_owned(),
        ),
        Outcome::Accepted => (
            Status::Ok,
            format!(
                "Accepted: {exit_domain}'s mail server took the email; no word came back of \
                 its delivery, so the outcome is unknown"
            ),
        ),
        Outcome::BouncedWith(class) => (
            Status::Failed,
            format!(
                "Bounced: the recipient's mail system refused the email ({})",
                bounce_reason(*class)
            ),
        ),
        Outcome::ThreadEnded => (
            Status::Refused,
            "ThreadEnded: the recipient ended this conversation; follow-ups are not delivered"
                .to_owned(),
        ),
    }
}

/// A bounce's reason, in words.
pub fn bounce_reason(class: BounceClass) -> &'static str {
    match class {
        BounceClass::UnknownUser => "no such mailbox",
        BounceClass::MailboxFull => "the mailbox is full",
        BounceClass::Policy => "refused by its policy or spam filter",
        BounceClass::Other => "a permanent failure",
    }
}

/// The state column of `leak status`.
pub fn state_line(record: &LeakRecord) -> String {
    match &record.outcome {
        None => "pending (no receipt yet)".to_owned(),
        Some(done) => match &done.result {
            Finished::NoReceipt => "failed: no receipt".to_owned(),
            Finished::Receipt { receipt } => describe(receipt, &record.exit.domain).1,
        },
    }
}
