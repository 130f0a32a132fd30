//! What the fuzz targets under `fuzz/` may reach of the crate's internals. Not an API: built
//! only under `cfg(fuzzing)` (which `cargo fuzz` sets), hidden from the docs, and free to
//! change with any release. The timer wheel is reached through [`bench_support`](crate::bench_support).

use tungstenite::handshake::client::{Request, Response};

use crate::core::handshake::{OpeningHandshake, Outcome};

/// Runs a script of operations and faults read from `data` against the core's `Engine` in
/// the simulator, whose invariant checker runs after every step (`core::sim::random`): calls,
/// batches, cancels, subscriptions, pushes, garbage, binary messages and pings, misdelivered
/// answers, resets, closes with codes, violations, refused writes, peers that change their
/// script, time steps; then a shutdown, or the faults stop and everything settles. Each
/// choice reads two bytes (zeros once `data` runs out); one operation per eight bytes, at
/// most 2,000. Panics on a broken invariant.
pub fn run_engine_script(data: &[u8]) {
    let mut at = 0;
    let next = move |n: u64| {
        let choice = data
            .get(at..at + 2)
            .map_or(0, |b| u64::from(u16::from_le_bytes([b[0], b[1]])));
        at += 2;
        choice % n
    };
    crate::core::sim::random::run_script(next, (data.len() / 8).min(2_000));
}

/// The longest response head the handshake accepts (`core::handshake::MAX_HEAD`).
pub const MAX_HEAD: usize = crate::core::handshake::MAX_HEAD;

/// The check every incoming text frame passes before a codec reads it: whether `text` nests
/// deeper than `limit` arrays and objects.
pub fn nests_deeper_than(text: &[u8], limit: usize) -> bool {
    crate::core::nesting::nests_deeper_than(text, limit)
}

/// The client's sans-IO opening handshake (`core::handshake::OpeningHandshake`), as the
/// driver uses it.
#[derive(Debug)]
pub struct Handshake(OpeningHandshake);

/// Where the handshake stands after a read (`core::handshake::Outcome`).
#[derive(Debug)]
pub enum Verdict {
    /// The response head has not ended yet.
    Waiting,
    /// The upgrade was accepted: the parsed response, and the bytes read behind its head.
    Open(Box<Response>, Vec<u8>),
    /// The handshake failed, for this reason.
    Failed(String),
}

impl From<Outcome> for Verdict {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Waiting => Verdict::Waiting,
            Outcome::Open(opened) => Verdict::Open(Box::new(opened.response), opened.tail),
            Outcome::Failed(why) => Verdict::Failed(why),
        }
    }
}

impl Handshake {
    /// `OpeningHandshake::new`.
    ///
    /// # Errors
    /// As `OpeningHandshake::new`: the request cannot be sent.
    pub fn new(request: Request) -> Result<Self, String> {
        OpeningHandshake::new(request).map(Handshake)
    }

    /// `OpeningHandshake::pending_request`.
    pub fn pending_request(&self) -> &[u8] {
        self.0.pending_request()
    }

    /// `OpeningHandshake::handle_written`.
    pub fn handle_written(&mut self, n: usize) {
        self.0.handle_written(n);
    }

    /// `OpeningHandshake::handle_read`.
    pub fn handle_read(&mut self, bytes: &[u8]) -> Verdict {
        self.0.handle_read(bytes).into()
    }

    /// `OpeningHandshake::handle_eof`.
    pub fn handle_eof(&mut self) -> Verdict {
        self.0.handle_eof().into()
    }

    /// How many bytes of the response head the handshake holds.
    pub fn buffered(&self) -> usize {
        self.0.buffered()
    }
}
