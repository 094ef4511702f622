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
use crate::{
    crypto::KEY_LEN,
    signed::{Format, SignatureError, SignedText},
};

/// The most bytes of TOML in a signed policy.
pub const MAX_POLICY_LEN: usize = 1 << 20;
/// The most signatures on one signed policy.
pub const MAX_SIGNATURES: usize = crate::signed::MAX_SIGNATURES;

/// The signed policy's kind of [`SignedText`].
const FORMAT: Format = Format {
    magic: b"LEAKPOL\x01",
    context: b"leak 2025 policy signature v1\0",
    max_len: MAX_POLICY_LEN,
    name: "signed Leak policy",
};

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
/// `"leak 2025 policy signature v1"`, a zero byte and the TOML bytes (the
/// encoding of every signed document, [`crate::signed`]).
#[derive(Clone, PartialEq, Eq)]
pub struct SignedPolicy(SignedText);

impl core::fmt::Debug for SignedPolicy {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SignedPolicy")
            .field("toml_len", &self.0.text().len())
            .field(
                "signers",
                &self
                    .0
                    .signers()
                    .map(|k| crate::hex_prefix(k))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl From<SignatureError> for PolicyError {
    fn from(e: SignatureError) -> Self {
        match e {
            SignatureError::Malformed(m) => Self::Malformed(m),
            SignatureError::NotEnoughSignatures { valid, threshold } => {
                Self::NotEnoughSignatures { valid, threshold }
            }
            SignatureError::Forged { key } => Self::Forged { key },
        }
    }
}

/// Decodes a maintainer's public key written as 64 hex digits (either
/// case; surrounding whitespace ignored).
pub fn parse_public_key(text: &str) -> Result<[u8; KEY_LEN], PolicyError> {
    decode_hex_key(text.trim()).ok_or_else(|| PolicyError::BadKey(text.to_owned()))
}

pub(super) use crate::signed::decode_hex_key;

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
        let mut text = SignedText::new(toml, &FORMAT).map_err(|e| match e {
            SignatureError::Malformed(_) => PolicyError::Malformed(format!(
                "the policy is {} bytes; at most {MAX_POLICY_LEN} can be signed",
                toml.len()
            )),
            e => e.into(),
        })?;
        Policy::from_toml(toml)?;
        text.add_signature(&FORMAT, seed)?;
        Ok(SignedPolicy(text))
    }

    /// Adds (or replaces) the signature of the key whose seed is `seed`.
    pub fn add_signature(&mut self, seed: &[u8; KEY_LEN]) -> Result<(), PolicyError> {
        Ok(self.0.add_signature(&FORMAT, seed)?)
    }

    /// The signed TOML text (not yet verified: use [`SignedPolicy::verify`]).
    pub fn toml(&self) -> &str {
        self.0.text()
    }

    /// The public keys that signed (not yet verified).
    pub fn signers(&self) -> impl Iterator<Item = &[u8; KEY_LEN]> {
        self.0.signers()
    }

    /// Checks the signatures and compiles the policy. At least `threshold`
    /// distinct keys of `trusted` must have valid signatures; signatures by
    /// other keys are ignored. A `threshold` of 0 is taken as 1.
    pub fn verify(
        &self,
        trusted: &[[u8; KEY_LEN]],
        threshold: usize,
    ) -> Result<Policy, PolicyError> {
        self.0.check(&FORMAT, trusted, threshold)?;
        Policy::from_toml(self.0.text())
    }

    /// The encoding described on [`SignedPolicy`].
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.to_bytes(&FORMAT)
    }

    /// Decodes [`SignedPolicy::to_bytes`]'s encoding. Bounded: allocates at
    /// most the input's size, and never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<SignedPolicy, PolicyError> {
        Ok(SignedPolicy(SignedText::from_bytes(bytes, &FORMAT)?))
    }
}
