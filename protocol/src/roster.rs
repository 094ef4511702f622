//! The roster: which nodes the federation admits, signed by its directory
//! authorities.
//!
//! A descriptor is self-signed: it proves a node holds its identity key,
//! not that anybody vouches for the node. Without more, one bootstrap node
//! could add hundreds of its own relays (or a marker relay) to a chosen
//! client's view, and anyone could fill directories with descriptors of
//! nodes that do not exist. So the federation names directory
//! authorities (their Ed25519 keys and how many must sign, as it names its
//! policy maintainers), and the authorities sign, for a bounded validity
//! period, the [`Roster`]: the id, roles and operator family of every
//! admitted node. Nodes and clients accept a roster only with enough
//! trusted signatures and inside its validity, keep the newest by serial
//! number, and accept only descriptors of nodes it admits, for the roles
//! it grants and under the family it names ([`crate::directory::Directory`]).
//! Families are the authorities' word, not the operator's: a node cannot
//! leave its family to sit twice on one path.
//!
//! # Text form (what authorities sign)
//!
//! ```toml
//! serial = 7                  # strictly increasing; the newest valid roster wins
//! valid_from = 1765000000     # Unix seconds
//! valid_until = 1765259200    # Unix seconds; refused after this
//!
//! [[node]]
//! id = "…64 hex digits: the node's identity key…"
//! roles = ["relay", "exit"]
//! family = "volunteers-a"
//! ```
//!
//! Its signed form is a [`crate::signed`] document with magic `LEAKROS`
//! 0x01 and the context `"leak 2026 roster signature v1"` and a zero byte.
//!
//! Times are Unix seconds passed in by the caller: this module reads no clock.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    crypto::KEY_LEN,
    signed::{self, Format, SignatureError, SignedText},
    sphinx::NodeId,
};

/// What a node does (a descriptor announces it, a roster grants it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Roles {
    /// Forwards packets and keeps mailboxes.
    pub relay: bool,
    /// Delivers leaks by email.
    pub exit: bool,
}

/// At most this many bytes of family (and of the other names a descriptor
/// carries).
pub const MAX_FAMILY_LEN: usize = 128;

/// The most bytes of roster text.
pub const MAX_ROSTER_LEN: usize = 2 << 20;
/// The most nodes one roster admits.
pub const MAX_ROSTER_NODES: usize = 10_000;
/// The longest validity a roster may claim: authorities sign again well
/// within it, and a roster stolen from an authority's disk is good for at
/// most this long.
pub const MAX_VALIDITY_SECS: u64 = 14 * 24 * 3600;

const FORMAT: Format = Format {
    magic: b"LEAKROS\x01",
    context: b"leak 2026 roster signature v1\0",
    max_len: MAX_ROSTER_LEN,
    name: "signed Leak roster",
};

/// What the roster grants one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// The roles it may announce.
    pub roles: Roles,
    /// Its operator family: a path never crosses two nodes of one family.
    pub family: String,
}

/// The admitted nodes and the roster's serial number and validity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roster {
    /// Strictly increasing from one roster to the next.
    pub serial: u64,
    /// Not valid before this, Unix seconds.
    pub valid_from: u64,
    /// Not valid after this, Unix seconds.
    pub valid_until: u64,
    nodes: BTreeMap<NodeId, Admission>,
}

/// Why a roster was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RosterError {
    /// The bytes or the text are not a roster.
    #[error("roster: {0}")]
    Malformed(String),
    /// Fewer valid signatures by trusted authorities than required.
    #[error("roster: {valid} valid signature(s) by trusted authorities, {threshold} required")]
    NotEnoughSignatures {
        /// Distinct trusted keys whose signature verified.
        valid: usize,
        /// How many were required.
        threshold: usize,
    },
    /// A signature made by a trusted authority does not verify.
    #[error("roster: the signature by trusted authority {key} does not verify (forged or altered)")]
    Forged {
        /// The key, in hex.
        key: String,
    },
    /// Past its `valid_until`.
    #[error("roster {serial} expired at {valid_until}")]
    Expired {
        /// Its serial.
        serial: u64,
        /// When it expired.
        valid_until: u64,
    },
    /// Its `valid_from` is further ahead than clocks may disagree.
    #[error("roster {serial} is not valid before {valid_from}")]
    NotYetValid {
        /// Its serial.
        serial: u64,
        /// When it becomes valid.
        valid_from: u64,
    },
    /// The same node twice (with two families or role sets).
    #[error("roster: node {0} is listed twice")]
    Conflicting(String),
    /// A field breaks a rule (named).
    #[error("roster: {0}")]
    Invalid(String),
    /// Another roster of the same serial, different content: the
    /// authorities signed two rosters under one number, or one is forged
    /// by a thresholdful of stolen keys. The first one seen stays.
    #[error("roster {0} differs from the roster of the same serial already held")]
    Equivocation(u64),
    /// Older than (or the same as) the roster held: a replay.
    #[error("roster {serial} is not newer than the roster held ({held})")]
    NotNewer {
        /// Its serial.
        serial: u64,
        /// The held roster's.
        held: u64,
    },
}

impl RosterError {
    /// A short stable label, for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::NotEnoughSignatures { .. } => "too_few_signatures",
            Self::Forged { .. } => "forged",
            Self::Expired { .. } => "expired",
            Self::NotYetValid { .. } => "not_yet_valid",
            Self::Conflicting(_) => "conflicting",
            Self::Invalid(_) => "invalid",
            Self::Equivocation(_) => "equivocation",
            Self::NotNewer { .. } => "not_newer",
        }
    }
}

impl From<SignatureError> for RosterError {
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

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RosterText {
    serial: u64,
    valid_from: u64,
    valid_until: u64,
    #[serde(default)]
    node: Vec<NodeText>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeText {
    id: String,
    roles: Vec<String>,
    family: String,
}

fn roles_text(roles: Roles) -> Vec<String> {
    let mut out = Vec::new();
    if roles.relay {
        out.push("relay".to_owned());
    }
    if roles.exit {
        out.push("exit".to_owned());
    }
    out
}

/// Parses `relay` / `exit` role names.
pub fn parse_roles<S: AsRef<str>>(names: &[S]) -> Result<Roles, RosterError> {
    let mut roles = Roles {
        relay: false,
        exit: false,
    };
    for name in names {
        match name.as_ref() {
            "relay" => roles.relay = true,
            "exit" => roles.exit = true,
            other => {
                return Err(RosterError::Invalid(format!(
                    "unknown role {other:?} (relay or exit)"
                )));
            }
        }
    }
    if !roles.relay && !roles.exit {
        return Err(RosterError::Invalid("a node needs a role".into()));
    }
    Ok(roles)
}

fn check_admission(admission: &Admission) -> Result<(), RosterError> {
    if !admission.roles.relay && !admission.roles.exit {
        return Err(RosterError::Invalid("a node needs a role".into()));
    }
    if admission.family.is_empty() || admission.family.len() > MAX_FAMILY_LEN {
        return Err(RosterError::Invalid(format!(
            "a family is 1 to {MAX_FAMILY_LEN} bytes"
        )));
    }
    Ok(())
}

impl Roster {
    /// An empty roster.
    pub fn new(serial: u64, valid_from: u64, valid_until: u64) -> Self {
        Self {
            serial,
            valid_from,
            valid_until,
            nodes: BTreeMap::new(),
        }
    }

    /// Admits `node` (or changes its admission).
    pub fn admit(&mut self, node: NodeId, admission: Admission) -> Result<(), RosterError> {
        check_admission(&admission)?;
        if !self.nodes.contains_key(&node) && self.nodes.len() >= MAX_ROSTER_NODES {
            return Err(RosterError::Invalid(format!(
                "at most {MAX_ROSTER_NODES} nodes"
            )));
        }
        self.nodes.insert(node, admission);
        Ok(())
    }

    /// Removes `node`; whether it was admitted.
    pub fn remove(&mut self, node: &NodeId) -> bool {
        self.nodes.remove(node).is_some()
    }

    /// What the roster grants `node`, if it admits it.
    pub fn get(&self, node: &NodeId) -> Option<&Admission> {
        self.nodes.get(node)
    }

    /// Every admitted node, in id order.
    pub fn nodes(&self) -> impl Iterator<Item = (&NodeId, &Admission)> {
        self.nodes.iter()
    }

    /// How many nodes it admits.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether it admits none.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether it is valid at `now`, allowing clocks to differ by
    /// `max_clock_skew_secs`.
    pub fn check_time(&self, now: u64, max_clock_skew_secs: u64) -> Result<(), RosterError> {
        if now > self.valid_until {
            return Err(RosterError::Expired {
                serial: self.serial,
                valid_until: self.valid_until,
            });
        }
        if self.valid_from > now.saturating_add(max_clock_skew_secs) {
            return Err(RosterError::NotYetValid {
                serial: self.serial,
                valid_from: self.valid_from,
            });
        }
        Ok(())
    }

    fn check(&self) -> Result<(), RosterError> {
        if self.valid_until <= self.valid_from {
            return Err(RosterError::Invalid(
                "valid_until must come after valid_from".into(),
            ));
        }
        if self.valid_until - self.valid_from > MAX_VALIDITY_SECS {
            return Err(RosterError::Invalid(format!(
                "valid for more than {} days",
                MAX_VALIDITY_SECS / 86_400
            )));
        }
        Ok(())
    }

    /// The text form (what [`SignedRoster::sign`] signs).
    pub fn to_toml(&self) -> String {
        let text = RosterText {
            serial: self.serial,
            valid_from: self.valid_from,
            valid_until: self.valid_until,
            node: self
                .nodes
                .iter()
                .map(|(id, a)| NodeText {
                    id: signed::hex(&id.0),
                    roles: roles_text(a.roles),
                    family: a.family.clone(),
                })
                .collect(),
        };
        toml::to_string(&text).unwrap_or_default()
    }

    /// Parses and checks the text form: every id a key, every node once,
    /// each with a role and a family, a validity of at most
    /// [`MAX_VALIDITY_SECS`]. Not its time: [`Roster::check_time`].
    pub fn from_toml(text: &str) -> Result<Self, RosterError> {
        if text.len() > MAX_ROSTER_LEN {
            return Err(RosterError::Malformed("too long".into()));
        }
        let parsed: RosterText =
            toml::from_str(text).map_err(|e| RosterError::Malformed(e.message().to_owned()))?;
        if parsed.node.len() > MAX_ROSTER_NODES {
            return Err(RosterError::Invalid(format!(
                "at most {MAX_ROSTER_NODES} nodes"
            )));
        }
        let mut roster = Roster::new(parsed.serial, parsed.valid_from, parsed.valid_until);
        roster.check()?;
        for node in parsed.node {
            let id = signed::decode_hex_key(node.id.trim())
                .map(NodeId)
                .ok_or_else(|| RosterError::Invalid(format!("{:?} is not a node id", node.id)))?;
            if roster.nodes.contains_key(&id) {
                return Err(RosterError::Conflicting(signed::hex(&id.0)));
            }
            let admission = Admission {
                roles: parse_roles(&node.roles)?,
                family: node.family,
            };
            check_admission(&admission)?;
            roster.nodes.insert(id, admission);
        }
        Ok(roster)
    }
}

/// A roster with authorities' signatures (the encoding of [`crate::signed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRoster(SignedText);

impl SignedRoster {
    /// Signs `roster` with the authority key whose seed is `seed`.
    pub fn sign(roster: &Roster, seed: &[u8; KEY_LEN]) -> Result<Self, RosterError> {
        roster.check()?;
        let mut text = SignedText::new(&roster.to_toml(), &FORMAT)?;
        text.add_signature(&FORMAT, seed)?;
        Ok(Self(text))
    }

    /// Adds (or replaces) the signature of the authority key `seed`: each
    /// authority signs the same text.
    pub fn add_signature(&mut self, seed: &[u8; KEY_LEN]) -> Result<(), RosterError> {
        Ok(self.0.add_signature(&FORMAT, seed)?)
    }

    /// The roster, parsed but not verified (for the tools that sign).
    pub fn roster_unverified(&self) -> Result<Roster, RosterError> {
        Roster::from_toml(self.0.text())
    }

    /// The keys that signed (not yet verified).
    pub fn signers(&self) -> impl Iterator<Item = &[u8; KEY_LEN]> {
        self.0.signers()
    }

    /// Checks the signatures (at least `threshold` of `trusted`) before
    /// anything else, then parses the roster and checks its time.
    pub fn verify(
        &self,
        trusted: &[[u8; KEY_LEN]],
        threshold: usize,
        now: u64,
        max_clock_skew_secs: u64,
    ) -> Result<Roster, RosterError> {
        self.0.check(&FORMAT, trusted, threshold)?;
        let roster = Roster::from_toml(self.0.text())?;
        roster.check_time(now, max_clock_skew_secs)?;
        Ok(roster)
    }

    /// The wire and file encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.to_bytes(&FORMAT)
    }

    /// Decodes [`SignedRoster::to_bytes`]; bounded, never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, RosterError> {
        Ok(Self(SignedText::from_bytes(bytes, &FORMAT)?))
    }
}

/// Decodes and verifies a signed roster ([`SignedRoster::verify`]).
pub fn verify_signed(
    bytes: &[u8],
    trusted: &[[u8; KEY_LEN]],
    threshold: usize,
    now: u64,
    max_clock_skew_secs: u64,
) -> Result<Roster, RosterError> {
    SignedRoster::from_bytes(bytes)?.verify(trusted, threshold, now, max_clock_skew_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto;

    const A: [u8; 32] = [1; 32];
    const B: [u8; 32] = [2; 32];
    const C: [u8; 32] = [3; 32];

    fn key(seed: &[u8; 32]) -> [u8; 32] {
        crypto::ed25519_public(seed)
    }

    fn roster(serial: u64) -> Roster {
        let mut r = Roster::new(serial, 1_000, 1_000 + 86_400);
        for (i, family) in [(7u8, "alpha"), (8, "alpha"), (9, "beta")] {
            r.admit(
                NodeId(key(&[i; 32])),
                Admission {
                    roles: Roles {
                        relay: true,
                        exit: i == 9,
                    },
                    family: family.into(),
                },
            )
            .unwrap();
        }
        r
    }

    #[test]
    fn a_roster_signed_by_the_threshold_verifies_and_round_trips() {
        let mut signed = SignedRoster::sign(&roster(3), &A).unwrap();
        signed.add_signature(&B).unwrap();
        let bytes = signed.to_bytes();
        let trusted = [key(&A), key(&B), key(&C)];
        let verified = verify_signed(&bytes, &trusted, 2, 2_000, 60).unwrap();
        assert_eq!(verified, roster(3));
        assert_eq!(verified.get(&NodeId(key(&[9; 32]))).unwrap().family, "beta");
        assert_eq!(Roster::from_toml(&verified.to_toml()).unwrap(), verified);
    }

    #[test]
    fn too_few_or_untrusted_signatures_are_refused() {
        let signed = SignedRoster::sign(&roster(3), &A).unwrap();
        let bytes = signed.to_bytes();
        let err = verify_signed(&bytes, &[key(&A), key(&B)], 2, 2_000, 60).unwrap_err();
        assert_eq!(err.as_str(), "too_few_signatures");
        let err = verify_signed(&bytes, &[key(&C)], 1, 2_000, 60).unwrap_err();
        assert_eq!(err.as_str(), "too_few_signatures");
        // The same key twice counts once.
        let mut twice = SignedRoster::sign(&roster(3), &A).unwrap();
        twice.add_signature(&A).unwrap();
        assert!(verify_signed(&twice.to_bytes(), &[key(&A), key(&B)], 2, 2_000, 60).is_err());
    }

    #[test]
    fn a_tampered_roster_is_forged() {
        let bytes = SignedRoster::sign(&roster(3), &A).unwrap().to_bytes();
        // Change a family in the signed text: the length stays.
        let text_at = bytes.windows(5).position(|w| w == b"alpha").unwrap();
        let mut tampered = bytes.clone();
        tampered[text_at..text_at + 5].copy_from_slice(b"gamma");
        let err = verify_signed(&tampered, &[key(&A)], 1, 2_000, 60).unwrap_err();
        assert_eq!(err.as_str(), "forged");
    }

    #[test]
    fn expired_and_future_rosters_are_refused() {
        let bytes = SignedRoster::sign(&roster(3), &A).unwrap().to_bytes();
        let trusted = [key(&A)];
        let err = verify_signed(&bytes, &trusted, 1, 1_000 + 86_401, 60).unwrap_err();
        assert_eq!(err.as_str(), "expired");
        let err = verify_signed(&bytes, &trusted, 1, 900, 60).unwrap_err();
        assert_eq!(err.as_str(), "not_yet_valid");
        assert!(verify_signed(&bytes, &trusted, 1, 950, 60).is_ok());
    }

    #[test]
    fn conflicting_families_and_bad_fields_are_refused() {
        let id = signed::hex(&key(&[7; 32]));
        let twice = format!(
            "serial = 1\nvalid_from = 0\nvalid_until = 10\n\
             [[node]]\nid = \"{id}\"\nroles = [\"relay\"]\nfamily = \"a\"\n\
             [[node]]\nid = \"{id}\"\nroles = [\"relay\"]\nfamily = \"b\"\n"
        );
        assert_eq!(
            Roster::from_toml(&twice).unwrap_err().as_str(),
            "conflicting"
        );
        for bad in [
            // no role
            format!("serial = 1\nvalid_from = 0\nvalid_until = 10\n[[node]]\nid = \"{id}\"\nroles = []\nfamily = \"a\"\n"),
            // unknown role
            format!("serial = 1\nvalid_from = 0\nvalid_until = 10\n[[node]]\nid = \"{id}\"\nroles = [\"boss\"]\nfamily = \"a\"\n"),
            // no family
            format!("serial = 1\nvalid_from = 0\nvalid_until = 10\n[[node]]\nid = \"{id}\"\nroles = [\"relay\"]\nfamily = \"\"\n"),
            // not an id
            "serial = 1\nvalid_from = 0\nvalid_until = 10\n[[node]]\nid = \"abc\"\nroles = [\"relay\"]\nfamily = \"a\"\n".into(),
            // validity backwards, too long
            "serial = 1\nvalid_from = 10\nvalid_until = 10\n".into(),
            format!("serial = 1\nvalid_from = 0\nvalid_until = {}\n", MAX_VALIDITY_SECS + 1),
        ] {
            assert_eq!(Roster::from_toml(&bad).unwrap_err().as_str(), "invalid", "{bad}");
        }
        assert_eq!(
            Roster::from_toml("serial = 1\nextra = 2\n")
                .unwrap_err()
                .as_str(),
            "malformed"
        );
    }

    #[test]
    fn a_signed_policy_is_not_a_roster() {
        let policy = crate::policy::SignedPolicy::sign(crate::policy::BUILTIN_TOML, &A).unwrap();
        let err = SignedRoster::from_bytes(&policy.to_bytes()).unwrap_err();
        assert_eq!(err.as_str(), "malformed");
    }

    #[test]
    fn garbage_never_panics() {
        let good = SignedRoster::sign(&roster(1), &A).unwrap().to_bytes();
        for cut in 0..good.len() {
            let _ = SignedRoster::from_bytes(&good[..cut]);
        }
        let mut x = 0x9e37_79b9_u32;
        for _ in 0..2_000 {
            let mut bytes = good.clone();
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let at = x as usize % bytes.len();
                bytes[at] ^= (x >> 8) as u8 | 1;
            }
            let _ = verify_signed(&bytes, &[key(&A)], 1, 2_000, 60);
        }
    }
}
