//! Text normalisation: the views of a text that rules match against.
//!
//! Two views are computed from every text:
//!
//! - **raw**: Unicode NFKC, invisible and format characters removed,
//!   homoglyphs and other confusables folded to their Latin look-alikes
//!   (`decancer`), lower case, runs of white space as one space. Digits and
//!   punctuation are kept: phone numbers, addresses and links are matched here.
//! - **words**: the raw view with the usual evasions undone: contractions
//!   expanded ("I'll" → "i will"), spaced-out letters joined ("k i l l",
//!   "k.i.l.l" → "kill"), leetspeak folded inside words ("k1ll", "$lut"),
//!   everything that is not a letter or digit turned into a space, and runs
//!   of the same letter squeezed to one ("kiiiill" → "kil"). The result is
//!   ASCII lower-case letters, digits and single spaces, with one space at
//!   each end so that " word " always finds a whole word.
//!
//! Lexicon terms and word-view patterns go through the same folding when
//! the policy is compiled, so a rule is written in plain English ("kill")
//! and matches the squeezed form ("kil").

use std::borrow::Cow;

use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfkc_quick};

/// The views of one text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Views {
    /// NFKC, confusables folded, lower case, white space collapsed.
    pub raw: String,
    /// Evasions undone: ASCII letters, digits and single spaces, padded.
    pub words: String,
    /// The words view of the text outside quotation marks: what the sender
    /// says rather than what they report someone else saying. The same as
    /// `words` when the text quotes nothing or is all quotation.
    pub unquoted: String,
}

/// Computes every view of `text`.
pub fn views(text: &str) -> Views {
    let raw = raw_view(text);
    let words = words_view(&raw);
    let unquoted = match strip_quotes(&raw) {
        Some(outside) => {
            let w = words_view(&outside);
            // A text that is (almost) all quotation is judged as a whole:
            // quotation marks are not a way around the rules. Only the
            // sender's own words count ("quote" stands for the quotation):
            // `Remember this: "I will kill you"` is a threat, not a report.
            let own = w
                .split_ascii_whitespace()
                .filter(|t| !matches!(*t, "quote" | "."))
                .count();
            if own >= 3 { w } else { words.clone() }
        }
        None => words.clone(),
    };
    Views {
        raw,
        words,
        unquoted,
    }
}

/// The words-view form of a lexicon term or phrase (without the padding).
pub fn fold_term(term: &str) -> String {
    let w = words_view(&raw_view(term));
    w.trim().to_owned()
}

/// Characters that render as nothing (or nearly) and are used to split a
/// word so that a filter misses it.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}'
        | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}'
        | '\u{FFF0}'..='\u{FFF8}'
        | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E007F}'
        | '\u{E0100}'..='\u{E01EF}')
}

/// NFKC, invisible characters removed, confusables folded, lower case,
/// white space collapsed to single spaces, trimmed.
pub fn raw_view(text: &str) -> String {
    let mut out = Spaced::with_capacity(text.len());
    if text.is_ascii() {
        for &b in text.as_bytes() {
            out.push_ascii(b);
        }
        return out.finish();
    }
    let options = decancer::Options::default();
    let normalized: Cow<'_, str> = match is_nfkc_quick(text.chars()) {
        IsNormalized::Yes => Cow::Borrowed(text),
        _ => Cow::Owned(text.nfkc().collect()),
    };
    for c in normalized.chars() {
        if c.is_ascii() {
            out.push_ascii(c as u8);
            continue;
        }
        if is_invisible(c) {
            continue;
        }
        match c {
            '\u{2018}' | '\u{2019}' | '\u{201B}' | '\u{2032}' | '\u{02BC}' | '\u{FF07}' => {
                out.push('\'')
            }
            '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' | '\u{00AB}' | '\u{00BB}'
            | '\u{2033}' => out.push('"'),
            '\u{2010}'..='\u{2015}' | '\u{2212}' => out.push('-'),
            c if c.is_whitespace() => out.space(),
            'ß' | 'ẞ' => out.push_str("ss"),
            // Symbols (currency, marks) are kept: only letters have
            // look-alikes worth folding.
            c if !c.is_alphabetic() => out.push(c),
            c => match decancer::cure_char(c, options) {
                decancer::Translation::Character(t) => {
                    for l in t.to_lowercase() {
                        out.push(l);
                    }
                }
                decancer::Translation::String(s) => {
                    for l in s.chars().flat_map(char::to_lowercase) {
                        out.push(l);
                    }
                }
                decancer::Translation::None => {}
            },
        }
    }
    out.finish()
}

/// A string being built with runs of white space as one space, none at
/// either end.
struct Spaced {
    out: String,
    pending_space: bool,
}

impl Spaced {
    fn with_capacity(n: usize) -> Self {
        Self {
            out: String::with_capacity(n),
            pending_space: false,
        }
    }

    fn space(&mut self) {
        self.pending_space = !self.out.is_empty();
    }

    fn push(&mut self, c: char) {
        if c.is_whitespace() {
            self.space();
            return;
        }
        if self.pending_space {
            self.out.push(' ');
            self.pending_space = false;
        }
        self.out.push(c);
    }

    fn push_str(&mut self, s: &str) {
        for c in s.chars() {
            self.push(c);
        }
    }

    fn push_ascii(&mut self, b: u8) {
        if b.is_ascii_whitespace() || b.is_ascii_control() {
            self.space();
        } else {
            if self.pending_space {
                self.out.push(' ');
                self.pending_space = false;
            }
            self.out.push(char::from(b.to_ascii_lowercase()));
        }
    }

    fn finish(self) -> String {
        self.out
    }
}

/// The raw text with every "…" (or “…”) span replaced by a space, or
/// `None` when it has no complete quotation.
fn strip_quotes(raw: &str) -> Option<String> {
    if !raw.contains('"') {
        return None;
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    let mut stripped = false;
    while let Some(open) = rest.find('"') {
        let after = &rest[open + 1..];
        match after.find('"') {
            Some(close) => {
                out.push_str(&rest[..open]);
                out.push_str(" quote ");
                rest = &after[close + 1..];
                stripped = true;
            }
            None => break,
        }
    }
    out.push_str(rest);
    stripped.then_some(out)
}

/// A character leetspeak uses for a letter, and the letter.
fn leet(c: char) -> Option<char> {
    Some(match c {
        '0' => 'o',
        '1' => 'i',
        '3' => 'e',
        '4' => 'a',
        '5' => 's',
        '7' => 't',
        '@' => 'a',
        '$' => 's',
        '!' => 'i',
        '|' => 'l',
        '+' => 't',
        '€' => 'e',
        '£' => 'l',
        _ => return None,
    })
}

/// Characters that may separate the letters of a spaced-out word.
fn is_letter_separator(c: char) -> bool {
    matches!(
        c,
        '.' | '-' | '_' | '*' | ',' | '~' | '/' | '\\' | ':' | '·'
    )
}

/// One character that counts as a letter when words are spelt out.
fn is_letterish(c: char) -> bool {
    c.is_ascii_alphanumeric() || leet(c).is_some()
}

/// Expands the contractions of one lower-case token in place of its apostrophe.
fn expand_contractions(token: &str, out: &mut String) {
    if !token.contains('\'') {
        out.push_str(token);
        return;
    }
    let (head, tail) = match token.split_once('\'') {
        Some(split) => split,
        None => (token, ""),
    };
    let tail_word: String = tail
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect();
    let rest = &tail[tail_word.len()..];
    match (head, tail_word.as_str()) {
        ("won" | "wo", "t") => out.push_str("will not"),
        ("can" | "ca", "t") => out.push_str("can not"),
        ("shan" | "sha", "t") => out.push_str("shall not"),
        ("ain", "t") => out.push_str("is not"),
        (h, "t") if h.ends_with('n') => {
            out.push_str(&h[..h.len() - 1]);
            out.push_str(" not");
        }
        (h, "ll") => {
            out.push_str(h);
            out.push_str(" will");
        }
        (h, "re") => {
            out.push_str(h);
            out.push_str(" are");
        }
        (h, "m") => {
            out.push_str(h);
            out.push_str(" am");
        }
        (h, "ve") => {
            out.push_str(h);
            out.push_str(" have");
        }
        (h, "d") => {
            out.push_str(h);
            out.push_str(" would");
        }
        (h, "s") => {
            out.push_str(h);
            out.push('s');
        }
        (h, t) => {
            out.push_str(h);
            out.push(' ');
            out.push_str(t);
        }
    }
    // Anything after a second apostrophe is left as a separate word.
    if !rest.is_empty() {
        out.push(' ');
        expand_contractions(rest.trim_start_matches('\''), out);
    }
}

/// Folds leetspeak in one token: characters that stand for letters become
/// those letters when they sit in a word: a single digit next to a letter
/// ("k1ll", "4ss"), a symbol between letters ("sh!t") or leading into one
/// ("@ss", "$lut"). Numbers ("2024", "150p", "10am") stay numbers.
fn fold_leet(token: &str, out: &mut String) {
    let chars: Vec<char> = token.chars().collect();
    if !chars.iter().any(|c| c.is_ascii_alphabetic()) {
        out.push_str(token);
        return;
    }
    let at = |i: Option<usize>| i.and_then(|i| chars.get(i)).copied();
    for (i, &c) in chars.iter().enumerate() {
        let Some(letter) = leet(c) else {
            out.push(c);
            continue;
        };
        let prev = at(i.checked_sub(1));
        let next = at(i.checked_add(1));
        let fold = if c.is_ascii_digit() {
            // One digit alone between letters or at a word's edge next to
            // a letter; digits in a run are a number.
            let lone = !prev.is_some_and(|p| p.is_ascii_digit())
                && !next.is_some_and(|n| n.is_ascii_digit());
            lone && (prev.is_some_and(|p| p.is_ascii_alphabetic())
                || next.is_some_and(|n| n.is_ascii_alphabetic()))
        } else {
            // Between letters, and with a real letter or digit still to
            // come: "sh!t" is a word, "you!!" is "you" and two marks.
            let inside = prev.is_some_and(is_letterish)
                && next.is_some_and(is_letterish)
                && chars[i + 1..].iter().any(char::is_ascii_alphanumeric);
            let leading = prev.is_none_or(|p| !is_letterish(p))
                && matches!(c, '@' | '$')
                && next.is_some_and(|n| n.is_ascii_alphabetic());
            inside || leading
        };
        out.push(if fold { letter } else { c });
    }
}

/// The words view of an already raw text.
pub fn words_view(raw: &str) -> String {
    // 1. Tokens by white space; spelt-out words joined.
    let tokens: Vec<&str> = raw.split(' ').filter(|t| !t.is_empty()).collect();
    let mut joined: Vec<Cow<'_, str>> = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        // A run of three or more one-character tokens: "k i l l".
        // A letter followed by clause punctuation ("s.") still counts, as
        // the last of the run.
        let single = |t: &str| {
            let mut cs = t.trim_end_matches(is_clause_break).chars();
            matches!((cs.next(), cs.next()), (Some(c), None) if is_letterish(c))
        };
        let mut run = 0;
        while let Some(t) = tokens.get(i + run) {
            if !single(t) {
                break;
            }
            run += 1;
            if t.ends_with(is_clause_break) && t.len() > 1 {
                break;
            }
        }
        if run >= 3 {
            let word = tokens[i..i + run].concat();
            // "I h a t e": the first letter may be a word of its own; keep
            // both readings.
            if run >= 4 && matches!(tokens[i], "i" | "a") {
                joined.push(Cow::Owned(word));
                joined.push(Cow::Borrowed(tokens[i]));
                joined.push(Cow::Owned(tokens[i + 1..i + run].concat()));
            } else {
                joined.push(Cow::Owned(word));
            }
            i += run;
            continue;
        }
        joined.push(unseparate(tokens[i]));
        i += 1;
    }

    // 2. Contractions and leetspeak per token, then letters and digits only.
    let mut text = String::with_capacity(raw.len() + 16);
    let mut expanded = String::new();
    let mut leeted = String::new();
    for token in &joined {
        if !token.chars().any(|c| c == '\'' || leet(c).is_some()) {
            text.push_str(token);
            text.push(' ');
            continue;
        }
        expanded.clear();
        leeted.clear();
        expand_contractions(token, &mut expanded);
        for part in expanded.split(' ') {
            fold_leet(part, &mut leeted);
            leeted.push(' ');
        }
        text.push_str(&leeted);
    }

    // 3. Letters and digits, single spaces, repeated letters squeezed;
    //    clause punctuation becomes a "." word of its own.
    let mut out = String::with_capacity(text.len() + 2);
    out.push(' ');
    let mut prev = ' ';
    let mut boundary = false;
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            if boundary {
                if !out.ends_with(". ") && out.len() > 1 {
                    if !out.ends_with(' ') {
                        out.push(' ');
                    }
                    out.push_str(". ");
                }
                boundary = false;
                prev = ' ';
            }
            if c == prev && c.is_ascii_alphabetic() {
                continue;
            }
            out.push(c);
            prev = c;
        } else {
            if is_clause_break(c) {
                boundary = true;
            }
            if prev != ' ' {
                out.push(' ');
                prev = ' ';
            }
        }
    }
    if !out.ends_with(' ') {
        out.push(' ');
    }
    out
}

/// Punctuation that ends a clause: negation does not reach across it.
fn is_clause_break(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | ';' | ',' | ':' | '(' | ')')
}

/// "k.i.l.l", "k-i-l-l" → "kill": single letterish characters separated by
/// one separator each, at least three of them.
fn unseparate(token: &str) -> Cow<'_, str> {
    if token.len() < 5 || !token.chars().any(is_letter_separator) {
        return Cow::Borrowed(token);
    }
    let chars: Vec<char> = token.chars().collect();
    if chars.len() >= 5
        && chars.len() % 2 == 1
        && chars.iter().step_by(2).all(|&c| is_letterish(c))
        && chars
            .iter()
            .skip(1)
            .step_by(2)
            .all(|&c| is_letter_separator(c))
    {
        return Cow::Owned(chars.iter().step_by(2).collect());
    }
    Cow::Borrowed(token)
}

/// Squeezes repeated ASCII letters in a regular expression's source, the way
/// the words view squeezes the text, leaving escapes (`\bb`) alone.
pub fn squeeze_pattern(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut prev: Option<char> = None;
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.push(c);
            if let Some(n) = chars.next() {
                out.push(n);
            }
            prev = None;
            continue;
        }
        if c.is_ascii_alphabetic() && prev == Some(c) {
            continue;
        }
        out.push(c);
        prev = Some(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evasions_fold() {
        assert_eq!(views("I'll K1LL you").words, " i wil kil you ");
        assert_eq!(views("k i l l").words, " kil ");
        assert_eq!(views("k.i.l.l").words, " kil ");
        assert_eq!(views("kiiiiill").words, " kil ");
        assert_eq!(views("ki\u{200b}ll").words, " kil ");
        assert_eq!(views("\u{043a}ill").words, " kil ");
        assert_eq!(
            views("It's $20 on 2024-01-01").words,
            " its 20 on 2024 01 01 "
        );
        assert_eq!(fold_term("kill"), "kil");
        // Marks after a word are punctuation, not leetspeak.
        assert_eq!(views("I will kill you!!").words, " i wil kil you ");
        assert_eq!(views("sh!t").words, " shit ");
    }

    #[test]
    fn quotes() {
        let v = views("If you say \"I hate women\", then you are a bigot");
        assert!(!v.unquoted.contains("hate"));
        assert!(v.words.contains("hate"));
        let v = views("\"I hate women\"");
        assert!(v.unquoted.contains("hate"));
    }

    #[test]
    fn squeeze() {
        assert_eq!(squeeze_pattern(r"\bbe kill"), r"\bbe kil");
        assert_eq!(squeeze_pattern(r"a{2,3}"), r"a{2,3}");
    }
}
