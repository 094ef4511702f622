//! The policy document's schema and its compiled form.

use std::collections::BTreeMap;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use serde::Deserialize;

use super::{
    Category, PolicyError,
    fuzzy::{FuzzyFile, with_variants},
    invalid, normalize,
};
use crate::payload::{MAX_REASON_LEN, MAX_RULE_LEN};

/// The policy document as written (TOML).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyFile {
    pub version: u32,
    pub optout_key: String,
    pub limits: LimitsFile,
    #[serde(default)]
    pub lexicons: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub rules: Vec<RuleFile>,
    pub fuzzy: Option<FuzzyFile>,
    pub model: Option<ModelFile>,
}

/// The learned model a policy uses, named by its hash.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ModelFile {
    /// The model file's name beside the policy (informational).
    pub file: Option<String>,
    /// BLAKE3 of the model file's bytes, 64 hex digits.
    pub blake3: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsFile {
    pub max_text_len: usize,
    pub links_allowed: bool,
    pub per_recipient_per_day: u32,
    pub stamp_bits: u8,
    /// 1 (lower case, `+tag`) or 2 (and the large providers' rules); 1 when
    /// absent, which is what documents before the field meant.
    #[serde(default = "basic_normalization")]
    pub address_normalization: u8,
}

fn basic_normalization() -> u8 {
    1
}

/// Which view of the text a rule reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub(crate) enum View {
    /// The folded words (the default).
    #[default]
    Words,
    /// The folded words outside quotation marks.
    Unquoted,
    /// NFKC, confusables folded, lower case; digits and punctuation kept.
    Raw,
}

const VIEWS: [View; 3] = [View::Words, View::Unquoted, View::Raw];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleFile {
    pub name: String,
    pub category: String,
    pub reason: String,
    #[serde(default)]
    pub view: View,
    #[serde(default)]
    pub terms: Vec<String>,
    #[serde(default)]
    pub patterns: Vec<String>,
    #[serde(default)]
    pub requires: Vec<String>,
    #[serde(default)]
    pub unless: Vec<String>,
    /// Two lexicon names: the rule matches when an entry of the first is
    /// within `within` words of an entry of the second.
    #[serde(default)]
    pub near: Vec<String>,
    /// Words allowed between the two `near` entries (default 8).
    pub within: Option<usize>,
    /// A lexicon of negators: an entry of the second `near` lexicon that a
    /// negator precedes in the same clause does not count.
    pub negators: Option<String>,
    /// A lexicon of positive words that count as entries of the second
    /// `near` lexicon when a negator precedes them ("not human").
    pub negated: Option<String>,
    /// How many words before an entry a negator reaches (default 5).
    pub negation_reach: Option<usize>,
    /// How many words before a `negated` word a negator reaches (default 3).
    pub positive_reach: Option<usize>,
    /// How many different terms and patterns must match (default 1): for
    /// rules that add up weak signals, such as spam.
    pub min_matches: Option<usize>,
    /// A lexicon of phrases that contain a negator without negating what
    /// follows ("not realise that", "is not it"): a negator inside one of
    /// them does not count.
    pub shields: Option<String>,
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub name: String,
    pub category: Category,
    pub reason: String,
    pub view: View,
    /// At least one of these must match too (none: no condition).
    pub requires: Vec<Regex>,
    /// None of these may match.
    pub unless: Vec<Regex>,
    /// The proximity condition, if the rule has one.
    pub near: Option<Near>,
    /// Different terms and patterns that must match.
    pub min_matches: usize,
}

/// What a `near` term is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    /// An entry of the first lexicon (the target).
    Target,
    /// An entry of the second (the attack).
    Attack,
    /// A negator.
    Negator,
    /// A positive word, an attack when negated.
    Positive,
    /// A phrase whose negator negates nothing after it.
    Shield,
}

/// A compiled proximity condition.
#[derive(Debug, Clone)]
pub(crate) struct Near {
    matcher: AhoCorasick,
    tags: Vec<Tag>,
    within: usize,
    reach: usize,
    positive_reach: usize,
}

/// One match, in words: `[start, end)` word indices and clause.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
    clause: usize,
    tag: Tag,
}

impl Near {
    fn compile(
        r: &RuleFile,
        lexicons: &BTreeMap<String, Vec<String>>,
        at: &str,
    ) -> Result<Option<Self>, PolicyError> {
        if r.near.is_empty() {
            if r.within.is_some()
                || r.negators.is_some()
                || r.negated.is_some()
                || r.shields.is_some()
            {
                return Err(invalid(at, "within, negators and negated need near"));
            }
            return Ok(None);
        }
        if r.view == View::Raw {
            return Err(invalid(at, "near works on the words views, not raw"));
        }
        let [target, attack] = r.near.as_slice() else {
            return Err(invalid(at, "near names exactly two lexicons"));
        };
        let mut terms = Vec::new();
        let mut tags = Vec::new();
        let mut add = |name: &str, tag: Tag| -> Result<(), PolicyError> {
            let entries = lexicons
                .get(name)
                .ok_or_else(|| invalid(at, format!("unknown lexicon {name:?}")))?;
            for e in entries {
                let (stem, wildcard) = match e.strip_suffix('*') {
                    Some(stem) => (stem, true),
                    None => (e.as_str(), false),
                };
                let folded = normalize::fold_term(stem);
                if folded.is_empty() {
                    continue;
                }
                terms.push(if wildcard {
                    format!(" {folded}")
                } else {
                    format!(" {folded} ")
                });
                tags.push(tag);
            }
            Ok(())
        };
        add(target, Tag::Target)?;
        add(attack, Tag::Attack)?;
        if let Some(n) = &r.negators {
            add(n, Tag::Negator)?;
        }
        if let Some(p) = &r.negated {
            if r.negators.is_none() {
                return Err(invalid(at, "negated needs negators"));
            }
            add(p, Tag::Positive)?;
        }
        if let Some(p) = &r.shields {
            add(p, Tag::Shield)?;
        }
        let matcher = AhoCorasickBuilder::new()
            .kind(Some(AhoCorasickKind::ContiguousNFA))
            .match_kind(MatchKind::Standard)
            .build(&terms)
            .map_err(|e| invalid(at, format!("cannot build: {e}")))?;
        Ok(Some(Near {
            matcher,
            tags,
            within: r.within.unwrap_or(8),
            reach: r.negation_reach.unwrap_or(5),
            positive_reach: r.positive_reach.unwrap_or(3),
        }))
    }

    /// Whether a target is within reach of an (unnegated) attack.
    fn matches(&self, text: &str) -> bool {
        // Word index and clause of every word start.
        let bytes = text.as_bytes();
        let mut word_at = vec![0usize; bytes.len() + 1];
        let mut clause_of: Vec<usize> = Vec::new();
        let mut word = 0usize;
        let mut clause = 0usize;
        let mut in_word = false;
        for (i, &b) in bytes.iter().enumerate() {
            if b == b' ' {
                in_word = false;
            } else if !in_word {
                in_word = true;
                if b == b'.' || bytes[i..].starts_with(b"but ") {
                    clause += 1;
                }
                clause_of.push(clause);
                word = clause_of.len() - 1;
            }
            word_at[i] = word;
        }
        word_at[bytes.len()] = clause_of.len();
        let mut spans = Vec::new();
        for m in self.matcher.find_overlapping_iter(text) {
            let Some(&tag) = self.tags.get(m.pattern().as_usize()) else {
                continue;
            };
            // The match starts with the space before its first word.
            let start = word_at.get(m.start() + 1).copied().unwrap_or(0);
            let end = word_at.get(m.end().saturating_sub(1)).copied().unwrap_or(0) + 1;
            let clause = clause_of.get(start).copied().unwrap_or(0);
            spans.push(Span {
                start,
                end,
                clause,
                tag,
            });
        }
        let shielded = |n: &Span| {
            spans
                .iter()
                .any(|sh| sh.tag == Tag::Shield && sh.start <= n.start && sh.end >= n.end)
        };
        let negated = |s: &Span, reach: usize| {
            spans.iter().any(|n| {
                n.tag == Tag::Negator
                    && !shielded(n)
                    && n.clause == s.clause
                    && n.end <= s.start
                    && n.end + reach >= s.start
            })
        };
        // A word inside a target ("people" in "gay people") is no attack.
        let in_target = |s: &Span| {
            spans
                .iter()
                .any(|t| t.tag == Tag::Target && t.start <= s.start && t.end >= s.end)
        };
        let attacks: Vec<&Span> = spans
            .iter()
            .filter(|s| match s.tag {
                Tag::Attack => !in_target(s) && !negated(s, self.reach),
                Tag::Positive => !in_target(s) && negated(s, self.positive_reach),
                _ => false,
            })
            .collect();
        spans.iter().filter(|s| s.tag == Tag::Target).any(|t| {
            attacks.iter().any(|a| {
                let gap = a
                    .start
                    .saturating_sub(t.end)
                    .max(t.start.saturating_sub(a.end));
                gap <= self.within
            })
        })
    }
}

/// The matchers of one view.
#[derive(Debug, Clone)]
struct ViewMatcher {
    /// Lexicon terms, padded with spaces; the pattern id's rule in `term_rule`.
    terms: Option<AhoCorasick>,
    term_rule: Vec<usize>,
    /// Every pattern of the view as one set, and the rule of each pattern
    /// id. The set's lazy DFA gets a large cache ([`DFA_CACHE_LIMIT`]):
    /// with the default one it thrashes and falls back to a slower engine.
    patterns: Vec<(Vec<usize>, RegexSet)>,
}

/// Every rule, compiled.
#[derive(Debug, Clone)]
pub(crate) struct RuleSet {
    pub rules: Vec<Rule>,
    matchers: Vec<(View, ViewMatcher)>,
}

/// Size limit for compiled regular expressions (the lexicons make large
/// alternations).
const REGEX_SIZE_LIMIT: usize = 64 << 20;
/// Cache for each lazy DFA: enough that the large sets never fall back to
/// the slower engines.
const DFA_CACHE_LIMIT: usize = 16 << 20;

/// Expands `{lexicon}` references in a pattern into alternations.
fn expand(
    pattern: &str,
    view: View,
    lexicons: &BTreeMap<String, Vec<String>>,
    at: &str,
) -> Result<String, PolicyError> {
    let mut out = String::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        let (before, after) = rest.split_at(open);
        out.push_str(before);
        let close = after.find('}').unwrap_or(0);
        let name = &after[1..close.max(1)];
        let is_ref = close > 1
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit())
            && name.chars().next().is_some_and(|c| c.is_ascii_lowercase());
        if !is_ref {
            // A repetition such as {2,3}, or a lone brace: regex syntax.
            out.push('{');
            rest = &after[1..];
            continue;
        }
        let entries = lexicons
            .get(name)
            .ok_or_else(|| invalid(at, format!("pattern refers to unknown lexicon {{{name}}}")))?;
        out.push_str("(?:");
        let mut first = true;
        for entry in entries {
            let alt = term_regex(entry, view);
            if alt.is_empty() {
                continue;
            }
            if !first {
                out.push('|');
            }
            out.push_str(&alt);
            first = false;
        }
        if first {
            return Err(invalid(at, format!("lexicon {{{name}}} is empty")));
        }
        out.push(')');
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A lexicon entry as a regular expression: folded as the view folds text,
/// escaped; a trailing `*` means "and any ending".
fn term_regex(entry: &str, view: View) -> String {
    let (stem, wildcard) = match entry.strip_suffix('*') {
        Some(stem) => (stem, true),
        None => (entry, false),
    };
    let folded = match view {
        View::Raw => normalize::raw_view(stem),
        View::Words | View::Unquoted => normalize::fold_term(stem),
    };
    if folded.is_empty() {
        return String::new();
    }
    let mut re = regex::escape(&folded);
    if wildcard {
        re.push_str("[a-z0-9]*");
    }
    re
}

/// Word-view patterns are squeezed like the text, and matched whole-word
/// by the author's own `\b`.
fn prepare_pattern(
    pattern: &str,
    view: View,
    lexicons: &BTreeMap<String, Vec<String>>,
    at: &str,
) -> Result<String, PolicyError> {
    let squeezed = match view {
        View::Raw => pattern.to_owned(),
        View::Words | View::Unquoted => normalize::squeeze_pattern(pattern),
    };
    Ok(ascii_classes(&expand(&squeezed, view, lexicons, at)?, view))
}

/// Rewrites `\b` as an ASCII word boundary (a Unicode one stops the fast
/// lazy DFA on any non-ASCII text) and, for the words views, whose text is
/// ASCII, `\w` as `[a-z0-9]`: the same matches, much smaller automata.
fn ascii_classes(pattern: &str, view: View) -> String {
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('b') => out.push_str("(?-u:\\b)"),
            Some('B') => out.push_str("(?-u:\\B)"),
            Some('w') if view != View::Raw => out.push_str("[a-z0-9]"),
            Some(n) => {
                out.push('\\');
                out.push(n);
            }
            None => out.push('\\'),
        }
    }
    out
}

fn compile_one(source: &str, at: &str) -> Result<Regex, PolicyError> {
    RegexBuilder::new(source)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| invalid(at, format!("bad pattern: {e}")))
}

impl RuleSet {
    pub(crate) fn empty() -> Self {
        Self {
            rules: Vec::new(),
            matchers: Vec::new(),
        }
    }

    pub(crate) fn compile(file: &PolicyFile) -> Result<Self, PolicyError> {
        let variants = with_variants(&file.lexicons, file.fuzzy.as_ref())?;
        let lexicons: &BTreeMap<String, Vec<String>> = &variants.many;
        let for_patterns: &BTreeMap<String, Vec<String>> = &variants.few;
        for (name, entries) in lexicons {
            if entries.is_empty() {
                return Err(invalid(
                    &format!("lexicons.{name}"),
                    "a lexicon needs at least one entry",
                ));
            }
        }
        let mut rules = Vec::with_capacity(file.rules.len());
        // Per view: (terms, rule of each term), (patterns, rule of each).
        let mut terms: Vec<(Vec<String>, Vec<usize>)> = vec![Default::default(); VIEWS.len()];
        let mut patterns: Vec<(Vec<String>, Vec<usize>)> = vec![Default::default(); VIEWS.len()];
        let mut names = std::collections::BTreeSet::new();
        for (index, r) in file.rules.iter().enumerate() {
            let at = format!("rule {:?}", r.name);
            check_name(&r.name, &at)?;
            if !names.insert(r.name.as_str()) {
                return Err(invalid(&at, "two rules have this name"));
            }
            let category = Category::rule_category(&r.category).ok_or_else(|| {
                invalid(
                    &at,
                    format!(
                        "unknown category {:?}; expected one of {}",
                        r.category,
                        Category::RULE_CATEGORIES
                            .iter()
                            .map(|c| c.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })?;
            if r.reason.trim().is_empty() || r.reason.len() > MAX_REASON_LEN {
                return Err(invalid(
                    &at,
                    format!("the reason must be 1 to {MAX_REASON_LEN} bytes"),
                ));
            }
            if r.terms.is_empty() && r.patterns.is_empty() && r.near.is_empty() {
                return Err(invalid(&at, "a rule needs terms, patterns or near"));
            }
            let near = Near::compile(r, lexicons, &at)?;
            if near.is_some() && !(r.terms.is_empty() && r.patterns.is_empty()) {
                return Err(invalid(&at, "a rule has either near or terms and patterns"));
            }
            let slot = VIEWS.iter().position(|v| *v == r.view).unwrap_or(0);
            for term in &r.terms {
                let expanded: Vec<&String> =
                    match term.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                        Some(name) => lexicons
                            .get(name)
                            .ok_or_else(|| {
                                invalid(&at, format!("term refers to unknown lexicon {{{name}}}"))
                            })?
                            .iter()
                            .collect(),
                        None => vec![term],
                    };
                for t in expanded {
                    // A trailing `*`: any ending.
                    let (stem, wildcard) = match t.strip_suffix('*') {
                        Some(stem) => (stem, true),
                        None => (t.as_str(), false),
                    };
                    let folded = match r.view {
                        View::Raw => normalize::raw_view(stem),
                        View::Words | View::Unquoted => normalize::fold_term(stem),
                    };
                    if folded.is_empty() {
                        return Err(invalid(&at, format!("term {t:?} is empty once folded")));
                    }
                    let padded = match (r.view, wildcard) {
                        (View::Raw, _) => folded,
                        (View::Words | View::Unquoted, false) => format!(" {folded} "),
                        (View::Words | View::Unquoted, true) => format!(" {folded}"),
                    };
                    terms[slot].0.push(padded);
                    terms[slot].1.push(index);
                }
            }
            for p in &r.patterns {
                let source = prepare_pattern(p, r.view, for_patterns, &at)?;
                // Compiled alone first, so an error names its rule.
                compile_one(&source, &at)?;
                patterns[slot].0.push(source);
                patterns[slot].1.push(index);
            }
            let requires = r
                .requires
                .iter()
                .map(|p| compile_one(&prepare_pattern(p, r.view, for_patterns, &at)?, &at))
                .collect::<Result<Vec<_>, _>>()?;
            let unless = r
                .unless
                .iter()
                .map(|p| compile_one(&prepare_pattern(p, r.view, for_patterns, &at)?, &at))
                .collect::<Result<Vec<_>, _>>()?;
            rules.push(Rule {
                name: r.name.clone(),
                category,
                reason: r.reason.trim().to_owned(),
                view: r.view,
                requires,
                unless,
                near,
                min_matches: r.min_matches.unwrap_or(1).max(1),
            });
        }
        let mut matchers = Vec::new();
        for (slot, view) in VIEWS.iter().enumerate() {
            let (t, t_rule) = std::mem::take(&mut terms[slot]);
            let (p, p_rule) = std::mem::take(&mut patterns[slot]);
            if t.is_empty() && p.is_empty() {
                continue;
            }
            let terms = if t.is_empty() {
                None
            } else {
                Some(
                    AhoCorasickBuilder::new()
                        .kind(Some(AhoCorasickKind::ContiguousNFA))
                        .match_kind(MatchKind::Standard)
                        .build(&t)
                        .map_err(|e| invalid("lexicons", format!("cannot build: {e}")))?,
                )
            };
            let mut patterns: Vec<(Vec<usize>, RegexSet)> = Vec::new();
            if !p.is_empty() {
                let set = RegexSetBuilder::new(&p)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .dfa_size_limit(DFA_CACHE_LIMIT)
                    .build()
                    .map_err(|e| invalid("patterns", format!("cannot build: {e}")))?;
                patterns.push((p_rule, set));
            }
            matchers.push((
                *view,
                ViewMatcher {
                    terms,
                    term_rule: t_rule,
                    patterns,
                },
            ));
        }
        Ok(Self { rules, matchers })
    }

    /// The first rule (in document order) that refuses these views, if any.
    /// `skip` leaves out a category (links, when the limits allow them).
    pub(crate) fn first_match(
        &self,
        views: &normalize::Views,
        skip: Option<Category>,
    ) -> Option<&Rule> {
        let mut hits = vec![0usize; self.rules.len()];
        for (view, m) in &self.matchers {
            let text = view_text(views, *view);
            if let Some(ac) = &m.terms {
                let mut seen = vec![false; m.term_rule.len()];
                for found in ac.find_overlapping_iter(text) {
                    let id = found.pattern().as_usize();
                    if let (Some(&r), Some(s)) = (m.term_rule.get(id), seen.get_mut(id))
                        && !*s
                    {
                        *s = true;
                        hits[r] += 1;
                    }
                }
            }
            for (rule_of, set) in &m.patterns {
                for id in set.matches(text).iter() {
                    if let Some(h) = rule_of.get(id).and_then(|&r| hits.get_mut(r)) {
                        *h += 1;
                    }
                }
            }
        }
        self.rules
            .iter()
            .zip(hits)
            .filter(|(rule, _)| Some(rule.category) != skip)
            .find(|(rule, hit)| {
                let text = view_text(views, rule.view);
                let found = match &rule.near {
                    Some(near) => near.matches(text),
                    None => *hit >= rule.min_matches,
                };
                found
                    && (rule.requires.is_empty()
                        || rule.requires.iter().any(|re| re.is_match(text)))
                    && !rule.unless.iter().any(|re| re.is_match(text))
            })
            .map(|(rule, _)| rule)
    }
}

fn view_text(views: &normalize::Views, view: View) -> &str {
    match view {
        View::Words => &views.words,
        View::Unquoted => &views.unquoted,
        View::Raw => &views.raw,
    }
}

fn check_name(name: &str, at: &str) -> Result<(), PolicyError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_RULE_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            at,
            format!("a rule name is 1 to {MAX_RULE_LEN} characters of a-z, 0-9, '.', '-' and '_'"),
        ))
    }
}
