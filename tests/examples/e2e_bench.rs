//! End-to-end benchmark: from `leak send` to the SMTP server accepting the
//! email, through three hops on loopback with mixing delays set to zero.
//!
//! ```text
//! cargo build --release -p leak-node -p leak-client --bins
//! cargo run --release -p leak-tests --example e2e_bench -- [--json FILE] [--leaks N] [--commands N] [--batch-gather-ms MS]
//!
//! `--batch-gather-ms` sets every node's `limits.batch_gather_ms` (default
//! 1000: a quiet relay gathers packets for up to a second before it opens
//! them, which dominates these rows at a mixing delay of 0).
//! ```
//! (`scripts/bench.sh` does both and prints the table.)
//!
//! # Set-up
//!
//! Four real `leak-node` processes (release build, own data directories in
//! a temporary directory, loopback TCP): three relays and one exit whose
//! transport is SMTP to a tiny SMTP server in this process. Every path has
//! three hops (entry relay, middle relay, exit); the receipt comes back
//! over two (a relay, then the entry relay's mailbox).
//!
//! The SMTP server answers EHLO, MAIL, RCPT, DATA and the final `.` at once
//! and notes the moment it is about to answer `250` to the `.`: that is
//! "the SMTP server accepted the mail". It runs in this process, so that
//! moment and the moment a leak was started come from one monotonic clock
//! (Postfix's `smtp-sink` would do the same work, but its dump files only
//! say when they were last written, on the file system's clock, read
//! afterwards; here nothing is inferred). Each leak goes to an address of
//! its own (the policy allows 3 leaks per recipient a day), which is how
//! the server tells them apart. The exit's sending rate limits
//! (`exit.max_rate`, 20/s by default, `exit.provider_max_rate`, 5/s to one
//! provider) and its warm-up ramp are lifted, since they would otherwise
//! pace the run rather than measure it.
//!
//! # What is measured
//!
//! 1. The library (`leak-client` and `leak_net::Peer`), warm: one
//!    peer, connected, with the verified directory, sends `--leaks` leaks
//!    (100) one after the other, each the way `leak send` builds it: the
//!    policy check of the text, a fresh route, a reply block, the sealed
//!    packet, handed to the entry relay. Its clock starts before the
//!    policy check and stops when the SMTP server accepts. The anti-abuse
//!    stamp (proof of work at the policy's difficulty) is solved before,
//!    per leak, and timed on its own: with a pre-solved stamp the latency
//!    is the network's and the nodes'; "stamp included" adds each leak's
//!    own solving time. Then the receipt: the mailbox is fetched every 2 ms
//!    until the exit's `Delivered` is there. The first leaks warm up the
//!    links between the nodes and are left out.
//! 2. The whole command, `--commands` times (30): `leak send --json` as a
//!    new process (the release binary), with its config (mixing delay 0)
//!    and state directory: start, config and policy, directory fetch from
//!    the bootstrap relay, exit and route choice, stamp, packet, send,
//!    then waiting for the receipt as the command does (its own polling
//!    schedule). Timed from spawn to the SMTP server's acceptance, and from
//!    spawn to the process's exit with `Delivered`. For comparison, as
//!    many runs of `leak nodes --json`: start, config, directory fetch.
//!
//! Every process shares this machine's cores.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use leak_client::{
    config::Config,
    directory::{self, DirectoryView},
    path::{self, RouteRequest},
    receipts::open_receipt,
    send::unix_ms,
    state::StateDir,
};
use leak_net::{Peer, peer_id_of};
use leak_protocol::{
    MailboxId, MessageId, NodeId, Outcome, Recipient, Relationship,
    payload::Stamp,
    policy::{self, Policy, Verdict},
    seal::{LeakContents, SealedLeak, seal_leak},
};
use leak_tests::{
    mail::{Accepted, Transaction, start_instant_smtp},
    process::start_node,
};
use libp2p::Multiaddr;
use rand::RngExt as _;

/// Leaks of the library measurement.
const LEAKS: usize = 100;
/// Leaks sent first, left out of the library measurement.
const WARM_UP: usize = 10;
/// `leak send` runs.
const COMMANDS: usize = 30;
/// The target: p50 of the library latency, stamp pre-solved.
const TARGET_P50_MS: f64 = 50.0;
/// How long one leak may take before the run fails.
const LEAK_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the library measurement fetches the mailbox for the receipt.
const RECEIPT_POLL: Duration = Duration::from_millis(2);

const TEXT: &str = "The benchmark says hello: this is one leak among many, \
                    measured from the moment it is sent to the moment the mail server takes it.";

// --- The federation ----------------------------------------------------------

/// The client's configuration: the bootstrap relay, mixing delay 0.
fn client_config(bootstrap: &Multiaddr) -> Config {
    let mut config = Config::default();
    config.network.bootstrap = vec![bootstrap.clone()];
    config.directory.authorities = vec![leak_tests::test_authority()];
    config.send.mixing_delay_ms = 0;
    config
}

/// Fetches the directory until it lists every node with its keys.
async fn converged_directory(peer: &Peer, config: &Config, state: &StateDir) -> DirectoryView {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(view) = directory::load(peer, config, state, unix_ms() / 1000).await {
            let exits = view.nodes.iter().filter(|d| d.roles.exit).count();
            if view.nodes.len() == 4 && exits == 1 {
                return view;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the directory never listed the 4 nodes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// --- Measurements ------------------------------------------------------------

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Milliseconds, sorted.
#[derive(Default, Clone)]
struct Series(Vec<f64>);

impl Series {
    fn push(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64() * 1e3);
    }
    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v
    }
    fn p(&self, p: f64) -> f64 {
        percentile(&self.sorted(), p)
    }
    fn json(&self) -> String {
        format!(
            "{{\"n\": {}, \"p50_ms\": {}, \"p99_ms\": {}, \"min_ms\": {}, \"max_ms\": {}}}",
            self.0.len(),
            json_number(self.p(50.0)),
            json_number(self.p(99.0)),
            json_number(self.p(0.0)),
            json_number(self.p(100.0)),
        )
    }
}

fn json_number(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "null".into()
    }
}

/// Solves the stamp for a leak to `recipient` through `exit` (as `leak send` does).
fn solve_stamp(policy: &Policy, recipient: &Recipient, exit: NodeId, id: MessageId) -> Stamp {
    let hash = policy.recipient_hash(recipient);
    let epoch = unix_ms() / 1000 / policy::STAMP_EPOCH_SECS;
    policy::solve_stamp(&hash, &exit, epoch, policy.limits().stamp_bits, &id)
}

#[derive(Default)]
struct LibraryRun {
    stamp: Series,
    build: Series,
    handed: Series,
    mail: Series,
    gap: Series,
    accepted: Series,
    accepted_with_stamp: Series,
    accepted_without_gap: Series,
    receipt: Series,
}

/// When each step of one leak ended, from its start.
struct LeakTimes {
    built: Duration,
    handed: Duration,
    smtp: Transaction,
    start: Instant,
    receipt: Duration,
}

/// A connected sender with the directory, its exit and its policy.
struct Warm<'a> {
    peer: &'a Peer,
    view: &'a DirectoryView,
    exit: &'a leak_protocol::directory::Descriptor,
    policy: &'a Policy,
    accepted: &'a Accepted,
}

/// One leak through the warm library path.
async fn library_leak(
    warm: &Warm<'_>,
    recipient: &Recipient,
    message_id: MessageId,
    stamp: Stamp,
) -> LeakTimes {
    let Warm {
        peer,
        view,
        exit,
        policy,
        accepted,
    } = *warm;
    let mut rng = rand::rng();
    let start = Instant::now();
    assert!(matches!(policy.check_text(TEXT), Verdict::Accepted));
    let route = path::choose_route(
        &view.nodes,
        &RouteRequest {
            hops: 3,
            mean_delay_ms: 0,
            now_ms: unix_ms(),
            exit,
            entry: None,
            avoid: &[],
            exclude: &[],
        },
        &mut rng,
    )
    .unwrap();
    let capability: [u8; 32] = rng.random();
    let SealedLeak {
        packet,
        reply_keys: keys,
    } = seal_leak(
        &LeakContents {
            message_id,
            recipient,
            relationship: Relationship::Coworker,
            text: TEXT,
            policy_version: policy.version(),
            stamp,
            answer_to: None,
        },
        &route.forward,
        &route.reply,
        MailboxId::from_capability(&capability),
        &mut rng,
    )
    .unwrap();
    let entry = peer_id_of(&route.entry()).unwrap();
    let built = start.elapsed();
    peer.send_packets(entry, std::slice::from_ref(&packet))
        .await
        .unwrap();
    let handed = start.elapsed();
    let smtp = accepted
        .wait(recipient.as_str(), LEAK_TIMEOUT)
        .await
        .unwrap_or_else(|| panic!("no email to {} in {LEAK_TIMEOUT:?}", recipient.as_str()));
    let deadline = Instant::now() + LEAK_TIMEOUT;
    loop {
        let replies = peer.fetch_mailbox(entry, &capability).await.unwrap();
        if let Some(outcome) = replies
            .iter()
            .find_map(|r| open_receipt(&keys, r, message_id))
        {
            assert_eq!(outcome, Outcome::Accepted);
            return LeakTimes {
                built,
                handed,
                smtp,
                start,
                receipt: start.elapsed(),
            };
        }
        assert!(Instant::now() < deadline, "no receipt in {LEAK_TIMEOUT:?}");
        tokio::time::sleep(RECEIPT_POLL).await;
    }
}

async fn library_run(
    bootstrap: &Multiaddr,
    state_dir: &Path,
    accepted: &Accepted,
    leaks: usize,
) -> LibraryRun {
    let config = client_config(bootstrap);
    let state = StateDir::open(state_dir).unwrap();
    let peer = Peer::new().unwrap();
    let view = converged_directory(&peer, &config, &state).await;
    let policy = Policy::builtin();
    // The federation has one exit: it is every recipient's.
    let exit = path::choose_exit(
        &view.nodes,
        policy.version(),
        None,
        unix_ms(),
        &mut rand::rng(),
    )
    .unwrap()
    .descriptor;
    let mut run = LibraryRun::default();
    let warm = Warm {
        peer: &peer,
        view: &view,
        exit: &exit,
        policy: &policy,
        accepted,
    };
    eprintln!(
        "e2e_bench: library: {WARM_UP} warm-up leaks, then {leaks} (stamp: {} bits)",
        policy.limits().stamp_bits
    );
    for i in 0..WARM_UP + leaks {
        let recipient = Recipient::parse(&format!("lib-{i}@bench.test")).unwrap();
        let message_id = MessageId(rand::rng().random());
        let (p, r, node) = (policy.clone(), recipient.clone(), exit.node);
        let solving = Instant::now();
        let stamp = tokio::task::spawn_blocking(move || solve_stamp(&p, &r, node, message_id))
            .await
            .unwrap();
        let stamp_time = solving.elapsed();
        let times = library_leak(&warm, &recipient, message_id, stamp).await;
        if i < WARM_UP {
            continue;
        }
        let accepted_after = times.smtp.accepted.duration_since(times.start);
        run.stamp.push(stamp_time);
        run.build.push(times.built);
        run.handed.push(times.handed);
        run.mail.push(times.smtp.mail.duration_since(times.start));
        run.gap.push(times.smtp.end_marker_gap);
        run.accepted.push(accepted_after);
        run.accepted_with_stamp.push(stamp_time + accepted_after);
        run.accepted_without_gap
            .push(accepted_after.saturating_sub(times.smtp.end_marker_gap));
        run.receipt.push(times.receipt);
    }
    run
}

#[derive(Default)]
struct CommandRun {
    nodes: Series,
    accepted: Series,
    exited: Series,
}

fn leak_bin() -> PathBuf {
    leak_tests::leak_node_bin().with_file_name(format!("leak{}", std::env::consts::EXE_SUFFIX))
}

fn leak_command(home: &Path) -> Command {
    let mut command = Command::new(leak_bin());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("LEAK_") {
            command.env_remove(key);
        }
    }
    command
        .env("LEAK_CONFIG", home.join("config.toml"))
        .env("LEAK_STATE_DIR", home.join("state"))
        .stdin(Stdio::null());
    command
}

async fn command_run(
    bootstrap: &Multiaddr,
    home: &Path,
    accepted: &Accepted,
    runs: usize,
) -> CommandRun {
    let init = leak_command(home)
        .args(["init", "--mixing-delay-ms", "0", "--bootstrap"])
        .arg(bootstrap.to_string())
        .args(["--authority", &leak_tests::test_authority()])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "leak init: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let mut run = CommandRun::default();
    eprintln!("e2e_bench: {runs} runs of leak nodes, then of leak send");
    for _ in 0..runs {
        let start = Instant::now();
        let out = tokio::process::Command::from(leak_command(home))
            .args(["nodes", "--json"])
            .output()
            .await
            .unwrap();
        run.nodes.push(start.elapsed());
        assert!(
            out.status.success(),
            "leak nodes: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for i in 0..runs {
        let recipient = format!("cmd-{i}@bench.test");
        let start = Instant::now();
        let child = tokio::process::Command::from(leak_command(home))
            .args([
                "send", "--direct", "--json", "--as", "coworker", "--to", &recipient, TEXT,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.wait_with_output().await.unwrap();
        let exited = start.elapsed();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(r#""outcome":"accepted""#),
            "leak send: {}\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let smtp = accepted
            .wait(&recipient, Duration::ZERO)
            .await
            .expect("delivered, but the SMTP server has no such email");
        run.accepted.push(smtp.accepted.duration_since(start));
        run.exited.push(exited);
    }
    run
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let json_path = arg("--json");
    let leaks: usize = arg("--leaks").map_or(LEAKS, |n| n.parse().unwrap());
    let commands: usize = arg("--commands").map_or(COMMANDS, |n| n.parse().unwrap());
    let batch_gather: Option<u64> = arg("--batch-gather-ms").map(|n| n.parse().unwrap());
    assert!(
        leak_bin().is_file(),
        "{} is missing: cargo build --release -p leak-client --bins",
        leak_bin().display()
    );
    let begun = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (smtp_port, accepted) = start_instant_smtp().await;

    let smtp_url = format!("exit.smtp_url=\"smtp://127.0.0.1:{smtp_port}\"");
    let gather = batch_gather.map(|ms| format!("limits.batch_gather_ms={ms}"));
    let node_sets: Vec<&str> = gather.iter().flat_map(|s| ["--set", s.as_str()]).collect();
    let mut nodes = tokio::task::block_in_place(|| {
        let first = start_node(dir.path(), "relay-0", None, false, &[], &node_sets);
        let bootstrap = first.started.dial_addr();
        let mut nodes = vec![first];
        for i in 1..3 {
            nodes.push(start_node(
                dir.path(),
                &format!("relay-{i}"),
                Some(&bootstrap),
                false,
                &[],
                &node_sets,
            ));
        }
        nodes.push(start_node(
            dir.path(),
            "exit",
            Some(&bootstrap),
            false,
            &["--exit-domain", "bench.test"],
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
                "--set",
                "exit.max_rate=1000000.0",
                "--set",
                "exit.provider_max_rate=1000000.0",
                "--set",
                "exit.warmup_first_day=0",
                "--set",
                "exit.provider_connections=64",
                // The receipt's privacy hold (exponential, mean 60 s) is
                // left out: the rows time the path, not the hold.
                "--set",
                "exit.receipt_delay_ms=0",
            ]
            .into_iter()
            .chain(node_sets.iter().copied())
            .collect::<Vec<_>>(),
        ));
        nodes
    });
    let bootstrap = nodes[0].started.dial_addr();
    eprintln!("e2e_bench: 3 relays and an exit started; SMTP server on port {smtp_port}");

    let library = library_run(&bootstrap, &dir.path().join("library"), &accepted, leaks).await;
    let command = command_run(&bootstrap, &dir.path().join("command"), &accepted, commands).await;

    let mut stopped_cleanly = true;
    tokio::task::block_in_place(|| {
        for node in &mut nodes {
            let (status, killed) = node.process.terminate(leak_tests::process::TERM_GRACE);
            if killed || !status.success() {
                stopped_cleanly = false;
                eprintln!("e2e_bench: a node did not stop cleanly: {status}");
            }
        }
    });

    // The table.
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let rows: Vec<(String, &Series, String)> = vec![
        (
            format!("library, stamp pre-solved: send -> SMTP accepted ({leaks} leaks)"),
            &library.accepted,
            format!("p50 < {TARGET_P50_MS:.0} ms"),
        ),
        (
            "library, stamp included: stamp + send -> SMTP accepted".into(),
            &library.accepted_with_stamp,
            String::new(),
        ),
        (
            "  stamp alone (proof of work)".into(),
            &library.stamp,
            String::new(),
        ),
        (
            "  check + route + packet built".into(),
            &library.build,
            String::new(),
        ),
        (
            "  handed to the entry relay (it read the packet)".into(),
            &library.handed,
            String::new(),
        ),
        (
            "  the exit starts the SMTP transaction (MAIL FROM)".into(),
            &library.mail,
            String::new(),
        ),
        (
            "  end-of-data marker's lag behind the message (*)".into(),
            &library.gap,
            String::new(),
        ),
        (
            "  send -> SMTP accepted, less that lag".into(),
            &library.accepted_without_gap,
            String::new(),
        ),
        (
            "  receipt Accepted in the mailbox (2 ms polling)".into(),
            &library.receipt,
            String::new(),
        ),
        (
            format!("leak send command: spawn -> SMTP accepted ({commands} runs)"),
            &command.accepted,
            String::new(),
        ),
        (
            "leak send command: spawn -> exit with Accepted".into(),
            &command.exited,
            String::new(),
        ),
        (
            "  for comparison, leak nodes (start + directory fetch)".into(),
            &command.nodes,
            String::new(),
        ),
    ];
    let p50 = library.accepted.p(50.0);
    let status = if p50 < TARGET_P50_MS { "ok" } else { "MISSED" };
    let header = (
        format!("end to end, 3 hops, mixing delay 0 ({cores} cores shared)"),
        "p50".to_owned(),
        "p99".to_owned(),
        "target".to_owned(),
    );
    let body: Vec<(String, String, String, String)> = rows
        .iter()
        .map(|(name, series, target)| {
            let target = if target.is_empty() {
                "–".to_owned()
            } else {
                format!("{target} {status}")
            };
            (
                name.clone(),
                format!("{:.1} ms", series.p(50.0)),
                format!("{:.1} ms", series.p(99.0)),
                target,
            )
        })
        .collect();
    let w0 = body.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let w0 = w0.max(header.0.chars().count());
    let line = |r: &(String, String, String, String)| {
        format!(
            "{}{}  {:>9}  {:>9}  {}",
            r.0,
            " ".repeat(w0 - r.0.chars().count()),
            r.1,
            r.2,
            r.3
        )
        .trim_end()
        .to_owned()
    };
    println!("{}", line(&header));
    println!("{}", "-".repeat(w0 + 2 + 9 + 2 + 9 + 2 + 14));
    for r in &body {
        println!("{}", line(r));
    }
    println!(
        "(*) lettre writes CRLF.CRLF apart from the message; without TCP_NODELAY, Nagle held it \
         until the server's delayed ACK (~40 ms). The exit's smtp:// sockets set TCP_NODELAY."
    );
    eprintln!("e2e_bench: {:.0} s in all", begun.elapsed().as_secs_f64());

    if let Some(path) = json_path {
        let json = format!(
            "{{\n  \"cores\": {cores},\n  \"target_p50_ms\": {TARGET_P50_MS},\n  \"library_accepted\": {},\n  \"library_accepted_with_stamp\": {},\n  \"stamp\": {},\n  \"build\": {},\n  \"handed\": {},\n  \"smtp_mail\": {},\n  \"end_marker_gap\": {},\n  \"library_accepted_without_gap\": {},\n  \"receipt\": {},\n  \"command_accepted\": {},\n  \"command_exited\": {},\n  \"command_nodes\": {},\n  \"stopped_cleanly\": {stopped_cleanly},\n  \"seconds\": {}\n}}\n",
            library.accepted.json(),
            library.accepted_with_stamp.json(),
            library.stamp.json(),
            library.build.json(),
            library.handed.json(),
            library.mail.json(),
            library.gap.json(),
            library.accepted_without_gap.json(),
            library.receipt.json(),
            command.accepted.json(),
            command.exited.json(),
            command.nodes.json(),
            json_number(begun.elapsed().as_secs_f64()),
        );
        std::fs::write(&path, json).unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
    }
    assert!(stopped_cleanly, "a node did not stop cleanly on SIGTERM");
}
