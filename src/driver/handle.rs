//! [`Handle`]: calls from other threads, through the loop's [`Mailbox`](super::mailbox).
//!
//! The loop runs at most [`DRAIN_CAP`] commands a turn and keeps the rest for the next turn,
//! which then does not sleep, so one busy producer cannot starve the sockets. Results cross
//! back through each call's [`Slot`](super::call_slot), and subscription events through its
//! bounded queue (`subscription_queue.rs`).

use std::sync::Arc;

use serde::Serialize;

use crate::config::CallOptions;
use crate::core::conn_id::ConnId;
use crate::core::event::{ConnState, SubscriptionEvent};
use crate::core::response::Response;
use crate::driver::call_slot::{PendingCall, Slot};
use crate::driver::context::{Command, Context, Reply, SendReply, Shared};
use crate::driver::mailbox::lock;
use crate::driver::subscription_queue::{QueueOptions, SubQueue, Subscription};
use crate::error::Error;

/// Commands one turn runs at most; the rest wait for the next turn.
const DRAIN_CAP: usize = 1_024;

/// Submits calls to an [`EventLoop`](crate::EventLoop) from any thread.
///
/// Cheap to clone (one `Arc`), `Send + Sync`. Calls made through it cross to the loop through a
/// queue and are written during the loop's next [`turn`](crate::EventLoop::turn): the loop's
/// thread must keep turning for them to progress. When the loop shuts down or is dropped,
/// every call made through any handle completes with [`Error::Shutdown`], and later calls fail
/// with it at once.
///
/// ```no_run
/// # fn f(ev: &mut rpcloop::EventLoop, conn: rpcloop::ConnId) {
/// let handle = ev.handle();
/// std::thread::spawn(move || {
///     let answer = handle.call(conn, serde_json::json!({"op": "ping"})).wait();
///     println!("{answer:?}");
/// });
/// // ... and the loop's thread keeps calling ev.turn(..).
/// # }
/// ```
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Handle { shared }
    }

    /// Makes a call with the connection's default timeout. See [`call_with`](Self::call_with).
    pub fn call<M: Serialize>(&self, conn: ConnId, message: M) -> PendingCall {
        self.call_with(conn, message, CallOptions::default())
    }

    /// Makes a call: `message` is serialized on this thread, then handed to the loop. The
    /// returned [`PendingCall`] is a `Future` and can be waited on; it completes exactly once,
    /// with the answer or with the same errors as
    /// [`Context::submit_with`](crate::Context::submit_with) (a refusal arrives as the result).
    pub fn call_with<M: Serialize>(
        &self,
        conn: ConnId,
        message: M,
        options: CallOptions,
    ) -> PendingCall {
        let payload = match serde_json::to_string(&message) {
            Ok(payload) => payload,
            Err(e) => return PendingCall::failed(Error::Encode(e)),
        };
        let slot = Arc::new(Slot::default());
        let command = Command::Submit {
            conn,
            payload,
            options,
            reply: SendReply::Slot(slot.clone()),
        };
        match self.shared.send(command) {
            Ok(()) => PendingCall::new(slot, self.shared.clone()),
            Err(_) => PendingCall::failed(Error::Shutdown),
        }
    }

    /// Submits a call whose `callback` runs on the loop thread, exactly once, like one given
    /// to [`Context::submit`](crate::Context::submit). A refusal by the loop (connection
    /// closed, busy...) reaches the callback as its result.
    ///
    /// # Errors
    /// [`Error::Encode`] if `message` does not serialize, [`Error::Shutdown`] if the loop has
    /// shut down; in both cases the callback is dropped unrun.
    pub fn submit<M, F>(&self, conn: ConnId, message: M, callback: F) -> Result<(), Error>
    where
        M: Serialize,
        F: FnOnce(&mut Context, Result<Response, Error>) + Send + 'static,
    {
        let payload = serde_json::to_string(&message).map_err(Error::Encode)?;
        let command = Command::Submit {
            conn,
            payload,
            options: CallOptions::default(),
            reply: SendReply::Callback(Box::new(callback)),
        };
        self.shared.send(command).map_err(|_| Error::Shutdown)
    }

    /// Asks the loop to close a connection (see [`Context::close`](crate::Context::close)).
    ///
    /// # Errors
    /// [`Error::Shutdown`] if the loop has shut down.
    pub fn close(&self, conn: ConnId) -> Result<(), Error> {
        self.shared
            .send(Command::Close(conn))
            .map_err(|_| Error::Shutdown)
    }

    /// Subscribes from this thread (see [`Context::subscribe`](crate::Context::subscribe)):
    /// the events arrive in a bounded queue this thread drains. A refusal (the connection is
    /// closed, `params` do not serialize, the loop shut down...) arrives as the queue's one
    /// `Ended` event.
    pub fn subscribe<P: Serialize>(
        &self,
        conn: ConnId,
        method: &str,
        params: P,
        unsubscribe_method: &str,
        options: QueueOptions,
    ) -> Subscription {
        let queue = Arc::new(SubQueue::new(&options));
        let subscription = Subscription::new(queue.clone(), self.shared.clone());
        let params = match serde_json::value::to_raw_value(&params) {
            Ok(params) => params,
            Err(e) => {
                queue.push(SubscriptionEvent::Ended(Error::Encode(e)));
                return subscription;
            }
        };
        let command = Command::Subscribe {
            conn,
            method: method.to_owned(),
            params,
            unsubscribe_method: unsubscribe_method.to_owned(),
            options: options.subscribe,
            queue: queue.clone(),
        };
        if self.shared.send(command).is_err() {
            queue.push(SubscriptionEvent::Ended(Error::Shutdown));
        }
        subscription
    }

    /// The connection's state as the loop last published it; `None` for an unknown connection,
    /// or one whose slot holds a later connection (see [`ConnId`]).
    pub fn state(&self, conn: ConnId) -> Option<ConnState> {
        match lock(&self.shared.states).get(conn.index()) {
            Some(Some((id, state))) if *id == conn => Some(state.clone()),
            _ => None,
        }
    }
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").finish_non_exhaustive()
    }
}

impl Context {
    /// A handle through which other threads make calls on this loop.
    pub fn handle(&self) -> Handle {
        Handle::new(self.shared.clone())
    }

    /// Runs queued commands from other threads: everything queued, up to [`DRAIN_CAP`] a turn.
    /// Their writes leave together at the end of the turn.
    pub(crate) fn drain_commands(&mut self) {
        // Always take the shared queue, even with leftovers from the last turn: a producer
        // wakes the loop only when it finds the queue empty, so commands left in it would
        // never be taken (a lost wake-up).
        self.shared.mailbox.drain_into(&mut self.backlog);
        for _ in 0..DRAIN_CAP {
            let Some(command) = self.backlog.pop_front() else {
                break;
            };
            self.run_command(command);
        }
    }

    fn run_command(&mut self, command: Command) {
        match command {
            Command::Submit {
                conn,
                payload,
                options,
                reply,
            } => {
                let slot = match &reply {
                    SendReply::Slot(slot) => Some(slot.clone()),
                    SendReply::Callback(_) => None,
                };
                match self.try_submit(conn, &payload, options, reply.into()) {
                    Ok(id) => {
                        if let Some(slot) = slot {
                            slot.set_id(id);
                        }
                    }
                    // The caller is on another thread: the refusal is the call's one completion.
                    Err((error, reply)) => reply.complete(self, Err(error)),
                }
            }
            Command::Cancel(slot) => {
                if let Some(id) = slot.live_id() {
                    self.cancel(id);
                }
            }
            Command::Close(conn) => {
                if let Err(e) = self.close(conn) {
                    log::debug!("close from a handle: {e}");
                }
            }
            Command::Subscribe {
                conn,
                method,
                params,
                unsubscribe_method,
                options,
                queue,
            } => {
                let sink = queue.clone();
                let on_event = move |ctx: &mut Context, event| {
                    // Overflow under `Overflow::End`: the consumer is told; stop the server.
                    if !sink.push(event) {
                        if let Some(sub) = sink.sub() {
                            ctx.unsubscribe(sub);
                        }
                    }
                };
                match self.subscribe_with(
                    conn,
                    &method,
                    &*params,
                    &unsubscribe_method,
                    options,
                    on_event,
                ) {
                    Ok(sub) => queue.set_sub(sub),
                    Err(e) => {
                        queue.push(SubscriptionEvent::Ended(e));
                    }
                }
            }
            Command::Unsubscribe(queue) => {
                if let Some(sub) = queue.sub() {
                    self.unsubscribe(sub);
                }
            }
        }
    }

    /// Refuses further commands and completes every queued call with [`Error::Shutdown`].
    pub(crate) fn shut_down_commands(&mut self) {
        let queued = self.shared.mailbox.shut_down();
        let mut commands = std::mem::take(&mut self.backlog);
        commands.extend(queued);
        for command in commands {
            match command {
                Command::Submit { reply, .. } => {
                    Reply::from(reply).complete(self, Err(Error::Shutdown));
                }
                Command::Subscribe { queue, .. } => {
                    queue.push(SubscriptionEvent::Ended(Error::Shutdown));
                }
                _ => {}
            }
        }
    }
}
