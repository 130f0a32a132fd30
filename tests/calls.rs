//! Calls that go right: ordering, re-entrant callbacks, cancel, raw payloads, unmatched frames.

mod support;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::mpsc;

use rpcloop::{CallOptions, ConnState, ConnectionConfig, Error, EventLoop, UnmatchedReason};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::time::Duration;
use support::*;

fn thousand_calls(shuffled: bool) {
    const N: usize = 1_000;
    let server = Server::start(move |ws| {
        let mut requests = read_requests(ws, N);
        if shuffled {
            shuffle(&mut requests, 0xC0FFEE);
        }
        for req in &requests {
            answer(ws, req.id, &req.message);
        }
        ws.flush().unwrap();
        drain_until_closed(ws);
    });
    let (mut ev, conn) = connected(&server, ConnectionConfig::default());
    let outcomes = Outcomes::new(N);
    let order = Rc::new(RefCell::new(Vec::new()));
    for i in 0..N {
        let record = outcomes.callback(i);
        let order = order.clone();
        ev.submit(conn, json!({"n": i}), move |ctx, result| {
            order.borrow_mut().push(i);
            record(ctx, result);
        })
        .unwrap();
    }
    turn_until(&mut ev, |_| outcomes.all_completed());
    outcomes.assert_exactly_once();
    for i in 0..N {
        assert_eq!(outcomes.get(i).unwrap(), format!(r#"{{"n":{i}}}"#));
    }
    let in_order = order.borrow().windows(2).all(|w| w[0] < w[1]);
    assert_eq!(
        in_order, !shuffled,
        "callbacks run in the order answers arrive"
    );
    assert!(!ev.has_pending());
    let stats = ev.stats(conn).unwrap();
    assert_eq!(
        (stats.requests_sent, stats.answers, stats.unmatched()),
        (N as u64, N as u64, 0)
    );
    ev.close(conn).unwrap();
    turn_until(&mut ev, |ev| ev.state(conn) == Some(ConnState::Closed));
    server.join();
}

#[test]
fn a_thousand_concurrent_calls_answered_in_order() {
    thousand_calls(false);
}

#[test]
fn a_thousand_concurrent_calls_answered_shuffled() {
    thousand_calls(true);
}

#[test]
fn calls_submitted_before_the_connection_opens_wait_for_it() {
    let server = Server::start(echo);
    let mut ev = EventLoop::new().unwrap();
    let conn = ev
        .connect(&server.url(), ConnectionConfig::default())
        .unwrap();
    assert_eq!(ev.state(conn), Some(ConnState::Connecting));
    let outcomes = Outcomes::new(10);
    for i in 0..10 {
        ev.submit(conn, i, outcomes.callback(i)).unwrap();
    }
    turn_until(&mut ev, |_| outcomes.all_completed());
    outcomes.assert_exactly_once();
    for i in 0..10 {
        assert_eq!(outcomes.get(i).unwrap(), i.to_string());
    }
}

#[test]
fn a_callback_that_submits_the_next_call() {
    const CHAIN: usize = 200;
    let server = Server::start(echo);
    let (mut ev, conn) = connected(&server, ConnectionConfig::default());
    let seen = Rc::new(RefCell::new(Vec::new()));

    fn step(
        ctx: &mut rpcloop::Context,
        conn: rpcloop::ConnId,
        n: usize,
        seen: Rc<RefCell<Vec<u64>>>,
    ) {
        ctx.submit(conn, n, move |ctx, result| {
            let got: u64 = result.expect("answer").message().expect("a number");
            seen.borrow_mut().push(got);
            if n + 1 < CHAIN {
                step(ctx, conn, n + 1, seen);
            }
        })
        .expect("submit from a callback");
    }
    step(&mut ev, conn, 0, seen.clone());
    turn_until(&mut ev, |_| seen.borrow().len() == CHAIN);
    assert_eq!(*seen.borrow(), (0..CHAIN as u64).collect::<Vec<_>>());
    assert!(!ev.has_pending());
}

#[test]
fn a_callback_may_cancel_and_close() {
    let server = Server::start(|ws| {
        let reqs = read_requests(ws, 3);
        answer(ws, reqs[2].id, &reqs[2].message);
        ws.flush().unwrap();
        drain_until_closed(ws);
    });
    let (mut ev, conn) = connected(&server, ConnectionConfig::default());
    let outcomes = Outcomes::new(3);
    let slow = ev.submit(conn, "slow", outcomes.callback(1)).unwrap();
    ev.submit(conn, "other", outcomes.callback(2)).unwrap();
    let first = outcomes.clone();
    // Only the last request is answered; its callback cancels one call and closes the rest.
    ev.submit(conn, "first", move |ctx, result| {
        assert!(ctx.cancel(slow));
        ctx.close(conn).unwrap();
        first.record(0, result);
    })
    .unwrap();
    turn_until(&mut ev, |_| outcomes.all_completed());
    outcomes.assert_exactly_once();
    assert_eq!(outcomes.get(0).unwrap(), r#""first""#);
    assert_eq!(outcomes.error(1), "Cancelled");
    assert_eq!(outcomes.error(2), "Closed");
    assert!(matches!(ev.submit(conn, 1, |_, _| {}), Err(Error::Closed)));
    turn_until(&mut ev, |ev| ev.state(conn) == Some(ConnState::Closed));
    server.join();
}

#[test]
fn cancel_racing_a_response() {
    let (release, released) = mpsc::channel::<()>();
    let server = Server::start(move |ws| {
        let reqs = read_requests(ws, 3);
        // Answer call 2 first, then 0, in one write: 2's callback cancels 0, whose answer is
        // already read in the same turn; then wait, and answer 1 after it was cancelled.
        answer(ws, reqs[2].id, &reqs[2].message);
        answer(ws, reqs[0].id, &reqs[0].message);
        ws.flush().unwrap();
        released.recv().unwrap();
        answer(ws, reqs[1].id, &reqs[1].message);
        answer(ws, reqs[2].id, &json!("marker"));
        ws.flush().unwrap();
        drain_until_closed(ws);
    });
    let (mut ev, conn) = connected(&server, ConnectionConfig::default());
    let outcomes = Outcomes::new(3);
    let c0 = ev.submit(conn, 0, outcomes.callback(0)).unwrap();
    let c1 = ev.submit(conn, 1, outcomes.callback(1)).unwrap();
    let o = outcomes.clone();
    let cancel_results = Rc::new(RefCell::new(Vec::new()));
    let cr = cancel_results.clone();
    ev.submit(conn, 2, move |ctx, result| {
        cr.borrow_mut().push(ctx.cancel(c0));
        o.record(2, result);
    })
    .unwrap();
    turn_until(&mut ev, |_| outcomes.completed() == 2);
    // The answer to 0 was already in: the cancel lost the race, the answer stands.
    assert_eq!(*cancel_results.borrow(), vec![false]);
    assert_eq!(outcomes.get(0).unwrap(), "0");
    // Cancel 1 before its answer: it completes with Cancelled, the answer becomes stale.
    assert!(ev.cancel(c1));
    assert!(!ev.cancel(c1));
    release.send(()).unwrap();
    turn_until(&mut ev, |ev| ev.stats(conn).unwrap().stale_id == 2);
    outcomes.assert_exactly_once();
    assert_eq!(outcomes.error(1), "Cancelled");
    drop(ev);
    server.join();
}

#[test]
fn raw_json_payloads_are_sent_verbatim() {
    let (tx, rx) = mpsc::channel();
    let server = Server::start(move |ws| {
        // Echo the frame as received, so the client sees exactly the bytes it sent.
        let frame = ws.read().unwrap();
        tx.send(frame.to_text().unwrap().to_owned()).unwrap();
        ws.send(frame).unwrap();
        drain_until_closed(ws);
    });
    let (mut ev, conn) = connected(&server, ConnectionConfig::default());
    let raw = RawValue::from_string(r#"{"pre":"serialized","n":[1,2,3]}"#.to_owned()).unwrap();
    let outcomes = Outcomes::new(1);
    ev.submit(conn, &raw, outcomes.callback(0)).unwrap();
    turn_until(&mut ev, |_| outcomes.all_completed());
    assert_eq!(
        outcomes.get(0).unwrap(),
        r#"{"pre":"serialized","n":[1,2,3]}"#
    );
    assert!(
        rx.recv()
            .unwrap()
            .ends_with(r#","message":{"pre":"serialized","n":[1,2,3]}}"#)
    );
}

#[test]
fn typed_messages_deserialize_on_request() {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Quote<'a> {
        symbol: &'a str,
        bid: f64,
    }
    let server = Server::start(echo);
    let (mut ev, conn) = connected(&server, ConnectionConfig::default());
    let got = Rc::new(RefCell::new(None));
    let g = got.clone();
    ev.submit(
        conn,
        Quote {
            symbol: "ABC",
            bid: 1.5,
        },
        move |_, result| {
            let resp = result.unwrap();
            let quote: Quote<'_> = resp.message().unwrap();
            assert_eq!(
                quote,
                Quote {
                    symbol: "ABC",
                    bid: 1.5
                }
            );
            *g.borrow_mut() = Some(resp.id());
        },
    )
    .unwrap();
    turn_until(&mut ev, |_| got.borrow().is_some());
}

#[test]
fn unmatched_frames_go_to_the_handler_and_never_break_calls() {
    let server = Server::start(|ws| {
        let reqs = read_requests(ws, 2);
        raw(ws, r#"{"event":"tick","price":1}"#);
        raw(ws, "this is not json");
        answer(ws, reqs[1].id, &reqs[1].message);
        raw(ws, r#"{"id":987654321,"message":"unknown"}"#);
        raw(ws, r#"{"id":"1","message":"string id"}"#);
        ws.write(tungstenite::Message::binary(vec![1u8, 2, 3]))
            .unwrap();
        raw(ws, r#"[1,2,3]"#);
        answer(ws, reqs[0].id, &reqs[0].message);
        ws.flush().unwrap();
        drain_until_closed(ws);
    });
    let (mut ev, conn) = connected(&server, ConnectionConfig::default());
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    ev.set_message_handler(conn, move |_, message| {
        s.borrow_mut()
            .push((message.reason(), message.as_bytes().to_vec()));
    })
    .unwrap();
    let outcomes = Outcomes::new(2);
    ev.submit(conn, "a", outcomes.callback(0)).unwrap();
    ev.submit(conn, "b", outcomes.callback(1)).unwrap();
    turn_until(&mut ev, |_| {
        outcomes.all_completed() && seen.borrow().len() == 6
    });
    outcomes.assert_exactly_once();
    assert_eq!(outcomes.get(0).unwrap(), r#""a""#);
    assert_eq!(outcomes.get(1).unwrap(), r#""b""#);
    let reasons: Vec<_> = seen.borrow().iter().map(|s| s.0).collect();
    use UnmatchedReason::*;
    assert_eq!(
        reasons,
        vec![NoId, Malformed, UnknownId, UnknownId, Binary, NoId]
    );
    assert_eq!(seen.borrow()[0].1, br#"{"event":"tick","price":1}"#);
    let stats = ev.stats(conn).unwrap();
    assert_eq!(
        (stats.no_id, stats.malformed, stats.unknown_id, stats.binary),
        (2, 1, 2, 1)
    );
    assert_eq!(ev.state(conn), Some(ConnState::Open));
}

/// A frame of a million nested arrays carrying a pending call's id used to complete the call.
#[test]
fn a_frame_nested_a_million_deep_is_malformed_and_the_call_still_gets_its_answer() {
    const LEVELS: usize = 1_000_000;
    let deep = |id: u64| {
        format!(
            r#"{{"id":{id},"message":{}{}}}"#,
            "[".repeat(LEVELS),
            "]".repeat(LEVELS)
        )
    };
    let server = Server::start(move |ws| {
        let req = read_request(ws).unwrap();
        raw(ws, &deep(req.id));
        // At the limit (128 with the object around it): read as usual, but for no call.
        raw(
            ws,
            &format!(
                r#"{{"id":987654321,"message":{}{}}}"#,
                "[".repeat(127),
                "]".repeat(127)
            ),
        );
        answer(ws, req.id, &json!("the real answer"));
        ws.flush().unwrap();
        drain_until_closed(ws);
    });
    let (mut ev, conn) = connected(&server, ConnectionConfig::default());
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    ev.set_message_handler(conn, move |_, message| {
        s.borrow_mut()
            .push((message.reason(), message.as_bytes().len()));
    })
    .unwrap();
    let outcomes = Outcomes::new(1);
    let id = ev.submit(conn, "question", outcomes.callback(0)).unwrap();
    turn_until(&mut ev, |_| {
        outcomes.all_completed() && seen.borrow().len() == 2
    });
    outcomes.assert_exactly_once();
    assert_eq!(outcomes.get(0).unwrap(), r#""the real answer""#);
    let expected_size = deep(id.as_u64()).len();
    assert_eq!(
        seen.borrow()[0],
        (UnmatchedReason::Malformed, expected_size),
        "the deep frame is handed over whole, as malformed"
    );
    assert_eq!(seen.borrow()[1].0, UnmatchedReason::UnknownId);
    let stats = ev.stats(conn).unwrap();
    assert_eq!(
        (stats.malformed, stats.unknown_id, stats.answers),
        (1, 1, 1)
    );
    assert_eq!(ev.state(conn), Some(ConnState::Open));
}

#[test]
fn without_a_handler_unmatched_frames_are_counted() {
    let server = Server::start(|ws| {
        let req = read_request(ws).unwrap();
        for _ in 0..50 {
            raw(ws, r#"{"push":true}"#);
            raw(ws, "{garbage");
        }
        answer(ws, req.id, &Value::Null);
        ws.flush().unwrap();
        drain_until_closed(ws);
    });
    let (mut ev, conn) = connected(&server, ConnectionConfig::default());
    let outcomes = Outcomes::new(1);
    ev.submit_with(
        conn,
        0,
        CallOptions {
            timeout: Some(Duration::from_secs(20)),
        },
        outcomes.callback(0),
    )
    .unwrap();
    turn_until(&mut ev, |_| outcomes.all_completed());
    assert_eq!(outcomes.get(0).unwrap(), "null");
    let stats = ev.stats(conn).unwrap();
    assert_eq!((stats.no_id, stats.malformed, stats.answers), (50, 50, 1));
}

#[test]
fn close_sends_a_normal_close_frame_and_ends_cleanly() {
    let (tx, rx) = mpsc::channel();
    let server = Server::start(move |ws| {
        loop {
            match ws.read() {
                Ok(tungstenite::Message::Close(frame)) => {
                    tx.send(frame.map(|f| u16::from(f.code))).unwrap();
                }
                Ok(_) => {}
                Err(_) => return, // the close handshake is done (or the client left)
            }
        }
    });
    let (mut ev, conn) = connected(&server, ConnectionConfig::default());
    let outcomes = Outcomes::new(1);
    ev.submit(conn, 1, outcomes.callback(0)).unwrap();
    ev.close(conn).unwrap();
    assert_eq!(ev.state(conn), Some(ConnState::Closing));
    turn_until(&mut ev, |ev| ev.state(conn) == Some(ConnState::Closed));
    assert_eq!(outcomes.error(0), "Closed");
    assert_eq!(rx.recv().unwrap(), Some(1000));
    ev.close(conn).unwrap(); // closing again does nothing
    server.join();
}

#[test]
#[allow(clippy::result_large_err)] // tungstenite's accept_hdr callback signature, not ours
fn configured_headers_go_with_the_handshake() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/feed?x=1", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut seen = None;
        let callback = |req: &tungstenite::handshake::server::Request,
                        resp: tungstenite::handshake::server::Response| {
            let auth = req
                .headers()
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned());
            seen = Some((req.uri().to_string(), auth));
            Ok(resp)
        };
        let mut ws = tungstenite::accept_hdr(ServerStream::Plain(stream), callback).unwrap();
        echo(&mut ws);
        seen.unwrap()
    });
    let config = ConnectionConfig {
        headers: vec![("Authorization".into(), "Bearer t0ken".into())],
        ..Default::default()
    };
    let mut ev = EventLoop::new().unwrap();
    let conn = ev.connect(&url, config).unwrap();
    let outcomes = Outcomes::new(1);
    ev.submit(conn, 1, outcomes.callback(0)).unwrap();
    turn_until(&mut ev, |_| outcomes.all_completed());
    assert_eq!(outcomes.get(0).unwrap(), "1");
    drop(ev);
    let (path, auth) = server.join().unwrap();
    assert_eq!(path, "/feed?x=1");
    assert_eq!(auth.as_deref(), Some("Bearer t0ken"));
}

/// Small frames are copied into the loop's frame arena, large ones are not: sizes on both sides
/// of the limit, interleaved and many in flight (so answers of one turn pin arena chunks),
/// must all come back intact and each to its own call.
#[test]
fn frames_around_the_arena_limit_arrive_intact() {
    const SIZES: [usize; 7] = [0, 100, 16_340, 16_384, 16_400, 70_000, 300_000];
    const N: usize = 140;
    let server = Server::start(echo);
    let (mut ev, conn) = connected(&server, ConnectionConfig::default());
    let outcomes = Outcomes::new(N);
    let expected: Vec<String> = (0..N)
        .map(|i| format!("{i:05}{}", "z".repeat(SIZES[i % SIZES.len()])))
        .collect();
    for (i, text) in expected.iter().enumerate() {
        ev.submit(conn, text.as_str(), outcomes.callback(i))
            .unwrap();
    }
    turn_until(&mut ev, |_| outcomes.all_completed());
    outcomes.assert_exactly_once();
    for (i, text) in expected.iter().enumerate() {
        assert_eq!(outcomes.get(i).unwrap(), format!("\"{text}\""), "call {i}");
    }
}
