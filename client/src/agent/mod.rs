//! The always-on sender agent (`leak agent`), after Loopix and Nym.
//!
//! Someone who watches a sender's connection should learn nothing from it:
//! not *that* they sent a leak, nor *when*. So the agent runs all the time
//! and its traffic does not change when there is a leak to send:
//!
//! - it keeps one **guard** ([`guard`]), an entry relay chosen once and kept
//!   for 30 days, which also keeps the agent's one mailbox;
//! - it sends one packet to the guard at the times of a Poisson process
//!   (`cover.send_interval_ms`): a **loop** that comes back to its mailbox
//!   (`cover.loop_share` of the slots) or a **drop** that an exit discards;
//!   a leak waiting to leave takes the next loop slot, and its receipt comes
//!   back to the mailbox in place of that loop ([`traffic`]);
//! - it fetches its mailbox on a Poisson process of its own
//!   (`cover.poll_interval_ms`), never when a receipt is due, and every
//!   answer has one size;
//! - a leak without a receipt is sent again only after the p99.9 of a round
//!   trip (at least `agent.retransmit_min_wait_secs`), at a random time in
//!   the following `agent.retransmit_spread_secs`, over a fresh route, with
//!   the same exit and message id, in a loop slot: at most
//!   `1 + send.retransmissions` attempts.
//!
//! It estimates how many senders its leaks hide among from the counts the
//! federation publishes and its loops' returns ([`anonymity`]), shows it in
//! `leak status`, and lengthens the per-hop delay when traffic is too low
//! for `agent.min_anonymity_set`.
//!
//! The schedule itself is pure ([`crate::cover`]); this module does the
//! I/O. Leaks reach the agent over a Unix socket ([`ipc`]) and are kept on
//! disk until they are finished ([`outbox`]), so a restart loses none and
//! sends none under a new id. [`run`] is the agent's task.

pub mod anonymity;
pub mod fetch;
pub mod guard;
pub mod ipc;
pub mod outbox;
pub mod outbox_key;
pub mod run;
pub mod traffic;
pub mod ui;
