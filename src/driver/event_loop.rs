//! [`EventLoop`]: the poll loop the user drives, one [`turn`](EventLoop::turn) at a time.

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use mio::{Events, Poll};

use crate::driver::WAKER;
use crate::driver::context::Context;
use crate::error::Error;

/// A runtime-free event loop: WebSocket connections and the calls made over them.
///
/// Nothing runs behind the caller's back: no threads, no runtime. The loop advances only in
/// [`turn`](Self::turn), on the thread that owns it; callbacks run there. The loop dereferences
/// to [`Context`], which holds the operations (`connect`, `submit`, `cancel`, `close`...), so
/// the same calls work on the loop and, inside callbacks, on the `&mut Context` they receive.
///
/// ```no_run
/// use std::time::Duration;
/// use rpcloop::{ConnectionConfig, EventLoop};
///
/// let mut ev = EventLoop::new()?;
/// let conn = ev.connect("ws://127.0.0.1:9001/", ConnectionConfig::default())?;
/// ev.submit(conn, 42, |_ctx, result| println!("{result:?}"))?;
/// while ev.has_pending() {
///     ev.turn(Some(Duration::from_millis(10)))?;
/// }
/// # Ok::<(), rpcloop::Error>(())
/// ```
pub struct EventLoop {
    ctx: Context,
    events: Events,
}

impl EventLoop {
    /// A new loop with no connections.
    ///
    /// # Errors
    /// [`Error::Io`] if the OS poller (epoll, kqueue) cannot be created.
    pub fn new() -> Result<Self, Error> {
        Ok(EventLoop {
            ctx: Context::new(Poll::new()?)?,
            events: Events::with_capacity(256),
        })
    }

    /// One round of the loop: write what was submitted since the last turn, wait for I/O readiness (at most `timeout`, `None` for no limit,
    /// and never past the next deadline), move connections along and read their messages, fire
    /// expired deadlines (calls, connects, keepalive pings, reconnects), then run the state
    /// handlers of connections that changed, the callbacks of every completed call and the
    /// message handlers of unmatched messages, and write what they submitted: every call submitted in one
    /// turn leaves in one write per connection. Returns how many callbacks and handlers ran.
    ///
    /// `turn(Some(Duration::ZERO))` never sleeps: a busy-poll step.
    ///
    /// # Errors
    /// [`Error::Io`] if polling fails (an interrupted poll is not an error: it returns `Ok`).
    pub fn turn(&mut self, timeout: Option<Duration>) -> Result<usize, Error> {
        let ctx = &mut self.ctx;
        let start = ctx.now();
        // What was submitted since the last turn leaves first, one write per connection.
        ctx.flush_dirty();
        let busy = !ctx.to_read.is_empty() || !ctx.backlog.is_empty();
        let timeout = if busy || ctx.engine.has_events() {
            Some(Duration::ZERO)
        } else {
            match ctx.next_deadline() {
                Some(deadline) => {
                    let until = deadline.saturating_duration_since(start);
                    Some(timeout.map_or(until, |t| t.min(until)))
                }
                None => timeout,
            }
        };
        match ctx.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
        // After a sleep, the loop's now moves on before anything is read or fired.
        ctx.now();
        let mut woken = false;
        for event in self.events.iter() {
            match event.token() {
                WAKER => woken = true,
                token => ctx.handle_ready(token.0, event.is_read_closed() || event.is_error()),
            }
        }
        if woken || !ctx.backlog.is_empty() {
            ctx.drain_commands();
        }
        for index in std::mem::take(&mut ctx.to_read) {
            if let Some(c) = ctx.conns[index].as_mut() {
                c.read_again = false;
            }
            ctx.read_frames(index);
            ctx.flush_conn(index);
        }
        let now = ctx.now_tick();
        ctx.engine.handle_timeout(now);
        ctx.pump();
        let ran = ctx.dispatch();
        ctx.flush_dirty();
        Ok(ran)
    }

    /// Completes every pending call with [`Error::Shutdown`] (running their callbacks now) and
    /// refuses new calls and connections from then on. Connections are dropped without a close
    /// handshake. Dropping the loop does this too.
    pub fn shutdown(&mut self) {
        let ctx = &mut self.ctx;
        if ctx.engine.is_shut_down() {
            return;
        }
        let now = ctx.now_tick_fresh();
        ctx.engine.shutdown(now);
        ctx.shut_down_commands();
        ctx.pump();
        ctx.dispatch();
    }
}

impl Deref for EventLoop {
    type Target = Context;
    fn deref(&self) -> &Context {
        &self.ctx
    }
}

impl DerefMut for EventLoop {
    fn deref_mut(&mut self) -> &mut Context {
        &mut self.ctx
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(unix)]
impl std::os::fd::AsRawFd for EventLoop {
    /// The poller's file descriptor: readable when a `turn` has I/O to handle, for a host
    /// program that folds this loop into its own (wake it also by [`Context::next_deadline`]).
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.ctx.poll.as_raw_fd()
    }
}
