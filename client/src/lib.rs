//! `leak-client`: the sender's side of Leak, and the `leak` command.
//!
//! A sender writes a short message to someone, says who they are to them
//! (a friend, a coworker…) and sends it; nobody, not even the nodes that
//! carry it, can tell who sent it. The client:
//!
//! 1. checks the text against the federation's moderation policy (the same
//!    code the exits run), so a text that would be refused is stopped before
//!    it leaves ([`leak_protocol::policy`]);
//! 2. fetches the signed directory of nodes from bootstrap nodes and
//!    verifies it ([`directory`]);
//! 3. chooses an exit, then an entry and middle relays under the path rules
//!    (no two hops of one operator family or one /16, keys for the epochs
//!    the packet lives in) and draws each hop's mixing delay ([`path`]);
//! 4. seals the leak with a reply block to a mailbox on its entry relay into
//!    one fixed-size onion packet, sends it, and waits for the exit's
//!    receipt, sending again over fresh paths when none comes ([`send`],
//!    [`receipts`]);
//! 5. remembers pending and finished leaks, never their text ([`state`]).
//!
//! [`agent`] is the always-on agent (`leak agent`) that sends leaks among
//! cover traffic, so that the sender's connection says nothing about when
//! they send; `leak send` hands leaks to it ([`agent::ipc`]); [`cover`] is
//! its schedule of cover traffic and polls.
//!
//! [`config`] is the configuration file; [`text`] reads the message from
//! the command line, a file, standard input or an editor; [`progress`]
//! shows what is happening on standard error.

pub mod agent;
pub mod config;
pub mod cover;
pub mod directory;
pub mod estimate;
pub mod inbox;
pub mod path;
pub mod progress;
pub mod receipts;
pub mod retransmit;
pub mod send;
pub mod state;
pub mod text;
pub mod threads;
pub mod words;
