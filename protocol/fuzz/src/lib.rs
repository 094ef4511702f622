//! Helpers shared by the fuzz targets: deterministic randomness, a fixed
//! network of mix nodes, and a helper that walks a packet along a path.
//!
//! Nothing here is part of `leak-protocol`; it only exists so the targets in
//! `fuzz_targets/` can build valid packets and reply blocks reproducibly.

use core::convert::Infallible;
use std::sync::OnceLock;

use leak_protocol::{
    Delay, MixSecret, NodeId, PathHop, Processed, process_packet,
    sphinx::{FinalPayload, MAX_HOPS, MailboxId, PAYLOAD_LEN, Packet},
};
use rand_core::{TryCryptoRng, TryRng};

/// Deterministic randomness (SplitMix64). Not cryptographically secure;
/// it claims to be so that `build_packet` accepts it, which is all a fuzz
/// target needs: the same seed always builds the same packet.
#[derive(Debug, Clone)]
pub struct DetRng(u64);

impl DetRng {
    /// A generator whose whole output is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// `try_fill_bytes` without the `Result`, which cannot be an error.
    pub fn fill_bytes_infallible(&mut self, dst: &mut [u8]) {
        let Ok(()) = self.try_fill_bytes(dst);
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl TryRng for DetRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok((self.next() >> 32) as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.next())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            let word = self.next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        Ok(())
    }
}

impl TryCryptoRng for DetRng {}

/// One node of the fixed test network.
pub struct Node {
    /// Its identity.
    pub id: NodeId,
    /// Its mix secret.
    pub secret: MixSecret,
}

/// [`MAX_HOPS`] nodes with fixed identities and mix secrets.
pub fn nodes() -> &'static [Node] {
    static NODES: OnceLock<Vec<Node>> = OnceLock::new();
    NODES.get_or_init(|| {
        (0..MAX_HOPS)
            .map(|i| {
                let i = u8::try_from(i).unwrap_or(u8::MAX);
                let mut secret = [0u8; 32];
                let mut id = [0u8; 32];
                DetRng::new(0x5EC2_E700 + u64::from(i)).fill_bytes_infallible(&mut secret);
                DetRng::new(0x1D00_0000 + u64::from(i)).fill_bytes_infallible(&mut id);
                Node {
                    id: NodeId(id),
                    secret: MixSecret::from_bytes(secret),
                }
            })
            .collect()
    })
}

/// A path through `nodes()[i]` for each `i` in `indices` (taken modulo the
/// number of nodes), with the given delays and key hint.
pub fn path(indices: &[usize], delays: &[u32], hint: u8) -> Vec<PathHop> {
    let nodes = nodes();
    indices
        .iter()
        .zip(delays)
        .map(|(&i, &d)| {
            let node = &nodes[i % nodes.len()];
            PathHop {
                node: node.id,
                key: node.secret.public(),
                key_hint: hint,
                delay: Delay(d),
            }
        })
        .collect()
}

/// How a walk along a path ended.
#[derive(Debug)]
pub enum Walk {
    /// A hop dropped the packet.
    Dropped {
        /// Index (into `secrets`) of the hop that dropped it.
        hop: usize,
        /// Why.
        reason: leak_protocol::DropReason,
    },
    /// The exit opened the message.
    Exit {
        /// Index of the exit.
        hop: usize,
        /// The message.
        message: Vec<u8>,
    },
    /// The packet ended at a mailbox.
    Mailbox {
        /// Index of the mailbox hop.
        hop: usize,
        /// The mailbox named in the header.
        mailbox: MailboxId,
        /// The stored reply.
        reply: Box<[u8; PAYLOAD_LEN]>,
    },
    /// Every hop in `secrets` forwarded the packet.
    StillForwarding,
}

/// Processes `packet` at each of `hops` in turn while it is forwarded.
/// `check` sees each hop's result (with the hop's index) before the walk
/// goes on, so a target can assert on next hops and delays.
pub fn walk(packet: &[u8], hops: &[&MixSecret], mut check: impl FnMut(usize, &Processed)) -> Walk {
    let mut current: Option<Packet> = None;
    for (hop, secret) in hops.iter().enumerate() {
        let bytes: &[u8] = match &current {
            Some(p) => p.as_bytes(),
            None => packet,
        };
        let processed = process_packet(bytes, secret);
        check(hop, &processed);
        match processed {
            Processed::Forward(f) => current = Some(f.packet),
            Processed::Final(f) => {
                return match f.payload {
                    FinalPayload::Exit { message } => Walk::Exit {
                        hop,
                        message: message.to_vec(),
                    },
                    FinalPayload::Mailbox { mailbox, reply } => Walk::Mailbox {
                        hop,
                        mailbox,
                        reply,
                    },
                };
            }
            Processed::Drop(reason) => return Walk::Dropped { hop, reason },
        }
    }
    Walk::StillForwarding
}
