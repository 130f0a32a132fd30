//! `rpcloop listen`: print every frame the server sends that answers no call (a push), until
//! the connection ends, `--count` frames arrived or `--duration` passed.
//!
//! Exit status: 0 when it stopped on `--count` or `--duration`, or the server closed the
//! connection normally (close code 1000 or 1001); 1 when the connection could not be opened
//! or was lost otherwise.

use std::cell::RefCell;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use rpcloop::{ConnState, DisconnectReason, EventLoop, StateChange};

use crate::FAILED;
use crate::args::ListenArgs;
use crate::output::{Mode, Purpose, Reporter};
use crate::parse::CodecChoice;

/// Longest sleep of one turn, so `--duration` is kept to within it.
const POLL: Duration = Duration::from_millis(100);
/// Extra time, past the close timeout, to see the connection closed.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What the handlers share with the command.
struct Listening {
    report: Reporter,
    /// Frames still to print (`--count`), if limited.
    left: Option<u64>,
    /// Why the connection was last lost, until it opens again.
    lost: Option<DisconnectReason>,
    opened: bool,
    closed: bool,
}

/// Runs `rpcloop listen`; returns the exit status.
pub fn run(args: ListenArgs) -> ExitCode {
    let mode = if args.output.json {
        Mode::Json
    } else {
        Mode::Human
    };
    let shared = Rc::new(RefCell::new(Listening {
        report: Reporter::new(mode, Purpose::Listen, CodecChoice::Envelope),
        left: args.count,
        lost: None,
        opened: false,
        closed: false,
    }));
    let started = Instant::now();
    let stop_at = args.duration.map(|d| started + d.0);

    let mut ev = match EventLoop::new() {
        Ok(ev) => ev,
        Err(e) => {
            eprintln!("rpcloop: cannot start the event loop: {e}");
            return ExitCode::from(FAILED);
        }
    };
    let config = args.conn.config(CodecChoice::Envelope);
    let close_timeout = config.close_timeout;
    let url = args.url;
    let conn = match ev.connect(&url, config) {
        Ok(conn) => conn,
        Err(e) => {
            eprintln!("rpcloop: cannot connect to {url}: {e}");
            return ExitCode::from(FAILED);
        }
    };
    let state = shared.clone();
    let on_state = ev.set_state_handler(conn, move |_, _, change| {
        let mut l = state.borrow_mut();
        l.report.state(&change);
        match change {
            StateChange::Open => {
                if !l.opened && mode == Mode::Human {
                    l.report
                        .note(&format!("listening on {url} (Ctrl-C to stop)"));
                }
                l.opened = true;
                l.lost = None;
            }
            StateChange::Disconnected(why) => l.lost = Some(why),
            StateChange::Closed => l.closed = true,
            _ => {}
        }
    });
    let frames = shared.clone();
    let on_frame = ev.set_message_handler(conn, move |_, frame| {
        let mut l = frames.borrow_mut();
        if l.left == Some(0) {
            return;
        }
        if let Some(left) = &mut l.left {
            *left -= 1;
        }
        l.report.unmatched(&frame);
    });
    if let Err(e) = on_state.and(on_frame) {
        eprintln!("rpcloop: {e}");
        return ExitCode::from(FAILED);
    }

    let mut stopped = false;
    loop {
        {
            let l = shared.borrow();
            if l.closed {
                break;
            }
            if l.left == Some(0) || stop_at.is_some_and(|at| Instant::now() >= at) {
                stopped = true;
                break;
            }
        }
        let poll = stop_at.map_or(POLL, |at| {
            POLL.min(at.saturating_duration_since(Instant::now()))
        });
        if let Err(e) = ev.turn(Some(poll)) {
            shared
                .borrow()
                .report
                .note(&format!("the event loop failed: {e}"));
            break;
        }
        shared.borrow_mut().report.flush();
    }
    let elapsed = started.elapsed();

    if ev.close(conn).is_ok() {
        let give_up = Instant::now() + close_timeout + CLOSE_GRACE;
        while Instant::now() < give_up
            && (ev.state(conn) == Some(ConnState::Closing) || !shared.borrow().closed)
        {
            if ev.turn(Some(Duration::from_millis(20))).is_err() {
                break;
            }
        }
    }
    let mut l = shared.borrow_mut();
    l.report.summary(elapsed);
    let normal_end = matches!(
        &l.lost,
        Some(DisconnectReason::PeerClosed {
            code: 1000 | 1001,
            ..
        })
    );
    if stopped || normal_end {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(FAILED)
    }
}
