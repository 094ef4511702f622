//! A recipient who presses Reply: mail to a conversation's Reply-To
//! address (`a-TOKEN@DOMAIN`, [`crate::exit::answers`]).
//!
//! The token is verified first (a forged one: counted `bad_token`,
//! nothing else); automatic mail (out-of-office, list mail) is dropped:
//! only a person answers. The person's own words are extracted
//! ([`super::answer_text`]: quotes and signatures trimmed, attachments
//! dropped unread, their address removed wherever they typed it) and
//! taken like a form answer: the same policy and caps, sealed to the
//! sender's key. The person hears back, with the null return path and at
//! most `exit.forward_per_hour` notices an hour, when the answer was not
//! kept (and why) or kept without its attachments. Their address is
//! never kept, nor passed to the sender.

use std::sync::Arc;

use leak_protocol::answers::{AnswerVia, MAX_ANSWER_LEN};
use lettre::message::Mailbox;

use super::answer_text::{self, NoAnswer};
use crate::{
    exit::{Exit, ExitError, answers::Taken},
    metrics::Metrics,
};

/// The notice for the person who answered, if one is due.
fn notice(taken: &Taken, dropped: usize, keep_days: u32) -> Option<String> {
    let body = match taken {
        Taken::Stored if dropped == 0 => return None,
        Taken::Stored => format!(
            "Your answer was kept, encrypted, for the person who wrote to you; they will \
             read it when their Leak program next checks for answers (within {keep_days} \
             days). Answers carry text only: the {dropped} attachment(s) of your email were \
             left out, unread."
        ),
        Taken::Refused(reason) => format!(
            "Your answer was not passed on: the Leak federation's moderation policy refused \
             it. {reason} Nothing of it was kept."
        ),
        Taken::Invalid(why) => format!(
            "Your answer was not passed on: {why}. Write your answer above the quoted \
             message, as text. Nothing of it was kept."
        ),
        Taken::NotRecipient => "Your answer was not passed on: answers are taken from the \
             address the anonymous message was sent to. The person who received it can answer \
             by replying from that address, or through the answer link in the message."
            .to_owned(),
        Taken::Unknown | Taken::Ended => {
            "Your answer was not passed on: this conversation is over (it was \
             ended, or its time ran out). Nothing of it was kept."
                .to_owned()
        }
        Taken::Flood => "Your answer was not passed on: this conversation has taken as many \
             answers as it can today. Try again tomorrow."
            .to_owned(),
        Taken::Full => "Your answer was not passed on: the person who wrote to you has not \
             collected your earlier answers yet, and no more can wait for them."
            .to_owned(),
    };
    Some(format!(
        "Hello,\n\n{body}\n\nThis is an automatic message from the Leak exit that delivered \
         the anonymous message you answered.\n"
    ))
}

impl Exit {
    /// Takes an emailed answer to the conversation whose Reply-To local
    /// part is `local`, from `sender` (the envelope's).
    pub(super) async fn emailed_answer(
        self: &Arc<Self>,
        local: &str,
        sender: &str,
        raw: &[u8],
        automatic: bool,
    ) -> Result<(), ExitError> {
        let Some(key) = self.threads.check_address(local) else {
            Metrics::count(&self.metrics.exit_answers, "result", "bad_token");
            return Ok(());
        };
        if automatic {
            Metrics::count(&self.metrics.exit_answers, "result", "automatic");
            return Ok(());
        }
        // Parsing and trimming are CPU work on hostile input: off the
        // runtime's threads.
        let this = self.clone();
        let raw = raw.to_vec();
        let (taken, dropped) =
            tokio::task::spawn_blocking(move || this.judge_emailed(&key, &raw)).await??;
        if let Some(body) = notice(&taken, dropped, self.config.exit.answer_keep_days) {
            self.notify_answerer(sender, body).await;
        }
        Ok(())
    }

    /// The answer in an email to conversation `key`: its own words, from
    /// its recipient only (the From address, under every hash the policy
    /// may have recorded them by).
    fn judge_emailed(&self, key: &[u8; 16], raw: &[u8]) -> Result<(Taken, usize), ExitError> {
        let Some(message) = super::report::parse(raw) else {
            Metrics::count(&self.metrics.exit_answers, "result", "invalid");
            return Ok((
                Taken::Invalid("the email has no text the exit can read".into()),
                0,
            ));
        };
        let policy = self.policy();
        let from = message
            .from()
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .and_then(|a| leak_protocol::Recipient::parse(a).ok());
        let hashes = from.map_or_else(Vec::new, |r| policy.recipient_lookup_hashes(&r));
        match answer_text::extract(&message, MAX_ANSWER_LEN) {
            Ok(answer) => {
                let dropped = answer.dropped_attachments;
                let taken =
                    self.take_answer(key, &hashes, &answer.text, AnswerVia::Email, dropped)?;
                Ok((taken, dropped))
            }
            Err(no) => {
                Metrics::count(&self.metrics.exit_answers, "result", "invalid");
                let why = match no {
                    NoAnswer::Unparseable => "the email has no text the exit can read",
                    NoAnswer::Empty => "the email holds no text of your own",
                };
                Ok((Taken::Invalid(why.into()), 0))
            }
        }
    }

    /// Sends the person who answered a notice (capped per hour).
    async fn notify_answerer(self: &Arc<Self>, sender: &str, body: String) {
        let Ok(to) = sender.parse::<Mailbox>() else {
            return;
        };
        let allowed = self
            .lock_budget()
            .notice(self.now_ms(), self.config.exit.forward_per_hour);
        if !allowed {
            Metrics::count(&self.metrics.exit_inbound, "kind", "not_answered");
            return;
        }
        self.send_auto_reply(
            to,
            "About your answer to an anonymous message",
            body.replace('\n', "\r\n"),
            "answer_notice",
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_person_hears_why_an_answer_was_not_kept_and_of_dropped_files() {
        assert_eq!(notice(&Taken::Stored, 0, 30), None);
        assert!(
            notice(&Taken::Stored, 2, 30)
                .unwrap()
                .contains("2 attachment(s)")
        );
        let refused = notice(&Taken::Refused("It reads as a threat.".into()), 0, 30).unwrap();
        assert!(refused.contains("refused it. It reads as a threat."));
        for taken in [
            Taken::Unknown,
            Taken::Flood,
            Taken::Full,
            Taken::Invalid("x".into()),
        ] {
            assert!(notice(&taken, 0, 30).unwrap().contains("not passed on"));
        }
    }
}
