//! `rpcloop call`: every message a call on one connection, at most `--concurrency` in flight.
//!
//! The event loop runs on this thread. Between turns the loop is fed up to the concurrency
//! limit; callbacks, state and message handlers only report (through [`Run`], shared with
//! them). Every call has a deadline, so the command ends after the last one; a watchdog past
//! the last deadline shuts the loop down should a call ever outlive it (that would be a bug in
//! the library, and the calls then report `shutdown` rather than hang the shell).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use rpcloop::{CallId, CallOptions, ConnId, ConnState, Context, Error, EventLoop, StateChange};
use serde_json::value::RawValue;

use crate::args::CallArgs;
use crate::input::{Check, Input, Next};
use crate::jsonrpc;
use crate::output::{Completion, Mode, Purpose, Reporter};
use crate::parse::CodecChoice;
use crate::{FAILED, USAGE};

/// How long a turn may sleep while stdin may bring the next message at any moment (the loop
/// cannot be woken by the thread reading stdin).
const INPUT_POLL: Duration = Duration::from_millis(20);
/// How long a turn may sleep otherwise (the loop wakes earlier for I/O and deadlines).
const IDLE_POLL: Duration = Duration::from_millis(100);
/// How far past the last call's deadline the watchdog waits.
const WATCHDOG_GRACE: Duration = Duration::from_secs(5);
/// Extra time, past the close timeout, to see the connection closed.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What the loop's callbacks and handlers share with the command.
struct Run {
    report: Reporter,
    /// Calls submitted and not completed, by call number: their id and submission time.
    in_flight: HashMap<u64, (CallId, Instant)>,
    /// The connection told its last state (`Closed`).
    closed: bool,
}

type Shared = Rc<RefCell<Run>>;

/// Runs `rpcloop call`; returns the exit status.
pub fn run(args: CallArgs) -> ExitCode {
    let mode = if args.output.json {
        Mode::Json
    } else {
        Mode::Human
    };
    let mut input = if args.messages.is_empty() {
        let check = args.codec.is_jsonrpc().then_some(jsonrpc::check as Check);
        Input::from_stdin(args.repeat, check)
    } else {
        Input::from_args(args.messages, args.repeat)
    };
    let mut report = Reporter::new(mode, Purpose::Call, args.codec);
    if args.repeat > 1 && !args.no_progress {
        report.show_progress(input.total());
    }
    let run: Shared = Rc::new(RefCell::new(Run {
        report,
        in_flight: HashMap::new(),
        closed: false,
    }));
    let started = Instant::now();

    let mut ev = match EventLoop::new() {
        Ok(ev) => ev,
        Err(e) => {
            eprintln!("rpcloop: cannot start the event loop: {e}");
            return ExitCode::from(FAILED);
        }
    };
    let concurrency = usize::try_from(args.concurrency).unwrap_or(usize::MAX);
    let mut config = args.conn.config(args.codec);
    // The calls asked to be in flight at once are allowed in flight.
    config.max_in_flight = config.max_in_flight.max(concurrency);
    let close_timeout = config.close_timeout;
    let conn = ev
        .connect(&args.url, config)
        .and_then(|conn| watch(&mut ev, conn, &run).map(|()| conn));
    if let Err(e) = &conn {
        let run = run.borrow();
        run.report
            .note(&format!("cannot connect to {}: {e}", args.url));
    }

    let timeout = args.timeout.0;
    let mut submitted: u64 = 0;
    let mut usage_error = None;
    let mut last_deadline: Option<Instant> = None;
    let mut total_known = false;
    let mut fatal = false;
    loop {
        // Feed the connection up to the concurrency limit.
        while run.borrow().in_flight.len() < concurrency {
            let at = match input.next() {
                Next::Message(at) => at,
                Next::Wait | Next::End => break,
                Next::Bad(why) => {
                    run.borrow()
                        .report
                        .stderr(&format!("rpcloop: error: {why}"));
                    usage_error = Some(why);
                    // Typed at a terminal, the session goes on; otherwise the input ended.
                    continue;
                }
            };
            let call = Call {
                index: submitted,
                message: input.message(at),
                codec: args.codec,
                timeout,
            };
            if call.submit(&mut ev, &conn, &run) {
                let deadline = Instant::now() + timeout;
                last_deadline = Some(last_deadline.map_or(deadline, |d| d.max(deadline)));
            }
            submitted += 1;
        }
        if !total_known {
            if let Some(total) = input.total() {
                total_known = true;
                run.borrow_mut().report.set_total(total);
            }
        }
        let idle = run.borrow().in_flight.is_empty();
        if idle && !input.waiting() {
            break;
        }

        let poll = if input.waiting() {
            INPUT_POLL
        } else {
            IDLE_POLL
        };
        if let Err(e) = ev.turn(Some(poll)) {
            run.borrow()
                .report
                .note(&format!("the event loop failed: {e}"));
            fatal = true;
            // Completes every call still in flight with `shutdown`.
            ev.shutdown();
            break;
        }
        run.borrow_mut().report.flush();

        let overdue = last_deadline.is_some_and(|d| Instant::now() > d + WATCHDOG_GRACE);
        if overdue && !run.borrow().in_flight.is_empty() {
            run.borrow().report.note(
                "internal error: calls outlived their deadlines; shutting down (please report)",
            );
            fatal = true;
            ev.shutdown();
        }
    }
    let elapsed = started.elapsed();

    if let Ok(conn) = conn {
        close(&mut ev, conn, close_timeout, &run);
    }
    let mut run = run.borrow_mut();
    run.report.summary(elapsed);
    if usage_error.is_some() {
        return ExitCode::from(USAGE);
    }
    if submitted == 0 {
        run.report.stderr(
            "rpcloop: error: no message to send: give JSON texts as arguments, \
             or one per line on stdin",
        );
        return ExitCode::from(USAGE);
    }
    if fatal || run.report.any_failed() {
        ExitCode::from(FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

/// Reports the connection's state changes and the frames that match no call.
fn watch(ev: &mut EventLoop, conn: ConnId, run: &Shared) -> Result<(), Error> {
    let shared = run.clone();
    ev.set_state_handler(conn, move |_, _, change| {
        let mut run = shared.borrow_mut();
        run.closed |= change == StateChange::Closed;
        run.report.state(&change);
    })?;
    let shared = run.clone();
    ev.set_message_handler(conn, move |_, frame| {
        shared.borrow_mut().report.unmatched(&frame);
    })
}

/// One call to make.
struct Call<'a> {
    index: u64,
    message: &'a RawValue,
    codec: CodecChoice,
    timeout: Duration,
}

impl Call<'_> {
    /// Submits the call; a call refused at once (or with no connection to go on) is reported
    /// at once. Returns whether it is in flight.
    fn submit(self, ev: &mut EventLoop, conn: &Result<ConnId, Error>, run: &Shared) -> bool {
        let index = self.index;
        let start = Instant::now();
        let conn = match conn {
            Ok(conn) => *conn,
            Err(e) => {
                let done = Completion {
                    index,
                    id: None,
                    latency: start.elapsed(),
                    result: Err(again(e)),
                };
                run.borrow_mut().report.call(done);
                return false;
            }
        };
        let shared = run.clone();
        let callback = move |_: &mut Context, result| {
            let mut run = shared.borrow_mut();
            let (id, start) = match run.in_flight.remove(&index) {
                Some((id, start)) => (Some(id), start),
                None => (None, start),
            };
            let done = Completion {
                index,
                id,
                latency: start.elapsed(),
                result,
            };
            run.report.call(done);
        };
        let options = CallOptions {
            timeout: Some(self.timeout),
        };
        // The one place the codec shapes a call.
        let submitted = match self.codec {
            CodecChoice::Envelope => ev.submit_with(conn, self.message, options, callback),
            CodecChoice::JsonRpc | CodecChoice::JsonRpcStringIds => {
                // Every message was checked when it was read (a bad one is a usage error);
                // should one get here anyway, its call fails as `encode`, unsent.
                match jsonrpc::call(self.message) {
                    Ok(request) => ev.submit_with(conn, request, options, callback),
                    Err(why) => Err(Error::Encode(serde::ser::Error::custom(why))),
                }
            }
        };
        let mut run = run.borrow_mut();
        match submitted {
            Ok(id) => {
                run.in_flight.insert(index, (id, start));
                true
            }
            Err(e) => {
                let done = Completion {
                    index,
                    id: None,
                    latency: start.elapsed(),
                    result: Err(e),
                };
                run.report.call(done);
                false
            }
        }
    }
}

/// The connection's own error again, for each call that could not be made because of it
/// (`Error` is not `Clone`).
fn again(e: &Error) -> Error {
    match e {
        Error::InvalidUrl(why) => Error::InvalidUrl(why.clone()),
        Error::Handshake(why) => Error::Handshake(why.clone()),
        Error::Io(io) => Error::Io(io::Error::new(io.kind(), io.to_string())),
        Error::Shutdown => Error::Shutdown,
        other => Error::Io(io::Error::other(other.to_string())),
    }
}

/// Closes the connection with the close handshake and turns until it is over, within the
/// close timeout.
fn close(ev: &mut EventLoop, conn: ConnId, close_timeout: Duration, run: &Shared) {
    if ev.close(conn).is_err() {
        return;
    }
    let give_up = Instant::now() + close_timeout + CLOSE_GRACE;
    while Instant::now() < give_up {
        let closing = ev.state(conn) == Some(ConnState::Closing);
        if !closing && run.borrow().closed {
            break;
        }
        if ev.turn(Some(Duration::from_millis(20))).is_err() {
            break;
        }
        run.borrow_mut().report.flush();
    }
}
