//! The learned classifier beside the rules: a hashed linear model.
//!
//! Rules are precise where abuse can be listed (links, personal data,
//! slurs); they miss what cannot be enumerated ("you are truly stupid",
//! "watch your back tonight", French). The model reads the *unquoted* words
//! view of a text (what the sender says, not what they quote: "if you say
//! 'X', you are a bigot" is judged on its own words, as the rules judge it;
//! the same normalisation the rules read: confusables, leetspeak,
//! spacing tricks, contractions and repeated letters undone), adds its own
//! folding of apostrophe-less contractions ("im" is "i am"), and turns it
//! into hashed features: word unigrams and bigrams, and character 3- to
//! 5-grams of the words joined by spaces (so that one misspelt letter
//! changes a few features, not the verdict). Each feature lands in one of
//! `2^bits` buckets with a sign (the hashing trick); every bucket holds one
//! 16-bit weight per *head*.
//!
//! # Heads and verdict
//!
//! One logistic-regression head per [`HEADS`] entry: `abusive` (any kind of
//! abuse) and one per category. A text of at least [`MIN_WORDS`] words is
//! refused when a category head reaches its threshold, or when the abusive
//! head does and the text is [`addressed`] to its reader (thresholds are
//! chosen on held-back folds by the trainer and stored in the model file);
//! the refusal names the category whose head is furthest above its own
//! threshold. A head the trainer had too few texts of its kind for has an
//! unreachable threshold (`f32::MAX`): it never refuses, and the rules
//! cover its category.
//!
//! # Determinism
//!
//! The client and the exit must agree on every byte of input. The feature
//! hash is FNV-1a (fixed, no random state); weights are integers summed in
//! an `i64` in feature order; the only floating point is one `sqrt`, one
//! multiplication and one division per head, all correctly rounded in
//! IEEE 754, so every platform computes the same scores.
//!
//! # File format ([`Model::from_bytes`])
//!
//! ```text
//! "LEAKMDL" 0x01          8 bytes: magic and format version
//! bits                    1 byte (10..=24): 2^bits buckets
//! heads                   1 byte, = HEADS.len()
//! per head: scale f32 LE, bias f32 LE, threshold f32 LE
//! weights                 2^bits × heads × i16 LE, bucket-major
//! ```
//!
//! Nothing may follow. The policy names the file by its BLAKE3 hash, so a
//! maintainer's signature over the policy covers the model too.

use super::Category;

/// What each head of the model scores, in file order. `None` is the
/// `abusive` head (any kind of abuse).
pub const HEADS: [Option<Category>; 8] = [
    None,
    Some(Category::Threat),
    Some(Category::SelfHarm),
    Some(Category::Bullying),
    Some(Category::Hate),
    Some(Category::Sexual),
    Some(Category::Spam),
    Some(Category::Doxxing),
];

const MAGIC: &[u8; 8] = b"LEAKMDL\x01";
const HEADER_LEN: usize = 8 + 2 + HEADS.len() * 12;
/// The fewest and most hash bits a model file may have.
const BITS: core::ops::RangeInclusive<u8> = 10..=24;

/// A model file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// Not in the model format (wrong magic, truncated, trailing bytes,
    /// bad sizes or non-finite numbers).
    #[error("model file: {0}")]
    Malformed(String),
}

/// One head's calibration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Head {
    /// Weight units per logit unit: a weight `w` counts `w * scale`.
    pub scale: f32,
    /// The logit of a text without features.
    pub bias: f32,
    /// The logit at and above which the head refuses.
    pub threshold: f32,
}

/// A loaded model.
#[derive(Clone, PartialEq)]
pub struct Model {
    bits: u8,
    heads: [Head; HEADS.len()],
    /// `2^bits × HEADS.len()` weights, bucket-major.
    weights: Vec<i16>,
}

impl core::fmt::Debug for Model {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Model")
            .field("bits", &self.bits)
            .field("heads", &self.heads)
            .finish_non_exhaustive()
    }
}

/// The model's scores for one text: one logit per [`HEADS`] entry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores(pub [f64; HEADS.len()]);

impl Model {
    /// A model from its parts. `weights` must hold `2^bits × HEADS.len()`
    /// entries, bucket-major.
    pub fn new(
        bits: u8,
        heads: [Head; HEADS.len()],
        weights: Vec<i16>,
    ) -> Result<Self, ModelError> {
        if !BITS.contains(&bits) {
            return Err(ModelError::Malformed(format!(
                "{bits} hash bits; {} to {} allowed",
                BITS.start(),
                BITS.end()
            )));
        }
        if weights.len() != (1usize << bits) * HEADS.len() {
            return Err(ModelError::Malformed("wrong number of weights".to_owned()));
        }
        if heads
            .iter()
            .any(|h| !(h.scale.is_finite() && h.bias.is_finite() && h.threshold.is_finite()))
        {
            return Err(ModelError::Malformed(
                "a head's number is not finite".to_owned(),
            ));
        }
        Ok(Model {
            bits,
            heads,
            weights,
        })
    }

    /// Parses a model file (format in the module documentation).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ModelError> {
        let bad = |m: &str| ModelError::Malformed(m.to_owned());
        if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
            return Err(bad("not a Leak model (magic)"));
        }
        let bits = bytes[8];
        if usize::from(bytes[9]) != HEADS.len() {
            return Err(bad("wrong number of heads"));
        }
        if !BITS.contains(&bits) {
            return Err(bad("hash bits out of range"));
        }
        let f = |at: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&bytes[at..at + 4]);
            f32::from_le_bytes(b)
        };
        let mut heads = [Head {
            scale: 0.0,
            bias: 0.0,
            threshold: 0.0,
        }; HEADS.len()];
        for (i, h) in heads.iter_mut().enumerate() {
            let at = 10 + i * 12;
            *h = Head {
                scale: f(at),
                bias: f(at + 4),
                threshold: f(at + 8),
            };
        }
        let n = (1usize << bits) * HEADS.len();
        let body = &bytes[HEADER_LEN..];
        if body.len() != n * 2 {
            return Err(bad("weights truncated or followed by other bytes"));
        }
        let weights = body
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect();
        Model::new(bits, heads, weights)
    }

    /// The model file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.weights.len() * 2);
        out.extend_from_slice(MAGIC);
        out.push(self.bits);
        out.push(HEADS.len() as u8);
        for h in &self.heads {
            out.extend_from_slice(&h.scale.to_le_bytes());
            out.extend_from_slice(&h.bias.to_le_bytes());
            out.extend_from_slice(&h.threshold.to_le_bytes());
        }
        for w in &self.weights {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out
    }

    /// The heads' calibration, in [`HEADS`] order.
    pub fn heads(&self) -> &[Head; HEADS.len()] {
        &self.heads
    }

    /// Sets the heads' thresholds (the trainer picks them after fitting).
    pub fn set_thresholds(&mut self, thresholds: [f32; HEADS.len()]) {
        for (h, t) in self.heads.iter_mut().zip(thresholds) {
            h.threshold = t;
        }
    }

    /// The hash bits: the model has `2^bits` buckets.
    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// Every head's logit for a text's words view (see [`super::Views`]).
    pub fn scores(&self, words_view: &str) -> Scores {
        let mut sums = [0i64; HEADS.len()];
        let mut n = 0u32;
        let mask = (1u32 << self.bits) - 1;
        features(words_view, |f| {
            n += 1;
            let bucket = (f & mask) as usize * HEADS.len();
            let row = &self.weights[bucket..bucket + HEADS.len()];
            if f & 0x8000_0000 == 0 {
                for (s, &w) in sums.iter_mut().zip(row) {
                    *s += i64::from(w);
                }
            } else {
                for (s, &w) in sums.iter_mut().zip(row) {
                    *s -= i64::from(w);
                }
            }
        });
        let norm = f64::from(n.max(1)).sqrt();
        let mut out = [0f64; HEADS.len()];
        for ((o, s), h) in out.iter_mut().zip(sums).zip(&self.heads) {
            *o = f64::from(h.bias) + (s as f64) * f64::from(h.scale) / norm;
        }
        Scores(out)
    }

    /// The category the model refuses a text's words view for, if any: the
    /// head furthest above its threshold. When only the abusive head fires,
    /// the category is the likeliest category head; the abusive head alone
    /// refuses only a text [`addressed`] to the recipient.
    pub fn verdict(&self, words_view: &str) -> Option<Category> {
        if !enough_words(words_view) {
            return None;
        }
        self.verdict_of(&self.scores(words_view), addressed(words_view))
    }

    /// [`Model::verdict`] from scores already computed; `addressed` is
    /// [`addressed`] of the text.
    pub fn verdict_of(&self, scores: &Scores, addressed: bool) -> Option<Category> {
        let mut best: Option<(f64, Category)> = None;
        let mut abusive = false;
        for ((kind, s), h) in HEADS.iter().zip(scores.0).zip(&self.heads) {
            let margin = s - f64::from(h.threshold);
            match kind {
                None => abusive = margin >= 0.0,
                Some(c) => {
                    if margin >= 0.0 && best.is_none_or(|(m, _)| margin > m) {
                        best = Some((margin, *c));
                    }
                }
            }
        }
        if let Some((_, c)) = best {
            return Some(c);
        }
        if !abusive || !addressed {
            return None;
        }
        // Only the abusive head fired: name the likeliest kind.
        let mut likeliest = (f64::NEG_INFINITY, Category::Bullying);
        for ((kind, s), h) in HEADS.iter().zip(scores.0).zip(&self.heads) {
            if let Some(c) = kind {
                let margin = s - f64::from(h.threshold);
                if margin > likeliest.0 {
                    likeliest = (margin, *c);
                }
            }
        }
        Some(likeliest.1)
    }
}

/// What the unquoted view puts in place of a quotation: the model reads it
/// as a clause break, not as a word.
const QUOTE: &str = "quote";

/// The fewest words the model judges: one or two words ("u too", "U 2.")
/// give it too little evidence, and its scores on them are mostly the bias.
/// Short abuse is the rules' (insults, slurs, "kys").
pub const MIN_WORDS: usize = 3;

/// Whether a words view has at least [`MIN_WORDS`] words (clause marks
/// and quotation stand-ins not counted).
pub fn enough_words(words_view: &str) -> bool {
    words_view
        .split_ascii_whitespace()
        .filter(|w| *w != "." && *w != QUOTE)
        .nth(MIN_WORDS - 1)
        .is_some()
}

/// Whether a words view speaks to someone ("you", "your", "tu", "t'", "toi"…).
///
/// The abusive head learnt general abuse from forum and tweet data, where a
/// group's name weighs heavily ("women are not stupid" scores high); a leak
/// is a message to one person, so that head refuses on its own only a text
/// addressed to its reader. Abuse of groups is left to the hate head and
/// the rules.
pub fn addressed(words_view: &str) -> bool {
    words_view.split_ascii_whitespace().any(|w| {
        matches!(
            w,
            "you"
                | "your"
                | "yours"
                | "yourself"
                | "u"
                | "ur"
                | "ya"
                | "youre"
                | "yourselves"
                | "tu"
                | "t"
                | "te"
                | "toi"
                | "ton"
                | "ta"
                | "tes"
                | "vous"
                | "votre"
                | "vos"
        )
    })
}

/// FNV-1a, 32 bits, over `kind` and then `bytes`.
fn fnv(kind: u8, parts: &[&[u8]]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    h ^= u32::from(kind);
    h = h.wrapping_mul(0x0100_0193);
    for part in parts {
        for &b in *part {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    // Finalise (murmur3's fmix32) so the low bits used for buckets and the
    // top bit used as the sign are well mixed.
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// Apostrophe-less contractions and their expansion, so that "im going to"
/// reads as "i am going to" (the words view expands "i'm" the same way).
fn expand_bare(word: &str) -> Option<&'static str> {
    Some(match word {
        "im" => "i am",
        "ive" => "i have",
        "youre" | "ur" => "you are",
        "youl" => "you will",
        "dont" => "do not",
        "doesnt" => "does not",
        "didnt" => "did not",
        "isnt" => "is not",
        "arent" => "are not",
        "wasnt" => "was not",
        "cant" => "can not",
        "wont" => "will not",
        "wouldnt" => "would not",
        "shouldnt" => "should not",
        "couldnt" => "could not",
        "theyre" => "they are",
        "gona" => "going to",
        "wana" => "want to",
        "u" => "you",
        "ya" => "you",
        _ => return None,
    })
}

/// Words that negate what follows them in the clause.
fn is_negator(word: &str) -> bool {
    matches!(word, "not" | "never" | "nt" | "pas" | "jamais" | "plus")
}

/// How many words after a negator are read as negated.
const NEGATION_REACH: u8 = 2;

/// The model's words: the words view without clause marks, with bare
/// contractions expanded, and the words just after a negator in the same
/// clause marked with `~` ("women are not ~stupid", "do not ~ever ~kill
/// yourself"): a negated word gets features of its own, so "not stupid"
/// does not count as "stupid".
fn model_words(words_view: &str, out: &mut String) {
    let mut negated = 0u8;
    for w in words_view.split_ascii_whitespace() {
        // A clause mark, or the unquoted view's stand-in for a quotation.
        if w == "." || w == QUOTE {
            negated = 0;
            continue;
        }
        for part in expand_bare(w).unwrap_or(w).split(' ') {
            if !out.is_empty() {
                out.push(' ');
            }
            if is_negator(part) {
                out.push_str(part);
                negated = NEGATION_REACH;
            } else if negated > 0 {
                out.push('~');
                out.push_str(part);
                negated -= 1;
            } else {
                out.push_str(part);
            }
        }
    }
}

/// Calls `f` with every feature hash of a words view, in a fixed order.
/// The top bit of a hash is the feature's sign, the low bits its bucket.
pub fn features(words_view: &str, mut f: impl FnMut(u32)) {
    let mut text = String::with_capacity(words_view.len() + 16);
    model_words(words_view, &mut text);
    let mut prev: Option<&str> = None;
    for w in text.split(' ').filter(|w| !w.is_empty()) {
        f(fnv(1, &[w.as_bytes()]));
        if let Some(p) = prev {
            f(fnv(2, &[p.as_bytes(), b" ", w.as_bytes()]));
        }
        prev = Some(w);
    }
    // Character n-grams over " w1 w2 … ", ASCII only (the words view is).
    let mut padded = Vec::with_capacity(text.len() + 2);
    padded.push(b' ');
    padded.extend_from_slice(text.as_bytes());
    padded.push(b' ');
    for n in 3..=5usize {
        for gram in padded.windows(n) {
            // A gram of spaces only, or of one letter between spaces,
            // says nothing.
            if gram.iter().filter(|b| **b != b' ').count() < 2 {
                continue;
            }
            f(fnv(2 + n as u8, &[gram]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Model {
        let bits = 10;
        let weights = (0..(1usize << bits) * HEADS.len())
            .map(|i| ((i * 7919) % 601) as i16 - 300)
            .collect();
        let head = Head {
            scale: 0.01,
            bias: -1.0,
            threshold: 0.5,
        };
        Model::new(bits, [head; HEADS.len()], weights).unwrap()
    }

    #[test]
    fn bytes_round_trip_and_reject_damage() {
        let m = tiny();
        let bytes = m.to_bytes();
        assert_eq!(Model::from_bytes(&bytes).unwrap(), m);
        assert!(Model::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Model::from_bytes(&longer).is_err());
        let mut magic = bytes.clone();
        magic[0] ^= 1;
        assert!(Model::from_bytes(&magic).is_err());
        let mut nan = bytes;
        nan[10..14].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(Model::from_bytes(&nan).is_err());
    }

    #[test]
    fn bare_contractions_read_as_expanded() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        features(" im going to . ", |h| a.push(h));
        features(" i am going to ", |h| b.push(h));
        assert_eq!(a, b);
    }

    #[test]
    fn short_texts_are_left_to_the_rules() {
        assert!(!enough_words(" you too . "));
        assert!(enough_words(" i hate you "));
        let m = tiny();
        assert_eq!(m.verdict(" u 2 . "), None);
    }

    #[test]
    fn a_quotation_stand_in_is_a_clause_break_not_a_word() {
        let mut out = String::new();
        model_words(" if you say quote . you are not quote ", &mut out);
        assert_eq!(out, "if you say you are not");
        assert!(!enough_words(" helo quote quote quote "));
        assert!(enough_words(" helo wake up quote "));
    }

    #[test]
    fn negated_words_are_marked_within_the_clause() {
        let mut out = String::new();
        model_words(" women are not stupid . they are smart ", &mut out);
        assert_eq!(out, "women are not ~stupid they are smart");
        out.clear();
        model_words(" dont ever kil yourself ", &mut out);
        assert_eq!(out, "do not ~ever ~kil yourself");
    }

    #[test]
    fn scores_are_fixed_numbers() {
        // A golden value: the same on every platform, or the client and
        // the exit could disagree.
        let m = tiny();
        let s = m.scores(" you are stupid ");
        let again = m.scores(" you are stupid ");
        assert_eq!(s, again);
        assert!(s.0.iter().all(|x| x.is_finite()));
        assert!(m.scores("").0.iter().all(|x| *x == -1.0));
    }
}
