//! Traps that bit other libraries of this kind, each pinned by a test.

mod support;

use std::sync::mpsc;
use std::time::Duration;

use rpcloop::{CallOptions, ConnectionConfig};
use support::*;

/// The server writes 1,000 answers in one TCP write. tungstenite buffers what it read past the
/// first frame, and mio's readiness is edge-triggered: a client that reads one message per
/// event would sit on 999 answers until more traffic comes. All must fire with no more traffic.
#[test]
fn a_thousand_answers_in_one_write_all_complete_without_more_traffic() {
    answers_in_one_burst(1_000);
}

/// More answers than one connection may read in a turn (the read budget): the rest must be
/// read on the following turns without waiting for new readiness.
#[test]
fn a_burst_beyond_the_read_budget_completes_without_more_traffic() {
    answers_in_one_burst(10_000);
}

fn answers_in_one_burst(n: usize) {
    let (sent_tx, sent_rx) = mpsc::channel();
    let server = Server::start(move |ws| {
        let reqs = read_requests(ws, n);
        for req in &reqs {
            answer(ws, req.id, &req.message); // buffered: write_buffer_size is 1 MiB
        }
        ws.flush().unwrap(); // one write
        sent_tx.send(()).unwrap();
        drain_until_closed(ws);
    });
    let (mut ev, conn) = connected(&server, ConnectionConfig::default());
    let outcomes = Outcomes::new(n);
    for i in 0..n {
        ev.submit(conn, i, outcomes.callback(i)).unwrap();
    }
    // Turn until the server has written; after that, no more bytes arrive.
    turn_until(&mut ev, |_| {
        sent_rx.try_recv().is_ok() || outcomes.all_completed()
    });
    turn_until(&mut ev, |_| outcomes.all_completed());
    outcomes.assert_exactly_once();
    assert_eq!(ev.stats(conn).unwrap().answers, n as u64);
}

/// An answer and the call's deadline land in the same turn: I/O is handled before timers, so
/// the call completes once, with its answer.
#[test]
fn an_answer_and_its_deadline_in_the_same_turn_complete_once() {
    let (answered_tx, answered_rx) = mpsc::channel();
    let server = Server::start(move |ws| {
        let req = read_request(ws).unwrap();
        answer(ws, req.id, &req.message);
        ws.flush().unwrap();
        answered_tx.send(()).unwrap();
        drain_until_closed(ws);
    });
    let (mut ev, conn) = connected(&server, ConnectionConfig::default());
    let outcomes = Outcomes::new(1);
    let options = CallOptions {
        timeout: Some(Duration::from_millis(50)),
    };
    ev.submit_with(conn, "both", options, outcomes.callback(0))
        .unwrap();
    // Do not turn until the answer sits in our socket and the deadline has passed.
    ev.flush();
    answered_rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(120));
    ev.turn(Some(Duration::ZERO)).unwrap();
    outcomes.assert_exactly_once();
    assert_eq!(outcomes.get(0).unwrap(), r#""both""#);
    for _ in 0..3 {
        ev.turn(Some(Duration::from_millis(5))).unwrap();
    }
    outcomes.assert_exactly_once();
}

/// 100,000 calls to a server that never answers: after their deadlines the pending table is
/// empty, and the full in-flight capacity is available again.
#[test]
fn a_hundred_thousand_unanswered_calls_free_all_capacity() {
    const N: usize = 100_000;
    let server = Server::start(drain_until_closed);
    let config = ConnectionConfig {
        max_in_flight: N,
        ..without_keepalive()
    };
    let (mut ev, conn) = connected(&server, config);
    let options = CallOptions {
        timeout: Some(Duration::from_millis(200)),
    };
    for round in 0..2 {
        let outcomes = Outcomes::new(N);
        for i in 0..N {
            ev.submit_with(conn, i, options, outcomes.callback(i))
                .unwrap_or_else(|e| panic!("round {round}, call {i}: {e}"));
        }
        assert!(ev.submit(conn, 0, |_, _| {}).is_err(), "the limit holds");
        turn_until(&mut ev, |_| outcomes.all_completed());
        outcomes.assert_exactly_once();
        assert_eq!(outcomes.error(N - 1), "Timeout");
        assert_eq!(ev.pending_calls(), 0);
        assert_eq!(ev.next_deadline(), None);
    }
    assert_eq!(ev.stats(conn).unwrap().timeouts, 2 * N as u64);
}
