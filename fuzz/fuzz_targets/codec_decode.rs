//! Arbitrary bytes as an incoming text frame, through every public codec.
//!
//! Bytes that are not UTF-8 are read with `from_utf8_lossy`: tungstenite hands the codecs only
//! valid UTF-8 (a text frame that is not is a protocol error before any codec runs), so such
//! bytes cannot reach a codec as they are, and dropping them would waste the mutations that
//! break a multi-byte character; replacing them keeps every input a frame the codecs can see.
//!
//! Checked, for `Envelope`, `JsonRpc2::default()` and `JsonRpc2::with_string_ids()`:
//! - every range a codec reports (in a batch's elements too) lies inside the frame, on char
//!   boundaries;
//! - the classification, ids, codes, messages and ranges are exactly what a reference written
//!   from the documented rules (rustdoc of `Decoded`, `Envelope`, `JsonRpc2`) gives; the
//!   reference reads the frame's members itself, duplicates kept, each as the raw text serde
//!   reads it, so a range is compared with the exact span of the member it claims to be;
//! - compared with a `serde_json::Value` re-parse of the frame (depth-limited by serde_json to
//!   128 levels; deeper frames, or numbers a `Value` cannot hold, skip this comparison), each
//!   range's text parses to the member it claims;
//! - an extracted id round-trips through the codec's own `encode_request`.
//!
//! And the check that runs before any codec, `nests_deeper_than`, agrees with a plain
//! one-pass depth count on the raw bytes.

#![no_main]

use std::fmt;
use std::ops::Range;

use libfuzzer_sys::fuzz_target;
use rpcloop::fuzz_support::nests_deeper_than;
use rpcloop::{CallId, Codec, Decoded, Envelope, IdStyle, JsonRpc2};
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

/// `ConnectionConfig::max_nesting_depth`'s default: deeper frames never reach a codec.
const LIBRARY_DEPTH: usize = 128;

fuzz_target!(|data: &[u8]| {
    check_nesting(data);
    let frame = String::from_utf8_lossy(data);
    let frame: &str = &frame;
    let tree = serde_json::from_str::<Value>(frame).ok();
    check_codec(&Envelope, frame, tree.as_ref());
    check_codec(&JsonRpc2::default(), frame, tree.as_ref());
    check_codec(&JsonRpc2::with_string_ids(), frame, tree.as_ref());
});

// ---------------------------------------------------------------------------------------------
// The nesting pre-check.

/// The deepest level of `[`/`{` outside strings, in one plain pass; a closing bracket never
/// takes the depth below zero, a backslash in a string escapes the byte after it.
fn reference_depth(text: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in text {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'"' => in_string = true,
            _ => {}
        }
    }
    deepest
}

fn check_nesting(data: &[u8]) {
    let deepest = reference_depth(data);
    let first = data.first().map_or(0, |&b| usize::from(b));
    for limit in [
        0,
        1,
        2,
        first,
        deepest.saturating_sub(1),
        deepest,
        deepest + 1,
        LIBRARY_DEPTH,
    ] {
        assert_eq!(
            nests_deeper_than(data, limit),
            deepest > limit,
            "nests_deeper_than(limit {limit}) on a text {deepest} levels deep"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// What a codec said, in a comparable form.

#[derive(Debug, PartialEq)]
enum Class {
    Answer {
        id: u64,
        payload: Option<Range<usize>>,
    },
    Failure {
        id: u64,
        code: i64,
        message: String,
        data: Option<String>,
    },
    ForeignId,
    NoId,
    Malformed,
    Notification {
        method: Range<usize>,
        params: Option<Range<usize>>,
        subscription: Option<Range<usize>>,
        item: Option<Range<usize>>,
    },
    Batch(Vec<Class>),
    /// The reference cannot tell (a member name serde_json will not read as a `String`, such
    /// as one with a lone surrogate escape): only the invariants are checked.
    Unknown,
}

impl From<Decoded> for Class {
    fn from(decoded: Decoded) -> Self {
        match decoded {
            Decoded::Answer { id, payload } => Class::Answer { id, payload },
            Decoded::Failure {
                id,
                code,
                message,
                data,
            } => Class::Failure {
                id,
                code,
                message,
                data: data.map(|d| d.get().to_owned()),
            },
            Decoded::ForeignId => Class::ForeignId,
            Decoded::NoId => Class::NoId,
            Decoded::Malformed => Class::Malformed,
            Decoded::Notification {
                method,
                params,
                subscription,
                item,
            } => Class::Notification {
                method,
                params,
                subscription,
                item,
            },
            Decoded::Batch(elements) => {
                Class::Batch(elements.into_iter().map(Class::from).collect())
            }
            other => panic!("a Decoded variant this target does not know: {other:?}"),
        }
    }
}

/// Which codec, for the reference and for the round trip.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Envelope,
    JsonRpc2(IdStyle),
}

trait Named: Codec {
    fn kind(&self) -> Kind;
}

impl Named for Envelope {
    fn kind(&self) -> Kind {
        Kind::Envelope
    }
}

impl Named for JsonRpc2 {
    fn kind(&self) -> Kind {
        Kind::JsonRpc2(self.ids)
    }
}

fn check_codec(codec: &dyn Named, frame: &str, tree: Option<&Value>) {
    let kind = codec.kind();
    let got = Class::from(codec.decode(frame));
    check_ranges(frame, &got, kind);
    let expected = match kind {
        Kind::Envelope => envelope_reference(frame),
        Kind::JsonRpc2(style) => jsonrpc_reference(frame, style),
    };
    if !agrees(&got, &expected) {
        panic!(
            "{kind:?} decoded {frame:?}\n  as {got:?}\n  the documented rules give {expected:?}"
        );
    }
    if let Some(tree) = tree {
        check_against_tree(frame, &got, tree, kind);
    }
    round_trip(codec, &got);
}

/// `got` is `expected`, an `Unknown` in `expected` matching anything.
fn agrees(got: &Class, expected: &Class) -> bool {
    match (got, expected) {
        (_, Class::Unknown) => true,
        (Class::Batch(got), Class::Batch(expected)) => {
            got.len() == expected.len() && got.iter().zip(expected).all(|(g, e)| agrees(g, e))
        }
        _ => got == expected,
    }
}

// ---------------------------------------------------------------------------------------------
// Ranges: inside the frame, on char boundaries, of the right shape.

fn check_range(frame: &str, range: &Range<usize>, what: &str) {
    assert!(
        range.start <= range.end && range.end <= frame.len(),
        "{what} range {range:?} outside a frame of {} bytes",
        frame.len()
    );
    assert!(
        frame.is_char_boundary(range.start) && frame.is_char_boundary(range.end),
        "{what} range {range:?} not on char boundaries"
    );
    let text = &frame[range.clone()];
    assert!(!text.is_empty(), "{what} range {range:?} is empty");
    assert!(
        serde_json::from_str::<IgnoredAny>(text).is_ok(),
        "{what} range {range:?} is not one JSON value: {text:?}"
    );
    assert_eq!(
        text.trim_matches([' ', '\t', '\n', '\r']).len(),
        text.len(),
        "{what} range {range:?} takes in whitespace"
    );
}

fn check_ranges(frame: &str, class: &Class, kind: Kind) {
    match class {
        Class::Answer { payload, .. } => {
            if let Some(payload) = payload {
                check_range(frame, payload, "payload");
            }
        }
        Class::Notification {
            method,
            params,
            subscription,
            item,
        } => {
            assert!(
                matches!(kind, Kind::JsonRpc2(_)),
                "{kind:?} has no notifications"
            );
            check_range(frame, method, "method");
            // A JSON string literal (one value, checked above, that starts and ends with a
            // quote). Not necessarily one a Rust `String` holds: RFC 8259 §8.2 lets a string
            // escape a lone surrogate (`"\ud800"`), which the codec rightly passes on.
            let text = &frame[method.clone()];
            assert!(
                text.len() >= 2 && text.starts_with('"') && text.ends_with('"'),
                "the method {text:?} is not a string literal"
            );
            if let Some(params) = params {
                check_range(frame, params, "params");
            }
            for (range, what) in [(subscription, "subscription"), (item, "item")] {
                if let Some(range) = range {
                    check_range(frame, range, what);
                    let params = params.as_ref().expect("a key or item without params");
                    assert!(
                        params.start < range.start && range.end < params.end,
                        "{what} {range:?} is not inside params {params:?}"
                    );
                }
            }
        }
        Class::Batch(elements) => {
            assert!(matches!(kind, Kind::JsonRpc2(_)), "{kind:?} has no batches");
            assert!(!elements.is_empty(), "an empty batch");
            for element in elements {
                assert!(
                    !matches!(element, Class::Batch(_)),
                    "a batch inside a batch"
                );
                check_ranges(frame, element, kind);
            }
        }
        Class::Failure { .. }
        | Class::ForeignId
        | Class::NoId
        | Class::Malformed
        | Class::Unknown => {}
    }
}

// ---------------------------------------------------------------------------------------------
// The reference: the documented rules, over the frame's members as serde reads them.

/// An object's members in order, duplicates kept, each value the raw text borrowed from the
/// frame (so its span is exact).
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    members.push((name, map.next_value::<&'de RawValue>()?));
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(V)
    }
}

/// A member's value: absent, or present once (`null` included); `Err` when it is there twice
/// (a derived `Deserialize` refuses a duplicate field, so the whole object is malformed).
type Member<'a> = Result<Option<&'a RawValue>, ()>;

impl<'a> Members<'a> {
    fn get(&self, name: &str) -> Member<'a> {
        let mut found = self.0.iter().filter(|(n, _)| n == name).map(|(_, v)| *v);
        match (found.next(), found.next()) {
            (Some(_), Some(_)) => Err(()),
            (one, _) => Ok(one),
        }
    }
}

/// The first byte that is not JSON whitespace (RFC 8259 §2).
fn first_byte(text: &str) -> Option<u8> {
    text.bytes()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

fn valid_json(text: &str) -> bool {
    serde_json::from_str::<IgnoredAny>(text).is_ok()
}

/// Where `inner`, a subslice of `frame`, sits in it.
fn span(frame: &str, inner: &RawValue) -> Range<usize> {
    let inner = inner.get();
    let start = inner.as_ptr() as usize - frame.as_ptr() as usize;
    assert!(start + inner.len() <= frame.len());
    start..start + inner.len()
}

fn is_null(raw: Option<&RawValue>) -> bool {
    raw.is_some_and(|r| r.get() == "null")
}

/// A plain non-negative integer literal (no sign, fraction or exponent) that fits a `u64`.
fn plain_integer(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The id a codec that writes ids in `style` could have sent, written exactly as it writes it.
fn our_id(raw: &RawValue, style: Option<IdStyle>) -> Option<u64> {
    let text = raw.get();
    match style {
        None | Some(IdStyle::Number) => plain_integer(text),
        Some(IdStyle::String) => {
            let digits = text.strip_prefix('"')?.strip_suffix('"')?;
            let id = plain_integer(digits)?;
            // Exactly the text `{id}` writes: no leading zero, no escape.
            (id.to_string() == digits).then_some(id)
        }
        Some(_) => panic!("an IdStyle this target does not know"),
    }
}

/// The members of the object `text`, or what the codec must say when there are none to read.
fn members_of(text: &str) -> Result<Members<'_>, Class> {
    match serde_json::from_str::<Members<'_>>(text) {
        Ok(members) => Ok(members),
        Err(_) if valid_json(text) => Err(Class::Unknown),
        Err(_) => Err(Class::Malformed),
    }
}

/// `Envelope`: an answer is an object with an `id` (a plain non-negative integer) and its
/// payload in `message`; an object without an id (or with `"id": null`), and any JSON that is
/// not an object, is a push; an id of another shape is foreign; invalid JSON, and an object
/// that names `id` or `message` twice, is malformed.
fn envelope_reference(frame: &str) -> Class {
    if first_byte(frame) != Some(b'{') {
        return if valid_json(frame) {
            Class::NoId
        } else {
            Class::Malformed
        };
    }
    let members = match members_of(frame) {
        Ok(members) => members,
        Err(class) => return class,
    };
    let (Ok(id), Ok(message)) = (members.get("id"), members.get("message")) else {
        return Class::Malformed;
    };
    match id {
        None => Class::NoId,
        Some(raw) if raw.get() == "null" => Class::NoId,
        Some(raw) => match our_id(raw, None) {
            Some(id) => Class::Answer {
                id,
                payload: message.map(|m| span(frame, m)),
            },
            None => Class::ForeignId,
        },
    }
}

/// `JsonRpc2` (its rustdoc, and `Decoded`'s): a non-empty array is a batch, element by
/// element; an object is one message; other valid JSON is a push.
fn jsonrpc_reference(frame: &str, style: IdStyle) -> Class {
    match first_byte(frame) {
        Some(b'[') => match serde_json::from_str::<Vec<&RawValue>>(frame) {
            Ok(elements) if !elements.is_empty() => Class::Batch(
                elements
                    .into_iter()
                    .map(|e| jsonrpc_message(frame, e, style))
                    .collect(),
            ),
            _ => Class::Malformed,
        },
        Some(b'{') => match serde_json::from_str::<&RawValue>(frame) {
            Ok(whole) => jsonrpc_message(frame, whole, style),
            Err(_) => Class::Malformed,
        },
        _ if valid_json(frame) => Class::NoId,
        _ => Class::Malformed,
    }
}

/// One JSON-RPC message, `raw` (a part of `frame`, or all of it).
fn jsonrpc_message(frame: &str, raw: &RawValue, style: IdStyle) -> Class {
    let text = raw.get();
    // Only an object is a message (`["2.0",5,"x"]` is not, though serde would fill a struct
    // from it).
    if first_byte(text) != Some(b'{') {
        return Class::Malformed;
    }
    let members = match members_of(text) {
        Ok(members) => members,
        Err(class) => return class,
    };
    let (Ok(jsonrpc), Ok(id), Ok(result), Ok(error), Ok(method), Ok(params)) = (
        members.get("jsonrpc"),
        members.get("id"),
        members.get("result"),
        members.get("error"),
        members.get("method"),
        members.get("params"),
    ) else {
        return Class::Malformed;
    };
    // "jsonrpc": "2.0", the string (compared as a JSON string, not as text).
    let version = jsonrpc.and_then(|raw| serde_json::from_str::<String>(raw.get()).ok());
    if version.as_deref() != Some("2.0") {
        return Class::Malformed;
    }
    let id = id.filter(|raw| raw.get() != "null");
    // A `"method": null` counts as no method (the codec reads `method` as a plain `Option`);
    // the specification gives a response no `method` at all, so this refuses nothing valid.
    if let Some(method) = method.filter(|m| m.get() != "null") {
        if !method.get().starts_with('"') {
            return Class::Malformed;
        }
        if id.is_some() {
            // A request from the server: nothing a client answers.
            return Class::NoId;
        }
        return notification(frame, method, params);
    }
    let answer = match (result, error) {
        (Some(result), None) => Ok(Some(result)),
        (None, Some(error)) => Err(error),
        // The documented leniency: an answer with an id and neither member has no result.
        (None, None) if id.is_some() => Ok(None),
        _ => return Class::Malformed,
    };
    let Some(id) = id else {
        // An error with a null id could not name its request: a push. A result must name it.
        return if answer.is_err() {
            Class::NoId
        } else {
            Class::Malformed
        };
    };
    let Some(id) = our_id(id, Some(style)) else {
        return Class::ForeignId;
    };
    match answer {
        Ok(result) => Class::Answer {
            id,
            payload: result.map(|result| span(frame, result)),
        },
        Err(error) => error_object(id, error),
    }
}

/// §5.1: `error` is an object with an integer `code` and a string `message`, maybe `data`.
fn error_object(id: u64, error: &RawValue) -> Class {
    if first_byte(error.get()) != Some(b'{') {
        return Class::Malformed;
    }
    let members = match members_of(error.get()) {
        Ok(members) => members,
        Err(class) => return class,
    };
    let (Ok(code), Ok(message), Ok(data)) = (
        members.get("code"),
        members.get("message"),
        members.get("data"),
    ) else {
        return Class::Malformed;
    };
    let code = code.and_then(|raw| serde_json::from_str::<i64>(raw.get()).ok());
    let message = message.and_then(|raw| serde_json::from_str::<String>(raw.get()).ok());
    let (Some(code), Some(message)) = (code, message) else {
        return Class::Malformed;
    };
    Class::Failure {
        id,
        code,
        message,
        data: data.map(|d| d.get().to_owned()),
    }
}

/// A notification: its method, its params, and when params is an object, its `subscription`
/// (not null) and `result` (null included). A params object that names either twice has none.
fn notification(frame: &str, method: &RawValue, params: Option<&RawValue>) -> Class {
    let (mut subscription, mut item) = (None, None);
    if let Some(p) = params.filter(|p| first_byte(p.get()) == Some(b'{')) {
        match members_of(p.get()) {
            Ok(members) => {
                if let (Ok(s), Ok(r)) = (members.get("subscription"), members.get("result")) {
                    subscription = s.filter(|s| !is_null(Some(s))).map(|s| span(frame, s));
                    item = r.map(|r| span(frame, r));
                }
            }
            Err(_) => return Class::Unknown,
        }
    }
    Class::Notification {
        method: span(frame, method),
        params: params.map(|p| span(frame, p)),
        subscription,
        item,
    }
}

// ---------------------------------------------------------------------------------------------
// Against a `serde_json::Value` re-parse of the frame.

fn check_against_tree(frame: &str, class: &Class, tree: &Value, kind: Kind) {
    let claims = |element: &Value, class: &Class| -> Vec<(Range<usize>, Option<Value>)> {
        match class {
            Class::Answer {
                payload: Some(payload),
                ..
            } => {
                let member = match kind {
                    Kind::Envelope => "message",
                    Kind::JsonRpc2(_) => "result",
                };
                vec![(payload.clone(), element.get(member).cloned())]
            }
            Class::Notification {
                method,
                params,
                subscription,
                item,
            } => {
                let p = element.get("params");
                let mut claims = vec![(method.clone(), element.get("method").cloned())];
                if let Some(params) = params {
                    claims.push((params.clone(), p.cloned()));
                }
                if let Some(subscription) = subscription {
                    claims.push((
                        subscription.clone(),
                        p.and_then(|p| p.get("subscription")).cloned(),
                    ));
                }
                if let Some(item) = item {
                    claims.push((item.clone(), p.and_then(|p| p.get("result")).cloned()));
                }
                claims
            }
            _ => Vec::new(),
        }
    };
    let mut all = Vec::new();
    match class {
        Class::Batch(elements) => {
            let array = tree.as_array().expect("a batch that is no array");
            assert_eq!(array.len(), elements.len(), "batch length");
            for (element, class) in array.iter().zip(elements) {
                all.extend(claims(element, class));
            }
        }
        class => all.extend(claims(tree, class)),
    }
    for (range, member) in all {
        let text = &frame[range.clone()];
        let at_range: Value = match serde_json::from_str(text) {
            Ok(value) => value,
            // What the frame's tree held, its parts hold too: only a failure of a part that
            // the whole did not have would be a wrong range.
            Err(e) => panic!("{range:?} ({text:?}) is no JSON value: {e}"),
        };
        assert_eq!(
            Some(&at_range),
            member.as_ref(),
            "{kind:?}: the range {range:?} of {frame:?} is not the member it claims"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// An extracted id through the codec's own `encode_request`.

fn round_trip(codec: &dyn Named, class: &Class) {
    match class {
        Class::Answer { id, .. } | Class::Failure { id, .. } => round_trip_id(codec, *id),
        Class::Batch(elements) => elements.iter().for_each(|e| round_trip(codec, e)),
        _ => {}
    }
}

fn round_trip_id(codec: &dyn Named, id: u64) {
    // Ids outside CallId's range (0, above 2^53 - 1) are none we send: nothing to encode.
    let Some(call) = CallId::from_u64(id) else {
        return;
    };
    let encode = |payload: &str| {
        let mut out = String::new();
        codec
            .encode_request(call, payload, &mut out)
            .unwrap_or_else(|e| panic!("encode_request({id}, {payload}): {e}"));
        out
    };
    match codec.kind() {
        Kind::Envelope => {
            let frame = encode("null");
            match codec.decode(&frame) {
                Decoded::Answer {
                    id: back,
                    payload: Some(payload),
                } => {
                    assert_eq!(back, id, "{frame}");
                    assert_eq!(&frame[payload], "null", "{frame}");
                }
                other => panic!("{frame} decoded as {other:?}"),
            }
        }
        Kind::JsonRpc2(_) => {
            // Answers written the way requests are: the codec stamps `jsonrpc` and the id.
            let frame = encode(r#"{"result":null}"#);
            match codec.decode(&frame) {
                Decoded::Answer {
                    id: back,
                    payload: Some(payload),
                } => {
                    assert_eq!(back, id, "{frame}");
                    assert_eq!(&frame[payload], "null", "{frame}");
                }
                other => panic!("{frame} decoded as {other:?}"),
            }
            let frame = encode(r#"{"error":{"code":-1,"message":"m"}}"#);
            match codec.decode(&frame) {
                Decoded::Failure {
                    id: back, code: -1, ..
                } => assert_eq!(back, id, "{frame}"),
                other => panic!("{frame} decoded as {other:?}"),
            }
            // The request itself, read back, is a request from a peer: no answer.
            let frame = encode(r#"{"method":"m"}"#);
            assert!(
                matches!(codec.decode(&frame), Decoded::NoId),
                "{frame} decoded as {:?}",
                codec.decode(&frame)
            );
        }
    }
}
