//! [`Keepalive`]: when to ping an open connection, and when its silence means the peer is dead.
//!
//! A ping goes out every `interval` ticks whatever else happens on the connection. After a ping
//! the peer has `timeout` ticks to send anything at all; silence past that means a dead peer or
//! a half-open TCP connection. Only what *arrives* counts: writes prove nothing about the peer,
//! so a client busy sending to a vanished server still notices (resetting the timer on every
//! write, as some libraries do, hides exactly that case).

/// What the driver must do when the keepalive deadline fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeepaliveAction {
    /// Nothing yet; re-arm at [`Keepalive::next_deadline`].
    Wait,
    /// Send a ping now.
    Ping,
    /// Nothing arrived within the timeout after a ping: the peer is gone.
    Dead,
}

/// The keepalive schedule of one open connection, on the core's millisecond ticks.
#[derive(Debug, Clone)]
pub(crate) struct Keepalive {
    interval: u64,
    timeout: u64,
    next_ping: u64,
    /// When a ping is outstanding: the tick by which the peer must have said something.
    pong_deadline: Option<u64>,
    /// Something arrived since the outstanding ping went out.
    heard: bool,
}

impl Keepalive {
    /// A schedule for a connection opened at tick `now`: the first ping is due one `interval`
    /// later. Intervals and timeouts of 0 count as 1 tick.
    pub(crate) fn new(interval: u64, timeout: u64, now: u64) -> Self {
        let interval = interval.max(1);
        Keepalive {
            interval,
            timeout: timeout.max(1),
            next_ping: now.saturating_add(interval),
            pong_deadline: None,
            heard: false,
        }
    }

    /// Something arrived from the peer (any frame: an answer, a pong, a ping, a push).
    #[inline]
    pub(crate) fn handle_received(&mut self) {
        self.heard = true;
    }

    /// The deadline fired at tick `now` (or later): what to do.
    pub(crate) fn handle_timeout(&mut self, now: u64) -> KeepaliveAction {
        if let Some(deadline) = self.pong_deadline {
            if self.heard {
                self.pong_deadline = None;
            } else if now >= deadline {
                return KeepaliveAction::Dead;
            }
        }
        if now < self.next_ping {
            return KeepaliveAction::Wait;
        }
        // From now, not from the missed tick: a loop that stalled sends one ping, not a burst.
        self.next_ping = now.saturating_add(self.interval);
        if self.pong_deadline.is_none() {
            self.heard = false;
            self.pong_deadline = Some(now.saturating_add(self.timeout));
        }
        KeepaliveAction::Ping
    }

    /// The tick at which [`handle_timeout`](Self::handle_timeout) has something to do.
    pub(crate) fn next_deadline(&self) -> u64 {
        self.pong_deadline
            .map_or(self.next_ping, |deadline| deadline.min(self.next_ping))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use KeepaliveAction::*;

    /// Fires every deadline up to `until`, replying to each ping `reply` ticks later (never if
    /// `None`); returns the ticks of the pings and of death, if any.
    fn run(k: &mut Keepalive, until: u64, reply: Option<u64>) -> (Vec<u64>, Option<u64>) {
        let mut pings = Vec::new();
        let mut replies = Vec::new();
        loop {
            let at = k.next_deadline();
            let next_reply = replies.first().copied().unwrap_or(u64::MAX);
            if next_reply <= at && next_reply <= until {
                replies.remove(0);
                k.handle_received();
                continue;
            }
            if at > until {
                return (pings, None);
            }
            match k.handle_timeout(at) {
                Wait => {}
                Ping => {
                    pings.push(at);
                    if let Some(r) = reply {
                        replies.push(at + r);
                    }
                }
                Dead => return (pings, Some(at)),
            }
        }
    }

    #[test]
    fn a_peer_that_answers_is_pinged_every_interval_and_lives() {
        let mut k = Keepalive::new(1_000, 300, 0);
        let (pings, death) = run(&mut k, 10_000, Some(50));
        assert_eq!(pings, (1..=10).map(|s| s * 1_000).collect::<Vec<_>>());
        assert_eq!(death, None);
    }

    #[test]
    fn a_silent_peer_is_dead_one_timeout_after_the_first_ping() {
        let mut k = Keepalive::new(1_000, 300, 0);
        assert_eq!(run(&mut k, 10_000, None), (vec![1_000], Some(1_300)));
    }

    #[test]
    fn a_reply_just_after_the_deadline_is_too_late() {
        let mut k = Keepalive::new(1_000, 300, 0);
        assert_eq!(run(&mut k, 10_000, Some(301)), (vec![1_000], Some(1_300)));
    }

    #[test]
    fn only_what_arrives_after_the_ping_counts() {
        let mut k = Keepalive::new(100, 50, 0);
        k.handle_received(); // before the ping: proves nothing about later
        assert_eq!(k.handle_timeout(100), Ping);
        assert_eq!(k.next_deadline(), 150);
        assert_eq!(k.handle_timeout(150), Dead);
    }

    #[test]
    fn a_timeout_longer_than_the_interval_keeps_pinging_while_waiting() {
        let mut k = Keepalive::new(100, 250, 0);
        assert_eq!(run(&mut k, 1_000, None), (vec![100, 200, 300], Some(350)));
        let mut k = Keepalive::new(100, 250, 0);
        let (pings, death) = run(&mut k, 1_000, Some(240));
        assert_eq!((pings.len(), death), (10, None));
    }

    #[test]
    fn a_stalled_loop_sends_one_ping_not_a_burst() {
        let mut k = Keepalive::new(100, 1_000, 0);
        assert_eq!(k.handle_timeout(5_000), Ping);
        assert_eq!(k.handle_timeout(5_000), Wait);
        assert_eq!(k.next_deadline(), 5_100);
    }

    #[test]
    fn zero_settings_count_as_one_tick() {
        let mut k = Keepalive::new(0, 0, 10);
        assert_eq!(k.next_deadline(), 11);
        assert_eq!(k.handle_timeout(11), Ping);
        assert_eq!(k.handle_timeout(12), Dead);
    }
}
