//! [`Notification`]: a message the server sent on its own (JSON-RPC: a `method` without an
//! `id`), kept as the frame's own text.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use tungstenite::Utf8Bytes;

use super::conn_id::ConnId;
use crate::error::Error;

/// A notification from the server, as handed to a method handler
/// ([`Context::on_notification`](crate::Context::on_notification)) or a subscription.
///
/// Like a [`Response`](crate::Response), it holds the received frame (reference-counted, not
/// copied) and where its parts sit in it; nothing is parsed until asked.
#[derive(Clone)]
pub struct Notification {
    conn: ConnId,
    frame: Utf8Bytes,
    method: Range<usize>,
    params: Option<Range<usize>>,
    subscription: Option<Range<usize>>,
    item: Option<Range<usize>>,
}

impl Notification {
    pub(crate) fn new(
        conn: ConnId,
        frame: Utf8Bytes,
        method: Range<usize>,
        params: Option<Range<usize>>,
        subscription: Option<Range<usize>>,
        item: Option<Range<usize>>,
    ) -> Self {
        Notification {
            conn,
            frame,
            method,
            params,
            subscription,
            item,
        }
    }

    /// The connection it arrived on.
    pub fn conn(&self) -> ConnId {
        self.conn
    }

    /// The method name (unescaped; borrowed from the frame unless it had escapes).
    pub fn method(&self) -> Cow<'_, str> {
        let literal = &self.frame.as_str()[self.method.clone()];
        serde_json::from_str(literal).unwrap_or(Cow::Borrowed(""))
    }

    /// The `params` JSON text, or `"null"` when there were none.
    pub fn params_text(&self) -> &str {
        self.part(&self.params)
    }

    /// Deserializes `params`.
    ///
    /// # Errors
    /// [`Error::Decode`] if they do not deserialize into `T`.
    pub fn params<'de, T: Deserialize<'de>>(&'de self) -> Result<T, Error> {
        serde_json::from_str(self.params_text()).map_err(Error::Decode)
    }

    /// For a subscription item (`params: {"subscription": .., "result": ..}`): the item's JSON
    /// text, `params.result`; `"null"` when absent.
    pub fn item_text(&self) -> &str {
        self.part(&self.item)
    }

    /// Deserializes a subscription item (`params.result`).
    ///
    /// # Errors
    /// [`Error::Decode`] if it does not deserialize into `T`.
    pub fn item<'de, T: Deserialize<'de>>(&'de self) -> Result<T, Error> {
        serde_json::from_str(self.item_text()).map_err(Error::Decode)
    }

    /// The subscription key's JSON text (`params.subscription`), if it carries one.
    pub fn subscription_key(&self) -> Option<&str> {
        self.subscription
            .as_ref()
            .map(|r| &self.frame.as_str()[r.clone()])
    }

    /// The whole frame as received.
    pub fn frame(&self) -> &str {
        self.frame.as_str()
    }

    pub(crate) fn into_frame(self) -> Utf8Bytes {
        self.frame
    }

    fn part(&self, range: &Option<Range<usize>>) -> &str {
        range
            .as_ref()
            .map_or("null", |r| &self.frame.as_str()[r.clone()])
    }
}

impl fmt::Debug for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notification")
            .field("conn", &self.conn)
            .field("method", &self.method())
            .field("params", &self.params_text())
            .finish()
    }
}
