//! Opt-outs shared between the exits that hold a recipient's: a recipient
//! who opts out (or back in) at the exit that delivered to it is refused
//! (or served again) whichever of those exits a leak reaches. An exit signs
//! a record of the keyed hash of the normalised address
//! ([`Policy::recipient_hash`](super::Policy::recipient_hash)), never the
//! address, whether the recipient is out or back in, and when, with its
//! node key; the newest record for a recipient holds.
//!
//! Who holds them: only the [`crate::federation::OPT_OUT_HOLDERS`] exits
//! that rank first for the recipient ([`crate::directory::holders`]), the
//! one responsible for it and its successors; records go from exit to exit,
//! never to relays, clients or a public mesh (see `SPEC.md` §18).
//!
//! Encoding of a batch: postcard of `Vec<OptOut>` behind a magic, bounded to
//! [`MAX_OPT_OUTS`] records; each record is 32 (exit) + 32 (hash) + 8
//! (time) + 1 (out or in) + 64 (signature) bytes.

use serde::{Deserialize, Serialize};

use crate::{
    NodeId,
    crypto::{KEY_LEN, SIGNATURE_LEN, ed25519_public, ed25519_sign, ed25519_verify},
};

/// Records per batch.
pub const MAX_OPT_OUTS: usize = 256;
const MAGIC: &[u8] = b"leak-opt-outs-v2";
const CONTEXT: &[u8] = b"leak opt-out v2\0";

/// One exit's signed statement that a recipient opted out, or back in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptOut {
    /// The exit that verified the recipient's action (its link token).
    pub exit: NodeId,
    /// The policy's keyed hash of the normalised recipient address.
    pub recipient: [u8; 32],
    /// When (Unix seconds).
    pub at: u64,
    /// `true`: the recipient opted out; `false`: it opted back in.
    pub out: bool,
    /// The exit's Ed25519 signature.
    #[serde(with = "signature")]
    pub signature: [u8; SIGNATURE_LEN],
}

mod signature {
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let bytes = <&[u8]>::deserialize(d)?;
        bytes
            .try_into()
            .map_err(|_| serde::de::Error::invalid_length(bytes.len(), &"64 bytes"))
    }
}

fn message(exit: &NodeId, recipient: &[u8; 32], at: u64, out: bool) -> Vec<u8> {
    let mut m = Vec::with_capacity(CONTEXT.len() + 73);
    m.extend_from_slice(CONTEXT);
    m.extend_from_slice(&exit.0);
    m.extend_from_slice(recipient);
    m.extend_from_slice(&at.to_be_bytes());
    m.push(u8::from(out));
    m
}

impl OptOut {
    /// Signs an opt-out (`out`) or an opt-back-in (`!out`) with the exit's
    /// identity seed.
    pub fn sign(seed: &[u8; KEY_LEN], recipient: [u8; 32], at: u64, out: bool) -> Self {
        let exit = NodeId(ed25519_public(seed));
        let signature = ed25519_sign(seed, &message(&exit, &recipient, at, out));
        Self {
            exit,
            recipient,
            at,
            out,
            signature,
        }
    }

    /// Whether the signature is the exit's.
    pub fn verify(&self) -> bool {
        ed25519_verify(
            &self.exit.0,
            &message(&self.exit, &self.recipient, self.at, self.out),
            &self.signature,
        )
    }
}

/// Encodes a batch (at most [`MAX_OPT_OUTS`]; more are an error).
pub fn encode_batch(records: &[OptOut]) -> Option<Vec<u8>> {
    if records.len() > MAX_OPT_OUTS {
        return None;
    }
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&postcard::to_allocvec(records).ok()?);
    Some(out)
}

/// Decodes a batch from untrusted bytes; signatures are not checked here.
pub fn decode_batch(bytes: &[u8]) -> Option<Vec<OptOut>> {
    let body = bytes.strip_prefix(MAGIC)?;
    // Each record takes at least 131 bytes (a varint time): a count beyond what the input
    // can hold is refused before anything is allocated for it.
    let (count, _) = postcard::take_from_bytes::<u32>(body).ok()?;
    let count = usize::try_from(count).ok()?;
    if count > MAX_OPT_OUTS || count * 131 > body.len() {
        return None;
    }
    let (records, rest) = postcard::take_from_bytes::<Vec<OptOut>>(body).ok()?;
    rest.is_empty().then_some(records)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn signed_records_round_trip_and_verify() {
        let a = OptOut::sign(&[1; 32], [2; 32], 3, true);
        let b = OptOut::sign(&[4; 32], [5; 32], 6, false);
        assert!(a.verify() && b.verify());
        let bytes = encode_batch(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(decode_batch(&bytes).unwrap(), vec![a.clone(), b]);
        // Any change breaks the signature.
        let mut forged = a.clone();
        forged.recipient[0] ^= 1;
        assert!(!forged.verify());
        let mut moved = a.clone();
        moved.exit = NodeId(ed25519_public(&[9; 32]));
        assert!(!moved.verify());
        // An opt-out cannot be turned into an opt-back-in, or the reverse.
        let mut flipped = a;
        flipped.out = false;
        assert!(!flipped.verify());
        // Garbage and truncations never panic.
        for end in 0..bytes.len() {
            let _ = decode_batch(&bytes[..end]);
        }
        assert!(decode_batch(b"leak-opt-outs-v2\xff\xff\xff\xff\x0f").is_none());
        assert!(
            encode_batch(&vec![
                OptOut::sign(&[1; 32], [0; 32], 0, true);
                MAX_OPT_OUTS + 1
            ])
            .is_none()
        );
    }
}
