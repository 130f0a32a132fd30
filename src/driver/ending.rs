//! How a connection ends: the peer's close frame, a protocol violation (with the close code it
//! calls for), a loss (then a reconnect, or the end), a clean close, or the loop's shutdown —
//! and, whichever it is, every call and subscription on it told exactly once.

use tungstenite::error::ProtocolError;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

use crate::core::event::StateChange;
use crate::core::session::{CallsEnd, Ended};
use crate::driver::connection::Socket;
use crate::driver::context::Context;
use crate::error::{DisconnectReason, Error};

impl Context {
    /// The peer sent a close frame. Its calls fail now; the socket stays until the close
    /// handshake ends (or the close timeout) — unless the connection is to come back, which
    /// needs the socket slot: then the echoed close is pushed out and the socket dropped, which
    /// RFC 6455 §7.1.1 allows once both close frames have been sent.
    pub(crate) fn on_peer_close(&mut self, index: usize, reason: DisconnectReason) {
        let c = &mut self.conns[index];
        if c.session.ended.is_some() {
            return; // the answer to our own close
        }
        if c.session.reconnects() {
            if let Socket::Open(ws) = &mut c.socket {
                let _ = ws.flush();
            }
            return self.fail(index, reason);
        }
        self.cancel_conn_timers(index);
        let c = &mut self.conns[index];
        c.session.keepalive = None;
        c.clear_queue();
        let ended = Ended::Disconnected(reason.clone());
        let end = CallsEnd::Over(&ended);
        self.calls
            .handle_disconnect(c.id, |written| end.fate(written));
        c.session.ended = Some(ended);
        self.arm_close_timer(index);
        self.end_subscriptions(index, None, || Error::Disconnected(reason.clone()));
        self.change_state(index, StateChange::Disconnected(reason));
        self.change_state(index, StateChange::Closed);
    }

    /// tungstenite refused what the peer sent. Messages read before the violation and queued
    /// for the message handler are delivered first, in this turn's dispatch, so that what the
    /// handler sends in reply (an echo, an acknowledgement) leaves before the close frame; the
    /// connection reads nothing more meanwhile, and fails after the last delivery.
    pub(crate) fn on_violation(&mut self, index: usize, e: tungstenite::Error) {
        let c = &mut self.conns[index];
        if c.undelivered > 0 && c.session.ended.is_none() {
            c.violation = Some(Box::new(e));
            return;
        }
        self.fail_on_violation(index, &e);
    }

    /// After a dispatch delivered a connection's last queued message: fail it for the
    /// violation that waited for that (see `on_violation`), if it is still open.
    pub(crate) fn fail_deferred_violation(&mut self, index: usize) {
        let c = &mut self.conns[index];
        let Some(e) = c.violation.take() else {
            return;
        };
        if c.session.ended.is_none() && matches!(c.socket, Socket::Open(_)) {
            self.fail_on_violation(index, &e);
        }
    }

    /// tungstenite refused what the peer sent. RFC 6455 §7.1.7 ("_Fail the WebSocket
    /// Connection_"): send a close frame with the status code that names the fault (§7.4.1:
    /// 1002 protocol error, 1007 invalid payload, 1009 message too big) — tungstenite leaves
    /// that to us — then drop the connection.
    fn fail_on_violation(&mut self, index: usize, e: &tungstenite::Error) {
        let code = match e {
            tungstenite::Error::Capacity(_) => Some((CloseCode::Size, "message too big")),
            tungstenite::Error::Utf8(_) => Some((CloseCode::Invalid, "invalid UTF-8")),
            tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
            tungstenite::Error::Protocol(_) => Some((CloseCode::Protocol, "protocol error")),
            _ => None,
        };
        if let (Some((code, why)), Socket::Open(ws)) = (code, &mut self.conns[index].socket) {
            let frame = CloseFrame {
                code,
                reason: why.into(),
            };
            // Best effort: the socket is dropped next, whatever got out.
            if let Err(e) = ws.close(Some(frame)) {
                log::debug!("connection {index}: close frame {code} not sent: {e}");
            }
        }
        self.fail(index, DisconnectReason::from_ws(e));
    }

    /// The WebSocket ended cleanly (close handshake done): drop the socket.
    pub(crate) fn finish(&mut self, index: usize) {
        if self.conns[index].session.ended.is_none() {
            return self.fail(index, DisconnectReason::Reset);
        }
        self.cancel_conn_timers(index);
        self.release(index);
        self.publish_state(index);
        log::debug!("connection {index}: socket closed");
    }

    /// The connection is lost, or could not be opened. Calls already written fail with
    /// [`Error::Disconnected`] (the server may have acted on them: they are never re-sent).
    /// Then, with a reconnect policy, the calls not yet written wait for the next connection;
    /// without one (or once out of attempts), they fail too and the connection ends.
    pub(crate) fn fail(&mut self, index: usize, reason: DisconnectReason) {
        self.cancel_conn_timers(index);
        let c = &mut self.conns[index];
        c.socket = Socket::Gone;
        c.session.keepalive = None;
        c.violation = None;
        if c.session.ended.is_some() {
            // Ended before (a close handshake was under way): only the socket was left.
            self.release(index);
            return self.publish_state(index);
        }
        let end = CallsEnd::Interrupted(&reason);
        self.calls
            .handle_disconnect(self.conns[index].id, |written| end.fate(written));
        self.change_state(index, StateChange::Disconnected(reason.clone()));
        let reconnecting = self.schedule_reconnect(index);
        self.end_subscriptions(index, reconnecting.then_some(&reason), || {
            Error::Disconnected(reason.clone())
        });
        if !reconnecting {
            self.end(index, Ended::Disconnected(reason));
        }
    }

    /// The connection is over for good: what still waits fails, everything is dropped.
    fn end(&mut self, index: usize, ended: Ended) {
        let c = &mut self.conns[index];
        self.calls
            .handle_disconnect(c.id, |written| CallsEnd::Over(&ended).fate(written));
        c.session.ended = Some(ended);
        self.release(index);
        self.change_state(index, StateChange::Closed);
    }

    /// The loop shuts down: fail the connection's calls with [`Error::Shutdown`], drop it.
    pub(crate) fn shut_down_conn(&mut self, index: usize) {
        self.cancel_conn_timers(index);
        self.release(index);
        self.calls
            .handle_disconnect(self.conns[index].id, |written| {
                CallsEnd::Shutdown.fate(written)
            });
        self.end_subscriptions(index, None, || Error::Shutdown);
        let c = &mut self.conns[index];
        if c.session.ended.is_none() {
            c.session.ended = Some(Ended::Closed);
            self.change_state(index, StateChange::Closed);
        } else {
            self.publish_state(index);
        }
    }
}
