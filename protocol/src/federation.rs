//! What every node and client of one federation must agree on.
//!
//! A packet crosses relays run by different operators, and the client that
//! builds it never talks to most of them: the rules below are how each side
//! knows what the others will accept without asking. A node may be
//! configured stricter than a default here (a lower delay cap, say), but a
//! client builds to these values, so a node configured laxer gains nothing
//! and one configured stricter drops honest packets.
//!
//! | fact | value | who relies on it |
//! |---|---|---|
//! | [`MAX_HOP_DELAY_MS`] | 10 minutes | relays drop packets asking to be held longer; clients never draw a longer delay |
//! | [`MAILBOX_LIFETIME_SECS`] | 1 day | relays delete unread replies after it; a client gives up on a receipt older than it |
//! | [`DESCRIPTOR_MAX_AGE_SECS`] | 3 hours | a descriptor older than this is stale (nodes republish well within it) |
//! | [`MAX_CLOCK_SKEW_SECS`] | 5 minutes | a descriptor dated further ahead is refused |
//! | [`EPOCH_PERIOD_SECS`] | 1 hour | the default length of a node's mix-key epoch (each descriptor states its own) |
//! | [`epoch_key_hint`] | the epoch number's low byte | the client writes it into each hop; the relay picks that epoch's secret by it (SPEC.md §9) |
//! | [`layer`] | entry or mix, from a hash of the node's id; exits apart | agents choose guards among entry relays; paths and loops cross mix relays between the guard and the exit |
//! | [`responsible_exit`](crate::directory::responsible_exit) | the exit whose hash with the recipient's ranks first | clients send a leak through it; every other exit refuses it, so a recipient's daily cap holds across the federation |
//! | [`OPT_OUT_HOLDERS`] | 3 | the exits ranking first for a recipient hold its opt-out ([`holders`](crate::directory::holders)); no other node ever sees it |
//! | [`MAX_OPT_OUTS_PER_EXIT_PER_DAY`] | 500 | a holder takes at most this many opt-out records from one exit per UTC day |
//!
//! ## Layers
//!
//! The federation is stratified, as Loopix's and Nym's are: clients enter
//! through *entry* relays (their guards, which keep their mailboxes), and
//! the hops between the guard and the exit, and a reply's way back, are
//! *mix* relays. The reason is the adversary who runs a sender's guard and
//! the exit and watches every link: for them the leak is hidden only by
//! the honest relays in between, and a relay that is also other senders'
//! guard holds those senders' fresh packets, which it received straight
//! from them. Whoever watches its links knows exactly whose they are, so a
//! packet leaving it is most likely one of its own clients' (measured on
//! the virtual federation: the effective anonymity set against that
//! adversary fell to 0.7 N, the posterior's top sender being a client of
//! the middle relay). A mix relay has no clients, so every packet it holds
//! came already mixed.
//!
//! A relay's layer is a hash of its node id: nothing to configure, the two
//! layers about equal in any federation, and stable for as long as the
//! node keeps its identity (guards are kept for weeks). Choosers *prefer*
//! the layer (a federation too small to fill a path from the right layer
//! still works, less well). The roster the federation's authorities sign
//! may assign layers instead later; the rule would stay the same.
//!
//! ## One exit per recipient
//!
//! A recipient's daily cap must hold whatever exit a sender picks. Exits
//! could share their counts, but a count published per recipient hash
//! tells anyone holding the (public) policy whether a guessed address got
//! a leak today. Instead one exit is responsible for each recipient:
//! rendezvous hashing ([`exit_rank`], [`responsible_exit`](crate::directory::responsible_exit)) ranks the exits that enforce
//! a policy version by a hash of the recipient's hash and the exit's id,
//! and the first delivers. Every client computes the same exit from the
//! same directory; every other exit refuses the leak
//! (`exit.not_responsible`), so the cap and the day's count live on one
//! exit. When an exit leaves, only its recipients move (to their second
//! exit); when one joins, it takes an even share. A leak's exit says
//! nothing new to an observer: the recipient learns the exit from the
//! email anyway, and over recipients the choice is uniform, as a loop's
//! random exit is.

use crate::NodeId;

/// The longest mixing delay a hop may ask of a relay, in milliseconds.
pub const MAX_HOP_DELAY_MS: u32 = 600_000;

/// How long a relay keeps a reply in a mailbox before deleting it unread.
pub const MAILBOX_LIFETIME_SECS: u64 = 86_400;

/// A descriptor published longer ago than this is stale.
pub const DESCRIPTOR_MAX_AGE_SECS: u64 = 3 * 3600;

/// A descriptor dated more than this far in the future is refused.
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;

/// The default length of a mix-key epoch.
pub const EPOCH_PERIOD_SECS: u64 = 3600;

/// How many exits hold a recipient's opt-out: the one responsible for it
/// and the two a leak would move to if it left.
pub const OPT_OUT_HOLDERS: usize = 3;

/// The most opt-out records a holder checks from one exit in a UTC day
/// (new ones and those passed on when the holders change alike): each
/// must carry the recipient's own DKIM-signed email, and checking one costs
/// a DNS lookup, so this bounds the work one exit can cause.
pub const MAX_OPT_OUTS_PER_EXIT_PER_DAY: u32 = 500;

/// The key hint of `epoch`: the low byte of its number. A relay holds keys
/// for a few consecutive epochs at most, so the low byte tells them apart.
pub fn epoch_key_hint(epoch: u64) -> u8 {
    epoch.to_le_bytes()[0]
}

/// A relay's layer in the stratified topology (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layer {
    /// Clients' guards: they receive senders' packets and keep mailboxes.
    Entry,
    /// Relays between the guard and the exit, and on the way back.
    Mix,
}

/// The layer of the relay whose node id is `node`: one bit of a keyed
/// BLAKE3 hash of the id, so the layers split the federation evenly and a
/// node cannot pick its layer without grinding identity keys.
pub fn layer(node: &NodeId) -> Layer {
    let digest = blake3::Hasher::new_derive_key("leak federation layer v1")
        .update(&node.0)
        .finalize();
    if digest.as_bytes()[0] & 1 == 0 {
        Layer::Entry
    } else {
        Layer::Mix
    }
}

/// Where `exit` ranks for the recipient whose policy hash is `recipient`
/// (higher first; [`responsible_exit`](crate::directory::responsible_exit) breaks a tie, which takes a BLAKE3
/// collision, by the id).
pub fn exit_rank(recipient: &[u8; 32], exit: &NodeId) -> [u8; 32] {
    *blake3::Hasher::new_derive_key("leak federation responsible exit v1")
        .update(recipient)
        .update(&exit.0)
        .finalize()
        .as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_ranks_spread_recipients_evenly_and_move_only_a_leaving_exits() {
        let exits: Vec<NodeId> = (0..5u8).map(|i| NodeId([i; 32])).collect();
        let recipients: Vec<[u8; 32]> = (0..5000u32)
            .map(|i| *blake3::hash(&i.to_le_bytes()).as_bytes())
            .collect();
        let first =
            |set: &[NodeId], r: &[u8; 32]| *set.iter().max_by_key(|e| exit_rank(r, e)).unwrap();
        let mut share = std::collections::HashMap::new();
        for r in &recipients {
            *share.entry(first(&exits, r)).or_insert(0) += 1;
        }
        // Binomial(5000, 1/5): 1000 ± 28 (one standard deviation).
        assert!(
            share.values().all(|&n| (850..=1150).contains(&n)),
            "{share:?}"
        );
        // Without exit 2, only its recipients move.
        let fewer: Vec<NodeId> = exits.iter().copied().filter(|e| e.0[0] != 2).collect();
        for r in &recipients {
            let before = first(&exits, r);
            if before.0[0] != 2 {
                assert_eq!(first(&fewer, r), before);
            }
        }
    }

    #[test]
    fn layers_split_the_federation_evenly_and_stay_put() {
        let ids: Vec<NodeId> = (0..2000u32)
            .map(|i| {
                let mut id = [0u8; 32];
                id[..4].copy_from_slice(&i.to_le_bytes());
                NodeId(id)
            })
            .collect();
        let entries = ids.iter().filter(|id| layer(id) == Layer::Entry).count();
        // Binomial(2000, 1/2): 1000 ± 22 (one standard deviation).
        assert!((900..=1100).contains(&entries), "{entries} entries of 2000");
        assert!(ids.iter().all(|id| layer(id) == layer(id)));
        // Not a bit of the id itself: ids that differ only in their last
        // byte land in both layers.
        let mut a = [7u8; 32];
        let layers: std::collections::HashSet<Layer> = (0..=255u8)
            .map(|b| {
                a[31] = b;
                layer(&NodeId(a))
            })
            .collect();
        assert_eq!(layers.len(), 2);
    }

    #[test]
    fn the_key_hint_is_the_epochs_low_byte() {
        assert_eq!(epoch_key_hint(100), 100);
        assert_eq!(epoch_key_hint(256), 0);
        assert_eq!(epoch_key_hint(0x1_2345), 0x45);
        // Neighbouring epochs, which a relay may hold at once, differ.
        assert!((0..1000u64).all(|e| epoch_key_hint(e) != epoch_key_hint(e + 1)));
    }
}
