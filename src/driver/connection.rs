//! One connection's socket, in the stage its I/O needs: connecting (TCP), TLS handshaking
//! (`wss://`), handshaking (the WebSocket upgrade, judged by the core), open; or none, between
//! attempts and once dropped. What the connection *is* (open, closing, reconnecting, ended)
//! is the core's [`Session`](crate::core::session::Session); this file only moves its bytes.
//!
//! The mio interest is derived from the stage: READABLE always, WRITABLE while connecting and
//! TLS handshaking (to learn that the connect finished and to push the handshake out) and,
//! after that, only while bytes wait to be written (the upgrade request, tungstenite's buffer,
//! or TLS records), so a connection waiting for its peer causes no wake-ups.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use tungstenite::WebSocket;
use tungstenite::handshake::client::Request;

use crate::core::conn_id::ConnId;
use crate::core::handshake::OpeningHandshake;
use crate::driver::stream::Stream;
use crate::driver::tls::TlsTarget;

/// The socket, in whichever wrapper its stage needs.
pub(crate) enum Socket {
    /// No socket: not connected yet, between attempts, or dropped.
    None,
    Connecting(TcpStream),
    /// `wss://`: TCP connected, TLS handshake under way; the WebSocket handshake waits for it.
    TlsHandshaking(Stream),
    /// TCP (and TLS) up, the WebSocket opening handshake under way: the driver moves its
    /// bytes, the core's [`OpeningHandshake`] decides.
    Handshaking(Stream, Box<OpeningHandshake>),
    Open(Box<WebSocket<Stream>>),
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Socket::None => "None",
            Socket::Connecting(..) => "Connecting",
            Socket::TlsHandshaking(..) => "TlsHandshaking",
            Socket::Handshaking(..) => "Handshaking",
            Socket::Open(_) => "Open",
        })
    }
}

/// A connection's I/O. `H` is what the application set on it (its handlers), which this file
/// neither names nor runs.
pub(crate) struct Connection<H> {
    /// Its id: its slot in the loop's table and that slot's generation.
    pub(crate) id: ConnId,
    pub(crate) socket: Socket,
    pub(crate) handlers: H,
    /// The peer's address (reconnects go there again).
    pub(crate) addr: SocketAddr,
    /// The handshake request, cloned for each attempt.
    pub(crate) request: Box<Request>,
    /// `wss://`: what each connect attempt's TLS session is made from.
    pub(crate) tls: Option<Box<TlsTarget>>,
    /// WRITABLE is in the registered interest.
    pub(crate) wants_write: bool,
    /// Listed in the loop's to-flush list.
    pub(crate) dirty: bool,
    /// Listed in the loop's read-again list (its read budget ran out with data left).
    pub(crate) read_again: bool,
    /// tungstenite refused what the peer sent: nothing more is read.
    pub(crate) broken: bool,
}

impl<H: Default> Connection<H> {
    pub(crate) fn new(
        id: ConnId,
        request: Request,
        addr: SocketAddr,
        tls: Option<TlsTarget>,
    ) -> Self {
        Connection {
            id,
            socket: Socket::None,
            handlers: H::default(),
            addr,
            request: Box::new(request),
            tls: tls.map(Box::new),
            wants_write: true,
            dirty: false,
            read_again: false,
            broken: false,
        }
    }
}

impl<H> Connection<H> {
    pub(crate) fn stream_mut(&mut self) -> Option<&mut TcpStream> {
        match &mut self.socket {
            Socket::Connecting(stream) => Some(stream),
            Socket::TlsHandshaking(stream) => Some(stream.tcp_mut()),
            Socket::Handshaking(stream, _) => Some(stream.tcp_mut()),
            Socket::Open(ws) => Some(ws.get_mut().tcp_mut()),
            Socket::None => None,
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
