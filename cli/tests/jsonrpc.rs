//! `--codec jsonrpc`: `rpcloop call` and `rpcloop listen --jsonrpc-subscribe` against a
//! JSON-RPC 2.0 loopback server (`support::jsonrpc`).

mod support;

use serde_json::{Value, json};
use support::jsonrpc::{self, KEY, NULL_ID_ERROR, PUSH};
use support::*;

/// The `{"call":..}` lines, in call order.
fn call_lines(lines: &[Value]) -> Vec<&Value> {
    let mut calls: Vec<&Value> = lines.iter().filter(|l| l.get("call").is_some()).collect();
    calls.sort_by_key(|l| l["call"].as_u64());
    calls
}

/// The lines of one kind of event (`unmatched`, `item`, `state`...).
fn events<'a>(lines: &'a [Value], event: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["event"] == event).collect()
}

#[test]
fn calls_print_their_results() {
    let (server, seen) = jsonrpc::start();
    let run = Run::of(&mut rpcloop([
        "call",
        &server.url(),
        "--codec",
        "jsonrpc",
        r#"{"method":"echo","params":{"a":[1,2]}}"#,
        r#"{"method":"add","params":[1,2,3]}"#,
        r#"{"jsonrpc":"2.0","id":"mine","method":"echo"}"#,
    ]))
    .expect_code(0);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{}", run.stdout);
    assert!(lines[0].starts_with("#0 ok "), "{}", lines[0]);
    assert!(lines[0].ends_with(r#" {"a":[1,2]}"#), "{}", lines[0]);
    assert!(lines[1].ends_with(" 6"), "{}", lines[1]);
    assert!(
        lines[2].ends_with(" null"),
        "no params, no result: {}",
        lines[2]
    );
    assert!(
        lines[3].starts_with("3 calls: 3 ok, 0 failed; 0 unmatched; "),
        "{}",
        lines[3]
    );
    server.join();
    let seen = jsonrpc::seen(&seen);
    let sent: Vec<&str> = seen.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(
        sent,
        [
            format!(
                r#"{{"jsonrpc":"2.0","id":{},"method":"echo","params":{{"a":[1,2]}}}}"#,
                seen[0].id
            ),
            format!(
                r#"{{"jsonrpc":"2.0","id":{},"method":"add","params":[1,2,3]}}"#,
                seen[1].id
            ),
            // The pasted id and jsonrpc members are replaced by rpcloop's own.
            format!(r#"{{"jsonrpc":"2.0","id":{},"method":"echo"}}"#, seen[2].id),
        ]
    );
}

#[test]
fn json_lines_carry_the_result_and_the_wire_id() {
    for (codec, quoted) in [("jsonrpc", false), ("jsonrpc-string-ids", true)] {
        let (server, seen) = jsonrpc::start();
        let run = Run::of(&mut rpcloop([
            "call",
            &server.url(),
            "--codec",
            codec,
            "--json",
            r#"{"method":"add","params":[40,2]}"#,
        ]))
        .expect_code(0);
        server.join();
        let seen = jsonrpc::seen(&seen);
        assert_eq!(seen.len(), 1);
        assert_eq!(
            seen[0].id.starts_with('"'),
            quoted,
            "{codec}: {}",
            seen[0].id
        );
        let lines = run.json_lines();
        let calls = call_lines(&lines);
        assert_eq!(calls.len(), 1);
        let call = calls[0];
        let mut keys: Vec<&str> = call
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "call",
                "error",
                "error_kind",
                "id",
                "latency_us",
                "message",
                "outcome"
            ],
            "{call}"
        );
        assert_eq!(call["outcome"], "ok");
        assert_eq!(call["message"], 42, "the result: {call}");
        assert_eq!(
            call["id"].to_string(),
            seen[0].id.trim_matches('"'),
            "the wire id: {call}"
        );
        assert!(call["error_kind"].is_null() && call["error"].is_null());
        assert_eq!(lines.last().unwrap()["summary"]["ok"], 1);
    }
}

#[test]
fn an_error_answer_fails_the_call_as_remote() {
    let (server, _seen) = jsonrpc::start();
    let run = Run::of(&mut rpcloop([
        "call",
        &server.url(),
        "--codec",
        "jsonrpc",
        r#"{"method":"echo","params":[1]}"#,
        r#"{"method":"fail","params":{"why":"test"}}"#,
    ]))
    .expect_code(1);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].starts_with("#0 ok "), "{}", lines[0]);
    assert!(lines[1].starts_with("#1 failed (remote) "), "{}", lines[1]);
    assert!(
        lines[1].ends_with(r#": server answered with error -32000: failed; data: {"why":"test"}"#),
        "code, message and data: {}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("2 calls: 1 ok, 1 failed (remote: 1); "),
        "{}",
        lines[2]
    );
    server.join();

    let (server, _seen) = jsonrpc::start();
    let run = Run::of(&mut rpcloop([
        "call",
        &server.url(),
        "--codec",
        "jsonrpc",
        "--json",
        r#"{"method":"fail","params":[7]}"#,
        r#"{"method":"nope"}"#,
    ]))
    .expect_code(1);
    let lines = run.json_lines();
    let calls = call_lines(&lines);
    assert_eq!(calls[0]["outcome"], "error");
    assert_eq!(calls[0]["error_kind"], "remote");
    assert_eq!(
        calls[0]["error"],
        "server answered with error -32000: failed; data: [7]"
    );
    assert_eq!(
        calls[0]["remote"],
        json!({"code": -32000, "message": "failed", "data": [7]})
    );
    assert!(calls[0]["id"].is_u64(), "{}", calls[0]);
    assert_eq!(calls[1]["error_kind"], "remote");
    assert_eq!(
        calls[1]["remote"],
        json!({"code": -32601, "message": "Method not found", "data": "nope"})
    );
    assert_eq!(
        lines.last().unwrap()["summary"]["errors"],
        json!({"remote": 2})
    );
    server.join();
}

#[test]
fn a_notification_nobody_took_is_a_push() {
    let (server, _seen) = jsonrpc::start();
    let run = Run::of(&mut rpcloop([
        "call",
        &server.url(),
        "--codec",
        "jsonrpc",
        "--json",
        r#"{"method":"news"}"#,
    ]))
    .expect_code(0);
    let lines = run.json_lines();
    let mut unmatched: Vec<(&str, &str)> = events(&lines, "unmatched")
        .iter()
        .map(|l| (l["reason"].as_str().unwrap(), l["raw"].as_str().unwrap()))
        .collect();
    // In either order: the library hands a notification nobody took to the message handler
    // behind whatever else was read in the same pass (see the report of this change).
    unmatched.sort_unstable();
    // A frame without an id that is not a notification stays `no_id`.
    assert_eq!(unmatched, [("no_id", NULL_ID_ERROR), ("push", PUSH)]);
    assert_eq!(call_lines(&lines)[0]["message"], true);
    assert_eq!(lines.last().unwrap()["summary"]["unmatched"], 2);
    server.join();

    let (server, _seen) = jsonrpc::start();
    let run = Run::of(&mut rpcloop([
        "call",
        &server.url(),
        "--codec",
        "jsonrpc",
        r#"{"method":"news"}"#,
    ]))
    .expect_code(0);
    assert!(
        run.stdout.contains(&format!("unmatched (push): {PUSH}")),
        "{}",
        run.stdout
    );
    server.join();
}

#[test]
fn a_stdin_line_that_is_no_call_is_a_usage_error_after_the_calls_before_it() {
    let (server, seen) = jsonrpc::start();
    let mut cmd = rpcloop(["call", &server.url(), "--codec", "jsonrpc", "--json"]);
    cmd.write_stdin(
        "{\"method\":\"echo\",\"params\":[1]}\n{\"params\":[2]}\n{\"method\":\"echo\"}\n",
    );
    let run = Run::of(&mut cmd).expect_code(2);
    assert!(run.stderr.contains("stdin line 2: "), "{}", run.stderr);
    assert!(run.stderr.contains("needs a \"method\""), "{}", run.stderr);
    let lines = run.json_lines();
    assert_eq!(call_lines(&lines).len(), 1);
    assert_eq!(
        lines.last().unwrap()["summary"]["calls"],
        1,
        "line 3 never sent"
    );
    server.join();
    assert_eq!(jsonrpc::seen(&seen).len(), 1);
}

#[test]
fn listen_prints_the_items_of_a_subscription_then_unsubscribes() {
    let (server, seen) = jsonrpc::start();
    let run = Run::of(&mut rpcloop([
        "listen",
        &server.url(),
        "--jsonrpc-subscribe",
        "subscribe",
        r#"{"items":3}"#,
        "--count",
        "3",
    ]))
    .expect_code(0);
    assert_eq!(
        run.stdout.lines().collect::<Vec<_>>(),
        [r#"{"n":0}"#, r#"{"n":1}"#, r#"{"n":2}"#]
    );
    assert!(run.stderr.contains("3 messages"), "{}", run.stderr);
    server.join();
    let seen = jsonrpc::seen(&seen);
    let methods: Vec<&str> = seen.iter().map(|c| c.method.as_str()).collect();
    assert_eq!(methods, ["subscribe", "unsubscribe"], "{seen:?}");
    assert_eq!(seen[0].params, json!({"items": 3}));
    assert_eq!(seen[1].params, json!([KEY]), "unsubscribed by its key");
}

#[test]
fn listen_json_shows_items_and_pushes() {
    let (server, _seen) = jsonrpc::start();
    let run = Run::of(&mut rpcloop([
        "listen",
        &server.url(),
        "--jsonrpc-subscribe",
        "subscribe",
        r#"{"items":2,"push":true}"#,
        "--count",
        "3",
        "--json",
    ]))
    .expect_code(0);
    let lines = run.json_lines();
    // The server sent item 0, the push, item 1. Items keep their order; the push may come
    // after items read in the same pass (the library queues it behind them).
    assert_eq!(
        events(&lines, "item"),
        [
            &json!({"event": "item", "subscription": KEY, "item": {"n": 0}}),
            &json!({"event": "item", "subscription": KEY, "item": {"n": 1}}),
        ]
    );
    assert_eq!(
        events(&lines, "unmatched"),
        [&json!({"event": "unmatched", "reason": "push", "raw": PUSH})]
    );
    let states: Vec<&str> = events(&lines, "state")
        .iter()
        .map(|l| l["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["connecting", "open", "closed"]);
    assert!(
        events(&lines, "subscription").is_empty(),
        "stopping by itself is no news: {}",
        run.stdout
    );
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(
        (summary["items"].as_u64(), summary["unmatched"].as_u64()),
        (Some(2), Some(1))
    );
    server.join();
}

/// The server answers the subscribe call and closes normally: the subscription ends with the
/// connection, and listen with it, exit status 0. (No items: read in the same pass as the close,
/// the library would end the subscription before its answer is dispatched, and hand the items
/// over as pushes; see the report of this change.)
#[test]
fn listen_ends_with_the_subscription_when_the_server_closes() {
    let (server, _seen) = jsonrpc::start();
    let run = Run::of(&mut rpcloop([
        "listen",
        &server.url(),
        "--jsonrpc-subscribe",
        "subscribe",
        r#"{"items":0,"close":true}"#,
        "--json",
    ]))
    .expect_code(0);
    let lines = run.json_lines();
    let ended = events(&lines, "subscription");
    assert_eq!(ended.len(), 1, "{}", run.stdout);
    assert_eq!(ended[0]["state"], "ended");
    assert_eq!(ended[0]["error_kind"], "disconnected");
    assert!(
        ended[0]["reason"].as_str().unwrap().contains("code 1000"),
        "{}",
        ended[0]
    );
    server.join();
}

#[test]
fn a_failed_subscribe_call_ends_listen_with_its_error() {
    // No such method: the server answers -32601, and the unsubscribe method was derived.
    let (server, seen) = jsonrpc::start();
    let run = Run::of(&mut rpcloop([
        "listen",
        &server.url(),
        "--jsonrpc-subscribe",
        "nope_subscribe",
        "[]",
    ]))
    .expect_code(1);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert!(
        run.stderr.contains(
            r#"nope_subscribe failed (remote): server answered with error -32601: Method not found; data: "nope_subscribe""#
        ),
        "{}",
        run.stderr
    );
    server.join();
    let methods: Vec<String> = jsonrpc::seen(&seen).into_iter().map(|c| c.method).collect();
    assert_eq!(methods, ["nope_subscribe"], "nothing to unsubscribe");

    let (server, _seen) = jsonrpc::start();
    let run = Run::of(&mut rpcloop([
        "listen",
        &server.url(),
        "--jsonrpc-subscribe",
        "fail",
        r#"{"no":1}"#,
        "--jsonrpc-unsubscribe",
        "unfail",
        "--json",
    ]))
    .expect_code(1);
    let lines = run.json_lines();
    let ended = events(&lines, "subscription");
    assert_eq!(
        ended,
        [&json!({
            "event": "subscription",
            "state": "ended",
            "reason": r#"server answered with error -32000: failed; data: {"no":1}"#,
            "error_kind": "remote",
            "remote": {"code": -32000, "message": "failed", "data": {"no": 1}},
        })]
    );
    assert_eq!(events(&lines, "state").last().unwrap()["state"], "closed");
    server.join();
}
