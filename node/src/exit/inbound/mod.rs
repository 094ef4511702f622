//! Mail to the exit's domain, handed over by the exit's own mail server
//! over LMTP ([`lmtp`]):
//!
//! | to | what | done |
//! |---|---|---|
//! | `b-TOKEN@` (a leak's return path) | its delivery status notification | the leak's outcome ([`super::notify`]) when the token verifies |
//! | any | a feedback-loop report (ARF) | the reported email's opt-out link opts its recipient out at this exit (a provider's report shows other exits nothing of the recipient); a complaint for the provider |
//! | `unsubscribe@` | a recipient's opt-out (or opt-back-in) email, `Subject: unsubscribe TOKEN` | an opt-out; with its provider's DKIM signature, one that holds at every holder ([`super::evidence`]) |
//! | `postmaster@`, `abuse@` | mail for the operator | counted; forwarded to `exit.operator_address` if set (at most `exit.forward_per_hour`) |
//! | the From address | a recipient's answer | counted; a person (not a machine) gets a short explanation once a day |
//!
//! Nothing else is stored: no address, no message. A token that does not
//! verify changes nothing (counted `unverified`).

pub mod answer;
pub mod answer_text;
pub mod lmtp;
pub mod reply;
pub mod report;

use std::sync::Arc;

use self::report::Kind;
use super::{Exit, ExitError, answers::ANSWER_PREFIX, email::RETURN_PREFIX, provider::Provider};
use crate::metrics::Metrics;

/// Whom an inbound message is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// A leak's return path: the local part, with its token.
    Return(String),
    /// `postmaster@`.
    Postmaster,
    /// `abuse@` (or the local part of `exit.abuse_address`).
    Abuse,
    /// The From address of the exit's emails.
    From,
    /// A conversation's Reply-To address: the local part, with its token.
    Answer(String),
    /// The opt-out address of the `List-Unsubscribe` mailto link.
    OptOut,
}

impl Recipient {
    fn label(&self) -> &'static str {
        match self {
            Self::Return(_) => "return_path",
            Self::Postmaster => "postmaster",
            Self::Abuse => "abuse",
            Self::From => "reply",
            Self::Answer(_) => "answer",
            Self::OptOut => "opt_out",
        }
    }
}

/// The recipient `address` names at an exit whose domain is `domain`,
/// From local part `from` and abuse local part `abuse`; `None` if the exit
/// takes no mail there.
pub fn recipient(address: &str, domain: &str, from: &str, abuse: &str) -> Option<Recipient> {
    let (local, at) = address.rsplit_once('@')?;
    if !at.eq_ignore_ascii_case(domain) {
        return None;
    }
    let starts_return = local
        .get(..RETURN_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(RETURN_PREFIX));
    let starts_answer = local
        .get(..ANSWER_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(ANSWER_PREFIX));
    if starts_return {
        Some(Recipient::Return(local.to_owned()))
    } else if starts_answer {
        Some(Recipient::Answer(local.to_owned()))
    } else if local.eq_ignore_ascii_case(super::evidence::OPT_OUT_LOCAL) {
        Some(Recipient::OptOut)
    } else if local.eq_ignore_ascii_case("postmaster") {
        Some(Recipient::Postmaster)
    } else if local.eq_ignore_ascii_case("abuse") || local.eq_ignore_ascii_case(abuse) {
        Some(Recipient::Abuse)
    } else if local.eq_ignore_ascii_case(from) {
        Some(Recipient::From)
    } else {
        None
    }
}

impl Exit {
    /// Whom `address` names here (for LMTP's `RCPT`).
    pub(crate) fn inbound_recipient(&self, address: &str) -> Option<Recipient> {
        let from = self.composer.from.user();
        let abuse = self
            .composer
            .abuse_address
            .rsplit_once('@')
            .filter(|(_, d)| d.eq_ignore_ascii_case(&self.composer.domain))
            .map_or("abuse", |(local, _)| local);
        recipient(address, &self.composer.domain, from, abuse)
    }

    /// Takes one inbound message for `recipient`, sent by `sender` (the
    /// envelope's, empty for the null sender). An error is the exit's own
    /// (its storage): the mail server is asked to try again.
    pub(crate) async fn take_inbound(
        self: &Arc<Self>,
        recipient: &Recipient,
        sender: &str,
        message: &[u8],
    ) -> Result<(), ExitError> {
        let count = |kind: &'static str| Metrics::count(&self.metrics.exit_inbound, "kind", kind);
        let Some(kind) = report::classify(message) else {
            count("malformed");
            return Ok(());
        };
        match kind {
            Kind::Dsn { action, envid } => {
                count("dsn");
                // The return path's token, or the ENVID's (a notification
                // sent to another of the exit's addresses).
                let local = match recipient {
                    Recipient::Return(local) => Some(local.as_str()),
                    _ => envid.as_deref(),
                };
                let verified = local.and_then(|l| self.composer.tokens.check_return(l));
                match verified {
                    Some((id, provider)) => self.notified(id, provider, action).await,
                    None => {
                        count("unverified");
                        Ok(())
                    }
                }
            }
            Kind::Feedback {
                opt_out_tokens,
                to_domain,
            } => {
                count("feedback");
                self.feedback(&opt_out_tokens, to_domain.as_deref()).await
            }
            Kind::Other { automatic } => {
                count(recipient.label());
                match recipient {
                    Recipient::Postmaster | Recipient::Abuse => {
                        self.forward(recipient, message).await;
                    }
                    Recipient::From if !automatic => self.explain(sender).await,
                    Recipient::Answer(local) => {
                        return self.emailed_answer(local, sender, message, automatic).await;
                    }
                    // A mail client or provider sends it for the user:
                    // automatic or not, the signature is what counts.
                    Recipient::OptOut => return self.opt_out_by_mail(message).await,
                    // Auto-replies and anything else at a return path.
                    _ => count("dropped"),
                }
                Ok(())
            }
        }
    }

    /// A feedback-loop report: the reported email's recipient opts out (a
    /// complaint is the recipient saying "no more of this"), and the
    /// complaint counts once per leak toward its provider's rate. Only the
    /// exit's own links verify.
    async fn feedback(
        self: &Arc<Self>,
        tokens: &[String],
        to_domain: Option<&str>,
    ) -> Result<(), ExitError> {
        let provider = to_domain.map_or(Provider::Other, Provider::of_domain);
        let mut verified = false;
        for token in tokens {
            let Some((reference, _)) = self
                .composer
                .tokens
                .check(super::email::Link::OptOut, token)
            else {
                continue;
            };
            verified = true;
            self.opt_out_with_token(token, true).await?;
            self.complaint(reference, provider).await?;
        }
        if !verified {
            Metrics::count(&self.metrics.exit_inbound, "kind", "unverified");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_by_local_part() {
        let r = |a: &str| recipient(a, "exit.test", "leak", "abuse");
        assert_eq!(r("POSTMASTER@Exit.Test"), Some(Recipient::Postmaster));
        assert_eq!(r("abuse@exit.test"), Some(Recipient::Abuse));
        assert_eq!(r("leak@exit.test"), Some(Recipient::From));
        assert_eq!(
            r("b-00ff@exit.test"),
            Some(Recipient::Return("b-00ff".into()))
        );
        assert_eq!(
            r("A-00ff@exit.test"),
            Some(Recipient::Answer("A-00ff".into()))
        );
        assert_eq!(r("Unsubscribe@exit.test"), Some(Recipient::OptOut));
        assert_eq!(r("leak@other.test"), None);
        assert_eq!(r("root@exit.test"), None);
        assert_eq!(r("no-at-sign"), None);
        assert_eq!(
            recipient("complaints@exit.test", "exit.test", "leak", "complaints"),
            Some(Recipient::Abuse)
        );
    }
}
