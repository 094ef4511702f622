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

/// The key hint of `epoch`: the low byte of its number. A relay holds keys
/// for a few consecutive epochs at most, so the low byte tells them apart.
pub fn epoch_key_hint(epoch: u64) -> u8 {
    epoch.to_le_bytes()[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_hint_is_the_epochs_low_byte() {
        assert_eq!(epoch_key_hint(100), 100);
        assert_eq!(epoch_key_hint(256), 0);
        assert_eq!(epoch_key_hint(0x1_2345), 0x45);
        // Neighbouring epochs, which a relay may hold at once, differ.
        assert!((0..1000u64).all(|e| epoch_key_hint(e) != epoch_key_hint(e + 1)));
    }
}
