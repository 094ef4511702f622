//! `leak-net`: what Leak's node and the sender's client share at the edge.
//!
//! The protocol crate (`leak-protocol`) says what packets, descriptors and
//! receipts are, with no I/O. This crate is the small part of the I/O both
//! sides need, so that the sender's `leak` command does not carry the node
//! (its database, its mail delivery, its metrics and HTTP servers):
//!
//! - [`wire`]: the node's own libp2p protocols (`/leak/packet/1`,
//!   `/leak/directory/2`, `/leak/mailbox/2`, `/leak/opt-outs/3`) as small async functions over
//!   a stream, client side and server side;
//! - [`peer`]: a minimal libp2p peer that dials nodes, sends packets and
//!   fetches directories and mailboxes, listening on nothing;
//! - [`address_book`]: where nodes listen, learned from verified
//!   descriptors only;
//! - [`peer_id`]: a Leak node id and a libp2p peer id name the same key;
//! - [`durable`]: the one way a file is replaced on disk, atomically and
//!   durably;
//! - [`dates`]: the calendar date of a Unix day, for what people read.

pub mod address_book;
pub mod config_template;
pub mod dates;
pub mod durable;
pub mod peer;
pub mod peer_id;
pub mod wire;

pub use peer::{MailboxLink, PacketLink, Peer, PeerError};
pub use peer_id::{node_id_of, peer_id_of};
