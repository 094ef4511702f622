//! What the `leak` commands share: exit statuses, usage errors, and how an
//! exit's outcome is said to the sender.

use std::process::ExitCode;

use leak_client::{
    state::{Finished, LeakRecord},
    words,
};
use leak_protocol::Outcome;

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
    let status = match outcome {
        Outcome::Delivered | Outcome::Accepted => Status::Ok,
        Outcome::Refused { .. }
        | Outcome::RecipientOptedOut
        | Outcome::RateLimited
        | Outcome::ThreadEnded => Status::Refused,
        Outcome::Bounced | Outcome::BouncedWith(_) => Status::Failed,
    };
    (status, words::outcome(outcome, exit_domain))
}

/// The state column of `leak status`.
pub fn state_line(record: &LeakRecord) -> String {
    match &record.outcome {
        None => "pending (no receipt yet)".to_owned(),
        Some(done) => match &done.result {
            Finished::NoReceipt => "failed: no receipt".to_owned(),
            Finished::Lost => "not sent: lost in a restart".to_owned(),
            Finished::Receipt { receipt } => describe(receipt, &record.exit.domain).1,
        },
    }
}
