//! `rpcloop call wss://...` against a loopback TLS echo server whose certificate a CA made at
//! test time signed: trusted with `--ca`, refused without it, and the TLS options' usage errors.

mod support;

use serde_json::json;
use support::tls::{TlsEcho, ca_file};
use support::*;

#[test]
fn a_call_over_wss_trusting_the_ca_succeeds() {
    let ca = ca_file("ca-trusted.pem");
    let server = TlsEcho::start();
    let run = Run::of(&mut rpcloop([
        "call",
        &server.url(),
        "--ca",
        ca.to_str().unwrap(),
        "--json",
        r#"{"x":1}"#,
    ]))
    .expect_code(0);
    let lines = run.json_lines();
    let call = lines
        .iter()
        .find(|l| l.get("call").is_some())
        .expect("a call line");
    assert_eq!(call["call"], 0, "{call}");
    assert_eq!(call["outcome"], "ok", "{call}");
    assert_eq!(call["message"], json!({"x": 1}), "{call}");
    let summary = &lines.last().expect("a summary")["summary"];
    assert_eq!(
        (summary["calls"].as_u64(), summary["ok"].as_u64()),
        (Some(1), Some(1))
    );
    server.join().expect("the server echoed over TLS");
}

#[test]
fn without_the_ca_the_certificate_is_refused_as_tls() {
    // --json: the kind and the cause, for programs.
    let server = TlsEcho::start();
    let run = Run::of(&mut rpcloop(["call", &server.url(), "--json", "1"])).expect_code(1);
    let lines = run.json_lines();
    let call = lines
        .iter()
        .find(|l| l.get("call").is_some())
        .expect("a call line");
    assert_eq!(call["outcome"], "error", "{call}");
    assert_eq!(call["error_kind"], "tls", "{call}");
    let error = call["error"].as_str().expect("an error text");
    assert!(error.contains("issuer is unknown"), "{error}");
    assert_eq!(lines.last().unwrap()["summary"]["errors"]["tls"], 1);
    assert!(
        server.join().is_err(),
        "the client went on past a refused certificate"
    );

    // Human output: the kind and the cause on the call's line.
    let server = TlsEcho::start();
    let run = Run::of(&mut rpcloop(["call", &server.url(), "1"])).expect_code(1);
    let output = format!("{}{}", run.stdout, run.stderr);
    assert!(
        output.contains("#0 failed (tls)") && output.contains("issuer is unknown"),
        "{output}"
    );
    assert!(server.join().is_err());
}

#[test]
fn a_missing_ca_file_is_a_usage_error_naming_it() {
    let missing = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-such-ca.pem");
    let missing = missing.to_str().unwrap();
    let run = Run::of(&mut rpcloop([
        "call",
        "wss://localhost:9/",
        "--ca",
        missing,
        "1",
    ]))
    .expect_code(2);
    assert!(run.stderr.contains(missing), "{}", run.stderr);
    assert!(
        run.stderr.contains("cannot read the CA file"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}

#[test]
fn an_empty_ca_file_is_a_usage_error() {
    let empty = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("empty-ca.pem");
    std::fs::write(&empty, "").unwrap();
    let run = Run::of(&mut rpcloop([
        "listen",
        "wss://localhost:9/",
        "--ca",
        empty.to_str().unwrap(),
    ]))
    .expect_code(2);
    assert!(
        run.stderr.contains("holds no certificate"),
        "{}",
        run.stderr
    );
}

#[test]
fn ca_and_native_roots_conflict() {
    let ca = ca_file("ca-conflict.pem");
    let run = Run::of(&mut rpcloop([
        "call",
        "wss://localhost:9/",
        "--ca",
        ca.to_str().unwrap(),
        "--native-roots",
        "1",
    ]))
    .expect_code(2);
    assert!(run.stderr.contains("cannot be used with"), "{}", run.stderr);
}
