//! [`Engine`]: the loop's connection machine, sans-IO: every connection's [`Session`], the
//! loop-wide call table and its one timer wheel, the subscriptions, the batches, and one
//! queue of events in causal order.
//!
//! Shaped like quinn-proto's `Connection`. Its methods come in four classes:
//!
//! - **Getters** (`&self`): [`state`](Engine::state), [`stats`](Engine::stats),
//!   [`pending_calls`](Engine::pending_calls), [`connections`](Engine::connections).
//! - **Inputs from the network and the clock**, `handle_*`: what the driver read or saw
//!   happen on a socket, and [`handle_timeout`](Engine::handle_timeout). Each time-dependent
//!   one takes `now`, a millisecond tick; ticks never go back (a `debug_assert!`).
//! - **Commands from the application**: [`open`](Engine::open), [`submit`](Engine::submit),
//!   [`submit_batch`](Engine::submit_batch), [`send`](Engine::send),
//!   [`cancel`](Engine::cancel), [`close`](Engine::close), [`subscribe`](Engine::subscribe),
//!   [`unsubscribe`](Engine::unsubscribe), [`shutdown`](Engine::shutdown). A refusal hands the
//!   caller's token back, never completes it.
//! - **Outputs**, `poll_*`: after any input or command, the driver polls, in this order,
//!   [`poll_transmit`](Engine::poll_transmit) (what to write: popping a call's frame marks it
//!   written), [`poll_action`](Engine::poll_action) (open, close or drop a socket),
//!   [`poll_timeout`](Engine::poll_timeout) (the earliest deadline) and
//!   [`poll_event`](Engine::poll_event) (what to tell the application).
//!
//! The engine never reads a clock, touches a socket or runs user code: `T` is the driver's
//! token for a call (its callback), handed back in the call's one completion.
//!
//! Invariants (the simulator's checker asserts them after every step):
//! - A pending call leaves the table in exactly one place (`Correlator::complete`), which
//!   queues its one completion; a batch's calls complete as one event, in request order.
//! - A connection ends (or is interrupted, to come back) in exactly one place,
//!   [`Engine::end`], whichever way it ends ([`Ending`]); [`CallsEnd::fate`] decides each
//!   call's error there.
//! - Each subscription gets exactly one `Ended`, and nothing after it.
//! - State changes follow [`Lifecycle`](super::lifecycle::Lifecycle)'s grammar; `Closed` is a
//!   connection's last state event, and `Released` its last event.
//! - Events are queued as they happen: an answer read before the peer's close completes before
//!   the state change that reports the close.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde_json::value::RawValue;
use slab::Slab;
use tungstenite::Utf8Bytes;

use super::arena::{COPY_LIMIT, FrameArena};
use super::call_id::CallId;
use super::conn_id::ConnId;
use super::correlator::{Completion, Correlator, Routed};
use super::event::{ConnState, StateChange, SubscribeOptions, SubscriptionEvent, SubscriptionId};
use super::keepalive::KeepaliveAction;
use super::message::Message;
use super::notification::Notification;
use super::output::{Event, Incoming, SocketAction, Transmit, Violation};
use super::request::Request;
use super::response::Response;
use super::session::{CallsEnd, ConnTimer, Ended, Session, Stage};
use super::subscription::{SubState, Subscription};
use super::tick::{millis, tick_after};
use super::unmatched::{Unmatched, UnmatchedReason};
use crate::config::{CallOptions, ConnectionConfig};
use crate::error::{DisconnectReason, Error};
use crate::stats::ConnStats;

/// Who a pending call's completion is for.
#[derive(Debug)]
pub(crate) enum Owner<T> {
    /// The application: its token comes back in `Event::Completed`.
    User(T),
    /// Call `index` of a batch: gathered, the batch completes when its last call does.
    Batch { batch: usize, index: usize },
    /// The subscribe call of a subscription's attempt.
    Subscribe { sub: u64, attempt: u32 },
    /// An unsubscribe call: its answer is only logged.
    Unsubscribe,
}

impl<T> Owner<T> {
    /// Whether the completion is the engine's own business (handled as it happens), not an
    /// event for the application.
    fn is_engine(&self) -> bool {
        !matches!(self, Owner::User(_))
    }
}

/// A batch whose calls have not all completed.
#[derive(Debug)]
struct Gather<T> {
    conn: ConnId,
    token: T,
    results: Vec<Option<Result<Response, Error>>>,
    missing: usize,
}

/// An entry of the event queue: an event, or a step the engine takes when the queue reaches
/// it (so that it comes after everything queued before it).
#[derive(Debug)]
enum Entry<T> {
    Event(Event<T>),
    /// The next `n` completions of the call table, each an `Event::Completed`: they wait in
    /// the table's queue, not moved twice.
    Calls(usize),
    /// The peer broke the protocol after the messages queued ahead: the connection fails
    /// once they are delivered (and what their handlers sent is written before the close).
    Violation {
        conn: ConnId,
        /// Which socket of the connection ([`Session::sockets`]) broke it.
        socket: u32,
        violation: Violation,
        reason: DisconnectReason,
    },
    /// The connection is over: freed when reached, then told as `Event::Released`.
    Released(ConnId),
}

/// How a connection ends, or is interrupted, for [`Engine::end`].
#[derive(Debug)]
enum Ending {
    /// Closed by this side: the close handshake if it is open.
    Closed,
    /// The peer's close frame.
    PeerClosed(DisconnectReason),
    /// Lost: a transport error, a timeout, a violation (with the close frame it calls for).
    Lost(DisconnectReason, Option<(u16, &'static str)>),
    /// The loop shuts down.
    Shutdown,
}

/// What is kept of a freed connection until its slot holds another: enough to say what became
/// of it, and for a late submit to fail with the reason it ended.
#[derive(Debug)]
struct Gone {
    id: ConnId,
    state: ConnState,
    stats: ConnStats,
    ended: Ended,
}

/// The connection machine of one loop. See the module docs for its contract.
#[derive(Debug)]
pub(crate) struct Engine<T> {
    sessions: Slab<Session>,
    /// Each slot's generation: how many sessions it held and freed.
    generations: Vec<u32>,
    /// What is kept of the last session freed from each slot.
    gone: Vec<Option<Gone>>,
    calls: Correlator<Owner<T>>,
    batches: Slab<Gather<T>>,
    subs: HashMap<u64, Subscription>,
    /// The id the next subscription gets (never reused).
    next_sub: u64,
    events: VecDeque<Entry<T>>,
    /// Calls completed whose completion is not polled yet.
    undispatched: usize,
    /// Completions of the call table that an `Entry::Calls` in the queue stands for.
    marked: usize,
    /// Sessions (slots) that may have frames to poll.
    ready: Vec<usize>,
    /// Bytes of frames queued since `poll_transmit` last ran out.
    queued_bytes: usize,
    actions: VecDeque<(ConnId, SocketAction)>,
    /// Sessions whose state may have changed since the driver last asked.
    touched: Vec<ConnId>,
    /// Subscription events of a connection's end, queued behind its calls' completions.
    sub_events: Vec<(u64, SubscriptionEvent)>,
    shut_down: bool,
    /// The last tick an input brought.
    now: u64,
    /// Reused buffer for encoding request frames.
    frame: String,
    /// Where small text frames live, both ways.
    arena: FrameArena,
}

impl<T> Default for Engine<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Engine<T> {
    pub(crate) fn new() -> Self {
        Engine {
            sessions: Slab::new(),
            generations: Vec::new(),
            gone: Vec::new(),
            calls: Correlator::with_own(Owner::is_engine),
            batches: Slab::new(),
            subs: HashMap::new(),
            next_sub: 0,
            events: VecDeque::new(),
            undispatched: 0,
            marked: 0,
            ready: Vec::new(),
            queued_bytes: 0,
            actions: VecDeque::new(),
            touched: Vec::new(),
            sub_events: Vec::new(),
            shut_down: false,
            now: 0,
            frame: String::new(),
            arena: FrameArena::new(),
        }
    }

    // ---- A. Getters -------------------------------------------------------------------

    /// Where the connection is; a freed one keeps its last state until its slot is reused.
    pub(crate) fn state(&self, conn: ConnId) -> Option<ConnState> {
        match self.session(conn) {
            Some(s) => Some(s.state()),
            None => self.gone_record(conn).map(|gone| gone.state.clone()),
        }
    }

    /// The connection's counters, as [`state`](Self::state).
    pub(crate) fn stats(&self, conn: ConnId) -> Option<ConnStats> {
        match self.session(conn) {
            Some(s) => Some(s.stats),
            None => self.gone_record(conn).map(|gone| gone.stats),
        }
    }

    /// The configuration the connection was opened with.
    pub(crate) fn config(&self, conn: ConnId) -> Option<&ConnectionConfig> {
        self.session(conn).map(|s| &s.config)
    }

    /// Calls submitted whose completion has not been polled.
    pub(crate) fn pending_calls(&self) -> usize {
        self.calls.pending_len() + self.undispatched
    }

    /// Sessions in the table: live ones, and ended ones whose `Released` is not polled yet.
    pub(crate) fn connections(&self) -> usize {
        self.sessions.len()
    }

    /// About how many bytes of frames were queued since [`poll_transmit`](Self::poll_transmit)
    /// last ran out: for a driver to write a burst of large frames as it comes, rather than
    /// hold it all.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Whether events wait to be polled.
    pub(crate) fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// Whether [`shutdown`](Self::shutdown) ran.
    pub(crate) fn is_shut_down(&self) -> bool {
        self.shut_down
    }

    /// Why an operation on `conn`, which names no session, fails: how it ended while its slot
    /// still remembers, else [`Error::UnknownConnection`].
    pub(crate) fn not_live(&self, conn: ConnId) -> Error {
        self.gone_record(conn)
            .map_or(Error::UnknownConnection, |gone| gone.ended.to_error())
    }

    fn gone_record(&self, conn: ConnId) -> Option<&Gone> {
        self.gone
            .get(conn.index())
            .and_then(Option::as_ref)
            .filter(|gone| gone.id == conn)
    }

    fn session(&self, conn: ConnId) -> Option<&Session> {
        self.sessions.get(conn.index()).filter(|s| s.id == conn)
    }

    fn session_mut(&mut self, conn: ConnId) -> Option<&mut Session> {
        self.sessions.get_mut(conn.index()).filter(|s| s.id == conn)
    }

    /// The slot of a session that may still take input (not released).
    fn active(&self, conn: ConnId) -> Option<usize> {
        self.session(conn)
            .filter(|s| !matches!(s.stage, Stage::Released(_)))
            .map(|_| conn.index())
    }

    fn at(&mut self, now: u64) {
        debug_assert!(now >= self.now, "time went back: {now} after {}", self.now);
        self.now = self.now.max(now);
    }

    /// The simulator's check of the engine's bounds and counts: each connection's calls
    /// within `max_in_flight` and its outbox within `max_write_buffer`, and every pending or
    /// undispatched call counted on its connection.
    #[cfg(any(test, fuzzing))]
    pub(crate) fn check_bounds(&self) -> Result<(), String> {
        let mut counted = 0;
        for (_, s) in &self.sessions {
            if s.in_flight > s.config.max_in_flight {
                let max = s.config.max_in_flight;
                return Err(format!(
                    "{}: {} calls in flight, over {max}",
                    s.id, s.in_flight
                ));
            }
            if s.outbox.bytes() > s.config.max_write_buffer {
                let max = s.config.max_write_buffer;
                let bytes = s.outbox.bytes();
                return Err(format!("{}: {bytes} bytes queued, over {max}", s.id));
            }
            counted += s.in_flight;
        }
        // A batch's calls count on their connection until the batch completes whole.
        let gathered: usize = self
            .batches
            .iter()
            .map(|(_, gather)| gather.results.len() - gather.missing)
            .sum();
        let pending = self.calls.pending_len() + self.undispatched + gathered;
        if counted != pending {
            return Err(format!(
                "{pending} calls pending, {counted} counted on connections"
            ));
        }
        Ok(())
    }

    // ---- B. Inputs from the network and the clock ----------------------------------------

    /// The socket is open: TCP, TLS and the WebSocket opening handshake are done.
    pub(crate) fn handle_connected(&mut self, now: u64, conn: ConnId) {
        self.at(now);
        let Some(index) = self.active(conn) else {
            return;
        };
        let s = &mut self.sessions[index];
        if s.stage != Stage::Connecting {
            return;
        }
        if let Some(key) = s.timer.take() {
            self.calls.disarm_conn_timer(key);
        }
        s.stage = Stage::Open;
        let ping = s
            .config
            .ping_interval
            .map(|interval| (millis(interval), millis(s.config.pong_timeout)));
        if let Some(at) = s.handle_open(now, ping) {
            s.keepalive_timer = Some(self.calls.arm_conn_timer(at, index, ConnTimer::Keepalive));
        }
        log::debug!("{conn}: {} frames waited to be written", s.outbox.len());
        self.change_state(index, StateChange::Open);
        self.list(index);
        self.resubscribe(index);
    }

    /// A message read from the connection.
    pub(crate) fn handle_message(&mut self, now: u64, conn: ConnId, incoming: Incoming) {
        self.at(now);
        let index = conn.index();
        let Some(s) = self.sessions.get_mut(index).filter(|s| s.id == conn) else {
            return;
        };
        if s.violated || matches!(s.stage, Stage::Reconnecting | Stage::Released(_)) {
            // Nothing the peer sends after a violation counts, nor what a dropped socket
            // still had to say.
            return;
        }
        if let Some(keepalive) = &mut s.keepalive {
            keepalive.handle_received();
        }
        match incoming {
            Incoming::Text(text) => {
                s.stats.messages_received += 1;
                // Release tungstenite's read buffer at once (see `FrameArena`).
                let text = match text {
                    small if small.len() <= COPY_LIMIT => self.arena.copy(&small),
                    large => large,
                };
                let stats = &mut s.stats;
                let mut stray = |reason| stats.count_unmatched(reason);
                let routed = self.calls.handle_frame(
                    conn,
                    &*s.config.codec,
                    s.config.max_nesting_depth,
                    text,
                    &mut stray,
                );
                match routed {
                    Routed::Answered(calls) => {
                        s.stats.answers += calls;
                        self.drain_completions();
                    }
                    Routed::Unmatched(reason, text) => {
                        s.stats.count_unmatched(reason);
                        let message = Unmatched::text(conn, reason, text);
                        self.events
                            .push_back(Entry::Event(Event::Unmatched(message)));
                    }
                    Routed::Notification(notification) => self.route(index, notification),
                }
            }
            Incoming::Binary(data) => {
                s.stats.messages_received += 1;
                s.stats.count_unmatched(UnmatchedReason::Binary);
                let message = Unmatched::binary(conn, data);
                self.events
                    .push_back(Entry::Event(Event::Unmatched(message)));
            }
            Incoming::Control => {}
            Incoming::Close { code, reason } => {
                log::debug!("{conn}: peer closed with {code}");
                self.end(
                    index,
                    Ending::PeerClosed(DisconnectReason::PeerClosed { code, reason }),
                );
            }
        }
    }

    /// The socket failed: a connect, TLS or handshake failure, an I/O error.
    pub(crate) fn handle_transport_error(
        &mut self,
        now: u64,
        conn: ConnId,
        reason: DisconnectReason,
    ) {
        self.at(now);
        if let Some(index) = self.active(conn) {
            self.end(index, Ending::Lost(reason, None));
        }
    }

    /// The peer broke the WebSocket protocol (tungstenite refused what it sent). The
    /// connection fails with `reason`, after the events already queued are polled.
    pub(crate) fn handle_violation(
        &mut self,
        now: u64,
        conn: ConnId,
        violation: Violation,
        reason: DisconnectReason,
    ) {
        self.at(now);
        let Some(index) = self.active(conn) else {
            return;
        };
        let s = &mut self.sessions[index];
        if s.violated || s.stage == Stage::Reconnecting {
            return;
        }
        s.violated = true;
        if s.ended().is_some() {
            // During our close handshake: nothing is owed to the peer any more.
            return self.end(index, Ending::Lost(reason, None));
        }
        let socket = s.sockets;
        self.events.push_back(Entry::Violation {
            conn,
            socket,
            violation,
            reason,
        });
    }

    /// The socket ended: the close handshake is done, or the peer closed the TCP connection.
    pub(crate) fn handle_transport_closed(&mut self, now: u64, conn: ConnId) {
        self.at(now);
        let Some(index) = self.active(conn) else {
            return;
        };
        let Stage::Closing(ended) = self.sessions[index].stage.clone() else {
            return self.end(index, Ending::Lost(DisconnectReason::Reset, None));
        };
        log::debug!("{conn}: socket closed");
        self.release(index, ended);
    }

    /// The socket refused `transmit` (its buffer is full): it goes back first in line, still
    /// pending, and nothing more is offered until [`handle_writable`](Self::handle_writable).
    pub(crate) fn handle_write_refused(&mut self, conn: ConnId, transmit: Transmit) {
        let Some(index) = self.active(conn) else {
            return;
        };
        let s = &mut self.sessions[index];
        let size = match &transmit {
            Transmit::Call { text, .. } | Transmit::Batch { text, .. } => text.len(),
            Transmit::Message(message) => {
                s.stats.messages_sent -= 1;
                message.len()
            }
            Transmit::Ping => return, // the silence it would have probed still counts
        };
        for &id in transmit.calls() {
            if self.calls.handle_unwritten(id) {
                s.stats.requests_sent -= 1;
            }
        }
        s.outbox.push_front(transmit, size);
        s.blocked = true;
    }

    /// The socket takes writes again.
    pub(crate) fn handle_writable(&mut self, conn: ConnId) {
        let Some(index) = self.active(conn) else {
            return;
        };
        let s = &mut self.sessions[index];
        if s.blocked {
            s.blocked = false;
            self.list(index);
        }
    }

    /// Fires every deadline due at or before `now`, in deadline order: calls time out, and
    /// connections act on their connect, close, reconnect and keepalive deadlines. A deadline
    /// armed meanwhile that is due already fires in the same pass.
    pub(crate) fn handle_timeout(&mut self, now: u64) {
        self.at(now);
        while let Some((index, kind)) = self.calls.poll_timeout(now) {
            self.drain_completions();
            let Some(s) = self.sessions.get_mut(index) else {
                debug_assert!(false, "a deadline of a freed session");
                continue;
            };
            match kind {
                ConnTimer::Keepalive => s.keepalive_timer = None,
                _ => s.timer = None,
            }
            match kind {
                ConnTimer::Connect => {
                    self.end(index, Ending::Lost(DisconnectReason::ConnectTimeout, None));
                }
                ConnTimer::Close => {
                    log::debug!("{}: close timeout, dropping the socket", s.id);
                    if let Stage::Closing(ended) = s.stage.clone() {
                        self.drop_socket(index, None);
                        self.release(index, ended);
                    }
                }
                ConnTimer::Reconnect => self.reconnect(index),
                ConnTimer::Keepalive => self.keepalive_due(index, now),
            }
        }
        self.drain_completions();
    }

    // ---- C. Commands from the application -----------------------------------------------

    /// A new connection with `config`; asks the driver to connect (`seed` spreads its
    /// reconnect delays apart from other clients').
    pub(crate) fn open(
        &mut self,
        now: u64,
        config: ConnectionConfig,
        seed: u64,
    ) -> Result<ConnId, Error> {
        self.at(now);
        if self.shut_down {
            return Err(Error::Shutdown);
        }
        let entry = self.sessions.vacant_entry();
        let index = entry.key();
        if self.generations.len() <= index {
            self.generations.resize(index + 1, 0);
            self.gone.resize_with(index + 1, || None);
        }
        // The slot holds a new connection: the old one is forgotten.
        self.gone[index] = None;
        let id = ConnId::new(index, self.generations[index]);
        let connect_timeout = config.connect_timeout;
        entry.insert(Session::new(id, config, seed));
        self.arm(index, ConnTimer::Connect, connect_timeout);
        self.change_state(index, StateChange::Connecting);
        self.actions.push_back((id, SocketAction::Connect));
        Ok(id)
    }

    /// Submits a call whose payload is JSON text. On refusal the token comes back, unrun.
    pub(crate) fn submit(
        &mut self,
        now: u64,
        conn: ConnId,
        payload: &str,
        options: CallOptions,
        token: T,
    ) -> Result<CallId, (Error, T)> {
        self.at(now);
        match self.prepare(conn, payload, options.timeout) {
            Ok((index, deadline)) => Ok(self.register(index, deadline, Owner::User(token))),
            Err(e) => Err((e, token)),
        }
    }

    /// Submits several calls in one frame (a JSON array), with one token for all.
    pub(crate) fn submit_batch(
        &mut self,
        now: u64,
        conn: ConnId,
        payloads: &[String],
        options: CallOptions,
        token: T,
    ) -> Result<Vec<CallId>, (Error, T)> {
        self.at(now);
        if payloads.is_empty() {
            let e = Error::Encode(serde::ser::Error::custom(
                "a batch needs at least one request",
            ));
            return Err((e, token));
        }
        let (index, deadline) = match self.admit(conn, payloads.len(), options.timeout) {
            Ok(admitted) => admitted,
            Err(e) => return Err((e, token)),
        };
        let batch = self.batches.vacant_key();
        let codec = self.sessions[index].config.codec.clone();
        let mut frame = String::from("[");
        let mut ids = Vec::with_capacity(payloads.len());
        let mut failure = None;
        for (i, payload) in payloads.iter().enumerate() {
            if i > 0 {
                frame.push(',');
            }
            let id = self.calls.next_id();
            if let Err(e) = codec.encode_request(id, payload, &mut frame) {
                failure = Some(Error::Encode(serde::ser::Error::custom(e)));
                break;
            }
            let owner = Owner::Batch { batch, index: i };
            let registered = self.calls.handle_submit(conn, deadline, false, owner);
            debug_assert_eq!(registered, id);
            ids.push(id);
        }
        frame.push(']');
        let size = frame.len();
        if failure.is_none() {
            failure = self.fits(index, size).err();
        }
        if let Some(e) = failure {
            for &id in &ids {
                self.calls.handle_withdraw(id);
            }
            return Err((e, token));
        }
        let inserted = self.batches.insert(Gather {
            conn,
            token,
            results: (0..ids.len()).map(|_| None).collect(),
            missing: ids.len(),
        });
        debug_assert_eq!(inserted, batch);
        let transmit = Transmit::Batch {
            ids: ids.as_slice().into(),
            text: frame.into(),
        };
        let s = &mut self.sessions[index];
        s.outbox.push(transmit, size);
        self.queued_bytes += size;
        s.in_flight += ids.len();
        self.list(index);
        Ok(ids)
    }

    /// Sends a message that is not a call, in submit order with the calls.
    pub(crate) fn send(&mut self, now: u64, conn: ConnId, message: Message) -> Result<(), Error> {
        self.at(now);
        if self.shut_down {
            return Err(Error::Shutdown);
        }
        let Some(index) = self.session(conn).map(|_| conn.index()) else {
            return Err(self.not_live(conn));
        };
        if let Some(ended) = self.sessions[index].ended() {
            return Err(ended.to_error());
        }
        let size = message.len();
        self.fits(index, size)?;
        self.sessions[index]
            .outbox
            .push(Transmit::Message(message), size);
        self.queued_bytes += size;
        self.list(index);
        Ok(())
    }

    /// Sends a notification: `payload` (`{"method":..,"params":..}`) stamped by the codec as a
    /// message that expects no answer.
    pub(crate) fn notify(&mut self, now: u64, conn: ConnId, payload: &str) -> Result<(), Error> {
        let Some(s) = self.session(conn) else {
            return Err(self.not_live(conn));
        };
        let mut frame = String::new();
        s.config
            .codec
            .encode_notification(payload, &mut frame)
            .map_err(|e| Error::Encode(serde::ser::Error::custom(e)))?;
        self.send(now, conn, Message::Text(frame))
    }

    /// Cancels a pending call; `false` if it is not pending. A call of a batch still waiting
    /// to be written cancels every call of that batch not yet written (they are one frame).
    pub(crate) fn cancel(&mut self, id: CallId) -> bool {
        if self.calls.is_queued(id) {
            let batch = self
                .calls
                .conn_of(id)
                .and_then(|conn| self.session(conn))
                .and_then(|s| s.outbox.batch_of(id))
                .map(<[CallId]>::to_vec);
            for other in batch.into_iter().flatten() {
                if other != id {
                    self.calls.handle_cancel(other);
                }
            }
        }
        let cancelled = self.calls.handle_cancel(id);
        self.drain_completions();
        cancelled
    }

    /// Closes the connection with the close handshake: its calls fail with `Closed`, its
    /// subscriptions end. Closing an ended connection does nothing.
    pub(crate) fn close(&mut self, now: u64, conn: ConnId) -> Result<(), Error> {
        self.at(now);
        match self.session(conn) {
            Some(_) => {
                self.end(conn.index(), Ending::Closed);
                Ok(())
            }
            None if self.gone_record(conn).is_some() => Ok(()),
            None => Err(Error::UnknownConnection),
        }
    }

    /// Sets that notifications of `method` on `conn` go to a handler
    /// (`Event::Notification`), not to the message handler as pushes.
    pub(crate) fn watch_method(&mut self, conn: ConnId, method: &str) -> Result<(), Error> {
        let s = self.session_mut(conn).ok_or(Error::UnknownConnection)?;
        s.methods.insert(method.into());
        Ok(())
    }

    /// Subscribes: calls `method` with `params`; the answer is the key items carry.
    pub(crate) fn subscribe(
        &mut self,
        now: u64,
        conn: ConnId,
        method: &str,
        params: Box<RawValue>,
        unsubscribe_method: &str,
        options: SubscribeOptions,
    ) -> Result<SubscriptionId, Error> {
        self.at(now);
        let id = self.next_sub;
        let payload =
            serde_json::to_string(&Request::new(method, &*params)).map_err(Error::Encode)?;
        let owner = Owner::Subscribe {
            sub: id,
            attempt: 0,
        };
        let call = self.submit_internal(conn, &payload, options.timeout, owner)?;
        self.next_sub += 1;
        self.subs.insert(
            id,
            Subscription {
                conn,
                method: method.into(),
                params,
                unsubscribe_method: unsubscribe_method.into(),
                options,
                state: SubState::Subscribing { call },
                attempt: 0,
            },
        );
        Ok(SubscriptionId::new(id))
    }

    /// Ends a subscription with `Ended(Cancelled)`, and unsubscribes on the server (now if
    /// subscribed, when the answer comes if the subscribe call is out). `false` if it had
    /// ended already.
    pub(crate) fn unsubscribe(&mut self, now: u64, sub: SubscriptionId) -> bool {
        self.at(now);
        let id = sub.raw();
        let Some(s) = self.subs.get_mut(&id) else {
            return false;
        };
        match s.state.clone() {
            SubState::Abandoned { .. } => return false,
            SubState::Active { key } => {
                let (conn, method) = (s.conn, s.unsubscribe_method.clone());
                self.subs.remove(&id);
                if let Some(session) = self.session_mut(conn) {
                    session.keys.remove(&key);
                }
                self.send_unsubscribe(conn, &method, &key);
            }
            SubState::Subscribing { call } => {
                if self.calls.is_queued(call) {
                    // Never reached the server: withdrawn.
                    let conn = s.conn;
                    self.subs.remove(&id);
                    if self.calls.handle_withdraw(call).is_some() {
                        self.uncount(conn, 1);
                    }
                } else {
                    s.state = SubState::Abandoned { call };
                }
            }
            SubState::Interrupted => {
                self.subs.remove(&id);
            }
        }
        self.unroute_queued_items(sub);
        self.events.push_back(Entry::Event(Event::Subscription(
            sub,
            SubscriptionEvent::Ended(Error::Cancelled),
        )));
        true
    }

    /// Items of `sub` read but not polled yet when it is unsubscribed are late: like items
    /// read later, they are counted as unknown and go to the message handler as pushes.
    fn unroute_queued_items(&mut self, sub: SubscriptionId) {
        let queued = |entry: &Entry<T>| matches!(entry, Entry::Event(Event::Subscription(s, SubscriptionEvent::Item(_))) if *s == sub);
        if !self.events.iter().any(queued) {
            return;
        }
        let events = std::mem::take(&mut self.events);
        for entry in events {
            let Entry::Event(Event::Subscription(s, SubscriptionEvent::Item(item))) = entry else {
                self.events.push_back(entry);
                continue;
            };
            if s != sub {
                let event = Event::Subscription(s, SubscriptionEvent::Item(item));
                self.events.push_back(Entry::Event(event));
                continue;
            }
            let conn = item.conn();
            if let Some(session) = self.session_mut(conn) {
                session.stats.notifications -= 1;
                session.stats.unknown_subscription += 1;
                session.stats.count_unmatched(UnmatchedReason::NoId);
            }
            let push = Unmatched::text(conn, UnmatchedReason::NoId, item.into_frame());
            self.events.push_back(Entry::Event(Event::Unmatched(push)));
        }
    }

    /// Completes every call with `Shutdown`, ends every connection and subscription, and
    /// refuses what comes later.
    pub(crate) fn shutdown(&mut self, now: u64) {
        self.at(now);
        if self.shut_down {
            return;
        }
        self.shut_down = true;
        let live: Vec<usize> = self
            .sessions
            .iter()
            .filter(|(_, s)| !matches!(s.stage, Stage::Released(_)))
            .map(|(index, _)| index)
            .collect();
        for index in live {
            self.end(index, Ending::Shutdown);
        }
        self.subs.clear();
    }

    // ---- D. Outputs ------------------------------------------------------------------

    /// The next message to write, and its connection. A call's frame is written as it is
    /// polled; one completed meanwhile (a timeout, a cancel) is skipped.
    pub(crate) fn poll_transmit(&mut self) -> Option<(ConnId, Transmit)> {
        loop {
            let Some(&index) = self.ready.last() else {
                self.queued_bytes = 0;
                return None;
            };
            let Some(s) = self.sessions.get_mut(index) else {
                self.ready.pop();
                continue;
            };
            let popped = if s.writes() { s.outbox.pop() } else { None };
            if s.outbox.is_empty() || popped.is_none() {
                // Drained (or blocked): off the list now, not on the next poll.
                s.listed = false;
                self.ready.pop();
            }
            let Some((transmit, _)) = popped else {
                continue;
            };
            match &transmit {
                Transmit::Call { id, .. } => {
                    if !self.calls.handle_written(*id) {
                        continue; // completed while it waited
                    }
                    s.stats.requests_sent += 1;
                }
                Transmit::Batch { ids, .. } => {
                    let calls = &mut self.calls;
                    let written = ids.iter().filter(|&&id| calls.handle_written(id)).count();
                    if written == 0 {
                        continue; // cancelled or timed out while it waited
                    }
                    s.stats.requests_sent += written as u64;
                }
                Transmit::Message(_) => s.stats.messages_sent += 1,
                Transmit::Ping => {}
            }
            return Some((s.id, transmit));
        }
    }

    /// The next thing to do with a socket.
    pub(crate) fn poll_action(&mut self) -> Option<(ConnId, SocketAction)> {
        self.actions.pop_front()
    }

    /// The earliest tick at which a deadline may be due.
    pub(crate) fn poll_timeout(&self) -> Option<u64> {
        self.calls.next_deadline()
    }

    /// The next event, in the order things happened. A session is freed as its `Released`
    /// is polled.
    ///
    /// A step that needs the driver's I/O done first waits in the queue until what is ready
    /// to write and the socket actions have been polled (`None` meanwhile, with
    /// [`has_events`](Self::has_events) still true): a protocol violation, so that what the
    /// handlers of the messages read before it sent leaves before the close frame; a
    /// `Released`, so that its socket's last action (the close frame, the drop) is done before
    /// the driver lets go of it.
    pub(crate) fn poll_event(&mut self) -> Option<Event<T>> {
        loop {
            let front = self.events.front_mut()?;
            if let Entry::Calls(n) = front {
                *n -= 1;
                if *n == 0 {
                    self.events.pop_front();
                }
                return self.poll_call();
            }
            let step = !matches!(front, Entry::Event(_));
            if step && (!self.ready.is_empty() || !self.actions.is_empty()) {
                return None;
            }
            match self.events.pop_front()? {
                Entry::Event(event) => {
                    // The application's completions come through `Entry::Calls`; one queued
                    // here (route_completion's fallback) is counted off the same way.
                    let done = match &event {
                        Event::Completed { conn, .. } => Some((*conn, 1)),
                        Event::BatchCompleted { conn, results, .. } => Some((*conn, results.len())),
                        _ => None,
                    };
                    if let Some((conn, n)) = done {
                        self.undispatched -= n;
                        self.uncount(conn, n);
                    }
                    return Some(event);
                }
                Entry::Calls(_) => unreachable!("handled above"),
                Entry::Violation {
                    conn,
                    socket,
                    violation,
                    reason,
                } => {
                    // Unless that socket is gone already (lost meanwhile, or a timeout).
                    let live = self.active(conn).filter(|&index| {
                        let s = &self.sessions[index];
                        s.violated && s.sockets == socket
                    });
                    if let Some(index) = live {
                        self.end(index, Ending::Lost(reason, violation.close_frame()));
                    }
                }
                Entry::Released(conn) => {
                    self.free(conn);
                    return Some(Event::Released(conn));
                }
            }
        }
    }

    /// The application's next completion, from the call table's queue.
    fn poll_call(&mut self) -> Option<Event<T>> {
        let Some(done) = self.calls.poll_completion() else {
            debug_assert!(false, "an Entry::Calls with no completion behind it");
            return None;
        };
        self.marked -= 1;
        self.undispatched -= 1;
        let Completion {
            id,
            conn,
            token,
            result,
        } = done;
        if let Some(s) = self.session_mut(conn) {
            s.in_flight -= 1;
            if matches!(result, Err(Error::Timeout)) {
                s.stats.timeouts += 1;
            }
        }
        let Owner::User(token) = token else {
            unreachable!("the engine's own completions are queued apart");
        };
        Some(Event::Completed {
            conn,
            id,
            token,
            result,
        })
    }

    /// A connection whose state may have changed since the last call, with its state now
    /// (for the handles' view).
    pub(crate) fn poll_touched(&mut self) -> Option<(ConnId, ConnState)> {
        loop {
            let conn = self.touched.pop()?;
            if let Some(state) = self.state(conn) {
                return Some((conn, state));
            }
        }
    }

    // ---- The machine ------------------------------------------------------------------

    /// Checks that `conn` takes `n` more calls; returns its slot and the calls' deadline.
    fn admit(
        &self,
        conn: ConnId,
        n: usize,
        timeout: Option<Duration>,
    ) -> Result<(usize, u64), Error> {
        if self.shut_down {
            return Err(Error::Shutdown);
        }
        let Some(s) = self.session(conn) else {
            return Err(self.not_live(conn));
        };
        if let Some(ended) = s.ended() {
            return Err(ended.to_error());
        }
        if s.in_flight + n > s.config.max_in_flight || !self.calls.has_room_for(n) {
            return Err(Error::Busy);
        }
        let timeout = timeout.unwrap_or(s.config.default_timeout);
        Ok((conn.index(), tick_after(self.now, timeout)))
    }

    /// Whether session `index` takes a frame of `size` bytes: within `max_message_size` and,
    /// with its frame header, within `max_write_buffer` ([`Error::TooLarge`]: it never could
    /// be sent), and within what the outbox has room for now ([`Error::Busy`]).
    fn fits(&mut self, index: usize, size: usize) -> Result<(), Error> {
        let calls = &self.calls;
        let s = &mut self.sessions[index];
        let (limit, budget) = (s.message_limit, s.config.max_write_buffer);
        if size > limit {
            return Err(Error::TooLarge { size, limit });
        }
        if !s.outbox.admits(size, budget, |id| calls.is_queued(id)) {
            return Err(Error::Busy);
        }
        Ok(())
    }

    /// Admits a call and encodes its request into the scratch frame.
    fn prepare(
        &mut self,
        conn: ConnId,
        payload: &str,
        timeout: Option<Duration>,
    ) -> Result<(usize, u64), Error> {
        let (index, deadline) = self.admit(conn, 1, timeout)?;
        let id = self.calls.next_id();
        let s = &mut self.sessions[index];
        self.frame.clear();
        if let Err(e) = s.config.codec.encode_request(id, payload, &mut self.frame) {
            return Err(Error::Encode(serde::ser::Error::custom(e)));
        }
        self.fits(index, self.frame.len())?;
        Ok((index, deadline))
    }

    /// Registers the call whose request [`prepare`](Self::prepare) encoded, and queues it.
    fn register(&mut self, index: usize, deadline: u64, owner: Owner<T>) -> CallId {
        let s = &mut self.sessions[index];
        let size = self.frame.len();
        // The frame lives until the driver has handed it to the socket.
        let text: Utf8Bytes = if size <= COPY_LIMIT {
            self.arena.copy(&self.frame)
        } else {
            // One exact allocation; past a few chunks' worth the scratch is let go rather
            // than kept at the largest request's size.
            let text = self.frame.as_str().into();
            if self.frame.capacity() > 4 * COPY_LIMIT {
                self.frame = String::new();
            }
            text
        };
        let id = self.calls.handle_submit(s.id, deadline, false, owner);
        s.outbox.push(Transmit::Call { id, text }, size);
        self.queued_bytes += size;
        s.in_flight += 1;
        if !s.writes() {
            let calls = &self.calls;
            s.outbox
                .compact_if_sparse(s.in_flight, |id| calls.is_queued(id));
        }
        self.list(index);
        id
    }

    /// A call the engine makes itself (subscribe, unsubscribe).
    fn submit_internal(
        &mut self,
        conn: ConnId,
        payload: &str,
        timeout: Option<Duration>,
        owner: Owner<T>,
    ) -> Result<CallId, Error> {
        let (index, deadline) = self.prepare(conn, payload, timeout)?;
        Ok(self.register(index, deadline, owner))
    }

    /// Lists a session that may have frames to poll.
    fn list(&mut self, index: usize) {
        let s = &mut self.sessions[index];
        if !s.listed && s.writes() && !s.outbox.is_empty() {
            s.listed = true;
            self.ready.push(index);
        }
    }

    /// Takes the call table's new completions in hand: the application's stay in the table's
    /// queue, stood for in the event queue by an `Entry::Calls` (so that each is moved once);
    /// the engine's own (batches, subscriptions) are handled now.
    fn drain_completions(&mut self) {
        let queued = self.calls.completions_len();
        if queued > self.marked {
            let n = queued - self.marked;
            self.marked = queued;
            self.undispatched += n;
            match self.events.back_mut() {
                Some(Entry::Calls(m)) => *m += n,
                _ => self.events.push_back(Entry::Calls(n)),
            }
        }
        while let Some(done) = self.calls.poll_own_completion() {
            self.route_completion(done);
        }
    }

    fn route_completion(&mut self, done: Completion<Owner<T>>) {
        let Completion {
            id,
            conn,
            token,
            result,
        } = done;
        if matches!(result, Err(Error::Timeout)) {
            if let Some(s) = self.session_mut(conn) {
                s.stats.timeouts += 1;
            }
        }
        match token {
            Owner::User(token) => {
                // The application's completions are polled from the table, in order.
                debug_assert!(false, "an application's completion among the engine's own");
                self.undispatched += 1;
                self.events.push_back(Entry::Event(Event::Completed {
                    conn,
                    id,
                    token,
                    result,
                }));
            }
            Owner::Batch { batch, index } => {
                let Some(gather) = self.batches.get_mut(batch) else {
                    debug_assert!(false, "a batch call of no batch");
                    return;
                };
                gather.results[index] = Some(result);
                gather.missing -= 1;
                if gather.missing > 0 {
                    return;
                }
                let gather = self.batches.remove(batch);
                // Every slot is filled: each call completed exactly once.
                let results: Vec<_> = gather
                    .results
                    .into_iter()
                    .map(|r| r.unwrap_or(Err(Error::Cancelled)))
                    .collect();
                self.undispatched += results.len();
                self.events.push_back(Entry::Event(Event::BatchCompleted {
                    conn: gather.conn,
                    token: gather.token,
                    results,
                }));
            }
            Owner::Subscribe { sub, attempt } => {
                self.uncount(conn, 1);
                self.on_subscribe_answer(sub, attempt, result);
            }
            Owner::Unsubscribe => {
                self.uncount(conn, 1);
                if let Err(e) = result {
                    log::debug!("unsubscribe failed: {e}");
                }
            }
        }
    }

    /// A call of `conn` no longer counts against its `max_in_flight`.
    fn uncount(&mut self, conn: ConnId, n: usize) {
        if let Some(s) = self.session_mut(conn) {
            s.in_flight -= n;
        }
    }

    /// Routes a notification read from session `index`: to the subscription its key names,
    /// else to the handler of its method, else to the message handler as a push.
    fn route(&mut self, index: usize, notification: Notification) {
        let s = &mut self.sessions[index];
        let key = notification.subscription_key();
        if let Some(&sub) = key.and_then(|key| s.keys.get(key)) {
            s.stats.notifications += 1;
            let event = Event::Subscription(
                SubscriptionId::new(sub),
                SubscriptionEvent::Item(notification),
            );
            return self.events.push_back(Entry::Event(event));
        }
        if !s.methods.is_empty() && s.methods.contains(&*notification.method()) {
            s.stats.notifications += 1;
            let event = Event::Notification(notification);
            return self.events.push_back(Entry::Event(event));
        }
        if key.is_some() {
            // A late item (after unsubscribe) or a key we never subscribed to.
            s.stats.unknown_subscription += 1;
        }
        s.stats.count_unmatched(UnmatchedReason::NoId);
        let message = Unmatched::text(s.id, UnmatchedReason::NoId, notification.into_frame());
        self.events
            .push_back(Entry::Event(Event::Unmatched(message)));
    }

    /// Records a state change of session `index`.
    fn change_state(&mut self, index: usize, change: StateChange) {
        let s = &mut self.sessions[index];
        if let Err(illegal) = s.lifecycle.handle_change(&change) {
            // A bug in this crate, never the peer's doing: loud in tests, ignored in release.
            debug_assert!(false, "{}: {illegal}", s.id);
            log::error!("{}: {illegal}; the change is not told", s.id);
            return;
        }
        let id = s.id;
        match &change {
            StateChange::Connecting => log::info!("{id}: connecting"),
            StateChange::Open => log::info!("{id}: open"),
            StateChange::Disconnected(reason) => log::warn!("{id}: {reason}"),
            StateChange::Reconnecting { attempt, delay } => {
                log::info!("{id}: reconnect attempt {attempt} in {delay:?}");
            }
            StateChange::Closed => log::info!("{id}: closed"),
        }
        self.touched.push(id);
        self.events
            .push_back(Entry::Event(Event::State(id, change)));
    }

    /// Arms session `index`'s connect, close or reconnect deadline, `after` from now.
    fn arm(&mut self, index: usize, kind: ConnTimer, after: Duration) {
        let deadline = tick_after(self.now, after);
        let key = self.calls.arm_conn_timer(deadline, index, kind);
        if let Some(old) = self.sessions[index].timer.replace(key) {
            self.calls.disarm_conn_timer(old);
        }
    }

    /// Disarms every deadline of session `index`.
    fn cancel_timers(&mut self, index: usize) {
        let s = &mut self.sessions[index];
        for key in [s.timer.take(), s.keepalive_timer.take()]
            .into_iter()
            .flatten()
        {
            self.calls.disarm_conn_timer(key);
        }
    }

    fn drop_socket(&mut self, index: usize, close: Option<(u16, &'static str)>) {
        let id = self.sessions[index].id;
        self.actions.push_back((id, SocketAction::Drop { close }));
    }

    /// Ends session `index`'s calls as `end` says, and its subscriptions: with `resume` (the
    /// connection comes back) those made to resubscribe are interrupted, the others end with
    /// `error()`. The subscription events wait in `sub_events`, to be queued behind the
    /// state change (see [`Self::flush_sub_events`]).
    fn end_calls(
        &mut self,
        index: usize,
        end: &CallsEnd<'_>,
        resume: Option<&DisconnectReason>,
        error: impl Fn() -> Error,
    ) {
        // The subscriptions first: a subscribe call failing below is no longer their answer.
        let Engine {
            sessions,
            subs,
            calls,
            sub_events,
            ..
        } = self;
        let s = &mut sessions[index];
        let conn = s.id;
        subs.retain(|&id, sub| {
            if sub.conn != conn {
                return true;
            }
            match &sub.state {
                SubState::Subscribing { call } => {
                    if resume.is_some() && calls.is_queued(*call) {
                        // Never reached the server: its call waits for the connection, like
                        // any call not yet written; nothing was interrupted.
                        return true;
                    }
                }
                SubState::Active { key } => {
                    s.keys.remove(key);
                }
                SubState::Interrupted => {
                    if resume.is_some() {
                        return true; // told already: a reconnect attempt failed
                    }
                }
                // Its `Ended` was told; the call's failure below removes it.
                SubState::Abandoned { .. } => return true,
            }
            match resume {
                Some(reason) if sub.options.resubscribe => {
                    sub.state = SubState::Interrupted;
                    let event = SubscriptionEvent::Interrupted(reason.clone());
                    sub_events.push((id, event));
                    true
                }
                _ => {
                    sub_events.push((id, SubscriptionEvent::Ended(error())));
                    false
                }
            }
        });
        calls.handle_disconnect(conn, |written| end.fate(written));
        self.drain_completions();
    }

    /// Queues the subscription events [`Self::end_calls`] decided.
    fn flush_sub_events(&mut self) {
        for (id, event) in self.sub_events.drain(..) {
            let event = Event::Subscription(SubscriptionId::new(id), event);
            self.events.push_back(Entry::Event(event));
        }
    }

    /// The one place a connection ends, or is interrupted, whichever way ([`Ending`]):
    /// timers disarmed, the socket closed or dropped, each call's fate decided by
    /// [`CallsEnd::fate`], the subscriptions interrupted or ended, and the state changes told.
    ///
    /// Lost (or closed by the peer) under a reconnect policy with attempts left, the
    /// connection is interrupted, not ended: written calls fail with `Disconnected` (the
    /// server may have acted on them: they are never re-sent), unwritten ones wait for the
    /// next connection. Otherwise it ends: unwritten calls fail too, and the session is
    /// released, or closing while a close handshake runs.
    fn end(&mut self, index: usize, ending: Ending) {
        match (self.sessions[index].stage.clone(), &ending) {
            (Stage::Released(_), _) => return,
            // News of the socket dropped when the connection was lost: it has none now.
            (Stage::Reconnecting, Ending::Lost(..) | Ending::PeerClosed(_)) => return,
            // The answer to our own close, or a second close: the handshake goes on.
            (Stage::Closing(_), Ending::Closed | Ending::PeerClosed(_)) => return,
            // It had ended: only the socket was left.
            (Stage::Closing(ended), Ending::Lost(..) | Ending::Shutdown) => {
                self.drop_socket(index, None);
                return self.release(index, ended);
            }
            _ => {}
        }
        self.cancel_timers(index);
        let now = self.now;
        let s = &mut self.sessions[index];
        let was_open = s.stage == Stage::Open;
        s.blocked = false;
        s.violated = false;
        let (reason, close) = match &ending {
            Ending::PeerClosed(reason) => (Some(reason.clone()), None),
            Ending::Lost(reason, close) => (Some(reason.clone()), *close),
            Ending::Closed | Ending::Shutdown => (None, None),
        };
        let had_policy = s.reconnects();
        s.keepalive = None;
        let comeback = reason.as_ref().and_then(|_| s.handle_loss(now));
        if let (Some(reason), Some((attempt, delay))) = (&reason, comeback) {
            self.drop_socket(index, close);
            let end = CallsEnd::Interrupted(reason);
            self.end_calls(index, &end, Some(reason), || {
                Error::Disconnected(reason.clone())
            });
            self.sessions[index].stage = Stage::Reconnecting;
            self.change_state(index, StateChange::Disconnected(reason.clone()));
            self.arm(index, ConnTimer::Reconnect, delay);
            self.change_state(index, StateChange::Reconnecting { attempt, delay });
            self.flush_sub_events();
            return;
        }
        if had_policy && reason.is_some() {
            log::warn!(
                "{}: out of reconnect attempts, giving up",
                self.sessions[index].id
            );
        }
        let ended = reason.clone().map_or(Ended::Closed, Ended::Disconnected);
        let calls = match ending {
            Ending::Shutdown => CallsEnd::Shutdown,
            _ => CallsEnd::Over(&ended),
        };
        self.sessions[index].outbox.clear();
        self.end_calls(index, &calls, None, || match (&ending, &reason) {
            (Ending::Shutdown, _) => Error::Shutdown,
            (_, Some(reason)) => Error::Disconnected(reason.clone()),
            (_, None) => Error::Closed,
        });
        // The socket: a close handshake (ours, or the peer's that tungstenite answers), or
        // dropped.
        let handshake = match ending {
            Ending::Closed if was_open => {
                // RFC 6455 §7.4.1: 1000 indicates a normal closure.
                let action = SocketAction::Close {
                    code: 1000,
                    reason: "",
                };
                self.actions.push_back((self.sessions[index].id, action));
                true
            }
            Ending::PeerClosed(_) => true,
            Ending::Closed | Ending::Lost(..) | Ending::Shutdown => {
                self.drop_socket(index, close);
                false
            }
        };
        if handshake {
            let s = &mut self.sessions[index];
            s.stage = Stage::Closing(ended.clone());
            let after = s.config.close_timeout;
            self.arm(index, ConnTimer::Close, after);
        }
        if let Some(reason) = reason {
            self.change_state(index, StateChange::Disconnected(reason));
        }
        self.flush_sub_events();
        self.change_state(index, StateChange::Closed);
        if !handshake {
            self.release(index, ended);
        }
    }

    /// The backoff delay is over: connect again.
    fn reconnect(&mut self, index: usize) {
        let s = &mut self.sessions[index];
        if s.stage != Stage::Reconnecting {
            return;
        }
        s.stage = Stage::Connecting;
        s.sockets += 1;
        let (id, after) = (s.id, s.config.connect_timeout);
        self.arm(index, ConnTimer::Connect, after);
        self.change_state(index, StateChange::Connecting);
        self.actions.push_back((id, SocketAction::Connect));
    }

    /// The keepalive deadline fired: ping, or give the peer up for dead.
    fn keepalive_due(&mut self, index: usize, now: u64) {
        let s = &mut self.sessions[index];
        let writes = s.writes() && s.outbox.is_empty();
        let Some(keepalive) = &mut s.keepalive else {
            return;
        };
        match keepalive.handle_timeout(now) {
            KeepaliveAction::Wait => {}
            // A socket that is not taking writes leaves the ping out; the silence it would
            // have probed still counts against the peer.
            KeepaliveAction::Ping if writes => {
                s.outbox.push(Transmit::Ping, 0);
                self.list(index);
            }
            KeepaliveAction::Ping => {}
            KeepaliveAction::Dead => {
                return self.end(
                    index,
                    Ending::Lost(DisconnectReason::KeepaliveTimeout, None),
                );
            }
        }
        let s = &mut self.sessions[index];
        if let Some(keepalive) = &s.keepalive {
            let at = keepalive.next_deadline();
            s.keepalive_timer = Some(self.calls.arm_conn_timer(at, index, ConnTimer::Keepalive));
        }
    }

    /// Session `index` is over, as `ended` says, and its socket gone: only what is queued of
    /// it remains; it is freed when its `Released` is polled.
    fn release(&mut self, index: usize, ended: Ended) {
        self.cancel_timers(index);
        let s = &mut self.sessions[index];
        if matches!(s.stage, Stage::Released(_)) {
            return;
        }
        s.release(ended);
        let id = s.id;
        self.touched.push(id);
        self.events.push_back(Entry::Released(id));
    }

    /// Frees a released session: its slot may then hold a new one, under the next generation.
    fn free(&mut self, conn: ConnId) {
        let index = conn.index();
        if self.session(conn).is_none() {
            debug_assert!(false, "{conn} released twice");
            return;
        }
        let s = self.sessions.remove(index);
        debug_assert_eq!(s.in_flight, 0, "{conn} freed with calls in flight");
        debug_assert!(s.timer.is_none() && s.keepalive_timer.is_none());
        if s.listed {
            self.ready.retain(|&listed| listed != index);
        }
        self.gone[index] = Some(Gone {
            id: conn,
            state: s.state(),
            stats: s.stats,
            ended: s.ended().cloned().unwrap_or(Ended::Closed),
        });
        self.generations[index] = self.generations[index].wrapping_add(1);
        self.touched.push(conn);
        log::debug!("{conn}: freed");
    }

    /// The connection opened again: subscribe again where asked.
    fn resubscribe(&mut self, index: usize) {
        let conn = self.sessions[index].id;
        let due: Vec<u64> = self
            .subs
            .iter()
            .filter(|(_, s)| s.conn == conn && s.state == SubState::Interrupted)
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            let Some(sub) = self.subs.get_mut(&id) else {
                continue;
            };
            sub.attempt += 1;
            let attempt = sub.attempt;
            let timeout = sub.options.timeout;
            let payload = serde_json::to_string(&Request::new(&*sub.method, &*sub.params))
                .map_err(Error::Encode);
            let owner = Owner::Subscribe { sub: id, attempt };
            let sent = payload.and_then(|p| self.submit_internal(conn, &p, timeout, owner));
            match sent {
                Ok(call) => {
                    if let Some(sub) = self.subs.get_mut(&id) {
                        sub.state = SubState::Subscribing { call };
                    }
                }
                Err(e) => {
                    self.subs.remove(&id);
                    let event =
                        Event::Subscription(SubscriptionId::new(id), SubscriptionEvent::Ended(e));
                    self.events.push_back(Entry::Event(event));
                }
            }
        }
    }

    /// The answer to a subscribe call (attempt `attempt`), handled as it is read: items read
    /// right behind it are routed to its key.
    fn on_subscribe_answer(&mut self, id: u64, attempt: u32, result: Result<Response, Error>) {
        let Some(sub) = self.subs.get_mut(&id) else {
            return;
        };
        if sub.attempt != attempt {
            return;
        }
        match (&sub.state, result) {
            (SubState::Subscribing { .. }, Ok(answer)) => {
                let key: Box<str> = answer.text().into();
                let conn = sub.conn;
                sub.state = SubState::Active { key: key.clone() };
                if let Some(s) = self.session_mut(conn) {
                    s.keys.insert(key, id);
                }
                if attempt > 0 {
                    let event = Event::Subscription(
                        SubscriptionId::new(id),
                        SubscriptionEvent::Resubscribed,
                    );
                    self.events.push_back(Entry::Event(event));
                }
            }
            (SubState::Subscribing { .. }, Err(e)) => {
                self.subs.remove(&id);
                let event =
                    Event::Subscription(SubscriptionId::new(id), SubscriptionEvent::Ended(e));
                self.events.push_back(Entry::Event(event));
            }
            // Unsubscribed while the call was out: the server subscribed anyway.
            (SubState::Abandoned { .. }, result) => {
                let (conn, method) = (sub.conn, sub.unsubscribe_method.clone());
                self.subs.remove(&id);
                if let Ok(answer) = result {
                    self.send_unsubscribe(conn, &method, answer.text());
                }
            }
            _ => {}
        }
    }

    /// Sends `method([key])`; its answer is only logged.
    fn send_unsubscribe(&mut self, conn: ConnId, method: &str, key: &str) {
        let Ok(params) = RawValue::from_string(format!("[{key}]")) else {
            return; // a key is the JSON text of a result: always valid
        };
        let Ok(payload) = serde_json::to_string(&Request::new(method, &*params)) else {
            return;
        };
        if let Err(e) = self.submit_internal(conn, &payload, None, Owner::Unsubscribe) {
            log::debug!("unsubscribe not sent: {e}");
        }
    }
}
