//! The floor for `bench`: the least any client can do over the same WebSocket. A blocking
//! tungstenite client with no correlation at all: with `--inflight 1` it sends a frame and
//! reads the answer; with K > 1 it keeps a FIFO of K unanswered frames and relies on the echo
//! server answering in order. Same flags, same messages, same checks and the same JSON line as
//! `bench`, with `"client":"floor"`.
//!
//! ```text
//! cargo run --release --example bench_floor -- --url ws://127.0.0.1:9001 --requests 20000 --inflight 1 --payload 64 --warmup 1000
//! ```

mod bench_common;

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::Instant;

use bench_common::{Args, CountingAlloc, Measure};
use tungstenite::{Message, WebSocket};

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

fn usage() -> String {
    format!(
        "usage: bench_floor --url URL [options]\n\n\
         Blocking tungstenite client, no correlation (prints one JSON line).\n\n\
         options:\n{}\n  -h, --help         print this help",
        bench_common::COMMON_USAGE
    )
}

fn main() -> ExitCode {
    bench_common::main_with("bench_floor", &usage(), run)
}

fn run(args: &Args) -> Result<String, String> {
    let authority = args
        .url
        .strip_prefix("ws://")
        .ok_or("the floor speaks ws:// only")?;
    let authority = authority.split('/').next().unwrap_or(authority);
    let stream = TcpStream::connect(authority).map_err(|e| format!("{authority}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (mut ws, _) =
        tungstenite::client(args.url.as_str(), stream).map_err(|e| format!("handshake: {e}"))?;

    let total = args.warmup + args.requests;
    let mut hist = bench_common::new_histogram();
    let mut measure = None;
    let mut frame = String::new();
    let mut message = String::new();
    // Calls sent and not answered yet, oldest first.
    let mut unanswered = VecDeque::with_capacity(args.inflight);
    let mut next = 0;
    loop {
        while next < total && unanswered.len() < args.inflight {
            if next == args.warmup {
                measure = Some(Measure::start());
            }
            request_frame(&mut frame, &mut message, next, args.payload);
            let start = Instant::now();
            ws.send(Message::text(frame.as_str()))
                .map_err(|e| format!("send: {e}"))?;
            unanswered.push_back((next, start));
            next += 1;
        }
        let Some((i, start)) = unanswered.pop_front() else {
            break;
        };
        let answer = read_text(&mut ws)?;
        let latency = start.elapsed();
        request_frame(&mut frame, &mut message, i, args.payload);
        if answer != frame.as_str() {
            return Err(format!("call {i}: wrong answer {answer:?}"));
        }
        if i >= args.warmup {
            bench_common::record(&mut hist, latency);
        }
    }
    let _ = ws.close(None);
    let measure = measure.ok_or("no measured call")?;
    Ok(measure.finish("floor", None, args, &hist))
}

/// Call `i`'s frame into `out`; the id is the call number itself. `message` is scratch space.
fn request_frame(out: &mut String, message: &mut String, i: u64, payload: usize) {
    bench_common::write_message(message, i, payload);
    out.clear();
    let _ = write!(out, "{{\"id\":{i},\"message\":\"{message}\"}}");
}

/// Reads the next text message (tungstenite answers pings by itself).
fn read_text(ws: &mut WebSocket<TcpStream>) -> Result<tungstenite::Utf8Bytes, String> {
    loop {
        match ws.read().map_err(|e| format!("read: {e}"))? {
            Message::Text(text) => return Ok(text),
            Message::Binary(_) => return Err("unexpected binary message".into()),
            _ => {}
        }
    }
}
