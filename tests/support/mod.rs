//! Scriptable loopback WebSocket servers for the integration tests.
//!
//! A [`Server`] listens on 127.0.0.1 port 0 and runs a script (plain blocking tungstenite on
//! its own thread) against each client it accepts. Scripts use the helpers below to read
//! requests and write answers in whatever order, shape or timing a test needs. Every socket
//! has a read timeout, so a script waiting for a client that never comes ends by itself.
//!
//! A server speaks `ws://` or, started with [`Transport::Tls`], `wss://` (rustls over the same
//! socket, a certificate from the test CA of [`tls`]); the scripts are the same either way, so
//! a test written against a [`Transport`] runs over both ([`over_ws_and_wss!`]).
#![allow(dead_code)]

pub mod jsonrpc;
pub mod memory;
pub mod raw;
pub mod tls;

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::ops::{Deref, DerefMut};
use std::rc::Rc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rpcloop::{ConnId, ConnState, ConnectionConfig, Context, Error, EventLoop, Response};
use serde_json::Value;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

pub type Ws = WebSocket<ServerStream>;

/// What a test server speaks: `ws://`, or `wss://` with a certificate of the test PKI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Plain,
    /// TLS, presenting this certificate.
    Tls(tls::Cert),
}

/// `wss://` with the good certificate: what a client trusting the test CA accepts.
pub const TLS: Transport = Transport::Tls(tls::Cert::Good);

impl Transport {
    pub fn scheme(self) -> &'static str {
        match self {
            Transport::Plain => "ws",
            Transport::Tls(_) => "wss",
        }
    }

    /// `config` as a client of this transport's servers needs it: for TLS, trusting the test
    /// CA (and nothing else).
    pub fn client(self, config: ConnectionConfig) -> ConnectionConfig {
        match self {
            Transport::Plain => config,
            #[cfg(feature = "tls")]
            Transport::Tls(_) => ConnectionConfig {
                tls: rpcloop::TlsConfig::Custom(tls::pki().roots()),
                ..config
            },
            #[cfg(not(feature = "tls"))]
            Transport::Tls(_) => panic!("wss:// needs the tls feature"),
        }
    }

    /// The server's side of an accepted socket (for TLS, the handshake runs in its first read
    /// or write).
    pub fn accept(self, tcp: TcpStream) -> io::Result<ServerStream> {
        Ok(match self {
            Transport::Plain => ServerStream::Plain(tcp),
            Transport::Tls(cert) => {
                let conn = rustls::ServerConnection::new(tls::pki().server_config(cert))
                    .map_err(io::Error::other)?;
                ServerStream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)))
            }
        })
    }
}

/// A test server's socket: plain TCP, or TLS over it (blocking rustls; the TLS handshake runs
/// inside the first read or write). It dereferences to the TCP stream, for socket options.
pub enum ServerStream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

impl Read for ServerStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ServerStream::Plain(s) => s.read(buf),
            ServerStream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for ServerStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ServerStream::Plain(s) => s.write(buf),
            ServerStream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            ServerStream::Plain(s) => s.flush(),
            ServerStream::Tls(s) => s.flush(),
        }
    }
}

impl Deref for ServerStream {
    type Target = TcpStream;
    fn deref(&self) -> &TcpStream {
        match self {
            ServerStream::Plain(s) => s,
            ServerStream::Tls(s) => &s.sock,
        }
    }
}

impl DerefMut for ServerStream {
    fn deref_mut(&mut self) -> &mut TcpStream {
        match self {
            ServerStream::Plain(s) => s,
            ServerStream::Tls(s) => &mut s.sock,
        }
    }
}

/// Runs a test written for a [`Transport`] over both: `over_ws_and_wss!(name, ...)` makes
/// `name::ws` and (with the `tls` feature) `name::wss`, calling `name(Transport::Plain)` and
/// `name(TLS)`.
#[macro_export]
macro_rules! over_ws_and_wss {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            #[test]
            fn ws() {
                super::$test($crate::support::Transport::Plain)
            }

            #[cfg(feature = "tls")]
            #[test]
            fn wss() {
                super::$test($crate::support::TLS)
            }
        }
    )*};
}

/// A server thread and its address.
pub struct Server {
    pub addr: SocketAddr,
    pub transport: Transport,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Accepts one client and runs `script` on it.
    pub fn start(script: impl FnOnce(&mut Ws) + Send + 'static) -> Server {
        Server::start_with(Transport::Plain, script)
    }

    /// Accepts one client over `transport` and runs `script` on it.
    pub fn start_with(
        transport: Transport,
        script: impl FnOnce(&mut Ws) + Send + 'static,
    ) -> Server {
        let mut script = Some(script);
        Server::start_many_with(transport, 1, move |ws, _| {
            if let Some(script) = script.take() {
                script(ws)
            }
        })
    }

    /// Accepts `clients` clients one after the other, running `script(ws, n)` on the n-th.
    pub fn start_many(
        clients: usize,
        script: impl FnMut(&mut Ws, usize) + Send + 'static,
    ) -> Server {
        Server::start_many_with(Transport::Plain, clients, script)
    }

    /// [`start_many`](Self::start_many) over `transport`.
    pub fn start_many_with(
        transport: Transport,
        clients: usize,
        script: impl FnMut(&mut Ws, usize) + Send + 'static,
    ) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        Server::serve(transport, listener, clients, script)
    }

    /// Like [`start`](Self::start), on a given address (a server restarting on its old port).
    pub fn start_at(addr: SocketAddr, script: impl FnOnce(&mut Ws) + Send + 'static) -> Server {
        Server::start_at_with(Transport::Plain, addr, script)
    }

    /// [`start_at`](Self::start_at) over `transport`.
    pub fn start_at_with(
        transport: Transport,
        addr: SocketAddr,
        script: impl FnOnce(&mut Ws) + Send + 'static,
    ) -> Server {
        // std sets SO_REUSEADDR on Unix, so the port is free again despite TIME_WAIT.
        let listener = TcpListener::bind(addr).expect("bind the old address");
        let mut script = Some(script);
        Server::serve(transport, listener, 1, move |ws, _| {
            if let Some(script) = script.take() {
                script(ws)
            }
        })
    }

    fn serve(
        transport: Transport,
        listener: TcpListener,
        clients: usize,
        mut script: impl FnMut(&mut Ws, usize) + Send + 'static,
    ) -> Server {
        let addr = listener.local_addr().unwrap();
        let thread = std::thread::spawn(move || {
            for n in 0..clients {
                let (stream, _) = listener.accept().expect("accept");
                stream
                    .set_read_timeout(Some(Duration::from_secs(20)))
                    .unwrap();
                stream.set_nodelay(true).unwrap();
                let Ok(stream) = transport.accept(stream) else {
                    continue;
                };
                let config = WebSocketConfig::default().write_buffer_size(1 << 20);
                // A client that refuses the certificate fails the TLS handshake here.
                let Ok(mut ws) = tungstenite::accept_with_config(stream, Some(config)) else {
                    continue;
                };
                script(&mut ws, n);
            }
        });
        Server {
            addr,
            transport,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("{}://{}/", self.transport.scheme(), self.addr)
    }

    /// `config` as a client of this server needs it (see [`Transport::client`]).
    pub fn client(&self, config: ConnectionConfig) -> ConnectionConfig {
        self.transport.client(config)
    }

    /// Waits for the script to end (it panics the test if the script panicked).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            t.join().expect("server script panicked");
        }
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub id: u64,
    pub message: Value,
}

/// Reads the next text message as an envelope request; `None` once the client is gone.
pub fn read_request(ws: &mut Ws) -> Option<Request> {
    loop {
        match ws.read() {
            Ok(Message::Text(text)) => return Some(parse_request(&text)),
            Ok(Message::Close(_)) => {
                // Let tungstenite answer the close.
                let _ = ws.flush();
                continue;
            }
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

fn parse_request(text: &str) -> Request {
    let v: Value = serde_json::from_str(text).expect("client sent invalid JSON");
    Request {
        id: v["id"].as_u64().expect("request without id"),
        message: v["message"].clone(),
    }
}

/// Echoes in shuffled batches until the client leaves: waits for one request, takes every
/// other one that has already arrived, and answers them all in random order in one write.
pub fn shuffling_echo(ws: &mut Ws) {
    let mut seed = 0x5EED_u64;
    while let Some(first) = read_request(ws) {
        let mut batch = vec![first];
        ws.get_mut().set_nonblocking(true).unwrap();
        loop {
            match ws.read() {
                Ok(Message::Text(text)) => batch.push(parse_request(&text)),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    break;
                }
                Err(_) => return,
            }
        }
        ws.get_mut().set_nonblocking(false).unwrap();
        seed += 1;
        shuffle(&mut batch, seed);
        for req in &batch {
            answer(ws, req.id, &req.message);
        }
        if ws.flush().is_err() {
            return;
        }
    }
}

/// Reads exactly `n` requests.
pub fn read_requests(ws: &mut Ws, n: usize) -> Vec<Request> {
    (0..n)
        .map(|i| read_request(ws).unwrap_or_else(|| panic!("client left after {i} of {n}")))
        .collect()
}

/// Buffers an answer (sent on the next flush).
pub fn answer(ws: &mut Ws, id: u64, message: &Value) {
    let text = serde_json::json!({"id": id, "message": message}).to_string();
    ws.write(Message::text(text)).expect("write answer");
}

/// Buffers a raw text message.
pub fn raw(ws: &mut Ws, text: &str) {
    ws.write(Message::text(text.to_owned())).expect("write raw");
}

/// Echoes every request back until the client leaves.
pub fn echo(ws: &mut Ws) {
    while let Some(req) = read_request(ws) {
        answer(ws, req.id, &req.message);
        if ws.flush().is_err() {
            return;
        }
    }
}

/// Waits (reading and answering control frames) until the client closes or goes away.
pub fn drain_until_closed(ws: &mut Ws) {
    while read_request(ws).is_some() {}
}

/// Small deterministic shuffle (xorshift), no dependency.
pub fn shuffle<T>(items: &mut [T], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        items.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}

/// Turns the loop until `done` holds; panics after a generous wall-clock bound, which only a
/// hang (a bug) can reach.
pub fn turn_until(ev: &mut EventLoop, mut done: impl FnMut(&mut EventLoop) -> bool) {
    let give_up = Instant::now() + Duration::from_secs(30);
    while !done(ev) {
        assert!(
            Instant::now() < give_up,
            "the loop did not get there within 30 s"
        );
        ev.turn(Some(Duration::from_millis(20))).expect("turn");
    }
}

/// Default settings without keepalive pings: for tests that check no deadline is left behind.
pub fn without_keepalive() -> ConnectionConfig {
    ConnectionConfig {
        ping_interval: None,
        ..ConnectionConfig::default()
    }
}

/// A loop connected (open) to `server`.
pub fn connected(server: &Server, config: ConnectionConfig) -> (EventLoop, ConnId) {
    let mut ev = EventLoop::new().expect("loop");
    let conn = ev
        .connect(&server.url(), server.client(config))
        .expect("connect");
    turn_until(&mut ev, |ev| {
        ev.state(conn) == Some(rpcloop::ConnState::Open)
    });
    (ev, conn)
}

/// What each call of a test got, by call number: every callback appends here, so a test can
/// assert that each call completed exactly once. Errors are kept as their `Debug` text.
#[derive(Clone)]
pub struct Outcomes(Rc<RefCell<Vec<Vec<Outcome>>>>);

/// A call's payload text, or its error's `Debug` text.
pub type Outcome = Result<String, String>;

impl Outcomes {
    pub fn new(calls: usize) -> Self {
        Outcomes(Rc::new(RefCell::new(vec![Vec::new(); calls])))
    }

    /// The callback for call number `i`: records the payload text or the error.
    pub fn callback(
        &self,
        i: usize,
    ) -> impl FnOnce(&mut Context, Result<Response, Error>) + 'static {
        let outcomes = self.0.clone();
        move |_, result| {
            let outcome = result
                .map(|r| r.text().to_owned())
                .map_err(|e| format!("{e:?}"));
            outcomes.borrow_mut()[i].push(outcome);
        }
    }

    /// Records an outcome for call `i` (for callbacks written by hand).
    pub fn record(&self, i: usize, result: Result<Response, Error>) {
        let outcome = result
            .map(|r| r.text().to_owned())
            .map_err(|e| format!("{e:?}"));
        self.0.borrow_mut()[i].push(outcome);
    }

    /// How many calls have completed at least once.
    pub fn completed(&self) -> usize {
        self.0.borrow().iter().filter(|o| !o.is_empty()).count()
    }

    pub fn all_completed(&self) -> bool {
        self.completed() == self.0.borrow().len()
    }

    /// Panics unless every call completed exactly once.
    pub fn assert_exactly_once(&self) {
        for (i, outcomes) in self.0.borrow().iter().enumerate() {
            assert_eq!(
                outcomes.len(),
                1,
                "call {i} completed {} times: {outcomes:?}",
                outcomes.len()
            );
        }
    }

    /// The one outcome of call `i`.
    pub fn get(&self, i: usize) -> Result<String, String> {
        let outcomes = self.0.borrow();
        assert_eq!(outcomes[i].len(), 1, "call {i}: {:?}", outcomes[i]);
        outcomes[i][0].clone()
    }

    /// The one error of call `i` (its `Debug` text); panics if it succeeded.
    pub fn error(&self, i: usize) -> String {
        self.get(i).expect_err("expected an error")
    }
}

/// A few more turns: whatever was about to happen (a second completion) happens.
pub fn settle(ev: &mut EventLoop) {
    for _ in 0..3 {
        ev.turn(Some(Duration::from_millis(5))).expect("turn");
    }
}

/// Closes `conn` and turns until the close handshake is over.
pub fn close_and_wait(ev: &mut EventLoop, conn: ConnId) {
    ev.close(conn).expect("close");
    turn_until(ev, |ev| ev.state(conn) == Some(ConnState::Closed));
}

/// The loop is still fit for work: a new connection to a healthy echo server opens and
/// answers a call, and closes cleanly.
pub fn assert_serves_another_connection(ev: &mut EventLoop) {
    assert_serves_another_connection_over(ev, Transport::Plain);
}

/// [`assert_serves_another_connection`] with a server of `transport`.
pub fn assert_serves_another_connection_over(ev: &mut EventLoop, transport: Transport) {
    let server = Server::start_with(transport, echo);
    let conn = ev
        .connect(&server.url(), server.client(ConnectionConfig::default()))
        .expect("connect again");
    let outcomes = Outcomes::new(1);
    ev.submit(
        conn,
        serde_json::json!({"still": "alive"}),
        outcomes.callback(0),
    )
    .expect("submit on the new connection");
    turn_until(ev, |_| outcomes.all_completed());
    settle(ev);
    outcomes.assert_exactly_once();
    assert_eq!(outcomes.get(0).unwrap(), r#"{"still":"alive"}"#);
    assert_eq!(ev.state(conn), Some(ConnState::Open));
    close_and_wait(ev, conn);
    server.join();
}
