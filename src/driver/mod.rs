//! The driver: a thin mio shell that owns the sockets and feeds the sans-IO core.
//!
//! The token plan, in one place: connection `k` (its index in the loop's connection slab) is
//! registered as `Token(k)`. Tokens at and above [`RESERVED_TOKENS`] are kept for the loop's
//! own sources (the cross-thread waker).

pub(crate) mod connection;
pub(crate) mod context;
pub(crate) mod event_loop;
mod io;

/// The first token not used for connections.
#[allow(dead_code)]
pub(crate) const RESERVED_TOKENS: usize = usize::MAX - 16;
