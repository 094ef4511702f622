//! Path selection: which nodes a leak crosses, and how long each holds it.
//!
//! The exit is chosen first (among exits enforcing the client's policy
//! version when there are any: for a leak the one responsible for its
//! recipient, for a loop one at random), then the other hops, as Tor does. A *route* is two
//! paths that meet at the client's entry relay:
//!
//! ```text
//! forward:  client → entry → middle… → exit
//! reply:             exit → relay… → entry (mailbox)
//! ```
//!
//! The reply path ends at a mailbox on the entry relay, which already sees
//! the client's address, so no further node learns it when the client
//! fetches the receipt. It mirrors the forward path: as many relays between
//! the exit and the mailbox as between the entry and the exit (`hops - 2`),
//! so a forward path of `hops` hops comes with a reply path of `hops - 1`.
//!
//! Layers (see [`leak_protocol::federation::layer`]): the entry is
//! preferably an entry relay (an agent's guard always is, when the
//! federation has one), and the hops between it and the exit, and the
//! reply relays, preferably mix relays, which hold no client's fresh
//! packets. A route outside the layers is chosen only when the rules below
//! leave no layered one, or a retransmission would otherwise cross a relay
//! an earlier attempt used.
//!
//! Rules, on each path (the exit and the entry included in both):
//! - no node twice;
//! - no two nodes of one operator family (an empty family is a family of one);
//! - no two nodes with addresses in one IPv4 /16 or one IPv6 /32 (Tor's rule
//!   against one network operator holding two hops). Loopback addresses are
//!   exempt: on a federation that runs on one machine every node is
//!   127.0.0.1, and loopback says nothing about who runs a node;
//! - every node has a mix key for the epoch the packet reaches it in: the
//!   epoch of the earliest moment it can arrive (the sum of the delays of
//!   the hops before it). A node accepts its current and its previous epoch,
//!   so a packet that arrives later than that earliest moment, up to an
//!   epoch late, is still processed.
//!
//! Per-hop delays are drawn from the exponential distribution whose mean the
//! client configures (Loopix), capped at what relays accept.
//!
//! Retransmissions keep the exit (the exit deduplicates by message id) and,
//! when it is reachable, the entry, and prefer middle and reply relays that
//! earlier attempts did not use. Everything here is pure: the directory, the
//! time and the randomness come in, a route comes out.

use std::collections::HashSet;
use std::net::IpAddr;

use leak_protocol::{Delay, NodeId, PathHop, directory::Descriptor, federation};
use libp2p::{Multiaddr, multiaddr::Protocol};
use rand::{CryptoRng, seq::SliceRandom as _};

/// The fewest hops of a path: an entry and an exit, so the exit never sees
/// the client's address.
pub const MIN_HOPS: usize = 2;
/// The most hops of a path (what a packet header has room for).
pub const MAX_HOPS: usize = leak_protocol::sphinx::MAX_HOPS;
/// The longest per-hop delay: relays refuse longer ones by default.
pub const MAX_HOP_DELAY_MS: u32 = leak_protocol::federation::MAX_HOP_DELAY_MS;
/// How many candidate placements the search tries before giving up.
const SEARCH_BUDGET: usize = 50_000;

/// Why no path could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The directory lists no exit (with a key for the current epoch).
    #[error("no exit in the directory")]
    NoExit,
    /// The hop count is out of range.
    #[error("a path has {MIN_HOPS} to {MAX_HOPS} hops, not {0}")]
    HopCount(usize),
    /// Too few nodes satisfy the path rules.
    #[error(
        "not enough nodes for a {hops}-hop path: the directory has {relays} relay(s) besides the exit, \
         and no two hops may share an operator family or a /16 network, or lack a key for the epoch they are used in"
    )]
    NotEnoughNodes {
        /// The hops asked for.
        hops: usize,
        /// Relays known besides the exit.
        relays: usize,
    },
}

/// An exit chosen for a leak.
#[derive(Debug, Clone)]
pub struct ExitChoice {
    /// Its descriptor.
    pub descriptor: Descriptor,
    /// Whether it enforces the policy version the client checked against.
    pub same_policy: bool,
}

/// Chooses the exit of a leak or a loop, preferring exits that enforce
/// `policy_version`. Only exits with a key for the current epoch qualify.
///
/// A leak's exit is the one responsible for its recipient (`recipient`,
/// the policy's hash of the address): the first of the pool by rendezvous
/// hashing ([`leak_protocol::directory::responsible_exit`]), which every
/// client and exit of the same directory computes alike, and which refuses
/// leaks of recipients it is not responsible for; a loop (`None`) takes
/// one at random.
pub fn choose_exit<R: CryptoRng + ?Sized>(
    nodes: &[Descriptor],
    policy_version: u32,
    recipient: Option<&[u8; 32]>,
    now_ms: u64,
    rng: &mut R,
) -> Result<ExitChoice, PathError> {
    let exits: Vec<&Descriptor> = nodes
        .iter()
        .filter(|d| d.roles.exit && d.exit.is_some())
        .filter(|d| d.mix_key(d.epoch_at(now_ms / 1000)).is_some())
        .collect();
    let same: Vec<&Descriptor> = exits
        .iter()
        .copied()
        .filter(|d| leak_protocol::directory::is_exit_for(d, policy_version, now_ms / 1000))
        .collect();
    let (pool, same_policy) = if same.is_empty() {
        (exits, false)
    } else {
        (same, true)
    };
    let chosen = match recipient {
        Some(recipient) => pool
            .iter()
            .copied()
            .max_by_key(|d| (federation::exit_rank(recipient, &d.node), d.node.0)),
        None => uniform_index(pool.len(), rng).map(|i| pool[i]),
    };
    let descriptor = chosen.ok_or(PathError::NoExit)?;
    Ok(ExitChoice {
        descriptor: descriptor.clone(),
        same_policy,
    })
}

/// What a route must satisfy besides the rules.
#[derive(Debug, Clone, Copy)]
pub struct RouteRequest<'a> {
    /// Hops of the forward path, counting the exit; the reply path has one fewer.
    pub hops: usize,
    /// The mean per-hop delay in milliseconds.
    pub mean_delay_ms: u32,
    /// When the packet leaves, Unix milliseconds.
    pub now_ms: u64,
    /// The exit, chosen before.
    pub exit: &'a Descriptor,
    /// The entry relay to keep if it still qualifies (retransmissions).
    pub entry: Option<NodeId>,
    /// Nodes to use only when there is no other way (earlier attempts' relays).
    pub avoid: &'a [NodeId],
    /// Nodes never to use (unreachable).
    pub exclude: &'a [NodeId],
}

/// A forward path and the reply path back to the entry relay's mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Entry, middle relays, exit.
    pub forward: Vec<PathHop>,
    /// Reply relays, then the entry relay, which keeps the mailbox.
    pub reply: Vec<PathHop>,
}

impl Route {
    /// The node the client sends the packet to (and fetches the receipt from).
    pub fn entry(&self) -> NodeId {
        self.forward[0].node
    }

    /// The middle relays of the forward path.
    pub fn middles(&self) -> &[PathHop] {
        &self.forward[1..self.forward.len() - 1]
    }

    /// The node that keeps the mailbox: the entry relay.
    pub fn mailbox_node(&self) -> NodeId {
        self.reply[self.reply.len() - 1].node
    }

    /// Every delay of the forward path, then of the reply path, added up:
    /// the least time before a receipt can be in the mailbox.
    pub fn total_delay_ms(&self) -> u64 {
        self.forward
            .iter()
            .chain(&self.reply)
            .map(|h| u64::from(h.delay.as_millis()))
            .sum()
    }
}

/// The networks a node's addresses are in, for the /16 rule: IPv4 /16s and
/// IPv6 /32s of its non-loopback, specified IP addresses.
pub fn networks(descriptor: &Descriptor) -> Vec<[u8; 5]> {
    let mut out = Vec::new();
    for address in &descriptor.addresses {
        let Ok(address) = address.parse::<Multiaddr>() else {
            continue;
        };
        for protocol in address.iter() {
            let ip = match protocol {
                Protocol::Ip4(ip) => IpAddr::V4(ip),
                Protocol::Ip6(ip) => IpAddr::V6(ip),
                _ => continue,
            };
            if ip.is_loopback() || ip.is_unspecified() {
                continue;
            }
            let network = match ip {
                IpAddr::V4(v4) => {
                    let [a, b, ..] = v4.octets();
                    [4, a, b, 0, 0]
                }
                IpAddr::V6(v6) => {
                    let [a, b, c, d, ..] = v6.octets();
                    [6, a, b, c, d]
                }
            };
            if !out.contains(&network) {
                out.push(network);
            }
        }
    }
    out
}

/// Whether two nodes may be on one path.
pub fn compatible(a: &Descriptor, b: &Descriptor) -> bool {
    if a.node == b.node {
        return false;
    }
    if !a.family.is_empty() && a.family == b.family {
        return false;
    }
    let theirs = networks(b);
    !networks(a).iter().any(|n| theirs.contains(n))
}

/// Chooses a route for `request`, whose reply path has one hop fewer than
/// its forward path (`leak send --direct`).
pub fn choose_route<R: CryptoRng + ?Sized>(
    nodes: &[Descriptor],
    request: &RouteRequest<'_>,
    rng: &mut R,
) -> Result<Route, PathError> {
    choose_route_with_reply(nodes, request, request.hops.saturating_sub(1), rng)
}

/// Chooses a route for `request` whose reply path has `reply_hops` hops,
/// the entry's mailbox included. The agent asks for as many as the forward
/// path has, so that a receipt's way back is as long (and as delayed) as
/// the leak's way out, and its round trip looks like the agent's loops.
pub fn choose_route_with_reply<R: CryptoRng + ?Sized>(
    nodes: &[Descriptor],
    request: &RouteRequest<'_>,
    reply_hops: usize,
    rng: &mut R,
) -> Result<Route, PathError> {
    let hops = request.hops;
    if !(MIN_HOPS..=MAX_HOPS).contains(&hops) {
        return Err(PathError::HopCount(hops));
    }
    if !(1..=MAX_HOPS).contains(&reply_hops) {
        return Err(PathError::HopCount(reply_hops));
    }
    let exit = request.exit;
    let relays: Vec<&Descriptor> = nodes
        .iter()
        .filter(|d| d.roles.relay && d.node != exit.node && !request.exclude.contains(&d.node))
        .collect();
    let not_enough = PathError::NotEnoughNodes {
        hops,
        relays: relays.len(),
    };

    // Delays first: they decide the epoch each hop is reached in.
    let forward_delays: Vec<Delay> = (0..hops)
        .map(|_| sample_delay(request.mean_delay_ms, rng))
        .collect();
    let reply_delays: Vec<Delay> = (0..reply_hops)
        .map(|_| sample_delay(request.mean_delay_ms, rng))
        .collect();
    let forward_arrival = arrivals(request.now_ms, &forward_delays);
    let reply_start = request.now_ms + sum_ms(&forward_delays);
    let reply_arrival = arrivals(reply_start, &reply_delays);

    if key_for(exit, forward_arrival[hops - 1]).is_none() {
        return Err(not_enough);
    }
    let with_key = |at_ms: u64| -> Vec<&Descriptor> {
        relays
            .iter()
            .copied()
            .filter(|d| key_for(d, at_ms).is_some())
            .collect()
    };
    // The entry is reached first and keeps the mailbox the reply reaches last.
    let mut entries: Vec<&Descriptor> = with_key(forward_arrival[0])
        .into_iter()
        .filter(|d| key_for(d, reply_arrival[reply_hops - 1]).is_some() && compatible(d, exit))
        .collect();
    entries.shuffle(rng);
    let mut middle_slots: Vec<Vec<&Descriptor>> = forward_arrival[1..hops - 1]
        .iter()
        .map(|&at| with_key(at))
        .collect();
    let mut reply_slots: Vec<Vec<&Descriptor>> = reply_arrival[..reply_hops - 1]
        .iter()
        .map(|&at| with_key(at))
        .collect();
    for slot in middle_slots.iter_mut().chain(reply_slots.iter_mut()) {
        slot.shuffle(rng);
    }

    // Preferences, strongest first; each pass drops one. A retransmission
    // avoiding the relays of earlier attempts (one of them may be what lost
    // it) comes before the layers: getting through matters more than the
    // better of two mixes.
    let preferred_entry: Option<&Descriptor> = request
        .entry
        .and_then(|node| entries.iter().copied().find(|d| d.node == node));
    let avoid: HashSet<NodeId> = request.avoid.iter().copied().collect();
    let mut budget = SEARCH_BUDGET;
    let entry_passes: Vec<Vec<&Descriptor>> = match preferred_entry {
        Some(entry) => vec![vec![entry], entries.clone()],
        None => vec![entries.clone()],
    };
    for entry_candidates in &entry_passes {
        for avoid_earlier in [true, false] {
            for layered in [true, false] {
                for disjoint_reply in [true, false] {
                    for &entry in entry_candidates {
                        if layered && Some(entry.node) != request.entry && !entry.is_entry() {
                            continue;
                        }
                        let usable = |d: &&Descriptor| {
                            (!avoid_earlier || !avoid.contains(&d.node)) && (!layered || d.is_mix())
                        };
                        let middle_pool: Vec<Vec<&Descriptor>> = middle_slots
                            .iter()
                            .map(|s| s.iter().copied().filter(usable).collect())
                            .collect();
                        let Some(middles) = fill(&[exit, entry], &middle_pool, &mut budget) else {
                            if budget == 0 {
                                return Err(not_enough);
                            }
                            continue;
                        };
                        let reply_pool: Vec<Vec<&Descriptor>> = reply_slots
                            .iter()
                            .map(|s| {
                                s.iter()
                                    .copied()
                                    .filter(usable)
                                    .filter(|d| {
                                        !disjoint_reply || !middles.iter().any(|m| m.node == d.node)
                                    })
                                    .collect()
                            })
                            .collect();
                        let Some(reply_relays) = fill(&[exit, entry], &reply_pool, &mut budget)
                        else {
                            if budget == 0 {
                                return Err(not_enough);
                            }
                            continue;
                        };
                        let forward_nodes = std::iter::once(entry).chain(middles).chain([exit]);
                        let forward = forward_nodes
                            .zip(forward_delays.iter().zip(&forward_arrival))
                            .map(|(d, (&delay, &at))| path_hop(d, at, delay))
                            .collect::<Option<Vec<_>>>();
                        let reply = reply_relays
                            .into_iter()
                            .chain([entry])
                            .zip(reply_delays.iter().zip(&reply_arrival))
                            .map(|(d, (&delay, &at))| path_hop(d, at, delay))
                            .collect::<Option<Vec<_>>>();
                        if let (Some(forward), Some(reply)) = (forward, reply) {
                            return Ok(Route { forward, reply });
                        }
                    }
                }
            }
        }
    }
    Err(not_enough)
}

/// A delay from the exponential distribution with mean `mean_ms`, capped.
pub fn sample_delay<R: CryptoRng + ?Sized>(mean_ms: u32, rng: &mut R) -> Delay {
    if mean_ms == 0 {
        return Delay(0);
    }
    Delay(
        Delay::sample_exponential(mean_ms, rng)
            .as_millis()
            .min(MAX_HOP_DELAY_MS),
    )
}

/// A uniform index below `len`, or `None` when `len` is 0.
fn uniform_index<R: CryptoRng + ?Sized>(len: usize, rng: &mut R) -> Option<usize> {
    if len == 0 {
        return None;
    }
    // Rejection sampling: no modulo bias.
    let len = len as u64;
    let zone = u64::MAX - (u64::MAX % len);
    loop {
        let x = rng.next_u64();
        if x < zone {
            return usize::try_from(x % len).ok();
        }
    }
}

fn sum_ms(delays: &[Delay]) -> u64 {
    delays.iter().map(|d| u64::from(d.as_millis())).sum()
}

/// The earliest arrival time at each hop: the start plus the delays before it.
fn arrivals(start_ms: u64, delays: &[Delay]) -> Vec<u64> {
    let mut at = start_ms;
    delays
        .iter()
        .map(|d| {
            let this = at;
            at += u64::from(d.as_millis());
            this
        })
        .collect()
}

/// The epoch and key `descriptor` uses for a packet arriving at `at_ms`.
fn key_for(descriptor: &Descriptor, at_ms: u64) -> Option<(u64, leak_protocol::MixPublicKey)> {
    let epoch = descriptor.epoch_at(at_ms / 1000);
    descriptor.mix_key(epoch).map(|key| (epoch, key))
}

fn path_hop(descriptor: &Descriptor, at_ms: u64, delay: Delay) -> Option<PathHop> {
    let (epoch, key) = key_for(descriptor, at_ms)?;
    Some(PathHop {
        node: descriptor.node,
        key,
        key_hint: leak_protocol::federation::epoch_key_hint(epoch),
        delay,
    })
}

/// Picks one node from each slot such that the picks and `fixed` are
/// pairwise compatible: a depth-first search over slots whose candidates
/// are already in random order, bounded by `budget` placements.
fn fill<'a>(
    fixed: &[&'a Descriptor],
    slots: &[Vec<&'a Descriptor>],
    budget: &mut usize,
) -> Option<Vec<&'a Descriptor>> {
    fn go<'a>(
        chosen: &mut Vec<&'a Descriptor>,
        slots: &[Vec<&'a Descriptor>],
        budget: &mut usize,
    ) -> bool {
        let Some((slot, rest)) = slots.split_first() else {
            return true;
        };
        for &candidate in slot {
            if *budget == 0 {
                return false;
            }
            *budget -= 1;
            if chosen.iter().all(|c| compatible(c, candidate)) {
                chosen.push(candidate);
                if go(chosen, rest, budget) {
                    return true;
                }
                chosen.pop();
            }
        }
        false
    }
    let mut chosen: Vec<&'a Descriptor> = fixed.to_vec();
    go(&mut chosen, slots, budget).then(|| chosen.split_off(fixed.len()))
}

#[cfg(test)]
mod tests;
