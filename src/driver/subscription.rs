//! How server notifications reach user code: handlers by method name, and subscriptions — a
//! subscribe call whose answer names a key, then every notification carrying that key. The
//! engine routes them as they are read; this file holds the public operations and keeps the
//! handlers.

use serde::Serialize;

use crate::core::conn_id::ConnId;
use crate::core::event::{SubscribeOptions, SubscriptionEvent, SubscriptionId};
use crate::core::notification::Notification;
use crate::driver::context::Context;
use crate::error::Error;

impl Context {
    /// Sets the handler of notifications of `method` on `conn` (JSON-RPC 2.0: messages with a
    /// `method` and no `id`). Notifications that belong to a subscription go to the
    /// subscription instead; those nobody handles go to the message handler as pushes
    /// ([`UnmatchedReason::NoId`](crate::UnmatchedReason::NoId)).
    ///
    /// Notifications reach their handlers in arrival order, in order with everything else the
    /// connection delivers: a notification that preceded an answer on the wire runs before
    /// that answer's callback.
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
        self.engine.watch_method(conn, method)
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
        let now = self.now_tick_fresh();
        let sub = self
            .engine
            .subscribe(now, conn, method, params, unsubscribe_method, options)?;
        self.sub_handlers.insert(sub.raw(), Box::new(on_event));
        self.pump();
        Ok(sub)
    }

    /// Ends a subscription: its handler receives `Ended(Error::Cancelled)`, and the server is
    /// sent the unsubscribe call (at once if subscribed; when the subscribe answer arrives, if
    /// it is still in flight). Items read before the call are still delivered, ahead of
    /// the `Ended`; items read after it are counted and dropped. Returns `false` if the
    /// subscription had already ended.
    pub fn unsubscribe(&mut self, sub: SubscriptionId) -> bool {
        let now = self.now_tick_fresh();
        let ended = self.engine.unsubscribe(now, sub);
        self.pump();
        ended
    }
}
