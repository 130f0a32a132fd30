//! [`ConnStats`]: what went over one connection, counted.

use crate::core::unmatched::UnmatchedReason;

/// Counters of one connection, from [`Context::stats`](crate::Context::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnStats {
    /// Requests handed to the socket.
    pub requests_sent: u64,
    /// Messages sent with [`Context::send`](crate::Context::send) handed to the socket.
    pub messages_sent: u64,
    /// Text and binary messages received.
    pub messages_received: u64,
    /// Calls completed by an answer (a batch answer counts each call it completes).
    pub answers: u64,
    /// Calls that timed out.
    pub timeouts: u64,
    /// Messages carrying an id this loop never issued.
    pub unknown_id: u64,
    /// Messages carrying the id of a call that had already completed (late or duplicate).
    pub stale_id: u64,
    /// Valid JSON messages without an id (server pushes).
    pub no_id: u64,
    /// Messages that were not valid JSON or not shaped like an answer.
    pub malformed: u64,
    /// Binary messages.
    pub binary: u64,
    /// Notifications handed to a subscription or a method handler.
    pub notifications: u64,
    /// Notifications naming a subscription that is not live (late items after unsubscribe,
    /// unknown keys); also counted in `no_id`, as pushes.
    pub unknown_subscription: u64,
    /// Times the connection opened again after a loss (with a reconnect policy).
    pub reconnects: u64,
}

impl ConnStats {
    /// Counts a frame (or batch element) that matched no call.
    pub(crate) fn count_unmatched(&mut self, reason: UnmatchedReason) {
        match reason {
            UnmatchedReason::UnknownId => self.unknown_id += 1,
            UnmatchedReason::StaleId => self.stale_id += 1,
            UnmatchedReason::NoId => self.no_id += 1,
            UnmatchedReason::Malformed => self.malformed += 1,
            UnmatchedReason::Binary => self.binary += 1,
        }
    }

    /// Messages that matched no call, whatever the reason.
    pub fn unmatched(&self) -> u64 {
        self.unknown_id + self.stale_id + self.no_id + self.malformed + self.binary
    }
}
