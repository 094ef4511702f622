//! Measures the built-in moderation policy on labelled data.
//!
//! ```text
//! cargo run --release -p leak-protocol --example policy_eval -- \
//!     [--data DIR] [--fixtures DIR] [--policy FILE.toml] [--verbose] [--show GROUP-OR-SET]...
//!     [--scores TEXT]...
//! ```
//!
//! `leak-node policy eval` prints the same numbers; this example adds
//! `--policy` (a draft TOML instead of the built-in policy), `--verbose` and
//! `--show`. Sets read, all through `leak_protocol::policy::eval`'s parsers:
//!
//! - `hatecheck`: `DIR/hatecheck_test_suite_cases.csv` (HateCheck, Röttger et
//!   al., ACL 2021, CC BY 4.0): `label_gold` hateful / non-hateful, grouped by
//!   `functionality`; the `threat_*` cases are labelled threat, the other
//!   hateful ones hate.
//! - `sms`: `DIR/sms_spam_collection.tsv` (SMS Spam Collection v.1, Almeida,
//!   Gómez Hidalgo and Yamakami 2011, CC BY 4.0): spam / ham.
//! - `fixtures`: the project's own `*.tsv` files (default: `policy/fixtures`
//!   beside this crate), `label<TAB>text`, where the label is a category name
//!   or `benign`; grouped by label.
//!
//! `DIR` is `--data`, else `$LEAK_EVAL_DATA`, else `shared/moderation-eval`
//! beside the workspace when it exists; without it only the fixtures are
//! measured.
//!
//! Prints the per-category table, the per-group numbers, the flip rate under
//! small edits ([`eval::flips`]) and the project's
//! targets with PASS, FAIL or SKIP. `--verbose` also lists the benign texts
//! refused and the abusive ones missed in the project's own fixtures;
//! `--scores TEXT` prints only TEXT's verdict and the model's logit per head
//! next to the head's threshold. `--show` does the same for one group (a HateCheck functionality, `ham`,
//! `spam`) or set.

use std::{
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
};

use leak_protocol::policy::{
    Policy,
    eval::{self, Sample, evaluate},
    model,
};

fn main() -> ExitCode {
    let beside_workspace =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/moderation-eval");
    let mut data = std::env::var_os("LEAK_EVAL_DATA")
        .map(PathBuf::from)
        .or_else(|| beside_workspace.is_dir().then_some(beside_workspace));
    let mut fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("policy/fixtures");
    let mut policy_file: Option<PathBuf> = None;
    let mut verbose = false;
    let mut show: Vec<String> = Vec::new();
    let mut scores: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--data" => data = args.next().map(PathBuf::from).or(data),
            "--fixtures" => fixtures = args.next().map(PathBuf::from).unwrap_or(fixtures),
            "--policy" => policy_file = args.next().map(PathBuf::from),
            "--verbose" | "-v" => verbose = true,
            "--show" => show.extend(args.next()),
            "--scores" => scores.extend(args.next()),
            other => {
                eprintln!("unknown argument {other:?}");
                return ExitCode::from(2);
            }
        }
    }
    let policy = match &policy_file {
        None => Policy::builtin(),
        // A document that names a model file is read with that file from
        // beside it (a model being tried need not be the built-in one).
        Some(path) => match fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| match Policy::model_file_name(&t) {
                None => Policy::from_toml(&t).map_err(|e| e.to_string()),
                Some(name) => {
                    let beside = path.parent().unwrap_or(Path::new(".")).join(&name);
                    let model =
                        fs::read(&beside).map_err(|e| format!("{}: {e}", beside.display()))?;
                    Policy::from_toml_with_model(&t, &model).map_err(|e| e.to_string())
                }
            }) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
    };

    if !scores.is_empty() {
        print_scores(&policy, &scores);
        return ExitCode::SUCCESS;
    }

    let mut samples = Vec::new();
    if let Some(dir) = &data {
        let hatecheck = read(&dir.join(eval::HATECHECK_FILE), eval::hatecheck_samples);
        let sms = read(&dir.join(eval::SMS_FILE), eval::sms_samples);
        for set in [hatecheck, sms] {
            match set {
                Ok(s) => samples.extend(s),
                Err(e) => eprintln!("{e}"),
            }
        }
    } else {
        eprintln!("no data set directory (--data DIR or LEAK_EVAL_DATA): fixtures only");
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
    let mut report = evaluate(&policy, &samples);
    let elapsed = start.elapsed();
    report.set_flips(eval::flips(&policy, &samples));
    print!("{}", report.summary(Some(elapsed)));

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

    ExitCode::SUCCESS
}

/// Each text's verdict and, per model head, its logit and threshold.
fn print_scores(policy: &Policy, texts: &[String]) {
    for text in texts {
        println!("{:?}", policy.check_text(text));
        let Some(model) = policy.model() else {
            continue;
        };
        let scores = model.scores(&leak_protocol::policy::views(text).unquoted);
        for ((kind, s), h) in model::HEADS.iter().zip(scores.0).zip(model.heads()) {
            let name = kind.map_or("abusive", leak_protocol::policy::Category::as_str);
            println!("  {name:10} {s:7.3} (threshold {:7.3})", h.threshold);
        }
    }
}

/// A data set file's samples, or why not.
fn read(
    path: &Path,
    parse: fn(&str) -> Result<Vec<Sample>, eval::DataError>,
) -> Result<Vec<Sample>, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The samples of every `*.tsv` file in `dir`, in name order.
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
        out.extend(
            eval::fixture_samples(&path.display().to_string(), &text).map_err(|e| e.to_string())?,
        );
    }
    Ok(out)
}
