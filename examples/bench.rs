//! The rpcloop benchmark client: keeps K calls in flight against an echo server, checks every
//! answer, and prints one JSON line with throughput, latency percentiles and its own CPU cost.
//!
//! ```text
//! cargo run --release -p rpcloop-cli -- echo-server --port 9001 &
//! cargo run --release --example bench -- --url ws://127.0.0.1:9001 --requests 20000 --inflight 1 --payload 64 --warmup 1000
//! ```
//!
//! `scripts/bench.sh` runs it beside `bench_floor` (a plain blocking tungstenite client) and
//! prints the ratios. Call `i`'s message is a JSON string of exactly `--payload` characters:
//! `i` as 16 hex digits, then `x`s; its frame is `{"id":<id>,"message":"<that string>"}`. An
//! answer that is not the echo of its own request, or a call that fails, makes the run exit
//! with status 1.
//!
//! Modes (`--mode`):
//! - `callback` (default): calls are submitted on the loop thread; each callback records its
//!   latency and submits the next call.
//! - `handle`: one other thread makes the calls through a [`Handle`] and blocks on the oldest
//!   [`PendingCall`](rpcloop::PendingCall) (`wait()`); the loop turns on the main thread.
//! - `future`: the same thread awaits the calls as futures (`futures::executor::block_on`).
//!
//! `--busy-poll` turns the loop with a zero timeout (spinning) instead of sleeping in `poll`.
//!
//! `wss://` URLs work too (feature `tls`); `--ca PATH` trusts the CA certificates in that PEM
//! file instead of Mozilla's roots (`echo_server --tls` writes one). The JSON line then says
//! `"transport":"wss"`.
//!
//! Latency runs from submit to the callback (or the wake-up of the waiting thread). CPU is
//! `getrusage(RUSAGE_SELF)` over the measured phase: every thread of this process. Heap
//! allocations are counted by a counting global allocator (`allocs_per_req`).

mod bench_common;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bench_common::{Args, CountingAlloc, Measure};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use rpcloop::{ConnId, ConnState, ConnectionConfig, Context, Error, EventLoop, Handle, Response};

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

/// No call should take this long against a local echo server; past it the call fails, and so
/// does the run (never a hang).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

fn usage() -> String {
    format!(
        "usage: bench --url URL [options]\n\nrpcloop benchmark client (prints one JSON line).\n\n\
         options:\n{}\n  \
         --mode MODE        callback (loop thread), handle (blocking thread) or future\n  \
         --busy-poll        spin the loop (turn with a zero timeout) instead of sleeping\n  \
         --ca PATH          wss://: trust the CA certificates in this PEM file\n  \
         -h, --help         print this help",
        bench_common::COMMON_USAGE
    )
}

fn main() -> ExitCode {
    bench_common::main_with("bench", &usage(), |args| match args.mode.as_str() {
        "callback" => run_callback(args),
        "handle" | "future" => run_threaded(args),
        other => Err(format!("unknown mode {other:?}")),
    })
}

/// Connects and turns the loop until the connection is open.
fn open(args: &Args) -> Result<(EventLoop, ConnId), String> {
    let mut ev = EventLoop::new().map_err(|e| e.to_string())?;
    let config = ConnectionConfig {
        default_timeout: CALL_TIMEOUT,
        max_in_flight: args.inflight.max(ConnectionConfig::default().max_in_flight),
        ..ConnectionConfig::default()
    };
    let config = with_ca(config, args.ca.as_deref())?;
    let conn = ev.connect(&args.url, config).map_err(|e| e.to_string())?;
    loop {
        match ev.state(conn) {
            Some(ConnState::Open) => return Ok((ev, conn)),
            Some(ConnState::Connecting) => {}
            state => return Err(format!("cannot connect to {}: {state:?}", args.url)),
        }
        ev.turn(Some(Duration::from_millis(100)))
            .map_err(|e| e.to_string())?;
    }
}

/// Trusts the CA certificates of the PEM file at `ca`, if given.
#[cfg(feature = "tls")]
fn with_ca(config: ConnectionConfig, ca: Option<&str>) -> Result<ConnectionConfig, String> {
    use rpcloop::rustls::RootCertStore;
    use rpcloop::rustls::pki_types::CertificateDer;
    use rpcloop::rustls::pki_types::pem::PemObject;
    let Some(path) = ca else {
        return Ok(config);
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| format!("{path}: {e}"))? {
        let cert = cert.map_err(|e| format!("{path}: {e}"))?;
        roots.add(cert).map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(ConnectionConfig {
        tls: rpcloop::TlsConfig::Custom(roots),
        ..config
    })
}

#[cfg(not(feature = "tls"))]
fn with_ca(config: ConnectionConfig, ca: Option<&str>) -> Result<ConnectionConfig, String> {
    match ca {
        None => Ok(config),
        Some(_) => Err("--ca needs rpcloop's tls feature".into()),
    }
}

fn poll_timeout(args: &Args) -> Option<Duration> {
    if args.busy_poll {
        Some(Duration::ZERO)
    } else {
        Some(Duration::from_millis(100))
    }
}

/// Checks one answer: an error or somebody else's message is a failure.
fn check(result: &Result<Response, Error>, i: u64, payload: usize) -> Result<(), String> {
    match result {
        Ok(resp) if bench_common::is_quoted_message(resp.text(), i, payload) => Ok(()),
        Ok(resp) => Err(format!("call {i}: wrong answer {:?}", resp.frame())),
        Err(e) => Err(format!("call {i} failed: {e}")),
    }
}

/// The callback mode's state, shared by the callbacks on the loop thread.
struct Run {
    args: Args,
    conn: ConnId,
    /// The number of the next call to submit.
    next: u64,
    /// Calls completed so far.
    completed: u64,
    hist: Histogram<u64>,
    measure: Option<Measure>,
    failure: Option<String>,
    /// The message being submitted, reused.
    message: String,
}

impl Run {
    fn total(&self) -> u64 {
        self.args.warmup + self.args.requests
    }
}

fn run_callback(args: &Args) -> Result<String, String> {
    let (mut ev, conn) = open(args)?;
    let run = Rc::new(RefCell::new(Run {
        args: args.clone(),
        conn,
        next: 0,
        completed: 0,
        hist: bench_common::new_histogram(),
        measure: None,
        failure: None,
        message: String::with_capacity(args.payload),
    }));
    let first = (args.inflight as u64).min(args.warmup + args.requests);
    for _ in 0..first {
        submit_next(&mut ev, &run);
    }
    let timeout = poll_timeout(args);
    loop {
        {
            let run = run.borrow();
            if run.completed == run.total() || run.failure.is_some() {
                break;
            }
        }
        ev.turn(timeout).map_err(|e| e.to_string())?;
    }
    let mut run = run.borrow_mut();
    if let Some(why) = run.failure.take() {
        return Err(why);
    }
    let measure = run.measure.take().ok_or("no measured call")?;
    Ok(measure.finish("rpcloop", Some("callback"), args, &run.hist))
}

/// Submits the next call; its callback records it and submits the one after.
fn submit_next(ctx: &mut Context, shared: &Rc<RefCell<Run>>) {
    let mut run = shared.borrow_mut();
    let i = run.next;
    run.next += 1;
    if i == run.args.warmup {
        run.measure = Some(Measure::start());
    }
    let Run {
        message,
        args,
        conn,
        ..
    } = &mut *run;
    bench_common::write_message(message, i, args.payload);
    let again = shared.clone();
    let start = Instant::now();
    let submitted = ctx.submit(*conn, message.as_str(), move |ctx, result| {
        on_answer(ctx, &again, i, start, result)
    });
    if let Err(e) = submitted {
        run.failure.get_or_insert(format!("call {i} refused: {e}"));
    }
}

fn on_answer(
    ctx: &mut Context,
    shared: &Rc<RefCell<Run>>,
    i: u64,
    start: Instant,
    result: Result<Response, Error>,
) {
    let latency = start.elapsed();
    let mut run = shared.borrow_mut();
    if let Err(why) = check(&result, i, run.args.payload) {
        run.failure.get_or_insert(why);
        return;
    }
    if i >= run.args.warmup {
        bench_common::record(&mut run.hist, latency);
    }
    run.completed += 1;
    let more = run.next < run.total();
    drop(run);
    if more {
        submit_next(ctx, shared);
    }
}

/// `handle` and `future` modes: the loop turns here, the calls come from another thread.
fn run_threaded(args: &Args) -> Result<String, String> {
    let (mut ev, conn) = open(args)?;
    let handle = ev.handle();
    let finished = Arc::new(AtomicBool::new(false));
    let caller = {
        let args = args.clone();
        let finished = finished.clone();
        std::thread::Builder::new()
            .name("bench caller".into())
            .spawn(move || {
                let outcome = if args.mode == "future" {
                    call_futures(&args, &handle, conn)
                } else {
                    call_blocking(&args, &handle, conn)
                };
                finished.store(true, Ordering::Release);
                outcome
            })
            .map_err(|e| e.to_string())?
    };
    let timeout = poll_timeout(args);
    while !finished.load(Ordering::Acquire) {
        ev.turn(timeout).map_err(|e| e.to_string())?;
    }
    caller
        .join()
        .map_err(|_| "the caller thread panicked".to_string())?
}

/// `handle` mode: K calls in flight, blocking on the oldest.
fn call_blocking(args: &Args, handle: &Handle, conn: ConnId) -> Result<String, String> {
    let total = args.warmup + args.requests;
    let mut hist = bench_common::new_histogram();
    let mut measure = None;
    let mut message = String::with_capacity(args.payload);
    let mut window = VecDeque::with_capacity(args.inflight);
    for i in 0..total {
        if window.len() == args.inflight {
            let (j, start, call): (u64, Instant, rpcloop::PendingCall) =
                window.pop_front().expect("a full window");
            complete(args, &mut hist, j, start, call.wait())?;
        }
        if i == args.warmup {
            measure = Some(Measure::start());
        }
        bench_common::write_message(&mut message, i, args.payload);
        window.push_back((i, Instant::now(), handle.call(conn, message.as_str())));
    }
    for (j, start, call) in window {
        complete(args, &mut hist, j, start, call.wait())?;
    }
    let measure = measure.ok_or("no measured call")?;
    Ok(measure.finish("rpcloop", Some("handle"), args, &hist))
}

/// `future` mode: K futures in flight on one `block_on` executor.
fn call_futures(args: &Args, handle: &Handle, conn: ConnId) -> Result<String, String> {
    let total = args.warmup + args.requests;
    let mut hist = bench_common::new_histogram();
    let mut measure = None;
    let mut message = String::with_capacity(args.payload);
    futures::executor::block_on(async {
        let mut calls = FuturesUnordered::new();
        let call = |i: u64, message: &mut String| {
            bench_common::write_message(message, i, args.payload);
            let start = Instant::now();
            let pending = handle.call(conn, message.as_str());
            async move { (i, start, pending.await) }
        };
        let mut next = 0;
        loop {
            while next < total && calls.len() < args.inflight {
                if next == args.warmup {
                    measure = Some(Measure::start());
                }
                calls.push(call(next, &mut message));
                next += 1;
            }
            let Some((i, start, result)) = calls.next().await else {
                break;
            };
            complete(args, &mut hist, i, start, result)?;
        }
        Ok::<(), String>(())
    })?;
    let measure = measure.ok_or("no measured call")?;
    Ok(measure.finish("rpcloop", Some("future"), args, &hist))
}

/// Checks and records one completed call of the threaded modes.
fn complete(
    args: &Args,
    hist: &mut Histogram<u64>,
    i: u64,
    start: Instant,
    result: Result<Response, Error>,
) -> Result<(), String> {
    let latency = start.elapsed();
    check(&result, i, args.payload)?;
    if i >= args.warmup {
        bench_common::record(hist, latency);
    }
    Ok(())
}
