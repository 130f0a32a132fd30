//! [`Outbox`]: what waits to be written on one connection, in submit order, under one byte
//! budget.
//!
//! Everything a connection writes passes through here: on an open connection an entry leaves
//! as soon as the driver polls it; a connection that is connecting, waiting to reconnect, or
//! whose socket refused a write, keeps its entries until it can write, then they leave in
//! submit order. Each entry is one [`Transmit`]: a call's request, a whole batch (one frame,
//! several calls), a message or a ping. A batch is one unit: its calls leave together or not
//! at all, so they always share one fate (all written, or all still waiting for the next
//! connection).
//!
//! The outbox holds the frames; the pending table only knows whether each call was written.
//! A call that completes while it waits (a timeout, a cancel) leaves its entry behind: the
//! entry is skipped when the outbox drains, and dropped sooner when dead entries pile up
//! ([`Outbox::compact`]), so a loop of submits and cancels on a connection that never opens
//! cannot grow it without bound. Until then its bytes count against the budget, which makes
//! [`Outbox::bytes`] an upper bound; [`Outbox::admits`] counts exactly before it refuses.

use std::collections::VecDeque;

use super::call_id::CallId;
use super::output::Transmit;

#[derive(Debug)]
struct Entry {
    unsent: Transmit,
    size: usize,
}

/// The frames waiting for one connection to write them.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    entries: VecDeque<Entry>,
    /// Bytes of every entry, dead ones included until they are dropped.
    bytes: usize,
    /// Entries that are not calls (messages, pings).
    messages: usize,
}

impl Outbox {
    /// Whether nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many frames wait (dead ones included).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The bytes waiting: an upper bound until dead entries are dropped.
    #[cfg(any(test, fuzzing))]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether `size` more bytes fit in `budget`. When the running count says no, the entries
    /// of calls that are no longer waiting (`waiting` says which) are dropped first and the
    /// bytes counted exactly, so a refusal is never caused by calls that already left.
    pub(crate) fn admits(
        &mut self,
        size: usize,
        budget: usize,
        waiting: impl Fn(CallId) -> bool,
    ) -> bool {
        if self.bytes.saturating_add(size) <= budget {
            return true;
        }
        self.compact(waiting);
        self.bytes.saturating_add(size) <= budget
    }

    /// Queues one frame behind the others. `size` is what it counts against the budget.
    pub(crate) fn push(&mut self, unsent: Transmit, size: usize) {
        if unsent.calls().is_empty() {
            self.messages += 1;
        }
        self.bytes += size;
        self.entries.push_back(Entry { unsent, size });
    }

    /// Puts back, first in line, a frame the socket refused.
    pub(crate) fn push_front(&mut self, unsent: Transmit, size: usize) {
        if unsent.calls().is_empty() {
            self.messages += 1;
        }
        self.bytes += size;
        self.entries.push_front(Entry { unsent, size });
    }

    /// Drops dead entries once they outnumber the live ones (`pending` calls and the messages)
    /// by two to one, so the outbox stays in proportion to what really waits.
    pub(crate) fn compact_if_sparse(&mut self, pending: usize, waiting: impl Fn(CallId) -> bool) {
        if self.entries.len() > 2 * (pending + self.messages) + 64 {
            self.compact(waiting);
        }
    }

    /// Drops the entries whose calls are no longer waiting, and counts the bytes exactly.
    pub(crate) fn compact(&mut self, waiting: impl Fn(CallId) -> bool) {
        let mut bytes = 0;
        self.entries.retain(|entry| {
            let calls = entry.unsent.calls();
            // A batch's calls leave together: one waiting keeps the batch.
            let live = calls.is_empty() || calls.iter().any(|&id| waiting(id));
            if live {
                bytes += entry.size;
            }
            live
        });
        self.bytes = bytes;
    }

    /// The oldest frame, taken out to be written.
    /// Also returns the size it counted.
    pub(crate) fn pop(&mut self) -> Option<(Transmit, usize)> {
        let entry = self.entries.pop_front()?;
        self.bytes -= entry.size;
        if entry.unsent.calls().is_empty() {
            self.messages -= 1;
        }
        Some((entry.unsent, entry.size))
    }

    /// The calls of the waiting batch that holds `call`, if `call` waits in a batch.
    pub(crate) fn batch_of(&self, call: CallId) -> Option<&[CallId]> {
        self.entries.iter().find_map(|entry| match &entry.unsent {
            Transmit::Batch { ids, .. } if ids.contains(&call) => Some(&ids[..]),
            _ => None,
        })
    }

    /// Drops everything; returns how many messages (not calls) were dropped unsent. Keeps the
    /// queue's capacity.
    pub(crate) fn clear(&mut self) -> usize {
        let messages = self.messages;
        self.entries.clear();
        self.bytes = 0;
        self.messages = 0;
        messages
    }

    /// Drops everything and its capacity (an ended connection).
    pub(crate) fn release(&mut self) -> usize {
        let messages = self.clear();
        self.entries = VecDeque::new();
        messages
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::message::Message;

    fn id(n: u64) -> CallId {
        CallId::from_u64(n).unwrap()
    }

    fn call(n: u64, frame: &str) -> Transmit {
        Transmit::Call {
            id: id(n),
            text: frame.into(),
        }
    }

    fn batch(ids: &[u64], frame: &str) -> Transmit {
        Transmit::Batch {
            ids: ids.iter().map(|&n| id(n)).collect(),
            text: frame.into(),
        }
    }

    fn message(text: &str) -> Transmit {
        Transmit::Message(Message::from(text))
    }

    fn names(outbox: &mut Outbox) -> Vec<String> {
        std::iter::from_fn(|| outbox.pop())
            .map(|(u, _)| match u {
                Transmit::Call { text, .. } | Transmit::Batch { text, .. } => text.to_string(),
                Transmit::Message(Message::Text(m)) => m,
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn frames_leave_in_submit_order_and_a_batch_as_one() {
        let mut outbox = Outbox::default();
        outbox.push(call(1, "a"), 1);
        outbox.push(batch(&[2, 3, 4], "[b,c,d]"), 7);
        outbox.push(message("m"), 1);
        assert_eq!((outbox.len(), outbox.bytes()), (3, 9));
        assert_eq!(outbox.batch_of(id(3)), Some(&[id(2), id(3), id(4)][..]));
        assert_eq!(outbox.batch_of(id(1)), None);
        assert_eq!(names(&mut outbox), ["a", "[b,c,d]", "m"]);
        assert_eq!(outbox.bytes(), 0);
        assert!(outbox.is_empty());
    }

    #[test]
    fn the_budget_is_counted_exactly_before_a_refusal() {
        let mut outbox = Outbox::default();
        outbox.push(call(1, "aaaa"), 4);
        outbox.push(call(2, "bbbb"), 4);
        // Call 1 completed while it waited: its 4 bytes no longer count once looked at.
        let waiting = |id: CallId| id.as_u64() != 1;
        assert!(outbox.admits(2, 10, waiting), "within the running count");
        assert!(outbox.admits(6, 10, waiting), "only after dropping call 1");
        assert_eq!(outbox.bytes(), 4);
        outbox.push(call(3, "cccccc"), 6);
        assert!(!outbox.admits(1, 10, waiting));
        assert_eq!(names(&mut outbox), ["bbbb", "cccccc"]);
    }

    #[test]
    fn a_batch_lives_while_any_of_its_calls_waits() {
        let mut outbox = Outbox::default();
        outbox.push(batch(&[1, 2], "[x,y]"), 5);
        outbox.compact(|id| id.as_u64() == 2);
        assert_eq!(outbox.len(), 1);
        outbox.compact(|_| false);
        assert!(outbox.is_empty());
        assert_eq!(outbox.bytes(), 0);
    }

    #[test]
    fn submit_and_cancel_forever_stays_bounded() {
        let mut outbox = Outbox::default();
        outbox.push(message("kept"), 4);
        for n in 1..100_000 {
            outbox.push(call(n, "x"), 1);
            // Only the newest call still waits.
            outbox.compact_if_sparse(1, |id| id.as_u64() == n);
            assert!(outbox.len() <= 2 * 2 + 64 + 1, "{}", outbox.len());
        }
        outbox.compact(|_| false);
        assert_eq!(names(&mut outbox), ["kept"]);
    }

    #[test]
    fn clear_reports_the_messages_dropped() {
        let mut outbox = Outbox::default();
        outbox.push(call(1, "a"), 1);
        outbox.push(message("m"), 1);
        outbox.push(message("n"), 1);
        assert_eq!(outbox.clear(), 2);
        assert!(outbox.is_empty());
        assert_eq!((outbox.bytes(), outbox.clear()), (0, 0));
    }
}
