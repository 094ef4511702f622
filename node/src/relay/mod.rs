//! The relay core: what a relay does with a packet, decided without I/O.
//!
//! A packet's life at a relay, and who decides what:
//!
//! | step | where | pure? |
//! |---|---|---|
//! | take a batch from the fair inbound queue | `node::pipeline` | I/O |
//! | find the mix secret for the packet's key hint and epoch, peel one layer | [`RelayCore::open`] | pure |
//! | record the batch's replay tags in one transaction, durable before any packet leaves | [`settle_batch`] through [`ReplayLog`] (a process's worker: [`Unsynced`], made durable with the batch's deposits or a sync) | storage |
//! | hold / deposit / hand to the exit / drop, with a typed reason | [`RelayCore::decide`] | pure |
//! | a deposit within its previous hop's quota | [`quota::DepositQuota::admit`] | pure |
//! | carry the decision out (timer, mailbox store, exit sink, metrics) | `node::pipeline`, `node::timer`, [`deposit_all`] | I/O |
//!
//! A relay also sends packets of its own: loops that go round two other
//! relays and come back ([`cover`]), pure in the same way.
//!
//! Time is a value (`now`, Unix milliseconds from an injected
//! [`Clock`](crate::clock::Clock)), so the same code runs in a `leak-node`
//! process and in the virtual-time federation harness of `leak-tests`,
//! where days of epochs pass in milliseconds.

mod batch;
mod core;
pub mod cover;
pub mod quota;

pub use self::{
    batch::{Opened, ReplayLog, Unsynced, deposit_all, process_batch, settle_batch},
    core::{Decision, DropReason, NextHop, RelayCore, RelayLimits},
    cover::{LoopConfig, LoopCounters, LoopReturn, RelayLoops, choose_loop_path},
};
