//! The exit benchmark: how many leaks per second an exit delivers into
//! Postfix's `smtp-sink`, next to the rate of Postfix's own `smtp-source`
//! against the same sink in the same run (target: at least 0.8 of it).
//!
//! The exit is a `leak-node` process (release build) with the SMTP
//! transport; two relays and the sender run in this process, over loopback
//! TCP. A sender pushes `--leaks` real leaks (stamp, reply block, three
//! hops) through them while the exit's delivery is paused (`leak-node queue
//! pause`), so every leak is taken and queued durably first (file and
//! database, synced); then delivery resumes, and the exit's rate is the
//! leaks delivered over the time it takes to drain the queue: each email
//! accepted by the sink, each outcome committed durably, each leak file
//! scrubbed, each receipt sent back along its reply block.
//!
//! The sink only counts (`smtp-sink -c`, no dump files), so it costs as
//! little as it can. On a machine with two CPUs or more, the exit and the
//! sink share CPU 0 and everything else (the relays and the sender, which
//! would be other machines) runs on CPU 1; `smtp-source` is measured on
//! CPU 0 too, against the same sink: the exit and the reference get the
//! same resources. `--no-pin` runs everything unpinned.
//!
//! ```text
//! cargo build --release -p leak-node --bins
//! cargo run --release -p leak-tests --example exit_bench -- [--leaks N] [--connections N] [--no-pin] [--json FILE]
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    process::Command,
    time::{Duration, Instant},
};

use leak_tests::{
    exit::{Draft, ProcessFederation},
    mail::{SmtpSink, SourceOptions, smtp_source_rate_with},
};

/// The CPU of the exit, the sink and smtp-source when pinned.
const EXIT_CPU: usize = 0;
/// The CPU of everything else when pinned.
const OTHERS_CPU: usize = 1;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

/// CPU time a process used so far (user and system, all threads), from
/// `/proc/PID/stat` (in clock ticks of 10 ms).
fn process_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// Pins every thread of process `pid` to `cpu` (threads it starts later
/// inherit it).
fn pin(pid: u32, cpu: usize) {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("running taskset");
    assert!(status.success(), "taskset -a -p -c {cpu} {pid}: {status}");
}

/// Whether the benchmark can pin: two CPUs or more, and `taskset`.
fn can_pin() -> bool {
    std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2)
        && Command::new("taskset")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
}

/// The exit's counts: (waiting: queued, retrying or sending; delivered).
fn queue_counts(fed: &ProcessFederation) -> (u64, u64) {
    fed.queue_counts().expect("leak-node queue counts")
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let leaks: usize = arg("--leaks").map_or(2000, |v| v.parse().unwrap());
    let connections: u32 = arg("--connections").map_or(8, |v| v.parse().unwrap());
    let pinned = !flag("--no-pin") && can_pin();
    if pinned {
        pin(std::process::id(), OTHERS_CPU);
    }
    let exit_cpu = pinned.then_some(EXIT_CPU);

    // Counting only (no dump files), so the sink costs as little as it can
    // and the measure is of the sender.
    let sink = SmtpSink::counting();
    if pinned {
        pin(sink.pid().unwrap(), EXIT_CPU);
    }

    // Postfix's own load generator against the same sink: the reference,
    // the best of three runs. Its default connects for each message; with
    // `-d` a session keeps its connection, as the exit's pool does.
    let best = |options: SourceOptions| {
        (0..3)
            .map(|_| {
                smtp_source_rate_with(
                    sink.port(),
                    leaks,
                    connections as usize,
                    "bench@leak.test",
                    &options,
                )
            })
            .fold(0.0, f64::max)
    };
    let source_rate = best(SourceOptions {
        reuse_connections: false,
        cpu: exit_cpu,
    });
    let reusing_rate = best(SourceOptions {
        reuse_connections: true,
        cpu: exit_cpu,
    });
    let baseline = sink.received_count();
    assert_eq!(
        baseline,
        leaks * 6,
        "smtp-sink counted every smtp-source message"
    );

    // Two relays here, the exit a process of its own (started on its CPU
    // with `taskset -c`, so every thread it starts is too).
    let dir = tempfile::tempdir().unwrap();
    let fed = ProcessFederation::start(
        dir.path(),
        &sink.smtp_url(),
        connections,
        &[
            // The exit's capacity, not its pacing: no rate limit, per
            // provider or in all, and no warm-up ramp.
            "exit.max_rate=1e9".to_owned(),
            "exit.provider_max_rate=1e9".to_owned(),
            "exit.warmup_first_day=0".to_owned(),
            "exit.min_rate=1.0".to_owned(),
            // Every connection may go to the one provider of the bench.
            format!("exit.provider_connections={connections}"),
        ],
        exit_cpu,
    )
    .await;

    // Delivery paused: every leak is taken and queued first.
    fed.queue(&["pause"]).expect("leak-node queue pause");
    let sender = fed.sender();
    // Built ahead (stamps, onion layers), so the run measures the nodes.
    let packets: Vec<_> = (0..leaks)
        .map(|i| {
            let to = format!("bench{i}@leak.test");
            fed.build(&sender, &Draft::new(&to, "You killed it at karaoke."))
                .0
        })
        .collect();
    let ingest_started = Instant::now();
    // In chunks the relays' queues hold, each once the exit took the last.
    let mut pushed = 0;
    for chunk in packets.chunks(200) {
        sender
            .peer
            .send_packets(fed.relays[0].node.peer_id(), chunk)
            .await
            .unwrap();
        pushed += chunk.len() as u64;
        let wait = Instant::now() + Duration::from_secs(120);
        while queue_counts(&fed).0 < pushed && Instant::now() < wait {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let ingest = ingest_started.elapsed();
    assert_eq!(queue_counts(&fed).0, leaks as u64, "every leak queued");

    // Resume, and time the drain.
    eprintln!("{leaks} leaks queued; draining");
    let exit_pid = fed.exit.pid();
    let cpu_before = process_cpu(exit_pid);
    let opened = Instant::now();
    fed.queue(&["resume"]).expect("leak-node queue resume");
    let deadline = Instant::now() + Duration::from_secs(300);
    // Cheap to look at: the end of smtp-sink's output.
    while sink.received_count() - baseline < leaks {
        assert!(
            Instant::now() < deadline,
            "only {} of {leaks} delivered after 5 minutes",
            sink.received_count() - baseline
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Then until every outcome is committed.
    while queue_counts(&fed).0 > 0 {
        assert!(Instant::now() < deadline, "outcomes not committed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let drained = opened.elapsed();
    let cpu = process_cpu(exit_pid) - cpu_before;
    let exit_rate = leaks as f64 / drained.as_secs_f64();
    let cpu_per_leak = cpu.as_secs_f64() * 1e6 / leaks as f64;
    assert_eq!(
        sink.received_count() - baseline,
        leaks,
        "smtp-sink got each leak once"
    );
    assert_eq!(
        queue_counts(&fed).1,
        leaks as u64,
        "every leak ended delivered"
    );
    let ingest_rate = leaks as f64 / ingest.as_secs_f64();
    let ratio = exit_rate / source_rate;
    let reusing_ratio = exit_rate / reusing_rate;
    let placement = if pinned {
        "the exit process, smtp-sink and smtp-source on CPU 0; relays and sender on CPU 1"
    } else {
        "unpinned"
    };
    println!(
        "exit benchmark: {leaks} leaks, {connections} SMTP connections, into smtp-sink on loopback ({placement})"
    );
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| smtp-source into smtp-sink (a connection per message, its default) | {source_rate:.0} msg/s |"
    );
    println!("| smtp-source -d into smtp-sink (connections kept) | {reusing_rate:.0} msg/s |");
    println!("| exit draining its queue into smtp-sink | {exit_rate:.0} leaks/s |");
    println!("| ratio to smtp-source (target >= 0.8) | {ratio:.2} |");
    println!("| ratio to smtp-source -d | {reusing_ratio:.2} |");
    println!("| exit process CPU per leak delivered | {cpu_per_leak:.0} µs |");
    println!(
        "| leaks taken through 3 hops (decrypted, checked, queued durably) | {ingest_rate:.0} leaks/s |"
    );
    if let Some(path) = arg("--json") {
        let json = serde_json::json!({
            "leaks": leaks,
            "connections": connections,
            "pinned": pinned,
            "smtp_source_rate": source_rate,
            "smtp_source_reusing_rate": reusing_rate,
            "exit_rate": exit_rate,
            "ratio": ratio,
            "reusing_ratio": reusing_ratio,
            "exit_cpu_us_per_leak": cpu_per_leak,
            "ingest_rate": ingest_rate,
        });
        std::fs::write(path, format!("{json}\n")).unwrap();
    }
    fed.shutdown().await;
}
