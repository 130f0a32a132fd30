//! A scriptable JSON-RPC 2.0 server for the integration tests, on top of [`Server`](super::Server).
//!
//! Scripts read what the client sent ([`read_call`], [`read_batch`], [`read_incoming`]) as
//! [`Call`]s, with the id kept as the raw JSON text the client wrote, and answer with whatever
//! shape the test needs: a `result` ([`reply`]), an `error` object ([`reply_error`]),
//! notifications ([`notify`], [`send_item`]), batch answers in any order or partial
//! ([`send_batch`] with [`result_frame`] and [`error_frame`] elements), or raw text
//! ([`super::raw`]). Everything is buffered until the script flushes, so what a script writes
//! between two flushes leaves in one write.
//!
//! Two ready-made scripts: [`rpc_echo`] (result = params) and [`dispatch`] (a few methods,
//! subscriptions included, see [`Methods`]).

use std::sync::mpsc;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tungstenite::Message;

use super::Ws;

/// One JSON-RPC request (or notification, without id) as the server received it.
#[derive(Debug, Clone)]
pub struct Call {
    /// The `jsonrpc` member as sent; `Value::Null` when missing.
    pub jsonrpc: Value,
    /// The id's JSON text exactly as the client wrote it (`5`, `"5"`); `None` without an id.
    pub id: Option<String>,
    /// The method name.
    pub method: String,
    /// The params; `Value::Null` when absent.
    pub params: Value,
    /// The request's whole text (one element's, in a batch).
    pub text: String,
}

impl Call {
    /// The raw id text; panics for a notification.
    pub fn raw_id(&self) -> &str {
        self.id
            .as_deref()
            .unwrap_or_else(|| panic!("no id: {}", self.text))
    }

    /// The id as a number, whether written as `5` or `"5"`.
    pub fn id_number(&self) -> u64 {
        let raw = self.raw_id();
        raw.trim_matches('"')
            .parse()
            .unwrap_or_else(|_| panic!("id {raw} is not a number"))
    }
}

/// A text message from the client: one request, or a batch.
#[derive(Debug, Clone)]
pub enum Incoming {
    Single(Call),
    Batch(Vec<Call>),
}

#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    jsonrpc: Value,
    #[serde(default)]
    id: Option<Box<RawValue>>,
    method: String,
    #[serde(default)]
    params: Value,
}

/// Parses one request object; panics if the client sent something that is not one.
pub fn parse_call(text: &str) -> Call {
    let wire: Wire = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("the client sent no JSON-RPC request ({e}): {text}"));
    Call {
        jsonrpc: wire.jsonrpc,
        id: wire.id.map(|id| id.get().to_owned()),
        method: wire.method,
        params: wire.params,
        text: text.to_owned(),
    }
}

/// Parses a client message: an object, or an array of them.
pub fn parse_incoming(text: &str) -> Incoming {
    if text.trim_start().starts_with('[') {
        let elements: Vec<Box<RawValue>> = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("the client sent a bad batch ({e}): {text}"));
        Incoming::Batch(elements.iter().map(|e| parse_call(e.get())).collect())
    } else {
        Incoming::Single(parse_call(text))
    }
}

/// The next text message; `None` once the client is gone (control frames are handled).
pub fn read_text(ws: &mut Ws) -> Option<String> {
    loop {
        match ws.read() {
            Ok(Message::Text(text)) => return Some(text.as_str().to_owned()),
            Ok(Message::Close(_)) => {
                let _ = ws.flush(); // let tungstenite answer the close
            }
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

/// The next message, parsed; `None` once the client is gone.
pub fn read_incoming(ws: &mut Ws) -> Option<Incoming> {
    read_text(ws).map(|text| parse_incoming(&text))
}

/// The next message, which must be a single request; `None` once the client is gone.
pub fn read_call(ws: &mut Ws) -> Option<Call> {
    match read_incoming(ws)? {
        Incoming::Single(call) => Some(call),
        Incoming::Batch(calls) => panic!("expected one request, got a batch: {calls:?}"),
    }
}

/// Exactly `n` single requests.
pub fn read_calls(ws: &mut Ws, n: usize) -> Vec<Call> {
    (0..n)
        .map(|i| read_call(ws).unwrap_or_else(|| panic!("client left after {i} of {n}")))
        .collect()
}

/// The next message, which must be a batch; `None` once the client is gone.
pub fn read_batch(ws: &mut Ws) -> Option<Vec<Call>> {
    match read_incoming(ws)? {
        Incoming::Batch(calls) => Some(calls),
        Incoming::Single(call) => panic!("expected a batch, got {call:?}"),
    }
}

fn calls_of(incoming: Incoming) -> Vec<Call> {
    match incoming {
        Incoming::Single(call) => vec![call],
        Incoming::Batch(calls) => calls,
    }
}

/// An answer with a result, for the id written as `raw_id` (JSON text: `5`, `"5"`, `null`).
pub fn result_frame(raw_id: &str, result: &Value) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{raw_id},"result":{result}}}"#)
}

/// An answer with an error object, for the id written as `raw_id`.
pub fn error_frame(raw_id: &str, code: i64, message: &str, data: Option<&Value>) -> String {
    let mut error = json!({"code": code, "message": message});
    if let Some(data) = data {
        error["data"] = data.clone();
    }
    format!(r#"{{"jsonrpc":"2.0","id":{raw_id},"error":{error}}}"#)
}

/// A notification: a method without an id.
pub fn notification_frame(method: &str, params: &Value) -> String {
    json!({"jsonrpc": "2.0", "method": method, "params": params}).to_string()
}

/// A subscription item: `{"jsonrpc":"2.0","method":M,"params":{"subscription":KEY,"result":ITEM}}`.
pub fn item_frame(method: &str, key: &Value, item: &Value) -> String {
    notification_frame(method, &json!({"subscription": key, "result": item}))
}

fn write(ws: &mut Ws, text: String) {
    ws.write(Message::text(text)).expect("write");
}

/// Buffers the answer `result` to `call`, echoing its raw id.
pub fn reply(ws: &mut Ws, call: &Call, result: &Value) {
    write(ws, result_frame(call.raw_id(), result));
}

/// Buffers an error answer to `call`.
pub fn reply_error(ws: &mut Ws, call: &Call, code: i64, message: &str, data: Option<&Value>) {
    write(ws, error_frame(call.raw_id(), code, message, data));
}

/// Buffers a notification.
pub fn notify(ws: &mut Ws, method: &str, params: &Value) {
    write(ws, notification_frame(method, params));
}

/// Buffers a subscription item.
pub fn send_item(ws: &mut Ws, method: &str, key: &Value, item: &Value) {
    write(ws, item_frame(method, key, item));
}

/// Buffers a batch answer made of these elements, in this order (`[e1,e2,...]`).
pub fn send_batch<S: AsRef<str>>(ws: &mut Ws, elements: &[S]) {
    let parts: Vec<&str> = elements.iter().map(AsRef::as_ref).collect();
    write(ws, format!("[{}]", parts.join(",")));
}

/// Answers every request with its params as the result (a batch with a batch, in request
/// order), until the client leaves.
pub fn rpc_echo(ws: &mut Ws) {
    while let Some(incoming) = read_incoming(ws) {
        match incoming {
            Incoming::Single(call) => {
                if call.id.is_some() {
                    reply(ws, &call, &call.params);
                }
            }
            Incoming::Batch(calls) => {
                let answers: Vec<String> = calls
                    .iter()
                    .filter(|c| c.id.is_some())
                    .map(|c| result_frame(c.raw_id(), &c.params))
                    .collect();
                if !answers.is_empty() {
                    send_batch(ws, &answers);
                }
            }
        }
        if ws.flush().is_err() {
            return;
        }
    }
}

/// The method that carries subscription items from [`Methods`].
pub const ITEM_METHOD: &str = "sub";

/// A small JSON-RPC service:
/// - `echo`: the result is the params;
/// - `add`: the sum of the params (an array of integers);
/// - `fail`: error `-32000` `"failed"`, with the params as `data`;
/// - `subscribe` with `{"items": N, "from": F, "then": M}`: the result is a fresh key
///   (`"<prefix>-<k>"`), then items `F..F+N` (`from` defaults to 0) are streamed as
///   `{"method":"sub","params":{"subscription":KEY,"result":ITEM}}`, then, if `then` is given, a
///   notification of method `M` with params `[KEY, N]`;
/// - `unsubscribe`: `true`;
/// - anything else: error `-32601` `"Method not found"`.
pub struct Methods {
    prefix: String,
    next_key: u64,
}

impl Methods {
    pub fn new(prefix: &str) -> Self {
        Methods {
            prefix: prefix.to_owned(),
            next_key: 0,
        }
    }

    /// The answer element to `call`, plus the frames that follow it (a subscription's items).
    pub fn answer(&mut self, call: &Call) -> (String, Vec<String>) {
        let id = call.raw_id();
        match call.method.as_str() {
            "echo" => (result_frame(id, &call.params), vec![]),
            "add" => {
                let sum: i64 = call
                    .params
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_i64).sum())
                    .unwrap_or(0);
                (result_frame(id, &json!(sum)), vec![])
            }
            "fail" => (
                error_frame(id, -32000, "failed", Some(&call.params)),
                vec![],
            ),
            "subscribe" => {
                let key = json!(format!("{}-{}", self.prefix, self.next_key));
                self.next_key += 1;
                let n = call.params["items"].as_u64().unwrap_or(0);
                let from = call.params["from"].as_u64().unwrap_or(0);
                let mut after: Vec<String> = (from..from + n)
                    .map(|i| item_frame(ITEM_METHOD, &key, &json!(i)))
                    .collect();
                if let Some(then) = call.params["then"].as_str() {
                    after.push(notification_frame(then, &json!([key, n])));
                }
                (result_frame(id, &key), after)
            }
            "unsubscribe" => (result_frame(id, &json!(true)), vec![]),
            other => (
                error_frame(id, -32601, "Method not found", Some(&json!(other))),
                vec![],
            ),
        }
    }

    /// Buffers the answer to one request (nothing for a notification) and what follows it.
    pub fn handle(&mut self, ws: &mut Ws, call: &Call) {
        if call.id.is_none() {
            return;
        }
        let (answer, after) = self.answer(call);
        write(ws, answer);
        for frame in after {
            write(ws, frame);
        }
    }

    /// Answers one message (a batch with a batch answer in request order, followed by what its
    /// subscriptions stream) and flushes; `false` once the client is gone.
    pub fn serve_one(&mut self, ws: &mut Ws, incoming: Incoming) -> bool {
        match incoming {
            Incoming::Single(call) => self.handle(ws, &call),
            Incoming::Batch(calls) => {
                let mut answers = Vec::new();
                let mut after = Vec::new();
                for call in calls.iter().filter(|c| c.id.is_some()) {
                    let (answer, more) = self.answer(call);
                    answers.push(answer);
                    after.extend(more);
                }
                if !answers.is_empty() {
                    send_batch(ws, &answers);
                }
                for frame in after {
                    write(ws, frame);
                }
            }
        }
        ws.flush().is_ok()
    }
}

/// Serves [`Methods`] (keys prefixed `prefix`) until the client leaves, handing every request
/// to `seen` before answering it.
pub fn dispatch(ws: &mut Ws, prefix: &str, seen: &mpsc::Sender<Call>) {
    Methods::new(prefix).serve(ws, seen);
}

impl Methods {
    /// Reads the next message and reports its requests to `seen`, without answering it yet
    /// (a script that holds an answer back hands it to [`serve_one`](Self::serve_one) later).
    pub fn take_one(ws: &mut Ws, seen: &mpsc::Sender<Call>) -> Option<Incoming> {
        let incoming = read_incoming(ws)?;
        for call in calls_of(incoming.clone()) {
            let _ = seen.send(call);
        }
        Some(incoming)
    }

    /// Serves every message until the client leaves, reporting each request to `seen` first.
    pub fn serve(&mut self, ws: &mut Ws, seen: &mpsc::Sender<Call>) {
        while let Some(incoming) = Methods::take_one(ws, seen) {
            if !self.serve_one(ws, incoming) {
                return;
            }
        }
    }
}

/// What a server script reported it saw (through the sender [`Seen::new`] returns), gathered
/// without blocking: the loop's thread polls it between turns.
pub struct Seen {
    rx: mpsc::Receiver<Call>,
    calls: Vec<Call>,
}

impl Seen {
    pub fn new() -> (mpsc::Sender<Call>, Seen) {
        let (tx, rx) = mpsc::channel();
        (
            tx,
            Seen {
                rx,
                calls: Vec::new(),
            },
        )
    }

    /// Takes in what arrived so far; returns everything seen.
    pub fn poll(&mut self) -> &[Call] {
        while let Ok(call) = self.rx.try_recv() {
            self.calls.push(call);
        }
        &self.calls
    }

    /// The requests of this method seen so far.
    pub fn of(&mut self, method: &str) -> Vec<Call> {
        self.poll()
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    /// The methods seen so far, in order.
    pub fn methods(&mut self) -> Vec<String> {
        self.poll().iter().map(|c| c.method.clone()).collect()
    }
}
