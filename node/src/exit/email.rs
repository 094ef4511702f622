//! The email an exit sends, and the tokens in its links.
//!
//! Everything in the email comes from the exit: `From:` (its address, with a
//! display name from the relationship), the subject (from the relationship),
//! `Message-ID`, `Date`, the footer and the `List-Unsubscribe` headers. The
//! only thing from the sender is the text, and it goes into the body, which
//! `lettre` encodes (quoted-printable or base64), so no byte of it can become
//! a header. The recipient address was validated when the leak was decoded
//! and is parsed again by `lettre`.

use leak_protocol::{
    Leak, MessageId,
    crypto::{SymmetricKey, derive_key, mac, mac_eq},
};
use lettre::{
    Message,
    message::{
        Mailbox,
        header::{ContentType, Header, HeaderName, HeaderValue},
    },
};

use crate::exit::error::ExitError;
use crate::exit::provider::Provider;

/// What a link in the email does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Never receive a leak again (RFC 8058 one-click).
    OptOut,
    /// Report this leak as abuse.
    Report,
}

impl Link {
    fn tag(self) -> &'static [u8] {
        match self {
            Self::OptOut => b"opt-out",
            Self::Report => b"report",
        }
    }
}

const MAC_LEN: usize = 16;
/// The return path's MAC (80 bits: a local part has room for no more).
const RETURN_MAC_LEN: usize = 10;
const RETURN_LEN: usize = 16 + 1 + RETURN_MAC_LEN;
/// How a return-path local part starts.
pub const RETURN_PREFIX: &str = "b-";
const TOKEN_LEN: usize = 16 + 32 + MAC_LEN;

/// Link tokens: a reference to the leak, the recipient hash, and a MAC under
/// a key only this exit has. A token opts out (or reports for) exactly the
/// recipient it was made for; nobody can make one for someone else. The
/// reference is derived from the leak's id under the exit's key, never the
/// id itself: the id comes from the sender's client (which shows it to its
/// user), and nothing in the email may match anything the sender holds.
pub struct Tokens {
    key: SymmetricKey,
}

impl Tokens {
    /// Tokens keyed from the node's identity seed.
    pub fn new(seed: &[u8; 32]) -> Self {
        Self {
            key: derive_key("leak exit link tokens v1", &[seed]),
        }
    }

    fn tag(&self, link: Link, id: &MessageId, recipient: &[u8; 32]) -> [u8; MAC_LEN] {
        self.tag_with(link, id, recipient, &[])
    }

    fn tag_with(
        &self,
        link: Link,
        id: &MessageId,
        recipient: &[u8; 32],
        extra: &[u8],
    ) -> [u8; MAC_LEN] {
        let full = mac(&self.key, &[link.tag(), &id.0, recipient, extra]);
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }

    /// The exit's own reference for leak `id` (what a report records).
    pub fn reference(&self, id: &MessageId) -> MessageId {
        let derived = mac(&self.key, &[b"reference", &id.0]);
        let mut out = [0u8; 16];
        out.copy_from_slice(&derived[..16]);
        MessageId(out)
    }

    /// The token for `link` about leak `id` to `recipient` (hex).
    pub fn make(&self, link: Link, id: &MessageId, recipient: &[u8; 32]) -> String {
        let id = &self.reference(id);
        let mut bytes = Vec::with_capacity(TOKEN_LEN);
        bytes.extend_from_slice(&id.0);
        bytes.extend_from_slice(recipient);
        bytes.extend_from_slice(&self.tag(link, id, recipient));
        hex::encode(bytes)
    }

    /// The report token for leak `id` to `recipient` at `provider` (hex):
    /// the provider rides along, under the MAC, so a report counts toward
    /// the right provider's complaint rate without the exit keeping
    /// anything of the leak.
    pub fn make_report(&self, id: &MessageId, recipient: &[u8; 32], provider: Provider) -> String {
        let id = &self.reference(id);
        let extra = [provider.to_byte()];
        let mut bytes = Vec::with_capacity(TOKEN_LEN + 1);
        bytes.extend_from_slice(&id.0);
        bytes.extend_from_slice(recipient);
        bytes.extend_from_slice(&extra);
        bytes.extend_from_slice(&self.tag_with(Link::Report, id, recipient, &extra));
        hex::encode(bytes)
    }

    /// The leak's reference ([`Tokens::reference`]) and the recipient hash
    /// of a valid token.
    pub fn check(&self, link: Link, token: &str) -> Option<(MessageId, [u8; 32])> {
        if token.len() != 2 * TOKEN_LEN {
            return None;
        }
        let bytes = hex::decode(token).ok()?;
        let (id, recipient) = split(&bytes)?;
        let tag: [u8; MAC_LEN] = bytes.get(48..)?.try_into().ok()?;
        tag_eq(&tag, &self.tag(link, &id, &recipient)).then_some((id, recipient))
    }

    /// The leak's reference, the recipient hash and the provider of a valid
    /// report token ([`Tokens::make_report`]; a report token of the earlier
    /// form, without the provider, counts as `Other`).
    pub fn check_report(&self, token: &str) -> Option<(MessageId, [u8; 32], Provider)> {
        if token.len() == 2 * TOKEN_LEN {
            let (id, recipient) = self.check(Link::Report, token)?;
            return Some((id, recipient, Provider::Other));
        }
        if token.len() != 2 * (TOKEN_LEN + 1) {
            return None;
        }
        let bytes = hex::decode(token).ok()?;
        let (id, recipient) = split(&bytes)?;
        let extra = [*bytes.get(48)?];
        let tag: [u8; MAC_LEN] = bytes.get(49..)?.try_into().ok()?;
        let expected = self.tag_with(Link::Report, &id, &recipient, &extra);
        let provider = Provider::from_byte(extra[0])?;
        tag_eq(&tag, &expected).then_some((id, recipient, provider))
    }

    /// The local part of the return path of the email for the queued leak
    /// with store key `key` to `provider`: `b-` and 27 bytes in hex (the
    /// key, the provider, an 80-bit MAC), 56 characters, within the 64 a
    /// local part may have. Bounces and delivery notifications come back to
    /// it (VERP) and are matched to their leak without any address.
    pub fn make_return(&self, key: &MessageId, provider: Provider) -> String {
        let mut bytes = Vec::with_capacity(RETURN_LEN);
        bytes.extend_from_slice(&key.0);
        bytes.push(provider.to_byte());
        bytes.extend_from_slice(&self.return_tag(key, provider.to_byte()));
        format!("{RETURN_PREFIX}{}", hex::encode(bytes))
    }

    /// The leak's store key and provider of a valid return-path local part
    /// ([`Tokens::make_return`]; case does not matter).
    pub fn check_return(&self, local_part: &str) -> Option<(MessageId, Provider)> {
        let hex_part = local_part
            .get(..RETURN_PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(RETURN_PREFIX))
            .and_then(|_| local_part.get(RETURN_PREFIX.len()..))?;
        if hex_part.len() != 2 * RETURN_LEN {
            return None;
        }
        let bytes = hex::decode(hex_part.to_ascii_lowercase()).ok()?;
        let key = MessageId(bytes.get(..16)?.try_into().ok()?);
        let provider_byte = *bytes.get(16)?;
        let tag: [u8; RETURN_MAC_LEN] = bytes.get(17..)?.try_into().ok()?;
        if !tag_eq(&tag, &self.return_tag(&key, provider_byte)) {
            return None;
        }
        Some((key, Provider::from_byte(provider_byte)?))
    }

    fn return_tag(&self, key: &MessageId, provider: u8) -> [u8; RETURN_MAC_LEN] {
        let full = mac(&self.key, &[b"return-path", &key.0, &[provider]]);
        let mut out = [0u8; RETURN_MAC_LEN];
        out.copy_from_slice(&full[..RETURN_MAC_LEN]);
        out
    }

    /// The email's `Message-ID` local part: derived from the leak's id under
    /// this exit's key, so a redelivery after a crash carries the same
    /// `Message-ID` (mail systems drop the duplicate) while the sender's id
    /// never appears in the email.
    pub fn message_id(&self, id: &MessageId) -> String {
        let derived = mac(&self.key, &[b"message-id", &id.0]);
        hex::encode(derived)
    }
}

/// A token's leak reference and recipient hash.
fn split(bytes: &[u8]) -> Option<(MessageId, [u8; 32])> {
    let id = MessageId(bytes.get(..16)?.try_into().ok()?);
    let recipient: [u8; 32] = bytes.get(16..48)?.try_into().ok()?;
    Some((id, recipient))
}

/// Compares two truncated tags in constant time.
pub(crate) fn tag_eq<const N: usize>(tag: &[u8; N], expected: &[u8; N]) -> bool {
    let mut a = [0u8; leak_protocol::crypto::MAC_LEN];
    let mut b = [0u8; leak_protocol::crypto::MAC_LEN];
    a[..N].copy_from_slice(tag);
    b[..N].copy_from_slice(expected);
    mac_eq(&a, &b)
}

/// `List-Unsubscribe: <mailto:...>, <URL>` (RFC 2369).
#[derive(Debug, Clone)]
struct ListUnsubscribe(String);

impl Header for ListUnsubscribe {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe")
    }
    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.to_owned()))
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058).
#[derive(Debug, Clone)]
struct ListUnsubscribePost;

impl Header for ListUnsubscribePost {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe-Post")
    }
    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self)
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "List-Unsubscribe=One-Click".to_owned())
    }
}

/// `Auto-Submitted` (RFC 3834): `auto-generated` on every leak (no
/// auto-replies to the exit), `auto-replied` on the exit's answers to
/// inbound mail.
#[derive(Debug, Clone)]
pub(crate) enum AutoSubmitted {
    Generated,
    Replied,
}

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }
    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(if s.trim() == "auto-replied" {
            Self::Replied
        } else {
            Self::Generated
        })
    }
    fn display(&self) -> HeaderValue {
        let value = match self {
            Self::Generated => "auto-generated",
            Self::Replied => "auto-replied",
        };
        HeaderValue::new(Self::name(), value.to_owned())
    }
}

/// `Feedback-ID: relationship:policy-N:leak:EXIT` (Gmail's Postmaster
/// Tools and feedback loop count complaints by it).
#[derive(Clone)]
struct FeedbackId(String);

impl Header for FeedbackId {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Feedback-ID")
    }
    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.to_owned()))
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// What an email of a conversation carries.
#[derive(Debug, Clone)]
pub struct ThreadLinks {
    /// The answer form.
    pub answer_url: String,
    /// The page that ends the conversation.
    pub end_url: String,
    /// The Reply-To address (`a-TOKEN@DOMAIN`), when the exit takes
    /// inbound mail (else the answer page is the only way).
    pub reply_to: Option<String>,
    /// The `Message-ID`s of the conversation's earlier emails, oldest first.
    pub references: Vec<String>,
}

/// What the exit puts in every email besides the leak.
pub struct Composer {
    /// The exit's address.
    pub from: lettre::Address,
    /// The mail domain (for `Message-ID`).
    pub domain: String,
    /// Where abuse reports go by email.
    pub abuse_address: String,
    /// The public base URL of the opt-out endpoint, without a trailing `/`.
    pub public_url: String,
    /// Link tokens.
    pub tokens: Tokens,
    /// This exit in `Feedback-ID` (the start of its node id, in hex).
    pub sender_id: String,
}

/// The subject line for a relationship's noun phrase.
pub fn subject(noun_phrase: &str) -> String {
    format!("From {noun_phrase}, anonymously.")
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

impl Composer {
    /// The `mailto:` URL of the email that opts a token's recipient out
    /// (`out`) or back in at every exit holding it, once its provider has
    /// signed it (see [`super::evidence`]).
    pub fn opt_out_mailto(&self, token: &str, out: bool) -> String {
        let action = if out {
            super::evidence::OPT_OUT_SUBJECT
        } else {
            super::evidence::OPT_IN_SUBJECT
        };
        format!(
            "mailto:{}@{}?subject={action}%20{token}",
            super::evidence::OPT_OUT_LOCAL,
            self.domain
        )
    }

    /// The report-abuse URL for a leak to a recipient at `provider`.
    pub fn report_url(&self, id: &MessageId, recipient: &[u8; 32], provider: Provider) -> String {
        format!(
            "{}/report/{}",
            self.public_url,
            self.tokens.make_report(id, recipient, provider)
        )
    }

    /// The `Feedback-ID` (Gmail's feedback loop groups complaints by it):
    /// the relationship, the policy version and this exit, never anything
    /// of one message.
    pub fn feedback_id(&self, leak: &Leak, policy_version: u32) -> String {
        format!(
            "{}:policy-{policy_version}:leak:{}",
            leak.relationship.as_str(),
            self.sender_id
        )
    }

    /// The email for `leak`, whose recipient hashes to `recipient` and is
    /// at `provider`, under the policy of version `policy_version`.
    pub fn compose(
        &self,
        leak: &Leak,
        recipient: &[u8; 32],
        provider: Provider,
        policy_version: u32,
        thread: Option<&ThreadLinks>,
    ) -> Result<Message, ExitError> {
        let to: lettre::Address = leak.recipient.to_ascii_address().parse().map_err(|e| {
            ExitError::Compose(format!("the recipient address is not deliverable: {e}"))
        })?;
        let noun = leak.relationship.noun_phrase();
        let token = self.tokens.make(Link::OptOut, &leak.message_id, recipient);
        let opt_out = format!("{}/opt-out/{token}", self.public_url);
        let opt_out_mailto = self.opt_out_mailto(&token, true);
        let report = self.report_url(&leak.message_id, recipient, provider);
        // Text lines end in CRLF on the wire; the text has no CR (validated).
        let text = leak.text.trim_end();
        let answering = match thread {
            Some(links) => format!(
                "\n\nYou can answer the sender: {how}use this page:\n\
                 {answer}\n\
                 They stay anonymous, and they read only what you write (not your \
                 address). Answers are checked against the same policy.\n\n\
                 End this conversation (no more messages from this sender in it):\n{end}",
                how = if links.reply_to.is_some() {
                    "reply to this email, or "
                } else {
                    ""
                },
                answer = links.answer_url,
                end = links.end_url,
            ),
            None => " Replies to this address are not read by the sender.".to_owned(),
        };
        let body = format!(
            "{text}\n\n\
             -- \n\
             You received this message through Leak, a service for saying what is \
             hard to say in person. It was sent anonymously: nobody, including us, \
             knows who wrote it, and it was checked against the Leak federation's \
             shared moderation policy before delivery.{answering}\n\n\
             Never receive a message from Leak again (one click):\n{opt_out}\n\n\
             Report this message as abuse:\n{report}\n\
             or write to {abuse}.\n",
            abuse = self.abuse_address,
        )
        .replace('\n', "\r\n");
        let mut builder = Message::builder()
            .from(Mailbox::new(
                Some(format!("{} via Leak", capitalise(noun))),
                self.from.clone(),
            ))
            .to(Mailbox::new(None, to));
        if let Some(links) = thread {
            if let Some(reply_to) = &links.reply_to {
                let reply_to: lettre::Address = reply_to
                    .parse()
                    .map_err(|e| ExitError::Compose(format!("the Reply-To address: {e}")))?;
                builder = builder.reply_to(Mailbox::new(
                    Some(format!("{} (anonymous)", capitalise(noun))),
                    reply_to,
                ));
            }
            if let Some(last) = links.references.last() {
                builder = builder
                    .in_reply_to(last.clone())
                    .references(links.references.join(" "));
            }
        }
        let message = builder
            .subject(subject(noun))
            .message_id(Some(format!(
                "<{}@{}>",
                self.tokens.message_id(&leak.message_id),
                self.domain
            )))
            .date_now()
            // The email first (RFC 2369: the leftmost a client can use):
            // signed by the recipient's provider, it holds at every exit;
            // the URL for RFC 8058's one-click POST.
            .header(ListUnsubscribe(format!("<{opt_out_mailto}>, <{opt_out}>")))
            .header(ListUnsubscribePost)
            .header(AutoSubmitted::Generated)
            .header(FeedbackId(self.feedback_id(leak, policy_version)))
            .header(lettre::message::header::MIME_VERSION_1_0)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| ExitError::Compose(e.to_string()))?;
        Ok(message)
    }
}

/// The headers every DKIM signature covers.
const DKIM_SIGNED: [&str; 14] = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "Content-Type",
    "MIME-Version",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Feedback-ID",
    "Auto-Submitted",
    "Reply-To",
    "In-Reply-To",
    "References",
];

/// The DKIM signatures `exit.dkim_*` describes, RSA (or the one key)
/// first, then the Ed25519 one; empty when signing is off.
pub(super) fn dkim_configs(
    config: &crate::config::Config,
) -> Result<Vec<lettre::message::dkim::DkimConfig>, ExitError> {
    use lettre::message::dkim::DkimSigningAlgorithm;
    let exit = &config.exit;
    let mut out = Vec::new();
    if !exit.dkim_selector.is_empty() {
        let algorithm = match exit.dkim_algorithm.as_str() {
            "ed25519" => DkimSigningAlgorithm::Ed25519,
            _ => DkimSigningAlgorithm::Rsa,
        };
        out.push(dkim_config(
            config,
            &exit.dkim_selector,
            "exit.dkim_key_file",
            &exit.dkim_key_file,
            algorithm,
        )?);
    }
    if !exit.dkim_ed25519_selector.is_empty() {
        out.push(dkim_config(
            config,
            &exit.dkim_ed25519_selector,
            "exit.dkim_ed25519_key_file",
            &exit.dkim_ed25519_key_file,
            DkimSigningAlgorithm::Ed25519,
        )?);
    }
    Ok(out)
}

fn dkim_config(
    config: &crate::config::Config,
    selector: &str,
    setting: &'static str,
    file: &str,
    algorithm: lettre::message::dkim::DkimSigningAlgorithm,
) -> Result<lettre::message::dkim::DkimConfig, ExitError> {
    use lettre::message::dkim::{
        DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningKey,
    };
    let key = zeroize::Zeroizing::new(
        std::fs::read_to_string(file).map_err(|e| ExitError::read(setting, file, e))?,
    );
    let key = DkimSigningKey::new(key.trim(), algorithm)
        .map_err(|e| ExitError::setting(setting, format!("{file}: {e}")))?;
    Ok(DkimConfig::new(
        selector.to_owned(),
        config.exit.domain.trim().to_owned(),
        key,
        DKIM_SIGNED
            .into_iter()
            .map(HeaderName::new_from_ascii_str)
            .collect(),
        DkimCanonicalization {
            header: DkimCanonicalizationType::Relaxed,
            body: DkimCanonicalizationType::Relaxed,
        },
    ))
}

/// The envelope and the bytes of `message` with a DKIM signature by each
/// of `signers`, each over the message as composed (none covers another).
/// `lettre` keeps one header of a name, so every signature but the first
/// is made on a copy and its header put in front of the bytes.
pub fn signed(
    mut message: Message,
    signers: &[lettre::message::dkim::DkimConfig],
) -> (lettre::address::Envelope, Vec<u8>) {
    use lettre::message::{dkim::dkim_sign, header::Headers};
    let envelope = message.envelope().clone();
    let Some((first, rest)) = signers.split_first() else {
        return (envelope, message.formatted());
    };
    let mut out = Vec::new();
    for signer in rest {
        let mut copy = message.clone();
        dkim_sign(&mut copy, signer);
        if let Some(value) = copy.headers().get_raw("DKIM-Signature") {
            let mut header = Headers::new();
            header.insert_raw(HeaderValue::new(
                HeaderName::new_from_ascii_str("DKIM-Signature"),
                value.to_owned(),
            ));
            out.extend_from_slice(header.to_string().as_bytes());
        }
    }
    dkim_sign(&mut message, first);
    out.extend_from_slice(&message.formatted());
    (envelope, out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A report token carries its provider under the MAC: changing the
    /// provider byte (or using it as an opt-out token) fails; a report
    /// token of the earlier form still counts, as `Other`.
    #[test]
    fn report_tokens_carry_their_provider() {
        let tokens = Tokens::new(&[1; 32]);
        let id = MessageId([2; 16]);
        let token = tokens.make_report(&id, &[3; 32], Provider::Gmail);
        assert_eq!(
            tokens.check_report(&token),
            Some((tokens.reference(&id), [3; 32], Provider::Gmail))
        );
        let mut bytes = hex::decode(&token).unwrap();
        bytes[48] = Provider::Yahoo.to_byte();
        assert_eq!(tokens.check_report(&hex::encode(&bytes)), None);
        bytes[48] = 200;
        assert_eq!(tokens.check_report(&hex::encode(&bytes)), None);
        assert_eq!(tokens.check(Link::OptOut, &token), None);
        assert_eq!(tokens.check(Link::Report, &token), None);
        let earlier = tokens.make(Link::Report, &id, &[3; 32]);
        assert_eq!(
            tokens.check_report(&earlier),
            Some((tokens.reference(&id), [3; 32], Provider::Other))
        );
        let opt_out = tokens.make(Link::OptOut, &id, &[3; 32]);
        assert_eq!(tokens.check_report(&opt_out), None);
    }

    #[test]
    fn return_paths_name_their_leak_and_provider_only_under_the_mac() {
        let tokens = Tokens::new(&[7; 32]);
        let key = MessageId([3; 16]);
        let local = tokens.make_return(&key, Provider::Yahoo);
        assert!(local.len() <= 64, "{}", local.len());
        assert_eq!(tokens.check_return(&local), Some((key, Provider::Yahoo)));
        assert_eq!(
            tokens.check_return(&local.to_ascii_uppercase()),
            Some((key, Provider::Yahoo))
        );
        // Another exit's, a changed provider or key, a cut token: nothing.
        assert_eq!(Tokens::new(&[8; 32]).check_return(&local), None);
        let mut bytes = hex::decode(&local[2..]).unwrap();
        bytes[16] = Provider::Gmail.to_byte();
        assert_eq!(
            tokens.check_return(&format!("b-{}", hex::encode(&bytes))),
            None
        );
        bytes[16] = Provider::Yahoo.to_byte();
        bytes[0] ^= 1;
        assert_eq!(
            tokens.check_return(&format!("b-{}", hex::encode(&bytes))),
            None
        );
        assert_eq!(tokens.check_return(&local[..40]), None);
        assert_eq!(tokens.check_return("postmaster"), None);
        assert_eq!(tokens.check_return("b-zz"), None);
    }

    #[test]
    fn tokens_are_bound_to_link_message_and_recipient() {
        let tokens = Tokens::new(&[1; 32]);
        let id = MessageId([2; 16]);
        let token = tokens.make(Link::OptOut, &id, &[3; 32]);
        assert_eq!(
            tokens.check(Link::OptOut, &token),
            Some((tokens.reference(&id), [3; 32]))
        );
        // The sender's id is not in the link.
        assert!(!token.contains(&id.to_string()));
        // Another link kind, another key, a changed recipient: all refused.
        assert_eq!(tokens.check(Link::Report, &token), None);
        assert_eq!(Tokens::new(&[9; 32]).check(Link::OptOut, &token), None);
        let mut forged = hex::decode(&token).unwrap();
        forged[20] ^= 1;
        assert_eq!(tokens.check(Link::OptOut, &hex::encode(forged)), None);
        assert_eq!(tokens.check(Link::OptOut, "zz"), None);
        assert_eq!(tokens.check(Link::OptOut, &"é".repeat(64)), None);
        // Message-ID: stable per leak, different across leaks.
        assert_eq!(tokens.message_id(&id), tokens.message_id(&id));
        assert_ne!(
            tokens.message_id(&id),
            tokens.message_id(&MessageId([4; 16]))
        );
    }

    #[test]
    fn subjects() {
        assert_eq!(subject("a friend"), "From a friend, anonymously.");
        assert_eq!(capitalise("someone"), "Someone");
    }
}
