//! Signed policy documents.
//!
//! A signed policy is the TOML text and one or more Ed25519 signatures by
//! policy maintainers over it. Nodes and clients configure the maintainers'
//! public keys they trust and how many of them must have signed
//! ([`SignedPolicy::verify`]); signatures by keys they do not trust are
//! ignored.
//!
//! The byte encoding is described on [`SignedPolicy`].
//!
//! Whoever holds a signed policy (an exit reading `policy.file` or taking
//! one from gossip, a client checking a text before sending) checks it the
//! same way: [`parse_public_keys`] for the configured maintainers' keys,
//! then [`verify_signed`] (enough trusted signatures, a policy that
//! compiles) or [`verify_replacement`] (and not older than the policy built
//! into this release). Reading the file is the caller's business.

use super::{Policy, PolicyError};
use crate::crypto::{self, KEY_LEN, SIGNATURE_LEN};

/// The most bytes of TOML in a signed policy.
pub const MAX_POLICY_LEN: usize = 1 << 20;
/// The most signatures on one signed policy.
pub const MAX_SIGNATURES: usize = 32;

const MAGIC: &[u8; 8] = b"LEAKPOL\x01";
const SIGNATURE_CONTEXT: &[u8] = b"leak 2025 policy signature v1\0";

/// A policy document with maintainers' signatures.
///
/// # Encoding ([`SignedPolicy::to_bytes`])
///
/// ```text
/// "LEAKPOL" 0x01                  8 bytes: magic and format version
/// toml length                     4 bytes, big-endian, ≤ MAX_POLICY_LEN
/// toml                            UTF-8
/// signature count                 1 byte, 1 ..= MAX_SIGNATURES
/// count × (public key, signature) 32 + 64 bytes
/// ```
///
/// Nothing may follow. Each signature is Ed25519 over the context string
/// `"leak 2025 policy signature v1"`, a zero byte and the TOML bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedPolicy {
    toml: String,
    signatures: Vec<([u8; KEY_LEN], [u8; SIGNATURE_LEN])>,
}

impl core::fmt::Debug for SignedPolicy {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SignedPolicy")
            .field("toml_len", &self.toml.len())
            .field(
                "signers",
                &self
                    .signatures
                    .iter()
                    .map(|(k, _)| crate::hex_prefix(k))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn signed_message(toml: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNATURE_CONTEXT.len() + toml.len());
    m.extend_from_slice(SIGNATURE_CONTEXT);
    m.extend_from_slice(toml.as_bytes());
    m
}

fn hex(bytes: &[u8]) -> String {
    use core::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Decodes a maintainer's public key written as 64 hex digits (either
/// case; surrounding whitespace ignored).
pub fn parse_public_key(text: &str) -> Result<[u8; KEY_LEN], PolicyError> {
    decode_hex_key(text.trim()).ok_or_else(|| PolicyError::BadKey(text.to_owned()))
}

/// 64 hex digits (either case) as 32 bytes.
pub(super) fn decode_hex_key(digits: &str) -> Option<[u8; KEY_LEN]> {
    let digits = digits.as_bytes();
    if digits.len() != 2 * KEY_LEN {
        return None;
    }
    let nibble = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    let mut key = [0u8; KEY_LEN];
    for (byte, pair) in key.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(key)
}

/// Decodes every key of a configured list of trusted maintainers' keys.
pub fn parse_public_keys<S: AsRef<str>>(texts: &[S]) -> Result<Vec<[u8; KEY_LEN]>, PolicyError> {
    texts.iter().map(|t| parse_public_key(t.as_ref())).collect()
}

/// Decodes a signed policy and verifies it ([`SignedPolicy::verify`]): at
/// least `threshold` of the `trusted` keys signed it, and it compiles.
pub fn verify_signed(
    bytes: &[u8],
    trusted: &[[u8; KEY_LEN]],
    threshold: usize,
) -> Result<Policy, PolicyError> {
    SignedPolicy::from_bytes(bytes)?.verify(trusted, threshold)
}

/// [`verify_signed`], and refuses a policy older than the one built into
/// this release ([`Policy::builtin`]): what a configured policy file must
/// pass to replace the built-in policy.
pub fn verify_replacement(
    bytes: &[u8],
    trusted: &[[u8; KEY_LEN]],
    threshold: usize,
) -> Result<Policy, PolicyError> {
    let policy = verify_signed(bytes, trusted, threshold)?;
    let builtin = Policy::builtin().version();
    if policy.version() < builtin {
        return Err(PolicyError::OlderThanBuiltin {
            version: policy.version(),
            builtin,
        });
    }
    Ok(policy)
}

impl SignedPolicy {
    /// Signs a policy document with the maintainer key whose secret seed is
    /// `seed`. The document must compile: nobody signs a broken policy.
    pub fn sign(toml: &str, seed: &[u8; KEY_LEN]) -> Result<SignedPolicy, PolicyError> {
        if toml.len() > MAX_POLICY_LEN {
            return Err(PolicyError::Malformed(format!(
                "the policy is {} bytes; at most {MAX_POLICY_LEN} can be signed",
                toml.len()
            )));
        }
        Policy::from_toml(toml)?;
        let mut signed = SignedPolicy {
            toml: toml.to_owned(),
            signatures: Vec::new(),
        };
        signed.add_signature(seed)?;
        Ok(signed)
    }

    /// Adds (or replaces) the signature of the key whose seed is `seed`.
    pub fn add_signature(&mut self, seed: &[u8; KEY_LEN]) -> Result<(), PolicyError> {
        let public = crypto::ed25519_public(seed);
        let signature = crypto::ed25519_sign(seed, &signed_message(&self.toml));
        if let Some(slot) = self.signatures.iter_mut().find(|(k, _)| *k == public) {
            slot.1 = signature;
            return Ok(());
        }
        if self.signatures.len() >= MAX_SIGNATURES {
            return Err(PolicyError::Malformed(format!(
                "at most {MAX_SIGNATURES} signatures"
            )));
        }
        self.signatures.push((public, signature));
        Ok(())
    }

    /// The signed TOML text (not yet verified: use [`SignedPolicy::verify`]).
    pub fn toml(&self) -> &str {
        &self.toml
    }

    /// The public keys that signed (not yet verified).
    pub fn signers(&self) -> impl Iterator<Item = &[u8; KEY_LEN]> {
        self.signatures.iter().map(|(k, _)| k)
    }

    /// Checks the signatures and compiles the policy. At least `threshold`
    /// distinct keys of `trusted` must have valid signatures; signatures by
    /// other keys are ignored. A `threshold` of 0 is taken as 1.
    pub fn verify(
        &self,
        trusted: &[[u8; KEY_LEN]],
        threshold: usize,
    ) -> Result<Policy, PolicyError> {
        let threshold = threshold.max(1);
        let message = signed_message(&self.toml);
        let mut valid: Vec<&[u8; KEY_LEN]> = Vec::new();
        let mut forged: Option<&[u8; KEY_LEN]> = None;
        for (key, signature) in &self.signatures {
            if !trusted.contains(key) || valid.contains(&key) {
                continue;
            }
            if crypto::ed25519_verify(key, &message, signature) {
                valid.push(key);
            } else {
                forged.get_or_insert(key);
            }
        }
        if valid.len() < threshold {
            return Err(match forged {
                Some(key) => PolicyError::Forged { key: hex(key) },
                None => PolicyError::NotEnoughSignatures {
                    valid: valid.len(),
                    threshold,
                },
            });
        }
        Policy::from_toml(&self.toml)
    }

    /// The encoding described on [`SignedPolicy`].
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            MAGIC.len() + 5 + self.toml.len() + self.signatures.len() * (KEY_LEN + SIGNATURE_LEN),
        );
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.toml.len() as u32).to_be_bytes());
        out.extend_from_slice(self.toml.as_bytes());
        out.push(self.signatures.len() as u8);
        for (key, signature) in &self.signatures {
            out.extend_from_slice(key);
            out.extend_from_slice(signature);
        }
        out
    }

    /// Decodes [`SignedPolicy::to_bytes`]'s encoding. Bounded: allocates at
    /// most the input's size, and never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<SignedPolicy, PolicyError> {
        let bad = |m: &str| PolicyError::Malformed(m.to_owned());
        let rest = bytes
            .strip_prefix(MAGIC)
            .ok_or_else(|| bad("not a signed Leak policy (bad magic or format version)"))?;
        let (len, rest) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| bad("truncated length"))?;
        let len = u32::from_be_bytes(*len) as usize;
        if len > MAX_POLICY_LEN {
            return Err(bad("the policy text is too long"));
        }
        if rest.len() < len {
            return Err(bad("truncated policy text"));
        }
        let (text, rest) = rest.split_at(len);
        let toml = core::str::from_utf8(text).map_err(|_| bad("the policy text is not UTF-8"))?;
        let (&count, mut rest) = rest
            .split_first()
            .ok_or_else(|| bad("truncated signature count"))?;
        let count = usize::from(count);
        if count == 0 || count > MAX_SIGNATURES {
            return Err(bad("a signed policy has 1 to 32 signatures"));
        }
        if rest.len() != count * (KEY_LEN + SIGNATURE_LEN) {
            return Err(bad("the signatures' length does not match their count"));
        }
        let mut signatures = Vec::with_capacity(count);
        for _ in 0..count {
            let (key, r) = rest
                .split_first_chunk::<KEY_LEN>()
                .ok_or_else(|| bad("truncated key"))?;
            let (sig, r) = r
                .split_first_chunk::<SIGNATURE_LEN>()
                .ok_or_else(|| bad("truncated signature"))?;
            signatures.push((*key, *sig));
            rest = r;
        }
        Ok(SignedPolicy {
            toml: toml.to_owned(),
            signatures,
        })
    }
}
