//! The driver: a thin mio shell that owns the sockets and feeds the sans-IO core.
//!
//! The token plan, in one place: connection `k` (its index in the loop's connection slab) is
//! registered as `Token(k)`; the cross-thread waker is [`WAKER`], an index no slab reaches.

mod batch;
pub(crate) mod call_slot;
pub(crate) mod connection;
pub(crate) mod context;
mod dispatch;
pub(crate) mod event_loop;
pub(crate) mod handle;
mod io;
mod mailbox;
mod send;
mod stream;
pub(crate) mod subscription;
pub(crate) mod subscription_queue;
pub(crate) mod tcp;
// TLS for wss:// (feature `tls`); without it, empty stand-ins that `connect` never reaches.
#[cfg(feature = "tls")]
mod tls;
#[cfg(not(feature = "tls"))]
#[path = "tls_disabled.rs"]
mod tls;

/// The token of the loop's `mio::Waker`, through which handles wake it.
pub(crate) const WAKER: mio::Token = mio::Token(usize::MAX);
