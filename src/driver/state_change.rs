//! [`StateChange`]: how a connection's life is told — to its state handler, to handles, and to
//! the log, once per change.

use crate::core::conn_id::ConnId;
use crate::core::event::StateChange;
use crate::driver::context::Context;
use crate::error::Error;

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
        let c = self.live_mut(conn).ok_or(Error::UnknownConnection)?;
        c.handlers.state = Some(Box::new(handler));
        Ok(())
    }

    /// Records a state change of connection `index`: logged once, published to handles, and
    /// queued for its state handler.
    pub(crate) fn change_state(&mut self, index: usize, change: StateChange) {
        let c = &mut self.conns[index];
        if let Err(illegal) = c.session.lifecycle.handle_change(&change) {
            // A bug in this crate, never the peer's doing: loud in tests, ignored in release.
            debug_assert!(false, "connection {index}: {illegal}");
            log::error!("connection {index}: {illegal}; the change is not told");
            return;
        }
        let addr = c.addr;
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
        if change == StateChange::Closed {
            self.ending.push(index);
        }
        self.state_changes.push_back((self.conns[index].id, change));
    }

    /// Runs the state handler of one queued change; `false` if there was none to run.
    pub(crate) fn dispatch_state_change(&mut self) -> Option<bool> {
        let (conn, change) = self.state_changes.pop_front()?;
        let index = conn.index();
        let Some(mut handler) = self.conns[index].handlers.state.take() else {
            return Some(false);
        };
        let last = change == StateChange::Closed;
        handler(self, conn, change);
        if !last {
            // Keep a handler the callback installed meanwhile.
            self.conns[index].handlers.state.get_or_insert(handler);
        }
        Some(true)
    }
}
