//! A one-direction network link model for WAN simulation, sans-IO.
//!
//! [`Link`] decides the fate of each datagram offered to it at time `now`
//! (a [`Duration`] since any origin the caller picks): lost at random
//! (or because its index is on a drop list), tail-dropped at a bottleneck
//! whose queue is full, or delivered at a computed time. The order is the
//! one of a real path: random loss, then the bottleneck (serialization at
//! `rate_bps` behind the packets already queued, at most `queue_packets`
//! waiting), then the one-way propagation `delay` plus optional `jitter`.
//!
//! [`LinkQueue`] holds the datagrams in flight and hands them out when
//! due, earliest first. Both the userspace impairment relay of
//! `inferadb-mesh bench tunnel --wan` and simulated-time tests use them;
//! nothing here reads a clock or draws randomness from the OS: the
//! generator is seeded by the caller, so a run is reproducible.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};
use std::time::Duration;

/// What one direction of a path does to datagrams.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkConfig {
    /// One-way propagation delay.
    pub delay: Duration,
    /// Extra delay drawn uniformly in `0..=jitter` per datagram.
    pub jitter: Duration,
    /// Whether jitter may reorder datagrams; when false a datagram is
    /// never delivered before one offered earlier (delivery times are
    /// kept monotone).
    pub reorder: bool,
    /// Probability in `0.0..=1.0` that a datagram is lost at random.
    pub loss: f64,
    /// Bottleneck rate in bits per second; `None`: no bottleneck.
    pub rate_bps: Option<u64>,
    /// Most datagrams waiting at the bottleneck (including the one being
    /// serialized); one more is tail-dropped. Only used with `rate_bps`.
    pub queue_packets: usize,
    /// Indexes (0-based, in the order offered) of datagrams to drop
    /// regardless of `loss`: losses at chosen packets for tests.
    pub drop_indexes: BTreeSet<u64>,
}

/// The fate of one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Delivered at this time.
    Deliver(Duration),
    /// Lost at random or on the drop list.
    Lost,
    /// Tail-dropped: the bottleneck queue was full.
    QueueFull,
}

/// Counters of a [`Link`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Datagrams offered.
    pub offered: u64,
    /// Datagrams given a delivery time.
    pub delivered: u64,
    /// Datagrams lost at random or on the drop list.
    pub lost: u64,
    /// Datagrams tail-dropped at the bottleneck.
    pub queue_drops: u64,
}

/// SplitMix64: a small, fast, seedable generator (Steele, Lea, Flood 2014).
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// One direction of a path; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Link {
    cfg: LinkConfig,
    rng: SplitMix64,
    /// `loss` as a threshold on a uniform `u64`.
    loss_threshold: u64,
    /// When each datagram at the bottleneck leaves it, oldest first.
    departures: VecDeque<Duration>,
    /// The latest delivery time handed out (for in-order jitter).
    last_delivery: Duration,
    stats: LinkStats,
}

impl Link {
    /// A link doing what `cfg` says, its random draws seeded by `seed`.
    pub fn new(cfg: LinkConfig, seed: u64) -> Link {
        let loss = if cfg.loss.is_nan() {
            0.0
        } else {
            cfg.loss.clamp(0.0, 1.0)
        };
        let loss_threshold = if loss >= 1.0 {
            u64::MAX
        } else {
            (loss * 18_446_744_073_709_551_616.0) as u64
        };
        Link {
            cfg,
            rng: SplitMix64(seed),
            loss_threshold,
            departures: VecDeque::new(),
            last_delivery: Duration::ZERO,
            stats: LinkStats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LinkConfig {
        &self.cfg
    }

    /// Counters so far.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Datagrams at the bottleneck at `now` (0 without one).
    pub fn queued(&mut self, now: Duration) -> usize {
        while self.departures.front().is_some_and(|&d| d <= now) {
            self.departures.pop_front();
        }
        self.departures.len()
    }

    /// Decides the fate of a datagram of `len` bytes offered at `now`.
    /// `now` must not go backwards between calls.
    pub fn offer(&mut self, len: usize, now: Duration) -> Verdict {
        let index = self.stats.offered;
        self.stats.offered += 1;
        // Draw for every datagram, lost or not, so the pattern of random
        // losses does not depend on the rest of the configuration.
        let draw = self.rng.next_u64();
        let random_loss = self.loss_threshold == u64::MAX || draw < self.loss_threshold;
        if random_loss || self.cfg.drop_indexes.contains(&index) {
            self.stats.lost += 1;
            return Verdict::Lost;
        }
        let departure = match self.cfg.rate_bps {
            Some(rate) if rate > 0 => {
                if self.queued(now) >= self.cfg.queue_packets.max(1) {
                    self.stats.queue_drops += 1;
                    return Verdict::QueueFull;
                }
                let start = self.departures.back().copied().unwrap_or(now).max(now);
                let ser_ns = (len as u128 * 8 * 1_000_000_000).div_ceil(rate as u128);
                let d = start + Duration::from_nanos(ser_ns.min(u64::MAX as u128) as u64);
                self.departures.push_back(d);
                d
            }
            _ => now,
        };
        let jitter = if self.cfg.jitter.is_zero() {
            Duration::ZERO
        } else {
            let span = self.cfg.jitter.as_nanos().min(u64::MAX as u128 - 1) as u64 + 1;
            Duration::from_nanos(self.rng.next_u64() % span)
        };
        let mut at = departure + self.cfg.delay + jitter;
        if !self.cfg.reorder {
            at = at.max(self.last_delivery);
        }
        self.last_delivery = self.last_delivery.max(at);
        self.stats.delivered += 1;
        Verdict::Deliver(at)
    }
}

/// Datagrams in flight through a [`Link`], handed out when due.
#[derive(Debug)]
pub struct LinkQueue<T> {
    link: Link,
    /// (delivery time, sequence) → datagram; the sequence keeps equal
    /// times in the order offered.
    heap: BinaryHeap<Reverse<(Duration, u64, Slot<T>)>>,
    seq: u64,
}

/// Wraps the datagram so the heap orders by time and sequence only.
#[derive(Debug)]
struct Slot<T>(T);
impl<T> PartialEq for Slot<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl<T> Eq for Slot<T> {}
impl<T> PartialOrd for Slot<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Slot<T> {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl<T> LinkQueue<T> {
    /// An empty queue in front of `link`.
    pub fn new(link: Link) -> LinkQueue<T> {
        LinkQueue {
            link,
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }

    /// The link (its counters and configuration).
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// Offers `pkt` of `len` bytes at `now`; keeps it when delivered.
    pub fn push(&mut self, pkt: T, len: usize, now: Duration) -> Verdict {
        let v = self.link.offer(len, now);
        if let Verdict::Deliver(at) = v {
            self.heap.push(Reverse((at, self.seq, Slot(pkt))));
            self.seq += 1;
        }
        v
    }

    /// The next datagram due at or before `now`, earliest first.
    pub fn pop_due(&mut self, now: Duration) -> Option<T> {
        if self
            .heap
            .peek()
            .is_some_and(|Reverse((at, _, _))| *at <= now)
        {
            self.heap.pop().map(|Reverse((_, _, Slot(p)))| p)
        } else {
            None
        }
    }

    /// When the next datagram is due.
    pub fn next_due(&self) -> Option<Duration> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Datagrams in flight.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether none is in flight.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn delay_only(d: Duration) -> LinkConfig {
        LinkConfig {
            delay: d,
            ..Default::default()
        }
    }

    #[test]
    fn delay_is_exact_and_order_kept() {
        let mut q = LinkQueue::new(Link::new(delay_only(35 * MS), 1));
        for i in 0..10u32 {
            let now = Duration::from_micros(i as u64 * 10);
            assert_eq!(q.push(i, 1300, now), Verdict::Deliver(now + 35 * MS));
        }
        assert_eq!(q.pop_due(35 * MS - Duration::from_nanos(1)), None);
        assert_eq!(q.next_due(), Some(35 * MS));
        let mut got = Vec::new();
        while let Some(p) = q.pop_due(36 * MS) {
            got.push(p);
        }
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        assert!(q.is_empty());
    }

    #[test]
    fn random_loss_rate_is_close_to_the_configured_one_and_reproducible() {
        let cfg = LinkConfig {
            loss: 0.001,
            ..delay_only(MS)
        };
        let run = |seed| {
            let mut l = Link::new(cfg.clone(), seed);
            for _ in 0..1_000_000 {
                l.offer(1300, Duration::ZERO);
            }
            l.stats()
        };
        let s = run(7);
        // 1,000 expected; 5 standard deviations is ±158.
        assert!((850..=1150).contains(&s.lost), "{s:?}");
        assert_eq!(s.delivered + s.lost, 1_000_000);
        assert_eq!(run(7), s, "same seed, same losses");
        assert_ne!(run(8).lost, 0);
        let mut all = Link::new(
            LinkConfig {
                loss: 1.0,
                ..cfg.clone()
            },
            1,
        );
        let mut none = Link::new(LinkConfig { loss: 0.0, ..cfg }, 1);
        for _ in 0..10_000 {
            assert_eq!(all.offer(100, Duration::ZERO), Verdict::Lost);
            assert!(matches!(
                none.offer(100, Duration::ZERO),
                Verdict::Deliver(_)
            ));
        }
    }

    #[test]
    fn chosen_packets_are_dropped() {
        let cfg = LinkConfig {
            drop_indexes: [1, 3].into_iter().collect(),
            ..delay_only(MS)
        };
        let mut l = Link::new(cfg, 1);
        let v: Vec<bool> = (0..5)
            .map(|_| l.offer(100, Duration::ZERO) == Verdict::Lost)
            .collect();
        assert_eq!(v, [false, true, false, true, false]);
    }

    #[test]
    fn bottleneck_rate_holds() {
        // 10 Mbit/s: a 1,250-byte datagram takes exactly 1 ms.
        let cfg = LinkConfig {
            rate_bps: Some(10_000_000),
            queue_packets: 10_000,
            ..delay_only(5 * MS)
        };
        let mut q = LinkQueue::new(Link::new(cfg, 1));
        // 1,000 datagrams offered at once leave one per millisecond.
        for i in 0..1000u64 {
            assert_eq!(
                q.push(i, 1250, Duration::ZERO),
                Verdict::Deliver(5 * MS + (i as u32 + 1) * MS)
            );
        }
        // Offered slower than the rate, a datagram waits for nothing.
        let later = Duration::from_secs(10);
        assert_eq!(q.push(0, 1250, later), Verdict::Deliver(later + 6 * MS));
        // Offered at twice the rate for a second, half a second of data is
        // still queued at the end and the output never beats the rate.
        let mut q = LinkQueue::new(Link::new(
            LinkConfig {
                rate_bps: Some(10_000_000),
                queue_packets: 10_000,
                ..Default::default()
            },
            1,
        ));
        let mut sent_by_1s = 0u64;
        for i in 0..2000u64 {
            let now = Duration::from_micros(i * 500);
            if let Verdict::Deliver(at) = q.push(i, 1250, now) {
                if at <= Duration::from_secs(1) {
                    sent_by_1s += 1250;
                }
            }
        }
        assert_eq!(sent_by_1s * 8, 10_000_000);
    }

    #[test]
    fn full_queue_tail_drops_and_drains() {
        let cfg = LinkConfig {
            rate_bps: Some(10_000_000),
            queue_packets: 4,
            ..Default::default()
        };
        let mut l = Link::new(cfg, 1);
        let v: Vec<Verdict> = (0..6).map(|_| l.offer(1250, Duration::ZERO)).collect();
        assert_eq!(
            v,
            [
                Verdict::Deliver(MS),
                Verdict::Deliver(2 * MS),
                Verdict::Deliver(3 * MS),
                Verdict::Deliver(4 * MS),
                Verdict::QueueFull,
                Verdict::QueueFull,
            ]
        );
        assert_eq!(l.stats().queue_drops, 2);
        // One has left by 1 ms: room for exactly one more.
        assert_eq!(l.queued(MS), 3);
        assert_eq!(l.offer(1250, MS), Verdict::Deliver(5 * MS));
        assert_eq!(l.offer(1250, MS), Verdict::QueueFull);
    }

    #[test]
    fn jitter_stays_in_bounds_and_reorders_only_when_allowed() {
        for reorder in [false, true] {
            let cfg = LinkConfig {
                jitter: 10 * MS,
                reorder,
                ..delay_only(20 * MS)
            };
            let mut l = Link::new(cfg, 3);
            let mut last = Duration::ZERO;
            let mut reordered = 0;
            for i in 0..1000u64 {
                let now = Duration::from_micros(i * 100);
                let Verdict::Deliver(at) = l.offer(100, now) else {
                    panic!("no loss configured")
                };
                assert!(at >= now + 20 * MS, "{at:?}");
                assert!(at <= (now + 30 * MS).max(last), "{at:?}");
                if at < last {
                    reordered += 1;
                }
                last = last.max(at);
            }
            assert_eq!(reordered > 0, reorder, "reorder {reorder}: {reordered}");
        }
    }
}
