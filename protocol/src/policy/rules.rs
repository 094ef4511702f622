//! The policy document's schema and its compiled form.

use std::collections::BTreeMap;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use serde::Deserialize;

use super::{Category, PolicyError, normalize};
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsFile {
    pub max_text_len: usize,
    pub links_allowed: bool,
    pub per_recipient_per_day: u32,
    pub stamp_bits: u8,
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
}

/// The matchers of one view.
#[derive(Debug, Clone)]
struct ViewMatcher {
    /// Lexicon terms, padded with spaces; the pattern id's rule in `term_rule`.
    terms: Option<AhoCorasick>,
    term_rule: Vec<usize>,
    /// Patterns; the pattern id's rule in `pattern_rule`.
    patterns: Option<RegexSet>,
    pattern_rule: Vec<usize>,
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

fn invalid(rule: &str, message: impl Into<String>) -> PolicyError {
    PolicyError::Invalid {
        at: rule.to_owned(),
        message: message.into(),
    }
}

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
    expand(&squeezed, view, lexicons, at)
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
        for (name, entries) in &file.lexicons {
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
            if r.terms.is_empty() && r.patterns.is_empty() {
                return Err(invalid(&at, "a rule needs terms or patterns"));
            }
            let slot = VIEWS.iter().position(|v| *v == r.view).unwrap_or(0);
            for term in &r.terms {
                let expanded: Vec<&String> =
                    match term.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                        Some(name) => file
                            .lexicons
                            .get(name)
                            .ok_or_else(|| {
                                invalid(&at, format!("term refers to unknown lexicon {{{name}}}"))
                            })?
                            .iter()
                            .collect(),
                        None => vec![term],
                    };
                for t in expanded {
                    let folded = match r.view {
                        View::Raw => normalize::raw_view(t),
                        View::Words | View::Unquoted => normalize::fold_term(t),
                    };
                    if folded.is_empty() {
                        return Err(invalid(&at, format!("term {t:?} is empty once folded")));
                    }
                    let padded = match r.view {
                        View::Raw => folded,
                        View::Words | View::Unquoted => format!(" {folded} "),
                    };
                    terms[slot].0.push(padded);
                    terms[slot].1.push(index);
                }
            }
            for p in &r.patterns {
                let source = prepare_pattern(p, r.view, &file.lexicons, &at)?;
                // Compiled alone first, so an error names its rule.
                compile_one(&source, &at)?;
                patterns[slot].0.push(source);
                patterns[slot].1.push(index);
            }
            let requires = r
                .requires
                .iter()
                .map(|p| compile_one(&prepare_pattern(p, r.view, &file.lexicons, &at)?, &at))
                .collect::<Result<Vec<_>, _>>()?;
            let unless = r
                .unless
                .iter()
                .map(|p| compile_one(&prepare_pattern(p, r.view, &file.lexicons, &at)?, &at))
                .collect::<Result<Vec<_>, _>>()?;
            rules.push(Rule {
                name: r.name.clone(),
                category,
                reason: r.reason.trim().to_owned(),
                view: r.view,
                requires,
                unless,
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
                        .match_kind(MatchKind::Standard)
                        .build(&t)
                        .map_err(|e| invalid("lexicons", format!("cannot build: {e}")))?,
                )
            };
            let patterns = if p.is_empty() {
                None
            } else {
                Some(
                    RegexSetBuilder::new(&p)
                        .size_limit(REGEX_SIZE_LIMIT)
                        .build()
                        .map_err(|e| invalid("patterns", format!("cannot build: {e}")))?,
                )
            };
            matchers.push((
                *view,
                ViewMatcher {
                    terms,
                    term_rule: t_rule,
                    patterns,
                    pattern_rule: p_rule,
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
        let mut hit = vec![false; self.rules.len()];
        for (view, m) in &self.matchers {
            let text = view_text(views, *view);
            if let Some(ac) = &m.terms {
                for found in ac.find_overlapping_iter(text) {
                    if let Some(&r) = m.term_rule.get(found.pattern().as_usize()) {
                        hit[r] = true;
                    }
                }
            }
            if let Some(set) = &m.patterns {
                for id in set.matches(text).iter() {
                    if let Some(&r) = m.pattern_rule.get(id) {
                        hit[r] = true;
                    }
                }
            }
        }
        self.rules
            .iter()
            .zip(hit)
            .filter(|(rule, hit)| *hit && Some(rule.category) != skip)
            .map(|(rule, _)| rule)
            .find(|rule| {
                let text = view_text(views, rule.view);
                (rule.requires.is_empty() || rule.requires.iter().any(|re| re.is_match(text)))
                    && !rule.unless.iter().any(|re| re.is_match(text))
            })
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
