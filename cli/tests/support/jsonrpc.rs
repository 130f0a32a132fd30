//! A JSON-RPC 2.0 loopback service for the CLI tests, run by a [`Server`](super::Server) script.
//!
//! [`serve`] answers, until the client leaves:
//! - `echo`: the result is the params;
//! - `add`: the sum of the params (an array of integers);
//! - `fail`: error `-32000` `"failed"`, with the params as `data`;
//! - `news`: first a push (a notification nobody subscribed to, [`PUSH`]) and a frame without
//!   an id that is not a notification ([`NULL_ID_ERROR`]), then the result `true`;
//! - `subscribe` with `{"items": N, "push": P, "close": C}`: the result is the key [`KEY`], then
//!   items `0..N` as `{"method":"subscription","params":{"subscription":KEY,"result":{"n":i}}}`
//!   with the push after the first item if `P`, then nothing more (the stream stops), or a
//!   close with code 1000 if `C`;
//! - `unsubscribe`: `true`;
//! - anything else: error `-32601` `"Method not found"`, with the method as `data`.
//!
//! Every request is reported to the test, as the server saw it, before it is answered.

use std::sync::mpsc;

use serde_json::value::RawValue;
use serde_json::{Value, json};
use tungstenite::Message;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

use super::{Ws, raw};

/// The key every subscription gets.
pub const KEY: &str = "sub-1";
/// The method of subscription items.
pub const ITEM_METHOD: &str = "subscription";
/// The push `news` and `subscribe` send: a notification no handler takes.
pub const PUSH: &str = r#"{"jsonrpc":"2.0","method":"news","params":{"headline":"hello"}}"#;
/// A frame without an id that is no notification: the reply to a request a server could not
/// parse.
pub const NULL_ID_ERROR: &str =
    r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}"#;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Call {
    /// The id's JSON text exactly as the client wrote it (`5` or `"5"`).
    pub id: String,
    pub method: String,
    /// The params; `Value::Null` when left out.
    pub params: Value,
    /// The whole frame.
    pub text: String,
}

/// Parses a request; panics if the client sent something else.
fn parse(text: &str) -> Call {
    let v: Value = serde_json::from_str(text).expect("the client sent invalid JSON");
    assert_eq!(v["jsonrpc"], "2.0", "{text}");
    let id: &RawValue = serde_json::from_str::<std::collections::BTreeMap<&str, &RawValue>>(text)
        .expect("an object")
        .get("id")
        .copied()
        .unwrap_or_else(|| panic!("a request without id: {text}"));
    Call {
        id: id.get().to_owned(),
        method: v["method"].as_str().expect("a method").to_owned(),
        params: v.get("params").cloned().unwrap_or(Value::Null),
        text: text.to_owned(),
    }
}

fn result(ws: &mut Ws, call: &Call, result: &Value) {
    raw(
        ws,
        &format!(r#"{{"jsonrpc":"2.0","id":{},"result":{result}}}"#, call.id),
    );
}

fn error(ws: &mut Ws, call: &Call, code: i64, message: &str, data: &Value) {
    let error = json!({"code": code, "message": message, "data": data});
    raw(
        ws,
        &format!(r#"{{"jsonrpc":"2.0","id":{},"error":{error}}}"#, call.id),
    );
}

/// Serves the methods above until the client leaves, reporting each request to `seen`.
pub fn serve(ws: &mut Ws, seen: &mpsc::Sender<Call>) {
    loop {
        let text = match ws.read() {
            Ok(Message::Text(text)) => text.as_str().to_owned(),
            Ok(Message::Close(_)) => {
                let _ = ws.flush(); // let tungstenite answer the close
                continue;
            }
            Ok(_) => continue,
            Err(_) => return,
        };
        let call = parse(&text);
        let _ = seen.send(call.clone());
        match call.method.as_str() {
            "echo" => result(ws, &call, &call.params),
            "add" => {
                let sum: i64 = call
                    .params
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_i64).sum())
                    .unwrap_or(0);
                result(ws, &call, &json!(sum));
            }
            "fail" => error(ws, &call, -32000, "failed", &call.params),
            "news" => {
                raw(ws, PUSH);
                raw(ws, NULL_ID_ERROR);
                result(ws, &call, &json!(true));
            }
            "subscribe" => {
                result(ws, &call, &json!(KEY));
                let n = call.params["items"].as_u64().unwrap_or(0);
                for i in 0..n {
                    let item = json!({"subscription": KEY, "result": {"n": i}});
                    let frame = json!({"jsonrpc": "2.0", "method": ITEM_METHOD, "params": item});
                    raw(ws, &frame.to_string());
                    if i == 0 && call.params["push"] == true {
                        raw(ws, PUSH);
                    }
                }
                if call.params["close"] == true {
                    let _ = ws.close(Some(CloseFrame {
                        code: CloseCode::Normal,
                        reason: "".into(),
                    }));
                    let _ = ws.flush();
                    // Until the client answers the close or goes.
                    while ws.read().is_ok() {}
                    return;
                }
            }
            "unsubscribe" => result(ws, &call, &json!(true)),
            other => error(ws, &call, -32601, "Method not found", &json!(other)),
        }
        if ws.flush().is_err() {
            return;
        }
    }
}

/// What the server saw, once its script is over.
pub fn seen(rx: &mpsc::Receiver<Call>) -> Vec<Call> {
    rx.try_iter().collect()
}

/// A server running [`serve`] for one client, and what it saw.
pub fn start() -> (super::Server, mpsc::Receiver<Call>) {
    let (tx, rx) = mpsc::channel();
    let server = super::Server::start(move |ws| serve(ws, &tx));
    (server, rx)
}
