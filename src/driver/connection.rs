//! One connection's socket and its state machine:
//! connecting -> (for `wss://`: TLS handshaking ->) handshaking -> open -> closing -> closed,
//! and, with a reconnect policy, lost -> reconnecting (backing off) -> connecting again.
//!
//! The mio interest is derived from the state: READABLE always, WRITABLE while connecting and
//! TLS handshaking (to learn that the connect finished and to push the handshake out) and,
//! after that, only while bytes wait to be written (the upgrade request, tungstenite's buffer,
//! or TLS records), so a connection waiting for its peer causes no wake-ups.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use tungstenite::WebSocket;
use tungstenite::handshake::client::Request;

use crate::config::ConnectionConfig;
use crate::core::conn_id::ConnId;
use crate::core::event::ConnState;
use crate::core::handshake::OpeningHandshake;
use crate::core::message::Message;
use crate::core::session::{Ended, Session};
use crate::core::wheel::TimerKey;
use crate::driver::stream::Stream;
use crate::driver::tls::TlsTarget;

/// The socket, in whichever wrapper its stage needs.
pub(crate) enum Socket {
    Connecting(TcpStream, Box<Request>),
    /// `wss://`: TCP connected, TLS handshake under way; the WebSocket handshake waits for it.
    TlsHandshaking(Stream, Box<Request>),
    /// TCP (and TLS) up, the WebSocket opening handshake under way: the driver moves its
    /// bytes, the core's [`OpeningHandshake`] decides.
    Handshaking(Stream, Box<OpeningHandshake>),
    Open(Box<WebSocket<Stream>>),
    Gone,
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Socket::Connecting(..) => "Connecting",
            Socket::TlsHandshaking(..) => "TlsHandshaking",
            Socket::Handshaking(..) => "Handshaking",
            Socket::Open(_) => "Open",
            Socket::Gone => "Gone",
        })
    }
}

/// A connection of the loop. `H` is what the application set on it (its handlers), which this
/// file neither names nor runs.
pub(crate) struct Connection<H> {
    /// Its id: its slot in the loop's table and that slot's generation.
    pub(crate) id: ConnId,
    pub(crate) socket: Socket,
    /// Its protocol state, which the core decides on.
    pub(crate) session: Session<Message>,
    pub(crate) config: ConnectionConfig,
    pub(crate) handlers: H,
    /// Unmatched messages queued for `handler` and not yet delivered: a connection released
    /// meanwhile keeps its handler until they are (a server may send a message, its close
    /// frame and its FIN in one segment, all read in one turn).
    pub(crate) undelivered: usize,
    /// A protocol violation read behind messages still `undelivered`: the connection fails
    /// once they are delivered (and reads nothing more meanwhile).
    pub(crate) violation: Option<Box<tungstenite::Error>>,
    /// Live subscriptions by key (the subscribe call's result, as JSON text).
    pub(crate) subscription_keys: HashMap<Box<str>, u64>,
    /// The peer's address (reconnects go there again).
    pub(crate) addr: SocketAddr,
    /// `wss://`: what each connect attempt's TLS session is made from.
    pub(crate) tls: Option<Box<TlsTarget>>,
    /// The connect, close or reconnect deadline.
    pub(crate) timer: Option<TimerKey>,
    pub(crate) keepalive_timer: Option<TimerKey>,
    /// With a reconnect policy: the handshake request, cloned for each attempt.
    pub(crate) retry_request: Option<Box<Request>>,
    /// WRITABLE is in the registered interest.
    pub(crate) wants_write: bool,
    /// Listed in the loop's to-flush list.
    pub(crate) dirty: bool,
    /// Listed in the loop's read-again list (its read budget ran out with data left).
    pub(crate) read_again: bool,
}

impl<H: Default> Connection<H> {
    pub(crate) fn new(
        id: ConnId,
        stream: TcpStream,
        request: Request,
        addr: SocketAddr,
        tls: Option<TlsTarget>,
        config: ConnectionConfig,
        seed: u64,
    ) -> Self {
        let retry_request = config
            .reconnect
            .is_some()
            .then(|| Box::new(request.clone()));
        Connection {
            id,
            socket: Socket::Connecting(stream, Box::new(request)),
            session: Session::new(config.reconnect, seed),
            config,
            handlers: H::default(),
            undelivered: 0,
            violation: None,
            subscription_keys: HashMap::new(),
            addr,
            tls: tls.map(Box::new),
            timer: None,
            keepalive_timer: None,
            retry_request,
            wants_write: true,
            dirty: false,
            read_again: false,
        }
    }
}

impl<H> Connection<H> {
    pub(crate) fn state(&self) -> ConnState {
        match (&self.session.ended, &self.socket) {
            (None, Socket::Open(_)) => ConnState::Open,
            (None, Socket::Gone) => ConnState::Reconnecting,
            (None, _) => ConnState::Connecting,
            (Some(_), Socket::Open(_)) => ConnState::Closing,
            (Some(Ended::Closed), _) => ConnState::Closed,
            (Some(Ended::Disconnected(reason)), _) => ConnState::Disconnected(reason.clone()),
        }
    }

    /// Drops the socket and everything only a live connection needs (its buffers, queue and
    /// reconnect state), so an ended connection costs a few dozen bytes. (Its handlers are the
    /// loop's to drop: see `Context::release`.)
    pub(crate) fn release(&mut self) {
        self.socket = Socket::Gone;
        self.session.release();
        self.violation = None;
        self.retry_request = None;
        self.tls = None;
    }

    /// Ended, with its socket dropped: only its handlers' last deliveries remain.
    pub(crate) fn released(&self) -> bool {
        self.session.ended.is_some() && matches!(self.socket, Socket::Gone)
    }

    /// Whether a new call may be written at once (open, nothing queued ahead of it).
    pub(crate) fn writes_now(&self) -> bool {
        self.session.ended.is_none()
            && self.session.outbox.is_empty()
            && matches!(self.socket, Socket::Open(_))
    }

    pub(crate) fn stream_mut(&mut self) -> Option<&mut TcpStream> {
        match &mut self.socket {
            Socket::Connecting(stream, _) => Some(stream),
            Socket::TlsHandshaking(stream, _) => Some(stream.tcp_mut()),
            Socket::Handshaking(stream, _) => Some(stream.tcp_mut()),
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

    /// Forgets everything queued: calls (still pending, to be failed by the caller) and
    /// messages (dropped unsent).
    pub(crate) fn clear_queue(&mut self) {
        let messages = self.session.outbox.clear();
        if messages > 0 {
            log::debug!("{messages} queued messages dropped unsent: the connection ended");
        }
    }
}

/// Writes one message into the WebSocket's buffer (and to the socket if the buffer is past its
/// threshold). `WouldBlock` means buffered: the bytes go out on a later flush.
pub(crate) fn write_message(
    ws: &mut WebSocket<Stream>,
    message: tungstenite::Message,
) -> Result<(), tungstenite::Error> {
    match ws.write(message) {
        Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        other => other,
    }
}
