//! What happened to a leak, in plain words: one sentence per outcome, the
//! same for `leak send`, `leak status` and the agent's web page.

use leak_protocol::{BounceClass, Outcome};

use crate::state::Finished;

/// The sentence for an exit's outcome; `exit_domain` names the exit.
pub fn outcome(outcome: &Outcome, exit_domain: &str) -> String {
    match outcome {
        Outcome::Delivered => {
            format!("Delivered: the recipient's mail system accepted the email from {exit_domain}")
        }
        Outcome::Refused { rule, reason } => format!("Refused by the exit ({rule}): {reason}"),
        Outcome::RecipientOptedOut => {
            "RecipientOptedOut: the recipient asked never to receive leaks".to_owned()
        }
        Outcome::RateLimited => "RateLimited: the recipient has received as many leaks as allowed for now; try again tomorrow".to_owned(),
        Outcome::Bounced => "Bounced: the recipient's mail system refused the email".to_owned(),
        Outcome::Accepted => format!(
            "Accepted: {exit_domain}'s mail server took the email; no word came back of \
             its delivery, so the outcome is unknown"
        ),
        Outcome::BouncedWith(class) => format!(
            "Bounced: the recipient's mail system refused the email ({})",
            bounce_reason(*class)
        ),
        Outcome::ThreadEnded => {
            "ThreadEnded: the recipient ended this conversation; follow-ups are not delivered"
                .to_owned()
        }
    }
}

/// Whether an outcome is good news for the sender (the email went out),
/// bad news, or neither (`None`: the exit does not know).
pub fn is_good(outcome: &Outcome) -> Option<bool> {
    match outcome {
        Outcome::Delivered => Some(true),
        Outcome::Accepted => None,
        _ => Some(false),
    }
}

/// A leak whose text was lost before it left, in words.
pub const LOST: &str = "Not sent: this computer restarted (or you logged out) before the leak left, and its text, kept only in memory, is gone; send it again";

/// The sentence for how a leak ended.
pub fn finished(result: &Finished, exit_domain: &str) -> String {
    match result {
        Finished::NoReceipt => "Failed: no receipt came back after every attempt; the email may or may not have been delivered".to_owned(),
        Finished::Lost => LOST.to_owned(),
        Finished::Receipt { receipt } => outcome(receipt, exit_domain),
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

/// How a leak ended, as a name (`delivered`, `refused`…, `no_receipt`) and
/// whether it is good news ([`is_good`]).
pub fn finished_outcome(result: &Finished) -> (&'static str, Option<bool>) {
    match result {
        Finished::NoReceipt => ("no_receipt", Some(false)),
        Finished::Lost => ("lost", Some(false)),
        Finished::Receipt { receipt } => (crate::state::outcome_name(receipt), is_good(receipt)),
    }
}

/// The state of a leak the agent holds: `waiting` (not sent yet) or `sent`
/// (waiting for its receipt).
pub fn held_state(attempts_sent: u32) -> &'static str {
    if attempts_sent == 0 {
        "waiting"
    } else {
        "sent"
    }
}

/// A leak the agent holds: waiting for its moment, or sent and waiting
/// for the exit's receipt.
pub fn in_progress(attempts_sent: u32) -> String {
    match attempts_sent {
        0 => "Waiting to leave: it goes out with one of the agent's regular packets, at the moment chosen".to_owned(),
        1 => "On its way: sent through the network; waiting for the exit's receipt (this takes minutes, by design)".to_owned(),
        n => format!("On its way: sent {n} times (a receipt was late); waiting for the exit's receipt"),
    }
}

/// `1_500_000` bytes → `1.5 MB`.
pub fn megabytes(bytes: f64) -> String {
    let mb = bytes / 1e6;
    if mb < 10.0 {
        format!("{mb:.1} MB")
    } else {
        format!("{mb:.0} MB")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_has_words_and_delivered_says_so_first() {
        assert!(outcome(&Outcome::Delivered, "x.example").starts_with("Delivered"));
        assert_eq!(is_good(&Outcome::Delivered), Some(true));
        assert_eq!(is_good(&Outcome::Accepted), None);
        assert_eq!(is_good(&Outcome::RateLimited), Some(false));
        let refused = Outcome::Refused {
            rule: "links".into(),
            reason: "no links".into(),
        };
        assert!(outcome(&refused, "x").contains("no links"));
        assert!(finished(&Finished::NoReceipt, "x").starts_with("Failed"));
        assert!(finished(&Finished::Lost, "x").starts_with("Not sent"));
        assert_eq!(megabytes(1_500_000.0), "1.5 MB");
        assert_eq!(megabytes(40_100_000.0), "40 MB");
        assert!(in_progress(0).starts_with("Waiting"));
        assert!(in_progress(2).contains("2 times"));
    }
}
