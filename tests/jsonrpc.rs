//! JSON-RPC 2.0 over a real loopback WebSocket: results and error objects, notifications,
//! batches, string and number ids, subscriptions (on the loop and from other threads), and the
//! malformed messages the specification rules out. Every test asserts that each call (and each
//! subscription) completed exactly once, the counters that tell what happened, bounded memory
//! on the client's thread, and that the loop still serves another connection afterwards.

mod support;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use rpcloop::{
    CallOptions, ConnId, ConnState, ConnectionConfig, Context, DisconnectReason, Error, EventLoop,
    JsonRpc2, Overflow, QueueOptions, ReconnectPolicy, Request, Response, SubscribeOptions,
    SubscriptionEvent, SubscriptionId, UnmatchedReason,
};
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

// ---------------------------------------------------------------------------------------------
// Batches
// ---------------------------------------------------------------------------------------------

fn timeout(ms: u64) -> CallOptions {
    CallOptions {
        timeout: Some(Duration::from_millis(ms)),
    }
}

/// A normal call on `conn` still completes, with its own answer (an `echo` server method).
fn assert_call_still_works(ev: &mut EventLoop, conn: ConnId) {
    let outcomes = Outcomes::new(1);
    ev.submit(
        conn,
        req("echo", json!(["still", "here"])),
        outcomes.callback(0),
    )
    .unwrap();
    turn_until(ev, |_| outcomes.all_completed());
    settle(ev);
    outcomes.assert_exactly_once();
    assert_eq!(outcomes.get(0), Ok(r#"["still","here"]"#.to_owned()));
}

/// What a batch's callback received, each time it ran.
#[derive(Clone, Default)]
struct BatchRuns(Rc<RefCell<Vec<Vec<Outcome>>>>);

impl BatchRuns {
    fn callback(&self) -> impl FnOnce(&mut Context, Vec<Result<Response, Error>>) + 'static {
        let runs = self.0.clone();
        move |_, results| {
            let results = results
                .into_iter()
                .map(|r| r.map(|r| r.text().to_owned()).map_err(|e| format!("{e:?}")))
                .collect();
            runs.borrow_mut().push(results);
        }
    }

    fn runs(&self) -> usize {
        self.0.borrow().len()
    }

    /// The results of the one run; panics unless the callback ran exactly once.
    fn results(&self) -> Vec<Outcome> {
        let runs = self.0.borrow();
        assert_eq!(runs.len(), 1, "the batch callback runs once: {runs:?}");
        runs[0].clone()
    }
}

/// `echo` calls with params `[0]`, `[1]`, ...
fn echo_batch(n: usize) -> Vec<Request<'static, Value>> {
    (0..n).map(|i| req("echo", json!([i]))).collect()
}

/// The results an echo batch of `n` gets when all goes well.
fn echoed(n: usize) -> Vec<Outcome> {
    (0..n).map(|i| Ok(format!("[{i}]"))).collect()
}

/// Reads one batch request, checks its shape against the ids `submit_batch` returned, and
/// hands it to the test.
fn read_checked_batch(ws: &mut Ws, n: usize) -> Vec<Call> {
    let batch = read_batch(ws).expect("a batch");
    assert_eq!(batch.len(), n, "{batch:?}");
    for call in &batch {
        assert_eq!(call.jsonrpc, json!("2.0"));
        assert!(
            call.raw_id().bytes().all(|b| b.is_ascii_digit()),
            "{call:?}"
        );
    }
    batch
}

/// The ids of a batch as the server saw them, to compare with what `submit_batch` returned.
fn ids_of(calls: &[Call]) -> Vec<String> {
    calls.iter().map(|c| c.raw_id().to_owned()).collect()
}

fn ids_text(ids: &[rpcloop::CallId]) -> Vec<String> {
    ids.iter().map(ToString::to_string).collect()
}

#[test]
fn a_batch_answered_in_order_gets_one_callback_with_results_in_request_order() {
    bounded(|| {
        let (tx, rx) = mpsc::channel();
        let server = Server::start(move |ws| {
            let batch = read_checked_batch(ws, 5);
            let answers: Vec<String> = batch
                .iter()
                .map(|c| result_frame(c.raw_id(), &c.params))
                .collect();
            send_batch(ws, &answers);
            ws.flush().unwrap();
            tx.send(batch).unwrap();
            rpc_echo(ws); // answers the next batch the same way
        });
        let (mut ev, conn) = rpc_connected(&server);
        let runs = BatchRuns::default();
        let ids = ev
            .submit_batch(conn, echo_batch(5), CallOptions::default(), runs.callback())
            .unwrap();
        turn_until(&mut ev, |_| runs.runs() > 0);
        settle(&mut ev);
        assert_eq!(runs.results(), echoed(5));
        let batch = rx.recv().unwrap();
        assert_eq!(
            ids_of(&batch),
            ids_text(&ids),
            "one id per request, in order"
        );
        let methods: Vec<_> = batch.iter().map(|c| c.method.as_str()).collect();
        assert_eq!(methods, ["echo"; 5]);
        assert_eq!(
            ev.stats(conn).unwrap().answers,
            5,
            "one message completed five calls, each counted"
        );
        // A second batch on the same connection: fresh ids, its own callback.
        let again = BatchRuns::default();
        let batch = vec![req("echo", json!(["x"])), req("echo", json!({"y": 1}))];
        ev.submit_batch(conn, batch, CallOptions::default(), again.callback())
            .unwrap();
        turn_until(&mut ev, |_| again.runs() > 0);
        settle(&mut ev);
        assert_eq!(
            again.results(),
            [Ok(r#"["x"]"#.to_owned()), Ok(r#"{"y":1}"#.to_owned())]
        );
        assert_eq!(runs.runs(), 1);
        let stats = ev.stats(conn).unwrap();
        assert_eq!((stats.requests_sent, stats.answers), (7, 7));
        assert_eq!(stats.unmatched(), 0);
        assert!(!ev.has_pending());
        close_and_wait(&mut ev, conn);
        server.join();
        assert_serves_another_connection(&mut ev);
    });
}

#[test]
fn a_batch_answered_out_of_order_still_gets_results_in_request_order() {
    bounded(|| {
        let server = Server::start(|ws| {
            let batch = read_checked_batch(ws, 8);
            let mut answers: Vec<String> = batch
                .iter()
                .map(|c| result_frame(c.raw_id(), &c.params))
                .collect();
            answers.reverse();
            answers.swap(1, 5);
            send_batch(ws, &answers);
            ws.flush().unwrap();
            drain_until_closed(ws);
        });
        let (mut ev, conn) = rpc_connected(&server);
        let runs = BatchRuns::default();
        ev.submit_batch(conn, echo_batch(8), CallOptions::default(), runs.callback())
            .unwrap();
        turn_until(&mut ev, |_| runs.runs() > 0);
        settle(&mut ev);
        assert_eq!(runs.results(), echoed(8));
        let stats = ev.stats(conn).unwrap();
        assert_eq!((stats.answers, stats.unmatched()), (8, 0));
        assert!(!ev.has_pending());
        close_and_wait(&mut ev, conn);
        server.join();
        assert_serves_another_connection(&mut ev);
    });
}

#[test]
fn a_partial_batch_answer_fails_only_the_missing_call_with_timeout_once() {
    bounded(|| {
        let (late_tx, late_rx) = mpsc::channel::<()>();
        let server = Server::start(move |ws| {
            let batch = read_checked_batch(ws, 4);
            // Element 2 is left out.
            let answers: Vec<String> = [3, 0, 1]
                .iter()
                .map(|&i| result_frame(batch[i].raw_id(), &batch[i].params))
                .collect();
            send_batch(ws, &answers);
            ws.flush().unwrap();
            // Once the batch is over, its missing answer arrives after all: too late.
            late_rx.recv().unwrap();
            reply(ws, &batch[2], &batch[2].params);
            notify(ws, "sent", &json!([]));
            ws.flush().unwrap();
            drain_until_closed(ws);
        });
        let (mut ev, conn) = rpc_connected(&server);
        let sent = flag_on(&mut ev, conn, "sent");
        let runs = BatchRuns::default();
        ev.submit_batch(conn, echo_batch(4), timeout(1_000), runs.callback())
            .unwrap();
        turn_until(&mut ev, |_| runs.runs() > 0);
        let mut expected = echoed(4);
        expected[2] = Err("Timeout".to_owned());
        assert_eq!(runs.results(), expected);
        assert_eq!(ev.stats(conn).unwrap().timeouts, 1);
        late_tx.send(()).unwrap();
        turn_until(&mut ev, |_| sent.get() == 1);
        settle(&mut ev);
        assert_eq!(runs.runs(), 1, "the late answer runs nothing");
        let stats = ev.stats(conn).unwrap();
        assert_eq!((stats.answers, stats.stale_id, stats.timeouts), (3, 1, 1));
        assert!(!ev.has_pending());
        close_and_wait(&mut ev, conn);
        server.join();
        assert_serves_another_connection(&mut ev);
    });
}

#[test]
fn a_batch_answer_split_over_several_frames_completes_with_the_last_one() {
    bounded(|| {
        let (last_tx, last_rx) = mpsc::channel::<()>();
        let server = Server::start(move |ws| {
            let batch = read_checked_batch(ws, 6);
            let el = |i: usize| result_frame(batch[i].raw_id(), &batch[i].params);
            // [3], then 0 as a plain object, then [5, 1] ...
            send_batch(ws, &[el(3)]);
            ws.flush().unwrap();
            raw(ws, &el(0));
            ws.flush().unwrap();
            send_batch(ws, &[el(5), el(1)]);
            ws.flush().unwrap();
            // ... and [2, 4] only when the client has checked it is still waiting.
            last_rx.recv().unwrap();
            send_batch(ws, &[el(2), el(4)]);
            ws.flush().unwrap();
            drain_until_closed(ws);
        });
        let (mut ev, conn) = rpc_connected(&server);
        let runs = BatchRuns::default();
        ev.submit_batch(conn, echo_batch(6), CallOptions::default(), runs.callback())
            .unwrap();
        turn_until(&mut ev, |ev| ev.stats(conn).unwrap().answers == 4);
        settle(&mut ev);
        assert_eq!(runs.runs(), 0, "two calls of the batch are still pending");
        assert_eq!(ev.pending_calls(), 2);
        last_tx.send(()).unwrap();
        turn_until(&mut ev, |_| runs.runs() > 0);
        settle(&mut ev);
        assert_eq!(runs.results(), echoed(6));
        let stats = ev.stats(conn).unwrap();
        assert_eq!((stats.answers, stats.unmatched()), (6, 0));
        assert!(!ev.has_pending());
        close_and_wait(&mut ev, conn);
        server.join();
        assert_serves_another_connection(&mut ev);
    });
}

#[test]
fn an_error_element_inside_a_batch_fails_only_its_own_call() {
    bounded(|| {
        let (tx, _seen) = Seen::new();
        let server = Server::start(move |ws| dispatch(ws, "s", &tx));
        let (mut ev, conn) = rpc_connected(&server);
        let runs = BatchRuns::default();
        let requests = vec![
            req("echo", json!(["a"])),
            req("fail", json!({"because": "asked"})),
            req("add", json!([1, 2, 3])),
            req("nope", json!([])),
        ];
        ev.submit_batch(conn, requests, CallOptions::default(), runs.callback())
            .unwrap();
        turn_until(&mut ev, |_| runs.runs() > 0);
        settle(&mut ev);
        assert_eq!(
            runs.results(),
            [
                Ok(r#"["a"]"#.to_owned()),
                Err(remote(-32000, "failed", Some(r#"{"because":"asked"}"#))),
                Ok("6".to_owned()),
                Err(remote(-32601, "Method not found", Some(r#""nope""#))),
            ]
        );
        let stats = ev.stats(conn).unwrap();
        assert_eq!((stats.answers, stats.unmatched()), (4, 0));
        assert!(!ev.has_pending());
        assert_call_still_works(&mut ev, conn);
        close_and_wait(&mut ev, conn);
        server.join();
        assert_serves_another_connection(&mut ev);
    });
}

// ---------------------------------------------------------------------------------------------
// Ids: numbers or strings, matched strictly
// ---------------------------------------------------------------------------------------------

#[test]
fn string_ids_are_sent_as_strings_and_only_a_string_echo_matches() {
    bounded(|| {
        let (tx, rx) = mpsc::channel();
        let server = Server::start(move |ws| {
            let calls = read_calls(ws, 2);
            tx.send(calls.clone()).unwrap();
            // Call 1 answered with its id as a number: not ours under string ids.
            raw(
                ws,
                &result_frame(&calls[1].id_number().to_string(), &json!("wrong")),
            );
            reply(ws, &calls[0], &json!("right"));
            ws.flush().unwrap();
            drain_until_closed(ws);
        });
        let (mut ev, conn) = connected(&server, rpc_config(JsonRpc2::with_string_ids()));
        let pushes = Pushes::record(&mut ev, conn);
        let outcomes = Outcomes::new(2);
        let ids = [
            ev.submit(conn, req("echo", json!([0])), outcomes.callback(0))
                .unwrap(),
            ev.submit_with(
                conn,
                req("echo", json!([1])),
                timeout(1_000),
                outcomes.callback(1),
            )
            .unwrap(),
        ];
        turn_until(&mut ev, |_| outcomes.all_completed());
        settle(&mut ev);
        outcomes.assert_exactly_once();
        assert_eq!(outcomes.get(0), Ok(r#""right""#.to_owned()));
        assert_eq!(outcomes.error(1), "Timeout");
        let calls = rx.recv().unwrap();
        for (call, id) in calls.iter().zip(&ids) {
            assert_eq!(call.raw_id(), format!("\"{id}\""), "{}", call.text);
            assert!(
                call.text
                    .starts_with(&format!(r#"{{"jsonrpc":"2.0","id":"{id}","#))
            );
        }
        assert_eq!(
            pushes.all(),
            [(
                UnmatchedReason::UnknownId,
                result_frame(&ids[1].to_string(), &json!("wrong"))
            )]
        );
        let stats = ev.stats(conn).unwrap();
        assert_eq!((stats.answers, stats.unknown_id, stats.timeouts), (1, 1, 1));
        assert!(!ev.has_pending());
        close_and_wait(&mut ev, conn);
        server.join();
        assert_serves_another_connection(&mut ev);
    });
}

#[test]
fn number_ids_ignore_answers_echoed_as_a_string_a_float_or_negative() {
    bounded(|| {
        let (tx, rx) = mpsc::channel();
        let server = Server::start(move |ws| {
            let calls = read_calls(ws, 4);
            let wrong = [
                format!("\"{}\"", calls[0].id_number()),
                format!("{}.0", calls[1].id_number()),
                format!("-{}", calls[2].id_number()),
            ];
            for id in &wrong {
                raw(ws, &result_frame(id, &json!("wrong")));
            }
            // The last call's answer comes after them: once it is in, they were all read.
            reply(ws, &calls[3], &json!("right"));
            ws.flush().unwrap();
            tx.send(wrong).unwrap();
            drain_until_closed(ws);
        });
        let (mut ev, conn) = rpc_connected(&server);
        let pushes = Pushes::record(&mut ev, conn);
        let outcomes = Outcomes::new(4);
        for i in 0..3 {
            ev.submit_with(
                conn,
                req("echo", json!([i])),
                timeout(1_000),
                outcomes.callback(i),
            )
            .unwrap();
        }
        ev.submit(conn, req("echo", json!([3])), outcomes.callback(3))
            .unwrap();
        turn_until(&mut ev, |_| outcomes.all_completed());
        settle(&mut ev);
        outcomes.assert_exactly_once();
        for i in 0..3 {
            assert_eq!(outcomes.error(i), "Timeout", "call {i}");
        }
        assert_eq!(outcomes.get(3), Ok(r#""right""#.to_owned()));
        let wrong = rx.recv().unwrap();
        let expected: Vec<_> = wrong
            .iter()
            .map(|id| {
                (
                    UnmatchedReason::UnknownId,
                    result_frame(id, &json!("wrong")),
                )
            })
            .collect();
        assert_eq!(pushes.all(), expected);
        let stats = ev.stats(conn).unwrap();
        assert_eq!(
            (
                stats.answers,
                stats.unknown_id,
                stats.stale_id,
                stats.timeouts
            ),
            (1, 3, 0, 3)
        );
        assert!(!ev.has_pending());
        close_and_wait(&mut ev, conn);
        server.join();
        assert_serves_another_connection(&mut ev);
    });
}

// ---------------------------------------------------------------------------------------------
// What the specification rules out
// ---------------------------------------------------------------------------------------------

#[test]
fn malformed_answers_are_counted_and_never_complete_a_call() {
    bounded(|| {
        let (tx, rx) = mpsc::channel();
        let server = Server::start(move |ws| {
            let calls = read_calls(ws, 5);
            let id = |i: usize| calls[i].raw_id().to_owned();
            let frames = vec![
                // No "jsonrpc" member.
                format!(r#"{{"id":{},"result":1}}"#, id(0)),
                // Both result and error.
                format!(
                    r#"{{"jsonrpc":"2.0","id":{},"result":1,"error":{{"code":1,"message":"x"}}}}"#,
                    id(1)
                ),
                // The parse-error reply: an error that cannot name its request.
                error_frame("null", -32700, "Parse error", None),
                // A result with a null id.
                result_frame("null", &json!(1)),
            ];
            for frame in &frames {
                raw(ws, frame);
            }
            reply(ws, &calls[4], &json!("fine")); // after them: once it is in, they were read
            ws.flush().unwrap();
            tx.send(frames).unwrap();
            drain_until_closed(ws);
        });
        let (mut ev, conn) = rpc_connected(&server);
        let pushes = Pushes::record(&mut ev, conn);
        let outcomes = Outcomes::new(5);
        for i in 0..4 {
            ev.submit_with(
                conn,
                req("echo", json!([i])),
                timeout(1_000),
                outcomes.callback(i),
            )
            .unwrap();
        }
        ev.submit(conn, req("echo", json!([4])), outcomes.callback(4))
            .unwrap();
        turn_until(&mut ev, |_| outcomes.all_completed());
        settle(&mut ev);
        outcomes.assert_exactly_once();
        for i in 0..4 {
            assert_eq!(outcomes.error(i), "Timeout", "call {i}");
        }
        assert_eq!(outcomes.get(4), Ok(r#""fine""#.to_owned()));
        let frames = rx.recv().unwrap();
        use UnmatchedReason::{Malformed, NoId};
        let expected: Vec<_> = [Malformed, Malformed, NoId, Malformed]
            .into_iter()
            .zip(frames)
            .collect();
        assert_eq!(pushes.all(), expected);
        let stats = ev.stats(conn).unwrap();
        assert_eq!((stats.malformed, stats.no_id), (3, 1));
        assert_eq!((stats.answers, stats.timeouts), (1, 4));
        assert_eq!(
            (stats.unknown_id, stats.stale_id, stats.notifications),
            (0, 0, 0)
        );
        assert_eq!(ev.state(conn), Some(ConnState::Open));
        assert!(!ev.has_pending());
        close_and_wait(&mut ev, conn);
        server.join();
        assert_serves_another_connection(&mut ev);
    });
}

/// serde reads a struct from a JSON array too (`visit_seq`): answers shaped as arrays used to
/// complete calls, and a string id with a leading zero matched the call with those digits.
#[test]
fn answers_that_are_arrays_or_carry_a_padded_string_id_complete_nothing() {
    for codec in [JsonRpc2::default(), JsonRpc2::with_string_ids()] {
        bounded(move || {
            let (tx, rx) = mpsc::channel();
            let server = Server::start(move |ws| {
                let calls = read_calls(ws, 3);
                let id = |i: usize| calls[i].raw_id().to_owned();
                let mut frames = vec![
                    // An `error` that is an array, not an object.
                    format!(
                        r#"{{"jsonrpc":"2.0","id":{},"error":[-32000,"boom"]}}"#,
                        id(0)
                    ),
                    // A batch whose element is an array, not an object.
                    format!(r#"[["2.0",{},"hijacked"]]"#, id(1)),
                ];
                if calls[0].raw_id().starts_with('"') {
                    // "05" is not the id "5": ids match by their exact text.
                    let padded = format!("\"0{}\"", calls[2].id_number());
                    frames.push(result_frame(&padded, &json!("hijacked")));
                }
                for frame in &frames {
                    raw(ws, frame);
                }
                reply(ws, &calls[2], &json!("fine")); // after them: once it is in, all were read
                ws.flush().unwrap();
                tx.send(frames).unwrap();
                drain_until_closed(ws);
            });
            let (mut ev, conn) = connected(&server, rpc_config(codec));
            let pushes = Pushes::record(&mut ev, conn);
            let outcomes = Outcomes::new(3);
            for i in 0..2 {
                ev.submit_with(
                    conn,
                    req("echo", json!([i])),
                    timeout(1_000),
                    outcomes.callback(i),
                )
                .unwrap();
            }
            ev.submit(conn, req("echo", json!([2])), outcomes.callback(2))
                .unwrap();
            turn_until(&mut ev, |_| outcomes.all_completed());
            settle(&mut ev);
            outcomes.assert_exactly_once();
            assert_eq!(outcomes.error(0), "Timeout");
            assert_eq!(outcomes.error(1), "Timeout");
            assert_eq!(outcomes.get(2), Ok(r#""fine""#.to_owned()));
            let frames = rx.recv().unwrap();
            use UnmatchedReason::{Malformed, UnknownId};
            let expected: Vec<_> = [Malformed, Malformed, UnknownId]
                .into_iter()
                .zip(frames)
                .collect();
            assert_eq!(pushes.all(), expected);
            let stats = ev.stats(conn).unwrap();
            assert_eq!((stats.malformed, stats.answers, stats.timeouts), (2, 1, 2));
            assert_eq!(ev.state(conn), Some(ConnState::Open));
            close_and_wait(&mut ev, conn);
            server.join();
        });
    }
}

#[test]
fn a_payload_that_is_not_a_request_object_fails_with_encode_at_once_and_sends_nothing() {
    bounded(|| {
        let (tx, mut seen) = Seen::new();
        let server = Server::start(move |ws| dispatch(ws, "s", &tx));
        let (mut ev, conn) = rpc_connected(&server);
        let ran = Rc::new(Cell::new(0));
        for payload in [
            json!(42),
            json!("text"),
            json!([1, 2]),
            json!({}),
            json!(null),
        ] {
            let ran = ran.clone();
            let result = ev.submit(conn, &payload, move |_, _| ran.set(ran.get() + 1));
            assert!(
                matches!(result, Err(Error::Encode(_))),
                "{payload}: {result:?}"
            );
        }
        // An empty batch is refused the same way.
        let runs = BatchRuns::default();
        let empty: Vec<Request<'static, Value>> = Vec::new();
        let result = ev.submit_batch(conn, empty, CallOptions::default(), runs.callback());
        assert!(matches!(result, Err(Error::Encode(_))), "{result:?}");
        // From another thread, the refusal is the call's one result.
        let handle = ev.handle();
        let other = std::thread::spawn(move || format!("{:?}", handle.call(conn, 7).wait()));
        turn_until(&mut ev, |_| other.is_finished());
        let refused = other.join().unwrap();
        assert!(refused.starts_with("Err(Encode("), "{refused}");
        assert_eq!(ev.stats(conn).unwrap().requests_sent, 0);
        assert_eq!(ev.pending_calls(), 0);
        // Nothing was sent: the first thing the server sees is the next, valid call.
        assert_call_still_works(&mut ev, conn);
        settle(&mut ev);
        assert_eq!(seen.methods(), ["echo"]);
        assert_eq!(
            (ran.get(), runs.runs()),
            (0, 0),
            "refused callbacks never run"
        );
        let stats = ev.stats(conn).unwrap();
        assert_eq!((stats.requests_sent, stats.answers), (1, 1));
        close_and_wait(&mut ev, conn);
        server.join();
        assert_serves_another_connection(&mut ev);
    });
}

// ---------------------------------------------------------------------------------------------
// Subscriptions on the loop's thread
// ---------------------------------------------------------------------------------------------

/// A subscription event, simplified for comparison.
#[derive(Debug, Clone, PartialEq)]
enum Got {
    Item(u64),
    Interrupted(DisconnectReason),
    Resubscribed,
    /// The error's `Debug` text.
    Ended(String),
}

fn got(event: SubscriptionEvent) -> Got {
    match event {
        SubscriptionEvent::Item(n) => Got::Item(
            n.item::<u64>()
                .unwrap_or_else(|e| panic!("item {}: {e}", n.item_text())),
        ),
        SubscriptionEvent::Interrupted(reason) => Got::Interrupted(reason),
        SubscriptionEvent::Resubscribed => Got::Resubscribed,
        SubscriptionEvent::Ended(e) => Got::Ended(format!("{e:?}")),
        other => panic!("an event this test does not know: {other:?}"),
    }
}

/// Every event one subscription's handler received, in order.
#[derive(Clone, Default)]
struct Events(Rc<RefCell<Vec<Got>>>);

impl Events {
    fn handler(&self) -> impl FnMut(&mut Context, SubscriptionEvent) + 'static {
        let log = self.0.clone();
        move |_, event| log.borrow_mut().push(got(event))
    }

    fn all(&self) -> Vec<Got> {
        self.0.borrow().clone()
    }

    fn items(&self) -> Vec<u64> {
        self.0
            .borrow()
            .iter()
            .filter_map(|e| match e {
                Got::Item(n) => Some(*n),
                _ => None,
            })
            .collect()
    }

    fn ends(&self) -> usize {
        self.0
            .borrow()
            .iter()
            .filter(|e| matches!(e, Got::Ended(_)))
            .count()
    }

    /// Panics unless exactly one `Ended` came, last; returns its error's `Debug` text.
    fn ended_once(&self) -> String {
        let events = self.0.borrow();
        assert_eq!(self.ends(), 1, "one Ended, last: {events:?}");
        match events.last() {
            Some(Got::Ended(e)) => e.clone(),
            _ => panic!("Ended is not last: {events:?}"),
        }
    }
}

#[test]
fn ten_thousand_items_arrive_in_order_then_unsubscribe_ends_once_and_tells_the_server() {
    bounded(|| {
        const ITEMS: u64 = 10_000;
        let (tx, mut seen) = Seen::new();
        let server = Server::start(move |ws| dispatch(ws, "s", &tx));
        let (mut ev, conn) = rpc_connected(&server);
        let events = Events::default();
        let keys = Rc::new(RefCell::new(std::collections::BTreeSet::new()));
        let on_event = {
            let mut record = events.handler();
            let keys = keys.clone();
            move |ctx: &mut Context, event: SubscriptionEvent| {
                if let SubscriptionEvent::Item(n) = &event {
                    assert_eq!(n.method(), ITEM_METHOD);
                    keys.borrow_mut()
                        .insert(n.subscription_key().unwrap().to_owned());
                }
                record(ctx, event);
            }
        };
        let sub = ev
            .subscribe(
                conn,
                "subscribe",
                json!({"items": ITEMS}),
                "unsubscribe",
                on_event,
            )
            .unwrap();
        turn_until(&mut ev, |_| events.items().len() as u64 == ITEMS);
        assert_eq!(events.items(), (0..ITEMS).collect::<Vec<_>>());
        assert_eq!(events.ends(), 0);
        assert_eq!(*keys.borrow(), [r#""s-0""#.to_owned()].into());

        assert!(ev.unsubscribe(sub));
        assert!(!ev.unsubscribe(sub), "a second unsubscribe does nothing");
        turn_until(&mut ev, |ev| {
            events.ends() == 1 && ev.stats(conn).unwrap().answers == 2
        });
        settle(&mut ev);
        assert_eq!(events.ended_once(), "Cancelled");
        assert_eq!(events.all().len() as u64, ITEMS + 1);
        // The server was asked to unsubscribe with [key].
        let unsubscribes = seen.of("unsubscribe");
        assert_eq!(unsubscribes.len(), 1);
        assert_eq!(unsubscribes[0].params, json!(["s-0"]));
        assert_eq!(seen.methods(), ["subscribe", "unsubscribe"]);
        let stats = ev.stats(conn).unwrap();
        assert_eq!(stats.notifications, ITEMS);
        assert_eq!(stats.answers, 2);
        assert_eq!((stats.unknown_subscription, stats.unmatched()), (0, 0));
        assert!(!ev.has_pending());
        close_and_wait(&mut ev, conn);
        server.join();
        assert_serves_another_connection(&mut ev);
    });
}

#[test]
fn items_in_flight_after_unsubscribe_are_counted_not_delivered() {
    bounded(|| {
        const ITEMS: u64 = 1_000;
        const KEEP: usize = 10;
        let (tx, mut seen) = Seen::new();
        let server = Server::start(move |ws| dispatch(ws, "s", &tx));
        let (mut ev, conn) = rpc_connected(&server);
        let streamed = flag_on(&mut ev, conn, "streamed");
        let pushes = Pushes::record(&mut ev, conn);
        let events = Events::default();
        let me: Rc<Cell<Option<SubscriptionId>>> = Rc::default();
        let on_event = {
            let mut record = events.handler();
            let events = events.clone();
            let me = me.clone();
            move |ctx: &mut Context, event: SubscriptionEvent| {
                let item = matches!(event, SubscriptionEvent::Item(_));
                record(ctx, event);
                // Unsubscribes from its own handler, with ~990 items still on their way.
                if item && events.items().len() == KEEP {
                    assert!(ctx.unsubscribe(me.get().unwrap()));
                }
            }
        };
        let params = json!({"items": ITEMS, "then": "streamed"});
        let sub = ev
            .subscribe(conn, "subscribe", params, "unsubscribe", on_event)
            .unwrap();
        me.set(Some(sub));
        turn_until(&mut ev, |ev| {
            streamed.get() == 1 && events.ends() == 1 && ev.stats(conn).unwrap().answers == 2
        });
        settle(&mut ev);
        assert_eq!(events.items(), (0..KEEP as u64).collect::<Vec<_>>());
        assert_eq!(events.ended_once(), "Cancelled");
        assert_eq!(seen.of("unsubscribe")[0].params, json!(["s-0"]));
        let late = ITEMS - KEEP as u64;
        let stats = ev.stats(conn).unwrap();
        assert_eq!(stats.unknown_subscription, late);
        assert_eq!(stats.no_id, late, "late items are pushes too");
        assert_eq!(pushes.len() as u64, late);
        assert!(
            pushes
                .all()
                .iter()
                .all(|(r, _)| *r == UnmatchedReason::NoId)
        );
        assert_eq!(
            stats.notifications,
            KEEP as u64 + 1,
            "the items kept, and 'streamed'"
        );
        assert_eq!((stats.malformed, stats.unknown_id), (0, 0));
        assert_eq!(ev.state(conn), Some(ConnState::Open));
        assert_call_still_works(&mut ev, conn);
        assert!(!ev.unsubscribe(sub));
        close_and_wait(&mut ev, conn);
        server.join();
        assert_serves_another_connection(&mut ev);
    });
}

#[test]
fn unsubscribing_while_the_subscribe_call_is_in_flight_still_unsubscribes_on_the_server() {
    bounded(|| {
        let (tx, mut seen) = Seen::new();
        let (answer_tx, answer_rx) = mpsc::channel::<()>();
        let server = Server::start(move |ws| {
            let mut methods = Methods::new("s");
            // A slow server: the subscribe answer waits until the client is told it ended.
            let subscribe = Methods::take_one(ws, &tx).unwrap();
            answer_rx.recv().unwrap();
            methods.serve_one(ws, subscribe);
            methods.serve(ws, &tx);
        });
        let (mut ev, conn) = rpc_connected(&server);
        let streamed = flag_on(&mut ev, conn, "streamed");
        let events = Events::default();
        let params = json!({"items": 5, "then": "streamed"});
        let sub = ev
            .subscribe(conn, "subscribe", params, "unsubscribe", events.handler())
            .unwrap();
        // Before the subscribe call has even left.
        assert!(ev.unsubscribe(sub));
        turn_until(&mut ev, |_| events.ends() == 1);
        answer_tx.send(()).unwrap();
        turn_until(&mut ev, |_| streamed.get() == 1);
        // Anything the loop sent on the subscribe answer reached the server before this call.
        assert_call_still_works(&mut ev, conn);
        settle(&mut ev);
        assert_eq!(events.all(), [Got::Ended("Cancelled".to_owned())]);
        // As documented: "the server is sent the unsubscribe call ... when the subscribe
        // answer arrives, if it is still in flight".
        assert_eq!(seen.methods(), ["subscribe", "unsubscribe", "echo"]);
        assert_eq!(seen.of("unsubscribe")[0].params, json!(["s-0"]));
        let stats = ev.stats(conn).unwrap();
        assert_eq!(
            stats.unknown_subscription, 5,
            "its items came after its end"
        );
        close_and_wait(&mut ev, conn);
        server.join();
        assert_serves_another_connection(&mut ev);
    });
}

#[test]
fn a_notification_for_an_unknown_subscription_is_counted_and_not_fatal() {
    bounded(|| {
        let (tx, _seen) = Seen::new();
        let server = Server::start(move |ws| {
            let subscribe = read_call(ws).unwrap();
            reply(ws, &subscribe, &json!("s-0"));
            send_item(ws, ITEM_METHOD, &json!("other"), &json!(100));
            send_item(ws, ITEM_METHOD, &json!("s-0"), &json!(1));
            send_item(ws, ITEM_METHOD, &json!(12345), &json!(101));
            send_item(ws, ITEM_METHOD, &json!("s-0"), &json!(2));
            ws.flush().unwrap();
            dispatch(ws, "x", &tx);
        });
        let (mut ev, conn) = rpc_connected(&server);
        let pushes = Pushes::record(&mut ev, conn);
        let events = Events::default();
        let sub = ev
            .subscribe(
                conn,
                "subscribe",
                json!({}),
                "unsubscribe",
                events.handler(),
            )
            .unwrap();
        turn_until(&mut ev, |_| events.items().len() == 2 && pushes.len() == 2);
        settle(&mut ev);
        assert_eq!(events.all(), [Got::Item(1), Got::Item(2)]);
        assert_eq!(
            pushes.all(),
            [
                (
                    UnmatchedReason::NoId,
                    item_frame(ITEM_METHOD, &json!("other"), &json!(100))
                ),
                (
                    UnmatchedReason::NoId,
                    item_frame(ITEM_METHOD, &json!(12345), &json!(101))
                ),
            ]
        );
        let stats = ev.stats(conn).unwrap();
        assert_eq!(
            (stats.unknown_subscription, stats.no_id, stats.notifications),
            (2, 2, 2)
        );
        assert_eq!(ev.state(conn), Some(ConnState::Open));
        assert_call_still_works(&mut ev, conn);
        assert!(ev.unsubscribe(sub));
        turn_until(&mut ev, |_| events.ends() == 1);
        assert_eq!(events.ended_once(), "Cancelled");
        close_and_wait(&mut ev, conn);
        server.join();
        assert_serves_another_connection(&mut ev);
    });
}

#[test]
fn a_subscribe_answered_with_an_error_ends_once_with_remote() {
    bounded(|| {
        let (tx, mut seen) = Seen::new();
        let server = Server::start(move |ws| dispatch(ws, "s", &tx));
        let (mut ev, conn) = rpc_connected(&server);
        let events = Events::default();
        // `fail` answers with an error object: the subscription never starts.
        let sub = ev
            .subscribe(
                conn,
                "fail",
                json!({"x": 1}),
                "unsubscribe",
                events.handler(),
            )
            .unwrap();
        turn_until(&mut ev, |_| events.ends() == 1);
        settle(&mut ev);
        assert_eq!(
            events.all(),
            [Got::Ended(remote(-32000, "failed", Some(r#"{"x":1}"#)))]
        );
        assert!(!ev.unsubscribe(sub), "already over");
        // Everything sent before this call reached the server before it: no unsubscribe.
        assert_call_still_works(&mut ev, conn);
        assert_eq!(seen.methods(), ["fail", "echo"]);
        settle(&mut ev);
        assert_eq!(events.ends(), 1);
        close_and_wait(&mut ev, conn);
        server.join();
        assert_serves_another_connection(&mut ev);
    });
}

// ---------------------------------------------------------------------------------------------
// Subscriptions and a lost connection
// ---------------------------------------------------------------------------------------------

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

#[test]
fn a_dropped_connection_ends_each_subscription_once_with_disconnected() {
    bounded(|| {
        let (drop_tx, drop_rx) = mpsc::channel::<()>();
        let server = Server::start(move |ws| {
            let calls = read_calls(ws, 3);
            // Subscriptions 0 and 1 start; 2's subscribe is never answered.
            for (k, call) in calls.iter().take(2).enumerate() {
                let key = json!(format!("k{k}"));
                reply(ws, call, &key);
                for i in 0..2 {
                    send_item(ws, ITEM_METHOD, &key, &json!(i));
                }
            }
            ws.flush().unwrap();
            drop_rx.recv().unwrap(); // then the connection drops, without a close frame
        });
        let (mut ev, conn) = rpc_connected(&server);
        let events: Vec<Events> = (0..3).map(|_| Events::default()).collect();
        let subs: Vec<SubscriptionId> = events
            .iter()
            .map(|e| {
                ev.subscribe(conn, "subscribe", json!({}), "unsubscribe", e.handler())
                    .unwrap()
            })
            .collect();
        turn_until(&mut ev, |_| {
            events[0].items().len() == 2 && events[1].items().len() == 2
        });
        drop_tx.send(()).unwrap();
        server.join();
        turn_until(&mut ev, |_| events.iter().all(|e| e.ends() > 0));
        settle(&mut ev);
        let lost = Got::Ended(format!(
            "{:?}",
            Error::Disconnected(DisconnectReason::Reset)
        ));
        for e in &events[..2] {
            assert_eq!(e.all(), [Got::Item(0), Got::Item(1), lost.clone()]);
        }
        assert_eq!(events[2].all(), [lost], "ended while subscribing");
        for sub in subs {
            assert!(!ev.unsubscribe(sub));
        }
        assert_eq!(
            ev.state(conn),
            Some(ConnState::Disconnected(DisconnectReason::Reset))
        );
        let stats = ev.stats(conn).unwrap();
        assert_eq!((stats.notifications, stats.unmatched()), (4, 0));
        assert!(!ev.has_pending());
        assert_serves_another_connection(&mut ev);
    });
}

#[test]
fn items_read_just_before_the_connection_drops_are_still_delivered() {
    bounded(|| {
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let server = Server::start(move |ws| {
            let call = read_call(ws).unwrap();
            reply(ws, &call, &json!("k"));
            ws.flush().unwrap();
            go_rx.recv().unwrap();
            for i in 0..3 {
                send_item(ws, ITEM_METHOD, &json!("k"), &json!(i));
            }
            ws.flush().unwrap();
            // ... and the connection drops, without a close frame.
        });
        let (mut ev, conn) = rpc_connected(&server);
        let events = Events::default();
        ev.subscribe(
            conn,
            "subscribe",
            json!({}),
            "unsubscribe",
            events.handler(),
        )
        .unwrap();
        turn_until(&mut ev, |ev| ev.stats(conn).unwrap().answers == 1);
        // Subscribed. The loop does not turn while the server sends three items and leaves:
        // the next read finds the items, then the end of the stream.
        go_tx.send(()).unwrap();
        server.join();
        turn_until(&mut ev, |_| events.ends() > 0);
        settle(&mut ev);
        let stats = ev.stats(conn).unwrap();
        // The items arrived while the subscription was live: they are its items.
        assert_eq!(
            events.all(),
            [
                Got::Item(0),
                Got::Item(1),
                Got::Item(2),
                Got::Ended(format!(
                    "{:?}",
                    Error::Disconnected(DisconnectReason::Reset)
                ))
            ],
            "stats after the drop: {stats:?}"
        );
        assert_eq!((stats.notifications, stats.unknown_subscription), (3, 0));
        assert!(!ev.has_pending());
        assert_serves_another_connection(&mut ev);
    });
}

/// The script of a server that goes down and comes back: on the first connection it answers
/// the subscribe calls of "A" (resubscribe) and "B" (not), sends three items to each and drops
/// once told; on the second it answers A's subscribe again (new key), then streams 100..103,
/// either right behind the answer (`items_with_answer`) or once told.
fn flapping_subscription_server(
    items_with_answer: bool,
) -> (Server, mpsc::Sender<()>, mpsc::Receiver<Call>) {
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (seen_tx, seen_rx) = mpsc::channel();
    let server = Server::start_many(2, move |ws, n| {
        if n == 0 {
            for call in read_calls(ws, 2) {
                let key = json!(format!("{}-first", call.params["name"].as_str().unwrap()));
                reply(ws, &call, &key);
                for i in 0..3 {
                    send_item(ws, ITEM_METHOD, &key, &json!(i));
                }
                seen_tx.send(call).unwrap();
            }
            ws.flush().unwrap();
            go_rx.recv().unwrap();
            return; // dropped
        }
        let call = read_call(ws).unwrap();
        let key = json!(format!("{}-second", call.params["name"].as_str().unwrap()));
        reply(ws, &call, &key);
        seen_tx.send(call).unwrap();
        if !items_with_answer {
            ws.flush().unwrap();
            go_rx.recv().unwrap();
        }
        for i in 100..103 {
            send_item(ws, ITEM_METHOD, &key, &json!(i));
        }
        ws.flush().unwrap();
        dispatch(ws, "unused", &seen_tx);
    });
    (server, go_tx, seen_rx)
}

/// Subscribes "A" (resubscribe) and "B" (not) on a reconnecting JSON-RPC connection.
fn subscribe_a_and_b(server: &Server) -> (EventLoop, ConnId, [(SubscriptionId, Events); 2]) {
    let config = ConnectionConfig {
        reconnect: Some(quick_reconnect()),
        ..rpc_config(JsonRpc2::default())
    };
    let (mut ev, conn) = connected(server, config);
    let subs = [("A", true), ("B", false)].map(|(name, resubscribe)| {
        let events = Events::default();
        let options = SubscribeOptions {
            resubscribe,
            ..SubscribeOptions::default()
        };
        let sub = ev
            .subscribe_with(
                conn,
                "subscribe",
                json!({"name": name}),
                "unsubscribe",
                options,
                events.handler(),
            )
            .unwrap();
        (sub, events)
    });
    (ev, conn, subs)
}

#[test]
fn with_resubscribe_a_lost_subscription_is_interrupted_resubscribed_and_resumes() {
    bounded(|| {
        let (server, go, seen) = flapping_subscription_server(false);
        let (mut ev, conn, [(a, a_events), (_b, b_events)]) = subscribe_a_and_b(&server);
        turn_until(&mut ev, |_| {
            a_events.items().len() == 3 && b_events.items().len() == 3
        });
        go.send(()).unwrap(); // the server drops the connection
        turn_until(&mut ev, |_| a_events.all().contains(&Got::Resubscribed));
        go.send(()).unwrap(); // the items of the new subscription
        turn_until(&mut ev, |_| a_events.items().len() == 6);
        settle(&mut ev);
        assert_eq!(
            a_events.all(),
            [
                Got::Item(0),
                Got::Item(1),
                Got::Item(2),
                Got::Interrupted(DisconnectReason::Reset),
                Got::Resubscribed,
                Got::Item(100),
                Got::Item(101),
                Got::Item(102),
            ]
        );
        // Without resubscribe, the loss is the end.
        assert_eq!(
            b_events.all(),
            [
                Got::Item(0),
                Got::Item(1),
                Got::Item(2),
                Got::Ended(format!(
                    "{:?}",
                    Error::Disconnected(DisconnectReason::Reset)
                )),
            ]
        );
        // The second connection saw A's subscribe again (same params), and only that.
        let calls: Vec<Call> = seen.try_iter().collect();
        let names: Vec<_> = calls
            .iter()
            .map(|c| (c.method.as_str(), c.params["name"].as_str().unwrap()))
            .collect();
        assert_eq!(
            names,
            [("subscribe", "A"), ("subscribe", "B"), ("subscribe", "A")]
        );
        // Unsubscribing names the new key.
        assert!(ev.unsubscribe(a));
        let mut unsubscribe = None;
        turn_until(&mut ev, |_| {
            unsubscribe = unsubscribe
                .take()
                .or_else(|| seen.try_iter().find(|c| c.method == "unsubscribe"));
            unsubscribe.is_some() && a_events.ends() == 1
        });
        assert_eq!(unsubscribe.unwrap().params, json!(["A-second"]));
        settle(&mut ev);
        assert_eq!(a_events.ended_once(), "Cancelled");
        assert_eq!(b_events.ends(), 1);
        let stats = ev.stats(conn).unwrap();
        assert_eq!(stats.reconnects, 1);
        assert_eq!((stats.notifications, stats.unknown_subscription), (9, 0));
        assert_eq!(ev.state(conn), Some(ConnState::Open));
        close_and_wait(&mut ev, conn);
        server.join();
        assert_serves_another_connection(&mut ev);
    });
}

#[test]
fn items_sent_right_behind_the_resubscribe_answer_come_after_resubscribed() {
    bounded(|| {
        let (server, go, _seen) = flapping_subscription_server(true);
        let (mut ev, conn, [(a, a_events), _]) = subscribe_a_and_b(&server);
        turn_until(&mut ev, |_| a_events.items().len() == 3);
        go.send(()).unwrap(); // the server drops the connection
        turn_until(&mut ev, |_| {
            a_events.items().len() == 6 && a_events.all().contains(&Got::Resubscribed)
        });
        settle(&mut ev);
        // As documented: Interrupted, then Resubscribed, then the items resume.
        assert_eq!(
            a_events.all()[3..],
            [
                Got::Interrupted(DisconnectReason::Reset),
                Got::Resubscribed,
                Got::Item(100),
                Got::Item(101),
                Got::Item(102),
            ]
        );
        assert!(ev.unsubscribe(a));
        turn_until(&mut ev, |_| a_events.ends() == 1);
        close_and_wait(&mut ev, conn);
        server.join();
        assert_serves_another_connection(&mut ev);
    });
}

#[test]
fn a_subscription_made_before_the_first_connect_succeeds_is_subscribed_once() {
    bounded(|| {
        // A port nobody listens on yet: the first attempts are refused.
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let config = ConnectionConfig {
            reconnect: Some(quick_reconnect()),
            ..rpc_config(JsonRpc2::default())
        };
        let mut ev = EventLoop::new().unwrap();
        let conn = ev.connect(&format!("ws://{addr}/"), config).unwrap();
        let events = Events::default();
        let options = SubscribeOptions {
            resubscribe: true,
            ..SubscribeOptions::default()
        };
        let params = json!({"items": 3, "then": "streamed"});
        let sub = ev
            .subscribe_with(
                conn,
                "subscribe",
                params,
                "unsubscribe",
                options,
                events.handler(),
            )
            .unwrap();
        let streamed = flag_on(&mut ev, conn, "streamed");
        // A refused attempt: the subscribe call never left, so nothing was interrupted; it
        // waits in the queue for the connection like any call not yet written.
        turn_until(&mut ev, |ev| {
            ev.state(conn) == Some(rpcloop::ConnState::Reconnecting)
        });
        assert!(events.all().is_empty(), "{:?}", events.all());
        let (tx, mut seen) = Seen::new();
        let server = Server::start_at(addr, move |ws| dispatch(ws, "s", &tx));
        turn_until(&mut ev, |_| {
            streamed.get() >= 1 && events.items().len() == 3
        });
        assert_call_still_works(&mut ev, conn);
        settle(&mut ev);
        // One subscribe call reached the server, and one server-side subscription exists.
        assert_eq!(seen.methods(), ["subscribe", "echo"], "{:?}", events.all());
        assert_eq!(events.items(), [0, 1, 2]);
        assert_eq!(ev.stats(conn).unwrap().unknown_subscription, 0);
        assert!(ev.unsubscribe(sub));
        turn_until(&mut ev, |_| events.ends() == 1);
        assert_eq!(events.ended_once(), "Cancelled");
        close_and_wait(&mut ev, conn);
        server.join();
        assert_serves_another_connection(&mut ev);
    });
}

// ---------------------------------------------------------------------------------------------
// Subscriptions from another thread
// ---------------------------------------------------------------------------------------------

/// What a consumer thread drained from its `Subscription`.
#[derive(Debug)]
struct Drained {
    events: Vec<Got>,
    dropped: u64,
    /// What `next` returned after `Ended`.
    after_end: Option<Got>,
}

/// Drains `sub` until it is over: `next` blocks (the loop's thread keeps turning).
fn drain(sub: &rpcloop::Subscription, unsubscribe_when_empty: bool) -> Drained {
    let mut events = Vec::new();
    loop {
        let event = if unsubscribe_when_empty {
            match sub.next_timeout(Duration::ZERO) {
                Ok(event) => event,
                Err(Error::Timeout) => {
                    // Nothing queued any more: what was queued is all there is.
                    sub.unsubscribe();
                    sub.next()
                }
                Err(e) => panic!("{e}"),
            }
        } else {
            sub.next()
        };
        let event = got(event.expect("Ended comes before the end"));
        let last = matches!(event, Got::Ended(_));
        events.push(event);
        if last {
            break;
        }
    }
    Drained {
        events,
        dropped: sub.dropped(),
        after_end: sub.next().map(got),
    }
}

#[test]
fn a_slow_consumer_with_drop_oldest_loses_the_oldest_items_and_the_loop_never_stalls() {
    bounded(|| {
        const ITEMS: u64 = 100;
        const CAPACITY: usize = 4;
        let (tx, mut seen) = Seen::new();
        let server = Server::start(move |ws| dispatch(ws, "s", &tx));
        let (mut ev, conn) = rpc_connected(&server);
        let streamed = flag_on(&mut ev, conn, "streamed");
        let handle = ev.handle();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let consumer = std::thread::spawn(move || {
            let options = QueueOptions {
                capacity: CAPACITY,
                overflow: Overflow::DropOldest,
                ..QueueOptions::default()
            };
            let params = json!({"items": ITEMS, "then": "streamed"});
            let sub = handle.subscribe(conn, "subscribe", params, "unsubscribe", options);
            go_rx.recv().unwrap(); // not reading until told
            drain(&sub, true)
        });
        // Every item went through the loop (the queue overflowed 96 times) ...
        turn_until(&mut ev, |_| streamed.get() == 1);
        // ... and the loop still serves calls while the consumer sleeps.
        assert_call_still_works(&mut ev, conn);
        go_tx.send(()).unwrap();
        turn_until(&mut ev, |_| consumer.is_finished());
        let drained = consumer.join().unwrap();
        let mut expected: Vec<Got> = (ITEMS - CAPACITY as u64..ITEMS).map(Got::Item).collect();
        expected.push(Got::Ended("Cancelled".to_owned()));
        assert_eq!(drained.events, expected, "the newest items are kept");
        assert_eq!(drained.dropped, ITEMS - CAPACITY as u64);
        assert_eq!(drained.after_end, None);
        turn_until(&mut ev, |ev| ev.stats(conn).unwrap().answers == 3);
        assert_eq!(seen.of("unsubscribe")[0].params, json!(["s-0"]));
        let stats = ev.stats(conn).unwrap();
        assert_eq!(stats.notifications, ITEMS + 1);
        assert_eq!((stats.unknown_subscription, stats.unmatched()), (0, 0));
        close_and_wait(&mut ev, conn);
        server.join();
        assert_serves_another_connection(&mut ev);
    });
}

#[test]
fn a_slow_consumer_with_overflow_end_is_ended_too_slow_and_the_server_unsubscribed() {
    bounded(|| {
        const ITEMS: u64 = 100;
        const CAPACITY: usize = 4;
        let (tx, mut seen) = Seen::new();
        let server = Server::start(move |ws| dispatch(ws, "s", &tx));
        let (mut ev, conn) = rpc_connected(&server);
        let streamed = flag_on(&mut ev, conn, "streamed");
        let handle = ev.handle();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let consumer = std::thread::spawn(move || {
            let options = QueueOptions {
                capacity: CAPACITY,
                overflow: Overflow::End,
                ..QueueOptions::default()
            };
            let params = json!({"items": ITEMS, "then": "streamed"});
            let sub = handle.subscribe(conn, "subscribe", params, "unsubscribe", options);
            go_rx.recv().unwrap();
            drain(&sub, false)
        });
        turn_until(&mut ev, |_| {
            streamed.get() == 1 && !seen.of("unsubscribe").is_empty()
        });
        assert_eq!(seen.of("unsubscribe")[0].params, json!(["s-0"]));
        assert_call_still_works(&mut ev, conn);
        go_tx.send(()).unwrap();
        turn_until(&mut ev, |_| consumer.is_finished());
        let drained = consumer.join().unwrap();
        let mut expected: Vec<Got> = (0..CAPACITY as u64).map(Got::Item).collect();
        expected.push(Got::Ended(format!(
            "{:?}",
            Error::SubscriberTooSlow { capacity: CAPACITY }
        )));
        assert_eq!(drained.events, expected);
        assert_eq!(drained.dropped, 1, "the item that did not fit");
        assert_eq!(drained.after_end, None);
        let stats = ev.stats(conn).unwrap();
        // The first CAPACITY + 1 items reached the subscription; the rest came after its end.
        let late = ITEMS - CAPACITY as u64 - 1;
        assert_eq!(stats.notifications, CAPACITY as u64 + 1 + 1);
        assert_eq!((stats.unknown_subscription, stats.no_id), (late, late));
        assert_eq!(seen.of("unsubscribe").len(), 1);
        close_and_wait(&mut ev, conn);
        server.join();
        assert_serves_another_connection(&mut ev);
    });
}

#[test]
fn next_timeout_times_out_when_nothing_comes_and_recv_works_under_pollster() {
    bounded(|| {
        let (emit_tx, emit_rx) = mpsc::channel::<()>();
        let (tx, mut seen) = Seen::new();
        let server = Server::start(move |ws| {
            let call = read_call(ws).unwrap();
            reply(ws, &call, &json!("s-0"));
            ws.flush().unwrap();
            emit_rx.recv().unwrap(); // items only once the consumer has waited in vain
            for i in 0..3 {
                send_item(ws, ITEM_METHOD, &json!("s-0"), &json!(i));
            }
            ws.flush().unwrap();
            dispatch(ws, "unused", &tx);
        });
        let (mut ev, conn) = rpc_connected(&server);
        let handle = ev.handle();
        let consumer = std::thread::spawn(move || {
            let sub = handle.subscribe(
                conn,
                "subscribe",
                json!({}),
                "unsubscribe",
                QueueOptions::default(),
            );
            let waited = sub
                .next_timeout(Duration::from_millis(50))
                .map(|e| e.map(got));
            emit_tx.send(()).unwrap();
            let mut events = Vec::new();
            pollster::block_on(async {
                for _ in 0..3 {
                    events.push(got(sub.recv().await.expect("an item")));
                }
                sub.unsubscribe();
                events.push(got(sub.recv().await.expect("the end")));
                assert!(sub.recv().await.is_none(), "nothing after the end");
            });
            let after = sub.next_timeout(Duration::from_millis(1));
            (format!("{waited:?}"), events, format!("{after:?}"))
        });
        turn_until(&mut ev, |_| consumer.is_finished());
        let (waited, events, after) = consumer.join().unwrap();
        assert_eq!(waited, "Err(Timeout)");
        assert_eq!(
            events,
            [
                Got::Item(0),
                Got::Item(1),
                Got::Item(2),
                Got::Ended("Cancelled".to_owned())
            ]
        );
        assert_eq!(after, "Ok(None)", "over: next_timeout says so at once");
        turn_until(&mut ev, |_| !seen.of("unsubscribe").is_empty());
        assert_eq!(seen.of("unsubscribe")[0].params, json!(["s-0"]));
        close_and_wait(&mut ev, conn);
        server.join();
        assert_serves_another_connection(&mut ev);
    });
}

// ---------------------------------------------------------------------------------------------
// Notifications sent by the client
// ---------------------------------------------------------------------------------------------

#[test]
fn notify_sends_a_notification_without_id_in_order_with_calls() {
    bounded(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Call>();
        let server = Server::start(move |ws| {
            // A notification, a call, a notification: in submit order; only the call answered.
            for _ in 0..3 {
                let Some(call) = read_call(ws) else { return };
                if call.id.is_some() {
                    reply(ws, &call, &json!("ok"));
                    ws.flush().unwrap();
                }
                tx.send(call).unwrap();
            }
            drain_until_closed(ws);
        });
        let (mut ev, conn) = rpc_connected(&server);
        let outcomes = Outcomes::new(1);
        ev.notify(conn, "log", json!({"text": "first"})).unwrap();
        ev.submit(conn, req("echo", json!([1])), outcomes.callback(0))
            .unwrap();
        ev.notify(conn, "log", [2]).unwrap();
        turn_until(&mut ev, |_| outcomes.all_completed());
        let seen: Vec<Call> = (0..3).map(|_| rx.recv().unwrap()).collect();
        assert_eq!(seen[0].id, None);
        assert_eq!(seen[0].jsonrpc, json!("2.0"));
        assert_eq!(
            seen[0].text,
            r#"{"jsonrpc":"2.0","method":"log","params":{"text":"first"}}"#
        );
        assert!(seen[1].id.is_some());
        assert_eq!(
            (seen[2].id.as_deref(), &seen[2].params),
            (None, &json!([2]))
        );
        assert_eq!(outcomes.get(0), Ok(r#""ok""#.to_owned()));
        assert_eq!(ev.stats(conn).unwrap().messages_sent, 2);
        assert_eq!(
            ev.pending_calls(),
            0,
            "a notification leaves nothing pending"
        );
        close_and_wait(&mut ev, conn);
        server.join();
        assert_serves_another_connection(&mut ev);
    });
}

#[test]
fn notify_on_an_envelope_connection_is_refused() {
    bounded(|| {
        let server = Server::start(drain_until_closed);
        let (mut ev, conn) = connected(&server, ConnectionConfig::default());
        match ev.notify(conn, "log", [1]) {
            Err(Error::Encode(e)) => assert!(e.to_string().contains("no notifications"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(ev.stats(conn).unwrap().messages_sent, 0);
        close_and_wait(&mut ev, conn);
        server.join();
    });
}

#[test]
fn a_batch_submitted_before_the_connection_opens_goes_out_whole_in_submit_order() {
    bounded(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Incoming>();
        let server = Server::start(move |ws| {
            // First message: the call made before the batch; second: the whole batch.
            for _ in 0..2 {
                let Some(incoming) = read_incoming(ws) else {
                    return;
                };
                match &incoming {
                    Incoming::Single(call) => reply(ws, call, &call.params),
                    Incoming::Batch(calls) => {
                        let answers: Vec<String> = calls
                            .iter()
                            .rev()
                            .map(|c| result_frame(c.raw_id(), &c.params))
                            .collect();
                        send_batch(ws, &answers);
                    }
                }
                ws.flush().unwrap();
                tx.send(incoming).unwrap();
            }
            drain_until_closed(ws);
        });
        let mut ev = EventLoop::new().unwrap();
        let conn = ev
            .connect(&server.url(), rpc_config(JsonRpc2::default()))
            .unwrap();
        assert_eq!(ev.state(conn), Some(rpcloop::ConnState::Connecting));
        let single = Outcomes::new(1);
        ev.submit(conn, req("echo", json!("first")), single.callback(0))
            .unwrap();
        let runs = BatchRuns::default();
        ev.submit_batch(conn, echo_batch(3), CallOptions::default(), runs.callback())
            .unwrap();
        turn_until(&mut ev, |_| single.all_completed() && runs.runs() > 0);
        settle(&mut ev);
        assert!(matches!(rx.recv().unwrap(), Incoming::Single(_)));
        match rx.recv().unwrap() {
            Incoming::Batch(calls) => assert_eq!(calls.len(), 3, "the batch went out whole"),
            other => panic!("{other:?}"),
        }
        assert_eq!(single.get(0), Ok(r#""first""#.to_owned()));
        assert_eq!(runs.results(), echoed(3));
        assert_eq!(runs.runs(), 1);
        assert_eq!(ev.stats(conn).unwrap().requests_sent, 4);
        close_and_wait(&mut ev, conn);
        server.join();
        assert_serves_another_connection(&mut ev);
    });
}

#[test]
fn a_subscribe_answer_its_items_and_the_close_in_one_read_deliver_the_items_first() {
    bounded(|| {
        let server = Server::start(|ws| {
            let call = read_call(ws).unwrap();
            // All in one write: the answer, three items, the server's close.
            reply(ws, &call, &json!("k"));
            for i in 0..3u64 {
                send_item(ws, ITEM_METHOD, &json!("k"), &json!(i));
            }
            ws.close(None).unwrap();
            drain_until_closed(ws);
        });
        let (mut ev, conn) = rpc_connected(&server);
        let events = Events::default();
        ev.subscribe(
            conn,
            "subscribe",
            json!([]),
            "unsubscribe",
            events.handler(),
        )
        .unwrap();
        turn_until(&mut ev, |_| events.ends() == 1);
        settle(&mut ev);
        assert_eq!(events.items(), [0, 1, 2], "{:?}", events.all());
        assert!(
            events.ended_once().starts_with("Disconnected(PeerClosed"),
            "{:?}",
            events.all()
        );
        let stats = ev.stats(conn).unwrap();
        assert_eq!((stats.notifications, stats.unknown_subscription), (3, 0));
        server.join();
        assert_serves_another_connection(&mut ev);
    });
}

#[test]
fn pushes_nobody_handles_reach_the_message_handler_in_arrival_order() {
    bounded(|| {
        let server = Server::start(|ws| {
            // Only once the client has its handler (it says so with a call).
            let _go = read_call(ws).unwrap();
            notify(ws, "news", &json!(1));
            raw(ws, "not json");
            notify(ws, "news", &json!(2));
            raw(
                ws,
                r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}"#,
            );
            notify(ws, "news", &json!(3));
            ws.flush().unwrap();
            drain_until_closed(ws);
        });
        let (mut ev, conn) = rpc_connected(&server);
        let seen = Rc::new(RefCell::new(Vec::new()));
        let log = seen.clone();
        ev.set_message_handler(conn, move |_, m| {
            log.borrow_mut()
                .push((m.reason(), m.as_text().unwrap_or_default().to_owned()))
        })
        .unwrap();
        ev.submit(conn, req("go", json!([])), |_, _| {}).unwrap();
        turn_until(&mut ev, |_| seen.borrow().len() == 5);
        settle(&mut ev);
        let reasons: Vec<UnmatchedReason> = seen.borrow().iter().map(|s| s.0).collect();
        use UnmatchedReason::*;
        assert_eq!(reasons, [NoId, Malformed, NoId, NoId, NoId]);
        let texts = seen.borrow();
        assert!(texts[0].1.contains("\"params\":1"), "{texts:?}");
        assert!(texts[2].1.contains("\"params\":2"), "{texts:?}");
        assert!(texts[4].1.contains("\"params\":3"), "{texts:?}");
        drop(texts);
        close_and_wait(&mut ev, conn);
        server.join();
    });
}

#[test]
fn cancelling_a_call_of_a_batch_not_yet_written_cancels_the_whole_batch() {
    bounded(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Incoming>();
        let server = Server::start(move |ws| {
            // Only the second batch ever arrives.
            let Some(incoming) = read_incoming(ws) else {
                return;
            };
            if let Incoming::Batch(calls) = &incoming {
                let answers: Vec<String> = calls
                    .iter()
                    .map(|c| result_frame(c.raw_id(), &c.params))
                    .collect();
                send_batch(ws, &answers);
                ws.flush().unwrap();
            }
            tx.send(incoming).unwrap();
            drain_until_closed(ws);
        });
        let mut ev = EventLoop::new().unwrap();
        let conn = ev
            .connect(&server.url(), rpc_config(JsonRpc2::default()))
            .unwrap();
        // All before the first turn: the connection is not open, every batch waits queued.
        let mut cancelled_runs = Vec::new();
        for cancelled in [0, 1, 2] {
            let runs = BatchRuns::default();
            let ids = ev
                .submit_batch(conn, echo_batch(3), CallOptions::default(), runs.callback())
                .unwrap();
            // The first call carries the batch's frame; the others ride with it.
            assert!(ev.cancel(ids[cancelled]));
            assert!(
                !ev.cancel(ids[(cancelled + 1) % 3]),
                "cancelled with the batch"
            );
            cancelled_runs.push(runs);
        }
        assert_eq!(ev.state(conn), Some(rpcloop::ConnState::Connecting));
        turn_until(&mut ev, |_| cancelled_runs.iter().all(|r| r.runs() > 0));
        for runs in &cancelled_runs {
            assert_eq!(runs.results(), vec![Err("Cancelled".to_owned()); 3]);
        }
        let runs = BatchRuns::default();
        ev.submit_batch(conn, echo_batch(2), CallOptions::default(), runs.callback())
            .unwrap();
        turn_until(&mut ev, |_| runs.runs() > 0);
        settle(&mut ev);
        assert_eq!(runs.results(), echoed(2));
        match rx.recv().unwrap() {
            Incoming::Batch(calls) => assert_eq!(calls.len(), 2, "nothing cancelled was sent"),
            other => panic!("{other:?}"),
        }
        assert_eq!(ev.stats(conn).unwrap().requests_sent, 2);
        close_and_wait(&mut ev, conn);
        server.join();
        assert_serves_another_connection(&mut ev);
    });
}

/// Issue 15: a batch queued before the connection opened was "half-sent" when the first write
/// failed. Its first call held the frame and failed with `Disconnected`; the others held an empty
/// frame, counted as sent on the next connection with nothing on the wire, and timed out. A
/// batch is one frame in the outbox now: its calls are written together or wait together.
#[test]
fn a_queued_batch_whose_connection_resets_after_the_upgrade_keeps_one_fate() {
    use support::raw::{CLOSE, RawServer, TEXT};
    bounded(|| {
        let (tx, rx) = mpsc::channel();
        let server = RawServer::start_many(2, move |k, mut peer| {
            peer.accept_handshake();
            if k == 0 {
                return peer.reset(); // at once, before reading anything
            }
            // The next connection: answer every request with its params, batches as batches.
            let mut seen = 0;
            while let Some(frame) = peer.read_frame() {
                if frame.opcode == CLOSE {
                    let _ = peer.send_close(1000);
                    break;
                }
                if frame.opcode != TEXT {
                    continue;
                }
                let request: Value = serde_json::from_slice(&frame.payload).unwrap();
                let answer =
                    |r: &Value| json!({"jsonrpc": "2.0", "id": r["id"], "result": r["params"]});
                let reply = match request.as_array() {
                    Some(batch) => Value::Array(batch.iter().map(answer).collect()),
                    None => answer(&request),
                };
                seen += request.as_array().map_or(1, Vec::len);
                tx.send(seen).unwrap();
                if peer.send_text(&reply.to_string()).is_err() {
                    break;
                }
            }
        });
        let config = ConnectionConfig {
            reconnect: Some(quick_reconnect()),
            ..rpc_config(JsonRpc2::default())
        };
        let mut ev = EventLoop::new().unwrap();
        let conn = ev.connect(&server.url(), config).unwrap();
        let single = Outcomes::new(1);
        ev.submit(conn, req("echo", json!(["single"])), single.callback(0))
            .unwrap();
        // Past tungstenite's 128 KiB write threshold, the batch's frame goes to the socket as
        // it is written, where the reset is found: the write of the batch itself fails.
        let big = "x".repeat(50 << 10);
        let batch: Vec<_> = (0..3).map(|i| req("echo", json!([i, big]))).collect();
        let runs = BatchRuns::default();
        ev.submit_batch(conn, batch, timeout(3_000), runs.callback())
            .unwrap();
        turn_until(&mut ev, |_| single.all_completed() && runs.runs() > 0);
        settle(&mut ev);
        single.assert_exactly_once();
        let results = runs.results();
        // One fate for the three: all answered on the next connection, or all written into the
        // reset one and failed with it. Never a mix, never a timeout.
        let answered = results.iter().filter(|r| r.is_ok()).count();
        if answered == 3 {
            for (i, result) in results.iter().enumerate() {
                assert_eq!(result, &Ok(json!([i, big]).to_string()));
            }
        } else {
            assert_eq!(answered, 0, "{results:?}");
            assert!(
                results.iter().all(|r| r == &results[0]),
                "one error for all: {results:?}"
            );
            assert!(
                results[0].as_ref().unwrap_err().starts_with("Disconnected"),
                "{results:?}"
            );
        }
        // A call counts as sent once, when its frame is handed over: those answered on the
        // second connection, plus those written into the first, none twice.
        let stats = ev.stats(conn).unwrap();
        let on_second = rx.try_iter().last().unwrap_or(0);
        let single_ok = u64::from(single.get(0).is_ok());
        assert_eq!(on_second as u64, single_ok + answered as u64);
        let written_into_first = (1 - single_ok) + (3 - answered as u64);
        assert_eq!(stats.requests_sent, on_second as u64 + written_into_first);
        assert_eq!(stats.timeouts, 0);
        close_and_wait(&mut ev, conn);
        server.join();
    });
}
