//! `rpcloop call` against in-process loopback servers: what it prints, and how it exits.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};
use support::*;
use tungstenite::Message;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

/// How long a test waits for a server script to report.
const REPORT: Duration = Duration::from_secs(30);

/// The `{"call":..}` lines, by call number; panics if a call has no line or several.
fn calls_by_index(lines: &[Value], calls: u64) -> Vec<&Value> {
    let mut by_index: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
    for line in lines.iter().filter(|l| l.get("call").is_some()) {
        let index = line["call"].as_u64().expect("call is a number");
        by_index.entry(index).or_default().push(line);
    }
    assert_eq!(
        by_index.keys().copied().collect::<Vec<_>>(),
        (0..calls).collect::<Vec<_>>(),
        "every call has a line"
    );
    by_index
        .into_iter()
        .map(|(index, lines)| {
            assert_eq!(lines.len(), 1, "call {index} has {} lines", lines.len());
            lines[0]
        })
        .collect()
}

/// The summary, checked to be the last line and to add up.
fn summary(lines: &[Value]) -> &Value {
    let last = lines.last().expect("some output");
    let summary = &last["summary"];
    assert!(summary.is_object(), "the last line is the summary: {last}");
    let errors: u64 = summary["errors"]
        .as_object()
        .expect("errors is an object")
        .values()
        .map(|n| n.as_u64().expect("a count"))
        .sum();
    assert_eq!(
        summary["ok"].as_u64().unwrap() + errors,
        summary["calls"].as_u64().unwrap(),
        "the summary adds up: {summary}"
    );
    summary
}

/// The `state` of each state event, in order.
fn states(lines: &[Value]) -> Vec<&str> {
    lines
        .iter()
        .filter(|l| l["event"] == "state")
        .map(|l| l["state"].as_str().expect("state is text"))
        .collect()
}

#[test]
fn echoes_the_messages_given_as_arguments() {
    let server = Server::start(echo);
    let run = Run::of(&mut rpcloop([
        "call",
        &server.url(),
        r#"{"op":"ping"}"#,
        "[1,2,3]",
    ]))
    .expect_code(0);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", run.stdout);
    assert!(lines[0].starts_with("#0 ok "), "{}", lines[0]);
    assert!(lines[0].ends_with(r#" {"op":"ping"}"#), "{}", lines[0]);
    assert!(lines[1].starts_with("#1 ok "), "{}", lines[1]);
    assert!(lines[1].ends_with(" [1,2,3]"), "{}", lines[1]);
    assert!(
        lines[2].starts_with("2 calls: 2 ok, 0 failed; 0 unmatched; "),
        "{}",
        lines[2]
    );
    assert!(
        lines[3].starts_with("latency of 2 answers: p50 "),
        "{}",
        lines[3]
    );
    assert!(run.stderr.is_empty(), "{}", run.stderr);
    server.join();
}

#[test]
fn reads_one_message_per_line_from_stdin() {
    let server = Server::start(echo);
    let mut cmd = rpcloop(["call", &server.url(), "--json"]);
    cmd.write_stdin("{\"a\": 1}\n\n   \n[1,2]\n\"x\"\n");
    let run = Run::of(&mut cmd).expect_code(0);
    let lines = run.json_lines();
    let calls = calls_by_index(&lines, 3);
    let messages: Vec<&Value> = calls.iter().map(|c| &c["message"]).collect();
    assert_eq!(messages, [&json!({"a": 1}), &json!([1, 2]), &json!("x")]);
    assert_eq!(summary(&lines)["calls"], 3);
    server.join();
}

#[test]
fn a_bad_stdin_line_is_a_usage_error_after_the_calls_before_it() {
    let server = Server::start(echo);
    let mut cmd = rpcloop(["call", &server.url(), "--json"]);
    cmd.write_stdin("1\n{oops\n3\n");
    let run = Run::of(&mut cmd).expect_code(2);
    assert!(run.stderr.contains("stdin line 2"), "{}", run.stderr);
    assert!(run.stderr.contains("not a JSON text"), "{}", run.stderr);
    let lines = run.json_lines();
    let calls = calls_by_index(&lines, 1);
    assert_eq!(calls[0]["outcome"], "ok");
    assert_eq!(summary(&lines)["calls"], 1, "line 3 was never sent");
    server.join();
}

#[test]
fn no_message_at_all_is_a_usage_error() {
    let server = Server::start(drain_until_closed);
    let mut cmd = rpcloop(["call", &server.url()]);
    cmd.write_stdin("\n\n");
    let run = Run::of(&mut cmd).expect_code(2);
    assert!(run.stderr.contains("no message to send"), "{}", run.stderr);
    server.join();
}

/// 1,000 calls, 64 in flight, answered in shuffled batches: each call gets the answer to its
/// own id, exactly once.
#[test]
fn shuffled_answers_match_their_calls_under_concurrency() {
    let (report, largest_batch) = mpsc::channel();
    let server = Server::start(move |ws| {
        // The first 64 requests are all read before any is answered: only a client that
        // really keeps 64 calls in flight gets past this point.
        let mut batch: Vec<Request> = (0..64).map_while(|_| read_request(ws)).collect();
        let mut largest = 0;
        let mut seed = 0x5EED;
        while !batch.is_empty() {
            largest = largest.max(batch.len());
            seed += 1;
            shuffle(&mut batch, seed);
            for req in &batch {
                // The answer says which id it was sent for.
                answer(ws, req.id, &json!({"for": req.id, "echo": req.message}));
            }
            if ws.flush().is_err() {
                break;
            }
            let Some(first) = read_request(ws) else {
                break;
            };
            batch = vec![first];
            batch.extend(read_ready(ws).unwrap_or_default());
        }
        report.send(largest).unwrap();
    });
    let run = Run::of(&mut rpcloop([
        "call",
        &server.url(),
        r#"{"n":1}"#,
        "--concurrency",
        "64",
        "--repeat",
        "1000",
        "--timeout",
        "30s",
        "--json",
    ]))
    .expect_code(0);
    let lines = run.json_lines();
    let calls = calls_by_index(&lines, 1000);
    let mut ids = HashSet::new();
    for call in &calls {
        assert_eq!(call["outcome"], "ok", "{call}");
        let id = call["id"].as_u64().expect("an id");
        assert!(ids.insert(id), "id {id} given twice");
        assert_eq!(
            call["message"]["for"], id,
            "matched to its own answer: {call}"
        );
        assert_eq!(call["message"]["echo"], json!({"n": 1}));
    }
    let summary = summary(&lines);
    assert_eq!(summary["calls"], 1000);
    assert_eq!(summary["ok"], 1000);
    assert_eq!(summary["unmatched"], 0);
    let largest = largest_batch.recv_timeout(REPORT).expect("server report");
    assert_eq!(largest, 64, "never more than --concurrency in flight");
    server.join();
}

#[test]
fn a_call_without_an_answer_times_out() {
    let server = Server::start(|ws| {
        read_request(ws).expect("a request");
        drain_until_closed(ws);
    });
    let run = Run::of(&mut rpcloop([
        "call",
        &server.url(),
        "--timeout",
        "200ms",
        "1",
    ]))
    .expect_code(1);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].starts_with("#0 failed (timeout) "), "{}", lines[0]);
    assert!(
        lines[0].ends_with(": call timed out: no answer before its deadline"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("1 call: 0 ok, 1 failed (timeout: 1); 0 unmatched; "),
        "{}",
        lines[1]
    );
    assert_eq!(lines.len(), 2, "no latency line without answers");
    server.join();
}

/// The server answers ten calls and leaves: the calls in flight then fail as disconnected, the
/// rest as not sent, and each of the thirty still gets exactly one line.
#[test]
fn a_server_that_leaves_mid_run_still_gives_every_call_one_line() {
    let server = Server::start(|ws| {
        for _ in 0..10 {
            let req = read_request(ws).expect("a request");
            answer(ws, req.id, &req.message);
            ws.flush().expect("flush");
        }
        let frame = CloseFrame {
            code: CloseCode::Away,
            reason: "maintenance".into(),
        };
        let _ = ws.close(Some(frame));
        let _ = ws.flush();
        drain_until_closed(ws);
    });
    let run = Run::of(&mut rpcloop([
        "call",
        &server.url(),
        r#"{"k":1}"#,
        "--concurrency",
        "4",
        "--repeat",
        "30",
        "--json",
    ]))
    .expect_code(1);
    let lines = run.json_lines();
    let calls = calls_by_index(&lines, 30);
    for (index, call) in calls.iter().enumerate() {
        if index < 10 {
            assert_eq!(call["outcome"], "ok", "{call}");
        } else {
            assert_eq!(call["outcome"], "error", "{call}");
            let kind = call["error_kind"].as_str().unwrap();
            assert!(["disconnected", "not_sent"].contains(&kind), "{call}");
            assert!(
                call["error"].as_str().unwrap().contains("maintenance"),
                "the error says why: {call}"
            );
        }
    }
    let summary = summary(&lines);
    assert_eq!(summary["calls"], 30);
    assert_eq!(summary["ok"], 10);
    assert_eq!(
        states(&lines),
        ["connecting", "open", "disconnected", "closed"]
    );
    let lost = lines.iter().find(|l| l["state"] == "disconnected").unwrap();
    assert!(
        lost["reason"].as_str().unwrap().contains("code 1001"),
        "{lost}"
    );
    server.join();
}

/// Every field of every kind of line, checked one by one.
#[test]
fn json_output_field_by_field() {
    let (report, seen) = mpsc::channel();
    let long_push = format!(r#"{{"pad":"{}"}}"#, "a".repeat(300));
    let pushed = long_push.clone();
    let server = Server::start(move |ws| {
        let first = read_request(ws).expect("first request");
        raw(ws, r#"{"push":"hello"}"#);
        raw(ws, &pushed);
        raw(ws, r#"{"id":9007199254740993,"message":1}"#);
        ws.write(Message::binary(vec![1, 2, 3])).expect("binary");
        raw(ws, "not json");
        answer(ws, first.id, &first.message);
        // The same answer again: a stale id, read before the second request is answered.
        answer(ws, first.id, &json!("again"));
        ws.flush().expect("flush");
        let second = read_request(ws).expect("second request");
        answer(ws, second.id, &second.message);
        ws.flush().expect("flush");
        drain_until_closed(ws);
        report.send([first.id, second.id]).unwrap();
    });
    let run = Run::of(&mut rpcloop([
        "call",
        &server.url(),
        r#"{"q":1}"#,
        r#""second""#,
        "--json",
    ]))
    .expect_code(0);
    let ids = seen.recv_timeout(REPORT).expect("server report");
    let text_lines: Vec<&str> = run.stdout.lines().collect();
    let lines = run.json_lines();

    // Calls: every field, in the documented order.
    let calls = calls_by_index(&lines, 2);
    let sent = [json!({"q": 1}), json!("second")];
    for (index, call) in calls.iter().enumerate() {
        let object = call.as_object().unwrap();
        let keys: Vec<&str> = object.keys().map(String::as_str).collect();
        let mut expected = [
            "call",
            "id",
            "outcome",
            "error_kind",
            "error",
            "latency_us",
            "message",
        ];
        expected.sort_unstable();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, expected, "{call}");
        assert_eq!(call["call"], index);
        assert_eq!(call["id"], ids[index], "the wire id the server saw");
        assert_eq!(call["outcome"], "ok");
        assert!(call["error_kind"].is_null());
        assert!(call["error"].is_null());
        assert!(call["latency_us"].is_u64(), "{call}");
        assert_eq!(call["message"], sent[index]);
    }
    let first_call = text_lines
        .iter()
        .find(|l| l.starts_with(r#"{"call":0,"#))
        .expect("call 0 line");
    let positions: Vec<usize> = [
        "\"call\":",
        "\"id\":",
        "\"outcome\":",
        "\"error_kind\":",
        "\"error\":",
        "\"latency_us\":",
        "\"message\":",
    ]
    .iter()
    .map(|key| first_call.find(key).expect(key))
    .collect();
    assert!(positions.is_sorted(), "fields in order: {first_call}");

    // Unmatched frames: reason and the first 256 bytes.
    let unmatched: Vec<(&str, &str)> = lines
        .iter()
        .filter(|l| l["event"] == "unmatched")
        .map(|l| {
            assert_eq!(l.as_object().unwrap().len(), 3, "{l}");
            (l["reason"].as_str().unwrap(), l["raw"].as_str().unwrap())
        })
        .collect();
    let stale = format!(r#"{{"id":{},"message":"again"}}"#, ids[0]);
    let expected = [
        ("no_id", r#"{"push":"hello"}"#),
        ("no_id", &long_push[..256]),
        ("unknown_id", r#"{"id":9007199254740993,"message":1}"#),
        ("binary", "\u{1}\u{2}\u{3}"),
        ("malformed", "not json"),
        ("stale_id", stale.as_str()),
    ];
    assert_eq!(unmatched, expected);

    // State changes: in order, with their reasons.
    let state_lines: Vec<&Value> = lines.iter().filter(|l| l["event"] == "state").collect();
    assert_eq!(states(&lines), ["connecting", "open", "closed"]);
    for line in &state_lines {
        assert_eq!(line.as_object().unwrap().len(), 3, "{line}");
        assert!(line["reason"].is_null(), "{line}");
    }
    assert_eq!(lines[0]["state"], "connecting", "the first line");
    assert_eq!(
        lines[lines.len() - 2]["state"],
        "closed",
        "before the summary"
    );

    // The summary, last.
    let summary = summary(&lines);
    assert_eq!(summary.as_object().unwrap().len(), 6, "{summary}");
    assert_eq!(summary["calls"], 2);
    assert_eq!(summary["ok"], 2);
    assert_eq!(summary["errors"], json!({}));
    assert_eq!(summary["unmatched"], 6);
    assert_eq!(summary["stale"], 1);
    assert!(summary["elapsed_ms"].is_u64());
    assert_eq!(lines.len(), 2 + 6 + 3 + 1, "nothing else is printed");
    server.join();
}

#[test]
fn an_unreachable_url_fails_every_call_and_says_why() {
    let addr = closed_port();
    let url = format!("ws://{addr}/");
    let run = Run::of(&mut rpcloop(["call", &url, "1", "2"])).expect_code(1);
    let lines: Vec<&str> = run.stdout.lines().collect();
    for (index, line) in lines[..2].iter().enumerate() {
        assert!(
            line.starts_with(&format!("#{index} failed (not_sent)")),
            "{line}"
        );
        assert!(line.contains("could not connect"), "{line}");
    }
    assert!(lines[2].starts_with("2 calls: 0 ok, 2 failed (not_sent: 2)"));
    assert!(
        run.stderr.contains("disconnected: could not connect"),
        "{}",
        run.stderr
    );

    let run = Run::of(&mut rpcloop(["call", &url, "1", "--json"])).expect_code(1);
    let lines = run.json_lines();
    let calls = calls_by_index(&lines, 1);
    assert_eq!(calls[0]["error_kind"], "not_sent");
    assert_eq!(states(&lines), ["connecting", "disconnected", "closed"]);
    assert_eq!(summary(&lines)["errors"], json!({"not_sent": 1}));
}

#[test]
fn a_message_over_the_size_limit_is_refused_unsent() {
    let server = Server::start(echo);
    let big = format!("\"{}\"", "x".repeat(100));
    let run = Run::of(&mut rpcloop([
        "call",
        &server.url(),
        r#""small""#,
        &big,
        "--max-message-size",
        "64",
        "--json",
    ]))
    .expect_code(1);
    let lines = run.json_lines();
    let calls = calls_by_index(&lines, 2);
    assert_eq!(calls[0]["outcome"], "ok");
    assert_eq!(calls[1]["error_kind"], "too_large");
    assert!(calls[1]["id"].is_null(), "never given an id: {}", calls[1]);
    assert!(
        calls[1]["error"]
            .as_str()
            .unwrap()
            .contains("the limit is 64")
    );
    assert_eq!(summary(&lines)["errors"], json!({"too_large": 1}));
    server.join();
}

#[test]
// tungstenite's handshake callback returns its large error response by value.
#[allow(clippy::result_large_err)]
fn headers_reach_the_handshake() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let (report, seen) = mpsc::channel();
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut headers = Vec::new();
        let callback = |req: &tungstenite::handshake::server::Request, resp| {
            for name in ["authorization", "x-trace"] {
                let value = req.headers().get(name).and_then(|v| v.to_str().ok());
                headers.push(value.unwrap_or_default().to_owned());
            }
            Ok(resp)
        };
        let mut ws = tungstenite::accept_hdr(stream, callback).unwrap();
        report.send(headers).unwrap();
        echo(&mut ws);
    });
    Run::of(&mut rpcloop([
        "call",
        &url,
        "1",
        "-H",
        "Authorization: Bearer t0k3n",
        "--header",
        "X-Trace:7",
    ]))
    .expect_code(0);
    let headers = seen.recv_timeout(REPORT).expect("server report");
    assert_eq!(headers, ["Bearer t0k3n", "7"]);
    server.join().unwrap();
}

/// A million nested arrays around the call's id used to complete the call, and the output then
/// held a 2 MB nested `message` that common JSON parsers cannot read back.
#[test]
fn a_frame_nested_a_million_deep_is_reported_malformed_and_every_line_parses() {
    const LEVELS: usize = 1_000_000;
    let server = Server::start(|ws| {
        let Some(req) = read_request(ws) else { return };
        let deep = format!(
            r#"{{"id":{},"message":{}{}}}"#,
            req.id,
            "[".repeat(LEVELS),
            "]".repeat(LEVELS)
        );
        raw(ws, &deep);
        answer(ws, req.id, &json!("the real answer"));
        ws.flush().unwrap();
        drain_until_closed(ws);
    });
    let run = Run::of(&mut rpcloop(["call", &server.url(), r#""q""#, "--json"])).expect_code(0);
    // Parsed with serde_json, whose 128-level limit is stricter than Python's `json`.
    let lines = run.json_lines();
    let calls = calls_by_index(&lines, 1);
    assert_eq!(calls[0]["outcome"], "ok");
    assert_eq!(calls[0]["message"], "the real answer");
    let unmatched: Vec<&Value> = lines.iter().filter(|l| l["event"] == "unmatched").collect();
    assert_eq!(unmatched.len(), 1, "{}", run.stdout);
    assert_eq!(unmatched[0]["reason"], "malformed");
    assert!(unmatched[0]["raw"].as_str().unwrap().len() <= 256);
    assert!(
        run.stdout.len() < 4096,
        "nothing of the deep frame is printed whole"
    );
    server.join();
}
