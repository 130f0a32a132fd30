//! [`PendingCalls`]: the calls waiting for their answer, in a slab indexed by [`CallId`].
//!
//! Insert, look up and remove are O(1) with no hashing, and a warm table allocates nothing: the
//! slab reuses the slots of completed calls. What makes reuse safe is the generation in the id
//! (see [`call_id`](super::call_id)): a lookup matches only the exact id that was issued.

use slab::Slab;

use super::call_id::{CallId, GENERATION_MASK, MAX_SLOTS};
use super::conn_id::ConnId;
use super::wheel::TimerKey;

/// One call waiting for its answer.
#[derive(Debug)]
pub(crate) struct PendingCall<T> {
    generation: u32,
    /// The connection the call was sent on; only an answer on that connection completes it.
    pub(crate) conn: ConnId,
    /// Its deadline in the timer wheel.
    pub(crate) timer: TimerKey,
    /// The encoded request while it waits for the connection to open; `None` once written.
    pub(crate) unsent: Option<String>,
    /// What to complete: the driver's callback or completion slot.
    pub(crate) token: T,
}

/// What an id that matches no pending call most likely is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unknown {
    /// An id this table issued earlier, whose call has completed (a late or duplicate answer).
    Stale,
    /// An id this table never issued.
    Never,
}

/// The table of pending calls.
#[derive(Debug)]
pub(crate) struct PendingCalls<T> {
    calls: Slab<PendingCall<T>>,
    /// The generation the next call gets; advances on every insert.
    next_generation: u32,
    /// How many generations have been handed out, saturating; tells stale ids from unknown ones.
    issued: u64,
}

impl<T> PendingCalls<T> {
    pub(crate) fn new() -> Self {
        PendingCalls {
            calls: Slab::new(),
            next_generation: 0,
            issued: 0,
        }
    }

    /// How many calls are pending.
    pub(crate) fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether another call fits (the id space holds 2^24 pending calls).
    pub(crate) fn has_room(&self) -> bool {
        self.has_room_for(1)
    }

    /// Whether `n` more calls fit.
    pub(crate) fn has_room_for(&self, n: usize) -> bool {
        self.calls.len().saturating_add(n) <= MAX_SLOTS
    }

    /// The id the next [`insert`](Self::insert) will return.
    pub(crate) fn next_id(&self) -> CallId {
        CallId::new(self.calls.vacant_key(), self.next_generation)
    }

    /// Adds a call. `timer` is given the id the call will have, to arm its deadline.
    pub(crate) fn insert(
        &mut self,
        conn: ConnId,
        unsent: Option<String>,
        token: T,
        timer: impl FnOnce(CallId) -> TimerKey,
    ) -> CallId {
        assert!(self.has_room(), "pending table full");
        let generation = self.next_generation;
        self.next_generation = (generation + 1) & GENERATION_MASK;
        self.issued = self.issued.saturating_add(1);
        let entry = self.calls.vacant_entry();
        let id = CallId::new(entry.key(), generation);
        entry.insert(PendingCall {
            generation,
            conn,
            timer: timer(id),
            unsent,
            token,
        });
        id
    }

    /// The call with exactly this id, if it is pending.
    pub(crate) fn get(&self, id: CallId) -> Option<&PendingCall<T>> {
        self.calls
            .get(id.slot())
            .filter(|call| call.generation == id.generation())
    }

    /// The call with exactly this id, if it is pending.
    pub(crate) fn get_mut(&mut self, id: CallId) -> Option<&mut PendingCall<T>> {
        self.calls
            .get_mut(id.slot())
            .filter(|call| call.generation == id.generation())
    }

    /// Removes and returns the call with exactly this id.
    pub(crate) fn take(&mut self, id: CallId) -> Option<PendingCall<T>> {
        self.get(id)?;
        Some(self.calls.remove(id.slot()))
    }

    /// Removes the call in `slot` (a slot known to be occupied, e.g. from its timer) with its id.
    pub(crate) fn take_slot(&mut self, slot: usize) -> (CallId, PendingCall<T>) {
        let call = self.calls.remove(slot);
        (CallId::new(slot, call.generation), call)
    }

    /// The ids of every call pending on `conn`, appended to `out`.
    pub(crate) fn ids_on(&self, conn: ConnId, out: &mut Vec<CallId>) {
        out.extend(
            self.calls
                .iter()
                .filter(|(_, call)| call.conn == conn)
                .map(|(slot, call)| CallId::new(slot, call.generation)),
        );
    }

    /// Whether an id that matches nothing was issued by this table before (a best guess: the
    /// slot has been used and the generation has been handed out).
    pub(crate) fn classify_unknown(&self, id: CallId) -> Unknown {
        let slot_used = id.slot() < self.calls.capacity();
        let generation_issued = if self.issued > u64::from(GENERATION_MASK) {
            true
        } else {
            u64::from(id.generation()) < self.issued
        };
        if slot_used && generation_issued {
            Unknown::Stale
        } else {
            Unknown::Never
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::wheel::TimerWheel;

    fn insert(table: &mut PendingCalls<u32>, wheel: &mut TimerWheel<usize>, token: u32) -> CallId {
        table.insert(ConnId::new(0), None, token, |id| {
            wheel.insert(100, id.slot())
        })
    }

    #[test]
    fn insert_get_take() {
        let mut wheel = TimerWheel::new();
        let mut table = PendingCalls::new();
        let a = insert(&mut table, &mut wheel, 1);
        let b = insert(&mut table, &mut wheel, 2);
        assert_ne!(a, b);
        assert_eq!(table.len(), 2);
        assert_eq!(table.get(a).map(|c| c.token), Some(1));
        assert_eq!(table.take(b).map(|c| c.token), Some(2));
        assert!(table.take(b).is_none());
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn a_reused_slot_does_not_answer_to_the_old_id() {
        let mut wheel = TimerWheel::new();
        let mut table = PendingCalls::new();
        let old = insert(&mut table, &mut wheel, 1);
        assert!(table.take(old).is_some());
        let new = insert(&mut table, &mut wheel, 2);
        assert_eq!(old.slot(), new.slot(), "the slab reuses the slot");
        assert_ne!(old, new);
        assert!(
            table.get(old).is_none(),
            "the late answer must not match the new call"
        );
        assert_eq!(table.classify_unknown(old), Unknown::Stale);
        assert_eq!(table.get(new).map(|c| c.token), Some(2));
    }

    #[test]
    fn ids_never_issued_are_unknown() {
        let mut wheel = TimerWheel::new();
        let mut table = PendingCalls::new();
        insert(&mut table, &mut wheel, 1);
        assert_eq!(
            table.classify_unknown(CallId::new(5_000, 0)),
            Unknown::Never
        );
        assert_eq!(table.classify_unknown(CallId::new(0, 77)), Unknown::Never);
    }

    #[test]
    fn ids_on_lists_one_connection() {
        let mut wheel = TimerWheel::new();
        let mut table = PendingCalls::new();
        let a = insert(&mut table, &mut wheel, 1);
        let other = table.insert(ConnId::new(1), None, 2, |id| wheel.insert(1, id.slot()));
        let mut ids = Vec::new();
        table.ids_on(ConnId::new(0), &mut ids);
        assert_eq!(ids, vec![a]);
        ids.clear();
        table.ids_on(ConnId::new(1), &mut ids);
        assert_eq!(ids, vec![other]);
    }
}
