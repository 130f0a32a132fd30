//! Connections that must survive the real world, over real sockets: servers that restart or
//! close, reconnects that run out, the in-flight capacity after a loss, the pong to a server's
//! ping. Every test asserts each call completed exactly once, with the error it should have.
//!
//! What depends on timing (keepalive, backoff delays, the close and connect timeouts, the
//! queue while down) is tested tick-exact in the simulator (`src/core/sim/scenarios.rs`).

mod support;

use std::cell::RefCell;
use std::net::TcpListener;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use rpcloop::{
    CallOptions, ConnId, ConnState, ConnectionConfig, DisconnectReason, Error, EventLoop,
    ReconnectPolicy, StateChange,
};
use serde_json::json;
use support::memory::{PeakAlloc, bounded};
use support::*;
use tungstenite::Message;

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

fn timeout(ms: u64) -> CallOptions {
    CallOptions {
        timeout: Some(Duration::from_millis(ms)),
    }
}

/// Reconnects quickly, and never resets its backoff during a test.
fn quick_reconnect() -> ReconnectPolicy {
    ReconnectPolicy {
        initial_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(16),
        multiplier: 2.0,
        jitter: 0.5,
        max_attempts: None,
        reset_after: Duration::from_secs(3600),
    }
}

/// Every state change of one connection, in order.
#[derive(Clone, Default)]
struct Changes(Rc<RefCell<Vec<StateChange>>>);

impl Changes {
    fn record(ev: &mut EventLoop, conn: ConnId) -> Self {
        let changes = Changes::default();
        let log = changes.0.clone();
        ev.set_state_handler(conn, move |_, _, change| log.borrow_mut().push(change))
            .unwrap();
        changes
    }

    fn all(&self) -> Vec<StateChange> {
        self.0.borrow().clone()
    }

    fn count(&self, wanted: &StateChange) -> usize {
        self.0.borrow().iter().filter(|c| *c == wanted).count()
    }
}

fn the_pong_to_a_server_ping_leaves_even_when_the_socket_was_full(transport: Transport) {
    bounded(|| {
        let (ping_tx, ping_rx) = mpsc::channel::<()>();
        let (pong_tx, pong_rx) = mpsc::channel::<()>();
        let server = Server::start_with(transport, move |ws| {
            // Not reading yet: the client's writes back up until its socket is full.
            ping_rx.recv().unwrap();
            ws.write(Message::Ping("last".into())).unwrap();
            ws.flush().unwrap();
            // Now read: the client only reads from here on, so only a flush on WRITABLE can get
            // the pong out from behind its backlog.
            while let Ok(message) = ws.read() {
                if message == Message::Pong("last".into()) {
                    pong_tx.send(()).unwrap();
                    break;
                }
            }
            drain_until_closed(ws);
        });
        let config = ConnectionConfig {
            max_write_buffer: 1 << 20,
            ..ConnectionConfig::default()
        };
        let (mut ev, conn) = connected(&server, config);
        let big = "x".repeat(64 << 10);
        let mut busy = false;
        for i in 0..10_000 {
            match ev.submit_with(conn, &big, timeout(60_000), |_, _| {}) {
                Ok(_) => ev.flush(),
                Err(Error::Busy) => {
                    busy = true;
                    break;
                }
                Err(e) => panic!("call {i}: {e}"),
            }
        }
        assert!(busy, "the socket never filled up");
        ping_tx.send(()).unwrap();
        turn_until(&mut ev, |_| pong_rx.try_recv().is_ok());
        assert_eq!(ev.state(conn), Some(ConnState::Open));
        ev.close(conn).unwrap();
        turn_until(&mut ev, |ev| !ev.has_pending());
        server.join();
    });
}

over_ws_and_wss!(the_pong_to_a_server_ping_leaves_even_when_the_socket_was_full);

fn a_restarted_server_gets_the_connection_back_and_calls_resume(transport: Transport) {
    bounded(|| {
        let (dropped_tx, dropped_rx) = mpsc::channel::<()>();
        let first = Server::start_with(transport, move |ws| {
            let req = read_request(ws).unwrap();
            answer(ws, req.id, &req.message);
            ws.flush().unwrap();
            // The second request is read, never answered: the server goes down with it.
            read_request(ws).unwrap();
            dropped_tx.send(()).unwrap();
        });
        let addr = first.addr;
        let config = ConnectionConfig {
            reconnect: Some(quick_reconnect()),
            ..ConnectionConfig::default()
        };
        let mut ev = EventLoop::new().unwrap();
        let conn = ev.connect(&first.url(), first.client(config)).unwrap();
        let changes = Changes::record(&mut ev, conn);
        let outcomes = Outcomes::new(4);
        ev.submit(conn, "before", outcomes.callback(0)).unwrap();
        turn_until(&mut ev, |_| outcomes.completed() == 1);
        ev.submit(conn, "in flight", outcomes.callback(1)).unwrap();
        ev.flush();
        dropped_rx.recv().unwrap();
        first.join();
        turn_until(&mut ev, |_| outcomes.completed() == 2);
        // Written, then lost: the server may have acted on it, so it is failed, never re-sent.
        assert_eq!(outcomes.error(1), "Disconnected(Reset)");
        // Submitted while the server is down: waits for the next connection.
        turn_until(&mut ev, |ev| ev.state(conn) != Some(ConnState::Open));
        ev.submit(conn, "while down", outcomes.callback(2)).unwrap();
        let second = Server::start_at_with(transport, addr, echo);
        turn_until(&mut ev, |_| outcomes.completed() == 3);
        ev.submit(conn, "after", outcomes.callback(3)).unwrap();
        turn_until(&mut ev, |_| outcomes.all_completed());
        outcomes.assert_exactly_once();
        assert_eq!(outcomes.get(0), Ok(r#""before""#.to_owned()));
        assert_eq!(outcomes.get(2), Ok(r#""while down""#.to_owned()));
        assert_eq!(outcomes.get(3), Ok(r#""after""#.to_owned()));
        assert_eq!(ev.state(conn), Some(ConnState::Open));
        assert_eq!(ev.stats(conn).unwrap().reconnects, 1);
        let all = changes.all();
        assert_eq!(
            all[..4],
            [
                StateChange::Connecting,
                StateChange::Open,
                StateChange::Disconnected(DisconnectReason::Reset),
                all[3].clone(),
            ]
        );
        assert!(matches!(
            all[3],
            StateChange::Reconnecting { attempt: 1, .. }
        ));
        assert_eq!(all.last(), Some(&StateChange::Open));
        assert_eq!(changes.count(&StateChange::Open), 2);
        ev.close(conn).unwrap();
        turn_until(&mut ev, |_| changes.count(&StateChange::Closed) == 1);
        second.join();
    });
}

over_ws_and_wss!(a_restarted_server_gets_the_connection_back_and_calls_resume);

fn after_timeouts_and_a_reconnect_the_full_in_flight_capacity_is_back(transport: Transport) {
    bounded(|| {
        const LIMIT: usize = 100;
        let (drop_tx, drop_rx) = mpsc::channel::<()>();
        let first = Server::start_with(transport, move |ws| {
            // Reads, never answers; goes down when told.
            ws.get_mut()
                .set_read_timeout(Some(Duration::from_millis(10)))
                .unwrap();
            while drop_rx.try_recv().is_err() {
                let _ = ws.read();
            }
        });
        let addr = first.addr;
        let config = ConnectionConfig {
            max_in_flight: LIMIT,
            reconnect: Some(quick_reconnect()),
            ..ConnectionConfig::default()
        };
        let (mut ev, conn) = connected(&first, config);
        let timed_out = Outcomes::new(LIMIT);
        for i in 0..LIMIT {
            ev.submit_with(conn, i, timeout(20), timed_out.callback(i))
                .unwrap();
        }
        assert!(matches!(ev.submit(conn, 0, |_, _| {}), Err(Error::Busy)));
        turn_until(&mut ev, |_| timed_out.all_completed());
        timed_out.assert_exactly_once();
        assert!((0..LIMIT).all(|i| timed_out.error(i) == "Timeout"));

        let lost = Outcomes::new(LIMIT);
        for i in 0..LIMIT {
            ev.submit(conn, i, lost.callback(i)).unwrap();
        }
        ev.flush();
        drop_tx.send(()).unwrap();
        first.join();
        turn_until(&mut ev, |_| lost.all_completed());
        lost.assert_exactly_once();
        assert!((0..LIMIT).all(|i| lost.error(i) == "Disconnected(Reset)"));

        let second = Server::start_at_with(transport, addr, shuffling_echo);
        turn_until(&mut ev, |ev| ev.state(conn) == Some(ConnState::Open));
        let answered = Outcomes::new(LIMIT);
        for i in 0..LIMIT {
            ev.submit(conn, i, answered.callback(i)).unwrap();
        }
        assert!(matches!(ev.submit(conn, 0, |_, _| {}), Err(Error::Busy)));
        turn_until(&mut ev, |_| answered.all_completed());
        answered.assert_exactly_once();
        assert!((0..LIMIT).all(|i| answered.get(i) == Ok(i.to_string())));
        assert_eq!(ev.pending_calls(), 0);
        ev.close(conn).unwrap();
        turn_until(&mut ev, |ev| ev.state(conn) == Some(ConnState::Closed));
        second.join();
    });
}

over_ws_and_wss!(after_timeouts_and_a_reconnect_the_full_in_flight_capacity_is_back);

#[test]
fn out_of_attempts_the_connection_ends_and_its_waiting_calls_fail_unsent() {
    bounded(|| {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let config = ConnectionConfig {
            reconnect: Some(ReconnectPolicy {
                max_attempts: Some(3),
                ..quick_reconnect()
            }),
            ..ConnectionConfig::default()
        };
        let mut ev = EventLoop::new().unwrap();
        let conn = ev
            .connect(&format!("ws://127.0.0.1:{port}/"), config)
            .unwrap();
        let changes = Changes::record(&mut ev, conn);
        let outcomes = Outcomes::new(2);
        ev.submit(conn, 0, outcomes.callback(0)).unwrap();
        ev.submit(conn, 1, outcomes.callback(1)).unwrap();
        turn_until(&mut ev, |_| outcomes.all_completed());
        outcomes.assert_exactly_once();
        assert!(
            outcomes.error(1).starts_with("NotSent(ConnectFailed"),
            "{}",
            outcomes.error(1)
        );
        turn_until(&mut ev, |_| changes.count(&StateChange::Closed) == 1);
        let all = changes.all();
        let kinds: Vec<&str> = all
            .iter()
            .map(|c| match c {
                StateChange::Connecting => "connecting",
                StateChange::Disconnected(DisconnectReason::ConnectFailed { .. }) => "refused",
                StateChange::Reconnecting { .. } => "reconnecting",
                StateChange::Closed => "closed",
                other => panic!("{other:?}"),
            })
            .collect();
        let mut expected = Vec::new();
        for _ in 0..3 {
            expected.extend(["connecting", "refused", "reconnecting"]);
        }
        expected.extend(["connecting", "refused", "closed"]);
        assert_eq!(kinds, expected);
        assert!(matches!(
            ev.state(conn),
            Some(ConnState::Disconnected(
                DisconnectReason::ConnectFailed { .. }
            ))
        ));
        assert!(matches!(
            ev.submit(conn, 2, |_, _| {}),
            Err(Error::NotSent(DisconnectReason::ConnectFailed { .. }))
        ));
        assert_serves_another_connection(&mut ev);
    });
}

fn a_server_closing_with_a_close_frame_is_reconnected_to(transport: Transport) {
    bounded(|| {
        let server = Server::start_many_with(transport, 2, |ws, n| {
            let req = read_request(ws).unwrap();
            answer(ws, req.id, &json!(n));
            ws.flush().unwrap();
            if n == 0 {
                ws.close(None).unwrap();
            }
            drain_until_closed(ws);
        });
        let config = ConnectionConfig {
            reconnect: Some(quick_reconnect()),
            ..ConnectionConfig::default()
        };
        let (mut ev, conn) = connected(&server, config);
        let changes = Changes::record(&mut ev, conn);
        let outcomes = Outcomes::new(2);
        ev.submit(conn, "a", outcomes.callback(0)).unwrap();
        turn_until(&mut ev, |_| changes.count(&StateChange::Open) == 1);
        ev.submit(conn, "b", outcomes.callback(1)).unwrap();
        turn_until(&mut ev, |_| outcomes.all_completed());
        outcomes.assert_exactly_once();
        assert_eq!(outcomes.get(0), Ok("0".to_owned()));
        assert_eq!(outcomes.get(1), Ok("1".to_owned()));
        assert!(matches!(
            changes.all()[0],
            StateChange::Disconnected(DisconnectReason::PeerClosed { code: 1005, .. })
        ));
        ev.close(conn).unwrap();
        turn_until(&mut ev, |ev| ev.state(conn) == Some(ConnState::Closed));
        server.join();
    });
}

over_ws_and_wss!(a_server_closing_with_a_close_frame_is_reconnected_to);
