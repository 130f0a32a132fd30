//! `wss://`: TLS with rustls, driven by the loop's readiness events, against in-process TLS
//! WebSocket servers on 127.0.0.1 whose certificates come from a CA made at test time
//! (`support::tls`).
//!
//! Every test asserts what the fault tests do: each call completes exactly once, with the
//! error the case calls for (kind and text); the client thread's peak memory stays bounded
//! (this binary's allocator counts it); and the same loop then serves another connection.
//! The fault tests that make sense over TLS as well run over both transports in
//! `resilience.rs`, `faults.rs` and `wire_faults.rs` (`over_ws_and_wss!`).
#![cfg(feature = "tls")]

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use rpcloop::rustls;
use rpcloop::{
    CallOptions, ConnId, ConnState, ConnectionConfig, DisconnectReason, Error, EventLoop,
    TlsConfig, TlsErrorKind,
};
use serde_json::json;
use support::memory::{self, PeakAlloc, bounded, mib};
use support::tls::{Cert, pki};
use support::*;

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

const WAIT: Duration = Duration::from_secs(30);

fn trusting_the_test_ca() -> ConnectionConfig {
    TLS.client(ConnectionConfig::default())
}

/// Submits `calls` calls (payloads 0, 1, ...) on a new connection to `url` and turns until
/// each completed, then a few turns more (a second completion would show).
fn calls_to(
    ev: &mut EventLoop,
    url: &str,
    config: ConnectionConfig,
    calls: usize,
) -> (ConnId, Outcomes) {
    let conn = ev.connect(url, config).expect("connect");
    let outcomes = Outcomes::new(calls);
    for i in 0..calls {
        ev.submit(conn, i, outcomes.callback(i)).expect("submit");
    }
    turn_until(ev, |_| outcomes.all_completed());
    settle(ev);
    outcomes.assert_exactly_once();
    (conn, outcomes)
}

/// The connection failed TLS with `kind`: every call got `NotSent(Tls { kind, .. })`, whose
/// text names the cause (`cause`), and the connection's state says the same.
fn assert_tls_failure(
    ev: &EventLoop,
    conn: ConnId,
    outcomes: &Outcomes,
    calls: usize,
    kind: TlsErrorKind,
    cause: &str,
) {
    for i in 0..calls {
        let e = outcomes.error(i);
        assert!(
            e.starts_with(&format!("NotSent(Tls {{ kind: {kind:?}, message: ")),
            "call {i}: {e}"
        );
        assert!(e.contains(cause), "call {i}: {e} does not name {cause:?}");
    }
    match ev.state(conn) {
        Some(ConnState::Disconnected(reason @ DisconnectReason::Tls { kind: k, .. })) => {
            assert_eq!(k, kind);
            let text = Error::NotSent(reason).to_string();
            assert!(
                text.starts_with("request not sent, the server never saw it: TLS failed: ")
                    && text.contains(kind.describe())
                    && text.contains(cause),
                "{text}"
            );
        }
        other => panic!("state {other:?}"),
    }
}

// ---- Calls over wss:// ----

#[test]
fn a_thousand_calls_answered_shuffled_over_wss_with_a_custom_root_store() {
    bounded(|| {
        const N: usize = 1_000;
        let server = Server::start_with(TLS, shuffling_echo);
        let (mut ev, conn) = connected(&server, ConnectionConfig::default());
        let outcomes = Outcomes::new(N);
        for i in 0..N {
            ev.submit(conn, json!({"n": i}), outcomes.callback(i))
                .unwrap();
        }
        turn_until(&mut ev, |_| outcomes.all_completed());
        settle(&mut ev);
        outcomes.assert_exactly_once();
        for i in 0..N {
            assert_eq!(outcomes.get(i).unwrap(), format!(r#"{{"n":{i}}}"#));
        }
        let stats = ev.stats(conn).unwrap();
        assert_eq!(
            (stats.requests_sent, stats.answers, stats.unmatched()),
            (N as u64, N as u64, 0)
        );
        close_and_wait(&mut ev, conn);
        server.join();
        assert_serves_another_connection_over(&mut ev, TLS);
    });
}

#[test]
fn echo_by_host_name_sends_sni_and_verifies_that_name() {
    bounded(|| {
        let (sni_tx, sni_rx) = mpsc::channel();
        let server = Server::start_with(TLS, move |ws| {
            let ServerStream::Tls(tls) = ws.get_ref() else {
                panic!("not TLS")
            };
            sni_tx
                .send(tls.conn.server_name().map(str::to_owned))
                .unwrap();
            echo(ws);
        });
        let mut ev = EventLoop::new().unwrap();
        // The URL names localhost (the certificate's DNS name), the socket goes to the server.
        let url = format!("wss://localhost:{}/chat", server.addr.port());
        let conn = ev
            .connect_addr(&url, server.addr, trusting_the_test_ca())
            .unwrap();
        let outcomes = Outcomes::new(3);
        for i in 0..3 {
            ev.submit(conn, json!({"echo": i}), outcomes.callback(i))
                .unwrap();
        }
        turn_until(&mut ev, |_| outcomes.all_completed());
        outcomes.assert_exactly_once();
        assert_eq!(outcomes.get(2).unwrap(), r#"{"echo":2}"#);
        assert_eq!(
            sni_rx.recv_timeout(WAIT).unwrap().as_deref(),
            Some("localhost")
        );
        close_and_wait(&mut ev, conn);
        server.join();
        assert_serves_another_connection_over(&mut ev, TLS);
    });
}

#[test]
fn calls_made_from_another_thread_cross_wss() {
    bounded(|| {
        let server = Server::start_with(TLS, echo);
        let (mut ev, conn) = connected(&server, ConnectionConfig::default());
        let handle = ev.handle();
        let worker = std::thread::spawn(move || {
            (0..50)
                .map(|i| handle.call(conn, i).wait().map(|r| r.text().to_owned()))
                .collect::<Vec<_>>()
        });
        turn_until(&mut ev, |_| worker.is_finished());
        let answers = worker.join().unwrap();
        for (i, answer) in answers.into_iter().enumerate() {
            assert_eq!(answer.unwrap(), i.to_string());
        }
        close_and_wait(&mut ev, conn);
        server.join();
    });
}

/// Four MiB each way: the request leaves in many TLS records (rustls takes at most its
/// buffer limit at a time, the rest waits in tungstenite's buffer for WRITABLE), and the
/// answer arrives as ~256 records over many readiness events. Run over ws:// too, for the
/// memory figure beside it.
fn a_4_mib_message_crosses_each_way_intact(transport: Transport) {
    const SIZE: usize = 4 << 20;
    let server = Server::start_with(transport, echo);
    let big: String = (0..SIZE).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    let expected = serde_json::to_string(&big).unwrap();
    let outcomes = Outcomes::new(2);
    let ((mut ev, conn), peak) = memory::track(|| {
        let (mut ev, conn) = connected(&server, ConnectionConfig::default());
        ev.submit(conn, big.as_str(), outcomes.callback(0)).unwrap();
        ev.submit(conn, "small, behind it", outcomes.callback(1))
            .unwrap();
        turn_until(&mut ev, |_| outcomes.all_completed());
        settle(&mut ev);
        (ev, conn)
    });
    outcomes.assert_exactly_once();
    let answer = outcomes.get(0).unwrap();
    assert_eq!(answer.len(), SIZE + 2, "the JSON string of the message");
    assert!(answer == expected, "the answer is not the message");
    assert_eq!(outcomes.get(1).unwrap(), r#""small, behind it""#);
    eprintln!("{transport:?}: 4 MiB each way, peak {}", mib(peak));
    // Held a few times over while it crosses: the serialized payload, the encoded frame,
    // tungstenite's write buffer and frame; its read buffer (grown by doubling), the message,
    // the callback's copy. Bounded by the message size, whatever the transport (TLS adds its
    // 64 KiB of records at most).
    assert!(peak < 7 * SIZE, "peak {}", mib(peak));
    close_and_wait(&mut ev, conn);
    server.join();
}

over_ws_and_wss!(a_4_mib_message_crosses_each_way_intact);

#[test]
fn a_server_asking_for_a_client_certificate_gets_the_one_in_a_full_client_config() {
    bounded(|| {
        let pki = pki();
        let with_cert = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(pki.roots())
        .with_client_auth_cert(
            vec![pki.client.0.clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(pki.client.1.clone_key()),
        )
        .unwrap();
        let server =
            Server::start_many_with(Transport::Tls(Cert::GoodAskingForClientAuth), 2, |ws, _| {
                echo(ws)
            });
        let mut ev = EventLoop::new().unwrap();
        let config = ConnectionConfig {
            tls: TlsConfig::ClientConfig(Arc::new(with_cert)),
            ..ConnectionConfig::default()
        };
        let (conn, outcomes) = calls_to(&mut ev, &server.url(), config, 2);
        assert_eq!(outcomes.get(1).unwrap(), "1");
        close_and_wait(&mut ev, conn);
        // Without a client certificate the server refuses, with an alert: the calls fail
        // unsent, as TLS failures.
        let (conn, outcomes) = calls_to(&mut ev, &server.url(), trusting_the_test_ca(), 2);
        assert_tls_failure(
            &ev,
            conn,
            &outcomes,
            2,
            TlsErrorKind::AlertReceived,
            "CertificateRequired",
        );
        server.join();
        assert_serves_another_connection_over(&mut ev, TLS);
    });
}

// ---- Certificates refused ----

/// A server presenting `cert`; calls to `url_host` (the name the client checks) all fail
/// with `kind`, the text naming `cause`.
fn refused(cert: Cert, url_host: &str, config: ConnectionConfig, kind: TlsErrorKind, cause: &str) {
    bounded(|| {
        let server = Server::start_with(Transport::Tls(cert), |_| {
            panic!("the client must not get past TLS")
        });
        let mut ev = EventLoop::new().unwrap();
        let url = format!("wss://{url_host}:{}/", server.addr.port());
        let conn = ev.connect_addr(&url, server.addr, config).unwrap();
        let outcomes = Outcomes::new(3);
        for i in 0..3 {
            ev.submit(conn, i, outcomes.callback(i)).unwrap();
        }
        turn_until(&mut ev, |_| outcomes.all_completed());
        settle(&mut ev);
        outcomes.assert_exactly_once();
        assert_tls_failure(&ev, conn, &outcomes, 3, kind, cause);
        // The ended connection refuses new calls with the same error.
        match ev.submit(conn, 9, |_, _| panic!("must not run")) {
            Err(Error::NotSent(DisconnectReason::Tls { kind: k, .. })) => assert_eq!(k, kind),
            other => panic!("{other:?}"),
        }
        server.join(); // its handshake failed on our alert: the script never ran
        assert_serves_another_connection_over(&mut ev, TLS);
    });
}

#[test]
fn a_certificate_for_another_name_fails_with_name_mismatch() {
    refused(
        Cert::WrongName,
        "localhost",
        trusting_the_test_ca(),
        TlsErrorKind::NameMismatch,
        "certificate not valid for name",
    );
    refused(
        Cert::WrongName,
        "127.0.0.1",
        trusting_the_test_ca(),
        TlsErrorKind::NameMismatch,
        "127.0.0.1",
    );
}

#[test]
fn a_self_signed_certificate_fails_with_unknown_issuer() {
    refused(
        Cert::SelfSigned,
        "127.0.0.1",
        trusting_the_test_ca(),
        TlsErrorKind::UnknownIssuer,
        "issuer is unknown",
    );
}

#[test]
fn an_expired_certificate_fails_with_expired() {
    refused(
        Cert::Expired,
        "127.0.0.1",
        trusting_the_test_ca(),
        TlsErrorKind::Expired,
        "certificate expired",
    );
}

/// The default configuration trusts Mozilla's roots, not whatever the server presents: a
/// certificate from a private CA is refused until that CA is trusted.
#[test]
fn the_default_roots_do_not_trust_a_private_ca() {
    refused(
        Cert::Good,
        "127.0.0.1",
        ConnectionConfig::default(),
        TlsErrorKind::UnknownIssuer,
        "issuer is unknown",
    );
}

// ---- Handshakes that break off ----

/// A raw TCP server that reads the client's ClientHello, makes the server's first flight
/// with rustls (ServerHello, certificate, ...), and hands it to `then` with the socket.
fn raw_tls_server(
    then: impl FnOnce(TcpStream, Vec<u8>) + Send + 'static,
) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("wss://{}/", listener.local_addr().unwrap());
    let thread = std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        let mut server = rustls::ServerConnection::new(pki().server_config(Cert::Good)).unwrap();
        while !server.wants_write() {
            match server.read_tls(&mut tcp) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    server.process_new_packets().unwrap();
                }
            }
        }
        let mut flight = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut flight).unwrap();
        }
        then(tcp, flight);
    });
    (url, thread)
}

/// Reads until the client leaves (bounded by the read timeout).
fn wait_for_eof(mut tcp: TcpStream) {
    let mut sink = [0u8; 4096];
    while let Ok(n) = tcp.read(&mut sink) {
        if n == 0 {
            return;
        }
    }
}

#[test]
fn a_server_stalling_mid_tls_handshake_is_given_up_at_the_connect_timeout() {
    bounded(|| {
        let (url, server) = raw_tls_server(|mut tcp, flight| {
            // Half the first flight, a partial TLS record among it, then silence.
            tcp.write_all(&flight[..flight.len() / 2]).unwrap();
            wait_for_eof(tcp);
        });
        let mut ev = EventLoop::new().unwrap();
        let config = ConnectionConfig {
            connect_timeout: Duration::from_millis(300),
            ..trusting_the_test_ca()
        };
        let conn = ev.connect(&url, config).unwrap();
        let outcomes = Outcomes::new(3);
        let short = CallOptions {
            timeout: Some(Duration::from_millis(50)),
        };
        ev.submit_with(conn, 0, short, outcomes.callback(0))
            .unwrap();
        for i in 1..3 {
            ev.submit(conn, i, outcomes.callback(i)).unwrap();
        }
        turn_until(&mut ev, |_| outcomes.completed() == 1);
        assert_eq!(outcomes.error(0), "Timeout");
        assert_eq!(ev.state(conn), Some(ConnState::Connecting));
        turn_until(&mut ev, |_| outcomes.all_completed());
        settle(&mut ev);
        outcomes.assert_exactly_once();
        for i in 1..3 {
            assert_eq!(outcomes.error(i), "NotSent(ConnectTimeout)");
        }
        assert_eq!(
            ev.state(conn),
            Some(ConnState::Disconnected(DisconnectReason::ConnectTimeout))
        );
        server.join().unwrap();
        assert_serves_another_connection_over(&mut ev, TLS);
    });
}

/// The server ends the connection at some point of the TLS handshake, in some way; every
/// call waiting fails unsent with `HandshakeInterrupted`.
fn a_server_that_leaves_mid_handshake(how: fn(TcpStream, Vec<u8>), cause: &str) {
    bounded(|| {
        let (url, server) = raw_tls_server(how);
        let mut ev = EventLoop::new().unwrap();
        let (conn, outcomes) = calls_to(&mut ev, &url, trusting_the_test_ca(), 3);
        assert_tls_failure(
            &ev,
            conn,
            &outcomes,
            3,
            TlsErrorKind::HandshakeInterrupted,
            cause,
        );
        server.join().unwrap();
        assert_serves_another_connection_over(&mut ev, TLS);
    });
}

/// Closes the server's side with a FIN (the client may still be writing: reading on until it
/// leaves keeps the kernel from answering its bytes with an RST).
fn close(tcp: TcpStream) {
    tcp.shutdown(std::net::Shutdown::Write).unwrap();
    wait_for_eof(tcp);
}

#[test]
fn the_server_closing_after_the_client_hello_fails_the_calls_unsent() {
    a_server_that_leaves_mid_handshake(|tcp, _| close(tcp), "the server closed the connection");
}

#[test]
fn the_server_closing_in_the_middle_of_its_flight_fails_the_calls_unsent() {
    a_server_that_leaves_mid_handshake(
        |mut tcp, flight| {
            tcp.write_all(&flight[..flight.len() / 2]).unwrap();
            close(tcp);
        },
        "the server closed the connection",
    );
}

#[test]
fn the_server_resetting_in_the_middle_of_its_flight_fails_the_calls_unsent() {
    a_server_that_leaves_mid_handshake(
        |mut tcp, flight| {
            tcp.write_all(&flight[..flight.len() / 2]).unwrap();
            reset(tcp);
        },
        "reset",
    );
}

/// Closes with an RST (`SO_LINGER` zero), not a FIN.
fn reset(tcp: TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket descriptor and a correctly sized `linger` value.
    let rc = unsafe {
        libc::setsockopt(
            tcp.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}

#[test]
fn a_server_that_does_not_speak_tls_fails_with_a_protocol_error() {
    bounded(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("wss://{}/", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (mut tcp, _) = listener.accept().unwrap();
            tcp.set_read_timeout(Some(WAIT)).unwrap();
            let mut hello = [0u8; 512];
            let _ = tcp.read(&mut hello);
            // What a plain HTTP or ws:// server answers to bytes it cannot parse.
            tcp.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
            wait_for_eof(tcp);
        });
        let mut ev = EventLoop::new().unwrap();
        let (conn, outcomes) = calls_to(&mut ev, &url, trusting_the_test_ca(), 2);
        assert_tls_failure(
            &ev,
            conn,
            &outcomes,
            2,
            TlsErrorKind::Protocol,
            "broke the TLS protocol",
        );
        server.join().unwrap();
        assert_serves_another_connection_over(&mut ev, TLS);
    });
}

// ---- Configuration ----

#[test]
fn a_wss_host_that_no_certificate_can_name_is_refused_at_connect() {
    let mut ev = EventLoop::new().unwrap();
    let addr = "127.0.0.1:1".parse().unwrap();
    match ev.connect_addr("wss://bad_host!/", addr, ConnectionConfig::default()) {
        Err(Error::InvalidUrl(why)) => assert!(why.contains("bad_host!"), "{why}"),
        other => panic!("{other:?}"),
    }
}
