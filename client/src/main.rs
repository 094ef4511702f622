//! `leak`: send a leak through a Leak federation.
//!
//! ```text
//! leak init [--bootstrap ADDRESS]... [--force]
//! leak agent [stop]
//! leak send --to ADDRESS --as RELATIONSHIP [MESSAGE] [--file FILE] [--within 2h] [--wait] [--hops N] [--json]
//! leak send --direct --to ADDRESS --as RELATIONSHIP [MESSAGE] [--no-wait] [--hops N] [--json]
//! leak check [MESSAGE] [--file FILE] [--json]
//! leak nodes [--json]
//! leak status [MESSAGE-ID] [--json]
//! leak ui [--print]
//! leak inbox [LABEL] [--json] [--forget LABEL]
//! leak reply LABEL [MESSAGE] [--file FILE] [--within 2h] [--wait] [--json]
//! ```
//!
//! Global options: `--config FILE`, `--state-dir DIR`, and `--bind IP`, the
//! local address outgoing connections use (the config's `network.bind`).
//!
//! `leak send` hands the leak to the running agent (`leak agent`), which
//! sends it among its cover traffic; without an agent it refuses and says
//! what `--direct` (today's one-shot send) gives up.
//!
//! Exit status: 0 delivered or accepted by the exit's mail server (or queued by the agent, or sent with
//! `--direct --no-wait`; accepted, for `check`), 1 refused (by the policy before sending, or by the exit; the
//! recipient opted out; rate limited), 2 usage error, 3 failed (bounced, no
//! receipt after every retransmission, no network).

use std::{net::IpAddr, path::PathBuf, process::ExitCode, time::Duration};

mod cli;
mod handoff;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use cli::{Status, Usage, describe, state_line};
use leak_client::{
    config::{Config, ConfigMissing, Paths, check_bootstrap},
    directory::{self, DirectoryError, format_age},
    path::{MAX_HOPS, MIN_HOPS},
    progress::Progress,
    receipts,
    send::{self, Draft, SendError, SendOptions, SendOutcome, unix_ms},
    state::{
        BadMessageId, EndedRecord, Finished, LeakRecord, StateDir, UnknownLeak, day_to_date,
        outcome_name,
    },
    text::{self, TextSourceError},
};
use leak_net::peer_id_of;
use leak_protocol::{
    Outcome, Recipient, Relationship,
    payload::validate_text,
    policy::{Policy, Verdict},
};
use libp2p::Multiaddr;
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "leak",
    version,
    about = "Say what you do not dare to say, by email, without being identifiable",
    after_help = "Exit status: 0 delivered (or sent, or accepted), 1 refused, 2 usage error, 3 failed."
)]
struct Cli {
    /// The configuration file [default: $XDG_CONFIG_HOME/leak/config.toml].
    #[arg(long, env = "LEAK_CONFIG", global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The state directory [default: $XDG_STATE_HOME/leak].
    #[arg(long, env = "LEAK_STATE_DIR", global = true, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// The local address outgoing connections use (an address of this
    /// machine), instead of the config's network.bind; with `init`, written
    /// into the config.
    #[arg(long, global = true, value_name = "IP")]
    bind: Option<IpAddr>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a commented configuration file and create the state directory.
    Init {
        /// A node to fetch the directory from: /ip4/ADDR/tcp/PORT/p2p/PEERID (repeatable).
        #[arg(long, value_name = "MULTIADDR")]
        bootstrap: Vec<Multiaddr>,
        /// Default hops per path, counting the exit.
        #[arg(long, value_parser = clap::value_parser!(u8).range(MIN_HOPS as i64..=MAX_HOPS as i64))]
        hops: Option<u8>,
        /// Mean per-hop mixing delay in milliseconds (0 disables mixing).
        #[arg(long, value_name = "MS")]
        mixing_delay_ms: Option<u32>,
        /// Seconds to wait for a receipt before sending again.
        #[arg(long, value_name = "SECS")]
        receipt_timeout_secs: Option<u64>,
        /// Overwrite an existing configuration file.
        #[arg(long)]
        force: bool,
        /// A directory authority's public key, 64 hex digits, as the
        /// federation publishes it (repeatable).
        #[arg(long = "authority", value_name = "HEX")]
        authorities: Vec<String>,
        /// How many of the authorities must have signed the roster.
        #[arg(long, value_name = "N")]
        authority_threshold: Option<usize>,
    },
    /// Run the always-on agent that sends leaks among cover traffic (until
    /// `leak agent stop`, SIGTERM or Ctrl-C); `leak agent stop` stops it.
    Agent {
        #[command(subcommand)]
        action: Option<AgentAction>,
    },
    /// Check a leak and hand it to the agent (or, with --direct, send it
    /// now and wait for the exit's receipt).
    Send(SendArgs),
    /// Check a message against the moderation policy without sending it.
    Check {
        /// The message (else --file or standard input).
        message: Option<String>,
        /// Read the message from FILE ("-" for standard input).
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// Print one JSON object on standard output.
        #[arg(long)]
        json: bool,
    },
    /// List the federation's nodes (the verified directory).
    Nodes {
        /// Print JSON on standard output.
        #[arg(long)]
        json: bool,
    },
    /// List conversations and their answers (one conversation with its
    /// label); --forget deletes one.
    Inbox {
        /// A conversation's label (or its first letters).
        thread: Option<String>,
        /// Delete this conversation from this machine.
        #[arg(long, value_name = "LABEL", conflicts_with = "thread")]
        forget: Option<String>,
        /// Print JSON on standard output.
        #[arg(long)]
        json: bool,
    },
    /// Send a follow-up in a conversation (to the same recipient, through
    /// the same exit; it threads in their mail program).
    Reply {
        /// The conversation's label (see `leak inbox`).
        thread: String,
        /// The message (else --file, standard input, or $EDITOR).
        message: Option<String>,
        /// Read the message from FILE ("-" for standard input).
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// Wait until the receipt comes.
        #[arg(long)]
        wait: bool,
        /// Release it at a random time within this window.
        #[arg(long, value_name = "DURATION", value_parser = handoff::parse_within)]
        within: Option<Duration>,
        /// Print one JSON object on standard output.
        #[arg(long)]
        json: bool,
    },
    /// Open the agent's web page (compose, receipts, conversations) in
    /// your browser.
    Ui {
        /// Print the page's address (with this run's key) instead of
        /// opening a browser.
        #[arg(long)]
        print: bool,
    },
    /// Show pending and finished leaks; fetch receipts that arrived since.
    Status {
        /// One leak's id (or the first digits of it).
        message_id: Option<String>,
        /// Print JSON on standard output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AgentAction {
    /// Stop the running agent (what it holds stays on disk).
    Stop,
}

#[derive(clap::Args)]
struct SendArgs {
    /// The recipient's email address.
    #[arg(long, value_name = "ADDRESS", value_parser = parse_recipient)]
    to: Recipient,
    /// Who you are to them: coworker, friend, friend-of-a-friend, family or someone.
    #[arg(long = "as", value_name = "RELATIONSHIP", value_parser = parse_relationship)]
    relationship: Relationship,
    /// The message (else --file, standard input, or $EDITOR).
    message: Option<String>,
    /// Read the message from FILE ("-" for standard input).
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Hops per path, counting the exit [default: from the config, 3].
    #[arg(long, value_parser = clap::value_parser!(u8).range(MIN_HOPS as i64..=MAX_HOPS as i64))]
    hops: Option<u8>,
    /// Send now, without the agent and its cover traffic (see `leak send
    /// --help`): the connection's timing and the receipt poll reveal when
    /// you send.
    #[arg(long)]
    direct: bool,
    /// With the agent: wait until the receipt comes (can take many minutes).
    #[arg(long, conflicts_with = "direct")]
    wait: bool,
    /// With the agent: release the leak at a random time within this
    /// window (30m, 2h, 1h30m), so the moment you send says less.
    #[arg(long, value_name = "DURATION", value_parser = handoff::parse_within, conflicts_with = "direct")]
    within: Option<Duration>,
    /// With --direct: return once the first relay has the leak; `leak
    /// status` fetches the receipt later.
    #[arg(long, requires = "direct")]
    no_wait: bool,
    /// Send it without a way for the recipient to answer (with the agent;
    /// a --direct leak never can be answered).
    #[arg(long)]
    no_answers: bool,
    /// Print one JSON object on standard output.
    #[arg(long)]
    json: bool,
    /// Also print this client's ephemeral peer id and each attempt's route (stderr).
    #[arg(long, short)]
    verbose: bool,
}

fn parse_recipient(s: &str) -> Result<Recipient, String> {
    Recipient::parse(s).map_err(|e| e.to_string())
}

fn parse_relationship(s: &str) -> Result<Relationship, String> {
    s.parse::<Relationship>().map_err(|e| e.to_string())
}

fn classify(error: &anyhow::Error) -> Status {
    if error.is::<Usage>()
        || error.is::<ConfigMissing>()
        || matches!(
            error.downcast_ref::<DirectoryError>(),
            Some(DirectoryError::NoBootstrap | DirectoryError::NoAuthorities)
        )
        || error.is::<TextSourceError>()
        || error.is::<UnknownLeak>()
        || error.is::<BadMessageId>()
    {
        Status::Usage
    } else {
        Status::Failed
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = matches!(
        cli.command,
        Command::Send(SendArgs { json: true, .. }) | Command::Check { json: true, .. }
    );
    match run(cli) {
        Ok(status) => status.into(),
        Err(error) => {
            let status = classify(&error);
            if json {
                let outcome = if status == Status::Usage {
                    "usage_error"
                } else {
                    "failed"
                };
                println!(
                    "{}",
                    json!({ "message_id": null, "outcome": outcome, "rule": null,
                            "reason": format!("{error:#}"), "attempts": 0, "elapsed_ms": 0 })
                );
            }
            eprintln!("leak: {error:#}");
            status.into()
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<Status> {
    let paths = Paths::resolve(cli.config, cli.state_dir)?;
    match cli.command {
        Command::Init {
            bootstrap,
            hops,
            mixing_delay_ms,
            receipt_timeout_secs,
            force,
            authorities,
            authority_threshold,
        } => init(
            &paths,
            bootstrap,
            (authorities, authority_threshold),
            hops,
            mixing_delay_ms,
            receipt_timeout_secs,
            cli.bind,
            force,
        ),
        Command::Agent { action: None } => agent(&paths, cli.bind),
        Command::Agent {
            action: Some(AgentAction::Stop),
        } => handoff::stop(&paths.state_dir),
        Command::Send(args) => send_command(&paths, cli.bind, args),
        Command::Check {
            message,
            file,
            json,
        } => check(&paths, message, file, json),
        Command::Nodes { json } => nodes(&paths, cli.bind, json),
        Command::Status { message_id, json } => status(&paths, cli.bind, message_id, json),
        Command::Ui { print } => handoff::open_ui(&paths.state_dir, print),
        Command::Inbox {
            thread,
            forget,
            json,
        } => {
            leak_client::inbox::inbox(&paths.state_dir, thread.as_deref(), forget.as_deref(), json)
                .map(|()| Status::Ok)
        }
        Command::Reply {
            thread,
            message,
            file,
            wait,
            within,
            json,
        } => reply(&paths, cli.bind, &thread, message, file, wait, within, json),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// `leak agent`: runs the agent in the foreground until it is stopped.
fn agent(paths: &Paths, bind: Option<IpAddr>) -> anyhow::Result<Status> {
    let config = load_config(paths, bind)?;
    if config.network.bootstrap.is_empty() {
        return Err(DirectoryError::NoBootstrap.into());
    }
    let state = StateDir::open(&paths.state_dir)?;
    let policy = config.policy.load()?;
    eprintln!(
        "leak agent: listening on {} (`leak send` hands leaks to it; `leak agent stop` stops it)",
        leak_client::agent::ipc::socket_path(state.root()).display()
    );
    runtime()?.block_on(leak_client::agent::run::run(config, state, policy))?;
    Ok(Status::Ok)
}

#[allow(clippy::too_many_arguments)] // one per `init` flag
fn init(
    paths: &Paths,
    bootstrap: Vec<Multiaddr>,
    (authorities, authority_threshold): (Vec<String>, Option<usize>),
    hops: Option<u8>,
    mixing_delay_ms: Option<u32>,
    receipt_timeout_secs: Option<u64>,
    bind: Option<IpAddr>,
    force: bool,
) -> anyhow::Result<Status> {
    if paths.config.exists() && !force {
        return Err(Usage(format!(
            "{} already exists: edit it, or give --force to overwrite it",
            paths.config.display()
        ))
        .into());
    }
    for address in &bootstrap {
        check_bootstrap(address).map_err(|e| Usage(format!("--bootstrap {e}")))?;
    }
    let mut config = Config::default();
    config.network.bootstrap = bootstrap;
    config.directory.authorities = authorities;
    if let Some(n) = authority_threshold {
        config.directory.authority_threshold = n;
    }
    if let Some(hops) = hops {
        config.send.hops = usize::from(hops);
    }
    if let Some(ms) = mixing_delay_ms {
        config.send.mixing_delay_ms = ms;
    }
    if let Some(secs) = receipt_timeout_secs {
        config.send.receipt_timeout_secs = secs;
    }
    config.network.bind = bind;
    config.check().map_err(|e| Usage(e.to_string()))?;
    if let Some(parent) = paths.config.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    // The example file, with the values given here set in it.
    std::fs::write(&paths.config, config.to_commented_toml()?)
        .with_context(|| format!("cannot write {}", paths.config.display()))?;
    StateDir::open(&paths.state_dir)?;
    println!("Wrote {}", paths.config.display());
    println!("State directory: {}", paths.state_dir.display());
    if config.network.bootstrap.is_empty() {
        println!(
            "No bootstrap node yet: add one under [network] bootstrap, or run `leak init --force --bootstrap ADDRESS`."
        );
    } else if config.directory.authorities.is_empty() {
        println!(
            "No directory authority yet: add the federation's keys under [directory] authorities, or run `leak init --force --authority KEY`."
        );
    } else {
        println!(
            "Next: `leak nodes` lists the federation, `leak send --to ADDRESS --as friend` sends."
        );
    }
    Ok(Status::Ok)
}

/// Reads the text and checks it: usage errors for what no policy would
/// look at (empty, too long, control characters).
fn read_text(
    message: Option<String>,
    file: Option<PathBuf>,
    editor_allowed: bool,
    scratch: &std::path::Path,
) -> anyhow::Result<zeroize::Zeroizing<String>> {
    let source = text::choose_source(message, file, editor_allowed)?;
    let text = text::read(source, scratch)?;
    validate_text(&text).map_err(|e| Usage(e.to_string()))?;
    Ok(text)
}

/// The configuration at `paths`, with `--bind` applied and checked.
fn load_config(paths: &Paths, bind: Option<IpAddr>) -> anyhow::Result<Config> {
    let mut config = Config::load(&paths.config)?;
    apply_bind(&mut config, bind)?;
    Ok(config)
}

/// `--bind` over the config's `network.bind`; a local address this machine
/// does not have is a usage error.
fn apply_bind(config: &mut Config, bind: Option<IpAddr>) -> anyhow::Result<()> {
    if bind.is_some() {
        config.network.bind = bind;
    }
    config
        .network
        .check_bind()
        .map_err(|e| Usage(format!("{e:#}")).into())
}

/// `leak reply`: a follow-up in a conversation, through the agent.
#[allow(clippy::too_many_arguments)]
fn reply(
    paths: &Paths,
    bind: Option<IpAddr>,
    label: &str,
    message: Option<String>,
    file: Option<PathBuf>,
    wait: bool,
    within: Option<Duration>,
    json: bool,
) -> anyhow::Result<Status> {
    let config = load_config(paths, bind)?;
    let state = StateDir::open(&paths.state_dir)?;
    let thread = leak_client::threads::Threads::open(state.root())?.load(label)?;
    let recipient = Recipient::parse(&thread.recipient)?;
    let relationship: Relationship = thread
        .relationship
        .parse()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let text = read_text(message, file, true, state.root())?;
    let policy = config.policy.load()?;
    if let Verdict::Refused(refusal) = policy.check_text(&text) {
        eprintln!(
            "Refused before sending ({}): {}",
            refusal.rule, refusal.reason
        );
        return Ok(Status::Refused);
    }
    if !leak_client::agent::ipc::running(state.root()) {
        return Err(Usage(handoff::no_agent_message(state.root())).into());
    }
    handoff::send(
        &state,
        handoff::Handoff {
            recipient,
            relationship,
            text,
            within,
            hops: None,
            wait,
            json,
            thread: Some(thread.label),
            no_answers: false,
        },
    )
}

fn send_command(paths: &Paths, bind: Option<IpAddr>, args: SendArgs) -> anyhow::Result<Status> {
    let SendArgs {
        to: recipient,
        relationship,
        message,
        file,
        hops,
        direct,
        wait,
        within,
        no_wait,
        no_answers,
        json,
        verbose,
    } = args;
    let config = load_config(paths, bind)?;
    let state = StateDir::open(&paths.state_dir)?;
    let text = read_text(message, file, true, state.root())?;
    let policy = config.policy.load()?;
    if let Verdict::Refused(refusal) = policy.check_text(&text) {
        if json {
            println!(
                "{}",
                json!({ "message_id": null, "outcome": "refused", "refused_by": "client",
                        "rule": refusal.rule, "reason": refusal.reason,
                        "attempts": 0, "elapsed_ms": 0 })
            );
        }
        eprintln!(
            "Refused before sending ({}): {}",
            refusal.rule, refusal.reason
        );
        return Ok(Status::Refused);
    }
    if config.network.bootstrap.is_empty() {
        return Err(DirectoryError::NoBootstrap.into());
    }
    if !direct && !leak_client::agent::ipc::running(state.root()) {
        return Err(Usage(handoff::no_agent_message(state.root())).into());
    }
    if !direct {
        return handoff::send(
            &state,
            handoff::Handoff {
                recipient,
                relationship,
                text,
                within,
                hops: hops.map(usize::from),
                wait,
                json,
                thread: None,
                no_answers,
            },
        );
    }
    let draft = Draft {
        recipient,
        relationship,
        text,
    };
    let options = SendOptions {
        hops: hops.map_or(config.send.hops, usize::from),
        no_wait,
        verbose,
    };
    let progress = Progress::new(false);
    let result = runtime()?.block_on(send::send(
        &draft, &policy, &config, &state, &options, &progress,
    ));
    progress.finish();
    let elapsed_ms = u64::try_from(progress.elapsed().as_millis()).unwrap_or(u64::MAX);
    let report = match result {
        Ok(report) => report,
        Err(error) => {
            // A configuration without bootstrap nodes or directory
            // authorities is the user's to fix;
            // no directory, no path, no entry relay, local trouble: failed.
            let status = match &error {
                SendError::Directory(
                    DirectoryError::NoBootstrap | DirectoryError::NoAuthorities,
                ) => Status::Usage,
                _ => Status::Failed,
            };
            if json {
                println!(
                    "{}",
                    json!({ "message_id": null, "outcome": "failed", "rule": null,
                            "reason": error.to_string(), "attempts": 0, "elapsed_ms": elapsed_ms })
                );
            }
            eprintln!("leak: {error}");
            return Ok(status);
        }
    };
    let id = report.message_id.to_string();
    let (name, rule, reason, status, line) = match &report.outcome {
        SendOutcome::Receipt(outcome) => {
            let (rule, reason) = match outcome {
                Outcome::Refused { rule, reason } => (Some(rule.clone()), Some(reason.clone())),
                _ => (None, None),
            };
            let (status, line) = describe(outcome, &report.exit_domain);
            (outcome_name(outcome), rule, reason, status, line)
        }
        SendOutcome::Sent => (
            "sent",
            None,
            None,
            Status::Ok,
            format!("Sent (not waiting for the receipt): `leak status {id}` fetches it later"),
        ),
        SendOutcome::NoReceipt => (
            "no_receipt",
            None,
            None,
            Status::Failed,
            format!(
                "Failed: no receipt from {} after {} attempt(s); `leak status {id}` checks again later",
                report.exit_domain, report.attempts
            ),
        ),
    };
    if json {
        println!(
            "{}",
            json!({ "message_id": id, "outcome": name, "rule": rule, "reason": reason,
                    "attempts": report.attempts, "elapsed_ms": elapsed_ms,
                    "exit": report.exit_domain })
        );
    } else {
        println!("{line}");
        println!(
            "  message id {id}, {} attempt(s), {:.1}s",
            report.attempts,
            elapsed_ms as f64 / 1000.0
        );
    }
    Ok(status)
}

fn check(
    paths: &Paths,
    message: Option<String>,
    file: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<Status> {
    // Without a configuration file, the built-in policy.
    let policy = match Config::load(&paths.config) {
        Ok(config) => config.policy.load()?,
        Err(e) if e.is::<ConfigMissing>() => Policy::builtin(),
        Err(e) => return Err(e),
    };
    let scratch = std::env::temp_dir();
    let text = read_text(message, file, false, &scratch)?;
    let verdict = policy.check_text(&text);
    match verdict {
        Verdict::Accepted => {
            if json {
                println!(
                    "{}",
                    json!({ "verdict": "accepted", "policy_version": policy.version(),
                            "rule": null, "reason": null })
                );
            } else {
                println!("Accepted (policy version {})", policy.version());
            }
            Ok(Status::Ok)
        }
        Verdict::Refused(refusal) => {
            if json {
                println!(
                    "{}",
                    json!({ "verdict": "refused", "policy_version": policy.version(),
                            "category": refusal.category.as_str(),
                            "rule": refusal.rule, "reason": refusal.reason })
                );
            } else {
                println!("Refused ({}): {}", refusal.rule, refusal.reason);
            }
            Ok(Status::Refused)
        }
    }
}

fn nodes(paths: &Paths, bind: Option<IpAddr>, json: bool) -> anyhow::Result<Status> {
    let config = load_config(paths, bind)?;
    let state = StateDir::open(&paths.state_dir)?;
    let now = unix_ms() / 1000;
    let view = runtime()?.block_on(async {
        let peer = config.network.peer()?;
        directory::load(&peer, &config, &state, now)
            .await
            .map_err(anyhow::Error::from)
    })?;
    let age = now.saturating_sub(view.fetched_at);
    if json {
        let nodes: Vec<serde_json::Value> = view
            .nodes
            .iter()
            .map(|d| {
                let mut roles = Vec::new();
                if d.roles.relay {
                    roles.push("relay");
                }
                if d.roles.exit {
                    roles.push("exit");
                }
                json!({
                    "peer_id": peer_id_of(&d.node).map(|p| p.to_string()),
                    "roles": roles,
                    "family": d.family,
                    "exit": d.exit.as_ref().map(|e| json!({ "domain": e.domain, "policy_version": e.policy_version })),
                    "addresses": d.addresses,
                    "epochs": d.mix_keys.iter().map(|k| k.epoch).collect::<Vec<_>>(),
                    "software": d.software,
                    "published_at": d.published_at,
                    "age_secs": now.saturating_sub(d.published_at),
                })
            })
            .collect();
        println!(
            "{}",
            json!({ "fetched_at": view.fetched_at, "age_secs": age, "from_cache": view.from_cache,
                    "answered": view.answered, "refused": view.refused,
                    "roster_serial": view.roster_serial, "nodes": nodes })
        );
        return Ok(Status::Ok);
    }
    let source = if view.from_cache {
        format!(
            "from the cache (fetched {} ago; no bootstrap node answered)",
            format_age(age)
        )
    } else {
        format!("from {} bootstrap node(s) just now", view.answered)
    };
    println!(
        "{} verified node(s) of roster {} {source}{}",
        view.nodes.len(),
        view.roster_serial,
        if view.refused > 0 {
            format!("; {} descriptor(s) refused", view.refused)
        } else {
            String::new()
        }
    );
    println!(
        "{:<54} {:<11} {:<16} {:<28} {:>8}",
        "PEER ID", "ROLES", "FAMILY", "EXIT (POLICY)", "AGE"
    );
    for d in &view.nodes {
        let roles = match (d.roles.relay, d.roles.exit) {
            (true, true) => "relay,exit",
            (true, false) => "relay",
            (false, true) => "exit",
            (false, false) => "-",
        };
        let exit = d.exit.as_ref().map_or("-".to_owned(), |e| {
            format!("{} (v{})", e.domain, e.policy_version)
        });
        let family = if d.family.is_empty() { "-" } else { &d.family };
        println!(
            "{:<54} {:<11} {:<16} {:<28} {:>8}",
            peer_id_of(&d.node).map_or_else(|| "?".to_owned(), |p| p.to_string()),
            roles,
            family,
            exit,
            format_age(now.saturating_sub(d.published_at))
        );
    }
    Ok(Status::Ok)
}

/// How long relays keep a reply in a mailbox: a pending leak older than
/// this will get no receipt.
const MAILBOX_TTL_MS: u64 = leak_protocol::federation::MAILBOX_LIFETIME_SECS * 1000;

fn status(
    paths: &Paths,
    bind: Option<IpAddr>,
    message_id: Option<String>,
    json: bool,
) -> anyhow::Result<Status> {
    // The configuration is optional here: only timeouts and the local
    // address come from it.
    let mut config = match Config::load(&paths.config) {
        Ok(config) => config,
        Err(e) if e.is::<ConfigMissing>() => Config::default(),
        Err(e) => return Err(e),
    };
    apply_bind(&mut config, bind)?;
    let state = StateDir::open(&paths.state_dir)?;
    let keep_days = config.agent.forget_ended_after_days;
    state.forget_ended(unix_ms(), keep_days)?;
    let mut records: Vec<LeakRecord> = match &message_id {
        Some(id) => vec![state.load(id)?],
        None => {
            let (records, errors) = state.list()?;
            for e in errors {
                eprintln!("leak: {e}");
            }
            records
        }
    };
    let mut notes = Vec::new();
    // What ends here: summaries for the listing, ids to drop from it.
    let mut ended_now: Vec<EndedRecord> = Vec::new();
    let mut ended_ids: Vec<String> = Vec::new();
    // A running agent fetches its mailbox itself, on its own schedule: a
    // fetch from here would say when a receipt is awaited. The mailboxes
    // of other sent leaks (`--direct`, or the agent's while it is stopped)
    // are fetched now; a leak not sent yet has none.
    let agent = handoff::agent_status(state.root());
    let with_agent = |r: &LeakRecord| {
        agent
            .as_ref()
            .is_some_and(|a| a.outbox.iter().any(|q| q.message_id == r.message_id))
    };
    let fetchable = |r: &LeakRecord| r.is_pending() && !r.attempts.is_empty() && !with_agent(r);
    if records.iter().any(fetchable) {
        let timeout = Duration::from_secs(config.network.connect_timeout_secs);
        runtime()?.block_on(async {
            let peer = config.network.peer()?;
            for record in records.iter().filter(|r| fetchable(r)) {
                let found = receipts::poll(&peer, record, timeout).await;
                if let Some(outcome) = found.outcome {
                    ended_now.push(state.end(
                        record,
                        Finished::Receipt { receipt: outcome },
                        unix_ms(),
                    )?);
                    ended_ids.push(record.message_id.clone());
                    continue;
                }
                let last_ms = record
                    .attempts
                    .iter()
                    .filter(|a| a.sent)
                    .map(|a| a.sent_at_ms + a.path_delay_ms)
                    .max()
                    .unwrap_or(record.created_at_ms);
                if unix_ms().saturating_sub(last_ms) > MAILBOX_TTL_MS {
                    ended_now.push(state.end(record, Finished::NoReceipt, unix_ms())?);
                    ended_ids.push(record.message_id.clone());
                } else if !found.errors.is_empty() {
                    notes.push(format!(
                        "{}: {}",
                        record.message_id,
                        found.errors.join("; ")
                    ));
                }
            }
            anyhow::Ok(())
        })?;
    }
    records.retain(|r| !ended_ids.contains(&r.message_id));
    // One leak asked for: only what became of it here. The listing: every
    // summary still kept.
    let ended = match &message_id {
        Some(_) => ended_now,
        None => {
            // The agent may have ended a listed leak since the listing
            // (the fetches above take a while): drop what is no longer
            // pending just before reading the summaries, so that one leak
            // is not shown both pending and ended.
            let still = state.ids()?;
            records.retain(|r| still.contains(&r.message_id));
            let (ended, errors) = state.list_ended()?;
            for e in errors {
                eprintln!("leak: {e}");
            }
            ended.into_iter().map(|(_, summary)| summary).collect()
        }
    };
    if json {
        let list: Vec<serde_json::Value> = records
            .iter()
            .map(record_json)
            .chain(ended.iter().map(ended_json))
            .collect();
        match message_id {
            Some(_) => println!("{}", list.into_iter().next().unwrap_or_default()),
            None => println!("{}", serde_json::Value::Array(list)),
        }
    } else {
        if let Some(agent) = &agent {
            handoff::print_agent(agent);
        }
        let conversations = leak_client::threads::Threads::open(state.root())
            .and_then(|t| t.list())
            .map(|(threads, _)| threads)
            .unwrap_or_default();
        if message_id.is_none() && !conversations.is_empty() {
            let answers: usize = conversations.iter().map(|t| t.answers.len()).sum();
            println!(
                "Conversations: {} ({answers} answer(s) fetched); `leak inbox` shows them",
                conversations.len()
            );
        }
        if records.is_empty() && ended.is_empty() {
            println!("No leaks sent yet.");
        }
        let now = unix_ms();
        if !records.is_empty() {
            println!(
                "{:<32} {:>8} {:<24} {:<16} {:>3}  STATE",
                "MESSAGE ID", "AGE", "TO", "EXIT", "TRY"
            );
        }
        for r in &records {
            println!(
                "{:<32} {:>8} {:<24} {:<16} {:>3}  {}",
                r.message_id,
                format_age(now.saturating_sub(r.created_at_ms) / 1000),
                r.recipient,
                r.exit.domain,
                r.attempts.iter().filter(|a| a.sent).count(),
                agent
                    .as_ref()
                    .and_then(|a| handoff::queued_line(a, r))
                    .unwrap_or_else(|| state_line(r))
            );
        }
        if !ended.is_empty() {
            println!("Ended (listed for {keep_days} day(s), without message ids, exits or times):");
            println!("{:<10}  {:<24}  OUTCOME", "ENDED", "TO");
            for e in &ended {
                println!(
                    "{:<10}  {:<24}  {}",
                    day_to_date(e.ended_day),
                    e.recipient,
                    ended_line(e)
                );
            }
        }
    }
    for note in notes {
        eprintln!("leak: cannot fetch a receipt yet for {note}");
    }
    let waiting = records
        .iter()
        .filter(|r| r.is_pending() && r.attempts.is_empty())
        .count();
    if agent.is_none() && waiting > 0 {
        eprintln!(
            "leak: {waiting} leak(s) wait in the agent's outbox: start the agent (`leak agent`, or `systemctl --user start leak-agent`) to send them"
        );
    }
    Ok(Status::Ok)
}

/// `outcome`, `rule` and `reason` of the JSON output.
fn outcome_fields(result: Option<&Finished>) -> (String, Option<String>, Option<String>) {
    match result {
        None => ("pending".to_owned(), None, None),
        Some(Finished::NoReceipt) => ("no_receipt".to_owned(), None, None),
        Some(Finished::Lost) => ("lost".to_owned(), None, None),
        Some(Finished::Receipt { receipt }) => match receipt {
            Outcome::Refused { rule, reason } => (
                "refused".to_owned(),
                Some(rule.clone()),
                Some(reason.clone()),
            ),
            other => (outcome_name(other).to_owned(), None, None),
        },
    }
}

fn record_json(record: &LeakRecord) -> serde_json::Value {
    let (outcome, rule, reason) = outcome_fields(record.outcome.as_ref().map(|o| &o.result));
    json!({
        "message_id": record.message_id,
        "recipient": record.recipient,
        "relationship": record.relationship,
        "exit": record.exit.domain,
        "created_at_ms": record.created_at_ms,
        "attempts": record.attempts.iter().filter(|a| a.sent).count(),
        "outcome": outcome,
        "rule": rule,
        "reason": reason,
        "finished_at_ms": record.outcome.as_ref().map(|o| o.at_ms),
    })
}

/// An ended leak: only what its summary keeps (`message_id` is null).
fn ended_json(ended: &EndedRecord) -> serde_json::Value {
    let (outcome, rule, reason) = outcome_fields(Some(&ended.result));
    json!({
        "message_id": null,
        "recipient": ended.recipient,
        "outcome": outcome,
        "rule": rule,
        "reason": reason,
        "ended_on": day_to_date(ended.ended_day),
    })
}

/// The outcome column of an ended leak.
fn ended_line(ended: &EndedRecord) -> String {
    match &ended.result {
        Finished::NoReceipt => "failed: no receipt".to_owned(),
        Finished::Lost => "not sent: lost in a restart".to_owned(),
        Finished::Receipt { receipt } => describe(receipt, "the exit").1,
    }
}
