//! When queued leaks are tried, and how fast: pure, with time passed in.
//!
//! [`Schedule`] holds each queued leak's next attempt time (set by
//! [`super::retry::RetryPolicy`] after a failure, by the client's delay
//! when a leak is accepted, or by the operator's `queue retry`) and which
//! leaks are being sent. [`Pace`] is the sending rate: a token bucket that
//! halves on a deferral (421, 4.7.x) and recovers slowly. Both take
//! `now_ms` (Unix ms, from the exit's injected clock), never read a clock,
//! and need no runtime: the virtual-time harness drives them by hand.
//! [`receipt_delay_ms`] is how long a receipt is held before it leaves.

use std::collections::{BTreeSet, HashMap, HashSet};

use leak_protocol::{Delay, MessageId};

use super::provider::Provider;

/// A receipt's extra hold: exponential with mean `mean_ms` (0: none),
/// capped at the longest hop delay (a receipt held longer than a relay
/// would hold a packet stands out as much as one sent at once).
pub fn receipt_delay_ms<R: rand::CryptoRng + ?Sized>(mean_ms: u64, rng: &mut R) -> u64 {
    if mean_ms == 0 {
        return 0;
    }
    let mean = u32::try_from(mean_ms).unwrap_or(u32::MAX);
    u64::from(
        Delay::sample_exponential(mean, rng)
            .as_millis()
            .min(leak_protocol::federation::MAX_HOP_DELAY_MS),
    )
}

/// Leaks due for delivery, and those being delivered, with the provider
/// each goes to (a paused provider's leaks wait; see
/// [`super::provider::Health`]).
#[derive(Debug, Default)]
pub struct Schedule {
    due: BTreeSet<(u64, MessageId)>,
    /// When each leak in `due` is due (to find its entry there).
    at: HashMap<MessageId, u64>,
    in_flight: HashSet<MessageId>,
    /// Each scheduled or in-flight leak's provider (`Other` when unknown).
    provider: HashMap<MessageId, Provider>,
}

impl Schedule {
    /// Schedules `id` at `at_ms`, replacing any earlier time for it; its
    /// provider stays what it was.
    pub fn insert(&mut self, at_ms: u64, id: MessageId) {
        self.unschedule(&id);
        self.at.insert(id, at_ms);
        self.due.insert((at_ms, id));
    }

    /// Schedules `id`, going to `provider`, at `at_ms`.
    pub fn insert_to(&mut self, at_ms: u64, id: MessageId, provider: Provider) {
        self.provider.insert(id, provider);
        self.insert(at_ms, id);
    }

    /// Sets the provider `id` goes to (its MX hosts told better than its
    /// domain), if it is known here.
    pub fn set_provider(&mut self, id: &MessageId, provider: Provider) {
        if let Some(known) = self.provider.get_mut(id) {
            *known = provider;
        }
    }

    /// The provider `id` goes to.
    pub fn provider(&self, id: &MessageId) -> Provider {
        self.provider.get(id).copied().unwrap_or(Provider::Other)
    }

    fn unschedule(&mut self, id: &MessageId) {
        if let Some(at) = self.at.remove(id) {
            self.due.remove(&(at, *id));
        }
    }

    /// Forgets `id`'s next attempt (not whether it is in flight).
    pub fn remove(&mut self, id: &MessageId) {
        self.unschedule(id);
        if !self.in_flight.contains(id) {
            self.provider.remove(id);
        }
    }

    /// The first due leak not in flight whose provider is not `paused`,
    /// taken out of the schedule and marked in flight. A leak in flight
    /// stays scheduled (a retry asked for while it is sent) and is taken
    /// once its attempt is over, so it is never sent twice at once.
    pub fn take_due(
        &mut self,
        now_ms: u64,
        paused: impl Fn(Provider) -> bool,
    ) -> Option<MessageId> {
        let first = *self.waiting(&paused).next()?;
        if first.0 > now_ms {
            return None;
        }
        self.due.remove(&first);
        self.at.remove(&first.1);
        self.in_flight.insert(first.1);
        Some(first.1)
    }

    /// When the first leak not in flight whose provider is not `paused` is
    /// due.
    pub fn next_at(&self, paused: impl Fn(Provider) -> bool) -> Option<u64> {
        self.waiting(&paused).next().map(|(at, _)| *at)
    }

    fn waiting<'a>(
        &'a self,
        paused: &'a impl Fn(Provider) -> bool,
    ) -> impl Iterator<Item = &'a (u64, MessageId)> + 'a {
        self.due
            .iter()
            .filter(move |(_, id)| !self.in_flight.contains(id) && !paused(self.provider(id)))
    }

    /// Whether `id` is being sent.
    pub fn in_flight(&self, id: &MessageId) -> bool {
        self.in_flight.contains(id)
    }

    /// How many leaks to each provider (by [`Provider::index`]) are being
    /// sent.
    pub fn in_flight_by_provider(&self) -> [usize; 4] {
        let mut counts = [0; 4];
        for id in &self.in_flight {
            counts[self.provider(id).index()] += 1;
        }
        counts
    }

    /// The leaks being sent.
    pub fn in_flight_ids(&self) -> HashSet<MessageId> {
        self.in_flight.clone()
    }

    /// `id`'s attempt is over (whatever it did).
    pub fn landed(&mut self, id: &MessageId) {
        self.in_flight.remove(id);
        if !self.at.contains_key(id) {
            self.provider.remove(id);
        }
    }
}

/// The sending pace: a token bucket whose rate halves on a deferral (down
/// to `min`) and climbs back by a fiftieth of `max` per success.
#[derive(Debug, Clone)]
pub struct Pace {
    rate: f64,
    min: f64,
    max: f64,
    tokens: f64,
    last_ms: u64,
}

impl Pace {
    /// A full bucket at the highest rate, at `now_ms`.
    pub fn new(min: f64, max: f64, now_ms: u64) -> Self {
        Self {
            rate: max,
            min,
            max,
            tokens: max.max(1.0),
            last_ms: now_ms,
        }
    }

    /// The current rate (emails per second).
    pub fn rate(&self) -> f64 {
        self.rate
    }

    fn refill(&mut self, now_ms: u64) {
        // A clock stepped back refills nothing (and does not go negative).
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64 / 1000.0;
        self.last_ms = self.last_ms.max(now_ms);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate.max(1.0));
    }

    /// Whether a token is there (taking none), or how many milliseconds
    /// until one is (at least 1).
    pub fn available(&mut self, now_ms: u64) -> Result<(), u64> {
        self.take(now_ms)?;
        self.tokens += 1.0;
        Ok(())
    }

    /// Takes a token, or says how many milliseconds until one is there
    /// (at least 1).
    pub fn take(&mut self, now_ms: u64) -> Result<(), u64> {
        self.refill(now_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait_ms = ((1.0 - self.tokens) / self.rate * 1000.0).ceil();
            Err((wait_ms as u64).max(1))
        }
    }

    /// A deferral: halve the rate, and empty the bucket.
    pub fn deferred(&mut self, now_ms: u64) {
        self.refill(now_ms);
        self.rate = (self.rate / 2.0).max(self.min);
        self.tokens = self.tokens.min(0.0);
    }

    /// A success: recover slowly.
    pub fn succeeded(&mut self) {
        self.rate = (self.rate + self.max / 50.0).min(self.max);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const NONE: fn(Provider) -> bool = |_| false;

    #[test]
    fn a_leak_in_flight_is_not_taken_again() {
        let mut schedule = Schedule::default();
        let (a, b) = (MessageId([1; 16]), MessageId([2; 16]));
        schedule.insert(10, a);
        schedule.insert(20, b);
        assert_eq!(schedule.take_due(100, NONE), Some(a));
        assert!(schedule.in_flight(&a));
        // A retry of `a` asked for while it is sent.
        schedule.insert(5, a);
        assert_eq!(schedule.next_at(NONE), Some(20));
        assert_eq!(schedule.take_due(100, NONE), Some(b));
        assert_eq!(schedule.take_due(100, NONE), None, "a is still in flight");
        schedule.landed(&a);
        assert_eq!(schedule.next_at(NONE), Some(5));
        assert_eq!(schedule.take_due(100, NONE), Some(a));
        assert_eq!(schedule.take_due(100, NONE), None);
    }

    /// A paused provider's leaks wait, due or not; the others are taken.
    #[test]
    fn a_paused_providers_leaks_wait() {
        let mut schedule = Schedule::default();
        let (gmail, yahoo) = (MessageId([1; 16]), MessageId([2; 16]));
        schedule.insert_to(10, gmail, Provider::Gmail);
        schedule.insert_to(20, yahoo, Provider::Yahoo);
        let gmail_paused = |p: Provider| p == Provider::Gmail;
        assert_eq!(schedule.next_at(gmail_paused), Some(20));
        assert_eq!(schedule.take_due(100, gmail_paused), Some(yahoo));
        assert_eq!(schedule.take_due(100, gmail_paused), None);
        // A retry keeps the provider.
        schedule.insert(30, yahoo);
        schedule.landed(&yahoo);
        assert_eq!(schedule.provider(&yahoo), Provider::Yahoo);
        assert_eq!(schedule.take_due(100, NONE), Some(gmail));
        // Landed without a next attempt: forgotten.
        schedule.landed(&gmail);
        assert_eq!(schedule.provider(&gmail), Provider::Other);
    }

    #[test]
    fn nothing_is_taken_before_it_is_due_and_a_new_time_replaces_the_old() {
        let mut schedule = Schedule::default();
        let a = MessageId([1; 16]);
        schedule.insert(50, a);
        assert_eq!(schedule.take_due(49, NONE), None);
        schedule.insert(70, a);
        assert_eq!(schedule.next_at(NONE), Some(70));
        assert_eq!(schedule.take_due(60, NONE), None);
        schedule.remove(&a);
        assert_eq!(schedule.next_at(NONE), None);
        assert_eq!(schedule.take_due(u64::MAX, NONE), None);
    }

    #[test]
    fn pace_halves_on_deferral_and_recovers_slowly() {
        let mut pace = Pace::new(0.5, 10.0, 0);
        for _ in 0..10 {
            pace.take(0).unwrap();
        }
        assert_eq!(pace.take(0).unwrap_err(), 100);
        pace.take(100).unwrap();
        pace.deferred(100);
        assert_eq!(pace.rate(), 5.0);
        for _ in 0..10 {
            pace.deferred(100);
        }
        assert_eq!(pace.rate(), 0.5);
        assert_eq!(pace.take(100).unwrap_err(), 2000);
        pace.succeeded();
        assert!((pace.rate() - 0.7).abs() < 1e-9);
        for _ in 0..100 {
            pace.succeeded();
        }
        assert_eq!(pace.rate(), 10.0);
    }

    #[test]
    fn a_clock_stepped_back_refills_nothing() {
        let mut pace = Pace::new(1.0, 1.0, 10_000);
        pace.take(10_000).unwrap();
        assert!(pace.take(5_000).is_err());
        assert!(pace.take(10_500).is_err(), "half a token since 10 s");
        pace.take(11_000).unwrap();
    }
}
