//! Scale benchmark: real processes, real always-on senders, the shipped
//! defaults (issue 12's "real processes, real scale").
//!
//! ```text
//! cargo build --release -p leak-node --bins
//! cargo run --release -p leak-tests --example scale_bench -- [--senders N] [--minutes M] [--load K] [--json FILE] [--no-answers]
//! ```
//! (`--load K` makes each agent send and poll K times as often as the
//! defaults: the nodes then carry the packets and polls of `N * K`
//! always-on senders at the default rate, which two cores cannot run as
//! separate agents; their directory fetches are K times as frequent too.
//! Every per-sender figure is then per one of those `N * K` senders. What
//! is not multiplied is the connections: `N` guard links, not `N * K`.)
//! (`--no-answers` sends every leak as `leak send --no-answers` does, for
//! comparing what answerable leaks cost the federation; the defaults send
//! them answerable.)
//! (`BENCH_SCALE=1 scripts/bench.sh` does both and prints the table.)
//!
//! # Set-up
//!
//! Twenty `leak-node` processes on loopback (release build, own data
//! directories): 18 relays and 2 exits delivering over SMTP to an SMTP
//! server inside this process that accepts at once
//! ([`leak_tests::mail::start_instant_smtp`]). Then `--senders` (300)
//! always-on agents: [`leak_client::agent::run::run`], the code `leak agent`
//! runs, each with its own configuration (the defaults, but the bootstrap
//! address: one of the twenty nodes, in turn), state directory, guard, mailbox and libp2p peer, all in this
//! process. Every node and agent uses the shipped defaults: mixing delays,
//! cover rates, polls, relay loops, receipt delays. The agents start 50 a
//! second, and the run waits until every one has its guard.
//!
//! After five minutes of warm-up (the packets' pipeline must be full: a
//! packet reaches its fourth hop three mixing delays, about three minutes,
//! after its agent sent it, so a shorter warm-up counts fewer packets, and
//! less CPU, than the steady state has), leaks are handed to random agents through
//! their sockets (what `leak send` does) as a Poisson process of 10 a
//! minute in all, for `--minutes` (30); then the run waits until every leak
//! was delivered (at most 30 minutes more).
//!
//! # What is measured (over the sending period)
//!
//! - every node's CPU seconds and resident memory (`/proc`), and the
//!   packets it received (its metrics);
//! - node CPU per sender above the idle cost (CPU milliseconds per sender-hour) and memory per
//!   sender (the nodes' resident memory at the end of the period minus
//!   before the agents started, divided by the senders);
//! - the idle federation's own CPU (relay loops, gossip, timers), over
//!   120 s before the agents start (40 s after the nodes started, once the
//!   directory has converged);
//! - packets processed per CPU second (all nodes' packets over all their
//!   CPU, and over their CPU above the idle cost), and from the latter how
//!   many always-on senders one core carries: that rate over the packets
//!   one sender's traffic makes the federation process per second (all
//!   hops);
//! - as a cross-check that needs no idle interval, the least-squares slope
//!   of the nodes' CPU on the packets they processed (one point per node):
//!   the CPU one more packet costs, and the senders per core it implies;
//! - bytes per sender per day: the kernel's counters (`ss -tinp`:
//!   `bytes_sent` + `bytes_received`) of this process's TCP connections,
//!   which are the agents' (guard links and directory fetches), divided by
//!   the senders and scaled to a day;
//! - delivery latency: from handing a leak to its agent to the SMTP server
//!   accepting its email, p50 and p99.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use leak_client::{
    agent::ipc::{self, Request, Response},
    config::Config,
    state::StateDir,
};
use leak_tests::{
    mail::{Accepted, start_instant_smtp},
    process::{
        RunningProcess, cpu_secs, metric, peak_rss_mib, rss_mib, scrape_metrics, start_node,
    },
};
use libp2p::Multiaddr;
use rand::RngExt as _;

/// Relays and exits.
const RELAYS: usize = 18;
const EXITS: usize = 2;
/// Leaks per minute, in all.
const LEAKS_PER_MINUTE: f64 = 10.0;
/// Before the first leak: agents fetch the directory, choose guards, start
/// their clocks, and their packets reach every hop (four hops of a minute
/// on average: the last hop's arrivals are steady after about four
/// minutes; a minute of warm-up left the run's first minutes short of
/// packets at the later hops: 0.54 packets per sender per second counted
/// over 15 minutes, against 0.595 in the steady state).
const WARM_UP: Duration = Duration::from_secs(300);
/// How long the agents may take to find their guards.
const READY_WAIT: Duration = Duration::from_secs(600);
/// The quiet interval that measures the federation's cost without senders.
const IDLE: Duration = Duration::from_secs(120);
/// The longest wait for the last leaks after the sending period.
const DRAIN: Duration = Duration::from_secs(30 * 60);
/// The targets (issue 12).
const TARGET_MB_PER_DAY: f64 = 60.0;
const TARGET_SENDERS_PER_CORE: f64 = 10_000.0;
const TARGET_P50_MIN: f64 = 5.0;
const TARGET_P99_MIN: f64 = 20.0;

const TEXT: &str = "The scale benchmark says hello: one leak among many, carried by the \
                    federation's defaults.";

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Bytes sent and received over this process's TCP connections, from the
/// kernel (`ss -tinpH`: each socket's line, then its counters' line).
fn own_tcp_bytes() -> u64 {
    let output = Command::new("ss")
        .args(["-tinpH"])
        .output()
        .expect("ss (iproute2) runs");
    let text = String::from_utf8_lossy(&output.stdout);
    let needle = format!("pid={},", std::process::id());
    let mut total = 0u64;
    let mut ours = false;
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) {
            ours = line.contains(&needle);
            continue;
        }
        if !ours {
            continue;
        }
        for word in line.split_whitespace() {
            for key in ["bytes_sent:", "bytes_received:"] {
                if let Some(n) = word.strip_prefix(key).and_then(|n| n.parse::<u64>().ok()) {
                    total += n;
                }
            }
        }
    }
    total
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Starts the twenty nodes.
fn start_federation(dir: &Path, smtp_port: u16) -> Vec<RunningProcess> {
    let first = start_node(dir, "relay-0", None, true, &[], &[]);
    let bootstrap = first.started.dial_addr();
    let mut nodes = vec![first];
    for i in 1..RELAYS {
        nodes.push(start_node(
            dir,
            &format!("relay-{i}"),
            Some(&bootstrap),
            true,
            &[],
            &[],
        ));
    }
    let smtp_url = format!("exit.smtp_url=\"smtp://127.0.0.1:{smtp_port}\"");
    for i in 0..EXITS {
        nodes.push(start_node(
            dir,
            &format!("exit-{i}"),
            Some(&bootstrap),
            true,
            &["--exit-domain", &format!("exit{i}.bench.test")],
            &[
                "--set",
                "exit.transport=\"smtp\"",
                "--set",
                &smtp_url,
                "--set",
                "exit.http_listen=\"127.0.0.1:0\"",
                // The bench's SMTP server sends no delivery notifications,
                // and there is no outside DNS: a 250 gives `Accepted`.
                "--set",
                "exit.inbound_listen=\"\"",
                "--set",
                "exit.dns_resolver=\"off\"",
            ],
        ));
    }
    nodes
}

/// One node's counters at one moment.
#[derive(Clone, Default)]
struct Sample {
    cpu: f64,
    rss: f64,
    received: f64,
    /// Packets held for their mixing delay at that moment.
    held: f64,
    /// Packets dropped, by reason.
    dropped: std::collections::BTreeMap<String, f64>,
}

fn sample(node: &RunningProcess) -> Sample {
    let text = scrape_metrics(node.started.metrics_addr()).unwrap_or_default();
    let received = metric(&text, "leak_packets_received_total", None);
    let dropped = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("leak_packets_dropped_total{")?;
            let (labels, value) = rest.rsplit_once(' ')?;
            let reason = labels.split("reason=\"").nth(1)?.split('"').next()?;
            Some((reason.to_owned(), value.parse::<f64>().ok()?))
        })
        .collect();
    Sample {
        cpu: cpu_secs(node.process.pid()),
        rss: rss_mib(node.process.pid()),
        received,
        held: metric(&text, "leak_held_packets", None),
        dropped,
    }
}

/// Packets the nodes dropped between two samples each, by reason.
fn drops_between(before: &[Sample], after: &[Sample]) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    for (b, a) in before.iter().zip(after) {
        for (reason, value) in &a.dropped {
            let earlier = b.dropped.get(reason).copied().unwrap_or(0.0);
            *out.entry(reason.clone()).or_insert(0.0) += value - earlier;
        }
    }
    out.retain(|_, v| *v > 0.0);
    out
}

/// Starts agent `i` in `dir/agent-i` as a task of this process.
fn start_agent(
    dir: &Path,
    i: usize,
    bootstrap: &Multiaddr,
    load: u64,
) -> (PathBuf, tokio::task::JoinHandle<()>) {
    let root = dir.join(format!("agent-{i}"));
    std::fs::create_dir_all(&root).unwrap();
    let mut config = Config::default();
    config.network.bootstrap = vec![bootstrap.clone()];
    config.directory.authorities = vec![leak_tests::test_authority()];
    // Each person's agent serves its page on its own machine's port 7390;
    // here the agents share one machine, so each takes a free port (the
    // page stays on, as shipped).
    config.ui.listen = "127.0.0.1:0".to_owned();
    // `--load K`: the packets, polls and directory fetches of K senders
    // at the defaults.
    config.cover.send_interval_ms = (config.cover.send_interval_ms / load).max(1);
    config.cover.poll_interval_ms = (config.cover.poll_interval_ms / load).max(1);
    config.agent.directory_refresh_secs = (config.agent.directory_refresh_secs / load).max(1);
    let state = StateDir::open(&root).unwrap();
    let policy = config.policy.load().unwrap();
    // The agent's future is not `Send` (its randomness is thread-local):
    // the agents share this process's local task set, as one `leak agent`
    // runs on its own runtime.
    let handle = tokio::task::spawn_local(async move {
        if let Err(e) = leak_client::agent::run::run(config, state, policy).await {
            eprintln!("scale_bench: agent {i} stopped: {e:#}");
        }
    });
    (root, handle)
}

/// Waits until every agent reports a guard (so it has a directory and
/// sends), at most `wait`; returns how many do.
async fn wait_for_guards(
    agents: &[(PathBuf, tokio::task::JoinHandle<()>)],
    wait: Duration,
) -> usize {
    let deadline = Instant::now() + wait;
    let mut waiting: Vec<PathBuf> = agents.iter().map(|(root, _)| root.clone()).collect();
    while !waiting.is_empty() && Instant::now() < deadline {
        let roots = std::mem::take(&mut waiting);
        waiting = tokio::task::spawn_blocking(move || {
            roots
                .into_iter()
                .filter(|root| {
                    !matches!(
                        ipc::call(root, Request::Status, Duration::from_secs(10)),
                        Ok(Response::Status(status)) if status.guard.is_some()
                    )
                })
                .collect()
        })
        .await
        .unwrap_or_default();
        if !waiting.is_empty() {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    agents.len() - waiting.len()
}

/// Hands a leak to the agent at `root`; `Some` when it was queued.
async fn hand_over(root: PathBuf, recipient: String) -> bool {
    let no_answers = std::env::args().any(|a| a == "--no-answers");
    tokio::task::spawn_blocking(move || {
        let request = Request::Send {
            recipient,
            relationship: "friend".to_owned(),
            text: TEXT.to_owned(),
            within_secs: None,
            hops: None,
            thread: None,
            no_answers,
        };
        matches!(
            ipc::call(&root, request, Duration::from_secs(60)),
            Ok(Response::Queued { .. })
        )
    })
    .await
    .unwrap_or(false)
}

/// Waits until every handed-over leak was accepted by the SMTP server or
/// `deadline` passes; returns the latencies in minutes.
async fn latencies(
    handed: &[(String, Instant)],
    accepted: &Accepted,
    deadline: Instant,
) -> Vec<f64> {
    loop {
        let done = handed
            .iter()
            .filter(|(r, _)| accepted.get(r).is_some())
            .count();
        if done == handed.len() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let mut out: Vec<f64> = handed
        .iter()
        .filter_map(|(r, at)| {
            accepted
                .get(r)
                .map(|t| t.accepted.saturating_duration_since(*at).as_secs_f64() / 60.0)
        })
        .collect();
    out.sort_by(f64::total_cmp);
    out
}

#[tokio::main]
async fn main() {
    tokio::task::LocalSet::new().run_until(run()).await;
}

async fn run() {
    let senders: usize = arg("--senders").and_then(|s| s.parse().ok()).unwrap_or(300);
    let minutes: f64 = arg("--minutes")
        .and_then(|s| s.parse().ok())
        .unwrap_or(30.0);
    let load: u64 = arg("--load")
        .and_then(|s| s.parse().ok())
        .filter(|k| *k >= 1)
        .unwrap_or(1);
    let json_path = arg("--json");
    let begun = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (smtp_port, accepted) = start_instant_smtp().await;

    // Blocking calls on this thread are fine while no agent runs yet (and
    // brief ones, like a metrics scrape, afterwards).
    let mut nodes = start_federation(dir.path(), smtp_port);
    // Each agent bootstraps from one node, the agents spread over all
    // twenty (as the agents of many people would use different nodes): a
    // single bootstrap node refuses connections past its limit.
    let bootstraps: Vec<Multiaddr> = nodes.iter().map(|n| n.started.dial_addr()).collect();
    eprintln!(
        "scale_bench: {RELAYS} relays and {EXITS} exits started; letting the directory converge"
    );
    tokio::time::sleep(Duration::from_secs(40)).await;
    // The federation's own cost without senders (relay loops, directory
    // gossip, timers), measured over a quiet interval, so that the cost of
    // the senders' traffic can be told apart from it.
    let idle: Vec<Sample> = nodes.iter().map(sample).collect();
    tokio::time::sleep(IDLE).await;
    let idle_end: Vec<Sample> = nodes.iter().map(sample).collect();
    let idle_cpu_per_sec: f64 = idle
        .iter()
        .zip(&idle_end)
        .map(|(b, a)| a.cpu - b.cpu)
        .sum::<f64>()
        / IDLE.as_secs_f64();

    // Started 50 a second, as agents of many people would, not all at one
    // instant on the bootstrap node; then each must have its guard.
    let mut agents = Vec::new();
    for i in 0..senders {
        agents.push(start_agent(
            dir.path(),
            i,
            &bootstraps[i % bootstraps.len()],
            load,
        ));
        if i % 25 == 24 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let ready = wait_for_guards(&agents, READY_WAIT).await;
    eprintln!(
        "scale_bench: {senders} agents started, {ready} with a guard; warming up for {WARM_UP:?}"
    );
    assert!(
        ready == senders,
        "only {ready} of {senders} agents found a guard in {READY_WAIT:?}"
    );
    tokio::time::sleep(WARM_UP).await;

    let bytes_before = own_tcp_bytes();
    let own_cpu_before = cpu_secs(std::process::id());
    let before: Vec<Sample> = nodes.iter().map(sample).collect();
    let started = Instant::now();
    let period = Duration::from_secs_f64(minutes * 60.0);
    let mut handed: Vec<(String, Instant)> = Vec::new();
    let mut refused = 0usize;
    let mut rng = rand::rng();
    let mut next = started;
    while next < started + period {
        tokio::time::sleep_until(next.into()).await;
        let recipient = format!("reader{}@example.com", handed.len() + refused);
        let root = agents[rng.random_range(0..senders)].0.clone();
        let at = Instant::now();
        if hand_over(root, recipient.clone()).await {
            handed.push((recipient, at));
        } else {
            refused += 1;
        }
        let gap = -(1.0 - rng.random::<f64>()).ln() * 60.0 / LEAKS_PER_MINUTE;
        next += Duration::from_secs_f64(gap);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after: Vec<Sample> = nodes.iter().map(sample).collect();
    let own_cpu = cpu_secs(std::process::id()) - own_cpu_before;
    let bytes_after = own_tcp_bytes();
    eprintln!(
        "scale_bench: {} leaks handed over ({refused} not queued); waiting for the last",
        handed.len()
    );
    let lat = latencies(&handed, &accepted, Instant::now() + DRAIN).await;

    for (root, _) in &agents {
        let root = root.clone();
        let _ = tokio::task::spawn_blocking(move || {
            ipc::call(&root, Request::Stop, Duration::from_secs(10))
        })
        .await;
    }
    for (_, handle) in agents {
        let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
    }
    let peaks: Vec<f64> = nodes
        .iter()
        .map(|n| peak_rss_mib(n.process.pid()))
        .collect();
    for node in &mut nodes {
        node.process.terminate(leak_tests::process::TERM_GRACE);
    }

    // The figures.
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    // The senders at the default rate whose traffic the nodes carried.
    let n = (senders as u64 * load) as f64;
    let agents_cpu_share = own_cpu / elapsed * 100.0;
    let relay_cpu: f64 = before.iter().zip(&after).map(|(b, a)| a.cpu - b.cpu).sum();
    let packets: f64 = before
        .iter()
        .zip(&after)
        .map(|(b, a)| a.received - b.received)
        .sum();
    let per_cpu_second = packets / relay_cpu.max(1e-9);
    let mut drops = drops_between(&before, &after);
    // A drop-cover packet ends at its last hop, counted under "cover": its
    // journey's end, not a loss.
    let cover_ended = drops.remove("cover").unwrap_or(0.0);
    let most_held = after.iter().map(|s| s.held).fold(0.0, f64::max);
    let dropped = drops.values().fold(0.0, |sum, n| sum + n);
    let drop_list = if drops.is_empty() {
        "none".to_owned()
    } else {
        drops
            .iter()
            .map(|(r, v)| format!("{r} {v:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // The senders' share: the CPU above the idle federation's.
    let sender_cpu = (relay_cpu - idle_cpu_per_sec * elapsed).max(1e-9);
    let per_sender_cpu_second = packets / sender_cpu;
    let per_sender_per_second = packets / n / elapsed;
    let senders_per_core = per_sender_cpu_second / per_sender_per_second.max(1e-12);
    let cpu_ms_per_sender_hour = sender_cpu * 1000.0 / n / (elapsed / 3600.0);
    // A cross-check that needs no idle interval: across the twenty nodes,
    // the least-squares slope of CPU on packets over the sending period is
    // the CPU one more packet costs (each node's fixed cost is the
    // intercept).
    let per_node: Vec<(f64, f64)> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| {
            (
                (a.received - b.received) / elapsed,
                (a.cpu - b.cpu) / elapsed,
            )
        })
        .collect();
    let (slope, intercept) = least_squares(&per_node);
    let slope_us_per_packet = slope * 1e6;
    let senders_per_core_slope =
        1e6 / slope_us_per_packet.max(1e-9) / per_sender_per_second.max(1e-12);
    let idle_cpu_share = idle_cpu_per_sec / (RELAYS + EXITS) as f64 * 100.0;
    // Where the CPU above idle went: relays or exits (the exits also carry
    // the leaks, a cost per leak that the per-sender figure charges to the
    // senders), and the fit's intercept, each node's CPU share at zero
    // packets under load, against the idle interval's.
    let above_idle = |range: std::ops::Range<usize>| -> f64 {
        range
            .map(|i| {
                (after[i].cpu - before[i].cpu)
                    - (idle_end[i].cpu - idle[i].cpu) / IDLE.as_secs_f64() * elapsed
            })
            .sum::<f64>()
            * 1000.0
            / n
            / (elapsed / 3600.0)
    };
    let relay_ms_per_sender_hour = above_idle(0..RELAYS);
    let exit_ms_per_sender_hour = above_idle(RELAYS..RELAYS + EXITS);
    let intercept_share = intercept * 100.0;
    let rss_idle: f64 = idle.iter().map(|s| s.rss).sum();
    let rss_end: f64 = after.iter().map(|s| s.rss).sum();
    let kib_per_sender = (rss_end - rss_idle) * 1024.0 / n;
    let mb_per_day =
        (bytes_after.saturating_sub(bytes_before)) as f64 / n / elapsed * 86_400.0 / 1e6;
    let (p50, p99) = (percentile(&lat, 50.0), percentile(&lat, 99.0));
    let relay_peak = peaks[..RELAYS].iter().copied().fold(0.0, f64::max);
    let exit_peak = peaks[RELAYS..].iter().copied().fold(0.0, f64::max);
    let mark = |ok: bool| if ok { "yes" } else { "NO" };

    println!();
    println!(
        "Scale: {RELAYS} relays + {EXITS} exits (leak-node processes), {senders} always-on agents{}, \
         {:.0} min of {LEAKS_PER_MINUTE} leaks/min, {cores} cores, {}",
        if load > 1 {
            format!(
                " each sending and polling {load} times as often (the traffic of {n:.0} senders at the defaults)"
            )
        } else {
            String::new()
        },
        elapsed / 60.0,
        if std::env::args().any(|a| a == "--no-answers") {
            "defaults but leaks sent --no-answers"
        } else {
            "defaults"
        }
    );
    println!("| measure | value | target | met |");
    println!("|---|---|---|---|");
    println!("| packets processed per CPU second (all nodes) | {per_cpu_second:.0} | | |");
    println!("| packets per sender per second (all hops) | {per_sender_per_second:.3} | | |");
    println!(
        "| packets the nodes dropped (not counting {cover_ended:.0} drop-cover packets at their last hop) | {dropped:.0} of {packets:.0} ({drop_list}) | | |"
    );
    let limits = leak_node::Config::defaults(PathBuf::new()).limits;
    println!(
        "| most packets one node held at the end of the period | {most_held:.0} (limits.held_packets: {}, the first {} in memory) | | |",
        limits.held_packets, limits.held_in_memory
    );
    println!(
        "| always-on senders one core carries | {senders_per_core:.0} | >= {TARGET_SENDERS_PER_CORE:.0} | {} |",
        mark(senders_per_core >= TARGET_SENDERS_PER_CORE)
    );
    println!("| node CPU per sender (above idle) | {cpu_ms_per_sender_hour:.1} ms per hour | | |");
    println!(
        "| idle federation's CPU (per node, {:.0} s before the agents) | {idle_cpu_share:.2} % of a core | | |",
        IDLE.as_secs_f64()
    );
    println!(
        "| cross-check: CPU per packet, slope over the {} nodes | {slope_us_per_packet:.0} us, so {senders_per_core_slope:.0} senders per core | | |",
        RELAYS + EXITS
    );
    println!(
        "| node CPU per sender above idle, relays / exits | {relay_ms_per_sender_hour:.1} / {exit_ms_per_sender_hour:.1} ms per hour | | |"
    );
    println!(
        "| a node's CPU at zero packets under load (the fit's intercept) | {intercept_share:.2} % of a core (idle: {idle_cpu_share:.2} %) | | |"
    );
    println!(
        "| node memory per sender | {kib_per_sender:.1} KiB (peak RSS: relay {relay_peak:.0} MiB, exit {exit_peak:.0} MiB) | | |"
    );
    println!(
        "| bytes per sender per day | {mb_per_day:.1} MB | <= {TARGET_MB_PER_DAY:.0} MB | {} |",
        mark(mb_per_day <= TARGET_MB_PER_DAY)
    );
    println!(
        "| delivery latency p50 | {p50:.2} min | <= {TARGET_P50_MIN:.0} min | {} |",
        mark(p50 <= TARGET_P50_MIN)
    );
    println!(
        "| delivery latency p99 | {p99:.2} min | <= {TARGET_P99_MIN:.0} min | {} |",
        mark(p99 <= TARGET_P99_MIN)
    );
    println!(
        "| leaks delivered | {} of {} | all | {} |",
        lat.len(),
        handed.len(),
        mark(lat.len() == handed.len())
    );
    println!(
        "(the agents, all in this process, used {agents_cpu_share:.0} % of a core; \
         the run took {:.1} min)",
        begun.elapsed().as_secs_f64() / 60.0
    );

    if let Some(path) = json_path {
        let json = format!(
            "{{\n  \"senders\": {senders},\n  \"load\": {load},\n  \"agents_cpu_percent\": {agents_cpu_share:.1},\n  \"minutes\": {:.1},\n  \"cores\": {cores},\n  \
             \"packets_per_cpu_second\": {per_cpu_second:.1},\n  \"packets_per_sender_cpu_second\": {per_sender_cpu_second:.1},\n  \"idle_node_cpu_percent\": {idle_cpu_share:.3},\n  \"packets_per_sender_second\": {per_sender_per_second:.5},\n  \"packets_dropped\": {dropped:.0},\n  \"cover_ended\": {cover_ended:.0},\n  \"most_held\": {most_held:.0},\n  \
             \"senders_per_core\": {senders_per_core:.0},\n  \"slope_us_per_packet\": {slope_us_per_packet:.1},\n  \"senders_per_core_slope\": {senders_per_core_slope:.0},\n  \"cpu_ms_per_sender_hour\": {cpu_ms_per_sender_hour:.2},\n  \
             \"relay_ms_per_sender_hour\": {relay_ms_per_sender_hour:.2},\n  \"exit_ms_per_sender_hour\": {exit_ms_per_sender_hour:.2},\n  \"intercept_node_cpu_percent\": {intercept_share:.3},\n  \
             \"kib_per_sender\": {kib_per_sender:.2},\n  \"relay_peak_rss_mib\": {relay_peak:.1},\n  \"exit_peak_rss_mib\": {exit_peak:.1},\n  \
             \"mb_per_sender_day\": {mb_per_day:.2},\n  \"latency_p50_min\": {p50:.3},\n  \"latency_p99_min\": {p99:.3},\n  \
             \"delivered\": {},\n  \"handed\": {}\n}}\n",
            elapsed / 60.0,
            lat.len(),
            handed.len()
        );
        std::fs::write(&path, json).unwrap();
    }
}

/// The least-squares line of `y` on `x` over `(x, y)` points: its slope
/// (0 when the `x` do not vary) and its intercept.
fn least_squares(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    (slope, mean_y - slope * mean_x)
}
