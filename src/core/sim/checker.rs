//! [`Checker`]: the simulator's invariant checker, an independent model of what the engine
//! promises, fed every event as it is polled and every write as it reaches the wire.

use std::collections::{HashMap, HashSet};

use super::Token;
use crate::core::call_id::CallId;
use crate::core::conn_id::ConnId;
use crate::core::engine::Engine;
use crate::core::event::{StateChange, SubscriptionEvent, SubscriptionId};
use crate::core::output::Event;
use crate::core::response::Response;
use crate::error::Error;

/// A call (or a batch) submitted and not completed yet.
#[derive(Debug)]
struct Call {
    conn: ConnId,
    ids: Vec<CallId>,
    deadline: u64,
    /// The answer text each call must carry back when it succeeds.
    expect: Vec<String>,
}

/// Where a connection stands, as the events told it.
#[derive(Debug, Default)]
struct Conn {
    last: Option<&'static str>,
    closed: bool,
}

/// The invariants, checked as things happen; a violation panics with what broke.
#[derive(Debug, Default)]
pub(crate) struct Checker {
    calls: HashMap<Token, Call>,
    /// Ids of calls whose frame reached the wire.
    written: HashSet<CallId>,
    /// Ids for which `cancel` returned true.
    cancelled: HashSet<CallId>,
    conns: HashMap<ConnId, Conn>,
    /// Subscriptions, and whether they told `Ended`.
    subs: HashMap<SubscriptionId, bool>,
    /// Calls completed.
    pub(crate) completed: usize,
    /// Calls completed, by outcome (`Ok` or the error's name), for the randomized runs'
    /// report.
    pub(crate) outcomes: std::collections::BTreeMap<&'static str, usize>,
}

impl Checker {
    pub(crate) fn opened(&mut self, conn: ConnId, _bounds: (usize, usize)) {
        assert!(
            self.conns.insert(conn, Conn::default()).is_none(),
            "{conn} opened twice: a ConnId was reused before its Released"
        );
    }

    pub(crate) fn submitted(
        &mut self,
        token: Token,
        conn: ConnId,
        ids: Vec<CallId>,
        deadline: u64,
        expect: Vec<String>,
    ) {
        let call = Call {
            conn,
            ids,
            deadline,
            expect,
        };
        assert!(
            self.calls.insert(token, call).is_none(),
            "token {token} reused"
        );
    }

    pub(crate) fn written(&mut self, id: CallId) {
        self.written.insert(id);
    }

    pub(crate) fn cancel_returned(&mut self, id: CallId, cancelled: bool) {
        if cancelled {
            self.cancelled.insert(id);
        }
    }

    pub(crate) fn subscribed(&mut self, sub: SubscriptionId) {
        assert!(self.subs.insert(sub, false).is_none(), "{sub:?} reused");
    }

    /// Whether `sub` told its `Ended`.
    pub(crate) fn ended(&self, sub: SubscriptionId) -> bool {
        self.subs.get(&sub).copied().unwrap_or(true)
    }

    /// Checks one event as it is polled at tick `now`.
    pub(crate) fn see(&mut self, now: u64, event: &Event<Token>) {
        let call = match event {
            Event::Completed {
                conn,
                id,
                token,
                result,
            } => {
                let call = self.complete(*token, *conn);
                assert_eq!(call.ids, [*id], "token {token} completed as another call");
                self.check_result(now, &call, 0, result);
                call
            }
            Event::BatchCompleted {
                conn,
                token,
                results,
            } => {
                let call = self.complete(*token, *conn);
                assert_eq!(
                    results.len(),
                    call.ids.len(),
                    "batch {token}: one result per call"
                );
                for (i, result) in results.iter().enumerate() {
                    self.check_result(now, &call, i, result);
                }
                call
            }
            Event::State(conn, change) => return self.state(*conn, change),
            Event::Released(conn) => {
                let c = self.conns.remove(conn);
                let c = c.unwrap_or_else(|| panic!("{conn} released twice, or never opened"));
                assert!(c.closed, "{conn} released before Closed");
                assert!(
                    self.calls.values().all(|call| call.conn != *conn),
                    "{conn} released with a call of it still to complete"
                );
                return;
            }
            Event::Subscription(sub, event) => {
                let ended = self.subs.get_mut(sub);
                let ended = ended.unwrap_or_else(|| panic!("an event of unknown {sub:?}"));
                assert!(!*ended, "{sub:?}: {event:?} after its Ended");
                if matches!(event, SubscriptionEvent::Ended(_)) {
                    *ended = true;
                }
                return;
            }
            Event::Unmatched(_) | Event::Notification(_) => return,
        };
        for id in &call.ids {
            self.written.remove(id);
            self.cancelled.remove(id);
        }
    }

    fn complete(&mut self, token: Token, conn: ConnId) -> Call {
        let call = self.calls.remove(&token);
        let call = call.unwrap_or_else(|| panic!("token {token} completed twice, or unknown"));
        assert_eq!(
            call.conn, conn,
            "token {token} completed on another connection"
        );
        self.completed += 1;
        if let Some(c) = self.conns.get(&conn) {
            assert!(!c.closed, "token {token} completed after {conn}'s Closed");
        }
        call
    }

    fn check_result(&mut self, now: u64, call: &Call, i: usize, result: &Result<Response, Error>) {
        let id = call.ids[i];
        let outcome = match result {
            Ok(_) => "Ok",
            Err(Error::Timeout) => "Timeout",
            Err(Error::Cancelled) => "Cancelled",
            Err(Error::NotSent(_)) => "NotSent",
            Err(Error::Disconnected(_)) => "Disconnected",
            Err(Error::Closed) => "Closed",
            Err(Error::Shutdown) => "Shutdown",
            Err(Error::Handshake(_)) => "Handshake",
            Err(_) => "other",
        };
        *self.outcomes.entry(outcome).or_insert(0) += 1;
        let written = self.written.contains(&id);
        match result {
            Ok(response) => {
                assert!(written, "{id} answered, never written");
                assert_eq!(
                    response.text(),
                    call.expect[i],
                    "{id} got another call's answer"
                );
            }
            Err(Error::Timeout) => assert!(
                now >= call.deadline,
                "{id} timed out at tick {now}, before its deadline {}",
                call.deadline
            ),
            Err(Error::NotSent(reason)) => {
                assert!(!written, "{id} failed NotSent({reason}) but was written");
            }
            Err(Error::Disconnected(reason)) => {
                assert!(
                    written,
                    "{id} failed Disconnected({reason}) but was never written"
                );
            }
            Err(Error::Cancelled) => assert!(
                call.ids.iter().any(|id| self.cancelled.contains(id)),
                "{id} completed Cancelled, but no cancel of it returned true"
            ),
            Err(_) => {}
        }
        if self.cancelled.contains(&id) {
            assert!(
                matches!(result, Err(Error::Cancelled)),
                "{id}: cancel returned true, yet it completed with {result:?}"
            );
        }
    }

    fn state(&mut self, conn: ConnId, change: &StateChange) {
        let c = self.conns.get_mut(&conn);
        let c = c.unwrap_or_else(|| panic!("a state change of {conn}, released or unknown"));
        let next = match change {
            StateChange::Connecting => "Connecting",
            StateChange::Open => "Open",
            StateChange::Disconnected(_) => "Disconnected",
            StateChange::Reconnecting { .. } => "Reconnecting",
            StateChange::Closed => "Closed",
        };
        let legal = matches!(
            (c.last, next),
            (None, "Connecting")
                | (Some("Connecting"), "Open" | "Disconnected" | "Closed")
                | (Some("Open"), "Disconnected" | "Closed")
                | (Some("Disconnected"), "Reconnecting" | "Closed")
                | (Some("Reconnecting"), "Connecting" | "Closed")
        );
        assert!(legal, "{conn}: {next} after {:?}", c.last);
        c.last = Some(next);
        c.closed = next == "Closed";
    }

    /// The engine's own bounds and counts.
    pub(crate) fn check_engine<T>(&self, engine: &Engine<T>) {
        if let Err(broken) = engine.check_bounds() {
            panic!("{broken}");
        }
    }

    /// The end of a run: every call completed.
    pub(crate) fn finish(&self) {
        assert!(
            self.calls.is_empty(),
            "{} calls never completed: {:?}",
            self.calls.len(),
            self.calls.keys().take(10).collect::<Vec<_>>()
        );
    }
}
