//! What a message that reached the exit's domain is: a delivery status
//! notification (RFC 3464), a feedback-loop report (ARF, RFC 5965), or
//! anything else. Pure: bytes in, a [`Kind`] out. MIME is parsed by
//! `mail-parser`; nothing here keeps an address.

use leak_protocol::BounceClass;
use mail_parser::{Message, MessageParser, MimeHeaders as _, PartType};

/// What a DSN says of the (first) recipient it reports on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsnAction {
    /// The recipient's server took it (`Action: delivered`).
    Delivered,
    /// Handed to a system that sends no notifications (`relayed`,
    /// `expanded`): the outcome stays unknown.
    Relayed,
    /// Still trying (`delayed`): nothing final.
    Delayed,
    /// Given up, with the class of its status code.
    Failed(BounceClass),
}

/// What an inbound message is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A delivery status notification.
    Dsn {
        /// What it says.
        action: DsnAction,
        /// `Original-Envelope-Id`, if any (the exit's token, as xtext).
        envid: Option<String>,
    },
    /// A feedback-loop report: a recipient marked a message as spam.
    Feedback {
        /// The opt-out tokens found in the reported message's
        /// `List-Unsubscribe` (the exit's own links), at most a few.
        opt_out_tokens: Vec<String>,
        /// The domain of the reported message's `To:` (for the provider's
        /// complaint rate), lowercase.
        to_domain: Option<String>,
    },
    /// Anything else (a person's mail, an auto-reply, spam).
    Other {
        /// Marked as sent by a machine (`Auto-Submitted` other than `no`,
        /// `Precedence: bulk/list/junk`, a `List-Id`): never answered.
        automatic: bool,
    },
}

/// How many opt-out tokens one report may carry (a report is about one
/// message).
const MAX_TOKENS: usize = 4;

/// Reads `raw`; `None` if it does not parse as a message at all.
pub fn classify(raw: &[u8]) -> Option<Kind> {
    let message = parse(raw)?;
    let report_type = message
        .content_type()
        .filter(|ct| {
            ct.ctype().eq_ignore_ascii_case("multipart")
                && ct
                    .subtype()
                    .is_some_and(|s| s.eq_ignore_ascii_case("report"))
        })
        .and_then(|ct| ct.attribute("report-type"))
        .map(str::to_ascii_lowercase);
    match report_type.as_deref() {
        Some("delivery-status") => Some(dsn(&message).unwrap_or(Kind::Other { automatic: true })),
        Some("feedback-report") => Some(feedback(&message)),
        _ => Some(Kind::Other {
            automatic: automatic(&message),
        }),
    }
}

/// Parses a message; `None` if it does not parse. mail-parser 0.11 can
/// trip a debug assertion on some broken MIME (about one in 5,000 fuzzed
/// messages; release builds skip the check and parse on): a panic here is
/// that, and counts as a message that does not parse.
pub fn parse(raw: &[u8]) -> Option<mail_parser::Message<'_>> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        MessageParser::default().parse(raw)
    }))
    .ok()
    .flatten()
}

/// Whether a message says it was sent by a machine (RFC 3834 §2).
fn automatic(message: &Message<'_>) -> bool {
    let raw = |name: &str| {
        message
            .header_raw(name)
            .map(|v| v.trim().to_ascii_lowercase())
    };
    raw("Auto-Submitted").is_some_and(|v| !v.starts_with("no"))
        || raw("Precedence").is_some_and(|v| ["bulk", "list", "junk"].contains(&v.as_str()))
        || raw("List-Id").is_some()
        || message.header_raw("Return-Path").map(str::trim) == Some("<>")
}

/// The part of `message` whose content type is `ctype/subtype`.
fn part_of<'a>(
    message: &'a Message<'a>,
    ctype: &str,
    subtype: &str,
) -> Option<&'a mail_parser::MessagePart<'a>> {
    message.parts.iter().skip(1).find(|part| {
        part.content_type().is_some_and(|ct| {
            ct.ctype().eq_ignore_ascii_case(ctype)
                && ct
                    .subtype()
                    .is_some_and(|s| s.eq_ignore_ascii_case(subtype))
        })
    })
}

/// The `message/delivery-status` part's first per-recipient block.
fn dsn(message: &Message<'_>) -> Option<Kind> {
    let part = part_of(message, "message", "delivery-status")?;
    let text = String::from_utf8_lossy(part.contents());
    let mut blocks = field_blocks(&text).into_iter();
    let per_message = blocks.next()?;
    let envid = field(&per_message, "original-envelope-id").map(|v| v.trim().to_owned());
    let recipient = blocks.next()?;
    let action = field(&recipient, "action")?.trim().to_ascii_lowercase();
    let status = field(&recipient, "status").unwrap_or_default();
    let action = match action.as_str() {
        "delivered" => DsnAction::Delivered,
        "relayed" | "expanded" => DsnAction::Relayed,
        "delayed" => DsnAction::Delayed,
        "failed" => DsnAction::Failed(BounceClass::from_status(status)),
        _ => return None,
    };
    Some(Kind::Dsn { action, envid })
}

/// An ARF report: the opt-out tokens and `To:` domain of the message it
/// reports on (whole, `message/rfc822`, or its headers,
/// `text/rfc822-headers`).
fn feedback(message: &Message<'_>) -> Kind {
    let original = message.parts.iter().skip(1).find_map(|part| {
        if let PartType::Message(inner) = &part.body {
            return Some(inner.raw_message().to_vec());
        }
        part.content_type()
            .is_some_and(|ct| {
                ct.ctype().eq_ignore_ascii_case("text")
                    && ct
                        .subtype()
                        .is_some_and(|s| s.eq_ignore_ascii_case("rfc822-headers"))
            })
            .then(|| part.contents().to_vec())
    });
    let Some(original) = original else {
        return Kind::Feedback {
            opt_out_tokens: Vec::new(),
            to_domain: None,
        };
    };
    let headers = MessageParser::default().parse_headers(&original[..]);
    let unsubscribe = headers
        .as_ref()
        .and_then(|h| h.header_raw("List-Unsubscribe"))
        .unwrap_or_default();
    let to_domain = headers
        .as_ref()
        .and_then(|h| h.to())
        .and_then(|to| to.first())
        .and_then(|addr| addr.address())
        .and_then(|a| a.rsplit_once('@'))
        .map(|(_, domain)| domain.trim().to_ascii_lowercase());
    Kind::Feedback {
        opt_out_tokens: opt_out_tokens(unsubscribe),
        to_domain,
    }
}

/// The hex tokens after `/opt-out/` in a `List-Unsubscribe` value.
fn opt_out_tokens(value: &str) -> Vec<String> {
    value
        .split("/opt-out/")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(char::is_ascii_hexdigit)
                .collect::<String>()
        })
        .filter(|token| !token.is_empty())
        .take(MAX_TOKENS)
        .collect()
}

/// `Name: value` fields (continuation lines unfolded), in blocks separated
/// by blank lines, names lowercase.
fn field_blocks(text: &str) -> Vec<Vec<(String, String)>> {
    let mut blocks = Vec::new();
    let mut block: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !block.is_empty() {
                blocks.push(std::mem::take(&mut block));
            }
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = block.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            block.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    if !block.is_empty() {
        blocks.push(block);
    }
    blocks
}

fn field<'a>(block: &'a [(String, String)], name: &str) -> Option<&'a str> {
    block
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dsn_mail(action: &str, status: &str) -> String {
        format!(
            "From: MAILER-DAEMON@mx.test\r\nTo: b-00@exit.test\r\nSubject: Undelivered\r\n\
             MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status;\r\n\
             \tboundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nSorry.\r\n\
             --B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.test\r\n\
             Original-Envelope-Id: tok123\r\n\r\nFinal-Recipient: rfc822; zoe@leak.test\r\n\
             Action: {action}\r\nStatus: {status}\r\n\r\n--B\r\nContent-Type: text/rfc822-headers\r\n\r\n\
             From: leak@exit.test\r\n\r\n--B--\r\n"
        )
    }

    #[test]
    fn notifications_say_what_happened() {
        let kind = classify(dsn_mail("failed", "5.1.1").as_bytes()).unwrap();
        assert_eq!(
            kind,
            Kind::Dsn {
                action: DsnAction::Failed(BounceClass::UnknownUser),
                envid: Some("tok123".into())
            }
        );
        for (action, status, expected) in [
            ("delivered", "2.0.0", DsnAction::Delivered),
            ("relayed", "2.0.0", DsnAction::Relayed),
            ("delayed", "4.2.2", DsnAction::Delayed),
            (
                "failed",
                "5.2.2",
                DsnAction::Failed(BounceClass::MailboxFull),
            ),
            ("failed", "5.7.1", DsnAction::Failed(BounceClass::Policy)),
            ("failed", "5.4.4", DsnAction::Failed(BounceClass::Other)),
            ("failed", "garbage", DsnAction::Failed(BounceClass::Other)),
        ] {
            let Some(Kind::Dsn { action: got, .. }) = classify(dsn_mail(action, status).as_bytes())
            else {
                panic!("{action} {status}");
            };
            assert_eq!(got, expected, "{action} {status}");
        }
        // An action nobody defined: not a notification to act on.
        assert_eq!(
            classify(dsn_mail("exploded", "5.1.1").as_bytes()),
            Some(Kind::Other { automatic: true })
        );
    }

    #[test]
    fn feedback_reports_carry_the_links_of_the_reported_email() {
        let token = "ab".repeat(32);
        let arf = format!(
            "From: feedback@fbl.test\r\nTo: abuse@exit.test\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/report; report-type=feedback-report; boundary=\"X\"\r\n\r\n\
             --X\r\nContent-Type: text/plain\r\n\r\nA complaint.\r\n\
             --X\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\n\
             User-Agent: test/1.0\r\nVersion: 1\r\n\r\n\
             --X\r\nContent-Type: message/rfc822\r\n\r\nFrom: leak@exit.test\r\n\
             To: Zoe <Zoe@Gmail.com>\r\nList-Unsubscribe: <http://127.0.0.1:9/opt-out/{token}>\r\n\
             Subject: hi\r\n\r\nbody\r\n--X--\r\n"
        );
        assert_eq!(
            classify(arf.as_bytes()),
            Some(Kind::Feedback {
                opt_out_tokens: vec![token],
                to_domain: Some("gmail.com".into()),
            })
        );
    }

    #[test]
    fn other_mail_says_whether_a_machine_sent_it() {
        let person =
            "From: a@b.test\r\nTo: leak@exit.test\r\nSubject: Re: hi\r\n\r\nWho are you?\r\n";
        assert_eq!(
            classify(person.as_bytes()),
            Some(Kind::Other { automatic: false })
        );
        let vacation = "From: a@b.test\r\nAuto-Submitted: auto-replied\r\n\r\naway\r\n";
        assert_eq!(
            classify(vacation.as_bytes()),
            Some(Kind::Other { automatic: true })
        );
    }

    #[test]
    fn garbage_never_panics() {
        for input in [
            &b""[..],
            b"\xff\xfe\x00",
            b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n--x\r\n",
            b"Content-Type: multipart/report; report-type=feedback-report\r\n\r\n",
        ] {
            let _ = classify(input);
        }
        // Real reports cut, flipped and spliced at random.
        use rand::{RngExt as _, SeedableRng as _};
        let mut rng = rand::rngs::StdRng::seed_from_u64(5965);
        let seeds = [
            dsn_mail("failed", "5.1.1").into_bytes(),
            dsn_mail("delivered", "2.0.0").into_bytes(),
        ];
        for _ in 0..3000 {
            let mut bytes = seeds[rng.random_range(0..seeds.len())].clone();
            for _ in 0..rng.random_range(1..8) {
                let at = rng.random_range(0..bytes.len());
                match rng.random_range(0..3) {
                    0 => bytes[at] = rng.random(),
                    1 => bytes.truncate(at.max(1)),
                    _ => {
                        let chunk = bytes[at..].to_vec();
                        bytes.extend_from_slice(&chunk);
                    }
                }
            }
            let _ = classify(&bytes);
        }
    }
}
