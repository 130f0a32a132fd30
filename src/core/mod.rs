//! The protocol core: plain data structures that never touch a socket or the system clock.
//!
//! Ground rules for everything below this module:
//! - **Time is passed in.** Deadlines and "now" are millisecond ticks ([`tick`]); nothing here
//!   calls `Instant::now()`, so every test can drive it with a fake clock.
//! - **No sockets.** Frames come in as values and what must be written goes out as values.
//! - **Exactly once.** A pending call leaves the table in exactly one place (matched response,
//!   timer expiry, cancel, failure or disconnect), and that place queues its one completion.
//! - **No user code.** The core hands completions out; the driver runs the callbacks.

pub(crate) mod arena;
pub(crate) mod backoff;
pub(crate) mod call_id;
pub(crate) mod codec;
pub(crate) mod conn_id;
pub(crate) mod correlator;
pub(crate) mod engine;
pub(crate) mod event;
pub(crate) mod handshake;
pub(crate) mod keepalive;
pub(crate) mod lifecycle;
pub(crate) mod message;
pub(crate) mod nesting;
pub(crate) mod notification;
pub(crate) mod outbox;
pub(crate) mod output;
pub(crate) mod pending;
pub(crate) mod request;
pub(crate) mod response;
pub(crate) mod session;
#[cfg(any(test, fuzzing))]
pub(crate) mod sim;
pub(crate) mod subscription;
#[cfg(test)]
pub(crate) mod test_rng;
pub(crate) mod tick;
pub(crate) mod unmatched;
pub(crate) mod wheel;
