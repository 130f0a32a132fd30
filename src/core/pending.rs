//! [`PendingCalls`]: the calls waiting for their answer, in a slab, found by [`CallId`] through a
//! direct-mapped index.
//!
//! Ids are a counter (see [`call_id`](super::call_id)); the calls live in a [`Slab`], whose keys
//! the slab reuses. Between the two sits the index: a power-of-two array that maps the low bits
//! of an id, `id & mask`, to the slab key of the call that has that id. A lookup is one index
//! load, one slab load and one compare of the stored id with the wire id; a stored id that
//! differs is a stale answer (the call it was meant for has ended and another took its place).
//! No hashing, and a warm table allocates nothing.
//!
//! A new call takes the next counter value whose index entry is free, so ids stay unique among
//! pending calls. The index is kept at least [`INDEX_SPREAD`] times the number of pending calls,
//! so at most one entry in 16 is taken and the counter skips few values: with `p` calls pending
//! and an index of `s` entries, each turn of the counter through the index hands out at least
//! `s - p` ids, so ids grow by at most `s / (s - p)` (16/15) per call. Growing doubles the index
//! and never makes two pending ids collide: ids that differ in their low bits under the old mask
//! differ under the new, wider one.

use slab::Slab;

use super::call_id::CallId;
use super::conn_id::ConnId;
use super::wheel::TimerKey;

/// How many calls can be pending at once in one loop (2^24).
pub(crate) const MAX_PENDING: usize = 1 << 24;
/// The index has at least this many entries per pending call.
pub(crate) const INDEX_SPREAD: usize = 16;
/// The index's size before any call: 64 entries (256 bytes).
const MIN_INDEX: usize = 64;
/// An index entry that names no call.
const EMPTY: u32 = u32::MAX;

/// One call waiting for its answer.
#[derive(Debug)]
pub(crate) struct PendingCall<T> {
    /// Its id; an answer completes it only if it carries exactly this id.
    pub(crate) id: CallId,
    /// The connection the call was sent on; only an answer on that connection completes it.
    pub(crate) conn: ConnId,
    /// Its deadline in the timer wheel.
    pub(crate) timer: TimerKey,
    /// Whether its request has been written. Until then it waits in its connection's outbox
    /// (which holds the frame), and no answer can be for it.
    pub(crate) written: bool,
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
    /// `index[id & mask]` is the slab key of the pending call with that id, or [`EMPTY`].
    index: Vec<u32>,
    /// The id the next call gets: its index entry is free.
    next: CallId,
    /// Whether the counter has gone past [`CallId::MAX`] once (every id may have been issued).
    wrapped: bool,
}

impl<T> PendingCalls<T> {
    pub(crate) fn new() -> Self {
        PendingCalls {
            calls: Slab::new(),
            index: vec![EMPTY; MIN_INDEX],
            next: CallId::from_counter(CallId::MIN),
            wrapped: false,
        }
    }

    /// How many calls are pending.
    pub(crate) fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether another call fits (2^24 calls may be pending).
    pub(crate) fn has_room(&self) -> bool {
        self.has_room_for(1)
    }

    /// Whether `n` more calls fit.
    pub(crate) fn has_room_for(&self, n: usize) -> bool {
        self.calls.len().saturating_add(n) <= MAX_PENDING
    }

    /// The id the next [`insert`](Self::insert) will return.
    pub(crate) fn next_id(&self) -> CallId {
        self.next
    }

    /// Adds a call. `timer` is given the call's slab key, to arm its deadline.
    pub(crate) fn insert(
        &mut self,
        conn: ConnId,
        written: bool,
        token: T,
        timer: impl FnOnce(usize) -> TimerKey,
    ) -> CallId {
        assert!(self.has_room(), "pending table full");
        let id = self.next;
        let position = self.position(id);
        debug_assert_eq!(self.index[position], EMPTY, "the next id's entry is free");
        let entry = self.calls.vacant_entry();
        let key = entry.key();
        entry.insert(PendingCall {
            id,
            conn,
            timer: timer(key),
            written,
            token,
        });
        // Slab keys stay below MAX_PENDING (2^24), so they fit, and never equal EMPTY.
        self.index[position] = key as u32;
        if self.index.len() < INDEX_SPREAD * self.calls.len() {
            self.grow();
        }
        self.advance();
        id
    }

    /// The call with exactly this id, if it is pending.
    pub(crate) fn get(&self, id: CallId) -> Option<&PendingCall<T>> {
        let key = self.key_of(id)?;
        self.calls.get(key)
    }

    /// The call with exactly this id, if it is pending.
    pub(crate) fn get_mut(&mut self, id: CallId) -> Option<&mut PendingCall<T>> {
        let key = self.key_of(id)?;
        self.calls.get_mut(key)
    }

    /// Removes and returns the call with exactly this id.
    pub(crate) fn take(&mut self, id: CallId) -> Option<PendingCall<T>> {
        let key = self.key_of(id)?;
        Some(self.take_key(key).1)
    }

    /// Removes the call with slab key `key` (a key known to be occupied, e.g. from its timer)
    /// with its id.
    pub(crate) fn take_key(&mut self, key: usize) -> (CallId, PendingCall<T>) {
        let call = self.calls.remove(key);
        let position = self.position(call.id);
        debug_assert_eq!(self.index[position], key as u32);
        self.index[position] = EMPTY;
        (call.id, call)
    }

    /// The ids of every call pending on `conn`, appended to `out`.
    pub(crate) fn ids_on(&self, conn: ConnId, out: &mut Vec<CallId>) {
        out.extend(
            self.calls
                .iter()
                .filter(|(_, call)| call.conn == conn)
                .map(|(_, call)| call.id),
        );
    }

    /// Whether an id that matches nothing was issued by this table before (a best guess: the
    /// counter has passed it).
    pub(crate) fn classify_unknown(&self, id: CallId) -> Unknown {
        if self.wrapped || id < self.next {
            Unknown::Stale
        } else {
            Unknown::Never
        }
    }

    /// The slab key of the pending call with exactly this id.
    fn key_of(&self, id: CallId) -> Option<usize> {
        let key = self.index[self.position(id)];
        if key == EMPTY {
            return None;
        }
        let key = key as usize;
        let call = self.calls.get(key)?;
        // Another call owns the entry: `id` is stale (or was never issued).
        (call.id == id).then_some(key)
    }

    /// Where `id` sits in the index: its low bits.
    fn position(&self, id: CallId) -> usize {
        (id.as_u64() & (self.index.len() as u64 - 1)) as usize
    }

    /// Moves `next` on to the first id after it whose index entry is free. One exists: fewer
    /// calls are pending than the index has entries.
    fn advance(&mut self) {
        let mut id = self.next;
        loop {
            id = id.successor();
            self.wrapped |= id.as_u64() == CallId::MIN;
            if self.index[self.position(id)] == EMPTY {
                break;
            }
        }
        self.next = id;
    }

    /// Doubles the index and puts every pending call at its place under the wider mask.
    fn grow(&mut self) {
        let size = (self.index.len() * 2).max(INDEX_SPREAD * self.calls.len());
        let size = size.next_power_of_two();
        self.index.clear();
        self.index.resize(size, EMPTY);
        let mask = size as u64 - 1;
        for (key, call) in &self.calls {
            let position = (call.id.as_u64() & mask) as usize;
            debug_assert_eq!(self.index[position], EMPTY, "growing never collides");
            self.index[position] = key as u32;
        }
    }

    /// How many entries the index has.
    #[cfg(test)]
    pub(crate) fn index_len(&self) -> usize {
        self.index.len()
    }

    /// Moves the counter on by `turns` whole turns through the index, as if that many turns of
    /// calls had been made and completed while the pending ones stayed: each entry keeps its
    /// occupant, so the table is exactly where those calls would have left it.
    #[cfg(test)]
    pub(crate) fn fast_forward(&mut self, turns: u64) {
        let next = self.next.as_u64() + turns * self.index.len() as u64;
        self.next = CallId::from_counter(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::wheel::TimerWheel;

    fn insert(table: &mut PendingCalls<u32>, wheel: &mut TimerWheel<usize>, token: u32) -> CallId {
        table.insert(ConnId::new(0, 0), true, token, |key| wheel.insert(100, key))
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
    fn ids_count_from_one() {
        let mut wheel = TimerWheel::new();
        let mut table = PendingCalls::new();
        let ids: Vec<u64> = (0..5)
            .map(|t| {
                let id = insert(&mut table, &mut wheel, t);
                if t % 2 == 0 {
                    table.take(id);
                }
                id.as_u64()
            })
            .collect();
        assert_eq!(ids, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_reused_slab_key_does_not_answer_to_the_old_id() {
        let mut wheel = TimerWheel::new();
        let mut table = PendingCalls::new();
        let old = insert(&mut table, &mut wheel, 1);
        assert!(table.take(old).is_some());
        let new = insert(&mut table, &mut wheel, 2);
        assert_ne!(old, new);
        assert!(
            table.get(old).is_none(),
            "the late answer must not match the new call"
        );
        assert_eq!(table.classify_unknown(old), Unknown::Stale);
        assert_eq!(table.get(new).map(|c| c.token), Some(2));
    }

    #[test]
    fn an_old_id_sharing_the_index_entry_of_a_pending_call_is_stale() {
        let mut wheel = TimerWheel::new();
        let mut table = PendingCalls::new();
        let old = insert(&mut table, &mut wheel, 1);
        table.take(old);
        // Churn until the counter comes round to the old id's index entry again.
        let mut new = insert(&mut table, &mut wheel, 2);
        while table.position(new) != table.position(old) {
            table.take(new);
            new = insert(&mut table, &mut wheel, 2);
        }
        assert_ne!(old, new);
        assert!(table.get(old).is_none());
        assert!(table.take(old).is_none());
        assert_eq!(table.get(new).map(|c| c.token), Some(2));
    }

    #[test]
    fn ids_never_issued_are_unknown() {
        let mut wheel = TimerWheel::new();
        let mut table = PendingCalls::new();
        insert(&mut table, &mut wheel, 1);
        assert_eq!(
            table.classify_unknown(CallId::from_counter(5_000)),
            Unknown::Never
        );
        assert_eq!(
            table.classify_unknown(CallId::from_counter(2)),
            Unknown::Never
        );
    }

    #[test]
    fn ids_on_lists_one_connection() {
        let mut wheel = TimerWheel::new();
        let mut table = PendingCalls::new();
        let a = insert(&mut table, &mut wheel, 1);
        let other = table.insert(ConnId::new(1, 0), true, 2, |key| wheel.insert(1, key));
        let mut ids = Vec::new();
        table.ids_on(ConnId::new(0, 0), &mut ids);
        assert_eq!(ids, vec![a]);
        ids.clear();
        table.ids_on(ConnId::new(1, 0), &mut ids);
        assert_eq!(ids, vec![other]);
    }

    /// The promise servers with 32-bit ids rely on: with up to 1,023 calls pending, the first
    /// 10^9 calls of a loop get ids below 2^31.
    #[test]
    fn with_1023_pinned_calls_the_first_billion_ids_stay_below_2_pow_31() {
        const CALLS: u64 = 1_000_000_000;
        let mut wheel = TimerWheel::new();
        let mut table = PendingCalls::new();
        // The pinned calls never complete; one more call at a time comes and goes.
        for token in 0..1_023 {
            insert(&mut table, &mut wheel, token);
        }
        let mut made = 1_023u64;
        let mut churn = |table: &mut PendingCalls<u32>, made: &mut u64| {
            let id = insert(table, &mut wheel, 0);
            assert!(table.take(id).is_some());
            *made += 1;
            id.as_u64()
        };
        let first = churn(&mut table, &mut made);
        let size = table.index_len();
        assert!(size >= INDEX_SPREAD * 1_024, "{size}");
        // One turn through the index hands out every free entry once: `size - 1023` ids.
        let per_turn = (size - 1_023) as u64;
        let mut last = first;
        for _ in 0..2 * per_turn {
            last = churn(&mut table, &mut made);
        }
        assert_eq!(
            last - first,
            2 * size as u64,
            "each turn skips each pinned id once"
        );
        // Skip whole turns (each leaves the table as it was), then make the rest for real.
        let turns = (CALLS - made) / per_turn - 1;
        table.fast_forward(turns);
        made += turns * per_turn;
        while made < CALLS {
            last = churn(&mut table, &mut made);
        }
        assert_eq!(made, CALLS);
        assert!(last < 1 << 31, "call 10^9 got id {last}");
        assert!(last > CALLS, "ids are a counter: {last}");
    }

    #[test]
    fn the_counter_wraps_to_one_and_skips_pending_ids() {
        let mut wheel = TimerWheel::new();
        let mut table = PendingCalls::new();
        // Pending on ids 1, 2 and 3 for the whole test.
        for token in 0..3 {
            insert(&mut table, &mut wheel, token);
        }
        let turns = (CallId::MAX - 4) / table.index_len() as u64;
        table.fast_forward(turns);
        assert!(table.next_id().as_u64() > CallId::MAX - 64);
        let mut ids = Vec::new();
        let mut last = CallId::from_counter(1);
        while ids.len() < 100 {
            let id = insert(&mut table, &mut wheel, 9);
            ids.push(id.as_u64());
            table.take(id);
            last = id;
        }
        assert!(ids.iter().all(|&id| (1..=CallId::MAX).contains(&id)));
        assert!(ids.contains(&CallId::MAX));
        assert!(!ids.contains(&0));
        let after_wrap: Vec<u64> = ids.iter().copied().filter(|&id| id < 100).collect();
        assert_eq!(&after_wrap[..3], [4, 5, 6], "1, 2 and 3 are still pending");
        assert_eq!(table.classify_unknown(last), Unknown::Stale);
        assert_eq!(table.get(CallId::from_counter(2)).map(|c| c.token), Some(1));
    }

    #[test]
    fn growing_keeps_every_pending_id_findable_and_unique() {
        let mut next = crate::core::test_rng::xorshift(0x2545_F491_4F6C_DD1Du64);
        let mut wheel = TimerWheel::new();
        let mut table = PendingCalls::new();
        let mut live: Vec<(CallId, u32)> = Vec::new();
        for token in 0..20_000u32 {
            if next(3) == 0 && !live.is_empty() {
                let (id, t) = live.swap_remove(next(live.len() as u64) as usize);
                assert_eq!(table.take(id).map(|c| c.token), Some(t));
            } else {
                let id = insert(&mut table, &mut wheel, token);
                assert!(live.iter().all(|&(other, _)| other != id), "{id:?} reused");
                live.push((id, token));
            }
            assert!(table.index_len() >= INDEX_SPREAD * table.len());
        }
        assert_eq!(table.len(), live.len());
        for &(id, t) in &live {
            assert_eq!(table.get(id).map(|c| c.token), Some(t));
        }
    }
}
