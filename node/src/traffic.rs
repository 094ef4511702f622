//! The traffic counts a node publishes: packets received per epoch, from
//! clients and from nodes, in aggregate.
//!
//! A sender's agent estimates how many others it hides among from what it
//! can see; the federation's traffic is part of that, so every node states
//! in its descriptor how many packets it received in its last complete
//! epoch ([`EpochTraffic`]). Two numbers per epoch and node: no peer, no
//! time within the epoch, nothing that tells one sender from another. A
//! packet counts as from a node when its sender is a node of this node's
//! directory, otherwise as from a client.
//!
//! Only a complete epoch is published: a count of the current one would
//! change with every packet, and republished often, the differences would
//! say when packets arrived.

use leak_protocol::directory::EpochTraffic;

/// Who sent a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A peer outside the directory: a sender's client or agent.
    Client,
    /// A node of the directory.
    Node,
}

/// Packets counted in the current epoch, and the last complete epoch's
/// totals. Pure: the caller passes the epoch of each packet.
#[derive(Debug, Clone, Default)]
pub struct TrafficCounter {
    current: Option<EpochTraffic>,
    last: Option<EpochTraffic>,
}

impl TrafficCounter {
    /// Counts one packet from `source` received in `epoch`. A packet of an
    /// earlier epoch than the one being counted (a clock stepped back) is
    /// counted in the current one.
    pub fn record(&mut self, epoch: u64, source: Source) {
        self.roll(epoch);
        let current = self.current.get_or_insert(EpochTraffic {
            epoch,
            from_clients: 0,
            from_nodes: 0,
        });
        match source {
            Source::Client => current.from_clients = current.from_clients.saturating_add(1),
            Source::Node => current.from_nodes = current.from_nodes.saturating_add(1),
        }
    }

    /// The totals of the epoch just before `epoch` (the current one), if
    /// this node ran through it; an epoch with no packet counts as zeros.
    pub fn last_complete(&mut self, epoch: u64) -> Option<EpochTraffic> {
        self.roll(epoch);
        self.last.filter(|t| t.epoch + 1 == epoch)
    }

    /// Moves to `epoch`: the counts of an earlier epoch become the last
    /// complete ones (and a quiet epoch in between, zeros).
    fn roll(&mut self, epoch: u64) {
        let Some(current) = self.current else {
            return;
        };
        if epoch <= current.epoch {
            return;
        }
        self.last = Some(if current.epoch + 1 == epoch {
            current
        } else {
            EpochTraffic {
                epoch: epoch - 1,
                from_clients: 0,
                from_nodes: 0,
            }
        });
        self.current = Some(EpochTraffic {
            epoch,
            from_clients: 0,
            from_nodes: 0,
        });
    }

    /// Starts counting at `epoch` (a node that starts mid-epoch publishes
    /// nothing for it: its count would be partial).
    pub fn start(epoch: u64) -> Self {
        Self {
            current: Some(EpochTraffic {
                epoch,
                from_clients: 0,
                from_nodes: 0,
            }),
            last: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishes_the_last_complete_epoch_only() {
        let mut counter = TrafficCounter::start(10);
        counter.record(10, Source::Client);
        counter.record(10, Source::Node);
        counter.record(10, Source::Node);
        assert_eq!(counter.last_complete(10), None, "epoch 10 is not over");
        counter.record(11, Source::Client);
        assert_eq!(
            counter.last_complete(11),
            Some(EpochTraffic {
                epoch: 10,
                from_clients: 1,
                from_nodes: 2
            })
        );
        // Epoch 11 had one packet; 12 none at all; at 13, 12's zeros.
        assert_eq!(
            counter.last_complete(12),
            Some(EpochTraffic {
                epoch: 11,
                from_clients: 1,
                from_nodes: 0
            })
        );
        assert_eq!(
            counter.last_complete(13),
            Some(EpochTraffic {
                epoch: 12,
                from_clients: 0,
                from_nodes: 0
            })
        );
        // Quiet for a long while: the epoch before the current one, zeros.
        assert_eq!(
            counter.last_complete(20),
            Some(EpochTraffic {
                epoch: 19,
                from_clients: 0,
                from_nodes: 0
            })
        );
    }

    #[test]
    fn a_node_started_mid_epoch_publishes_nothing_for_it() {
        let mut counter = TrafficCounter::start(5);
        counter.record(5, Source::Client);
        assert_eq!(counter.last_complete(5), None);
        assert!(counter.last_complete(6).is_some());
        assert_eq!(TrafficCounter::default().last_complete(6), None);
    }

    #[test]
    fn a_clock_stepped_back_counts_in_the_current_epoch() {
        let mut counter = TrafficCounter::start(7);
        counter.record(6, Source::Node);
        counter.record(7, Source::Node);
        assert_eq!(counter.last_complete(8).map(|t| t.from_nodes), Some(2));
    }
}
