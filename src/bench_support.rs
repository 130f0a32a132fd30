//! What the benchmarks under `examples/` may reach of the crate's internals. Not an API: hidden
//! from the docs, and free to change with any release.

pub use crate::core::wheel::{TimerKey, TimerWheel};

use crate::core::pending::{INDEX_SPREAD, PendingCall};
use crate::driver::context::Reply;

/// The layout of a [`slab::Slab`] slot: the slab stores `enum Entry<T> { Vacant(usize),
/// Occupied(T) }`, private to the crate; this mirror has the same shape, hence the same size.
#[allow(dead_code)]
enum SlabSlot<T> {
    Vacant(usize),
    Occupied(T),
}

/// The bytes one pending call holds in the loop's tables: its slot in the pending table, its
/// node in the deadline wheel, and its share of the id index (which is kept at 16 entries per
/// call at the peak). Excluded: its request frame (held only while the connection
/// is not open yet), and the heap box of its callback, whose size is whatever the closure
/// captures (nothing for a closure that captures nothing).
pub fn pending_call_bytes() -> usize {
    size_of::<SlabSlot<PendingCall<Reply>>>()
        + TimerWheel::<usize>::slot_bytes()
        + INDEX_SPREAD * size_of::<u32>()
}
