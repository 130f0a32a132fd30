//! [`Unmatched`]: a frame that completed no call, and why.

use std::fmt;

use tungstenite::{Bytes, Utf8Bytes};

use super::conn_id::ConnId;

/// Why an incoming frame matched no pending call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UnmatchedReason {
    /// It carries an id this loop never issued (or one no call of ours could carry).
    UnknownId,
    /// It carries the id of a call that already completed: a late or duplicate answer.
    StaleId,
    /// It is valid JSON without an id: a server push.
    NoId,
    /// It is not valid JSON, or not shaped like an answer.
    Malformed,
    /// It is a binary frame.
    Binary,
}

impl UnmatchedReason {
    /// A short snake_case name, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            UnmatchedReason::UnknownId => "unknown_id",
            UnmatchedReason::StaleId => "stale_id",
            UnmatchedReason::NoId => "no_id",
            UnmatchedReason::Malformed => "malformed",
            UnmatchedReason::Binary => "binary",
        }
    }
}

impl fmt::Display for UnmatchedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone)]
enum Payload {
    Text(Utf8Bytes),
    Binary(Bytes),
}

/// A frame that matched no pending call, as given to a connection's message handler.
#[derive(Clone)]
pub struct Unmatched {
    conn: ConnId,
    reason: UnmatchedReason,
    payload: Payload,
}

impl Unmatched {
    pub(crate) fn text(conn: ConnId, reason: UnmatchedReason, text: Utf8Bytes) -> Self {
        Unmatched {
            conn,
            reason,
            payload: Payload::Text(text),
        }
    }

    pub(crate) fn binary(conn: ConnId, data: Bytes) -> Self {
        Unmatched {
            conn,
            reason: UnmatchedReason::Binary,
            payload: Payload::Binary(data),
        }
    }

    /// The connection it arrived on.
    pub fn conn(&self) -> ConnId {
        self.conn
    }

    /// Why it matched no call.
    pub fn reason(&self) -> UnmatchedReason {
        self.reason
    }

    /// The frame's text, if it was a text frame.
    pub fn as_text(&self) -> Option<&str> {
        match &self.payload {
            Payload::Text(text) => Some(text.as_str()),
            Payload::Binary(_) => None,
        }
    }

    /// The frame's bytes, whatever its kind.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.payload {
            Payload::Text(text) => text.as_bytes(),
            Payload::Binary(data) => data,
        }
    }
}

impl fmt::Debug for Unmatched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Unmatched");
        d.field("conn", &self.conn).field("reason", &self.reason);
        match &self.payload {
            Payload::Text(text) => d.field("text", &text.as_str()),
            Payload::Binary(data) => d.field("len", &data.len()),
        };
        d.finish()
    }
}
