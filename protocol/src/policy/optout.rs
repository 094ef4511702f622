//! Opt-outs shared between the exits that hold a recipient's: a recipient
//! who opts out (or back in) at the exit that delivered to it is refused
//! (or served again) whichever of those exits a leak reaches. An exit signs
//! a record of the keyed hash of the normalised address
//! ([`Policy::recipient_hash`](super::Policy::recipient_hash)), whether the
//! recipient is out or back in, when, and the *evidence*: the recipient's
//! own email asking for it, DKIM-signed by its mail provider (`SPEC.md`
//! §18; checked by the exits, which can look the provider's key up). The
//! newest record for a recipient holds. A record without evidence (a
//! one-click opt-out: nothing a provider signed) holds only at the exit
//! that took it and is never sent: no exit can opt out, anywhere else, a
//! recipient who did not ask.
//!
//! Who holds them: only the [`crate::federation::OPT_OUT_HOLDERS`] exits
//! that rank first for the recipient ([`crate::directory::holders`]), the
//! one responsible for it and its successors; records go from exit to exit,
//! never to relays, clients or a public mesh (see `SPEC.md` §18).
//!
//! Encoding of a batch: postcard of `Vec<OptOut>` behind a magic, bounded to
//! [`MAX_OPT_OUTS`] records; each record is 32 (exit) + 32 (hash) + 8
//! (time) + 1 (out or in) + the evidence (a length and at most
//! [`MAX_EVIDENCE_LEN`] bytes) + 64 (signature) bytes.

use serde::{Deserialize, Serialize};

use crate::{
    NodeId,
    crypto::{KEY_LEN, SIGNATURE_LEN, ed25519_public, ed25519_sign, ed25519_verify},
};

/// Records per batch.
pub const MAX_OPT_OUTS: usize = 64;
/// The longest evidence: the recipient's opt-out email cut down to what its
/// DKIM signature covers (an unsubscribe email's signed headers and short
/// body take 1 to 3 KB).
pub const MAX_EVIDENCE_LEN: usize = 8 * 1024;
/// The longest batch, encoded.
pub const MAX_BATCH_LEN: usize = 64 + MAX_OPT_OUTS * (MAX_EVIDENCE_LEN + 160);
const MAGIC: &[u8] = b"leak-opt-outs-v3";
const CONTEXT: &[u8] = b"leak opt-out v3\0";
/// The fewest bytes a record takes (a one-byte time and an empty evidence).
const MIN_RECORD_LEN: usize = 32 + 32 + 1 + 1 + 1 + 65;

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
    /// The recipient's DKIM-signed email asking for it (empty: none, and the
    /// record holds only at its exit).
    #[serde(with = "evidence")]
    pub evidence: Vec<u8>,
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

mod evidence {
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let bytes = <&[u8]>::deserialize(d)?;
        if bytes.len() > super::MAX_EVIDENCE_LEN {
            return Err(serde::de::Error::invalid_length(
                bytes.len(),
                &"at most MAX_EVIDENCE_LEN bytes",
            ));
        }
        Ok(bytes.to_vec())
    }
}

fn message(exit: &NodeId, recipient: &[u8; 32], at: u64, out: bool, evidence: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(CONTEXT.len() + 105);
    m.extend_from_slice(CONTEXT);
    m.extend_from_slice(&exit.0);
    m.extend_from_slice(recipient);
    m.extend_from_slice(&at.to_be_bytes());
    m.push(u8::from(out));
    m.extend_from_slice(blake3::hash(evidence).as_bytes());
    m
}

impl OptOut {
    /// Signs an opt-out (`out`) or an opt-back-in (`!out`) with the exit's
    /// identity seed, without evidence: a record that holds at this exit
    /// only.
    pub fn sign(seed: &[u8; KEY_LEN], recipient: [u8; 32], at: u64, out: bool) -> Self {
        Self::sign_with_evidence(seed, recipient, at, out, Vec::new())
    }

    /// Signs a record carrying `evidence` (the caller checked it; at most
    /// [`MAX_EVIDENCE_LEN`] bytes, longer is cut to nothing: a record
    /// without evidence).
    pub fn sign_with_evidence(
        seed: &[u8; KEY_LEN],
        recipient: [u8; 32],
        at: u64,
        out: bool,
        mut evidence: Vec<u8>,
    ) -> Self {
        if evidence.len() > MAX_EVIDENCE_LEN {
            evidence.clear();
        }
        let exit = NodeId(ed25519_public(seed));
        let signature = ed25519_sign(seed, &message(&exit, &recipient, at, out, &evidence));
        Self {
            exit,
            recipient,
            at,
            out,
            evidence,
            signature,
        }
    }

    /// Whether the record carries the recipient's email (checked by the
    /// receiver, not here).
    pub fn has_evidence(&self) -> bool {
        !self.evidence.is_empty()
    }

    /// Whether the signature is the exit's.
    pub fn verify(&self) -> bool {
        ed25519_verify(
            &self.exit.0,
            &message(
                &self.exit,
                &self.recipient,
                self.at,
                self.out,
                &self.evidence,
            ),
            &self.signature,
        )
    }

    /// Whether this record replaces `held` (the one held for the same
    /// recipient). One that says otherwise replaces it when newer. One that
    /// says the same replaces it when it carries evidence and `held` does
    /// not (the recipient confirmed by email what it did with one click),
    /// never when it lacks the evidence `held` has, else when newer.
    pub fn replaces(&self, held: &OptOut) -> bool {
        if self.out == held.out && self.has_evidence() != held.has_evidence() {
            self.has_evidence()
        } else {
            self.at > held.at
        }
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
    // A count beyond what the input can hold is refused before anything is
    // allocated for it.
    if bytes.len() > MAX_BATCH_LEN {
        return None;
    }
    let (count, _) = postcard::take_from_bytes::<u32>(body).ok()?;
    let count = usize::try_from(count).ok()?;
    if count > MAX_OPT_OUTS || count * MIN_RECORD_LEN > body.len() {
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
        let b = OptOut::sign_with_evidence(&[4; 32], [5; 32], 6, false, b"an email".to_vec());
        assert!(a.verify() && b.verify());
        assert!(!a.has_evidence() && b.has_evidence());
        let bytes = encode_batch(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(decode_batch(&bytes).unwrap(), vec![a.clone(), b.clone()]);
        // The evidence is under the signature.
        let mut swapped = b.clone();
        swapped.evidence = b"another email".to_vec();
        assert!(!swapped.verify());
        let mut stripped = b;
        stripped.evidence.clear();
        assert!(!stripped.verify());
        // Too long: no evidence at all.
        let long =
            OptOut::sign_with_evidence(&[4; 32], [5; 32], 6, true, vec![1; MAX_EVIDENCE_LEN + 1]);
        assert!(!long.has_evidence() && long.verify());
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
        assert!(decode_batch(b"leak-opt-outs-v3\xff\xff\xff\xff\x0f").is_none());
        assert!(decode_batch(&vec![0; MAX_BATCH_LEN + 1]).is_none());
        assert!(
            encode_batch(&vec![
                OptOut::sign(&[1; 32], [0; 32], 0, true);
                MAX_OPT_OUTS + 1
            ])
            .is_none()
        );
    }

    #[test]
    fn evidence_confirms_and_newer_replaces() {
        let click = OptOut::sign(&[1; 32], [2; 32], 100, true);
        let mailed = OptOut::sign_with_evidence(&[1; 32], [2; 32], 90, true, b"mail".to_vec());
        let newer_in = OptOut::sign(&[1; 32], [2; 32], 101, false);
        let older_in = OptOut::sign_with_evidence(&[1; 32], [2; 32], 90, false, b"mail".to_vec());
        assert!(mailed.replaces(&click), "the email confirms the click");
        assert!(
            !click.replaces(&mailed),
            "a click adds nothing to the email"
        );
        assert!(newer_in.replaces(&mailed));
        assert!(
            !older_in.replaces(&click),
            "an older email saying otherwise"
        );
        assert!(!mailed.replaces(&mailed.clone()));
    }
}
