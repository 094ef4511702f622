//! Every cryptographic primitive Leak uses, in one place.
//!
//! The rest of the crate never names `x25519_dalek`, `chacha20`,
//! `chacha20poly1305` or `blake3` directly: it goes through the functions and
//! types here, so there is one file to review and one file to change when a
//! primitive is upgraded (the arrangement `tor-llcrypto` has in arti).
//!
//! | purpose | primitive |
//! |---|---|
//! | key agreement | X25519 (RFC 7748), `x25519-dalek` |
//! | key derivation | BLAKE3 in `derive_key` mode, one context string per purpose |
//! | header MAC | BLAKE3 keyed hash, truncated to [`MAC_LEN`] bytes, compared in constant time |
//! | header and payload layers | ChaCha20 (RFC 8439) keystream, 96-bit zero nonce, one-time keys |
//! | end-to-end payload | ChaCha20-Poly1305 (RFC 8439), 96-bit zero nonce, one-time keys |
//! | signatures (descriptors) | Ed25519 (RFC 8032), `ed25519-dalek`, strict verification |
//!
//! Every key derived here is used for exactly one message: the KDF input
//! contains a fresh ephemeral public key, so the all-zero nonces are safe.

use chacha20::{
    ChaCha20,
    cipher::{KeyIvInit, StreamCipher},
};
use chacha20poly1305::{
    ChaCha20Poly1305, KeyInit,
    aead::{AeadInOut, inout::InOutBuf},
};
use rand_core::CryptoRng;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of an X25519 public key, secret key and shared secret.
pub const KEY_LEN: usize = 32;
/// Length of a header MAC.
pub const MAC_LEN: usize = 16;
/// Length of a ChaCha20-Poly1305 authentication tag.
pub const TAG_LEN: usize = 16;

/// A node's X25519 mix public key for one epoch.
#[derive(Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct MixPublicKey(pub [u8; KEY_LEN]);

impl core::fmt::Debug for MixPublicKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "MixPublicKey({})", crate::hex_prefix(&self.0))
    }
}

/// A node's X25519 mix secret key for one epoch. Zeroed on drop.
#[derive(Clone)]
pub struct MixSecret {
    secret: x25519_dalek::StaticSecret,
    public: MixPublicKey,
}

impl MixSecret {
    /// Wraps 32 secret bytes (clamped by X25519 as RFC 7748 says).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        let secret = x25519_dalek::StaticSecret::from(bytes);
        let public = MixPublicKey(x25519_dalek::PublicKey::from(&secret).to_bytes());
        Self { secret, public }
    }

    /// Draws a fresh secret from `rng`.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; KEY_LEN];
        rng.fill_bytes(&mut bytes);
        let key = Self::from_bytes(bytes);
        bytes.zeroize();
        key
    }

    /// The secret bytes, for storage in the node's database.
    pub fn to_bytes(&self) -> [u8; KEY_LEN] {
        self.secret.to_bytes()
    }

    /// The matching public key.
    pub fn public(&self) -> MixPublicKey {
        self.public
    }

    /// X25519 with a peer's public key. `None` when the result is all zeros
    /// (the peer sent a low-order point, so the exchange is not contributory).
    pub fn diffie_hellman(&self, peer: &[u8; KEY_LEN]) -> Option<SharedSecret> {
        let shared = self
            .secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(*peer));
        shared
            .was_contributory()
            .then(|| SharedSecret(shared.to_bytes()))
    }
}

impl core::fmt::Debug for MixSecret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MixSecret")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// The result of one X25519 exchange. Zeroed on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SharedSecret([u8; KEY_LEN]);

impl SharedSecret {
    /// The raw bytes (input to [`derive_key`]).
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

/// A 32-byte symmetric key. Zeroed on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SymmetricKey(pub [u8; KEY_LEN]);

impl core::fmt::Debug for SymmetricKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SymmetricKey(..)")
    }
}

/// Derives a key for one purpose. `context` is a globally unique string
/// (BLAKE3's rules for `derive_key`); `parts` are concatenated as key material.
pub fn derive_key(context: &str, parts: &[&[u8]]) -> SymmetricKey {
    let mut hasher = blake3::Hasher::new_derive_key(context);
    for part in parts {
        hasher.update(part);
    }
    SymmetricKey(*hasher.finalize().as_bytes())
}

/// X25519 key generation from 32 secret bytes: returns the public key.
pub fn x25519_public(secret: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    let secret = x25519_dalek::StaticSecret::from(*secret);
    x25519_dalek::PublicKey::from(&secret).to_bytes()
}

/// X25519 between our secret bytes and a peer's public key; `None` when not
/// contributory (all-zero output).
pub fn x25519(secret: &[u8; KEY_LEN], peer: &[u8; KEY_LEN]) -> Option<SharedSecret> {
    MixSecret::from_bytes(*secret).diffie_hellman(peer)
}

/// XORs the ChaCha20 keystream for `key` (zero nonce, counter from 0) into `buf`.
pub fn xor_keystream(key: &SymmetricKey, buf: &mut [u8]) {
    let mut cipher = ChaCha20::new(&key.0.into(), &[0u8; 12].into());
    cipher.apply_keystream(buf);
}

/// The header MAC: BLAKE3 keyed hash of the concatenated `parts`, truncated.
pub fn mac(key: &SymmetricKey, parts: &[&[u8]]) -> [u8; MAC_LEN] {
    let mut hasher = blake3::Hasher::new_keyed(&key.0);
    for part in parts {
        hasher.update(part);
    }
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&hasher.finalize().as_bytes()[..MAC_LEN]);
    out
}

/// Constant-time equality of two MACs.
pub fn mac_eq(a: &[u8; MAC_LEN], b: &[u8; MAC_LEN]) -> bool {
    a.ct_eq(b).into()
}

/// The AEAD failed to authenticate the ciphertext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AeadError;

/// Seals `buf[..buf.len() - TAG_LEN]` in place with ChaCha20-Poly1305 (zero
/// nonce) and writes the tag into the last [`TAG_LEN`] bytes.
///
/// # Panics
/// Never for a `buf` of at least [`TAG_LEN`] bytes; callers pass fixed sizes.
pub fn aead_seal(key: &SymmetricKey, aad: &[u8], buf: &mut [u8]) -> Result<(), AeadError> {
    let split = buf.len().checked_sub(TAG_LEN).ok_or(AeadError)?;
    let (msg, tag_out) = buf.split_at_mut(split);
    let cipher = ChaCha20Poly1305::new(&key.0.into());
    let tag = cipher
        .encrypt_inout_detached(&[0u8; 12].into(), aad, InOutBuf::from(msg))
        .map_err(|_| AeadError)?;
    tag_out.copy_from_slice(&tag);
    Ok(())
}

/// Opens a buffer sealed by [`aead_seal`] in place; on success the plaintext
/// is `buf[..buf.len() - TAG_LEN]`.
pub fn aead_open(key: &SymmetricKey, aad: &[u8], buf: &mut [u8]) -> Result<(), AeadError> {
    let split = buf.len().checked_sub(TAG_LEN).ok_or(AeadError)?;
    let (msg, tag) = buf.split_at_mut(split);
    let tag: [u8; TAG_LEN] = (&*tag).try_into().map_err(|_| AeadError)?;
    let cipher = ChaCha20Poly1305::new(&key.0.into());
    cipher
        .decrypt_inout_detached(&[0u8; 12].into(), aad, InOutBuf::from(msg), &tag.into())
        .map_err(|_| AeadError)
}

/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// The Ed25519 public key of a 32-byte secret seed.
pub fn ed25519_public(seed: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    ed25519_dalek::SigningKey::from_bytes(seed)
        .verifying_key()
        .to_bytes()
}

/// Signs `message` with the Ed25519 key whose secret seed is `seed`.
pub fn ed25519_sign(seed: &[u8; KEY_LEN], message: &[u8]) -> [u8; SIGNATURE_LEN] {
    use ed25519_dalek::Signer;
    ed25519_dalek::SigningKey::from_bytes(seed)
        .sign(message)
        .to_bytes()
}

/// Verifies an Ed25519 signature strictly (no malleable or small-order
/// keys and signatures). False for any malformed key or signature.
pub fn ed25519_verify(public: &[u8; KEY_LEN], message: &[u8], signature: &[u8]) -> bool {
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(public) else {
        return false;
    };
    let Ok(signature) = ed25519_dalek::Signature::from_slice(signature) else {
        return false;
    };
    key.verify_strict(message, &signature).is_ok()
}

#[cfg(test)]
mod tests {
    //! The primitives, checked against their RFCs' published vectors, so a
    //! wrong nonce, counter or byte order in how we call them shows up here.
    use super::*;

    fn h<const N: usize>(s: &str) -> [u8; N] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    /// RFC 7748 section 5.2, first test vector.
    #[test]
    fn x25519_rfc7748_scalar_mult() {
        let k = h::<32>("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4");
        let u = h::<32>("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c");
        let out = h::<32>("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552");
        assert_eq!(x25519(&k, &u).unwrap().as_bytes(), &out);
    }

    /// RFC 7748 section 6.1: Alice and Bob agree on K.
    #[test]
    fn x25519_rfc7748_diffie_hellman() {
        let a = h::<32>("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let a_pub = h::<32>("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
        let b = h::<32>("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
        let b_pub = h::<32>("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
        let k = h::<32>("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
        assert_eq!(x25519_public(&a), a_pub);
        assert_eq!(x25519_public(&b), b_pub);
        assert_eq!(x25519(&a, &b_pub).unwrap().as_bytes(), &k);
        assert_eq!(x25519(&b, &a_pub).unwrap().as_bytes(), &k);
    }

    /// A low-order point gives an all-zero secret, which we refuse.
    #[test]
    fn x25519_low_order_point_refused() {
        let a = h::<32>("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        assert!(x25519(&a, &[0u8; 32]).is_none());
        let mut one = [0u8; 32];
        one[0] = 1;
        assert!(x25519(&a, &one).is_none());
    }

    /// RFC 8439 section 2.4.2 uses nonce 000000000000004a00000000 and counter 1;
    /// we use a zero nonce and counter 0, so check the keystream of section
    /// A.1 test vector #1 (all-zero key and nonce, counter 0).
    #[test]
    fn chacha20_rfc8439_keystream() {
        let mut buf = [0u8; 64];
        xor_keystream(&SymmetricKey([0u8; 32]), &mut buf);
        let expected = hex::decode(
            "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7\
             da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586",
        )
        .unwrap();
        assert_eq!(buf.as_slice(), expected.as_slice());
    }

    /// RFC 8439 section 2.8.2, called through the same `ChaCha20Poly1305`
    /// type our wrappers use (they fix the nonce to zero, so the RFC's nonce
    /// is passed directly here).
    #[test]
    fn chacha20poly1305_rfc8439_aead() {
        let key = h::<32>("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
        let nonce = h::<12>("070000004041424344454647");
        let aad = hex::decode("50515253c0c1c2c3c4c5c6c7").unwrap();
        let pt = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let cipher = ChaCha20Poly1305::new(&key.into());
        let mut ct = pt.to_vec();
        let tag = cipher
            .encrypt_inout_detached(&nonce.into(), &aad, InOutBuf::from(ct.as_mut_slice()))
            .unwrap();
        ct.extend_from_slice(&tag);
        let expected_tag = hex::decode("1ae10b594f09e26a7e902ecbd0600691").unwrap();
        assert_eq!(&ct[ct.len() - 16..], expected_tag.as_slice());
        let expected_prefix = hex::decode("d31a8d34648e60db7b86afbc53ef7ec2").unwrap();
        assert_eq!(&ct[..16], expected_prefix.as_slice());
    }

    #[test]
    fn aead_round_trip_and_tamper() {
        let key = SymmetricKey([7u8; 32]);
        let mut buf = [0u8; 64];
        buf[..5].copy_from_slice(b"hello");
        aead_seal(&key, b"ad", &mut buf).unwrap();
        let mut copy = buf;
        aead_open(&key, b"ad", &mut copy).unwrap();
        assert_eq!(&copy[..5], b"hello");
        let mut bad = buf;
        bad[3] ^= 1;
        assert_eq!(aead_open(&key, b"ad", &mut bad), Err(AeadError));
        let mut wrong_ad = buf;
        assert_eq!(aead_open(&key, b"xx", &mut wrong_ad), Err(AeadError));
        assert_eq!(aead_open(&key, b"", &mut [0u8; 3]), Err(AeadError));
    }

    /// RFC 8032 section 7.1, TEST 2 (one-byte message).
    #[test]
    fn ed25519_rfc8032_vector() {
        let seed = h::<32>("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb");
        let public = h::<32>("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c");
        let sig = hex::decode(
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da\
             085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        )
        .unwrap();
        assert_eq!(ed25519_public(&seed), public);
        assert_eq!(ed25519_sign(&seed, &[0x72]).as_slice(), sig.as_slice());
        assert!(ed25519_verify(&public, &[0x72], &sig));
        assert!(!ed25519_verify(&public, &[0x73], &sig));
        assert!(!ed25519_verify(&public, &[0x72], &sig[..63]));
    }

    #[test]
    fn derive_key_is_domain_separated() {
        let a = derive_key("leak test a", &[b"x"]);
        let b = derive_key("leak test b", &[b"x"]);
        assert_ne!(a, b);
        // Concatenation of parts is what is hashed.
        assert_eq!(
            derive_key("leak test a", &[b"xy"]),
            derive_key("leak test a", &[b"x", b"y"])
        );
    }
}
