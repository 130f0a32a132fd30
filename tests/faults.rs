//! Calls that go wrong: silence, late and duplicate answers, peers that close, vanish or refuse.
//! Every test asserts each call completed exactly once, with the error it should have.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use rpcloop::{CallOptions, ConnState, ConnectionConfig, DisconnectReason, Error, EventLoop};
use serde_json::json;
use support::memory::{PeakAlloc, bounded};
use support::*;

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

fn short(ms: u64) -> CallOptions {
    CallOptions {
        timeout: Some(Duration::from_millis(ms)),
    }
}

fn a_silent_server_times_calls_out_with_no_inbound_traffic(transport: Transport) {
    bounded(|| {
        let server = Server::start_with(transport, drain_until_closed);
        // No keepalive: then nothing at all is left to wake up for.
        let (mut ev, conn) = connected(&server, without_keepalive());
        let outcomes = Outcomes::new(20);
        for i in 0..20 {
            ev.submit_with(conn, i, short(50 + i as u64), outcomes.callback(i))
                .unwrap();
        }
        turn_until(&mut ev, |_| outcomes.all_completed());
        outcomes.assert_exactly_once();
        for i in 0..20 {
            assert_eq!(outcomes.error(i), "Timeout");
        }
        let stats = ev.stats(conn).unwrap();
        assert_eq!((stats.messages_received, stats.timeouts), (0, 20));
        assert!(!ev.has_pending());
        assert_eq!(ev.next_deadline(), None);
        assert_serves_another_connection_over(&mut ev, transport);
    });
}

over_ws_and_wss!(a_silent_server_times_calls_out_with_no_inbound_traffic);

fn a_late_answer_after_the_timeout_is_ignored_and_counted_stale(transport: Transport) {
    bounded(|| {
        let (go, wait) = mpsc::channel::<()>();
        let server = Server::start_with(transport, move |ws| {
            let reqs = read_requests(ws, 2);
            wait.recv().unwrap();
            answer(ws, reqs[0].id, &json!("late"));
            answer(ws, reqs[1].id, &reqs[1].message);
            ws.flush().unwrap();
            drain_until_closed(ws);
        });
        let (mut ev, conn) = connected(&server, ConnectionConfig::default());
        let outcomes = Outcomes::new(2);
        ev.submit_with(conn, "a", short(30), outcomes.callback(0))
            .unwrap();
        ev.submit(conn, "b", outcomes.callback(1)).unwrap();
        turn_until(&mut ev, |_| outcomes.completed() == 1);
        go.send(()).unwrap();
        turn_until(&mut ev, |_| outcomes.all_completed());
        outcomes.assert_exactly_once();
        assert_eq!(outcomes.error(0), "Timeout");
        assert_eq!(outcomes.get(1).unwrap(), r#""b""#);
        assert_eq!(ev.stats(conn).unwrap().stale_id, 1);
        assert_serves_another_connection_over(&mut ev, transport);
    });
}

over_ws_and_wss!(a_late_answer_after_the_timeout_is_ignored_and_counted_stale);

#[test]
fn duplicate_answers_complete_once() {
    bounded(|| {
        let server = Server::start(|ws| {
            let req = read_request(ws).unwrap();
            for _ in 0..3 {
                answer(ws, req.id, &req.message);
            }
            ws.flush().unwrap();
            let marker = read_request(ws).unwrap();
            answer(ws, marker.id, &marker.message);
            ws.flush().unwrap();
            drain_until_closed(ws);
        });
        let (mut ev, conn) = connected(&server, ConnectionConfig::default());
        let outcomes = Outcomes::new(2);
        ev.submit(conn, "once", outcomes.callback(0)).unwrap();
        turn_until(&mut ev, |_| outcomes.completed() == 1);
        ev.submit(conn, "marker", outcomes.callback(1)).unwrap();
        turn_until(&mut ev, |_| outcomes.all_completed());
        outcomes.assert_exactly_once();
        assert_eq!(ev.stats(conn).unwrap().stale_id, 2);
        assert_serves_another_connection(&mut ev);
    });
}

/// 100 calls in flight when the server ends the connection; `end` does the ending.
fn hundred_in_flight_then(
    transport: Transport,
    end: impl FnOnce(&mut Ws) + Send + 'static,
) -> (Outcomes, EventLoop, rpcloop::ConnId) {
    let server = Server::start_with(transport, move |ws| {
        read_requests(ws, 100);
        end(ws);
    });
    let (mut ev, conn) = connected(&server, ConnectionConfig::default());
    let outcomes = Outcomes::new(100);
    for i in 0..100 {
        ev.submit(conn, i, outcomes.callback(i)).unwrap();
    }
    turn_until(&mut ev, |_| outcomes.all_completed());
    // A few more turns: nothing may complete a second time.
    for _ in 0..3 {
        ev.turn(Some(Duration::from_millis(5))).unwrap();
    }
    outcomes.assert_exactly_once();
    server.join();
    (outcomes, ev, conn)
}

fn the_server_closing_fails_every_call_in_flight_once(transport: Transport) {
    bounded(|| {
        let (outcomes, mut ev, conn) = hundred_in_flight_then(transport, |ws| {
            ws.close(Some(tungstenite::protocol::CloseFrame {
                code: tungstenite::protocol::frame::coding::CloseCode::Away,
                reason: "maintenance".into(),
            }))
            .unwrap();
            drain_until_closed(ws);
        });
        for i in 0..100 {
            assert_eq!(
                outcomes.error(i),
                r#"Disconnected(PeerClosed { code: 1001, reason: "maintenance" })"#
            );
        }
        turn_until(&mut ev, |ev| {
            matches!(ev.state(conn), Some(ConnState::Disconnected(_)))
        });
        match ev.submit(conn, 1, |_, _| panic!("must not run")) {
            Err(Error::NotSent(DisconnectReason::PeerClosed { code: 1001, .. })) => {}
            other => panic!("{other:?}"),
        }
        assert_serves_another_connection_over(&mut ev, transport);
    });
}

over_ws_and_wss!(the_server_closing_fails_every_call_in_flight_once);

fn the_server_dropping_tcp_fails_every_call_in_flight_once(transport: Transport) {
    bounded(|| {
        let (outcomes, mut ev, conn) = hundred_in_flight_then(transport, |_ws| {
            // Returning drops the socket: no close frame, just a TCP FIN.
        });
        for i in 0..100 {
            assert_eq!(outcomes.error(i), "Disconnected(Reset)");
        }
        assert_eq!(
            ev.state(conn),
            Some(ConnState::Disconnected(DisconnectReason::Reset))
        );
        assert!(matches!(
            ev.submit(conn, 1, |_, _| {}),
            Err(Error::NotSent(DisconnectReason::Reset))
        ));
        assert!(!ev.has_pending());
        assert_serves_another_connection_over(&mut ev, transport);
    });
}

over_ws_and_wss!(the_server_dropping_tcp_fails_every_call_in_flight_once);

fn a_failing_write_leaves_no_pending_call_behind(transport: Transport) {
    bounded(|| {
        let (gone_tx, gone_rx) = mpsc::channel::<()>();
        let server = Server::start_with(transport, move |ws| {
            read_request(ws);
            ws.get_mut().shutdown(std::net::Shutdown::Both).unwrap();
            gone_tx.send(()).unwrap();
        });
        let (mut ev, conn) = connected(&server, ConnectionConfig::default());
        let outcomes = Outcomes::new(200);
        ev.submit(conn, 0, outcomes.callback(0)).unwrap();
        ev.flush(); // we wait on the server below, without turning
        gone_rx.recv().unwrap();
        server.join();
        // Keep writing into the dead socket without turning (flushing each call out at once): the
        // writes start failing (EPIPE or reset), and every call, whether refused at once or
        // registered, ends exactly once.
        let mut refused = 0;
        for i in 1..200 {
            match ev.submit(conn, i, outcomes.callback(i)) {
                Ok(_) => ev.flush(),
                Err(Error::NotSent(_)) => {
                    refused += 1;
                    outcomes.record(i, Err(Error::Closed)); // stands in for the callback that was dropped
                }
                Err(e) => panic!("{e:?}"),
            }
        }
        turn_until(&mut ev, |_| outcomes.all_completed());
        outcomes.assert_exactly_once();
        assert!(refused > 0, "the dead socket was never noticed");
        assert_eq!(ev.pending_calls(), 0);
        assert!(matches!(ev.state(conn), Some(ConnState::Disconnected(_))));
        assert_serves_another_connection_over(&mut ev, transport);
    });
}

over_ws_and_wss!(a_failing_write_leaves_no_pending_call_behind);

#[test]
fn a_refused_connection_fails_its_waiting_calls() {
    bounded(|| {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut ev = EventLoop::new().unwrap();
        let conn = ev
            .connect(
                &format!("ws://127.0.0.1:{port}/"),
                ConnectionConfig::default(),
            )
            .unwrap();
        let outcomes = Outcomes::new(3);
        for i in 0..3 {
            ev.submit(conn, i, outcomes.callback(i)).unwrap();
        }
        turn_until(&mut ev, |_| outcomes.all_completed());
        outcomes.assert_exactly_once();
        assert!(
            outcomes.error(0).starts_with("NotSent(ConnectFailed"),
            "{}",
            outcomes.error(0)
        );
        assert_serves_another_connection(&mut ev);
    });
}

#[test]
fn a_refused_handshake_fails_with_a_handshake_error() {
    bounded(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
        });
        let mut ev = EventLoop::new().unwrap();
        let conn = ev
            .connect_addr(
                "ws://example.test/socket",
                addr,
                ConnectionConfig::default(),
            )
            .unwrap();
        let outcomes = Outcomes::new(1);
        ev.submit(conn, 1, outcomes.callback(0)).unwrap();
        turn_until(&mut ev, |_| outcomes.all_completed());
        assert!(
            outcomes.error(0).starts_with("Handshake(") && outcomes.error(0).contains("404"),
            "{}",
            outcomes.error(0)
        );
        server.join().unwrap();
        assert_serves_another_connection(&mut ev);
    });
}

#[test]
fn calls_waiting_on_a_stalled_handshake_time_out_then_the_connect_timeout_fires() {
    bounded(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            let (_s, _) = listener.accept().unwrap(); // accept, then never answer the handshake
            let _ = done_rx.recv_timeout(Duration::from_secs(30));
        });
        let mut ev = EventLoop::new().unwrap();
        let config = ConnectionConfig {
            connect_timeout: Duration::from_millis(300),
            ..Default::default()
        };
        let conn = ev.connect_addr("ws://127.0.0.1/", addr, config).unwrap();
        let outcomes = Outcomes::new(2);
        ev.submit_with(conn, 1, short(50), outcomes.callback(0))
            .unwrap();
        ev.submit_with(conn, 2, short(60_000), outcomes.callback(1))
            .unwrap();
        turn_until(&mut ev, |_| outcomes.completed() == 1);
        assert_eq!(outcomes.error(0), "Timeout");
        assert_eq!(ev.state(conn), Some(ConnState::Connecting));
        turn_until(&mut ev, |_| outcomes.all_completed());
        outcomes.assert_exactly_once();
        assert_eq!(outcomes.error(1), "NotSent(ConnectTimeout)");
        done_tx.send(()).unwrap();
        server.join().unwrap();
        assert_serves_another_connection(&mut ev);
    });
}

/// A TCP connect that never completes (what an unreachable or firewalled host looks like),
/// made on loopback: a listener whose accept queue is full drops every further SYN.
#[test]
fn a_tcp_connect_that_never_completes_fails_at_the_connect_timeout() {
    bounded(|| {
        use std::os::fd::AsRawFd;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Shrink the accept queue to its minimum (listen(2) again on a listening socket).
        // SAFETY: the descriptor is a live socket owned by `listener`; no memory is passed.
        assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
        // Fill the queue: connects that complete are queued until one no longer completes.
        let mut fillers = Vec::new();
        loop {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(s) => fillers.push(s),
                Err(_) => break,
            }
            assert!(fillers.len() < 64, "the accept queue never filled");
        }
        let mut ev = EventLoop::new().unwrap();
        let config = ConnectionConfig {
            connect_timeout: Duration::from_millis(200),
            ..Default::default()
        };
        let conn = ev.connect_addr("ws://127.0.0.1/", addr, config).unwrap();
        let outcomes = Outcomes::new(3);
        for i in 0..3 {
            ev.submit(conn, i, outcomes.callback(i)).unwrap();
        }
        turn_until(&mut ev, |_| outcomes.all_completed());
        outcomes.assert_exactly_once();
        for i in 0..3 {
            assert_eq!(outcomes.error(i), "NotSent(ConnectTimeout)");
        }
        assert_eq!(
            ev.state(conn),
            Some(ConnState::Disconnected(DisconnectReason::ConnectTimeout))
        );
        drop(listener);
        assert_serves_another_connection(&mut ev);
    });
}

fn an_oversized_incoming_message_ends_the_connection(transport: Transport) {
    bounded(|| {
        let (code_tx, code_rx) = mpsc::channel();
        let server = Server::start_with(transport, move |ws| {
            let req = read_request(ws).unwrap();
            answer(ws, req.id, &json!("x".repeat(10_000)));
            ws.flush().unwrap();
            // RFC 6455 §7.4.1: the client closes with 1009 before dropping the connection.
            let code = loop {
                match ws.read() {
                    Ok(tungstenite::Message::Close(frame)) => {
                        break frame.map(|f| u16::from(f.code));
                    }
                    Ok(_) => continue,
                    Err(_) => break None,
                }
            };
            code_tx.send(code).unwrap();
        });
        let config = ConnectionConfig {
            max_message_size: 4_096,
            ..Default::default()
        };
        let (mut ev, conn) = connected(&server, config);
        let outcomes = Outcomes::new(1);
        ev.submit(conn, 1, outcomes.callback(0)).unwrap();
        turn_until(&mut ev, |_| outcomes.all_completed());
        assert!(
            outcomes
                .error(0)
                .starts_with("Disconnected(MessageTooLarge"),
            "{}",
            outcomes.error(0)
        );
        assert_eq!(
            code_rx.recv_timeout(Duration::from_secs(30)).unwrap(),
            Some(1009)
        );
        server.join();
        assert_serves_another_connection_over(&mut ev, transport);
    });
}

over_ws_and_wss!(an_oversized_incoming_message_ends_the_connection);

#[test]
fn limits_refuse_calls_at_once() {
    bounded(|| {
        let server = Server::start(drain_until_closed);
        let config = ConnectionConfig {
            max_in_flight: 2,
            max_message_size: 100,
            ..Default::default()
        };
        let (mut ev, conn) = connected(&server, config);
        let outcomes = Outcomes::new(2);
        ev.submit_with(conn, 1, short(20), outcomes.callback(0))
            .unwrap();
        ev.submit_with(conn, 2, short(20), outcomes.callback(1))
            .unwrap();
        assert!(matches!(ev.submit(conn, 3, |_, _| {}), Err(Error::Busy)));
        turn_until(&mut ev, |_| outcomes.all_completed());
        // Capacity is back once the calls completed.
        let big = "y".repeat(200);
        match ev.submit(conn, big, |_, _| {}) {
            Err(Error::TooLarge { limit: 100, size }) => assert!(size > 200),
            other => panic!("{other:?}"),
        }
        assert!(ev.submit_with(conn, 4, short(10), |_, _| {}).is_ok());
        assert_serves_another_connection(&mut ev);
    });
}

#[test]
fn bad_urls_and_unknown_connections_are_refused() {
    bounded(|| {
        let mut ev = EventLoop::new().unwrap();
        assert!(matches!(
            ev.connect("http://127.0.0.1:1/", ConnectionConfig::default()),
            Err(Error::InvalidUrl(_))
        ));
        // wss:// needs the `tls` feature (tests/tls.rs covers it when present).
        #[cfg(not(feature = "tls"))]
        assert!(matches!(
            ev.connect("wss://127.0.0.1:1/", ConnectionConfig::default()),
            Err(Error::InvalidUrl(_))
        ));
        assert!(matches!(
            ev.connect("not a url", ConnectionConfig::default()),
            Err(Error::InvalidUrl(_))
        ));
        let mut other = EventLoop::new().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let foreign = other
            .connect(
                &format!("ws://127.0.0.1:{port}/"),
                ConnectionConfig::default(),
            )
            .unwrap();
        assert!(matches!(
            ev.submit(foreign, 1, |_, _| {}),
            Err(Error::UnknownConnection)
        ));
        assert!(matches!(ev.close(foreign), Err(Error::UnknownConnection)));
        assert_serves_another_connection(&mut ev);
    });
}

fn dropping_the_loop_completes_every_call_with_shutdown(transport: Transport) {
    bounded(|| {
        let server = Server::start_with(transport, drain_until_closed);
        let (mut ev, conn) = connected(&server, ConnectionConfig::default());
        let outcomes = Outcomes::new(10);
        for i in 0..10 {
            ev.submit(conn, i, outcomes.callback(i)).unwrap();
        }
        drop(ev);
        outcomes.assert_exactly_once();
        assert_eq!(outcomes.error(3), "Shutdown");
        server.join();
    });
}

over_ws_and_wss!(dropping_the_loop_completes_every_call_with_shutdown);
