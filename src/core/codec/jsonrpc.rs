//! The `JsonRpc2` codec: JSON-RPC 2.0 requests, answers, notifications and batches.
//!
//! A request's payload is the object a [`Request`](crate::Request) serializes to,
//! `{"method": .., "params": ..}`; the codec stamps it with `"jsonrpc":"2.0"` and the id by
//! splicing text, never re-parsing it. Decoding borrows the members it needs from the frame
//! (no `Value` tree) and reports where `result`, `params` and a subscription's key sit.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{Codec, CodecError, Decoded, parse_id, parse_object, span_of};
use crate::core::call_id::CallId;

/// How request ids are written, and so which answer ids match.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdStyle {
    /// `"id": 5`; only the JSON number `5` matches (`"5"`, `5.0` and `-5` do not).
    #[default]
    Number,
    /// `"id": "5"`, for servers that require string ids; only the string `"5"` matches.
    String,
}

/// JSON-RPC 2.0 (<https://www.jsonrpc.org/specification>).
///
/// - A call's payload is a [`Request`](crate::Request): the frame sent is
///   `{"jsonrpc":"2.0","id":N,"method":..,"params":..}`.
/// - An answer with `result` completes its call with `Ok`; one with `error` completes it with
///   [`Error::Remote`](crate::Error::Remote) carrying `code`, `message` and `data`.
/// - A `method` without an `id` is a notification, routed by method name
///   ([`Context::on_notification`](crate::Context::on_notification)) or, when its
///   `params.subscription` names a live subscription, to that subscription.
/// - A JSON array is a batch answer: each element completes its own call.
/// - Per the specification, an answer without `"jsonrpc": "2.0"`, with both `result` and
///   `error`, or with an `error` that is not an object with an integer `code` and a string
///   `message`, is malformed: it completes nothing and is counted. One leniency, for the
///   servers people run: an answer with an id and neither member (rpc-websockets' answer to
///   a method that returns nothing) completes its call with a `null` result, where the
///   specification would have the call wait for its timeout. An error whose id
///   is `null` (the server's reply to a request it could not parse) cannot name its call: it
///   is handed over as a push ([`UnmatchedReason::NoId`](crate::UnmatchedReason::NoId)).
///
/// ```
/// use rpcloop::{CallId, Codec, Decoded, JsonRpc2};
/// let mut out = String::new();
/// let id = CallId::from_u64(3).unwrap();
/// JsonRpc2::default().encode_request(id, r#"{"method":"add","params":[1,2]}"#, &mut out)?;
/// assert_eq!(out, r#"{"jsonrpc":"2.0","id":3,"method":"add","params":[1,2]}"#);
/// match JsonRpc2::default().decode(r#"{"jsonrpc":"2.0","id":3,"result":3}"#) {
///     Decoded::Answer { id: 3, payload: Some(range) } => assert_eq!(range, 33..34),
///     other => panic!("{other:?}"),
/// }
/// # Ok::<(), rpcloop::CodecError>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JsonRpc2 {
    /// How ids are written and matched. Default: numbers.
    pub ids: IdStyle,
}

impl JsonRpc2 {
    /// JSON-RPC 2.0 with string ids (`"id":"5"`), for servers that require them.
    pub fn with_string_ids() -> Self {
        JsonRpc2 {
            ids: IdStyle::String,
        }
    }
}

/// The members of a JSON-RPC message, borrowed from the frame.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow, default)]
    jsonrpc: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    error: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    params: Option<&'a RawValue>,
}

/// A subscription notification's `params`: `{"subscription": key, "result": item}` (the shape
/// Ethereum and Solana nodes use).
#[derive(Deserialize)]
struct SubscriptionParams<'a> {
    #[serde(borrow, default)]
    subscription: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    result: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ErrorObject<'a> {
    code: i64,
    #[serde(borrow)]
    message: std::borrow::Cow<'a, str>,
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
}

/// Reads a present member as `Some`, even when it is `null` (a plain `Option` would not).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// The members of the JSON object `payload` after its `{`, to splice the codec's own members
/// in front of: refused unless `payload` is an object with at least one member.
fn members_of(payload: &str) -> Result<&str, CodecError> {
    let body = payload.trim_start().strip_prefix('{').ok_or_else(|| {
        CodecError::new("a JSON-RPC message must be an object (use rpcloop::Request)")
    })?;
    if body.trim_start().starts_with('}') {
        return Err(CodecError::new(
            "a JSON-RPC message needs a method (use rpcloop::Request)",
        ));
    }
    Ok(body)
}

impl Codec for JsonRpc2 {
    fn encode_request(
        &self,
        id: CallId,
        payload: &str,
        out: &mut String,
    ) -> Result<(), CodecError> {
        let body = members_of(payload)?;
        out.reserve(body.len() + 48);
        out.push_str("{\"jsonrpc\":\"2.0\",\"id\":");
        match self.ids {
            IdStyle::Number => id.write_decimal(out),
            IdStyle::String => {
                out.push('"');
                id.write_decimal(out);
                out.push('"');
            }
        }
        out.push(',');
        out.push_str(body);
        Ok(())
    }

    fn encode_notification(&self, payload: &str, out: &mut String) -> Result<(), CodecError> {
        let body = members_of(payload)?;
        out.reserve(body.len() + 18);
        out.push_str("{\"jsonrpc\":\"2.0\",");
        out.push_str(body);
        Ok(())
    }

    fn decode(&self, frame: &str) -> Decoded {
        let start = frame.trim_start();
        if start.starts_with('[') {
            let Ok(elements) = serde_json::from_str::<Vec<&RawValue>>(frame) else {
                return Decoded::Malformed;
            };
            if elements.is_empty() {
                return Decoded::Malformed;
            }
            return Decoded::Batch(
                elements
                    .into_iter()
                    .map(|element| self.decode_object(frame, element.get()))
                    .collect(),
            );
        }
        if !start.starts_with('{') {
            return match serde_json::from_str::<serde::de::IgnoredAny>(frame) {
                Ok(_) => Decoded::NoId,
                Err(_) => Decoded::Malformed,
            };
        }
        self.decode_object(frame, frame)
    }
}

impl JsonRpc2 {
    /// Decodes one message object `text`, a subslice of `frame` (ranges are into `frame`).
    fn decode_object(&self, frame: &str, text: &str) -> Decoded {
        // A batch element that is an array (`[["2.0",5,"x"]]`) is no message.
        let Some(f) = parse_object::<Fields<'_>>(text) else {
            return Decoded::Malformed;
        };
        if !f.jsonrpc.is_some_and(is_version_2) {
            return Decoded::Malformed;
        }
        let id = f.id.filter(|id| id.get() != "null");
        if let Some(method) = f.method {
            if !method.get().starts_with('"') {
                return Decoded::Malformed;
            }
            if id.is_some() {
                // A request from the server: a client has nothing to answer it with.
                return Decoded::NoId;
            }
            return notification(frame, method, f.params);
        }
        let (result, error) = match (f.result, f.error) {
            (Some(_), Some(_)) => return Decoded::Malformed,
            // §5 requires one of the two, but rpc-websockets answers a method that returns
            // nothing with `{"jsonrpc":"2.0","id":N}`: an answer that names its call and
            // carries no result (a null one, below). Without an id it names nothing.
            (None, None) if f.id.is_none_or(|id| id.get() == "null") => {
                return Decoded::Malformed;
            }
            (result, error) => (result, error),
        };
        let Some(id) = id else {
            // §5: an error whose request could not be identified has a null id.
            return if error.is_some() {
                Decoded::NoId
            } else {
                Decoded::Malformed
            };
        };
        let Ok(id) = self.parse_id(id) else {
            return Decoded::ForeignId;
        };
        match (result, error) {
            (Some(result), _) => Decoded::Answer {
                id,
                payload: Some(span_of(frame, result.get())),
            },
            // §5.1: "error" is an Object (`[-32000,"boom"]` is not).
            (_, Some(error)) => match parse_object::<ErrorObject<'_>>(error.get()) {
                Some(e) => Decoded::Failure {
                    id,
                    code: e.code,
                    message: e.message.into_owned(),
                    data: e.data.map(RawValue::to_owned),
                },
                None => Decoded::Malformed,
            },
            (None, None) => Decoded::Answer { id, payload: None },
        }
    }

    /// The id as this codec writes it: a plain number, or a string of the same digits. Ids
    /// match by their exact text: `"05"` is not the id `"5"`.
    fn parse_id(&self, raw: &RawValue) -> Result<u64, ()> {
        match self.ids {
            IdStyle::Number => parse_id(raw)?.ok_or(()),
            IdStyle::String => {
                let digits = raw
                    .get()
                    .strip_prefix('"')
                    .and_then(|s| s.strip_suffix('"'))
                    .ok_or(())?;
                // Only the text we write: no sign, no leading zero, no escapes.
                let canonical = digits.bytes().all(|b| b.is_ascii_digit())
                    && !digits.is_empty()
                    && (digits == "0" || !digits.starts_with('0'));
                if !canonical {
                    return Err(());
                }
                digits.parse().map_err(|_| ())
            }
        }
    }
}

/// Whether `raw` is the JSON string `"2.0"`: as every server writes it, or with escapes
/// (`"2\u002e0"` is the same string, and a valid answer).
fn is_version_2(raw: &RawValue) -> bool {
    let text = raw.get();
    text == "\"2.0\""
        || (text.contains('\\')
            && serde_json::from_str::<std::borrow::Cow<'_, str>>(text).is_ok_and(|v| v == "2.0"))
}

fn notification(frame: &str, method: &RawValue, params: Option<&RawValue>) -> Decoded {
    let (subscription, item) = params
        .and_then(|p| parse_object::<SubscriptionParams<'_>>(p.get()))
        .map_or((None, None), |p| {
            (
                p.subscription.map(|s| span_of(frame, s.get())),
                p.result.map(|r| span_of(frame, r.get())),
            )
        });
    Decoded::Notification {
        method: span_of(frame, method.get()),
        params: params.map(|p| span_of(frame, p.get())),
        subscription,
        item,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(codec: JsonRpc2, id: u64, payload: &str) -> Result<String, CodecError> {
        let mut out = String::new();
        codec
            .encode_request(CallId::from_u64(id).unwrap(), payload, &mut out)
            .map(|()| out)
    }

    fn at(frame: &str, range: &std::ops::Range<usize>) -> String {
        frame[range.clone()].to_owned()
    }

    /// Issue 18: a request is written into the caller's buffer with no allocation of its own
    /// (there was a `String::with_capacity(40)` per call).
    #[test]
    fn a_request_is_written_with_no_allocation() {
        use crate::core::sim::heap::allocations;
        let payload = r#"{"method":"echo","params":[1]}"#;
        for codec in [JsonRpc2::default(), JsonRpc2::with_string_ids()] {
            let mut out = String::with_capacity(256);
            let before = allocations();
            for id in 1..=1_000 {
                out.clear();
                let id = CallId::from_u64(id).unwrap();
                codec.encode_request(id, payload, &mut out).unwrap();
            }
            assert_eq!(allocations() - before, 0);
        }
    }

    #[test]
    fn golden_request_and_notification_frames() {
        let rpc = JsonRpc2::default();
        assert_eq!(
            encode(rpc, 5, r#"{"method":"sum","params":[1,2]}"#).unwrap(),
            r#"{"jsonrpc":"2.0","id":5,"method":"sum","params":[1,2]}"#
        );
        assert_eq!(
            encode(JsonRpc2::with_string_ids(), 5, r#" {"method":"x"}"#).unwrap(),
            r#"{"jsonrpc":"2.0","id":"5","method":"x"}"#
        );
        let mut out = String::new();
        rpc.encode_notification(r#"{"method":"log","params":{"a":1}}"#, &mut out)
            .unwrap();
        assert_eq!(out, r#"{"jsonrpc":"2.0","method":"log","params":{"a":1}}"#);
        assert!(encode(rpc, 1, "42").is_err());
        assert!(encode(rpc, 1, "{ }").is_err());
        assert!(encode(rpc, 1, "[1]").is_err());
    }

    #[test]
    fn results_and_errors_are_found_in_place() {
        let rpc = JsonRpc2::default();
        let frame = r#"{"jsonrpc":"2.0","result":{"v":[1]},"id":9}"#;
        match rpc.decode(frame) {
            Decoded::Answer {
                id: 9,
                payload: Some(r),
            } => assert_eq!(at(frame, &r), r#"{"v":[1]}"#),
            other => panic!("{other:?}"),
        }
        let frame = r#"{"jsonrpc":"2.0","id":2,"result":null}"#;
        assert!(matches!(
            rpc.decode(frame),
            Decoded::Answer {
                id: 2,
                payload: Some(_)
            }
        ));
        let frame = r#"{"jsonrpc":"2.0","id":4,"error":{"code":-32601,"message":"no \"such\" method","data":{"m":"x"}}}"#;
        match rpc.decode(frame) {
            Decoded::Failure {
                id: 4,
                code: -32601,
                message,
                data,
            } => {
                assert_eq!(message, r#"no "such" method"#);
                assert_eq!(data.unwrap().get(), r#"{"m":"x"}"#);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ids_match_strictly_in_each_style() {
        let numbers = JsonRpc2::default();
        for id in [
            r#""5""#,
            "5.0",
            "-5",
            "5e0",
            "[5]",
            "true",
            "99999999999999999999",
        ] {
            let frame = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":1}}"#);
            assert!(
                matches!(numbers.decode(&frame), Decoded::ForeignId),
                "{frame}"
            );
        }
        let strings = JsonRpc2::with_string_ids();
        for id in [
            "5",
            r#""5.0""#,
            r#""-5""#,
            r#""""#,
            r#""0x5""#,
            r#""\u0035""#,
            r#""05""#,
            r#""+5""#,
            r#"" 5""#,
        ] {
            let frame = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":1}}"#);
            assert!(
                matches!(strings.decode(&frame), Decoded::ForeignId),
                "{frame}"
            );
        }
        let frame = r#"{"jsonrpc":"2.0","id":"5","result":1}"#;
        assert!(matches!(
            strings.decode(frame),
            Decoded::Answer { id: 5, .. }
        ));
    }

    #[test]
    fn malformed_answers_per_the_specification() {
        let rpc = JsonRpc2::default();
        for frame in [
            r#"{"id":1,"result":1}"#,
            r#"{"jsonrpc":"1.0","id":1,"result":1}"#,
            r#"{"jsonrpc":2.0,"id":1,"result":1}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":1,"error":{"code":1,"message":"x"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":"x","message":"y"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":1.5,"message":"y"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"error":"boom"}"#,
            r#"{"jsonrpc":"2.0","id":null,"result":1}"#,
            r#"{"jsonrpc":"2.0","method":7}"#,
            "[]",
            "[1,",
            "{oops",
            // serde reads a struct from an array too; an object is required everywhere.
            r#"{"jsonrpc":"2.0","id":5,"error":[-32000,"boom"]}"#,
            r#"{"jsonrpc":"2.0","id":5,"error":[-32000,"boom",null]}"#,
        ] {
            assert!(matches!(rpc.decode(frame), Decoded::Malformed), "{frame}");
        }
        let Decoded::Batch(elements) = rpc.decode(r#"[["2.0",5,"hijacked"]]"#) else {
            panic!("a batch")
        };
        assert!(matches!(elements[..], [Decoded::Malformed]), "{elements:?}");
        // Neither result nor error: an answer with no result, if it names its call.
        assert!(matches!(
            rpc.decode(r#"{"jsonrpc":"2.0","id":1}"#),
            Decoded::Answer {
                id: 1,
                payload: None
            }
        ));
        for frame in [r#"{"jsonrpc":"2.0"}"#, r#"{"jsonrpc":"2.0","id":null}"#] {
            assert!(matches!(rpc.decode(frame), Decoded::Malformed), "{frame}");
        }
        // The parse-error reply: an error that cannot name its request.
        let frame =
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}"#;
        assert!(matches!(rpc.decode(frame), Decoded::NoId));
        // A request from the server.
        let frame = r#"{"jsonrpc":"2.0","id":1,"method":"ask"}"#;
        assert!(matches!(rpc.decode(frame), Decoded::NoId));
    }

    /// Found by the codec_decode fuzz target: `"2\u002e0"` is the string "2.0", but the
    /// version was compared as text, so a valid answer that escaped it was malformed and its
    /// call waited for its timeout.
    #[test]
    fn the_version_is_compared_as_a_json_string() {
        let rpc = JsonRpc2::default();
        for version in [r#""2\u002e0""#, r#""\u0032.0""#, r#""\u0032\u002E\u0030""#] {
            let frame = format!(r#"{{"jsonrpc":{version},"id":1,"result":7}}"#);
            assert!(
                matches!(rpc.decode(&frame), Decoded::Answer { id: 1, .. }),
                "{frame}"
            );
        }
        for version in [r#""2.0 ""#, r#""2\u002e1""#, r#""\u00322.0""#, r#""2\/0""#] {
            let frame = format!(r#"{{"jsonrpc":{version},"id":1,"result":7}}"#);
            assert!(matches!(rpc.decode(&frame), Decoded::Malformed), "{frame}");
        }
    }

    #[test]
    fn notifications_and_subscription_items() {
        let rpc = JsonRpc2::default();
        let frame = r#"{"jsonrpc":"2.0","method":"tick","params":[1,2]}"#;
        match rpc.decode(frame) {
            Decoded::Notification {
                method,
                params: Some(p),
                subscription: None,
                item: None,
            } => {
                assert_eq!(at(frame, &method), r#""tick""#);
                assert_eq!(at(frame, &p), "[1,2]");
            }
            other => panic!("{other:?}"),
        }
        let frame = r#"{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":"0xab","result":{"n":1}}}"#;
        match rpc.decode(frame) {
            Decoded::Notification {
                subscription: Some(s),
                item: Some(i),
                ..
            } => {
                assert_eq!(at(frame, &s), r#""0xab""#);
                assert_eq!(at(frame, &i), r#"{"n":1}"#);
            }
            other => panic!("{other:?}"),
        }
        let frame = r#"{"jsonrpc":"2.0","method":"accountNotification","params":{"result":7,"subscription":23784}}"#;
        match rpc.decode(frame) {
            Decoded::Notification {
                subscription: Some(s),
                ..
            } => assert_eq!(at(frame, &s), "23784"),
            other => panic!("{other:?}"),
        }
        // A `params` that is an array is routed by method; it has no subscription key.
        let frame = r#"{"jsonrpc":"2.0","method":"s","params":["0xab",{"n":1}]}"#;
        assert!(matches!(
            rpc.decode(frame),
            Decoded::Notification {
                params: Some(_),
                subscription: None,
                item: None,
                ..
            }
        ));
        let frame = r#"{"jsonrpc":"2.0","method":"bare"}"#;
        assert!(matches!(
            rpc.decode(frame),
            Decoded::Notification { params: None, .. }
        ));
    }

    #[test]
    fn batches_decode_element_by_element() {
        let rpc = JsonRpc2::default();
        let frame = r#"[{"jsonrpc":"2.0","id":2,"result":"b"}, {"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"no"}},{"bad":1},{"jsonrpc":"2.0","method":"n"}]"#;
        let Decoded::Batch(elements) = rpc.decode(frame) else {
            panic!()
        };
        assert_eq!(elements.len(), 4);
        match &elements[0] {
            Decoded::Answer {
                id: 2,
                payload: Some(r),
            } => assert_eq!(at(frame, r), r#""b""#),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            elements[1],
            Decoded::Failure { id: 1, code: 1, .. }
        ));
        assert!(matches!(elements[2], Decoded::Malformed));
        assert!(matches!(elements[3], Decoded::Notification { .. }));
    }
}
