//! [`Context`]: the operations on a loop's connections and calls, as callbacks see them.
//!
//! Callbacks run on the loop thread with `&mut Context`, so a callback may submit the next call,
//! cancel another or close a connection. [`EventLoop`](crate::EventLoop) dereferences to
//! `Context`, so the same methods are called on the loop itself.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Poll, Token};
use serde::Serialize;
use serde_json::value::RawValue;
use slab::Slab;
use tungstenite::Message;
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::client::Request;
use tungstenite::http::{HeaderName, HeaderValue};
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

use crate::config::{CallOptions, ConnectionConfig};
use crate::core::arena::{COPY_LIMIT, FrameArena};
use crate::core::call_id::CallId;
use crate::core::conn_id::ConnId;
use crate::core::correlator::Correlator;
use crate::core::event::StateChange;
use crate::core::event::{ConnState, SubscribeOptions, SubscriptionEvent};
use crate::core::notification::Notification;
use crate::core::outbox::Unsent;
use crate::core::response::Response;
use crate::core::session::{CallsEnd, ConnTimer, Ended};
use crate::core::subscription::SubscriptionEntry;
use crate::core::tick::Clock;
use crate::core::unmatched::Unmatched;
use crate::driver::WAKER;
use crate::driver::call_slot::{CancelSink, Slot};
use crate::driver::connection::{Connection, Socket, write_message};
use crate::driver::mailbox::{Mailbox, lock};
use crate::driver::subscription_queue::{SubQueue, UnsubscribeSink};
use crate::driver::tls;
use crate::error::{DisconnectReason, Error};
use crate::stats::ConnStats;

/// A call's callback, run once on the loop thread.
pub(crate) type Callback = Box<dyn FnOnce(&mut Context, Result<Response, Error>)>;

/// What completes a call, the token the call table holds for it: a callback run on the loop
/// thread, or the result slot of a [`PendingCall`](crate::PendingCall) another thread waits
/// on. The slot needs no closure around it, so a call from a handle costs no box.
pub(crate) enum Reply {
    Callback(Callback),
    Slot(Arc<Slot>),
}

impl Reply {
    /// Completes the call: runs the callback, or fills the slot and wakes its waiter.
    pub(crate) fn complete(self, ctx: &mut Context, result: Result<Response, Error>) {
        match self {
            Reply::Callback(callback) => callback(ctx, result),
            Reply::Slot(slot) => slot.complete(result),
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

/// What is kept of a freed connection until its slot holds another: enough for
/// [`Context::state`] and [`Context::stats`] to say what became of it, and for a late submit
/// to fail with the reason it ended rather than a bare "unknown".
pub(crate) struct Gone {
    id: ConnId,
    state: ConnState,
    stats: ConnStats,
    ended: Ended,
}

/// What the application set on one connection. Each is taken out while it runs, so that it
/// may act on the loop (and set handlers) with no borrow held.
#[derive(Default)]
pub(crate) struct Handlers {
    /// For messages that match no call. It stays until the messages that arrived before
    /// the end are delivered.
    pub(crate) message: Option<MessageHandler>,
    /// For state changes. It stays until it has been told `Closed`.
    pub(crate) state: Option<StateHandler>,
    /// For notifications, by method (`None` while one runs).
    pub(crate) notifications: HashMap<Box<str>, Option<NotificationHandler>>,
}

impl Handlers {
    /// Drops the handlers that can no longer be called: an ended connection with nothing left
    /// to deliver gets no message or notification.
    fn release_delivery(&mut self) {
        self.message = None;
        self.notifications = HashMap::new();
    }
}

/// A message for the handlers, queued during the I/O pass.
pub(crate) enum Inbound {
    /// For the connection's message handler.
    Unmatched(Unmatched),
    /// For a subscription or a method handler, or else the message handler.
    Notification(Notification),
    /// For a subscription's handler.
    Subscription(u64, SubscriptionEvent),
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
    pub(crate) clock: Clock,
    /// The loop's now: the instant last read by [`Context::now`]. Everything the loop does
    /// with time between two reads uses it, never the clock.
    now: Instant,
    pub(crate) conns: Slab<Connection<Handlers>>,
    /// Each slot's generation: how many connections it held and freed.
    generations: Vec<u32>,
    /// What is kept of the last connection freed from each slot, until the slot holds another.
    gone: Vec<Option<Gone>>,
    /// Connections that told `Closed` and are not freed yet (see [`Self::free_ended`]).
    pub(crate) ending: Vec<usize>,
    pub(crate) calls: Correlator<Reply>,
    /// Unmatched messages (for connections with a handler) and notifications, dispatched after
    /// the I/O pass, in arrival order.
    pub(crate) inbound: VecDeque<Inbound>,
    /// Live subscriptions, by id.
    pub(crate) subscriptions: HashMap<u64, SubscriptionEntry<EventHandler>>,
    /// The id the next subscription gets (never reused).
    pub(crate) next_subscription: u64,
    /// State changes not yet told to the connections' state handlers.
    pub(crate) state_changes: VecDeque<(ConnId, StateChange)>,
    /// Connections with calls written into their buffer but not yet to the socket: flushed
    /// once at the start and at the end of each turn, or by [`Context::flush`].
    pub(crate) to_flush: Vec<usize>,
    /// Connections whose read budget ran out with data left.
    pub(crate) to_read: Vec<usize>,
    /// The loop is shutting down: every call is refused.
    pub(crate) shut_down: bool,
    /// Reused buffer for serializing messages.
    payload: Vec<u8>,
    /// Reused buffer for encoding request frames.
    frame: String,
    /// Where small text frames live, both ways (see [`FrameArena`]).
    pub(crate) arena: FrameArena,
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
            conns: Slab::new(),
            generations: Vec::new(),
            gone: Vec::new(),
            ending: Vec::new(),
            calls: Correlator::new(),
            inbound: VecDeque::new(),
            subscriptions: HashMap::new(),
            next_subscription: 0,
            state_changes: VecDeque::new(),
            to_flush: Vec::new(),
            to_read: Vec::new(),
            shut_down: false,
            payload: Vec::new(),
            frame: String::new(),
            arena: FrameArena::new(),
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
    /// connection with [`DisconnectReason::Tls`] naming the cause, and the calls waiting for it
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
    /// name a certificate can be checked against); [`Error::Io`] if the socket cannot be
    /// created or registered, or the platform's certificate store cannot be read
    /// (`TlsConfig::Native`); [`Error::Handshake`] if a configured header is not a valid HTTP
    /// header.
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
        self.now();
        if self.shut_down {
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
        let mut stream = TcpStream::connect(addr)?;
        let entry = self.conns.vacant_entry();
        let index = entry.key();
        self.poll.registry().register(
            &mut stream,
            Token(index),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        // Spreads the reconnect delays of clients that lost the same server apart.
        let seed = std::collections::hash_map::RandomState::new().hash_one(index);
        if self.generations.len() <= index {
            self.generations.resize(index + 1, 0);
            self.gone.resize_with(index + 1, || None);
        }
        // The slot holds a new connection: the old one is forgotten.
        self.gone[index] = None;
        let id = ConnId::new(index, self.generations[index]);
        entry.insert(Connection::new(
            id, stream, request, addr, tls, config, seed,
        ));
        self.arm_connect_timer(index);
        self.change_state(index, StateChange::Connecting);
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

    /// Submits a call whose payload is JSON text already. On refusal the callback comes back
    /// with the error, unrun, for callers that must still complete it (cross-thread submits).
    pub(crate) fn try_submit(
        &mut self,
        conn: ConnId,
        payload: &str,
        options: CallOptions,
        callback: Reply,
    ) -> Result<CallId, (Error, Reply)> {
        if self.shut_down {
            return Err((Error::Shutdown, callback));
        }
        let index = conn.index();
        // Not `self.live`: the connection and the encoding buffer are borrowed side by side.
        let Some(c) = self.conns.get(index).filter(|c| c.id == conn) else {
            return Err((self.not_live(conn), callback));
        };
        if let Some(ended) = &c.session.ended {
            return Err((ended.to_error(), callback));
        }
        if c.session.in_flight >= c.config.max_in_flight || !self.calls.has_room() {
            return Err((Error::Busy, callback));
        }
        let id = self.calls.next_id();
        let frame = &mut self.frame;
        frame.clear();
        if let Err(e) = c.config.codec.encode_request(id, payload, frame) {
            let error = Error::Encode(serde::ser::Error::custom(e));
            return Err((error, callback));
        }
        if frame.len() > c.config.max_message_size {
            let error = Error::TooLarge {
                size: frame.len(),
                limit: c.config.max_message_size,
            };
            return Err((error, callback));
        }
        let timeout = options.timeout.unwrap_or(c.config.default_timeout);
        self.now();
        let deadline = self.tick_after(timeout);

        let c = &mut self.conns[index];
        if !c.writes_now() {
            let size = self.frame.len();
            let calls = &self.calls;
            if !c
                .session
                .outbox
                .admits(size, c.config.max_write_buffer, |id| calls.is_queued(id))
            {
                return Err((Error::Busy, callback));
            }
            let submitted = self.calls.handle_submit(conn, deadline, false, callback);
            debug_assert_eq!(submitted, id);
            // Moved out, not copied; the next call's encoding grows a fresh scratch buffer.
            let frame = std::mem::take(&mut self.frame);
            c.session.outbox.push(Unsent::Call { id, frame }, size);
            c.session.in_flight += 1;
            let calls = &self.calls;
            c.session
                .outbox
                .compact_if_sparse(c.session.in_flight, |id| calls.is_queued(id));
            return Ok(id);
        }
        let Socket::Open(ws) = &mut c.socket else {
            unreachable!("writes_now implies an open socket");
        };
        // The frame only lives until tungstenite has copied it into its write buffer.
        let text = if self.frame.len() <= COPY_LIMIT {
            self.arena.copy(&self.frame)
        } else {
            // One exact allocation (moving the scratch out would cost two: regrowing it, and a
            // `Bytes` header since its capacity exceeds its length); past a few chunks' worth,
            // the scratch is let go rather than kept at the largest request's size.
            let text = self.frame.as_str().into();
            if self.frame.capacity() > 4 * COPY_LIMIT {
                self.frame = String::new();
            }
            text
        };
        let failure = match write_message(ws, Message::Text(text)) {
            Ok(()) => None,
            Err(tungstenite::Error::WriteBufferFull(_)) => return Err((Error::Busy, callback)),
            Err(e) => Some(DisconnectReason::from_ws(&e)),
        };
        let submitted = self.calls.handle_submit(conn, deadline, true, callback);
        debug_assert_eq!(submitted, id);
        c.session.in_flight += 1;
        c.session.stats.requests_sent += 1;
        match failure {
            // The call is registered, so the connection's failure completes it like the others.
            Some(reason) => self.fail(index, reason),
            None => self.wrote(index),
        }
        Ok(id)
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
        if self.calls.is_queued(call) {
            for other in self.unsent_batch_of(call) {
                if other != call {
                    self.calls.handle_cancel(other);
                }
            }
        }
        self.calls.handle_cancel(call)
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
        self.now();
        let index = conn.index();
        if self.live(conn).is_none() {
            // Closing an ended connection does nothing, a freed one too.
            return match self.gone_record(conn) {
                Some(_) => Ok(()),
                None => Err(Error::UnknownConnection),
            };
        }
        let c = &mut self.conns[index];
        if c.session.ended.is_some() {
            return Ok(());
        }
        c.session.ended = Some(Ended::Closed);
        c.clear_queue();
        let end = CallsEnd::Over(&Ended::Closed);
        self.calls
            .handle_disconnect(conn, |written| end.fate(written));
        self.end_subscriptions(index, None, || Error::Closed);
        self.cancel_conn_timers(index);
        self.close_socket(index);
        self.change_state(index, StateChange::Closed);
        Ok(())
    }

    /// Starts the close handshake on an ended connection's socket, or drops a socket that
    /// never opened.
    fn close_socket(&mut self, index: usize) {
        let c = &mut self.conns[index];
        let Socket::Open(ws) = &mut c.socket else {
            // Not open yet: there is no WebSocket to close, only a socket to drop.
            self.release(index);
            return;
        };
        // RFC 6455 §7.4.1: 1000 indicates a normal closure.
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        match ws.close(Some(frame)) {
            Ok(()) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => {
                log::debug!("connection {index}: close failed: {e}");
                self.release(index);
                return;
            }
        }
        self.arm_close_timer(index);
        self.flush_conn(index);
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

    /// Where the connection is in its life. A connection that is over keeps reporting its last
    /// state (`Closed`, `Disconnected(..)`) after it is freed, until its slot holds another
    /// connection; `None` then, and for an id that is not of this loop.
    pub fn state(&self, conn: ConnId) -> Option<ConnState> {
        match self.live(conn) {
            Some(c) => Some(c.state()),
            None => self.gone_record(conn).map(|gone| gone.state.clone()),
        }
    }

    /// The connection's counters; like [`state`](Self::state), still there for a connection
    /// that is over until its slot holds another, `None` then.
    pub fn stats(&self, conn: ConnId) -> Option<ConnStats> {
        match self.live(conn) {
            Some(c) => Some(c.session.stats),
            None => self.gone_record(conn).map(|gone| gone.stats),
        }
    }

    /// How many calls have not had their callback run yet.
    pub fn pending_calls(&self) -> usize {
        self.calls.pending_len() + self.calls.completions_len()
    }

    /// How many connections the loop holds: those open, opening, reconnecting or closing, and
    /// those ended whose last events are not dispatched yet. A connection that is over is
    /// freed at the end of the dispatch that told its `Closed`.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Whether any call has not had its callback run yet.
    pub fn has_pending(&self) -> bool {
        self.pending_calls() > 0
    }

    /// The earliest instant at which a deadline (of a call or a connection) may fire; a host
    /// loop that folds rpcloop into its own should wake by then.
    pub fn next_deadline(&self) -> Option<Instant> {
        let tick = self.calls.next_deadline()?;
        // A tick past what `Instant` holds: a year from the loop's now stands for "never".
        let far = || self.now + Duration::from_secs(365 * 24 * 3600);
        Some(self.clock.instant_of(tick).unwrap_or_else(far))
    }

    /// After a call was written into a connection's buffer: list the connection to flush, so
    /// that every call submitted in one turn (or between two turns) leaves in one write.
    pub(crate) fn wrote(&mut self, index: usize) {
        let c = &mut self.conns[index];
        if !c.dirty {
            c.dirty = true;
            self.to_flush.push(index);
        }
    }

    /// Writes to the sockets, now, the calls submitted since the last turn. Without it they
    /// leave at the start of the next [`turn`](crate::EventLoop::turn), together with anything
    /// else submitted meanwhile (one write per connection); calls submitted by callbacks leave
    /// at the end of the turn that ran them.
    pub fn flush(&mut self) {
        self.now();
        self.flush_dirty();
    }

    /// Flushes every connection listed as dirty, at the loop's now.
    pub(crate) fn flush_dirty(&mut self) {
        // Pop rather than take the list, so its capacity is kept: no allocation per turn.
        // (Flushing never lists a connection again: only submitting does.)
        while let Some(index) = self.to_flush.pop() {
            self.flush_conn(index);
        }
    }

    pub(crate) fn arm_close_timer(&mut self, index: usize) {
        let after = self.conns[index].config.close_timeout;
        self.arm_conn_timer(index, ConnTimer::Close, after);
    }

    pub(crate) fn arm_connect_timer(&mut self, index: usize) {
        let after = self.conns[index].config.connect_timeout;
        self.arm_conn_timer(index, ConnTimer::Connect, after);
    }

    /// Why an operation on `conn`, which names no connection in the table, fails: how it
    /// ended while its slot still remembers, else [`Error::UnknownConnection`].
    pub(crate) fn not_live(&self, conn: ConnId) -> Error {
        self.gone_record(conn)
            .map_or(Error::UnknownConnection, |gone| gone.ended.to_error())
    }

    /// The record of the freed connection `conn`, if its slot holds no other yet.
    fn gone_record(&self, conn: ConnId) -> Option<&Gone> {
        self.gone
            .get(conn.index())
            .and_then(Option::as_ref)
            .filter(|gone| gone.id == conn)
    }

    /// The connection `conn` names, if it is still in the table (an id of a freed connection
    /// names nothing, even once its slot holds another).
    pub(crate) fn live(&self, conn: ConnId) -> Option<&Connection<Handlers>> {
        self.conns.get(conn.index()).filter(|c| c.id == conn)
    }

    /// The connection `conn` names, if it is still in the table.
    pub(crate) fn live_mut(&mut self, conn: ConnId) -> Option<&mut Connection<Handlers>> {
        self.conns.get_mut(conn.index()).filter(|c| c.id == conn)
    }

    /// Reads the clock and makes that the loop's now. Each public method that starts
    /// something timed (a call's deadline, a connect, a close) calls it once on entry, and
    /// `turn` calls it before its flush and again right after the poll; everything below them
    /// uses the instant read here ([`Self::now_tick`], [`Self::tick_after`]).
    pub(crate) fn now(&mut self) -> Instant {
        self.now = read_clock();
        self.now
    }

    /// The loop's now as a tick (rounded down: nothing due later has expired).
    pub(crate) fn now_tick(&self) -> u64 {
        self.clock.now_tick(self.now)
    }

    /// The tick at which something due `after` the loop's now may fire (rounded up, so never
    /// early); saturates for huge durations.
    pub(crate) fn tick_after(&self, after: Duration) -> u64 {
        self.now
            .checked_add(after)
            .map_or(u64::MAX, |at| self.clock.deadline_tick(at))
    }

    /// Arms the connection's connect, close or reconnect deadline, replacing the one armed.
    pub(crate) fn arm_conn_timer(&mut self, index: usize, kind: ConnTimer, after: Duration) {
        let deadline = self.tick_after(after);
        let key = self.calls.arm_conn_timer(deadline, index, kind);
        if let Some(old) = self.conns[index].timer.replace(key) {
            self.calls.disarm_conn_timer(old);
        }
    }

    /// Drops connection `index`'s socket and live state (`Connection::release`), and the
    /// handlers nothing can reach any more: the message and notification handlers, unless
    /// messages that arrived before the end still wait to be delivered to them.
    pub(crate) fn release(&mut self, index: usize) {
        let c = &mut self.conns[index];
        c.release();
        if c.undelivered == 0 {
            c.handlers.release_delivery();
        }
    }

    /// Disarms every deadline of the connection.
    pub(crate) fn cancel_conn_timers(&mut self, index: usize) {
        let c = &mut self.conns[index];
        for key in [c.timer.take(), c.keepalive_timer.take()]
            .into_iter()
            .flatten()
        {
            self.calls.disarm_conn_timer(key);
        }
    }

    /// Runs the state handlers of queued state changes, every queued completion's callback and
    /// every queued unmatched message's handler, with no internal borrow held: callbacks may
    /// submit, cancel and close freely. Returns how many ran.
    pub(crate) fn dispatch(&mut self) -> usize {
        let mut ran = 0;
        loop {
            if let Some(handled) = self.dispatch_state_change() {
                ran += usize::from(handled);
            } else if let Some(done) = self.calls.poll_completion() {
                if let Some(c) = self.live_mut(done.conn) {
                    c.session.in_flight -= 1;
                    if matches!(done.result, Err(Error::Timeout)) {
                        c.session.stats.timeouts += 1;
                    }
                }
                log::trace!("call {} completed", done.id);
                done.token.complete(self, done.result);
                ran += 1;
            } else if let Some(inbound) = self.inbound.pop_front() {
                ran += usize::from(self.dispatch_inbound(inbound));
            } else {
                break;
            }
        }
        self.free_ended();
        ran
    }

    /// Frees the connections that are over: they told `Closed`, their socket is gone, and
    /// nothing of theirs waits to be delivered (messages, completions, subscription events).
    /// Their slot may then hold a new connection, under the next generation.
    fn free_ended(&mut self) {
        let mut i = 0;
        while i < self.ending.len() {
            let index = self.ending[i];
            let c = &self.conns[index];
            let over = c.released()
                && c.undelivered == 0
                && c.session.in_flight == 0
                && !self.subscriptions.values().any(|s| s.conn == c.id);
            if !over {
                i += 1;
                continue;
            }
            self.ending.swap_remove(i);
            self.cancel_conn_timers(index);
            let c = self.conns.remove(index);
            self.gone[index] = Some(Gone {
                id: c.id,
                state: c.state(),
                stats: c.session.stats,
                ended: c.session.ended.clone().unwrap_or(Ended::Closed),
            });
            self.generations[index] = self.generations[index].wrapping_add(1);
            self.to_flush.retain(|&listed| listed != index);
            self.to_read.retain(|&listed| listed != index);
            // Handles see its last state until the slot holds another connection.
            self.shared.publish_state(c.id, c.state());
            log::debug!("{}: freed", c.id);
        }
    }
}

impl Context {
    /// Runs the handler of one inbound message; `false` if none ran.
    fn dispatch_inbound(&mut self, inbound: Inbound) -> bool {
        let (index, ran) = match inbound {
            Inbound::Unmatched(message) => {
                let index = message.conn().index();
                (index, self.run_message_handler(message))
            }
            Inbound::Notification(notification) => {
                let index = notification.conn().index();
                (index, self.route_notification(notification))
            }
            Inbound::Subscription(id, event) => return self.run_subscription_handler(id, event),
        };
        let c = &mut self.conns[index];
        c.undelivered -= 1;
        if c.undelivered == 0 {
            if c.released() {
                // Its last message (see `Context::release`).
                c.handlers.release_delivery();
            }
            self.fail_deferred_violation(index);
        }
        ran
    }

    /// Runs the connection's message handler, if it still has one.
    pub(crate) fn run_message_handler(&mut self, message: Unmatched) -> bool {
        let index = message.conn().index();
        let Some(mut handler) = self.conns[index].handlers.message.take() else {
            return false;
        };
        handler(self, message);
        // Keep a handler the callback installed meanwhile.
        self.conns[index].handlers.message.get_or_insert(handler);
        true
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
