//! rpcloop's first demonstration: twenty calls in flight at once over one WebSocket.
//!
//! ```text
//! cargo run --release --example demo
//! ```
//!
//! It starts a small echo server on a background thread, connects to it, submits 20 calls at
//! once, each carrying a random number from 0 to 99, and drives the event loop until every
//! answer has come back. Each callback checks that the answer matches what it sent:
//!
//! ```text
//! transaction 17 : 17
//! transaction 93 : 93
//! ...
//! 20 calls, 20 ok, 0 failed, in 0.4 ms
//! ```
//!
//! The wire protocol is rpcloop's default, the "envelope": a call is sent as
//! `{"id":N,"message":<payload>}` and its answer carries the same `id`. The echo server sends
//! every message back unchanged, so each request is its own answer.
//!
//! The exit status is non-zero if any call fails or the whole run takes more than 10 seconds.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::error::Error;
use std::hash::BuildHasher;
use std::net::TcpListener;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use rpcloop::{ConnState, ConnectionConfig, EventLoop};

const CALLS: u64 = 20;
/// The whole demo gives up after this long.
const LIMIT: Duration = Duration::from_secs(10);

fn main() -> Result<ExitCode, Box<dyn Error>> {
    let deadline = Instant::now() + LIMIT;

    // 1. An echo server on a free port of 127.0.0.1, on its own thread.
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("ws://{}/", listener.local_addr()?);
    std::thread::spawn(move || echo_server(listener));

    // 2. The event loop and a connection. `connect` returns at once: the TCP connect and the
    //    WebSocket handshake happen inside `turn`. Nothing runs in the background; the loop
    //    only advances when we call `turn`.
    let mut ev = EventLoop::new()?;
    let conn = ev.connect(&url, ConnectionConfig::default())?;

    // Calls submitted now would simply wait for the connection to open. We wait for it here
    // only so that the time printed at the end measures the calls, not the handshake.
    while ev.state(conn) == Some(ConnState::Connecting) && Instant::now() < deadline {
        ev.turn(Some(Duration::from_millis(10)))?;
    }
    if ev.state(conn) != Some(ConnState::Open) {
        eprintln!("could not connect to {url}: {:?}", ev.state(conn));
        return Ok(ExitCode::FAILURE);
    }

    // 3. Submit every call at once. Callbacks run later, on this thread, inside `turn`, so
    //    plain `Rc<Cell<_>>` counters are enough to collect their results.
    let ok = Rc::new(Cell::new(0_u64));
    let failed = Rc::new(Cell::new(0_u64));
    let random = RandomState::new(); // std's randomly seeded hasher: our dice
    let start = Instant::now();
    for i in 0..CALLS {
        let sent = random.hash_one(i) % 100;
        let (ok, failed) = (ok.clone(), failed.clone());
        // The message is anything `Serialize`; here a plain number. The callback gets the
        // answer (or the error that ended the call) exactly once.
        ev.submit(conn, sent, move |_ctx, result| {
            match result.and_then(|resp| resp.message::<u64>()) {
                Ok(received) => {
                    println!("transaction {sent} : {received}");
                    if received == sent {
                        ok.set(ok.get() + 1);
                    } else {
                        failed.set(failed.get() + 1);
                    }
                }
                Err(e) => {
                    println!("transaction {sent} : error: {e}");
                    failed.set(failed.get() + 1);
                }
            }
        })?;
    }
    println!("{} calls in flight", ev.pending_calls());

    // 4. Drive the loop until every callback has run (or we run out of time).
    while ev.has_pending() && Instant::now() < deadline {
        ev.turn(Some(Duration::from_millis(10)))?;
    }
    let elapsed = start.elapsed();
    let unanswered = CALLS - ok.get() - failed.get();
    println!(
        "{CALLS} calls, {} ok, {} failed, in {:.1} ms",
        ok.get(),
        failed.get() + unanswered,
        elapsed.as_secs_f64() * 1e3
    );
    if unanswered > 0 {
        eprintln!("{unanswered} calls still unanswered after {LIMIT:?}");
    }

    // 5. Close the connection politely: the close handshake, too, proceeds inside `turn`.
    ev.close(conn)?;
    let close_deadline = Instant::now() + Duration::from_secs(2);
    while ev.state(conn) == Some(ConnState::Closing) && Instant::now() < close_deadline {
        ev.turn(Some(Duration::from_millis(10)))?;
    }
    if ev.state(conn) != Some(ConnState::Closed) {
        eprintln!("the connection did not close cleanly: {:?}", ev.state(conn));
    }

    Ok(if ok.get() == CALLS {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A minimal blocking echo server: accepts one client and sends every text or binary message
/// back unchanged until the client leaves. (See `examples/echo_server.rs` for a faster one.)
fn echo_server(listener: TcpListener) {
    let Ok((stream, _)) = listener.accept() else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let Ok(mut ws) = tungstenite::accept(stream) else {
        return;
    };
    // `read` also answers pings and the close handshake; it fails once the client is gone.
    while let Ok(message) = ws.read() {
        if (message.is_text() || message.is_binary()) && ws.send(message).is_err() {
            break;
        }
    }
}
