//! Misspelling variants of the policy's lexicons (`[fuzzy]`).
//!
//! A lexicon entry matches its exact (folded) words only; a sender who
//! drops, swaps or replaces a letter ("womn", "haet", "immigrsnts") or
//! splits a word with a space ("immig rants") would walk around it. The
//! policy names the lexicons that get variants; none may be a word of its
//! `except` lexicon, the ordinary words a variant must not turn into.

use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet},
};

use serde::Deserialize;

use super::{PolicyError, invalid, normalize};

/// Misspelling variants added to lexicons.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FuzzyFile {
    /// The lexicons that get variants.
    pub lexicons: Vec<String>,
    /// The shortest word (folded) of a one-word entry that gets
    /// transposition variants; deletions need one letter more.
    pub min_len: usize,
    /// A lexicon of ordinary words that no variant may be.
    pub except: Option<String>,
    /// The shortest one-word entry (folded) that also gets every variant
    /// with one letter replaced by another (never the first): "immigrsnts";
    /// a word of a phrase needs one letter less ("gay peoqle"). Absent:
    /// none.
    pub substitute_min_len: Option<usize>,
    /// The shortest one-word entry (folded) that also gets every split in
    /// two halves of at least two letters: "immig rants"; a word of a
    /// phrase needs one letter less. Absent: none.
    pub split_min_len: Option<usize>,
}

/// The lexicons with their variants, two ways.
pub(crate) struct Variants<'a> {
    /// With one-deletion and one-transposition variants (never of the
    /// first letter) of the words of the fuzzy lexicons: "womn", "haet",
    /// "gy people". Regular expressions get these: the many below
    /// (tens of thousands), which word matchers take in their stride, are
    /// too much for a regular expression's alternation.
    pub few: Cow<'a, BTreeMap<String, Vec<String>>>,
    /// `few`, and the one-substitution variants and splits of the longer
    /// entries when the policy asks for them.
    pub many: Cow<'a, BTreeMap<String, Vec<String>>>,
}

/// The policy's lexicons with the variants its `[fuzzy]` asks for.
pub(crate) fn with_variants<'a>(
    lexicons: &'a BTreeMap<String, Vec<String>>,
    fuzzy: Option<&FuzzyFile>,
) -> Result<Variants<'a>, PolicyError> {
    let Some(fuzzy) = fuzzy else {
        return Ok(Variants {
            few: Cow::Borrowed(lexicons),
            many: Cow::Borrowed(lexicons),
        });
    };
    let except: BTreeSet<String> = match &fuzzy.except {
        Some(name) => lexicons
            .get(name)
            .ok_or_else(|| invalid("fuzzy.except", format!("unknown lexicon {name:?}")))?
            .iter()
            .map(|w| normalize::fold_term(w))
            .collect(),
        None => Default::default(),
    };
    let mut few = lexicons.clone();
    let mut many = lexicons.clone();
    for name in &fuzzy.lexicons {
        let entries = lexicons
            .get(name)
            .ok_or_else(|| invalid("fuzzy.lexicons", format!("unknown lexicon {name:?}")))?;
        let mut seen: BTreeSet<String> = entries.iter().map(|e| normalize::fold_term(e)).collect();
        // (variant, whether only `many` gets it)
        let mut extra: Vec<(String, bool)> = Vec::new();
        for entry in entries {
            let (stem, wildcard) = match entry.strip_suffix('*') {
                Some(stem) => (stem, "*"),
                None => (entry.as_str(), ""),
            };
            let folded = normalize::fold_term(stem);
            let words: Vec<&str> = folded.split(' ').collect();
            for (i, word) in words.iter().enumerate() {
                let min = if words.len() > 1 { 3 } else { fuzzy.min_len };
                let chars: Vec<char> = word.chars().collect();
                if chars.len() < min {
                    continue;
                }
                let mut variants: Vec<(Vec<char>, bool)> = Vec::new();
                // Deletions need one letter more than transpositions.
                let deletions = words.len() > 1 || chars.len() > fuzzy.min_len;
                // A word of a phrase has its context to keep it from
                // spelling an ordinary phrase: it needs a letter less.
                let long_enough = |min: Option<usize>| {
                    min.is_some_and(|min| chars.len() + usize::from(words.len() > 1) >= min)
                };
                let substitutions = long_enough(fuzzy.substitute_min_len);
                let splits = long_enough(fuzzy.split_min_len);
                for j in 1..chars.len() {
                    if deletions {
                        let mut v = chars.clone();
                        v.remove(j);
                        variants.push((v, false));
                    }
                    if j + 1 < chars.len() && chars[j] != chars[j + 1] {
                        let mut v = chars.clone();
                        v.swap(j, j + 1);
                        variants.push((v, false));
                    }
                    if substitutions {
                        for c in ('a'..='z').filter(|c| *c != chars[j]) {
                            let mut v = chars.clone();
                            v[j] = c;
                            variants.push((v, true));
                        }
                    }
                    // Halves of two letters or more: a single letter apart
                    // is joined back by the words view already.
                    if splits && j >= 2 && chars.len() - j >= 2 {
                        let mut v = chars.clone();
                        v.insert(j, ' ');
                        variants.push((v, true));
                    }
                }
                // The few first, so that a variant both ways goes to both.
                variants.sort_by_key(|(_, many_only)| *many_only);
                for (v, many_only) in variants {
                    // Compared folded: "these" less an "s" is "thee", which
                    // the words view reads as "the".
                    let v = normalize::fold_term(&v.into_iter().collect::<String>());
                    if except.contains(&v) {
                        continue;
                    }
                    let mut phrase = words.clone();
                    phrase[i] = &v;
                    let phrase = normalize::fold_term(&phrase.join(" "));
                    if seen.insert(phrase.clone()) {
                        extra.push((format!("{phrase}{wildcard}"), many_only));
                    }
                }
            }
        }
        if let (Some(f), Some(m)) = (few.get_mut(name), many.get_mut(name)) {
            for (variant, many_only) in extra {
                if !many_only {
                    f.push(variant.clone());
                }
                m.push(variant);
            }
        }
    }
    Ok(Variants {
        few: Cow::Owned(few),
        many: Cow::Owned(many),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lexicons() -> BTreeMap<String, Vec<String>> {
        let list = |l: &[&str]| l.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>();
        BTreeMap::from([
            (
                "group".to_owned(),
                list(&["migrants", "gay people", "women"]),
            ),
            ("attack".to_owned(), list(&["hating", "hate"])),
            ("common".to_owned(), list(&["having", "mig rants"])),
        ])
    }

    fn fuzzy(substitute_min_len: Option<usize>, split_min_len: Option<usize>) -> FuzzyFile {
        FuzzyFile {
            lexicons: vec!["group".to_owned(), "attack".to_owned()],
            min_len: 4,
            except: Some("common".to_owned()),
            substitute_min_len,
            split_min_len,
        }
    }

    fn has(lexicons: &BTreeMap<String, Vec<String>>, name: &str, entry: &str) -> bool {
        lexicons[name].iter().any(|e| e == entry)
    }

    #[test]
    fn deletions_and_swaps_never_touch_the_first_letter() {
        let given = lexicons();
        let f = fuzzy(None, None);
        let l = with_variants(&given, Some(&f)).unwrap().many;
        assert!(has(&l, "group", "migants"));
        assert!(has(&l, "group", "mirgants"));
        assert!(has(&l, "group", "wmoen"));
        assert!(!has(&l, "group", "igrants"), "the first letter stays");
        // Without substitute_min_len and split_min_len, nothing more.
        assert!(!has(&l, "group", "migrsnts"));
        assert!(!has(&l, "group", "mig rants"));
        // Without [fuzzy], the lexicons as given.
        assert_eq!(*with_variants(&given, None).unwrap().many, given);
    }

    #[test]
    fn substitutions_and_splits_as_the_policy_asks() {
        let given = lexicons();
        let f = fuzzy(Some(6), Some(5));
        let both = with_variants(&given, Some(&f)).unwrap();
        let many = &both.many;
        assert!(has(many, "group", "migrsnts"));
        assert!(
            has(many, "group", "gay peoqle"),
            "a phrase's word needs a letter less"
        );
        assert!(!has(many, "group", "xomen"), "never the first letter");
        assert!(!has(many, "group", "wimen"), "women is shorter than 6");
        assert!(has(many, "group", "mi grants"));
        assert!(has(many, "group", "gay peo ple"));
        assert!(
            !has(many, "group", "m igrants"),
            "halves of two letters or more"
        );
        assert!(
            !has(many, "group", "mig rants"),
            "an except entry is never a variant"
        );
        assert!(
            !has(many, "attack", "having"),
            "an ordinary word is never a variant"
        );
        assert!(has(many, "attack", "hatung"));
        // Regular expressions get the few variants only.
        let few = &both.few;
        assert!(!has(few, "group", "migrsnts"));
        assert!(!has(few, "group", "mi grants"));
        assert!(has(few, "group", "migants"));
    }

    #[test]
    fn an_unknown_lexicon_is_a_clear_error() {
        let mut f = fuzzy(None, None);
        f.except = Some("nowhere".to_owned());
        let Err(e) = with_variants(&lexicons(), Some(&f)) else {
            panic!("an unknown lexicon compiled");
        };
        assert!(e.to_string().contains("fuzzy.except"), "{e}");
    }
}
