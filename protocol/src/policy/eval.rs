//! Measuring a policy on labelled samples.
//!
//! Pure: the caller reads the data sets (see the `policy_eval` example and
//! `leak-node policy eval`) and hands their text to [`hatecheck_samples`],
//! [`sms_samples`] and [`fixture_samples`], which make [`Sample`]s;
//! [`evaluate`] checks each one and counts, and [`Report::summary`] prints
//! the numbers and the project's [targets](Report::targets). A sample
//! counts as *refused* whatever category refused it; a category's recall is
//! the share of its samples refused, its precision the share of texts it
//! refused that were abusive (of any category), and its false-positive rate
//! the share of benign samples it refused.

use std::collections::BTreeMap;

use super::{Category, Policy, Verdict};

/// The HateCheck test suite's file name in an evaluation data directory.
pub const HATECHECK_FILE: &str = "hatecheck_test_suite_cases.csv";
/// The SMS Spam Collection's file name in an evaluation data directory.
pub const SMS_FILE: &str = "sms_spam_collection.tsv";

/// A data set's text that cannot be read as samples.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DataError(String);

/// The samples of HateCheck's test suite (Röttger et al., ACL 2021, CC BY
/// 4.0), from the text of `test_suite_cases.csv` ([`HATECHECK_FILE`]).
///
/// The set is `hatecheck`, the group the case's `functionality`; a
/// `label_gold` of `hateful` is labelled [`Category::Threat`] for the
/// `threat_*` functionalities and [`Category::Hate`] for the others, anything
/// else is benign.
pub fn hatecheck_samples(csv_text: &str) -> Result<Vec<Sample>, DataError> {
    let mut reader = csv::ReaderBuilder::new().from_reader(csv_text.as_bytes());
    let header = reader
        .headers()
        .map_err(|e| DataError(format!("the header: {e}")))?
        .clone();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| DataError(format!("no column {name:?} in the header")))
    };
    let (f, t, l) = (
        column("functionality")?,
        column("test_case")?,
        column("label_gold")?,
    );
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| DataError(e.to_string()))?;
        let (Some(func), Some(text), Some(label)) = (record.get(f), record.get(t), record.get(l))
        else {
            continue;
        };
        let label = match label {
            "hateful" if func.starts_with("threat_") => Some(Category::Threat),
            "hateful" => Some(Category::Hate),
            _ => None,
        };
        out.push(Sample {
            text: text.trim().to_owned(),
            label,
            set: "hatecheck".to_owned(),
            group: func.to_owned(),
        });
    }
    Ok(out)
}

/// The samples of the SMS Spam Collection v.1 (Almeida, Gómez Hidalgo and
/// Yamakami 2011, CC BY 4.0), from a text of `label<TAB>text` lines after a
/// header line ([`SMS_FILE`]).
///
/// The set is `sms`; `spam` is labelled [`Category::Spam`] and `ham` benign,
/// each its own group. Lines with another label are skipped. Not read as
/// CSV: the messages have unbalanced quotes and no escaping.
pub fn sms_samples(tsv_text: &str) -> Result<Vec<Sample>, DataError> {
    let mut out = Vec::new();
    for (n, line) in tsv_text.lines().enumerate().skip(1) {
        let Some((label, body)) = line.split_once('\t') else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(DataError(format!("line {}: no tab", n + 1)));
        };
        let (label, group) = match label {
            "spam" => (Some(Category::Spam), "spam"),
            "ham" => (None, "ham"),
            _ => continue,
        };
        out.push(Sample {
            text: body.to_owned(),
            label,
            set: "sms".to_owned(),
            group: group.to_owned(),
        });
    }
    if out.is_empty() {
        return Err(DataError("no ham or spam lines".to_owned()));
    }
    Ok(out)
}

/// The samples of one of the project's fixture files (`policy/fixtures/`
/// beside this crate), named `name` in errors: `label<TAB>text` lines, where
/// the label is a category name or `benign`; blank lines and lines starting
/// with `#` are skipped.
///
/// The set is `fixtures`, the group the label (`benign` for the benign ones).
pub fn fixture_samples(name: &str, tsv_text: &str) -> Result<Vec<Sample>, DataError> {
    let mut out = Vec::new();
    for (n, line) in tsv_text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let at = || format!("{name}:{}", n + 1);
        let Some((label, body)) = line.split_once('\t') else {
            return Err(DataError(format!("{}: no tab", at())));
        };
        let label = match label {
            "benign" => None,
            other => Some(
                Category::from_name(other)
                    .ok_or_else(|| DataError(format!("{}: unknown label {other:?}", at())))?,
            ),
        };
        out.push(Sample {
            text: body.to_owned(),
            label,
            set: "fixtures".to_owned(),
            group: label.map_or("benign", Category::as_str).to_owned(),
        });
    }
    Ok(out)
}

/// The samples of a set in the moderation training format
/// (`shared/moderation-train/*.tsv`): a header `label<TAB>category<TAB>lang<TAB>text`
/// and one text per line. The set is `set`, the group the language (`en`,
/// `fr`). An `abusive` text is labelled with its category; abuse of an
/// unnamed kind (`other_abusive`) counts as [`Category::Bullying`]
/// (harassment), which only matters for the per-category table: recall
/// counts a refusal of any category.
pub fn labelled_samples(set: &str, tsv_text: &str) -> Result<Vec<Sample>, DataError> {
    let mut out = Vec::new();
    for (n, line) in tsv_text.lines().enumerate() {
        if (n == 0 && line.starts_with("label\t"))
            || line.trim().is_empty()
            || line.starts_with('#')
        {
            continue;
        }
        let at = || format!("{set}:{}", n + 1);
        let mut f = line.splitn(4, '\t');
        let (Some(label), Some(category), Some(lang), Some(text)) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            return Err(DataError(format!("{}: not 4 tab-separated fields", at())));
        };
        let label = match (label, category) {
            ("benign", _) => None,
            ("abusive", "other_abusive") => Some(Category::Bullying),
            ("abusive", "self_harm") => Some(Category::SelfHarm),
            ("abusive", c) => Some(
                Category::from_name(c)
                    .ok_or_else(|| DataError(format!("{}: unknown category {c:?}", at())))?,
            ),
            (other, _) => return Err(DataError(format!("{}: unknown label {other:?}", at()))),
        };
        out.push(Sample {
            text: text.to_owned(),
            label,
            set: set.to_owned(),
            group: lang.to_owned(),
        });
    }
    if out.is_empty() {
        return Err(DataError(format!("{set}: no samples")));
    }
    Ok(out)
}

/// The small edits a sender would try on a refused text to get it through:
/// punctuation, case, quotes, apostrophes, one-letter misspellings,
/// inserted spaces or zero-width characters, emoji. Each name is reported
/// with its flip rate.
pub const EDITS: [&str; 14] = [
    "add !!!",
    "drop punctuation",
    "upper case",
    "lower case",
    "in quotes",
    "drop apostrophes",
    "drop a letter",
    "swap two letters",
    "double a letter",
    "replace a letter",
    "space in a word",
    "zero-width in a word",
    "emoji after",
    "emoji between words",
];

/// `text` with the edit `EDITS[edit]` applied. Letter edits touch the
/// longest word (the likeliest to carry the meaning), never its first letter.
pub fn edit(text: &str, edit: usize) -> String {
    // The longest word: its byte range.
    let mut best = (0, 0);
    let mut start = None;
    for (i, c) in text
        .char_indices()
        .chain(core::iter::once((text.len(), ' ')))
    {
        if c.is_alphanumeric() {
            start.get_or_insert(i);
        } else if let Some(s) = start.take()
            && text[s..i].chars().count() > text[best.0..best.1].chars().count()
        {
            best = (s, i);
        }
    }
    let word: Vec<char> = text[best.0..best.1].chars().collect();
    let with_word = |w: String| format!("{}{w}{}", &text[..best.0], &text[best.1..]);
    let mid = word.len() / 2;
    match EDITS.get(edit).copied().unwrap_or("") {
        "add !!!" => format!("{}!!!", text.trim_end_matches(['.', '!', '?'])),
        "drop punctuation" => text.chars().filter(|c| !c.is_ascii_punctuation()).collect(),
        "upper case" => text.to_uppercase(),
        "lower case" => text.to_lowercase(),
        "in quotes" => format!("\"{text}\""),
        "drop apostrophes" => text.chars().filter(|c| !matches!(c, '\'' | '’')).collect(),
        "drop a letter" if word.len() >= 4 => with_word(
            word.iter()
                .enumerate()
                .filter(|(i, _)| *i != mid)
                .map(|(_, c)| c)
                .collect(),
        ),
        "swap two letters" if word.len() >= 4 => {
            let mut w = word.clone();
            w.swap(mid - 1, mid);
            with_word(w.into_iter().collect())
        }
        "double a letter" if word.len() >= 2 => {
            let mut w = word.clone();
            w.insert(mid, word[mid]);
            with_word(w.into_iter().collect())
        }
        "replace a letter" if word.len() >= 4 => {
            let mut w = word.clone();
            // A neighbouring key's worth of change: the next letter.
            w[mid] = match w[mid] {
                'z' => 'a',
                'Z' => 'A',
                c if c.is_ascii_alphabetic() => char::from(c as u8 + 1),
                c => c,
            };
            with_word(w.into_iter().collect())
        }
        "space in a word" if word.len() >= 2 => {
            let (a, b) = word.split_at(mid);
            with_word(format!(
                "{} {}",
                a.iter().collect::<String>(),
                b.iter().collect::<String>()
            ))
        }
        "zero-width in a word" if word.len() >= 2 => {
            let (a, b) = word.split_at(mid);
            with_word(format!(
                "{}\u{200b}{}",
                a.iter().collect::<String>(),
                b.iter().collect::<String>()
            ))
        }
        "emoji after" => format!("{text} 😂"),
        "emoji between words" => text.replacen(' ', " 😡 ", 1),
        _ => text.to_owned(),
    }
}

/// How often a small edit turns a refused abusive text into an accepted one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flips {
    /// Abusive samples the policy refused (each one is edited).
    pub refused: usize,
    /// Per [`EDITS`] entry: edited texts that differ from the original, and
    /// how many of them were accepted.
    pub per_edit: Vec<(usize, usize)>,
}

impl Flips {
    /// Accepted edited texts over all edited texts.
    pub fn rate(&self) -> Option<f64> {
        let (n, flipped) = self
            .per_edit
            .iter()
            .fold((0, 0), |(n, f), (a, b)| (n + a, f + b));
        ratio(flipped, n)
    }
}

/// Applies every [`edit`] to every abusive sample the policy refuses and
/// counts the edited texts it accepts.
pub fn flips(policy: &Policy, samples: &[Sample]) -> Flips {
    let mut out = Flips {
        refused: 0,
        per_edit: vec![(0, 0); EDITS.len()],
    };
    for s in samples.iter().filter(|s| s.label.is_some()) {
        if policy.check_text(&s.text).is_accepted() {
            continue;
        }
        out.refused += 1;
        for (e, counts) in out.per_edit.iter_mut().enumerate() {
            let edited = edit(&s.text, e);
            if edited == s.text {
                continue;
            }
            counts.0 += 1;
            counts.1 += usize::from(policy.check_text(&edited).is_accepted());
        }
    }
    out
}

impl core::fmt::Display for Flips {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        writeln!(
            f,
            "flip rate under small edits ({} refused abusive texts, each edited {} ways):",
            self.refused,
            EDITS.len()
        )?;
        for (name, (n, flipped)) in EDITS.iter().zip(&self.per_edit) {
            writeln!(f, "  {name:<22} {}", fmt_ratio(ratio(*flipped, *n)))?;
        }
        writeln!(f, "  {:<22} {}", "(all)", fmt_ratio(self.rate()))
    }
}

/// One labelled text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The text.
    pub text: String,
    /// What it is; `None` for benign.
    pub label: Option<Category>,
    /// The data set it comes from ("hatecheck", "sms", "fixtures").
    pub set: String,
    /// A finer grouping within the set (HateCheck's functionality, the
    /// fixture file), for per-group numbers.
    pub group: String,
}

/// Counts for one slice of samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Abusive samples.
    pub positives: usize,
    /// Abusive samples refused.
    pub true_positives: usize,
    /// Benign samples.
    pub negatives: usize,
    /// Benign samples refused.
    pub false_positives: usize,
}

impl Stats {
    fn add(&mut self, label: Option<Category>, refused: bool) {
        match label {
            Some(_) => {
                self.positives += 1;
                self.true_positives += usize::from(refused);
            }
            None => {
                self.negatives += 1;
                self.false_positives += usize::from(refused);
            }
        }
    }

    /// True positives over positives (`None` without positives).
    pub fn recall(&self) -> Option<f64> {
        ratio(self.true_positives, self.positives)
    }

    /// False positives over negatives (`None` without negatives).
    pub fn false_positive_rate(&self) -> Option<f64> {
        ratio(self.false_positives, self.negatives)
    }

    /// True positives over all refused (`None` when nothing was refused).
    pub fn precision(&self) -> Option<f64> {
        ratio(
            self.true_positives,
            self.true_positives + self.false_positives,
        )
    }
}

fn ratio(a: usize, b: usize) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

/// One row of the per-category table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CategoryRow {
    /// Samples labelled with the category.
    pub support: usize,
    /// Of those, refused (by any rule).
    pub detected: usize,
    /// Texts refused with this category, abusive ones.
    pub refused_abusive: usize,
    /// Texts refused with this category, benign ones.
    pub refused_benign: usize,
}

/// The result of [`evaluate`].
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Per set: samples, and counts per category.
    sets: BTreeMap<String, SetReport>,
    /// The version of the policy evaluated.
    version: u32,
    /// How many samples were checked.
    samples: usize,
    /// The flip rate under small edits, when measured ([`Report::set_flips`]).
    flips: Option<Flips>,
}

#[derive(Debug, Clone, Default)]
struct SetReport {
    all: Stats,
    categories: BTreeMap<Category, CategoryRow>,
    groups: BTreeMap<String, Stats>,
    benign: usize,
    /// Refusals of benign samples, by rule name.
    false_positive_rules: BTreeMap<String, usize>,
    /// Abusive samples missed, by label.
    missed: BTreeMap<Category, usize>,
}

/// Checks every sample and counts.
pub fn evaluate(policy: &Policy, samples: &[Sample]) -> Report {
    let mut report = Report {
        version: policy.version(),
        samples: samples.len(),
        ..Report::default()
    };
    for s in samples {
        let verdict = policy.check_text(&s.text);
        let set = report.sets.entry(s.set.clone()).or_default();
        let refused = !matches!(verdict, Verdict::Accepted);
        set.all.add(s.label, refused);
        set.groups
            .entry(s.group.clone())
            .or_default()
            .add(s.label, refused);
        if s.label.is_none() {
            set.benign += 1;
        }
        if let Some(label) = s.label {
            let row = set.categories.entry(label).or_default();
            row.support += 1;
            row.detected += usize::from(refused);
            if !refused {
                *set.missed.entry(label).or_default() += 1;
            }
        }
        if let Verdict::Refused(r) = &verdict {
            let row = set.categories.entry(r.category).or_default();
            if s.label.is_some() {
                row.refused_abusive += 1;
            } else {
                row.refused_benign += 1;
                *set.false_positive_rules.entry(r.rule.clone()).or_default() += 1;
            }
        }
    }
    report
}

impl Report {
    /// Adds the flip-rate measurement ([`flips`]) to the report and its targets.
    pub fn set_flips(&mut self, flips: Flips) {
        self.flips = Some(flips);
    }

    /// The sets, in name order.
    pub fn sets(&self) -> impl Iterator<Item = &str> {
        self.sets.keys().map(String::as_str)
    }

    /// Counts for a whole set.
    pub fn set(&self, set: &str) -> Stats {
        self.sets.get(set).map(|s| s.all).unwrap_or_default()
    }

    /// Counts over the named groups of a set.
    pub fn groups(&self, set: &str, groups: &[&str]) -> Stats {
        let mut total = Stats::default();
        if let Some(s) = self.sets.get(set) {
            for (name, st) in &s.groups {
                if groups.contains(&name.as_str()) {
                    total.positives += st.positives;
                    total.true_positives += st.true_positives;
                    total.negatives += st.negatives;
                    total.false_positives += st.false_positives;
                }
            }
        }
        total
    }

    /// Counts per group of a set.
    pub fn group_stats(&self, set: &str) -> Vec<(&str, Stats)> {
        self.sets
            .get(set)
            .map(|s| s.groups.iter().map(|(g, st)| (g.as_str(), *st)).collect())
            .unwrap_or_default()
    }

    /// The per-category row of a set.
    pub fn category(&self, set: &str, category: Category) -> CategoryRow {
        self.sets
            .get(set)
            .and_then(|s| s.categories.get(&category))
            .copied()
            .unwrap_or_default()
    }

    /// Benign refusals by rule, most first.
    pub fn false_positive_rules(&self, set: &str) -> Vec<(&str, usize)> {
        let mut v: Vec<(&str, usize)> = self
            .sets
            .get(set)
            .map(|s| {
                s.false_positive_rules
                    .iter()
                    .map(|(r, n)| (r.as_str(), *n))
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_owned(), |r| format!("{r:.3}"))
}

impl core::fmt::Display for Report {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        writeln!(
            f,
            "{:<10} {:<10} {:>7} {:>8} {:>9} {:>7} {:>9} {:>7}",
            "set", "category", "support", "detected", "precision", "recall", "benign-FP", "FPR"
        )?;
        for (name, s) in &self.sets {
            for (category, row) in &s.categories {
                let precision = ratio(
                    row.refused_abusive,
                    row.refused_abusive + row.refused_benign,
                );
                let recall = ratio(row.detected, row.support);
                let fpr = ratio(row.refused_benign, s.benign);
                writeln!(
                    f,
                    "{:<10} {:<10} {:>7} {:>8} {:>9} {:>7} {:>9} {:>7}",
                    name,
                    category.as_str(),
                    row.support,
                    row.detected,
                    fmt_ratio(precision),
                    fmt_ratio(recall),
                    row.refused_benign,
                    fmt_ratio(fpr),
                )?;
            }
            let a = s.all;
            writeln!(
                f,
                "{:<10} {:<10} {:>7} {:>8} {:>9} {:>7} {:>9} {:>7}",
                name,
                "(all)",
                a.positives,
                a.true_positives,
                fmt_ratio(a.precision()),
                fmt_ratio(a.recall()),
                format!("{}/{}", a.false_positives, a.negatives),
                fmt_ratio(a.false_positive_rate()),
            )?;
        }
        Ok(())
    }
}

/// One of the project's targets for the policy (issue 6), measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Target {
    /// What is measured.
    pub name: &'static str,
    /// The measured value; `None` when the samples it needs were not read.
    pub value: Option<f64>,
    /// Whether the value must be at least (`true`) or at most the bound.
    pub at_least: bool,
    /// The bound.
    pub bound: f64,
}

impl Target {
    /// Whether the target is met; `None` when it was not measured.
    pub fn met(&self) -> Option<bool> {
        self.value.map(|v| {
            if self.at_least {
                v >= self.bound
            } else {
                v <= self.bound
            }
        })
    }
}

/// `PASS`, `FAIL` or `SKIP` (not measured), the name, the value and the bound.
impl core::fmt::Display for Target {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let verdict = match self.met() {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "SKIP",
        };
        let value = self
            .value
            .map_or_else(|| "no data".to_owned(), |v| format!("{v:.3}"));
        let op = if self.at_least { ">=" } else { "<=" };
        write!(
            f,
            "{verdict} {}: {value} (target {op} {:.2})",
            self.name, self.bound
        )
    }
}

/// "recall 0.900 (9/10)  FPR 0.010 (1/100)", each part only with samples.
fn describe(st: &Stats) -> String {
    let part = |name: &str, hits: usize, of: usize| {
        (of > 0).then(|| format!("{name} {:.3} ({hits}/{of})", hits as f64 / of as f64))
    };
    [
        part("recall", st.true_positives, st.positives),
        part("FPR", st.false_positives, st.negatives),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join("  ")
}

impl Report {
    /// The project's targets: HateCheck recall ≥ 0.90 on the threat
    /// functionalities and ≥ 0.80 on all hateful cases with ≤ 0.10 of the
    /// non-hateful ones refused; SMS spam recall ≥ 0.80 with ≤ 1 % of ham
    /// refused; ≤ 2 % of the project's benign confessions refused.
    pub fn targets(&self) -> Vec<Target> {
        let hatecheck = self.set("hatecheck");
        let sms = self.set("sms");
        let target = |name, value, at_least, bound| Target {
            name,
            value,
            at_least,
            bound,
        };
        vec![
            target(
                "HateCheck recall, threat_dir_h + threat_norm_h",
                self.groups("hatecheck", &["threat_dir_h", "threat_norm_h"])
                    .recall(),
                true,
                0.90,
            ),
            target(
                "HateCheck recall, all hateful",
                hatecheck.recall(),
                true,
                0.80,
            ),
            target(
                "HateCheck false-positive rate, non-hateful",
                hatecheck.false_positive_rate(),
                false,
                0.10,
            ),
            target("SMS spam recall", sms.recall(), true, 0.80),
            target("SMS ham refused", sms.false_positive_rate(), false, 0.01),
            target(
                "own benign confessions refused",
                self.groups("fixtures", &["benign"]).false_positive_rate(),
                false,
                0.02,
            ),
            target(
                "French abusive recall, never-trained set (cyberagression_fr)",
                self.groups("cyberagression_fr", &["fr"]).recall(),
                true,
                0.80,
            ),
            target(
                "French benign refused, never-trained set (cyberagression_fr)",
                self.groups("cyberagression_fr", &["fr"])
                    .false_positive_rate(),
                false,
                0.05,
            ),
            target(
                "flip rate under small edits",
                self.flips.as_ref().and_then(Flips::rate),
                false,
                0.10,
            ),
        ]
    }

    /// Everything the evaluation prints: the policy's version and how many
    /// samples were checked (in how long, if the caller timed
    /// [`evaluate`]), the per-category table, the numbers per group of each
    /// set with the rules that refused benign samples, and the
    /// [targets](Report::targets) with PASS, FAIL or SKIP.
    pub fn summary(&self, elapsed: Option<core::time::Duration>) -> Summary<'_> {
        Summary {
            report: self,
            elapsed,
        }
    }
}

/// [`Report::summary`]'s text.
#[derive(Debug, Clone, Copy)]
pub struct Summary<'a> {
    report: &'a Report,
    elapsed: Option<core::time::Duration>,
}

impl core::fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let report = self.report;
        write!(
            f,
            "policy version {}, {} samples",
            report.version, report.samples
        )?;
        if let Some(elapsed) = self.elapsed {
            write!(
                f,
                " in {elapsed:.2?} ({:.1} µs per text)",
                elapsed.as_secs_f64() * 1e6 / report.samples.max(1) as f64
            )?;
        }
        writeln!(f, "\n")?;
        writeln!(f, "{report}")?;
        for set in report.sets() {
            writeln!(f, "{set} by group:")?;
            for (group, st) in report.group_stats(set) {
                writeln!(f, "  {group:<22} {}", describe(&st))?;
            }
            let fp = report.false_positive_rules(set);
            if !fp.is_empty() {
                let list: Vec<String> = fp.iter().map(|(r, n)| format!("{r} {n}")).collect();
                writeln!(f, "  benign refused by rule: {}", list.join(", "))?;
            }
            writeln!(f)?;
        }
        if let Some(flips) = &report.flips {
            writeln!(f, "{flips}")?;
        }
        writeln!(f, "targets:")?;
        let targets = report.targets();
        for t in &targets {
            writeln!(f, "  {t}")?;
        }
        let failed = targets.iter().filter(|t| t.met() == Some(false)).count();
        let skipped = targets.iter().filter(|t| t.met().is_none()).count();
        match (failed, skipped) {
            (0, 0) => writeln!(f, "all targets met"),
            (0, s) => writeln!(
                f,
                "all measured targets met; {s} not measured (their data set was not read)"
            ),
            (n, _) => writeln!(f, "{n} target(s) missed"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn hatecheck_quoted_fields_and_labels() {
        let csv = ",functionality,case_id,test_case,label_gold\r\n\
                   0,threat_dir_h,1,\"I will hurt you, \"\"friend\"\". \",hateful\r\n\
                   1,derog_neg_emote_h,2,\"I hate\nthem.\",hateful\r\n\
                   2,counter_quote_nh,3,Saying that is wrong.,non-hateful\r\n";
        let samples = hatecheck_samples(csv).unwrap();
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].text, "I will hurt you, \"friend\".");
        assert_eq!(samples[0].label, Some(Category::Threat));
        assert_eq!(samples[0].group, "threat_dir_h");
        assert_eq!(samples[1].text, "I hate\nthem.");
        assert_eq!(samples[1].label, Some(Category::Hate));
        assert_eq!(samples[2].label, None);
        assert!(samples.iter().all(|s| s.set == "hatecheck"));
    }

    #[test]
    fn hatecheck_errors() {
        let e = hatecheck_samples("a,b\n1,2\n").unwrap_err();
        assert!(e.to_string().contains("functionality"), "{e}");
        let e = hatecheck_samples("functionality,test_case,label_gold\nx,y\n").unwrap_err();
        assert!(e.to_string().contains("line: 2"), "{e}");
    }

    #[test]
    fn sms_lines() {
        let tsv = "Label\tSMS\nham\tOk \"lar\nspam\tWIN a prize\ttoday\nother\tskipped\n";
        let samples = sms_samples(tsv).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!((samples[0].label, samples[0].group.as_str()), (None, "ham"));
        assert_eq!(samples[0].text, "Ok \"lar");
        assert_eq!(samples[1].label, Some(Category::Spam));
        assert_eq!(samples[1].text, "WIN a prize\ttoday");
        assert!(sms_samples("Label\tSMS\n").is_err());
        assert!(sms_samples("Label\tSMS\nno tab here\n").is_err());
    }

    #[test]
    fn fixture_lines() {
        let tsv = "# comment\n\nbenign\tI lied to you\nthreat\tI will hurt you\n";
        let samples = fixture_samples("f.tsv", tsv).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(
            (samples[0].label, samples[0].group.as_str()),
            (None, "benign")
        );
        assert_eq!(samples[1].label, Some(Category::Threat));
        assert_eq!(samples[1].group, "threat");
        let e = fixture_samples("f.tsv", "# c\nbogus\tx\n").unwrap_err();
        assert_eq!(e.to_string(), "f.tsv:2: unknown label \"bogus\"");
        let e = fixture_samples("f.tsv", "no tab\n").unwrap_err();
        assert_eq!(e.to_string(), "f.tsv:1: no tab");
    }

    #[test]
    fn targets_without_data_are_skipped() {
        let samples = fixture_samples("f.tsv", "benign\tI lied to you\n").unwrap();
        let report = evaluate(&Policy::builtin(), &samples);
        let targets = report.targets();
        assert_eq!(targets.len(), 9);
        assert_eq!(targets[5].met(), Some(true));
        assert!(targets[..5].iter().all(|t| t.met().is_none()));
        assert!(targets[6..].iter().all(|t| t.met().is_none()));
        let text = report.summary(None).to_string();
        assert!(text.starts_with(&format!(
            "policy version {}, 1 samples\n",
            Policy::builtin().version()
        )));
        assert!(text.contains("PASS own benign confessions refused: 0.000"));
        assert!(text.contains("SKIP SMS spam recall: no data"));
        assert!(text.contains("8 not measured"));
    }

    #[test]
    fn labelled_lines() {
        let tsv = "label\tcategory\tlang\ttext\nabusive\tthreat\ten\tI will hurt you\n\
                   abusive\tother_abusive\tfr\tt'es nul\nbenign\tbenign\tfr\tsalut\n";
        let s = labelled_samples("x", tsv).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(
            (s[0].label, s[0].group.as_str()),
            (Some(Category::Threat), "en")
        );
        assert_eq!(
            (s[1].label, s[1].group.as_str()),
            (Some(Category::Bullying), "fr")
        );
        assert_eq!(s[2].label, None);
        assert!(
            labelled_samples("x", "label\tcategory\tlang\ttext\nabusive\tbogus\ten\tx\n").is_err()
        );
        assert!(labelled_samples("x", "label\tcategory\tlang\ttext\nno tabs\n").is_err());
    }

    #[test]
    fn edits_change_the_text_as_named() {
        let t = "I'm going to hurt you.";
        let all: Vec<String> = (0..EDITS.len()).map(|e| edit(t, e)).collect();
        assert_eq!(all[0], "I'm going to hurt you!!!");
        assert_eq!(all[1], "Im going to hurt you");
        assert_eq!(all[4], "\"I'm going to hurt you.\"");
        assert_eq!(all[5], "Im going to hurt you.");
        assert_eq!(all[6], "I'm gong to hurt you.");
        assert_eq!(all[10], "I'm go ing to hurt you.");
        assert!(all.iter().all(|e| e != t));
        // Any text, even without words, gives an edit and no panic.
        for text in ["", "!!", "é", "a"] {
            for e in 0..EDITS.len() {
                let _ = edit(text, e);
            }
        }
    }

    #[test]
    fn flips_count_accepted_edits() {
        let samples = fixture_samples("f.tsv", "threat\tI will kill you\nbenign\thi\n").unwrap();
        let flips = flips(&Policy::builtin(), &samples);
        assert_eq!(flips.refused, 1);
        assert!(flips.per_edit.iter().all(|(n, f)| f <= n));
        assert!(flips.rate().is_some());
    }
}
