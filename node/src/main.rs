//! `leak-node`: run a Leak relay.
//!
//! ```text
//! leak-node init --data-dir DIR --authority HEX... [--roster FILE] [--listen ADDR]... [--bootstrap ADDR]... [--config FILE]
//! leak-node run --config FILE [--set section.key=value]... [--listen ADDR]... [--bootstrap ADDR]...
//! leak-node id --config FILE
//! leak-node queue --config FILE [counts | list | retry [ID] | purge (ID | --all) | pause | resume | providers] [--json]
//! leak-node dkim-keys --domain DOMAIN --dir DIR [--selector NAME] [--ip ADDR]...
//! leak-node policy keygen --out FILE
//! leak-node policy sign --key FILE [--key FILE]... [--add-to SIGNED] TOML --out SIGNED
//! leak-node policy verify SIGNED (--config FILE | --trusted-key HEX... [--threshold N])
//! leak-node policy show [--config FILE] [--file SIGNED] [--toml]
//! leak-node policy eval [--data DIR] [--train-data DIR] [--fixtures DIR] [--policy TOML]
//! leak-node authority keygen --out FILE
//! leak-node authority admit --roster TOML --node ID --roles relay[,exit] --family NAME
//! leak-node authority remove --roster TOML --node ID
//! leak-node authority sign --roster TOML --key FILE [--key FILE]... [--valid-hours N] --out SIGNED
//! leak-node authority cosign --key FILE [--key FILE]... SIGNED
//! leak-node authority show SIGNED [--config FILE | --authority HEX... [--threshold N]]
//! ```

mod authority_cli;
mod policy_cli;
mod signing_key;

use std::{path::PathBuf, process::ExitCode};

use authority_cli::{AuthorityAction, authority_command};
use policy_cli::{PolicyAction, policy_command};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use leak_node::{Config, Identity, StartOptions};
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
        /// A directory authority's public key, 64 hex digits (repeatable;
        /// at least one): the node admits only the nodes of a roster they
        /// signed.
        #[arg(long = "authority", value_name = "HEX")]
        authorities: Vec<String>,
        /// How many of the authorities must have signed a roster.
        #[arg(long, default_value_t = 1)]
        authority_threshold: usize,
        /// A signed roster file to take (re-read when it changes).
        #[arg(long, value_name = "FILE")]
        roster: Option<PathBuf>,
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
    /// Make an exit's DKIM keys (RSA-2048 and Ed25519, mode 0600) and print
    /// the settings that use them and the DNS records to publish (DKIM,
    /// SPF, DMARC, reverse DNS).
    DkimKeys {
        /// The exit's mail domain (`exit.domain`).
        #[arg(long)]
        domain: String,
        /// Where to write the keys (never over existing ones).
        #[arg(long)]
        dir: PathBuf,
        /// The RSA key's selector; the Ed25519 one is SELECTOR-ed25519.
        #[arg(long, default_value = "leak2026")]
        selector: String,
        /// An address the exit's mail server sends from, for SPF
        /// (repeatable; without one, SPF names the domain's MX hosts).
        #[arg(long)]
        ip: Vec<std::net::IpAddr>,
    },
    /// Print the Postfix settings of the exit's own mail server (direct
    /// delivery with DANE, delivery notifications, its domain's mail handed
    /// to the exit over LMTP) and the exit settings that go with them.
    PostfixConfig {
        /// The exit's config file (its domain, From and inbound address).
        #[arg(long, env = "LEAK_CONFIG")]
        config: PathBuf,
        /// The mail server's host name (its address's reverse DNS);
        /// default mail.DOMAIN.
        #[arg(long)]
        hostname: Option<String>,
    },
    /// The shared moderation policy: maintainer keys, signing, checking,
    /// what this node enforces, and how well it does.
    Policy {
        /// What to do.
        #[command(subcommand)]
        action: PolicyAction,
    },
    /// The directory authority's tools: keys, admitting and removing nodes,
    /// signing rosters.
    Authority {
        /// What to do.
        #[command(subcommand)]
        action: AuthorityAction,
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
    /// restart. With --provider, only to that provider, until `resume
    /// --provider` (kept across restarts).
    Pause {
        /// gmail, microsoft, yahoo or other.
        #[arg(long)]
        provider: Option<String>,
    },
    /// Deliver again after `pause`, or to a provider paused by its
    /// complaint rate or by `pause --provider`.
    Resume {
        /// gmail, microsoft, yahoo or other.
        #[arg(long)]
        provider: Option<String>,
    },
    /// Per destination provider, over the complaint window: leaks
    /// delivered, complaints, bounces, the complaint rate, and whether
    /// delivery is paused.
    Providers,
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
    directory: (Vec<String>, usize, Option<PathBuf>),
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
    let (authorities, threshold, roster) = directory;
    config.directory.authorities = authorities;
    config.directory.authority_threshold = threshold;
    if let Some(roster) = roster {
        let roster = std::path::absolute(&roster)
            .with_context(|| format!("cannot resolve {}", roster.display()))?;
        config.directory.roster_file = roster.display().to_string();
    }
    config.validate()?;
    config.check_runnable()?;
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
    println!(
        "node id: {} (a directory authority admits it: leak-node authority admit --node {} …)",
        hex::encode(identity.node_id().0),
        hex::encode(identity.node_id().0)
    );
    println!("identity: {}", config.identity_path().display());
    println!("config: {}", config_path.display());
    println!(
        "run it with: leak-node run --config {}",
        config_path.display()
    );
    Ok(())
}

/// Loads the configuration, then runs the node on a runtime of
/// `limits.io_threads` threads.
fn run(args: RunArgs) -> anyhow::Result<()> {
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
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.limits.runtime_threads(cores))
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let filter = log_filter(&config.log.level)?;
    // Logs go to stderr (stdout carries the machine-readable lines below),
    // coloured only on a terminal.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match leak_node::open_files::ensure(config.limits.max_connections) {
        Ok(files) if files.now < files.needed => tracing::warn!(
            limit = files.now,
            needed = files.needed,
            "the open-files limit is below what limits.max_connections needs: connections past it will fail (raise the hard limit, e.g. LimitNOFILE in the service unit)"
        ),
        Ok(files) if files.now > files.was => {
            tracing::info!(
                from = files.was,
                to = files.now,
                "raised the open-files limit"
            );
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the open-files limit"),
    }
    let identity = Identity::load(&config.identity_path())?;
    let stop = stop_signals()?;
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
        () = stop => None,
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
        QueueAction::Pause { provider } => Request::Pause { provider },
        QueueAction::Resume { provider } => Request::Resume { provider },
        QueueAction::Providers => Request::Providers,
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
        Response::Providers { providers } => {
            println!(
                "{:<10}  {:>9}  {:>10}  {:>7}  {:>9}  {:>13}  paused",
                "provider", "delivered", "complaints", "bounced", "rate", "today/cap"
            );
            for p in providers {
                let paused = match (p.paused_since_ms, p.paused_automatically) {
                    (None, _) => "no".to_owned(),
                    (Some(_), true) => "yes (complaint rate)".to_owned(),
                    (Some(_), false) => "yes (operator)".to_owned(),
                };
                let today = match p.daily_cap {
                    Some(cap) => format!("{}/{cap}", p.started_today),
                    None => format!("{}/-", p.started_today),
                };
                println!(
                    "{:<10}  {:>9}  {:>10}  {:>7}  {:>8.3}%  {today:>13}  {paused}",
                    p.provider,
                    p.delivered,
                    p.complaints,
                    p.bounced,
                    p.complaint_rate * 100.0
                );
            }
        }
        Response::Done { count } => match req {
            Request::Pause { provider: None } => println!("delivery paused"),
            Request::Resume { provider: None } => println!("delivery resumed"),
            Request::Pause { provider: Some(p) } => println!("delivery to {p} paused"),
            Request::Resume { provider: Some(p) } => println!("delivery to {p} resumed"),
            _ => println!("{count} leak(s)"),
        },
        Response::Error { message } => anyhow::bail!("{message}"),
    }
    Ok(())
}

/// Catches SIGTERM and SIGINT from now on; the future resolves at the first.
/// Installed before the node prints that it started, so a supervisor (or a
/// test) that stops it as soon as it read those lines gets a clean shutdown,
/// not the default action's immediate death.
fn stop_signals() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
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
            authorities,
            authority_threshold,
            roster,
        } => init(
            data_dir,
            config,
            listen,
            bootstrap,
            family,
            metrics,
            epoch_secs,
            exit_domain,
            (authorities, authority_threshold, roster),
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
        Command::Authority { action } => authority_command(action),
        Command::DkimKeys {
            domain,
            dir,
            selector,
            ip,
        } => dkim_keys(&domain, &dir, &selector, &ip),
        Command::PostfixConfig { config, hostname } => postfix_config(&config, hostname),
        Command::Id { config } => Config::load(&config, &[])
            .map_err(anyhow::Error::from)
            .and_then(|c| Identity::load(&c.identity_path()).map_err(anyhow::Error::from))
            .map(|id| println!("{}", id.peer_id())),
        Command::Run(args) => run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("leak-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn postfix_config(config: &std::path::Path, hostname: Option<String>) -> anyhow::Result<()> {
    let mut config = Config::load(config, &[])?;
    // The printed settings choose the smtp transport.
    config.exit.transport = leak_node::config::Transport::Smtp;
    let domain = config.exit.domain.trim().to_owned();
    anyhow::ensure!(
        !domain.is_empty(),
        "exit.domain is not set in the config file: the mail server sends from it"
    );
    let inbound = config.exit_inbound_addr()?.context(
        "exit.inbound_listen is empty: set a loopback address:port for the exit's inbound mail",
    )?;
    let from = config.exit_from();
    let abuse = config.exit_abuse_address();
    let local = |address: &str| address.rsplit_once('@').map_or("", |(l, _)| l).to_owned();
    let hostname = hostname.unwrap_or_else(|| format!("mail.{domain}"));
    let printed = leak_node::exit::postfix_config::render(
        &domain,
        &hostname,
        inbound,
        &local(&from),
        &local(&abuse),
    );
    println!("{}", printed.main_cf);
    print!("{}", printed.exit_settings);
    Ok(())
}

fn dkim_keys(
    domain: &str,
    dir: &std::path::Path,
    selector: &str,
    ips: &[std::net::IpAddr],
) -> anyhow::Result<()> {
    use leak_node::exit::dkim_keys::{DkimKeys, config_lines, dns_records};
    anyhow::ensure!(
        !domain.trim().is_empty() && !domain.contains(char::is_whitespace),
        "--domain must be a domain name"
    );
    anyhow::ensure!(
        !selector.is_empty()
            && selector
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-'),
        "--selector may hold letters, digits and '-' only"
    );
    let keys = DkimKeys::generate()?;
    let (rsa, ed25519) = keys.write(dir)?;
    println!(
        "# Keys written to {} and {}.",
        rsa.display(),
        ed25519.display()
    );
    println!("# In the exit's config file:\n");
    println!("{}", config_lines(selector, &rsa, &ed25519));
    println!("# DNS records to publish for {domain}:\n");
    print!("{}", dns_records(domain, selector, &keys, ips));
    Ok(())
}
