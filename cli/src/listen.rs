//! `rpcloop listen`: print every frame the server sends that answers no call (a push), until
//! the connection ends, `--count` frames arrived or `--duration` passed.
//!
//! With `--jsonrpc-subscribe METHOD PARAMS` it subscribes (the library's `subscribe_with`) as
//! soon as the connection is open, prints every item of the subscription too (they count
//! towards `--count`), and ends when the subscription does. When it stops by itself it
//! unsubscribes before closing the connection.
//!
//! Exit status: 0 when it stopped on `--count` or `--duration`, or the server closed the
//! connection normally (close code 1000 or 1001); 1 when the connection could not be opened
//! or was lost otherwise, or when the subscribe call failed.

use std::cell::RefCell;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use rpcloop::{
    ConnId, ConnState, Context, DisconnectReason, Error, EventLoop, StateChange, SubscribeOptions,
    SubscriptionEvent, SubscriptionId,
};

use crate::FAILED;
use crate::args::{ListenArgs, Subscribe};
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
    /// The subscription, once asked for.
    subscription: Option<SubscriptionId>,
    /// The subscription is over (its `Ended` arrived, or it could not be made).
    subscription_over: bool,
    /// It ended on a failed subscribe call (not with the connection): exit status 1.
    subscription_failed: bool,
    /// This side is stopping: the subscription's end is its own doing, not news.
    stopping: bool,
}

type Shared = Rc<RefCell<Listening>>;

/// Runs `rpcloop listen` with this codec, subscribing first if asked; returns the exit status.
pub fn run(args: ListenArgs, codec: CodecChoice, subscribe: Option<Subscribe>) -> ExitCode {
    let mode = if args.output.json {
        Mode::Json
    } else {
        Mode::Human
    };
    let shared = Rc::new(RefCell::new(Listening {
        report: Reporter::new(mode, Purpose::Listen, codec),
        left: args.count,
        lost: None,
        opened: false,
        closed: false,
        subscription: None,
        subscription_over: false,
        subscription_failed: false,
        stopping: false,
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
    let config = args.conn.config(codec);
    // Across a lost connection (--reconnect), the subscription is made again.
    let options = SubscribeOptions {
        resubscribe: config.reconnect.is_some(),
        ..SubscribeOptions::default()
    };
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
    let on_state = ev.set_state_handler(conn, move |ctx, conn, change| {
        let mut l = state.borrow_mut();
        l.report.state(&change);
        match change {
            StateChange::Open => {
                let first = !l.opened;
                if first && mode == Mode::Human {
                    l.report
                        .note(&format!("listening on {url} (Ctrl-C to stop)"));
                }
                l.opened = true;
                l.lost = None;
                drop(l);
                if let Some(plan) = subscribe.as_ref().filter(|_| first) {
                    start(ctx, conn, plan, options, &state);
                }
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
            if l.closed || l.subscription_over {
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

    let subscription = {
        let mut l = shared.borrow_mut();
        l.stopping = true;
        l.subscription
    };
    if let Some(subscription) = subscription {
        // Say goodbye to the server before closing: the unsubscribe call leaves now, ahead of
        // the close frame (its answer is not waited for; closing fails it as `closed`).
        if ev.unsubscribe(subscription) {
            ev.flush();
        }
    }
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
    if l.subscription_failed {
        ExitCode::from(FAILED)
    } else if stopped || normal_end {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(FAILED)
    }
}

/// Makes the subscription (the connection has just opened), reporting its items and its end.
fn start(
    ctx: &mut Context,
    conn: ConnId,
    plan: &Subscribe,
    options: SubscribeOptions,
    shared: &Shared,
) {
    let on_event = {
        let shared = shared.clone();
        let method = plan.method.clone();
        move |_: &mut Context, event: SubscriptionEvent| {
            let mut l = shared.borrow_mut();
            match &event {
                SubscriptionEvent::Item(item) => {
                    if l.left == Some(0) {
                        return;
                    }
                    if let Some(left) = &mut l.left {
                        *left -= 1;
                    }
                    l.report.item(item);
                }
                SubscriptionEvent::Ended(e) => {
                    l.subscription_over = true;
                    if !l.stopping {
                        l.subscription_failed = !connection_ended(e);
                        l.report.subscription(&event, &method);
                    }
                }
                _ => l.report.subscription(&event, &method),
            }
        }
    };
    let made = ctx.subscribe_with(
        conn,
        &plan.method,
        &*plan.params,
        &plan.unsubscribe,
        options,
        on_event,
    );
    let mut l = shared.borrow_mut();
    match made {
        Ok(subscription) => l.subscription = Some(subscription),
        Err(e) => {
            // Not even sent (too large for --max-message-size, say): over before it began.
            l.subscription_over = true;
            l.subscription_failed = true;
            l.report
                .subscription(&SubscriptionEvent::Ended(e), &plan.method);
        }
    }
}

/// Whether a subscription ended because its connection did (which the state changes report,
/// and the exit status judges as for any listen), rather than on a failed subscribe call.
fn connection_ended(e: &Error) -> bool {
    matches!(
        e,
        Error::Disconnected(_) | Error::NotSent(_) | Error::Closed | Error::Shutdown
    )
}
