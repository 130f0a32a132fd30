//! [`CallId`]: the correlation id written on the wire.
//!
//! An id is a counter: the first call on a loop is 1, the next 2, and so on, skipping only the
//! few values whose place in the pending table's index is taken (see
//! [`pending`](super::pending)). Servers read ids the way their authors expected them to look:
//! - never 0, which many servers treat as "no id" (`if (!message.id) return;` in
//!   rpc-websockets; ganache answers it with `"id": null`);
//! - small, so that servers with 32-bit `int` ids (Java, C#, Go, exchange APIs) read them: with
//!   up to 1,023 calls pending, the first 10^9 calls of a loop get ids below 2^31;
//! - at most 2^53 - 1, the largest integer a JavaScript server (which parses JSON numbers as
//!   doubles) reads back exactly. The counter wraps from there back to 1.
//!
//! An id is unique among pending calls; a late answer to a call that ended carries an id no
//! pending call has (until the counter comes round again, after 2^53 calls), so it is stale.

use std::fmt;

/// The id of one call: the number stamped on the request and matched on the response.
///
/// Ids count up from 1 on each [`EventLoop`](crate::EventLoop), are unique among its pending
/// calls, and lie in [`CallId::MIN`]..=[`CallId::MAX`] (1 to 2^53 - 1), so they survive a
/// round trip through any JSON parser, and through servers that take 0 for "no id".
///
/// ```
/// use rpcloop::CallId;
/// let id = CallId::from_u64(42).unwrap();
/// assert_eq!(id.as_u64(), 42);
/// assert!(CallId::from_u64(0).is_none());
/// assert!(CallId::from_u64(1 << 53).is_none());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(u64);

impl CallId {
    /// The smallest id: 1. No call carries 0.
    pub const MIN: u64 = 1;
    /// The largest id: 2^53 - 1.
    pub const MAX: u64 = (1 << 53) - 1;

    /// The id the counter value `n` stands for; `n` is in `MIN..=MAX`.
    pub(crate) fn from_counter(n: u64) -> Self {
        debug_assert!((Self::MIN..=Self::MAX).contains(&n), "id {n} out of range");
        CallId(n)
    }

    /// The id that follows this one: the counter wraps from [`Self::MAX`] back to
    /// [`Self::MIN`], never through 0.
    pub(crate) fn successor(self) -> Self {
        if self.0 == Self::MAX {
            CallId(Self::MIN)
        } else {
            CallId(self.0 + 1)
        }
    }

    /// The id as the number written on the wire.
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// Appends the id's decimal digits to `out`: what `Display` writes, without the
    /// formatting machinery (this is on every request's path).
    pub(crate) fn write_decimal(self, out: &mut String) {
        out.push_str(itoa::Buffer::new().format(self.0));
    }

    /// The id a wire number stands for, or `None` if no call could carry it (0, or above
    /// [`Self::MAX`]).
    pub fn from_u64(wire: u64) -> Option<Self> {
        (Self::MIN..=Self::MAX)
            .contains(&wire)
            .then_some(CallId(wire))
    }
}

impl fmt::Debug for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CallId({})", self.0)
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_decimal_writes_what_display_does() {
        for n in [1, 9, 10, 99, 100, 12_345, 4_294_967_296, CallId::MAX] {
            let mut out = String::from("x");
            CallId(n).write_decimal(&mut out);
            assert_eq!(out, format!("x{n}"));
        }
    }

    #[test]
    fn round_trips_through_the_wire_number() {
        let id = CallId::from_counter(12_345);
        assert_eq!(CallId::from_u64(id.as_u64()), Some(id));
        assert_eq!(id.to_string(), "12345");
    }

    #[test]
    fn largest_id_is_the_largest_exact_double() {
        let id = CallId::from_counter(CallId::MAX);
        assert_eq!(CallId::MAX, (1u64 << 53) - 1);
        // A double holds it exactly, so a JavaScript peer echoes it back unchanged.
        assert_eq!((id.as_u64() as f64) as u64, id.as_u64());
    }

    #[test]
    fn zero_and_numbers_above_the_limit_are_no_ids() {
        assert!(CallId::from_u64(0).is_none());
        assert!(CallId::from_u64(CallId::MAX + 1).is_none());
        assert!(CallId::from_u64(u64::MAX).is_none());
    }

    #[test]
    fn the_counter_wraps_to_one_not_zero() {
        assert_eq!(CallId::from_counter(7).successor().as_u64(), 8);
        assert_eq!(CallId::from_counter(CallId::MAX).successor().as_u64(), 1);
    }
}
