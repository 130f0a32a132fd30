//! [`FrameArena`]: text frames carved out of one reusable buffer instead of one heap
//! allocation each.
//!
//! Outgoing, a request frame only lives until tungstenite has copied it into its write buffer;
//! incoming, an answer lives in its [`Response`](crate::Response) until its callback is done.
//! Giving each its own allocation costs a `malloc`/`free` pair per frame (two, counting the
//! `Bytes` header). Worse, an answer kept as the slice of tungstenite's read buffer that it
//! arrived in pins that buffer: while any answer of the turn is alive, tungstenite cannot reuse
//! its buffer and allocates a new, small one for every further frame, so reads shrink to about
//! one frame per syscall. Copying small frames into this arena releases tungstenite's buffer at
//! once and costs a `memcpy`; the arena itself allocates a new chunk only when its current one is
//! full and a copy from it is still alive.

use bytes::BytesMut;
use tungstenite::Utf8Bytes;

/// Frames up to this size are worth copying; larger ones keep their own buffer, whose
/// allocation is small beside the bytes it carries.
pub(crate) const COPY_LIMIT: usize = 16 << 10;

/// Bytes per arena chunk.
const CHUNK: usize = 64 << 10;

/// A reusable buffer that hands out immutable, reference-counted copies of text frames.
#[derive(Debug)]
pub(crate) struct FrameArena {
    free: BytesMut,
}

impl FrameArena {
    pub(crate) fn new() -> Self {
        FrameArena {
            free: BytesMut::with_capacity(CHUNK),
        }
    }

    /// A copy of `text` that shares the arena's current chunk. Once every copy of a chunk is
    /// dropped, the chunk is reused in place.
    pub(crate) fn copy(&mut self, text: &str) -> Utf8Bytes {
        // Reclaims the chunk when no copy is left alive; otherwise allocates a new one (at
        // least CHUNK bytes, the capacity it was created with).
        self.free.reserve(text.len());
        self.free.extend_from_slice(text.as_bytes());
        let bytes = self.free.split().freeze();
        // `bytes` holds exactly the bytes of `text` (`free` was empty: every `split` takes all
        // of it), so this check, a fast ASCII scan, always passes; the crate forbids the
        // unchecked constructor. The fallback is unreachable and merely allocates.
        Utf8Bytes::try_from(bytes).unwrap_or_else(|_| Utf8Bytes::from(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_exact_and_independent() {
        let mut arena = FrameArena::new();
        let texts = [
            "",
            "a",
            "{\"id\":1,\"message\":\"héllo ✓\"}",
            "😀 multi-byte",
        ];
        let copies: Vec<Utf8Bytes> = texts.iter().map(|t| arena.copy(t)).collect();
        for (text, copy) in texts.iter().zip(&copies) {
            assert_eq!(copy.as_str(), *text);
        }
    }

    #[test]
    fn copies_outlive_chunks_and_chunks_are_reused() {
        let mut arena = FrameArena::new();
        // Keep more than a chunk alive: the arena must move on to new chunks, and the old
        // copies must stay intact.
        let big = "x".repeat(CHUNK / 3);
        let kept: Vec<Utf8Bytes> = (0..10).map(|_| arena.copy(&big)).collect();
        assert!(kept.iter().all(|c| c.as_str() == big));
        drop(kept);
        // Copies dropped as soon as they are used (a request frame, an answer whose callback
        // is done): the arena cycles through one chunk, it never moves to a new one.
        let quarter = "q".repeat(CHUNK / 4);
        let first = arena.copy(&quarter).as_ptr() as usize;
        let (mut low, mut high) = (first, first);
        for _ in 0..100 {
            let copy = arena.copy(&quarter);
            assert_eq!(copy.as_str(), quarter);
            low = low.min(copy.as_ptr() as usize);
            high = high.max(copy.as_ptr() as usize + copy.len());
        }
        assert!(
            high - low <= CHUNK,
            "copies spread over {} bytes",
            high - low
        );
        // A frame larger than a chunk still copies whole.
        let huge = "y".repeat(CHUNK * 2);
        assert_eq!(arena.copy(&huge).as_str(), huge);
    }
}
