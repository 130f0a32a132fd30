//! How a lost connection comes back: the backoff delay, then a fresh TCP connect and handshake
//! in the same connection slot (same [`ConnId`](crate::ConnId), same queued calls).

use mio::net::TcpStream;
use mio::{Interest, Token};

use crate::core::event::StateChange;
use crate::core::session::ConnTimer;
use crate::driver::connection::Socket;
use crate::driver::context::Context;
use crate::error::DisconnectReason;

impl Context {
    /// After a loss: arms the next attempt if the connection has a reconnect policy with
    /// attempts left. Returns `false` when the connection must end instead.
    pub(crate) fn schedule_reconnect(&mut self, index: usize) -> bool {
        let now = self.now_tick();
        let c = &mut self.conns[index];
        let had_policy = c.session.reconnects();
        let Some((attempt, delay)) = c.session.handle_loss(now) else {
            if had_policy {
                log::warn!("connection {index}: out of reconnect attempts, giving up");
            }
            return false;
        };
        self.arm_conn_timer(index, ConnTimer::Reconnect, delay);
        self.change_state(index, StateChange::Reconnecting { attempt, delay });
        true
    }

    /// The backoff delay is over: connect again.
    pub(crate) fn reconnect(&mut self, index: usize) {
        let c = &mut self.conns[index];
        let (Some(request), None) = (&c.retry_request, &c.session.ended) else {
            return;
        };
        let request = request.clone();
        let mut stream = match TcpStream::connect(c.addr) {
            Ok(stream) => stream,
            Err(e) => return self.fail(index, DisconnectReason::connect_failed(&e)),
        };
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, Token(index), interest)
        {
            return self.fail(index, DisconnectReason::connect_failed(&e));
        }
        c.socket = Socket::Connecting(stream, request);
        c.wants_write = true;
        self.arm_connect_timer(index);
        self.change_state(index, StateChange::Connecting);
    }
}
