//! [`TimerWheel`]: a hierarchical hashed timing wheel on millisecond ticks.
//!
//! Six levels of 64 slots. A slot of level `l` spans `64^l` ticks, so level 0 holds the next 64
//! milliseconds one slot per millisecond, level 1 the next ~4 seconds, and level 5 about 2.2
//! years. Insert and cancel are O(1); expiring is proportional to what expires (plus at most one
//! cascade of an entry per level it passes through). The model is tokio's `runtime/time/wheel`.
//!
//! Entries live in one [`Slab`] of nodes linked into per-slot doubly linked lists, so a warm
//! wheel allocates nothing: arming a deadline takes a free node, cancelling returns it.
//!
//! Invariants (checked with `debug_assert!`):
//! - `elapsed` only moves forward.
//! - An entry in level `l`, slot `s` has a deadline in the first span of 64^l ticks at or after
//!   `elapsed` whose level-`l` digit is `s`; that span starts strictly after `elapsed`. Lower
//!   levels therefore always expire before higher ones, and the first occupied slot of the
//!   lowest occupied level is the next thing to happen.
//! - Deadlines are at most [`MAX_SPAN`] ticks ahead of `elapsed` (longer ones are clamped), so
//!   the top level never has to tell two turns of the wheel apart.

use slab::Slab;

const LEVELS: usize = 6;
const SLOT_BITS: u32 = 6;
const SLOTS: usize = 1 << SLOT_BITS;
const NIL: u32 = u32::MAX;
/// The list of entries whose deadline has passed, waiting to be handed out by `poll`.
const EXPIRED: usize = LEVELS * SLOTS;

/// The furthest a deadline may lie ahead of the wheel's time: 2^35 - 1 ms, about 397 days.
pub(crate) const MAX_SPAN: u64 = (1 << 35) - 1;

/// Where a timer lives in the wheel, to cancel it.
///
/// (`pub` items in this crate-private module are reachable only through
/// `rpcloop::bench_support`, for the benchmarks.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerKey(u32);

#[derive(Debug)]
struct Node<T> {
    deadline: u64,
    prev: u32,
    next: u32,
    /// The list the node is in; kept exact only for the head of a list (the one node whose
    /// unlinking must update `heads`), so a whole list can move in O(1).
    list: u16,
    value: T,
}

/// Deadlines on millisecond ticks, each carrying a small value handed back when it expires.
#[derive(Debug)]
pub struct TimerWheel<T> {
    /// The wheel's time: every deadline at or before it has been moved to the expired list.
    elapsed: u64,
    nodes: Slab<Node<T>>,
    /// Head of each slot's list, level-major, then the expired list.
    heads: [u32; LEVELS * SLOTS + 1],
    /// Bit `s` of `occupied[l]` is set when slot `s` of level `l` is not empty.
    occupied: [u64; LEVELS],
}

impl<T> Default for TimerWheel<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> TimerWheel<T> {
    /// An empty wheel at tick 0.
    pub fn new() -> Self {
        TimerWheel {
            elapsed: 0,
            nodes: Slab::new(),
            heads: [NIL; LEVELS * SLOTS + 1],
            occupied: [0; LEVELS],
        }
    }

    /// How many timers are armed (including expired ones not yet polled).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The bytes one armed timer occupies in the wheel's slab of nodes.
    pub fn slot_bytes() -> usize {
        // A slab slot is `enum Entry { Vacant(usize), Occupied(Node<T>) }`.
        #[allow(dead_code)]
        enum Slot<T> {
            Vacant(usize),
            Occupied(Node<T>),
        }
        size_of::<Slot<T>>()
    }

    /// Arms a timer for `deadline`. A deadline at or before the wheel's time expires on the next
    /// [`poll`](Self::poll); one more than `MAX_SPAN` ahead is clamped to that.
    pub fn insert(&mut self, deadline: u64, value: T) -> TimerKey {
        let deadline = deadline.min(self.elapsed.saturating_add(MAX_SPAN));
        let key = self.nodes.insert(Node {
            deadline,
            prev: NIL,
            next: NIL,
            list: 0,
            value,
        });
        let key = u32::try_from(key).expect("more than 2^32 - 1 timers");
        assert!(key != NIL, "more than 2^32 - 1 timers");
        self.link(key, self.list_for(deadline));
        TimerKey(key)
    }

    /// Disarms a timer, giving its value back; `None` if it already expired and was polled.
    pub fn cancel(&mut self, key: TimerKey) -> Option<T> {
        if !self.nodes.contains(key.0 as usize) {
            return None;
        }
        self.unlink(key.0);
        Some(self.nodes.remove(key.0 as usize).value)
    }

    /// The earliest tick at which [`poll`](Self::poll) may return something, if any timer is
    /// armed. It may be earlier than the earliest deadline (when that deadline still sits in a
    /// coarse level), never later, with one exception: while a timer armed with a deadline
    /// already past waits for the next `poll`, it is the wheel's time (the last `now` polled),
    /// which may be later than that deadline.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.heads[EXPIRED] != NIL {
            return Some(self.elapsed);
        }
        self.next_slot().map(|(_, _, start)| start)
    }

    /// Advances the wheel to `now` and returns the value of one expired timer, earliest deadline
    /// first; `None` once nothing due at or before `now` is left. Call it until it returns `None`.
    ///
    /// Timers armed with a deadline already at or before the wheel's time come out before any
    /// other, but in no particular order among themselves (the last armed first): all of them
    /// are overdue, and all come out before this `poll` loop ends.
    pub fn poll(&mut self, now: u64) -> Option<T> {
        loop {
            let head = self.heads[EXPIRED];
            if head != NIL {
                self.unlink(head);
                return Some(self.nodes.remove(head as usize).value);
            }
            if now <= self.elapsed {
                return None;
            }
            match self.next_slot() {
                Some((level, slot, start)) if start <= now => {
                    debug_assert!(start > self.elapsed, "slot start {start} is in the past");
                    self.elapsed = start;
                    self.cascade(level, slot);
                }
                _ => {
                    self.elapsed = now;
                    return None;
                }
            }
        }
    }

    /// Re-files every entry of a slot whose span has begun, relative to the new `elapsed`: they
    /// land in a lower level, or in the expired list when their deadline is now.
    fn cascade(&mut self, level: usize, slot: usize) {
        let list = level * SLOTS + slot;
        let mut key = self.heads[list];
        self.heads[list] = NIL;
        self.occupied[level] &= !(1 << slot);
        if level == 0 {
            // A level-0 slot spans one tick, which is `elapsed` now: the whole list expires.
            // `poll` cascades only once the expired list is empty, so the list moves as is.
            debug_assert_eq!(self.heads[EXPIRED], NIL);
            self.heads[EXPIRED] = key;
            if key != NIL {
                self.nodes[key as usize].list = EXPIRED as u16;
            }
            return;
        }
        while key != NIL {
            let node = &mut self.nodes[key as usize];
            let next = node.next;
            let deadline = node.deadline;
            debug_assert!(
                deadline >= self.elapsed,
                "entry {deadline} missed at {}",
                self.elapsed
            );
            self.link(key, self.list_for(deadline));
            key = next;
        }
    }

    /// The lowest occupied level, its next occupied slot and the tick at which that slot begins.
    fn next_slot(&self) -> Option<(usize, usize, u64)> {
        let level = self.occupied.iter().position(|&bits| bits != 0)?;
        let shift = SLOT_BITS * level as u32;
        let now_slot = ((self.elapsed >> shift) as usize) & (SLOTS - 1);
        let distance = u64::from(
            self.occupied[level]
                .rotate_right(now_slot as u32)
                .trailing_zeros(),
        );
        debug_assert!(
            distance > 0,
            "level {level} has an entry in its current slot"
        );
        let slot = (now_slot + distance as usize) & (SLOTS - 1);
        let current_start = (self.elapsed >> shift) << shift;
        Some((level, slot, current_start + (distance << shift)))
    }

    fn list_for(&self, deadline: u64) -> usize {
        if deadline <= self.elapsed {
            return EXPIRED;
        }
        // The level is the highest 6-bit digit in which the deadline differs from `elapsed`.
        // Deadlines that differ above level 5 (only possible across a carry, since they are at
        // most MAX_SPAN ahead) go to level 5, whose slots then wrap around once.
        let differing = (self.elapsed ^ deadline) | (SLOTS as u64 - 1);
        let level = ((63 - differing.leading_zeros()) / SLOT_BITS).min(LEVELS as u32 - 1);
        let slot = ((deadline >> (SLOT_BITS * level)) as usize) & (SLOTS - 1);
        level as usize * SLOTS + slot
    }

    fn link(&mut self, key: u32, list: usize) {
        let head = self.heads[list];
        {
            let node = &mut self.nodes[key as usize];
            node.prev = NIL;
            node.next = head;
            node.list = list as u16;
        }
        if head != NIL {
            self.nodes[head as usize].prev = key;
        }
        self.heads[list] = key;
        if list != EXPIRED {
            self.occupied[list / SLOTS] |= 1 << (list % SLOTS);
        }
    }

    fn unlink(&mut self, key: u32) {
        let (prev, next, list) = {
            let node = &self.nodes[key as usize];
            (node.prev, node.next, node.list as usize)
        };
        if prev == NIL {
            // The head: only its `list` is exact, and its successor inherits it.
            self.heads[list] = next;
            if next == NIL && list != EXPIRED {
                self.occupied[list / SLOTS] &= !(1 << (list % SLOTS));
            }
        } else {
            self.nodes[prev as usize].next = next;
        }
        if next != NIL {
            let next = &mut self.nodes[next as usize];
            next.prev = prev;
            if prev == NIL {
                next.list = list as u16;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: deterministic randomness without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn drain(wheel: &mut TimerWheel<u64>, now: u64) -> Vec<u64> {
        std::iter::from_fn(|| wheel.poll(now)).collect()
    }

    #[test]
    fn fires_at_the_deadline_not_before() {
        let mut wheel = TimerWheel::new();
        wheel.insert(10, 1u64);
        assert_eq!(drain(&mut wheel, 9), Vec::<u64>::new());
        assert_eq!(drain(&mut wheel, 10), vec![1]);
        assert_eq!(wheel.len(), 0);
        assert_eq!(wheel.next_deadline(), None);
    }

    #[test]
    fn past_deadlines_fire_on_the_next_poll() {
        let mut wheel = TimerWheel::new();
        drain(&mut wheel, 100);
        wheel.insert(50, 7u64);
        wheel.insert(100, 8u64);
        assert_eq!(wheel.next_deadline(), Some(100));
        let mut fired = drain(&mut wheel, 100);
        fired.sort();
        assert_eq!(fired, vec![7, 8]);
    }

    /// The timer_wheel fuzz target found that timers armed already overdue do not come out
    /// earliest deadline first (they are handed out last armed first); all are overdue, so the
    /// order is now what the documentation says: before any other, in no particular order.
    #[test]
    fn overdue_timers_come_out_before_any_other() {
        let mut wheel = TimerWheel::new();
        wheel.insert(1010, 1u64);
        wheel.insert(1010, 2u64);
        drain(&mut wheel, 1000);
        wheel.insert(500, 3u64);
        wheel.insert(800, 4u64);
        assert_eq!(wheel.next_deadline(), Some(1000), "the wheel's time");
        let mut overdue = vec![wheel.poll(1000).unwrap(), wheel.poll(1000).unwrap()];
        overdue.sort();
        assert_eq!(overdue, vec![3, 4]);
        assert_eq!(wheel.poll(1000), None);
        // One of a tick's batch is out; one armed overdue now comes before the rest.
        let first = wheel.poll(1010).unwrap();
        wheel.insert(900, 5u64);
        assert_eq!(wheel.poll(1010), Some(5));
        assert_eq!(wheel.poll(1010), Some(3 - first));
        assert_eq!(wheel.poll(1010), None);
    }

    #[test]
    fn cancelling_inside_an_expired_list_keeps_the_lists_whole() {
        // A level-0 slot moves to the expired list whole; cancelling its head then its
        // successors must still find the right list.
        let mut wheel = TimerWheel::new();
        let keys: Vec<_> = (0..4u64).map(|v| wheel.insert(7, v)).collect();
        let later = wheel.insert(9, 99u64);
        let first = wheel.poll(7).expect("one expired timer");
        let mut left: Vec<u64> = keys.iter().filter_map(|&k| wheel.cancel(k)).collect();
        left.push(first);
        left.sort();
        assert_eq!(left, vec![0, 1, 2, 3]);
        assert_eq!(wheel.next_deadline(), Some(9));
        assert_eq!(drain(&mut wheel, 8), Vec::<u64>::new());
        let again = wheel.insert(9, 100u64);
        assert_eq!(wheel.cancel(later), Some(99));
        assert_eq!(drain(&mut wheel, 9), vec![100]);
        assert_eq!(wheel.cancel(again), None);
        assert_eq!(wheel.len(), 0);
    }

    #[test]
    fn cancel_removes_and_returns_the_value() {
        let mut wheel = TimerWheel::new();
        let a = wheel.insert(5, 1u64);
        let b = wheel.insert(5, 2u64);
        assert_eq!(wheel.cancel(a), Some(1));
        assert_eq!(wheel.cancel(a), None);
        assert_eq!(drain(&mut wheel, 5), vec![2]);
        assert_eq!(wheel.cancel(b), None);
    }

    #[test]
    fn next_deadline_is_never_late() {
        let mut rng = Rng(0x1234_5678);
        let mut wheel = TimerWheel::new();
        let mut now = 0;
        for _ in 0..2_000 {
            let bits = rng.below(30) + 1;
            let deadline = now + 1 + rng.below(1 << bits);
            wheel.insert(deadline, deadline);
            let next = wheel.next_deadline().unwrap();
            // Jump straight to the reported deadline: whatever is due by then must fire by then.
            let earliest_due = drain(&mut wheel, next).into_iter().min();
            if let Some(fired) = earliest_due {
                assert!(fired <= next);
            }
            now = next;
        }
    }

    #[test]
    fn deadlines_across_every_level_fire_exactly_on_time() {
        let mut wheel = TimerWheel::new();
        let deadlines: Vec<u64> = (0..35).map(|bit| (1u64 << bit) + 3).collect();
        for &d in &deadlines {
            wheel.insert(d, d);
        }
        for &d in &deadlines {
            assert_eq!(
                drain(&mut wheel, d - 1),
                Vec::<u64>::new(),
                "early before {d}"
            );
            assert_eq!(drain(&mut wheel, d), vec![d]);
        }
    }

    #[test]
    fn far_deadlines_are_clamped_to_max_span() {
        let mut wheel = TimerWheel::new();
        wheel.insert(u64::MAX, 1u64);
        assert_eq!(drain(&mut wheel, MAX_SPAN - 1), Vec::<u64>::new());
        assert_eq!(drain(&mut wheel, MAX_SPAN), vec![1]);
    }

    #[test]
    fn top_level_wraps_across_a_carry() {
        // elapsed just below a 2^36 boundary, deadline just past it: the digits differ above the
        // top level, the entry must still fire exactly once at its deadline.
        let start = (1u64 << 36) - 5;
        let mut wheel = TimerWheel::new();
        drain(&mut wheel, start);
        let deadline = start + (1 << 34);
        wheel.insert(deadline, 9u64);
        wheel.insert(start + 10, 10u64);
        assert_eq!(drain(&mut wheel, start + 9), Vec::<u64>::new());
        assert_eq!(drain(&mut wheel, start + 10), vec![10]);
        assert_eq!(drain(&mut wheel, deadline - 1), Vec::<u64>::new());
        assert_eq!(drain(&mut wheel, deadline), vec![9]);
    }

    /// The scale test: a million timers, half cancelled, the rest expiring in deadline
    /// order under a fake clock that moves in irregular steps.
    #[test]
    fn a_million_timers_half_cancelled_expire_in_order() {
        const N: usize = 1_000_000;
        let mut rng = Rng(0xDEAD_BEEF);
        let mut wheel = TimerWheel::new();
        let mut keys = Vec::with_capacity(N);
        for i in 0..N {
            // Spread over ~1 hour, with a cluster in the first 64 ms to exercise level 0.
            let deadline = if i % 10 == 0 {
                rng.below(64)
            } else {
                rng.below(3_600_000)
            };
            keys.push((wheel.insert(deadline, deadline), deadline));
        }
        let mut live = 0;
        for (i, &(key, deadline)) in keys.iter().enumerate() {
            if i % 2 == 0 {
                assert_eq!(wheel.cancel(key), Some(deadline));
            } else {
                live += 1;
            }
        }
        assert_eq!(wheel.len(), live);

        let mut now = 0;
        let mut last = 0;
        let mut fired = 0;
        while wheel.len() > 0 {
            now += 1 + rng.below(5_000);
            while let Some(deadline) = wheel.poll(now) {
                assert!(deadline <= now, "{deadline} fired at {now}");
                assert!(deadline >= last, "{deadline} fired after {last}");
                // Nothing fires a step late: it was not due at the previous step's time.
                last = deadline;
                fired += 1;
            }
        }
        assert_eq!(fired, live);
        assert_eq!(wheel.next_deadline(), None);
    }

    #[test]
    fn nothing_is_held_back_past_its_deadline() {
        let mut rng = Rng(42);
        let mut wheel = TimerWheel::new();
        let mut now = 0u64;
        let mut outstanding = std::collections::BTreeMap::<u64, usize>::new();
        for _ in 0..50_000 {
            let deadline = now + rng.below(200_000);
            wheel.insert(deadline, deadline);
            *outstanding.entry(deadline).or_default() += 1;
            if rng.below(4) == 0 {
                now += rng.below(3_000);
                for d in drain(&mut wheel, now) {
                    let n = outstanding.get_mut(&d).unwrap();
                    *n -= 1;
                    if *n == 0 {
                        outstanding.remove(&d);
                    }
                }
                // Everything due by `now` has fired.
                assert!(outstanding.keys().next().is_none_or(|&d| d > now));
            }
        }
    }
}
