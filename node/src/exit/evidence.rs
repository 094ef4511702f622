//! The evidence behind an opt-out that holds at every exit: the recipient's
//! own email asking for it, DKIM-signed by its mail provider.
//!
//! An exit's email carries `List-Unsubscribe: <mailto:unsubscribe@EXIT?
//! subject=unsubscribe%20TOKEN>` beside the one-click URL, and its opt-out
//! page offers the same email (`resubscribe TOKEN` opts back in). The
//! recipient's provider signs what its user sends; nobody else has that
//! key, so a signature that verifies, by a domain the From address belongs
//! to, over the From and the Subject, shows that the recipient's mailbox
//! asked. Any exit can check it again (the provider's key is in its DNS):
//! an exit can send other exits an opt-out only for a recipient who asked
//! it, by answering an email that exit delivered.
//!
//! What counts ([`Checker::check`]):
//! - exactly one `From` (one address) and one `Subject`: DKIM signs the
//!   last of a repeated field, and a reader may show the first, so a
//!   repeated one is refused rather than chosen;
//! - the Subject `unsubscribe TOKEN` (out) or `resubscribe TOKEN` (back in);
//! - a DKIM signature that passes, whose domain (`d=`) is the From address's
//!   domain or a parent of it, that covers `from` and `subject`, and the
//!   whole body (no `l=`);
//! - its time: the signature's `t=` (the large providers all set it; a
//!   signature without one is refused), not more than a day ahead of the
//!   checker's clock. The record carries that time, so an old email cannot
//!   undo a newer one.
//!
//! What is kept and sent ([`Verified::evidence`]) is the email cut down to
//! the fields that signature covers, the signature, and the body: no
//! `Received` trail, nothing the provider did not sign. It does carry the
//! recipient's address, which the exits that hold the recipient's record
//! (and only they: `SPEC.md` §18) keep while the record holds.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use leak_protocol::{Recipient, policy::Policy, policy::optout::MAX_EVIDENCE_LEN};
use mail_auth::{
    AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, ResolverCache, Txt,
};

use super::ExitError;

/// The Subject's first word of an opt-out email.
pub const OPT_OUT_SUBJECT: &str = "unsubscribe";
/// The Subject's first word of an opt-back-in email.
pub const OPT_IN_SUBJECT: &str = "resubscribe";
/// The local part opt-out emails go to.
pub const OPT_OUT_LOCAL: &str = "unsubscribe";
/// How far ahead of the clock an email's time may be.
const MAX_AHEAD_SECS: u64 = 86_400;
/// Longest wait for the provider's key.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Keys remembered (selector names; the oldest go first beyond).
const MAX_KEYS: usize = 10_000;
/// How long a key is remembered when the DNS gives no time.
const KEEP_KEY: Duration = Duration::from_secs(3600);

/// Why an email is not evidence (each a counted label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not an email, or longer than any unsubscribe email.
    Malformed,
    /// No, or more than one, From or Subject field.
    Fields,
    /// The Subject is not `unsubscribe TOKEN` or `resubscribe TOKEN`.
    Subject,
    /// No DKIM signature of the From address's domain passes over the From
    /// and the Subject (and the whole body).
    Unsigned,
    /// The signature has no time (`t=`), or one more than a day ahead.
    Time,
    /// Cut down to what the signature covers, it is too long, or it does
    /// not verify.
    Size,
    /// This exit looks nothing up (`exit.dns_resolver = "off"`).
    NoResolver,
}

impl Refusal {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Fields => "fields",
            Self::Subject => "subject",
            Self::Unsigned => "unsigned",
            Self::Time => "time",
            Self::Size => "size",
            Self::NoResolver => "no_resolver",
        }
    }
}

/// What a verified email says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Its From address.
    pub address: String,
    /// `true`: opt out; `false`: opt back in.
    pub out: bool,
    /// The token of the Subject (this exit's, if any exit's: the caller
    /// checks it).
    pub token: String,
    /// When the provider signed it (Unix seconds).
    pub at: u64,
    /// The email cut down to what the signature covers.
    pub evidence: Vec<u8>,
}

impl Verified {
    /// The recipient hash the policy gives its From address (`None`: not an
    /// address a leak could go to).
    pub fn recipient_hash(&self, policy: &Policy) -> Option<[u8; 32]> {
        Recipient::parse(&self.address)
            .ok()
            .map(|r| policy.recipient_hash(&r))
    }
}

/// The action and token of an opt-out email's Subject.
pub fn parse_subject(subject: &str) -> Option<(bool, String)> {
    let mut words = subject.split_whitespace();
    let action = words.next()?;
    let token = words.next()?;
    if words.next().is_some() || token.len() > 256 {
        return None;
    }
    let out = if action.eq_ignore_ascii_case(OPT_OUT_SUBJECT) {
        true
    } else if action.eq_ignore_ascii_case(OPT_IN_SUBJECT) {
        false
    } else {
        return None;
    };
    Some((out, token.to_ascii_lowercase()))
}

/// Providers' keys looked up, kept until the DNS's time runs out.
#[derive(Default)]
struct Keys(Mutex<HashMap<Box<str>, (Txt, Instant)>>);

impl Keys {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, (Txt, Instant)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ResolverCache<Box<str>, Txt> for Keys {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        let now = Instant::now();
        self.lock()
            .get(name)
            .filter(|(_, until)| *until > now)
            .map(|(txt, _)| txt.clone())
    }

    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.lock().remove(name).map(|(txt, _)| txt)
    }

    fn insert(&self, key: Box<str>, value: Txt, valid_until: Instant) {
        let mut keys = self.lock();
        if keys.len() >= MAX_KEYS {
            let now = Instant::now();
            keys.retain(|_, (_, until)| *until > now);
            if keys.len() >= MAX_KEYS {
                keys.clear();
            }
        }
        let until = valid_until.min(Instant::now() + KEEP_KEY);
        keys.insert(key, (value, until));
    }
}

/// Checks opt-out emails' DKIM signatures.
pub struct Checker {
    authenticator: Option<MessageAuthenticator>,
    keys: Keys,
}

impl Checker {
    /// Looks keys up with the resolver `exit.dns_resolver` names (none:
    /// every email is refused as [`Refusal::NoResolver`], and opt-outs hold
    /// at the exit that took them only).
    pub fn from_setting(setting: &str) -> Result<Self, ExitError> {
        let authenticator = match super::mx::resolver_config(setting) {
            Ok(Some((config, options))) => Some(
                MessageAuthenticator::new(config, options)
                    .map_err(|e| ExitError::setting("exit.dns_resolver", e.to_string()))?,
            ),
            Ok(None) => None,
            // No system resolver: as "off", said once.
            Err(e) if setting.trim().is_empty() => {
                tracing::warn!(error = %e, "no DNS resolver: opt-outs by email hold at this exit only");
                None
            }
            Err(e) => return Err(e),
        };
        Ok(Self {
            authenticator,
            keys: Keys::default(),
        })
    }

    /// Takes `record` (a DKIM key record's text) as the answer for
    /// `selector._domainkey.domain` for an hour: for tests without a DNS
    /// server.
    #[cfg(test)]
    pub fn add_key(&self, selector: &str, domain: &str, record: &str) {
        use mail_auth::common::{parse::TxtRecordParser as _, verify::DomainKey};
        let key = DomainKey::parse(record.as_bytes()).map_or_else(Txt::Error, Txt::from);
        self.keys.insert(
            format!("{selector}._domainkey.{domain}.").into(),
            key,
            Instant::now() + KEEP_KEY,
        );
    }

    /// Checks an email as it arrived: what it says, and its cut-down form
    /// (which checks the same).
    pub async fn check(&self, raw: &[u8], now_secs: u64) -> Result<Verified, Refusal> {
        let verified = self.check_form(raw, now_secs).await?;
        let again = self.check_form(&verified.evidence, now_secs).await;
        match again {
            Ok(v) if v.evidence == verified.evidence && v.at == verified.at => Ok(verified),
            _ => Err(Refusal::Size),
        }
    }

    /// Checks evidence another exit sent: it must be in its cut-down form.
    pub async fn check_evidence(
        &self,
        evidence: &[u8],
        now_secs: u64,
    ) -> Result<Verified, Refusal> {
        let verified = self.check_form(evidence, now_secs).await?;
        if verified.evidence != evidence {
            return Err(Refusal::Size);
        }
        Ok(verified)
    }

    async fn check_form(&self, raw: &[u8], now_secs: u64) -> Result<Verified, Refusal> {
        if raw.len() > super::inbound::lmtp::MAX_MESSAGE {
            return Err(Refusal::Malformed);
        }
        let message = AuthenticatedMessage::parse(raw).ok_or(Refusal::Malformed)?;
        let fields = |name: &str| {
            message
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
                .map(|(_, v)| *v)
                .collect::<Vec<_>>()
        };
        let (from_fields, subjects) = (fields("from"), fields("subject"));
        if from_fields.len() != 1 || message.from.len() != 1 || subjects.len() != 1 {
            return Err(Refusal::Fields);
        }
        let address = message.from[0].to_ascii_lowercase();
        let subject = std::str::from_utf8(subjects[0]).map_err(|_| Refusal::Subject)?;
        let (out, token) = parse_subject(subject).ok_or(Refusal::Subject)?;
        let Some(authenticator) = &self.authenticator else {
            return Err(Refusal::NoResolver);
        };
        let from_domain = address
            .rsplit_once('@')
            .map(|(_, d)| d.trim_end_matches('.').to_owned())
            .ok_or(Refusal::Fields)?;
        let outputs = tokio::time::timeout(
            TIMEOUT,
            authenticator.verify_dkim(Parameters::new(&message).with_txt_cache(&self.keys)),
        )
        .await
        .map_err(|_| Refusal::Unsigned)?;
        let signed = |sig: &mail_auth::dkim::Signature, field: &str| {
            sig.h.iter().any(|h| h.eq_ignore_ascii_case(field))
        };
        let passing = outputs
            .iter()
            .filter(|o| *o.result() == DkimResult::Pass)
            .filter_map(|o| o.signature())
            .find(|sig| {
                let d = sig.d.trim_end_matches('.').to_ascii_lowercase();
                (from_domain == d || from_domain.ends_with(&format!(".{d}")))
                    && signed(sig, "from")
                    && signed(sig, "subject")
                    && sig.l == 0
            })
            .ok_or(Refusal::Unsigned)?;
        let at = passing.t;
        if at == 0 || at > now_secs.saturating_add(MAX_AHEAD_SECS) {
            return Err(Refusal::Time);
        }
        // The fields the signature covers (every instance: the signature
        // covers the last ones, and cutting the others would change which
        // instance that is), the signature's own field, the body.
        let header = message
            .dkim_headers
            .iter()
            .find(|h| std::ptr::eq(&h.header, passing))
            .ok_or(Refusal::Unsigned)?;
        let offset = |s: &[u8]| (s.as_ptr() as usize).wrapping_sub(raw.as_ptr() as usize);
        let mut evidence = Vec::with_capacity(raw.len().min(MAX_EVIDENCE_LEN));
        for (name, value) in &message.headers {
            let own = std::ptr::eq(name.as_ptr(), header.name.as_ptr());
            let covered = std::str::from_utf8(name).is_ok_and(|n| signed(passing, n.trim()));
            if own || covered {
                let (start, end) = (offset(name), offset(value) + value.len());
                evidence.extend_from_slice(raw.get(start..end).ok_or(Refusal::Malformed)?);
            }
        }
        evidence.extend_from_slice(b"\r\n");
        let body = raw
            .get(usize::try_from(message.body_offset).map_err(|_| Refusal::Malformed)?..)
            .ok_or(Refusal::Malformed)?;
        evidence.extend_from_slice(body);
        if evidence.len() > MAX_EVIDENCE_LEN {
            return Err(Refusal::Size);
        }
        Ok(Verified {
            address,
            out,
            token,
            at,
            evidence,
        })
    }
}

/// Emails signed as a recipient's provider would, for tests.
#[cfg(test)]
pub(crate) mod testing {
    #![allow(clippy::unwrap_used)]
    use base64::Engine as _;
    use mail_auth::{
        common::{crypto::Ed25519Key, headers::HeaderWriter as _},
        dkim::DkimSigner,
    };

    use super::Checker;

    /// The key of `seed`, and its DNS record's text.
    pub(crate) fn key(seed: u8) -> (Ed25519Key, String) {
        let seed = [seed; 32];
        let public = leak_protocol::crypto::ed25519_public(&seed);
        let key = Ed25519Key::from_seed_and_public_key(&seed, &public).unwrap();
        let record = format!(
            "v=DKIM1; k=ed25519; p={}",
            base64::engine::general_purpose::STANDARD.encode(public)
        );
        (key, record)
    }

    /// An email from `from` to the opt-out address, as a provider receives
    /// it from its user's client (plus a trace field the provider adds).
    pub(crate) fn email(from: &str, subject: &str) -> String {
        format!(
            "Received: from mx.example.org by exit.test\r\nFrom: Dan <{from}>\r\n\
             To: unsubscribe@exit.test\r\nSubject: {subject}\r\n\
             Date: Thu, 15 Jan 2027 08:00:00 +0000\r\n\r\nThis message was automatically generated.\r\n"
        )
    }

    /// `message` signed by `domain` (selector `s1`, key `seed`) over
    /// `headers`, now.
    pub(crate) fn sign(message: &str, domain: &str, seed: u8, headers: &[&str]) -> Vec<u8> {
        let signature = DkimSigner::from_key(key(seed).0)
            .domain(domain)
            .selector("s1")
            .headers(headers.iter().copied())
            .sign(message.as_bytes())
            .unwrap();
        let mut out = signature.to_header().into_bytes();
        out.extend_from_slice(message.as_bytes());
        out
    }

    /// A checker that knows key `seed` as `domain`'s `s1`.
    pub(crate) fn checker(domain: &str, seed: u8) -> Checker {
        let checker = Checker::from_setting("127.0.0.1:9").unwrap();
        checker.add_key("s1", domain, &key(seed).1);
        checker
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::{
        testing::{checker, email, sign},
        *,
    };

    fn now() -> u64 {
        crate::clock::unix_now_ms() / 1000
    }

    const TOKEN: &str = "00ff";
    const ALL: [&str; 3] = ["From", "Subject", "To"];

    #[tokio::test]
    async fn a_signed_opt_out_email_is_evidence_in_its_cut_down_form() {
        let c = checker("example.org", 1);
        let subject = format!("unsubscribe {TOKEN}");
        let raw = sign(&email("Dan@example.org", &subject), "example.org", 1, &ALL);
        let v = c.check(&raw, now()).await.unwrap();
        assert_eq!(
            (v.address.as_str(), v.out, v.token.as_str()),
            ("dan@example.org", true, TOKEN)
        );
        assert!(v.at.abs_diff(now()) < 60);
        let kept = String::from_utf8(v.evidence.clone()).unwrap();
        assert!(
            !kept.contains("Received") && !kept.contains("Date:"),
            "{kept}"
        );
        assert!(kept.contains("Subject: unsubscribe") && kept.contains("DKIM-Signature"));
        // Another exit checks the cut-down form, and only that form.
        assert_eq!(c.check_evidence(&v.evidence, now()).await.unwrap(), v);
        assert_eq!(c.check_evidence(&raw, now()).await, Err(Refusal::Size));
        // An address of a subdomain under the parent's signature; opting
        // back in.
        let raw = sign(
            &email("dan@mail.example.org", &format!("Resubscribe {TOKEN}")),
            "example.org",
            1,
            &ALL,
        );
        let v = c.check(&raw, now()).await.unwrap();
        assert!(!v.out);
        assert_eq!(v.address, "dan@mail.example.org");
    }

    #[tokio::test]
    async fn what_the_provider_did_not_sign_is_not_evidence() {
        let c = checker("example.org", 1);
        let subject = format!("unsubscribe {TOKEN}");
        let signed = |from: &str, domain: &str, seed: u8, h: &[&str]| {
            sign(&email(from, &subject), domain, seed, h)
        };
        // The Subject not signed; another domain's signature; a parent's
        // address under a subdomain's key; the wrong key.
        let unsigned = signed("dan@example.org", "example.org", 1, &["From", "To"]);
        assert_eq!(c.check(&unsigned, now()).await, Err(Refusal::Unsigned));
        let other = checker("evil.test", 2);
        let foreign = signed("dan@example.org", "evil.test", 2, &ALL);
        assert_eq!(other.check(&foreign, now()).await, Err(Refusal::Unsigned));
        let sub = checker("mail.example.org", 1);
        let parent = signed("dan@example.org", "mail.example.org", 1, &ALL);
        assert_eq!(sub.check(&parent, now()).await, Err(Refusal::Unsigned));
        let wrong_key = signed("dan@example.org", "example.org", 3, &ALL);
        assert_eq!(c.check(&wrong_key, now()).await, Err(Refusal::Unsigned));
        // A body or Subject changed after signing; a Subject or a From
        // added above the signed ones.
        let text = String::from_utf8(signed("dan@example.org", "example.org", 1, &ALL)).unwrap();
        let body = text.replace("automatically", "manually").into_bytes();
        assert_eq!(c.check(&body, now()).await, Err(Refusal::Unsigned));
        let changed = text
            .replace("unsubscribe 00ff", "unsubscribe 00fe")
            .into_bytes();
        assert_eq!(c.check(&changed, now()).await, Err(Refusal::Unsigned));
        let added = format!("Subject: resubscribe {TOKEN}\r\n{text}").into_bytes();
        assert_eq!(c.check(&added, now()).await, Err(Refusal::Fields));
        let added = format!("From: eve@example.org\r\n{text}").into_bytes();
        assert_eq!(c.check(&added, now()).await, Err(Refusal::Fields));
        // Not an opt-out; the checker's clock a day and more behind; no
        // resolver; garbage.
        let hello = sign(&email("dan@example.org", "hello"), "example.org", 1, &ALL);
        assert_eq!(c.check(&hello, now()).await, Err(Refusal::Subject));
        let good = text.into_bytes();
        assert!(c.check(&good, now()).await.is_ok());
        assert_eq!(
            c.check(&good, now() - MAX_AHEAD_SECS - 60).await,
            Err(Refusal::Time)
        );
        let off = Checker::from_setting("off").unwrap();
        assert_eq!(off.check(&good, now()).await, Err(Refusal::NoResolver));
        for garbage in [&b""[..], b"\xff\xfe", b"From: a\r\n\r\n", &[b'a'; 300_000]] {
            assert!(c.check(garbage, now()).await.is_err());
        }
    }

    #[test]
    fn subjects() {
        assert_eq!(
            parse_subject("unsubscribe AB12"),
            Some((true, "ab12".into()))
        );
        assert_eq!(
            parse_subject(" Resubscribe ab12 "),
            Some((false, "ab12".into()))
        );
        assert_eq!(parse_subject("Re: unsubscribe ab12"), None);
        assert_eq!(parse_subject("unsubscribe"), None);
        assert_eq!(parse_subject("unsubscribe ab12 now"), None);
    }
}
