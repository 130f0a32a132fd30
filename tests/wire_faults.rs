//! Faults on the wire, below what tungstenite's server API can produce: a raw-TCP server
//! (`support::raw`) that stalls or botches the handshake, sends illegal frames, announces
//! lengths it never sends, resets in the middle of a frame, floods pings, or never reads.
//! (The server that never reads needs no raw frames: it runs on `support::Server`, over
//! `ws://` and `wss://`, where TLS records pile up behind the WebSocket buffer too.)
//!
//! Every test asserts the same things: nothing panics; `turn` keeps returning `Ok` (`turn_until`
//! expects it); every call completes exactly once, with the error the fault calls for; the peak
//! of bytes live on the client loop's thread stays bounded (this binary's global allocator
//! counts them per thread, see `support::memory`); and the same `EventLoop` still serves a
//! healthy connection afterwards.
//!
//! Two assertions look ahead to changes being made to the library and are placed last in their
//! tests, so that everything before them is checked either way:
//! - on a protocol violation the client sends a close frame before dropping the connection,
//!   with the status code RFC 6455 §7.4.1 gives: 1002 (protocol error), 1007 (invalid UTF-8),
//!   1009 (message too big);
//! - a call that was never written because the connection failed to open fails with
//!   `Error::NotSent(reason)` (a failed handshake still gives `Error::Handshake(text)`).

mod support;

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::rc::Rc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rpcloop::{
    CallOptions, ConnId, ConnState, ConnectionConfig, DisconnectReason, Error, EventLoop,
    UnmatchedReason,
};
use serde_json::{Value, json};
use support::memory::{self, PeakAlloc, mib};
use support::raw::{
    BINARY, CLOSE, CONTINUATION, PING, PONG, RawPeer, RawServer, RefusingPort, TEXT, frame,
    frame_header, websocket_key,
};
use support::*;

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// What a loop may hold on its thread for a connection and a few calls, whatever the peer
/// does: its own buffers (tungstenite's 128 KiB read buffer, the frame arena's 64 KiB chunk,
/// the poll's event list...), nothing in proportion to what the peer announces or sends.
const LOOP_BOUND: usize = MIB;

/// How long a test waits for a server thread's report: only a hang gets there.
const WAIT: Duration = Duration::from_secs(30);

/// Calls made in each protocol-violation test: all of them in flight when the fault hits.
const CALLS: usize = 3;

/// What a message handler saw: each unmatched message's reason and content.
type Seen<T> = Rc<RefCell<Vec<(UnmatchedReason, T)>>>;

/// Per call, every outcome it had: `Ok(())` for the answer it expected.
type Done = Rc<RefCell<Vec<Vec<Result<(), String>>>>>;

fn short(ms: u64) -> CallOptions {
    CallOptions {
        timeout: Some(Duration::from_millis(ms)),
    }
}

/// The text of an envelope answer.
fn answer_text(id: u64, message: &Value) -> String {
    json!({"id": id, "message": message}).to_string()
}

/// A loop that made calls to a server and saw all of them complete, with the peak of memory
/// its thread held meanwhile.
struct Client {
    ev: EventLoop,
    conn: ConnId,
    outcomes: Outcomes,
    peak: usize,
}

impl Client {
    /// Panics unless the thread's peak stayed under `bound`; prints the figure.
    fn assert_peak_below(&self, bound: usize, what: &str) {
        eprintln!("{what}: peak {} (bound {})", mib(self.peak), mib(bound));
        assert!(
            self.peak < bound,
            "{what}: the client thread peaked at {} (bound {})",
            mib(self.peak),
            mib(bound)
        );
    }

    /// The connection's state, as its `Debug` text (which, for `Disconnected(reason)`, is also
    /// the `Debug` text of `Error::Disconnected(reason)`).
    fn state(&self) -> String {
        format!("{:?}", self.ev.state(self.conn).expect("the connection"))
    }
}

/// Connects to `url`, lets `setup` act on the connection, submits `calls` calls (payloads
/// 0, 1, ...) at once, and turns until every one completed, then a few turns more so that a
/// second completion would show. All of it runs under `memory::track`.
fn calls_against(
    url: &str,
    config: ConnectionConfig,
    calls: usize,
    options: CallOptions,
    setup: impl FnOnce(&mut EventLoop, ConnId),
) -> Client {
    let ((ev, conn, outcomes), peak) = memory::track(|| {
        let mut ev = EventLoop::new().expect("loop");
        let conn = ev.connect(url, config).expect("connect");
        setup(&mut ev, conn);
        let outcomes = Outcomes::new(calls);
        for i in 0..calls {
            ev.submit_with(conn, i, options, outcomes.callback(i))
                .expect("submit");
        }
        turn_until(&mut ev, |_| outcomes.all_completed());
        settle(&mut ev);
        (ev, conn, outcomes)
    });
    outcomes.assert_exactly_once();
    Client {
        ev,
        conn,
        outcomes,
        peak,
    }
}

/// A raw server that completes the handshake, reads `calls` requests and then runs
/// `misbehave`, which returns the close code it read from the client (see
/// `RawPeer::read_until_close`); the code comes back through the receiver.
fn misbehaving_server(
    calls: usize,
    misbehave: impl FnOnce(&mut RawPeer, &[Request]) -> Option<u16> + Send + 'static,
) -> (RawServer, mpsc::Receiver<Option<u16>>) {
    let (tx, rx) = mpsc::channel();
    let server = RawServer::start(move |mut peer| {
        peer.accept_handshake();
        let reqs = peer.read_requests(calls);
        let _ = tx.send(misbehave(&mut peer, &reqs));
    });
    (server, rx)
}

/// A raw server that completes the handshake, reads `calls` requests, runs `serve`, then
/// reads until the client's close and answers it; reports the close code.
fn patient_server(
    calls: usize,
    serve: impl FnOnce(&mut RawPeer, Vec<Request>) + Send + 'static,
) -> (RawServer, mpsc::Receiver<Option<u16>>) {
    misbehaving_server(calls, move |peer, reqs| {
        serve(peer, reqs.to_vec());
        let code = peer.read_until_close();
        if let Some(code) = code {
            let _ = peer.send_close(code);
        }
        code
    })
}

/// The client's close code, as the server script reported it.
fn close_code_seen(rx: &mpsc::Receiver<Option<u16>>) -> Option<u16> {
    rx.recv_timeout(WAIT)
        .expect("the server script ended without reporting")
}

/// The whole check of a fault that must end an open connection: `CALLS` calls in flight, the
/// server misbehaves; every call fails once with an error whose `Debug` text starts with
/// `error` and contains `cause`, the connection's state says the same, the thread's peak
/// stays under `bound`, and the loop serves another connection. Returns the close code the
/// server saw, for the caller to check last (see `assert_close_codes`).
fn violation(
    what: &str,
    config: ConnectionConfig,
    misbehave: impl FnOnce(&mut RawPeer, &[Request]) -> Option<u16> + Send + 'static,
    error: &str,
    cause: &str,
    bound: usize,
) -> Option<u16> {
    let (server, close) = misbehaving_server(CALLS, misbehave);
    let mut client = calls_against(
        &server.url(),
        config,
        CALLS,
        CallOptions::default(),
        |_, _| {},
    );
    for i in 0..CALLS {
        let e = client.outcomes.error(i);
        assert!(
            e.starts_with(error) && e.contains(cause),
            "{what}: call {i} failed with {e}, expected {error}...{cause}..."
        );
    }
    assert_eq!(client.state(), client.outcomes.error(0), "{what}: state");
    client.assert_peak_below(bound, what);
    assert_serves_another_connection(&mut client.ev);
    server.join();
    close_code_seen(&close)
}

/// RFC 6455 §7.4.1: before dropping a connection for a protocol violation, the client sends
/// a close frame with the code that names it. `seen` pairs each case with the code the server
/// read (`None`: the client dropped the connection without a close frame).
fn assert_close_codes(seen: &[(String, Option<u16>)], expected: u16) {
    let wrong: Vec<_> = seen
        .iter()
        .filter(|(_, code)| *code != Some(expected))
        .collect();
    assert!(
        wrong.is_empty(),
        "RFC 6455 §7.4.1: the client must send a close frame with code {expected} before \
         dropping the connection; the server saw (None: no close frame): {wrong:?}"
    );
}

#[test]
fn the_tracker_sees_this_threads_allocations_only() {
    let (kept, peak) = memory::track(|| {
        drop(std::hint::black_box(vec![1u8; 4 * MIB]));
        // Another thread's allocation is not this thread's.
        std::thread::spawn(|| vec![2u8; 32 * MIB].len())
            .join()
            .unwrap()
    });
    assert_eq!(kept, 32 * MIB);
    assert!(
        (4 * MIB..8 * MIB).contains(&peak),
        "peak {} for a 4 MiB vector",
        mib(peak)
    );
}

// ---- Opening the connection ----

#[test]
fn a_server_that_never_answers_the_upgrade_fails_the_waiting_calls_as_not_sent() {
    let (seen_tx, seen_rx) = mpsc::channel();
    let server = RawServer::start(move |mut peer| {
        let head = peer.read_http_request();
        let _ = seen_tx.send(head.is_some_and(|h| h.starts_with("GET / HTTP/1.1\r\n")));
        peer.wait_for_eof(); // silent until the client gives up
    });
    let config = ConnectionConfig {
        connect_timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let mut client = calls_against(&server.url(), config, 3, CallOptions::default(), |_, _| {});
    assert!(
        seen_rx.recv_timeout(WAIT).unwrap(),
        "the server never saw the upgrade request"
    );
    assert_eq!(
        client.ev.state(client.conn),
        Some(ConnState::Disconnected(DisconnectReason::ConnectTimeout))
    );
    client.assert_peak_below(LOOP_BOUND, "stalled upgrade");
    assert_serves_another_connection(&mut client.ev);
    server.join();
    // The calls were never written: nothing reached the server, so they are safe to retry.
    for i in 0..3 {
        assert_eq!(
            client.outcomes.error(i),
            "NotSent(ConnectTimeout)",
            "call {i}"
        );
    }
}

#[test]
fn a_refused_tcp_connect_fails_the_waiting_calls_as_not_sent() {
    let port = RefusingPort::new();
    let mut client = calls_against(
        &port.url(),
        ConnectionConfig::default(),
        3,
        CallOptions::default(),
        |_, _| {},
    );
    assert!(
        client.state().starts_with("Disconnected(ConnectFailed {"),
        "{}",
        client.state()
    );
    client.assert_peak_below(LOOP_BOUND, "refused connect");
    assert_serves_another_connection(&mut client.ev);
    for i in 0..3 {
        let e = client.outcomes.error(i);
        assert!(
            e.starts_with("NotSent(ConnectFailed {") && e.contains("ConnectionRefused"),
            "call {i}: {e}"
        );
    }
}

#[test]
fn a_reset_before_the_upgrade_answer_fails_calls_with_a_handshake_error() {
    let server = RawServer::start(|mut peer| {
        if peer.read_http_request().is_some() {
            peer.reset();
        }
    });
    let mut client = calls_against(
        &server.url(),
        ConnectionConfig::default(),
        3,
        CallOptions::default(),
        |_, _| {},
    );
    for i in 0..3 {
        let e = client.outcomes.error(i);
        assert!(
            e.starts_with("Handshake(") && e.contains("reset"),
            "call {i}: {e}"
        );
    }
    assert!(
        client.state().starts_with("Disconnected(Handshake("),
        "{}",
        client.state()
    );
    client.assert_peak_below(LOOP_BOUND, "reset during the handshake");
    assert_serves_another_connection(&mut client.ev);
    server.join();
}

/// A raw server answers the upgrade request with `response(key)`; every call waiting for the
/// connection fails with `Error::Handshake` naming `cause`.
fn assert_handshake_refused(what: &str, response: fn(&str) -> String, cause: &str) {
    assert_handshake_refused_with(what, ConnectionConfig::default(), response, cause);
}

/// As `assert_handshake_refused`, for a client with this configuration.
fn assert_handshake_refused_with(
    what: &str,
    config: ConnectionConfig,
    response: fn(&str) -> String,
    cause: &str,
) {
    let server = RawServer::start(move |mut peer| {
        let Some(head) = peer.read_http_request() else {
            return;
        };
        let key = websocket_key(&head).expect("a Sec-WebSocket-Key");
        let _ = peer.write_raw(response(&key).as_bytes());
        peer.wait_for_eof();
    });
    let mut client = calls_against(&server.url(), config, 3, CallOptions::default(), |_, _| {});
    for i in 0..3 {
        let e = client.outcomes.error(i);
        assert!(
            e.starts_with("Handshake(") && e.contains(cause),
            "{what}: call {i} failed with {e}"
        );
    }
    assert!(
        client.state().starts_with("Disconnected(Handshake(") && client.state().contains(cause),
        "{what}: {}",
        client.state()
    );
    client.assert_peak_below(LOOP_BOUND, what);
    // The ended connection refuses new calls with the same error.
    match client
        .ev
        .submit(client.conn, 1, |_, _| panic!("must not run"))
    {
        Err(Error::Handshake(text)) => assert!(text.contains(cause), "{what}: {text}"),
        other => panic!("{what}: {other:?}"),
    }
    assert_serves_another_connection(&mut client.ev);
    server.join();
}

fn accept_header(key: &str) -> String {
    tungstenite::handshake::derive_accept_key(key.as_bytes())
}

#[test]
fn a_404_to_the_upgrade_fails_calls_with_a_handshake_error() {
    assert_handshake_refused(
        "404",
        |_| "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".into(),
        "404",
    );
}

#[test]
fn a_101_with_a_wrong_accept_key_fails_calls_with_a_handshake_error() {
    assert_handshake_refused(
        "wrong Sec-WebSocket-Accept",
        |key| {
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {}\r\n\r\n",
                accept_header(&format!("{key}x"))
            )
        },
        "Sec-WebSocket-Accept",
    );
}

#[test]
fn a_101_without_upgrade_and_connection_headers_fails_calls_with_a_handshake_error() {
    assert_handshake_refused(
        "no Upgrade, no Connection",
        |key| {
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                accept_header(key)
            )
        },
        "Upgrade: websocket",
    );
    assert_handshake_refused(
        "Upgrade, no Connection",
        |key| {
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Sec-WebSocket-Accept: {}\r\n\r\n",
                accept_header(key)
            )
        },
        "Connection: upgrade",
    );
}

/// A `101` carrying `extra` header lines after the correct ones.
fn upgrade_with(key: &str, extra: &str) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n{extra}\r\n",
        accept_header(key)
    )
}

fn offering_subprotocols(list: &str) -> ConnectionConfig {
    ConnectionConfig {
        headers: vec![("Sec-WebSocket-Protocol".into(), list.into())],
        ..ConnectionConfig::default()
    }
}

/// RFC 6455 §4.1: an extension the client never offered fails the connection (rpcloop offers
/// none, so permessage-deflate, the one servers actually use, is the case to check).
#[test]
fn a_101_selecting_an_extension_never_offered_fails_calls_with_a_handshake_error() {
    assert_handshake_refused(
        "unrequested permessage-deflate",
        |key| {
            upgrade_with(
                key,
                "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=15\r\n",
            )
        },
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=15",
    );
}

/// RFC 6455 §4.1: a subprotocol the client never offered fails the connection (tungstenite
/// checks it; rpcloop names the header).
#[test]
fn a_101_selecting_a_subprotocol_never_offered_fails_calls_with_a_handshake_error() {
    assert_handshake_refused(
        "subprotocol, none offered",
        |key| upgrade_with(key, "Sec-WebSocket-Protocol: chat\r\n"),
        "Sec-WebSocket-Protocol",
    );
    assert_handshake_refused_with(
        "subprotocol not among those offered",
        offering_subprotocols("a, b"),
        |key| upgrade_with(key, "Sec-WebSocket-Protocol: c\r\n"),
        "Sec-WebSocket-Protocol",
    );
}

#[test]
fn a_101_selecting_an_offered_subprotocol_opens_the_connection() {
    let server = RawServer::start(|mut peer| {
        let head = peer.read_http_request().expect("the upgrade request");
        assert!(
            head.contains("Sec-WebSocket-Protocol: a, b\r\n"),
            "offer not sent: {head}"
        );
        let key = websocket_key(&head).expect("a Sec-WebSocket-Key");
        peer.write_raw(upgrade_with(&key, "Sec-WebSocket-Protocol: b\r\n").as_bytes())
            .unwrap();
        let req = peer.read_request().expect("a request");
        peer.send_answer(&req.id.to_string(), &req.message).unwrap();
        peer.read_until_close();
        let _ = peer.send_close(1000);
    });
    let mut client = calls_against(
        &server.url(),
        offering_subprotocols("a, b"),
        1,
        CallOptions::default(),
        |_, _| {},
    );
    assert_eq!(client.outcomes.get(0), Ok("0".to_owned()));
    close_and_wait(&mut client.ev, client.conn);
    server.join();
}

// ---- A slow or endless handshake response ----

/// The pause between the bytes of a slow server's `101`. With TCP_NODELAY each byte leaves as
/// its own segment (and, over TLS, its own record), so the client reads the response in far
/// more than the 64 pieces after which tungstenite's handshake called it an attack.
const PACE: Duration = Duration::from_millis(10);

/// A server over `transport` that reads the upgrade request, then runs `respond` with the
/// request's `Sec-WebSocket-Key` and the stream. Returns the URL to connect to.
fn upgrade_server(
    transport: Transport,
    respond: impl FnOnce(&str, ServerStream) + Send + 'static,
) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "{}://{}/",
        transport.scheme(),
        listener.local_addr().unwrap()
    );
    let thread = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().expect("accept");
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        tcp.set_write_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        tcp.set_nodelay(true).unwrap();
        let mut stream = transport
            .accept(tcp)
            .expect("the server's side of the socket");
        let head = read_request_head(&mut stream).expect("the upgrade request");
        let key = websocket_key(&head).expect("a Sec-WebSocket-Key");
        respond(&key, stream);
    });
    (url, thread)
}

/// Reads the client's request head (the client sends nothing behind it before the answer);
/// `None` if the client leaves first.
fn read_request_head(stream: &mut impl Read) -> Option<String> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).ok().filter(|&n| n > 0)?;
        head.extend_from_slice(&chunk[..n]);
        assert!(head.len() < 64 * KIB, "an endless request head");
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// Issue 14, part 4: a correct `101` that arrives a byte at a time, well within the connect
/// timeout, opens the connection (tungstenite's handshake refused it as "Attack attempt
/// detected"), and the call made meanwhile is answered.
fn a_101_sent_one_byte_at_a_time_opens_the_connection(transport: Transport) {
    let (url, server) = upgrade_server(transport, |key, mut stream| {
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            accept_header(key)
        );
        assert!(response.len() > 64, "the 101 must take over 64 reads");
        for byte in response.as_bytes() {
            stream
                .write_all(std::slice::from_ref(byte))
                .and_then(|()| stream.flush())
                .expect("the client left in the middle of the 101");
            std::thread::sleep(PACE);
        }
        let mut ws = tungstenite::WebSocket::from_raw_socket(
            stream,
            tungstenite::protocol::Role::Server,
            None,
        );
        echo(&mut ws);
    });
    let mut client = calls_against(
        &url,
        transport.client(ConnectionConfig::default()),
        1,
        CallOptions::default(),
        |_, _| {},
    );
    assert_eq!(client.outcomes.get(0), Ok("0".to_owned()));
    assert_eq!(client.ev.state(client.conn), Some(ConnState::Open));
    client.assert_peak_below(LOOP_BOUND, "a 101 one byte at a time");
    close_and_wait(&mut client.ev, client.conn);
    server.join().expect("server script panicked");
}

over_ws_and_wss!(a_101_sent_one_byte_at_a_time_opens_the_connection);

/// A response head that never ends (70 KiB of header lines, no empty line) fails the
/// connection once it passes 64 KiB, with a text that says so: not at the connect timeout,
/// and without buffering what the server goes on sending.
fn an_endless_response_head_fails_at_64_kib_not_at_the_timeout(transport: Transport) {
    let (url, server) = upgrade_server(transport, |_, mut stream| {
        let line = format!("X-Pad: {}\r\n", "a".repeat(100));
        let mut head = b"HTTP/1.1 101 Switching Protocols\r\n".to_vec();
        while head.len() < 70 * KIB {
            head.extend_from_slice(line.as_bytes());
        }
        // The client may give up before it has all of it: a failed write is expected.
        if stream
            .write_all(&head)
            .and_then(|()| stream.flush())
            .is_ok()
        {
            let mut sink = [0u8; 4096];
            while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
        }
    });
    let mut client = calls_against(
        &url,
        transport.client(ConnectionConfig::default()),
        1,
        CallOptions::default(),
        |_, _| {},
    );
    let e = client.outcomes.error(0);
    assert!(
        e.starts_with("Handshake(") && e.contains("exceeded 64 KiB without ending"),
        "{e}"
    );
    assert!(
        client.state().starts_with("Disconnected(Handshake("),
        "{}",
        client.state()
    );
    client.assert_peak_below(LOOP_BOUND, "an endless response head");
    assert_serves_another_connection_over(&mut client.ev, transport);
    server.join().expect("server script panicked");
}

over_ws_and_wss!(an_endless_response_head_fails_at_64_kib_not_at_the_timeout);

// ---- An open connection lost ----

#[test]
fn a_reset_in_the_middle_of_an_answer_fails_the_written_calls_with_reset() {
    let server = RawServer::start(|mut peer| {
        peer.accept_handshake();
        let reqs = peer.read_requests(5); // every call was written
        let whole = frame(
            true,
            0,
            TEXT,
            false,
            answer_text(reqs[0].id, &json!("x".repeat(2_000))).as_bytes(),
        );
        peer.write_raw(&whole[..whole.len() / 2]).unwrap();
        peer.reset(); // RST, not FIN, half-way through the frame
    });
    let mut client = calls_against(
        &server.url(),
        ConnectionConfig::default(),
        5,
        CallOptions::default(),
        |_, _| {},
    );
    for i in 0..5 {
        assert_eq!(client.outcomes.error(i), "Disconnected(Reset)", "call {i}");
    }
    assert_eq!(
        client.ev.state(client.conn),
        Some(ConnState::Disconnected(DisconnectReason::Reset))
    );
    assert!(matches!(
        client
            .ev
            .submit(client.conn, 1, |_, _| panic!("must not run")),
        Err(Error::NotSent(DisconnectReason::Reset))
    ));
    assert_eq!(client.ev.stats(client.conn).unwrap().messages_received, 0);
    client.assert_peak_below(LOOP_BOUND, "reset mid-frame");
    assert_serves_another_connection(&mut client.ev);
    server.join();
}

/// A header announcing `len` bytes over the 16 MiB limit, and nothing after it.
fn announced_length_refused(len: u64) -> Option<u16> {
    violation(
        &format!("header announcing {len} bytes"),
        ConnectionConfig::default(),
        move |peer, _| {
            peer.write_raw(&frame_header(true, 0, TEXT, None, len))
                .unwrap();
            peer.read_until_close()
        },
        "Disconnected(MessageTooLarge(",
        &format!("{len} > {}", 16 * MIB),
        LOOP_BOUND,
    )
}

#[test]
fn a_header_announcing_2_pow_63_bytes_is_refused_without_allocating() {
    // The top bit of a 64-bit length must be 0 (§5.2): this one is illegal twice over.
    let code = announced_length_refused(1 << 63);
    assert_close_codes(&[("2^63".into(), code)], 1009);
}

#[test]
fn a_header_announcing_2_pow_63_minus_1_bytes_is_refused_without_allocating() {
    let mut seen = vec![];
    for len in [(1 << 63) - 1, 16 * MIB as u64 + 1] {
        seen.push((len.to_string(), announced_length_refused(len)));
    }
    assert_close_codes(&seen, 1009);
}

/// Just under the limit is legal: the frame is read, its room reserved as the header
/// announces it. What a peer can make the client hold with a 10-byte header is bounded by
/// `max_message_size`, not by anything it sends.
#[test]
fn a_header_announcing_just_under_the_limit_pins_at_most_the_limit() {
    const LIMIT: usize = 4 * MIB;
    let (server, close) = patient_server(1, |peer, _| {
        peer.write_raw(&frame_header(true, 0, TEXT, None, LIMIT as u64 - 1))
            .unwrap();
    });
    let config = ConnectionConfig {
        max_message_size: LIMIT,
        ..Default::default()
    };
    let mut client = calls_against(&server.url(), config, 1, short(100), |_, _| {});
    assert_eq!(client.outcomes.error(0), "Timeout");
    assert_eq!(client.ev.state(client.conn), Some(ConnState::Open));
    client.assert_peak_below(LIMIT + LOOP_BOUND, "header announcing 4 MiB - 1");
    // The close handshake cannot finish (the server's close reply is read as payload of the
    // announced frame): the connection ends when the server hangs up.
    close_and_wait(&mut client.ev, client.conn);
    assert_serves_another_connection(&mut client.ev);
    server.join();
    assert_eq!(close_code_seen(&close), Some(1000));
}

#[test]
fn a_real_64_mib_frame_over_the_16_mib_limit_is_refused_at_its_header() {
    const SIZE: usize = 64 * MIB;
    let code = violation(
        "64 MiB text frame",
        ConnectionConfig::default(),
        |peer, reqs| {
            // The client stops reading at the header, so the write below blocks until the
            // client hangs up: its close frame is read meanwhile, by another thread.
            let mut reader = peer.try_clone();
            let reading = std::thread::spawn(move || reader.read_until_close());
            let head = format!(r#"{{"id":{},"message":""#, reqs[0].id);
            let tail = "\"}";
            let mut sent = frame_header(true, 0, TEXT, None, SIZE as u64);
            sent.extend_from_slice(head.as_bytes());
            let chunk = vec![b'x'; 64 * KIB];
            let mut left = SIZE - head.len() - tail.len();
            let mut result = peer.write_raw(&sent);
            while result.is_ok() && left > 0 {
                let n = left.min(chunk.len());
                result = peer.write_raw(&chunk[..n]);
                left -= n;
            }
            if result.is_ok() {
                result = peer.write_raw(tail.as_bytes());
            }
            eprintln!(
                "64 MiB frame: the server wrote {} before {result:?}",
                mib(SIZE - left)
            );
            reading.join().expect("close reader")
        },
        "Disconnected(MessageTooLarge(",
        &format!("{SIZE} > {}", 16 * MIB),
        LOOP_BOUND,
    );
    assert_close_codes(&[("64 MiB".into(), code)], 1009);
}

#[test]
fn invalid_utf8_in_a_text_frame_is_a_protocol_error() {
    let mut seen = vec![];
    // In one frame, and split across fragments where each fragment alone is fine.
    let whole: fn(u64) -> Vec<u8> = |id| {
        let mut text = format!(r#"{{"id":{id},"message":""#).into_bytes();
        text.extend_from_slice(b"\xff\xfe\xc3\x28\"}");
        frame(true, 0, TEXT, false, &text)
    };
    let fragmented: fn(u64) -> Vec<u8> = |id| {
        let mut out = frame(
            false,
            0,
            TEXT,
            false,
            format!(r#"{{"id":{id},"message":"ok"#).as_bytes(),
        );
        out.extend(frame(false, 0, CONTINUATION, false, b"\xe2\x9c")); // half a ✓ ...
        out.extend(frame(true, 0, CONTINUATION, false, b"x\"}")); // ... never finished
        out
    };
    for (what, bad) in [("one frame", whole), ("fragments", fragmented)] {
        let code = violation(
            &format!("invalid UTF-8 in {what}"),
            ConnectionConfig::default(),
            move |peer, reqs| {
                peer.write_raw(&bad(reqs[0].id)).unwrap();
                peer.read_until_close()
            },
            "Disconnected(Protocol(",
            "UTF-8",
            LOOP_BOUND,
        );
        seen.push((what.to_owned(), code));
    }
    assert_close_codes(&seen, 1007);
}

#[test]
fn a_masked_frame_from_the_server_is_a_protocol_error() {
    let code = violation(
        "masked frame",
        ConnectionConfig::default(),
        |peer, reqs| {
            let text = answer_text(reqs[0].id, &json!("masked"));
            peer.write_raw(&frame(true, 0, TEXT, true, text.as_bytes()))
                .unwrap();
            peer.read_until_close()
        },
        "Disconnected(Protocol(",
        "masked frame from server",
        LOOP_BOUND,
    );
    assert_close_codes(&[("masked".into(), code)], 1002);
}

#[test]
fn reserved_bits_are_a_protocol_error() {
    let mut seen = vec![];
    for rsv in [0b100, 0b010, 0b001] {
        let what = format!("reserved bits {rsv:03b}");
        let code = violation(
            &what,
            ConnectionConfig::default(),
            move |peer, reqs| {
                let text = answer_text(reqs[0].id, &json!("rsv"));
                peer.write_raw(&frame(true, rsv, TEXT, false, text.as_bytes()))
                    .unwrap();
                peer.read_until_close()
            },
            "Disconnected(Protocol(",
            "Reserved bits are non-zero",
            LOOP_BOUND,
        );
        seen.push((what, code));
    }
    assert_close_codes(&seen, 1002);
}

#[test]
fn a_control_frame_over_125_bytes_is_a_protocol_error() {
    let mut seen = vec![];
    for (what, opcode) in [("ping", PING), ("pong", PONG), ("close", CLOSE)] {
        let what = format!("126-byte {what}");
        let code = violation(
            &what,
            ConnectionConfig::default(),
            move |peer, _| {
                let mut payload = vec![b'p'; 126];
                payload[..2].copy_from_slice(&1000u16.to_be_bytes());
                peer.write_raw(&frame(true, 0, opcode, false, &payload))
                    .unwrap();
                peer.read_until_close()
            },
            "Disconnected(Protocol(",
            "Control frame too big",
            LOOP_BOUND,
        );
        seen.push((what, code));
    }
    assert_close_codes(&seen, 1002);
}

#[test]
fn a_reserved_opcode_is_a_protocol_error() {
    let mut seen = vec![];
    for opcode in [0x3, 0x7, 0xB, 0xF] {
        let what = format!("opcode {opcode:#x}");
        let code = violation(
            &what,
            ConnectionConfig::default(),
            move |peer, _| {
                peer.write_raw(&frame(true, 0, opcode, false, b"{}"))
                    .unwrap();
                peer.read_until_close()
            },
            "Disconnected(Protocol(",
            &format!("invalid opcode: {opcode}"),
            LOOP_BOUND,
        );
        seen.push((what, code));
    }
    assert_close_codes(&seen, 1002);
}

// ---- Legal but unusual traffic ----

#[test]
fn an_answer_in_over_100_continuation_frames_is_reassembled() {
    // Multi-byte characters, so that fragment boundaries split some of them.
    let message: String = (0..120).map(|i| format!("{i}é✓😀")).collect();
    let expected = serde_json::to_string(&message).unwrap();
    let (server, close) = patient_server(1, move |peer, reqs| {
        let text = answer_text(reqs[0].id, &json!(message));
        let bytes = text.as_bytes();
        // 102 fragments: a text frame, 100 continuations, a final continuation; one of them
        // empty, and a ping between two of them (control frames may interleave, §5.4).
        let mut cuts: Vec<usize> = (0..=102).map(|k| k * bytes.len() / 102).collect();
        cuts[41] = cuts[40]; // fragment 40 is empty, 41 carries its share
        let mut out = Vec::new();
        for k in 0..102 {
            let opcode = if k == 0 { TEXT } else { CONTINUATION };
            out.extend(frame(
                k == 101,
                0,
                opcode,
                false,
                &bytes[cuts[k]..cuts[k + 1]],
            ));
            if k == 50 {
                out.extend(frame(true, 0, PING, false, b"mid-message"));
            }
        }
        peer.write_raw(&out).unwrap();
    });
    let mut client = calls_against(
        &server.url(),
        ConnectionConfig::default(),
        1,
        CallOptions::default(),
        |_, _| {},
    );
    assert_eq!(client.outcomes.get(0).unwrap(), expected);
    let stats = client.ev.stats(client.conn).unwrap();
    assert_eq!((stats.messages_received, stats.answers), (1, 1));
    assert_eq!(client.ev.state(client.conn), Some(ConnState::Open));
    client.assert_peak_below(LOOP_BOUND, "fragmented answer");
    close_and_wait(&mut client.ev, client.conn);
    assert_serves_another_connection(&mut client.ev);
    server.join();
    assert_eq!(close_code_seen(&close), Some(1000));
}

#[test]
fn a_ping_flood_between_answers_leaves_every_call_answered_and_the_last_ping_ponged() {
    const PINGS: usize = 10_000;
    const N: usize = 100;
    let (pongs_tx, pongs_rx) = mpsc::channel();
    let server = RawServer::start(move |mut peer| {
        peer.accept_handshake();
        let mut reqs = peer.read_requests(N);
        reqs.sort_by_key(|r| r.message.as_u64());
        // Pongs are read by another thread while this one writes, until the client closes.
        let mut reader = peer.try_clone();
        let reading = std::thread::spawn(move || {
            let mut pongs = Vec::new();
            while let Some(f) = reader.read_frame() {
                match f.opcode {
                    PONG => pongs.push(String::from_utf8(f.payload).unwrap()),
                    CLOSE => return (pongs, true),
                    _ => {}
                }
            }
            (pongs, false)
        });
        // 100 pings, then an answer, a hundred times over: the last answer follows the last
        // ping, so by the time the client has it, it has seen every ping.
        for (i, req) in reqs.iter().enumerate() {
            let mut burst = Vec::new();
            for p in i * PINGS / N..(i + 1) * PINGS / N {
                burst.extend(frame(true, 0, PING, false, format!("ping {p}").as_bytes()));
            }
            burst.extend(frame(
                true,
                0,
                TEXT,
                false,
                answer_text(req.id, &req.message).as_bytes(),
            ));
            peer.write_raw(&burst).unwrap();
        }
        let (pongs, closed) = reading.join().unwrap();
        if closed {
            let _ = peer.send_close(1000);
        }
        let _ = pongs_tx.send((pongs, closed));
    });
    let mut client = calls_against(
        &server.url(),
        ConnectionConfig::default(),
        N,
        CallOptions::default(),
        |_, _| {},
    );
    for i in 0..N {
        assert_eq!(client.outcomes.get(i).unwrap(), i.to_string(), "call {i}");
    }
    assert_eq!(client.ev.state(client.conn), Some(ConnState::Open));
    let stats = client.ev.stats(client.conn).unwrap();
    assert_eq!((stats.answers, stats.unmatched()), (N as u64, 0));
    client.assert_peak_below(LOOP_BOUND, "ping flood");
    close_and_wait(&mut client.ev, client.conn);
    let (pongs, closed) = pongs_rx.recv_timeout(WAIT).unwrap();
    assert!(closed, "the server never saw the client's close");
    // Pongs answer pings in order (§5.5.3 lets a client answer only the latest of several).
    let numbers: Vec<usize> = pongs
        .iter()
        .map(|p| {
            p.strip_prefix("ping ")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("a pong for no ping: {p:?}"))
        })
        .collect();
    assert!(
        numbers.windows(2).all(|w| w[0] < w[1]),
        "pongs out of order or repeated"
    );
    assert_eq!(
        numbers.last(),
        Some(&(PINGS - 1)),
        "the last pong must carry the last ping's payload"
    );
    eprintln!("ping flood: {} pongs for {PINGS} pings", numbers.len());
    assert_serves_another_connection(&mut client.ev);
    server.join();
}

#[test]
fn binary_frames_between_answers_go_to_the_handler_and_leave_calls_alone() {
    const N: usize = 20;
    let (server, close) = patient_server(N, |peer, mut reqs| {
        reqs.sort_by_key(|r| r.message.as_u64());
        let mut out = Vec::new();
        for (i, req) in reqs.iter().enumerate() {
            // Binary payloads that look like answers, too: they must not complete anything.
            let lookalike = answer_text(req.id, &json!("binary"));
            out.extend(frame(true, 0, BINARY, false, lookalike.as_bytes()));
            out.extend(frame(true, 0, BINARY, false, &[i as u8, 0xff, 0x00]));
            out.extend(frame(
                true,
                0,
                TEXT,
                false,
                answer_text(req.id, &req.message).as_bytes(),
            ));
        }
        peer.write_raw(&out).unwrap();
    });
    let seen: Seen<Vec<u8>> = Rc::default();
    let handler_seen = seen.clone();
    let mut client = calls_against(
        &server.url(),
        ConnectionConfig::default(),
        N,
        CallOptions::default(),
        move |ev, conn| {
            ev.set_message_handler(conn, move |_, m| {
                handler_seen
                    .borrow_mut()
                    .push((m.reason(), m.as_bytes().to_vec()));
            })
            .unwrap();
        },
    );
    for i in 0..N {
        assert_eq!(client.outcomes.get(i).unwrap(), i.to_string(), "call {i}");
    }
    let stats = client.ev.stats(client.conn).unwrap();
    assert_eq!(stats.binary, 2 * N as u64);
    assert_eq!(stats.answers, N as u64);
    assert_eq!(stats.messages_received, 3 * N as u64);
    assert_eq!(stats.unmatched(), 2 * N as u64);
    let seen = seen.borrow();
    assert_eq!(seen.len(), 2 * N);
    assert!(seen.iter().all(|(r, _)| *r == UnmatchedReason::Binary));
    for i in 0..N {
        assert_eq!(seen[2 * i + 1].1, [i as u8, 0xff, 0x00]);
    }
    assert_eq!(client.ev.state(client.conn), Some(ConnState::Open));
    client.assert_peak_below(LOOP_BOUND, "binary frames");
    close_and_wait(&mut client.ev, client.conn);
    assert_serves_another_connection(&mut client.ev);
    server.join();
    assert_eq!(close_code_seen(&close), Some(1000));
}

/// A way to spell call `id`'s id wrong: its name, the spelling, where the answer must land.
type IdSpelling = (&'static str, fn(u64) -> String, UnmatchedReason);

/// Ids the way a confused server might echo them back: each spelling of call `id`'s id, and
/// the counter the answer must land in.
const WRONG_IDS: [IdSpelling; 10] = [
    (
        "string",
        |id| format!("\"{id}\""),
        UnmatchedReason::UnknownId,
    ),
    (
        "negative",
        |id| format!("-{id}"),
        UnmatchedReason::UnknownId,
    ),
    ("float", |id| format!("{id}.0"), UnmatchedReason::UnknownId),
    (
        "exponent",
        |id| format!("{id}e0"),
        UnmatchedReason::UnknownId,
    ),
    ("1e300", |_| "1e300".into(), UnmatchedReason::UnknownId),
    (
        "2^64",
        |_| "18446744073709551616".into(),
        UnmatchedReason::UnknownId,
    ),
    (
        "2^53, past the largest id issued",
        |_| "9007199254740992".into(),
        UnmatchedReason::UnknownId,
    ),
    ("array", |id| format!("[{id}]"), UnmatchedReason::UnknownId),
    (
        "object",
        |id| format!("{{\"n\":{id}}}"),
        UnmatchedReason::UnknownId,
    ),
    ("null", |_| "null".into(), UnmatchedReason::NoId),
];

#[test]
fn answers_whose_id_has_the_wrong_type_complete_no_call() {
    const N: usize = WRONG_IDS.len();
    let (sent_tx, sent_rx) = mpsc::channel();
    let (server, close) = patient_server(N + 1, move |peer, mut reqs| {
        reqs.sort_by_key(|r| r.message.as_u64());
        let mut out = Vec::new();
        for (req, (_, spell, _)) in reqs.iter().zip(WRONG_IDS) {
            let text = format!(r#"{{"id":{},"message":"wrong"}}"#, spell(req.id));
            out.extend(frame(true, 0, TEXT, false, text.as_bytes()));
        }
        // The last call, answered properly, marks the end of the wrong ones.
        let marker = &reqs[N];
        out.extend(frame(
            true,
            0,
            TEXT,
            false,
            answer_text(marker.id, &marker.message).as_bytes(),
        ));
        peer.write_raw(&out).unwrap();
        let _ = sent_tx.send(());
    });
    let seen: Seen<String> = Rc::default();
    let outcomes = Outcomes::new(N + 1);
    let ((mut ev, conn), peak) = memory::track(|| {
        let mut ev = EventLoop::new().unwrap();
        let conn = ev
            .connect(&server.url(), ConnectionConfig::default())
            .unwrap();
        let handler_seen = seen.clone();
        ev.set_message_handler(conn, move |_, m| {
            let text = m.as_text().unwrap().to_owned();
            handler_seen.borrow_mut().push((m.reason(), text));
        })
        .unwrap();
        turn_until(&mut ev, |ev| ev.state(conn) == Some(ConnState::Open));
        for i in 0..N {
            ev.submit_with(conn, i, short(200), outcomes.callback(i))
                .unwrap();
        }
        ev.submit(conn, N, outcomes.callback(N)).unwrap();
        ev.flush();
        // No turn until every answer is on the wire: the next turn reads them all before it
        // looks at deadlines, so no wrongly typed answer can arrive "too late" to count.
        sent_rx.recv_timeout(WAIT).unwrap();
        turn_until(&mut ev, |_| outcomes.all_completed());
        settle(&mut ev);
        (ev, conn)
    });
    outcomes.assert_exactly_once();
    for (i, (what, _, _)) in WRONG_IDS.iter().enumerate() {
        assert_eq!(outcomes.error(i), "Timeout", "id spelled as {what}");
    }
    assert_eq!(outcomes.get(N).unwrap(), N.to_string());
    let seen = seen.borrow();
    assert_eq!(seen.len(), N, "{seen:?}");
    for ((reason, text), (what, _, expected)) in seen.iter().zip(WRONG_IDS) {
        assert_eq!(*reason, expected, "id spelled as {what}: {text}");
    }
    let stats = ev.stats(conn).unwrap();
    assert_eq!(stats.unknown_id, N as u64 - 1);
    assert_eq!(stats.no_id, 1);
    assert_eq!((stats.stale_id, stats.malformed), (0, 0));
    assert_eq!((stats.answers, stats.timeouts), (1, N as u64));
    assert_eq!(ev.state(conn), Some(ConnState::Open));
    eprintln!("wrong ids: peak {}", mib(peak));
    assert!(peak < LOOP_BOUND, "peak {}", mib(peak));
    close_and_wait(&mut ev, conn);
    assert_serves_another_connection(&mut ev);
    server.join();
    assert_eq!(close_code_seen(&close), Some(1000));
}

fn a_server_that_never_reads_gets_busy_then_every_accepted_call_completes(transport: Transport) {
    const MAX_WRITE_BUFFER: usize = 256 * KIB;
    const LIMIT: usize = 100_000;
    /// A 4 KiB payload that names its call.
    fn payload(i: usize) -> String {
        format!("{i:06}{}", "x".repeat(4 * KIB - 6))
    }
    let (go_tx, go_rx) = mpsc::channel::<usize>();
    let (close_tx, close_rx) = mpsc::channel();
    let server = Server::start_with(transport, move |ws| {
        // Read nothing until told how many calls got in.
        let Ok(accepted) = go_rx.recv_timeout(WAIT) else {
            return;
        };
        for _ in 0..accepted {
            let Some(req) = read_request(ws) else {
                return;
            };
            let text = answer_text(req.id, &req.message);
            if ws.send(tungstenite::Message::text(text)).is_err() {
                return;
            }
        }
        // The client's close frame (tungstenite answers it).
        let code = loop {
            match ws.read() {
                Ok(tungstenite::Message::Close(frame)) => break frame.map(|f| u16::from(f.code)),
                Ok(_) => continue,
                Err(_) => break None,
            }
        };
        let _ = ws.flush();
        let _ = close_tx.send(code);
    });
    // Exactly-once bookkeeping that keeps no payload: a callback checks its answer and
    // records whether it matched.
    let done: Done = Rc::default();
    let config = ConnectionConfig {
        max_write_buffer: MAX_WRITE_BUFFER,
        ..Default::default()
    };
    let mut ev = EventLoop::new().unwrap();
    let conn = ev.connect(&server.url(), server.client(config)).unwrap();
    turn_until(&mut ev, |ev| ev.state(conn) == Some(ConnState::Open));
    let (accepted, submit_peak) = memory::track(|| {
        for i in 0..LIMIT {
            let record = done.clone();
            done.borrow_mut().push(Vec::new());
            let submitted = ev.submit(conn, payload(i), move |_, result| {
                let outcome = match result {
                    Ok(r) if r.text() == serde_json::to_string(&payload(i)).unwrap() => Ok(()),
                    Ok(r) => Err(format!("wrong answer {:.20}", r.text())),
                    Err(e) => Err(format!("{e:?}")),
                };
                record.borrow_mut()[i].push(outcome);
            });
            match submitted {
                Ok(_) => {}
                Err(Error::Busy) => {
                    done.borrow_mut().pop();
                    return i;
                }
                Err(e) => panic!("call {i}: {e:?}"),
            }
        }
        panic!("{LIMIT} calls of 4 KiB and the write buffer never filled");
    });
    let backlog = accepted * 4 * KIB;
    eprintln!(
        "never reads: Busy after {accepted} calls ({}), peak {} while submitting",
        mib(backlog),
        mib(submit_peak)
    );
    // Bounded by the write buffer, not by what was accepted (the kernel's socket buffers hold
    // the rest).
    assert!(
        submit_peak < LOOP_BOUND + 2 * MAX_WRITE_BUFFER,
        "{}",
        mib(submit_peak)
    );
    assert!(accepted > 0);
    // The callbacks were dropped with the refused call: none ran.
    assert!(done.borrow().iter().all(Vec::is_empty));
    go_tx.send(accepted).unwrap();
    let ((), drain_peak) = memory::track(|| {
        turn_until(&mut ev, |_| done.borrow().iter().all(|o| !o.is_empty()));
        settle(&mut ev);
    });
    eprintln!("never reads: peak {} while draining", mib(drain_peak));
    for (i, outcomes) in done.borrow().iter().enumerate() {
        assert_eq!(outcomes, &[Ok(())], "call {i}");
    }
    let stats = ev.stats(conn).unwrap();
    assert_eq!(stats.requests_sent, accepted as u64);
    assert_eq!(stats.answers, accepted as u64);
    assert_eq!(ev.state(conn), Some(ConnState::Open));
    // Answers read in one turn are held until their callbacks run: at most one per accepted
    // call (a slow, loaded client reads many per turn).
    assert!(drain_peak < LOOP_BOUND + backlog, "{}", mib(drain_peak));
    close_and_wait(&mut ev, conn);
    assert_serves_another_connection_over(&mut ev, transport);
    server.join();
    assert_eq!(close_rx.recv_timeout(WAIT).unwrap(), Some(1000));
}

over_ws_and_wss!(a_server_that_never_reads_gets_busy_then_every_accepted_call_completes);

#[test]
fn one_call_timing_out_leaves_the_connection_and_the_other_calls_alone() {
    const N: usize = 6;
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (server, close) = patient_server(N, move |peer, mut reqs| {
        reqs.sort_by_key(|r| r.message.as_u64());
        // Call 0 times out first; then everything is answered, call 0 too (late: stale).
        go_rx.recv_timeout(WAIT).unwrap();
        for req in reqs.iter().rev() {
            peer.send_answer(&req.id.to_string(), &req.message).unwrap();
        }
        // Then one more call, to show the connection works on.
        let more = peer.read_request().unwrap();
        peer.send_answer(&more.id.to_string(), &more.message)
            .unwrap();
    });
    let outcomes = Outcomes::new(N + 1);
    let ((mut ev, conn), peak) = memory::track(|| {
        let mut ev = EventLoop::new().unwrap();
        let conn = ev
            .connect(&server.url(), ConnectionConfig::default())
            .unwrap();
        ev.submit_with(conn, 0, short(50), outcomes.callback(0))
            .unwrap();
        for i in 1..N {
            ev.submit(conn, i, outcomes.callback(i)).unwrap();
        }
        turn_until(&mut ev, |_| outcomes.completed() == 1);
        assert_eq!(outcomes.error(0), "Timeout");
        assert_eq!(ev.state(conn), Some(ConnState::Open));
        go_tx.send(()).unwrap();
        turn_until(&mut ev, |_| outcomes.completed() == N);
        ev.submit(conn, N, outcomes.callback(N)).unwrap();
        turn_until(&mut ev, |_| outcomes.all_completed());
        settle(&mut ev);
        (ev, conn)
    });
    outcomes.assert_exactly_once();
    assert_eq!(outcomes.error(0), "Timeout");
    for i in 1..=N {
        assert_eq!(outcomes.get(i).unwrap(), i.to_string(), "call {i}");
    }
    let stats = ev.stats(conn).unwrap();
    assert_eq!((stats.timeouts, stats.stale_id), (1, 1));
    assert_eq!(stats.answers, N as u64);
    assert_eq!(ev.state(conn), Some(ConnState::Open));
    eprintln!("one timeout: peak {}", mib(peak));
    assert!(peak < LOOP_BOUND, "peak {}", mib(peak));
    close_and_wait(&mut ev, conn);
    assert_serves_another_connection(&mut ev);
    server.join();
    assert_eq!(close_code_seen(&close), Some(1000));
}
