//! Connections come and go: an ended connection is freed, its `ConnId` is generational, and a
//! loop that opens and closes connections for weeks stays the size of its busiest moment.

mod support;

use std::cell::RefCell;
use std::net::TcpListener;
use std::rc::Rc;
use std::time::Duration;

use rpcloop::{ConnId, ConnState, Error, EventLoop, UnmatchedReason};
use serde_json::json;
use support::memory::{PeakAlloc, live_bytes};
use support::raw::RefusingPort;
use support::*;

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

/// Opens a connection to `addr`, closes it before it connects, and turns once: the close is
/// told and the connection freed.
fn open_and_close(ev: &mut EventLoop, url: &str) -> ConnId {
    let conn = ev.connect(url, without_keepalive()).unwrap();
    ev.close(conn).unwrap();
    ev.turn(Some(Duration::ZERO)).unwrap();
    conn
}

/// A listener that accepts and drops whatever connects, so its backlog never fills.
fn sink() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    url
}

#[test]
fn a_hundred_thousand_connections_opened_and_closed_leave_nothing_behind() {
    // A port that refuses: each connect is still in progress when it is closed, so no TCP
    // connection is ever made and none lingers in TIME_WAIT (100,000 of those would exhaust
    // the ephemeral ports of a machine that does not reuse them).
    let refusing = RefusingPort::new();
    let url = refusing.url();
    let mut ev = EventLoop::new().unwrap();
    // Warm up: the tables, the wheel and the scratch buffers reach their working size.
    for _ in 0..1_000 {
        open_and_close(&mut ev, &url);
    }
    let (table, bytes) = (ev.connections(), live_bytes());
    assert_eq!(table, 0, "every connection is freed");
    for _ in 0..100_000 {
        open_and_close(&mut ev, &url);
    }
    assert_eq!(ev.connections(), table);
    let grown = live_bytes() - bytes;
    assert!(
        grown <= 4 << 10,
        "the loop holds {grown} bytes more after 100,000 connections"
    );
}

#[test]
fn a_stale_id_names_nothing_once_its_slot_holds_another_connection() {
    let url = sink();
    let mut ev = EventLoop::new().unwrap();
    let old = ev.connect(&url, without_keepalive()).unwrap();
    ev.close(old).unwrap();
    ev.turn(Some(Duration::ZERO)).unwrap();
    assert_eq!(ev.connections(), 0);
    // Freed, but its slot remembers it: what became of it is still told.
    assert_eq!(ev.state(old), Some(ConnState::Closed));
    assert!(matches!(ev.submit(old, 1, |_, _| {}), Err(Error::Closed)));
    assert!(
        ev.close(old).is_ok(),
        "closing an ended connection does nothing"
    );

    let new = ev.connect(&url, without_keepalive()).unwrap();
    assert_ne!(old, new);
    assert_eq!(old.to_string(), "connection 0");
    assert_eq!(
        new.to_string(),
        "connection 0.1",
        "the same slot, the next generation"
    );
    assert_eq!(ev.state(old), None);
    assert_eq!(ev.stats(old), None);
    assert!(matches!(
        ev.submit(old, 1, |_, _| {}),
        Err(Error::UnknownConnection)
    ));
    assert!(matches!(ev.close(old), Err(Error::UnknownConnection)));
    assert!(matches!(
        ev.set_message_handler(old, |_, _| {}),
        Err(Error::UnknownConnection)
    ));
    assert!(matches!(ev.send(old, "x"), Err(Error::UnknownConnection)));
    assert_eq!(ev.state(new), Some(ConnState::Connecting));
    ev.close(new).unwrap();
}

#[test]
fn nothing_of_an_old_connection_reaches_the_new_one_in_its_slot() {
    let server = Server::start_many(2, |ws, _| {
        // Each connection gets a push naming which one it is, then the server waits.
        let n = read_request(ws).unwrap();
        raw(ws, &json!({"push": n.message}).to_string());
        answer(ws, n.id, &n.message);
        ws.flush().unwrap();
        drain_until_closed(ws);
    });
    let mut ev = EventLoop::new().unwrap();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let mut conns = Vec::new();
    for name in ["first", "second"] {
        let conn = ev.connect(&server.url(), without_keepalive()).unwrap();
        let s = seen.clone();
        ev.set_message_handler(conn, move |_, m| {
            assert_eq!(m.reason(), UnmatchedReason::NoId);
            s.borrow_mut().push((name, m.as_text().unwrap().to_owned()));
        })
        .unwrap();
        let outcomes = Outcomes::new(1);
        ev.submit(conn, name, outcomes.callback(0)).unwrap();
        turn_until(&mut ev, |_| {
            outcomes.all_completed() && seen.borrow().len() == conns.len() + 1
        });
        close_and_wait(&mut ev, conn);
        turn_until(&mut ev, |ev| ev.connections() == 0);
        conns.push(conn);
    }
    assert_eq!(conns[0].to_string(), "connection 0");
    assert_eq!(conns[1].to_string(), "connection 0.1");
    assert_eq!(
        *seen.borrow(),
        [
            ("first", r#"{"push":"first"}"#.to_owned()),
            ("second", r#"{"push":"second"}"#.to_owned())
        ],
        "each push reached its own connection's handler, and only that one"
    );
    server.join();
}
