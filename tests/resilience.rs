//! Connections that must survive the real world: dead peers found by keepalive, servers that
//! restart or flap, reconnect backoff, and the queue of calls that waits for the connection.
//! Every test asserts each call completed exactly once, with the error it should have.

mod support;

use std::cell::RefCell;
use std::io::Read;
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

/// Keepalive settings short enough for a test, with outcomes that do not depend on them.
fn quick_keepalive() -> ConnectionConfig {
    ConnectionConfig {
        ping_interval: Some(Duration::from_millis(30)),
        pong_timeout: Duration::from_millis(60),
        ..ConnectionConfig::default()
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

    fn delays(&self) -> Vec<(u32, Duration)> {
        let changes = self.0.borrow();
        changes
            .iter()
            .filter_map(|c| match c {
                StateChange::Reconnecting { attempt, delay } => Some((*attempt, *delay)),
                _ => None,
            })
            .collect()
    }
}

fn a_half_open_peer_is_found_by_keepalive_and_every_call_fails_once(transport: Transport) {
    bounded(|| {
        let (done_tx, done_rx) = mpsc::channel::<()>();
        // Handshake, then nothing: never reads, so pings go unanswered (a peer whose host died).
        let server = Server::start_with(transport, move |_ws| {
            let _ = done_rx.recv();
        });
        let (mut ev, conn) = connected(&server, quick_keepalive());
        let changes = Changes::record(&mut ev, conn);
        let outcomes = Outcomes::new(10);
        for i in 0..10 {
            ev.submit_with(conn, i, timeout(60_000), outcomes.callback(i))
                .unwrap();
        }
        turn_until(&mut ev, |_| outcomes.all_completed());
        outcomes.assert_exactly_once();
        for i in 0..10 {
            assert_eq!(outcomes.error(i), "Disconnected(KeepaliveTimeout)");
        }
        assert_eq!(
            ev.state(conn),
            Some(ConnState::Disconnected(DisconnectReason::KeepaliveTimeout))
        );
        turn_until(&mut ev, |_| changes.count(&StateChange::Closed) == 1);
        assert_eq!(
            changes.all(),
            [
                StateChange::Disconnected(DisconnectReason::KeepaliveTimeout),
                StateChange::Closed
            ]
        );
        assert!(!ev.has_pending());
        assert_serves_another_connection_over(&mut ev, transport);
        done_tx.send(()).unwrap();
        server.join();
    });
}

over_ws_and_wss!(a_half_open_peer_is_found_by_keepalive_and_every_call_fails_once);

fn a_dead_peer_is_found_while_the_client_keeps_sending(transport: Transport) {
    bounded(|| {
        let (done_tx, done_rx) = mpsc::channel::<()>();
        // Reads and discards every byte below the WebSocket layer: the client's writes never back
        // up, yet nothing ever comes back — not an answer, not a pong.
        let server = Server::start_with(transport, move |ws| {
            let tcp = ws.get_mut();
            tcp.set_read_timeout(Some(Duration::from_millis(10)))
                .unwrap();
            let mut sink = [0u8; 65_536];
            while done_rx.try_recv().is_err() {
                if let Ok(0) = tcp.read(&mut sink) {
                    return;
                }
            }
        });
        let (mut ev, conn) = connected(&server, quick_keepalive());
        let outcomes = Outcomes::new(100_000);
        let mut submitted = 0;
        // One call per turn, every turn, until the connection is declared dead: writing is not
        // hearing, so the busy client must still notice.
        turn_until(&mut ev, |ev| {
            if ev.state(conn) == Some(ConnState::Open) {
                ev.submit_with(
                    conn,
                    submitted,
                    timeout(60_000),
                    outcomes.callback(submitted),
                )
                .unwrap();
                submitted += 1;
                false
            } else {
                true
            }
        });
        turn_until(&mut ev, |_| outcomes.completed() == submitted);
        assert!(submitted > 1, "the client kept sending ({submitted} calls)");
        for i in 0..submitted {
            assert_eq!(outcomes.error(i), "Disconnected(KeepaliveTimeout)");
        }
        assert_serves_another_connection_over(&mut ev, transport);
        let _ = done_tx.send(()); // the server may have left already, on our close
        server.join();
    });
}

over_ws_and_wss!(a_dead_peer_is_found_while_the_client_keeps_sending);

#[test]
fn a_live_idle_peer_is_pinged_and_the_connection_stays_open() {
    bounded(|| {
        let (pinged_tx, pinged_rx) = mpsc::channel::<()>();
        let server = Server::start(move |ws| {
            // tungstenite's server answers... nothing here: it is the client that pings. Count them.
            let mut pings = 0;
            while let Ok(message) = ws.read() {
                if let Message::Ping(_) = message {
                    pings += 1;
                    let _ = ws.flush(); // the pong
                    if pings == 5 {
                        pinged_tx.send(()).unwrap();
                    }
                }
            }
        });
        // Pings every 30 ms, but a generous pong timeout: a loaded machine may starve the
        // server's thread for a while, and this test is about a live peer staying connected
        // (the timing of death is the core's, tested on fake ticks in core::keepalive).
        let config = ConnectionConfig {
            pong_timeout: Duration::from_secs(10),
            ..quick_keepalive()
        };
        let (mut ev, conn) = connected(&server, config);
        turn_until(&mut ev, |_| pinged_rx.try_recv().is_ok());
        // Five pings sent and answered, and still open.
        assert_eq!(ev.state(conn), Some(ConnState::Open));
        let outcomes = Outcomes::new(1);
        ev.submit(conn, 1, outcomes.callback(0)).unwrap();
        ev.close(conn).unwrap();
        turn_until(&mut ev, |_| outcomes.all_completed());
        assert_eq!(outcomes.error(0), "Closed");
        server.join();
    });
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

#[test]
fn a_server_that_flaps_fifty_times_is_recovered_with_growing_capped_jittered_delays() {
    bounded(|| {
        const FLAPS: usize = 50;
        // Each connection answers one call, then drops.
        let server = Server::start_many(FLAPS, |ws, _| {
            if let Some(req) = read_request(ws) {
                answer(ws, req.id, &req.message);
                let _ = ws.flush();
            }
        });
        let config = ConnectionConfig {
            reconnect: Some(quick_reconnect()),
            ..ConnectionConfig::default()
        };
        let mut ev = EventLoop::new().unwrap();
        let conn = ev.connect(&server.url(), config).unwrap();
        let outcomes = Outcomes::new(FLAPS);
        let changes = Changes::default();
        let log = changes.0.clone();
        let opened = Rc::new(RefCell::new(0));
        let opens = opened.clone();
        let record = outcomes.clone();
        // On every (re)open, one call: the loop itself drives the whole run.
        ev.set_state_handler(conn, move |ctx, conn, change| {
            if change == StateChange::Open {
                let n = *opens.borrow();
                *opens.borrow_mut() += 1;
                if n < FLAPS {
                    ctx.submit(conn, n, record.callback(n)).unwrap();
                }
            }
            log.borrow_mut().push(change);
        })
        .unwrap();
        turn_until(&mut ev, |_| outcomes.all_completed());
        outcomes.assert_exactly_once();
        for i in 0..FLAPS {
            assert_eq!(outcomes.get(i), Ok(i.to_string()));
        }
        server.join();
        // The listener is gone: attempts now fail, and keep backing off at the cap.
        turn_until(&mut ev, |_| changes.delays().len() >= FLAPS + 5);
        ev.close(conn).unwrap();
        turn_until(&mut ev, |_| changes.count(&StateChange::Closed) == 1);
        assert_eq!(changes.all().last(), Some(&StateChange::Closed));

        let delays = changes.delays();
        let cap = Duration::from_millis(16);
        for (i, &(attempt, delay)) in delays.iter().enumerate() {
            // Never reset (reset_after is an hour): attempts count up across the flaps.
            assert_eq!(attempt as usize, i + 1);
            let ceiling = (Duration::from_millis(1) * 2u32.pow((attempt - 1).min(10))).min(cap);
            assert!(
                delay <= ceiling && delay >= ceiling / 2,
                "attempt {attempt}: {delay:?}"
            );
        }
        let capped: Vec<_> = delays[10..].iter().map(|d| d.1).collect();
        assert!(capped.iter().all(|d| *d >= cap / 2));
        let distinct: std::collections::BTreeSet<_> = capped.iter().collect();
        assert!(
            distinct.len() > capped.len() / 2,
            "jitter spreads the delays: {capped:?}"
        );
        assert_eq!(*opened.borrow(), FLAPS);
        assert!(!ev.has_pending());
        assert_serves_another_connection(&mut ev);
    });
}

#[test]
fn a_connection_that_stayed_up_long_enough_starts_its_backoff_over() {
    bounded(|| {
        const FLAPS: usize = 5;
        let server = Server::start_many(FLAPS, |ws, _| {
            if let Some(req) = read_request(ws) {
                answer(ws, req.id, &req.message);
                let _ = ws.flush();
            }
        });
        let config = ConnectionConfig {
            // Every connection that opened counts as stable: each loss starts from attempt 1.
            reconnect: Some(ReconnectPolicy {
                reset_after: Duration::ZERO,
                ..quick_reconnect()
            }),
            ..ConnectionConfig::default()
        };
        let mut ev = EventLoop::new().unwrap();
        let conn = ev.connect(&server.url(), config).unwrap();
        let outcomes = Outcomes::new(FLAPS);
        let changes = Changes::default();
        let log = changes.0.clone();
        let record = outcomes.clone();
        let mut opens = 0;
        ev.set_state_handler(conn, move |ctx, conn, change| {
            if change == StateChange::Open && opens < FLAPS {
                ctx.submit(conn, opens, record.callback(opens)).unwrap();
                opens += 1;
            }
            log.borrow_mut().push(change);
        })
        .unwrap();
        turn_until(&mut ev, |_| outcomes.all_completed());
        outcomes.assert_exactly_once();
        turn_until(&mut ev, |_| changes.delays().len() >= FLAPS);
        let attempts: Vec<u32> = changes.delays()[..FLAPS].iter().map(|d| d.0).collect();
        assert_eq!(attempts, [1; FLAPS]);
        ev.close(conn).unwrap();
        server.join();
        assert_serves_another_connection(&mut ev);
    });
}

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
fn calls_queued_while_down_wait_within_their_deadlines_in_a_bounded_queue() {
    bounded(|| {
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let first = Server::start(move |_ws| {
            go_rx.recv().unwrap(); // then drops the connection
        });
        let addr = first.addr;
        let config = ConnectionConfig {
            max_in_flight: 10,
            max_write_buffer: 4_096,
            reconnect: Some(ReconnectPolicy {
                initial_delay: Duration::from_millis(200),
                ..quick_reconnect()
            }),
            ..ConnectionConfig::default()
        };
        let (mut ev, conn) = connected(&first, config);
        go_tx.send(()).unwrap();
        first.join();
        turn_until(&mut ev, |ev| {
            ev.state(conn) == Some(ConnState::Reconnecting)
        });
        let outcomes = Outcomes::new(4);
        // Waits, and times out while waiting: never sent.
        ev.submit_with(conn, "short", timeout(1), outcomes.callback(0))
            .unwrap();
        // Waits for the server to come back.
        ev.submit(conn, "long", outcomes.callback(1)).unwrap();
        // The queue is bounded in bytes...
        assert!(matches!(
            ev.submit(conn, "z".repeat(4_060), |_, _| {}),
            Err(Error::Busy)
        ));
        // ... and in calls.
        for i in 2..4 {
            ev.submit(conn, i, outcomes.callback(i)).unwrap();
        }
        let extra = Outcomes::new(6);
        for i in 0..6 {
            ev.submit(conn, i, extra.callback(i)).unwrap();
        }
        assert!(matches!(ev.submit(conn, 99, |_, _| {}), Err(Error::Busy)));
        turn_until(&mut ev, |_| outcomes.completed() == 1);
        assert_eq!(outcomes.error(0), "Timeout");
        let second = Server::start_at(addr, echo);
        turn_until(&mut ev, |_| {
            outcomes.all_completed() && extra.all_completed()
        });
        outcomes.assert_exactly_once();
        extra.assert_exactly_once();
        assert_eq!(outcomes.get(1), Ok(r#""long""#.to_owned()));
        assert_eq!(outcomes.get(3), Ok("3".to_owned()));
        ev.close(conn).unwrap();
        turn_until(&mut ev, |ev| ev.state(conn) == Some(ConnState::Closed));
        second.join();
    });
}

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

#[test]
fn a_peer_that_never_answers_the_close_is_dropped_at_the_close_timeout() {
    bounded(|| {
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let server = Server::start(move |_ws| {
            let _ = done_rx.recv(); // never reads: the close frame is never answered
        });
        let config = ConnectionConfig {
            close_timeout: Duration::from_millis(50),
            ..ConnectionConfig::default()
        };
        let (mut ev, conn) = connected(&server, config);
        let changes = Changes::record(&mut ev, conn);
        let outcomes = Outcomes::new(1);
        ev.submit(conn, 1, outcomes.callback(0)).unwrap();
        ev.close(conn).unwrap();
        assert_eq!(ev.state(conn), Some(ConnState::Closing));
        turn_until(&mut ev, |ev| ev.state(conn) == Some(ConnState::Closed));
        assert_eq!(outcomes.error(0), "Closed");
        assert_eq!(changes.all(), [StateChange::Closed]);
        assert!(matches!(ev.submit(conn, 2, |_, _| {}), Err(Error::Closed)));
        assert_serves_another_connection(&mut ev);
        done_tx.send(()).unwrap();
        server.join();
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
