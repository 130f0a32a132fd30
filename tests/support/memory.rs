//! A per-thread peak-allocation tracker, to assert that a fault does not make the client's
//! thread hold memory in proportion to what a peer announces or sends.
//!
//! [`PeakAlloc`] wraps the system allocator and keeps, per thread, the bytes live and their
//! peak. Only a test binary that declares it as its `#[global_allocator]` is affected:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: support::memory::PeakAlloc = support::memory::PeakAlloc;
//! ```
//!
//! The counters are `const` thread-locals of plain `Cell`s: reaching them never allocates,
//! never registers a destructor and never panics (`try_with` simply skips the count while the
//! thread is being torn down). Frees of memory allocated by another thread count as negative
//! on the freeing thread, so "live" is relative: [`track`] reports the peak *above the level
//! at its start*, which is what a test asserts about.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get().wrapping_add(delta);
        live.set(now);
        let _ = PEAK.try_with(|peak| {
            if now > peak.get() {
                peak.set(now);
            }
        });
    });
}

/// The system allocator, counting bytes per thread.
pub struct PeakAlloc;

// SAFETY: every method forwards to `System` unchanged; the bookkeeping neither allocates nor
// touches the memory handed out.
unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Counted as a move: both blocks may be live for a moment, so the peak sees both.
            count(new_size as isize);
            count(-(layout.size() as isize));
        }
        p
    }
}

/// Runs `f` and returns its result with the peak of bytes live on this thread, above the
/// level at the start, while it ran. Only meaningful in a binary whose global allocator is
/// [`PeakAlloc`] (otherwise it reports 0).
pub fn track<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let start = LIVE.with(Cell::get);
    let outer_peak = PEAK.with(|peak| peak.replace(start));
    let result = f();
    let peak = PEAK.with(|peak| {
        let inner = peak.get();
        peak.set(inner.max(outer_peak)); // so that an enclosing `track` still sees it
        inner
    });
    (result, peak.saturating_sub(start).max(0) as usize)
}

/// The bytes live on this thread now, relative to when it started (see the module's docs).
pub fn live_bytes() -> isize {
    LIVE.with(Cell::get)
}

/// A byte count for messages: "12.3 MiB".
pub fn mib(bytes: usize) -> String {
    format!("{:.2} MiB", bytes as f64 / (1 << 20) as f64)
}

/// Runs a test's client side and asserts its thread never held more than 16 MiB above where
/// it started: whatever the fault, memory stays bounded by the configuration (servers run on
/// their own threads and are not counted). Meaningful only in a binary whose global allocator
/// is [`PeakAlloc`].
pub fn bounded(test: impl FnOnce()) {
    let ((), peak) = track(test);
    assert!(
        peak < 16 << 20,
        "the client's thread peaked at {}",
        mib(peak)
    );
}
