//! The bytes live on each thread of the library's unit-test binary, and its allocations: a
//! counting global allocator, so that a simulator test can show memory returning to its
//! baseline, and a codec test that it writes a request with no allocation.
//!
//! The counter is a `const` thread-local `Cell`: reaching it never allocates, never registers
//! a destructor and never panics (`try_with` skips the count while a thread is torn down).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    let _ = LIVE.try_with(|live| live.set(live.get().wrapping_add(delta)));
}

fn count_allocation() {
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get().wrapping_add(1)));
}

/// The system allocator, counting live bytes per thread.
struct CountingAlloc;

// SAFETY: every method forwards to `System` with its arguments unchanged and returns what
// `System` returned; the bookkeeping neither allocates nor touches the memory handed out.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
            count_allocation();
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
            count_allocation();
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` and `layout` come from this allocator, that is from `System`.
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`, and the caller's contract for `realloc` is passed on.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(new_size as isize - layout.size() as isize);
            count_allocation();
        }
        p
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// How many allocations (and reallocations) this thread made.
pub(crate) fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

/// The bytes allocated and not freed by this thread (relative: frees of other threads'
/// memory count against it).
pub(crate) fn live_bytes() -> isize {
    LIVE.with(Cell::get)
}

#[cfg(test)]
mod tests {
    use super::live_bytes;

    #[test]
    fn an_allocation_is_counted_until_freed() {
        let (before, allocations) = (live_bytes(), super::allocations());
        let block = vec![0u8; 4096];
        assert_eq!(live_bytes() - before, 4096);
        assert_eq!(super::allocations() - allocations, 1);
        drop(block);
        assert_eq!(live_bytes(), before);
    }
}
