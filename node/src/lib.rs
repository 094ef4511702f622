//! `leak-node`: the Leak relay daemon.
//!
//! A relay receives fixed-size onion packets from its neighbours over
//! libp2p, removes one layer with [`leak_protocol`], holds each packet for
//! the mixing delay its sender chose, and passes it to the next hop, which it
//! finds in the federation's directory of signed descriptors. It drops
//! replays (remembering what it has seen in its database across restarts),
//! rotates its mix keys on a UTC schedule and forgets old ones, keeps reply
//! payloads in mailboxes for the clients they belong to, and stays bounded
//! however hard a peer floods it.
//!
//! What a relay never holds: who sent what. It sees the previous and the
//! next hop of a packet and nothing else, and writes neither to its logs.
//!
//! Modules: [`config`] (the TOML file and its overrides), [`identity`],
//! [`store`] (redb), [`epoch`] (key rotation), [`directory`], [`queue`] (the
//! fair bounded inbound queue), [`net`] (libp2p), [`node`] (the running
//! node), [`metrics`], [`safelog`].
//!
//! The `/leak/...` wire formats ([`wire`]), the minimal peer that talks to
//! nodes ([`client`]) and the peer-id helpers live in `leak-net`, which the
//! sender's client shares without carrying the node; they are re-exported
//! here under their old paths.

pub mod clock;
pub mod config;
pub mod directory;
pub mod epoch;
pub mod error;
pub mod exit;
pub mod held;
pub mod held_disk;
pub mod identity;
pub mod metrics;
pub mod net;
pub mod node;
pub mod open_files;
pub mod policy;
pub mod queue;
pub mod relay;
pub mod release;
pub mod roster;
pub mod safelog;
pub mod store;
pub mod traffic;

pub use leak_net::{peer as client, wire};

pub use config::Config;
pub use identity::Identity;
pub use node::{RunningNode, StartOptions, start};
