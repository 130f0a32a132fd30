//! The simulator: the whole [`Engine`] driven end to end by scripted peers on a fake clock,
//! with no socket and no sleep, in the manner of quinn-proto's test `Pair`.
//!
//! [`Sim`] plays the driver and the servers. It performs the engine's socket actions (a
//! connect succeeds, fails or hangs after a latency), carries what the engine transmits to a
//! [`Peer`] and what the peer sends back, each after the peer's latency, and jumps the clock
//! to the next delivery or deadline. Peers answer, answer late, reorder, duplicate, go silent,
//! close with a code, push, or refuse writes, as their script says; a test can also act for a
//! peer at any tick ([`Sim::push`], [`Sim::peer_close`], [`Sim::reset`], [`Sim::violate`],
//! [`Sim::refuse_writes`]).
//!
//! After every step the [`Checker`] asserts the engine's invariants: every call completes
//! exactly once, no `Timeout` before its deadline tick, `NotSent` only for a call never
//! written and `Disconnected` only for one written, an `Ok` carries its own answer, state
//! changes follow their grammar with `Closed` last and `Released` after it, one `Ended` per
//! subscription with nothing after it, and the bounds on calls and bytes.
//!
//! The tests built on it have `sim` in their names: `scenarios` (tick-exact scenarios) and
//! [`random`] (seeded runs with fault injection). The `engine` fuzz target runs
//! [`random::run_script`] on the fuzzer's input (built under `cfg(fuzzing)`).

// Under `cfg(fuzzing)` only the script runner uses the simulator; the rest serves the tests.
#![cfg_attr(not(test), allow(dead_code))]

mod checker;
#[cfg(test)]
#[allow(unsafe_code)]
pub(crate) mod heap;
mod peer;
pub(crate) mod random;
#[cfg(test)]
mod scenarios;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use tungstenite::Utf8Bytes;

pub(crate) use checker::Checker;
pub(crate) use peer::{Connect, Peer};

use super::call_id::CallId;
use super::codec::JsonRpc2;
use super::conn_id::ConnId;
use super::engine::Engine;
use super::event::{SubscribeOptions, SubscriptionId};
use super::message::Message;
use super::output::{Event, Incoming, SocketAction, Transmit, Violation};
use crate::config::{CallOptions, ConnectionConfig};
use crate::error::{DisconnectReason, Error};

/// The driver's token for a call in the simulator: a number the simulator hands out.
pub(crate) type Token = u32;

/// Which protocol the simulated servers speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    /// `{"id":N,"message":P}` both ways.
    Envelope,
    /// JSON-RPC 2.0, with batches and subscriptions.
    JsonRpc,
}

/// What crossed the wire from the client, as a peer received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    Text(String),
    Binary(Vec<u8>),
    Ping,
    Close(u16),
}

/// Something on its way, to the engine or to a peer.
#[derive(Debug)]
enum Delivery {
    /// To the engine, on socket `epoch` of the connection (dropped if that socket is gone).
    Engine(ConnId, u64, Input),
    /// To the connection's peer.
    Peer(ConnId, Frame),
}

/// What the driver would report of a socket.
#[derive(Debug)]
enum Input {
    Connected,
    ConnectFailed,
    Message(Incoming),
    /// The TCP connection ended (after a close handshake, or a reset).
    Eof,
    Violation(Violation),
}

/// One connection's socket, as the simulated driver holds it.
#[derive(Debug, Default)]
struct Socket {
    /// Which socket of the connection this is: each connect makes a new one.
    epoch: u64,
    /// The socket is gone (dropped, or closed): nothing more is read from it.
    gone: bool,
    /// The socket refuses writes (its buffer is full).
    refusing: bool,
}

/// A logged event and the tick it was polled at.
#[derive(Debug)]
pub(crate) struct Logged {
    pub(crate) at: u64,
    pub(crate) event: Event<Token>,
}

/// What a test may do from inside the event dispatch, as a handler would.
pub(crate) type Reactor = Box<dyn FnMut(&mut Sim, &Event<Token>)>;

/// The engine, its peers and a fake clock. See the module docs.
pub(crate) struct Sim {
    pub(crate) engine: Engine<Token>,
    pub(crate) now: u64,
    pub(crate) proto: Proto,
    /// The script of a connection's peer; connections without one get `default_peer`.
    pub(crate) default_peer: Peer,
    peers: HashMap<ConnId, Peer>,
    sockets: HashMap<ConnId, Socket>,
    queue: BTreeMap<(u64, u64), Delivery>,
    seq: u64,
    /// Everything polled from `poll_event`, unless `keep_log` is off.
    pub(crate) log: Vec<Logged>,
    pub(crate) keep_log: bool,
    /// What reached each peer, in order, with the tick it was written at.
    pub(crate) wire: Vec<(u64, ConnId, Frame)>,
    pub(crate) keep_wire: bool,
    pub(crate) checker: Checker,
    reactor: Option<Reactor>,
    /// The reactor is running: a pump it asks for is left to the loop that called it.
    dispatching: bool,
    next_token: Token,
    /// The ids of the requests each connection's peer received, for "never twice".
    received: HashMap<ConnId, HashSet<u64>>,
    /// Subscription keys a peer handed out, by connection.
    keys: HashMap<ConnId, Vec<String>>,
    next_key: u64,
}

impl Sim {
    /// A simulator whose peers speak `proto`, at tick 0.
    pub(crate) fn new(proto: Proto) -> Self {
        Sim {
            engine: Engine::new(),
            now: 0,
            proto,
            default_peer: Peer::default(),
            peers: HashMap::new(),
            sockets: HashMap::new(),
            queue: BTreeMap::new(),
            seq: 0,
            log: Vec::new(),
            keep_log: true,
            wire: Vec::new(),
            keep_wire: true,
            checker: Checker::default(),
            reactor: None,
            dispatching: false,
            next_token: 0,
            received: HashMap::new(),
            keys: HashMap::new(),
            next_key: 1,
        }
    }

    /// A configuration with the protocol's codec and no keepalive (so that a run settles),
    /// the other settings left as default.
    pub(crate) fn config(&self) -> ConnectionConfig {
        let mut config = ConnectionConfig {
            ping_interval: None,
            ..ConnectionConfig::default()
        };
        if self.proto == Proto::JsonRpc {
            config.codec = std::sync::Arc::new(JsonRpc2::default());
        }
        config
    }

    /// Opens a connection with `config`.
    pub(crate) fn open(&mut self, config: ConnectionConfig) -> ConnId {
        let max = (config.max_in_flight, config.max_write_buffer);
        let conn = self
            .engine
            .open(self.now, config, 0x5eed)
            .expect("the engine takes a connection");
        self.checker.opened(conn, max);
        self.pump();
        conn
    }

    /// Opens a connection whose peer follows `peer`.
    pub(crate) fn open_to(&mut self, config: ConnectionConfig, peer: Peer) -> ConnId {
        let conn = self.engine.open(self.now, config.clone(), 0x5eed);
        let conn = conn.expect("the engine takes a connection");
        self.peers.insert(conn, peer);
        self.checker
            .opened(conn, (config.max_in_flight, config.max_write_buffer));
        self.pump();
        conn
    }

    /// The script of `conn`'s peer, to change it from now on.
    pub(crate) fn peer_mut(&mut self, conn: ConnId) -> &mut Peer {
        let default = self.default_peer.clone();
        self.peers.entry(conn).or_insert(default)
    }

    fn peer(&self, conn: ConnId) -> &Peer {
        self.peers.get(&conn).unwrap_or(&self.default_peer)
    }

    /// Sets what runs on each event as it is polled (as a handler would).
    pub(crate) fn on_event(&mut self, reactor: impl FnMut(&mut Sim, &Event<Token>) + 'static) {
        self.reactor = Some(Box::new(reactor));
    }

    // ---- The application's side ------------------------------------------------------

    /// The payload of call `token`: what its answer must carry back.
    fn payload(&self, token: Token) -> String {
        match self.proto {
            Proto::Envelope => format!("{{\"n\":{token}}}"),
            Proto::JsonRpc => format!("{{\"method\":\"echo\",\"params\":{{\"n\":{token}}}}}"),
        }
    }

    fn answer_text(token: Token) -> String {
        format!("{{\"n\":{token}}}")
    }

    /// Submits a call with `timeout` (`None`: the connection's default). Returns its token
    /// and id, or the refusal.
    pub(crate) fn submit(
        &mut self,
        conn: ConnId,
        timeout: Option<Duration>,
    ) -> Result<(Token, CallId), Error> {
        let token = self.next_token;
        let payload = self.payload(token);
        let options = CallOptions { timeout };
        match self.engine.submit(self.now, conn, &payload, options, token) {
            Ok(id) => {
                self.next_token += 1;
                let timeout =
                    timeout.or_else(|| self.engine.config(conn).map(|c| c.default_timeout));
                let deadline = super::tick::tick_after(self.now, timeout.unwrap_or_default());
                self.checker.submitted(
                    token,
                    conn,
                    vec![id],
                    deadline,
                    vec![Self::answer_text(token)],
                );
                Ok((token, id))
            }
            Err((e, back)) => {
                assert_eq!(back, token, "a refusal hands the token back");
                Err(e)
            }
        }
    }

    /// Submits a call and pumps, as `Context::submit` followed by a turn would.
    pub(crate) fn call(&mut self, conn: ConnId, timeout_ms: u64) -> (Token, CallId) {
        let submitted = self.submit(conn, Some(Duration::from_millis(timeout_ms)));
        let submitted = submitted.expect("the call is taken");
        self.pump();
        submitted
    }

    /// Submits a batch of `n` calls (JSON-RPC) with one token for all.
    pub(crate) fn submit_batch(
        &mut self,
        conn: ConnId,
        n: usize,
        timeout: Option<Duration>,
    ) -> Result<(Token, Vec<CallId>), Error> {
        let token = self.next_token;
        let payloads: Vec<String> = (0..n)
            .map(|i| format!("{{\"method\":\"echo\",\"params\":{{\"i\":{i},\"n\":{token}}}}}"))
            .collect();
        let options = CallOptions { timeout };
        match self
            .engine
            .submit_batch(self.now, conn, &payloads, options, token)
        {
            Ok(ids) => {
                self.next_token += 1;
                let timeout =
                    timeout.or_else(|| self.engine.config(conn).map(|c| c.default_timeout));
                let deadline = super::tick::tick_after(self.now, timeout.unwrap_or_default());
                let expect = (0..n)
                    .map(|i| format!("{{\"i\":{i},\"n\":{token}}}"))
                    .collect();
                self.checker
                    .submitted(token, conn, ids.clone(), deadline, expect);
                Ok((token, ids))
            }
            Err((e, back)) => {
                assert_eq!(back, token);
                Err(e)
            }
        }
    }

    /// Cancels a call, telling the checker what `cancel` answered.
    pub(crate) fn cancel(&mut self, id: CallId) -> bool {
        let cancelled = self.engine.cancel(id);
        self.checker.cancel_returned(id, cancelled);
        self.pump();
        cancelled
    }

    /// Closes a connection (the close handshake).
    pub(crate) fn close(&mut self, conn: ConnId) -> Result<(), Error> {
        let closed = self.engine.close(self.now, conn);
        self.pump();
        closed
    }

    /// Sends a text message that is not a call.
    pub(crate) fn send(&mut self, conn: ConnId, text: &str) -> Result<(), Error> {
        let sent = self
            .engine
            .send(self.now, conn, Message::Text(text.to_owned()));
        self.pump();
        sent
    }

    /// Subscribes with `method` (the peer answers it with a fresh key).
    pub(crate) fn subscribe(
        &mut self,
        conn: ConnId,
        resubscribe: bool,
    ) -> Result<SubscriptionId, Error> {
        let params =
            serde_json::value::RawValue::from_string("[\"news\"]".into()).expect("valid JSON");
        let options = SubscribeOptions {
            resubscribe,
            ..SubscribeOptions::default()
        };
        let sub = self.engine.subscribe(
            self.now,
            conn,
            "sub_subscribe",
            params,
            "sub_unsubscribe",
            options,
        );
        if let Ok(sub) = sub {
            self.checker.subscribed(sub);
        }
        self.pump();
        sub
    }

    /// Unsubscribes.
    pub(crate) fn unsubscribe(&mut self, sub: SubscriptionId) -> bool {
        let done = self.engine.unsubscribe(self.now, sub);
        self.pump();
        done
    }

    /// Shuts the engine down.
    pub(crate) fn shutdown(&mut self) {
        self.engine.shutdown(self.now);
        self.pump();
    }

    // ---- The peers' side ---------------------------------------------------------------

    fn schedule(&mut self, at: u64, delivery: Delivery) {
        self.seq += 1;
        self.queue.insert((at, self.seq), delivery);
    }

    /// The current socket of `conn`, if it is up.
    fn epoch(&self, conn: ConnId) -> Option<u64> {
        self.sockets.get(&conn).filter(|s| !s.gone).map(|s| s.epoch)
    }

    fn send_to_engine(&mut self, conn: ConnId, after: u64, input: Input) {
        if let Some(epoch) = self.epoch(conn) {
            self.schedule(self.now + after, Delivery::Engine(conn, epoch, input));
        }
    }

    /// The peer of `conn` sends `text`; it arrives after the peer's latency.
    pub(crate) fn push(&mut self, conn: ConnId, text: &str) {
        let latency = self.peer(conn).latency;
        let text = Incoming::Text(Utf8Bytes::from(text.to_owned()));
        self.send_to_engine(conn, latency, Input::Message(text));
    }

    /// The peer of `conn` sends a binary message (`true`) or a ping (`false`).
    pub(crate) fn push_other(&mut self, conn: ConnId, binary: bool) {
        let latency = self.peer(conn).latency;
        let incoming = if binary {
            Incoming::Binary(bytes::Bytes::from_static(b"\x00\x01binary"))
        } else {
            Incoming::Control
        };
        self.send_to_engine(conn, latency, Input::Message(incoming));
    }

    /// The peer of `conn` sends a close frame with `code`, then ends the TCP connection once
    /// the client's echo had time to reach it.
    pub(crate) fn peer_close(&mut self, conn: ConnId, code: u16) {
        let latency = self.peer(conn).latency;
        let close = Incoming::Close {
            code,
            reason: "bye".into(),
        };
        self.send_to_engine(conn, latency, Input::Message(close));
        self.send_to_engine(conn, 3 * latency + 1, Input::Eof);
    }

    /// The peer of `conn` drops the TCP connection with no close frame.
    pub(crate) fn reset(&mut self, conn: ConnId) {
        let latency = self.peer(conn).latency;
        self.send_to_engine(conn, latency, Input::Eof);
    }

    /// The peer of `conn` breaks the protocol; the client reads that after the latency.
    pub(crate) fn violate(&mut self, conn: ConnId, violation: Violation) {
        let latency = self.peer(conn).latency;
        self.send_to_engine(conn, latency, Input::Violation(violation));
    }

    /// The socket of `conn` refuses writes (`true`) or takes them again (`false`).
    pub(crate) fn refuse_writes(&mut self, conn: ConnId, refusing: bool) {
        if let Some(socket) = self.sockets.get_mut(&conn) {
            socket.refusing = refusing;
        }
        if !refusing {
            self.engine.handle_writable(conn);
        }
        self.pump();
    }

    /// The subscription keys `conn`'s peer handed out so far.
    pub(crate) fn keys(&self, conn: ConnId) -> &[String] {
        self.keys.get(&conn).map_or(&[], Vec::as_slice)
    }

    /// The peer of `conn` sends an item of subscription `key`.
    pub(crate) fn push_item(&mut self, conn: ConnId, key: &str, n: u64) {
        let text = format!(
            "{{\"jsonrpc\":\"2.0\",\"method\":\"sub_item\",\"params\":{{\"subscription\":{key},\"result\":{n}}}}}"
        );
        self.push(conn, &text);
    }

    /// The text frames `conn`'s peer received, in order.
    pub(crate) fn received_texts(&self, conn: ConnId) -> Vec<&str> {
        self.wire
            .iter()
            .filter(|(_, c, _)| *c == conn)
            .filter_map(|(_, _, frame)| match frame {
                Frame::Text(text) => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    /// What `conn`'s peer received, in order.
    pub(crate) fn frames(&self, conn: ConnId) -> Vec<&Frame> {
        self.wire
            .iter()
            .filter(|(_, c, _)| *c == conn)
            .map(|(_, _, frame)| frame)
            .collect()
    }

    // ---- The loop ----------------------------------------------------------------------

    /// Moves everything the engine has to give: transmits to the wire, socket actions, and
    /// events (each checked, then handed to the reactor), until it has nothing more.
    ///
    /// As the driver does: the events are polled and handled until none is left, then what
    /// their handlers sent is written. A pump asked for from a handler (the reactor) is left
    /// to this loop.
    pub(crate) fn pump(&mut self) {
        if self.dispatching {
            return;
        }
        loop {
            let mut progressed = self.drain_io();
            while let Some(event) = self.engine.poll_event() {
                progressed = true;
                self.checker.see(self.now, &event);
                self.forget(&event);
                if let Some(mut reactor) = self.reactor.take() {
                    self.dispatching = true;
                    reactor(self, &event);
                    self.dispatching = false;
                    self.reactor.get_or_insert(reactor);
                }
                if self.keep_log {
                    self.log.push(Logged {
                        at: self.now,
                        event,
                    });
                }
            }
            while self.engine.poll_touched().is_some() {}
            self.checker.check_engine(&self.engine);
            if !progressed {
                return;
            }
        }
    }

    /// Lets go of what the simulator kept of a call or a connection that is over, so that
    /// its own memory stays bounded over long runs.
    fn forget(&mut self, event: &Event<Token>) {
        if let Event::Released(conn) = event {
            self.sockets.remove(conn);
            self.peers.remove(conn);
            self.keys.remove(conn);
            self.received.remove(conn);
        }
    }

    fn drain_io(&mut self) -> bool {
        let mut progressed = false;
        while let Some((conn, transmit)) = self.engine.poll_transmit() {
            progressed = true;
            self.transmit(conn, transmit);
        }
        while let Some((conn, action)) = self.engine.poll_action() {
            progressed = true;
            self.act(conn, action);
        }
        progressed
    }

    fn transmit(&mut self, conn: ConnId, transmit: Transmit) {
        // As the driver: a released connection's socket is gone with it.
        assert!(
            self.sockets.contains_key(&conn),
            "{conn}: a frame after its Released"
        );
        let refusing = self.sockets.get(&conn).is_some_and(|s| s.refusing);
        if refusing {
            return self.engine.handle_write_refused(conn, transmit);
        }
        for &id in transmit.calls() {
            self.checker.written(id);
        }
        let frame = match transmit {
            Transmit::Call { text, .. } | Transmit::Batch { text, .. } => {
                Frame::Text(text.as_str().to_owned())
            }
            Transmit::Message(Message::Text(text)) => Frame::Text(text),
            Transmit::Message(Message::Binary(data)) => Frame::Binary(data.to_vec()),
            Transmit::Ping => Frame::Ping,
        };
        self.write(conn, frame);
    }

    fn write(&mut self, conn: ConnId, frame: Frame) {
        if self.keep_wire {
            self.wire.push((self.now, conn, frame.clone()));
        }
        let latency = self.peer(conn).latency;
        self.schedule(self.now + latency, Delivery::Peer(conn, frame));
    }

    fn act(&mut self, conn: ConnId, action: SocketAction) {
        match action {
            SocketAction::Connect => {
                let socket = self.sockets.entry(conn).or_default();
                socket.epoch += 1;
                socket.gone = false;
                socket.refusing = false;
                let peer = self.peer(conn).clone();
                match peer.connect {
                    Connect::Accept => {
                        self.send_to_engine(conn, peer.connect_after, Input::Connected)
                    }
                    Connect::Refuse => {
                        self.send_to_engine(conn, peer.connect_after, Input::ConnectFailed);
                    }
                    Connect::Hang => {}
                }
            }
            SocketAction::Close { .. } | SocketAction::Drop { .. }
                if !self.sockets.contains_key(&conn) =>
            {
                panic!("{conn}: {action:?} after its Released");
            }
            SocketAction::Close { code, .. } => self.write(conn, Frame::Close(code)),
            SocketAction::Drop { close } => {
                if let Some((code, _)) = close {
                    self.write(conn, Frame::Close(code));
                }
                if let Some(socket) = self.sockets.get_mut(&conn) {
                    socket.gone = true;
                }
            }
        }
    }

    /// One round: what is due is delivered, the clock jumps to the next delivery or deadline,
    /// the deadlines fire. Returns `false` when nothing more will ever happen.
    pub(crate) fn step(&mut self) -> bool {
        self.pump();
        let next_delivery = self.queue.keys().next().map(|&(at, _)| at);
        let next = match (next_delivery, self.engine.poll_timeout()) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(next) => next,
                None => return false,
            },
        };
        self.now = self.now.max(next);
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            // Everything due is read before anything is dispatched, as a driver reads a
            // socket until it would block.
            let delivery = entry.remove();
            self.deliver(delivery);
        }
        self.engine.handle_timeout(self.now);
        self.pump();
        true
    }

    /// Steps until tick `until` (deliveries and deadlines up to it happen), then sets the
    /// clock to it.
    pub(crate) fn run_until(&mut self, until: u64) {
        for _ in 0..10_000_000 {
            self.pump();
            let next_delivery = self.queue.keys().next().map(|&(at, _)| at);
            let next = [next_delivery, self.engine.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(next) if next <= until => {
                    self.step();
                }
                _ => {
                    self.now = self.now.max(until);
                    self.engine.handle_timeout(self.now);
                    self.pump();
                    return;
                }
            }
        }
        panic!("the simulation does not settle before tick {until}");
    }

    /// Advances the clock by `ms` ticks.
    pub(crate) fn advance(&mut self, ms: u64) {
        self.run_until(self.now + ms);
    }

    /// Steps until nothing more happens (at most `max` steps).
    pub(crate) fn run(&mut self, max: usize) {
        for _ in 0..max {
            if !self.step() {
                return;
            }
        }
        panic!("the simulation still runs after {max} steps");
    }

    fn deliver(&mut self, delivery: Delivery) {
        match delivery {
            Delivery::Engine(conn, epoch, input) => {
                if self.epoch(conn) != Some(epoch) {
                    return; // that socket is gone
                }
                let now = self.now;
                match input {
                    Input::Connected => self.engine.handle_connected(now, conn),
                    Input::ConnectFailed => {
                        self.sockets.entry(conn).or_default().gone = true;
                        let reason = DisconnectReason::ConnectFailed {
                            kind: std::io::ErrorKind::ConnectionRefused,
                            message: "refused".into(),
                        };
                        self.engine.handle_transport_error(now, conn, reason);
                    }
                    Input::Message(incoming) => self.engine.handle_message(now, conn, incoming),
                    Input::Eof => {
                        self.sockets.entry(conn).or_default().gone = true;
                        self.engine.handle_transport_closed(now, conn);
                    }
                    Input::Violation(violation) => {
                        let reason = match violation {
                            Violation::TooBig => DisconnectReason::MessageTooLarge("big".into()),
                            Violation::Reset => DisconnectReason::Reset,
                            _ => DisconnectReason::Protocol("broken".into()),
                        };
                        self.engine.handle_violation(now, conn, violation, reason);
                    }
                }
            }
            Delivery::Peer(conn, frame) => self.peer_receives(conn, frame),
        }
    }

    /// The peer of `conn` reads `frame` and acts on it as its script says.
    fn peer_receives(&mut self, conn: ConnId, frame: Frame) {
        let peer = self.peer(conn).clone();
        match frame {
            Frame::Ping if peer.pong => {
                self.send_to_engine(conn, peer.latency, Input::Message(Incoming::Control));
            }
            Frame::Close(code) if peer.echo_close => {
                let close = Incoming::Close {
                    code,
                    reason: "".into(),
                };
                self.send_to_engine(conn, peer.latency, Input::Message(close));
                self.send_to_engine(conn, peer.latency, Input::Eof);
            }
            Frame::Text(text) => self.peer_answers(conn, &peer, &text),
            _ => {}
        }
    }

    fn peer_answers(&mut self, conn: ConnId, peer: &Peer, text: &str) {
        let Ok(request) = serde_json::from_str::<serde_json::Value>(text) else {
            return;
        };
        let (requests, batch) = match request {
            serde_json::Value::Array(items) => (items, true),
            one => (vec![one], false),
        };
        let mut answers = Vec::new();
        for request in &requests {
            let Some(id) = request.get("id").and_then(serde_json::Value::as_u64) else {
                continue;
            };
            let fresh = self.received.entry(conn).or_default().insert(id);
            assert!(fresh, "request {id} reached the server twice");
            if let Some(answer) = self.answer_to(conn, request, id) {
                answers.push(answer);
            }
        }
        if !peer.answers || answers.is_empty() {
            return;
        }
        if peer.reorder {
            answers.reverse();
        }
        let frames: Vec<String> = if batch && !peer.split_batches {
            vec![format!("[{}]", answers.join(","))]
        } else {
            answers
        };
        let copies = if peer.duplicate { 2 } else { 1 };
        for (i, frame) in frames.iter().enumerate() {
            // A reordering peer answers later requests first within a frame, and spreads
            // single answers so that they overtake each other.
            let skew = if peer.reorder && !batch {
                (requests.len() - i) as u64 * 3
            } else {
                0
            };
            for _ in 0..copies {
                let message = Incoming::Text(Utf8Bytes::from(frame.clone()));
                let after = peer.latency + peer.think + skew;
                self.send_to_engine(conn, after, Input::Message(message));
            }
        }
    }

    /// The answer to one request, in the protocol's form.
    fn answer_to(&mut self, conn: ConnId, request: &serde_json::Value, id: u64) -> Option<String> {
        match self.proto {
            Proto::Envelope => {
                let message = request.get("message")?;
                Some(format!("{{\"id\":{id},\"message\":{message}}}"))
            }
            Proto::JsonRpc => {
                let method = request.get("method")?.as_str()?;
                let result = if method.ends_with("_subscribe") {
                    let key = format!("\"k{}\"", self.next_key);
                    self.next_key += 1;
                    self.keys.entry(conn).or_default().push(key.clone());
                    key
                } else if method.ends_with("_unsubscribe") {
                    "true".to_owned()
                } else {
                    request.get("params")?.to_string()
                };
                Some(format!(
                    "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{result}}}"
                ))
            }
        }
    }

    /// Ends the run: every call submitted completed exactly once.
    pub(crate) fn finish(&mut self) {
        self.pump();
        self.checker.finish();
    }

    /// The events logged so far for `conn`'s state, in order.
    pub(crate) fn states(&self, conn: ConnId) -> Vec<String> {
        self.log
            .iter()
            .filter_map(|logged| match &logged.event {
                Event::State(c, change) if *c == conn => Some(state_name(change)),
                Event::Released(c) if *c == conn => Some("Released".to_owned()),
                _ => None,
            })
            .collect()
    }

    /// The result of call `token`, if it completed (a single call).
    pub(crate) fn result(&self, token: Token) -> Option<&Result<super::response::Response, Error>> {
        self.log.iter().find_map(|logged| match &logged.event {
            Event::Completed {
                token: t, result, ..
            } if *t == token => Some(result),
            _ => None,
        })
    }

    /// The tick `conn` was released at.
    pub(crate) fn released_at(&self, conn: ConnId) -> Option<u64> {
        self.log.iter().find_map(|logged| match logged.event {
            Event::Released(c) if c == conn => Some(logged.at),
            _ => None,
        })
    }

    /// The tick call `token` completed at.
    pub(crate) fn completed_at(&self, token: Token) -> Option<u64> {
        self.log.iter().find_map(|logged| match &logged.event {
            Event::Completed { token: t, .. } | Event::BatchCompleted { token: t, .. }
                if *t == token =>
            {
                Some(logged.at)
            }
            _ => None,
        })
    }

    /// The results of batch `token`, if it completed.
    pub(crate) fn batch_results(
        &self,
        token: Token,
    ) -> Option<&Vec<Result<super::response::Response, Error>>> {
        self.log.iter().find_map(|logged| match &logged.event {
            Event::BatchCompleted {
                token: t, results, ..
            } if *t == token => Some(results),
            _ => None,
        })
    }
}

/// A state change's name, with its data where a test looks at it.
pub(crate) fn state_name(change: &super::event::StateChange) -> String {
    use super::event::StateChange;
    match change {
        StateChange::Connecting => "Connecting".into(),
        StateChange::Open => "Open".into(),
        StateChange::Disconnected(reason) => format!("Disconnected({})", reason_name(reason)),
        StateChange::Reconnecting { attempt, delay } => {
            format!("Reconnecting({attempt}, {}ms)", delay.as_millis())
        }
        StateChange::Closed => "Closed".into(),
    }
}

/// A short name for a disconnect reason.
pub(crate) fn reason_name(reason: &DisconnectReason) -> String {
    match reason {
        DisconnectReason::PeerClosed { code, .. } => format!("PeerClosed {code}"),
        DisconnectReason::Reset => "Reset".into(),
        DisconnectReason::ConnectFailed { .. } => "ConnectFailed".into(),
        DisconnectReason::ConnectTimeout => "ConnectTimeout".into(),
        DisconnectReason::KeepaliveTimeout => "KeepaliveTimeout".into(),
        DisconnectReason::Protocol(_) => "Protocol".into(),
        DisconnectReason::MessageTooLarge(_) => "MessageTooLarge".into(),
        other => format!("{other:?}"),
    }
}
