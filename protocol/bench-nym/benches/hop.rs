//! One hop of Leak's packet format next to one hop of Nym's
//! `sphinx-packet` 0.8.0, at the same payload size (Leak's
//! [`PAYLOAD_LEN`], 3,566 bytes) and the same 3,000-byte message, in one
//! criterion run on one machine: the comparison issue 13 asks for
//! (hop processing at most 1.5 × Leak's own X25519 exchange and at most
//! 0.5 × Nym's hop).
//!
//! | benchmark (group `hop`) | what is timed |
//! |---|---|
//! | `leak_x25519` | one X25519 exchange as a Leak hop does it (`MixSecret::diffie_hellman`) |
//! | `leak_payload_layer` | one hop's LIONESS decryption of a payload, key derivation included |
//! | `leak_relay_hop` | the first hop of a 3-hop Leak packet (`Forward`) |
//! | `leak_exit_hop` | the last hop of a 3-hop Leak packet (`Final`, its zero check) |
//! | `nym_relay_hop` | the first hop of a 3-hop Nym Sphinx packet (`SphinxPacket::process`) |
//! | `nym_x25519` | one X25519 exchange by `x25519-dalek` (the Montgomery ladder Nym uses) |
//!
//! Nym's `process` consumes the packet, so each iteration gets a fresh
//! copy parsed outside the timed section (`iter_batched`). Keys and
//! messages are deterministic. Run with `scripts/bench-nym.sh`, which
//! prints the table with the ratios.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{convert::Infallible, hint::black_box, time::Duration};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use leak_protocol::{
    Delay, MixSecret, NodeId, PathHop, Processed, build_packet,
    crypto::{LionessKey, SymmetricKey},
    process_packet,
    sphinx::{FinalPayload, PACKET_LEN, PAYLOAD_LEN},
};
use rand_core::{TryCryptoRng, TryRng};
use sphinx_packet::{
    SphinxPacket,
    constants::{DESTINATION_ADDRESS_LENGTH, IDENTIFIER_LENGTH, NODE_ADDRESS_LENGTH},
    header::delays,
    packet::builder::SphinxPacketBuilder,
    route::{Destination, DestinationAddressBytes, Node as NymNode, NodeAddressBytes},
};

/// The message both packets carry: a full leak's worth.
const MESSAGE_LEN: usize = 3000;

/// Deterministic bytes: an endless BLAKE3 XOF stream named by a label.
struct BenchRng(blake3::OutputReader);

impl BenchRng {
    fn new(label: &str) -> Self {
        Self(
            blake3::Hasher::new_derive_key("leak nym comparison 2026-12")
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

fn message() -> Vec<u8> {
    let mut message = vec![0u8; MESSAGE_LEN];
    BenchRng::new("message")
        .try_fill_bytes(&mut message)
        .unwrap();
    message
}

fn bench_hop(c: &mut Criterion) {
    let message = message();
    let mut rng = BenchRng::new("keys");
    let secrets: Vec<[u8; 32]> = (0..3).map(|_| rng.bytes()).collect();

    // Leak: a 3-hop packet, walked to its exit once to check it works.
    let leak_secrets: Vec<MixSecret> = secrets.iter().map(|s| MixSecret::from_bytes(*s)).collect();
    let path: Vec<PathHop> = leak_secrets
        .iter()
        .map(|secret| PathHop {
            node: NodeId(rng.bytes()),
            key: secret.public(),
            key_hint: 7,
            delay: Delay(1_500),
        })
        .collect();
    let first = build_packet(&path, &message, &mut rng).unwrap();
    let mut last = first.clone();
    for secret in &leak_secrets[..2] {
        last = match process_packet(last.as_bytes(), secret) {
            Processed::Forward(forward) => forward.packet,
            other => panic!("a Leak relay did not forward: {other:?}"),
        };
    }
    match process_packet(last.as_bytes(), &leak_secrets[2]) {
        Processed::Final(done) => match done.payload {
            FinalPayload::Exit { message: got } => assert_eq!(got.as_slice(), message),
            FinalPayload::Mailbox { .. } => panic!("the Leak exit found a mailbox"),
        },
        other => panic!("the Leak exit did not finish: {other:?}"),
    }

    // Nym: a 3-hop packet with the same payload size and message.
    let nym_secrets: Vec<x25519_dalek::StaticSecret> = secrets
        .iter()
        .map(|s| x25519_dalek::StaticSecret::from(*s))
        .collect();
    let route: Vec<NymNode> = nym_secrets
        .iter()
        .enumerate()
        .map(|(i, secret)| {
            NymNode::new(
                NodeAddressBytes::from_bytes([i as u8 + 1; NODE_ADDRESS_LENGTH]),
                x25519_dalek::PublicKey::from(secret),
            )
        })
        .collect();
    let destination = Destination::new(
        DestinationAddressBytes::from_bytes([9u8; DESTINATION_ADDRESS_LENGTH]),
        [4u8; IDENTIFIER_LENGTH],
    );
    let nym_delays =
        delays::generate_from_average_duration(route.len(), Duration::from_millis(1500));
    let initial = x25519_dalek::StaticSecret::from(rng.bytes::<32>());
    let nym_packet = SphinxPacketBuilder::new()
        .with_payload_size(PAYLOAD_LEN)
        .with_initial_secret(&initial)
        .build_packet(&message, &route, &destination, &nym_delays)
        .unwrap();
    assert_eq!(nym_packet.payload.len(), PAYLOAD_LEN);
    let nym_bytes = nym_packet.to_bytes();
    SphinxPacket::from_bytes(&nym_bytes)
        .unwrap()
        .process(&nym_secrets[0])
        .unwrap();

    let peer = leak_secrets[1].public().0;
    let mut group = c.benchmark_group("hop");
    group.bench_function("leak_x25519", |b| {
        b.iter(|| black_box(&leak_secrets[0]).diffie_hellman(black_box(&peer)));
    });
    let layer_key = SymmetricKey(rng.bytes());
    let mut payload = [0u8; PAYLOAD_LEN];
    group.bench_function("leak_payload_layer", |b| {
        b.iter(|| LionessKey::derive(black_box(&layer_key)).decrypt(black_box(&mut payload)));
    });
    group.throughput(Throughput::Bytes(PACKET_LEN as u64));
    group.bench_function("leak_relay_hop", |b| {
        b.iter(|| process_packet(black_box(first.as_bytes()), black_box(&leak_secrets[0])));
    });
    group.bench_function("leak_exit_hop", |b| {
        b.iter(|| process_packet(black_box(last.as_bytes()), black_box(&leak_secrets[2])));
    });
    group.throughput(Throughput::Bytes(nym_bytes.len() as u64));
    group.bench_function("nym_relay_hop", |b| {
        b.iter_batched(
            || SphinxPacket::from_bytes(&nym_bytes).unwrap(),
            |packet| packet.process(black_box(&nym_secrets[0])).unwrap(),
            BatchSize::SmallInput,
        );
    });
    let nym_peer = x25519_dalek::PublicKey::from(&nym_secrets[1]);
    group.bench_function("nym_x25519", |b| {
        b.iter(|| black_box(&nym_secrets[0]).diffie_hellman(black_box(&nym_peer)));
    });
    group.finish();
}

criterion_group!(benches, bench_hop);
criterion_main!(benches);
