//! A seeded xorshift for the core's randomized tests: the same seed gives the same run, so a
//! failure can be replayed.

/// Returns `next(n)`, a number in `0..n`, from a xorshift64 generator seeded with `seed`
/// (which must not be 0).
pub(crate) fn xorshift(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut state = seed;
    move |n| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    }
}
