//! The inbound packet queue: bounded per peer and in all, served fairly.
//!
//! Every peer has its own FIFO of packets waiting for processing. Workers
//! take one packet from each non-empty peer in turn (round robin), so a
//! peer that sends a thousand packets waits behind itself, not in front of
//! everyone else. When a peer's FIFO is full its new packet is dropped; when
//! the whole queue is full, the newest packet of the peer with the longest
//! FIFO is dropped to make room, so a flood cannot crowd out other peers.

use std::{
    collections::{HashMap, VecDeque},
    hash::Hash,
    sync::{Condvar, Mutex},
    time::{Duration, Instant},
};

/// What happened to a pushed item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued.
    Queued,
    /// Queued, and another item of the longest-queued peer was dropped.
    QueuedEvictedOther,
    /// Dropped: the peer's own queue is full (or it is the longest).
    DroppedPeerFull,
    /// Dropped: the queue is closed.
    Closed,
}

struct Inner<P, T> {
    queues: HashMap<P, VecDeque<T>>,
    /// Peers with a non-empty queue, in service order.
    ring: VecDeque<P>,
    len: usize,
    closed: bool,
    /// A consumer is gathering a batch (see [`FairQueue::pop_batch`]):
    /// the others leave the items to it.
    gathering: bool,
    /// The size of the batch being gathered: only a push that fills it
    /// wakes the gatherer (each earlier wake-up would put it back to sleep,
    /// two context switches a packet for nothing).
    gather_max: usize,
}

/// A bounded, fair, multi-producer multi-consumer queue keyed by peer.
pub struct FairQueue<P, T> {
    inner: Mutex<Inner<P, T>>,
    ready: Condvar,
    per_peer: usize,
    total: usize,
}

impl<P: Clone + Eq + Hash, T> FairQueue<P, T> {
    /// A queue holding at most `per_peer` items per peer and `total` in all.
    pub fn new(per_peer: usize, total: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                queues: HashMap::new(),
                ring: VecDeque::new(),
                len: 0,
                closed: false,
                gathering: false,
                gather_max: 0,
            }),
            ready: Condvar::new(),
            per_peer: per_peer.max(1),
            total: total.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<P, T>> {
        // A worker that panicked mid-operation leaves consistent data behind
        // (every operation completes its bookkeeping before it can panic).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `item` from `peer`.
    pub fn push(&self, peer: P, item: T) -> Pushed {
        let mut inner = self.lock();
        if inner.closed {
            return Pushed::Closed;
        }
        let own = inner.queues.get(&peer).map_or(0, VecDeque::len);
        if own >= self.per_peer {
            return Pushed::DroppedPeerFull;
        }
        let mut result = Pushed::Queued;
        if inner.len >= self.total {
            // Evict from the longest queue; if that is this peer, drop this item.
            let longest = inner
                .queues
                .iter()
                .max_by_key(|(_, q)| q.len())
                .map(|(p, q)| (p.clone(), q.len()));
            match longest {
                Some((victim, len)) if victim != peer && len > own => {
                    if let Some(q) = inner.queues.get_mut(&victim) {
                        q.pop_back();
                        if q.is_empty() {
                            // Its ring entry is skipped when reached.
                            inner.queues.remove(&victim);
                        }
                    }
                    inner.len -= 1;
                    result = Pushed::QueuedEvictedOther;
                }
                _ => return Pushed::DroppedPeerFull,
            }
        }
        let queue = inner.queues.entry(peer.clone()).or_default();
        queue.push_back(item);
        if queue.len() == 1 {
            inner.ring.push_back(peer);
        }
        inner.len += 1;
        let (gathering, full) = (inner.gathering, inner.len >= inner.gather_max);
        drop(inner);
        if !gathering {
            self.ready.notify_one();
        } else if full {
            // The gatherer's batch is full. It shares the condition with
            // idle consumers, and one of them woken instead would go back
            // to sleep and swallow the wake-up: wake them all.
            self.ready.notify_all();
        }
        // Otherwise the gatherer wakes by itself when its window ends.
        result
    }

    /// Takes up to `max` items, one per peer in turn, waiting up to `wait`
    /// for the first. Returns an empty batch on timeout or when closed and
    /// empty.
    ///
    /// When the queue was empty and an item arrives, the consumer goes on
    /// gathering for up to `gather` after it (until `max` are waiting, or
    /// the queue closes), and other consumers leave the items to it: a
    /// quiet node then processes its packets in batches rather than one by
    /// one, so one durable transaction covers several packets. A queue
    /// that already holds items is served at once, so a busy node adds no
    /// wait.
    pub fn pop_batch(&self, max: usize, wait: Duration, gather: Duration) -> Vec<(P, T)> {
        let mut inner = self.lock();
        let was_empty = inner.len == 0;
        if (inner.len == 0 || inner.gathering) && !inner.closed {
            inner = self
                .ready
                .wait_timeout_while(inner, wait, |i| (i.len == 0 || i.gathering) && !i.closed)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        if inner.gathering {
            // Another consumer is gathering these items (this one's wait
            // ended first): leave them to it, or the batch is split and
            // the gathering cut short.
            return Vec::new();
        }
        if was_empty && inner.len > 0 && !gather.is_zero() && !inner.gathering {
            inner.gathering = true;
            inner.gather_max = max;
            let until = Instant::now() + gather;
            loop {
                let now = Instant::now();
                if inner.len >= max || inner.closed || now >= until {
                    break;
                }
                inner = self
                    .ready
                    .wait_timeout(inner, until - now)
                    .map(|(guard, _)| guard)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
            inner.gathering = false;
        }
        let mut batch = Vec::with_capacity(max.min(inner.len));
        while batch.len() < max {
            let Some(peer) = inner.ring.pop_front() else {
                break;
            };
            let Some(queue) = inner.queues.get_mut(&peer) else {
                continue;
            };
            let Some(item) = queue.pop_front() else {
                inner.queues.remove(&peer);
                continue;
            };
            if queue.is_empty() {
                inner.queues.remove(&peer);
            } else {
                inner.ring.push_back(peer.clone());
            }
            inner.len -= 1;
            batch.push((peer, item));
        }
        let left = inner.len > 0;
        drop(inner);
        if left {
            // Items the others left to this consumer while it gathered.
            self.ready.notify_one();
        }
        batch
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.lock().len
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuses new items and wakes every waiting consumer.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// Whether [`Self::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_WAIT: Duration = Duration::ZERO;

    #[test]
    fn serves_peers_round_robin() {
        let q = FairQueue::new(100, 1000);
        for i in 0..50 {
            q.push("flood", i);
        }
        q.push("a", 100);
        q.push("b", 200);
        let batch: Vec<_> = q.pop_batch(4, NO_WAIT, NO_WAIT);
        let peers: Vec<&str> = batch.iter().map(|(p, _)| *p).collect();
        assert_eq!(peers, vec!["flood", "a", "b", "flood"]);
        assert_eq!(q.len(), 48);
    }

    #[test]
    fn bounded_per_peer_and_in_total_with_fair_eviction() {
        let q = FairQueue::new(3, 5);
        for i in 0..10 {
            let r = q.push("flood", i);
            assert_eq!(
                r,
                if i < 3 {
                    Pushed::Queued
                } else {
                    Pushed::DroppedPeerFull
                }
            );
        }
        assert_eq!(q.push("a", 0), Pushed::Queued);
        assert_eq!(q.push("a", 1), Pushed::Queued);
        assert_eq!(q.len(), 5);
        // Full: a newcomer evicts from the longest queue (the flood).
        assert_eq!(q.push("b", 0), Pushed::QueuedEvictedOther);
        assert_eq!(q.len(), 5);
        // The longest queue's own new item is dropped rather than evicting others.
        assert_eq!(q.push("flood", 99), Pushed::DroppedPeerFull);
        let all = q.pop_batch(10, NO_WAIT, NO_WAIT);
        assert_eq!(all.len(), 5);
        assert!(all.contains(&("b", 0)));
        assert!(q.is_empty());
    }

    #[test]
    fn close_wakes_consumers() {
        let q = std::sync::Arc::new(FairQueue::<u8, u8>::new(1, 1));
        let q2 = q.clone();
        let t = std::thread::spawn(move || {
            q2.pop_batch(1, Duration::from_secs(30), Duration::from_secs(30))
        });
        std::thread::sleep(Duration::from_millis(20));
        q.close();
        assert!(t.join().unwrap().is_empty());
        assert_eq!(q.push(1, 1), Pushed::Closed);
    }

    /// Pops on another thread; the answer comes back on a channel.
    fn pop_elsewhere(
        q: &std::sync::Arc<FairQueue<u8, u8>>,
        max: usize,
        gather: Duration,
    ) -> std::sync::mpsc::Receiver<Vec<(u8, u8)>> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let q = q.clone();
        std::thread::spawn(move || {
            let _ = tx.send(q.pop_batch(max, Duration::from_secs(60), gather));
        });
        rx
    }

    #[test]
    fn a_quiet_queue_gathers_a_batch_and_other_consumers_leave_it_alone() {
        let q = std::sync::Arc::new(FairQueue::<u8, u8>::new(100, 100));
        let gather = Duration::from_millis(300);
        let first = pop_elsewhere(&q, 10, gather);
        let second = pop_elsewhere(&q, 10, gather);
        std::thread::sleep(Duration::from_millis(20));
        for i in 0..3 {
            q.push(i, i);
            std::thread::sleep(Duration::from_millis(10));
        }
        // One consumer took all three; the other is still waiting.
        let (got, other) = match first.recv_timeout(Duration::from_secs(30)) {
            Ok(batch) => (batch, second),
            Err(_) => (second.recv_timeout(Duration::from_secs(30)).unwrap(), first),
        };
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(other.try_recv().is_err());
        q.push(9, 9);
        assert_eq!(
            other.recv_timeout(Duration::from_secs(30)).unwrap(),
            vec![(9, 9)]
        );
    }

    #[test]
    fn a_consumer_whose_wait_ends_leaves_the_gathered_items_alone() {
        let q = std::sync::Arc::new(FairQueue::<u8, u8>::new(100, 100));
        let gatherer = pop_elsewhere(&q, 2, Duration::from_secs(3600));
        std::thread::sleep(Duration::from_millis(20));
        q.push(1, 1);
        std::thread::sleep(Duration::from_millis(200));
        // Another consumer's short wait ends during the gathering: it takes
        // nothing.
        assert!(
            q.pop_batch(10, Duration::from_millis(50), Duration::ZERO)
                .is_empty()
        );
        q.push(2, 2);
        assert_eq!(
            gatherer.recv_timeout(Duration::from_secs(30)).unwrap(),
            vec![(1, 1), (2, 2)]
        );
    }

    #[test]
    fn gathering_stops_at_a_full_batch_or_when_closed() {
        let q = std::sync::Arc::new(FairQueue::<u8, u8>::new(100, 100));
        // A gather window longer than the test's patience: only a full
        // batch (or closing) can end it in time.
        let hour = Duration::from_secs(3600);
        let full = pop_elsewhere(&q, 2, hour);
        std::thread::sleep(Duration::from_millis(20));
        q.push(1, 1);
        q.push(2, 2);
        q.push(3, 3);
        assert_eq!(full.recv_timeout(Duration::from_secs(30)).unwrap().len(), 2);
        // A busy queue (items already waiting) is served without gathering.
        assert_eq!(
            pop_elsewhere(&q, 10, hour)
                .recv_timeout(Duration::from_secs(30))
                .unwrap(),
            vec![(3, 3)]
        );
        let closing = pop_elsewhere(&q, 10, hour);
        std::thread::sleep(Duration::from_millis(20));
        q.push(4, 4);
        std::thread::sleep(Duration::from_millis(20));
        q.close();
        assert_eq!(
            closing.recv_timeout(Duration::from_secs(30)).unwrap(),
            vec![(4, 4)]
        );
    }
}
