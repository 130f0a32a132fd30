//! rpcloop against servers it did not write (`tests/interop/`), on 127.0.0.1: ours on Node's
//! `ws` and Python's `websockets`, speaking the envelope protocol and JSON-RPC 2.0, and the
//! `rpc-websockets` package's own JSON-RPC 2.0 server.
//!
//! The scenarios at the top run against both of our servers (the `node` and `python` modules
//! below), which select their behaviour from the request's payload
//! (`tests/interop/README.md`): shuffled answers, delays, pushes around answers, pings, a close
//! of their own. The `rpc_websockets` module runs `JsonRpc2` against rpc-websockets. Every
//! test is ignored by default since it needs the servers' packages installed:
//! `scripts/interop.sh` installs them locally and runs `cargo test --test interop -- --ignored`.
//!
//! Every test asserts that each call completed exactly once, with the outcome its scenario
//! calls for.

mod support;

use std::cell::RefCell;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rpcloop::{
    CallOptions, ConnId, ConnState, ConnectionConfig, DisconnectReason, Error, EventLoop, JsonRpc2,
    Request, UnmatchedReason,
};
use serde_json::{Value, json};
use support::*;

/// The server implementations.
#[derive(Debug, Clone, Copy)]
enum Peer {
    /// `tests/interop/node/server.js`, on the `ws` package.
    Node,
    /// `tests/interop/python/server.py`, on the `websockets` package.
    Python,
}

/// The checkout's root. Cargo sets `CARGO_MANIFEST_DIR` when running tests; it is read at run
/// time, since a test binary reused from another checkout (same sources, shared target dir)
/// keeps that checkout's path.
fn root() -> PathBuf {
    PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
}

/// The `node` to run the Node servers with.
fn node() -> String {
    std::env::var("RPCLOOP_INTEROP_NODE").unwrap_or_else(|_| "node".into())
}

/// A server process, stopped on drop (its stdin closes, and it exits on that).
struct External {
    child: Child,
    stdin: Option<ChildStdin>,
    port: u16,
}

impl External {
    /// Starts `peer`'s server for `protocol` ("envelope" or "jsonrpc") on a free port.
    fn start(peer: Peer, protocol: &str) -> External {
        let root = root();
        let (program, script) = match peer {
            Peer::Node => (node(), root.join("tests/interop/node/server.js")),
            Peer::Python => (
                std::env::var("RPCLOOP_INTEROP_PYTHON").unwrap_or_else(|_| {
                    root.join("target/interop/venv/bin/python")
                        .to_string_lossy()
                        .into_owned()
                }),
                root.join("tests/interop/python/server.py"),
            ),
        };
        External::spawn(
            &format!("{peer:?}"),
            &program,
            &[script.as_os_str(), protocol.as_ref()],
        )
    }

    /// Starts the `rpc-websockets` package's server (`tests/interop/node/
    /// rpc_websockets_server.js`) on a free port.
    fn rpc_websockets() -> External {
        let script = root().join("tests/interop/node/rpc_websockets_server.js");
        External::spawn("rpc-websockets", &node(), &[script.as_ref()])
    }

    /// Runs `program args.. 0` (port 0: any free port) and reads the port it prints.
    fn spawn(what: &str, program: &str, args: &[&std::ffi::OsStr]) -> External {
        let mut child = Command::new(program)
            .args(args)
            .arg("0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{what} server ({program}): {e}; run scripts/interop.sh to install it")
            });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("{what} server did not print its port within 30 s"));
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{what} server printed {line:?}, not a port"));
        External {
            stdin: child.stdin.take(),
            child,
            port,
        }
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/", self.port)
    }
}

impl Drop for External {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let give_up = Instant::now() + Duration::from_secs(5);
        while Instant::now() < give_up {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loop connected (open) to `peer`'s envelope server.
fn connect(peer: Peer) -> (External, EventLoop, ConnId) {
    let server = External::start(peer, "envelope");
    let mut ev = EventLoop::new().unwrap();
    let conn = ev
        .connect(&server.url(), ConnectionConfig::default())
        .unwrap();
    turn_until(&mut ev, |ev| ev.state(conn) == Some(ConnState::Open));
    (server, ev, conn)
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

fn timeout(ms: u64) -> CallOptions {
    CallOptions {
        timeout: Some(Duration::from_millis(ms)),
    }
}

/// Parses an outcome's payload text.
fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

fn a_thousand_shuffled_calls(peer: Peer) {
    const N: usize = 1_000;
    let (server, mut ev, conn) = connect(peer);
    let outcomes = Outcomes::new(N);
    let order = Rc::new(RefCell::new(Vec::new()));
    for i in 0..N {
        let record = outcomes.callback(i);
        let order = order.clone();
        ev.submit(
            conn,
            json!({"op": "shuffle", "batch": 100, "n": i}),
            move |ctx, result| {
                order.borrow_mut().push(i);
                record(ctx, result);
            },
        )
        .unwrap();
    }
    turn_until(&mut ev, |_| outcomes.all_completed());
    settle(&mut ev);
    outcomes.assert_exactly_once();
    for i in 0..N {
        let answer = json_of(&outcomes.get(i).unwrap());
        assert_eq!(answer["n"], i, "{peer:?}: call {i} got {answer}");
    }
    assert!(
        order.borrow().windows(2).any(|w| w[0] > w[1]),
        "{peer:?}: answers came in submit order: not shuffled"
    );
    let stats = ev.stats(conn).unwrap();
    assert_eq!(
        (stats.answers, stats.unmatched()),
        (N as u64, 0),
        "{peer:?}"
    );
    close_and_wait(&mut ev, conn);
    drop(server);
}

fn timeouts_and_a_late_answer(peer: Peer) {
    let (server, mut ev, conn) = connect(peer);
    let outcomes = Outcomes::new(3);
    // Never answered.
    ev.submit_with(
        conn,
        json!({"op": "silent"}),
        timeout(50),
        outcomes.callback(0),
    )
    .unwrap();
    // Answered long after its deadline: the answer is stale, and completes nothing.
    ev.submit_with(
        conn,
        json!({"op": "delay", "ms": 1_000}),
        timeout(50),
        outcomes.callback(1),
    )
    .unwrap();
    // Answered in time.
    ev.submit(conn, json!({"op": "delay", "ms": 20}), outcomes.callback(2))
        .unwrap();
    turn_until(&mut ev, |_| outcomes.all_completed());
    turn_until(&mut ev, |ev| ev.stats(conn).unwrap().stale_id == 1);
    settle(&mut ev);
    outcomes.assert_exactly_once();
    assert_eq!(outcomes.error(0), "Timeout", "{peer:?}");
    assert_eq!(outcomes.error(1), "Timeout", "{peer:?}");
    assert_eq!(json_of(&outcomes.get(2).unwrap())["ms"], 20, "{peer:?}");
    let stats = ev.stats(conn).unwrap();
    assert_eq!((stats.timeouts, stats.answers), (2, 1), "{peer:?}");
    assert_eq!(ev.state(conn), Some(ConnState::Open));
    close_and_wait(&mut ev, conn);
    drop(server);
}

fn pushes_between_answers_and_raw_messages(peer: Peer) {
    let (server, mut ev, conn) = connect(peer);
    let received = record_unmatched(&mut ev, conn);
    let outcomes = Outcomes::new(3);
    for i in 0..3 {
        ev.submit(
            conn,
            json!({"op": "push", "count": 6, "call": i}),
            outcomes.callback(i),
        )
        .unwrap();
    }
    ev.send(conn, "hello raw").unwrap();
    ev.send(conn, vec![1u8, 2, 3]).unwrap();
    turn_until(&mut ev, |_| {
        outcomes.all_completed() && received.borrow().len() == 20
    });
    settle(&mut ev);
    outcomes.assert_exactly_once();
    for i in 0..3 {
        assert_eq!(json_of(&outcomes.get(i).unwrap())["call"], i, "{peer:?}");
    }
    let received = received.borrow();
    let pushes: Vec<Value> = received
        .iter()
        .filter(|(reason, _)| *reason == UnmatchedReason::NoId)
        .map(|(_, bytes)| serde_json::from_slice(bytes).unwrap())
        .collect();
    assert_eq!(pushes.len(), 18, "{peer:?}: {received:?}");
    for (k, push) in pushes.iter().enumerate() {
        assert_eq!(push["push"]["i"], k % 6, "{peer:?}: push {k}");
    }
    assert!(
        received.contains(&(UnmatchedReason::Malformed, b"hello raw".to_vec())),
        "{peer:?}: {received:?}"
    );
    assert!(
        received.contains(&(UnmatchedReason::Binary, vec![1, 2, 3])),
        "{peer:?}: {received:?}"
    );
    let stats = ev.stats(conn).unwrap();
    assert_eq!((stats.answers, stats.unmatched()), (3, 20), "{peer:?}");
    close_and_wait(&mut ev, conn);
    drop(server);
}

fn a_server_closing_mid_flight_fails_every_call_once(peer: Peer) {
    let (server, mut ev, conn) = connect(peer);
    let outcomes = Outcomes::new(11);
    for i in 0..10 {
        ev.submit(
            conn,
            json!({"op": "delay", "ms": 5_000}),
            outcomes.callback(i),
        )
        .unwrap();
    }
    ev.submit(
        conn,
        json!({"op": "close", "code": 4001, "reason": "bye"}),
        outcomes.callback(10),
    )
    .unwrap();
    turn_until(&mut ev, |_| outcomes.all_completed());
    settle(&mut ev);
    outcomes.assert_exactly_once();
    let closed = DisconnectReason::PeerClosed {
        code: 4001,
        reason: "bye".into(),
    };
    for i in 0..11 {
        assert_eq!(
            outcomes.error(i),
            format!("{:?}", Error::Disconnected(closed.clone())),
            "{peer:?}: call {i}"
        );
    }
    assert!(matches!(
        ev.submit(conn, 1, |_, _| panic!("must not run")),
        Err(Error::NotSent(_))
    ));
    // The close handshake ends (the server drops the TCP connection) and nothing is left.
    turn_until(&mut ev, |ev| {
        ev.state(conn) == Some(ConnState::Disconnected(closed.clone()))
    });
    assert!(
        ev.next_deadline().is_none(),
        "{peer:?}: a timer left behind"
    );
    drop(server);
}

fn a_4_mib_message_each_way(peer: Peer) {
    const SIZE: usize = 4 << 20;
    let (server, mut ev, conn) = connect(peer);
    let received = record_unmatched(&mut ev, conn);
    let text: String = (0..SIZE)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let binary: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    let outcomes = Outcomes::new(1);
    ev.submit(conn, &text, outcomes.callback(0)).unwrap();
    ev.send(conn, binary.clone()).unwrap();
    turn_until(&mut ev, |_| {
        outcomes.all_completed() && received.borrow().len() == 1
    });
    settle(&mut ev);
    outcomes.assert_exactly_once();
    let answer: String = serde_json::from_str(&outcomes.get(0).unwrap()).unwrap();
    assert!(answer == text, "{peer:?}: the 4 MiB answer differs");
    let received = received.borrow();
    assert_eq!(received[0].0, UnmatchedReason::Binary);
    assert!(received[0].1 == binary, "{peer:?}: the 4 MiB echo differs");
    close_and_wait(&mut ev, conn);
    drop(server);
}

fn server_pings_are_ponged(peer: Peer) {
    let (server, mut ev, conn) = connect(peer);
    let outcomes = Outcomes::new(2);
    ev.submit(
        conn,
        json!({"op": "ping", "count": 3}),
        outcomes.callback(0),
    )
    .unwrap();
    ev.submit(
        conn,
        json!({"op": "ping", "count": 1}),
        outcomes.callback(1),
    )
    .unwrap();
    turn_until(&mut ev, |_| outcomes.all_completed());
    settle(&mut ev);
    outcomes.assert_exactly_once();
    // The server answers only once it has its pongs.
    assert_eq!(json_of(&outcomes.get(0).unwrap()), json!({"pongs": 3}));
    assert_eq!(json_of(&outcomes.get(1).unwrap()), json!({"pongs": 1}));
    assert_eq!(ev.stats(conn).unwrap().unmatched(), 0, "{peer:?}");
    close_and_wait(&mut ev, conn);
    drop(server);
}

/// The JSON-RPC side of the servers, checked with a plain blocking client until rpcloop's
/// JSON-RPC codec runs the scenarios above against it: answers, error objects, pushes as
/// notifications, a batch.
fn the_jsonrpc_server_speaks_json_rpc_2_0(peer: Peer) {
    let server = External::start(peer, "jsonrpc");
    let (mut ws, _) = tungstenite::connect(server.url()).unwrap();
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    }
    let mut exchange = |request: Value, replies: usize| -> Vec<Value> {
        ws.send(tungstenite::Message::text(request.to_string()))
            .unwrap();
        (0..replies)
            .map(|_| {
                loop {
                    if let tungstenite::Message::Text(t) = ws.read().unwrap() {
                        break json_of(&t);
                    }
                }
            })
            .collect()
    };
    let call = |id: u64, method: &str, params: Value| json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    assert_eq!(
        exchange(call(1, "echo", json!([1, "two"])), 1),
        [json!({"jsonrpc": "2.0", "id": 1, "result": [1, "two"]})]
    );
    assert_eq!(
        exchange(
            call(
                2,
                "error",
                json!({"code": -32001, "message": "nope", "data": {"x": 1}})
            ),
            1
        ),
        [json!({"jsonrpc": "2.0", "id": 2,
                "error": {"code": -32001, "message": "nope", "data": {"x": 1}}})]
    );
    assert_eq!(
        exchange(call(3, "no_such_method", json!({})), 1)[0]["error"]["code"],
        -32601
    );
    let pushed = exchange(call(4, "push", json!({"count": 2})), 3);
    assert_eq!(
        pushed,
        [
            json!({"jsonrpc": "2.0", "method": "push", "params": {"i": 0}}),
            json!({"jsonrpc": "2.0", "id": 4, "result": {"count": 2}}),
            json!({"jsonrpc": "2.0", "method": "push", "params": {"i": 1}}),
        ]
    );
    assert_eq!(
        exchange(
            json!({"jsonrpc": "2.0", "method": "note", "params": [7]}),
            1
        ),
        [json!({"jsonrpc": "2.0", "method": "echo", "params": [7]})]
    );
    assert_eq!(
        exchange(
            json!([call(5, "echo", json!(5)), {"jsonrpc": "2.0", "method": "n"}, call(6, "error", json!({"code": 1, "message": "m"}))]),
            1
        ),
        [json!([
            {"jsonrpc": "2.0", "id": 5, "result": 5},
            {"jsonrpc": "2.0", "id": 6, "error": {"code": 1, "message": "m"}}
        ])]
    );
    ws.close(None).unwrap();
    while ws.read().is_ok() {}
    drop(server);
}

/// A loop connected (open) to `peer`'s JSON-RPC server, through rpcloop's `JsonRpc2` codec.
fn connect_json_rpc(peer: Peer) -> (External, EventLoop, ConnId) {
    let server = External::start(peer, "jsonrpc");
    let mut ev = EventLoop::new().unwrap();
    let config = ConnectionConfig {
        codec: std::sync::Arc::new(JsonRpc2::default()),
        ..ConnectionConfig::default()
    };
    let conn = ev.connect(&server.url(), config).unwrap();
    turn_until(&mut ev, |ev| ev.state(conn) == Some(ConnState::Open));
    (server, ev, conn)
}

fn json_rpc_a_thousand_shuffled_calls(peer: Peer) {
    const N: usize = 1_000;
    let (server, mut ev, conn) = connect_json_rpc(peer);
    let outcomes = Outcomes::new(N);
    for i in 0..N {
        let request = Request::new("shuffle", json!({"batch": 100, "n": i}));
        ev.submit(conn, request, outcomes.callback(i)).unwrap();
    }
    turn_until(&mut ev, |_| outcomes.all_completed());
    settle(&mut ev);
    outcomes.assert_exactly_once();
    for i in 0..N {
        let result = json_of(&outcomes.get(i).unwrap());
        assert_eq!(result["n"], i, "{peer:?}: call {i} got {result}");
    }
    let stats = ev.stats(conn).unwrap();
    assert_eq!(
        (stats.answers, stats.unmatched()),
        (N as u64, 0),
        "{peer:?}"
    );
    close_and_wait(&mut ev, conn);
    drop(server);
}

fn json_rpc_errors_pushes_batches_and_notifications(peer: Peer) {
    let (server, mut ev, conn) = connect_json_rpc(peer);
    let pushes = Rc::new(RefCell::new(Vec::new()));
    let log = pushes.clone();
    ev.on_notification(conn, "push", move |_, n| {
        log.borrow_mut().push(n.params::<Value>().unwrap())
    })
    .unwrap();
    let echoed = Rc::new(RefCell::new(Vec::new()));
    let log = echoed.clone();
    ev.on_notification(conn, "echo", move |_, n| {
        log.borrow_mut().push(n.params::<Value>().unwrap())
    })
    .unwrap();
    let outcomes = Outcomes::new(2);
    let error = json!({"code": -32000, "message": "nope", "data": {"why": [1, 2]}});
    ev.submit(conn, Request::new("error", error), outcomes.callback(0))
        .unwrap();
    ev.submit(
        conn,
        Request::new("push", json!({"count": 4})),
        outcomes.callback(1),
    )
    .unwrap();
    ev.notify(conn, "note", [7]).unwrap();
    let batch = Rc::new(RefCell::new(None));
    let got = batch.clone();
    let requests = vec![
        Request::new("echo", json!(1)),
        Request::new("error", json!({"code": 5, "message": "five"})),
        Request::new("echo", json!("three")),
    ];
    ev.submit_batch(conn, requests, CallOptions::default(), move |_, results| {
        let texts: Vec<String> = results
            .into_iter()
            .map(|r| match r {
                Ok(answer) => answer.text().to_owned(),
                Err(e) => e.to_string(),
            })
            .collect();
        *got.borrow_mut() = Some(texts);
    })
    .unwrap();
    turn_until(&mut ev, |_| {
        outcomes.all_completed() && batch.borrow().is_some() && echoed.borrow().len() == 1
    });
    settle(&mut ev);
    outcomes.assert_exactly_once();
    let e = outcomes.error(0);
    assert!(
        e.starts_with("Remote { code: -32000, message: \"nope\"") && e.contains("why"),
        "{peer:?}: {e}"
    );
    assert_eq!(
        json_of(&outcomes.get(1).unwrap()),
        json!({"count": 4}),
        "{peer:?}"
    );
    let expected: Vec<Value> = (0..4).map(|i| json!({"i": i})).collect();
    assert_eq!(*pushes.borrow(), expected, "{peer:?}");
    assert_eq!(*echoed.borrow(), [json!([7])], "{peer:?}");
    assert_eq!(
        batch.borrow().clone().unwrap(),
        ["1", "server answered with error 5: five", "\"three\""],
        "{peer:?}"
    );
    let stats = ev.stats(conn).unwrap();
    assert_eq!((stats.notifications, stats.unmatched()), (5, 0), "{peer:?}");
    close_and_wait(&mut ev, conn);
    drop(server);
}

/// Each scenario, once per server.
macro_rules! against_both {
    ($($scenario:ident),* $(,)?) => {
        mod node {
            $(
                #[test]
                #[ignore = "needs node ws / python websockets: run scripts/interop.sh"]
                fn $scenario() {
                    super::$scenario(super::Peer::Node);
                }
            )*
        }
        mod python {
            $(
                #[test]
                #[ignore = "needs node ws / python websockets: run scripts/interop.sh"]
                fn $scenario() {
                    super::$scenario(super::Peer::Python);
                }
            )*
        }
    };
}

against_both!(
    a_thousand_shuffled_calls,
    timeouts_and_a_late_answer,
    pushes_between_answers_and_raw_messages,
    a_server_closing_mid_flight_fails_every_call_once,
    a_4_mib_message_each_way,
    server_pings_are_ponged,
    the_jsonrpc_server_speaks_json_rpc_2_0,
    json_rpc_a_thousand_shuffled_calls,
    json_rpc_errors_pushes_batches_and_notifications,
);

/// rpcloop's `JsonRpc2` codec against the `rpc-websockets` package's own JSON-RPC 2.0 server
/// (`tests/interop/node/rpc_websockets_server.js`), which takes a falsy id for "no id": it runs
/// a request with id 0 and answers nothing (issue 14), so a client numbering its calls from 0
/// times out on its first call every time.
mod rpc_websockets {
    use std::sync::Arc;

    use rpcloop::{Context, Response};

    use super::*;

    /// The call deadline here: a call the server drops fails as `Timeout`, within the bound.
    const CALL_TIMEOUT: Duration = Duration::from_secs(10);
    /// How long a test may turn its loop waiting for something before it fails.
    const LOOP_BOUND: Duration = Duration::from_secs(30);

    /// A fresh loop connected (open) to a fresh rpc-websockets server, with `JsonRpc2`.
    fn connect() -> (External, EventLoop, ConnId) {
        let server = External::rpc_websockets();
        let mut ev = EventLoop::new().unwrap();
        let config = ConnectionConfig {
            codec: Arc::new(JsonRpc2::default()),
            default_timeout: CALL_TIMEOUT,
            ..ConnectionConfig::default()
        };
        let conn = ev.connect(&server.url(), config).unwrap();
        turn_until_within(&mut ev, "open connection", |ev| {
            ev.state(conn) == Some(ConnState::Open)
        });
        (server, ev, conn)
    }

    /// Turns the loop until `done` holds; fails naming `what` after [`LOOP_BOUND`].
    fn turn_until_within(
        ev: &mut EventLoop,
        what: &str,
        mut done: impl FnMut(&mut EventLoop) -> bool,
    ) {
        let give_up = Instant::now() + LOOP_BOUND;
        while !done(ev) {
            assert!(
                Instant::now() < give_up,
                "rpc-websockets: no {what} within {LOOP_BOUND:?}"
            );
            ev.turn(Some(Duration::from_millis(20))).expect("turn");
        }
    }

    /// A call's outcome, kept whole (with the answer's id).
    type Outcome = Result<Response, Error>;

    /// Every outcome of each call, by call number.
    struct Calls(Rc<RefCell<Vec<Vec<Outcome>>>>);

    impl Calls {
        fn new(calls: usize) -> Self {
            Calls(Rc::new(RefCell::new(
                (0..calls).map(|_| Vec::new()).collect(),
            )))
        }

        fn callback(&self, i: usize) -> impl FnOnce(&mut Context, Outcome) + 'static {
            let calls = self.0.clone();
            move |_, result| calls.borrow_mut()[i].push(result)
        }

        fn all_completed(&self) -> bool {
            self.0.borrow().iter().all(|c| !c.is_empty())
        }

        /// The one outcome of each call, in call order; panics unless each completed once.
        fn take_each_once(&self) -> Vec<Outcome> {
            self.0
                .take()
                .into_iter()
                .enumerate()
                .map(|(i, mut outcomes)| {
                    assert_eq!(outcomes.len(), 1, "call {i} completed {outcomes:?}");
                    outcomes.pop().unwrap()
                })
                .collect()
        }
    }

    /// A call's answer, or a failure saying that the server dropped it.
    fn answer(call: &str, result: Outcome) -> Response {
        result.unwrap_or_else(|e| {
            panic!("{call} failed with {e:?} (rpc-websockets leaves id 0 unanswered: issue 14)")
        })
    }

    /// A `Remote` error's code, message and `data` text; panics on anything else.
    fn remote(call: &str, result: Outcome) -> (i64, String, Option<String>) {
        match result {
            Err(Error::Remote {
                code,
                message,
                data,
            }) => (code, message, data.map(|d| d.get().to_owned())),
            other => panic!("{call}: expected Error::Remote, got {other:?}"),
        }
    }

    /// What the regression stands on, seen with a plain blocking client: rpc-websockets runs
    /// a request with id 0 and answers nothing, answers an error it finds before running a
    /// method to id 0 with `"id": null`, and answers ids from 1 on (writing `jsonrpc`).
    #[test]
    #[ignore = "needs node rpc-websockets: run scripts/interop.sh"]
    fn the_server_takes_id_0_for_no_id() {
        let server = External::rpc_websockets();
        let (mut ws, _) = tungstenite::connect(server.url()).unwrap();
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        }
        type Ws = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>;
        fn send(ws: &mut Ws, id: u64, method: &str, params: Value) {
            let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
            ws.send(tungstenite::Message::text(request.to_string()))
                .unwrap();
        }
        fn read(ws: &mut Ws) -> Value {
            loop {
                match ws.read() {
                    Ok(tungstenite::Message::Text(t)) => break json_of(&t),
                    Ok(_) => {}
                    Err(e) => panic!("rpc-websockets: no answer ({e})"),
                }
            }
        }
        send(&mut ws, 0, "sum", json!([1, 2]));
        send(&mut ws, 1, "sum", json!([3, 4]));
        // Both take the same path through the server, which would answer 0 first: the first
        // answer is to 1, so 0 got none.
        assert_eq!(
            read(&mut ws),
            json!({"jsonrpc": "2.0", "result": 7, "id": 1})
        );
        send(&mut ws, 0, "no_such_method", json!([]));
        assert_eq!(
            read(&mut ws),
            json!({"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": null})
        );
        send(&mut ws, 2, "echo", json!(["two"]));
        assert_eq!(
            read(&mut ws),
            json!({"jsonrpc": "2.0", "result": ["two"], "id": 2})
        );
        // Nothing else comes, up to the end of the close handshake.
        ws.close(None).unwrap();
        loop {
            match ws.read() {
                Ok(tungstenite::Message::Text(t)) => panic!("rpc-websockets sent {t} late"),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        drop(server);
    }

    /// Issue 14: the very first call on a fresh loop is answered. Before ee5ccaa it carried
    /// id 0, which rpc-websockets runs and never answers, so it timed out every time.
    #[test]
    #[ignore = "needs node rpc-websockets: run scripts/interop.sh"]
    fn the_first_call_on_a_fresh_loop_is_answered() {
        let (server, mut ev, conn) = connect();
        let calls = Calls::new(1);
        let id = ev
            .submit(conn, Request::new("sum", [2, 3]), calls.callback(0))
            .unwrap();
        turn_until_within(&mut ev, "completed first call", |_| calls.all_completed());
        settle(&mut ev);
        let [first] = <[_; 1]>::try_from(calls.take_each_once()).unwrap();
        let first = answer(&format!("the first call (id {id})"), first);
        assert_eq!(first.message::<i64>().unwrap(), 5, "{first:?}");
        assert_eq!((id.as_u64(), first.id().as_u64()), (1, 1), "{first:?}");
        let stats = ev.stats(conn).unwrap();
        assert_eq!(
            (stats.answers, stats.timeouts, stats.unmatched()),
            (1, 0, 0)
        );
        close_and_wait(&mut ev, conn);
        drop(server);
    }

    /// A method that returns nothing is answered `{"jsonrpc":"2.0","id":N}`, with no `result`:
    /// the call completes with a null result, not at its timeout.
    #[test]
    #[ignore = "needs node rpc-websockets: run scripts/interop.sh"]
    fn a_method_returning_nothing_completes_with_null() {
        let (server, mut ev, conn) = connect();
        let calls = Calls::new(1);
        ev.submit(
            conn,
            Request::<()>::without_params("void"),
            calls.callback(0),
        )
        .unwrap();
        turn_until_within(&mut ev, "completed the void call", |_| {
            calls.all_completed()
        });
        settle(&mut ev);
        let [done] = <[_; 1]>::try_from(calls.take_each_once()).unwrap();
        let done = answer("the void call", done);
        assert_eq!(done.text(), "null", "{done:?}");
        let stats = ev.stats(conn).unwrap();
        assert_eq!((stats.answers, stats.malformed, stats.timeouts), (1, 0, 0));
        close_and_wait(&mut ev, conn);
        drop(server);
    }

    /// The ids rpc-websockets sees (and answers with) are a counter from 1: call n, made
    /// after call n - 1 completed, carries id n.
    #[test]
    #[ignore = "needs node rpc-websockets: run scripts/interop.sh"]
    fn call_ids_count_from_1() {
        const N: usize = 10;
        let (server, mut ev, conn) = connect();
        let calls = Calls::new(N);
        let mut submitted = Vec::new();
        for i in 0..N {
            let id = ev
                .submit(conn, Request::new("echo", [i]), calls.callback(i))
                .unwrap();
            submitted.push(id.as_u64());
            turn_until_within(&mut ev, &format!("completed call {i}"), |_| {
                !calls.0.borrow()[i].is_empty()
            });
        }
        settle(&mut ev);
        let answered: Vec<u64> = calls
            .take_each_once()
            .into_iter()
            .enumerate()
            .map(|(i, result)| {
                let r = answer(&format!("call {i}"), result);
                assert_eq!(r.message::<Vec<usize>>().unwrap(), [i], "{r:?}");
                r.id().as_u64()
            })
            .collect();
        let counter: Vec<u64> = (1..=N as u64).collect();
        assert_eq!(submitted, counter);
        assert_eq!(answered, counter);
        close_and_wait(&mut ev, conn);
        drop(server);
    }

    /// A burst of 200 calls in flight at once, half of them answered out of order (the server
    /// holds `hold` calls until all 100 are in, then answers them last first): each completes
    /// exactly once with its own result, and their ids are 1 to 200.
    #[test]
    #[ignore = "needs node rpc-websockets: run scripts/interop.sh"]
    fn two_hundred_calls_in_flight_complete_once_each() {
        const N: usize = 200;
        let (server, mut ev, conn) = connect();
        let calls = Calls::new(N);
        let order = Rc::new(RefCell::new(Vec::new()));
        let mut ids = Vec::new();
        for i in 0..N {
            let record = calls.callback(i);
            let order = order.clone();
            let callback = move |ctx: &mut Context, result| {
                order.borrow_mut().push(i);
                record(ctx, result);
            };
            let id = if i % 2 == 0 {
                ev.submit(conn, Request::new("sum", [i, 1_000]), callback)
            } else {
                let params = json!({"batch": N / 2, "value": i});
                ev.submit(conn, Request::new("hold", params), callback)
            };
            ids.push(id.unwrap().as_u64());
        }
        turn_until_within(&mut ev, "completion of all 200 calls", |_| {
            calls.all_completed()
        });
        settle(&mut ev);
        for (i, result) in calls.take_each_once().into_iter().enumerate() {
            let r = answer(&format!("call {i}"), result);
            let expected = if i % 2 == 0 { i + 1_000 } else { i };
            assert_eq!(r.message::<usize>().unwrap(), expected, "call {i}: {r:?}");
            assert_eq!(r.id().as_u64(), ids[i], "call {i}: {r:?}");
        }
        assert_eq!(ids, (1..=N as u64).collect::<Vec<_>>());
        let held: Vec<usize> = order
            .borrow()
            .iter()
            .copied()
            .filter(|i| i % 2 == 1)
            .collect();
        assert!(
            held.windows(2).any(|w| w[0] > w[1]),
            "the held calls were answered in submit order: {held:?}"
        );
        let stats = ev.stats(conn).unwrap();
        assert_eq!(
            (stats.answers, stats.timeouts, stats.unmatched()),
            (N as u64, 0, 0)
        );
        close_and_wait(&mut ev, conn);
        drop(server);
    }

    /// rpc-websockets' error answers complete their calls as `Error::Remote` with the server's
    /// code, message and data, and leave the connection serving calls.
    #[test]
    #[ignore = "needs node rpc-websockets: run scripts/interop.sh"]
    fn error_answers_complete_as_remote() {
        let (server, mut ev, conn) = connect();
        let calls = Calls::new(5);
        let fail = json!({"code": -32050, "message": "nope", "data": {"why": [1, 2]}});
        ev.submit(conn, Request::new("fail", fail), calls.callback(0))
            .unwrap();
        ev.submit(conn, Request::new("throw", ["boom"]), calls.callback(1))
            .unwrap();
        ev.submit(conn, Request::new("no_such_method", [1]), calls.callback(2))
            .unwrap();
        ev.submit(
            conn,
            Request::new("sum", json!({"a": 1})),
            calls.callback(3),
        )
        .unwrap();
        ev.submit(conn, Request::new("sum", [1, 1]), calls.callback(4))
            .unwrap();
        turn_until_within(&mut ev, "completion of all 5 calls", |_| {
            calls.all_completed()
        });
        settle(&mut ev);
        let mut outcomes = calls.take_each_once().into_iter();
        let mut next_remote = |call: &str| remote(call, outcomes.next().unwrap());
        // A thrown error object, answered as is.
        assert_eq!(
            next_remote("fail"),
            (-32050, "nope".into(), Some(r#"{"why":[1,2]}"#.into()))
        );
        // A thrown Error: -32000, its name as the message, its text as the data.
        assert_eq!(
            next_remote("throw"),
            (-32000, "Error".into(), Some(r#""boom""#.into()))
        );
        // rpc-websockets' own error, without data.
        assert_eq!(
            next_remote("no_such_method"),
            (-32601, "Method not found".into(), None)
        );
        assert_eq!(
            next_remote("sum of an object"),
            (
                -32602,
                "sum takes an array of numbers".into(),
                Some(r#"{"a":1}"#.into())
            )
        );
        let after = answer("the call after the errors", outcomes.next().unwrap());
        assert_eq!(after.message::<i64>().unwrap(), 2);
        let stats = ev.stats(conn).unwrap();
        assert_eq!(
            (stats.answers, stats.timeouts, stats.unmatched()),
            (5, 0, 0)
        );
        assert_eq!(ev.state(conn), Some(ConnState::Open));
        close_and_wait(&mut ev, conn);
        drop(server);
    }

    /// A batch: rpc-websockets runs its requests one after the other and answers with one
    /// array, which completes each call (an error element as `Error::Remote`).
    #[test]
    #[ignore = "needs node rpc-websockets: run scripts/interop.sh"]
    fn a_batch_is_answered_element_by_element() {
        let (server, mut ev, conn) = connect();
        let batch = Rc::new(RefCell::new(Vec::new()));
        let got = batch.clone();
        let requests = vec![
            Request::new("echo", json!([1])),
            Request::new("fail", json!({"code": 5, "message": "five"})),
            Request::new("sum", json!([2, 2])),
        ];
        let ids = ev
            .submit_batch(conn, requests, CallOptions::default(), move |_, results| {
                got.borrow_mut().push(results)
            })
            .unwrap();
        turn_until_within(&mut ev, "batch answer", |_| !batch.borrow().is_empty());
        settle(&mut ev);
        let mut batch = batch.take();
        assert_eq!(batch.len(), 1, "the batch completed {} times", batch.len());
        let mut results = batch.pop().unwrap().into_iter();
        let echo = answer("echo", results.next().unwrap());
        assert_eq!(echo.message::<Value>().unwrap(), json!([1]));
        // createError makes a missing data null.
        assert_eq!(
            remote("fail", results.next().unwrap()),
            (5, "five".into(), Some("null".into()))
        );
        let sum = answer("sum", results.next().unwrap());
        assert_eq!(sum.message::<i64>().unwrap(), 4);
        let ids: Vec<u64> = ids.iter().map(|id| id.as_u64()).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!((echo.id().as_u64(), sum.id().as_u64()), (1, 3));
        close_and_wait(&mut ev, conn);
        drop(server);
    }

    /// rpc-websockets' events, subscribed to with its own `rpc.on` and left with `rpc.off`,
    /// both plain calls. An event is sent as `{"notification":name,"params":P}`, with neither
    /// `jsonrpc` nor `method`: not a JSON-RPC 2.0 notification, so `JsonRpc2` hands it to the
    /// message handler as `Malformed`, whole, and it disturbs no call.
    #[test]
    #[ignore = "needs node rpc-websockets: run scripts/interop.sh"]
    fn events_subscribed_with_rpc_on_reach_the_message_handler() {
        let (server, mut ev, conn) = connect();
        let received = record_unmatched(&mut ev, conn);
        // Calls `method` and waits for its answer's result.
        let call = |ev: &mut EventLoop, method: &str, params: Value| -> Value {
            let calls = Calls::new(1);
            ev.submit(conn, Request::new(method, params), calls.callback(0))
                .unwrap();
            turn_until_within(ev, &format!("answer to {method}"), |_| {
                calls.all_completed()
            });
            let [result] = <[_; 1]>::try_from(calls.take_each_once()).unwrap();
            answer(method, result).message().unwrap()
        };
        assert_eq!(
            call(&mut ev, "rpc.on", json!(["tick", "no_such_event"])),
            json!({"tick": "ok", "no_such_event": "provided event invalid"})
        );
        // The server sends the event before it answers the call that emits it.
        assert_eq!(call(&mut ev, "tick", json!({"n": 1})), true);
        assert_eq!(call(&mut ev, "tick", json!({"n": 2})), true);
        assert_eq!(
            call(&mut ev, "rpc.off", json!(["tick"])),
            json!({"tick": "ok"})
        );
        assert_eq!(call(&mut ev, "tick", json!({"n": 3})), true);
        settle(&mut ev);
        let received: Vec<(UnmatchedReason, Value)> = received
            .borrow()
            .iter()
            .map(|(reason, bytes)| (*reason, serde_json::from_slice(bytes).unwrap()))
            .collect();
        let tick = |n: u64| {
            (
                UnmatchedReason::Malformed,
                json!({"notification": "tick", "params": {"n": n}}),
            )
        };
        assert_eq!(received, [tick(1), tick(2)]);
        let stats = ev.stats(conn).unwrap();
        assert_eq!(
            (stats.answers, stats.malformed, stats.unmatched()),
            (5, 2, 2)
        );
        close_and_wait(&mut ev, conn);
        drop(server);
    }
}
