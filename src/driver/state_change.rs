//! [`StateChange`]: how a connection's life is told — to its state handler, to handles, and to
//! the log, once per change.

use std::time::Duration;

use crate::core::conn_id::ConnId;
use crate::driver::context::Context;
use crate::error::{DisconnectReason, Error};

/// A connection's handler for its state changes.
pub(crate) type StateHandler = Box<dyn FnMut(&mut Context, ConnId, StateChange)>;

/// A step in a connection's life, as its state handler receives it
/// ([`Context::set_state_handler`]).
///
/// A connection goes `Connecting`, `Open`, and, when it ends without this side asking,
/// `Disconnected(reason)`; then either `Reconnecting { .. }` and `Connecting` again (with a
/// [`ReconnectPolicy`](crate::ReconnectPolicy)), or `Closed`. A connection that cannot be
/// opened goes `Connecting`, `Disconnected(reason)`. `Closed` is always the last event: the
/// connection is over for good (closed by this side, lost without a reconnect policy, or out
/// of reconnect attempts).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StateChange {
    /// A TCP connect and WebSocket handshake started (the first, or a reconnect).
    Connecting,
    /// The handshake is done: calls are written as they are submitted.
    Open,
    /// The connection was lost, or could not be opened. Calls already written fail with
    /// [`Error::Disconnected`]; calls not yet written wait for a reconnect, if there is one.
    Disconnected(DisconnectReason),
    /// The next attempt starts after `delay`.
    Reconnecting {
        /// Attempts since the connection was last stable, this one included (from 1).
        attempt: u32,
        /// The backoff delay before the attempt.
        delay: Duration,
    },
    /// The connection is over for good; no event follows.
    Closed,
}

impl Context {
    /// Sets the handler told of every state change of `conn`, on the loop thread, during
    /// [`turn`](crate::EventLoop::turn). Changes that happened since the last dispatch are
    /// delivered too, so a handler set right after [`connect`](Self::connect) sees
    /// `Connecting` first.
    ///
    /// ```no_run
    /// # use rpcloop::*;
    /// # fn f(ev: &mut EventLoop, conn: ConnId) -> Result<(), Error> {
    /// ev.set_state_handler(conn, |_ctx, conn, change| match change {
    ///     StateChange::Disconnected(why) => eprintln!("{conn}: lost: {why}"),
    ///     StateChange::Reconnecting { attempt, delay } => {
    ///         eprintln!("{conn}: attempt {attempt} in {delay:?}")
    ///     }
    ///     other => eprintln!("{conn}: {other:?}"),
    /// })?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::UnknownConnection`] if `conn` is not a connection of this loop.
    pub fn set_state_handler<H>(&mut self, conn: ConnId, handler: H) -> Result<(), Error>
    where
        H: FnMut(&mut Context, ConnId, StateChange) + 'static,
    {
        let c = self
            .conns
            .get_mut(conn.index())
            .ok_or(Error::UnknownConnection)?;
        c.state_handler = Some(Box::new(handler));
        Ok(())
    }

    /// Records a state change of connection `index`: logged once, published to handles, and
    /// queued for its state handler.
    pub(crate) fn change_state(&mut self, index: usize, change: StateChange) {
        let addr = self.conns[index].addr;
        match &change {
            StateChange::Connecting => log::info!("connection {index}: connecting to {addr}"),
            StateChange::Open => log::info!("connection {index}: open to {addr}"),
            StateChange::Disconnected(reason) => {
                log::warn!("connection {index} to {addr}: {reason}");
            }
            StateChange::Reconnecting { attempt, delay } => {
                log::info!("connection {index}: reconnect attempt {attempt} in {delay:?}");
            }
            StateChange::Closed => log::info!("connection {index} to {addr}: closed"),
        }
        self.publish_state(index);
        self.state_changes.push_back((ConnId::new(index), change));
    }

    /// Runs the state handler of one queued change; `false` if there was none to run.
    pub(crate) fn dispatch_state_change(&mut self) -> Option<bool> {
        let (conn, change) = self.state_changes.pop_front()?;
        let index = conn.index();
        let Some(mut handler) = self.conns[index].state_handler.take() else {
            return Some(false);
        };
        let last = change == StateChange::Closed;
        handler(self, conn, change);
        if !last {
            // Keep a handler the callback installed meanwhile.
            self.conns[index].state_handler.get_or_insert(handler);
        }
        Some(true)
    }
}
