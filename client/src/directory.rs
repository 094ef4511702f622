//! The federation's directory as the client sees it.
//!
//! The client asks every configured bootstrap node for the signed
//! descriptors it knows (`/leak/directory/1`), verifies each one (signature,
//! freshness, consistency) and keeps the newest per node. The raw signed
//! descriptors are cached in the state directory with the time they were
//! fetched; when no bootstrap node answers, a cache younger than
//! `directory.cache_max_age_secs` is used instead (and re-verified, so
//! descriptors that went stale since are dropped).

use std::time::Duration;

use futures::future::join_all;
use leak_net::{Peer, peer_id_of};
use leak_protocol::directory::{Descriptor, Directory, Freshness, SignedDescriptor};
use libp2p::{Multiaddr, PeerId, multiaddr::Protocol};
use serde::{Deserialize, Serialize};

use crate::{
    config::Config,
    state::{StateDir, write_atomically},
};

/// The verified directory and where it came from.
#[derive(Debug, Clone)]
pub struct DirectoryView {
    /// Verified descriptors, newest per node, sorted by node id.
    pub nodes: Vec<Descriptor>,
    /// When the descriptors were fetched, Unix seconds.
    pub fetched_at: u64,
    /// Whether they came from the cache because no bootstrap node answered.
    pub from_cache: bool,
    /// Bootstrap nodes that answered (0 from the cache).
    pub answered: usize,
    /// Descriptors refused (forged, stale, inconsistent, undecodable).
    pub refused: usize,
}

/// Why there is no directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryError {
    /// The configuration lists no bootstrap node.
    #[error(
        "no bootstrap node configured: run `leak init --bootstrap ADDRESS` or add network.bootstrap to the config"
    )]
    NoBootstrap,
    /// No bootstrap node answered, and no usable cache.
    #[error("no reachable bootstrap node ({tried} tried: {first_error}); {cache}")]
    Unreachable {
        /// How many were tried.
        tried: usize,
        /// The first failure, for the user.
        first_error: String,
        /// What is wrong with the cache.
        cache: String,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheFile {
    fetched_at: u64,
    descriptors: Vec<String>,
}

/// Splits `/ip4/…/tcp/…/p2p/PEER` into the peer id and the address before it.
pub fn split_peer(address: &Multiaddr) -> Option<(PeerId, Multiaddr)> {
    let mut address = address.clone();
    match address.pop() {
        Some(Protocol::P2p(peer)) => Some((peer, address)),
        _ => None,
    }
}

/// Verifies every descriptor and keeps the newest valid one per node
/// (the federation's one verified directory, unbounded here: the client
/// keeps whatever its bootstrap nodes vouch for). Returns the descriptors
/// (sorted by node id), their signed forms and how many were refused.
pub fn verify_all(
    signed: Vec<SignedDescriptor>,
    freshness: Freshness,
) -> (Vec<(Descriptor, SignedDescriptor)>, usize) {
    let mut directory = Directory::new(
        freshness.max_age_secs,
        freshness.max_clock_skew_secs,
        usize::MAX,
    );
    let refused = directory.offer_all(signed, freshness.now);
    let verified = directory
        .entries()
        .map(|(d, s)| (d.clone(), s.clone()))
        .collect();
    (verified, refused)
}

/// Tells `peer` where every node in `nodes` listens.
pub fn register_nodes(peer: &Peer, nodes: &[Descriptor]) {
    for d in nodes {
        let Some(id) = peer_id_of(&d.node) else {
            continue;
        };
        let addresses: Vec<Multiaddr> = d.addresses.iter().filter_map(|a| a.parse().ok()).collect();
        peer.add_node(id, addresses);
    }
}

/// Fetches, verifies and caches the directory, or falls back to the cache.
pub async fn load(
    peer: &Peer,
    config: &Config,
    state: &StateDir,
    now: u64,
) -> Result<DirectoryView, DirectoryError> {
    let bootstrap = &config.network.bootstrap;
    if bootstrap.is_empty() {
        return Err(DirectoryError::NoBootstrap);
    }
    let freshness = Freshness {
        now,
        max_age_secs: config.directory.max_age_secs,
        max_clock_skew_secs: config.directory.max_clock_skew_secs,
    };
    let timeout = Duration::from_secs(config.network.connect_timeout_secs);
    let fetches = bootstrap.iter().map(|address| async move {
        let (id, dial) = split_peer(address)
            .ok_or_else(|| format!("{address} does not end with /p2p/PEERID"))?;
        peer.add_node(id, vec![dial]);
        match tokio::time::timeout(timeout, peer.directory(id)).await {
            Ok(Ok(descriptors)) => Ok(descriptors),
            Ok(Err(e)) => Err(format!("{address}: {}", short_network_error(&e))),
            Err(_) => Err(format!("{address}: no answer in {}s", timeout.as_secs())),
        }
    });
    let results = join_all(fetches).await;
    let answered = results.iter().filter(|r| r.is_ok()).count();
    let first_error = results
        .iter()
        .find_map(|r| r.as_ref().err().cloned())
        .unwrap_or_default();
    if answered > 0 {
        let signed: Vec<SignedDescriptor> = results.into_iter().flatten().flatten().collect();
        let (verified, refused) = verify_all(signed, freshness);
        let cache = CacheFile {
            fetched_at: now,
            descriptors: verified
                .iter()
                .map(|(_, s)| hex::encode(s.to_bytes()))
                .collect(),
        };
        // The cache is a convenience: failing to write it is not fatal.
        if let Ok(json) = serde_json::to_vec(&cache) {
            let _ = write_atomically(&state.directory_cache(), &json);
        }
        let nodes: Vec<Descriptor> = verified.into_iter().map(|(d, _)| d).collect();
        register_nodes(peer, &nodes);
        return Ok(DirectoryView {
            nodes,
            fetched_at: now,
            from_cache: false,
            answered,
            refused,
        });
    }
    let unreachable = |cache: String| DirectoryError::Unreachable {
        tried: bootstrap.len(),
        first_error: first_error.clone(),
        cache,
    };
    let cache = read_cache(state).ok_or_else(|| unreachable("no cached directory".into()))?;
    let age = now.saturating_sub(cache.fetched_at);
    if age > config.directory.cache_max_age_secs {
        return Err(unreachable(format!(
            "the cached directory is {} old (at most {} allowed)",
            format_age(age),
            format_age(config.directory.cache_max_age_secs)
        )));
    }
    let signed = cache
        .descriptors
        .iter()
        .filter_map(|h| hex::decode(h).ok())
        .filter_map(|b| SignedDescriptor::from_bytes(&b).ok())
        .collect();
    let (verified, refused) = verify_all(signed, freshness);
    let nodes: Vec<Descriptor> = verified.into_iter().map(|(d, _)| d).collect();
    register_nodes(peer, &nodes);
    Ok(DirectoryView {
        nodes,
        fetched_at: cache.fetched_at,
        from_cache: true,
        answered: 0,
        refused,
    })
}

/// The gist of a libp2p dial error, whose text nests every layer's message.
pub fn short_network_error(error: &std::io::Error) -> String {
    let text = error.to_string();
    const KNOWN: [(&str, &str); 5] = [
        ("Connection refused", "connection refused"),
        ("No route to host", "no route to host"),
        ("Network is unreachable", "network unreachable"),
        ("timed out", "timed out"),
        ("did not answer in time", "no answer in time"),
    ];
    KNOWN
        .iter()
        .find(|(needle, _)| text.contains(needle))
        .map_or(text.clone(), |(_, short)| (*short).to_owned())
}

fn read_cache(state: &StateDir) -> Option<CacheFile> {
    let bytes = std::fs::read(state.directory_cache()).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// `95` → `1m35s`; `7200` → `2h0m`.
pub fn format_age(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{}s", secs / 60, secs % 60),
        3600..86_400 => format!("{}h{}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use leak_protocol::{
        MixPublicKey, NodeId,
        directory::{EpochKey, Roles},
    };

    use super::*;

    fn signed(seed: u8, published_at: u64) -> (Descriptor, SignedDescriptor) {
        let seed = [seed; 32];
        let d = Descriptor {
            node: NodeId(leak_protocol::crypto::ed25519_public(&seed)),
            addresses: vec!["/ip4/127.0.0.1/tcp/4700".into()],
            roles: Roles {
                relay: true,
                exit: false,
            },
            family: String::new(),
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

    #[test]
    fn verification_keeps_the_newest_valid_descriptor_per_node() {
        let freshness = Freshness {
            now: 10_000,
            max_age_secs: 3600,
            max_clock_skew_secs: 60,
        };
        let (old_a, old_a_signed) = signed(1, 9_000);
        let (new_a, new_a_signed) = signed(1, 9_500);
        let (_, stale_b) = signed(2, 1_000);
        let (c, c_signed) = signed(3, 9_999);
        let (verified, refused) = verify_all(
            vec![
                new_a_signed.clone(),
                old_a_signed,
                stale_b,
                c_signed.clone(),
            ],
            freshness,
        );
        assert_eq!(refused, 1);
        let nodes: Vec<Descriptor> = verified.into_iter().map(|(d, _)| d).collect();
        assert_eq!(nodes.len(), 2);
        assert!(nodes.contains(&new_a) && nodes.contains(&c));
        assert!(!nodes.contains(&old_a));
    }

    #[test]
    fn bootstrap_addresses_split() {
        let address: Multiaddr =
            "/ip4/127.0.0.1/tcp/4700/p2p/12D3KooWGzHqThQN7U5zHQkdprBgB1XQhKexGEkCPAKRM3HqpwZC"
                .parse()
                .unwrap();
        let (peer, dial) = split_peer(&address).unwrap();
        assert_eq!(dial.to_string(), "/ip4/127.0.0.1/tcp/4700");
        assert_eq!(
            peer.to_string(),
            "12D3KooWGzHqThQN7U5zHQkdprBgB1XQhKexGEkCPAKRM3HqpwZC"
        );
        assert!(split_peer(&"/ip4/127.0.0.1/tcp/1".parse().unwrap()).is_none());
    }

    #[test]
    fn ages() {
        assert_eq!(format_age(5), "5s");
        assert_eq!(format_age(95), "1m35s");
        assert_eq!(format_age(7260), "2h1m");
        assert_eq!(format_age(90_000), "1d1h");
    }
}
