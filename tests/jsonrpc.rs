//! JSON-RPC 2.0 over a real loopback WebSocket: results and error objects, notifications,
//! batches, string and number ids, subscriptions (on the loop and from other threads), and the
//! malformed messages the specification rules out. Every test asserts that each call (and each
//! subscription) completed exactly once, the counters that tell what happened, bounded memory
//! on the client's thread, and that the loop still serves another connection afterwards.

mod support;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use rpcloop::{ConnId, ConnectionConfig, Error, EventLoop, JsonRpc2, Request, UnmatchedReason};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use support::jsonrpc::*;
use support::memory::{PeakAlloc, bounded};
use support::*;

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn rpc_config(codec: JsonRpc2) -> ConnectionConfig {
    ConnectionConfig {
        codec: Arc::new(codec),
        ..ConnectionConfig::default()
    }
}

/// A loop connected (open) to `server` with the JSON-RPC 2.0 codec (number ids).
fn rpc_connected(server: &Server) -> (EventLoop, ConnId) {
    connected(server, rpc_config(JsonRpc2::default()))
}

fn req(method: &str, params: Value) -> Request<'static, Value> {
    Request::new(method.to_owned(), params)
}

/// What the error of a failed call reads like (`Debug`), to compare with an [`Outcomes`] entry.
fn remote(code: i64, message: &str, data: Option<&str>) -> String {
    let data = data.map(|d| RawValue::from_string(d.to_owned()).unwrap());
    format!(
        "{:?}",
        Error::Remote {
            code,
            message: message.to_owned(),
            data
        }
    )
}

/// Every message the connection's message handler received: (reason, text).
#[derive(Clone, Default)]
struct Pushes(Rc<RefCell<Vec<(UnmatchedReason, String)>>>);

impl Pushes {
    fn record(ev: &mut EventLoop, conn: ConnId) -> Self {
        let pushes = Pushes::default();
        let log = pushes.0.clone();
        ev.set_message_handler(conn, move |_, m| {
            log.borrow_mut()
                .push((m.reason(), m.as_text().unwrap_or_default().to_owned()));
        })
        .unwrap();
        pushes
    }

    fn all(&self) -> Vec<(UnmatchedReason, String)> {
        self.0.borrow().clone()
    }

    fn len(&self) -> usize {
        self.0.borrow().len()
    }
}

/// A flag that a notification handler raises (for "the server has sent everything before it").
fn flag_on(ev: &mut EventLoop, conn: ConnId, method: &str) -> Rc<Cell<u32>> {
    let flag = Rc::new(Cell::new(0));
    let raised = flag.clone();
    ev.on_notification(conn, method, move |_, _| raised.set(raised.get() + 1))
        .unwrap();
    flag
}

// ---------------------------------------------------------------------------------------------
// Results and error objects
// ---------------------------------------------------------------------------------------------

#[test]
fn results_complete_their_calls_and_requests_carry_jsonrpc_and_number_ids() {
    bounded(|| {
        let (tx, mut seen) = Seen::new();
        let server = Server::start(move |ws| dispatch(ws, "s", &tx));
        let (mut ev, conn) = rpc_connected(&server);
        let outcomes = Outcomes::new(4);
        let ids = [
            ev.submit(
                conn,
                req("echo", json!([1, "two", {"three": 3}])),
                outcomes.callback(0),
            ),
            ev.submit(conn, req("add", json!([40, 2])), outcomes.callback(1)),
            ev.submit(
                conn,
                Request::<()>::without_params("echo"),
                outcomes.callback(2),
            ),
            ev.submit(
                conn,
                req("echo", json!({"a": [null, true]})),
                outcomes.callback(3),
            ),
        ]
        .map(Result::unwrap);
        turn_until(&mut ev, |_| outcomes.all_completed());
        settle(&mut ev);
        outcomes.assert_exactly_once();
        assert_eq!(outcomes.get(0), Ok(r#"[1,"two",{"three":3}]"#.to_owned()));
        assert_eq!(outcomes.get(1), Ok("42".to_owned()));
        assert_eq!(outcomes.get(2), Ok("null".to_owned()));
        assert_eq!(outcomes.get(3), Ok(r#"{"a":[null,true]}"#.to_owned()));

        // On the wire: `"jsonrpc":"2.0"`, the call's id as a plain number, method and params.
        let calls = seen.poll().to_vec();
        assert_eq!(calls.len(), 4);
        for (call, id) in calls.iter().zip(&ids) {
            assert_eq!(call.jsonrpc, json!("2.0"), "{}", call.text);
            assert_eq!(call.id.as_deref(), Some(id.to_string().as_str()));
        }
        assert_eq!(
            calls[0].text,
            format!(
                r#"{{"jsonrpc":"2.0","id":{},"method":"echo","params":[1,"two",{{"three":3}}]}}"#,
                ids[0]
            )
        );
        assert_eq!(calls[1].method, "add");
        assert_eq!(calls[2].params, Value::Null, "no params member");
        assert!(!calls[2].text.contains("params"), "{}", calls[2].text);

        let stats = ev.stats(conn).unwrap();
        assert_eq!((stats.requests_sent, stats.answers), (4, 4));
        assert_eq!(stats.unmatched(), 0);
        assert!(!ev.has_pending());
        close_and_wait(&mut ev, conn);
        server.join();
        assert_serves_another_connection(&mut ev);
    });
}

#[test]
fn error_objects_fail_their_calls_with_remote_and_data_as_raw_json() {
    bounded(|| {
        // `data` exactly as the server wrote it: spaces, 2.50 and an escaped quote included.
        const DATA: &str = r#"{"why": [1, 2.50, "x\"y"], "nested": {"a": null}}"#;
        let server = Server::start(|ws| {
            let calls = read_calls(ws, 4);
            let frame = format!(
                r#"{{"jsonrpc":"2.0","id":{},"error":{{"code":-32000,"message":"failed","data":{DATA}}}}}"#,
                calls[0].raw_id()
            );
            raw(ws, &frame);
            reply_error(ws, &calls[1], -32601, r#"no "such" method"#, None);
            reply_error(ws, &calls[2], 7, "null data", Some(&Value::Null));
            reply(ws, &calls[3], &json!(7));
            ws.flush().unwrap();
            drain_until_closed(ws);
        });
        let (mut ev, conn) = rpc_connected(&server);
        let outcomes = Outcomes::new(4);
        // Structured view of the errors, besides their Debug text.
        let errors = Rc::new(RefCell::new(Vec::new()));
        for i in 0..4 {
            let record = outcomes.callback(i);
            let errors = errors.clone();
            ev.submit(conn, req("m", json!([i])), move |ctx, result| {
                if let Err(Error::Remote {
                    code,
                    message,
                    data,
                }) = &result
                {
                    let data = data.as_ref().map(|d| d.get().to_owned());
                    errors.borrow_mut().push((i, *code, message.clone(), data));
                }
                record(ctx, result);
            })
            .unwrap();
        }
        turn_until(&mut ev, |_| outcomes.all_completed());
        settle(&mut ev);
        outcomes.assert_exactly_once();
        assert_eq!(
            *errors.borrow(),
            [
                (0, -32000, "failed".to_owned(), Some(DATA.to_owned())),
                (1, -32601, r#"no "such" method"#.to_owned(), None),
                // A `data` that is present but null is kept as the JSON `null`.
                (2, 7, "null data".to_owned(), Some("null".to_owned())),
            ]
        );
        assert_eq!(outcomes.error(0), remote(-32000, "failed", Some(DATA)));
        assert_eq!(outcomes.get(3), Ok("7".to_owned()));
        let stats = ev.stats(conn).unwrap();
        assert_eq!(stats.answers, 4, "an error answer completes its call");
        assert_eq!(stats.unmatched(), 0);
        close_and_wait(&mut ev, conn);
        server.join();
        assert_serves_another_connection(&mut ev);
    });
}

// ---------------------------------------------------------------------------------------------
// Notifications
// ---------------------------------------------------------------------------------------------

#[test]
fn notifications_interleaved_with_answers_reach_their_handlers_in_order() {
    bounded(|| {
        const N: usize = 50;
        let server = Server::start(|ws| {
            let calls = read_calls(ws, N);
            // tick 0, answer 0, tick 1, answer 1, ... each pair in its own write.
            for (i, call) in calls.iter().enumerate() {
                notify(ws, "tick", &json!([i]));
                reply(ws, call, &json!(i));
                if i % 2 == 0 {
                    // and a method nobody handles, between them
                    notify(ws, "unhandled", &json!({"n": i}));
                }
                ws.flush().unwrap();
            }
            drain_until_closed(ws);
        });
        let (mut ev, conn) = rpc_connected(&server);
        let ticks = Rc::new(RefCell::new(Vec::new()));
        let log = ticks.clone();
        ev.on_notification(conn, "tick", move |_, n| {
            assert_eq!(n.method(), "tick");
            assert_eq!(n.subscription_key(), None);
            let [i]: [usize; 1] = n.params().unwrap();
            log.borrow_mut().push(i);
        })
        .unwrap();
        let tocks = flag_on(&mut ev, conn, "tock"); // never sent
        let pushes = Pushes::record(&mut ev, conn);
        let outcomes = Outcomes::new(N);
        for i in 0..N {
            ev.submit(conn, req("echo", json!([i])), outcomes.callback(i))
                .unwrap();
        }
        turn_until(&mut ev, |_| {
            outcomes.all_completed() && ticks.borrow().len() == N && pushes.len() == N / 2
        });
        settle(&mut ev);
        outcomes.assert_exactly_once();
        for i in 0..N {
            assert_eq!(outcomes.get(i), Ok(i.to_string()));
        }
        assert_eq!(*ticks.borrow(), (0..N).collect::<Vec<_>>());
        assert_eq!(tocks.get(), 0);
        // A method without a handler is a push.
        let expected: Vec<_> = (0..N)
            .step_by(2)
            .map(|i| {
                (
                    UnmatchedReason::NoId,
                    notification_frame("unhandled", &json!({"n": i})),
                )
            })
            .collect();
        assert_eq!(pushes.all(), expected);
        let stats = ev.stats(conn).unwrap();
        assert_eq!(stats.answers, N as u64);
        assert_eq!(stats.notifications, N as u64);
        assert_eq!(stats.no_id, (N / 2) as u64);
        assert_eq!(
            (
                stats.unknown_subscription,
                stats.malformed,
                stats.unknown_id
            ),
            (0, 0, 0)
        );
        close_and_wait(&mut ev, conn);
        server.join();
        assert_serves_another_connection(&mut ev);
    });
}
