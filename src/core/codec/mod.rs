//! [`Codec`]: how a request is stamped with its id and how an answer's id is found.
//!
//! A codec sees text only: the driver hands it the payload already serialized and the frame as
//! received, and the codec reports *where* things are rather than copying them out, so an answer
//! is never parsed into a `serde_json::Value` tree on the way to its caller.

mod envelope;
mod jsonrpc;

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde_json::value::RawValue;

use super::call_id::CallId;

pub use envelope::Envelope;
pub use jsonrpc::{IdStyle, JsonRpc2};

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
    /// Valid JSON with no id: a server push. (Also a JSON-RPC error reply whose id is `null`:
    /// the server could not tell which request it answers.)
    NoId,
    /// Not valid JSON, or not the shape this codec expects.
    Malformed,
    /// A notification (JSON-RPC: a `method` and no `id`), routed by method name, or to a
    /// subscription by the key it carries. Ranges are byte ranges of the frame.
    Notification {
        /// The method's JSON string literal, quotes included.
        method: Range<usize>,
        /// The `params` JSON text, if any.
        params: Option<Range<usize>>,
        /// The subscription key's JSON text (`params.subscription`), if any.
        subscription: Option<Range<usize>>,
        /// The subscription item's JSON text (`params.result`), if any.
        item: Option<Range<usize>>,
    },
    /// A batch answer (a JSON array): each element decoded on its own.
    Batch(Vec<Decoded>),
}

/// Why a [`Codec`] could not encode a request; `submit` fails with
/// [`Error::Encode`](crate::Error::Encode) carrying this text, and nothing is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError(Cow<'static, str>);

impl CodecError {
    /// An error with this explanation.
    pub fn new(why: impl Into<Cow<'static, str>>) -> Self {
        CodecError(why.into())
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodecError {}

/// A wire format for requests and answers.
///
/// Implement it to talk to a server whose id field has another name or shape (see
/// `examples/custom_codec.rs`). Built in: [`Envelope`], the original
/// `{"id": N, "message": ...}` protocol, and [`JsonRpc2`].
///
/// ```
/// use rpcloop::{CallId, Codec, Decoded, Envelope};
/// let mut out = String::new();
/// Envelope.encode_request(CallId::from_u64(7).unwrap(), r#"{"op":"ping"}"#, &mut out).unwrap();
/// assert_eq!(out, r#"{"id":7,"message":{"op":"ping"}}"#);
/// match Envelope.decode(r#"{"id":7,"message":"pong"}"#) {
///     Decoded::Answer { id: 7, payload: Some(range) } => assert_eq!(range, 18..24),
///     other => panic!("{other:?}"),
/// }
/// ```
pub trait Codec: Send + Sync + fmt::Debug {
    /// Appends to `out` the frame for a request with this id; `payload` is valid JSON text
    /// (what the caller passed to `submit`, serialized).
    ///
    /// # Errors
    /// A [`CodecError`] when `payload` cannot be a request in this format; `out` may then hold
    /// anything, it is discarded.
    fn encode_request(&self, id: CallId, payload: &str, out: &mut String)
    -> Result<(), CodecError>;

    /// Appends to `out` the frame for a notification: a message that expects no answer.
    ///
    /// # Errors
    /// By default every notification is refused: the format has none.
    fn encode_notification(&self, payload: &str, out: &mut String) -> Result<(), CodecError> {
        let _ = (payload, out);
        Err(CodecError::new("this codec has no notifications"))
    }

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
    // By hand: `str::parse` costs several times this on every answer.
    if text.is_empty() {
        return Err(());
    }
    let mut n: u64 = 0;
    for b in text.bytes() {
        if !b.is_ascii_digit() {
            return Err(());
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or(())?;
    }
    Ok(Some(n))
}

/// Parses a wire struct from `text`, which must be a JSON object.
///
/// serde's derived `Deserialize` for a struct also accepts a JSON array, filling the fields in
/// order (its `visit_seq`): `["2.0",5,"hijacked"]` would read as `jsonrpc`, `id` and `result`.
/// Every member that must be an object goes through here, which refuses any other form.
pub(crate) fn parse_object<'a, T: serde::Deserialize<'a>>(text: &'a str) -> Option<T> {
    if !text.trim_start().starts_with('{') {
        return None;
    }
    serde_json::from_str(text).ok()
}

/// The byte range `inner` occupies inside `outer`; `inner` must be a subslice of `outer`.
pub(crate) fn span_of(outer: &str, inner: &str) -> Range<usize> {
    let start = inner.as_ptr() as usize - outer.as_ptr() as usize;
    debug_assert!(start + inner.len() <= outer.len());
    start..start + inner.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `parse_id` is written by hand (it runs on every answer); it reads what `str::parse`
    /// read: digits only, no sign, no overflow; 0 reads as 0 (no call carries it, so it matches
    /// nothing: a falsy id is unknown, never "no id").
    #[test]
    fn parse_id_reads_plain_digits_as_str_parse_does() {
        let read = |text: &str| parse_id(&RawValue::from_string(text.into()).unwrap());
        for text in [
            "0",
            "7",
            "12345",
            "9007199254740991",
            "18446744073709551615",
        ] {
            assert_eq!(read(text), Ok(Some(text.parse().unwrap())), "{text}");
        }
        assert_eq!(read("null"), Ok(None));
        for text in [
            "18446744073709551616",
            "-5",
            "5.0",
            "5e0",
            "\"5\"",
            "[5]",
            "true",
        ] {
            assert_eq!(read(text), Err(()), "{text}");
        }
    }
}
