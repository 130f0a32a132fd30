//! [`Codec`]: how a request is stamped with its id and how an answer's id is found.
//!
//! A codec sees text only: the driver hands it the payload already serialized and the frame as
//! received, and the codec reports *where* things are rather than copying them out, so an answer
//! is never parsed into a `serde_json::Value` tree on the way to its caller.

mod envelope;

use std::fmt;
use std::ops::Range;

use serde_json::value::RawValue;

use super::call_id::CallId;

pub use envelope::Envelope;

/// What a [`Codec`] found in an incoming text frame.
#[derive(Debug)]
#[non_exhaustive]
pub enum Decoded {
    /// An answer carrying a non-negative integer id, with the byte range of its payload in the
    /// frame (`None` when it carries no payload).
    Answer {
        /// The id as written on the wire.
        id: u64,
        /// Where the payload's JSON text sits in the frame.
        payload: Option<Range<usize>>,
    },
    /// An error answer (JSON-RPC style `error` object) for the call with this id.
    Failure {
        /// The id as written on the wire.
        id: u64,
        /// The error code.
        code: i64,
        /// The error message.
        message: String,
        /// The error's `data`, as raw JSON.
        data: Option<Box<RawValue>>,
    },
    /// An id that none of our calls can carry (a string, a negative or fractional number...).
    ForeignId,
    /// Valid JSON with no id: a server push.
    NoId,
    /// Not valid JSON, or not the shape this codec expects.
    Malformed,
}

/// A wire format for requests and answers.
///
/// Implement it to talk to a server whose id field has another name or shape. The built-in
/// [`Envelope`] codec speaks the original `{"id": N, "message": ...}` protocol.
///
/// ```
/// use rpcloop::{CallId, Codec, Decoded, Envelope};
/// let mut out = String::new();
/// Envelope.encode_request(CallId::from_u64(7).unwrap(), r#"{"op":"ping"}"#, &mut out);
/// assert_eq!(out, r#"{"id":7,"message":{"op":"ping"}}"#);
/// match Envelope.decode(r#"{"id":7,"message":"pong"}"#) {
///     Decoded::Answer { id: 7, payload: Some(range) } => assert_eq!(range, 18..24),
///     other => panic!("{other:?}"),
/// }
/// ```
pub trait Codec: Send + Sync + fmt::Debug {
    /// Appends to `out` the frame for a request with this id; `payload` is valid JSON text.
    fn encode_request(&self, id: CallId, payload: &str, out: &mut String);

    /// Finds the id (and payload or error) in an incoming text frame.
    fn decode(&self, frame: &str) -> Decoded;
}

/// Reads a JSON id strictly: only a plain non-negative integer literal is an id we could have
/// sent (`5.0`, `-5`, `"5"` and `5e0` are not). `null` counts as no id.
pub(crate) fn parse_id(raw: &RawValue) -> Result<Option<u64>, ()> {
    let text = raw.get();
    if text == "null" {
        return Ok(None);
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(());
    }
    text.parse().map(Some).map_err(|_| ())
}

/// The byte range `inner` occupies inside `outer`; `inner` must be a subslice of `outer`.
pub(crate) fn span_of(outer: &str, inner: &str) -> Range<usize> {
    let start = inner.as_ptr() as usize - outer.as_ptr() as usize;
    debug_assert!(start + inner.len() <= outer.len());
    start..start + inner.len()
}
