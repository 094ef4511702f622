//! `leak-node policy …`: keys, signing, verifying, showing and evaluating
//! the federation's moderation policy.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use clap::Subcommand;
use leak_net::durable::{self, Access};
use leak_node::Config;
use leak_protocol::policy::{self, Category, Policy, PolicyError, SignedPolicy};

use crate::signing_key;

#[derive(Subcommand)]
pub(crate) enum PolicyAction {
    /// Create a policy maintainer's signing key (mode 0600) and print the
    /// public key that nodes list in `policy.trusted_keys`.
    Keygen {
        /// Where to write the key; an existing file is never overwritten.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Sign a policy document (it must compile), or add signatures to a
    /// signed policy of the same document.
    Sign {
        /// A maintainer key written by `policy keygen` (repeatable: each
        /// key signs).
        #[arg(long = "key", value_name = "FILE", required = true)]
        keys: Vec<PathBuf>,
        /// Add the signatures to this signed policy, which must sign the
        /// same TOML, instead of starting a new one.
        #[arg(long, value_name = "SIGNED")]
        add_to: Option<PathBuf>,
        /// The policy document (TOML).
        toml: PathBuf,
        /// Where to write the signed policy (may be the --add-to file).
        #[arg(long, value_name = "SIGNED")]
        out: PathBuf,
    },
    /// Check a signed policy as a node would: exit 1 if it is forged, has
    /// too few signatures by trusted keys, is malformed, or is older than the
    /// policy built into this release.
    Verify {
        /// The signed policy.
        signed: PathBuf,
        /// Trust the keys and threshold of this config's `[policy]`.
        #[arg(long, value_name = "FILE", required_unless_present = "trusted_keys")]
        config: Option<PathBuf>,
        /// Trust this maintainer key, 64 hex digits (repeatable).
        #[arg(long = "trusted-key", value_name = "HEX", conflicts_with = "config")]
        trusted_keys: Vec<String>,
        /// How many of the --trusted-key keys must have signed [default: 1].
        #[arg(long, requires = "trusted_keys", conflicts_with = "config")]
        threshold: Option<usize>,
    },
    /// The policy this node would enforce: version, where it comes from,
    /// limits and rules.
    Show {
        /// The node's config (default: the policy built into this release).
        #[arg(long, value_name = "FILE", env = "LEAK_CONFIG")]
        config: Option<PathBuf>,
        /// Use this signed policy as `policy.file` (needs --config for the
        /// trusted keys).
        #[arg(long, value_name = "SIGNED", requires = "config")]
        file: Option<PathBuf>,
        /// Print the policy's TOML source instead.
        #[arg(long)]
        toml: bool,
    },
    /// Measure a policy on labelled data: precision, recall and
    /// false-positive rate per category and set, and the project's targets.
    Eval {
        /// The public data sets (hatecheck_test_suite_cases.csv and
        /// sms_spam_collection.tsv); without it only the fixtures are read.
        #[arg(long, env = "LEAK_EVAL_DATA", value_name = "DIR")]
        data: Option<PathBuf>,
        /// The moderation training data (shared/moderation-train): its
        /// measurement-only sets (cyberagression_fr, dailydialog,
        /// gab_hate_corpus, enron_spam), which the model never trained on,
        /// are measured per language. The cross-validated numbers on the
        /// training sets come from the trainer (policy_train).
        #[arg(long, env = "LEAK_TRAIN_DATA", value_name = "DIR")]
        train_data: Option<PathBuf>,
        /// The project's labelled fixtures, *.tsv [default:
        /// protocol/policy/fixtures, in the source tree].
        #[arg(long, value_name = "DIR")]
        fixtures: Option<PathBuf>,
        /// Measure this policy document (TOML, e.g. a draft before signing)
        /// instead of the built-in policy.
        #[arg(long, value_name = "TOML")]
        policy: Option<PathBuf>,
    },
}

/// The fixtures' place in the source tree, `policy eval`'s default.
const FIXTURES_DIR: &str = "protocol/policy/fixtures";

/// Runs a `policy` subcommand; what it prints goes to stdout at the end (a
/// closed pipe, as with `| head`, is not an error).
pub(crate) fn policy_command(action: PolicyAction) -> anyhow::Result<()> {
    use std::io::Write as _;
    let out = policy_action(action)?;
    match std::io::stdout().lock().write_all(out.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// A `policy` subcommand's output.
fn policy_action(action: PolicyAction) -> anyhow::Result<String> {
    match action {
        PolicyAction::Keygen { out: path } => {
            let public = signing_key::create(&path, signing_key::MAINTAINER)?;
            let mut out = String::new();
            writeln!(out, "maintainer key: {} (keep it secret)", path.display())?;
            writeln!(out, "public key: {}", hex::encode(public))?;
            writeln!(
                out,
                "nodes trust it with, in [policy]: trusted_keys = [\"{}\"]",
                hex::encode(public)
            )?;
            Ok(out)
        }
        PolicyAction::Sign {
            keys,
            add_to,
            toml,
            out,
        } => policy_sign(&keys, add_to.as_deref(), &toml, &out),
        PolicyAction::Verify {
            signed,
            config,
            trusted_keys,
            threshold,
        } => policy_verify(
            &signed,
            config.as_deref(),
            &trusted_keys,
            threshold.unwrap_or(1),
        ),
        PolicyAction::Show { config, file, toml } => {
            policy_show(config.as_deref(), file.as_deref(), toml)
        }
        PolicyAction::Eval {
            data,
            train_data,
            fixtures,
            policy,
        } => policy_eval(
            data.as_deref(),
            train_data.as_deref(),
            fixtures,
            policy.as_deref(),
        ),
    }
}

/// A policy document's text and its compiled policy, or a clear error.
fn compile_toml(path: &Path) -> anyhow::Result<(String, Policy)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the policy document {}", path.display()))?;
    // A document naming a model this release does not have (a new model
    // being signed) finds it beside the document, by the name it gives.
    let policy = match Policy::from_toml(&text) {
        Err(leak_protocol::policy::PolicyError::Model(_))
            if Policy::model_file_name(&text).is_some() =>
        {
            let name = Policy::model_file_name(&text).unwrap_or_default();
            let model_path = path.with_file_name(&name);
            let bytes = std::fs::read(&model_path).with_context(|| {
                format!("cannot read the policy's model {}", model_path.display())
            })?;
            Policy::from_toml_with_model(&text, &bytes)
        }
        other => other,
    }
    .with_context(|| format!("{} does not compile", path.display()))?;
    Ok((text, policy))
}

fn policy_sign(
    keys: &[PathBuf],
    add_to: Option<&Path>,
    toml: &Path,
    out_path: &Path,
) -> anyhow::Result<String> {
    let mut out = String::new();
    let (text, policy) = compile_toml(toml)?;
    let seeds = keys
        .iter()
        .map(|k| signing_key::read(k, signing_key::MAINTAINER))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut signed = match add_to {
        Some(path) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("cannot read the signed policy {}", path.display()))?;
            let signed =
                SignedPolicy::from_bytes(&bytes).with_context(|| path.display().to_string())?;
            anyhow::ensure!(
                signed.toml() == text,
                "{} signs another policy text than {}: sign the same TOML file",
                path.display(),
                toml.display()
            );
            // Its signatures must all verify, whoever made them.
            let signers: Vec<[u8; 32]> = signed.signers().copied().collect();
            signed
                .verify(&signers, signers.len())
                .with_context(|| format!("{} has a bad signature", path.display()))?;
            signed
        }
        None => {
            let (first, _) = seeds.split_first().context("no --key")?;
            SignedPolicy::sign(&text, first)?
        }
    };
    for seed in &seeds {
        signed.add_signature(seed)?;
    }
    // A signed policy is a public document, handed to operators.
    durable::write(out_path, &signed.to_bytes(), Access::Shared)
        .with_context(|| format!("cannot write {}", out_path.display()))?;
    writeln!(
        out,
        "signed policy version {} written to {}",
        policy.version(),
        out_path.display()
    )?;
    let signers: Vec<String> = signed.signers().map(hex::encode).collect();
    writeln!(out, "signers ({}):", signers.len())?;
    for signer in signers {
        writeln!(out, "  {signer}")?;
    }
    let builtin = Policy::builtin().version();
    if policy.version() < builtin {
        eprintln!(
            "warning: version {} is older than the policy built into this release (version {builtin}): its nodes refuse it",
            policy.version()
        );
    }
    Ok(out)
}

fn policy_verify(
    path: &Path,
    config: Option<&Path>,
    trusted_keys: &[String],
    threshold: usize,
) -> anyhow::Result<String> {
    let mut out = String::new();
    let (trusted, threshold) = match config {
        Some(config) => {
            let config = Config::load(config, &[])?;
            let keys = leak_node::policy::trusted_keys(&config.policy)?;
            anyhow::ensure!(
                !keys.is_empty(),
                "the config's policy.trusted_keys is empty: it trusts no maintainer key"
            );
            (keys, config.policy.threshold)
        }
        None => (
            trusted_keys
                .iter()
                .map(|k| parse_public_key(k).context("--trusted-key"))
                .collect::<anyhow::Result<Vec<_>>>()?,
            threshold,
        ),
    };
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read the signed policy {}", path.display()))?;
    let (signed, policy) = verify_usable(&bytes, &trusted, threshold)
        .with_context(|| format!("{} refused", path.display()))?;
    let valid = valid_signers(&signed, &trusted);
    writeln!(out, "{}: valid", path.display())?;
    writeln!(
        out,
        "version: {} (built into this release: {})",
        policy.version(),
        Policy::builtin().version()
    )?;
    writeln!(
        out,
        "valid signatures by trusted keys: {} ({} required)",
        valid.len(),
        threshold.max(1)
    )?;
    for key in &valid {
        writeln!(out, "  {}", hex::encode(key))?;
    }
    let ignored: Vec<String> = signed
        .signers()
        .filter(|k| !valid.contains(k))
        .map(hex::encode)
        .collect();
    if !ignored.is_empty() {
        writeln!(
            out,
            "ignored signatures (untrusted keys): {}",
            ignored.len()
        )?;
        for key in ignored {
            writeln!(out, "  {key}")?;
        }
    }
    Ok(out)
}

fn policy_show(config: Option<&Path>, file: Option<&Path>, toml: bool) -> anyhow::Result<String> {
    use leak_node::policy::{Origin, PolicyState};
    let (policy, origin, signed, trust) = match config {
        None => (
            std::sync::Arc::new(Policy::builtin()),
            Origin::Builtin,
            None,
            None,
        ),
        Some(path) => {
            let mut config = Config::load(path, &[])?;
            if let Some(file) = file {
                config.policy.file = file.display().to_string();
            }
            let state = PolicyState::load(&config.policy, &config.node.data_dir)?;
            let trust = (config.policy.trusted_keys.len(), config.policy.threshold);
            (state.current(), state.origin(), state.signed(), Some(trust))
        }
    };
    if toml {
        return Ok(policy.source().to_owned());
    }
    let mut out = String::new();
    writeln!(out, "version: {}", policy.version())?;
    writeln!(out, "source: {origin}")?;
    if let Some(bytes) = signed {
        let signed = SignedPolicy::from_bytes(&bytes)?;
        let signers: Vec<String> = signed.signers().map(hex::encode).collect();
        writeln!(out, "signed by: {}", signers.join(", "))?;
    }
    if let Some((keys, threshold)) = trust {
        writeln!(
            out,
            "trusted maintainer keys: {keys}, threshold {threshold}"
        )?;
    }
    let limits = policy.limits();
    writeln!(out, "limits:")?;
    writeln!(out, "  max length: {} bytes", limits.max_text_len)?;
    writeln!(
        out,
        "  links: {}",
        if limits.links_allowed {
            "allowed"
        } else {
            "refused"
        }
    )?;
    writeln!(
        out,
        "  per recipient per day: {}",
        limits.per_recipient_per_day
    )?;
    writeln!(out, "  stamp bits: {}", limits.stamp_bits)?;
    let rules: Vec<(&str, Category)> = policy.rule_names().collect();
    writeln!(
        out,
        "rules: {} (the first that matches refuses)",
        rules.len()
    )?;
    for category in Category::RULE_CATEGORIES {
        let names: Vec<&str> = rules
            .iter()
            .filter(|(_, c)| *c == category)
            .map(|(n, _)| *n)
            .collect();
        let list = if names.is_empty() {
            "(none)".to_owned()
        } else {
            names.join(", ")
        };
        writeln!(
            out,
            "  {:<10} {:>2}: {list}",
            category.as_str(),
            names.len()
        )?;
    }
    Ok(out)
}

fn policy_eval(
    data: Option<&Path>,
    train_data: Option<&Path>,
    fixtures: Option<PathBuf>,
    policy: Option<&Path>,
) -> anyhow::Result<String> {
    let fixtures = match fixtures {
        Some(dir) => dir,
        None => {
            let dir = PathBuf::from(FIXTURES_DIR);
            anyhow::ensure!(
                dir.is_dir(),
                "no fixtures: {FIXTURES_DIR} is not here; run from the Leak source tree or pass --fixtures DIR"
            );
            dir
        }
    };
    if data.is_none() {
        eprintln!(
            "no --data DIR (or LEAK_EVAL_DATA): HateCheck and the SMS Spam Collection are not measured"
        );
    }
    let policy = match policy {
        Some(path) => compile_toml(path)?.1,
        None => Policy::builtin(),
    };
    let mut samples = eval_samples(data, &fixtures)?;
    if let Some(dir) = train_data {
        samples.extend(measurement_samples(dir)?);
    }
    let start = std::time::Instant::now();
    let mut report = leak_protocol::policy::eval::evaluate(&policy, &samples);
    let elapsed = start.elapsed();
    report.set_flips(leak_protocol::policy::eval::flips(&policy, &samples));
    Ok(report.summary(Some(elapsed)).to_string())
}

// Maintainer keys' signature checks and the evaluation's data.

/// Decodes a maintainer's public key: 64 hex digits.
fn parse_public_key(hex_key: &str) -> anyhow::Result<[u8; 32]> {
    Ok(policy::parse_public_key(hex_key)?)
}

/// The keys of `trusted` whose signature on `signed` verifies (and whose
/// policy compiles), in the order they signed.
fn valid_signers(signed: &SignedPolicy, trusted: &[[u8; 32]]) -> Vec<[u8; 32]> {
    signed
        .signers()
        .filter(|k| trusted.contains(k) && signed.verify(&[**k], 1).is_ok())
        .copied()
        .collect()
}

/// Verifies a signed policy as a node would before using it: enough valid
/// signatures by `trusted` keys, a policy that compiles, and a version no
/// older than the built-in policy's.
fn verify_usable(
    bytes: &[u8],
    trusted: &[[u8; 32]],
    threshold: usize,
) -> anyhow::Result<(SignedPolicy, Policy)> {
    let signed = SignedPolicy::from_bytes(bytes)?;
    let policy = signed.verify(trusted, threshold).map_err(|e| {
        let untrusted: Vec<String> = signed
            .signers()
            .filter(|k| !trusted.contains(k))
            .map(hex::encode)
            .collect();
        match e {
            PolicyError::NotEnoughSignatures { .. } if !untrusted.is_empty() => anyhow::anyhow!(
                "{e}; signatures by keys not trusted do not count: {}",
                untrusted.join(", ")
            ),
            e => e.into(),
        }
    })?;
    let builtin = Policy::builtin().version();
    if policy.version() < builtin {
        return Err(PolicyError::OlderThanBuiltin {
            version: policy.version(),
            builtin,
        }
        .into());
    }
    Ok((signed, policy))
}

/// The measurement-only sets of the moderation training data in `dir`
/// (`shared/moderation-train`): their licences keep them out of the shipped
/// model, so they measure it on texts it never saw.
fn measurement_samples(
    dir: &std::path::Path,
) -> anyhow::Result<Vec<leak_protocol::policy::eval::Sample>> {
    let mut samples = Vec::new();
    for set in [
        "cyberagression_fr",
        "dailydialog",
        "gab_hate_corpus",
        "enron_spam",
    ] {
        let path = dir.join(format!("{set}.tsv"));
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        samples.extend(
            leak_protocol::policy::eval::labelled_samples(set, &text)
                .with_context(|| path.display().to_string())?,
        );
    }
    Ok(samples)
}

/// The evaluation's samples (`leak-node policy eval`): the public data sets
/// in `data` ([`eval::HATECHECK_FILE`] and [`eval::SMS_FILE`], both
/// required), if given, and every `*.tsv` fixture file in `fixtures`.
///
/// [`eval::HATECHECK_FILE`]: leak_protocol::policy::eval::HATECHECK_FILE
/// [`eval::SMS_FILE`]: leak_protocol::policy::eval::SMS_FILE
fn eval_samples(
    data: Option<&std::path::Path>,
    fixtures: &std::path::Path,
) -> anyhow::Result<Vec<leak_protocol::policy::eval::Sample>> {
    use leak_protocol::policy::eval;
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let mut samples = Vec::new();
    if let Some(dir) = data {
        for (file, parse) in [
            (
                eval::HATECHECK_FILE,
                eval::hatecheck_samples as fn(&str) -> _,
            ),
            (eval::SMS_FILE, eval::sms_samples),
        ] {
            let path = dir.join(file);
            samples.extend(parse(&read(&path)?).with_context(|| path.display().to_string())?);
        }
    }
    let mut tsv = Vec::new();
    for entry in std::fs::read_dir(fixtures)
        .with_context(|| format!("cannot read the fixtures directory {}", fixtures.display()))?
    {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "tsv") {
            tsv.push(path);
        }
    }
    anyhow::ensure!(
        !tsv.is_empty(),
        "{} has no fixture (*.tsv) files",
        fixtures.display()
    );
    tsv.sort();
    for path in tsv {
        samples.extend(eval::fixture_samples(
            &path.display().to_string(),
            &read(&path)?,
        )?);
    }
    Ok(samples)
}
