//! The core `Engine`, driven by an arbitrary script in the simulator, against its invariant
//! checker after every step: every call completes exactly once, no `Timeout` before its
//! deadline tick, `NotSent` only for a call never written and `Disconnected` only for one
//! written, an `Ok` carries its own answer, `Cancelled` iff `cancel` returned true, the state
//! grammar with `Closed` then `Released` last, one `Ended` per subscription with nothing after
//! it, and the bounds on calls and bytes; at the end every connection is freed.
//!
//! The input is read two bytes per choice (little-endian, modulo the number of choices), one
//! operation per eight bytes: which connection, then what happens (a call, a batch, a
//! cancel, a subscribe or unsubscribe, an item, garbage, a binary message or a ping, an
//! answer on the wrong connection, a reset, a peer's close, a violation, refused writes, a
//! peer changing its script, a close, a time step). See `src/core/sim/random.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rpcloop::fuzz_support::run_engine_script(data);
});
