//! The values that cross from the core to the application: how a connection's life goes
//! ([`ConnState`], [`StateChange`]) and what a subscription delivers ([`SubscriptionId`],
//! [`SubscriptionEvent`], [`SubscribeOptions`]).

use std::fmt;
use std::time::Duration;

use crate::core::notification::Notification;
use crate::error::{DisconnectReason, Error};

/// Where a connection is in its life, as [`Context::state`](crate::Context::state) reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnState {
    /// TCP connect or WebSocket handshake in progress; calls submitted now wait for it.
    Connecting,
    /// Open: calls are written as they are submitted.
    Open,
    /// Lost, waiting out the reconnect policy's delay before connecting again; calls submitted
    /// now wait for the next connection.
    Reconnecting,
    /// A close handshake is in progress; new calls are refused.
    Closing,
    /// Closed by this side.
    Closed,
    /// Ended without this side asking for it.
    Disconnected(DisconnectReason),
}

/// A step in a connection's life, as its state handler receives it
/// ([`Context::set_state_handler`](crate::Context::set_state_handler)).
///
/// A connection goes `Connecting`, `Open`, and, when it ends without this side asking,
/// `Disconnected(reason)`; then either `Reconnecting { .. }` and `Connecting` again (with a
/// [`ReconnectPolicy`](crate::ReconnectPolicy)), or `Closed`. A connection that cannot be
/// opened goes `Connecting`, `Disconnected(reason)`. `Closed` is always the last event: the
/// connection is over for good (closed by this side, lost without a reconnect policy, or out
/// of reconnect attempts).
///
/// State changes are dispatched in causal order with the loop's other events: every call
/// completion, message and subscription event that happened before the change is dispatched
/// before it. An answer read before the peer's close completes before `Disconnected`; the
/// calls that the loss fails complete before it too, and their callbacks see the connection's
/// new state.
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

/// A subscription made with [`Context::subscribe`](crate::Context::subscribe); pass it to [`Context::unsubscribe`](crate::Context::unsubscribe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubscriptionId(u64);

impl SubscriptionId {
    pub(crate) fn new(raw: u64) -> Self {
        SubscriptionId(raw)
    }

    pub(crate) fn raw(self) -> u64 {
        self.0
    }
}

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "subscription {}", self.0)
    }
}

/// What a subscription's handler receives.
///
/// Items arrive in the order the server sent them. Exactly one `Ended` closes every
/// subscription, after which the handler is dropped.
#[derive(Debug)]
#[non_exhaustive]
pub enum SubscriptionEvent {
    /// A notification for this subscription; its payload is [`Notification::item`].
    Item(Notification),
    /// The connection was lost; with [`SubscribeOptions::resubscribe`] and a reconnect policy,
    /// the subscription is made again when the connection comes back, and items resume (items
    /// sent meanwhile are lost).
    Interrupted(DisconnectReason),
    /// Subscribed again after an interruption (the key may have changed).
    Resubscribed,
    /// The subscription is over: the subscribe call failed (`Remote`, `Timeout`...), the
    /// connection ended (`Disconnected`, `Closed`, `Shutdown`), or
    /// [`unsubscribe`](crate::Context::unsubscribe) was called (`Cancelled`).
    Ended(Error),
}

/// How a subscription is made ([`Context::subscribe_with`](crate::Context::subscribe_with)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// When the connection is lost and comes back (a
    /// [`ReconnectPolicy`](crate::ReconnectPolicy)), subscribe again instead of ending.
    /// Default: `false`.
    pub resubscribe: bool,
    /// The subscribe call's timeout; `None` takes the connection's default.
    pub timeout: Option<Duration>,
}
