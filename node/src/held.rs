//! Packets held for their mixing delay: bounded, and fair between sources.
//!
//! Every held packet remembers the peer it came from. When the queue is
//! full, a newcomer from a peer holding less than the biggest holder evicts
//! the biggest holder's latest-due packet; a packet from the biggest holder
//! itself is dropped. So a client that sends thousands of valid packets with
//! long delays fills only its own share, not the relay.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    hash::Hash,
};

/// What happened to a packet offered to the queue. What was evicted or
/// refused is handed back, so that whatever it holds (a packet's place on
/// disk) can be freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold<A> {
    /// Held.
    Held,
    /// Held, and this packet of the biggest holder was evicted to make room.
    HeldEvictedOther(A),
    /// Not held, handed back: the queue is full and this source holds the
    /// most.
    DroppedFull(A),
}

/// A bounded timer queue keyed by due time, fair between sources.
pub struct HeldQueue<P, D, A> {
    items: BTreeMap<(D, u64), (P, A)>,
    by_source: HashMap<P, BTreeSet<(D, u64)>>,
    seq: u64,
    cap: usize,
}

impl<P: Clone + Eq + Hash, D: Ord + Copy, A> HeldQueue<P, D, A> {
    /// An empty queue holding at most `cap` packets.
    pub fn new(cap: usize) -> Self {
        Self {
            items: BTreeMap::new(),
            by_source: HashMap::new(),
            seq: 0,
            cap: cap.max(1),
        }
    }

    /// Holds `action` from `source` until `due`.
    pub fn push(&mut self, source: P, due: D, action: A) -> Hold<A> {
        let mut result = Hold::Held;
        if self.items.len() >= self.cap {
            let own = self.by_source.get(&source).map_or(0, BTreeSet::len);
            let victim = self
                .by_source
                .iter()
                .max_by_key(|(_, keys)| keys.len())
                .filter(|(peer, keys)| **peer != source && keys.len() > own)
                .and_then(|(peer, keys)| Some((peer.clone(), *keys.last()?)));
            let Some((victim, key)) = victim else {
                return Hold::DroppedFull(action);
            };
            if let Some(evicted) = self.remove(&victim, key) {
                result = Hold::HeldEvictedOther(evicted);
            }
        }
        self.seq += 1;
        let key = (due, self.seq);
        self.by_source
            .entry(source.clone())
            .or_default()
            .insert(key);
        self.items.insert(key, (source, action));
        result
    }

    fn remove(&mut self, source: &P, key: (D, u64)) -> Option<A> {
        if let Some(keys) = self.by_source.get_mut(source) {
            keys.remove(&key);
            if keys.is_empty() {
                self.by_source.remove(source);
            }
        }
        self.items.remove(&key).map(|(_, action)| action)
    }

    /// When the next packet is due.
    pub fn next_due(&self) -> Option<D> {
        self.items.keys().next().map(|(due, _)| *due)
    }

    /// How many packets are due at or before `when`, counting up to
    /// `limit` (a look at the next few, not a walk of the queue).
    pub fn due_by(&self, when: D, limit: usize) -> usize {
        self.items.range(..=(when, u64::MAX)).take(limit).count()
    }

    /// Takes the next packet due at or before `now`.
    pub fn pop_due(&mut self, now: D) -> Option<A> {
        let (&key, (source, _)) = self
            .items
            .iter()
            .next()
            .filter(|((due, _), _)| *due <= now)?;
        let source = source.clone();
        self.remove(&source, key)
    }

    /// Packets held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Empties the queue; returns how many packets it held.
    pub fn clear(&mut self) -> usize {
        let n = self.items.len();
        self.items.clear();
        self.by_source.clear();
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_in_due_order() {
        let mut q = HeldQueue::new(10);
        q.push("a", 30, "a30");
        q.push("b", 10, "b10");
        q.push("a", 20, "a20");
        assert_eq!(q.next_due(), Some(10));
        assert_eq!(q.pop_due(5), None);
        assert_eq!(q.pop_due(25), Some("b10"));
        assert_eq!(q.pop_due(25), Some("a20"));
        assert_eq!(q.pop_due(25), None);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn counts_what_is_due_by_a_time_up_to_a_limit() {
        let mut q = HeldQueue::new(10);
        for (source, due) in [("a", 10), ("b", 20), ("a", 20), ("b", 30)] {
            q.push(source, due, due);
        }
        assert_eq!(q.due_by(9, 10), 0);
        assert_eq!(q.due_by(10, 10), 1);
        // Every packet due at that very time counts.
        assert_eq!(q.due_by(20, 10), 3);
        assert_eq!(q.due_by(20, 2), 2);
        assert_eq!(q.due_by(u64::MAX, 10), 4);
    }

    #[test]
    fn a_source_that_fills_the_queue_is_evicted_first() {
        let mut q = HeldQueue::new(4);
        for i in 0..4 {
            assert_eq!(q.push("flood", 1000 + i, i), Hold::Held);
        }
        // The flood's own new packet is dropped...
        assert_eq!(q.push("flood", 5, 99), Hold::DroppedFull(99));
        // ...an honest one evicts the flood's latest-due packet.
        assert_eq!(q.push("honest", 50, 7), Hold::HeldEvictedOther(3));
        assert_eq!(q.len(), 4);
        assert_eq!(q.pop_due(60), Some(7));
        let rest: Vec<_> = std::iter::from_fn(|| q.pop_due(u64::MAX)).collect();
        assert_eq!(rest, vec![0, 1, 2], "the flood's latest (3) was evicted");
        assert!(q.is_empty());
    }

    #[test]
    fn equal_holders_do_not_evict_each_other() {
        let mut q = HeldQueue::new(2);
        q.push("a", 1, 1);
        q.push("b", 2, 2);
        assert_eq!(q.push("a", 3, 3), Hold::DroppedFull(3));
        assert_eq!(q.clear(), 2);
        assert!(q.is_empty());
    }
}
