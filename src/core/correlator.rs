//! [`Correlator`]: the sans-IO machine that turns frames into completed calls.
//!
//! Shaped like quinn-proto's `Connection`. Inputs: [`handle_submit`](Correlator::handle_submit),
//! [`handle_frame`](Correlator::handle_frame), [`poll_timeout`](Correlator::poll_timeout),
//! [`handle_cancel`](Correlator::handle_cancel), [`handle_failure`](Correlator::handle_failure),
//! [`handle_disconnect`](Correlator::handle_disconnect). Outputs:
//! [`poll_completion`](Correlator::poll_completion) and
//! [`next_deadline`](Correlator::next_deadline). It never reads a clock, touches a socket or
//! runs user code: `T` is an opaque token (the driver's callback) handed back with the result.
//!
//! Exactly once: every input that ends a call removes it from the pending table, disarms its
//! timer and queues its one completion, in that order and in one place (`Correlator::complete`).
//! A call that is no longer in the table cannot be completed again.

use std::collections::VecDeque;

use tungstenite::Utf8Bytes;

use super::call_id::CallId;
use super::codec::{Codec, Decoded};
use super::conn_id::ConnId;
use super::nesting::nests_deeper_than;
use super::notification::Notification;
use super::pending::{PendingCall, PendingCalls, Unknown};
use super::response::Response;
use super::session::ConnTimer;
use super::unmatched::UnmatchedReason;
use super::wheel::{TimerKey, TimerWheel};
use crate::error::Error;

/// What became of an incoming frame ([`Correlator::handle_frame`]).
pub(crate) enum Routed {
    /// It completed this many calls (several for a batch answer).
    Answered(u64),
    /// It completed nothing, for this reason.
    Unmatched(UnmatchedReason, Utf8Bytes),
    /// A notification, for the driver to route by subscription key or method.
    Notification(Notification),
}

/// A finished call: its token and its result, ready for the driver to dispatch.
#[derive(Debug)]
pub(crate) struct Completion<T> {
    pub(crate) id: CallId,
    pub(crate) conn: ConnId,
    pub(crate) token: T,
    pub(crate) result: Result<Response, Error>,
}

/// What a deadline of the loop's one wheel is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    /// The call in this slab slot times out.
    Call(usize),
    /// A connection's deadline: [`Correlator::poll_timeout`] hands it to the driver.
    Conn(usize, ConnTimer),
}

/// The pending calls of every connection of a loop, their deadlines and their completions,
/// and the loop's one timer wheel, which also holds the connections' deadlines.
#[derive(Debug)]
pub(crate) struct Correlator<T> {
    pending: PendingCalls<T>,
    /// Every deadline of the loop: calls' and connections'.
    deadlines: TimerWheel<Due>,
    completions: VecDeque<Completion<T>>,
    /// Completions whose token `is_own` says are the caller's own business (the engine's
    /// batches and subscriptions), queued apart so that they can be handled at once while
    /// the others wait their turn.
    own: VecDeque<Completion<T>>,
    is_own: fn(&T) -> bool,
    /// Reused by `handle_disconnect`, so failing a connection allocates once per loop.
    scratch: Vec<CallId>,
}

impl<T> Default for Correlator<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Correlator<T> {
    pub(crate) fn new() -> Self {
        Self::with_own(|_| false)
    }

    /// A correlator whose completions with a token `is_own` accepts are queued apart, for
    /// [`poll_own_completion`](Self::poll_own_completion).
    pub(crate) fn with_own(is_own: fn(&T) -> bool) -> Self {
        Correlator {
            pending: PendingCalls::new(),
            deadlines: TimerWheel::new(),
            completions: VecDeque::new(),
            own: VecDeque::new(),
            is_own,
            scratch: Vec::new(),
        }
    }

    /// How many calls are pending (submitted, not yet completed).
    pub(crate) fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Whether the id space has room for `n` more calls.
    pub(crate) fn has_room_for(&self, n: usize) -> bool {
        self.pending.has_room_for(n)
    }

    /// How many completions (not the own ones) wait to be polled.
    pub(crate) fn completions_len(&self) -> usize {
        self.completions.len()
    }

    /// The id the next [`handle_submit`](Self::handle_submit) will return, so a request can be
    /// encoded (and refused) before the call is registered.
    pub(crate) fn next_id(&self) -> CallId {
        self.pending.next_id()
    }

    /// Registers a call on `conn` due at tick `deadline`; `written` tells whether its request
    /// is written already, or waits in the connection's outbox (see
    /// [`handle_written`](Self::handle_written)).
    ///
    /// The caller checks [`has_room_for`](Self::has_room_for) first.
    pub(crate) fn handle_submit(
        &mut self,
        conn: ConnId,
        deadline: u64,
        written: bool,
        token: T,
    ) -> CallId {
        let deadlines = &mut self.deadlines;
        self.pending.insert(conn, written, token, |key| {
            deadlines.insert(deadline, Due::Call(key))
        })
    }

    /// The request of a call that waited unsent is being written. `false` when the call has
    /// completed meanwhile (timed out, cancelled): its request must not go out. From now on an
    /// answer can complete it, and a lost connection fails it with `Disconnected`.
    pub(crate) fn handle_written(&mut self, id: CallId) -> bool {
        match self.pending.get_mut(id) {
            Some(call) if !call.written => {
                call.written = true;
                true
            }
            _ => false,
        }
    }

    /// The socket refused the request of a call that was being written: it waits again, and
    /// no answer can be for it. `false` when the call is not pending.
    pub(crate) fn handle_unwritten(&mut self, id: CallId) -> bool {
        match self.pending.get_mut(id) {
            Some(call) if call.written => {
                call.written = false;
                true
            }
            _ => false,
        }
    }

    /// The connection a pending call was made on.
    pub(crate) fn conn_of(&self, id: CallId) -> Option<ConnId> {
        self.pending.get(id).map(|call| call.conn)
    }

    /// Whether the call is pending with its request still waiting to be written.
    pub(crate) fn is_queued(&self, id: CallId) -> bool {
        self.pending.get(id).is_some_and(|call| !call.written)
    }

    /// Routes an incoming text frame from `conn`: an answer completes its call (a batch answer,
    /// each of its calls); a notification comes back for the driver to route; anything else
    /// comes back with the reason it matched nothing. Batch elements that match nothing, when
    /// others did, are only reported to `stray` (for counting).
    ///
    /// A frame nested deeper than `max_depth` is malformed before `codec` sees it, so the limit
    /// holds for every codec, a user's own too.
    pub(crate) fn handle_frame(
        &mut self,
        conn: ConnId,
        codec: &dyn Codec,
        max_depth: usize,
        frame: Utf8Bytes,
        stray: &mut impl FnMut(UnmatchedReason),
    ) -> Routed {
        if nests_deeper_than(frame.as_bytes(), max_depth) {
            return Routed::Unmatched(UnmatchedReason::Malformed, frame);
        }
        match codec.decode(frame.as_str()) {
            Decoded::Batch(elements) => {
                let mut answered = 0;
                let mut first_miss = None;
                for element in elements {
                    match self.match_answer(conn, frame.clone(), element) {
                        Ok(()) => answered += 1,
                        // The first miss may stand for the whole frame: counted below.
                        Err((reason, _)) if first_miss.is_none() => first_miss = Some(reason),
                        Err((reason, _)) => stray(reason),
                    }
                }
                match (answered, first_miss) {
                    (0, Some(reason)) => Routed::Unmatched(reason, frame),
                    (n, first_miss) => {
                        if let Some(reason) = first_miss {
                            stray(reason);
                        }
                        Routed::Answered(n)
                    }
                }
            }
            Decoded::Notification {
                method,
                params,
                subscription,
                item,
            } => Routed::Notification(Notification::new(
                conn,
                frame,
                method,
                params,
                subscription,
                item,
            )),
            decoded => match self.match_answer(conn, frame, decoded) {
                Ok(()) => Routed::Answered(1),
                Err((reason, frame)) => Routed::Unmatched(reason, frame),
            },
        }
    }

    /// Completes the call a decoded answer names (its response keeps `frame`), or says why it
    /// names none and hands the frame back.
    fn match_answer(
        &mut self,
        conn: ConnId,
        frame: Utf8Bytes,
        decoded: Decoded,
    ) -> Result<(), (UnmatchedReason, Utf8Bytes)> {
        match self.find_call(conn, decoded) {
            Ok((id, outcome)) => {
                let result = outcome.map(|payload| Response::new(id, frame, payload));
                self.complete(id, result);
                Ok(())
            }
            Err(reason) => Err((reason, frame)),
        }
    }

    /// The pending call a decoded answer names, with its outcome.
    #[allow(clippy::type_complexity)]
    fn find_call(
        &self,
        conn: ConnId,
        decoded: Decoded,
    ) -> Result<(CallId, Result<Option<std::ops::Range<usize>>, Error>), UnmatchedReason> {
        let (wire_id, outcome) = match decoded {
            Decoded::Answer { id, payload } => (id, Ok(payload)),
            Decoded::Failure {
                id,
                code,
                message,
                data,
            } => (
                id,
                Err(Error::Remote {
                    code,
                    message,
                    data,
                }),
            ),
            Decoded::ForeignId => return Err(UnmatchedReason::UnknownId),
            Decoded::NoId | Decoded::Notification { .. } => return Err(UnmatchedReason::NoId),
            Decoded::Malformed | Decoded::Batch(_) => return Err(UnmatchedReason::Malformed),
        };
        let id = CallId::from_u64(wire_id).ok_or(UnmatchedReason::UnknownId)?;
        match self.pending.get(id) {
            // Only the connection that carried the request can answer it, and only once the
            // request was written: anything else is a guess, not an answer.
            Some(call) if call.conn == conn && call.written => {}
            Some(_) => return Err(UnmatchedReason::UnknownId),
            None => {
                return Err(match self.pending.classify_unknown(id) {
                    Unknown::Stale => UnmatchedReason::StaleId,
                    Unknown::Never => UnmatchedReason::UnknownId,
                });
            }
        }
        Ok((id, outcome))
    }

    /// Fires the deadlines due at or before tick `now`, in deadline order: a call fails with
    /// [`Error::Timeout`] here; a connection's deadline is returned, for the driver to act on
    /// before anything later fires (acting on it may disarm or arm others). `None` once
    /// nothing more is due.
    pub(crate) fn poll_timeout(&mut self, now: u64) -> Option<(usize, ConnTimer)> {
        while let Some(due) = self.deadlines.poll(now) {
            let key = match due {
                Due::Call(key) => key,
                Due::Conn(index, kind) => return Some((index, kind)),
            };
            // The timer was removed by `poll`; the key is occupied because a call's timer is
            // always disarmed when the call leaves the table.
            let (id, call) = self.pending.take_key(key);
            self.queue(Completion {
                id,
                conn: call.conn,
                token: call.token,
                result: Err(Error::Timeout),
            });
        }
        None
    }

    /// Fires every call deadline due by `now` (there are no connection deadlines in these
    /// tests); returns how many calls timed out.
    #[cfg(test)]
    pub(crate) fn handle_timeout(&mut self, now: u64) -> usize {
        let before = self.completions.len();
        let conn_timer = self.poll_timeout(now);
        debug_assert_eq!(conn_timer, None);
        self.completions.len() - before
    }

    /// Arms a deadline of connection `index` at tick `deadline`.
    pub(crate) fn arm_conn_timer(
        &mut self,
        deadline: u64,
        index: usize,
        kind: ConnTimer,
    ) -> TimerKey {
        self.deadlines.insert(deadline, Due::Conn(index, kind))
    }

    /// Disarms a connection deadline (a key from [`arm_conn_timer`](Self::arm_conn_timer)).
    pub(crate) fn disarm_conn_timer(&mut self, key: TimerKey) {
        let disarmed = self.deadlines.cancel(key);
        debug_assert!(matches!(disarmed, Some(Due::Conn(..))), "{disarmed:?}");
    }

    /// Cancels a pending call ([`Error::Cancelled`]); `false` if it is not pending.
    pub(crate) fn handle_cancel(&mut self, id: CallId) -> bool {
        self.handle_failure(id, Error::Cancelled)
    }

    /// Takes back a call that was registered but turned out not to be submitted after all
    /// (its batch could not be sent): it leaves with no completion, its token is returned.
    pub(crate) fn handle_withdraw(&mut self, id: CallId) -> Option<T> {
        let call = self.pending.take(id)?;
        self.deadlines.cancel(call.timer);
        Some(call.token)
    }

    /// Fails one pending call with `error`; `false` if it is not pending.
    pub(crate) fn handle_failure(&mut self, id: CallId, error: Error) -> bool {
        if self.pending.get(id).is_none() {
            return false;
        }
        self.complete(id, Err(error));
        true
    }

    /// Fails the calls pending on `conn`, each with `error(written)` (`written` tells whether its
    /// request had left); a call for which it returns `None` stays pending (an unsent call that
    /// waits for the connection to come back). Returns how many failed.
    pub(crate) fn handle_disconnect(
        &mut self,
        conn: ConnId,
        error: impl Fn(bool) -> Option<Error>,
    ) -> usize {
        let mut ids = std::mem::take(&mut self.scratch);
        self.pending.ids_on(conn, &mut ids);
        // Slab order is not submit order; fail them in id order so callbacks run predictably.
        ids.sort_unstable();
        let mut failed = 0;
        for id in ids.drain(..) {
            let written = !self.is_queued(id);
            if let Some(e) = error(written) {
                self.complete(id, Err(e));
                failed += 1;
            }
        }
        self.scratch = ids;
        failed
    }

    /// The next completed call, in completion order (own ones apart).
    pub(crate) fn poll_completion(&mut self) -> Option<Completion<T>> {
        self.completions.pop_front()
    }

    /// The next completed call whose token is the caller's own, in completion order.
    pub(crate) fn poll_own_completion(&mut self) -> Option<Completion<T>> {
        self.own.pop_front()
    }

    fn queue(&mut self, done: Completion<T>) {
        if (self.is_own)(&done.token) {
            self.own.push_back(done);
        } else {
            self.completions.push_back(done);
        }
    }

    /// The earliest tick at which a deadline (a call's or a connection's) may be due.
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        self.deadlines.next_deadline()
    }

    /// The one place a call leaves the table: remove it, disarm its timer, queue its result.
    fn complete(&mut self, id: CallId, result: Result<Response, Error>) {
        let Some(PendingCall {
            conn, timer, token, ..
        }) = self.pending.take(id)
        else {
            debug_assert!(false, "completing {id:?}, which is not pending");
            return;
        };
        let disarmed = self.deadlines.cancel(timer);
        debug_assert!(
            matches!(disarmed, Some(Due::Call(_))),
            "a pending call's timer is armed"
        );
        self.queue(Completion {
            id,
            conn,
            token,
            result,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `handle_frame` for frames that are answers or unmatched.
    fn route<T>(
        c: &mut Correlator<T>,
        conn: ConnId,
        codec: &dyn Codec,
        frame: Utf8Bytes,
    ) -> Result<(), (UnmatchedReason, Utf8Bytes)> {
        match c.handle_frame(conn, codec, DEPTH, frame, &mut |_| {}) {
            Routed::Answered(_) => Ok(()),
            Routed::Unmatched(reason, frame) => Err((reason, frame)),
            Routed::Notification(n) => panic!("{n:?}"),
        }
    }
    use crate::core::codec::Envelope;
    use std::collections::HashMap;

    const A: ConnId = ConnId::from_raw(0);
    const B: ConnId = ConnId::from_raw(1);
    const DEPTH: usize = 128;

    fn answer(id: CallId, message: &str) -> Utf8Bytes {
        format!(r#"{{"id":{id},"message":{message}}}"#).into()
    }

    fn drain(c: &mut Correlator<u32>) -> Vec<(u32, Result<String, String>)> {
        std::iter::from_fn(|| c.poll_completion())
            .map(|done| {
                let result = done
                    .result
                    .map(|r| r.text().to_owned())
                    .map_err(|e| e.to_string());
                (done.token, result)
            })
            .collect()
    }

    #[test]
    fn an_answer_completes_its_call() {
        let mut c = Correlator::new();
        let id = c.handle_submit(A, 100, true, 1);
        assert_eq!(
            route(&mut c, A, &Envelope, answer(id, r#"{"x":1}"#)),
            Ok(())
        );
        assert_eq!(drain(&mut c), vec![(1, Ok(r#"{"x":1}"#.to_owned()))]);
        assert_eq!(c.pending_len(), 0);
        assert_eq!(c.next_deadline(), None, "the timer was disarmed");
    }

    #[test]
    fn deadlines_fire_at_their_tick_with_no_traffic() {
        let mut c = Correlator::new();
        c.handle_submit(A, 100, true, 1);
        assert_eq!(
            c.next_deadline(),
            Some(64),
            "a coarse slot may wake the loop early"
        );
        assert_eq!(c.handle_timeout(99), 0);
        assert_eq!(c.handle_timeout(100), 1);
        assert_eq!(drain(&mut c), vec![(1, Err(Error::Timeout.to_string()))]);
    }

    #[test]
    fn calls_and_connection_deadlines_share_one_wheel_and_fire_in_deadline_order() {
        let mut c = Correlator::new();
        c.handle_submit(A, 10, true, 1);
        c.handle_submit(A, 40, true, 2);
        c.arm_conn_timer(5, 0, ConnTimer::Connect);
        let disarmed = c.arm_conn_timer(20, 0, ConnTimer::Keepalive);
        c.disarm_conn_timer(disarmed);
        c.arm_conn_timer(30, 7, ConnTimer::Close);
        assert_eq!(
            c.next_deadline(),
            Some(5),
            "the connection's deadline comes first"
        );
        // The connect deadline comes out before the call due at 10 fires.
        assert_eq!(c.poll_timeout(100), Some((0, ConnTimer::Connect)));
        assert_eq!(c.completions_len(), 0);
        assert_eq!(c.poll_timeout(100), Some((7, ConnTimer::Close)));
        assert_eq!(drain(&mut c), vec![(1, Err(Error::Timeout.to_string()))]);
        assert_eq!(c.poll_timeout(100), None);
        assert_eq!(drain(&mut c), vec![(2, Err(Error::Timeout.to_string()))]);
        assert_eq!(c.next_deadline(), None);
    }

    #[test]
    fn a_late_answer_is_stale_and_completes_nothing() {
        let mut c = Correlator::new();
        let id = c.handle_submit(A, 10, true, 1);
        c.handle_timeout(10);
        assert_eq!(drain(&mut c).len(), 1);
        let late = route(&mut c, A, &Envelope, answer(id, "1"));
        assert!(matches!(late, Err((UnmatchedReason::StaleId, _))));
        assert!(drain(&mut c).is_empty());
    }

    #[test]
    fn a_late_answer_does_not_complete_the_call_reusing_its_slot() {
        let mut c = Correlator::new();
        let old = c.handle_submit(A, 10, true, 1);
        c.handle_timeout(10);
        drain(&mut c);
        let new = c.handle_submit(A, 1_000, true, 2);
        assert_ne!(old, new);
        let late = route(&mut c, A, &Envelope, answer(old, r#""old""#));
        assert!(matches!(late, Err((UnmatchedReason::StaleId, _))));
        assert!(drain(&mut c).is_empty());
        assert_eq!(route(&mut c, A, &Envelope, answer(new, r#""new""#)), Ok(()));
        assert_eq!(drain(&mut c), vec![(2, Ok(r#""new""#.to_owned()))]);
    }

    #[test]
    fn answer_and_deadline_in_the_same_turn_complete_once() {
        let mut c = Correlator::new();
        let id = c.handle_submit(A, 50, true, 1);
        // The driver handles I/O before timers within a turn.
        assert_eq!(route(&mut c, A, &Envelope, answer(id, "1")), Ok(()));
        assert_eq!(c.handle_timeout(50), 0);
        assert_eq!(drain(&mut c), vec![(1, Ok("1".to_owned()))]);
    }

    #[test]
    fn duplicate_answers_complete_once() {
        let mut c = Correlator::new();
        let id = c.handle_submit(A, 50, true, 1);
        assert!(route(&mut c, A, &Envelope, answer(id, "1")).is_ok());
        let dup = route(&mut c, A, &Envelope, answer(id, "1"));
        assert!(matches!(dup, Err((UnmatchedReason::StaleId, _))));
        assert_eq!(drain(&mut c).len(), 1);
    }

    #[test]
    fn an_answer_on_another_connection_or_before_sending_is_no_answer() {
        let mut c = Correlator::new();
        let id = c.handle_submit(A, 50, true, 1);
        assert!(matches!(
            route(&mut c, B, &Envelope, answer(id, "1")),
            Err((UnmatchedReason::UnknownId, _))
        ));
        let queued = c.handle_submit(A, 50, false, 2);
        assert!(matches!(
            route(&mut c, A, &Envelope, answer(queued, "1")),
            Err((UnmatchedReason::UnknownId, _))
        ));
        assert_eq!(c.pending_len(), 2);
        assert!(drain(&mut c).is_empty());
    }

    #[test]
    fn a_queued_request_is_written_once_and_never_after_its_call_ended() {
        let mut c = Correlator::new();
        let id = c.handle_submit(A, 50, false, 1);
        assert!(c.is_queued(id));
        assert!(c.handle_written(id));
        assert!(!c.is_queued(id));
        assert!(!c.handle_written(id), "written once");
        // A queued call that times out is never sent.
        let gone = c.handle_submit(A, 10, false, 2);
        c.handle_timeout(10);
        assert!(!c.handle_written(gone));
    }

    #[test]
    fn cancel_then_answer_completes_once_with_cancelled() {
        let mut c = Correlator::new();
        let id = c.handle_submit(A, 50, true, 1);
        assert!(c.handle_cancel(id));
        assert!(!c.handle_cancel(id));
        assert!(route(&mut c, A, &Envelope, answer(id, "1")).is_err());
        assert_eq!(c.handle_timeout(50), 0);
        assert_eq!(drain(&mut c), vec![(1, Err(Error::Cancelled.to_string()))]);
    }

    #[test]
    fn answer_then_cancel_keeps_the_answer() {
        let mut c = Correlator::new();
        let id = c.handle_submit(A, 50, true, 1);
        assert!(route(&mut c, A, &Envelope, answer(id, "1")).is_ok());
        assert!(!c.handle_cancel(id), "the answer won the race");
        assert_eq!(drain(&mut c), vec![(1, Ok("1".to_owned()))]);
    }

    #[test]
    fn disconnect_fails_only_that_connection_in_submit_order() {
        let mut c = Correlator::new();
        for token in 0..5 {
            c.handle_submit(A, 50, true, token);
        }
        c.handle_submit(B, 50, true, 99);
        assert_eq!(c.handle_disconnect(A, |_| Some(Error::Closed)), 5);
        let done = drain(&mut c);
        assert_eq!(
            done.iter().map(|d| d.0).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4]
        );
        assert!(done.iter().all(|d| d.1 == Err(Error::Closed.to_string())));
        assert_eq!(c.pending_len(), 1);
        assert_eq!(c.handle_disconnect(A, |_| Some(Error::Closed)), 0);
    }

    #[test]
    fn a_lost_connection_fails_written_calls_and_can_keep_unsent_ones() {
        let mut c = Correlator::new();
        let written = c.handle_submit(A, 50, true, 1);
        let unsent = c.handle_submit(A, 50, false, 2);
        assert!(c.is_queued(unsent));
        assert!(!c.is_queued(written));
        let kept = c.handle_disconnect(A, |w| w.then_some(Error::Closed));
        assert_eq!(kept, 1);
        assert_eq!(drain(&mut c), vec![(1, Err(Error::Closed.to_string()))]);
        assert!(
            c.is_queued(unsent),
            "the unsent call waits for the next connection"
        );
        assert!(c.handle_written(unsent));
        assert!(route(&mut c, A, &Envelope, answer(unsent, "7")).is_ok());
        assert_eq!(drain(&mut c), vec![(2, Ok("7".to_owned()))]);
    }

    #[test]
    fn batch_answers_count_each_element_once() {
        use crate::core::codec::JsonRpc2;
        let mut c = Correlator::new();
        let a = c.handle_submit(A, 50, true, 1);
        let b = c.handle_submit(A, 50, true, 2);
        let frame = format!(
            r#"[{{"jsonrpc":"2.0","id":{b},"result":"b"}},{{"jsonrpc":"2.0","id":999,"result":0}},{{"jsonrpc":"2.0","id":{a},"result":"a"}},{{"x":1}}]"#
        );
        let mut strays = Vec::new();
        let routed = c.handle_frame(A, &JsonRpc2::default(), DEPTH, frame.into(), &mut |r| {
            strays.push(r)
        });
        assert!(matches!(routed, Routed::Answered(2)));
        assert_eq!(strays.len(), 2);
        assert!(strays.contains(&UnmatchedReason::UnknownId));
        assert!(strays.contains(&UnmatchedReason::Malformed));
        assert_eq!(
            drain(&mut c),
            vec![(2, Ok(r#""b""#.to_owned())), (1, Ok(r#""a""#.to_owned()))]
        );
        // Nothing matches: the frame is unmatched under its first element's reason, and only
        // the others are strays.
        strays.clear();
        let frame = r#"[{"jsonrpc":"2.0","id":998,"result":0},{"bad":1}]"#;
        let routed = c.handle_frame(A, &JsonRpc2::default(), DEPTH, frame.into(), &mut |r| {
            strays.push(r)
        });
        assert!(matches!(
            routed,
            Routed::Unmatched(UnmatchedReason::UnknownId, _)
        ));
        assert_eq!(strays, [UnmatchedReason::Malformed]);
    }

    #[derive(Debug)]
    struct FailingCodec;
    impl Codec for FailingCodec {
        fn encode_request(
            &self,
            _: CallId,
            _: &str,
            _: &mut String,
        ) -> Result<(), crate::core::codec::CodecError> {
            Ok(())
        }
        fn decode(&self, frame: &str) -> Decoded {
            // Any frame is an error answer for the number inside its brackets.
            Decoded::Failure {
                id: frame.trim_matches(['[', ']']).parse().unwrap(),
                code: -32601,
                message: "no such method".into(),
                data: None,
            }
        }
    }

    #[test]
    fn a_codec_failure_completes_with_a_remote_error() {
        let mut c = Correlator::new();
        let id = c.handle_submit(A, 50, true, 1);
        assert!(route(&mut c, A, &FailingCodec, id.to_string().into()).is_ok());
        let done = c.poll_completion().unwrap();
        assert!(matches!(
            done.result,
            Err(Error::Remote { code: -32601, .. })
        ));
    }

    #[test]
    fn a_frame_nested_past_the_limit_is_malformed_before_any_codec_reads_it() {
        let mut c = Correlator::new();
        let id = c.handle_submit(A, 50, true, 1);
        // 100,000 nested arrays around a pending call's id: it used to complete the call.
        let deep = format!(
            r#"{{"id":{id},"message":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let routed = route(&mut c, A, &Envelope, deep.clone().into());
        assert!(matches!(routed, Err((UnmatchedReason::Malformed, _))));
        // The codec is never asked: this one would complete any frame.
        let routed = route(&mut c, A, &FailingCodec, format!("[[{id}]]").into());
        assert!(routed.is_ok(), "two levels are within the limit");
        let id = c.handle_submit(A, 50, true, 2);
        let too_deep = format!("{}{id}{}", "[".repeat(129), "]".repeat(129));
        let routed = c.handle_frame(A, &FailingCodec, 128, too_deep.into(), &mut |_| {});
        assert!(matches!(
            routed,
            Routed::Unmatched(UnmatchedReason::Malformed, _)
        ));
        assert_eq!(c.pending_len(), 1);
        // At the limit, the frame is read as usual.
        let at_limit = format!(
            r#"{{"id":{id},"message":{}{}}}"#,
            "[".repeat(127),
            "]".repeat(127)
        );
        assert!(route(&mut c, A, &Envelope, at_limit.into()).is_ok());
        assert_eq!(c.pending_len(), 0);
    }

    #[test]
    fn a_hundred_thousand_unanswered_calls_all_time_out_and_free_the_table() {
        let mut c = Correlator::new();
        for i in 0..100_000u32 {
            c.handle_submit(A, 1_000 + u64::from(i % 5_000), true, i);
        }
        assert_eq!(c.handle_timeout(999), 0);
        assert_eq!(c.handle_timeout(6_000), 100_000);
        let done = drain(&mut c);
        assert_eq!(done.len(), 100_000);
        assert!(done.iter().all(|d| d.1 == Err(Error::Timeout.to_string())));
        assert_eq!(c.pending_len(), 0);
        assert_eq!(c.next_deadline(), None);
    }

    /// A fake-clock simulator: random interleavings of every input, checking that each call
    /// completes exactly once, with the right kind of result, never before it could.
    #[test]
    fn simulated_interleavings_complete_every_call_exactly_once() {
        let mut next = crate::core::test_rng::xorshift(0x9E37_79B9_7F4A_7C15u64);
        for _round in 0..20 {
            let mut c = Correlator::new();
            let mut now = 0u64;
            let mut issued: Vec<(CallId, ConnId, u64)> = Vec::new();
            let mut outcomes: HashMap<u32, usize> = HashMap::new();
            let mut token = 0u32;
            for _step in 0..3_000 {
                match next(10) {
                    0..=3 => {
                        let conn = if next(2) == 0 { A } else { B };
                        let deadline = now + 1 + next(200);
                        let id = c.handle_submit(conn, deadline, true, token);
                        issued.push((id, conn, deadline));
                        token += 1;
                    }
                    4..=5 if !issued.is_empty() => {
                        // An answer (maybe duplicate, late, or on the wrong connection).
                        let (id, conn, _) = issued[next(issued.len() as u64) as usize];
                        let on = if next(10) == 0 {
                            if conn == A { B } else { A }
                        } else {
                            conn
                        };
                        let _ = route(&mut c, on, &Envelope, answer(id, "0"));
                    }
                    6 if !issued.is_empty() => {
                        let (id, _, _) = issued[next(issued.len() as u64) as usize];
                        c.handle_cancel(id);
                    }
                    7 => now += next(50),
                    8 if next(20) == 0 => {
                        c.handle_disconnect(if next(2) == 0 { A } else { B }, |_| {
                            Some(Error::Closed)
                        });
                    }
                    _ => {}
                }
                c.handle_timeout(now);
                while let Some(done) = c.poll_completion() {
                    *outcomes.entry(done.token).or_default() += 1;
                    if let Err(Error::Timeout) = done.result {
                        let deadline = issued.iter().find(|i| i.0 == done.id).unwrap().2;
                        assert!(deadline <= now, "timed out early");
                    }
                }
            }
            // Let everything left expire.
            c.handle_timeout(now + 1_000);
            while let Some(done) = c.poll_completion() {
                *outcomes.entry(done.token).or_default() += 1;
            }
            assert_eq!(c.pending_len(), 0);
            assert_eq!(outcomes.len(), token as usize, "a call never completed");
            assert!(outcomes.values().all(|&n| n == 1), "a call completed twice");
        }
    }
}
