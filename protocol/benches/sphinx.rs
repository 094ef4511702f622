//! Criterion benchmarks of the packet format, at the real packet size
//! ([`PACKET_LEN`] bytes on every link).
//!
//! | group | benchmark | what is timed |
//! |---|---|---|
//! | `build_packet` | `3_hops`, `5_hops` | a client wrapping a full leak (3000 bytes) |
//! | `process_packet` | `relay_hop` | the first hop of a 3-hop packet (`Forward`) |
//! | `process_packet` | `exit_hop` | the last hop of a 3-hop packet (`Final`, AEAD open) |
//! | `build_reply_block` | `3_hops` | a client building one reply block |
//! | `x25519` | `diffie_hellman` | one scalar multiplication, the baseline a hop is compared with |
//! | `x25519` | `ladder` | the same by `x25519-dalek`'s Montgomery ladder, for comparison |
//! | `x25519` | `public_key` | one fixed-base scalar multiplication (a client's ephemeral key) |
//!
//! The project's targets are a median of at most 45 µs per hop processed
//! and 300 µs per 5-hop packet built; `scripts/bench.sh` runs these
//! benchmarks and prints the medians next to the targets.
//!
//! Keys, messages and randomness are deterministic (BLAKE3 in XOF mode), so
//! every run measures the same work. Run with
//! `cargo bench -p leak-protocol --bench sphinx`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{convert::Infallible, hint::black_box};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use leak_protocol::{
    Delay, MailboxId, MixSecret, NodeId, PACKET_LEN, PathHop, Processed, build_packet,
    build_reply_block, process_packet,
    sphinx::{FinalPayload, MESSAGE_CAPACITY},
};
use rand_core::{TryCryptoRng, TryRng};

/// The size of the message a benchmarked packet carries: a full leak.
const MESSAGE_LEN: usize = 3000;
const _: () = assert!(MESSAGE_LEN <= MESSAGE_CAPACITY);

/// Deterministic randomness: an endless BLAKE3 XOF stream named by a label.
/// Not a secure generator for real keys (anyone who knows the label knows
/// every byte); it exists so benchmark runs are reproducible.
struct BenchRng(blake3::OutputReader);

impl BenchRng {
    fn new(label: &str) -> Self {
        Self(
            blake3::Hasher::new_derive_key("leak benchmarks 2026-11")
                .update(label.as_bytes())
                .finalize_xof(),
        )
    }

    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        self.0.fill(&mut out);
        out
    }
}

impl TryRng for BenchRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(u32::from_le_bytes(self.bytes()))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(u64::from_le_bytes(self.bytes()))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.0.fill(dst);
        Ok(())
    }
}

impl TryCryptoRng for BenchRng {}

/// A node of the benchmark network.
struct Node {
    id: NodeId,
    secret: MixSecret,
}

/// `count` nodes with keys drawn from the label `"nodes"`.
fn nodes(count: usize) -> Vec<Node> {
    let mut rng = BenchRng::new("nodes");
    (0..count)
        .map(|_| Node {
            id: NodeId(rng.bytes()),
            secret: MixSecret::from_bytes(rng.bytes()),
        })
        .collect()
}

/// The path through `nodes`, in order, with realistic delays.
fn path(nodes: &[Node]) -> Vec<PathHop> {
    nodes
        .iter()
        .map(|node| PathHop {
            node: node.id,
            key: node.secret.public(),
            key_hint: 7,
            delay: Delay(1_500),
        })
        .collect()
}

/// A full leak's worth of message bytes.
fn message() -> Vec<u8> {
    let mut message = vec![0u8; MESSAGE_LEN];
    BenchRng::new("message")
        .try_fill_bytes(&mut message)
        .unwrap();
    message
}

fn bench_build_packet(c: &mut Criterion) {
    let message = message();
    let mut group = c.benchmark_group("build_packet");
    for hops in [3, 5] {
        let nodes = nodes(hops);
        let path = path(&nodes);
        // One stream for every iteration: each packet gets fresh ephemeral keys.
        let mut rng = BenchRng::new("build_packet");
        group.bench_function(format!("{hops}_hops"), |b| {
            b.iter(|| build_packet(black_box(&path), black_box(&message), &mut rng).unwrap());
        });
    }
    group.finish();
}

fn bench_process_packet(c: &mut Criterion) {
    let message = message();
    let nodes = nodes(3);
    let path = path(&nodes);
    let mut rng = BenchRng::new("process_packet");
    let first = build_packet(&path, &message, &mut rng).unwrap();

    // Walk the packet to its last hop, checking each step does what the
    // benchmark claims to measure.
    let mut packet = first.clone();
    for node in &nodes[..2] {
        packet = match process_packet(packet.as_bytes(), &node.secret) {
            Processed::Forward(forward) => forward.packet,
            other => panic!("a relay hop did not forward: {other:?}"),
        };
    }
    let last = packet;
    match process_packet(last.as_bytes(), &nodes[2].secret) {
        Processed::Final(done) => match done.payload {
            FinalPayload::Exit { message: got } => assert_eq!(got.as_slice(), message),
            FinalPayload::Mailbox { .. } => panic!("the exit hop found a mailbox"),
        },
        other => panic!("the exit hop did not finish: {other:?}"),
    }

    let mut group = c.benchmark_group("process_packet");
    group.throughput(Throughput::Bytes(PACKET_LEN as u64));
    group.bench_function("relay_hop", |b| {
        b.iter(|| process_packet(black_box(first.as_bytes()), black_box(&nodes[0].secret)));
    });
    group.bench_function("exit_hop", |b| {
        b.iter(|| process_packet(black_box(last.as_bytes()), black_box(&nodes[2].secret)));
    });
    group.finish();
}

fn bench_build_reply_block(c: &mut Criterion) {
    let nodes = nodes(3);
    let path = path(&nodes);
    let mailbox = MailboxId(BenchRng::new("mailbox").bytes());
    let mut rng = BenchRng::new("build_reply_block");
    let mut group = c.benchmark_group("build_reply_block");
    group.bench_function("3_hops", |b| {
        b.iter(|| build_reply_block(black_box(&path), black_box(mailbox), &mut rng).unwrap());
    });
    group.finish();
}

fn bench_x25519(c: &mut Criterion) {
    let nodes = nodes(2);
    let peer = nodes[1].secret.public().0;
    let mut group = c.benchmark_group("x25519");
    group.bench_function("diffie_hellman", |b| {
        b.iter(|| black_box(&nodes[0].secret).diffie_hellman(black_box(&peer)));
    });
    // The plain Montgomery ladder, which `diffie_hellman` beats on CPUs with
    // AVX2 by multiplying on the Edwards curve instead (see `crypto::x25519`).
    let secret = nodes[0].secret.to_bytes();
    group.bench_function("ladder", |b| {
        b.iter(|| x25519_dalek::x25519(black_box(secret), black_box(peer)));
    });
    group.bench_function("public_key", |b| {
        b.iter(|| leak_protocol::crypto::x25519_public(black_box(&secret)));
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_build_packet,
    bench_process_packet,
    bench_build_reply_block,
    bench_x25519
);
criterion_main!(benches);
