//! The anti-abuse stamp: a small proof of work per leak.
//!
//! The work is bound to the recipient (by its [`recipient
//! hash`](super::Policy::recipient_hash)), the exit, the epoch (a UTC day)
//! and the leak's message id, so a stamp is worth one leak to one recipient
//! through one exit on one day: cheap for one leak, costly for a thousand.
//!
//! The hash is BLAKE3 in key-derivation mode with its own context string
//! over every input and the nonce; a stamp is valid when the hash has at
//! least the policy's `stamp_bits` leading zero bits.

use crate::{NodeId, crypto, payload::MessageId, payload::Stamp};

/// A stamp epoch is a UTC day: `unix_secs / STAMP_EPOCH_SECS`.
pub const STAMP_EPOCH_SECS: u64 = 86_400;

const STAMP_CONTEXT: &str = "leak 2025 anti-abuse stamp v1";

/// Why a stamp was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StampError {
    /// The stamp was made for another day.
    #[error(
        "the stamp is for epoch {stamp}, the exit is in epoch {now} (one day either way is allowed)"
    )]
    WrongEpoch {
        /// The stamp's epoch.
        stamp: u64,
        /// The verifier's epoch.
        now: u64,
    },
    /// Not enough work: the hash has too few leading zero bits (or the stamp
    /// was made for another recipient, exit or message).
    #[error("the stamp has {got} leading zero bits, {needed} are required")]
    InsufficientWork {
        /// Leading zero bits of the stamp's hash.
        got: u32,
        /// Required by the policy.
        needed: u8,
    },
}

fn stamp_hash(
    recipient_hash: &[u8; 32],
    exit: &NodeId,
    epoch: u64,
    message_id: &MessageId,
    nonce: u64,
) -> [u8; 32] {
    crypto::derive_key(
        STAMP_CONTEXT,
        &[
            recipient_hash,
            &exit.0,
            &epoch.to_le_bytes(),
            &message_id.0,
            &nonce.to_le_bytes(),
        ],
    )
    .0
}

/// The number of leading zero bits of `hash`.
pub fn leading_zero_bits(hash: &[u8; 32]) -> u32 {
    let mut bits = 0;
    for &b in hash {
        if b == 0 {
            bits += 8;
        } else {
            bits += b.leading_zeros();
            break;
        }
    }
    bits
}

/// Finds a stamp: tries nonces from 0 until the hash has `bits` leading zero
/// bits (2^bits hashes on average). `bits` above 64 is treated as 64.
pub fn solve_stamp(
    recipient_hash: &[u8; 32],
    exit: &NodeId,
    epoch: u64,
    bits: u8,
    message_id: &MessageId,
) -> Stamp {
    let needed = u32::from(bits.min(64));
    let mut nonce = 0u64;
    loop {
        let hash = stamp_hash(recipient_hash, exit, epoch, message_id, nonce);
        if leading_zero_bits(&hash) >= needed || nonce == u64::MAX {
            return Stamp { epoch, nonce };
        }
        nonce += 1;
    }
}

/// Checks a stamp: made for `now_epoch` or a day either side, and with
/// enough leading zero bits for this recipient, exit and message.
pub fn verify_stamp(
    stamp: &Stamp,
    recipient_hash: &[u8; 32],
    exit: &NodeId,
    message_id: &MessageId,
    bits: u8,
    now_epoch: u64,
) -> Result<(), StampError> {
    if stamp.epoch.abs_diff(now_epoch) > 1 {
        return Err(StampError::WrongEpoch {
            stamp: stamp.epoch,
            now: now_epoch,
        });
    }
    let hash = stamp_hash(recipient_hash, exit, stamp.epoch, message_id, stamp.nonce);
    let got = leading_zero_bits(&hash);
    if got >= u32::from(bits) {
        Ok(())
    } else {
        Err(StampError::InsufficientWork { got, needed: bits })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_bits() {
        let mut h = [0u8; 32];
        assert_eq!(leading_zero_bits(&h), 256);
        h[1] = 0x10;
        assert_eq!(leading_zero_bits(&h), 11);
    }

    #[test]
    fn solve_then_verify() {
        let r = [7u8; 32];
        let exit = NodeId([9; 32]);
        let id = MessageId([1; 16]);
        let s = solve_stamp(&r, &exit, 100, 8, &id);
        assert_eq!(verify_stamp(&s, &r, &exit, &id, 8, 101), Ok(()));
        assert!(verify_stamp(&s, &r, &exit, &id, 8, 102).is_err());
    }
}
