//! How the driver moves a connection's bytes: readiness moves the socket along (connect, TLS
//! and WebSocket handshakes, read, flush), every outcome goes to the core's engine as an
//! input, and what the engine asks for (frames to write, sockets to open, close or drop) is
//! performed by [`Context::pump`].
//!
//! Every path reads and writes until `WouldBlock` (mio's readiness is edge-triggered: stop
//! early and the event may never come again), except that one connection reads at most
//! [`READ_BUDGET`] messages per turn; past that it is listed to read again on the next turn,
//! which then does not sleep, so one flooding peer cannot starve the others or the timers.

use std::io::{self, Read, Write};
use std::mem;

use mio::net::TcpStream;
use mio::{Interest, Token};
use tungstenite::error::ProtocolError;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use crate::config::ConnectionConfig;
use crate::core::conn_id::ConnId;
use crate::core::handshake::{Opened, OpeningHandshake, Outcome};
use crate::core::output::{Incoming, SocketAction, Transmit, Violation};
use crate::driver::connection::{Socket, write_message};
use crate::driver::context::Context;
use crate::driver::stream::Stream;
use crate::error::DisconnectReason;

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
    /// Performs what the engine asks, until it asks nothing more: writes the frames it offers
    /// into the sockets' buffers, opens, closes and drops sockets, and publishes changed
    /// states to the handles.
    pub(crate) fn pump(&mut self) {
        loop {
            while let Some((conn, transmit)) = self.engine.poll_transmit() {
                self.write(conn, transmit);
            }
            let Some((conn, action)) = self.engine.poll_action() else {
                break;
            };
            self.perform(conn, action);
        }
        while let Some((conn, state)) = self.engine.poll_touched() {
            self.shared.publish_state(conn, state);
        }
    }

    /// Hands one frame to the connection's WebSocket.
    fn write(&mut self, conn: ConnId, transmit: Transmit) {
        let index = conn.index();
        let Some(c) = self.live_mut(conn) else {
            return;
        };
        let Socket::Open(ws) = &mut c.socket else {
            // The engine offers frames only to an open connection.
            debug_assert!(false, "{conn}: a frame for a socket that is not open");
            return;
        };
        let (carried, message) = transmit.into_parts();
        match write_message(ws, message) {
            Ok(()) => self.wrote(index),
            Err(tungstenite::Error::WriteBufferFull(message)) => {
                let transmit = Transmit::from_parts(carried, *message);
                self.engine.handle_write_refused(conn, transmit);
                self.wrote(index);
            }
            Err(e) => {
                let now = self.now_tick();
                let reason = DisconnectReason::from_ws(&e);
                self.engine.handle_transport_error(now, conn, reason);
            }
        }
    }

    /// Does what the engine asks of a socket.
    fn perform(&mut self, conn: ConnId, action: SocketAction) {
        let index = conn.index();
        let now = self.now_tick();
        let Some(c) = self.live_mut(conn) else {
            return;
        };
        match action {
            SocketAction::Connect => self.start_connect(index),
            SocketAction::Close { code, reason } => {
                let Socket::Open(ws) = &mut c.socket else {
                    return;
                };
                let frame = CloseFrame {
                    code: CloseCode::from(code),
                    reason: reason.into(),
                };
                match ws.close(Some(frame)) {
                    Ok(()) => {}
                    Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        log::debug!("{conn}: close failed: {e}");
                        let reason = DisconnectReason::from_ws(&e);
                        return self.engine.handle_transport_error(now, conn, reason);
                    }
                }
                self.flush_conn(index);
            }
            SocketAction::Drop { close } => {
                if let Socket::Open(ws) = &mut c.socket {
                    if let Some((code, why)) = close {
                        let frame = CloseFrame {
                            code: CloseCode::from(code),
                            reason: why.into(),
                        };
                        // Best effort: the socket is dropped next, whatever got out.
                        if let Err(e) = ws.close(Some(frame)) {
                            log::debug!("{conn}: close frame {code} not sent: {e}");
                        }
                    }
                    // Push out what is buffered (an echoed close, the frame above).
                    let _ = ws.flush();
                }
                c.socket = Socket::None;
                c.broken = false;
                c.dirty = false;
                c.read_again = false;
            }
        }
    }

    /// Opens a socket to the connection's peer: the first attempt or a reconnect.
    fn start_connect(&mut self, index: usize) {
        let now = self.now_tick();
        let Some(c) = self.conns[index].as_mut() else {
            return;
        };
        let conn = c.id;
        let mut stream = match TcpStream::connect(c.addr) {
            Ok(stream) => stream,
            Err(e) => {
                let reason = DisconnectReason::connect_failed(&e);
                return self.engine.handle_transport_error(now, conn, reason);
            }
        };
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, Token(index), interest)
        {
            let reason = DisconnectReason::connect_failed(&e);
            return self.engine.handle_transport_error(now, conn, reason);
        }
        c.socket = Socket::Connecting(stream);
        c.wants_write = true;
        c.broken = false;
    }

    /// Moves connection `index` along after a readiness event; `read_closed` when the event
    /// reports the peer's FIN or an error.
    pub(crate) fn handle_ready(&mut self, index: usize, read_closed: bool) {
        let Some(c) = self.conns.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        match &mut c.socket {
            Socket::TlsHandshaking(stream) => stream.on_event(read_closed),
            Socket::Handshaking(stream, _) => stream.on_event(read_closed),
            Socket::Open(ws) => ws.get_mut().on_event(read_closed),
            Socket::Connecting(..) | Socket::None => {}
        }
        match &mut c.socket {
            Socket::Connecting(..) => self.progress_connect(index),
            Socket::TlsHandshaking(..) => self.progress_tls(index),
            Socket::Handshaking(..) => self.progress_handshake(index),
            Socket::Open(_) => {
                self.read_frames(index);
                self.flush_conn(index);
            }
            Socket::None => {}
        }
        self.pump();
    }

    /// The connection's socket failed before it opened.
    fn fail_socket(&mut self, index: usize, reason: DisconnectReason) {
        let now = self.now_tick();
        if let Some(c) = self.conns[index].as_mut() {
            c.socket = Socket::None;
            let conn = c.id;
            self.engine.handle_transport_error(now, conn, reason);
        }
    }

    /// Finishes a non-blocking connect as mio's `TcpStream::connect` documents: the socket
    /// reports writable, `take_error` is clear and `peer_addr` succeeds.
    fn progress_connect(&mut self, index: usize) {
        let Some(c) = self.conns[index].as_mut() else {
            return;
        };
        let Socket::Connecting(stream) = &c.socket else {
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
            return self.fail_socket(index, DisconnectReason::connect_failed(&e));
        }
        let Socket::Connecting(stream) = mem::replace(&mut c.socket, Socket::None) else {
            unreachable!()
        };
        let conn = c.id;
        if self
            .engine
            .config(conn)
            .is_some_and(|config| config.nodelay)
        {
            if let Err(e) = stream.set_nodelay(true) {
                log::debug!("{conn}: TCP_NODELAY not set: {e}");
            }
        }
        let Some(tls) = &c.tls else {
            log::debug!("{conn}: TCP connected, handshaking");
            return self.start_handshake(index, Stream::new(stream));
        };
        // wss://: a fresh TLS session for every attempt (a reconnect too).
        match tls.session() {
            Ok(session) => {
                log::debug!("{conn}: TCP connected, TLS handshaking");
                c.socket = Socket::TlsHandshaking(Stream::with_tls(stream, session));
                self.progress_tls(index);
            }
            Err(reason) => self.fail_socket(index, reason),
        }
    }

    /// Moves a TLS handshake along; once it is done, starts the WebSocket handshake over it.
    fn progress_tls(&mut self, index: usize) {
        let Some(c) = self.conns[index].as_mut() else {
            return;
        };
        let Socket::TlsHandshaking(stream) = &mut c.socket else {
            return;
        };
        match stream.tls_handshake() {
            Ok(false) => {} // waits for the server
            Ok(true) => {
                let Socket::TlsHandshaking(stream) = mem::replace(&mut c.socket, Socket::None)
                else {
                    unreachable!()
                };
                log::debug!("{}: TLS established, handshaking", c.id);
                self.start_handshake(index, stream);
            }
            Err(reason) => self.fail_socket(index, reason),
        }
    }

    /// Starts the WebSocket opening handshake over `stream`.
    fn start_handshake(&mut self, index: usize, stream: Stream) {
        let Some(c) = self.conns[index].as_mut() else {
            return;
        };
        match OpeningHandshake::new((*c.request).clone()) {
            Ok(handshake) => {
                c.socket = Socket::Handshaking(stream, Box::new(handshake));
                self.progress_handshake(index);
            }
            Err(why) => self.fail_socket(index, DisconnectReason::Handshake(why.into())),
        }
    }

    /// Moves the opening handshake's bytes as far as the socket allows; opens the connection
    /// once the core accepts the server's response, fails it once the core refuses it.
    fn progress_handshake(&mut self, index: usize) {
        let registry = self.poll.registry();
        let Some(c) = self.conns[index].as_mut() else {
            return;
        };
        let Socket::Handshaking(stream, handshake) = &mut c.socket else {
            return;
        };
        match exchange(stream, handshake) {
            Exchange::Waiting { write_blocked } => {
                c.set_interest(registry, Token(index), write_blocked);
            }
            // Not established yet: no close frame is due (RFC 6455 §7.1.7), the TCP
            // connection is dropped with the socket.
            Exchange::Failed(reason) => self.fail_socket(index, reason),
            Exchange::Open(opened) => {
                let Socket::Handshaking(stream, _) = mem::replace(&mut c.socket, Socket::None)
                else {
                    unreachable!()
                };
                let conn = c.id;
                if let Some(protocol) = opened.response.headers().get("Sec-WebSocket-Protocol") {
                    log::debug!("{conn}: subprotocol {protocol:?} selected");
                }
                let Some(config) = self.engine.config(conn) else {
                    return;
                };
                let ws = WebSocket::from_partially_read(
                    stream,
                    opened.tail,
                    Role::Client,
                    Some(ws_config(config)),
                );
                c.socket = Socket::Open(Box::new(ws));
                self.on_open(index);
            }
        }
    }

    /// The handshake is done: the engine offers what waited (written now), then what already
    /// arrived is read (the server may have sent messages right behind its handshake
    /// response).
    fn on_open(&mut self, index: usize) {
        let now = self.now_tick();
        let Some(conn) = self.conns[index].as_ref().map(|c| c.id) else {
            return;
        };
        self.engine.handle_connected(now, conn);
        self.pump();
        self.read_frames(index);
        self.flush_conn(index);
    }

    /// Reads messages until the socket would block (or the budget runs out), handing each to
    /// the engine.
    pub(crate) fn read_frames(&mut self, index: usize) {
        let now = self.now_tick();
        for _ in 0..READ_BUDGET {
            let Some(c) = self.conns[index].as_mut() else {
                return;
            };
            let conn = c.id;
            let Socket::Open(ws) = &mut c.socket else {
                return;
            };
            if c.broken {
                return; // nothing after a violation is read
            }
            let incoming = match ws.read() {
                Ok(Message::Text(text)) => Incoming::Text(text),
                Ok(Message::Binary(data)) => Incoming::Binary(data),
                Ok(Message::Close(frame)) => {
                    // RFC 6455 §5.5.1: tungstenite has queued our close reply; keep reading
                    // until the server closes the TCP connection.
                    let (code, reason) = frame.map_or((1005, "".into()), |f| {
                        (u16::from(f.code), f.reason.as_str().into())
                    });
                    Incoming::Close { code, reason }
                }
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => Incoming::Control,
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return self.engine.handle_transport_closed(now, conn);
                }
                Err(e) => {
                    c.broken = true;
                    let violation = violation_of(&e);
                    let reason = DisconnectReason::from_ws(&e);
                    return self.engine.handle_violation(now, conn, violation, reason);
                }
            };
            self.engine.handle_message(now, conn, incoming);
        }
        if let Some(c) = self.conns[index].as_mut() {
            if !c.read_again {
                c.read_again = true;
                self.to_read.push(index);
            }
        }
    }

    /// After a frame was written into a connection's buffer: list the connection to flush, so
    /// that every call submitted in one turn (or between two turns) leaves in one write.
    pub(crate) fn wrote(&mut self, index: usize) {
        if let Some(c) = self.conns[index].as_mut() {
            if !c.dirty {
                c.dirty = true;
                self.to_flush.push(index);
            }
        }
    }

    /// Flushes every connection listed as dirty, and writes what that let the engine offer.
    pub(crate) fn flush_dirty(&mut self) {
        loop {
            // Pop rather than take the list, so its capacity is kept: no allocation per turn.
            while let Some(index) = self.to_flush.pop() {
                self.flush_conn(index);
            }
            self.pump();
            if self.to_flush.is_empty() {
                return;
            }
        }
    }

    /// Writes out what waits in the connection's buffer; asks for WRITABLE while some remains.
    pub(crate) fn flush_conn(&mut self, index: usize) {
        let now = self.now_tick();
        let registry = self.poll.registry();
        let Some(c) = self.conns[index].as_mut() else {
            return;
        };
        c.dirty = false;
        let conn = c.id;
        let Socket::Open(ws) = &mut c.socket else {
            return;
        };
        match ws.flush() {
            Ok(()) => {
                c.set_interest(registry, Token(index), false);
                self.engine.handle_writable(conn);
            }
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                c.set_interest(registry, Token(index), true);
            }
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                self.engine.handle_transport_closed(now, conn);
            }
            Err(e) => {
                let reason = DisconnectReason::from_ws(&e);
                self.engine.handle_transport_error(now, conn, reason);
            }
        }
    }
}

/// What tungstenite's refusal of what the peer sent stands for (RFC 6455 §7.1.7: the close
/// code it calls for is the engine's to send).
fn violation_of(e: &tungstenite::Error) -> Violation {
    match e {
        tungstenite::Error::Capacity(_) => Violation::TooBig,
        tungstenite::Error::Utf8(_) => Violation::Utf8,
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            Violation::Reset
        }
        tungstenite::Error::Protocol(_) => Violation::Protocol,
        _ => Violation::Reset,
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
