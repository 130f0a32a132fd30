//! The values that cross between the [`Engine`](super::engine::Engine) and the driver: what
//! the driver reads from a socket ([`Incoming`], [`Violation`]), and what the engine asks of it
//! ([`Transmit`], [`SocketAction`], [`Event`]).

use bytes::Bytes;
use tungstenite::Utf8Bytes;

use super::call_id::CallId;
use super::conn_id::ConnId;
use super::event::{StateChange, SubscriptionEvent, SubscriptionId};
use super::message::Message;
use super::notification::Notification;
use super::response::Response;
use super::unmatched::Unmatched;
use crate::error::Error;

/// A WebSocket message read from a connection, in the engine's terms.
#[derive(Debug)]
pub(crate) enum Incoming {
    Text(Utf8Bytes),
    Binary(Bytes),
    /// A ping or a pong: it proves the peer alive, nothing more (tungstenite answers pings).
    Control,
    /// The peer's close frame: its code (1005 when it sent none) and reason.
    Close {
        code: u16,
        reason: std::sync::Arc<str>,
    },
}

/// What the peer broke, as the driver read it from tungstenite's error: each calls for its own
/// close code (RFC 6455 §7.4.1), or for none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Violation {
    /// A framing rule broken: 1002.
    Protocol,
    /// A text message that is not UTF-8: 1007.
    Utf8,
    /// A message or frame past the configured limits: 1009.
    TooBig,
    /// The TCP connection ended without a close handshake: nothing to send.
    Reset,
}

impl Violation {
    /// The close frame the violation calls for, if any.
    pub(crate) fn close_frame(self) -> Option<(u16, &'static str)> {
        match self {
            Violation::Protocol => Some((1002, "protocol error")),
            Violation::Utf8 => Some((1007, "invalid UTF-8")),
            Violation::TooBig => Some((1009, "message too big")),
            Violation::Reset => None,
        }
    }
}

/// One WebSocket message to write. A call's frame is written as it is polled: from then on its
/// connection's loss fails it with `Disconnected`, unless the driver hands it back refused
/// ([`Engine::handle_write_refused`](super::engine::Engine::handle_write_refused)).
#[derive(Debug)]
pub(crate) enum Transmit {
    /// A call's encoded request.
    Call { id: CallId, text: Utf8Bytes },
    /// A batch's frame (a JSON array) and its calls, in request order: one message.
    Batch { ids: Box<[CallId]>, text: Utf8Bytes },
    /// A message that is not a call.
    Message(Message),
    /// A keepalive ping.
    Ping,
}

impl Transmit {
    /// The calls the message carries.
    pub(crate) fn calls(&self) -> &[CallId] {
        match self {
            Transmit::Call { id, .. } => std::slice::from_ref(id),
            Transmit::Batch { ids, .. } => ids,
            Transmit::Message(_) | Transmit::Ping => &[],
        }
    }
}

/// What a [`Transmit`] carries besides its WebSocket message, kept while the message is
/// handed to tungstenite, so that a refused one can be given back whole.
#[derive(Debug)]
pub(crate) enum Carried {
    Call(CallId),
    Batch(Box<[CallId]>),
    Message(Kind),
    Ping,
}

/// Whether a message is text or binary.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Text,
    Binary,
}

impl Transmit {
    /// Splits the transmit into what it carries and its message, without copying.
    pub(crate) fn into_parts(self) -> (Carried, tungstenite::Message) {
        use tungstenite::Message as Ws;
        match self {
            Transmit::Call { id, text } => (Carried::Call(id), Ws::Text(text)),
            Transmit::Batch { ids, text } => (Carried::Batch(ids), Ws::Text(text)),
            Transmit::Message(message) => {
                let kind = match message {
                    Message::Text(_) => Kind::Text,
                    Message::Binary(_) => Kind::Binary,
                };
                (Carried::Message(kind), message.into_ws())
            }
            Transmit::Ping => (Carried::Ping, Ws::Ping(Bytes::new())),
        }
    }

    /// The transmit again, from its parts: a message the socket handed back refused, as
    /// tungstenite returns it (the frame it made of the message).
    pub(crate) fn from_parts(carried: Carried, message: tungstenite::Message) -> Transmit {
        use tungstenite::Message as Ws;
        let payload = match message {
            Ws::Text(text) => Bytes::from(text),
            Ws::Binary(data) | Ws::Ping(data) | Ws::Pong(data) => data,
            Ws::Frame(frame) => frame.into_payload(),
            Ws::Close(_) => Bytes::new(),
        };
        let text = || Utf8Bytes::try_from(payload.clone()).unwrap_or_default();
        match carried {
            Carried::Call(id) => Transmit::Call { id, text: text() },
            Carried::Batch(ids) => Transmit::Batch { ids, text: text() },
            Carried::Ping => Transmit::Ping,
            Carried::Message(kind) => Transmit::Message(match kind {
                Kind::Text => Message::Text(text().as_str().to_owned()),
                Kind::Binary => Message::Binary(payload),
            }),
        }
    }
}

/// What the engine asks the driver to do with a connection's socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SocketAction {
    /// Open a socket to the connection's peer and run the handshakes (the first attempt, or a
    /// reconnect). Report the outcome with `handle_connected` or `handle_transport_error`.
    Connect,
    /// Start the close handshake: send this close frame and keep reading until the peer
    /// closes the TCP connection (`handle_transport_closed`).
    Close { code: u16, reason: &'static str },
    /// Write this close frame if any (best effort), push out what is buffered, and drop the
    /// socket. Nothing more is read from it.
    Drop { close: Option<(u16, &'static str)> },
}

/// What the application is told, in causal order ([`Engine::poll_event`](super::engine::Engine::poll_event)).
#[derive(Debug)]
pub(crate) enum Event<T> {
    /// A call completed.
    Completed {
        conn: ConnId,
        id: CallId,
        token: T,
        result: Result<Response, Error>,
    },
    /// Every call of a batch completed: the results in request order.
    BatchCompleted {
        conn: ConnId,
        token: T,
        results: Vec<Result<Response, Error>>,
    },
    /// A connection's state changed.
    State(ConnId, StateChange),
    /// A message that completed no call and is no notification anyone handles.
    Unmatched(Unmatched),
    /// A notification for the handler of its method (see `Engine::watch_method`).
    Notification(Notification),
    /// An event of a subscription; `Ended` is its last.
    Subscription(SubscriptionId, SubscriptionEvent),
    /// The connection is over and freed: nothing of it follows, and its slot may hold another.
    Released(ConnId),
}
