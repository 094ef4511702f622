//! Measures the built-in moderation policy on labelled data.
//!
//! ```text
//! cargo run --release -p leak-protocol --example policy_eval -- \
//!     [--data ../shared/moderation-eval] [--fixtures protocol/policy/fixtures] \
//!     [--policy FILE.toml] [--verbose] [--show GROUP-OR-SET]...
//! ```
//!
//! Sets read:
//!
//! - `hatecheck`: `hatecheck_test_suite_cases.csv` (HateCheck, Röttger et al.,
//!   ACL 2021, CC BY 4.0): `label_gold` hateful / non-hateful, grouped by
//!   `functionality`; the `threat_*` cases are labelled threat, the other
//!   hateful ones hate.
//! - `sms`: `sms_spam_collection.tsv` (SMS Spam Collection v.1, Almeida,
//!   Gómez Hidalgo and Yamakami 2011, CC BY 4.0): spam / ham.
//! - `fixtures`: the project's own `*.tsv` files, `label<TAB>text`, where the
//!   label is a category name or `benign`; grouped by file.
//!
//! Prints the per-category table, the per-group numbers and the project's
//! targets with PASS or FAIL. `--verbose` also lists the benign texts refused
//! and the abusive ones missed in the project's own fixtures; `--show` does
//! the same for one group (a HateCheck functionality, `ham`, `spam`) or set.

use std::{
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
};

use leak_protocol::policy::{
    Category, Policy,
    eval::{Sample, Stats, evaluate},
};

fn main() -> ExitCode {
    let mut data = PathBuf::from("../shared/moderation-eval");
    if !data.exists() {
        data = PathBuf::from("/work/shared/moderation-eval");
    }
    let mut fixtures = PathBuf::from("protocol/policy/fixtures");
    if !fixtures.exists() {
        fixtures = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/policy/fixtures"));
    }
    let mut policy_file: Option<PathBuf> = None;
    let mut verbose = false;
    let mut show: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--data" => data = args.next().map(PathBuf::from).unwrap_or(data),
            "--fixtures" => fixtures = args.next().map(PathBuf::from).unwrap_or(fixtures),
            "--policy" => policy_file = args.next().map(PathBuf::from),
            "--verbose" | "-v" => verbose = true,
            "--show" => show.extend(args.next()),
            other => {
                eprintln!("unknown argument {other:?}");
                return ExitCode::from(2);
            }
        }
    }
    let policy = match &policy_file {
        None => Policy::builtin(),
        Some(path) => match fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| Policy::from_toml(&t).map_err(|e| e.to_string()))
        {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
    };

    let mut samples = Vec::new();
    match load_hatecheck(&data.join("hatecheck_test_suite_cases.csv")) {
        Ok(s) => samples.extend(s),
        Err(e) => eprintln!("hatecheck: {e}"),
    }
    match load_sms(&data.join("sms_spam_collection.tsv")) {
        Ok(s) => samples.extend(s),
        Err(e) => eprintln!("sms: {e}"),
    }
    match load_fixtures(&fixtures) {
        Ok(s) => samples.extend(s),
        Err(e) => eprintln!("fixtures: {e}"),
    }
    if samples.is_empty() {
        eprintln!("no samples loaded");
        return ExitCode::FAILURE;
    }

    let start = std::time::Instant::now();
    let report = evaluate(&policy, &samples);
    let elapsed = start.elapsed();
    println!(
        "policy version {}, {} samples in {:.2?} ({:.1} µs per text)\n",
        policy.version(),
        samples.len(),
        elapsed,
        elapsed.as_secs_f64() * 1e6 / samples.len() as f64
    );
    println!("{report}");

    for set in report.sets().collect::<Vec<_>>() {
        println!("{set} by group:");
        for (group, st) in report.group_stats(set) {
            println!("  {group:<22} {}", describe(&st));
        }
        let fp = report.false_positive_rules(set);
        if !fp.is_empty() {
            let list: Vec<String> = fp.iter().map(|(r, n)| format!("{r} {n}")).collect();
            println!("  benign refused by rule: {}", list.join(", "));
        }
        println!();
    }

    for s in samples
        .iter()
        .filter(|s| show.iter().any(|g| *g == s.group || *g == s.set))
    {
        let v = policy.check_text(&s.text);
        match (s.label, v.refusal()) {
            (None, Some(r)) => println!("FP  {} [{}] {}", s.group, r.rule, s.text),
            (Some(l), None) => println!("FN  {} [{l}] {}", s.group, s.text),
            _ => {}
        }
    }

    if verbose {
        for s in samples.iter().filter(|s| s.set == "fixtures") {
            let v = policy.check_text(&s.text);
            match (s.label, v.refusal()) {
                (None, Some(r)) => println!("FP  [{}] {}", r.rule, s.text),
                (Some(l), None) => println!("FN  [{l}] {}", s.text),
                _ => {}
            }
        }
        println!();
    }

    println!("targets:");
    let threats = report.groups("hatecheck", &["threat_dir_h", "threat_norm_h"]);
    let hc = report.set("hatecheck");
    let sms = report.set("sms");
    let benign = report.groups("fixtures", &["benign"]);
    let mut ok = true;
    ok &= target(
        "HateCheck recall, threat_dir_h + threat_norm_h",
        threats.recall(),
        ">=",
        0.90,
    );
    ok &= target("HateCheck recall, all hateful", hc.recall(), ">=", 0.80);
    ok &= target(
        "HateCheck false-positive rate, non-hateful",
        hc.false_positive_rate(),
        "<=",
        0.10,
    );
    ok &= target("SMS spam recall", sms.recall(), ">=", 0.80);
    ok &= target("SMS ham refused", sms.false_positive_rate(), "<=", 0.01);
    ok &= target(
        "own benign confessions refused",
        benign.false_positive_rate(),
        "<=",
        0.02,
    );
    println!(
        "{}",
        if ok {
            "all targets met"
        } else {
            "some targets missed"
        }
    );
    ExitCode::SUCCESS
}

fn describe(st: &Stats) -> String {
    let mut parts = Vec::new();
    if st.positives > 0 {
        parts.push(format!(
            "recall {:.3} ({}/{})",
            st.recall().unwrap_or(0.0),
            st.true_positives,
            st.positives
        ));
    }
    if st.negatives > 0 {
        parts.push(format!(
            "FPR {:.3} ({}/{})",
            st.false_positive_rate().unwrap_or(0.0),
            st.false_positives,
            st.negatives
        ));
    }
    parts.join("  ")
}

fn target(name: &str, value: Option<f64>, op: &str, bound: f64) -> bool {
    let pass = match (value, op) {
        (Some(v), ">=") => v >= bound,
        (Some(v), _) => v <= bound,
        (None, _) => false,
    };
    println!(
        "  {} {name}: {} (target {op} {bound:.2})",
        if pass { "PASS" } else { "FAIL" },
        value.map_or_else(|| "no data".to_owned(), |v| format!("{v:.3}")),
    );
    pass
}

/// One CSV record per line group (RFC 4180 quoting).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !record.is_empty() {
        record.push(field);
        records.push(record);
    }
    records
}

fn load_hatecheck(path: &Path) -> Result<Vec<Sample>, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let records = parse_csv(&text);
    let header = records.first().ok_or("empty file")?;
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .ok_or(format!("no column {name}"))
    };
    let (f, t, l) = (col("functionality")?, col("test_case")?, col("label_gold")?);
    let mut out = Vec::new();
    for r in records.iter().skip(1) {
        let (Some(func), Some(text), Some(label)) = (r.get(f), r.get(t), r.get(l)) else {
            continue;
        };
        let label = match label.as_str() {
            "hateful" if func.starts_with("threat_") => Some(Category::Threat),
            "hateful" => Some(Category::Hate),
            _ => None,
        };
        out.push(Sample {
            text: text.trim().to_owned(),
            label,
            set: "hatecheck".to_owned(),
            group: func.clone(),
        });
    }
    Ok(out)
}

fn load_sms(path: &Path) -> Result<Vec<Sample>, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let Some((label, body)) = line.split_once('\t') else {
            continue;
        };
        let label = match label {
            "spam" => Some(Category::Spam),
            "ham" => None,
            _ => continue,
        };
        out.push(Sample {
            text: body.to_owned(),
            label,
            set: "sms".to_owned(),
            group: if label.is_some() { "spam" } else { "ham" }.to_owned(),
        });
    }
    Ok(out)
}

fn load_fixtures(dir: &Path) -> Result<Vec<Sample>, String> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "tsv"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((label, body)) = line.split_once('\t') else {
                return Err(format!("{}:{}: no tab", path.display(), n + 1));
            };
            let label = match label {
                "benign" => None,
                name => Some(Category::from_name(name).ok_or_else(|| {
                    format!("{}:{}: unknown label {name:?}", path.display(), n + 1)
                })?),
            };
            out.push(Sample {
                text: body.to_owned(),
                label,
                set: "fixtures".to_owned(),
                group: match label {
                    None => "benign".to_owned(),
                    Some(c) => c.as_str().to_owned(),
                },
            });
        }
    }
    Ok(out)
}
