//! [`Message`]: a WebSocket data message sent as it is, outside any call
//! ([`Context::send`](crate::Context::send)).
//!
//! rpcloop's own type rather than tungstenite's, so that the public API does not move with
//! tungstenite's versions.

use std::fmt;

use bytes::Bytes;

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
