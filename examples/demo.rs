//! rpcloop's first demonstration: twenty calls in flight at once over one WebSocket.
//!
//! ```text
//! cargo run --release --example demo
//! cargo run --release --example demo -- --threads
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
//! With `--threads` the same 20 calls come from 20 threads instead, one call each, as in the
//! original Go demonstration: every thread gets a clone of the loop's [`Handle`], picks its own
//! random number, blocks in `handle.call(conn, n).wait()` and checks its own answer, while the
//! main thread keeps turning the loop (a handle's calls only progress while the loop turns).
//! The output has the same shape.
//!
//! The wire protocol is rpcloop's default, the "envelope": a call is sent as
//! `{"id":N,"message":<payload>}` and its answer carries the same `id`. The echo server sends
//! every message back unchanged, so each request is its own answer.
//!
//! The exit status is non-zero if any call fails or the whole run takes more than 10 seconds.
//!
//! [`Handle`]: rpcloop::Handle

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::error::Error;
use std::hash::BuildHasher;
use std::net::TcpListener;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use rpcloop::{ConnId, ConnState, ConnectionConfig, EventLoop};

const CALLS: u64 = 20;
/// The whole demo gives up after this long.
const LIMIT: Duration = Duration::from_secs(10);

/// How the calls' results came out.
struct Tally {
    ok: u64,
    failed: u64,
    /// Calls with no result when time ran out.
    unanswered: u64,
    elapsed: Duration,
}

fn main() -> Result<ExitCode, Box<dyn Error>> {
    // 0. The only option: `--threads`.
    let mut threads = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--threads" => threads = true,
            _ => {
                eprintln!("unknown argument {arg:?}\nusage: demo [--threads]");
                return Ok(ExitCode::from(2));
            }
        }
    }
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

    // 3 and 4. Make the calls and drive the loop until they are done.
    let tally = if threads {
        calls_from_threads(&mut ev, conn, deadline)?
    } else {
        calls_from_callbacks(&mut ev, conn, deadline)?
    };
    println!(
        "{CALLS} calls, {} ok, {} failed, in {:.1} ms",
        tally.ok,
        tally.failed + tally.unanswered,
        tally.elapsed.as_secs_f64() * 1e3
    );
    if tally.unanswered > 0 {
        eprintln!(
            "{} calls still unanswered after {LIMIT:?}",
            tally.unanswered
        );
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

    Ok(if tally.ok == CALLS {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The default mode: every call submitted at once from this thread, each with a callback.
fn calls_from_callbacks(
    ev: &mut EventLoop,
    conn: ConnId,
    deadline: Instant,
) -> Result<Tally, Box<dyn Error>> {
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
    Ok(Tally {
        ok: ok.get(),
        failed: failed.get(),
        unanswered: CALLS - ok.get() - failed.get(),
        elapsed: start.elapsed(),
    })
}

/// `--threads`: one thread per call, each blocking on its own answer through a `Handle`.
fn calls_from_threads(
    ev: &mut EventLoop,
    conn: ConnId,
    deadline: Instant,
) -> Result<Tally, Box<dyn Error>> {
    // 3. Start the threads. A `Handle` is `Send + Sync` and cheap to clone: each thread gets
    //    its own. `call` hands the message to the loop through a queue (and wakes the loop if
    //    it sleeps in `turn`); `wait` blocks this thread until the answer is back. Each thread
    //    returns whether its answer matched.
    let start = Instant::now();
    let threads: Vec<_> = (0..CALLS)
        .map(|i| {
            let handle = ev.handle();
            std::thread::spawn(move || {
                let sent = RandomState::new().hash_one(i) % 100; // this thread's own dice
                match handle
                    .call(conn, sent)
                    .wait()
                    .and_then(|resp| resp.message::<u64>())
                {
                    Ok(received) => {
                        println!("transaction {sent} : {received}");
                        received == sent
                    }
                    Err(e) => {
                        println!("transaction {sent} : error: {e}");
                        false
                    }
                }
            })
        })
        .collect();
    println!("{CALLS} threads started");

    // 4. Drive the loop until every thread has finished (or we run out of time). The threads
    //    block in `wait`, so this thread must keep turning: their calls are written, and their
    //    answers read and handed back, only inside `turn`. (A thread finishing does not wake
    //    the loop, so the last turn may sleep its full 10 ms: the time printed includes it.)
    while !threads.iter().all(|t| t.is_finished()) && Instant::now() < deadline {
        ev.turn(Some(Duration::from_millis(10)))?;
    }
    let unanswered = threads.iter().filter(|t| !t.is_finished()).count() as u64;
    if unanswered > 0 {
        // Out of time. Shutting the loop down completes every call still outstanding with
        // `Error::Shutdown`, so the threads stuck in `wait` return and can be joined.
        ev.shutdown();
    }
    let mut ok = 0;
    for thread in threads {
        // A thread that panicked counts as a failed call.
        if thread.join().unwrap_or(false) {
            ok += 1;
        }
    }
    Ok(Tally {
        ok,
        failed: CALLS - ok - unanswered,
        unanswered,
        elapsed: start.elapsed(),
    })
}

/// A minimal blocking echo server: accepts one client and sends every text or binary message
/// back unchanged until the client leaves. (See `rpcloop echo-server`, in cli/, for a faster one.)
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
