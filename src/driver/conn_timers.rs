//! A connection's deadlines: the connect timeout, the close timeout, the reconnect delay and
//! the keepalive schedule, fired from the loop's one wheel (the correlator's) with the calls'.

use tungstenite::Message;

use crate::core::keepalive::KeepaliveAction;
use crate::core::session::ConnTimer;
use crate::driver::connection::{Socket, write_message};
use crate::driver::context::Context;
use crate::error::DisconnectReason;

impl Context {
    /// Fires the deadlines due at tick `now`, in deadline order, from the loop's one wheel:
    /// calls time out in the core, and each connection deadline is acted on as it comes out.
    /// One acted on may arm another that is due already (a reconnect with no delay): it fires
    /// in the same pass.
    pub(crate) fn handle_timeouts(&mut self, now: u64) {
        while let Some((index, kind)) = self.calls.poll_timeout(now) {
            // Out of the wheel: the connection no longer holds its key.
            let c = &mut self.conns[index];
            match kind {
                ConnTimer::Keepalive => c.keepalive_timer = None,
                _ => c.timer = None,
            }
            match kind {
                ConnTimer::Connect => self.fail(index, DisconnectReason::ConnectTimeout),
                ConnTimer::Close => {
                    log::debug!("connection {index}: close timeout, dropping the socket");
                    self.release(index);
                    self.publish_state(index);
                }
                ConnTimer::Reconnect => self.reconnect(index),
                ConnTimer::Keepalive => self.keepalive_due(index, now),
            }
        }
    }

    /// The keepalive deadline fired: ping, or give the peer up for dead.
    fn keepalive_due(&mut self, index: usize, now: u64) {
        let c = &mut self.conns[index];
        let (Some(keepalive), Socket::Open(ws), None) =
            (&mut c.session.keepalive, &mut c.socket, &c.session.ended)
        else {
            return;
        };
        match keepalive.handle_timeout(now) {
            KeepaliveAction::Wait => {}
            KeepaliveAction::Ping => match write_message(ws, Message::Ping(Default::default())) {
                // A full buffer leaves the ping out; the silence it would have probed still
                // counts against the peer.
                Ok(()) | Err(tungstenite::Error::WriteBufferFull(_)) => self.wrote(index),
                Err(e) => return self.fail(index, DisconnectReason::from_ws(&e)),
            },
            KeepaliveAction::Dead => return self.fail(index, DisconnectReason::KeepaliveTimeout),
        }
        let c = &mut self.conns[index];
        if let Some(keepalive) = &c.session.keepalive {
            let at = keepalive.next_deadline();
            c.keepalive_timer = Some(self.calls.arm_conn_timer(at, index, ConnTimer::Keepalive));
        }
    }
}

/// A duration in whole milliseconds (the core's ticks), saturating.
pub(crate) fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
