//! The node's view of the federation: verified descriptors, newest per node.
//!
//! The verified directory is pure and shared with the sender's client:
//! [`leak_protocol::directory::Directory`]. The node feeds it from gossip
//! and anti-entropy, bounds it by `directory.max_nodes` and expires it on
//! its maintenance tick.

pub use leak_protocol::directory::{Directory, Offer, Refused};
