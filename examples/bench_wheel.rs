//! The deadline wheel against the obvious alternatives, side by side in one run.
//!
//! ```text
//! cargo run --release --example bench_wheel
//! ```
//!
//! - **arm+cancel**: 1,000,000 pairs with 10,000 timers armed throughout (calls answered in
//!   order, 30 s deadlines, time advancing one millisecond tick every 100 calls): the life of a
//!   call that gets its answer.
//! - **expiry**: 1,000,000 timers spread over 60 s, then time advances tick by tick and every
//!   timer is polled out: the life of a call that times out. Only the polling is timed.
//!
//! Baselines: a `BTreeMap` keyed by (deadline, sequence), and a `BinaryHeap` with lazy
//! cancellation (a cancelled timer stays in the heap, flagged, until it surfaces). Each figure
//! is the median of 3 runs, in ns per operation. Also printed: heap allocations made by a warm
//! wheel during the arm+cancel run (a counting allocator), and the bytes one pending call
//! occupies in the loop's tables.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::hint::black_box;
use std::time::Instant;

mod bench_common;

use bench_common::{CountingAlloc, allocations};
use rpcloop::bench_support::{TimerKey, TimerWheel, pending_call_bytes};

const OPS: u64 = 1_000_000;
const LIVE: usize = 10_000;
const TIMEOUT: u64 = 30_000;
const SPREAD: u64 = 60_000;
const RUNS: usize = 3;

/// Counts heap allocations, to show the warm wheel makes none.
#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

/// A timer queue as the benchmark drives it.
trait Timers {
    type Key: Copy;
    fn arm(&mut self, deadline: u64, value: usize) -> Self::Key;
    fn cancel(&mut self, key: Self::Key);
    /// One expired value, if any is due at `now`.
    fn poll(&mut self, now: u64) -> Option<usize>;
}

impl Timers for TimerWheel<usize> {
    type Key = TimerKey;
    fn arm(&mut self, deadline: u64, value: usize) -> TimerKey {
        self.insert(deadline, value)
    }
    fn cancel(&mut self, key: TimerKey) {
        black_box(TimerWheel::cancel(self, key));
    }
    fn poll(&mut self, now: u64) -> Option<usize> {
        TimerWheel::poll(self, now)
    }
}

#[derive(Default)]
struct BTree {
    map: BTreeMap<(u64, u64), usize>,
    seq: u64,
}

impl Timers for BTree {
    type Key = (u64, u64);
    fn arm(&mut self, deadline: u64, value: usize) -> (u64, u64) {
        self.seq += 1;
        self.map.insert((deadline, self.seq), value);
        (deadline, self.seq)
    }
    fn cancel(&mut self, key: (u64, u64)) {
        black_box(self.map.remove(&key));
    }
    fn poll(&mut self, now: u64) -> Option<usize> {
        let entry = self.map.first_entry()?;
        (entry.key().0 <= now).then(|| entry.remove())
    }
}

/// A heap with lazy cancellation: `cancelled[seq]` marks entries to skip when they surface.
#[derive(Default)]
struct Heap {
    heap: BinaryHeap<Reverse<(u64, u64, usize)>>,
    cancelled: Vec<bool>,
}

impl Timers for Heap {
    type Key = u64;
    fn arm(&mut self, deadline: u64, value: usize) -> u64 {
        let seq = self.cancelled.len() as u64;
        self.cancelled.push(false);
        self.heap.push(Reverse((deadline, seq, value)));
        seq
    }
    fn cancel(&mut self, key: u64) {
        self.cancelled[key as usize] = true;
    }
    fn poll(&mut self, now: u64) -> Option<usize> {
        while let Some(&Reverse((deadline, seq, value))) = self.heap.peek() {
            if deadline > now {
                return None;
            }
            self.heap.pop();
            if !self.cancelled[seq as usize] {
                return Some(value);
            }
        }
        None
    }
}

/// A small deterministic generator (xorshift), so every structure sees the same deadlines.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// ns per arm+cancel pair, and the allocations made during the timed part.
fn arm_cancel<T: Timers>(mut timers: T) -> (f64, u64) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut live = VecDeque::with_capacity(LIVE);
    let mut now = 0;
    // Warm up: fill the window once, and run a full cycle so the structure has its final size.
    for i in 0..(LIVE as u64 * 2) {
        if live.len() == LIVE {
            timers.cancel(live.pop_front().expect("full"));
        }
        live.push_back(timers.arm(now + TIMEOUT + rng.below(100), i as usize));
    }
    let allocated = allocations();
    let start = Instant::now();
    for i in 0..OPS {
        timers.cancel(live.pop_front().expect("full"));
        live.push_back(timers.arm(now + TIMEOUT + rng.below(100), i as usize));
        if i % 100 == 0 {
            now += 1;
            black_box(timers.poll(now));
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / OPS as f64;
    (ns, allocations() - allocated)
}

/// ns per expired timer, polling tick by tick.
fn expiry<T: Timers>(mut timers: T) -> f64 {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for i in 0..OPS {
        timers.arm(1 + rng.below(SPREAD), i as usize);
    }
    let start = Instant::now();
    let mut expired = 0;
    let mut now = 0;
    while expired < OPS {
        now += 1;
        while let Some(value) = timers.poll(now) {
            black_box(value);
            expired += 1;
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / OPS as f64;
    assert!(now <= SPREAD, "every timer expires by its deadline");
    ns
}

fn median(mut runs: Vec<f64>) -> f64 {
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

fn main() {
    println!("timer queues, median of {RUNS} runs, ns per operation (ratio to the wheel)\n");
    println!("| structure | arm+cancel ns | ratio | expiry ns | ratio |");
    println!("|---|---|---|---|---|");
    let mut wheel_allocations = 0;
    let mut figures = Vec::new();
    for name in ["TimerWheel", "BTreeMap", "BinaryHeap (lazy cancel)"] {
        let mut pairs = Vec::new();
        let mut expiries = Vec::new();
        for _ in 0..RUNS {
            let (pair, allocations, expire) = match name {
                "TimerWheel" => {
                    let (ns, a) = arm_cancel(TimerWheel::<usize>::new());
                    (ns, a, expiry(TimerWheel::<usize>::new()))
                }
                "BTreeMap" => {
                    let (ns, a) = arm_cancel(BTree::default());
                    (ns, a, expiry(BTree::default()))
                }
                _ => {
                    let (ns, a) = arm_cancel(Heap::default());
                    (ns, a, expiry(Heap::default()))
                }
            };
            if name == "TimerWheel" {
                wheel_allocations = wheel_allocations.max(allocations);
            }
            pairs.push(pair);
            expiries.push(expire);
        }
        figures.push((name, median(pairs), median(expiries)));
    }
    let (_, wheel_pair, wheel_expiry) = figures[0];
    for (name, pair, expire) in figures {
        println!(
            "| {name} | {pair:.1} | {:.2} | {expire:.1} | {:.2} |",
            pair / wheel_pair,
            expire / wheel_expiry
        );
    }
    println!(
        "\nwarm wheel: {wheel_allocations} heap allocations in {OPS} arm+cancel pairs\n\
         bytes per pending call (pending-table slot + wheel node): {}",
        pending_call_bytes()
    );
}
