//! [`SubscriptionEntry`]: what the loop keeps of one subscription: how it was made, where it
//! is in its life ([`SubState`]), the key its items carry, and its handler `H` (which this file
//! neither names nor runs).

use serde_json::value::RawValue;

use crate::core::call_id::CallId;
use crate::core::conn_id::ConnId;
use crate::core::event::SubscribeOptions;

/// Where a subscription is in its life.
pub(crate) enum SubState {
    /// The subscribe call of this attempt is in flight.
    Subscribing { attempt: u32, call: CallId },
    /// Subscribed (under `key`).
    Active,
    /// The connection was lost; subscribing again when it opens.
    Interrupted,
    /// Its `Ended` event is queued; removed once it is delivered, unless `awaiting`: then
    /// its subscribe call is still out and the entry stays to unsubscribe on the server when
    /// the answer comes.
    Ended { awaiting: bool },
}

/// A live subscription.
pub(crate) struct SubscriptionEntry<H> {
    pub(crate) conn: ConnId,
    pub(crate) method: Box<str>,
    pub(crate) params: Box<RawValue>,
    pub(crate) unsubscribe_method: Box<str>,
    pub(crate) options: SubscribeOptions,
    pub(crate) state: SubState,
    /// The key items carry (the JSON text of the subscribe call's result), once known. It
    /// stays routed until the `Interrupted` or `Ended` event is dispatched, so that items read
    /// before the connection went down still reach the handler, in order, before that event.
    pub(crate) key: Option<Box<str>>,
    /// The connection ended while the subscribe answer was queued: the `Interrupted`/`Ended`
    /// event is queued behind it and sets the state when dispatched.
    pub(crate) ending: bool,
    /// Attempts made (the first subscribe, then each resubscribe).
    pub(crate) attempt: u32,
    /// Taken while it runs.
    pub(crate) handler: Option<H>,
}
