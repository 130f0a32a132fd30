//! [`Context`]: the operations on a loop's connections and calls, as callbacks see them, over
//! the core's [`Engine`], which decides everything; and the loop's one clock.
//!
//! Callbacks run on the loop thread with `&mut Context`, so a callback may submit the next call,
//! cancel another or close a connection. [`EventLoop`](crate::EventLoop) dereferences to
//! `Context`, so the same methods are called on the loop itself.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::Poll;
use serde::Serialize;
use serde_json::value::RawValue;
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::client::Request;
use tungstenite::http::{HeaderName, HeaderValue};

use crate::config::{CallOptions, ConnectionConfig};
use crate::core::call_id::CallId;
use crate::core::conn_id::ConnId;
use crate::core::engine::Engine;
use crate::core::event::StateChange;
use crate::core::event::{ConnState, SubscribeOptions, SubscriptionEvent};
use crate::core::notification::Notification;
use crate::core::response::Response;
use crate::core::tick::Clock;
use crate::core::unmatched::Unmatched;
use crate::driver::WAKER;
use crate::driver::call_slot::{CancelSink, Slot};
use crate::driver::connection::Connection;
use crate::driver::mailbox::{Mailbox, lock};
use crate::driver::subscription_queue::{SubQueue, UnsubscribeSink};
use crate::driver::tls;
use crate::error::Error;
use crate::stats::ConnStats;

/// A call's callback, run once on the loop thread.
pub(crate) type Callback = Box<dyn FnOnce(&mut Context, Result<Response, Error>)>;

/// A batch's callback, run once with every result in request order.
pub(crate) type BatchCallback = Box<dyn FnOnce(&mut Context, Vec<Result<Response, Error>>)>;

/// What completes a call, the token the engine holds for it: a callback run on the loop
/// thread, or the result slot of a [`PendingCall`](crate::PendingCall) another thread waits
/// on (which needs no closure around it, so a call from a handle costs no box), or a batch's
/// callback.
pub(crate) enum Reply {
    Callback(Callback),
    Slot(Arc<Slot>),
    Batch(BatchCallback),
}

impl Reply {
    /// Completes the call: runs the callback, or fills the slot and wakes its waiter.
    pub(crate) fn complete(self, ctx: &mut Context, result: Result<Response, Error>) {
        match self {
            Reply::Callback(callback) => callback(ctx, result),
            Reply::Slot(slot) => slot.complete(result),
            Reply::Batch(callback) => callback(ctx, vec![result]),
        }
    }
}

/// A connection's handler for messages that match no call.
pub(crate) type MessageHandler = Box<dyn FnMut(&mut Context, Unmatched)>;
/// A connection's handler for its state changes.
pub(crate) type StateHandler = Box<dyn FnMut(&mut Context, ConnId, StateChange)>;
/// A connection's handler for notifications of one method.
pub(crate) type NotificationHandler = Box<dyn FnMut(&mut Context, Notification)>;
/// A subscription's handler.
pub(crate) type EventHandler = Box<dyn FnMut(&mut Context, SubscriptionEvent)>;

/// What the application set on one connection. Each is taken out while it runs, so that it
/// may act on the loop (and set handlers) with no borrow held. They are dropped when the
/// connection is released: after its last event.
#[derive(Default)]
pub(crate) struct Handlers {
    /// For messages that match no call.
    pub(crate) message: Option<MessageHandler>,
    /// For state changes. It stays until it has been told `Closed`.
    pub(crate) state: Option<StateHandler>,
    /// For notifications, by method (`None` while one runs).
    pub(crate) notifications: HashMap<Box<str>, Option<NotificationHandler>>,
}

/// A callback that may be sent to the loop thread.
type SendCallback = Box<dyn FnOnce(&mut Context, Result<Response, Error>) + Send>;

/// A [`Reply`] that may be sent to the loop thread.
pub(crate) enum SendReply {
    Callback(SendCallback),
    /// The slot of a [`PendingCall`](crate::PendingCall); the loop also records the call's
    /// id in it (for cancelling).
    Slot(Arc<Slot>),
}

impl From<SendReply> for Reply {
    fn from(reply: SendReply) -> Self {
        match reply {
            SendReply::Callback(callback) => Reply::Callback(callback),
            SendReply::Slot(slot) => Reply::Slot(slot),
        }
    }
}

/// What another thread asks of the loop.
pub(crate) enum Command {
    Submit {
        conn: ConnId,
        payload: String,
        options: CallOptions,
        reply: SendReply,
    },
    Cancel(Arc<Slot>),
    Close(ConnId),
    Subscribe {
        conn: ConnId,
        method: String,
        params: Box<RawValue>,
        unsubscribe_method: String,
        options: SubscribeOptions,
        queue: Arc<SubQueue>,
    },
    Unsubscribe(Arc<SubQueue>),
}

/// The part of a loop that other threads share.
pub(crate) struct Shared {
    /// Commands for the loop.
    pub(crate) mailbox: Mailbox<Command>,
    /// Each connection's state, published by the loop when it changes.
    pub(crate) states: Mutex<Vec<Option<(ConnId, ConnState)>>>,
}

impl Shared {
    pub(crate) fn new(waker: mio::Waker) -> Self {
        Shared {
            mailbox: Mailbox::new(waker),
            states: Mutex::new(Vec::new()),
        }
    }

    /// Queues a command for the loop; gives it back if the loop has shut down.
    pub(crate) fn send(&self, command: Command) -> Result<(), Command> {
        self.mailbox.send(command)
    }

    /// Publishes connection `conn`'s state for [`Handle::state`](crate::Handle::state); a
    /// later connection in the same slot replaces it.
    pub(crate) fn publish_state(&self, conn: ConnId, state: ConnState) {
        let mut states = lock(&self.states);
        let index = conn.index();
        if states.len() <= index {
            states.resize(index + 1, None);
        }
        states[index] = Some((conn, state));
    }
}

impl CancelSink for Shared {
    fn cancel(&self, slot: Arc<Slot>) {
        // If the loop has gone, its shutdown completed the call already.
        let _ = self.send(Command::Cancel(slot));
    }
}

impl UnsubscribeSink for Shared {
    fn unsubscribe(&self, queue: Arc<SubQueue>) {
        let _ = self.send(Command::Unsubscribe(queue));
    }
}

/// The loop's connections and calls: everything a callback may act on.
///
/// Obtained as `&mut Context` in callbacks and message handlers, and by dereferencing an
/// [`EventLoop`](crate::EventLoop).
pub struct Context {
    pub(crate) poll: Poll,
    clock: Clock,
    /// The loop's now: the instant last read by [`Context::now`]. Everything the loop does
    /// with time between two reads uses it, never the clock.
    now: Instant,
    /// The connection machine: every decision is its.
    pub(crate) engine: Engine<Reply>,
    /// Each connection's socket and handlers, by slot.
    pub(crate) conns: Vec<Option<Connection<Handlers>>>,
    /// The handlers of live subscriptions, by id.
    pub(crate) sub_handlers: HashMap<u64, EventHandler>,
    /// Connections with calls written into their buffer but not yet to the socket: flushed
    /// once at the start and at the end of each turn, or by [`Context::flush`].
    pub(crate) to_flush: Vec<usize>,
    /// Connections whose read budget ran out with data left.
    pub(crate) to_read: Vec<usize>,
    /// Reused buffer for serializing messages.
    payload: Vec<u8>,
    /// What the loop shares with its handles.
    pub(crate) shared: Arc<Shared>,
    /// Commands taken from the handles' queue and not yet run (past one turn's cap).
    pub(crate) backlog: VecDeque<Command>,
}

impl Context {
    pub(crate) fn new(poll: Poll) -> std::io::Result<Self> {
        let waker = mio::Waker::new(poll.registry(), WAKER)?;
        let now = read_clock();
        Ok(Context {
            poll,
            clock: Clock::new(now),
            now,
            engine: Engine::new(),
            conns: Vec::new(),
            sub_handlers: HashMap::new(),
            to_flush: Vec::new(),
            to_read: Vec::new(),
            payload: Vec::new(),
            shared: Arc::new(Shared::new(waker)),
            backlog: VecDeque::new(),
        })
    }

    /// Opens a connection to a `ws://` or `wss://` URL. Returns at once: the TCP connect, the
    /// TLS handshake (`wss://`) and the WebSocket handshake proceed inside
    /// [`EventLoop::turn`](crate::EventLoop::turn), driven by the same readiness events as
    /// everything else, and calls submitted meanwhile wait for the connection to open (their
    /// deadlines still run).
    ///
    /// The host name is resolved here, with the system resolver, which may block; to keep this
    /// call free of that, resolve it yourself and use [`connect_addr`](Self::connect_addr).
    ///
    /// `wss://` (feature `tls`, on by default) verifies the server's certificate against the
    /// roots `ConnectionConfig::tls` names (Mozilla's by default) and the URL's host, which is
    /// also sent as SNI. A certificate refused, or a TLS handshake that breaks off, ends the
    /// connection with [`DisconnectReason::Tls`](crate::DisconnectReason::Tls) naming the cause, and the calls waiting for it
    /// fail with [`Error::NotSent`]:
    ///
    /// ```no_run
    /// # use rpcloop::*;
    /// # fn f(ev: &mut EventLoop) -> Result<(), Error> {
    /// let conn = ev.connect("wss://example.com/socket", ConnectionConfig::default())?;
    /// ev.submit(conn, 1, |_, result| match result {
    ///     Err(Error::NotSent(DisconnectReason::Tls { kind, message })) => {
    ///         eprintln!("TLS refused ({kind:?}): {message}")
    ///     }
    ///     other => println!("{other:?}"),
    /// })?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] if the URL is not `ws://` or `wss://` (or is `wss://` in a build
    /// without the `tls` feature), or its host does not resolve (or, for `wss://`, is not a
    /// name a certificate can be checked against); [`Error::Io`] if the platform's
    /// certificate store cannot be read (`TlsConfig::Native`); [`Error::Handshake`] if a
    /// configured header is not a valid HTTP header. A socket that cannot be created fails
    /// the connection as any failed connect does ([`DisconnectReason::ConnectFailed`](crate::DisconnectReason::ConnectFailed)), with
    /// its state handler told.
    pub fn connect(&mut self, url: &str, config: ConnectionConfig) -> Result<ConnId, Error> {
        let (request, secure) = parse_url(url)?;
        let uri = request.uri();
        let host = uri.host().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let addr = (host, port)
            .to_socket_addrs()
            .map_err(|e| Error::InvalidUrl(format!("{url}: cannot resolve {host}: {e}")))?
            .next()
            .ok_or_else(|| Error::InvalidUrl(format!("{url}: {host} has no address")))?;
        self.open(request, secure, addr, config)
    }

    /// Opens a connection to `addr`, using `url` for the handshake's `Host` header and path
    /// (and, for `wss://`, the name the server's certificate must carry).
    /// Nothing blocks: see [`connect`](Self::connect).
    ///
    /// # Errors
    /// As [`connect`](Self::connect), but the host is never resolved.
    pub fn connect_addr(
        &mut self,
        url: &str,
        addr: SocketAddr,
        config: ConnectionConfig,
    ) -> Result<ConnId, Error> {
        let (request, secure) = parse_url(url)?;
        self.open(request, secure, addr, config)
    }

    fn open(
        &mut self,
        mut request: Request,
        secure: bool,
        addr: SocketAddr,
        config: ConnectionConfig,
    ) -> Result<ConnId, Error> {
        let now = self.now_tick_fresh();
        if self.engine.is_shut_down() {
            return Err(Error::Shutdown);
        }
        let tls = if secure {
            let host = request.uri().host().unwrap_or_default();
            let host = host.trim_start_matches('[').trim_end_matches(']');
            Some(tls::target(&config, host)?)
        } else {
            None
        };
        for (name, value) in &config.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| Error::Handshake(format!("header name {name:?}: {e}")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|e| Error::Handshake(format!("header {name}: {e}")))?;
            request.headers_mut().append(name, value);
        }
        // Spreads the reconnect delays of clients that lost the same server apart.
        let seed = std::collections::hash_map::RandomState::new().hash_one(addr);
        let id = self.engine.open(now, config, seed)?;
        let index = id.index();
        if self.conns.len() <= index {
            self.conns.resize_with(index + 1, || None);
        }
        self.conns[index] = Some(Connection::new(id, request, addr, tls));
        self.pump();
        Ok(id)
    }

    /// Submits a call with the connection's default timeout. See [`submit_with`](Self::submit_with).
    ///
    /// # Errors
    /// As [`submit_with`](Self::submit_with).
    pub fn submit<M, F>(&mut self, conn: ConnId, message: M, callback: F) -> Result<CallId, Error>
    where
        M: Serialize,
        F: FnOnce(&mut Context, Result<Response, Error>) + 'static,
    {
        self.submit_with(conn, message, CallOptions::default(), callback)
    }

    /// Submits a call: `message` is serialized to JSON, stamped with a fresh [`CallId`] by the
    /// connection's codec and buffered (or queued until the connection opens). Buffered calls
    /// reach the socket together, at the start of the next [`turn`](crate::EventLoop::turn)
    /// (or at the end of the current one, for calls made by callbacks), or at once with
    /// [`flush`](Self::flush). `callback` runs
    /// exactly once, on the loop thread, during a later [`turn`](crate::EventLoop::turn), with
    /// the answer or the error that ended the call.
    ///
    /// To send JSON you already have as text without re-serializing it, pass a
    /// [`&RawValue`](serde_json::value::RawValue): it is written verbatim.
    ///
    /// ```no_run
    /// # use rpcloop::*;
    /// # fn f(ev: &mut EventLoop, conn: ConnId) -> Result<(), Error> {
    /// use std::time::Duration;
    /// let options = CallOptions { timeout: Some(Duration::from_millis(200)) };
    /// ev.submit_with(conn, serde_json::json!({"op": "quote"}), options, |ctx, result| {
    ///     match result {
    ///         Ok(resp) => println!("got {}", resp.text()),
    ///         Err(e) => eprintln!("failed: {e}"),
    ///     }
    /// })?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// When it returns an error the call was not submitted and `callback` is dropped unrun:
    /// [`Error::UnknownConnection`]; [`Error::Closed`] or [`Error::Disconnected`] (or
    /// [`Error::Handshake`]) if the connection has ended; [`Error::Busy`] past
    /// [`ConnectionConfig::max_in_flight`] or when the write buffer is full;
    /// [`Error::Encode`] if `message` does not serialize; [`Error::TooLarge`] past
    /// [`ConnectionConfig::max_message_size`]; [`Error::Shutdown`] once the loop shuts down.
    pub fn submit_with<M, F>(
        &mut self,
        conn: ConnId,
        message: M,
        options: CallOptions,
        callback: F,
    ) -> Result<CallId, Error>
    where
        M: Serialize,
        F: FnOnce(&mut Context, Result<Response, Error>) + 'static,
    {
        let mut payload = std::mem::take(&mut self.payload);
        payload.clear();
        let submitted = match serde_json::to_writer(&mut payload, &message) {
            Ok(()) => match std::str::from_utf8(&payload) {
                Ok(text) => self
                    .try_submit(conn, text, options, Reply::Callback(Box::new(callback)))
                    .map_err(|(e, _)| e),
                Err(_) => Err(Error::Encode(serde::ser::Error::custom(
                    "serializer produced invalid UTF-8",
                ))),
            },
            Err(e) => Err(Error::Encode(e)),
        };
        self.payload = payload;
        submitted
    }

    /// Submits a call whose payload is JSON text already. On refusal the reply comes back
    /// with the error, unrun, for callers that must still complete it (cross-thread submits).
    pub(crate) fn try_submit(
        &mut self,
        conn: ConnId,
        payload: &str,
        options: CallOptions,
        reply: Reply,
    ) -> Result<CallId, (Error, Reply)> {
        let now = self.now_tick_fresh();
        // The frame waits in the engine's outbox: the dispatch pumps after each callback, and
        // `turn` and `flush` before they flush, so the calls of one turn still leave in one
        // write, with no pump per call.
        self.engine.submit(now, conn, payload, options, reply)
    }

    /// Cancels a pending call: its callback runs with [`Error::Cancelled`] during the next
    /// dispatch. A request not yet written is never sent; an answer that arrives later counts as
    /// a stale message. Returns `false` if the call is not pending (it completed already, or
    /// its completion is queued: then that completion stands).
    ///
    /// A call of a [batch](Self::submit_batch) still waiting for the connection to open
    /// travels in one frame with the rest of its batch: cancelling it cancels every call of
    /// that batch not yet written.
    pub fn cancel(&mut self, call: CallId) -> bool {
        self.engine.cancel(call)
    }

    /// Closes a connection with the WebSocket close handshake (RFC 6455 §7.1.2). Every call
    /// pending on it completes with [`Error::Closed`]; later submits fail with it at once. The
    /// socket is dropped when the peer answers the close, or after
    /// [`ConnectionConfig::close_timeout`]. A connection waiting to reconnect stops waiting.
    /// Closing an ended connection does nothing.
    ///
    /// # Errors
    /// [`Error::UnknownConnection`] if `conn` is not a connection of this loop.
    pub fn close(&mut self, conn: ConnId) -> Result<(), Error> {
        let now = self.now_tick_fresh();
        self.engine.close(now, conn)?;
        self.pump();
        Ok(())
    }

    /// Sets the handler that receives every message on `conn` that matches no pending call
    /// (server pushes, unknown or stale ids, malformed JSON, binary messages). Without one,
    /// such messages are counted in [`stats`](Self::stats), logged at `debug` and dropped.
    ///
    /// # Errors
    /// [`Error::UnknownConnection`] if `conn` is not a connection of this loop.
    pub fn set_message_handler<H>(&mut self, conn: ConnId, handler: H) -> Result<(), Error>
    where
        H: FnMut(&mut Context, Unmatched) + 'static,
    {
        let c = self.live_mut(conn).ok_or(Error::UnknownConnection)?;
        c.handlers.message = Some(Box::new(handler));
        Ok(())
    }

    /// Sets the handler told of every state change of `conn`, on the loop thread, during
    /// [`turn`](crate::EventLoop::turn), in the order things happened: an answer read before
    /// the peer's close completes before `Disconnected` is told. Changes that happened since
    /// the last dispatch are delivered too, so a handler set right after
    /// [`connect`](Self::connect) sees `Connecting` first.
    ///
    /// ```no_run
    /// # use rpcloop::*;
    /// # fn f(ev: &mut EventLoop, conn: ConnId) -> Result<(), Error> {
    /// ev.set_state_handler(conn, |_ctx, conn, change| match change {
    ///     StateChange::Disconnected(why) => eprintln!("{conn}: lost: {why}"),
    ///     StateChange::Reconnecting { attempt, delay } => {
    ///         eprintln!("{conn}: attempt {attempt} in {delay:?}")
    ///     }
    ///     other => eprintln!("{conn}: {other:?}"),
    /// })?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::UnknownConnection`] if `conn` is not a connection of this loop.
    pub fn set_state_handler<H>(&mut self, conn: ConnId, handler: H) -> Result<(), Error>
    where
        H: FnMut(&mut Context, ConnId, StateChange) + 'static,
    {
        let c = self.live_mut(conn).ok_or(Error::UnknownConnection)?;
        c.handlers.state = Some(Box::new(handler));
        Ok(())
    }

    /// Where the connection is in its life. A connection that is over keeps reporting its last
    /// state (`Closed`, `Disconnected(..)`) after it is freed, until its slot holds another
    /// connection; `None` then, and for an id that is not of this loop.
    pub fn state(&self, conn: ConnId) -> Option<ConnState> {
        self.engine.state(conn)
    }

    /// The connection's counters; like [`state`](Self::state), still there for a connection
    /// that is over until its slot holds another, `None` then.
    pub fn stats(&self, conn: ConnId) -> Option<ConnStats> {
        self.engine.stats(conn)
    }

    /// How many calls have not had their callback run yet.
    pub fn pending_calls(&self) -> usize {
        self.engine.pending_calls()
    }

    /// How many connections the loop holds: those open, opening, reconnecting or closing, and
    /// those ended whose last events are not dispatched yet. A connection that is over is
    /// freed when the dispatch reaches its last event.
    pub fn connections(&self) -> usize {
        self.engine.connections()
    }

    /// Whether any call has not had its callback run yet.
    pub fn has_pending(&self) -> bool {
        self.pending_calls() > 0
    }

    /// The earliest instant at which a deadline (of a call or a connection) may fire; a host
    /// loop that folds rpcloop into its own should wake by then.
    pub fn next_deadline(&self) -> Option<Instant> {
        let tick = self.engine.poll_timeout()?;
        // A tick past what `Instant` holds: a year from the loop's now stands for "never".
        let far = || self.now + Duration::from_secs(365 * 24 * 3600);
        Some(self.clock.instant_of(tick).unwrap_or_else(far))
    }

    /// Writes to the sockets, now, the calls submitted since the last turn. Without it they
    /// leave at the start of the next [`turn`](crate::EventLoop::turn), together with anything
    /// else submitted meanwhile (one write per connection); calls submitted by callbacks leave
    /// at the end of the turn that ran them.
    pub fn flush(&mut self) {
        self.now();
        self.flush_dirty();
    }

    /// The connection `conn` names, if it is still in the table.
    pub(crate) fn live_mut(&mut self, conn: ConnId) -> Option<&mut Connection<Handlers>> {
        self.conns
            .get_mut(conn.index())
            .and_then(Option::as_mut)
            .filter(|c| c.id == conn)
    }

    /// Reads the clock and makes that the loop's now. Each public method that starts
    /// something timed (a call's deadline, a connect, a close) calls it once on entry, and
    /// `turn` calls it before its flush and again right after the poll; everything below them
    /// uses the instant read here ([`Self::now_tick`]).
    pub(crate) fn now(&mut self) -> Instant {
        self.now = read_clock();
        self.now
    }

    /// The loop's now as a tick (rounded down: nothing due later has expired).
    pub(crate) fn now_tick(&self) -> u64 {
        self.clock.now_tick(self.now)
    }

    /// Reads the clock, and returns the new now as a tick.
    pub(crate) fn now_tick_fresh(&mut self) -> u64 {
        self.now();
        self.now_tick()
    }
}

/// Parses a `ws://` or `wss://` URL into a handshake request, and whether it is `wss://`.
fn parse_url(url: &str) -> Result<(Request, bool), Error> {
    let request = url
        .into_client_request()
        .map_err(|e| Error::InvalidUrl(format!("{url}: {e}")))?;
    match request.uri().scheme_str() {
        Some("ws") => Ok((request, false)),
        Some("wss") => Ok((request, true)),
        _ => Err(Error::InvalidUrl(format!(
            "{url}: expected a ws:// or wss:// URL"
        ))),
    }
}

/// The clock, read: the only place the loop's code does (a handle's blocking wait, on its
/// caller's thread, reads its own).
fn read_clock() -> Instant {
    Instant::now()
}
