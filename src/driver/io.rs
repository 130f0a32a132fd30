//! How readiness moves a connection along: connect, handshake, read, flush, fail.
//!
//! Every path reads and writes until `WouldBlock` (mio's readiness is edge-triggered: stop
//! early and the event may never come again), except that one connection reads at most
//! [`READ_BUDGET`] messages per turn; past that it is listed to read again on the next turn,
//! which then does not sleep, so one flooding peer cannot starve the others or the timers.

use std::io;
use std::mem;

use mio::Token;
use tungstenite::client::client_with_config;
use tungstenite::handshake::HandshakeError;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

use crate::core::conn_id::ConnId;
use crate::core::unmatched::{Unmatched, UnmatchedReason};
use crate::driver::connection::{ConnState, Ended, Socket, write_message};
use crate::driver::context::{ConnTimer, Context};
use crate::driver::frame_arena::COPY_LIMIT;
use crate::driver::stream::Stream;
use crate::error::{DisconnectReason, Error};

/// Messages one connection may read per turn.
pub(crate) const READ_BUDGET: usize = 4_096;

type Handshake = Result<
    (WebSocket<Stream>, tungstenite::handshake::client::Response),
    HandshakeError<tungstenite::handshake::client::ClientHandshake<Stream>>,
>;

impl Context {
    /// Moves connection `index` along after a readiness event; `read_closed` when the event
    /// reports the peer's FIN or an error.
    pub(crate) fn handle_ready(&mut self, index: usize, read_closed: bool) {
        let Some(c) = self.conns.get_mut(index) else {
            return;
        };
        match &mut c.socket {
            Socket::Handshaking(mid) => mid.get_mut().get_mut().on_event(read_closed),
            Socket::Open(ws) => ws.get_mut().on_event(read_closed),
            Socket::Connecting(..) | Socket::Gone => {}
        }
        match &mut c.socket {
            Socket::Connecting(..) => self.progress_connect(index),
            Socket::Handshaking(_) => {
                let Socket::Handshaking(mid) = mem::replace(&mut c.socket, Socket::Gone) else {
                    unreachable!()
                };
                self.after_handshake(index, mid.handshake());
            }
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
            let reason = DisconnectReason::ConnectFailed {
                kind: e.kind(),
                message: e.to_string().into(),
            };
            return self.fail(index, reason);
        }
        let Socket::Connecting(stream, request) = mem::replace(&mut c.socket, Socket::Gone) else {
            unreachable!()
        };
        if c.config.nodelay {
            if let Err(e) = stream.set_nodelay(true) {
                log::debug!("connection {index}: TCP_NODELAY not set: {e}");
            }
        }
        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(c.config.max_message_size))
            .max_frame_size(Some(c.config.max_message_size))
            .max_write_buffer_size(c.config.max_write_buffer);
        log::debug!("connection {index}: TCP connected, handshaking");
        self.after_handshake(
            index,
            client_with_config(*request, Stream::new(stream), Some(ws_config)),
        );
    }

    fn after_handshake(&mut self, index: usize, result: Handshake) {
        match result {
            Ok((ws, _response)) => self.on_open(index, ws),
            Err(HandshakeError::Interrupted(mid)) => {
                self.conns[index].socket = Socket::Handshaking(Box::new(mid));
            }
            Err(HandshakeError::Failure(e)) => {
                self.fail(index, DisconnectReason::Handshake(e.to_string().into()));
            }
        }
    }

    /// The handshake is done: write the calls that waited, then read what already arrived
    /// (the server may have sent messages right behind its handshake response).
    fn on_open(&mut self, index: usize, ws: WebSocket<Stream>) {
        let c = &mut self.conns[index];
        if let Some(timer) = c.timer.take() {
            self.conn_timers.cancel(timer);
        }
        c.socket = Socket::Open(Box::new(ws));
        self.shared.publish_state(index, ConnState::Open);
        let c = &mut self.conns[index];
        log::debug!("connection {index}: open, {} queued calls", c.queued.len());
        let Socket::Open(ws) = &mut c.socket else {
            unreachable!()
        };
        let mut failure = None;
        while let Some(id) = c.queued.pop_front() {
            let Some(frame) = self.calls.take_unsent(id) else {
                continue; // completed while it waited
            };
            match write_message(ws, Message::Text(frame.into())) {
                Ok(()) => c.stats.requests_sent += 1,
                Err(tungstenite::Error::WriteBufferFull(_)) => {
                    self.calls.handle_failure(id, Error::Busy);
                }
                Err(e) => {
                    failure = Some(DisconnectReason::from_ws(&e));
                    break;
                }
            }
        }
        if let Some(reason) = failure {
            return self.fail(index, reason);
        }
        self.read_frames(index);
        self.flush_conn(index);
    }

    /// Reads messages until the socket would block (or the budget runs out), matching each.
    pub(crate) fn read_frames(&mut self, index: usize) {
        let conn = ConnId::new(index);
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
                Err(e) => return self.fail(index, DisconnectReason::from_ws(&e)),
            };
            let unmatched = match message {
                Message::Text(text) => {
                    c.stats.messages_received += 1;
                    // Release tungstenite's read buffer at once (see `FrameArena`).
                    let text = match text {
                        small if small.len() <= COPY_LIMIT => self.arena.copy(&small),
                        large => large,
                    };
                    match self.calls.handle_frame(conn, &*c.config.codec, text) {
                        Ok(_) => {
                            c.stats.answers += 1;
                            continue;
                        }
                        Err((reason, text)) => Unmatched::text(conn, reason, text),
                    }
                }
                Message::Binary(data) => {
                    c.stats.messages_received += 1;
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

    fn on_unmatched(&mut self, index: usize, message: Unmatched) {
        let c = &mut self.conns[index];
        c.count_unmatched(message.reason());
        if c.handler.is_some() {
            self.unmatched.push_back(message);
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

    /// The peer sent a close frame: its calls fail now, the socket stays until the close
    /// handshake ends (or the close timeout).
    fn on_peer_close(&mut self, index: usize, reason: DisconnectReason) {
        let c = &mut self.conns[index];
        if c.ended.is_some() {
            return; // the answer to our own close
        }
        c.queued.clear();
        let error = Ended::Disconnected(reason);
        self.calls
            .handle_disconnect(ConnId::new(index), || error.to_error());
        c.ended = Some(error);
        self.arm_close_timer(index);
        self.publish_state(index);
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

    /// The WebSocket ended cleanly (close handshake done): drop the socket.
    fn finish(&mut self, index: usize) {
        let c = &mut self.conns[index];
        if c.ended.is_none() {
            return self.fail(index, DisconnectReason::Reset);
        }
        if let Some(timer) = c.timer.take() {
            self.conn_timers.cancel(timer);
        }
        c.release();
        self.publish_state(index);
        log::debug!("connection {index}: closed");
    }

    /// The connection is lost: fail its calls (once: only if it had not ended already) and
    /// drop the socket.
    pub(crate) fn fail(&mut self, index: usize, reason: DisconnectReason) {
        let c = &mut self.conns[index];
        if let Some(timer) = c.timer.take() {
            self.conn_timers.cancel(timer);
        }
        c.release();
        if c.ended.is_none() {
            log::debug!("connection {index}: lost: {reason}");
            let ended = Ended::Disconnected(reason);
            self.calls
                .handle_disconnect(ConnId::new(index), || ended.to_error());
            c.ended = Some(ended);
        }
        self.publish_state(index);
    }

    /// The loop shuts down: fail the connection's calls with [`Error::Shutdown`], drop it.
    pub(crate) fn shut_down_conn(&mut self, index: usize) {
        let c = &mut self.conns[index];
        if let Some(timer) = c.timer.take() {
            self.conn_timers.cancel(timer);
        }
        c.release();
        self.calls
            .handle_disconnect(ConnId::new(index), || Error::Shutdown);
        if c.ended.is_none() {
            c.ended = Some(Ended::Closed);
        }
        self.publish_state(index);
    }

    /// Fires connection deadlines due at tick `now`.
    pub(crate) fn handle_conn_timers(&mut self, now: u64) {
        while let Some((index, kind)) = self.conn_timers.poll(now) {
            self.conns[index].timer = None;
            match kind {
                ConnTimer::Connect => self.fail(index, DisconnectReason::ConnectTimeout),
                ConnTimer::Close => {
                    log::debug!("connection {index}: close timeout, dropping the socket");
                    self.conns[index].release();
                    self.publish_state(index);
                }
            }
        }
    }
}
