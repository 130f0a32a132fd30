//! An Autobahn TestSuite echo agent built on rpcloop's public API, for the suite's
//! `fuzzingserver` mode (`scripts/autobahn.sh` runs it).
//!
//! ```text
//! cargo run --release --example autobahn_client -- ws://127.0.0.1:9001 rpcloop
//! ```
//!
//! It asks the fuzzing server how many cases there are (`/getCaseCount`), then runs each one
//! (`/runCase?case=N&agent=NAME`): every text and binary message the server sends comes back
//! unchanged, until the server closes the connection. Then `/updateReports?agent=NAME` has the
//! server write its reports. Everything goes through the code any user runs: one
//! [`EventLoop`], one [`connect`](rpcloop::Context::connect) per case, a message handler that
//! echoes through [`send`](rpcloop::Context::send), and a state handler that tells when the
//! connection is over. The verdicts are the server's: this agent only exits non-zero when it
//! cannot talk to the server at all (or a case outlives its time bound).

use std::cell::{Cell, RefCell};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use rpcloop::{ConnId, ConnState, ConnectionConfig, EventLoop, Message, StateChange};

/// How long one case may take before the agent gives up on it (the slowest cases, 9.*, move
/// 16 MiB messages or thousands of small ones, and take well under a second here).
const CASE_LIMIT: Duration = Duration::from_secs(60);

/// Large enough for every case: Autobahn sends messages of up to 16 MiB, in frames of up to
/// 16 MiB, and the echo of a message waits in the write buffer until the socket takes it.
fn config() -> ConnectionConfig {
    ConnectionConfig {
        max_message_size: 64 << 20,
        max_frame_size: 64 << 20,
        max_write_buffer: 256 << 20,
        ping_interval: None,
        ..ConnectionConfig::default()
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base, agent] = args.as_slice() else {
        eprintln!(
            "usage: autobahn_client <base-url> <agent-name>   (e.g. ws://127.0.0.1:9001 rpcloop)"
        );
        return ExitCode::from(2);
    };
    let base = base.trim_end_matches('/');
    match run(base, agent) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("autobahn_client: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(base: &str, agent: &str) -> Result<(), String> {
    let mut ev = EventLoop::new().map_err(|e| e.to_string())?;

    let count = Rc::new(RefCell::new(None::<String>));
    let seen = count.clone();
    session(
        &mut ev,
        &format!("{base}/getCaseCount"),
        move |_, _, message| {
            if let Some(text) = message.as_text() {
                *seen.borrow_mut() = Some(text.to_owned());
            }
        },
    )?;
    let count = count
        .borrow()
        .clone()
        .ok_or("the server sent no case count")?;
    let count: u32 = count
        .trim()
        .parse()
        .map_err(|e| format!("case count {count:?}: {e}"))?;
    eprintln!("{count} cases");

    let started = Instant::now();
    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={agent}");
        session(&mut ev, &url, move |ctx, conn, message| {
            // Echo as received: text as text, binary as binary.
            let echo = match message.as_text() {
                Some(text) => Message::from(text),
                None => Message::from(message.as_bytes()),
            };
            if let Err(e) = ctx.send(conn, echo) {
                eprintln!("case {case}: echo not sent: {e}");
            }
        })?;
        if case % 50 == 0 || case == count {
            eprintln!("{case}/{count} cases run in {:.1?}", started.elapsed());
        }
    }

    session(
        &mut ev,
        &format!("{base}/updateReports?agent={agent}"),
        |_, _, _| {},
    )?;
    eprintln!("reports updated");
    Ok(())
}

/// Opens one connection to `url`, hands every message that arrives to `on_message`, and turns
/// the loop until the connection is over and its socket closed.
fn session(
    ev: &mut EventLoop,
    url: &str,
    mut on_message: impl FnMut(&mut rpcloop::Context, ConnId, rpcloop::Unmatched) + 'static,
) -> Result<(), String> {
    let conn = ev
        .connect(url, config())
        .map_err(|e| format!("{url}: {e}"))?;
    ev.set_message_handler(conn, move |ctx, message| on_message(ctx, conn, message))
        .map_err(|e| e.to_string())?;
    let over = Rc::new(Cell::new(false));
    let opened = Rc::new(Cell::new(false));
    let (over_flag, opened_flag) = (over.clone(), opened.clone());
    ev.set_state_handler(conn, move |_, _, change| match change {
        StateChange::Open => opened_flag.set(true),
        StateChange::Closed => over_flag.set(true),
        _ => {}
    })
    .map_err(|e| e.to_string())?;
    let give_up = Instant::now() + CASE_LIMIT;
    // `Closed` is told when the close handshake starts; the socket may still be finishing it
    // (state `Closing`): the server, which drops the TCP connection first, decides when.
    while !over.get() || ev.state(conn) == Some(ConnState::Closing) {
        if Instant::now() > give_up {
            ev.close(conn).ok();
            return Err(format!("{url}: still running after {CASE_LIMIT:?}"));
        }
        ev.turn(Some(Duration::from_millis(50)))
            .map_err(|e| e.to_string())?;
    }
    if !opened.get() {
        return Err(format!("{url}: {:?}", ev.state(conn)));
    }
    Ok(())
}
