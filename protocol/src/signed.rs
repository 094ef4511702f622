//! Text documents signed by a threshold of trusted Ed25519 keys.
//!
//! The federation has two such documents: the moderation policy, signed by
//! its maintainers ([`crate::policy::SignedPolicy`]), and the roster of
//! admitted nodes, signed by the directory authorities
//! ([`crate::roster::SignedRoster`]). Both travel in one encoding, told
//! apart by their magic, and each signature covers a context string
//! naming the kind of document, so a signature on one can never pass for
//! the other.
//!
//! # Encoding ([`SignedText::to_bytes`])
//!
//! ```text
//! magic                           8 bytes: the kind and format version
//! text length                     4 bytes, big-endian, ≤ the kind's maximum
//! text                            UTF-8
//! signature count                 1 byte, 1 ..= MAX_SIGNATURES
//! count × (public key, signature) 32 + 64 bytes
//! ```
//!
//! Nothing may follow. Each signature is Ed25519 over the kind's context
//! string (which ends in a zero byte) followed by the text's bytes.

use crate::crypto::{self, KEY_LEN, SIGNATURE_LEN};

/// The most signatures on one document.
pub const MAX_SIGNATURES: usize = 32;

/// One kind of signed document.
#[derive(Debug, Clone, Copy)]
pub struct Format {
    /// The first 8 bytes of the encoding.
    pub magic: &'static [u8; 8],
    /// What each signature covers before the text (ends in a zero byte).
    pub context: &'static [u8],
    /// The most bytes of text.
    pub max_len: usize,
    /// The document's name in error messages ("signed policy").
    pub name: &'static str,
}

/// Why a signed document cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    /// The bytes are not in the format.
    Malformed(String),
    /// Fewer valid signatures by trusted keys than required.
    NotEnoughSignatures {
        /// Distinct trusted keys whose signature verified.
        valid: usize,
        /// How many were required.
        threshold: usize,
    },
    /// A signature made by a trusted key does not verify.
    Forged {
        /// The key, in hex.
        key: String,
    },
}

/// A text with signatures (not yet verified: [`SignedText::check`]).
#[derive(Clone, PartialEq, Eq)]
pub struct SignedText {
    text: String,
    signatures: Vec<([u8; KEY_LEN], [u8; SIGNATURE_LEN])>,
}

impl core::fmt::Debug for SignedText {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SignedText")
            .field("text_len", &self.text.len())
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

/// 64 lowercase hex digits of a key.
pub fn hex(bytes: &[u8]) -> String {
    use core::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// 64 hex digits (either case) as 32 bytes.
pub fn decode_hex_key(digits: &str) -> Option<[u8; KEY_LEN]> {
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

impl SignedText {
    /// A text with no signature yet; refused if longer than the format
    /// allows.
    pub fn new(text: &str, format: &Format) -> Result<Self, SignatureError> {
        if text.len() > format.max_len {
            return Err(SignatureError::Malformed(format!(
                "the text is {} bytes; at most {} can be signed",
                text.len(),
                format.max_len
            )));
        }
        Ok(Self {
            text: text.to_owned(),
            signatures: Vec::new(),
        })
    }

    fn message(&self, format: &Format) -> Vec<u8> {
        let mut m = Vec::with_capacity(format.context.len() + self.text.len());
        m.extend_from_slice(format.context);
        m.extend_from_slice(self.text.as_bytes());
        m
    }

    /// Adds (or replaces) the signature of the key whose seed is `seed`.
    pub fn add_signature(
        &mut self,
        format: &Format,
        seed: &[u8; KEY_LEN],
    ) -> Result<(), SignatureError> {
        let public = crypto::ed25519_public(seed);
        let signature = crypto::ed25519_sign(seed, &self.message(format));
        if let Some(slot) = self.signatures.iter_mut().find(|(k, _)| *k == public) {
            slot.1 = signature;
            return Ok(());
        }
        if self.signatures.len() >= MAX_SIGNATURES {
            return Err(SignatureError::Malformed(format!(
                "at most {MAX_SIGNATURES} signatures"
            )));
        }
        self.signatures.push((public, signature));
        Ok(())
    }

    /// The signed text (not yet verified).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The public keys that signed (not yet verified).
    pub fn signers(&self) -> impl Iterator<Item = &[u8; KEY_LEN]> {
        self.signatures.iter().map(|(k, _)| k)
    }

    /// At least `threshold` distinct keys of `trusted` have valid
    /// signatures; signatures by other keys are ignored. A `threshold` of
    /// 0 is taken as 1. Checks at most one signature per trusted key, so
    /// the work is bounded by the trusted keys, whatever the document
    /// carries.
    pub fn check(
        &self,
        format: &Format,
        trusted: &[[u8; KEY_LEN]],
        threshold: usize,
    ) -> Result<(), SignatureError> {
        let threshold = threshold.max(1);
        let message = self.message(format);
        let mut valid: Vec<&[u8; KEY_LEN]> = Vec::new();
        let mut forged: Option<&[u8; KEY_LEN]> = None;
        for (key, signature) in &self.signatures {
            if !trusted.contains(key) || valid.contains(&key) || forged == Some(key) {
                continue;
            }
            if crypto::ed25519_verify(key, &message, signature) {
                valid.push(key);
                if valid.len() >= threshold {
                    return Ok(());
                }
            } else {
                forged.get_or_insert(key);
            }
        }
        Err(match forged {
            Some(key) => SignatureError::Forged { key: hex(key) },
            None => SignatureError::NotEnoughSignatures {
                valid: valid.len(),
                threshold,
            },
        })
    }

    /// The encoding described in this module's documentation.
    pub fn to_bytes(&self, format: &Format) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            format.magic.len()
                + 5
                + self.text.len()
                + self.signatures.len() * (KEY_LEN + SIGNATURE_LEN),
        );
        out.extend_from_slice(format.magic);
        out.extend_from_slice(&(self.text.len() as u32).to_be_bytes());
        out.extend_from_slice(self.text.as_bytes());
        out.push(self.signatures.len() as u8);
        for (key, signature) in &self.signatures {
            out.extend_from_slice(key);
            out.extend_from_slice(signature);
        }
        out
    }

    /// Decodes [`SignedText::to_bytes`]'s encoding. Bounded: allocates at
    /// most the input's size, and never panics.
    pub fn from_bytes(bytes: &[u8], format: &Format) -> Result<Self, SignatureError> {
        let name = format.name;
        let bad = |m: &str| SignatureError::Malformed(m.to_owned());
        let rest = bytes.strip_prefix(format.magic).ok_or_else(|| {
            SignatureError::Malformed(format!("not a {name} (bad magic or format version)"))
        })?;
        let (len, rest) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| bad("truncated length"))?;
        let len = u32::from_be_bytes(*len) as usize;
        if len > format.max_len {
            return Err(bad("the text is too long"));
        }
        if rest.len() < len {
            return Err(bad("truncated text"));
        }
        let (text, rest) = rest.split_at(len);
        let text = core::str::from_utf8(text).map_err(|_| bad("the text is not UTF-8"))?;
        let (&count, mut rest) = rest
            .split_first()
            .ok_or_else(|| bad("truncated signature count"))?;
        let count = usize::from(count);
        if count == 0 || count > MAX_SIGNATURES {
            return Err(SignatureError::Malformed(format!(
                "a {name} has 1 to {MAX_SIGNATURES} signatures"
            )));
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
        Ok(Self {
            text: text.to_owned(),
            signatures,
        })
    }
}
