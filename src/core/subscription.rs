//! [`Subscription`]: what the engine keeps of one subscription: how it was made, where it is
//! in its life ([`SubState`]), and the key its items carry.
//!
//! The engine decides every step on it: the subscribe call's answer names the key (handled
//! when the answer is read, so items read right behind it are routed to it); a connection
//! lost interrupts it or ends it; an open subscribes again; `unsubscribe` ends it. Exactly one
//! `Ended` is told per subscription, and nothing after it.

use serde_json::value::RawValue;

use crate::core::call_id::CallId;
use crate::core::conn_id::ConnId;
use crate::core::event::SubscribeOptions;

/// Where a subscription is in its life. A subscription that has told `Ended` is gone from the
/// table, except [`SubState::Abandoned`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SubState {
    /// The subscribe call of the current attempt is pending.
    Subscribing { call: CallId },
    /// Subscribed under `key` (the JSON text of the subscribe call's result).
    Active { key: Box<str> },
    /// The connection was lost; subscribing again when it opens.
    Interrupted,
    /// Unsubscribed (its `Ended` told) while its subscribe call was out: the entry stays to
    /// unsubscribe on the server when the answer names the key.
    Abandoned { call: CallId },
}

/// A subscription of the loop.
#[derive(Debug)]
pub(crate) struct Subscription {
    pub(crate) conn: ConnId,
    pub(crate) method: Box<str>,
    pub(crate) params: Box<RawValue>,
    pub(crate) unsubscribe_method: Box<str>,
    pub(crate) options: SubscribeOptions,
    pub(crate) state: SubState,
    /// Attempts made: the first subscribe is 0, each resubscribe one more.
    pub(crate) attempt: u32,
}
