//! A running node: the tasks that tie the protocol, the network and the
//! database together.
//!
//! ```text
//!  peers ──/leak/packet/1──▶ readers ──▶ FairQueue (per-peer + global bound)
//!                                           │  round robin
//!                                           ▼
//!                              worker threads: leak-protocol processing,
//!                              replay tags recorded durably (one redb
//!                              transaction per batch) before anything leaves
//!                                           │
//!                                           ▼
//!                              timer queue (one task, bounded heap): holds
//!                              each packet for its mixing delay
//!                                           │
//!                     ┌─────────────────────┼──────────────────────┐
//!                     ▼                     ▼                      ▼
//!             link writers (one      mailbox (redb)         exit sink (the
//!             stream per next hop,                          exit role)
//!             bounded queue each)
//! ```
//!
//! Nothing here logs or stores a peer's address, a recipient or a message:
//! addresses of next hops come from signed descriptors, and peers appear in
//! logs only through [`Sensitive`](crate::safelog::Sensitive).
//!
//! | module | what |
//! |---|---|
//! | `startup` | [`start`]: the database, the keys, the listeners, every task |
//! | `running` | [`RunningNode`]: what a caller holds; shutdown |
//! | `shared` | the state the tasks share; this node's descriptor |
//! | `swarm` | the libp2p event loop |
//! | `gossip` | validation of descriptors, policies and opt-outs from the mesh |
//! | `fetch` | directory fetches and anti-entropy |
//! | `serve` | packet streams in; directory and mailbox requests |
//! | `pipeline` | worker threads: batches through the [relay core](crate::relay) |
//! | `timer` | packets held for their mixing delay |
//! | `links` | one writer per next hop |
//! | `cover` | this node's loops: sent when due, recognised when back, the return ratio watched |
//! | `maintenance` | key rotation, descriptor publication, expiry |

mod cover;
mod fetch;
mod gossip;
mod links;
mod maintenance;
mod pipeline;
mod running;
mod serve;
mod shared;
mod startup;
mod swarm;
mod timer;

pub use self::{
    running::RunningNode,
    startup::{StartOptions, start},
};
pub use crate::clock::{unix_now, unix_now_ms};
