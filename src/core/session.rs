//! [`Session`]: one connection's protocol state, apart from its socket, and the decisions made
//! on it: how it ended and what its calls fail with ([`Ended`]), what waits to be written
//! ([`Outbox`]), what has been told of it ([`Lifecycle`]), when to ping ([`Keepalive`]) and
//! whether and when to come back after a loss ([`Backoff`]).
//!
//! The driver holds a `Session` in each connection beside the socket. It tells the session
//! what happened, on ticks: the connection opened ([`Session::handle_open`]) or was lost
//! ([`Session::handle_loss`]). It does what the session answers: arm the keepalive deadline,
//! or back off and reconnect, or end.

use std::time::Duration;

use super::backoff::Backoff;
use super::keepalive::Keepalive;
use super::lifecycle::Lifecycle;
use super::outbox::Outbox;
use crate::config::ReconnectPolicy;
use crate::error::{DisconnectReason, Error};
use crate::stats::ConnStats;

/// How a connection ended, once it has: decides what its calls fail with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Closed by this side.
    Closed,
    /// Ended without this side asking.
    Disconnected(DisconnectReason),
}

impl Ended {
    /// What a call that was never written fails with (also what a submit after the end gets).
    pub(crate) fn to_error(&self) -> Error {
        match self {
            Ended::Closed => Error::Closed,
            Ended::Disconnected(DisconnectReason::Handshake(why)) => {
                Error::Handshake(why.to_string())
            }
            Ended::Disconnected(reason) => Error::NotSent(reason.clone()),
        }
    }
}

/// What a connection deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnTimer {
    /// The TCP connect and the TLS and WebSocket handshakes may take until then.
    Connect,
    /// After our close frame, the peer's may take until then.
    Close,
    /// The backoff delay before the next attempt ends then.
    Reconnect,
    /// The keepalive schedule's next step (a ping, or the pong's deadline).
    Keepalive,
}

/// How a connection's pending calls are ended, for [`CallsEnd::fate`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum CallsEnd<'a> {
    /// Lost, and coming back under a reconnect policy: what was written fails, what was not
    /// waits for the next connection.
    Interrupted(&'a DisconnectReason),
    /// Over for good, this way.
    Over(&'a Ended),
    /// The loop shuts down.
    Shutdown,
}

impl CallsEnd<'_> {
    /// What a pending call fails with, `written` or not; `None`: it stays pending, waiting.
    ///
    /// A written call's request may have reached the server, which may have acted on it:
    /// it fails with [`Error::Disconnected`] (outcome unknown), never re-sent. An unwritten
    /// one never left: it fails with [`Ended::to_error`] (`NotSent`, `Closed`, `Handshake`),
    /// unless the connection comes back for it.
    pub(crate) fn fate(self, written: bool) -> Option<Error> {
        match (self, written) {
            (CallsEnd::Shutdown, _) => Some(Error::Shutdown),
            (CallsEnd::Interrupted(reason), true)
            | (CallsEnd::Over(Ended::Disconnected(reason)), true) => {
                Some(Error::Disconnected(reason.clone()))
            }
            (CallsEnd::Interrupted(_), false) => None,
            (CallsEnd::Over(ended), _) => Some(ended.to_error()),
        }
    }
}

/// The reconnect policy's state: its delays, and whether the connection was up long enough
/// to start them over.
#[derive(Debug)]
struct Comeback {
    backoff: Backoff,
    /// The tick the current connection opened at, while it is open.
    opened_at: Option<u64>,
    /// It opened at least once: the next open is a reconnect.
    opened_before: bool,
}

/// One connection's protocol state. `M` is what the outbox holds besides calls (the driver's
/// messages).
#[derive(Debug)]
pub(crate) struct Session<M> {
    /// Set once the connection stops taking calls (closed by us, or lost for good); the socket
    /// may still be finishing a close handshake.
    pub(crate) ended: Option<Ended>,
    /// The state changes told so far.
    pub(crate) lifecycle: Lifecycle,
    /// Calls and messages submitted while the connection cannot write, in submit order.
    pub(crate) outbox: Outbox<M>,
    /// Calls pending on this connection, counted until their completion is dispatched.
    pub(crate) in_flight: usize,
    pub(crate) stats: ConnStats,
    /// The ping schedule, while open with a `ping_interval`.
    pub(crate) keepalive: Option<Keepalive>,
    comeback: Option<Comeback>,
}

impl<M> Session<M> {
    /// A session that has not opened yet; with a reconnect `policy`, it comes back after a
    /// loss (`seed` seeds the policy's jitter).
    pub(crate) fn new(policy: Option<ReconnectPolicy>, seed: u64) -> Self {
        Session {
            ended: None,
            lifecycle: Lifecycle::default(),
            outbox: Outbox::default(),
            in_flight: 0,
            stats: ConnStats::default(),
            keepalive: None,
            comeback: policy.map(|policy| Comeback {
                backoff: Backoff::new(policy, seed),
                opened_at: None,
                opened_before: false,
            }),
        }
    }

    /// Whether a loss is followed by a reconnect (there is a policy, and the session has not
    /// ended).
    pub(crate) fn reconnects(&self) -> bool {
        self.comeback.is_some() && self.ended.is_none()
    }

    /// The connection opened at tick `now`. With `ping` (interval and pong timeout, in ticks)
    /// the keepalive schedule starts: returns the tick of its first deadline.
    pub(crate) fn handle_open(&mut self, now: u64, ping: Option<(u64, u64)>) -> Option<u64> {
        if let Some(comeback) = &mut self.comeback {
            if comeback.opened_before {
                self.stats.reconnects += 1;
            }
            comeback.opened_before = true;
            comeback.opened_at = Some(now);
        }
        let (interval, timeout) = ping?;
        let keepalive = Keepalive::new(interval, timeout, now);
        let due = keepalive.next_deadline();
        self.keepalive = Some(keepalive);
        Some(due)
    }

    /// The connection was lost at tick `now` (or could not be opened). Returns the next
    /// attempt and its delay, or `None` when the session must end: no policy, or out of
    /// attempts. A connection that stayed open for the policy's `reset_after` starts its
    /// delays over.
    pub(crate) fn handle_loss(&mut self, now: u64) -> Option<(u32, Duration)> {
        self.keepalive = None;
        let comeback = self.comeback.as_mut()?;
        if let Some(opened_at) = comeback.opened_at.take() {
            let up = u128::from(now.saturating_sub(opened_at));
            if up >= comeback.backoff.reset_after().as_millis() {
                comeback.backoff.reset();
            }
        }
        comeback.backoff.next_attempt()
    }

    /// The connection is over: drop what only a live connection needs (its queue, keepalive
    /// and reconnect state), so an ended session costs a few dozen bytes.
    pub(crate) fn release(&mut self) {
        self.keepalive = None;
        self.comeback = None;
        let messages = self.outbox.clear();
        if messages > 0 {
            log::debug!("{messages} queued messages dropped unsent: the connection ended");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_attempts: Option<u32>) -> ReconnectPolicy {
        ReconnectPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(800),
            multiplier: 2.0,
            jitter: 0.0,
            max_attempts,
            reset_after: Duration::from_secs(10),
        }
    }

    #[test]
    fn without_a_policy_a_loss_ends_the_session() {
        let mut s: Session<()> = Session::new(None, 1);
        assert!(!s.reconnects());
        assert_eq!(s.handle_open(0, None), None);
        assert_eq!(s.handle_loss(5), None);
    }

    #[test]
    fn delays_grow_then_start_over_after_a_stable_connection() {
        let mut s: Session<()> = Session::new(Some(policy(None)), 1);
        assert!(s.reconnects());
        s.handle_open(0, None);
        let delays: Vec<_> = (0..4)
            .map(|_| s.handle_loss(1_000).map(|(n, d)| (n, d.as_millis())))
            .collect();
        assert_eq!(
            delays,
            [
                Some((1, 100)),
                Some((2, 200)),
                Some((3, 400)),
                Some((4, 800))
            ]
        );
        // Up for 9.999 s: not stable, the delays go on growing (capped).
        s.handle_open(20_000, None);
        assert_eq!(s.handle_loss(29_999), Some((5, Duration::from_millis(800))));
        // Up for 10 s: they start over.
        s.handle_open(40_000, None);
        assert_eq!(s.handle_loss(50_000), Some((1, Duration::from_millis(100))));
        assert_eq!(
            s.stats.reconnects, 2,
            "every open after the first is a reconnect"
        );
    }

    #[test]
    fn out_of_attempts_the_session_ends() {
        let mut s: Session<()> = Session::new(Some(policy(Some(2))), 1);
        assert!(s.handle_loss(0).is_some());
        assert!(s.handle_loss(0).is_some());
        assert_eq!(s.handle_loss(0), None);
    }

    #[test]
    fn opening_starts_the_keepalive_and_a_loss_stops_it() {
        let mut s: Session<()> = Session::new(None, 1);
        assert_eq!(s.handle_open(1_000, Some((30_000, 10_000))), Some(31_000));
        assert!(s.keepalive.is_some());
        s.handle_loss(2_000);
        assert!(s.keepalive.is_none());
    }

    #[test]
    fn an_ended_session_neither_reconnects_nor_keeps_its_queue() {
        let mut s: Session<&str> = Session::new(Some(policy(None)), 1);
        s.outbox.push(super::super::outbox::Unsent::Message("m"), 1);
        s.ended = Some(Ended::Closed);
        assert!(!s.reconnects());
        s.release();
        assert!(s.outbox.is_empty());
        assert_eq!(s.handle_loss(0), None);
    }

    #[test]
    fn the_fate_of_a_call_depends_on_how_its_connection_ended_and_whether_it_left() {
        let reset = DisconnectReason::Reset;
        let lost = Ended::Disconnected(reset.clone());
        let show = |end: CallsEnd<'_>| {
            [true, false].map(|written| end.fate(written).map(|e| format!("{e:?}")))
        };
        assert_eq!(
            show(CallsEnd::Interrupted(&reset)),
            [Some("Disconnected(Reset)".into()), None],
            "unwritten calls wait for the next connection"
        );
        assert_eq!(
            show(CallsEnd::Over(&lost)),
            [
                Some("Disconnected(Reset)".into()),
                Some("NotSent(Reset)".into())
            ]
        );
        assert_eq!(
            show(CallsEnd::Over(&Ended::Closed)),
            [Some("Closed".into()), Some("Closed".into())]
        );
        assert_eq!(
            show(CallsEnd::Shutdown),
            [Some("Shutdown".into()), Some("Shutdown".into())]
        );
    }

    #[test]
    fn what_unwritten_calls_fail_with() {
        assert_eq!(
            Ended::Closed.to_error().to_string(),
            Error::Closed.to_string()
        );
        let lost = Ended::Disconnected(DisconnectReason::Reset);
        assert!(matches!(
            lost.to_error(),
            Error::NotSent(DisconnectReason::Reset)
        ));
        let refused = Ended::Disconnected(DisconnectReason::Handshake("404".into()));
        assert!(matches!(refused.to_error(), Error::Handshake(why) if why == "404"));
    }
}
