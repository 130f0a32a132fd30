//! The `Envelope` codec: `{"id": N, "message": <payload>}` both ways.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{Codec, CodecError, Decoded, parse_id, parse_object, span_of};
use crate::core::call_id::CallId;

/// The original protocol: a request is `{"id": N, "message": <payload>}` and the answer carries
/// the same `id`, with its payload in `message`. Other members of an answer are ignored.
#[derive(Debug, Clone, Copy, Default)]
pub struct Envelope;

/// The members we look at, borrowed from the frame: no tree is built, other members are
/// skipped by the parser.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    /// Not a plain `Option`, which would read `"message": null` as absent.
    #[serde(borrow, default, deserialize_with = "present")]
    message: Option<&'a RawValue>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

impl Codec for Envelope {
    fn encode_request(
        &self,
        id: CallId,
        payload: &str,
        out: &mut String,
    ) -> Result<(), CodecError> {
        out.reserve(payload.len() + 32);
        out.push_str("{\"id\":");
        id.write_decimal(out);
        out.push_str(",\"message\":");
        out.push_str(payload);
        out.push('}');
        Ok(())
    }

    fn decode(&self, frame: &str) -> Decoded {
        // A struct also deserializes from a JSON array; only an object can be an answer.
        if !frame.trim_start().starts_with('{') {
            return match serde_json::from_str::<serde::de::IgnoredAny>(frame) {
                Ok(_) => Decoded::NoId,
                Err(_) => Decoded::Malformed,
            };
        }
        let Some(fields) = parse_object::<Fields<'_>>(frame) else {
            return Decoded::Malformed;
        };
        let Some(raw_id) = fields.id else {
            return Decoded::NoId;
        };
        match parse_id(raw_id) {
            Ok(Some(id)) => Decoded::Answer {
                id,
                payload: fields.message.map(|m| span_of(frame, m.get())),
            },
            Ok(None) => Decoded::NoId,
            Err(()) => Decoded::ForeignId,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_written_with_no_allocation() {
        use crate::core::sim::heap::allocations;
        let mut out = String::with_capacity(256);
        let before = allocations();
        for id in 1..=1_000 {
            out.clear();
            let id = CallId::from_u64(id).unwrap();
            Envelope.encode_request(id, r#"{"n":1}"#, &mut out).unwrap();
        }
        assert_eq!(allocations() - before, 0);
    }

    fn payload_of(frame: &str) -> (u64, Option<&str>) {
        match Envelope.decode(frame) {
            Decoded::Answer { id, payload } => (id, payload.map(|r| &frame[r])),
            other => panic!("{frame}: {other:?}"),
        }
    }

    #[test]
    fn golden_request_frames() {
        let mut out = String::new();
        Envelope
            .encode_request(CallId::from_u64(1).unwrap(), "42", &mut out)
            .unwrap();
        assert_eq!(out, r#"{"id":1,"message":42}"#);
        out.clear();
        Envelope
            .encode_request(CallId::from_u64(CallId::MAX).unwrap(), r#""hi""#, &mut out)
            .unwrap();
        assert_eq!(out, r#"{"id":9007199254740991,"message":"hi"}"#);
    }

    #[test]
    fn finds_id_and_payload_without_copying() {
        assert_eq!(
            payload_of(r#"{"id":3,"message":{"a":[1,2]}}"#),
            (3, Some(r#"{"a":[1,2]}"#))
        );
        assert_eq!(payload_of(r#"{"message":"x","id":4}"#), (4, Some(r#""x""#)));
        assert_eq!(
            payload_of(r#" { "id" : 5 , "extra": {"deep":[{}]}, "message" : null } "#),
            (5, Some("null"))
        );
        assert_eq!(payload_of(r#"{"id":6}"#), (6, None));
        assert_eq!(
            payload_of(r#"{"id":7,"message":"esc\"aped\u00e9"}"#),
            (7, Some(r#""esc\"aped\u00e9""#))
        );
    }

    #[test]
    fn ids_match_strictly() {
        for frame in [
            r#"{"id":"5","message":1}"#,
            r#"{"id":5.0,"message":1}"#,
            r#"{"id":-5,"message":1}"#,
            r#"{"id":5e0,"message":1}"#,
            r#"{"id":[5],"message":1}"#,
            r#"{"id":99999999999999999999999,"message":1}"#,
        ] {
            assert!(
                matches!(Envelope.decode(frame), Decoded::ForeignId),
                "{frame}"
            );
        }
    }

    #[test]
    fn pushes_and_garbage() {
        assert!(matches!(
            Envelope.decode(r#"{"event":"tick"}"#),
            Decoded::NoId
        ));
        assert!(matches!(
            Envelope.decode(r#"{"id":null,"message":1}"#),
            Decoded::NoId
        ));
        assert!(matches!(Envelope.decode("[1,2]"), Decoded::NoId));
        // serde reads a struct from an array too (`[id, message]`): it is no answer.
        assert!(matches!(Envelope.decode(r#"[5,"x"]"#), Decoded::NoId));
        assert!(matches!(Envelope.decode(r#" [5,"x"]"#), Decoded::NoId));
        assert!(matches!(Envelope.decode("17"), Decoded::NoId));
        assert!(matches!(Envelope.decode("{not json"), Decoded::Malformed));
        assert!(matches!(Envelope.decode(""), Decoded::Malformed));
        assert!(matches!(
            Envelope.decode(r#"{"id":1,"id":2}"#),
            Decoded::Malformed
        ));
        assert!(matches!(
            Envelope.decode(r#"{"id":1,"message":}"#),
            Decoded::Malformed
        ));
    }
}
