//! The shared moderation policy: rules, limits and the anti-abuse stamp.
//!
//! One policy document serves the whole federation: a TOML file with a
//! version, a key for recipient hashes, the limits (length, links, the
//! per-recipient rate and the stamp's difficulty), named lexicons and named
//! rules grouped by [`Category`]. Policy maintainers sign it
//! ([`SignedPolicy`]); nodes and clients keep the newest version signed by
//! enough of the keys they trust. The client calls [`Policy::check_text`]
//! before sending and the exit calls it again, authoritatively: the same
//! code, so the same verdict.
//!
//! # Matching
//!
//! A text is normalised into views ([`views`]): Unicode NFKC, invisible
//! characters removed, homoglyphs folded (`decancer`), lower case, and for
//! the *words* view also contractions expanded, leetspeak folded, spaced-out
//! letters joined and repeated letters squeezed. A rule lists *terms*
//! (whole words or phrases, found with one Aho-Corasick automaton per view)
//! and *patterns* (regular expressions, run as one `RegexSet` per view), or
//! a *near* condition (an entry of one lexicon within so many words of an
//! entry of another, with negation scoped to the clause: "women are scum"
//! but not "I never said women are scum"); it may add *requires* (one of
//! these must also match) and *unless* (none of these may match:
//! counter-speech, reclaimed words). Patterns refer to lexicons as `{name}`;
//! lexicons may get misspelling variants (`[fuzzy]`). The first rule in
//! document order that matches refuses the text; the refusal names the rule
//! and gives its reason, never the matched text. `policy/default.toml`
//! beside this crate documents the format in its header.
//!
//! Everything here is pure: no I/O, no clock. Callers supply the time (as a
//! stamp epoch) and read the files.

mod fuzzy;
pub mod model;
mod normalize;
pub mod optout;
pub mod recipient;
mod rules;
mod signed;
mod stamp;
pub mod train;

pub mod eval;

use core::fmt;

pub use normalize::{Views, views};
pub use signed::{
    MAX_POLICY_LEN, MAX_SIGNATURES, SignedPolicy, parse_public_key, parse_public_keys,
    verify_replacement, verify_signed,
};
pub use stamp::{STAMP_EPOCH_SECS, StampError, leading_zero_bits, solve_stamp, verify_stamp};

use crate::address::Recipient;

/// The default policy's source, shipped in the repository.
pub const BUILTIN_TOML: &str = include_str!("../../policy/default.toml");

/// The default policy's model (`policy/model.bin`), shipped in the
/// repository and built in, so that no client or node downloads it.
pub const BUILTIN_MODEL: &[u8] = include_bytes!("../../policy/model.bin");

/// The built-in model, parsed once.
fn builtin_model() -> Option<std::sync::Arc<model::Model>> {
    static MODEL: std::sync::OnceLock<Option<std::sync::Arc<model::Model>>> =
        std::sync::OnceLock::new();
    MODEL
        .get_or_init(|| {
            model::Model::from_bytes(BUILTIN_MODEL)
                .ok()
                .map(std::sync::Arc::new)
        })
        .clone()
}

/// The most leading zero bits a policy may ask of a stamp.
pub const MAX_STAMP_BITS: u8 = 32;

/// What a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    /// Threats and violence.
    Threat,
    /// Encouragement of self-harm or suicide.
    SelfHarm,
    /// Bullying and harassment of the recipient.
    Bullying,
    /// Hate speech against a group.
    Hate,
    /// Sexual content.
    Sexual,
    /// Spam and scams.
    Spam,
    /// Someone's personal details: addresses, phone, identity and card numbers.
    Doxxing,
    /// Links and domain names.
    Links,
    /// Too long.
    Length,
}

impl Category {
    /// Every category, in a stable order.
    pub const ALL: [Self; 9] = [
        Self::Threat,
        Self::SelfHarm,
        Self::Bullying,
        Self::Hate,
        Self::Sexual,
        Self::Spam,
        Self::Doxxing,
        Self::Links,
        Self::Length,
    ];

    /// The categories a policy document's rules may have (length is a limit).
    pub const RULE_CATEGORIES: [Self; 8] = [
        Self::Threat,
        Self::SelfHarm,
        Self::Bullying,
        Self::Hate,
        Self::Sexual,
        Self::Spam,
        Self::Doxxing,
        Self::Links,
    ];

    /// The name used in policy documents, receipts and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Threat => "threat",
            Self::SelfHarm => "self-harm",
            Self::Bullying => "bullying",
            Self::Hate => "hate",
            Self::Sexual => "sexual",
            Self::Spam => "spam",
            Self::Doxxing => "doxxing",
            Self::Links => "links",
            Self::Length => "length",
        }
    }

    /// The category named `name` (as [`Category::as_str`] spells it).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// A rule category (not [`Category::Length`]) named `name`.
    pub(crate) fn rule_category(name: &str) -> Option<Self> {
        Self::RULE_CATEGORIES
            .into_iter()
            .find(|c| c.as_str() == name)
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::str::FromStr for Category {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_name(s).ok_or_else(|| PolicyError::Invalid {
            at: "category".to_owned(),
            message: format!("unknown category {s:?}"),
        })
    }
}

/// The limits a policy sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The most bytes of UTF-8 text in a leak.
    pub max_text_len: usize,
    /// Whether links and domain names may appear in a leak.
    pub links_allowed: bool,
    /// How many leaks one recipient may receive per day, from all senders.
    pub per_recipient_per_day: u32,
    /// Leading zero bits a leak's anti-abuse stamp needs.
    pub stamp_bits: u8,
    /// How recipient addresses are normalised before they are hashed
    /// (`address_normalization`, 1 when a document does not say).
    pub address_normalization: recipient::Normalization,
}

/// Why a text was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The category of the rule.
    pub category: Category,
    /// The rule's name, at most [`MAX_RULE_LEN`](crate::payload::MAX_RULE_LEN) bytes ("threat.direct").
    pub rule: String,
    /// One sentence for the sender, at most
    /// [`MAX_REASON_LEN`](crate::payload::MAX_REASON_LEN) bytes; it
    /// never repeats the text.
    pub reason: String,
}

/// The outcome of [`Policy::check_text`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The text may be sent.
    Accepted,
    /// The text may not be sent.
    Refused(Refusal),
}

impl Verdict {
    /// Whether the text was accepted.
    pub fn is_accepted(&self) -> bool {
        matches!(self, Self::Accepted)
    }

    /// The refusal, if the text was refused.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            Self::Accepted => None,
            Self::Refused(r) => Some(r),
        }
    }
}

/// A policy document that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// Not valid TOML, or a field is missing, unknown or of the wrong type.
    #[error("policy document: {0}")]
    Toml(String),
    /// A field has a value the policy cannot use.
    #[error("policy document, {at}: {message}")]
    Invalid {
        /// Where: a field or a rule.
        at: String,
        /// What is wrong.
        message: String,
    },
    /// A signed policy's bytes are not in the signed policy format.
    #[error("signed policy: {0}")]
    Malformed(String),
    /// Fewer valid signatures by trusted keys than required.
    #[error("signed policy: {valid} valid signature(s) by trusted keys, {threshold} required")]
    NotEnoughSignatures {
        /// Distinct trusted keys whose signature verified.
        valid: usize,
        /// How many were required.
        threshold: usize,
    },
    /// The policy names a model whose bytes are missing, altered or
    /// malformed.
    #[error("policy model: {0}")]
    Model(String),
    /// A signature made by a trusted key does not verify.
    #[error(
        "signed policy: the signature by trusted key {key} does not verify (forged or altered)"
    )]
    Forged {
        /// The key, in hex.
        key: String,
    },
    /// A maintainer's public key is not 64 hex digits.
    #[error("{0:?} is not a public key (64 hex digits)")]
    BadKey(String),
    /// A signed policy that verifies but is older than the one built into
    /// this release: nodes and clients never go back to it.
    #[error(
        "version {version} is older than the policy built into this release (version {builtin}); nodes refuse it"
    )]
    OlderThanBuiltin {
        /// The signed policy's version.
        version: u32,
        /// The built-in policy's version.
        builtin: u32,
    },
}

/// A [`PolicyError::Invalid`] at `at` (a rule, a lexicon, a section).
pub(crate) fn invalid(at: &str, message: impl Into<String>) -> PolicyError {
    PolicyError::Invalid {
        at: at.to_owned(),
        message: message.into(),
    }
}

/// A compiled policy, ready to check texts.
#[derive(Clone)]
pub struct Policy {
    version: u32,
    optout_key: [u8; 32],
    limits: Limits,
    rules: rules::RuleSet,
    model: Option<std::sync::Arc<model::Model>>,
    source: String,
}

/// Short: the version, the limits and how many rules (not the source, not
/// the key).
impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("version", &self.version)
            .field("limits", &self.limits)
            .field("rules", &self.rules.rules.len())
            .field("model", &self.model.is_some())
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// The default policy shipped in the repository (`policy/default.toml`
    /// beside this crate). A unit test proves it compiles. It is compiled
    /// once per process (its misspelling variants make that take a while);
    /// every call returns a copy whose matchers are shared.
    pub fn builtin() -> Policy {
        static BUILTIN: std::sync::OnceLock<Policy> = std::sync::OnceLock::new();
        BUILTIN
            .get_or_init(|| match Self::from_toml(BUILTIN_TOML) {
                Ok(policy) => policy,
                // Unreachable: `tests::builtin_policy_compiles` checks the file.
                Err(_) => Self::empty(),
            })
            .clone()
    }

    /// A policy without rules: what `builtin` would fall back to were the
    /// shipped file broken (a unit test proves it is not).
    fn empty() -> Policy {
        Policy {
            version: 0,
            optout_key: [0; 32],
            limits: Limits {
                max_text_len: crate::payload::MAX_TEXT_LEN,
                links_allowed: false,
                per_recipient_per_day: 1,
                stamp_bits: 20,
                address_normalization: recipient::Normalization::Providers,
            },
            rules: rules::RuleSet::empty(),
            model: None,
            source: String::new(),
        }
    }

    /// Compiles a policy document. A document that names a model (`[model]`,
    /// by its BLAKE3 hash) gets the built-in model when the hashes match,
    /// and is refused otherwise: use [`Policy::from_toml_with_model`] to
    /// supply another model's bytes.
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        Self::compile(text, None)
    }

    /// Compiles a policy document with the bytes of the model file it names.
    /// The bytes must hash to the document's `[model] blake3`: the
    /// maintainers' signature over the document then covers the model.
    pub fn from_toml_with_model(text: &str, model: &[u8]) -> Result<Policy, PolicyError> {
        Self::compile(text, Some(model))
    }

    fn compile(text: &str, model_bytes: Option<&[u8]>) -> Result<Policy, PolicyError> {
        let file: rules::PolicyFile =
            toml::from_str(text).map_err(|e| PolicyError::Toml(e.to_string()))?;
        let optout_key = parse_key(&file.optout_key)?;
        let l = &file.limits;
        if l.max_text_len == 0 || l.max_text_len > crate::payload::MAX_TEXT_LEN {
            return Err(PolicyError::Invalid {
                at: "limits.max_text_len".to_owned(),
                message: format!("must be 1 to {}", crate::payload::MAX_TEXT_LEN),
            });
        }
        if l.stamp_bits > MAX_STAMP_BITS {
            return Err(PolicyError::Invalid {
                at: "limits.stamp_bits".to_owned(),
                message: format!("must be at most {MAX_STAMP_BITS}"),
            });
        }
        if l.per_recipient_per_day == 0 {
            return Err(PolicyError::Invalid {
                at: "limits.per_recipient_per_day".to_owned(),
                message: "must be at least 1 (opt-outs are how a recipient says none)".to_owned(),
            });
        }
        let address_normalization = recipient::Normalization::from_number(l.address_normalization)
            .ok_or_else(|| PolicyError::Invalid {
                at: "limits.address_normalization".to_owned(),
                message: "must be 1 or 2".to_owned(),
            })?;
        let rules = rules::RuleSet::compile(&file)?;
        let model = match &file.model {
            None => None,
            Some(m) => Some(load_model(m, model_bytes)?),
        };
        Ok(Policy {
            version: file.version,
            optout_key,
            limits: Limits {
                max_text_len: l.max_text_len,
                links_allowed: l.links_allowed,
                per_recipient_per_day: l.per_recipient_per_day,
                stamp_bits: l.stamp_bits,
                address_normalization,
            },
            rules,
            model,
            source: text.to_owned(),
        })
    }

    /// The policy's version: of two valid policies, the higher one wins.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The TOML the policy was compiled from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The names of the rules, in the order they are tried.
    pub fn rule_names(&self) -> impl Iterator<Item = (&str, Category)> {
        self.rules
            .rules
            .iter()
            .map(|r| (r.name.as_str(), r.category))
    }

    /// Checks a text against the length limit, the links limit and every
    /// content rule.
    pub fn check_text(&self, text: &str) -> Verdict {
        if text.len() > self.limits.max_text_len {
            return Verdict::Refused(Refusal {
                category: Category::Length,
                rule: "length.max".to_owned(),
                reason: format!(
                    "The message is {} bytes long; the most allowed is {}.",
                    text.len(),
                    self.limits.max_text_len
                ),
            });
        }
        let views = normalize::views(text);
        let skip = self.limits.links_allowed.then_some(Category::Links);
        if let Some(rule) = self.rules.first_match(&views, skip) {
            return Verdict::Refused(Refusal {
                category: rule.category,
                rule: rule.name.clone(),
                reason: rule.reason.clone(),
            });
        }
        match self.model.as_ref().and_then(|m| m.verdict(&views.unquoted)) {
            None => Verdict::Accepted,
            Some(category) => Verdict::Refused(Refusal {
                category,
                rule: format!("model.{category}"),
                reason: model_reason(category).to_owned(),
            }),
        }
    }

    /// The model file a policy document names (`[model] file`), if it names
    /// one; `None` too when the document is not valid TOML.
    pub fn model_file_name(text: &str) -> Option<String> {
        let file: rules::PolicyFile = toml::from_str(text).ok()?;
        file.model.and_then(|m| m.file)
    }

    /// The same policy without its model: the rules alone (for measuring
    /// what the model adds).
    pub fn without_model(&self) -> Policy {
        Policy {
            model: None,
            ..self.clone()
        }
    }

    /// Whether the policy has a learned model beside its rules.
    pub fn has_model(&self) -> bool {
        self.model.is_some()
    }

    /// The policy's model, if it has one.
    pub fn model(&self) -> Option<&model::Model> {
        self.model.as_deref()
    }

    /// The keyed hash of a recipient's normalised address, for opt-outs and
    /// per-recipient rate limits: every exit computes the same hash, and
    /// nobody without the policy learns the address from it.
    ///
    /// The address is normalised first, under the policy's scheme
    /// ([`recipient::normalize`]): lower case, the domain in its ASCII
    /// (Punycode) form, a `+tag` removed, and under scheme 2 what large
    /// providers define (Gmail's dots and `googlemail.com`, Yahoo's
    /// `-keyword`, Fastmail's subdomains). An address that both schemes
    /// normalise alike hashes alike under both.
    pub fn recipient_hash(&self, recipient: &Recipient) -> [u8; 32] {
        self.hash_normalized(&recipient::normalize(
            recipient,
            self.limits.address_normalization,
        ))
    }

    /// Every hash under which an exit may hold opt-outs and counts for
    /// `recipient`: [`Policy::recipient_hash`] first, then, when the policy
    /// normalises more than scheme 1 and that makes a difference, the
    /// scheme-1 hash (what exits recorded under earlier policies).
    pub fn recipient_lookup_hashes(&self, recipient: &Recipient) -> Vec<[u8; 32]> {
        let current = self.recipient_hash(recipient);
        let basic = self.hash_normalized(&recipient::normalize(
            recipient,
            recipient::Normalization::Basic,
        ));
        if basic == current {
            vec![current]
        } else {
            vec![current, basic]
        }
    }

    fn hash_normalized(&self, address: &str) -> [u8; 32] {
        crate::crypto::derive_key(
            "leak 2025 policy recipient hash v1",
            &[&self.optout_key, address.as_bytes()],
        )
        .0
    }
}

/// The sentence a model refusal gives, per category: like a rule's reason,
/// it never repeats the text.
fn model_reason(category: Category) -> &'static str {
    match category {
        Category::Threat => {
            "The message reads as a threat against someone, which Leak never delivers."
        }
        Category::SelfHarm => {
            "The message reads as encouraging someone to harm themselves, which Leak never delivers."
        }
        Category::Bullying => "The message reads as insulting or harassing the recipient.",
        Category::Hate => "The message reads as hateful towards a group of people.",
        Category::Sexual => "The message reads as unwanted sexual content.",
        Category::Spam => "The message reads as spam or a scam.",
        Category::Doxxing => "The message reads as exposing someone's personal details.",
        Category::Links => "The message contains links, which this policy does not allow.",
        Category::Length => "The message is too long.",
    }
}

/// The model a policy's `[model]` names: `bytes` when given, else the
/// built-in model; either way it must hash to the named BLAKE3.
fn load_model(
    named: &rules::ModelFile,
    bytes: Option<&[u8]>,
) -> Result<std::sync::Arc<model::Model>, PolicyError> {
    let want = parse_hash(&named.blake3)?;
    let file = named.file.as_deref().unwrap_or("the model file");
    match bytes {
        Some(bytes) => {
            if *blake3::hash(bytes).as_bytes() != want {
                return Err(PolicyError::Model(format!(
                    "{file} does not match the policy's [model] blake3 (missing, altered or another model)"
                )));
            }
            model::Model::from_bytes(bytes)
                .map(std::sync::Arc::new)
                .map_err(|e| PolicyError::Model(format!("{file}: {e}")))
        }
        None => {
            if *blake3::hash(BUILTIN_MODEL).as_bytes() != want {
                return Err(PolicyError::Model(format!(
                    "the policy names a model (blake3 {}) that is not built into this release; \
                     supply {file} with it",
                    named.blake3
                )));
            }
            builtin_model()
                .ok_or_else(|| PolicyError::Model("the built-in model does not parse".to_owned()))
        }
    }
}

/// 64 hex digits → 32 bytes.
fn parse_hash(hex: &str) -> Result<[u8; 32], PolicyError> {
    parse_hex32(hex).ok_or_else(|| PolicyError::Invalid {
        at: "model.blake3".to_owned(),
        message: "must be 64 hexadecimal digits (32 bytes)".to_owned(),
    })
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

fn parse_key(hex: &str) -> Result<[u8; 32], PolicyError> {
    signed::decode_hex_key(hex).ok_or_else(|| PolicyError::Invalid {
        at: "optout_key".to_owned(),
        message: "must be 64 hexadecimal digits (32 bytes)".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{MAX_REASON_LEN, MAX_RULE_LEN};

    #[test]
    fn builtin_policy_compiles() {
        let policy = Policy::from_toml(BUILTIN_TOML);
        assert!(policy.is_ok(), "{:?}", policy.err());
        let policy = Policy::builtin();
        assert!(policy.version() >= 1);
        assert!(policy.rule_names().count() > 0);
    }

    #[test]
    fn reasons_and_names_fit_a_receipt() {
        let policy = Policy::builtin();
        for r in &policy.rules.rules {
            assert!(r.name.len() <= MAX_RULE_LEN);
            assert!(r.reason.len() <= MAX_REASON_LEN);
        }
        for c in Category::ALL {
            assert!(format!("model.{c}").len() <= MAX_RULE_LEN);
            assert!(model_reason(c).len() <= MAX_REASON_LEN);
        }
    }

    #[test]
    fn builtin_policy_has_its_model() {
        assert!(Policy::builtin().has_model());
        assert!(builtin_model().is_some());
    }

    #[test]
    fn a_model_that_does_not_match_its_hash_is_refused() {
        let ok = Policy::from_toml_with_model(BUILTIN_TOML, BUILTIN_MODEL);
        assert!(ok.is_ok_and(|p| p.has_model()));
        let mut altered = BUILTIN_MODEL.to_vec();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        let err = Policy::from_toml_with_model(BUILTIN_TOML, &altered).unwrap_err();
        assert!(matches!(err, PolicyError::Model(_)), "{err}");
        assert!(Policy::from_toml_with_model(BUILTIN_TOML, b"").is_err());
        // A document naming a model this build does not have.
        let other = BUILTIN_TOML.replace(
            &blake3::hash(BUILTIN_MODEL).to_hex().to_string(),
            &"ab".repeat(32),
        );
        assert_ne!(other, BUILTIN_TOML);
        let err = Policy::from_toml(&other).unwrap_err();
        assert!(matches!(err, PolicyError::Model(_)), "{err}");
        // Nobody signs it, and so no node verifies it: a signed policy is
        // compiled (with its model) before it is taken, and a node keeps
        // the policy it had when that fails.
        let err = SignedPolicy::sign(&other, &[7; 32]).unwrap_err();
        assert!(matches!(err, PolicyError::Model(_)), "{err}");
        assert!(
            err.to_string().contains("not built into this release"),
            "{err}"
        );
    }
}
