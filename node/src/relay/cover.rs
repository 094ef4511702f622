//! A relay's own cover: loops (Loopix "mix loops", Piotrowska et al. 2017).
//!
//! Every node, exits included, sends packets of its own on a Poisson
//! process: each is a [loop](leak_protocol::cover::build_loop) along
//! `[r_a, r_b, self]`, two other relays then back to a mailbox on this node
//! whose id is fresh and random per loop. The loop does two things:
//!
//! - **it mixes**: a quiet relay still emits and receives packets, so an
//!   observer of its links cannot tell when a client's packet passed;
//! - **it measures**: a loop that does not come back was dropped or delayed
//!   by a hop or a link. An (n−1) attacker, who holds back every packet
//!   but one to follow it, holds back this relay's loops too, and the
//!   return ratio falls.
//!
//! | step | who | time |
//! |---|---|---|
//! | a loop is due | [`RelayLoops::take_due`] (exponential gaps, mean `interval_ms`) | injected `now_ms` |
//! | choose its path | [`choose_loop_path`] from this node's directory view | key of the epoch each hop is reached in |
//! | build it, remember it | [`RelayLoops::build`]: the mailbox id and the keys go into a bounded pending table | deadline: the delays, a release-grid step a hop, + `grace_ms` |
//! | it comes back | [`RelayLoops::on_deposit`]: the deposit's mailbox id is pending and the reply opens with that loop's keys | counted returned |
//! | it does not | [`RelayLoops::expire`] | counted lost |
//!
//! Nothing here reads a clock, a socket or a random source of its own: the
//! running node (`node::cover`) and the virtual-time harness of `leak-tests`
//! drive the same state machine, with time in Unix milliseconds and the
//! randomness passed in.
//!
//! A returned loop is recognised by its mailbox id, which only this node
//! and the loop's last hop (this node) ever see in the clear: no one else
//! can make a deposit look like a returned loop, and a forged one does not
//! open with the loop's keys. A deposit for an id that is not pending is an
//! ordinary reply, handled by the mailbox store as any other.

use std::collections::{BTreeSet, HashMap};

use leak_protocol::{
    Delay, NodeId, Packet, PathHop,
    cover::build_loop,
    directory::Descriptor,
    federation::epoch_key_hint,
    sphinx::{BuildError, MailboxId},
};
use rand::CryptoRng;

/// How a node's loops are sent and awaited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopConfig {
    /// Mean gap between two loops, in milliseconds (exponential gaps: a
    /// Poisson process). 0 sends none.
    pub interval_ms: u64,
    /// Mean per-hop delay of a loop, in milliseconds (each hop's delay is
    /// drawn from the exponential distribution with this mean, capped by
    /// [`LoopConfig::max_hop_delay_ms`]).
    pub mean_delay_ms: u32,
    /// The longest per-hop delay drawn (what relays accept).
    pub max_hop_delay_ms: u32,
    /// How long past the sum of its delays a loop is still awaited before
    /// it counts as lost, in milliseconds: covers the links' latency and
    /// the relays' queues.
    pub grace_ms: u64,
    /// Most loops awaited at once. When full, the oldest is counted lost
    /// to make room: a flood of loops cannot grow the table, and a
    /// schedule that outruns returns shows up as losses.
    pub max_pending: usize,
}

/// What became of the loops sent so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoopCounters {
    /// Loops built and handed to the network.
    pub sent: u64,
    /// Loops that came back and opened with their keys.
    pub returned: u64,
    /// Loops that did not come back in time (or were pushed out of a full
    /// pending table).
    pub lost: u64,
}

impl LoopCounters {
    /// Returned over settled (returned + lost) loops; `None` before any
    /// loop has settled. Loops still in flight do not count.
    pub fn return_ratio(&self) -> Option<f64> {
        let settled = self.returned + self.lost;
        (settled > 0).then(|| self.returned as f64 / settled as f64)
    }

    /// Whether these counts (a window's) show too few loops coming back:
    /// at least `min_settled` settled, and fewer than `min_ratio` of them
    /// returned. Fewer settled loops say nothing either way.
    pub fn too_few_returned(&self, min_ratio: f64, min_settled: u64) -> bool {
        self.returned + self.lost >= min_settled.max(1)
            && self.return_ratio().is_some_and(|ratio| ratio < min_ratio)
    }

    /// The counts since `earlier` (a snapshot of the same counters): the
    /// loops of one window.
    pub fn since(&self, earlier: &LoopCounters) -> LoopCounters {
        LoopCounters {
            sent: self.sent.saturating_sub(earlier.sent),
            returned: self.returned.saturating_sub(earlier.returned),
            lost: self.lost.saturating_sub(earlier.lost),
        }
    }
}

/// A loop that came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopReturn {
    /// When it was sent (Unix ms).
    pub sent_at_ms: u64,
    /// From sent to back, in milliseconds.
    pub round_trip_ms: u64,
}

/// A loop to send: hand `packet` to `first_hop` over the ordinary links.
#[derive(Debug)]
pub struct LoopPacket {
    /// The loop's first hop.
    pub first_hop: NodeId,
    /// The packet.
    pub packet: Packet,
}

struct Pending {
    keys: leak_protocol::ReplyKeys,
    sent_at_ms: u64,
    deadline_ms: u64,
}

/// A node's loops: when the next is due, which are awaited, what became of
/// them. Pure: see the [module documentation](self).
pub struct RelayLoops {
    config: LoopConfig,
    next_at_ms: Option<u64>,
    pending: HashMap<MailboxId, Pending>,
    /// (deadline, sent at, mailbox) of every pending loop: the expiry order,
    /// and the oldest loop to push out when the table is full.
    by_deadline: BTreeSet<(u64, u64, [u8; 32])>,
    counters: LoopCounters,
}

impl core::fmt::Debug for RelayLoops {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RelayLoops")
            .field("config", &self.config)
            .field("next_at_ms", &self.next_at_ms)
            .field("pending", &self.pending.len())
            .field("counters", &self.counters)
            .finish()
    }
}

/// An exponential gap with mean `mean_ms`, at least 1 ms (so a schedule
/// always moves forward).
fn exponential_ms<R: CryptoRng + ?Sized>(mean_ms: u64, rng: &mut R) -> u64 {
    let mean = u32::try_from(mean_ms).unwrap_or(u32::MAX);
    u64::from(Delay::sample_exponential(mean, rng).as_millis()).max(1)
}

impl RelayLoops {
    /// A node's loops at `now_ms`: the first is due after one exponential
    /// gap (none when `config.interval_ms` is 0).
    pub fn new<R: CryptoRng + ?Sized>(config: LoopConfig, now_ms: u64, rng: &mut R) -> Self {
        let next_at_ms =
            (config.interval_ms > 0).then(|| now_ms + exponential_ms(config.interval_ms, rng));
        Self {
            config,
            next_at_ms,
            pending: HashMap::new(),
            by_deadline: BTreeSet::new(),
            counters: LoopCounters::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LoopConfig {
        &self.config
    }

    /// When the next loop is due (Unix ms); `None` when loops are off.
    pub fn next_due_ms(&self) -> Option<u64> {
        self.next_at_ms
    }

    /// Whether a loop is due at `now_ms`; if so, schedules the next one an
    /// exponential gap after this one (or after `now_ms`, if the caller
    /// fell behind by more than a gap: a late timer never sends a burst).
    /// Call until it returns `false`; build one loop per `true`.
    pub fn take_due<R: CryptoRng + ?Sized>(&mut self, now_ms: u64, rng: &mut R) -> bool {
        match self.next_at_ms {
            Some(due) if due <= now_ms => {
                let next = due + exponential_ms(self.config.interval_ms, rng);
                self.next_at_ms = Some(if next <= now_ms {
                    now_ms + exponential_ms(self.config.interval_ms, rng)
                } else {
                    next
                });
                true
            }
            _ => false,
        }
    }

    /// Builds a loop along `path` (its last hop is this node, see
    /// [`choose_loop_path`]) to a fresh random mailbox id, and awaits it
    /// until its longest transit ([`loop_transit_ms`]) plus the grace has
    /// passed.
    pub fn build<R: CryptoRng + ?Sized>(
        &mut self,
        now_ms: u64,
        path: &[PathHop],
        rng: &mut R,
    ) -> Result<LoopPacket, BuildError> {
        let mut id = [0u8; 32];
        rng.fill_bytes(&mut id);
        let mailbox = MailboxId(id);
        let built = build_loop(path, mailbox, rng)?;
        let deadline_ms = now_ms
            .saturating_add(loop_transit_ms(path))
            .saturating_add(self.config.grace_ms);
        while self.pending.len() >= self.config.max_pending.max(1) {
            let Some(oldest) = self.by_deadline.pop_first() else {
                break;
            };
            self.pending.remove(&MailboxId(oldest.2));
            self.counters.lost += 1;
        }
        self.by_deadline.insert((deadline_ms, now_ms, id));
        self.pending.insert(
            mailbox,
            Pending {
                keys: built.keys,
                sent_at_ms: now_ms,
                deadline_ms,
            },
        );
        self.counters.sent += 1;
        Ok(LoopPacket {
            first_hop: built.first_hop,
            packet: built.packet,
        })
    }

    /// Whether `mailbox` is the id of a loop still awaited (a deposit for
    /// it is this node's, never a client's).
    pub fn is_pending(&self, mailbox: &MailboxId) -> bool {
        self.pending.contains_key(mailbox)
    }

    /// A reply deposited at this node for `mailbox` at `now_ms`: the loop
    /// it returns, if `mailbox` is a pending loop's and `reply` opens with
    /// its keys as cover. A reply that does not open leaves the loop
    /// pending (whoever forged it cannot stop the real one counting).
    pub fn on_deposit(
        &mut self,
        mailbox: &MailboxId,
        reply: &[u8],
        now_ms: u64,
    ) -> Option<LoopReturn> {
        let pending = self.pending.get(mailbox)?;
        let opened = pending.keys.open(reply).ok()?;
        if !leak_protocol::cover::is_cover(&opened) {
            return None;
        }
        let pending = self.pending.remove(mailbox)?;
        self.by_deadline
            .remove(&(pending.deadline_ms, pending.sent_at_ms, mailbox.0));
        self.counters.returned += 1;
        Some(LoopReturn {
            sent_at_ms: pending.sent_at_ms,
            round_trip_ms: now_ms.saturating_sub(pending.sent_at_ms),
        })
    }

    /// Counts as lost every loop whose deadline has passed at `now_ms`;
    /// returns how many.
    pub fn expire(&mut self, now_ms: u64) -> u64 {
        let mut lost = 0;
        while let Some(&first) = self.by_deadline.first() {
            if first.0 >= now_ms {
                break;
            }
            self.by_deadline.pop_first();
            self.pending.remove(&MailboxId(first.2));
            lost += 1;
        }
        self.counters.lost += lost;
        lost
    }

    /// When the next pending loop's deadline passes (Unix ms), if any.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.by_deadline.first().map(|d| d.0)
    }

    /// Loops sent, returned and lost so far.
    pub fn counters(&self) -> LoopCounters {
        self.counters
    }

    /// Loops awaited now.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

/// Why no loop path could be chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoopPathError {
    /// This node's own descriptor, or its key for the epoch the loop comes
    /// back in, is not in the directory yet.
    #[error("this node has no published key for the loop's return")]
    NoOwnKey,
    /// Fewer than two other relays have keys for the epochs they would be
    /// reached in.
    #[error("fewer than two other relays to loop through")]
    NotEnoughRelays,
}

/// Chooses a loop path `[r_a, r_b, me]` from `nodes` (this node's verified
/// directory, its own descriptor included: a slice, or
/// `Directory::descriptors()`) at `now_ms`: `r_a` and `r_b`
/// two distinct relays other than `me`, drawn uniformly among those with a
/// key for the epoch each is reached in (the send time plus the delays
/// before it), each hop's delay exponential with mean
/// `config.mean_delay_ms`, capped at `config.max_hop_delay_ms`; mix
/// relays ([`Descriptor::is_mix`]) when at least two have those keys.
///
/// Operator families are not avoided: a loop tests the links and hops it
/// crosses, and any relay is worth testing.
pub fn choose_loop_path<'a, I, R>(
    nodes: I,
    me: &NodeId,
    config: &LoopConfig,
    now_ms: u64,
    rng: &mut R,
) -> Result<Vec<PathHop>, LoopPathError>
where
    I: IntoIterator<Item = &'a Descriptor> + Clone,
    R: CryptoRng + ?Sized,
{
    let mut delays = [Delay(0); 3];
    for delay in &mut delays {
        *delay = if config.mean_delay_ms == 0 {
            Delay(0)
        } else {
            Delay(
                Delay::sample_exponential(config.mean_delay_ms, rng)
                    .as_millis()
                    .min(config.max_hop_delay_ms),
            )
        };
    }
    let mut at = now_ms;
    let mut arrivals = [0u64; 3];
    for (arrival, delay) in arrivals.iter_mut().zip(&delays) {
        *arrival = at;
        at += u64::from(delay.as_millis());
    }
    let own = nodes
        .clone()
        .into_iter()
        .find(|d| d.node == *me)
        .and_then(|d| hop(d, arrivals[2], delays[2]))
        .ok_or(LoopPathError::NoOwnKey)?;
    let candidates = |at_ms: u64, not: Option<NodeId>, layered: bool| -> Vec<&Descriptor> {
        nodes
            .clone()
            .into_iter()
            .filter(|d| d.roles.relay && d.node != *me && Some(d.node) != not)
            .filter(|d| !layered || d.is_mix())
            .filter(|d| d.mix_key(d.epoch_at(at_ms / 1000)).is_some())
            .collect()
    };
    // Mix relays, as clients' paths prefer them between guard and exit,
    // when there are two; any relays otherwise.
    let layered = candidates(arrivals[0], None, true).len() >= 2
        && candidates(arrivals[1], None, true).len() >= 2;
    let first =
        pick(&candidates(arrivals[0], None, layered), rng).ok_or(LoopPathError::NotEnoughRelays)?;
    let second = pick(&candidates(arrivals[1], Some(first.node), layered), rng)
        .ok_or(LoopPathError::NotEnoughRelays)?;
    let first = hop(first, arrivals[0], delays[0]).ok_or(LoopPathError::NotEnoughRelays)?;
    let second = hop(second, arrivals[1], delays[1]).ok_or(LoopPathError::NotEnoughRelays)?;
    Ok(vec![first, second, own])
}

/// The hop of `descriptor` for a packet reaching it at `at_ms`.
fn hop(descriptor: &Descriptor, at_ms: u64, delay: Delay) -> Option<PathHop> {
    let epoch = descriptor.epoch_at(at_ms / 1000);
    descriptor.mix_key(epoch).map(|key| PathHop {
        node: descriptor.node,
        key,
        key_hint: epoch_key_hint(epoch),
        delay,
    })
}

/// A uniformly chosen element of `from` (rejection sampling: no modulo bias).
fn pick<'a, R: CryptoRng + ?Sized>(from: &[&'a Descriptor], rng: &mut R) -> Option<&'a Descriptor> {
    let len = u64::try_from(from.len()).ok().filter(|&n| n > 0)?;
    let zone = u64::MAX - (u64::MAX % len);
    loop {
        let x = rng.next_u64();
        if x < zone {
            return from.get(usize::try_from(x % len).ok()?).copied();
        }
    }
}

/// The longest a loop along `path` takes on the way, grace aside: its
/// delays, and at each hop up to the release grid's coarsest step (a held
/// packet leaves at the grid's first line after it is due, see
/// [`crate::release`]).
pub fn loop_transit_ms(path: &[PathHop]) -> u64 {
    let delays: u64 = path.iter().map(|h| u64::from(h.delay.as_millis())).sum();
    let grid = (path.len() as u64).saturating_mul(crate::release::MAX_STEP_MS);
    delays.saturating_add(grid)
}

#[cfg(test)]
mod tests {
    use leak_protocol::{
        MixSecret, Processed,
        crypto::ed25519_public,
        directory::{EpochKey, Roles},
        process_packet,
        sphinx::FinalPayload,
    };
    use rand::{SeedableRng as _, rngs::StdRng};

    use super::*;

    const CONFIG: LoopConfig = LoopConfig {
        interval_ms: 5_000,
        mean_delay_ms: 1_000,
        max_hop_delay_ms: 600_000,
        grace_ms: 10_000,
        max_pending: 4,
    };

    /// A relay with a secret whose key is published for epochs 0..10
    /// (period one hour).
    struct Relay {
        descriptor: Descriptor,
        secret: MixSecret,
    }

    fn relay(n: u8, rng: &mut StdRng) -> Relay {
        let secret = MixSecret::generate(rng);
        let descriptor = Descriptor {
            node: NodeId(ed25519_public(&[n; 32])),
            addresses: vec!["/ip4/127.0.0.1/tcp/4700".into()],
            roles: Roles {
                relay: true,
                exit: false,
            },
            family: String::new(),
            exit: None,
            epoch_period_secs: 3600,
            mix_keys: (0..8)
                .map(|epoch| EpochKey {
                    epoch,
                    key: secret.public(),
                })
                .collect(),
            software: "test".into(),
            published_at: 0,
            traffic: None,
        };
        Relay { descriptor, secret }
    }

    /// Runs `packet` through whichever relay opens it at each hop (a
    /// wrong secret fails the header's MAC); returns the mailbox deposit
    /// it ends in.
    fn travel(relays: &[Relay], mut packet: Packet) -> (MailboxId, Vec<u8>) {
        loop {
            let processed = relays
                .iter()
                .map(|r| process_packet(packet.as_bytes(), &r.secret))
                .find(|p| !matches!(p, Processed::Drop(_)))
                .expect("some relay opens the packet");
            match processed {
                Processed::Forward(forward) => packet = forward.packet,
                Processed::Final(done) => match done.payload {
                    FinalPayload::Mailbox { mailbox, reply } => {
                        return (mailbox, reply.as_slice().to_vec());
                    }
                    FinalPayload::Exit { .. } => panic!("a loop ended at an exit"),
                },
                Processed::Drop(reason) => panic!("dropped: {reason:?}"),
            }
        }
    }

    fn federation(rng: &mut StdRng) -> Vec<Relay> {
        (1..=4).map(|n| relay(n, rng)).collect()
    }

    fn descriptors(relays: &[Relay]) -> Vec<Descriptor> {
        relays.iter().map(|r| r.descriptor.clone()).collect()
    }

    #[test]
    fn a_loop_goes_through_two_other_relays_and_comes_back() {
        let mut rng = StdRng::seed_from_u64(1);
        let relays = federation(&mut rng);
        let me = relays[0].descriptor.node;
        let mut loops = RelayLoops::new(CONFIG, 1_000, &mut rng);
        let path = choose_loop_path(&descriptors(&relays), &me, &CONFIG, 1_000, &mut rng).unwrap();
        assert_eq!(path.len(), 3);
        assert_ne!(path[0].node, me);
        assert_ne!(path[1].node, me);
        assert_ne!(path[0].node, path[1].node);
        assert_eq!(path[2].node, me);
        let sent = loops.build(1_000, &path, &mut rng).unwrap();
        assert_eq!(sent.first_hop, path[0].node);
        assert_eq!(loops.pending(), 1);
        let (mailbox, reply) = travel(&relays, sent.packet);
        assert!(loops.is_pending(&mailbox));
        let back = loops.on_deposit(&mailbox, &reply, 4_000).unwrap();
        assert_eq!(back.sent_at_ms, 1_000);
        assert_eq!(back.round_trip_ms, 3_000);
        assert_eq!(
            loops.counters(),
            LoopCounters {
                sent: 1,
                returned: 1,
                lost: 0
            }
        );
        assert_eq!(loops.counters().return_ratio(), Some(1.0));
        // Replayed, it is not counted twice.
        assert_eq!(loops.on_deposit(&mailbox, &reply, 4_001), None);
        assert_eq!(loops.pending(), 0);
        assert_eq!(loops.expire(u64::MAX), 0);
    }

    #[test]
    fn a_forged_deposit_neither_counts_nor_cancels_the_loop() {
        let mut rng = StdRng::seed_from_u64(2);
        let relays = federation(&mut rng);
        let me = relays[0].descriptor.node;
        let mut loops = RelayLoops::new(CONFIG, 0, &mut rng);
        let path = choose_loop_path(&descriptors(&relays), &me, &CONFIG, 0, &mut rng).unwrap();
        let sent = loops.build(0, &path, &mut rng).unwrap();
        let (mailbox, reply) = travel(&relays, sent.packet);
        let forged = vec![0u8; reply.len()];
        assert_eq!(loops.on_deposit(&mailbox, &forged, 10), None);
        assert_eq!(loops.on_deposit(&MailboxId([3; 32]), &reply, 10), None);
        assert_eq!(loops.counters().returned, 0);
        assert!(loops.on_deposit(&mailbox, &reply, 20).is_some());
    }

    #[test]
    fn loops_not_back_by_their_deadline_are_lost() {
        let mut rng = StdRng::seed_from_u64(3);
        let relays = federation(&mut rng);
        let me = relays[0].descriptor.node;
        let mut loops = RelayLoops::new(CONFIG, 0, &mut rng);
        let path = choose_loop_path(&descriptors(&relays), &me, &CONFIG, 0, &mut rng).unwrap();
        let total: u64 = path.iter().map(|h| u64::from(h.delay.as_millis())).sum();
        let sent = loops.build(0, &path, &mut rng).unwrap();
        let deadline = total + path.len() as u64 * crate::release::MAX_STEP_MS + CONFIG.grace_ms;
        assert_eq!(loops.next_deadline_ms(), Some(deadline));
        assert_eq!(loops.expire(deadline), 0, "not lost at its deadline");
        assert_eq!(loops.expire(deadline + 1), 1);
        assert_eq!(loops.counters().lost, 1);
        assert_eq!(loops.counters().return_ratio(), Some(0.0));
        // It is forgotten: coming back late it is not counted.
        let (mailbox, reply) = travel(&relays, sent.packet);
        assert_eq!(loops.on_deposit(&mailbox, &reply, deadline + 2), None);
        assert_eq!(loops.counters().returned, 0);
    }

    #[test]
    fn the_pending_table_is_bounded_and_pushes_out_the_oldest_as_lost() {
        let mut rng = StdRng::seed_from_u64(4);
        let relays = federation(&mut rng);
        let me = relays[0].descriptor.node;
        let mut loops = RelayLoops::new(CONFIG, 0, &mut rng);
        let mut sent = Vec::new();
        for i in 0..10u64 {
            let path = choose_loop_path(&descriptors(&relays), &me, &CONFIG, i, &mut rng).unwrap();
            sent.push(loops.build(i, &path, &mut rng).unwrap());
            assert!(loops.pending() <= CONFIG.max_pending);
        }
        assert_eq!(loops.pending(), CONFIG.max_pending);
        assert_eq!(
            loops.counters(),
            LoopCounters {
                sent: 10,
                returned: 0,
                lost: 6
            }
        );
        // The newest are still awaited.
        let newest = sent.pop().unwrap();
        let (mailbox, reply) = travel(&relays, newest.packet);
        assert!(loops.on_deposit(&mailbox, &reply, 100).is_some());
    }

    #[test]
    fn loops_are_due_on_a_poisson_schedule_of_the_configured_mean() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut loops = RelayLoops::new(CONFIG, 0, &mut rng);
        let first = loops.next_due_ms().unwrap();
        assert!(!loops.take_due(first - 1, &mut rng));
        assert!(loops.take_due(first, &mut rng));
        assert!(!loops.take_due(first, &mut rng), "one loop per due time");
        // Over a simulated day the mean gap is the configured one (±5 %).
        let mut now = first;
        let mut count = 0u64;
        let day = 86_400_000;
        while now < day {
            now = loops.next_due_ms().unwrap();
            assert!(loops.take_due(now, &mut rng));
            count += 1;
        }
        let mean_gap = (now - first) as f64 / count as f64;
        assert!(
            (mean_gap - 5_000.0).abs() < 250.0,
            "mean gap {mean_gap} ms over {count} loops"
        );
        // A timer that wakes hours late sends one loop, not a burst.
        let late = now + 3_600_000;
        assert!(loops.take_due(late, &mut rng));
        assert!(!loops.take_due(late, &mut rng));
        assert!(loops.next_due_ms().unwrap() > late);
    }

    #[test]
    fn no_loops_when_disabled() {
        let mut rng = StdRng::seed_from_u64(6);
        let mut loops = RelayLoops::new(
            LoopConfig {
                interval_ms: 0,
                ..CONFIG
            },
            0,
            &mut rng,
        );
        assert_eq!(loops.next_due_ms(), None);
        assert!(!loops.take_due(u64::MAX, &mut rng));
    }

    #[test]
    fn counters_of_a_window() {
        let before = LoopCounters {
            sent: 10,
            returned: 6,
            lost: 2,
        };
        let after = LoopCounters {
            sent: 20,
            returned: 9,
            lost: 8,
        };
        let window = after.since(&before);
        assert_eq!(
            window,
            LoopCounters {
                sent: 10,
                returned: 3,
                lost: 6
            }
        );
        assert_eq!(window.return_ratio(), Some(3.0 / 9.0));
        assert!(window.too_few_returned(0.8, 9));
        assert!(!window.too_few_returned(0.8, 10), "too few settled to say");
        assert!(!window.too_few_returned(0.3, 9));
        assert_eq!(LoopCounters::default().return_ratio(), None);
        assert!(!LoopCounters::default().too_few_returned(0.8, 0));
    }

    #[test]
    fn loops_cross_mix_relays_when_there_are_two() {
        let mut rng = StdRng::seed_from_u64(8);
        let relays: Vec<Relay> = (1..=16).map(|n| relay(n, &mut rng)).collect();
        let all = descriptors(&relays);
        let mixes: Vec<NodeId> = all.iter().filter(|d| d.is_mix()).map(|d| d.node).collect();
        assert!(
            mixes.len() >= 3 && mixes.len() < all.len(),
            "{} mixes",
            mixes.len()
        );
        for me in [all[0].node, all[1].node, all[2].node] {
            for _ in 0..30 {
                let path = choose_loop_path(&all, &me, &CONFIG, 0, &mut rng).unwrap();
                assert!(mixes.contains(&path[0].node) && mixes.contains(&path[1].node));
                assert_eq!(path[2].node, me);
            }
        }
    }

    #[test]
    fn a_path_needs_two_other_relays_with_keys_and_its_own_key() {
        let mut rng = StdRng::seed_from_u64(7);
        let relays = federation(&mut rng);
        let all = descriptors(&relays);
        let me = all[0].node;
        assert_eq!(
            choose_loop_path(&all[..2], &me, &CONFIG, 0, &mut rng),
            Err(LoopPathError::NotEnoughRelays)
        );
        assert_eq!(
            choose_loop_path(&all[1..], &me, &CONFIG, 0, &mut rng),
            Err(LoopPathError::NoOwnKey)
        );
        // Past the last published epoch (8 hours), nobody has a key.
        assert_eq!(
            choose_loop_path(&all, &me, &CONFIG, 9 * 3_600_000, &mut rng),
            Err(LoopPathError::NoOwnKey)
        );
        // An exit-only node is not a relay for loops.
        let mut exit_only = all.clone();
        for d in &mut exit_only[2..] {
            d.roles.relay = false;
        }
        assert_eq!(
            choose_loop_path(&exit_only, &me, &CONFIG, 0, &mut rng),
            Err(LoopPathError::NotEnoughRelays)
        );
        // With three other relays every pair occurs.
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let path = choose_loop_path(&all, &me, &CONFIG, 0, &mut rng).unwrap();
            seen.insert((path[0].node, path[1].node));
        }
        assert_eq!(seen.len(), 6);
    }
}
