//! [`Response`]: a matched answer, kept as the frame's own text until the caller asks for more.

use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use tungstenite::Utf8Bytes;

use super::call_id::CallId;
use crate::error::Error;

/// The answer to a call.
///
/// It holds the received frame (reference-counted, not copied) and where the payload sits in it;
/// nothing is parsed into a tree until [`message`](Self::message) is called.
///
/// ```
/// # fn show(result: Result<rpcloop::Response, rpcloop::Error>) -> Result<(), rpcloop::Error> {
/// let resp = result?;
/// let raw: &str = resp.text(); // the payload's JSON text, borrowed from the frame
/// let n: u64 = resp.message()?; // deserialized on request
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Response {
    id: CallId,
    frame: Utf8Bytes,
    payload: Option<Range<usize>>,
}

impl Response {
    pub(crate) fn new(id: CallId, frame: Utf8Bytes, payload: Option<Range<usize>>) -> Self {
        debug_assert!(
            payload
                .as_ref()
                .is_none_or(|r| frame.as_str().get(r.clone()).is_some())
        );
        Response { id, frame, payload }
    }

    /// The id of the call this answers.
    pub fn id(&self) -> CallId {
        self.id
    }

    /// The payload's raw JSON text (the envelope's `message`, a JSON-RPC `result`), borrowed
    /// from the frame; `"null"` when the answer carried no payload.
    pub fn text(&self) -> &str {
        match &self.payload {
            Some(range) => &self.frame.as_str()[range.clone()],
            None => "null",
        }
    }

    /// The whole frame as received.
    pub fn frame(&self) -> &str {
        self.frame.as_str()
    }

    /// Deserializes the payload. Borrowing types (`&str`, `&RawValue`) borrow from the frame.
    ///
    /// The error is an [`Error`] like the call's own, so `result.and_then(|r| r.message())`
    /// reads an answer in one step.
    ///
    /// # Errors
    /// [`Error::Decode`] if the payload does not deserialize into `T`.
    pub fn message<'de, T: Deserialize<'de>>(&'de self) -> Result<T, Error> {
        serde_json::from_str(self.text()).map_err(Error::Decode)
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("id", &self.id)
            .field("message", &self.text())
            .finish()
    }
}
