//! Relay benchmark: how many packets per second one `leak-node` forwards,
//! how long a packet waits in it, and how much memory it takes.
//!
//! ```text
//! cargo build --release -p leak-node --bins
//! cargo run --release -p leak-tests --example relay_bench -- [--json FILE] [--held-in-memory N]
//! ```
//! (`scripts/bench.sh` does both and prints the results as a table.)
//!
//! # Set-up
//!
//! Three real `leak-node` processes (release build, own data directories in
//! a temporary directory, loopback TCP, metrics on), started the way an
//! operator starts them, plus this driver:
//!
//! ```text
//!   driver ──bulk + probes──▶ A ──▶ B ──bulk──▶ C   (drops: unknown key epoch)
//!                                     └─probes─▶ sink (in the driver)
//! ```
//!
//! - Every packet is a fresh 3-hop Sphinx packet with mixing delay 0, so A
//!   and B each do the full work of a relay hop: X25519, MAC, decryption,
//!   the durable replay-tag write, the timer, the link to the next hop.
//! - The measured node is B, the middle one: its upstream (A) and its
//!   downstream (C) are real relays on real libp2p links.
//! - C must not be the bottleneck or steal the CPU B is measured on: bulk
//!   packets name C as their third hop but carry a key hint for an epoch C
//!   has no key for, so C reads each packet off the link and drops it
//!   (`unknown_epoch`) before any cryptography. (A final mailbox at C would
//!   cost C a redb transaction per packet; an exit hop the full crypto.)
//! - Throughput is B's own counter `leak_packets_forwarded`, read from its
//!   metrics endpoint; C's `leak_packets_received` confirms arrival.
//! - Latency: packets carry no timestamps, so 1 in ~20 ms is a *probe*
//!   built for A -> B -> sink, where the sink is a minimal libp2p peer in
//!   this process that B learns from a signed descriptor (B bootstraps from
//!   it and fetches its directory). Probes queue with the bulk at A and B;
//!   the sink opens each (it holds the probe's last key) and reads its
//!   sequence number. Send and arrival times come from one clock, so the
//!   latency is exact — for *two* relay hops and three loopback links, end
//!   to end. Per hop is about half of that.
//! - Load: the driver offers a fixed rate for a few seconds per step, from
//!   low to high. A step is *sustained* when B forwards at least 99% of the
//!   offered packets (and C receives them). The result is the highest
//!   sustained offered rate, and B's forwarding rate in the first step it
//!   could not sustain (its saturation throughput).
//! - Memory: B's peak resident set (`VmHWM` in `/proc/PID/status`). CPU:
//!   B's user + system time per forwarded packet (`/proc/PID/stat`).
//!
//! Every process shares this machine's cores: A, B, C and the driver
//! (which also builds every packet, before each step) compete for them, so
//! the throughput is a floor for a node with a machine of its own; B's CPU
//! time per packet says what one core would do.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::HashMap,
    fmt::Write as _,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{AsyncWriteExt as _, StreamExt as _};
use leak_node::{Identity, client::Peer, node::unix_now, wire};
use leak_protocol::{
    MixSecret, PathHop, Processed, build_packet,
    directory::{Descriptor, EpochKey, Freshness, Roles, SignedDescriptor},
    process_packet,
    sphinx::{Delay, FinalPayload, Packet},
};
use leak_tests::{
    NodeProcess, hop, init_node,
    process::{Started, cpu_secs, metric, peak_rss_mib, scrape_metrics},
};
use libp2p::{Multiaddr, PeerId, noise, swarm::SwarmEvent, tcp, yamux};

/// Seconds per load step.
const STEP_SECS: f64 = 4.0;
/// The first offered rate, packets per second.
const FIRST_RATE: f64 = 2_000.0;
/// Each step offers this much more than the last, until one is not sustained.
const GROWTH: f64 = 1.4;
/// At most this many load steps (keeps the run under two minutes).
const MAX_STEPS: usize = 8;
/// A step is sustained when B forwards at least this share of it.
const SUSTAINED: f64 = 0.99;
/// One probe per this interval, during load and in the idle measurement.
const PROBE_EVERY: Duration = Duration::from_millis(20);
/// Probes sent with no load, for the idle latency.
const IDLE_PROBES: u64 = 100;
/// The project's target, packets per second through one node.
const TARGET_PPS: f64 = 5_000.0;
/// The key epoch period of the benchmark federation.
const EPOCH_SECS: u64 = 3600;

// --- The sink: a minimal peer that B forwards probes to -------------------

struct Sink {
    peer_id: PeerId,
    descriptor: Descriptor,
    arrivals: Arc<Mutex<HashMap<u64, Instant>>>,
    addr: Multiaddr,
    _task: tokio::task::JoinHandle<()>,
}

/// Starts the sink: listens on loopback, serves a directory holding only its
/// own signed descriptor (so a node that bootstraps from it can forward to
/// it), and opens every packet it receives with its mix key.
async fn start_sink() -> Sink {
    let identity = Identity::generate();
    let secret = MixSecret::generate(&mut rand::rng());
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(identity.keypair().clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
        .build();
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    let now = unix_now();
    let epoch = now / EPOCH_SECS;
    let descriptor = Descriptor {
        node: identity.node_id(),
        addresses: vec![addr.to_string()],
        roles: Roles {
            relay: true,
            exit: false,
        },
        family: "relay-bench-sink".into(),
        exit: None,
        epoch_period_secs: EPOCH_SECS,
        mix_keys: (epoch.saturating_sub(1)..=epoch + 2)
            .map(|epoch| EpochKey {
                epoch,
                key: secret.public(),
            })
            .collect(),
        software: "relay_bench sink".into(),
        published_at: now,
        traffic: None,
    };
    let signed: SignedDescriptor = descriptor.sign(identity.seed()).unwrap();
    let mut control = swarm.behaviour().new_control();
    let mut directories = control.accept(wire::DIRECTORY_PROTOCOL).unwrap();
    let mut packets = control.accept(wire::PACKET_PROTOCOL).unwrap();
    let arrivals = Arc::new(Mutex::new(HashMap::new()));
    let task = {
        let arrivals = arrivals.clone();
        let secret = Arc::new(secret);
        tokio::spawn(async move {
            tokio::spawn(async move {
                while let Some((_, mut stream)) = directories.next().await {
                    let signed = signed.clone();
                    tokio::spawn(async move {
                        if wire::read_directory_request(&mut stream).await.is_ok() {
                            let _ = wire::write_directory(&mut stream, None, &[signed]).await;
                        }
                    });
                }
            });
            tokio::spawn(async move {
                while let Some((_, mut stream)) = packets.next().await {
                    let arrivals = arrivals.clone();
                    let secret = secret.clone();
                    tokio::spawn(async move {
                        while let Ok(Some(packet)) = wire::read_packet(&mut stream).await {
                            let at = Instant::now();
                            if let Processed::Final(done) =
                                process_packet(packet.as_bytes(), &secret)
                                && let FinalPayload::Exit { message } = done.payload
                                && let Ok(seq) = <[u8; 8]>::try_from(&message[..])
                            {
                                arrivals.lock().unwrap().insert(u64::from_be_bytes(seq), at);
                            }
                        }
                    });
                }
            });
            loop {
                swarm.select_next_some().await;
            }
        })
    };
    Sink {
        peer_id: identity.peer_id(),
        descriptor,
        arrivals,
        addr,
        _task: task,
    }
}

// --- Measuring the nodes ---------------------------------------------------

/// A node process of the benchmark.
struct Node {
    name: &'static str,
    process: NodeProcess,
    started: Started,
}

/// The counters of one node at one moment.
#[derive(Clone, Default)]
struct Sample {
    received: f64,
    forwarded: f64,
    drops: Vec<(String, f64)>,
    cpu_secs: f64,
}

impl Node {
    fn metrics(&self) -> String {
        scrape_metrics(self.started.metrics_addr())
            .unwrap_or_else(|e| panic!("cannot scrape {}'s metrics: {e}", self.name))
    }

    fn sample(&self) -> Sample {
        let text = self.metrics();
        let mut drops = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("leak_packets_dropped_total{reason=\"")
                && let Some((reason, value)) = rest.split_once("\"} ")
            {
                drops.push((reason.to_owned(), value.parse().unwrap_or(0.0)));
            }
        }
        Sample {
            received: metric(&text, "leak_packets_received_total", None),
            forwarded: metric(&text, "leak_packets_forwarded_total", None),
            drops,
            cpu_secs: cpu_secs(self.process.pid()),
        }
    }
}

fn diff_drops(before: &Sample, after: &Sample) -> String {
    let mut out = String::new();
    for (reason, value) in &after.drops {
        let was = before
            .drops
            .iter()
            .find(|(r, _)| r == reason)
            .map_or(0.0, |(_, v)| *v);
        if value - was > 0.0 {
            let _ = write!(out, " {reason}={}", value - was);
        }
    }
    if out.is_empty() { " none".into() } else { out }
}

// --- Packets ----------------------------------------------------------------

/// Builds `count` packets for `path` carrying an 8-byte sequence number
/// starting at `first`, on every core.
fn build(path: &[PathHop], first: u64, count: usize) -> Vec<Packet> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let per = count.div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut rng = rand::rng();
                    let start = t * per;
                    let end = ((t + 1) * per).min(count);
                    (start..end)
                        .map(|i| {
                            let seq = first + i as u64;
                            build_packet(path, &seq.to_be_bytes(), &mut rng).unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

/// Sends `bulk` at `rate` packets per second and a probe every
/// [`PROBE_EVERY`], interleaved on one stream. Returns the send time of
/// each probe and the time sending took.
async fn send_paced(
    stream: &mut libp2p::Stream,
    bulk: Vec<Packet>,
    probes: Vec<(u64, Packet)>,
    rate: f64,
) -> (Vec<(u64, Instant)>, Duration) {
    let mut bulk = bulk.into_iter().enumerate().peekable();
    let mut probes = probes.into_iter().enumerate().peekable();
    let mut sent_probes = Vec::with_capacity(probes.len());
    let start = Instant::now();
    loop {
        let elapsed = start.elapsed().as_secs_f64();
        let bulk_due = bulk.peek().map(|(i, _)| *i as f64 / rate);
        let probe_due = probes
            .peek()
            .map(|(j, _)| *j as f64 * PROBE_EVERY.as_secs_f64());
        let next = match (bulk_due, probe_due) {
            (None, None) => break,
            (Some(b), Some(p)) => b.min(p),
            (Some(b), None) => b,
            (None, Some(p)) => p,
        };
        if next > elapsed {
            // Tokio's timer has millisecond resolution: sleep at least one
            // tick and catch up in a burst (never spin: the driver shares
            // the cores with the nodes it measures).
            tokio::time::sleep(Duration::from_secs_f64((next - elapsed).max(0.001))).await;
            continue;
        }
        if probe_due == Some(next) {
            let (_, (seq, packet)) = probes.next().unwrap();
            sent_probes.push((seq, Instant::now()));
            wire::write_packet(stream, &packet).await.unwrap();
        } else {
            let (_, packet) = bulk.next().unwrap();
            wire::write_packet(stream, &packet).await.unwrap();
        }
    }
    stream.flush().await.unwrap();
    (sent_probes, start.elapsed())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Probe latencies in milliseconds, sorted, and how many never arrived.
fn latencies(sent: &[(u64, Instant)], sink: &Sink) -> (Vec<f64>, usize) {
    let arrivals = sink.arrivals.lock().unwrap();
    let mut out: Vec<f64> = sent
        .iter()
        .filter_map(|(seq, at)| {
            arrivals
                .get(seq)
                .map(|arrived| arrived.duration_since(*at).as_secs_f64() * 1e3)
        })
        .collect();
    out.sort_by(f64::total_cmp);
    let lost = sent.len() - out.len();
    (out, lost)
}

/// Waits until C has received nothing new for [`DRAIN_QUIET`] (at most
/// 15 s).
fn wait_drained(c: &Node) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = c.sample().received;
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let now = c.sample().received;
        if now != last {
            last = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= DRAIN_QUIET {
            return;
        }
    }
}

/// How long C must receive nothing for the pipeline to count as drained:
/// longer than A's and B's batch gathering together (`limits.batch_gather_ms`,
/// 1 s each at the defaults), or a step's last packets, still gathered,
/// would count as lost.
const DRAIN_QUIET: Duration = Duration::from_millis(2500);

struct StepResult {
    offered: f64,
    sent_rate: f64,
    b_rate: f64,
    carried: f64,
    b_cpu_us: f64,
    p50: f64,
    p99: f64,
    probes_lost: usize,
    sustained: bool,
}

fn json_number(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "null".into()
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let option = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let json_path = option("--json");
    // `--held-in-memory N`: B keeps only N held packets in memory and
    // writes the rest to disk (`limits.held_in_memory`; 0 puts every
    // packet through the disk, to measure what that costs).
    let held_in_memory: Option<String> = option("--held-in-memory").map(|n| {
        n.parse::<usize>()
            .unwrap_or_else(|_| panic!("--held-in-memory takes a number, not {n:?}"))
            .to_string()
    });
    let begun = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let sink = start_sink().await;
    // The sink is a node of the federation: the roster admits it.
    leak_tests::roster::admit(
        &dir.path().join("roster.signed"),
        sink.descriptor.node,
        Roles {
            relay: true,
            exit: false,
        },
        "relay-bench-sink",
        "relay-bench-sink",
    );

    // Three nodes: A alone, B bootstrapping from A and from the sink, C from B.
    let start = |name: &'static str, bootstrap: Vec<Multiaddr>, envs: &[(&str, &str)]| {
        let data = dir.path().join(name);
        let mut args = vec![
            "--listen".to_owned(),
            "/ip4/127.0.0.1/tcp/0".to_owned(),
            "--metrics".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--epoch-secs".to_owned(),
            EPOCH_SECS.to_string(),
        ];
        for b in bootstrap {
            args.extend(["--bootstrap".to_owned(), b.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let config = init_node(&data, &args);
        let mut process = NodeProcess::run(name, &config, &[], envs);
        let started = process.wait_started(true, Duration::from_secs(30));
        Node {
            name,
            process,
            started,
        }
    };
    let sink_addr = sink
        .addr
        .clone()
        .with(libp2p::multiaddr::Protocol::P2p(sink.peer_id));
    let (a, b, c) = tokio::task::block_in_place(|| {
        let a = start("A", vec![], &[]);
        let b_envs: Vec<(&str, &str)> = held_in_memory
            .iter()
            .map(|n| ("LEAK_LIMITS__HELD_IN_MEMORY", n.as_str()))
            .collect();
        let b = start("B", vec![a.started.dial_addr(), sink_addr], &b_envs);
        let c = start("C", vec![b.started.dial_addr()], &[]);
        (a, b, c)
    });
    eprintln!(
        "relay_bench: A, B, C started (pids {}, {}, {}); B's metrics at http://{}/metrics",
        a.process.pid(),
        b.process.pid(),
        c.process.pid(),
        b.started.metrics_addr()
    );

    // The client learns the directory; B must know C and the sink.
    let client = Peer::new().unwrap();
    client.add_node(a.started.peer_id, a.started.transport_addrs());
    client.add_node(b.started.peer_id, b.started.transport_addrs());
    let freshness = || Freshness {
        now: unix_now(),
        max_age_secs: 3 * EPOCH_SECS,
        max_clock_skew_secs: 300,
    };
    let wanted = [
        a.started.peer_id,
        b.started.peer_id,
        c.started.peer_id,
        sink.peer_id,
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    let (da, db, dc) = loop {
        let mut known: HashMap<PeerId, Descriptor> = HashMap::new();
        for peer in [a.started.peer_id, b.started.peer_id] {
            if let Ok(answer) = client.directory(peer, 0).await {
                for d in answer
                    .descriptors
                    .iter()
                    .filter_map(|s| s.verify(freshness()).ok())
                {
                    if let Some(p) = leak_node::identity::peer_id_of(&d.node) {
                        known.insert(p, d);
                    }
                }
            }
        }
        // B's directory must list the sink (A's need not).
        let b_knows_sink = client
            .directory(b.started.peer_id, 0)
            .await
            .map(|answer| {
                answer
                    .descriptors
                    .iter()
                    .filter_map(|s| s.verify(freshness()).ok())
                    .any(|d| d.node == sink.descriptor.node)
            })
            .unwrap_or(false);
        if b_knows_sink && wanted.iter().all(|p| known.contains_key(p)) {
            break (
                known[&a.started.peer_id].clone(),
                known[&b.started.peer_id].clone(),
                known[&c.started.peer_id].clone(),
            );
        }
        assert!(
            Instant::now() < deadline,
            "the directory never converged (B knows the sink: {b_knows_sink})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let epoch = unix_now() / EPOCH_SECS;
    // Bulk: A -> B -> C, C's layer under a key hint C has no key for.
    let mut c_hop = hop(&dc, 0);
    c_hop.key_hint = leak_protocol::federation::epoch_key_hint(epoch).wrapping_add(128);
    let bulk_path = vec![hop(&da, 0), hop(&db, 0), c_hop];
    // Probes: A -> B -> sink.
    let sink_hop = PathHop {
        node: sink.descriptor.node,
        key: sink.descriptor.mix_key(epoch).unwrap(),
        key_hint: leak_protocol::federation::epoch_key_hint(epoch),
        delay: Delay(0),
    };
    let probe_path = vec![hop(&da, 0), hop(&db, 0), sink_hop];
    let mut stream = client.open_packet_stream(a.started.peer_id).await.unwrap();
    let mut next_probe = 0u64;

    // Idle latency (this also opens every link).
    let probes = build(&probe_path, next_probe, IDLE_PROBES as usize);
    let probes: Vec<(u64, Packet)> = (next_probe..).zip(probes).collect();
    next_probe += IDLE_PROBES;
    let (sent, _) = send_paced(&mut stream, Vec::new(), probes, 1.0).await;
    tokio::task::block_in_place(|| wait_drained(&c));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (idle, idle_lost) = latencies(&sent, &sink);
    eprintln!(
        "relay_bench: idle latency A->B->sink over {} probes: p50 {:.2} ms, p99 {:.2} ms, lost {idle_lost}",
        idle.len(),
        percentile(&idle, 50.0),
        percentile(&idle, 99.0)
    );

    // Load steps.
    let mut steps: Vec<StepResult> = Vec::new();
    let mut rate = FIRST_RATE;
    let mut first_bulk_seq = 1u64 << 40;
    let mut refining = false;
    while steps.len() < MAX_STEPS {
        let count = (rate * STEP_SECS).round() as usize;
        let n_probes = (STEP_SECS / PROBE_EVERY.as_secs_f64()) as usize;
        let built = Instant::now();
        let bulk = tokio::task::block_in_place(|| build(&bulk_path, first_bulk_seq, count));
        first_bulk_seq += count as u64;
        let probes = tokio::task::block_in_place(|| build(&probe_path, next_probe, n_probes));
        let probes: Vec<(u64, Packet)> = (next_probe..).zip(probes).collect();
        next_probe += n_probes as u64;
        let build_secs = built.elapsed().as_secs_f64();

        let before = tokio::task::block_in_place(|| [a.sample(), b.sample(), c.sample()]);
        let driver_cpu = cpu_secs(std::process::id());
        // B's rate is measured from 0.5 s into the step to its end.
        let window = {
            let b_metrics = b.started.metrics_addr();
            let b_pid = b.process.pid();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let read = move || {
                    let text = scrape_metrics(b_metrics).unwrap();
                    (
                        Instant::now(),
                        metric(&text, "leak_packets_forwarded_total", None),
                        cpu_secs(b_pid),
                    )
                };
                tokio::task::spawn_blocking(read).await.unwrap()
            })
        };
        let (sent, took) = send_paced(&mut stream, bulk, probes, rate).await;
        let (t0, f0, cpu0) = window.await.unwrap();
        let (f1, cpu1) = {
            let text = tokio::task::block_in_place(|| b.metrics());
            (
                metric(&text, "leak_packets_forwarded_total", None),
                cpu_secs(b.process.pid()),
            )
        };
        let t1 = Instant::now();
        let driver_cpu = cpu_secs(std::process::id()) - driver_cpu;
        tokio::task::block_in_place(|| wait_drained(&c));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let after = tokio::task::block_in_place(|| [a.sample(), b.sample(), c.sample()]);
        let (lat, probes_lost) = latencies(&sent, &sink);

        let offered = (count + sent.len()) as f64;
        let b_forwarded = after[1].forwarded - before[1].forwarded;
        let c_received = after[2].received - before[2].received;
        let carried = b_forwarded / offered;
        let b_rate = (f1 - f0) / t1.duration_since(t0).as_secs_f64();
        let b_cpu_us = (cpu1 - cpu0) / (f1 - f0).max(1.0) * 1e6;
        let sustained = carried >= SUSTAINED && c_received >= SUSTAINED * count as f64;
        let step = StepResult {
            offered: rate,
            sent_rate: offered / took.as_secs_f64(),
            b_rate,
            carried,
            b_cpu_us,
            p50: percentile(&lat, 50.0),
            p99: percentile(&lat, 99.0),
            probes_lost,
            sustained,
        };
        let cpu = |i: usize, secs: f64| (after[i].cpu_secs - before[i].cpu_secs) / secs * 100.0;
        let secs = took.as_secs_f64();
        eprintln!(
            "relay_bench: offered {:>6.0}/s (sent {:>6.0}/s, built in {build_secs:.1} s) | B forwarded {:>6.0}/s, {:.1}% of offered, {:.0} µs CPU/packet | C received {c_received} | probes p50 {:.2} ms p99 {:.2} ms lost {probes_lost} | CPU% A {:.0} B {:.0} C {:.0} driver {:.0} | drops A:{} B:{} | {}",
            step.offered,
            step.sent_rate,
            step.b_rate,
            carried * 100.0,
            b_cpu_us,
            step.p50,
            step.p99,
            cpu(0, secs),
            cpu(1, secs),
            cpu(2, secs),
            driver_cpu / secs * 100.0,
            diff_drops(&before[0], &after[0]),
            diff_drops(&before[1], &after[1]),
            if sustained {
                "sustained"
            } else {
                "NOT sustained"
            },
        );
        steps.push(step);
        // Grow until a step fails, then try once halfway between the last
        // sustained rate and the failed one.
        let last_ok = steps
            .iter()
            .filter(|s| s.sustained)
            .map(|s| s.offered)
            .next_back();
        match (sustained, refining, last_ok) {
            (true, false, _) => rate *= GROWTH,
            (false, false, Some(ok)) => {
                rate = f64::midpoint(ok, rate);
                refining = true;
            }
            _ => break,
        }
        if begun.elapsed() > Duration::from_secs(80) {
            break;
        }
    }

    let b_rss = peak_rss_mib(b.process.pid());
    // The highest sustained step, and the highest one (B at saturation).
    let best = steps
        .iter()
        .filter(|s| s.sustained)
        .max_by(|x, y| x.offered.total_cmp(&y.offered));
    let saturated = steps
        .iter()
        .filter(|s| !s.sustained)
        .max_by(|x, y| x.offered.total_cmp(&y.offered));
    drop(stream);
    drop(client);
    let mut stopped_cleanly = true;
    tokio::task::block_in_place(|| {
        for node in [c, b, a] {
            let mut process = node.process;
            let (status, killed) = process.terminate(Duration::from_secs(10));
            if killed || !status.success() {
                stopped_cleanly = false;
                eprintln!("relay_bench: {} did not stop cleanly: {status}", node.name);
            }
        }
    });

    let sustained_pps = best.map_or(0.0, |s| s.b_rate.min(s.offered));
    eprintln!(
        "relay_bench: sustained through B: {:.0} packets/s (offered {:.0}/s); saturation: {}; B peak RSS {b_rss:.1} MiB; B's held_in_memory {}; {:.0} s in all",
        sustained_pps,
        best.map_or(0.0, |s| s.offered),
        saturated.map_or("not reached".to_owned(), |s| format!(
            "B forwarded {:.0}/s when offered {:.0}/s",
            s.b_rate, s.offered
        )),
        held_in_memory.as_deref().unwrap_or("the default"),
        begun.elapsed().as_secs_f64()
    );

    if let Some(path) = json_path {
        let load = best.or(steps.first());
        let steps_json: Vec<String> = steps
            .iter()
            .map(|s| {
                format!(
                    "{{\"offered_pps\": {}, \"sent_pps\": {}, \"b_forwarded_pps\": {}, \"carried\": {}, \"b_cpu_us_per_packet\": {}, \"p50_ms\": {}, \"p99_ms\": {}, \"probes_lost\": {}, \"sustained\": {}}}",
                    json_number(s.offered),
                    json_number(s.sent_rate),
                    json_number(s.b_rate),
                    json_number(s.carried),
                    json_number(s.b_cpu_us),
                    json_number(s.p50),
                    json_number(s.p99),
                    s.probes_lost,
                    s.sustained
                )
            })
            .collect();
        let json = format!(
            "{{\n  \"cores\": {},\n  \"step_secs\": {STEP_SECS},\n  \"target_pps\": {TARGET_PPS},\n  \"sustained_pps\": {},\n  \"sustained_offered_pps\": {},\n  \"saturation_pps\": {},\n  \"saturation_offered_pps\": {},\n  \"idle_p50_ms\": {},\n  \"idle_p99_ms\": {},\n  \"idle_probes_lost\": {idle_lost},\n  \"load_p50_ms\": {},\n  \"load_p99_ms\": {},\n  \"load_offered_pps\": {},\n  \"b_cpu_us_per_packet\": {},\n  \"b_peak_rss_mib\": {},\n  \"b_held_in_memory\": {},\n  \"stopped_cleanly\": {stopped_cleanly},\n  \"seconds\": {},\n  \"steps\": [\n    {}\n  ]\n}}\n",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            json_number(sustained_pps),
            json_number(best.map_or(0.0, |s| s.offered)),
            json_number(saturated.map_or(f64::NAN, |s| s.b_rate)),
            json_number(saturated.map_or(f64::NAN, |s| s.offered)),
            json_number(percentile(&idle, 50.0)),
            json_number(percentile(&idle, 99.0)),
            json_number(load.map_or(f64::NAN, |s| s.p50)),
            json_number(load.map_or(f64::NAN, |s| s.p99)),
            json_number(load.map_or(f64::NAN, |s| s.offered)),
            json_number(load.map_or(f64::NAN, |s| s.b_cpu_us)),
            json_number(b_rss),
            held_in_memory.as_deref().unwrap_or("null"),
            json_number(begun.elapsed().as_secs_f64()),
            steps_json.join(",\n    "),
        );
        std::fs::write(&path, json).unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
    }
    assert!(stopped_cleanly, "a node did not stop cleanly on SIGTERM");
}
