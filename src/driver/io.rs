//! How readiness moves a connection along: connect, TLS and WebSocket handshakes, open, read,
//! flush. (How it ends is in `ending.rs`; its deadlines in `conn_timers.rs`.)
//!
//! Every path reads and writes until `WouldBlock` (mio's readiness is edge-triggered: stop
//! early and the event may never come again), except that one connection reads at most
//! [`READ_BUDGET`] messages per turn; past that it is listed to read again on the next turn,
//! which then does not sleep, so one flooding peer cannot starve the others or the timers.

use std::io::{self, Read, Write};
use std::mem;

use mio::Token;
use tungstenite::handshake::client::Request;
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use crate::config::ConnectionConfig;
use crate::core::arena::COPY_LIMIT;
use crate::core::call_id::CallId;
use crate::core::correlator::Routed;
use crate::core::event::StateChange;
use crate::core::handshake::{Opened, OpeningHandshake, Outcome};
use crate::core::outbox::Unsent;
use crate::core::session::ConnTimer;
use crate::core::unmatched::{Unmatched, UnmatchedReason};
use crate::driver::conn_timers::millis;
use crate::driver::connection::{Socket, write_message};
use crate::driver::context::{Context, Inbound};
use crate::driver::stream::Stream;
use crate::error::{DisconnectReason, Error};

/// Messages one connection may read per turn.
pub(crate) const READ_BUDGET: usize = 4_096;

/// Bytes asked for per read while the opening handshake runs. Bytes past the response head
/// (frames the server sent right behind it) are handed to tungstenite, so this is also the
/// most such a tail can be.
const HANDSHAKE_READ: usize = 4_096;

/// How far one pass of moving the opening handshake's bytes got.
enum Exchange {
    /// Waiting for the server; `write_blocked` while request bytes (or, with TLS, the records
    /// carrying them) wait for the socket to take them.
    Waiting {
        write_blocked: bool,
    },
    Open(Box<Opened>),
    Failed(DisconnectReason),
}

impl Context {
    /// Moves connection `index` along after a readiness event; `read_closed` when the event
    /// reports the peer's FIN or an error.
    pub(crate) fn handle_ready(&mut self, index: usize, read_closed: bool) {
        let Some(c) = self.conns.get_mut(index) else {
            return;
        };
        match &mut c.socket {
            Socket::TlsHandshaking(stream, _) => stream.on_event(read_closed),
            Socket::Handshaking(stream, _) => stream.on_event(read_closed),
            Socket::Open(ws) => ws.get_mut().on_event(read_closed),
            Socket::Connecting(..) | Socket::Gone => {}
        }
        match &mut c.socket {
            Socket::Connecting(..) => self.progress_connect(index),
            Socket::TlsHandshaking(..) => self.progress_tls(index),
            Socket::Handshaking(..) => self.progress_handshake(index),
            Socket::Open(_) => {
                self.read_frames(index);
                self.flush_conn(index);
            }
            Socket::Gone => {}
        }
    }

    /// Finishes a non-blocking connect as mio's `TcpStream::connect` documents: the socket
    /// reports writable, `take_error` is clear and `peer_addr` succeeds.
    fn progress_connect(&mut self, index: usize) {
        let c = &mut self.conns[index];
        let Socket::Connecting(stream, _) = &c.socket else {
            return;
        };
        let failed = match stream.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => match stream.peer_addr() {
                Ok(_) => None,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => Some(e),
            },
        };
        if let Some(e) = failed {
            return self.fail(index, DisconnectReason::connect_failed(&e));
        }
        let Socket::Connecting(stream, request) = mem::replace(&mut c.socket, Socket::Gone) else {
            unreachable!()
        };
        if c.config.nodelay {
            if let Err(e) = stream.set_nodelay(true) {
                log::debug!("connection {index}: TCP_NODELAY not set: {e}");
            }
        }
        let Some(tls) = &c.tls else {
            log::debug!("connection {index}: TCP connected, handshaking");
            return self.start_handshake(index, Stream::new(stream), request);
        };
        // wss://: a fresh TLS session for every attempt (a reconnect too).
        match tls.session() {
            Ok(session) => {
                log::debug!("connection {index}: TCP connected, TLS handshaking");
                c.socket = Socket::TlsHandshaking(Stream::with_tls(stream, session), request);
                self.progress_tls(index);
            }
            Err(reason) => self.fail(index, reason),
        }
    }

    /// Moves a TLS handshake along; once it is done, starts the WebSocket handshake over it.
    fn progress_tls(&mut self, index: usize) {
        let c = &mut self.conns[index];
        let Socket::TlsHandshaking(stream, _) = &mut c.socket else {
            return;
        };
        match stream.tls_handshake() {
            Ok(false) => {} // waits for the server
            Ok(true) => {
                let Socket::TlsHandshaking(stream, request) =
                    mem::replace(&mut c.socket, Socket::Gone)
                else {
                    unreachable!()
                };
                log::debug!("connection {index}: TLS established, handshaking");
                self.start_handshake(index, stream, request);
            }
            Err(reason) => self.fail(index, reason),
        }
    }

    /// Starts the WebSocket opening handshake over `stream`.
    fn start_handshake(&mut self, index: usize, stream: Stream, request: Box<Request>) {
        match OpeningHandshake::new(*request) {
            Ok(handshake) => {
                self.conns[index].socket = Socket::Handshaking(stream, Box::new(handshake));
                self.progress_handshake(index);
            }
            Err(why) => self.fail(index, DisconnectReason::Handshake(why.into())),
        }
    }

    /// Moves the opening handshake's bytes as far as the socket allows; opens the connection
    /// once the core accepts the server's response, fails it once the core refuses it.
    fn progress_handshake(&mut self, index: usize) {
        let registry = self.poll.registry();
        let c = &mut self.conns[index];
        let Socket::Handshaking(stream, handshake) = &mut c.socket else {
            return;
        };
        match exchange(stream, handshake) {
            Exchange::Waiting { write_blocked } => {
                c.set_interest(registry, Token(index), write_blocked);
            }
            // Not established yet: no close frame is due (RFC 6455 §7.1.7), the TCP
            // connection is dropped with the socket.
            Exchange::Failed(reason) => self.fail(index, reason),
            Exchange::Open(opened) => {
                let Socket::Handshaking(stream, _) = mem::replace(&mut c.socket, Socket::Gone)
                else {
                    unreachable!()
                };
                if let Some(protocol) = opened.response.headers().get("Sec-WebSocket-Protocol") {
                    log::debug!("connection {index}: subprotocol {protocol:?} selected");
                }
                let ws = WebSocket::from_partially_read(
                    stream,
                    opened.tail,
                    Role::Client,
                    Some(ws_config(&c.config)),
                );
                self.on_open(index, ws);
            }
        }
    }

    /// The handshake is done: write the calls that waited, then read what already arrived
    /// (the server may have sent messages right behind its handshake response).
    fn on_open(&mut self, index: usize, ws: WebSocket<Stream>) {
        let now = self.now_tick();
        let c = &mut self.conns[index];
        if let Some(timer) = c.timer.take() {
            self.calls.disarm_conn_timer(timer);
        }
        c.socket = Socket::Open(Box::new(ws));
        let ping = c
            .config
            .ping_interval
            .map(|interval| (millis(interval), millis(c.config.pong_timeout)));
        if let Some(at) = c.session.handle_open(now, ping) {
            c.keepalive_timer = Some(self.calls.arm_conn_timer(at, index, ConnTimer::Keepalive));
        }
        self.change_state(index, StateChange::Open);
        let c = &mut self.conns[index];
        log::debug!(
            "connection {index}: {} queued calls and messages",
            c.session.outbox.len()
        );
        let Socket::Open(ws) = &mut c.socket else {
            unreachable!()
        };
        let mut failure = None;
        // The calls the frame being written carries; one buffer for the whole drain.
        let mut calls: Vec<CallId> = Vec::new();
        while let Some(unsent) = c.session.outbox.pop() {
            // The calls a frame carries are written as it is handed over, all of a batch
            // together: from here on they fail with `Disconnected` if the connection drops.
            calls.clear();
            let message = match unsent {
                Unsent::Call { id, frame } => {
                    if !self.calls.handle_written(id) {
                        continue; // completed while it waited
                    }
                    calls.push(id);
                    Message::Text(frame.into())
                }
                Unsent::Batch { ids, frame } => {
                    let calls_table = &mut self.calls;
                    calls.extend(
                        ids.iter()
                            .copied()
                            .filter(|&id| calls_table.handle_written(id)),
                    );
                    if calls.is_empty() {
                        continue; // cancelled or timed out while it waited
                    }
                    Message::Text(frame.into())
                }
                Unsent::Message(message) => message.into_ws(),
            };
            let is_call = !calls.is_empty();
            match write_message(ws, message) {
                Ok(()) if is_call => c.session.stats.requests_sent += calls.len() as u64,
                Ok(()) => c.session.stats.messages_sent += 1,
                Err(tungstenite::Error::WriteBufferFull(_)) if is_call => {
                    for &id in &calls {
                        self.calls.handle_failure(id, Error::Busy);
                    }
                }
                Err(tungstenite::Error::WriteBufferFull(_)) => {
                    log::warn!("connection {index}: write buffer full, message dropped");
                }
                Err(e) => {
                    // Handed over, so counted as sent (as a call written on an open
                    // connection is): they fail with `Disconnected`, whatever got out.
                    c.session.stats.requests_sent += calls.len() as u64;
                    failure = Some(DisconnectReason::from_ws(&e));
                    break;
                }
            }
        }
        if let Some(reason) = failure {
            return self.fail(index, reason);
        }
        self.resubscribe(index);
        self.read_frames(index);
        self.flush_conn(index);
    }

    /// Reads messages until the socket would block (or the budget runs out), matching each.
    pub(crate) fn read_frames(&mut self, index: usize) {
        let conn = self.conns[index].id;
        if self.conns[index].violation.is_some() {
            return; // nothing after a violation is read (see `on_violation`)
        }
        for _ in 0..READ_BUDGET {
            let c = &mut self.conns[index];
            let Socket::Open(ws) = &mut c.socket else {
                return;
            };
            let message = match ws.read() {
                Ok(message) => message,
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return self.finish(index);
                }
                Err(e) => return self.on_violation(index, e),
            };
            if let Some(keepalive) = &mut c.session.keepalive {
                keepalive.handle_received();
            }
            let unmatched = match message {
                Message::Text(text) => {
                    c.session.stats.messages_received += 1;
                    // Release tungstenite's read buffer at once (see `FrameArena`).
                    let text = match text {
                        small if small.len() <= COPY_LIMIT => self.arena.copy(&small),
                        large => large,
                    };
                    let stats = &mut c.session.stats;
                    let mut stray = |reason| stats.count_unmatched(reason);
                    match self.calls.handle_frame(
                        conn,
                        &*c.config.codec,
                        c.config.max_nesting_depth,
                        text,
                        &mut stray,
                    ) {
                        Routed::Answered(calls) => {
                            c.session.stats.answers += calls;
                            continue;
                        }
                        Routed::Unmatched(reason, text) => Unmatched::text(conn, reason, text),
                        Routed::Notification(notification) => {
                            // Routed when dispatched, after the completions of this turn: a
                            // subscription's first items may arrive with its subscribe answer.
                            c.undelivered += 1;
                            self.inbound.push_back(Inbound::Notification(notification));
                            continue;
                        }
                    }
                }
                Message::Binary(data) => {
                    c.session.stats.messages_received += 1;
                    Unmatched::binary(conn, data)
                }
                Message::Close(frame) => {
                    // RFC 6455 §5.5.1: tungstenite has queued our close reply; keep reading
                    // until the server closes the TCP connection.
                    let (code, reason) = frame.map_or((1005, "".into()), |f| {
                        (u16::from(f.code), f.reason.as_str().into())
                    });
                    log::debug!("connection {index}: peer closed with {code}");
                    self.on_peer_close(index, DisconnectReason::PeerClosed { code, reason });
                    continue;
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            };
            self.on_unmatched(index, unmatched);
        }
        let c = &mut self.conns[index];
        if !c.read_again {
            c.read_again = true;
            self.to_read.push(index);
        }
    }

    pub(crate) fn on_unmatched(&mut self, index: usize, message: Unmatched) {
        let c = &mut self.conns[index];
        c.session.stats.count_unmatched(message.reason());
        if c.handlers.message.is_some() {
            c.undelivered += 1;
            self.inbound.push_back(Inbound::Unmatched(message));
        } else if log::log_enabled!(log::Level::Debug) {
            let reason = message.reason();
            match message.as_text() {
                Some(text) if reason != UnmatchedReason::Binary => {
                    let cut = text.char_indices().nth(200).map_or(text.len(), |(i, _)| i);
                    log::debug!(
                        "connection {index}: unmatched message ({reason}): {}",
                        &text[..cut]
                    );
                }
                _ => log::debug!("connection {index}: unmatched message ({reason})"),
            }
        }
    }

    /// Writes out what waits in the connection's buffer; asks for WRITABLE while some remains.
    pub(crate) fn flush_conn(&mut self, index: usize) {
        let registry = self.poll.registry();
        let c = &mut self.conns[index];
        c.dirty = false;
        let Socket::Open(ws) = &mut c.socket else {
            return;
        };
        match ws.flush() {
            Ok(()) => c.set_interest(registry, Token(index), false),
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                c.set_interest(registry, Token(index), true);
            }
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                self.finish(index);
            }
            Err(e) => self.fail(index, DisconnectReason::from_ws(&e)),
        }
    }
}

/// The WebSocket settings of a connection with `config`.
fn ws_config(config: &ConnectionConfig) -> WebSocketConfig {
    // tungstenite panics unless its write threshold (when a buffered write goes to the
    // socket, 128 KiB by default) is below the buffer's cap: a small cap lowers it.
    let cap = config.max_write_buffer.max(1);
    WebSocketConfig::default()
        .max_message_size(Some(config.max_message_size))
        .max_frame_size(Some(config.max_frame_size))
        .write_buffer_size((128 << 10).min(cap / 2))
        .max_write_buffer_size(cap)
}

/// One pass of the opening handshake over `stream`: writes what is left of the request until
/// the socket would block, then reads until it would block (mio's readiness is
/// edge-triggered), feeding every byte to the core, which alone decides. Nothing here limits
/// how the server splits its response: the core bounds the head at 64 KiB, the connect timer
/// bounds the time.
fn exchange(stream: &mut Stream, handshake: &mut OpeningHandshake) -> Exchange {
    let mut write_blocked = false;
    while !handshake.pending_request().is_empty() {
        match stream.write(handshake.pending_request()) {
            Ok(0) => {
                return Exchange::Failed(handshake_io_failure(&io::ErrorKind::WriteZero.into()));
            }
            Ok(n) => handshake.handle_written(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                write_blocked = true;
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Exchange::Failed(handshake_io_failure(&e)),
        }
    }
    if !write_blocked {
        // With TLS the request may still wait in records the socket has not taken.
        match stream.flush() {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                write_blocked = true;
            }
            Err(e) => return Exchange::Failed(handshake_io_failure(&e)),
        }
    }
    let mut buf = [0u8; HANDSHAKE_READ];
    loop {
        let outcome = match stream.read(&mut buf) {
            Ok(0) => handshake.handle_eof(),
            Ok(n) => handshake.handle_read(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Exchange::Waiting { write_blocked };
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Exchange::Failed(handshake_io_failure(&e)),
        };
        match outcome {
            Outcome::Waiting => {}
            Outcome::Open(opened) => return Exchange::Open(opened),
            Outcome::Failed(why) => {
                return Exchange::Failed(DisconnectReason::Handshake(why.into()));
            }
        }
    }
}

/// What a socket error during the opening handshake stands for. TLS failing under it (a
/// server that refuses our client certificate says so only after its own handshake is done)
/// is a TLS failure; any other error fails the handshake, naming the error.
fn handshake_io_failure(e: &io::Error) -> DisconnectReason {
    match DisconnectReason::from_io(e) {
        tls @ DisconnectReason::Tls { .. } => tls,
        _ => DisconnectReason::Handshake(format!("socket error: {e}").into()),
    }
}
