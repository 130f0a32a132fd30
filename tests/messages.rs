//! Raw messages (`Context::send`): fire-and-forget text and binary messages that share the
//! calls' buffering, ordering, limits and backpressure, and whose echoes reach the message
//! handler.

mod support;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use rpcloop::{
    ConnId, ConnState, ConnectionConfig, DisconnectReason, Error, EventLoop, Message,
    ReconnectPolicy, UnmatchedReason,
};
use serde_json::{Value, json};
use support::raw::{BINARY, RawServer, RefusingPort, TEXT};
use support::*;

/// One message as a server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// An envelope request, by its payload.
    Call(Value),
    /// A text message that is not a request.
    Text(String),
    Binary(Vec<u8>),
}

fn seen_text(text: &str) -> Seen {
    match serde_json::from_str::<Value>(text) {
        Ok(v) if v.get("id").is_some() => Seen::Call(v["message"].clone()),
        _ => Seen::Text(text.to_owned()),
    }
}

/// A server that answers requests, echoes every other message back as it came (text as
/// text, binary as binary), and reports everything it saw, in order, once the client leaves.
fn recording_echo(report: mpsc::Sender<Vec<Seen>>) -> impl FnOnce(&mut Ws) + Send + 'static {
    move |ws| {
        let mut seen = Vec::new();
        loop {
            match ws.read() {
                Ok(tungstenite::Message::Text(text)) => {
                    let s = seen_text(&text);
                    if let Seen::Call(message) = &s {
                        let v: Value = serde_json::from_str(&text).unwrap();
                        answer(ws, v["id"].as_u64().unwrap(), message);
                    } else {
                        ws.write(tungstenite::Message::Text(text)).unwrap();
                    }
                    seen.push(s);
                }
                Ok(tungstenite::Message::Binary(data)) => {
                    seen.push(Seen::Binary(data.to_vec()));
                    ws.write(tungstenite::Message::Binary(data)).unwrap();
                }
                Ok(_) => {}
                Err(_) => break,
            }
            if ws.flush().is_err() {
                break;
            }
        }
        report.send(seen).unwrap();
    }
}

/// Everything a connection's message handler received.
type Received = Rc<RefCell<Vec<(UnmatchedReason, Vec<u8>)>>>;

fn record_unmatched(ev: &mut EventLoop, conn: ConnId) -> Received {
    let received = Received::default();
    let log = received.clone();
    ev.set_message_handler(conn, move |_, m| {
        log.borrow_mut().push((m.reason(), m.as_bytes().to_vec()))
    })
    .unwrap();
    received
}

#[test]
fn messages_leave_in_order_with_the_calls_and_their_echoes_reach_the_handler() {
    let (tx, rx) = mpsc::channel();
    let server = Server::start(recording_echo(tx));
    let (mut ev, conn) = connected(&server, without_keepalive());
    let received = record_unmatched(&mut ev, conn);
    let outcomes = Outcomes::new(2);
    ev.submit(conn, json!({"n": 0}), outcomes.callback(0))
        .unwrap();
    ev.send(conn, "hello").unwrap();
    ev.send(conn, vec![1u8, 2, 3]).unwrap();
    ev.send(conn, Message::Text(r#"{"push":true}"#.to_owned()))
        .unwrap();
    ev.submit(conn, json!({"n": 1}), outcomes.callback(1))
        .unwrap();
    turn_until(&mut ev, |_| {
        outcomes.all_completed() && received.borrow().len() == 3
    });
    settle(&mut ev);
    outcomes.assert_exactly_once();
    assert_eq!(outcomes.get(1), Ok(r#"{"n":1}"#.to_owned()));
    assert_eq!(
        *received.borrow(),
        [
            (UnmatchedReason::Malformed, b"hello".to_vec()),
            (UnmatchedReason::Binary, vec![1, 2, 3]),
            (UnmatchedReason::NoId, br#"{"push":true}"#.to_vec()),
        ]
    );
    let stats = ev.stats(conn).unwrap();
    assert_eq!((stats.requests_sent, stats.messages_sent), (2, 3));
    close_and_wait(&mut ev, conn);
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(30)).unwrap(),
        [
            Seen::Call(json!({"n": 0})),
            Seen::Text("hello".to_owned()),
            Seen::Binary(vec![1, 2, 3]),
            Seen::Text(r#"{"push":true}"#.to_owned()),
            Seen::Call(json!({"n": 1})),
        ]
    );
    server.join();
}

#[test]
fn messages_sent_before_the_connection_opens_wait_and_leave_in_submit_order() {
    let (tx, rx) = mpsc::channel();
    let server = Server::start(recording_echo(tx));
    let mut ev = EventLoop::new().unwrap();
    let conn = ev.connect(&server.url(), without_keepalive()).unwrap();
    assert_eq!(ev.state(conn), Some(ConnState::Connecting));
    let outcomes = Outcomes::new(2);
    ev.send(conn, "first").unwrap();
    ev.submit(conn, 1, outcomes.callback(0)).unwrap();
    ev.send(conn, vec![2u8]).unwrap();
    ev.submit(conn, 3, outcomes.callback(1)).unwrap();
    ev.send(conn, "last").unwrap();
    assert_eq!(ev.stats(conn).unwrap().messages_sent, 0);
    turn_until(&mut ev, |_| outcomes.all_completed());
    outcomes.assert_exactly_once();
    assert_eq!(ev.stats(conn).unwrap().messages_sent, 3);
    close_and_wait(&mut ev, conn);
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(30)).unwrap(),
        [
            Seen::Text("first".to_owned()),
            Seen::Call(json!(1)),
            Seen::Binary(vec![2]),
            Seen::Call(json!(3)),
            Seen::Text("last".to_owned()),
        ]
    );
    server.join();
}

#[test]
fn a_message_over_the_size_limit_is_refused_and_the_connection_goes_on() {
    let (tx, rx) = mpsc::channel();
    let server = Server::start(recording_echo(tx));
    let config = ConnectionConfig {
        max_message_size: 1_000,
        ..without_keepalive()
    };
    let (mut ev, conn) = connected(&server, config);
    match ev.send(conn, "x".repeat(1_001)) {
        Err(Error::TooLarge { size, limit }) => assert_eq!((size, limit), (1_001, 1_000)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        ev.send(conn, vec![0u8; 1_001]),
        Err(Error::TooLarge { .. })
    ));
    ev.send(conn, "y".repeat(1_000)).unwrap();
    ev.send(conn, Message::Binary(Default::default())).unwrap();
    ev.flush();
    close_and_wait(&mut ev, conn);
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(30)).unwrap(),
        [Seen::Text("y".repeat(1_000)), Seen::Binary(Vec::new())]
    );
    server.join();
}

#[test]
fn sending_on_an_ended_connection_fails_as_a_submit_would() {
    // Closed by this side.
    let server = Server::start(drain_until_closed);
    let (mut ev, conn) = connected(&server, without_keepalive());
    ev.close(conn).unwrap();
    assert!(matches!(ev.send(conn, "late"), Err(Error::Closed)));
    turn_until(&mut ev, |ev| ev.state(conn) == Some(ConnState::Closed));
    server.join();

    // Never opened: the connect was refused.
    let refusing = RefusingPort::new();
    let lost = ev.connect(&refusing.url(), without_keepalive()).unwrap();
    turn_until(&mut ev, |ev| {
        matches!(ev.state(lost), Some(ConnState::Disconnected(_)))
    });
    match ev.send(lost, "never") {
        Err(Error::NotSent(DisconnectReason::ConnectFailed { .. })) => {}
        other => panic!("{other:?}"),
    }

    // Not a connection of this loop.
    let mut other = EventLoop::new().unwrap();
    let elsewhere = (0..3)
        .map(|_| other.connect(&refusing.url(), without_keepalive()).unwrap())
        .last()
        .unwrap();
    assert!(matches!(
        ev.send(elsewhere, "?"),
        Err(Error::UnknownConnection)
    ));

    // After shutdown.
    ev.shutdown();
    assert!(matches!(ev.send(conn, "x"), Err(Error::Shutdown)));
}

#[test]
fn before_the_connection_opens_messages_and_calls_share_one_bounded_queue() {
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (seen_tx, seen_rx) = mpsc::channel();
    // Holds the upgrade answer back until the test has filled the queue.
    let server = RawServer::start(move |mut peer| {
        go_rx.recv().unwrap();
        peer.accept_handshake();
        let mut seen = Vec::new();
        while let Some(frame) = peer.read_frame() {
            match frame.opcode {
                TEXT => seen.push(seen_text(std::str::from_utf8(&frame.payload).unwrap())),
                BINARY => seen.push(Seen::Binary(frame.payload)),
                _ => break,
            }
            if seen.len() == 3 {
                break;
            }
        }
        seen_tx.send(seen).unwrap();
    });
    let config = ConnectionConfig {
        max_write_buffer: 4_096,
        ..without_keepalive()
    };
    let mut ev = EventLoop::new().unwrap();
    let conn = ev.connect(&server.url(), config).unwrap();
    for _ in 0..3 {
        ev.turn(Some(Duration::from_millis(1))).unwrap();
    }
    assert_eq!(ev.state(conn), Some(ConnState::Connecting));
    ev.send(conn, "a".repeat(3_000)).unwrap();
    assert!(matches!(ev.send(conn, vec![0u8; 1_100]), Err(Error::Busy)));
    assert!(matches!(
        ev.submit(conn, "b".repeat(1_100), |_, _| {}),
        Err(Error::Busy)
    ));
    let outcomes = Outcomes::new(1);
    ev.submit(conn, "c", outcomes.callback(0)).unwrap();
    ev.send(conn, vec![7u8; 900]).unwrap();
    go_tx.send(()).unwrap();
    let mut seen = None;
    turn_until(&mut ev, |_| {
        seen = seen_rx.try_recv().ok();
        seen.is_some()
    });
    assert_eq!(
        seen.unwrap(),
        [
            Seen::Text("a".repeat(3_000)),
            Seen::Call(json!("c")),
            Seen::Binary(vec![7; 900]),
        ]
    );
    // The server left without answering: the written call fails once, as lost.
    turn_until(&mut ev, |_| outcomes.all_completed());
    outcomes.assert_exactly_once();
    assert!(outcomes.error(0).starts_with("Disconnected("));
    server.join();
}

#[test]
fn messages_sent_while_reconnecting_leave_on_the_next_connection() {
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let first = Server::start(move |_ws| {
        go_rx.recv().unwrap(); // then drops the connection
    });
    let addr = first.addr;
    let config = ConnectionConfig {
        reconnect: Some(ReconnectPolicy {
            initial_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(50),
            ..ReconnectPolicy::default()
        }),
        ..without_keepalive()
    };
    let (mut ev, conn) = connected(&first, config);
    go_tx.send(()).unwrap();
    first.join();
    turn_until(&mut ev, |ev| {
        ev.state(conn) == Some(ConnState::Reconnecting)
    });
    ev.send(conn, "while down").unwrap();
    let outcomes = Outcomes::new(1);
    ev.submit(conn, "call", outcomes.callback(0)).unwrap();
    let (tx, rx) = mpsc::channel();
    let second = Server::start_at(addr, recording_echo(tx));
    turn_until(&mut ev, |_| outcomes.all_completed());
    outcomes.assert_exactly_once();
    assert_eq!(outcomes.get(0), Ok(r#""call""#.to_owned()));
    close_and_wait(&mut ev, conn);
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(30)).unwrap(),
        [
            Seen::Text("while down".to_owned()),
            Seen::Call(json!("call"))
        ]
    );
    second.join();
}

#[test]
fn a_connection_that_never_opens_drops_its_queued_messages_quietly() {
    let refusing = RefusingPort::new();
    let mut ev = EventLoop::new().unwrap();
    let conn = ev.connect(&refusing.url(), without_keepalive()).unwrap();
    ev.send(conn, "never leaves").unwrap();
    let outcomes = Outcomes::new(1);
    ev.submit(conn, 1, outcomes.callback(0)).unwrap();
    turn_until(&mut ev, |_| outcomes.all_completed());
    settle(&mut ev);
    outcomes.assert_exactly_once();
    assert!(outcomes.error(0).starts_with("NotSent(ConnectFailed"));
    assert_eq!(ev.stats(conn).unwrap().messages_sent, 0);
    assert!(matches!(ev.send(conn, "x"), Err(Error::NotSent(_))));
}

#[test]
fn a_peer_that_does_not_read_makes_send_busy_and_every_accepted_message_arrives_once() {
    const SIZE: usize = 64 << 10;
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (count_tx, count_rx) = mpsc::channel();
    let server = Server::start(move |ws| {
        go_rx.recv().unwrap();
        let mut count = 0u64;
        loop {
            match ws.read() {
                Ok(tungstenite::Message::Binary(data)) => {
                    assert_eq!(data.len(), SIZE);
                    assert!(data.iter().all(|&b| b == data[0]));
                    count += 1;
                }
                Ok(tungstenite::Message::Close(_)) => {
                    let _ = ws.flush();
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        count_tx.send(count).unwrap();
    });
    let config = ConnectionConfig {
        max_write_buffer: 256 << 10,
        ..without_keepalive()
    };
    let (mut ev, conn) = connected(&server, config);
    let mut accepted = 0u64;
    let mut busy = false;
    for i in 0..2_000u32 {
        match ev.send(conn, vec![i as u8; SIZE]) {
            Ok(()) => accepted += 1,
            Err(Error::Busy) => {
                busy = true;
                break;
            }
            Err(e) => panic!("send {i}: {e}"),
        }
        ev.turn(Some(Duration::ZERO)).unwrap();
    }
    assert!(busy, "never busy after {accepted} messages of 64 KiB");
    go_tx.send(()).unwrap();
    // Once the server reads, the buffer drains and sending works again.
    turn_until(&mut ev, |ev| match ev.send(conn, vec![0xAB; SIZE]) {
        Ok(()) => {
            accepted += 1;
            true
        }
        Err(Error::Busy) => false,
        Err(e) => panic!("{e}"),
    });
    assert_eq!(ev.stats(conn).unwrap().messages_sent, accepted);
    close_and_wait(&mut ev, conn);
    assert_eq!(
        count_rx.recv_timeout(Duration::from_secs(30)).unwrap(),
        accepted
    );
    server.join();
}

/// A server may send a message, its close frame and its FIN in one segment (the Autobahn
/// fuzzing server's `/getCaseCount` does): the client reads all three in one turn and ends the
/// connection, and the message still reaches the handler.
#[test]
fn a_message_read_in_the_same_turn_as_the_close_and_fin_still_reaches_the_handler() {
    use support::raw::{CLOSE, frame, websocket_key};
    let server = RawServer::start(|mut peer| {
        let head = peer.read_http_request().expect("the upgrade request");
        let key = websocket_key(&head).expect("a Sec-WebSocket-Key");
        let mut all = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            tungstenite::handshake::derive_accept_key(key.as_bytes())
        )
        .into_bytes();
        all.extend(frame(true, 0, TEXT, false, b"517"));
        all.extend(frame(true, 0, BINARY, false, &[5, 1, 7]));
        all.extend(frame(true, 0, CLOSE, false, &1000u16.to_be_bytes()));
        peer.write_raw(&all).unwrap();
        // Dropping the peer sends the FIN right behind.
    });
    let mut ev = EventLoop::new().unwrap();
    let conn = ev.connect(&server.url(), without_keepalive()).unwrap();
    let received = record_unmatched(&mut ev, conn);
    let closed = Rc::new(std::cell::Cell::new(false));
    let flag = closed.clone();
    ev.set_state_handler(conn, move |_, _, change| {
        if change == rpcloop::StateChange::Closed {
            flag.set(true);
        }
    })
    .unwrap();
    turn_until(&mut ev, |ev| {
        closed.get() && ev.state(conn) != Some(ConnState::Closing)
    });
    server.join();
    assert_eq!(
        *received.borrow(),
        [
            (UnmatchedReason::NoId, b"517".to_vec()),
            (UnmatchedReason::Binary, vec![5, 1, 7]),
        ]
    );
}

/// Autobahn 3.2 and its kin: a message, then a frame that breaks the protocol, read in one
/// turn. The handler still gets the message, its reply leaves before the close frame with the
/// violation's code (RFC 6455 §7.4.1), and the call in flight fails once.
#[test]
fn a_reply_to_a_message_read_before_a_violation_leaves_before_the_close_frame() {
    use support::raw::{PING, frame};
    for (what, bad, code) in [
        (
            "reserved bits",
            frame(true, 2, TEXT, false, b"bad"),
            1002u16,
        ),
        ("reserved opcode", frame(true, 0, 5, false, b""), 1002),
        (
            "invalid UTF-8",
            frame(true, 0, TEXT, false, &[0xce, 0xba, 0xf4, 0x90, 0x80, 0x80]),
            1007,
        ),
    ] {
        let (tx, rx) = mpsc::channel();
        let server = RawServer::start(move |mut peer| {
            peer.accept_handshake();
            let request = peer.read_request().expect("the call");
            let mut burst = frame(true, 0, TEXT, false, b"Hello, world!");
            burst.extend(bad);
            burst.extend(frame(true, 0, PING, false, b"ping"));
            peer.write_raw(&burst).unwrap();
            let mut seen = Vec::new();
            while let Some(f) = peer.read_frame() {
                let close = f.opcode == support::raw::CLOSE;
                seen.push((f.opcode, f.payload));
                if close {
                    break;
                }
            }
            tx.send((request.id, seen)).unwrap();
        });
        let mut ev = EventLoop::new().unwrap();
        let conn = ev.connect(&server.url(), without_keepalive()).unwrap();
        ev.set_message_handler(conn, move |ctx, m| {
            ctx.send(conn, m.as_text().expect("text")).unwrap();
        })
        .unwrap();
        let outcomes = Outcomes::new(1);
        ev.submit(conn, "pending", outcomes.callback(0)).unwrap();
        turn_until(&mut ev, |_| outcomes.all_completed());
        settle(&mut ev);
        outcomes.assert_exactly_once();
        assert!(
            outcomes.error(0).starts_with("Disconnected("),
            "{what}: {}",
            outcomes.error(0)
        );
        let (_, seen) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        server.join();
        assert_eq!(seen.len(), 2, "{what}: {seen:?}");
        assert_eq!(seen[0], (TEXT, b"Hello, world!".to_vec()), "{what}");
        assert_eq!(seen[1].0, support::raw::CLOSE, "{what}");
        assert_eq!(seen[1].1[..2], code.to_be_bytes(), "{what}: the close code");
        assert!(
            matches!(ev.state(conn), Some(ConnState::Disconnected(_))),
            "{what}: {:?}",
            ev.state(conn)
        );
    }
}
