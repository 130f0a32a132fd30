//! [`Session`]: one connection's protocol state, apart from its socket, and the decisions made
//! on it: where it is in its life ([`Stage`]), how it ended and what its calls fail with
//! ([`Ended`]), what waits to be written ([`Outbox`]), what has been told of it
//! ([`Lifecycle`]), when to ping ([`Keepalive`]) and whether and when to come back after a
//! loss ([`Backoff`]).
//!
//! The [`Engine`](super::engine::Engine) holds a `Session` per connection and sequences these
//! decisions with the loop-wide call table; the session never sees a socket.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::backoff::Backoff;
use super::conn_id::ConnId;
use super::event::ConnState;
use super::keepalive::Keepalive;
use super::lifecycle::Lifecycle;
use super::outbox::Outbox;
use super::wheel::TimerKey;
use crate::config::ConnectionConfig;
use crate::error::{DisconnectReason, Error};
use crate::stats::ConnStats;

/// The most a WebSocket frame adds to its payload (RFC 6455 §5.2): 2 bytes, 8 of extended
/// length, and the client's 4-byte mask.
const FRAME_HEADER: usize = 14;

/// Where a connection is in its life: one value, changed only by the engine's named
/// transitions. Once it has ended, it says how ([`Ended`]).
///
/// ```text
/// Connecting -> Open -> Closing -> Released
///     |          |         ^
///     |          +---------+  (closed by us, or by the peer with no way back)
///     +----------+--> Reconnecting -> Connecting   (lost, under a reconnect policy)
///     +----------+--> Released                     (lost for good, or closed before open)
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stage {
    /// The driver is opening the socket: TCP connect, TLS, the opening handshake.
    Connecting,
    /// Open: frames are written as the driver polls them.
    Open,
    /// Lost, waiting out the backoff delay.
    Reconnecting,
    /// Ended, with the socket still up for the close handshake.
    Closing(Ended),
    /// Over, socket dropped; the session is freed once its `Released` event is polled.
    Released(Ended),
}

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

/// One connection's protocol state.
#[derive(Debug)]
pub(crate) struct Session {
    /// Its id: its slot in the engine's table and that slot's generation.
    pub(crate) id: ConnId,
    pub(crate) config: ConnectionConfig,
    /// The largest message the connection takes: `max_message_size`, and small enough to fit
    /// `max_write_buffer` with its frame header even when the buffer is empty, or the socket
    /// would refuse it for ever (found by the chaos soak: `turn` looped on such a frame).
    pub(crate) message_limit: usize,
    pub(crate) stage: Stage,
    /// The state changes told so far.
    pub(crate) lifecycle: Lifecycle,
    /// What waits to be written, in submit order.
    pub(crate) outbox: Outbox,
    /// The socket refused a write: nothing is offered until it takes writes again.
    pub(crate) blocked: bool,
    /// Listed in the engine's list of sessions with frames to poll.
    pub(crate) listed: bool,
    /// The peer broke the protocol: nothing more it sends counts, the connection fails once
    /// what was read before is delivered.
    pub(crate) violated: bool,
    /// The sockets the connection has had: each connect attempt opens a new one.
    pub(crate) sockets: u32,
    /// Calls pending on this connection, counted until their completion is polled.
    pub(crate) in_flight: usize,
    pub(crate) stats: ConnStats,
    /// The ping schedule, while open with a `ping_interval`.
    pub(crate) keepalive: Option<Keepalive>,
    /// The connect, close or reconnect deadline.
    pub(crate) timer: Option<TimerKey>,
    /// The keepalive deadline.
    pub(crate) keepalive_timer: Option<TimerKey>,
    /// Live subscriptions by key (the subscribe call's result, as JSON text).
    pub(crate) keys: HashMap<Box<str>, u64>,
    /// Methods whose notifications have a handler.
    pub(crate) methods: HashSet<Box<str>>,
    comeback: Option<Comeback>,
}

impl Session {
    /// A session that has not opened yet; with a reconnect policy in `config`, it comes back
    /// after a loss (`seed` seeds the policy's jitter).
    pub(crate) fn new(id: ConnId, config: ConnectionConfig, seed: u64) -> Self {
        let comeback = config.reconnect.map(|policy| Comeback {
            backoff: Backoff::new(policy, seed),
            opened_at: None,
            opened_before: false,
        });
        let message_limit = config
            .max_message_size
            .min(config.max_write_buffer.saturating_sub(FRAME_HEADER));
        Session {
            id,
            message_limit,
            config,
            stage: Stage::Connecting,
            lifecycle: Lifecycle::default(),
            outbox: Outbox::default(),
            blocked: false,
            listed: false,
            violated: false,
            sockets: 1,
            in_flight: 0,
            stats: ConnStats::default(),
            keepalive: None,
            timer: None,
            keepalive_timer: None,
            keys: HashMap::new(),
            methods: HashSet::new(),
            comeback,
        }
    }

    /// Where the connection is, as the application sees it.
    pub(crate) fn state(&self) -> ConnState {
        match &self.stage {
            Stage::Connecting => ConnState::Connecting,
            Stage::Open => ConnState::Open,
            Stage::Reconnecting => ConnState::Reconnecting,
            Stage::Closing(_) => ConnState::Closing,
            Stage::Released(Ended::Closed) => ConnState::Closed,
            Stage::Released(Ended::Disconnected(reason)) => ConnState::Disconnected(reason.clone()),
        }
    }

    /// How the connection ended, once it has (it takes no more calls).
    pub(crate) fn ended(&self) -> Option<&Ended> {
        match &self.stage {
            Stage::Closing(ended) | Stage::Released(ended) => Some(ended),
            Stage::Connecting | Stage::Open | Stage::Reconnecting => None,
        }
    }

    /// Whether what is queued may be offered to the socket now.
    pub(crate) fn writes(&self) -> bool {
        self.stage == Stage::Open && !self.blocked
    }

    /// Whether a loss is followed by a reconnect (there is a policy, and the session has not
    /// ended).
    pub(crate) fn reconnects(&self) -> bool {
        self.comeback.is_some() && self.ended().is_none()
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

    /// The connection is over, as `ended` says, and its socket gone: drop what only a live
    /// connection needs (its queue, keepalive and reconnect state, subscription keys).
    pub(crate) fn release(&mut self, ended: Ended) {
        self.stage = Stage::Released(ended);
        self.keepalive = None;
        self.comeback = None;
        self.keys = HashMap::new();
        self.methods = HashSet::new();
        let messages = self.outbox.release();
        if messages > 0 {
            log::debug!("{messages} queued messages dropped unsent: the connection ended");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ReconnectPolicy;

    fn session(policy: Option<ReconnectPolicy>) -> Session {
        let config = ConnectionConfig {
            reconnect: policy,
            ..ConnectionConfig::default()
        };
        Session::new(ConnId::from_raw(0), config, 1)
    }

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
        let mut s = session(None);
        assert!(!s.reconnects());
        assert_eq!(s.handle_open(0, None), None);
        assert_eq!(s.handle_loss(5), None);
    }

    #[test]
    fn delays_grow_then_start_over_after_a_stable_connection() {
        let mut s = session(Some(policy(None)));
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
        let mut s = session(Some(policy(Some(2))));
        assert!(s.handle_loss(0).is_some());
        assert!(s.handle_loss(0).is_some());
        assert_eq!(s.handle_loss(0), None);
    }

    #[test]
    fn opening_starts_the_keepalive_and_a_loss_stops_it() {
        let mut s = session(None);
        assert_eq!(s.handle_open(1_000, Some((30_000, 10_000))), Some(31_000));
        assert!(s.keepalive.is_some());
        s.handle_loss(2_000);
        assert!(s.keepalive.is_none());
    }

    #[test]
    fn an_ended_session_neither_reconnects_nor_keeps_its_queue() {
        let mut s = session(Some(policy(None)));
        let message = crate::core::output::Transmit::Message("m".into());
        s.outbox.push(message, 1);
        s.stage = Stage::Closing(Ended::Closed);
        assert!(!s.reconnects());
        s.release(Ended::Closed);
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
