//! A user-written codec: an exchange-style protocol where the id field is `reqid`, requests
//! are flat objects and errors say `"status": "error"`.
//!
//! ```text
//! -> {"reqid": 1, "event": "ticker", "pair": "XBT/USD"}
//! <- {"reqid": 1, "status": "ok", "price": 64000.5}
//! <- {"reqid": 2, "status": "error", "errorMessage": "unknown pair"}
//! ```
//!
//! Run: `cargo run --example custom_codec` (it starts its own loopback server).

use std::fmt::Write;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use rpcloop::{CallId, Codec, CodecError, ConnectionConfig, Decoded, EventLoop};
use serde::Deserialize;
use serde_json::value::RawValue;

/// `{"reqid": N, ...request members}` out; answers carry the same `reqid`.
#[derive(Debug)]
struct ReqId;

/// The members the codec looks at, borrowed from the frame (no `Value` tree).
#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(borrow, default)]
    reqid: Option<&'a RawValue>,
    #[serde(default)]
    status: Option<&'a str>,
    #[serde(default, rename = "errorMessage")]
    error_message: Option<String>,
}

impl Codec for ReqId {
    fn encode_request(
        &self,
        id: CallId,
        payload: &str,
        out: &mut String,
    ) -> Result<(), CodecError> {
        // The request is an object: splice the id in after its `{`.
        let body = payload
            .trim_start()
            .strip_prefix('{')
            .ok_or_else(|| CodecError::new("requests must be JSON objects"))?;
        let _ = write!(out, "{{\"reqid\":{id}");
        if !body.trim_start().starts_with('}') {
            out.push(',');
        }
        out.push_str(body);
        Ok(())
    }

    fn decode(&self, frame: &str) -> Decoded {
        // serde's derived `Deserialize` reads a struct from a JSON array too (`[7, "ok"]` would
        // be `reqid` 7): an answer must be an object.
        if !frame.trim_start().starts_with('{') {
            return Decoded::Malformed;
        }
        let Ok(answer) = serde_json::from_str::<Answer<'_>>(frame) else {
            return Decoded::Malformed;
        };
        let Some(reqid) = answer.reqid else {
            return Decoded::NoId; // a push: ticker updates, heartbeats
        };
        let Ok(id) = reqid.get().parse::<u64>() else {
            return Decoded::ForeignId;
        };
        if answer.status == Some("error") {
            return Decoded::Failure {
                id,
                code: 0,
                message: answer.error_message.unwrap_or_default(),
                data: None,
            };
        }
        // The whole answer is the payload.
        Decoded::Answer {
            id,
            payload: Some(0..frame.len()),
        }
    }
}

/// A toy exchange: answers `ticker` requests for XBT/USD, refuses other pairs.
fn exchange(listener: TcpListener) {
    let Ok((stream, _)) = listener.accept() else {
        return;
    };
    let Ok(mut ws) = tungstenite::accept(stream) else {
        return;
    };
    while let Ok(message) = ws.read() {
        let Ok(text) = message.to_text() else {
            continue;
        };
        let Ok(request) = serde_json::from_str::<serde_json::Value>(text) else {
            continue;
        };
        let reqid = request["reqid"].clone();
        let answer = if request["pair"] == "XBT/USD" {
            serde_json::json!({"reqid": reqid, "status": "ok", "price": 64000.5})
        } else {
            serde_json::json!({"reqid": reqid, "status": "error", "errorMessage": "unknown pair"})
        };
        if ws.send(answer.to_string().into()).is_err() {
            break;
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("ws://{}/", listener.local_addr()?);
    std::thread::spawn(move || exchange(listener));

    let mut ev = EventLoop::new()?;
    let config = ConnectionConfig {
        codec: Arc::new(ReqId),
        ..ConnectionConfig::default()
    };
    let conn = ev.connect(&url, config)?;
    for pair in ["XBT/USD", "DOGE/EUR"] {
        let request = serde_json::json!({"event": "ticker", "pair": pair});
        ev.submit(conn, request, move |_, result| match result {
            Ok(answer) => println!("{pair}: {}", answer.text()),
            Err(e) => println!("{pair}: {e}"),
        })?;
    }
    while ev.has_pending() {
        ev.turn(Some(Duration::from_millis(100)))?;
    }
    ev.close(conn)?;
    Ok(())
}
