//! [`Context::dispatch`]: the engine's events, in the order things happened, to the user's
//! callbacks and handlers, with no internal borrow held: a handler may submit, cancel, close
//! and set handlers freely. Each handler is taken out while it runs and put back after
//! (unless it set another meanwhile); it is dropped after its last event.

use crate::core::conn_id::ConnId;
use crate::core::event::{StateChange, SubscriptionEvent, SubscriptionId};
use crate::core::notification::Notification;
use crate::core::output::Event;
use crate::core::unmatched::{Unmatched, UnmatchedReason};
use crate::driver::context::{Context, Reply};

/// Queued bytes past which the dispatch writes before running the next handler.
const PUMP_AT: usize = 4 << 10;

impl Context {
    /// Runs the callbacks and handlers of every queued event (and of those they queue), then
    /// writes what they sent. Returns how many ran.
    pub(crate) fn dispatch(&mut self) -> usize {
        let mut ran = 0;
        loop {
            while let Some(event) = self.engine.poll_event() {
                ran += usize::from(self.run(event));
                // Small frames are written together once the events run out; a burst of large
                // ones goes into the socket's buffer as it comes, so that it does not pile up
                // (their frame arena's chunks are reused once written).
                if self.engine.queued_bytes() >= PUMP_AT {
                    self.pump();
                }
            }
            // What the engine asked for on the way (a violation waits for this pump before it
            // closes).
            self.pump();
            if !self.engine.has_events() {
                return ran;
            }
        }
    }

    /// Runs the callback or handler of one event; `false` if none ran.
    fn run(&mut self, event: Event<Reply>) -> bool {
        match event {
            Event::Completed {
                conn,
                id,
                token,
                result,
            } => {
                log::trace!("{conn}: call {id} completed");
                token.complete(self, result);
                true
            }
            Event::BatchCompleted { token, results, .. } => match token {
                Reply::Batch(callback) => {
                    callback(self, results);
                    true
                }
                // A batch is only ever submitted with a batch callback.
                _ => false,
            },
            Event::State(conn, change) => self.run_state_handler(conn, change),
            Event::Unmatched(message) => self.run_message_handler(message),
            Event::Notification(notification) => self.run_notification_handler(notification),
            Event::Subscription(sub, event) => self.run_subscription_handler(sub, event),
            Event::Released(conn) => {
                // Its last event: the socket and handlers go, the slot may hold another.
                let index = conn.index();
                if let Some(slot) = self.conns.get_mut(index) {
                    *slot = None;
                }
                self.to_flush.retain(|&listed| listed != index);
                self.to_read.retain(|&listed| listed != index);
                false
            }
        }
    }

    fn run_state_handler(&mut self, conn: ConnId, change: StateChange) -> bool {
        let Some(mut handler) = self.live_mut(conn).and_then(|c| c.handlers.state.take()) else {
            return false;
        };
        let last = change == StateChange::Closed;
        handler(self, conn, change);
        if !last {
            if let Some(c) = self.live_mut(conn) {
                // Keep a handler the callback installed meanwhile.
                c.handlers.state.get_or_insert(handler);
            }
        }
        true
    }

    /// Runs the connection's message handler, if it has one; logs the message otherwise.
    fn run_message_handler(&mut self, message: Unmatched) -> bool {
        let conn = message.conn();
        let Some(mut handler) = self.live_mut(conn).and_then(|c| c.handlers.message.take()) else {
            log_unhandled(&message);
            return false;
        };
        handler(self, message);
        if let Some(c) = self.live_mut(conn) {
            // Keep a handler the callback installed meanwhile.
            c.handlers.message.get_or_insert(handler);
        }
        true
    }

    /// Runs the handler of the notification's method; one that is running (a handler that
    /// drives the loop) or gone hands it to the message handler as a push.
    fn run_notification_handler(&mut self, notification: Notification) -> bool {
        let conn = notification.conn();
        let method = notification.method();
        let handler = self
            .live_mut(conn)
            .and_then(|c| c.handlers.notifications.get_mut(&*method))
            .and_then(Option::take);
        let Some(mut handler) = handler else {
            let message = Unmatched::text(conn, UnmatchedReason::NoId, notification.into_frame());
            return self.run_message_handler(message);
        };
        let method: Box<str> = method.into();
        handler(self, notification);
        if let Some(slot) = self
            .live_mut(conn)
            .and_then(|c| c.handlers.notifications.get_mut(&method))
        {
            slot.get_or_insert(handler);
        }
        true
    }

    /// Runs a subscription's handler; drops it after its `Ended` event.
    fn run_subscription_handler(&mut self, sub: SubscriptionId, event: SubscriptionEvent) -> bool {
        let Some(mut handler) = self.sub_handlers.remove(&sub.raw()) else {
            return false;
        };
        let last = matches!(event, SubscriptionEvent::Ended(_));
        handler(self, event);
        if !last {
            self.sub_handlers.insert(sub.raw(), handler);
        }
        true
    }
}

/// A message nobody handles: counted already, logged here.
fn log_unhandled(message: &Unmatched) {
    if !log::log_enabled!(log::Level::Debug) {
        return;
    }
    let (conn, reason) = (message.conn(), message.reason());
    match message.as_text() {
        Some(text) if reason != UnmatchedReason::Binary => {
            let cut = text.char_indices().nth(200).map_or(text.len(), |(i, _)| i);
            log::debug!("{conn}: unmatched message ({reason}): {}", &text[..cut]);
        }
        _ => log::debug!("{conn}: unmatched message ({reason})"),
    }
}
