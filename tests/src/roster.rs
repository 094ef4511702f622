//! The directory authority of test federations.
//!
//! Every node admits only the nodes of a roster its directory authorities
//! signed. Test federations share one authority ([`TEST_AUTHORITY_SEED`]),
//! and the nodes of one test share one roster file beside their data
//! directories (`ROOT/roster.signed`, its text in `ROOT/roster.toml`): each
//! node started through the harness is admitted to it first (the roster
//! signed again under the next serial), so it starts with a roster that
//! admits it, and the running nodes take the newer roster from it (from
//! their file, or from the newcomer's directory answer).

use std::{
    path::{Path, PathBuf},
    sync::Mutex,
};

use leak_node::Config;
use leak_protocol::{
    NodeId,
    directory::Roles,
    roster::{Admission, Roster, SignedRoster},
};

/// The seed of the test federations' one directory authority.
pub const TEST_AUTHORITY_SEED: [u8; 32] = [0xa7; 32];

/// Serialises the rewriting of roster files within this process.
static ROSTER_FILES: Mutex<()> = Mutex::new(());

/// The test authority's public key, hex (for `directory.authorities`).
pub fn test_authority() -> String {
    leak_protocol::signed::hex(&leak_protocol::crypto::ed25519_public(&TEST_AUTHORITY_SEED))
}

/// The roster file shared by the nodes whose data directories are in
/// `data_dir`'s parent.
pub fn roster_file_beside(data_dir: &Path) -> PathBuf {
    data_dir.parent().unwrap_or(data_dir).join("roster.signed")
}

/// Sets `config`'s authorities to the test authority and its roster file
/// to the one beside its data directory.
pub fn trust_test_authority(config: &mut Config) {
    config.directory.authorities = vec![test_authority()];
    config.directory.authority_threshold = 1;
    config.directory.roster_file = roster_file_beside(&config.node.data_dir)
        .display()
        .to_string();
}

/// Admits `node` to the roster in `roster_file` with `roles` and `family`
/// (a node of no family gets its own: `fallback_family`), and signs the
/// roster again under the next serial, valid from a day ago for the
/// longest validity allowed.
pub fn admit(roster_file: &Path, node: NodeId, roles: Roles, family: &str, fallback_family: &str) {
    let _guard = ROSTER_FILES.lock().unwrap_or_else(|e| e.into_inner());
    let text_file = roster_file.with_extension("toml");
    let mut roster = match std::fs::read_to_string(&text_file) {
        Ok(text) => Roster::from_toml(&text).expect("the test roster parses"),
        Err(_) => Roster::new(0, 0, 1),
    };
    let family = if family.is_empty() {
        fallback_family
    } else {
        family
    };
    let admission = Admission {
        roles,
        family: family.to_owned(),
    };
    if roster.get(&node) == Some(&admission) && roster_file.exists() {
        return;
    }
    roster.admit(node, admission).expect("a valid admission");
    let now = crate::unix_time().as_secs();
    roster.serial += 1;
    roster.valid_from = now.saturating_sub(86_400);
    roster.valid_until = roster.valid_from + leak_protocol::roster::MAX_VALIDITY_SECS;
    let signed = SignedRoster::sign(&roster, &TEST_AUTHORITY_SEED).expect("signing the roster");
    if let Some(dir) = roster_file.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(&text_file, roster.to_toml()).unwrap();
    // Atomically: running nodes re-read it when it changes.
    let partial = roster_file.with_extension("partial");
    std::fs::write(&partial, signed.to_bytes()).unwrap();
    std::fs::rename(&partial, roster_file).unwrap();
}

/// Admits the node of `config` (its identity in its data directory, its
/// roles and family) to the roster file `config` names.
pub fn admit_config(config: &Config, node: NodeId) {
    let roles = Roles {
        relay: config.node.roles.contains(&leak_node::config::Role::Relay),
        exit: config.is_exit(),
    };
    let fallback = config
        .node
        .data_dir
        .file_name()
        .map_or_else(|| "node".to_owned(), |n| n.to_string_lossy().into_owned());
    admit(
        Path::new(&config.directory.roster_file),
        node,
        roles,
        &config.node.family,
        &fallback,
    );
}

/// Admits `identities` (relays of `family`) to the roster beside the data
/// directories in `root`, and hands the new roster to each of `nodes` at
/// once (as a peer's directory answer would, sooner than their next look at
/// the file).
pub fn admit_now(
    root: &Path,
    nodes: &[&leak_node::RunningNode],
    identities: &[NodeId],
    family: &str,
) {
    let file = root.join("roster.signed");
    for id in identities {
        let relay = Roles {
            relay: true,
            exit: false,
        };
        admit(&file, *id, relay, family, family);
    }
    let bytes = std::fs::read(&file).unwrap();
    for node in nodes {
        node.offer_roster(&bytes).expect("the test roster verifies");
    }
}
