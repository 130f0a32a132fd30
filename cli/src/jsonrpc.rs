//! JSON-RPC 2.0 on the command line: checking the messages people type, telling a server's
//! notification from other frames without an id, and naming the unsubscribe method.
//!
//! With `--codec jsonrpc` a message is `{"method": NAME, "params": [..] | {..}}` (`params`
//! may be left out). A `jsonrpc` member, if given, must say `"2.0"`, and an `id` is dropped:
//! the codec stamps both, and every call gets an id of its own. Anything else is refused
//! before the connection is opened (or, from stdin, when the line is read), with a message that
//! says what to write.

use std::collections::BTreeMap;

use rpcloop::Request;
use serde::Deserialize;
use serde_json::value::RawValue;

/// The shape, for error messages.
const SHAPE: &str =
    r#"write {"method":"NAME","params":[..]}, params an array or an object, or left out"#;

/// A message as the JSON-RPC codec sends it: the method, and the params as written.
pub type Call<'a> = Request<'static, &'a RawValue>;

/// Reads a command-line message as a JSON-RPC call; the error says what is wrong with it.
pub fn call(message: &RawValue) -> Result<Call<'_>, String> {
    let text = message.get();
    if !text.starts_with('{') {
        return Err(format!("a JSON-RPC call is an object: {SHAPE}"));
    }
    let members: BTreeMap<String, &RawValue> = serde_json::from_str(text)
        .map_err(|e| format!("a JSON-RPC call is an object: {SHAPE} ({e})"))?;
    let mut method = None;
    let mut params = None;
    for (name, value) in members {
        match name.as_str() {
            "method" => {
                let name: String = serde_json::from_str(value.get())
                    .map_err(|_| format!("\"method\" must be a string: {SHAPE}"))?;
                if name.is_empty() {
                    return Err(format!("\"method\" is empty: {SHAPE}"));
                }
                method = Some(name);
            }
            "params" => {
                let raw = value.get();
                if !(raw.starts_with('[') || raw.starts_with('{')) {
                    return Err(format!(
                        "\"params\" must be an array or an object, not {}: {SHAPE}",
                        crate::fmt::truncate(raw, 40).0
                    ));
                }
                params = Some(value);
            }
            "jsonrpc" if value.get() == r#""2.0""# => {}
            "jsonrpc" => return Err(r#""jsonrpc" must be "2.0" (or left out)"#.into()),
            // rpcloop gives every call an id of its own.
            "id" => {}
            other => {
                return Err(format!(
                    "unexpected member {other:?} in a JSON-RPC call: {SHAPE}"
                ));
            }
        }
    }
    let method = method.ok_or_else(|| format!("a JSON-RPC call needs a \"method\": {SHAPE}"))?;
    Ok(match params {
        Some(params) => Request::new(method, params),
        None => Request::without_params(method),
    })
}

/// Checks a message (see [`call`]).
pub fn check(message: &RawValue) -> Result<(), String> {
    call(message).map(drop)
}

/// Whether a frame is a JSON-RPC notification: an object with a string `method` and no `id`
/// (or a `null` one, which the codec reads the same way). Frames the library hands over without
/// an id are looked at with this, to tell a server's push from, say, a request it sent or a
/// parse-error reply; it skims the frame once and builds nothing.
pub fn is_notification(frame: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Peek<'a> {
        #[serde(borrow, default)]
        method: Option<&'a RawValue>,
        #[serde(borrow, default)]
        id: Option<&'a RawValue>,
    }
    if frame.trim_ascii_start().first() != Some(&b'{') {
        return false;
    }
    match serde_json::from_slice::<Peek<'_>>(frame) {
        Ok(peek) => peek.id.is_none() && peek.method.is_some_and(|m| m.get().starts_with('"')),
        Err(_) => false,
    }
}

/// The unsubscribe method that goes with a subscribe method, by the usual naming:
/// `eth_subscribe` → `eth_unsubscribe`, `subscribe` → `unsubscribe`, `slotSubscribe` →
/// `slotUnsubscribe`. `None` when the name does not end in `subscribe` or `Subscribe`.
pub fn unsubscribe_method(subscribe: &str) -> Option<String> {
    if let Some(stem) = subscribe.strip_suffix("subscribe") {
        return Some(format!("{stem}unsubscribe"));
    }
    subscribe
        .strip_suffix("Subscribe")
        .map(|stem| format!("{stem}Unsubscribe"))
}

/// Reads `--jsonrpc-subscribe`'s PARAMS: a JSON array or object.
pub fn subscribe_params(text: &str) -> Result<Box<RawValue>, String> {
    let params = crate::parse::json_text(text.trim())
        .map_err(|e| format!("--jsonrpc-subscribe PARAMS is {e}"))?;
    let raw = params.get();
    if raw.starts_with('[') || raw.starts_with('{') {
        Ok(params)
    } else {
        Err(format!(
            "--jsonrpc-subscribe PARAMS must be a JSON array or object, like '[\"newHeads\"]', \
             not {raw}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    fn sent(text: &str) -> Result<String, String> {
        let message = raw(text);
        call(&message).map(|c| serde_json::to_string(&c).unwrap())
    }

    #[test]
    fn calls_keep_their_params_as_written() {
        assert_eq!(
            sent(r#"{"method":"add","params":[1, 2]}"#),
            Ok(r#"{"method":"add","params":[1, 2]}"#.into())
        );
        assert_eq!(
            sent(r#"{"params":{"a":1},"method":"m"}"#),
            Ok(r#"{"method":"m","params":{"a":1}}"#.into())
        );
        assert_eq!(
            sent(r#"{"method":"eth_blockNumber"}"#),
            Ok(r#"{"method":"eth_blockNumber"}"#.into())
        );
        // A pasted whole request: rpcloop stamps its own jsonrpc and id.
        assert_eq!(
            sent(r#"{"jsonrpc":"2.0","id":7,"method":"x","params":[]}"#),
            Ok(r#"{"method":"x","params":[]}"#.into())
        );
    }

    #[test]
    fn what_is_not_a_call_says_what_to_write() {
        for (text, says) in [
            ("42", "is an object"),
            ("[1]", "is an object"),
            (r#"{"params":[1]}"#, "needs a \"method\""),
            (r#"{"method":1}"#, "must be a string"),
            (r#"{"method":""}"#, "is empty"),
            (r#"{"method":"m","params":1}"#, "array or an object, not 1"),
            (r#"{"method":"m","params":null}"#, "not null"),
            (r#"{"method":"m","jsonrpc":"1.0"}"#, "must be \"2.0\""),
            (r#"{"method":"m","extra":1}"#, "unexpected member \"extra\""),
        ] {
            let why = sent(text).unwrap_err();
            assert!(why.contains(says), "{text}: {why}");
            assert!(
                why.contains(r#"{"method":"NAME""#) || why.contains("2.0"),
                "{why}"
            );
        }
    }

    #[test]
    fn notifications_are_told_from_other_frames_without_an_id() {
        assert!(is_notification(
            br#"{"jsonrpc":"2.0","method":"tick","params":[1]}"#
        ));
        assert!(is_notification(br#" {"method":"tick","id":null}"#));
        assert!(!is_notification(
            br#"{"jsonrpc":"2.0","id":1,"method":"ask"}"#
        ));
        assert!(!is_notification(
            br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}"#
        ));
        assert!(!is_notification(br#"{"method":7}"#));
        assert!(!is_notification(b"42"));
        assert!(!is_notification(b"{oops"));
        assert!(!is_notification(&[0xff, 0x00]));
    }

    #[test]
    fn unsubscribe_methods_are_derived_by_the_usual_names() {
        assert_eq!(
            unsubscribe_method("eth_subscribe").as_deref(),
            Some("eth_unsubscribe")
        );
        assert_eq!(
            unsubscribe_method("subscribe").as_deref(),
            Some("unsubscribe")
        );
        assert_eq!(
            unsubscribe_method("slotSubscribe").as_deref(),
            Some("slotUnsubscribe")
        );
        assert_eq!(unsubscribe_method("watch"), None);
    }

    #[test]
    fn subscribe_params_are_an_array_or_an_object() {
        assert_eq!(
            subscribe_params(r#"["newHeads"]"#).unwrap().get(),
            r#"["newHeads"]"#
        );
        assert_eq!(subscribe_params(" {} ").unwrap().get(), "{}");
        assert!(
            subscribe_params("\"newHeads\"")
                .unwrap_err()
                .contains("array or object")
        );
        assert!(
            subscribe_params("[")
                .unwrap_err()
                .contains("not a JSON text")
        );
    }
}
