//! `leak-node`: run a Leak relay.
//!
//! ```text
//! leak-node init --data-dir DIR [--listen ADDR]... [--bootstrap ADDR]... [--config FILE]
//! leak-node run --config FILE [--set section.key=value]... [--listen ADDR]... [--bootstrap ADDR]...
//! leak-node id --config FILE
//! leak-node queue --config FILE [counts | list | retry [ID] | purge (ID | --all)] [--json]
//! leak-node policy keygen --out FILE
//! leak-node policy sign --key FILE [--key FILE]... [--add-to SIGNED] TOML --out SIGNED
//! leak-node policy verify SIGNED (--config FILE | --trusted-key HEX... [--threshold N])
//! leak-node policy show [--config FILE] [--file SIGNED] [--toml]
//! leak-node policy eval [--data DIR] [--train-data DIR] [--fixtures DIR] [--policy TOML]
//! ```

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use std::fmt::Write as _;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use leak_net::durable::{self, Access};
use leak_node::{Config, Identity, StartOptions};
use leak_protocol::policy::{Category, Policy, SignedPolicy};
use libp2p::Multiaddr;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "leak-node",
    version,
    about = "A Leak relay: forwards onion packets, never learns who sent what"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a data directory: a new identity (mode 0600) and a commented config file.
    Init {
        /// Where the identity, database and (by default) the config go.
        #[arg(long, env = "LEAK_DATA_DIR")]
        data_dir: PathBuf,
        /// Where to write the config (default DATA_DIR/leak-node.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Listen address (repeatable), e.g. /ip4/0.0.0.0/tcp/4700.
        #[arg(long)]
        listen: Vec<Multiaddr>,
        /// Bootstrap node (repeatable): /ip4/ADDR/tcp/PORT/p2p/PEERID.
        #[arg(long)]
        bootstrap: Vec<Multiaddr>,
        /// Operator family name.
        #[arg(long, default_value = "")]
        family: String,
        /// Metrics endpoint address ("" disables).
        #[arg(long)]
        metrics: Option<String>,
        /// Seconds per key epoch (every node of a federation must agree).
        #[arg(long)]
        epoch_secs: Option<u64>,
        /// Also take the exit role, sending email from this domain.
        #[arg(long)]
        exit_domain: Option<String>,
    },
    /// Run the node until SIGINT or SIGTERM.
    Run(RunArgs),
    /// Print the node's peer id and a dialable address.
    Id {
        /// The config file.
        #[arg(long, env = "LEAK_CONFIG")]
        config: PathBuf,
    },
    /// Inspect and manage a running exit's delivery queue.
    Queue {
        /// The config file of the running node.
        #[arg(long, env = "LEAK_CONFIG")]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// What to do (default: counts).
        #[command(subcommand)]
        action: Option<QueueAction>,
    },
    /// The shared moderation policy: maintainer keys, signing, checking,
    /// what this node enforces, and how well it does.
    Policy {
        /// What to do.
        #[command(subcommand)]
        action: PolicyAction,
    },
}

#[derive(Subcommand)]
enum PolicyAction {
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

#[derive(Subcommand)]
enum QueueAction {
    /// Leaks by state: waiting (queued, retrying, sending) and finished.
    Counts,
    /// The waiting leaks, oldest first: id, state, attempts, age, last
    /// error, recipient domain (never the address or the text).
    List {
        /// Show at most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Try a waiting leak (or every one) now, ignoring its backoff.
    Retry {
        /// The message id; all waiting leaks if omitted.
        id: Option<String>,
    },
    /// Remove a waiting leak (or every one, with --all) undelivered; its
    /// sender is told it bounced.
    Purge {
        /// The message id.
        #[arg(required_unless_present = "all")]
        id: Option<String>,
        /// Purge every waiting leak.
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Stop starting deliveries (leaks are still taken and queued), e.g.
    /// while the smarthost is down for maintenance; until `resume` or a
    /// restart.
    Pause,
    /// Deliver again after `pause`.
    Resume,
}

#[derive(clap::Args)]
struct RunArgs {
    /// The config file written by `leak-node init`.
    #[arg(long, env = "LEAK_CONFIG")]
    config: PathBuf,
    /// Override any config value: --set limits.global_queue=8192 (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    sets: Vec<String>,
    /// Override node.listen (repeatable).
    #[arg(long)]
    listen: Vec<Multiaddr>,
    /// Override node.bootstrap (repeatable).
    #[arg(long)]
    bootstrap: Vec<Multiaddr>,
    /// Override metrics.listen.
    #[arg(long)]
    metrics: Option<String>,
}

fn list(addrs: &[Multiaddr]) -> String {
    let items: Vec<String> = addrs
        .iter()
        .map(|a| format!("{:?}", a.to_string()))
        .collect();
    format!("[{}]", items.join(","))
}

#[allow(clippy::too_many_arguments)] // one per `init` flag
fn init(
    data_dir: PathBuf,
    config_path: Option<PathBuf>,
    listen: Vec<Multiaddr>,
    bootstrap: Vec<Multiaddr>,
    family: String,
    metrics: Option<String>,
    epoch_secs: Option<u64>,
    exit_domain: Option<String>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let data_dir = data_dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", data_dir.display()))?;
    let mut config = Config::defaults(data_dir.clone());
    if !listen.is_empty() {
        config.node.listen = listen;
    }
    config.node.bootstrap = bootstrap;
    config.node.family = family;
    if let Some(metrics) = metrics {
        config.metrics.listen = metrics;
    }
    if let Some(secs) = epoch_secs {
        config.epochs.period_secs = secs;
    }
    if let Some(domain) = exit_domain {
        config.node.roles.push(leak_node::config::Role::Exit);
        config.exit.domain = domain;
    }
    config.validate()?;
    let config_path = config_path.unwrap_or_else(|| data_dir.join("leak-node.toml"));
    if config_path.exists() {
        anyhow::bail!("{} exists; not overwriting it", config_path.display());
    }
    // The example file, with the values given here set in it.
    let text = config.to_commented_toml()?;
    let identity = Identity::create(&config.identity_path())?;
    std::fs::write(&config_path, text)
        .with_context(|| format!("cannot write {}", config_path.display()))?;
    println!("peer id: {}", identity.peer_id());
    println!("identity: {}", config.identity_path().display());
    println!("config: {}", config_path.display());
    println!(
        "run it with: leak-node run --config {}",
        config_path.display()
    );
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut sets = args.sets;
    if !args.listen.is_empty() {
        sets.push(format!("node.listen={}", list(&args.listen)));
    }
    if !args.bootstrap.is_empty() {
        sets.push(format!("node.bootstrap={}", list(&args.bootstrap)));
    }
    if let Some(metrics) = args.metrics {
        sets.push(format!("metrics.listen={metrics:?}"));
    }
    let config = Config::load(&args.config, &sets)?;
    let filter = log_filter(&config.log.level)?;
    // Logs go to stderr (stdout carries the machine-readable lines below),
    // coloured only on a terminal.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let identity = Identity::load(&config.identity_path())?;
    let mut node = leak_node::start(config, identity, StartOptions::default()).await?;
    println!("peer id: {}", node.peer_id());
    for addr in node.listen_addrs() {
        println!("listening: {addr}/p2p/{}", node.peer_id());
    }
    if let Some(addr) = node.metrics_addr() {
        println!("metrics: http://{addr}/metrics");
    }
    if let Some(addr) = node.exit_http_addr() {
        println!("exit endpoint: http://{addr}/");
    }
    let failure = tokio::select! {
        signal = wait_for_signal() => {
            signal?;
            None
        }
        reason = node.failed() => Some(reason),
    };
    if let Some(reason) = &failure {
        tracing::error!(%reason, "stopping: a part of the node stopped unexpectedly");
    }
    node.shutdown().await?;
    match failure {
        // A non-zero exit, so a supervisor (systemd) restarts the node.
        Some(reason) => anyhow::bail!("{reason}"),
        None => Ok(()),
    }
}

/// Logs of Leak's own crates at `level`; nothing from third-party crates,
/// whose messages can carry peer addresses (libp2p logs dial attempts with
/// IP addresses at debug level).
fn log_filter(level: &str) -> anyhow::Result<EnvFilter> {
    let level: tracing::Level = level.trim().parse().map_err(|_| {
        anyhow::anyhow!("log.level {level:?} must be one of error, warn, info, debug, trace")
    })?;
    let level = level.to_string().to_lowercase();
    EnvFilter::try_new(format!("off,leak_node={level},leak_protocol={level}"))
        .context("building the log filter")
}

async fn queue(config: PathBuf, json: bool, action: Option<QueueAction>) -> anyhow::Result<()> {
    use leak_node::exit::admin::{Request, Response, request};
    let config = Config::load(&config, &[])?;
    let req = match action.unwrap_or(QueueAction::Counts) {
        QueueAction::Counts => Request::Counts,
        QueueAction::List { limit } => Request::List { limit },
        QueueAction::Retry { id } => Request::Retry { id },
        QueueAction::Purge { id, all } => Request::Purge {
            id: if all { None } else { id },
        },
        QueueAction::Pause => Request::Pause,
        QueueAction::Resume => Request::Resume,
    };
    let response = request(&config.admin_socket_path(), &req).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&response)?);
        if let Response::Error { message } = response {
            anyhow::bail!("{message}");
        }
        return Ok(());
    }
    match response {
        Response::Counts(counts) => {
            for (state, n) in &counts.states {
                println!("{state:<22} {n}");
            }
            println!("{:<22} {:.2}/s", "send_rate", counts.send_rate);
            if counts.paused {
                println!("delivery is paused (leak-node queue resume)");
            }
        }
        Response::List { items } => {
            println!(
                "{:<32}  {:<8}  {:>8}  {:>8}  {:>8}  {:<12}  domain",
                "id", "state", "attempts", "age(s)", "next(s)", "last error"
            );
            for i in items {
                println!(
                    "{:<32}  {:<8}  {:>8}  {:>8}  {:>8}  {:<12}  {}",
                    i.id,
                    i.state,
                    i.attempts,
                    i.age_secs,
                    i.next_attempt_in_secs,
                    i.last_error,
                    i.recipient_domain
                );
            }
        }
        Response::Done { count } => match req {
            Request::Pause => println!("delivery paused"),
            Request::Resume => println!("delivery resumed"),
            _ => println!("{count} leak(s)"),
        },
        Response::Error { message } => anyhow::bail!("{message}"),
    }
    Ok(())
}

/// The fixtures' place in the source tree, `policy eval`'s default.
const FIXTURES_DIR: &str = "protocol/policy/fixtures";

/// Runs a `policy` subcommand; what it prints goes to stdout at the end (a
/// closed pipe, as with `| head`, is not an error).
fn policy_command(action: PolicyAction) -> anyhow::Result<()> {
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
            let public = leak_node::policy::create_maintainer_key(&path)?;
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
        .map(|k| leak_node::policy::read_maintainer_key(k))
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
                .map(|k| leak_node::policy::parse_public_key(k).context("--trusted-key"))
                .collect::<anyhow::Result<Vec<_>>>()?,
            threshold,
        ),
    };
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read the signed policy {}", path.display()))?;
    let (signed, policy) = leak_node::policy::verify_usable(&bytes, &trusted, threshold)
        .with_context(|| format!("{} refused", path.display()))?;
    let valid = leak_node::policy::valid_signers(&signed, &trusted);
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
    let mut samples = leak_node::policy::eval_samples(data, &fixtures)?;
    if let Some(dir) = train_data {
        samples.extend(leak_node::policy::measurement_samples(dir)?);
    }
    let start = std::time::Instant::now();
    let mut report = leak_protocol::policy::eval::evaluate(&policy, &samples);
    let elapsed = start.elapsed();
    report.set_flips(leak_protocol::policy::eval::flips(&policy, &samples));
    Ok(report.summary(Some(elapsed)).to_string())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init {
            data_dir,
            config,
            listen,
            bootstrap,
            family,
            metrics,
            epoch_secs,
            exit_domain,
        } => init(
            data_dir,
            config,
            listen,
            bootstrap,
            family,
            metrics,
            epoch_secs,
            exit_domain,
        ),
        Command::Queue {
            config,
            json,
            action,
        } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")
            .and_then(|rt| rt.block_on(queue(config, json, action))),
        Command::Policy { action } => policy_command(action),
        Command::Id { config } => Config::load(&config, &[])
            .map_err(anyhow::Error::from)
            .and_then(|c| Identity::load(&c.identity_path()).map_err(anyhow::Error::from))
            .map(|id| println!("{}", id.peer_id())),
        Command::Run(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")
            .and_then(|rt| rt.block_on(run(args))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("leak-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}
