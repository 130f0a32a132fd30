//! [`Context::send`] and [`Context::notify`]: messages that are not calls, sent as they are.

use serde::Serialize;

use crate::core::conn_id::ConnId;
use crate::core::message::Message;
use crate::core::request::Request;
use crate::driver::context::Context;
use crate::error::Error;

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
    /// [`Error::Shutdown`] once the loop shuts down. A write that fails the connection after
    /// the message was accepted is the connection's failure, told to its state handler.
    pub fn send(&mut self, conn: ConnId, message: impl Into<Message>) -> Result<(), Error> {
        let now = self.now_tick_fresh();
        self.engine.send(now, conn, message.into())?;
        self.pump();
        Ok(())
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
        let now = self.now_tick_fresh();
        self.engine.notify(now, conn, &payload)?;
        self.pump();
        Ok(())
    }
}
