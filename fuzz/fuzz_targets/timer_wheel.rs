//! Arbitrary arm, cancel and advance on a `TimerWheel`, against a `BTreeMap` model.
//!
//! The input is a list of operations, each a tag byte and its operands:
//! - arm: a deadline ahead of now (short, long, or past `MAX_SPAN` and so clamped), at or
//!   before now (overdue), or at the far end of `u64`;
//! - cancel one of the keys handed out so far (a key whose timer was polled may have been
//!   handed out again: the model follows the key, as the wheel does);
//! - advance by a delay and poll until `None`; poll a few times only; or advance to what
//!   `next_deadline` says, as the event loop does.
//!
//! Checked (the wheel's rustdoc): a timer expires at its deadline, clamped to `MAX_SPAN` after
//! the wheel's time; never before its deadline; once `poll(now)` returns `None` nothing due at
//! or before `now` is left, and `next_deadline` lies after `now`; timers come out earliest
//! deadline first, except that those armed overdue come out before any other in no particular
//! order; `cancel` gives back the value of an armed timer and `None` for one that is
//! gone; `next_deadline` is `None` exactly when nothing is armed, and otherwise never later
//! than the earliest deadline (it may be earlier: a coarse slot reports its start), or, while
//! a timer armed overdue waits, than the wheel's time.

#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use libfuzzer_sys::fuzz_target;
use rpcloop::bench_support::{TimerKey, TimerWheel};

/// `core::wheel::MAX_SPAN`: the furthest a deadline may lie ahead of the wheel's time.
const MAX_SPAN: u64 = (1 << 35) - 1;

/// Enough operations to fill and drain several levels; bounded, so one input stays fast.
const MAX_OPS: usize = 4096;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn u32(&mut self) -> u32 {
        let mut bytes = [0; 4];
        for b in &mut bytes {
            *b = self.byte().unwrap_or(0);
        }
        u32::from_le_bytes(bytes)
    }

    /// A delay: `scale` picks short (a right shift of 32 random bits) or long (a left shift).
    fn delay(&mut self, scale: u8) -> u64 {
        let v = u64::from(self.u32());
        if scale & 0x20 == 0 {
            v >> (scale & 31)
        } else {
            v << (scale & 15)
        }
    }
}

#[derive(Default)]
struct Model {
    /// The wheel's time as its documentation defines it: everything due at or before it has
    /// been handed out or is waiting in the next `poll`. It is the latest `now` a `poll`
    /// returned `None` at, or the deadline of a timer a `poll` returned, whichever is later.
    elapsed: u64,
    /// The caller's clock (never behind `elapsed`).
    now: u64,
    /// Armed timers by value: their deadline (clamped as the wheel clamps it), their key, and
    /// whether they were armed already overdue.
    armed: BTreeMap<u64, (u64, TimerKey, bool)>,
    /// The same timers by deadline.
    by_deadline: BTreeSet<(u64, u64)>,
    /// Those of them armed with a deadline after the wheel's time, by deadline.
    filed: BTreeSet<(u64, u64)>,
    next_value: u64,
    /// Every key handed out, live or not.
    keys: Vec<TimerKey>,
}

impl Model {
    fn earliest(&self) -> Option<u64> {
        self.by_deadline.first().map(|&(deadline, _)| deadline)
    }

    fn remove(&mut self, value: u64) -> (u64, TimerKey, bool) {
        let entry = self
            .armed
            .remove(&value)
            .unwrap_or_else(|| panic!("the wheel handed out {value}, which is not armed"));
        self.by_deadline.remove(&(entry.0, value));
        self.filed.remove(&(entry.0, value));
        entry
    }

    fn arm(&mut self, wheel: &mut TimerWheel<u64>, deadline: u64) {
        let value = self.next_value;
        self.next_value += 1;
        let key = wheel.insert(deadline, value);
        // A key handed out again belongs to the new timer: the old one must be gone.
        assert!(
            self.armed.values().all(|&(_, k, _)| k != key),
            "{key:?} handed out while its timer is armed"
        );
        let clamped = deadline.min(self.elapsed.saturating_add(MAX_SPAN));
        let overdue = deadline <= self.elapsed;
        self.armed.insert(value, (clamped, key, overdue));
        self.by_deadline.insert((clamped, value));
        if !overdue {
            self.filed.insert((clamped, value));
        }
        if self.keys.len() < 256 {
            self.keys.push(key);
        } else {
            let slot = (value as usize * 7919) % self.keys.len();
            self.keys[slot] = key;
        }
    }

    fn cancel(&mut self, wheel: &mut TimerWheel<u64>, key: TimerKey) {
        let armed = self
            .armed
            .iter()
            .find(|(_, (_, k, _))| *k == key)
            .map(|(&v, _)| v);
        let got = wheel.cancel(key);
        assert_eq!(got, armed, "cancel({key:?})");
        if let Some(value) = armed {
            self.remove(value);
        }
        // Cancelling again finds nothing.
        assert_eq!(wheel.cancel(key), None, "a second cancel({key:?})");
    }

    /// One `poll(now)`; whether it returned a timer.
    fn poll_once(&mut self, wheel: &mut TimerWheel<u64>) -> bool {
        let now = self.now;
        match wheel.poll(now) {
            Some(value) => {
                let (deadline, _, overdue) = self.remove(value);
                assert!(
                    deadline <= now,
                    "timer {value} (deadline {deadline}) expired at {now}"
                );
                // Earliest deadline first: no timer still armed is due earlier; except that
                // timers armed overdue come out before any other, in no particular order
                // among themselves (the wheel's rustdoc).
                let earliest = if overdue {
                    self.filed.first().map(|&(deadline, _)| deadline)
                } else {
                    self.earliest()
                };
                if let Some(earliest) = earliest {
                    assert!(
                        deadline <= earliest,
                        "timer {value} (deadline {deadline}, armed overdue: {overdue}) \
                         expired before one due at {earliest}"
                    );
                }
                self.elapsed = self.elapsed.max(deadline);
                true
            }
            None => {
                if let Some(earliest) = self.earliest() {
                    assert!(
                        earliest > now,
                        "poll({now}) returned None with a timer due at {earliest}"
                    );
                }
                self.elapsed = self.elapsed.max(now);
                if let Some(next) = wheel.next_deadline() {
                    assert!(
                        next > now,
                        "next_deadline {next} after poll({now}) returned None"
                    );
                }
                false
            }
        }
    }

    fn drain(&mut self, wheel: &mut TimerWheel<u64>) {
        // Each poll hands out a timer or ends: at most one more poll than timers armed.
        for _ in 0..=self.armed.len() {
            if !self.poll_once(wheel) {
                return;
            }
        }
        panic!("poll({}) kept returning timers", self.now);
    }

    fn check_next_deadline(&self, wheel: &TimerWheel<u64>) {
        match (wheel.next_deadline(), self.earliest()) {
            (None, None) => {}
            (Some(next), Some(earliest)) => {
                // A timer armed overdue waits in the next poll, which reports the wheel's
                // time; otherwise the documented bound: never later than the earliest.
                assert!(
                    next <= earliest.max(self.elapsed),
                    "next_deadline {next}, but a timer is due at {earliest} (wheel at {})",
                    self.elapsed
                );
            }
            (next, earliest) => panic!("next_deadline {next:?} with the earliest at {earliest:?}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let mut wheel = TimerWheel::<u64>::new();
    let mut model = Model::default();
    for _ in 0..MAX_OPS {
        let Some(tag) = input.byte() else { break };
        match tag % 8 {
            // Arm.
            0..=2 => {
                let scale = input.byte().unwrap_or(0);
                let deadline = match scale >> 6 {
                    0 | 1 => model.now.saturating_add(input.delay(scale)),
                    2 => model.now.saturating_sub(u64::from(input.u32())),
                    _ => u64::MAX - u64::from(input.u32()),
                };
                model.arm(&mut wheel, deadline);
            }
            // Cancel a key handed out so far.
            3 => {
                let pick = usize::from(input.byte().unwrap_or(0));
                if !model.keys.is_empty() {
                    let key = model.keys[pick % model.keys.len()];
                    model.cancel(&mut wheel, key);
                }
            }
            // Advance by a delay and poll until nothing is due.
            4 | 5 => {
                let scale = input.byte().unwrap_or(0);
                model.now = model.now.saturating_add(input.delay(scale));
                model.drain(&mut wheel);
            }
            // Advance, and poll a few times only (the rest waits in the wheel).
            6 => {
                let scale = input.byte().unwrap_or(0);
                let polls = input.byte().unwrap_or(0) % 4;
                model.now = model.now.saturating_add(input.delay(scale));
                for _ in 0..polls {
                    if !model.poll_once(&mut wheel) {
                        break;
                    }
                }
            }
            // Sleep until next_deadline, as the event loop does, and poll until nothing is due.
            _ => {
                if let Some(next) = wheel.next_deadline() {
                    model.now = model.now.max(next);
                }
                model.drain(&mut wheel);
            }
        }
        model.check_next_deadline(&wheel);
    }
    // Whatever is left expires by its (clamped) deadline, in order.
    while let Some(earliest) = model.earliest() {
        model.now = model.now.max(earliest);
        model.drain(&mut wheel);
    }
    assert_eq!(wheel.next_deadline(), None);
});
