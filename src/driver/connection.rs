//! One connection's socket and its state machine:
//! connecting -> handshaking -> open -> closing -> closed.
//!
//! The mio interest is derived from the state: READABLE always, WRITABLE while connecting and
//! handshaking (to learn that the connect finished and to push the request out) and, once open,
//! only while bytes wait in the write buffer, so an idle connection causes no wake-ups.

use std::collections::VecDeque;
use std::fmt;
use std::io;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use tungstenite::handshake::MidHandshake;
use tungstenite::handshake::client::{ClientHandshake, Request};
use tungstenite::{Message, WebSocket};

use crate::config::ConnectionConfig;
use crate::core::call_id::CallId;
use crate::core::unmatched::UnmatchedReason;
use crate::core::wheel::TimerKey;
use crate::driver::context::MessageHandler;
use crate::driver::stream::Stream;
use crate::error::{DisconnectReason, Error};
use crate::stats::ConnStats;

/// Where a connection is in its life, as [`Context::state`](crate::Context::state) reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnState {
    /// TCP connect or WebSocket handshake in progress; calls submitted now wait for it.
    Connecting,
    /// Open: calls are written as they are submitted.
    Open,
    /// A close handshake is in progress; new calls are refused.
    Closing,
    /// Closed by this side.
    Closed,
    /// Ended without this side asking for it.
    Disconnected(DisconnectReason),
}

/// How a connection ended, once it has: decides what its calls fail with.
#[derive(Debug, Clone)]
pub(crate) enum Ended {
    Closed,
    Disconnected(DisconnectReason),
}

impl Ended {
    pub(crate) fn to_error(&self) -> Error {
        match self {
            Ended::Closed => Error::Closed,
            Ended::Disconnected(DisconnectReason::Handshake(why)) => {
                Error::Handshake(why.to_string())
            }
            Ended::Disconnected(reason) => Error::Disconnected(reason.clone()),
        }
    }
}

/// The socket, in whichever wrapper its stage needs.
pub(crate) enum Socket {
    Connecting(TcpStream, Box<Request>),
    Handshaking(Box<MidHandshake<ClientHandshake<Stream>>>),
    Open(Box<WebSocket<Stream>>),
    Gone,
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Socket::Connecting(..) => "Connecting",
            Socket::Handshaking(_) => "Handshaking",
            Socket::Open(_) => "Open",
            Socket::Gone => "Gone",
        })
    }
}

/// A connection of the loop.
pub(crate) struct Connection {
    pub(crate) socket: Socket,
    /// Set once the connection stops taking calls (closed by us, or lost); the socket may still
    /// be finishing a close handshake.
    pub(crate) ended: Option<Ended>,
    pub(crate) config: ConnectionConfig,
    pub(crate) stats: ConnStats,
    pub(crate) handler: Option<MessageHandler>,
    /// Calls submitted before the connection opened, in submit order. Their requests wait in
    /// the pending table; ids of calls that completed meanwhile are skipped when draining.
    pub(crate) queued: VecDeque<CallId>,
    /// Calls pending on this connection, counted until their completion is dispatched.
    pub(crate) in_flight: usize,
    /// The connect or close deadline.
    pub(crate) timer: Option<TimerKey>,
    /// WRITABLE is in the registered interest.
    pub(crate) wants_write: bool,
    /// Listed in the loop's to-flush list.
    pub(crate) dirty: bool,
    /// Listed in the loop's read-again list (its read budget ran out with data left).
    pub(crate) read_again: bool,
}

impl Connection {
    pub(crate) fn new(stream: TcpStream, request: Request, config: ConnectionConfig) -> Self {
        Connection {
            socket: Socket::Connecting(stream, Box::new(request)),
            ended: None,
            config,
            stats: ConnStats::default(),
            handler: None,
            queued: VecDeque::new(),
            in_flight: 0,
            timer: None,
            wants_write: true,
            dirty: false,
            read_again: false,
        }
    }

    pub(crate) fn state(&self) -> ConnState {
        match (&self.ended, &self.socket) {
            (None, Socket::Open(_)) => ConnState::Open,
            (None, _) => ConnState::Connecting,
            (Some(_), Socket::Open(_)) => ConnState::Closing,
            (Some(Ended::Closed), _) => ConnState::Closed,
            (Some(Ended::Disconnected(reason)), _) => ConnState::Disconnected(reason.clone()),
        }
    }

    /// Drops the socket and everything only a live connection needs (its buffers, queue and
    /// message handler), so an ended connection costs a few dozen bytes.
    pub(crate) fn release(&mut self) {
        self.socket = Socket::Gone;
        self.queued = VecDeque::new();
        self.handler = None;
    }

    /// Whether a new call may be written at once (open, nothing queued ahead of it).
    pub(crate) fn writes_now(&self) -> bool {
        self.ended.is_none() && self.queued.is_empty() && matches!(self.socket, Socket::Open(_))
    }

    pub(crate) fn stream_mut(&mut self) -> Option<&mut TcpStream> {
        match &mut self.socket {
            Socket::Connecting(stream, _) => Some(stream),
            Socket::Handshaking(mid) => Some(mid.get_mut().get_mut().tcp_mut()),
            Socket::Open(ws) => Some(ws.get_mut().tcp_mut()),
            Socket::Gone => None,
        }
    }

    /// Registers or re-registers the socket for READABLE, plus WRITABLE when `write` is set.
    pub(crate) fn set_interest(&mut self, registry: &Registry, token: Token, write: bool) {
        if self.wants_write == write {
            return;
        }
        let interest = if write {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        if let Some(stream) = self.stream_mut() {
            // Failing to re-register leaves the old interest: at worst a spurious wake-up, or a
            // missed WRITABLE that the next flush attempt (every turn with writes) recovers.
            if let Err(e) = registry.reregister(stream, token, interest) {
                log::debug!("reregister failed: {e}");
            }
        }
        self.wants_write = write;
    }

    /// Counts an unmatched frame.
    pub(crate) fn count_unmatched(&mut self, reason: UnmatchedReason) {
        let s = &mut self.stats;
        match reason {
            UnmatchedReason::UnknownId => s.unknown_id += 1,
            UnmatchedReason::StaleId => s.stale_id += 1,
            UnmatchedReason::NoId => s.no_id += 1,
            UnmatchedReason::Malformed => s.malformed += 1,
            UnmatchedReason::Binary => s.binary += 1,
        }
    }

    /// Drops ids of calls that left the queue's reach, once stale ids outnumber live ones, so a
    /// submit-cancel loop on a connection that never opens cannot grow the queue without bound.
    pub(crate) fn compact_queue(&mut self, is_unsent: impl Fn(CallId) -> bool) {
        if self.queued.len() > 2 * self.in_flight + 64 {
            self.queued.retain(|&id| is_unsent(id));
        }
    }
}

/// Writes one message into the WebSocket's buffer (and to the socket if the buffer is past its
/// threshold). `WouldBlock` means buffered: the bytes go out on a later flush.
pub(crate) fn write_message(
    ws: &mut WebSocket<Stream>,
    message: Message,
) -> Result<(), tungstenite::Error> {
    match ws.write(message) {
        Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        other => other,
    }
}
