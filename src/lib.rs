//! # rpcloop
//!
//! Request/response calls over an asynchronous message channel (a WebSocket), driven by a
//! runtime-free event loop that you own.
//!
//! Over a WebSocket a client sends a message and moves on; the answer comes back later as
//! another message, maybe out of order, maybe never. rpcloop stamps each request with a
//! [`CallId`], parks it as a pending call with a deadline, and completes it **exactly once**:
//! with its answer, with [`Error::Timeout`], or with the error that ended its connection.
//! Messages that match no pending call (late answers, server pushes, garbage) are counted and
//! handed to an optional handler; they never break anything. Messages that are not calls (a
//! subscription, a reply to a push) go out as they are with [`Context::send`], buffered,
//! ordered and bounded like calls.
//!
//! There is no async runtime and no hidden thread. One [`mio`] poll drives non-blocking
//! `tungstenite` WebSockets; your program calls [`EventLoop::turn`] when it wants (sleeping in
//! it, or busy-polling with a zero timeout) and the callbacks run there, on your thread.
//!
//! ```
//! use std::time::Duration;
//! use rpcloop::{ConnectionConfig, EventLoop};
//! # // An echo server on 127.0.0.1, so the example runs anywhere.
//! # let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
//! # let url = format!("ws://{}/", listener.local_addr().unwrap());
//! # std::thread::spawn(move || {
//! #     let mut ws = tungstenite::accept(listener.accept().unwrap().0).unwrap();
//! #     while let Ok(msg) = ws.read() {
//! #         if msg.is_text() && ws.send(msg).is_err() { break; }
//! #     }
//! # });
//!
//! let mut ev = EventLoop::new()?;
//! // Returns at once; the TCP connect and the handshake happen inside `turn`.
//! let conn = ev.connect(&url, ConnectionConfig::default())?;
//!
//! // The callback runs exactly once, on this thread, during a later `turn`.
//! ev.submit(conn, serde_json::json!({"op": "ping", "n": 1}), move |ctx, result| {
//!     let answer = result.expect("an answer");
//!     println!("answer: {}", answer.text());
//!     // Callbacks get the loop's context: chaining the next call is the common case.
//!     ctx.submit(conn, 2, |_, result| {
//!         let n: u64 = result.unwrap().message().unwrap();
//!         assert_eq!(n, 2);
//!     })
//!     .unwrap();
//! })?;
//!
//! while ev.has_pending() {
//!     ev.turn(Some(Duration::from_millis(10)))?;
//! }
//! # Ok::<(), rpcloop::Error>(())
//! ```
//!
//! ## From other threads
//!
//! [`EventLoop::handle`](Context::handle) gives a [`Handle`] (`Send + Sync + Clone`) through
//! which any thread makes calls; the loop's thread keeps turning. A call is a [`PendingCall`]:
//! a runtime-agnostic `Future`, or something to block on.
//!
//! ```
//! # use std::time::Duration;
//! # use rpcloop::{ConnectionConfig, EventLoop};
//! # let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
//! # let url = format!("ws://{}/", listener.local_addr().unwrap());
//! # std::thread::spawn(move || {
//! #     let mut ws = tungstenite::accept(listener.accept().unwrap().0).unwrap();
//! #     while let Ok(msg) = ws.read() {
//! #         if msg.is_text() && ws.send(msg).is_err() { break; }
//! #     }
//! # });
//! let mut ev = EventLoop::new()?;
//! let conn = ev.connect(&url, ConnectionConfig::default())?;
//! let handle = ev.handle();
//! let worker = std::thread::spawn(move || {
//!     // Blocks this thread only; `.await` works as well, under any executor.
//!     handle.call(conn, 7).wait().and_then(|resp| resp.message::<u64>())
//! });
//! while !worker.is_finished() {
//!     ev.turn(Some(Duration::from_millis(10)))?;
//! }
//! assert_eq!(worker.join().unwrap()?, 7);
//! # Ok::<(), rpcloop::Error>(())
//! ```
//!
//! ## JSON-RPC 2.0, subscriptions and other protocols
//!
//! The wire format is a [`Codec`] chosen per connection: [`Envelope`] (the default,
//! `{"id": N, "message": ..}`) or [`JsonRpc2`], with which a call's payload is a [`Request`]
//! and an `error` answer completes the call with [`Error::Remote`]. JSON-RPC adds
//! [`Context::submit_batch`] (one frame, results in request order),
//! [`Context::on_notification`] (handlers by method name) and [`Context::subscribe`]
//! (a subscribe call whose result keys the notifications routed to one handler;
//! [`Handle::subscribe`] gives other threads a bounded [`Subscription`] queue). Any other
//! format is a small trait to implement (`examples/custom_codec.rs`).
//!
//! ## When the network misbehaves
//!
//! [`ConnectionConfig`] holds what a long-running client needs, with defaults that suit most:
//! a connect timeout over TCP connect and handshake; keepalive pings that find a half-open peer
//! even while the client is busy writing ([`DisconnectReason::KeepaliveTimeout`]); limits on
//! message and frame size (an oversized frame closes the connection with code 1009 before its
//! payload is buffered), on calls in flight and on buffered bytes (past them `submit` returns
//! [`Error::Busy`] at once); and a graceful close with a deadline. With a [`ReconnectPolicy`],
//! a lost connection comes back in the same [`ConnId`] with exponential backoff and jitter.
//! A call whose request was written when the connection dropped fails with
//! [`Error::Disconnected`] (the server may have acted on it; it is never re-sent), while one
//! that never left fails with [`Error::NotSent`], or waits for the next connection when
//! reconnecting. [`Context::set_state_handler`] tells each [`StateChange`].
//!
//! ```no_run
//! use std::time::Duration;
//! use rpcloop::{ConnectionConfig, EventLoop, ReconnectPolicy, StateChange};
//!
//! let mut ev = EventLoop::new()?;
//! let config = ConnectionConfig {
//!     ping_interval: Some(Duration::from_secs(5)),
//!     pong_timeout: Duration::from_secs(3),
//!     reconnect: Some(ReconnectPolicy::default()),
//!     ..ConnectionConfig::default()
//! };
//! let conn = ev.connect("ws://127.0.0.1:9001/", config)?;
//! ev.set_state_handler(conn, |_ctx, conn, change| {
//!     if let StateChange::Disconnected(why) = change {
//!         eprintln!("{conn} lost: {why}");
//!     }
//! })?;
//! # Ok::<(), rpcloop::Error>(())
//! ```
//!
//! ## `wss://`
//!
//! With the `tls` feature (on by default), [`Context::connect`] takes `wss://` URLs: TLS is
//! rustls (no OpenSSL), driven by the same readiness events as the rest: TCP connect, TLS
//! handshake and WebSocket handshake are all non-blocking and share the connect timeout, and
//! keepalive, limits, reconnects and the exactly-once guarantee are the same as over `ws://`.
//! The server's certificate is always verified, against Mozilla's roots by default, or the
//! platform's store (`native-roots` feature), or roots or a whole `rustls::ClientConfig` of
//! yours (`TlsConfig`, in [`ConnectionConfig`]); SNI is the URL's host. A refused certificate
//! ends the connection with [`DisconnectReason::Tls`], whose [`TlsErrorKind`] and text name the
//! cause, and the calls waiting for it fail with [`Error::NotSent`]. Build with
//! `default-features = false` for a `ws://`-only library without rustls.
//!
//! ```no_run
//! # #[cfg(feature = "tls")] {
//! use rpcloop::{ConnectionConfig, EventLoop, TlsConfig};
//! use rpcloop::rustls::RootCertStore;
//! use rpcloop::rustls::pki_types::{CertificateDer, pem::PemObject};
//!
//! let mut ev = EventLoop::new()?;
//! // Mozilla's roots: public servers.
//! let public = ev.connect("wss://example.com/socket", ConnectionConfig::default())?;
//! // A private CA: trust it, and only it.
//! let mut roots = RootCertStore::empty();
//! for cert in CertificateDer::pem_file_iter("ca.pem").expect("ca.pem") {
//!     roots.add(cert.expect("a certificate")).expect("a CA certificate");
//! }
//! let config = ConnectionConfig { tls: TlsConfig::Custom(roots), ..ConnectionConfig::default() };
//! let private = ev.connect("wss://10.0.0.7:8443/", config)?;
//! # }
//! # Ok::<(), rpcloop::Error>(())
//! ```
//!
//! ## How it is built
//!
//! Two layers. The **core** is sans-IO: the pending table (a slab indexed by the call id),
//! the timer wheel and the [`Codec`] are plain data
//! structures driven by values (frames in, millisecond ticks in, completions out); **the core
//! does no I/O** and is unit-tested with a fake clock. The **driver** is a thin mio shell: it
//! owns the sockets, moves each connection through connecting, handshaking, open, closing and
//! closed, and hands frames and time to the core. A turn is: poll (never past the next
//! deadline), read every ready socket until it would block, fire expired deadlines, then run
//! the callbacks of completed calls with no internal borrow held. Other threads reach the loop
//! through a queue and a `mio::Waker` (one wake per batch), and get their results back through
//! a per-call slot that wakes the waiting task or thread.
//!
//! ## Guarantees
//! - Every submitted call completes exactly once: answer, timeout, cancel, disconnect, close or
//!   shutdown. A `submit` that returns an error did not submit: its callback is dropped unrun.
//! - An id is never matched to a call it was not issued for: each pending call keeps its full
//!   id, so a late answer to a timed-out call never completes the newer call in its place.
//! - Ids count up from 1 on each loop (never 0, which many servers read as "no id"), stay below
//!   2^31 for the first 10^9 calls with up to 1,023 pending, and never exceed 2^53 - 1, so
//!   JavaScript servers echo them back exactly.
//! - A frame nested deeper than [`ConnectionConfig::max_nesting_depth`] is malformed and
//!   completes nothing; no code path recurses on what a peer sends.
//! - Memory is bounded by [`ConnectionConfig`]: calls in flight, message and frame size, write
//!   buffer (calls queued while the connection is down count against it).
//! - Nothing a peer sends can panic the loop.
//! - `turn` spawns no thread and makes no blocking call (host names are resolved in
//!   [`Context::connect`], before any turn; [`Context::connect_addr`] skips even that).
//!
//! WebSocket compression (permessage-deflate) is not offered (a server that selects it, or any
//! extension, fails the handshake with [`Error::Handshake`]). Conformance: the Autobahn
//! TestSuite passes in full (`CONFORMANCE.md`).

// The library has no unsafe code; the unit-test binary's counting allocator
// (`core::sim::heap`) is the one exception, allowed there alone.
#![cfg_attr(not(test), forbid(unsafe_code))]
#![cfg_attr(test, deny(unsafe_code))]
#![deny(missing_docs)]

#[doc(hidden)]
pub mod bench_support;
mod config;
mod core;
mod driver;
mod error;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzz_support;
mod stats;

#[cfg(feature = "tls")]
pub use crate::config::TlsConfig;
pub use crate::config::{CallOptions, ConnectionConfig, ReconnectPolicy};
pub use crate::core::call_id::CallId;
pub use crate::core::codec::{Codec, CodecError, Decoded, Envelope, IdStyle, JsonRpc2};
pub use crate::core::conn_id::ConnId;
pub use crate::core::event::ConnState;
pub use crate::core::event::StateChange;
pub use crate::core::event::{SubscribeOptions, SubscriptionEvent, SubscriptionId};
pub use crate::core::message::Message;
pub use crate::core::notification::Notification;
pub use crate::core::request::Request;
pub use crate::core::response::Response;
pub use crate::core::unmatched::{Unmatched, UnmatchedReason};
pub use crate::driver::call_slot::PendingCall;
pub use crate::driver::context::Context;
pub use crate::driver::event_loop::EventLoop;
pub use crate::driver::handle::Handle;
pub use crate::driver::subscription_queue::{Overflow, QueueOptions, Subscription};
pub use crate::error::{DisconnectReason, Error, TlsErrorKind};
pub use crate::stats::ConnStats;
/// The rustls crate rpcloop's `wss://` is built on, for [`TlsConfig::Custom`] root stores and
/// [`TlsConfig::ClientConfig`] configurations (so that they come from the same version).
#[cfg(feature = "tls")]
pub use rustls;

/// The README's usage example, compiled as a doctest so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
