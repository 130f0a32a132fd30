//! [`Message`]: a WebSocket data message sent as it is, outside any call
//! ([`Context::send`](crate::Context::send)).
//!
//! rpcloop's own type rather than tungstenite's, so that the public API does not move with
//! tungstenite's versions.

use std::fmt;

use bytes::Bytes;

use serde::Serialize;

use crate::core::conn_id::ConnId;
use crate::core::outbox::Unsent;
use crate::core::request::Request;
use crate::driver::connection::{Socket, write_message};
use crate::driver::context::Context;
use crate::error::{DisconnectReason, Error};

/// A WebSocket data message (RFC 6455 §5.6), sent by [`Context::send`](crate::Context::send)
/// with no correlation id and no answer expected.
///
/// ```
/// use rpcloop::Message;
/// let text = Message::from("hello");
/// let binary = Message::from(vec![1u8, 2, 3]);
/// assert_eq!(text.len(), 5);
/// assert!(matches!(binary, Message::Binary(ref b) if b.as_ref() == [1, 2, 3]));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message: UTF-8, as the protocol requires of text frames.
    Text(String),
    /// A binary message. [`Bytes`] (from the `bytes` crate) so that a buffer already shared
    /// elsewhere, or a `Vec<u8>`, is sent without a copy.
    Binary(Bytes),
}

impl Message {
    /// The payload's length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Message::Text(text) => text.len(),
            Message::Binary(data) => data.len(),
        }
    }

    /// Whether the payload is empty (an empty message is legal and is sent).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The message in tungstenite's terms, without copying the payload.
    pub(crate) fn into_ws(self) -> tungstenite::Message {
        match self {
            Message::Text(text) => tungstenite::Message::Text(text.into()),
            Message::Binary(data) => tungstenite::Message::Binary(data),
        }
    }
}

impl From<String> for Message {
    fn from(text: String) -> Self {
        Message::Text(text)
    }
}

impl From<&str> for Message {
    fn from(text: &str) -> Self {
        Message::Text(text.to_owned())
    }
}

impl From<Vec<u8>> for Message {
    fn from(data: Vec<u8>) -> Self {
        Message::Binary(data.into())
    }
}

impl From<&[u8]> for Message {
    fn from(data: &[u8]) -> Self {
        Message::Binary(Bytes::copy_from_slice(data))
    }
}

impl From<Bytes> for Message {
    fn from(data: Bytes) -> Self {
        Message::Binary(data)
    }
}

impl fmt::Debug for Message {
    /// Short: the kind and length, and the start of a text (a 16 MiB payload is not logged).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Message::Text(text) => {
                let cut = text.char_indices().nth(64).map_or(text.len(), |(i, _)| i);
                f.debug_struct("Text")
                    .field("len", &text.len())
                    .field("start", &&text[..cut])
                    .finish()
            }
            Message::Binary(data) => f.debug_struct("Binary").field("len", &data.len()).finish(),
        }
    }
}

impl Context {
    /// Sends a message as it is, with no correlation id and no answer expected: for protocols
    /// where not every message is a call (a subscription, an acknowledgement, a reply to a
    /// server push). What the server sends back, if anything, goes to the connection's
    /// [message handler](Self::set_message_handler) as an [`Unmatched`](crate::Unmatched)
    /// message.
    ///
    /// A message goes the way calls go: into the connection's write buffer, leaving with the
    /// calls around it at the start of the next [`turn`](crate::EventLoop::turn) (or at once
    /// with [`flush`](Self::flush)), in submit order with them. Sent before the connection is
    /// open (while connecting, or reconnecting under a
    /// [`ReconnectPolicy`](crate::ReconnectPolicy)), it waits in the same bounded queue as
    /// calls and is written when the connection opens. There is no callback: a message still
    /// queued or buffered when the connection ends is dropped unsent, and nothing reports it
    /// (the [state handler](Self::set_state_handler) reports the end itself).
    ///
    /// ```no_run
    /// # use rpcloop::*;
    /// # fn f(ev: &mut EventLoop, conn: ConnId) -> Result<(), Error> {
    /// ev.send(conn, r#"{"op":"subscribe","topic":"quotes"}"#)?;
    /// ev.send(conn, Message::Binary(vec![0xde, 0xad].into()))?;
    /// // Echo every push back (an Autobahn-style agent does exactly this).
    /// ev.set_message_handler(conn, move |ctx, message| {
    ///     let echo = match message.as_text() {
    ///         Some(text) => Message::from(text),
    ///         None => Message::from(message.as_bytes()),
    ///     };
    ///     if let Err(e) = ctx.send(conn, echo) {
    ///         eprintln!("echo not sent: {e}");
    ///     }
    /// })?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// When it returns an error the message was not sent:
    /// [`Error::TooLarge`] past [`ConnectionConfig::max_message_size`](crate::ConnectionConfig);
    /// [`Error::Busy`] when the write buffer (or, before the connection opens, the queue) is
    /// full, up to [`ConnectionConfig::max_write_buffer`](crate::ConnectionConfig);
    /// [`Error::Closed`], [`Error::NotSent`] or [`Error::Handshake`] if the connection has
    /// ended (as [`submit`](Self::submit) would fail); [`Error::UnknownConnection`];
    /// [`Error::Shutdown`] once the loop shuts down. One exception: [`Error::Disconnected`]
    /// when writing it failed the connection, in which case part of it may have left.
    pub fn send(&mut self, conn: ConnId, message: impl Into<Message>) -> Result<(), Error> {
        self.now();
        if self.shut_down {
            return Err(Error::Shutdown);
        }
        let message = message.into();
        let index = conn.index();
        let c = self.conns.get_mut(index).ok_or(Error::UnknownConnection)?;
        if let Some(ended) = &c.ended {
            return Err(ended.to_error());
        }
        let size = message.len();
        if size > c.config.max_message_size {
            let limit = c.config.max_message_size;
            return Err(Error::TooLarge { size, limit });
        }
        if !c.writes_now() {
            let calls = &self.calls;
            if !c
                .outbox
                .admits(size, c.config.max_write_buffer, |id| calls.is_queued(id))
            {
                return Err(Error::Busy);
            }
            c.outbox.push(Unsent::Message(message), size);
            return Ok(());
        }
        let Socket::Open(ws) = &mut c.socket else {
            unreachable!("writes_now implies an open socket");
        };
        match write_message(ws, message.into_ws()) {
            Ok(()) => {
                c.stats.messages_sent += 1;
                self.wrote(index);
                Ok(())
            }
            Err(tungstenite::Error::WriteBufferFull(_)) => Err(Error::Busy),
            Err(e) => {
                let reason = DisconnectReason::from_ws(&e);
                self.fail(index, reason.clone());
                Err(Error::Disconnected(reason))
            }
        }
    }
}

impl Context {
    /// Sends a notification: `method` with `params`, stamped by the connection's codec as a
    /// message that expects no answer (JSON-RPC 2.0: `{"jsonrpc":"2.0","method":..,"params":..}`,
    /// no `id`, nothing pending). It travels like [`send`](Self::send).
    ///
    /// ```no_run
    /// # use rpcloop::*;
    /// # fn f(ev: &mut EventLoop, conn: ConnId) -> Result<(), Error> {
    /// ev.notify(conn, "log", serde_json::json!({"level": "info", "text": "hello"}))?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`send`](Self::send); [`Error::Encode`] if `params` do not serialize or the codec
    /// has no notifications ([`Envelope`](crate::Envelope) has none).
    pub fn notify<P: Serialize>(
        &mut self,
        conn: ConnId,
        method: &str,
        params: P,
    ) -> Result<(), Error> {
        let payload =
            serde_json::to_string(&Request::new(method, params)).map_err(Error::Encode)?;
        let codec = self
            .conns
            .get(conn.index())
            .ok_or(Error::UnknownConnection)?
            .config
            .codec
            .clone();
        let mut frame = String::new();
        codec
            .encode_notification(&payload, &mut frame)
            .map_err(|e| Error::Encode(serde::ser::Error::custom(e)))?;
        self.send(conn, Message::Text(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_keep_the_kind_and_the_payload() {
        assert_eq!(Message::from("héllo"), Message::Text("héllo".to_owned()));
        assert_eq!(Message::from(String::from("x")).len(), 1);
        let bytes = Message::from(vec![0u8, 255]);
        assert_eq!(bytes, Message::Binary(Bytes::from_static(&[0, 255])));
        assert_eq!(Message::from(&[1u8][..]).len(), 1);
        assert!(Message::from("").is_empty());
        match Message::from(vec![9u8; 3]).into_ws() {
            tungstenite::Message::Binary(b) => assert_eq!(&b[..], &[9, 9, 9]),
            other => panic!("{other:?}"),
        }
        match Message::from("t").into_ws() {
            tungstenite::Message::Text(t) => assert_eq!(t.as_str(), "t"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn debug_does_not_dump_large_payloads() {
        let text = format!("{:?}", Message::from("é".repeat(1000)));
        assert!(text.len() < 200, "{text}");
        assert_eq!(
            format!("{:?}", Message::from(vec![0u8; 1 << 20])),
            "Binary { len: 1048576 }"
        );
    }
}
