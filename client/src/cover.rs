//! The agent's cover schedule: when it emits a packet, what the packet
//! carries, when it polls its mailbox, and the delays each kind of packet
//! asks of its hops.
//!
//! An observer of the sender's machine (its employer's network, its ISP, its
//! guard relay) sees packets leave and mailbox answers come back. Neither may
//! depend on whether the sender has something to say, so both run on clocks
//! of their own (Loopix, Piotrowska et al. 2017):
//!
//! - **Send slots** follow a Poisson process of mean interval
//!   [`CoverConfig::send_interval_ms`]. A slot is a *loop* with probability
//!   [`CoverConfig::loop_share`] and otherwise a *drop* (see
//!   [`leak_protocol::cover`]). A real packet (a leak, or its retransmission)
//!   waiting for release takes the next loop slot: its receipt then comes back
//!   to the mailbox in place of that loop, so neither the packets the machine
//!   emits nor the deposits its guard sees change in number or timing.
//! - **Polls** follow their own Poisson process of mean
//!   [`CoverConfig::poll_interval_ms`]; every answer has the same size. The
//!   agent never polls because a receipt could be due.
//!
//! The shapes of the paths are fixed so that every relay sees the same link
//! pattern for every kind of packet:
//!
//! | packet | path | delays |
//! |---|---|---|
//! | leak, drop | guard → middle → exit | Exp(μ) each ([`forward_delays`]) |
//! | receipt | exit holds Exp(μ), then r1 → r2 → guard (mailbox) | Exp(μ) each ([`reply_delays`]) |
//! | loop (an echo) | guard → middle → exit, which holds Exp(μ), then r1 → r2 → guard (mailbox) | as a leak's and its receipt's |
//!
//! A loop is an echo ([`leak_protocol::cover::build_echo`]): the way out of
//! a leak to a random exit carrying a reply block the way back of a receipt.
//! The exit answers it with cover after the hold it gives receipts, so a loop
//! crosses the same hops, links and holds as a leak and its receipt, the
//! exit's included.
//!
//! Everything here is pure: times are Unix milliseconds passed in, and the
//! randomness is the caller's.

use leak_protocol::{Delay, federation::MAX_HOP_DELAY_MS};
use rand::{CryptoRng, RngExt as _};

/// The cover settings of an agent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CoverConfig {
    /// Mean interval between send slots, milliseconds.
    pub send_interval_ms: u64,
    /// The share of send slots that are loops (the rest are drops), in
    /// (0, 1]. Real packets take loop slots.
    pub loop_share: f64,
    /// Mean interval between mailbox polls, milliseconds.
    pub poll_interval_ms: u64,
}

impl Default for CoverConfig {
    /// The shipped defaults (chosen from `scripts/anonymity.sh`; the README's
    /// privacy section shows what they cost and buy).
    fn default() -> Self {
        Self {
            send_interval_ms: DEFAULT_SEND_INTERVAL_MS,
            loop_share: DEFAULT_LOOP_SHARE,
            poll_interval_ms: DEFAULT_POLL_INTERVAL_MS,
        }
    }
}

/// Default mean interval between send slots.
pub const DEFAULT_SEND_INTERVAL_MS: u64 = 9_000;
/// Default share of loop slots.
pub const DEFAULT_LOOP_SHARE: f64 = 0.3;
/// Default mean interval between mailbox polls.
pub const DEFAULT_POLL_INTERVAL_MS: u64 = 20_000;

/// What a send slot carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// A drop: cover to an exit, discarded there.
    Drop,
    /// A loop: cover that comes back to the agent's mailbox.
    Loop,
    /// The real packet that was waiting, in place of a loop.
    Real,
}

/// The agent's two clocks: send slots and polls.
#[derive(Debug, Clone)]
pub struct Schedule {
    config: CoverConfig,
    next_send_ms: u64,
    next_poll_ms: u64,
}

impl Schedule {
    /// Starts both clocks at `now_ms`.
    pub fn new<R: CryptoRng + ?Sized>(config: CoverConfig, now_ms: u64, rng: &mut R) -> Self {
        Self {
            config,
            next_send_ms: now_ms.saturating_add(exponential_ms(config.send_interval_ms, rng)),
            next_poll_ms: now_ms.saturating_add(exponential_ms(config.poll_interval_ms, rng)),
        }
    }

    /// The settings.
    pub fn config(&self) -> &CoverConfig {
        &self.config
    }

    /// When the next send slot is.
    pub fn next_send_ms(&self) -> u64 {
        self.next_send_ms
    }

    /// When the next poll is.
    pub fn next_poll_ms(&self) -> u64 {
        self.next_poll_ms
    }

    /// When the caller must next wake up.
    pub fn next_event_ms(&self) -> u64 {
        self.next_send_ms.min(self.next_poll_ms)
    }

    /// At or after the send slot's time, what it carries, and the next slot
    /// is scheduled; `None` before it. `real_waiting` says whether a real
    /// packet is released and waiting.
    pub fn take_send_slot<R: CryptoRng + ?Sized>(
        &mut self,
        now_ms: u64,
        real_waiting: bool,
        rng: &mut R,
    ) -> Option<Slot> {
        if now_ms < self.next_send_ms {
            return None;
        }
        let is_loop = rng.random::<f64>() < self.config.loop_share;
        self.next_send_ms = advance(self.next_send_ms, now_ms, self.config.send_interval_ms, rng);
        Some(match (is_loop, real_waiting) {
            (true, true) => Slot::Real,
            (true, false) => Slot::Loop,
            (false, _) => Slot::Drop,
        })
    }

    /// At or after the poll's time, `true`, and the next poll is scheduled.
    pub fn take_poll<R: CryptoRng + ?Sized>(&mut self, now_ms: u64, rng: &mut R) -> bool {
        if now_ms < self.next_poll_ms {
            return false;
        }
        self.next_poll_ms = advance(self.next_poll_ms, now_ms, self.config.poll_interval_ms, rng);
        true
    }
}

/// The next event of a Poisson clock that was due at `due_ms`, seen at
/// `now_ms`. Counted from the due time, so a slightly late caller keeps the
/// process Poisson; counted from now when the caller was away longer than a
/// few intervals (a suspended laptop), so waking up never bursts the slots
/// it missed.
fn advance<R: CryptoRng + ?Sized>(due_ms: u64, now_ms: u64, mean_ms: u64, rng: &mut R) -> u64 {
    let base = if now_ms.saturating_sub(due_ms) > mean_ms.saturating_mul(4) {
        now_ms
    } else {
        due_ms
    };
    let next = base.saturating_add(exponential_ms(mean_ms, rng));
    next.max(now_ms.saturating_add(1))
}

/// A draw from the exponential distribution of mean `mean_ms`, in
/// milliseconds (0 when the mean is 0).
pub fn exponential_ms<R: CryptoRng + ?Sized>(mean_ms: u64, rng: &mut R) -> u64 {
    if mean_ms == 0 {
        return 0;
    }
    // A uniform draw in (0, 1]: never 0, so the logarithm is finite.
    let uniform = 1.0 - rng.random::<f64>();
    let millis = -uniform.ln() * mean_ms as f64;
    // `as` saturates for floats, which is the behaviour wanted here.
    millis.round() as u64
}

/// One hop's delay: Exp(`mean_ms`), capped at what relays accept.
fn hop_delay<R: CryptoRng + ?Sized>(mean_ms: u32, rng: &mut R) -> Delay {
    let drawn = exponential_ms(u64::from(mean_ms), rng);
    Delay(
        u32::try_from(drawn)
            .unwrap_or(u32::MAX)
            .min(MAX_HOP_DELAY_MS),
    )
}

/// The delays of a forward path of `hops` hops (a leak's or a drop's).
pub fn forward_delays<R: CryptoRng + ?Sized>(mean_ms: u32, hops: usize, rng: &mut R) -> Vec<Delay> {
    (0..hops).map(|_| hop_delay(mean_ms, rng)).collect()
}

/// The delays of a receipt's reply path of `hops` hops (relays, then the
/// guard that keeps the mailbox).
pub fn reply_delays<R: CryptoRng + ?Sized>(mean_ms: u32, hops: usize, rng: &mut R) -> Vec<Delay> {
    forward_delays(mean_ms, hops, rng)
}

/// When a leak handed over at `now_ms` with "send within `within_ms`" is
/// released: uniform in `[now_ms, now_ms + within_ms]`, so the time the
/// person acted and the time the network sees are unrelated.
pub fn release_time<R: CryptoRng + ?Sized>(now_ms: u64, within_ms: u64, rng: &mut R) -> u64 {
    if within_ms == 0 {
        return now_ms;
    }
    now_ms.saturating_add(rng.random_range(0..=within_ms))
}

#[cfg(test)]
mod tests {
    use rand::{SeedableRng, rngs::StdRng};

    use super::*;

    fn schedule(rng: &mut StdRng) -> Schedule {
        Schedule::new(CoverConfig::default(), 1_000_000, rng)
    }

    /// Drives the send clock for `hours` of virtual time, every slot taken on
    /// time; returns the slots.
    fn slots(rng: &mut StdRng, hours: u64, real_waiting: bool) -> Vec<(u64, Slot)> {
        let mut s = schedule(rng);
        let end = 1_000_000 + hours * 3_600_000;
        let mut out = Vec::new();
        while s.next_send_ms() < end {
            let at = s.next_send_ms();
            let slot = s.take_send_slot(at, real_waiting, rng).expect("due");
            out.push((at, slot));
        }
        out
    }

    #[test]
    fn slots_come_at_the_configured_mean_rate() {
        let mut rng = StdRng::seed_from_u64(1);
        let taken = slots(&mut rng, 24, false);
        // 24 h at one slot per 9 s on average: 9,600 slots, sd about 98.
        assert!((9_300..9_900).contains(&taken.len()), "{}", taken.len());
        let loops = taken.iter().filter(|(_, s)| *s == Slot::Loop).count();
        let share = loops as f64 / taken.len() as f64;
        assert!((0.27..0.33).contains(&share), "{share}");
        assert!(taken.iter().all(|(_, s)| *s != Slot::Real));
    }

    #[test]
    fn a_real_packet_takes_loop_slots_only_and_changes_no_timing() {
        // The same seed with and without a real packet waiting: the slot
        // times are identical, and real packets appear exactly where loops
        // would have been.
        let without = slots(&mut StdRng::seed_from_u64(7), 2, false);
        let with = slots(&mut StdRng::seed_from_u64(7), 2, true);
        assert_eq!(without.len(), with.len());
        for ((t0, s0), (t1, s1)) in without.iter().zip(&with) {
            assert_eq!(t0, t1);
            match s0 {
                Slot::Loop => assert_eq!(*s1, Slot::Real),
                Slot::Drop => assert_eq!(*s1, Slot::Drop),
                Slot::Real => panic!("no real packet was waiting"),
            }
        }
    }

    #[test]
    fn nothing_is_due_before_its_time() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut s = schedule(&mut rng);
        let send = s.next_send_ms();
        let poll = s.next_poll_ms();
        assert_eq!(s.next_event_ms(), send.min(poll));
        assert_eq!(s.take_send_slot(send - 1, true, &mut rng), None);
        assert!(!s.take_poll(poll - 1, &mut rng));
        assert!(s.take_poll(poll, &mut rng));
        assert!(s.next_poll_ms() > poll);
    }

    #[test]
    fn waking_after_a_long_sleep_does_not_burst() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut s = schedule(&mut rng);
        // Asleep for a day: one slot is taken on waking, the next is in the
        // future, not the day's missed slots one after another.
        let wake = s.next_send_ms() + 86_400_000;
        assert!(s.take_send_slot(wake, false, &mut rng).is_some());
        assert!(s.next_send_ms() > wake);
        assert_eq!(s.take_send_slot(wake, false, &mut rng), None);
    }

    #[test]
    fn polls_come_at_their_own_rate() {
        let mut rng = StdRng::seed_from_u64(4);
        let mut s = schedule(&mut rng);
        let end = 1_000_000 + 24 * 3_600_000;
        let mut polls = 0;
        while s.next_poll_ms() < end {
            let at = s.next_poll_ms();
            assert!(s.take_poll(at, &mut rng));
            polls += 1;
        }
        // 24 h at one poll per 20 s: 4,320, sd about 66.
        assert!((4_100..4_550).contains(&polls), "{polls}");
    }

    #[test]
    fn delays_never_exceed_what_relays_accept() {
        let mut rng = StdRng::seed_from_u64(6);
        for _ in 0..1000 {
            for d in forward_delays(500_000, 3, &mut rng) {
                assert!(d.as_millis() <= MAX_HOP_DELAY_MS);
            }
        }
    }

    #[test]
    fn a_release_time_falls_in_its_window() {
        let mut rng = StdRng::seed_from_u64(8);
        assert_eq!(release_time(5, 0, &mut rng), 5);
        let times: Vec<u64> = (0..1000)
            .map(|_| release_time(1_000, 7_200_000, &mut rng))
            .collect();
        assert!(times.iter().all(|t| (1_000..=7_201_000).contains(t)));
        // Spread over the window, not bunched at one end.
        assert!(times.iter().any(|t| *t < 1_000 + 1_800_000));
        assert!(times.iter().any(|t| *t > 1_000 + 5_400_000));
    }
}
