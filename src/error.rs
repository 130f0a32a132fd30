//! [`Error`]: everything a call or a loop operation can fail with, and why a connection ended.

use std::fmt;
use std::io;
use std::sync::Arc;

use serde_json::value::RawValue;

/// Why a call failed, or why an operation on the loop was refused.
///
/// Each variant is something a caller can act on: retry later (`Busy`), give up on the answer
/// (`Timeout`, `Cancelled`), reconnect (`Disconnected`, `Closed`), fix the request (`TooLarge`,
/// `Encode`) and so on.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// No answer arrived before the call's deadline.
    Timeout,
    /// The call was cancelled with [`Context::cancel`](crate::Context::cancel) before its
    /// answer arrived.
    Cancelled,
    /// The connection was closed by this side ([`Context::close`](crate::Context::close)).
    Closed,
    /// The connection ended without this side asking for it after the request was written; the
    /// reason says how. The server may or may not have acted on the request: the outcome is
    /// unknown, and the call is never sent again by itself (requests may not be idempotent).
    Disconnected(DisconnectReason),
    /// The request was never written: the connection could not be opened, or ended before the
    /// request's turn came (the reason says how). The server never saw it; retrying is safe.
    NotSent(DisconnectReason),
    /// The connection already has as many calls in flight as
    /// [`ConnectionConfig::max_in_flight`](crate::ConnectionConfig::max_in_flight) allows (or its
    /// write buffer is full); nothing was sent.
    Busy,
    /// The encoded request is larger than the connection's message size limit, or than its
    /// write buffer can ever hold; nothing was sent.
    TooLarge {
        /// The size of the encoded frame, in bytes.
        size: usize,
        /// The configured limit, in bytes.
        limit: usize,
    },
    /// The server answered with an error object (JSON-RPC 2.0 style codecs).
    Remote {
        /// The error code the server sent.
        code: i64,
        /// The server's message.
        message: String,
        /// The server's `data` member, as raw JSON, if it sent one.
        data: Option<Box<RawValue>>,
    },
    /// The WebSocket opening handshake failed: the server refused the upgrade, answered
    /// something that is not a WebSocket handshake, or selected an extension or a subprotocol
    /// the client never offered (RFC 6455 §4.1; the text names the header and its value), or
    /// its response head went past 64 KiB without ending. How slowly the response arrives, in
    /// how many pieces, is no failure of its own: only the connect timeout bounds it.
    Handshake(String),
    /// An I/O error of the loop itself (polling, registering a socket).
    Io(io::Error),
    /// The loop was shut down before the call completed.
    Shutdown,
    /// A [`Subscription`](crate::Subscription)'s consumer fell behind: its queue was full and
    /// its policy is [`Overflow::End`](crate::Overflow::End). The subscription is over.
    SubscriberTooSlow {
        /// The queue's capacity, in items.
        capacity: usize,
    },
    /// The URL given to [`Context::connect`](crate::Context::connect) is not a usable
    /// `ws://` or `wss://` URL (`wss://` needs the `tls` feature), or its host did not resolve.
    InvalidUrl(String),
    /// The connection id does not belong to this loop.
    UnknownConnection,
    /// The message could not be serialized to JSON; nothing was sent.
    Encode(serde_json::Error),
    /// An answer's payload did not deserialize into the type asked for
    /// ([`Response::message`](crate::Response::message)).
    Decode(serde_json::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Timeout => f.write_str("call timed out: no answer before its deadline"),
            Error::Cancelled => f.write_str("call cancelled before its answer arrived"),
            Error::Closed => f.write_str("connection closed by this side"),
            Error::Disconnected(reason) => write!(
                f,
                "connection lost after the request was sent ({reason}): \
                 whether the server acted on it is unknown"
            ),
            Error::NotSent(reason) => {
                write!(f, "request not sent, the server never saw it: {reason}")
            }
            Error::Busy => f.write_str(
                "connection busy: its limit of calls in flight (or of buffered bytes) is reached",
            ),
            Error::TooLarge { size, limit } => {
                write!(f, "message too large: {size} bytes, the limit is {limit}")
            }
            Error::Remote { code, message, .. } => {
                write!(f, "server answered with error {code}: {message}")
            }
            Error::Handshake(why) => write!(f, "WebSocket handshake failed: {why}"),
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Shutdown => f.write_str("event loop shut down"),
            Error::SubscriberTooSlow { capacity } => write!(
                f,
                "subscription ended: its consumer fell behind and the queue of {capacity} items \
                 was full"
            ),
            Error::InvalidUrl(why) => write!(f, "invalid URL: {why}"),
            Error::UnknownConnection => f.write_str("no such connection on this event loop"),
            Error::Encode(e) => write!(f, "message could not be encoded as JSON: {e}"),
            Error::Decode(e) => write!(f, "answer does not have the expected shape: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Encode(e) | Error::Decode(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

/// How a connection ended when this side did not close it.
///
/// Cheap to clone: every call pending on the connection receives a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The peer sent a WebSocket close frame (RFC 6455 §5.5.1), with this status code (1005 when
    /// it sent none) and reason text.
    PeerClosed {
        /// The close status code.
        code: u16,
        /// The close reason text (may be empty).
        reason: Arc<str>,
    },
    /// The peer dropped the TCP connection without a close handshake.
    Reset,
    /// A read or write on the socket failed.
    Io {
        /// The kind of the I/O error.
        kind: io::ErrorKind,
        /// The error's text.
        message: Arc<str>,
    },
    /// The peer broke the WebSocket protocol (a bad frame, invalid UTF-8 in a text message...).
    Protocol(Arc<str>),
    /// The peer sent a message larger than the configured limit.
    MessageTooLarge(Arc<str>),
    /// The TCP connection could not be established.
    ConnectFailed {
        /// The kind of the I/O error.
        kind: io::ErrorKind,
        /// The error's text.
        message: Arc<str>,
    },
    /// The TCP connect, TLS handshake and WebSocket handshake did not finish within the
    /// connect timeout.
    ConnectTimeout,
    /// Nothing arrived from the peer within
    /// [`pong_timeout`](crate::ConnectionConfig::pong_timeout) after a ping: the peer, or the
    /// network path to it, is gone (a half-open TCP connection).
    KeepaliveTimeout,
    /// The WebSocket opening handshake failed (calls waiting for it fail with
    /// [`Error::Handshake`]).
    Handshake(Arc<str>),
    /// TLS failed (`wss://` only): the server's certificate was refused, the TLS handshake
    /// broke off, or the TLS session failed later. The text names the cause (unknown issuer,
    /// name mismatch, expired...) and `kind` classifies it. Calls waiting for the connection
    /// fail with [`Error::NotSent`]: nothing was written to an unverified server.
    Tls {
        /// What went wrong, for a program to act on.
        kind: TlsErrorKind,
        /// The cause in words, with the TLS library's own text.
        message: Arc<str>,
    },
}

/// What kind of TLS failure a [`DisconnectReason::Tls`] is.
///
/// Certificate problems each have their own kind; they are never worked around (there is no
/// switch that turns verification off: a server with a private CA is reached by trusting that
/// CA, see `TlsConfig::Custom`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlsErrorKind {
    /// The server's certificate does not chain to a trusted root: self-signed, or signed by a
    /// CA that is not in the root store.
    UnknownIssuer,
    /// The server's certificate is not valid for the host name (or IP address) in the URL.
    NameMismatch,
    /// The server's certificate has expired.
    Expired,
    /// The server's certificate is not valid yet.
    NotYetValid,
    /// The server's certificate has been revoked.
    Revoked,
    /// The server's certificate was refused for another reason (bad signature, bad encoding,
    /// not meant for a TLS server...).
    BadCertificate,
    /// The server ended the TLS session with a fatal alert (it refused our certificate, or
    /// found no protocol version or cipher suite in common, for example).
    AlertReceived,
    /// The connection closed or was reset in the middle of the TLS handshake.
    HandshakeInterrupted,
    /// The server broke the TLS protocol (or is not speaking TLS at all).
    Protocol,
    /// The TLS client could not be set up for this connection.
    Config,
}

impl TlsErrorKind {
    /// The cause in words, as the [`DisconnectReason::Tls`] text starts.
    pub fn describe(self) -> &'static str {
        match self {
            TlsErrorKind::UnknownIssuer => {
                "the server's certificate is not trusted: its issuer is unknown \
                 (no trusted root certificate signed it)"
            }
            TlsErrorKind::NameMismatch => {
                "the server's certificate is not valid for the host name in the URL"
            }
            TlsErrorKind::Expired => "the server's certificate has expired",
            TlsErrorKind::NotYetValid => "the server's certificate is not valid yet",
            TlsErrorKind::Revoked => "the server's certificate has been revoked",
            TlsErrorKind::BadCertificate => "the server's certificate was refused",
            TlsErrorKind::AlertReceived => "the server sent a fatal TLS alert",
            TlsErrorKind::HandshakeInterrupted => {
                "the connection ended in the middle of the TLS handshake"
            }
            TlsErrorKind::Protocol => "the server broke the TLS protocol",
            TlsErrorKind::Config => "the TLS client could not be set up",
        }
    }
}

/// A TLS failure carried inside an `io::Error` from the socket layer up through tungstenite,
/// so that [`DisconnectReason::from_io`] can tell it apart from a plain socket error.
#[derive(Debug)]
pub(crate) struct TlsFailure {
    pub(crate) kind: TlsErrorKind,
    pub(crate) message: Arc<str>,
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TlsFailure {}

// Only the TLS driver makes failures; without the `tls` feature nothing does.
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
impl TlsFailure {
    /// The failure of `kind`, its text the kind's description followed by `detail`.
    pub(crate) fn new(kind: TlsErrorKind, detail: impl fmt::Display) -> Self {
        TlsFailure {
            kind,
            message: format!("{}: {detail}", kind.describe()).into(),
        }
    }

    pub(crate) fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }

    pub(crate) fn into_reason(self) -> DisconnectReason {
        DisconnectReason::Tls {
            kind: self.kind,
            message: self.message,
        }
    }
}

impl DisconnectReason {
    /// The reason a failed read or write on an open connection stands for.
    pub(crate) fn from_io(e: &io::Error) -> Self {
        if let Some(tls) = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<TlsFailure>())
        {
            return DisconnectReason::Tls {
                kind: tls.kind,
                message: tls.message.clone(),
            };
        }
        match e.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof => DisconnectReason::Reset,
            kind => DisconnectReason::Io {
                kind,
                message: e.to_string().into(),
            },
        }
    }

    /// The reason a failed TCP connect stands for.
    pub(crate) fn connect_failed(e: &io::Error) -> Self {
        DisconnectReason::ConnectFailed {
            kind: e.kind(),
            message: e.to_string().into(),
        }
    }

    /// The reason a tungstenite error on an open connection stands for.
    pub(crate) fn from_ws(e: &tungstenite::Error) -> Self {
        use tungstenite::error::ProtocolError;
        match e {
            tungstenite::Error::Io(io) => Self::from_io(io),
            tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)
            | tungstenite::Error::ConnectionClosed
            | tungstenite::Error::AlreadyClosed => DisconnectReason::Reset,
            tungstenite::Error::Capacity(c) => {
                DisconnectReason::MessageTooLarge(c.to_string().into())
            }
            other => DisconnectReason::Protocol(other.to_string().into()),
        }
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisconnectReason::PeerClosed { code, reason } if reason.is_empty() => {
                write!(f, "the peer closed the connection (code {code})")
            }
            DisconnectReason::PeerClosed { code, reason } => {
                write!(f, "the peer closed the connection (code {code}: {reason})")
            }
            DisconnectReason::Reset => {
                f.write_str("the peer dropped the connection without a close handshake")
            }
            DisconnectReason::Io { message, .. } => write!(f, "socket error: {message}"),
            DisconnectReason::Protocol(why) => write!(f, "the peer broke the protocol: {why}"),
            DisconnectReason::MessageTooLarge(why) => {
                write!(f, "the peer sent a message over the limit: {why}")
            }
            DisconnectReason::ConnectFailed { message, .. } => {
                write!(f, "could not connect: {message}")
            }
            DisconnectReason::ConnectTimeout => {
                f.write_str("the connection did not open within the connect timeout")
            }
            DisconnectReason::KeepaliveTimeout => f.write_str(
                "the peer sent nothing within the pong timeout after a ping \
                 (the peer or the network path to it is gone)",
            ),
            DisconnectReason::Handshake(why) => write!(f, "the WebSocket handshake failed: {why}"),
            DisconnectReason::Tls { message, .. } => write!(f, "TLS failed: {message}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_cause() {
        let e = Error::Disconnected(DisconnectReason::PeerClosed {
            code: 1001,
            reason: "going away".into(),
        });
        assert_eq!(
            e.to_string(),
            "connection lost after the request was sent (the peer closed the connection \
             (code 1001: going away)): whether the server acted on it is unknown"
        );
        let e = Error::NotSent(DisconnectReason::ConnectTimeout);
        assert_eq!(
            e.to_string(),
            "request not sent, the server never saw it: \
             the connection did not open within the connect timeout"
        );
        let e = Error::TooLarge { size: 10, limit: 5 };
        assert_eq!(e.to_string(), "message too large: 10 bytes, the limit is 5");
        let io = Error::from(io::Error::other("boom"));
        assert!(std::error::Error::source(&io).is_some());
    }

    #[test]
    fn a_tls_failure_survives_the_trip_through_io_error() {
        let failure = TlsFailure::new(TlsErrorKind::NameMismatch, "not valid for \"a.test\"");
        let reason = DisconnectReason::from_io(&failure.into_io());
        assert_eq!(
            reason,
            DisconnectReason::Tls {
                kind: TlsErrorKind::NameMismatch,
                message: "the server's certificate is not valid for the host name in the URL: \
                          not valid for \"a.test\""
                    .into(),
            }
        );
        assert_eq!(
            Error::NotSent(reason).to_string(),
            "request not sent, the server never saw it: TLS failed: the server's certificate \
             is not valid for the host name in the URL: not valid for \"a.test\""
        );
    }
}
