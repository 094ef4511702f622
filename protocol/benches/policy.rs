//! Criterion benchmarks of the moderation policy.
//!
//! | benchmark | what is timed |
//! |---|---|
//! | `check_text/2000_bytes` | the built-in policy, rules and model, checking a benign 2,000-byte text (target < 300 µs) |
//! | `check_text/short` | the same for a one-line confession |
//! | `normalize/2000_bytes` | computing the views of the 2,000-byte text |
//! | `model/2000_bytes` | the built-in model alone scoring the words view of that text |
//! | `stamp/solve_default_bits` | solving a stamp at the built-in policy's `stamp_bits` (one message id per iteration) |
//! | `stamp/verify` | checking one stamp |
//!
//! Run with `cargo bench -p leak-protocol --bench policy`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use leak_protocol::{
    NodeId,
    payload::MessageId,
    policy::{Policy, solve_stamp, verify_stamp, views},
};

/// A benign text of exactly 2,000 bytes made of ordinary confessions, with
/// a little punctuation, digits and non-ASCII so every normalisation step runs.
fn long_text() -> String {
    let sentences = [
        "I never told you, but I think you're amazing at your job. ",
        "Honestly, I broke your vase in 2019 and blamed the cat. ",
        "You killed it at karaoke last Friday — everyone thought so! ",
        "I have a crush on you and I don't know what to do about it. ",
        "You're underpaid; the new hire earns more than you do. ",
        "I lied to you about the trip, and I'm sorry. Café au lait? ",
    ];
    let mut text = String::new();
    let mut i = 0;
    while text.len() < 2000 {
        text.push_str(sentences[i % sentences.len()]);
        i += 1;
    }
    while text.len() > 2000 {
        text.pop();
    }
    while text.len() < 2000 {
        text.push(' ');
    }
    text
}

fn bench_check(c: &mut Criterion) {
    let policy = Policy::builtin();
    let text = long_text();
    assert_eq!(text.len(), 2000);
    assert!(policy.check_text(&text).is_accepted());
    let mut g = c.benchmark_group("check_text");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("2000_bytes", |b| {
        b.iter(|| policy.check_text(black_box(&text)))
    });
    let short = "I have a crush on you, and I've had it since the office party.";
    g.throughput(Throughput::Bytes(short.len() as u64));
    g.bench_function("short", |b| b.iter(|| policy.check_text(black_box(short))));
    g.finish();
    let mut g = c.benchmark_group("normalize");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("2000_bytes", |b| b.iter(|| views(black_box(&text))));
    g.finish();
    let model = policy.model().expect("the built-in policy has a model");
    let words = views(&text).unquoted;
    let mut g = c.benchmark_group("model");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("2000_bytes", |b| b.iter(|| model.scores(black_box(&words))));
    g.finish();
}

fn bench_stamp(c: &mut Criterion) {
    let policy = Policy::builtin();
    let bits = policy.limits().stamp_bits;
    let recipient = [3u8; 32];
    let exit = NodeId([5; 32]);
    let mut g = c.benchmark_group("stamp");
    g.sample_size(10);
    let mut n = 0u64;
    g.bench_function("solve_default_bits", |b| {
        b.iter(|| {
            n += 1;
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&n.to_le_bytes());
            solve_stamp(&recipient, &exit, 20_000, bits, &MessageId(id))
        })
    });
    let id = MessageId([1; 16]);
    let stamp = solve_stamp(&recipient, &exit, 20_000, bits, &id);
    g.sample_size(100);
    g.bench_function("verify", |b| {
        b.iter(|| verify_stamp(black_box(&stamp), &recipient, &exit, &id, bits, 20_000))
    });
    g.finish();
    eprintln!("stamp_bits = {bits}");
}

criterion_group!(benches, bench_check, bench_stamp);
criterion_main!(benches);
