//! Helpers shared by the integration tests: fixed keys and fixed randomness.

#![allow(dead_code)]

use leak_protocol::{Delay, MixSecret, NodeId, PathHop};
use rand_core::{Infallible, TryCryptoRng, TryRng};

/// Randomness that hands out a fixed byte string in order, so a test vector
/// can list exactly the random bytes a packet consumed.
pub struct ByteRng {
    bytes: Vec<u8>,
    pos: usize,
}

impl ByteRng {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self { bytes, pos: 0 }
    }

    /// Deterministic bytes named by `label` (see [`label_bytes`]).
    pub fn from_label(label: &str, len: usize) -> Self {
        Self::new(label_bytes(label, len))
    }

    /// How many bytes were consumed.
    pub fn consumed(&self) -> &[u8] {
        &self.bytes[..self.pos]
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }
}

/// `len` deterministic bytes named by `label`: the BLAKE3 XOF in
/// `derive_key` mode with context "leak test vectors 2026-11" over the label.
/// Test vectors list the bytes themselves, so nobody needs to reproduce this.
pub fn label_bytes(label: &str, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new_derive_key("leak test vectors 2026-11")
        .update(label.as_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

impl TryRng for ByteRng {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        let end = self.pos + dst.len();
        assert!(end <= self.bytes.len(), "ByteRng exhausted");
        dst.copy_from_slice(&self.bytes[self.pos..end]);
        self.pos = end;
        Ok(())
    }
}

impl TryCryptoRng for ByteRng {}

/// A node of a test network: identity and mix secret from fixed bytes.
pub struct TestNode {
    pub id: NodeId,
    pub secret: MixSecret,
}

pub fn test_nodes(count: usize, label: &str) -> Vec<TestNode> {
    (0..count)
        .map(|i| {
            let bytes = label_bytes(&format!("{label} node {i}"), 64);
            let mut id = [0u8; 32];
            id.copy_from_slice(&bytes[..32]);
            let mut secret = [0u8; 32];
            secret.copy_from_slice(&bytes[32..]);
            TestNode {
                id: NodeId(id),
                secret: MixSecret::from_bytes(secret),
            }
        })
        .collect()
}

pub fn path_of(nodes: &[TestNode], delays: &[u32], hint: u8) -> Vec<PathHop> {
    nodes
        .iter()
        .zip(delays)
        .map(|(n, &d)| PathHop {
            node: n.id,
            key: n.secret.public(),
            key_hint: hint,
            delay: Delay(d),
        })
        .collect()
}
