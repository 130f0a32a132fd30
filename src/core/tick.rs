//! The one place an [`Instant`] becomes a millisecond tick.
//!
//! The core counts time in whole milliseconds since the loop's origin (`u64` ticks). Deadlines
//! round *up* and "now" rounds *down*, so a timer can fire late by under a millisecond but never
//! early. Every conversion saturates: an instant before the origin is tick 0, and a duration too
//! large for `u64` milliseconds is `u64::MAX`.

use std::time::{Duration, Instant};

/// Converts between [`Instant`]s and the core's millisecond ticks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    origin: Instant,
}

impl Clock {
    /// A clock whose tick 0 is `origin`.
    pub(crate) fn new(origin: Instant) -> Self {
        Clock { origin }
    }

    /// The tick at which something due at `deadline` may fire (rounded up).
    #[cfg(test)]
    pub(crate) fn deadline_tick(&self, deadline: Instant) -> u64 {
        let since = deadline.saturating_duration_since(self.origin);
        let ms = millis_floor(since);
        if since > Duration::from_millis(ms) {
            ms.saturating_add(1)
        } else {
            ms
        }
    }

    /// The tick of `now` (rounded down): everything due at or before it has expired.
    pub(crate) fn now_tick(&self, now: Instant) -> u64 {
        millis_floor(now.saturating_duration_since(self.origin))
    }

    /// The instant at which `tick` begins, or `None` if it is beyond what `Instant` can hold.
    pub(crate) fn instant_of(&self, tick: u64) -> Option<Instant> {
        self.origin.checked_add(Duration::from_millis(tick))
    }
}

/// A duration in whole milliseconds (ticks), rounded down, saturating.
pub(crate) fn millis(d: Duration) -> u64 {
    millis_floor(d)
}

/// The tick at which something due `after` tick `now` may fire. `now` is rounded down, so
/// the instant it stands for may be up to a tick later: a non-zero duration is rounded up and
/// a tick added, so the deadline is never early. Zero is `now` (due at once). Saturates.
pub(crate) fn tick_after(now: u64, after: Duration) -> u64 {
    if after.is_zero() {
        return now;
    }
    let ms = millis_floor(after);
    let ms = if after.subsec_nanos() % 1_000_000 != 0 {
        ms.saturating_add(1)
    } else {
        ms
    };
    now.saturating_add(ms).saturating_add(1)
}

/// Whole milliseconds, saturating; in u64 arithmetic (`Duration::as_millis` is u128, and this
/// runs for every call).
fn millis_floor(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000)
        .saturating_add(u64::from(d.subsec_millis()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_round_up_and_now_rounds_down() {
        let origin = Instant::now();
        let clock = Clock::new(origin);
        let t = origin + Duration::from_micros(1_500);
        assert_eq!(clock.deadline_tick(t), 2);
        assert_eq!(clock.now_tick(t), 1);
        let exact = origin + Duration::from_millis(7);
        assert_eq!(clock.deadline_tick(exact), 7);
        assert_eq!(clock.now_tick(exact), 7);
    }

    #[test]
    fn before_origin_saturates_to_zero() {
        let origin = Instant::now() + Duration::from_secs(1);
        let clock = Clock::new(origin);
        assert_eq!(clock.now_tick(Instant::now()), 0);
        assert_eq!(clock.deadline_tick(Instant::now()), 0);
    }

    #[test]
    fn tick_after_rounds_a_duration_up_and_saturates() {
        assert_eq!(tick_after(5, Duration::ZERO), 5);
        assert_eq!(tick_after(5, Duration::from_nanos(1)), 7);
        assert_eq!(tick_after(5, Duration::from_millis(2)), 8);
        assert_eq!(tick_after(5, Duration::from_micros(1_500)), 8);
        assert_eq!(tick_after(5, Duration::new(3, 999_999_999)), 5 + 4_000 + 1);
        assert_eq!(tick_after(5, Duration::MAX), u64::MAX);
        assert_eq!(millis(Duration::new(u64::MAX / 999, 0)), u64::MAX);
    }

    #[test]
    fn a_timer_never_fires_early() {
        let origin = Instant::now();
        let clock = Clock::new(origin);
        for us in [0u64, 1, 999, 1_000, 1_001, 123_456] {
            let due = origin + Duration::from_micros(us);
            let tick = clock.deadline_tick(due);
            // The earliest "now" whose tick reaches the deadline's tick is not before `due`.
            let first_now = clock.instant_of(tick).unwrap();
            assert!(first_now >= due, "{us}us");
            assert_eq!(clock.now_tick(first_now), tick);
        }
    }
}
