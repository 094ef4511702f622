//! Every cryptographic primitive Leak uses, in one place.
//!
//! The rest of the crate never names `x25519_dalek`, `curve25519_dalek`,
//! `chacha20`, `chacha20poly1305` or `blake3` directly: it goes through the
//! functions and types here, so there is one file to review and one file to
//! change when a primitive is upgraded (the arrangement `tor-llcrypto` has in
//! arti).
//!
//! | purpose | primitive |
//! |---|---|
//! | key agreement | X25519 (RFC 7748), `curve25519-dalek` (see [`x25519`]); keys held by `x25519-dalek` |
//! | key derivation | BLAKE3 in `derive_key` mode, one context string per purpose, its extendable output where one pass gives several keys (see [`derive_keys`]) |
//! | header MAC | BLAKE3 keyed hash, truncated to [`MAC_LEN`] bytes, compared in constant time |
//! | header layers | ChaCha20 (RFC 8439) keystream, 96-bit zero nonce, one-time keys |
//! | payload layers | LIONESS (Anderson and Biham 1996), a wide-block cipher built from ChaCha20 and BLAKE3 keyed hash (see [`LionessKey`]) |
//! | reply payloads, answers | ChaCha20-Poly1305 (RFC 8439), 96-bit zero nonce, one-time keys |
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
use curve25519_dalek::{EdwardsPoint, MontgomeryPoint, traits::Identity};
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
        x25519(self.secret.as_bytes(), peer)
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

/// Derives `N` keys for `N` purposes at once: the first `N × 32` bytes of
/// BLAKE3's extendable output in `derive_key` mode, split in order. One
/// pass over the key material instead of one per key (a hop derives all of
/// its keys this way).
pub fn derive_keys<const N: usize>(context: &str, parts: &[&[u8]]) -> [SymmetricKey; N] {
    let mut hasher = blake3::Hasher::new_derive_key(context);
    for part in parts {
        hasher.update(part);
    }
    let mut reader = hasher.finalize_xof();
    core::array::from_fn(|_| {
        let mut key = SymmetricKey([0u8; KEY_LEN]);
        reader.fill(&mut key.0);
        key
    })
}

/// X25519 key generation from 32 secret bytes: returns the public key.
pub fn x25519_public(secret: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    EdwardsPoint::mul_base_clamped(*secret)
        .to_montgomery()
        .to_bytes()
}

/// X25519 between our secret bytes and a peer's public key; `None` when not
/// contributory (all-zero output).
///
/// The result is exactly RFC 7748's `X25519(k, u)`: `k` is clamped, the top
/// bit of `u` is ignored and a non-canonical `u` (at least p) is taken mod p.
/// On x86-64 CPUs with AVX2 the multiplication is done on the equivalent
/// Edwards curve, which is faster there than the Montgomery ladder (the
/// private `scalar_mult_by` has the details).
pub fn x25519(secret: &[u8; KEY_LEN], peer: &[u8; KEY_LEN]) -> Option<SharedSecret> {
    let mut multiple = scalar_mult(secret, peer);
    let mut u = multiple.to_montgomery();
    let shared = contributory(&u);
    multiple.zeroize();
    u.zeroize();
    shared
}

/// A client's exchanges with the hops of one path: for each pair of a fresh
/// ephemeral secret and a hop's public key, in order, the ephemeral public
/// key (what the packet carries) and the shared secret (`None` when not
/// contributory).
///
/// The same results as [`x25519_public`] and [`x25519`] pair by pair, only
/// faster: every conversion back to a Montgomery u-coordinate costs a field
/// inversion, and here they all share one (Montgomery's trick).
pub fn x25519_ephemerals<'a>(
    pairs: impl IntoIterator<Item = (&'a [u8; KEY_LEN], &'a [u8; KEY_LEN])>,
) -> Vec<([u8; KEY_LEN], Option<SharedSecret>)> {
    // For pair i, points[2i] is the public key and points[2i + 1] the shared
    // point (the identity, skipped by the batch inversion, when the shared
    // u-coordinate came from the ladder: `ladder[i]`). Both are sized up
    // front so that no reallocation leaves a copy of a secret behind. (The
    // batch conversion's own scratch space is dropped without zeroing, as
    // `curve25519-dalek` leaves every intermediate value it computes.)
    let pairs = pairs.into_iter();
    let mut points = Vec::with_capacity(2 * pairs.size_hint().0);
    let mut ladder = Vec::with_capacity(pairs.size_hint().0);
    for (secret, peer) in pairs {
        points.push(EdwardsPoint::mul_base_clamped(*secret));
        match scalar_mult(secret, peer) {
            Multiple::Edwards(point) => {
                points.push(point);
                ladder.push(None);
            }
            Multiple::Montgomery(u) => {
                points.push(EdwardsPoint::identity());
                ladder.push(Some(u));
            }
        }
    }
    let mut us = EdwardsPoint::to_montgomery_batch(&points);
    points.zeroize();
    let out = us
        .chunks_exact(2)
        .zip(&ladder)
        .map(|(u, ladder)| {
            let shared = ladder.as_ref().unwrap_or(&u[1]);
            (u[0].to_bytes(), contributory(shared))
        })
        .collect();
    us.zeroize();
    ladder.zeroize();
    out
}

/// A multiple of a point given by its Montgomery u-coordinate, on whichever
/// model it was computed: see [`scalar_mult_by`].
enum Multiple {
    /// On the Edwards curve birationally equivalent to Curve25519.
    Edwards(EdwardsPoint),
    /// The u-coordinate, from the Montgomery ladder (points on the twist).
    Montgomery(MontgomeryPoint),
}

impl Multiple {
    /// The Montgomery u-coordinate (one field inversion for `Edwards`).
    fn to_montgomery(&self) -> MontgomeryPoint {
        match self {
            Self::Edwards(point) => point.to_montgomery(),
            Self::Montgomery(u) => *u,
        }
    }
}

impl Zeroize for Multiple {
    fn zeroize(&mut self) {
        match self {
            Self::Edwards(point) => point.zeroize(),
            Self::Montgomery(u) => u.zeroize(),
        }
    }
}

/// RFC 7748's `X25519(k, u)` before its final conversion: the multiple of
/// the point with u-coordinate `peer` by `clamp(secret)`, by the faster of
/// the two routes of [`scalar_mult_by`] on this CPU.
fn scalar_mult(secret: &[u8; KEY_LEN], peer: &[u8; KEY_LEN]) -> Multiple {
    scalar_mult_by(secret, peer, edwards_is_faster())
}

/// Whether [`scalar_mult_by`]'s Edwards route beats the Montgomery ladder
/// here: when `curve25519-dalek` runs its AVX2 backend, which it picks at
/// run time on x86-64 CPUs that have AVX2. (Built with its serial backend
/// forced by `--cfg curve25519_dalek_backend`, the Edwards route is still
/// taken on such CPUs, correct but slower.)
fn edwards_is_faster() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// RFC 7748's `X25519(k, u)` before its final conversion: the multiple of
/// the point with u-coordinate `peer` by `clamp(secret)`.
///
/// With `edwards` and `u` on the curve (every honest public key), the
/// multiplication is done on the birationally equivalent Edwards curve, for
/// which `curve25519-dalek` has an AVX2 (vector) backend: that is about a
/// quarter faster than its serial Montgomery ladder, conversions included
/// (39 µs against 52 µs on an AMD EPYC). With only the serial backend it is
/// slower, by the cost of the conversions' field exponentiations. The
/// Edwards point over `u` is decompressed with sign 0; the other one is its
/// negative, and so are their multiples, so the u-coordinate of the result
/// does not depend on the choice. The map is a group isomorphism that sends
/// the Montgomery point at infinity and (0, 0) to Edwards points that the
/// conversion back sends to u = 0, just what the ladder outputs for them.
/// For `u` on the quadratic twist, which has no Edwards point, and without
/// `edwards`, the ladder runs.
///
/// Both routes reduce `u` the RFC's way: the top bit is ignored and values
/// of p and above are taken mod p (`FieldElement::from_bytes`). Both are
/// constant-time in `secret`, and which one runs depends only on `peer`,
/// which is public, and the CPU.
fn scalar_mult_by(secret: &[u8; KEY_LEN], peer: &[u8; KEY_LEN], edwards: bool) -> Multiple {
    let u = MontgomeryPoint(*peer);
    if edwards && let Some(point) = u.to_edwards(0) {
        return Multiple::Edwards(point.mul_clamped(*secret));
    }
    Multiple::Montgomery(u.mul_clamped(*secret))
}

/// The shared secret for the output `u`, or `None` when it is all zeros (the
/// peer sent a low-order point). The check is constant-time.
fn contributory(u: &MontgomeryPoint) -> Option<SharedSecret> {
    let zero = u.as_bytes().ct_eq(&[0u8; KEY_LEN]);
    (!bool::from(zero)).then(|| SharedSecret(u.to_bytes()))
}

/// XORs the ChaCha20 keystream for `key` (zero nonce, counter from 0) into `buf`.
pub fn xor_keystream(key: &SymmetricKey, buf: &mut [u8]) {
    let mut cipher = ChaCha20::new(&key.0.into(), &[0u8; 12].into());
    cipher.apply_keystream(buf);
}

/// The `derive_key` context of LIONESS's round keys: `K1 || K2 || K3 ||
/// K4` are the first 128 bytes of its extendable output. (Packet format 2
/// derived each with a context of its own: four passes where one does.)
const LIONESS_ROUND_KEYS_CONTEXT: &str = "leak.lioness v2 2026-12 round keys";

/// The key of one LIONESS permutation: four round keys derived from one
/// 32-byte key. Zeroed on drop.
///
/// LIONESS (Anderson and Biham, "Two practical and provably secure block
/// ciphers: BEAR and LION", 1996) turns a stream cipher and a keyed hash
/// into a block cipher as wide as the whole buffer: a strong pseudorandom
/// permutation, so changing any bit of the input changes every bit of the
/// output unpredictably, in both directions. That is what a mix payload
/// needs and a stream cipher lacks: XOR a marker into a stream-encrypted
/// payload and the same marker can be XORed out again further along, while
/// under LIONESS the next hop's decryption turns the marked payload into
/// noise that no later XOR can repair. (Sphinx specifies LIONESS for the
/// payload for this reason; Katzenpost's LIONESS specification and Nym's
/// `sphinx-packet` instantiate it with ChaCha20 and BLAKE2b, as this one
/// does with ChaCha20 and BLAKE3.)
///
/// The buffer is split into a left part of [`KEY_LEN`] bytes `L` and the
/// rest `R`. Encryption is four rounds, with `S(k)` the ChaCha20 keystream
/// of key `k` (zero nonce, counter 0) and `H(k, x)` the 32-byte BLAKE3
/// keyed hash:
///
/// ```text
/// R ^= S(L ^ K1);  L ^= H(K2, R);  R ^= S(L ^ K3);  L ^= H(K4, R)
/// ```
///
/// and decryption runs them backwards. `K1`..`K4` come from the key by
/// BLAKE3 `derive_key` in one extendable output. Each round key is used once
/// per packet, so the ChaCha20 keys `L ^ K` (fresh per packet and per
/// round) never repeat with the fixed nonce.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct LionessKey {
    rounds: [[u8; KEY_LEN]; 4],
}

impl core::fmt::Debug for LionessKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("LionessKey(..)")
    }
}

impl LionessKey {
    /// The four round keys of `key` (one `derive_keys` for all four).
    pub fn derive(key: &SymmetricKey) -> Self {
        let keys: [SymmetricKey; 4] = derive_keys(LIONESS_ROUND_KEYS_CONTEXT, &[&key.0]);
        Self {
            rounds: keys.map(|k| k.0),
        }
    }

    /// Encrypts `block` in place. `N` must exceed [`KEY_LEN`] (checked at
    /// compile time): the left part is the first [`KEY_LEN`] bytes.
    pub fn encrypt<const N: usize>(&self, block: &mut [u8; N]) {
        let (left, right) = split_block(block);
        lioness_stream_round(&self.rounds[0], left, right);
        lioness_hash_round(&self.rounds[1], left, right);
        lioness_stream_round(&self.rounds[2], left, right);
        lioness_hash_round(&self.rounds[3], left, right);
    }

    /// Decrypts `block` in place: the inverse of [`Self::encrypt`].
    pub fn decrypt<const N: usize>(&self, block: &mut [u8; N]) {
        let (left, right) = split_block(block);
        lioness_hash_round(&self.rounds[3], left, right);
        lioness_stream_round(&self.rounds[2], left, right);
        lioness_hash_round(&self.rounds[1], left, right);
        lioness_stream_round(&self.rounds[0], left, right);
    }
}

/// Splits a LIONESS block into its left part (a key's length) and the rest.
fn split_block<const N: usize>(block: &mut [u8; N]) -> (&mut [u8], &mut [u8]) {
    const { assert!(N > KEY_LEN, "a LIONESS block is longer than its left part") };
    block.split_at_mut(KEY_LEN)
}

/// `R ^= ChaCha20(L ^ k)`.
fn lioness_stream_round(round_key: &[u8; KEY_LEN], left: &[u8], right: &mut [u8]) {
    let mut key = [0u8; KEY_LEN];
    for ((k, l), r) in key.iter_mut().zip(left).zip(round_key) {
        *k = l ^ r;
    }
    let mut cipher = ChaCha20::new(&key.into(), &[0u8; 12].into());
    cipher.apply_keystream(right);
    key.zeroize();
}

/// `L ^= BLAKE3-keyed(k, R)`.
fn lioness_hash_round(round_key: &[u8; KEY_LEN], left: &mut [u8], right: &[u8]) {
    let hash = blake3::keyed_hash(round_key, right);
    for (l, h) in left.iter_mut().zip(hash.as_bytes()) {
        *l ^= h;
    }
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
        assert_eq!(ours(&k, &u), out);
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

    /// RFC 7748 section 5.2, second test vector: its u has the top bit set,
    /// which X25519 must ignore.
    #[test]
    fn x25519_rfc7748_scalar_mult_top_bit() {
        let k = h::<32>("4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d");
        let u = h::<32>("e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493");
        let out = h::<32>("95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957");
        assert!(u[31] & 0x80 != 0);
        assert_eq!(ours(&k, &u), out);
    }

    /// RFC 7748 section 5.2, the iterated test: k = u = 9, then repeatedly
    /// `(k, u) = (X25519(k, u), k)`.
    fn x25519_iterated(iterations: usize) -> [u8; KEY_LEN] {
        let mut k = [0u8; KEY_LEN];
        k[0] = 9;
        let mut u = k;
        for _ in 0..iterations {
            let next = ours(&k, &u);
            u = k;
            k = next;
        }
        k
    }

    #[test]
    fn x25519_rfc7748_iterated_once() {
        assert_eq!(
            x25519_iterated(1),
            h::<32>("422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079")
        );
    }

    #[test]
    fn x25519_rfc7748_iterated_1000_times() {
        assert_eq!(
            x25519_iterated(1000),
            h::<32>("684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51")
        );
    }

    /// u = p + offset, with the top bit set if `top`: non-canonical
    /// encodings, which X25519 must reduce mod p.
    fn non_canonical(offset: u8, top: bool) -> [u8; KEY_LEN] {
        assert!(offset <= 18);
        let mut u = [0xffu8; KEY_LEN];
        u[0] = 0xed + offset;
        u[31] = if top { 0xff } else { 0x7f };
        u
    }

    /// `X25519(k, u)` by the plain Montgomery ladder (`x25519-dalek`).
    fn ladder(k: &[u8; KEY_LEN], u: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
        x25519_dalek::x25519(*k, *u)
    }

    /// What [`x25519`] returns, as bytes (all zeros for `None`), after
    /// checking that both of [`scalar_mult_by`]'s routes give it, whichever
    /// this CPU makes [`x25519`] take.
    fn ours(k: &[u8; KEY_LEN], u: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
        let out = x25519(k, u).map_or([0u8; KEY_LEN], |shared| *shared.as_bytes());
        for edwards in [false, true] {
            let by = scalar_mult_by(k, u, edwards).to_montgomery().to_bytes();
            assert_eq!(by, out, "edwards route {edwards}, u {}", hex::encode(u));
        }
        out
    }

    /// Whether `u` (top bit ignored, mod p) is on the twist rather than the
    /// curve, so [`scalar_mult`] takes the ladder.
    fn on_twist(u: &[u8; KEY_LEN]) -> bool {
        MontgomeryPoint(*u).to_edwards(0).is_none()
    }

    /// The points of small order (libsodium's list of encodings that
    /// X25519 maps to zero for every scalar), with and without the top bit.
    fn low_order_points() -> Vec<[u8; KEY_LEN]> {
        let mut points = vec![
            [0u8; KEY_LEN],
            h::<32>("0100000000000000000000000000000000000000000000000000000000000000"),
            h::<32>("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
            h::<32>("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
            h::<32>("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
            non_canonical(0, false),
            non_canonical(1, false),
        ];
        let with_top: Vec<_> = points
            .iter()
            .map(|u| {
                let mut u = *u;
                u[31] |= 0x80;
                u
            })
            .collect();
        points.extend(with_top);
        points
    }

    /// Every low-order point, on the curve (Edwards route) or on the twist
    /// (ladder), gives all zeros like the ladder does, and is refused.
    #[test]
    fn x25519_low_order_points_match_ladder() {
        let k = h::<32>("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4");
        let points = low_order_points();
        assert!(points.iter().any(on_twist));
        assert!(points.iter().any(|u| !on_twist(u)));
        for u in &points {
            assert_eq!(ladder(&k, u), [0u8; KEY_LEN], "{}", hex::encode(u));
            assert_eq!(ours(&k, u), [0u8; KEY_LEN], "{}", hex::encode(u));
            assert!(x25519(&k, u).is_none(), "{}", hex::encode(u));
        }
    }

    /// Points on the twist take the ladder and give its result; the
    /// non-canonical encodings of 2..=18 and small u both ways.
    #[test]
    fn x25519_twist_points_match_ladder() {
        let k = h::<32>("4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d");
        let mut twist = 0;
        for small in 2u8..=18 {
            let mut u = [0u8; KEY_LEN];
            u[0] = small;
            for u in [u, non_canonical(small, false), non_canonical(small, true)] {
                twist += usize::from(on_twist(&u));
                assert_eq!(ours(&k, &u), ladder(&k, &u), "{}", hex::encode(u));
            }
        }
        assert!(twist > 0);
    }

    proptest::proptest! {
        /// Random u (half on the curve, half on the twist; half with the top
        /// bit set) agree with the ladder.
        #[test]
        fn x25519_matches_ladder(k in proptest::prelude::any::<[u8; KEY_LEN]>(), u in proptest::prelude::any::<[u8; KEY_LEN]>()) {
            proptest::prop_assert_eq!(ours(&k, &u), ladder(&k, &u));
        }

        /// Non-canonical u (p to 2^255 - 1, top bit set or not) agree too.
        #[test]
        fn x25519_non_canonical_matches_ladder(k in proptest::prelude::any::<[u8; KEY_LEN]>(), offset in 0u8..=18, top in proptest::prelude::any::<bool>()) {
            let u = non_canonical(offset, top);
            proptest::prop_assert_eq!(ours(&k, &u), ladder(&k, &u));
        }

        /// Key generation is X25519 with u = 9.
        #[test]
        fn x25519_public_matches_ladder(k in proptest::prelude::any::<[u8; KEY_LEN]>()) {
            proptest::prop_assert_eq!(x25519_public(&k), ladder(&k, &x25519_dalek::X25519_BASEPOINT_BYTES));
            proptest::prop_assert_eq!(MixSecret::from_bytes(k).public().0, x25519_public(&k));
        }

        /// The batched client exchanges agree with one-at-a-time ones, for
        /// random peers (curve and twist) mixed with low-order ones.
        #[test]
        fn x25519_ephemerals_match_singles(
            pairs in proptest::collection::vec(
                (proptest::prelude::any::<[u8; KEY_LEN]>(), proptest::prelude::any::<[u8; KEY_LEN]>(), 0usize..32),
                0..7,
            ),
        ) {
            let low = low_order_points();
            let pairs: Vec<_> = pairs
                .into_iter()
                .map(|(k, u, pick)| (k, low.get(pick).copied().unwrap_or(u)))
                .collect();
            let batch = x25519_ephemerals(pairs.iter().map(|(k, u)| (k, u)));
            proptest::prop_assert_eq!(batch.len(), pairs.len());
            for ((public, shared), (k, u)) in batch.iter().zip(&pairs) {
                proptest::prop_assert_eq!(*public, ladder(k, &x25519_dalek::X25519_BASEPOINT_BYTES));
                let shared = shared.as_ref().map_or([0u8; KEY_LEN], |s| *s.as_bytes());
                proptest::prop_assert_eq!(shared, ladder(k, u));
                proptest::prop_assert_eq!(shared, ours(k, u));
            }
        }
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

    /// A payload-sized block of varied bytes.
    fn lioness_block() -> [u8; 3566] {
        let mut block = [0u8; 3566];
        blake3::Hasher::new_derive_key("leak test lioness block")
            .finalize_xof()
            .fill(&mut block);
        block
    }

    /// The bits in which `a` and `b` differ, as a fraction of their bits.
    fn differing_bits(a: &[u8], b: &[u8]) -> f64 {
        let bits: u32 = a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum();
        f64::from(bits) / (8 * a.len()) as f64
    }

    #[test]
    fn lioness_round_trip_and_key_separation() {
        let key = LionessKey::derive(&SymmetricKey([3u8; 32]));
        let plain = lioness_block();
        let mut block = plain;
        key.encrypt(&mut block);
        assert!((0.45..0.55).contains(&differing_bits(&block, &plain)));
        let mut back = block;
        key.decrypt(&mut back);
        assert_eq!(back, plain);
        // Decryption is a permutation too: decrypt-then-encrypt is the identity.
        let mut other = plain;
        key.decrypt(&mut other);
        key.encrypt(&mut other);
        assert_eq!(other, plain);
        // Another key gives another permutation.
        let mut wrong = block;
        LionessKey::derive(&SymmetricKey([4u8; 32])).decrypt(&mut wrong);
        assert!((0.45..0.55).contains(&differing_bits(&wrong, &plain)));
        // The four round keys differ from each other and from the key.
        assert!(key.rounds.iter().all(|r| r != &[3u8; 32]));
        for (i, a) in key.rounds.iter().enumerate() {
            assert!(key.rounds[i + 1..].iter().all(|b| a != b));
        }
    }

    /// One flipped bit anywhere in a ciphertext, left part or right, changes
    /// every region of the decryption, in about half its bits; so does one
    /// flipped bit of a plaintext for the encryption. This is what a stream
    /// cipher does not do, and what stops tagging.
    #[test]
    fn lioness_one_bit_changes_every_region() {
        let key = LionessKey::derive(&SymmetricKey([9u8; 32]));
        let plain = lioness_block();
        let mut cipher = plain;
        key.encrypt(&mut cipher);
        let bits = 8 * plain.len();
        for bit in (0..bits).step_by(331).chain([0, 255, 256, bits - 1]) {
            for decrypt in [true, false] {
                let (base, expected) = if decrypt {
                    (cipher, plain)
                } else {
                    (plain, cipher)
                };
                let mut flipped = base;
                flipped[bit / 8] ^= 1 << (bit % 8);
                if decrypt {
                    key.decrypt(&mut flipped);
                } else {
                    key.encrypt(&mut flipped);
                }
                // The left part (32 bytes), then the rest in 256-byte regions.
                let regions = std::iter::once(0..KEY_LEN).chain(
                    (KEY_LEN..plain.len())
                        .step_by(256)
                        .map(|s| s..(s + 256).min(plain.len())),
                );
                for region in regions {
                    let d = differing_bits(&flipped[region.clone()], &expected[region.clone()]);
                    assert!(
                        (0.3..0.7).contains(&d),
                        "bit {bit}, decrypt {decrypt}: region {region:?} differs in {d}"
                    );
                }
            }
        }
    }
}
