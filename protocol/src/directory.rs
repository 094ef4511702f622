//! Node descriptors: what a node says about itself, signed with its identity.
//!
//! Every node has a long-term Ed25519 identity; its public key is its
//! [`NodeId`] (and its libp2p `PeerId`). A node publishes a [`Descriptor`]:
//! where to reach it, what it does (relay, exit), which operator family it
//! belongs to, and its mix public key for each epoch it has keys for. The
//! signed form ([`SignedDescriptor`]) spreads by gossip and is served on
//! request; every receiver verifies it with [`SignedDescriptor::verify`]
//! before using it, and drops descriptors that are forged, stale, from the
//! future, or inconsistent.
//!
//! A [`Directory`] is the verified view built from them, the same for a
//! node (fed by gossip and anti-entropy) and a client (fed by bootstrap
//! nodes or its cache): only descriptors that verify, the newest per node,
//! bounded in number, dropped once stale.
//!
//! A descriptor also carries the node's [`EpochTraffic`]: how many packets
//! it received in its last complete epoch, from clients and from nodes, in
//! aggregate. A sender's agent adds these up over the directory to estimate
//! how many others it hides among; no count names a peer.
//!
//! Times are Unix seconds passed in by the caller: this module reads no clock.

use core::fmt;
use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, de};

pub use crate::roster::Roles;
use crate::{
    crypto::{self, MixPublicKey},
    roster::{Roster, RosterError},
    sphinx::NodeId,
};

/// The descriptor format version. Version 2 added [`Descriptor::traffic`];
/// a version 1 descriptor is refused as [`DescriptorError::UnknownVersion`].
pub const DESCRIPTOR_VERSION: u8 = 2;
/// Signatures cover this prefix and the encoded descriptor.
const SIGNING_CONTEXT: &[u8] = b"leak.descriptor v1 2026-11";
/// At most this many listen addresses.
pub const MAX_ADDRESSES: usize = 8;
/// At most this many bytes per address.
pub const MAX_ADDRESS_LEN: usize = 256;
/// At most this many epoch keys.
pub const MAX_EPOCH_KEYS: usize = 8;
/// At most this many bytes of family, software version or exit domain.
pub const MAX_NAME_LEN: usize = crate::roster::MAX_FAMILY_LEN;
/// The most bytes an encoded signed descriptor can take.
pub const MAX_SIGNED_DESCRIPTOR_LEN: usize = 4096;

/// What an exit tells clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// The domain its email comes from.
    pub domain: String,
    /// The moderation policy version it enforces.
    pub policy_version: u32,
    /// The leading zero bits it asks of a leak's stamp now: the policy's,
    /// or more while it is under load (0: the policy's). A client solves
    /// for the greater of this and its policy's `stamp_bits`.
    pub stamp_bits: u8,
}

impl ExitInfo {
    /// The bits a stamp for this exit needs, for a policy asking
    /// `policy_bits`.
    pub fn stamp_bits_for(&self, policy_bits: u8) -> u8 {
        self.stamp_bits.max(policy_bits)
    }
}

/// A node's mix public key for one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochKey {
    /// The epoch number.
    pub epoch: u64,
    /// The key.
    pub key: MixPublicKey,
}

/// The packets a node received in one complete epoch, in aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochTraffic {
    /// The epoch, on the descriptor's own schedule
    /// ([`Descriptor::epoch_period_secs`]); strictly before the epoch the
    /// descriptor was published in.
    pub epoch: u64,
    /// Packets received from peers that are not nodes of the directory:
    /// senders (clients, agents).
    pub from_clients: u64,
    /// Packets received from nodes of the directory.
    pub from_nodes: u64,
}

/// What a node says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// The node's Ed25519 identity key.
    pub node: NodeId,
    /// libp2p multiaddresses, as text, where the node listens.
    #[serde(deserialize_with = "bounded_vec::<_, MAX_ADDRESSES, _>")]
    pub addresses: Vec<String>,
    /// What the node does.
    pub roles: Roles,
    /// The operator family: nodes of one operator share it, and a path
    /// never uses two nodes of one family.
    pub family: String,
    /// Exit details, present exactly when `roles.exit`.
    pub exit: Option<ExitInfo>,
    /// Seconds per key epoch on this node's schedule.
    pub epoch_period_secs: u64,
    /// Mix public keys, by strictly increasing epoch.
    #[serde(deserialize_with = "bounded_vec::<_, MAX_EPOCH_KEYS, _>")]
    pub mix_keys: Vec<EpochKey>,
    /// The software and its version.
    pub software: String,
    /// When the node signed this, Unix seconds.
    pub published_at: u64,
    /// What the node received in its last complete epoch; `None` before it
    /// has run through one.
    pub traffic: Option<EpochTraffic>,
}

/// A descriptor as it travels: the encoded descriptor and its signature.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedDescriptor {
    body: Vec<u8>,
    signature: Vec<u8>,
}

impl fmt::Debug for SignedDescriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignedDescriptor({} bytes)", self.body.len())
    }
}

/// What makes a descriptor fresh enough to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// The current time, Unix seconds.
    pub now: u64,
    /// Older than this many seconds is stale.
    pub max_age_secs: u64,
    /// Published more than this many seconds in the future is refused.
    pub max_clock_skew_secs: u64,
}

/// Why a descriptor was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DescriptorError {
    /// The bytes do not decode.
    #[error("the descriptor does not decode")]
    Malformed,
    /// Too large to be a descriptor.
    #[error("the descriptor is too large")]
    TooLarge,
    /// An unknown descriptor version.
    #[error("unknown descriptor version {0}")]
    UnknownVersion(u8),
    /// The signing secret does not match the descriptor's identity.
    #[error("the identity key does not match the signing secret")]
    InvalidIdentity,
    /// The signature does not verify under the descriptor's identity.
    #[error("the signature does not verify")]
    BadSignature,
    /// Published too long ago.
    #[error("the descriptor is stale")]
    Stale,
    /// Published in the future.
    #[error("the descriptor is from the future")]
    FromTheFuture,
    /// Fields contradict each other or break a limit.
    #[error("the descriptor is inconsistent: {0}")]
    Inconsistent(&'static str),
}

impl Descriptor {
    /// Whether agents should take this node as their guard: a relay of
    /// the entry layer that is not an exit ([`crate::federation::layer`]).
    pub fn is_entry(&self) -> bool {
        self.roles.relay
            && !self.roles.exit
            && crate::federation::layer(&self.node) == crate::federation::Layer::Entry
    }

    /// Whether paths should cross this node between a guard and an exit:
    /// a relay of the mix layer, or an exit that also relays (an exit is
    /// never a guard, so it holds no client's fresh packets either).
    pub fn is_mix(&self) -> bool {
        self.roles.relay
            && (self.roles.exit
                || crate::federation::layer(&self.node) == crate::federation::Layer::Mix)
    }

    /// Checks the rules a descriptor must follow, whoever signed it.
    pub fn check_consistency(&self) -> Result<(), DescriptorError> {
        use DescriptorError::Inconsistent;
        if self.addresses.is_empty() {
            return Err(Inconsistent("no address"));
        }
        if self.addresses.len() > MAX_ADDRESSES
            || self.addresses.iter().any(|a| a.len() > MAX_ADDRESS_LEN)
        {
            return Err(Inconsistent("too many or too long addresses"));
        }
        if !self.roles.relay && !self.roles.exit {
            return Err(Inconsistent("no role"));
        }
        if self.roles.exit != self.exit.is_some() {
            return Err(Inconsistent(
                "exit details without the exit role, or the reverse",
            ));
        }
        if self.family.len() > MAX_NAME_LEN
            || self.software.len() > MAX_NAME_LEN
            || self
                .exit
                .as_ref()
                .is_some_and(|e| e.domain.len() > MAX_NAME_LEN)
        {
            return Err(Inconsistent("a name is too long"));
        }
        if self.epoch_period_secs == 0 {
            return Err(Inconsistent("zero epoch period"));
        }
        if self.mix_keys.is_empty() || self.mix_keys.len() > MAX_EPOCH_KEYS {
            return Err(Inconsistent("no mix keys, or too many"));
        }
        if self.mix_keys.windows(2).any(|w| w[0].epoch >= w[1].epoch) {
            return Err(Inconsistent("mix keys not in increasing epoch order"));
        }
        if self
            .traffic
            .is_some_and(|t| t.epoch >= self.epoch_at(self.published_at))
        {
            return Err(Inconsistent("traffic counts of an epoch not yet over"));
        }
        Ok(())
    }

    /// The epoch a Unix time falls in on this node's schedule.
    pub fn epoch_at(&self, unix_secs: u64) -> u64 {
        unix_secs / self.epoch_period_secs.max(1)
    }

    /// The mix key for `epoch`, if the node published one.
    pub fn mix_key(&self, epoch: u64) -> Option<MixPublicKey> {
        self.mix_keys
            .iter()
            .find(|k| k.epoch == epoch)
            .map(|k| k.key)
    }

    /// Signs the descriptor with the node's identity secret (the 32-byte
    /// Ed25519 seed). Fails if `self.node` is not that secret's public key.
    pub fn sign(&self, identity_seed: &[u8; 32]) -> Result<SignedDescriptor, DescriptorError> {
        self.check_consistency()?;
        if crypto::ed25519_public(identity_seed) != self.node.0 {
            return Err(DescriptorError::InvalidIdentity);
        }
        let mut body = vec![DESCRIPTOR_VERSION];
        body.extend(postcard::to_allocvec(self).map_err(|_| DescriptorError::Malformed)?);
        let signature = crypto::ed25519_sign(identity_seed, &signing_input(&body)).to_vec();
        let signed = SignedDescriptor { body, signature };
        if signed.to_bytes().len() > MAX_SIGNED_DESCRIPTOR_LEN {
            return Err(DescriptorError::TooLarge);
        }
        Ok(signed)
    }
}

fn signing_input(body: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(SIGNING_CONTEXT.len() + body.len());
    input.extend_from_slice(SIGNING_CONTEXT);
    input.extend_from_slice(body);
    input
}

impl SignedDescriptor {
    /// The wire encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Parses the wire encoding (not yet verified: call [`Self::verify`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DescriptorError> {
        if bytes.len() > MAX_SIGNED_DESCRIPTOR_LEN {
            return Err(DescriptorError::TooLarge);
        }
        let (signed, rest): (Self, _) =
            postcard::take_from_bytes(bytes).map_err(|_| DescriptorError::Malformed)?;
        if !rest.is_empty() {
            return Err(DescriptorError::Malformed);
        }
        Ok(signed)
    }

    /// Verifies the signature, the freshness and the consistency, and
    /// returns the descriptor.
    pub fn verify(&self, freshness: Freshness) -> Result<Descriptor, DescriptorError> {
        let descriptor = self.decode_unverified()?;
        self.verify_decoded(descriptor, freshness)
    }

    /// The descriptor as it claims to be, before any check: only to decide
    /// cheaply whether to verify it at all (whether a roster admits its
    /// node).
    fn decode_unverified(&self) -> Result<Descriptor, DescriptorError> {
        let [version, body @ ..] = self.body.as_slice() else {
            return Err(DescriptorError::Malformed);
        };
        if *version != DESCRIPTOR_VERSION {
            return Err(DescriptorError::UnknownVersion(*version));
        }
        let (descriptor, rest): (Descriptor, _) =
            postcard::take_from_bytes(body).map_err(|_| DescriptorError::Malformed)?;
        if !rest.is_empty() {
            return Err(DescriptorError::Malformed);
        }
        Ok(descriptor)
    }

    /// [`Self::verify`] of the descriptor [`Self::decode_unverified`] gave.
    fn verify_decoded(
        &self,
        descriptor: Descriptor,
        freshness: Freshness,
    ) -> Result<Descriptor, DescriptorError> {
        if !crypto::ed25519_verify(
            &descriptor.node.0,
            &signing_input(&self.body),
            &self.signature,
        ) {
            return Err(DescriptorError::BadSignature);
        }
        if descriptor.published_at > freshness.now.saturating_add(freshness.max_clock_skew_secs) {
            return Err(DescriptorError::FromTheFuture);
        }
        if freshness.now.saturating_sub(descriptor.published_at) > freshness.max_age_secs {
            return Err(DescriptorError::Stale);
        }
        descriptor.check_consistency()?;
        Ok(descriptor)
    }
}

/// Deserializes a `Vec` of at most `N` elements, allocating for at most `N`.
fn bounded_vec<'de, T, const N: usize, D>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    struct Bounded<T, const N: usize>(core::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>, const N: usize> de::Visitor<'de> for Bounded<T, N> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a sequence of at most {N} elements")
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(N));
            while let Some(item) = seq.next_element()? {
                if out.len() == N {
                    return Err(de::Error::invalid_length(N + 1, &self));
                }
                out.push(item);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_seq(Bounded::<T, N>(core::marker::PhantomData))
}

/// What happened to a descriptor offered to a [`Directory`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// A new node, or a newer descriptor of a known node: now in use.
    Accepted,
    /// Already known (published at the same time or earlier).
    Known,
}

/// Why a [`Directory`] refused a descriptor.
// Exhaustive: the node matches on it to choose what to gossip on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// It failed verification.
    #[error(transparent)]
    Invalid(#[from] DescriptorError),
    /// The directory is full.
    #[error("the directory is full")]
    Full,
    /// No valid roster is held yet: no node can be admitted.
    #[error("no valid roster is held")]
    NoRoster,
    /// The roster does not admit its node (refused before its signature
    /// is checked).
    #[error("the roster does not admit this node")]
    NotRostered,
    /// It announces a role the roster does not grant, or a family other
    /// than the roster's.
    #[error("the descriptor contradicts the roster (roles or family)")]
    BeyondRoster,
}

impl Refused {
    /// A short stable label, for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::NoRoster => "no_roster",
            Self::NotRostered => "not_rostered",
            Self::BeyondRoster => "beyond_roster",
            Self::Invalid(DescriptorError::BadSignature) => "bad_signature",
            Self::Invalid(DescriptorError::Stale) => "stale",
            Self::Invalid(DescriptorError::FromTheFuture) => "from_the_future",
            Self::Invalid(DescriptorError::Inconsistent(_)) => "inconsistent",
            Self::Invalid(_) => "malformed",
        }
    }
}

/// The verified directory: descriptors that passed
/// [`SignedDescriptor::verify`] of nodes the roster admits, as it admits
/// them, the newest per node, in node-id order, with the signed form each
/// came in (to serve on, or to cache).
///
/// A directory holds at most one [`Roster`] (the newest valid one it was
/// given: [`Directory::adopt_roster`]); without one it admits nobody.
#[derive(Debug, Clone)]
pub struct Directory {
    entries: BTreeMap<NodeId, (Descriptor, SignedDescriptor)>,
    roster: Option<Roster>,
    /// The serial of the last roster that expired while held: an older
    /// one is never taken again.
    expired_serial: u64,
    max_age_secs: u64,
    max_clock_skew_secs: u64,
    max_nodes: usize,
}

/// Whether `roster` admits `descriptor` as it stands: its node, the roles
/// it announces, its family.
pub fn admits(roster: &Roster, descriptor: &Descriptor) -> Result<(), Refused> {
    let admission = roster.get(&descriptor.node).ok_or(Refused::NotRostered)?;
    if (descriptor.roles.relay && !admission.roles.relay)
        || (descriptor.roles.exit && !admission.roles.exit)
        || descriptor.family != admission.family
    {
        return Err(Refused::BeyondRoster);
    }
    Ok(())
}

impl Directory {
    /// An empty directory: descriptors older than `max_age_secs` or dated
    /// more than `max_clock_skew_secs` ahead are refused, and at most
    /// `max_nodes` nodes are kept.
    pub fn new(max_age_secs: u64, max_clock_skew_secs: u64, max_nodes: usize) -> Self {
        Self {
            entries: BTreeMap::new(),
            roster: None,
            expired_serial: 0,
            max_age_secs,
            max_clock_skew_secs,
            max_nodes,
        }
    }

    /// The freshness rule at `now` (Unix seconds).
    pub fn freshness(&self, now: u64) -> Freshness {
        Freshness {
            now,
            max_age_secs: self.max_age_secs,
            max_clock_skew_secs: self.max_clock_skew_secs,
        }
    }

    /// The roster in force, if any.
    pub fn roster(&self) -> Option<&Roster> {
        self.roster.as_ref()
    }

    /// Takes `roster` (verified by the caller: signatures and time) if it
    /// is newer than the one held, and drops every descriptor it does not
    /// admit; returns how many. A roster of the held serial with other
    /// content is refused ([`RosterError::Equivocation`]); an older one too
    /// ([`RosterError::NotNewer`], also for the same roster again).
    pub fn adopt_roster(&mut self, roster: Roster) -> Result<usize, RosterError> {
        if roster.serial <= self.expired_serial {
            return Err(RosterError::NotNewer {
                serial: roster.serial,
                held: self.expired_serial,
            });
        }
        if let Some(held) = &self.roster {
            if roster.serial == held.serial && roster != *held {
                return Err(RosterError::Equivocation(roster.serial));
            }
            if roster.serial <= held.serial {
                return Err(RosterError::NotNewer {
                    serial: roster.serial,
                    held: held.serial,
                });
            }
        }
        let before = self.entries.len();
        self.entries.retain(|_, (d, _)| admits(&roster, d).is_ok());
        self.roster = Some(roster);
        Ok(before - self.entries.len())
    }

    /// Verifies `signed` at `now` and keeps it if the roster admits it and
    /// its node is new or it is newer than the one known. A node the
    /// roster does not name costs a decode, not a signature check; nor do
    /// the very bytes already held (every pull of a peer's directory offers
    /// the descriptors it offered last time).
    pub fn offer(&mut self, signed: SignedDescriptor, now: u64) -> Result<Offer, Refused> {
        let roster = self.roster.as_ref().ok_or(Refused::NoRoster)?;
        let claimed = signed.decode_unverified()?;
        if roster.get(&claimed.node).is_none() {
            return Err(Refused::NotRostered);
        }
        if let Some((held, held_signed)) = self.entries.get(&claimed.node)
            && *held_signed == signed
        {
            // Verified when taken: only the clock and the roster can have
            // changed since.
            if now.saturating_sub(held.published_at) > self.max_age_secs {
                return Err(DescriptorError::Stale.into());
            }
            admits(roster, held)?;
            return Ok(Offer::Known);
        }
        let descriptor = signed.verify_decoded(claimed, self.freshness(now))?;
        admits(roster, &descriptor)?;
        match self.entries.get(&descriptor.node) {
            Some((known, _)) if known.published_at >= descriptor.published_at => {
                return Ok(Offer::Known);
            }
            None if self.entries.len() >= self.max_nodes => return Err(Refused::Full),
            _ => {}
        }
        self.entries.insert(descriptor.node, (descriptor, signed));
        Ok(Offer::Accepted)
    }

    /// Offers every descriptor of `signed`; returns how many were refused.
    pub fn offer_all(
        &mut self,
        signed: impl IntoIterator<Item = SignedDescriptor>,
        now: u64,
    ) -> usize {
        signed
            .into_iter()
            .filter(|s| self.offer(s.clone(), now).is_err())
            .count()
    }

    /// Drops the descriptors stale at `now`, and the roster (with every
    /// descriptor) once it has expired; returns how many descriptors.
    pub fn expire(&mut self, now: u64) -> usize {
        let before = self.entries.len();
        if let Some(expired) = self.roster.take_if(|r| now > r.valid_until) {
            self.expired_serial = expired.serial;
            self.entries.clear();
            return before;
        }
        let max_age = self.max_age_secs;
        self.entries
            .retain(|_, (d, _)| now.saturating_sub(d.published_at) <= max_age);
        before - self.entries.len()
    }

    /// The descriptor of `node`.
    pub fn get(&self, node: &NodeId) -> Option<&Descriptor> {
        self.entries.get(node).map(|(d, _)| d)
    }

    /// Every verified descriptor, in node-id order (the iterator is `Clone`:
    /// a caller may walk it more than once without collecting it).
    pub fn descriptors(&self) -> impl Iterator<Item = &Descriptor> + Clone {
        self.entries.values().map(|(d, _)| d)
    }

    /// Every descriptor with its signed form, in node-id order.
    pub fn entries(&self) -> impl Iterator<Item = (&Descriptor, &SignedDescriptor)> {
        self.entries.values().map(|(d, s)| (d, s))
    }

    /// Every signed descriptor, to serve to others.
    pub fn signed(&self) -> Vec<SignedDescriptor> {
        self.entries.values().map(|(_, s)| s.clone()).collect()
    }

    /// How many nodes are known.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no node is known.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Whether `descriptor` is an exit that takes leaks checked against
/// `policy_version` at `unix_secs` (it has a mix key for that moment).
pub fn is_exit_for(descriptor: &Descriptor, policy_version: u32, unix_secs: u64) -> bool {
    descriptor.roles.exit
        && descriptor
            .exit
            .as_ref()
            .is_some_and(|e| e.policy_version == policy_version)
        && descriptor.mix_key(descriptor.epoch_at(unix_secs)).is_some()
}

/// The exit responsible for the recipient whose policy hash is `recipient`
/// ([`Policy::recipient_hash`](crate::policy::Policy::recipient_hash)),
/// among the `nodes` that [`is_exit_for`] `policy_version` at `unix_secs`:
/// the one ranking first by rendezvous hashing (see [`crate::federation`], "One exit per recipient").
/// `None` when no node qualifies.
pub fn responsible_exit<'a>(
    nodes: impl IntoIterator<Item = &'a Descriptor>,
    recipient: &[u8; 32],
    policy_version: u32,
    unix_secs: u64,
) -> Option<&'a Descriptor> {
    holders(nodes, recipient, policy_version, unix_secs)
        .into_iter()
        .next()
}

/// The exits that hold the opt-out of the recipient whose policy hash is
/// `recipient`: the [`crate::federation::OPT_OUT_HOLDERS`] first by the
/// rendezvous ranking of [`responsible_exit`] (the responsible exit first,
/// then the ones a leak would move to if it left), fewer if fewer exits
/// qualify.
pub fn holders<'a>(
    nodes: impl IntoIterator<Item = &'a Descriptor>,
    recipient: &[u8; 32],
    policy_version: u32,
    unix_secs: u64,
) -> Vec<&'a Descriptor> {
    let mut exits: Vec<&Descriptor> = nodes
        .into_iter()
        .filter(|d| is_exit_for(d, policy_version, unix_secs))
        .collect();
    exits.sort_by_key(|d| {
        core::cmp::Reverse((crate::federation::exit_rank(recipient, &d.node), d.node.0))
    });
    exits.truncate(crate::federation::OPT_OUT_HOLDERS);
    exits
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor(seed: &[u8; 32], published_at: u64) -> Descriptor {
        Descriptor {
            node: NodeId(crypto::ed25519_public(seed)),
            addresses: vec!["/ip4/127.0.0.1/tcp/4700".into()],
            roles: Roles {
                relay: true,
                exit: false,
            },
            family: "volunteers-a".into(),
            exit: None,
            epoch_period_secs: 3600,
            mix_keys: vec![
                EpochKey {
                    epoch: 10,
                    key: MixPublicKey([1; 32]),
                },
                EpochKey {
                    epoch: 11,
                    key: MixPublicKey([2; 32]),
                },
            ],
            software: "leak-node 0.1.0".into(),
            published_at,
            traffic: Some(EpochTraffic {
                epoch: 5,
                from_clients: 120,
                from_nodes: 4_000,
            }),
        }
    }

    const FRESH: Freshness = Freshness {
        now: 40_000,
        max_age_secs: 7200,
        max_clock_skew_secs: 300,
    };

    #[test]
    fn sign_verify_round_trip() {
        let d = descriptor(&[5; 32], 39_000);
        let signed = d.sign(&[5; 32]).unwrap();
        let parsed = SignedDescriptor::from_bytes(&signed.to_bytes()).unwrap();
        assert_eq!(parsed.verify(FRESH).unwrap(), d);
        assert_eq!(d.mix_key(11), Some(MixPublicKey([2; 32])));
        assert_eq!(d.mix_key(12), None);
    }

    #[test]
    fn forged_descriptors_are_refused() {
        let d = descriptor(&[5; 32], 39_000);
        // Signed by another key than the one it names.
        assert_eq!(d.sign(&[6; 32]), Err(DescriptorError::InvalidIdentity));
        // A body modified after signing.
        let mut signed = d.sign(&[5; 32]).unwrap();
        let last = signed.body.len() - 1;
        signed.body[last] ^= 1;
        assert!(signed.verify(FRESH).is_err());
        // Someone else's signature over a descriptor naming the victim.
        let mut forged = descriptor(&[6; 32], 39_000).sign(&[6; 32]).unwrap();
        let victim = d.sign(&[5; 32]).unwrap();
        forged.body = victim.body.clone();
        assert_eq!(forged.verify(FRESH), Err(DescriptorError::BadSignature));
    }

    #[test]
    fn stale_and_future_descriptors_are_refused() {
        let stale = descriptor(&[5; 32], 40_000 - 7201).sign(&[5; 32]).unwrap();
        assert_eq!(stale.verify(FRESH), Err(DescriptorError::Stale));
        let future = descriptor(&[5; 32], 40_301).sign(&[5; 32]).unwrap();
        assert_eq!(future.verify(FRESH), Err(DescriptorError::FromTheFuture));
    }

    #[test]
    fn inconsistent_descriptors_are_refused() {
        let mut d = descriptor(&[5; 32], 39_000);
        d.roles.exit = true;
        assert!(matches!(
            d.sign(&[5; 32]),
            Err(DescriptorError::Inconsistent(_))
        ));
        let mut d = descriptor(&[5; 32], 39_000);
        d.mix_keys.swap(0, 1);
        assert!(matches!(
            d.sign(&[5; 32]),
            Err(DescriptorError::Inconsistent(_))
        ));
        // Published at 39 000 s, in epoch 10: counts of epoch 10 are not
        // complete yet.
        let mut d = descriptor(&[5; 32], 39_000);
        d.traffic = d.traffic.map(|t| EpochTraffic { epoch: 10, ..t });
        assert!(matches!(
            d.sign(&[5; 32]),
            Err(DescriptorError::Inconsistent(_))
        ));
    }

    #[test]
    fn traffic_counts_travel_signed_and_old_versions_are_refused() {
        let d = descriptor(&[5; 32], 39_000);
        let signed = d.sign(&[5; 32]).unwrap();
        let parsed = SignedDescriptor::from_bytes(&signed.to_bytes()).unwrap();
        let verified = parsed.verify(FRESH).unwrap();
        assert_eq!(
            verified.traffic,
            Some(EpochTraffic {
                epoch: 5,
                from_clients: 120,
                from_nodes: 4_000
            })
        );
        let none = Descriptor {
            traffic: None,
            ..d.clone()
        };
        assert_eq!(none.sign(&[5; 32]).unwrap().verify(FRESH).unwrap(), none);
        // A version 1 body (no traffic field) is refused by its version.
        let mut old = signed.clone();
        old.body[0] = 1;
        assert_eq!(old.verify(FRESH), Err(DescriptorError::UnknownVersion(1)));
        // A body cut inside the traffic counts does not decode.
        let mut cut = signed;
        cut.body.truncate(cut.body.len() - 2);
        assert_eq!(cut.verify(FRESH), Err(DescriptorError::Malformed));
    }

    #[test]
    fn decoding_is_bounded() {
        // A descriptor claiming a billion addresses fails without allocating them.
        let mut body = vec![DESCRIPTOR_VERSION];
        body.extend_from_slice(&[0u8; 32]);
        body.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        let signed = SignedDescriptor {
            body,
            signature: vec![0; 64],
        };
        assert_eq!(signed.verify(FRESH), Err(DescriptorError::Malformed));
        assert_eq!(
            SignedDescriptor::from_bytes(&[0xff; 10]),
            Err(DescriptorError::Malformed)
        );
    }

    fn signed(seed: u8, published_at: u64) -> (Descriptor, SignedDescriptor) {
        let seed = [seed; 32];
        let d = Descriptor {
            node: NodeId(crypto::ed25519_public(&seed)),
            addresses: vec!["/ip4/127.0.0.1/tcp/4700".into()],
            roles: Roles {
                relay: true,
                exit: false,
            },
            family: "ops".into(),
            exit: None,
            epoch_period_secs: 3600,
            mix_keys: vec![EpochKey {
                epoch: 1,
                key: MixPublicKey([1; 32]),
            }],
            software: "test".into(),
            published_at,
            traffic: None,
        };
        let s = d.sign(&seed).unwrap();
        (d, s)
    }

    /// A roster admitting the nodes of seeds 1 to 5 as relays of "ops".
    fn roster(serial: u64) -> Roster {
        let mut roster = Roster::new(serial, 0, 100_000);
        for seed in 1..=5u8 {
            let node = NodeId(crypto::ed25519_public(&[seed; 32]));
            let admission = crate::roster::Admission {
                roles: Roles {
                    relay: true,
                    exit: false,
                },
                family: "ops".into(),
            };
            roster.admit(node, admission).unwrap();
        }
        roster
    }

    #[test]
    fn keeps_the_newest_valid_descriptor_per_node_within_its_bounds() {
        let mut directory = Directory::new(3600, 60, 2);
        directory.adopt_roster(roster(1)).unwrap();
        let (old_a, old_a_signed) = signed(1, 9_000);
        let (new_a, new_a_signed) = signed(1, 9_500);
        let (_, stale_b) = signed(2, 1_000);
        let (_, future_b) = signed(2, 10_100);
        let (c, c_signed) = signed(3, 9_999);
        let (_, d_signed) = signed(4, 9_999);
        assert_eq!(
            directory.offer(new_a_signed.clone(), 10_000),
            Ok(Offer::Accepted)
        );
        assert_eq!(
            directory.offer(old_a_signed.clone(), 10_000),
            Ok(Offer::Known)
        );
        assert_eq!(
            directory.offer(stale_b, 10_000).map_err(|e| e.as_str()),
            Err("stale")
        );
        assert_eq!(
            directory.offer(future_b, 10_000).map_err(|e| e.as_str()),
            Err("from_the_future")
        );
        assert_eq!(directory.offer_all([c_signed, old_a_signed], 10_000), 0);
        assert_eq!(directory.offer(d_signed, 10_000), Err(Refused::Full));
        assert_eq!(directory.get(&new_a.node), Some(&new_a));
        let mut expected = vec![new_a.clone(), c.clone()];
        expected.sort_by_key(|d| d.node);
        assert_eq!(
            directory.descriptors().cloned().collect::<Vec<_>>(),
            expected
        );
        assert!(!directory.descriptors().any(|d| *d == old_a));
        assert_eq!(directory.signed().len(), 2);
        // The bytes already held are known without a second signature
        // check, and still go stale with the clock.
        assert_eq!(
            directory.offer(new_a_signed.clone(), 10_000),
            Ok(Offer::Known)
        );
        assert_eq!(
            directory
                .offer(new_a_signed.clone(), 9_500 + 3_601)
                .map_err(|e| e.as_str()),
            Err("stale")
        );
        // At 12 600 the descriptor published at 9 500 is 3 100 s old, and at
        // 13 100 it is 3 600 s: still kept; one second later it is stale.
        assert_eq!(directory.expire(13_100), 0);
        assert_eq!(directory.expire(13_101), 1);
        assert_eq!(
            directory.descriptors().cloned().collect::<Vec<_>>(),
            vec![c]
        );
    }

    #[test]
    fn only_what_the_roster_admits_enters() {
        let mut directory = Directory::new(3600, 60, 100);
        let (_, a) = signed(1, 9_000);
        let (_, b) = signed(2, 9_000);
        let (_, stranger) = signed(9, 9_000);
        // No roster yet: nobody.
        assert_eq!(directory.offer(a.clone(), 10_000), Err(Refused::NoRoster));
        directory.adopt_roster(roster(1)).unwrap();
        assert_eq!(directory.offer(a.clone(), 10_000), Ok(Offer::Accepted));
        assert_eq!(directory.offer(b, 10_000), Ok(Offer::Accepted));
        assert_eq!(directory.offer(stranger, 10_000), Err(Refused::NotRostered));
        // A family of its own choosing, or a role not granted: refused.
        let mut own_family = signed(3, 9_000).0;
        own_family.family = "elsewhere".into();
        let own_family = own_family.sign(&[3; 32]).unwrap();
        assert_eq!(
            directory.offer(own_family, 10_000),
            Err(Refused::BeyondRoster)
        );
        let mut exit = signed(4, 9_000).0;
        exit.roles.exit = true;
        exit.exit = Some(ExitInfo {
            domain: "x.test".into(),
            policy_version: 1,
            stamp_bits: 0,
        });
        let exit = exit.sign(&[4; 32]).unwrap();
        assert_eq!(directory.offer(exit, 10_000), Err(Refused::BeyondRoster));
        // A forged descriptor of a rostered node still fails its signature.
        let mut forged = a.to_bytes();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let forged = SignedDescriptor::from_bytes(&forged).unwrap();
        assert_eq!(
            directory.offer(forged, 10_000).map_err(|e| e.as_str()),
            Err("bad_signature")
        );
        // A newer roster without node 2 drops it; replays and a second
        // roster under the same serial are refused.
        let mut newer = roster(2);
        newer.remove(&NodeId(crypto::ed25519_public(&[2; 32])));
        assert_eq!(directory.adopt_roster(newer.clone()), Ok(1));
        assert_eq!(directory.len(), 1);
        assert_eq!(
            directory.adopt_roster(roster(1)).map_err(|e| e.as_str()),
            Err("not_newer")
        );
        assert_eq!(
            directory.adopt_roster(roster(2)).map_err(|e| e.as_str()),
            Err("equivocation")
        );
        assert_eq!(
            directory.adopt_roster(newer).map_err(|e| e.as_str()),
            Err("not_newer")
        );
        // Past its validity the roster goes, and every descriptor with it;
        // an older roster is not taken back.
        assert_eq!(directory.expire(100_001), 1);
        assert!(directory.roster().is_none());
        assert_eq!(
            directory.adopt_roster(roster(1)).map_err(|e| e.as_str()),
            Err("not_newer")
        );
        assert_eq!(directory.adopt_roster(roster(3)), Ok(0));
    }
}
