//! The exit benchmark: how many leaks per second an exit delivers into
//! Postfix's `smtp-sink`, next to the rate of Postfix's own `smtp-source`
//! against the same sink in the same run (target: at least 0.8 of it).
//!
//! Two relays and an exit run in this process (release build), over
//! loopback TCP. A sender pushes `--leaks` real leaks (stamp, reply block,
//! three hops) through them while the exit's delivery is paused, so every
//! leak is taken and queued durably first (file and database, synced); then
//! delivery resumes, and the exit's rate is the leaks delivered over the
//! time it takes to drain the queue, each outcome committed durably and
//! each leak file scrubbed. `smtp-source` sends the same number of messages over the same
//! number of connections.
//!
//! ```text
//! cargo run --release -p leak-tests --example exit_bench -- [--leaks N] [--connections N] [--json FILE]
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use leak_node::{config::Transport, metrics::Metrics};
use leak_tests::{
    exit::{Draft, Federation},
    mail::{SmtpSink, smtp_source_rate_reusing, smtp_source_rate_to},
};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let leaks: usize = arg("--leaks").map_or(2000, |v| v.parse().unwrap());
    let connections: u32 = arg("--connections").map_or(8, |v| v.parse().unwrap());
    // Counting only (no dump files), so the sink costs as little as it can
    // and the measure is of the sender.
    let sink = SmtpSink::counting();

    // Postfix's own load generator against the same sink: the reference,
    // the best of three runs. Its default connects for each message; with
    // `-d` a session keeps its connection, as the exit's pool does.
    let best = |run: &dyn Fn() -> f64| (0..3).map(|_| run()).fold(0.0, f64::max);
    let sessions = connections as usize;
    let source_rate =
        best(&|| smtp_source_rate_to(sink.port(), leaks, sessions, "bench@leak.test"));
    let reusing_rate =
        best(&|| smtp_source_rate_reusing(sink.port(), leaks, sessions, "bench@leak.test"));
    let baseline = sink.received_count();
    assert_eq!(
        baseline,
        leaks * 6,
        "smtp-sink counted every smtp-source message"
    );

    let dir = tempfile::tempdir().unwrap();
    let url = sink.smtp_url();
    let fed = Federation::start(dir.path(), 2, move |c| {
        c.exit.transport = Transport::Smtp;
        c.exit.smtp_url = url;
        c.exit.smtp_connections = connections;
        c.exit.max_rate = 1e9;
        c.exit.min_rate = 1.0;
    })
    .await;
    // Delivery paused (as `leak-node queue pause` does): every leak is
    // taken and queued first.
    let exit = fed.exit.node.exit().unwrap().clone();
    exit.set_paused(true);
    let sender = fed.sender();
    // Built ahead (stamps, onion layers), so the run measures the nodes.
    let packets: Vec<_> = (0..leaks)
        .map(|i| {
            let to = format!("bench{i}@leak.test");
            let draft = Draft::new(&to, "You killed it at karaoke.");
            sender.build(&fed, (0, 1), &draft).0
        })
        .collect();
    let metrics = fed.exit.node.metrics();
    let accepted = || Metrics::get(&metrics.exit_leaks, "outcome", "accepted");
    let started = Instant::now();
    // In chunks the relays' queues hold, each once the exit took the last.
    let mut pushed = 0;
    for chunk in packets.chunks(200) {
        sender
            .peer
            .send_packets(fed.relays[0].node.peer_id(), chunk)
            .await
            .unwrap();
        pushed += chunk.len() as u64;
        let wait = Instant::now() + Duration::from_secs(60);
        while accepted() < pushed && Instant::now() < wait {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let ingest = started.elapsed();
    let waiting = || {
        let c = exit.counts().unwrap();
        ["queued", "retrying", "sending"]
            .iter()
            .map(|s| c.states.get(*s).copied().unwrap_or(0))
            .sum::<u64>() as usize
    };
    let wait = Instant::now() + Duration::from_secs(60);
    while waiting() < leaks && Instant::now() < wait {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(waiting(), leaks, "every leak queued");

    // Resume, and time the drain.
    let opened = Instant::now();
    exit.set_paused(false);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        // Cheap: the end of smtp-sink's output.
        let n = sink.received_count() - baseline;
        if n >= leaks && waiting() == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} of {leaks} delivered after 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let exit_rate = leaks as f64 / opened.elapsed().as_secs_f64();
    assert_eq!(
        sink.received_count() - baseline,
        leaks,
        "smtp-sink got each leak once"
    );
    let delivered = exit.counts().unwrap().states.get("delivered").copied();
    assert_eq!(delivered, Some(leaks as u64), "every leak ended delivered");
    let ingest_rate = leaks as f64 / ingest.as_secs_f64();
    let ratio = exit_rate / source_rate;
    let reusing_ratio = exit_rate / reusing_rate;
    println!(
        "exit benchmark: {leaks} leaks, {connections} SMTP connections, into smtp-sink on loopback"
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
    println!(
        "| leaks taken through 3 hops (decrypted, checked, queued durably) | {ingest_rate:.0} leaks/s |"
    );
    if let Some(path) = arg("--json") {
        let json = format!(
            "{{\"leaks\":{leaks},\"connections\":{connections},\"smtp_source_rate\":{source_rate:.1},\"smtp_source_reusing_rate\":{reusing_rate:.1},\"exit_rate\":{exit_rate:.1},\"ratio\":{ratio:.3},\"reusing_ratio\":{reusing_ratio:.3},\"ingest_rate\":{ingest_rate:.1}}}\n"
        );
        std::fs::write(path, json).unwrap();
    }
    drop(exit);
    fed.shutdown().await;
}
