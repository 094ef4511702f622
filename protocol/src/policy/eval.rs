//! Measuring a policy on labelled samples.
//!
//! Pure: the caller reads the data sets (see the `policy_eval` example) and
//! hands over [`Sample`]s; [`evaluate`] checks each one and counts. A sample
//! counts as *refused* whatever category refused it; a category's recall is
//! the share of its samples refused, its precision the share of texts it
//! refused that were abusive (of any category), and its false-positive rate
//! the share of benign samples it refused.

use std::collections::BTreeMap;

use super::{Category, Policy, Verdict};

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
    let mut report = Report::default();
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
