//! [`CallId`]: the correlation id written on the wire.
//!
//! An id *is* the pending table's slab slot plus a generation: `generation << 24 | slot`. With
//! 24 slot bits and 29 generation bits the largest id is 2^53 - 1, the largest integer a
//! JavaScript server (which parses JSON numbers as doubles) reads back exactly.
//!
//! The slab reuses slots, so the generation is what keeps a late answer to a call that timed out
//! from completing the newer call that now sits in the same slot: the generation comes from one
//! counter that advances on every insert, so the same slot is handed out with the same generation
//! again only after 2^29 (about 537 million) further calls.

use std::fmt;

const SLOT_BITS: u32 = 24;
const GENERATION_BITS: u32 = 29;
const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;

/// How many calls can be pending at once in one loop (2^24).
pub(crate) const MAX_SLOTS: usize = 1 << SLOT_BITS;
/// Generations wrap at this value.
pub(crate) const GENERATION_MASK: u32 = (1 << GENERATION_BITS) - 1;

/// The id of one call: the number stamped on the request and matched on the response.
///
/// Ids are unique among the calls pending on one [`EventLoop`](crate::EventLoop) and never exceed
/// [`CallId::MAX`] (2^53 - 1), so they survive a round trip through any JSON parser.
///
/// ```
/// use rpcloop::CallId;
/// let id = CallId::from_u64(42).unwrap();
/// assert_eq!(id.as_u64(), 42);
/// assert!(CallId::from_u64(1 << 53).is_none());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(u64);

impl CallId {
    /// The largest id: 2^53 - 1.
    pub const MAX: u64 = (1 << 53) - 1;

    pub(crate) fn new(slot: usize, generation: u32) -> Self {
        debug_assert!(slot < MAX_SLOTS, "slot {slot} out of range");
        debug_assert!(
            generation <= GENERATION_MASK,
            "generation {generation} out of range"
        );
        CallId((u64::from(generation) << SLOT_BITS) | slot as u64)
    }

    /// The id as the number written on the wire.
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// The id a wire number stands for, or `None` if no call could carry it (above [`Self::MAX`]).
    pub fn from_u64(wire: u64) -> Option<Self> {
        (wire <= Self::MAX).then_some(CallId(wire))
    }

    pub(crate) fn slot(self) -> usize {
        (self.0 & SLOT_MASK) as usize
    }

    pub(crate) fn generation(self) -> u32 {
        (self.0 >> SLOT_BITS) as u32
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
    fn packs_and_unpacks() {
        let id = CallId::new(12_345, 678);
        assert_eq!(id.slot(), 12_345);
        assert_eq!(id.generation(), 678);
        assert_eq!(CallId::from_u64(id.as_u64()), Some(id));
    }

    #[test]
    fn largest_id_is_the_largest_exact_double() {
        let id = CallId::new(MAX_SLOTS - 1, GENERATION_MASK);
        assert_eq!(id.as_u64(), CallId::MAX);
        assert_eq!(CallId::MAX, (1u64 << 53) - 1);
        // A double holds it exactly, so a JavaScript peer echoes it back unchanged.
        assert_eq!((id.as_u64() as f64) as u64, id.as_u64());
        assert_eq!(id.slot(), MAX_SLOTS - 1);
        assert_eq!(id.generation(), GENERATION_MASK);
    }

    #[test]
    fn smallest_id_is_zero() {
        let id = CallId::new(0, 0);
        assert_eq!(id.as_u64(), 0);
    }

    #[test]
    fn wire_numbers_above_the_limit_are_no_ids() {
        assert!(CallId::from_u64(CallId::MAX + 1).is_none());
        assert!(CallId::from_u64(u64::MAX).is_none());
    }

    #[test]
    fn same_slot_different_generation_differs() {
        assert_ne!(CallId::new(7, 1), CallId::new(7, 2));
        assert_ne!(CallId::new(7, 1).as_u64(), CallId::new(8, 1).as_u64());
    }
}
