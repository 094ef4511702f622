//! The anonymity measurement (`scripts/anonymity.sh`): always-on agents on
//! the virtual federation, 10 leaks a minute in total, for N senders and a
//! set of settings; prints one table of every adversary's effective
//! anonymity set 2^H (median and 10th percentile over the measured leaks),
//! two ε against the global passive adversary, delivery latency and each
//! sender's bandwidth.
//!
//! The two ε (means over the measured leaks; `leak_tests::anonymity`):
//! - `eps A2 (Loopix)`: Loopix's ε as the paper defines it (Piotrowska et
//!   al. 2017, §4.3, equation 3): the leak's packet and each of 16
//!   challenger senders' leak-shaped packet emitted nearest in time are
//!   labelled (the adversary is told which messages are payload), the
//!   labels propagate through the relays' pools, and ε = |ln(p₀/p₁)| at
//!   the exit when the email leaves, mean over challengers;
//! - `eps A2 (sender)`: sender-level, stricter than the paper's game: A2's
//!   posterior over all senders (cover included, not told which packets
//!   are payload), mean |ln(p₀/p₁)| against every other sender.
//!
//! ```text
//! anonymity [--senders 50,200,1000] [--settings default,before,mu20,...]
//!           [--warmup-min 20] [--measure-min 40] [--seed 1]
//!           [--big-settings default,...] [--jobs 2]
//! ```
//! Runs go `--jobs` at a time (threads); the table is printed at the end.
//! `--big-settings` limits which settings run at the largest N (the
//! slowest runs); by default all of them.

use std::time::Instant;

use anyhow::{Context as _, bail};
use leak_client::cover::CoverConfig;
use leak_tests::{
    anonymity::{Report, Summary, evaluate, trace_of},
    harness::{Settings, VirtualFederation},
};
use rand::{RngExt as _, SeedableRng as _, rngs::StdRng};

const MINUTE: u64 = 60_000;
/// Leaks per minute, all senders together (Leak 2014's traffic).
const LEAKS_PER_MINUTE: f64 = 10.0;

/// One setting of the sweep.
#[derive(Debug, Clone, Copy)]
struct Setting {
    name: &'static str,
    mean_delay_ms: u32,
    cover: CoverConfig,
    with_cover: bool,
    relay_loop_interval_ms: u64,
    hops: usize,
}

fn settings() -> Vec<Setting> {
    let defaults = CoverConfig::default();
    let base = Setting {
        name: "default",
        mean_delay_ms: 60_000,
        cover: defaults,
        with_cover: true,
        relay_loop_interval_ms: 5_000,
        hops: 4,
    };
    let with = |name, mu: u32, send: u64| Setting {
        name,
        mean_delay_ms: mu,
        cover: CoverConfig {
            send_interval_ms: send,
            ..defaults
        },
        ..base
    };
    vec![
        base,
        Setting {
            name: "before",
            mean_delay_ms: 200,
            hops: 3,
            with_cover: false,
            relay_loop_interval_ms: 0,
            ..base
        },
        with("mu20", 20_000, defaults.send_interval_ms),
        with("mu120", 120_000, defaults.send_interval_ms),
        with("send6", 60_000, 6_000),
        with("send24", 60_000, 24_000),
        Setting {
            name: "noloops",
            relay_loop_interval_ms: 0,
            ..base
        },
        Setting {
            name: "hops3",
            hops: 3,
            ..base
        },
        with("send12", 60_000, 12_000),
        Setting {
            name: "loop0.2",
            cover: CoverConfig {
                loop_share: 0.2,
                ..defaults
            },
            ..base
        },
    ]
}

struct Options {
    senders: Vec<usize>,
    settings: Vec<String>,
    big_settings: Option<Vec<String>>,
    warmup_min: u64,
    measure_min: u64,
    seed: u64,
    jobs: usize,
}

fn parse() -> anyhow::Result<Options> {
    let mut o = Options {
        senders: vec![50, 200, 1000],
        settings: settings().iter().map(|s| s.name.to_owned()).collect(),
        big_settings: None,
        warmup_min: 20,
        measure_min: 40,
        seed: 1,
        jobs: 2,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        let list = || value.split(',').map(str::to_owned).collect::<Vec<_>>();
        match flag.as_str() {
            "--senders" => {
                o.senders = value
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .context("--senders: numbers")?;
            }
            "--settings" => o.settings = list(),
            "--big-settings" => o.big_settings = Some(list()),
            "--warmup-min" => o.warmup_min = value.parse().context("--warmup-min")?,
            "--measure-min" => o.measure_min = value.parse().context("--measure-min")?,
            "--seed" => o.seed = value.parse().context("--seed")?,
            "--jobs" => o.jobs = value.parse::<usize>().context("--jobs")?.max(1),
            other => bail!("unknown option {other}"),
        }
    }
    Ok(o)
}

/// Runs one setting with `n` agents; returns its report.
fn run(n: usize, s: &Setting, o: &Options) -> Report {
    let settings = Settings {
        relays: 16,
        exits: 4,
        mean_delay_ms: s.mean_delay_ms,
        hops: s.hops,
        agents: s.cover,
        cover: s.with_cover,
        relay_loop_interval_ms: s.relay_loop_interval_ms,
        receipt_delay_ms: if s.with_cover { s.mean_delay_ms } else { 0 },
        record_links: true,
        seed: o.seed,
        ..Settings::default()
    };
    let mut fed = VirtualFederation::new(settings);
    let relays: Vec<_> = fed
        .directory()
        .into_iter()
        .filter(|d| d.roles.relay && !d.roles.exit)
        .collect();
    let mixes = relays.iter().filter(|d| d.is_mix()).count();
    eprintln!(
        "N={n} {}: layers of the {} relays: {} entry, {mixes} mix",
        s.name,
        relays.len(),
        relays.len() - mixes
    );
    for _ in 0..n {
        fed.add_agent();
    }
    fed.run_for(o.warmup_min * MINUTE);
    let from = fed.now_ms();
    let until = from + o.measure_min * MINUTE;
    let mut rng = StdRng::seed_from_u64(o.seed ^ 0x5eed);
    let mut at = from as f64;
    let mut i = 0u64;
    loop {
        // Poisson hand-offs: exponential gaps of mean 60 s / 10.
        let u: f64 = 1.0 - rng.random::<f64>();
        at += -u.ln() * MINUTE as f64 / LEAKS_PER_MINUTE;
        if at as u64 >= until {
            break;
        }
        fed.run_until(at as u64);
        let agent = rng.random_range(0..n);
        fed.hand_off(agent, &format!("r{i}@example.org"), "It was me.");
        i += 1;
    }
    // Long enough for the leaks of the window's end to arrive: ten loop
    // slots (a send interval over the loop share), the path's tail (an
    // Erlang(4) passes 18 means with probability 2e-5; 4.5 means a hop).
    let slot = s.cover.send_interval_ms as f64 / s.cover.loop_share.max(0.01);
    let tail = 4.5 * s.hops as f64 * f64::from(s.mean_delay_ms);
    let drain = (10.0 * slot + tail) as u64 + 2 * MINUTE;
    fed.run_until(until + drain);
    let trace = trace_of(&mut fed, from, until);
    evaluate(&trace)
}

fn set(x: Summary) -> String {
    format!("{:.1} ({:.1})", x.median, x.p10)
}

fn main() -> anyhow::Result<()> {
    let o = parse()?;
    let all = settings();
    let chosen: Vec<Setting> = o
        .settings
        .iter()
        .map(|name| {
            all.iter()
                .find(|s| s.name == name)
                .copied()
                .with_context(|| format!("unknown setting {name}"))
        })
        .collect::<anyhow::Result<_>>()?;
    let biggest = o.senders.iter().copied().max().unwrap_or(0);
    let mut work: Vec<(usize, Setting)> = Vec::new();
    for &n in &o.senders {
        for s in &chosen {
            let skipped = n == biggest
                && o.senders.len() > 1
                && o.big_settings
                    .as_ref()
                    .is_some_and(|b| !b.iter().any(|x| x == s.name));
            if !skipped {
                work.push((n, *s));
            }
        }
    }
    // The biggest runs first, so the threads finish together.
    let order: Vec<usize> = {
        let mut idx: Vec<usize> = (0..work.len()).collect();
        idx.sort_by_key(|&i| std::cmp::Reverse(work[i].0));
        idx
    };
    let next = std::sync::Mutex::new(order.into_iter());
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..o.jobs {
            scope.spawn(|| {
                // The lock is released once the next index is taken.
                while let Some(i) = next.lock().ok().and_then(|mut it| it.next()) {
                    let (n, s) = work[i];
                    let started = Instant::now();
                    let r = run(n, &s, &o);
                    eprintln!(
                        "N={n} {}: {} of {} leaks delivered, {:.0} s",
                        s.name,
                        r.delivered,
                        r.handed,
                        started.elapsed().as_secs_f64()
                    );
                    if let Ok(mut all) = results.lock() {
                        all.push((i, r));
                    }
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by_key(|(i, _)| *i);
    let rows: Vec<(usize, Setting, Report)> = results
        .into_iter()
        .map(|(i, r)| (work[i].0, work[i].1, r))
        .collect();
    println!(
        "Virtual federation: 16 relays + 4 exits, 4 hops (3 for before and hops3), {LEAKS_PER_MINUTE} leaks/min in total, \
         {} min warm-up, {} min measured, seed {}.",
        o.warmup_min, o.measure_min, o.seed
    );
    println!(
        "2^H: median (10th percentile) over the measured leaks; eps A2 (Loopix): the paper's §4.3 game \
         (payload labelled), mean |ln(p0/p1)| over the (leak, challenger) pairs not told apart \
         outright, delta the share that were; eps A2 (sender): the posterior over all senders, mean \
         over leaks; \
         latency: hand-off to email; MB/day: one sender's packets and polls."
    );
    println!();
    println!(
        "| N | setting | mu s | send s | loops | A1 2^H | A2 2^H | A3 2^H | A4 2^H | eps A2 (Loopix) | delta | eps A2 (sender) | p50 min | p99 min | MB/day | leaks |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (n, s, r) in rows {
        let cover = if s.with_cover {
            format!("{:.0}", s.cover.send_interval_ms as f64 / 1000.0)
        } else {
            "off".to_owned()
        };
        println!(
            "| {n} | {} | {:.1} | {cover} | {:.1} | {} | {} | {} | {} | {:.3} | {:.4} | {:.3} | {:.1} | {:.1} | {:.1} | {} |",
            s.name,
            f64::from(s.mean_delay_ms) / 1000.0,
            s.cover.loop_share,
            set(r.a1),
            set(r.a2),
            set(r.a3),
            set(r.a4),
            r.epsilon,
            r.epsilon_delta,
            r.epsilon_sender,
            r.latency_p50_ms / MINUTE as f64,
            r.latency_p99_ms / MINUTE as f64,
            r.bytes_per_sender_day / 1e6,
            r.delivered,
        );
    }
    Ok(())
}
