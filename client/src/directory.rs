//! The federation's directory as the client sees it.
//!
//! The client asks every configured bootstrap node for its roster and the
//! signed descriptors it knows (`/leak/directory/2`). It takes the newest
//! roster that enough of the configured directory authorities signed and
//! that is valid now, then verifies each descriptor (the roster admits its
//! node, roles and family; signature, freshness, consistency) and keeps the
//! newest per node: a bootstrap node can withhold nodes, but not add any.
//! The roster and the raw signed descriptors are cached in the state
//! directory with the time they were fetched; when no bootstrap node
//! answers, a cache younger than `directory.cache_max_age_secs` is used
//! instead (and re-verified, so what went stale since is dropped).

use std::time::Duration;

use futures::future::join_all;
use leak_net::{Peer, peer_id_of};
use leak_protocol::{
    directory::{Descriptor, Directory, Freshness, SignedDescriptor},
    roster::{self, RosterError},
};
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
    /// Descriptors refused (not admitted by the roster, forged, stale,
    /// inconsistent, undecodable).
    pub refused: usize,
    /// The serial of the roster the nodes were admitted by.
    pub roster_serial: u64,
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
    /// The configuration names no directory authority.
    #[error(
        "no directory authority configured: run `leak init --authority KEY` or add directory.authorities to the config"
    )]
    NoAuthorities,
    /// Bootstrap nodes answered, but with no roster the authorities signed
    /// that is valid now.
    #[error("no valid roster from the bootstrap nodes: {0}")]
    NoRoster(String),
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
    /// The signed roster, hex.
    #[serde(default)]
    roster: Option<String>,
    descriptors: Vec<String>,
}

/// The directory authorities a client trusts.
#[derive(Debug, Clone)]
pub struct Trust {
    /// Their keys.
    pub authorities: Vec<[u8; 32]>,
    /// How many must have signed.
    pub threshold: usize,
}

impl Trust {
    /// The authorities of `config`.
    pub fn of(config: &Config) -> Result<Self, DirectoryError> {
        let authorities =
            leak_protocol::policy::parse_public_keys(&config.directory.authorities)
                .map_err(|e| DirectoryError::NoRoster(format!("directory.authorities: {e}")))?;
        if authorities.is_empty() {
            return Err(DirectoryError::NoAuthorities);
        }
        Ok(Self {
            authorities,
            threshold: config.directory.authority_threshold,
        })
    }
}

/// What [`verify_all`] kept.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The admitted, verified descriptors with their signed forms, sorted
    /// by node id.
    pub entries: Vec<(Descriptor, SignedDescriptor)>,
    /// Descriptors refused.
    pub refused: usize,
    /// The roster in force (its serial and signed bytes).
    pub roster: Option<(u64, Vec<u8>)>,
    /// Why no roster was taken, when none was.
    pub roster_error: Option<RosterError>,
}

/// Splits `/ip4/…/tcp/…/p2p/PEER` into the peer id and the address before it.
pub fn split_peer(address: &Multiaddr) -> Option<(PeerId, Multiaddr)> {
    let mut address = address.clone();
    match address.pop() {
        Some(Protocol::P2p(peer)) => Some((peer, address)),
        _ => None,
    }
}

/// Takes the newest of `rosters` that `trust` verifies at `freshness.now`
/// (a bootstrap node cannot roll the client back while another serves a
/// newer one), then verifies every descriptor against it and keeps the
/// newest valid one per node (unbounded here: the roster bounds them).
pub fn verify_all(
    rosters: Vec<Vec<u8>>,
    signed: Vec<SignedDescriptor>,
    freshness: Freshness,
    trust: &Trust,
) -> Verified {
    let mut directory = Directory::new(
        freshness.max_age_secs,
        freshness.max_clock_skew_secs,
        usize::MAX,
    );
    let mut checked: Vec<(u64, Vec<u8>, roster::Roster)> = Vec::new();
    let mut roster_error = None;
    for bytes in rosters {
        match roster::verify_signed(
            &bytes,
            &trust.authorities,
            trust.threshold,
            freshness.now,
            freshness.max_clock_skew_secs,
        ) {
            Ok(r) => checked.push((r.serial, bytes, r)),
            Err(e) => roster_error = Some(e),
        }
    }
    // Newest first; of two different rosters under one serial the first
    // served is taken (the other is an equivocation, refused).
    checked.sort_by_key(|(serial, _, _)| std::cmp::Reverse(*serial));
    let mut taken = None;
    if let Some((serial, bytes, r)) = checked.into_iter().next() {
        match directory.adopt_roster(r) {
            Ok(_) => taken = Some((serial, bytes)),
            Err(e) => roster_error = Some(e),
        }
    }
    let refused = directory.offer_all(signed, freshness.now);
    let entries = directory
        .entries()
        .map(|(d, s)| (d.clone(), s.clone()))
        .collect();
    Verified {
        entries,
        refused,
        roster_error: if taken.is_some() { None } else { roster_error },
        roster: taken,
    }
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
    let trust = Trust::of(config)?;
    let freshness = Freshness {
        now,
        max_age_secs: config.directory.max_age_secs,
        max_clock_skew_secs: config.directory.max_clock_skew_secs,
    };
    let cache = read_cache(state);
    let cached_roster = cache
        .as_ref()
        .and_then(|c| c.roster.as_deref())
        .and_then(|h| hex::decode(h).ok());
    let timeout = Duration::from_secs(config.network.connect_timeout_secs);
    let fetches = bootstrap.iter().map(|address| async move {
        let (id, dial) = split_peer(address)
            .ok_or_else(|| format!("{address} does not end with /p2p/PEERID"))?;
        peer.add_node(id, vec![dial]);
        // Serial 0: every answer carries its roster, so the newest wins.
        match tokio::time::timeout(timeout, peer.directory(id, 0)).await {
            Ok(Ok(answer)) => Ok(answer),
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
        let mut rosters: Vec<Vec<u8>> = cached_roster.into_iter().collect();
        let mut signed = Vec::new();
        for answer in results.into_iter().flatten() {
            rosters.extend(answer.roster);
            signed.extend(answer.descriptors);
        }
        let verified = verify_all(rosters, signed, freshness, &trust);
        let Some((roster_serial, roster_bytes)) = verified.roster else {
            return Err(DirectoryError::NoRoster(
                verified
                    .roster_error
                    .map_or_else(|| "they serve none".to_owned(), |e| e.to_string()),
            ));
        };
        let cache = CacheFile {
            fetched_at: now,
            roster: Some(hex::encode(&roster_bytes)),
            descriptors: verified
                .entries
                .iter()
                .map(|(_, s)| hex::encode(s.to_bytes()))
                .collect(),
        };
        // The cache is a convenience: failing to write it is not fatal.
        if let Ok(json) = serde_json::to_vec(&cache) {
            let _ = write_atomically(&state.directory_cache(), &json);
        }
        let nodes: Vec<Descriptor> = verified.entries.into_iter().map(|(d, _)| d).collect();
        register_nodes(peer, &nodes);
        return Ok(DirectoryView {
            nodes,
            fetched_at: now,
            from_cache: false,
            answered,
            refused: verified.refused,
            roster_serial,
        });
    }
    let unreachable = |cache: String| DirectoryError::Unreachable {
        tried: bootstrap.len(),
        first_error: first_error.clone(),
        cache,
    };
    let cache = cache.ok_or_else(|| unreachable("no cached directory".into()))?;
    let age = now.saturating_sub(cache.fetched_at);
    if age > config.directory.cache_max_age_secs {
        return Err(unreachable(format!(
            "the cached directory is {} old (at most {} allowed)",
            format_age(age),
            format_age(config.directory.cache_max_age_secs)
        )));
    }
    let view = verify_cache(&cache, freshness, &trust).map_err(|e| {
        unreachable(format!(
            "the cached roster is not valid now ({})",
            e.map_or_else(|| "there is none".to_owned(), |e| e.to_string())
        ))
    })?;
    register_nodes(peer, &view.nodes);
    Ok(view)
}

/// The cached directory if it was fetched at most `max_age_secs` ago and
/// still verifies, without asking any bootstrap node; else [`load`]. A
/// send then tells no bootstrap node that it is starting.
pub async fn load_recent(
    peer: &Peer,
    config: &Config,
    state: &StateDir,
    now: u64,
    max_age_secs: u64,
) -> Result<DirectoryView, DirectoryError> {
    let trust = Trust::of(config)?;
    if let Some(cache) = read_cache(state)
        && now.saturating_sub(cache.fetched_at) <= max_age_secs
    {
        let freshness = Freshness {
            now,
            max_age_secs: config.directory.max_age_secs,
            max_clock_skew_secs: config.directory.max_clock_skew_secs,
        };
        if let Ok(view) = verify_cache(&cache, freshness, &trust)
            && !view.nodes.is_empty()
        {
            register_nodes(peer, &view.nodes);
            return Ok(view);
        }
    }
    load(peer, config, state, now).await
}

/// The cache's directory verified at `freshness.now`, if its roster is
/// still valid.
fn verify_cache(
    cache: &CacheFile,
    freshness: Freshness,
    trust: &Trust,
) -> Result<DirectoryView, Option<RosterError>> {
    let signed = cache
        .descriptors
        .iter()
        .filter_map(|h| hex::decode(h).ok())
        .filter_map(|b| SignedDescriptor::from_bytes(&b).ok())
        .collect();
    let verified = verify_all(cached_roster_of(cache), signed, freshness, trust);
    let Some((roster_serial, _)) = verified.roster else {
        return Err(verified.roster_error);
    };
    Ok(DirectoryView {
        nodes: verified.entries.into_iter().map(|(d, _)| d).collect(),
        fetched_at: cache.fetched_at,
        from_cache: true,
        answered: 0,
        refused: verified.refused,
        roster_serial,
    })
}

fn cached_roster_of(cache: &CacheFile) -> Vec<Vec<u8>> {
    cache
        .roster
        .as_deref()
        .and_then(|h| hex::decode(h).ok())
        .into_iter()
        .collect()
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

    const AUTHORITY: [u8; 32] = [0xa7; 32];

    fn trust() -> Trust {
        Trust {
            authorities: vec![leak_protocol::crypto::ed25519_public(&AUTHORITY)],
            threshold: 1,
        }
    }

    /// A roster of `serial` admitting the nodes of `seeds` as relays of
    /// "ops", signed by `signer`.
    fn roster(serial: u64, seeds: &[u8], signer: &[u8; 32]) -> Vec<u8> {
        let mut r = roster::Roster::new(serial, 0, 20_000);
        for &seed in seeds {
            let node = NodeId(leak_protocol::crypto::ed25519_public(&[seed; 32]));
            let admission = roster::Admission {
                roles: Roles {
                    relay: true,
                    exit: false,
                },
                family: "ops".into(),
            };
            r.admit(node, admission).unwrap();
        }
        roster::SignedRoster::sign(&r, signer).unwrap().to_bytes()
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
        let (_, stranger) = signed(4, 9_999);
        let verified = verify_all(
            vec![roster(1, &[1, 2, 3], &AUTHORITY)],
            vec![
                new_a_signed.clone(),
                old_a_signed,
                stale_b,
                c_signed.clone(),
                stranger,
            ],
            freshness,
            &trust(),
        );
        assert_eq!(verified.refused, 2);
        assert_eq!(verified.roster.as_ref().map(|r| r.0), Some(1));
        let nodes: Vec<Descriptor> = verified.entries.into_iter().map(|(d, _)| d).collect();
        assert_eq!(nodes.len(), 2);
        assert!(nodes.contains(&new_a) && nodes.contains(&c));
        assert!(!nodes.contains(&old_a));
    }

    /// A bootstrap node serving an old roster, or one nobody trusted signed,
    /// cannot add nodes: the newest roster the authorities signed wins.
    #[test]
    fn the_newest_trusted_roster_decides() {
        let freshness = Freshness {
            now: 10_000,
            max_age_secs: 3600,
            max_clock_skew_secs: 60,
        };
        let all = || (1..=4).map(|s| signed(s, 9_000).1).collect::<Vec<_>>();
        let verified = verify_all(
            vec![
                roster(1, &[1, 2, 3, 4], &AUTHORITY),
                roster(9, &[1, 2, 3, 4], &[0x66; 32]),
                roster(2, &[1, 2], &AUTHORITY),
            ],
            all(),
            freshness,
            &trust(),
        );
        assert_eq!(verified.roster.as_ref().map(|r| r.0), Some(2));
        assert_eq!(verified.entries.len(), 2);
        assert_eq!(verified.refused, 2);
        // Only an untrusted roster: nothing, and the reason.
        let verified = verify_all(
            vec![roster(9, &[1, 2, 3, 4], &[0x66; 32])],
            all(),
            freshness,
            &trust(),
        );
        assert!(verified.roster.is_none() && verified.entries.is_empty());
        assert_eq!(
            verified.roster_error.map(|e| e.as_str()),
            Some("too_few_signatures")
        );
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
