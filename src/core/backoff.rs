//! [`Backoff`]: the delays between reconnect attempts, drawn from a [`ReconnectPolicy`].
//!
//! Plain arithmetic on a seeded generator: no clock, no randomness source of its own, so the
//! sequence of delays is unit-tested exactly.

use std::time::Duration;

use crate::config::ReconnectPolicy;

/// Consecutive failed attempts since the connection was last stable, and the next delays.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    policy: ReconnectPolicy,
    /// Attempts spent since the last [`reset`](Self::reset).
    attempts: u32,
    /// splitmix64 state: enough to spread clients apart, not a secret.
    rng: u64,
}

impl Backoff {
    pub(crate) fn new(policy: ReconnectPolicy, seed: u64) -> Self {
        Backoff {
            policy,
            attempts: 0,
            rng: seed,
        }
    }

    /// The connection stayed open long enough: the next loss starts from the initial delay.
    pub(crate) fn reset(&mut self) {
        self.attempts = 0;
    }

    /// The policy's `reset_after`.
    pub(crate) fn reset_after(&self) -> Duration {
        self.policy.reset_after
    }

    /// Spends one attempt: its number (from 1) and the delay to wait before it, or `None` once
    /// `max_attempts` consecutive attempts have been spent.
    pub(crate) fn next_attempt(&mut self) -> Option<(u32, Duration)> {
        if self
            .policy
            .max_attempts
            .is_some_and(|max| self.attempts >= max)
        {
            return None;
        }
        self.attempts = self.attempts.saturating_add(1);
        let ceiling = self.ceiling(self.attempts).as_secs_f64();
        let jitter = self.policy.jitter.clamp(0.0, 1.0);
        let delay = ceiling * (1.0 - jitter * self.next_unit());
        Some((self.attempts, Duration::from_secs_f64(delay.max(0.0))))
    }

    /// The delay before attempt `n` without jitter: the initial delay grown `n - 1` times,
    /// capped.
    fn ceiling(&self, n: u32) -> Duration {
        let p = &self.policy;
        let growth = p
            .multiplier
            .max(1.0)
            .powi(i32::try_from(n - 1).unwrap_or(i32::MAX));
        let grown = p.initial_delay.as_secs_f64() * growth;
        if grown.is_finite() && grown < p.max_delay.as_secs_f64() {
            Duration::from_secs_f64(grown)
        } else {
            p.max_delay
        }
    }

    /// A number in `[0, 1)`.
    fn next_unit(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // The top 53 bits make an exact f64 fraction.
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ReconnectPolicy {
        ReconnectPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            multiplier: 2.0,
            jitter: 0.5,
            max_attempts: None,
            reset_after: Duration::from_secs(30),
        }
    }

    #[test]
    fn delays_grow_within_their_jitter_band_and_stop_at_the_cap() {
        let mut b = Backoff::new(policy(), 7);
        let mut ceilings = Vec::new();
        for n in 1..=20 {
            let (attempt, delay) = b.next_attempt().unwrap();
            assert_eq!(attempt, n);
            let ceiling =
                Duration::from_millis(100 * (1 << (n - 1).min(6))).min(policy().max_delay);
            assert!(delay <= ceiling, "attempt {n}: {delay:?} > {ceiling:?}");
            assert!(
                delay >= ceiling / 2,
                "attempt {n}: {delay:?} < half of {ceiling:?}"
            );
            ceilings.push(ceiling);
        }
        assert_eq!(
            ceilings[..7],
            [100, 200, 400, 800, 1600, 3200, 5000].map(Duration::from_millis)
        );
        assert!(ceilings[7..].iter().all(|&c| c == Duration::from_secs(5)));
    }

    #[test]
    fn jitter_spreads_clients_apart() {
        let firsts: Vec<Duration> = (0..100)
            .map(|seed| Backoff::new(policy(), seed).next_attempt().unwrap().1)
            .collect();
        let distinct: std::collections::BTreeSet<_> = firsts.iter().collect();
        assert!(
            distinct.len() > 90,
            "{} distinct delays of 100",
            distinct.len()
        );
        let none = ReconnectPolicy {
            jitter: 0.0,
            ..policy()
        };
        assert_eq!(
            Backoff::new(none, 3).next_attempt(),
            Some((1, Duration::from_millis(100)))
        );
    }

    #[test]
    fn a_budget_of_attempts_runs_out_and_comes_back_after_a_reset() {
        let limited = ReconnectPolicy {
            max_attempts: Some(3),
            ..policy()
        };
        let mut b = Backoff::new(limited, 1);
        assert_eq!(b.next_attempt().map(|a| a.0), Some(1));
        assert_eq!(b.next_attempt().map(|a| a.0), Some(2));
        assert_eq!(b.next_attempt().map(|a| a.0), Some(3));
        assert_eq!(b.next_attempt(), None);
        assert_eq!(b.next_attempt(), None);
        b.reset();
        let (attempt, delay) = b.next_attempt().unwrap();
        assert_eq!(attempt, 1);
        assert!(delay <= Duration::from_millis(100));
    }

    #[test]
    fn absurd_policies_stay_finite() {
        let wild = ReconnectPolicy {
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            multiplier: f64::MAX,
            jitter: 7.0,
            max_attempts: None,
            reset_after: Duration::ZERO,
        };
        let mut b = Backoff::new(wild, 0);
        for _ in 0..100_000 {
            let (_, delay) = b.next_attempt().unwrap();
            assert!(delay <= Duration::from_secs(60));
        }
        let shrinking = ReconnectPolicy {
            multiplier: 0.1,
            jitter: 0.0,
            ..policy()
        };
        let mut b = Backoff::new(shrinking, 0);
        b.next_attempt();
        assert_eq!(b.next_attempt(), Some((2, Duration::from_millis(100))));
    }
}
