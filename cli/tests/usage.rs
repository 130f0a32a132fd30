//! Bad command lines: exit status 2 and a message that says what to write instead.

mod support;

use support::*;

/// Runs `rpcloop` with `args`, expecting a usage error whose message contains `says`.
fn usage_error(args: &[&str], says: &str) {
    let run = Run::of(&mut rpcloop(args)).expect_code(2);
    assert!(
        run.stderr.contains(says),
        "`rpcloop {}`: stderr should say {says:?}:\n{}",
        args.join(" "),
        run.stderr
    );
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}

#[test]
fn bad_arguments_exit_2_with_a_helpful_message() {
    usage_error(&[], "Usage: rpcloop <COMMAND>");
    usage_error(&["call"], "required arguments were not provided");
    usage_error(&["frobnicate"], "unrecognized subcommand");
    let url = "ws://127.0.0.1:9/";
    usage_error(&["call", url, "--timeout", "5", "1"], "like 500ms, 2s");
    usage_error(
        &["call", url, "--timeout", "5 parsecs", "1"],
        "unknown unit",
    );
    usage_error(&["call", url, "--timeout", "0s", "1"], "more than 0");
    usage_error(&["call", url, "--concurrency", "0", "1"], "--concurrency");
    usage_error(&["call", url, "--repeat", "-3", "1"], "--repeat");
    usage_error(&["call", url, "--max-message-size", "lots", "1"], "16MiB");
    usage_error(&["call", url, "-H", "no colon here", "1"], "'Name: value'");
    usage_error(&["call", url, "{\"unclosed\": 1"], "not a JSON text");
    usage_error(&["call", url, "1", "--unknown-flag"], "unexpected argument");
    usage_error(
        &["call", "127.0.0.1:9", "1"],
        "expected a ws:// or wss:// URL",
    );
    usage_error(
        &["call", "http://127.0.0.1:9/", "1"],
        "did you mean ws://127.0.0.1:9/",
    );
    usage_error(
        &["call", "https://127.0.0.1:9/", "1"],
        "did you mean wss://127.0.0.1:9/",
    );
    usage_error(&["listen", url, "--count", "0"], "--count");
    usage_error(&["echo-server", "--port", "99999"], "--port");
}

#[test]
fn jsonrpc_messages_and_subscriptions_are_checked_before_connecting() {
    // Nothing listens at this URL: a usage error is found before any connection is tried.
    let url = "ws://127.0.0.1:9/";
    let jsonrpc = |message: &str, says: &str| {
        usage_error(&["call", url, "--codec", "jsonrpc", message], says);
    };
    jsonrpc(
        "1",
        "the message '1' is not a JSON-RPC call: a JSON-RPC call is an object",
    );
    jsonrpc(r#"{"params":[1]}"#, r#"a JSON-RPC call needs a "method""#);
    jsonrpc(r#"{"method":42}"#, r#""method" must be a string"#);
    jsonrpc(
        r#"{"method":"m","params":"x"}"#,
        r#""params" must be an array or an object"#,
    );
    jsonrpc(
        r#"{"method":"m","parms":[]}"#,
        r#"unexpected member "parms""#,
    );
    usage_error(
        &["call", url, "--codec", "jsonrpc-string-ids", "[]"],
        r#"write {"method":"NAME","params":[..]}"#,
    );
    usage_error(
        &["call", url, "--codec", "xml", "1"],
        "the codecs are: envelope, jsonrpc, jsonrpc-string-ids",
    );

    usage_error(
        &[
            "listen",
            url,
            "--jsonrpc-subscribe",
            "eth_subscribe",
            "\"newHeads\"",
        ],
        "PARAMS must be a JSON array or object",
    );
    usage_error(
        &[
            "listen",
            url,
            "--jsonrpc-subscribe",
            "eth_subscribe",
            "[oops",
        ],
        "PARAMS is not a JSON text",
    );
    usage_error(
        &["listen", url, "--jsonrpc-subscribe", "watch", "[]"],
        "give it with --jsonrpc-unsubscribe METHOD",
    );
    usage_error(
        &["listen", url, "--jsonrpc-subscribe", "eth_subscribe"],
        "2 values required",
    );
    usage_error(
        &["listen", url, "--jsonrpc-unsubscribe", "eth_unsubscribe"],
        "--jsonrpc-subscribe",
    );
    usage_error(
        &[
            "listen",
            url,
            "--codec",
            "envelope",
            "--jsonrpc-subscribe",
            "eth_subscribe",
            "[]",
        ],
        "--jsonrpc-subscribe needs a JSON-RPC codec",
    );
}

#[test]
fn help_documents_every_command_and_option() {
    let run = Run::of(&mut rpcloop(["--help"])).expect_code(0);
    for word in ["call", "listen", "echo-server", "Exit status"] {
        assert!(
            run.stdout.contains(word),
            "--help mentions {word}:\n{}",
            run.stdout
        );
    }
    let run = Run::of(&mut rpcloop(["call", "--help"])).expect_code(0);
    for option in [
        "--codec",
        "--timeout",
        "--concurrency",
        "--repeat",
        "--json",
        "--connect-timeout",
        "--close-timeout",
        "--ping-interval",
        "--pong-timeout",
        "--max-message-size",
        "--max-write-buffer",
        "--reconnect",
        "--header",
    ] {
        assert!(
            run.stdout.contains(option),
            "call --help lists {option}:\n{}",
            run.stdout
        );
    }
    let run = Run::of(&mut rpcloop(["listen", "--help"])).expect_code(0);
    for option in [
        "--count",
        "--duration",
        "--codec",
        "--jsonrpc-subscribe <METHOD> <PARAMS>",
        "--jsonrpc-unsubscribe",
        r#"{"event":"item","subscription":<key>,"item":<params.result>}"#,
    ] {
        assert!(
            run.stdout.contains(option),
            "listen --help shows {option}:\n{}",
            run.stdout
        );
    }
    Run::of(&mut rpcloop(["--version"])).expect_code(0);
}
