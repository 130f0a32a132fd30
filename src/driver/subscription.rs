//! How server notifications reach user code: handlers by method name, and subscriptions — a
//! subscribe call whose answer names a key, then every notification carrying that key.

use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::config::CallOptions;
use crate::core::call_id::CallId;
use crate::core::conn_id::ConnId;
use crate::core::event::{SubscribeOptions, SubscriptionEvent, SubscriptionId};
use crate::core::notification::Notification;
use crate::core::request::Request;
use crate::core::response::Response;
use crate::core::subscription::{SubState, SubscriptionEntry};
use crate::core::unmatched::{Unmatched, UnmatchedReason};
use crate::driver::context::{Context, Inbound, Reply};
use crate::error::{DisconnectReason, Error};

impl Context {
    /// Sets the handler of notifications of `method` on `conn` (JSON-RPC 2.0: messages with a
    /// `method` and no `id`). Notifications that belong to a subscription go to the
    /// subscription instead; those nobody handles go to the message handler as pushes
    /// ([`UnmatchedReason::NoId`]).
    ///
    /// Notifications reach their handlers in arrival order, after the callbacks of the calls
    /// answered in the same turn (so a subscription's first items never overtake its
    /// subscribe answer); a notification that preceded an answer on the wire may therefore run
    /// after that answer's callback.
    ///
    /// ```no_run
    /// # use rpcloop::*;
    /// # fn f(ev: &mut EventLoop, conn: ConnId) -> Result<(), Error> {
    /// ev.on_notification(conn, "ticker", |_ctx, n| {
    ///     let price: f64 = n.params().unwrap_or_default();
    ///     println!("price {price}");
    /// })?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::UnknownConnection`] if `conn` is not a connection of this loop.
    pub fn on_notification<H>(
        &mut self,
        conn: ConnId,
        method: &str,
        handler: H,
    ) -> Result<(), Error>
    where
        H: FnMut(&mut Context, Notification) + 'static,
    {
        let c = self.live_mut(conn).ok_or(Error::UnknownConnection)?;
        c.handlers
            .notifications
            .insert(method.into(), Some(Box::new(handler)));
        Ok(())
    }

    /// Subscribes with default options; see [`subscribe_with`](Self::subscribe_with).
    ///
    /// # Errors
    /// As [`subscribe_with`](Self::subscribe_with).
    pub fn subscribe<P, F>(
        &mut self,
        conn: ConnId,
        method: &str,
        params: P,
        unsubscribe_method: &str,
        on_event: F,
    ) -> Result<SubscriptionId, Error>
    where
        P: Serialize,
        F: FnMut(&mut Context, SubscriptionEvent) + 'static,
    {
        self.subscribe_with(
            conn,
            method,
            params,
            unsubscribe_method,
            SubscribeOptions::default(),
            on_event,
        )
    }

    /// Subscribes to a stream of notifications (the JSON-RPC pattern of Ethereum and Solana
    /// nodes): calls `method` with `params`, takes the call's result as the subscription's key,
    /// and from then on hands every notification whose `params.subscription` is that key to
    /// `on_event`, in arrival order, as [`SubscriptionEvent::Item`]. Keys are compared as the
    /// JSON text the server wrote (strings and numbers, as servers use, compare exactly). `on_event` receives exactly
    /// one [`SubscriptionEvent::Ended`] last. [`unsubscribe`](Self::unsubscribe) calls
    /// `unsubscribe_method` with `[key]`.
    ///
    /// ```no_run
    /// # use rpcloop::*;
    /// # fn f(ev: &mut EventLoop, conn: ConnId) -> Result<(), Error> {
    /// let sub = ev.subscribe(conn, "eth_subscribe", ["newHeads"], "eth_unsubscribe", |_ctx, event| {
    ///     match event {
    ///         SubscriptionEvent::Item(n) => println!("head {}", n.item_text()),
    ///         SubscriptionEvent::Ended(why) => println!("ended: {why}"),
    ///         _ => {}
    ///     }
    /// })?;
    /// // ... later
    /// ev.unsubscribe(sub);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`submit`](Self::submit) for the subscribe call; [`Error::Encode`] if `params` do not
    /// serialize. On error nothing was subscribed and `on_event` is dropped unrun.
    pub fn subscribe_with<P, F>(
        &mut self,
        conn: ConnId,
        method: &str,
        params: P,
        unsubscribe_method: &str,
        options: SubscribeOptions,
        on_event: F,
    ) -> Result<SubscriptionId, Error>
    where
        P: Serialize,
        F: FnMut(&mut Context, SubscriptionEvent) + 'static,
    {
        let params = serde_json::value::to_raw_value(&params).map_err(Error::Encode)?;
        let id = self.next_subscription;
        let call = self.send_subscribe(conn, id, 0, method, &params, options.timeout)?;
        self.next_subscription += 1;
        self.subscriptions.insert(
            id,
            SubscriptionEntry {
                conn,
                method: method.into(),
                params,
                unsubscribe_method: unsubscribe_method.into(),
                options,
                state: SubState::Subscribing { attempt: 0, call },
                key: None,
                ending: false,
                attempt: 0,
                handler: Some(Box::new(on_event)),
            },
        );
        Ok(SubscriptionId::new(id))
    }

    /// Ends a subscription: its handler receives `Ended(Error::Cancelled)`, and the server is
    /// sent the unsubscribe call (at once if subscribed; when the subscribe answer arrives, if
    /// it is still in flight). Items already on their way are counted and dropped. Returns
    /// `false` if the subscription had already ended.
    pub fn unsubscribe(&mut self, sub: SubscriptionId) -> bool {
        let Some(s) = self.subscriptions.get_mut(&sub.raw()) else {
            return false;
        };
        if s.ending {
            return false; // its end is queued already
        }
        let ended = SubState::Ended { awaiting: false };
        match std::mem::replace(&mut s.state, ended) {
            SubState::Ended { awaiting } => {
                s.state = SubState::Ended { awaiting };
                return false;
            }
            SubState::Active => {
                let (conn, method) = (s.conn, s.unsubscribe_method.clone());
                if let Some(key) = s.key.take() {
                    if let Some(c) = self.live_mut(conn) {
                        c.subscription_keys.remove(&key);
                    }
                    self.send_unsubscribe(conn, &method, &key);
                }
            }
            SubState::Subscribing { call, .. } => {
                // Never sent: withdrawn. Sent: its answer will name the key to unsubscribe.
                let sent = !self.calls.is_queued(call);
                if !sent {
                    self.calls.handle_cancel(call);
                }
                s.state = SubState::Ended { awaiting: sent };
            }
            SubState::Interrupted => {}
        }
        self.inbound.push_back(Inbound::Subscription(
            sub.raw(),
            SubscriptionEvent::Ended(Error::Cancelled),
        ));
        true
    }

    /// Sends subscription `id`'s subscribe call (attempt `attempt`).
    fn send_subscribe(
        &mut self,
        conn: ConnId,
        id: u64,
        attempt: u32,
        method: &str,
        params: &RawValue,
        timeout: Option<Duration>,
    ) -> Result<CallId, Error> {
        let payload =
            serde_json::to_string(&Request::new(method, params)).map_err(Error::Encode)?;
        let callback = Box::new(move |ctx: &mut Context, result: Result<Response, Error>| {
            ctx.on_subscribe_answer(id, attempt, result);
        });
        self.try_submit(
            conn,
            &payload,
            CallOptions { timeout },
            Reply::Callback(callback),
        )
        .map_err(|(e, _)| e)
    }

    /// Sends `method([key])`; its answer is only logged.
    fn send_unsubscribe(&mut self, conn: ConnId, method: &str, key: &str) {
        let params = format!("[{key}]");
        let Ok(params) = RawValue::from_string(params) else {
            return; // a key is the JSON text of a result: always valid
        };
        let Ok(payload) = serde_json::to_string(&Request::new(method, &*params)) else {
            return;
        };
        let callback = Box::new(|_: &mut Context, result: Result<Response, Error>| {
            if let Err(e) = result {
                log::debug!("unsubscribe failed: {e}");
            }
        });
        let reply = Reply::Callback(callback);
        if let Err((e, _)) = self.try_submit(conn, &payload, CallOptions::default(), reply) {
            log::debug!("unsubscribe not sent: {e}");
        }
    }

    /// The answer to a subscribe call.
    fn on_subscribe_answer(&mut self, id: u64, attempt: u32, result: Result<Response, Error>) {
        let Some(s) = self.subscriptions.get_mut(&id) else {
            return;
        };
        let current = matches!(s.state, SubState::Subscribing { attempt: a, .. } if a == attempt);
        match result {
            Ok(answer) if current => {
                let key: Box<str> = answer.text().into();
                if let Some(c) = self
                    .conns
                    .get_mut(s.conn.index())
                    .filter(|c| c.id == s.conn)
                {
                    if let Some(old) = s.key.take() {
                        c.subscription_keys.remove(&old);
                    }
                    c.subscription_keys.insert(key.clone(), id);
                }
                s.key = Some(key);
                s.state = SubState::Active;
                if attempt > 0 {
                    // Now, not queued: items read right behind this answer are queued already
                    // and must come after it.
                    self.run_subscription_handler(id, SubscriptionEvent::Resubscribed);
                }
            }
            Err(e) if current && !s.ending => {
                s.state = SubState::Ended { awaiting: false };
                self.inbound
                    .push_back(Inbound::Subscription(id, SubscriptionEvent::Ended(e)));
            }
            // Unsubscribed while the call was in flight: the server subscribed anyway.
            result if matches!(s.state, SubState::Ended { awaiting: true }) => {
                let (conn, method) = (s.conn, s.unsubscribe_method.clone());
                if s.handler.is_none() {
                    self.subscriptions.remove(&id); // its Ended was delivered already
                } else {
                    s.state = SubState::Ended { awaiting: false };
                }
                if let Ok(answer) = result {
                    self.send_unsubscribe(conn, &method, answer.text());
                }
            }
            _ => {}
        }
    }

    /// Runs a subscription's handler; drops the subscription after its `Ended` event.
    pub(crate) fn run_subscription_handler(&mut self, id: u64, event: SubscriptionEvent) -> bool {
        if matches!(
            event,
            SubscriptionEvent::Interrupted(_) | SubscriptionEvent::Ended(_)
        ) {
            // Items read before this event were routed; later ones are not for this key.
            if let Some(s) = self.subscriptions.get_mut(&id) {
                if s.ending {
                    s.ending = false;
                    s.state = match event {
                        SubscriptionEvent::Interrupted(_) => SubState::Interrupted,
                        _ => SubState::Ended { awaiting: false },
                    };
                }
                if let Some(key) = s.key.take() {
                    if let Some(c) = self
                        .conns
                        .get_mut(s.conn.index())
                        .filter(|c| c.id == s.conn)
                    {
                        c.subscription_keys.remove(&key);
                    }
                }
            }
        }
        let Some(mut handler) = self
            .subscriptions
            .get_mut(&id)
            .and_then(|s| s.handler.take())
        else {
            return false;
        };
        let last = matches!(event, SubscriptionEvent::Ended(_));
        handler(self, event);
        if !last {
            if let Some(s) = self.subscriptions.get_mut(&id) {
                s.handler = Some(handler);
            }
        } else if !matches!(
            self.subscriptions.get(&id).map(|s| &s.state),
            Some(SubState::Ended { awaiting: true })
        ) {
            self.subscriptions.remove(&id);
        }
        true
    }

    /// Routes a notification: to the subscription its key names, else to the handler of its
    /// method, else to the message handler as a push.
    pub(crate) fn route_notification(&mut self, notification: Notification) -> bool {
        let index = notification.conn().index();
        let c = &mut self.conns[index];
        let sub = notification
            .subscription_key()
            .and_then(|key| c.subscription_keys.get(key).copied());
        if let Some(id) = sub {
            c.session.stats.notifications += 1;
            return self.run_subscription_handler(id, SubscriptionEvent::Item(notification));
        }
        let method = notification.method();
        if let Some(slot) = c.handlers.notifications.get_mut(&*method) {
            if let Some(mut handler) = slot.take() {
                let method: Box<str> = method.into();
                c.session.stats.notifications += 1;
                handler(self, notification);
                if let Some(slot) = self.conns[index].handlers.notifications.get_mut(&method) {
                    slot.get_or_insert(handler);
                }
                return true;
            }
        }
        if notification.subscription_key().is_some() {
            // A late item (after unsubscribe) or a key we never subscribed to.
            c.session.stats.unknown_subscription += 1;
        }
        // A push: to the message handler now, in arrival order (not queued behind what was
        // read after it).
        c.session.stats.count_unmatched(UnmatchedReason::NoId);
        if c.handlers.message.is_none() {
            log::debug!("connection {index}: unhandled notification {method}");
            return false;
        }
        let message = Unmatched::text(
            notification.conn(),
            UnmatchedReason::NoId,
            notification.into_frame(),
        );
        self.run_message_handler(message)
    }

    /// The connection's subscriptions lose it: with `resume` (the connection is coming back),
    /// those made with `resubscribe` are interrupted; the others end with `error()`.
    pub(crate) fn end_subscriptions(
        &mut self,
        index: usize,
        resume: Option<&DisconnectReason>,
        error: impl Fn() -> Error,
    ) {
        for (&id, s) in &mut self.subscriptions {
            if s.conn.index() != index || matches!(s.state, SubState::Ended { .. }) {
                continue;
            }
            if let SubState::Subscribing { call, .. } = s.state {
                if resume.is_some() && self.calls.is_queued(call) {
                    // Never reached the server: its call waits for the connection, like any
                    // call not yet written; nothing was interrupted.
                    continue;
                }
                // Still pending (written, or queued): withdrawn, it never answers. Not pending:
                // its answer is queued already, with items read behind it; it lands first
                // (items reach the handler), and this event settles the state when dispatched.
                if !self.calls.handle_cancel(call) {
                    s.ending = true;
                    let event = match resume {
                        Some(reason) if s.options.resubscribe => {
                            SubscriptionEvent::Interrupted(reason.clone())
                        }
                        _ => SubscriptionEvent::Ended(error()),
                    };
                    self.inbound.push_back(Inbound::Subscription(id, event));
                    continue;
                }
            }
            let event = match resume {
                Some(reason) if s.options.resubscribe => {
                    if matches!(s.state, SubState::Interrupted) {
                        continue; // told already: a reconnect attempt failed
                    }
                    s.state = SubState::Interrupted;
                    SubscriptionEvent::Interrupted(reason.clone())
                }
                _ => {
                    s.state = SubState::Ended { awaiting: false };
                    SubscriptionEvent::Ended(error())
                }
            };
            self.inbound.push_back(Inbound::Subscription(id, event));
        }
    }

    /// The connection opened again: subscribe again where asked.
    pub(crate) fn resubscribe(&mut self, index: usize) {
        let due: Vec<u64> = self
            .subscriptions
            .iter()
            .filter(|(_, s)| s.conn.index() == index && matches!(s.state, SubState::Interrupted))
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            let Some(s) = self.subscriptions.get_mut(&id) else {
                continue;
            };
            s.attempt += 1;
            let attempt = s.attempt;
            let (conn, method, params, timeout) = (
                s.conn,
                s.method.clone(),
                s.params.clone(),
                s.options.timeout,
            );
            let sent = self.send_subscribe(conn, id, attempt, &method, &params, timeout);
            let Some(s) = self.subscriptions.get_mut(&id) else {
                continue;
            };
            match sent {
                Ok(call) => s.state = SubState::Subscribing { attempt, call },
                Err(e) => {
                    s.state = SubState::Ended { awaiting: false };
                    self.inbound
                        .push_back(Inbound::Subscription(id, SubscriptionEvent::Ended(e)));
                }
            }
        }
    }
}
