//! The agent's guard: the one entry relay it sends everything through and
//! keeps its mailbox at, chosen once and kept for [`GUARD_LIFETIME_MS`]
//! (Tor's guards: a sender who changed entry often would sooner or later
//! pick one that watches them).
//!
//! `STATE_DIR/guard.json` (mode 0600) holds the guard's node id, when it
//! was chosen and the mailbox capability (secret: whoever holds it can
//! empty the mailbox). A new guard gets a new capability, so the old guard
//! cannot link the two mailboxes.

use std::path::{Path, PathBuf};

use leak_net::durable::{self, Access};
use leak_protocol::{MailboxId, NodeId, directory::Descriptor};
use rand::{CryptoRng, RngExt as _, seq::IndexedRandom as _};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// How long a guard is kept: 30 days.
pub const GUARD_LIFETIME_MS: u64 = 30 * 86_400 * 1000;

/// The stored guard.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guard {
    /// Its node id, hex.
    pub node: String,
    /// When it was chosen (Unix ms).
    pub chosen_at_ms: u64,
    /// The mailbox capability, hex.
    pub capability: String,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("node", &self.node)
            .field("chosen_at_ms", &self.chosen_at_ms)
            .finish_non_exhaustive()
    }
}

/// Why the guard file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GuardError {
    /// Reading or writing it failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// It does not decode.
    #[error("{0} is corrupt: delete it and the agent chooses a new guard")]
    Corrupt(PathBuf),
}

/// Why a guard must be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// Kept for [`GUARD_LIFETIME_MS`].
    Expired,
    /// A freshly fetched directory no longer lists it as a relay.
    LeftDirectory,
}

impl Guard {
    /// The guard's node id.
    pub fn node_id(&self) -> Option<NodeId> {
        let bytes = hex::decode(&self.node).ok()?;
        Some(NodeId(bytes.try_into().ok()?))
    }

    /// The mailbox capability.
    pub fn capability(&self) -> Option<Zeroizing<[u8; 32]>> {
        let bytes = Zeroizing::new(hex::decode(&self.capability).ok()?);
        let mut out = Zeroizing::new([0u8; 32]);
        if bytes.len() != 32 {
            return None;
        }
        out.copy_from_slice(&bytes);
        Some(out)
    }

    /// The mailbox every reply to this agent goes to.
    pub fn mailbox(&self) -> Option<MailboxId> {
        self.capability().map(|c| MailboxId::from_capability(&c))
    }

    /// Whether the guard must be replaced now; `fresh` says whether `nodes`
    /// was just fetched (a cached directory proves nothing about leaving).
    pub fn replace(&self, nodes: &[Descriptor], fresh: bool, now_ms: u64) -> Option<Replace> {
        if now_ms.saturating_sub(self.chosen_at_ms) >= GUARD_LIFETIME_MS {
            return Some(Replace::Expired);
        }
        let listed = self
            .node_id()
            .is_some_and(|id| nodes.iter().any(|d| d.node == id && d.roles.relay));
        (fresh && !listed).then_some(Replace::LeftDirectory)
    }

    /// Chooses a guard at random among the entry relays of `nodes`
    /// ([`Descriptor::is_entry`]; failing that any relay that is not an
    /// exit, failing that any relay), with a fresh mailbox capability;
    /// `avoid` (the guard being replaced) only as a last resort.
    pub fn choose<R: CryptoRng + ?Sized>(
        nodes: &[Descriptor],
        avoid: Option<NodeId>,
        now_ms: u64,
        rng: &mut R,
    ) -> Option<Self> {
        let usable =
            |d: &&Descriptor| d.roles.relay && d.mix_key(d.epoch_at(now_ms / 1000)).is_some();
        let pools: [Vec<&Descriptor>; 4] = [
            nodes
                .iter()
                .filter(usable)
                .filter(|d| d.is_entry() && Some(d.node) != avoid)
                .collect(),
            nodes
                .iter()
                .filter(usable)
                .filter(|d| !d.roles.exit && Some(d.node) != avoid)
                .collect(),
            nodes
                .iter()
                .filter(usable)
                .filter(|d| Some(d.node) != avoid)
                .collect(),
            nodes.iter().filter(usable).collect(),
        ];
        let chosen = pools.iter().find_map(|pool| pool.choose(rng))?;
        let capability = Zeroizing::new(rng.random::<[u8; 32]>());
        Some(Self {
            node: hex::encode(chosen.node.0),
            chosen_at_ms: now_ms,
            capability: hex::encode(*capability),
        })
    }

    /// The stored guard, if any.
    pub fn load(root: &Path) -> Result<Option<Self>, GuardError> {
        let path = root.join("guard.json");
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => Zeroizing::new(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(GuardError::Io { path, source }),
        };
        let guard: Self =
            serde_json::from_slice(&bytes).map_err(|_| GuardError::Corrupt(path.clone()))?;
        if guard.node_id().is_none() || guard.capability().is_none() {
            return Err(GuardError::Corrupt(path));
        }
        Ok(Some(guard))
    }

    /// Stores the guard (atomically, mode 0600).
    pub fn save(&self, root: &Path) -> Result<(), GuardError> {
        let path = root.join("guard.json");
        let json = Zeroizing::new(serde_json::to_vec_pretty(self).map_err(|e| GuardError::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?);
        durable::write(&path, &json, Access::Private)
            .map_err(|source| GuardError::Io { path, source })
    }
}

#[cfg(test)]
mod tests {
    use leak_protocol::{
        MixPublicKey,
        directory::{EpochKey, ExitInfo, Roles},
    };
    use rand::{SeedableRng as _, rngs::StdRng};

    use super::*;

    const NOW_MS: u64 = 100 * 3600 * 1000 + 1000;

    fn node(n: u8, exit: bool) -> Descriptor {
        Descriptor {
            node: NodeId([n; 32]),
            addresses: vec![format!("/ip4/10.{n}.0.1/tcp/4700")],
            roles: Roles { relay: true, exit },
            family: String::new(),
            exit: exit.then(|| ExitInfo {
                domain: "leak.test".into(),
                policy_version: 1,
                stamp_bits: 0,
            }),
            epoch_period_secs: 3600,
            mix_keys: vec![EpochKey {
                epoch: 100,
                key: MixPublicKey([n; 32]),
            }],
            software: "test".into(),
            published_at: 100 * 3600,
            traffic: None,
        }
    }

    #[test]
    fn a_guard_is_a_relay_kept_until_it_expires_or_leaves() {
        let nodes = vec![node(1, false), node(2, false), node(3, true)];
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..30 {
            let guard = Guard::choose(&nodes, None, NOW_MS, &mut rng).unwrap();
            assert_ne!(guard.node_id(), Some(NodeId([3; 32])), "not an exit");
            assert_eq!(guard.replace(&nodes, true, NOW_MS + 1000), None);
        }
        let guard = Guard::choose(&nodes, Some(NodeId([1; 32])), NOW_MS, &mut rng).unwrap();
        assert_eq!(guard.node_id(), Some(NodeId([2; 32])));
        assert_eq!(
            guard.replace(&nodes, true, NOW_MS + GUARD_LIFETIME_MS),
            Some(Replace::Expired)
        );
        let without = vec![node(1, false), node(3, true)];
        assert_eq!(
            guard.replace(&without, true, NOW_MS),
            Some(Replace::LeftDirectory)
        );
        assert_eq!(
            guard.replace(&without, false, NOW_MS),
            None,
            "a cache proves nothing"
        );
        // Only exits: one of them, rather than none.
        let only_exits = vec![node(3, true)];
        assert!(Guard::choose(&only_exits, None, NOW_MS, &mut rng).is_some());
        assert!(Guard::choose(&[], None, NOW_MS, &mut rng).is_none());
        // Two choices never share a capability.
        let a = Guard::choose(&nodes, None, NOW_MS, &mut rng).unwrap();
        let b = Guard::choose(&nodes, None, NOW_MS, &mut rng).unwrap();
        assert_ne!(a.capability, b.capability);
    }

    #[test]
    fn a_guard_is_an_entry_relay_when_the_federation_has_one() {
        let nodes: Vec<Descriptor> = (1..=20).map(|n| node(n, false)).collect();
        let entries: Vec<NodeId> = nodes
            .iter()
            .filter(|d| d.is_entry())
            .map(|d| d.node)
            .collect();
        assert!(!entries.is_empty() && entries.len() < nodes.len());
        let mut rng = StdRng::seed_from_u64(4);
        for _ in 0..50 {
            let guard = Guard::choose(&nodes, None, NOW_MS, &mut rng).unwrap();
            assert!(entries.contains(&guard.node_id().unwrap()));
        }
        // No entry relay at all: a mix relay rather than no guard.
        let mixes: Vec<Descriptor> = nodes.into_iter().filter(|d| !d.is_entry()).collect();
        assert!(Guard::choose(&mixes, None, NOW_MS, &mut rng).is_some());
    }

    #[test]
    fn the_guard_file_round_trips_privately() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        assert!(Guard::load(dir.path()).unwrap().is_none());
        let guard = Guard::choose(&[node(1, false)], None, NOW_MS, &mut rand::rng()).unwrap();
        guard.save(dir.path()).unwrap();
        assert_eq!(Guard::load(dir.path()).unwrap(), Some(guard.clone()));
        let mode = std::fs::metadata(dir.path().join("guard.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!format!("{guard:?}").contains(&guard.capability));
        std::fs::write(dir.path().join("guard.json"), b"{}").unwrap();
        assert!(Guard::load(dir.path()).is_err());
    }
}
