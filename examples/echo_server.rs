//! A standalone WebSocket echo server, for trying rpcloop (and benchmarking it) against a real
//! peer.
//!
//! ```text
//! cargo run --release --example echo_server -- --port 9001
//! ```
//!
//! Every text or binary message it receives is sent back unchanged. With rpcloop's default
//! [`Envelope`](rpcloop::Envelope) codec a request is `{"id":N,"message":...}`, so its echo is a
//! valid answer to itself: every call returns the message it sent.
//!
//! Options: `--port N` (default 9001; `0` picks a free port), `--host ADDR` (default
//! 127.0.0.1), `--help`. On startup it prints `echo server listening on ws://HOST:PORT/`.
//!
//! It is built not to be the bottleneck of a benchmark: one thread per connection with plain
//! blocking tungstenite, `TCP_NODELAY`, and answers batched: after each blocking read it drains,
//! without blocking, every message that has already arrived, buffers their echoes, and writes
//! them all with a single flush.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;

use tungstenite::error::ProtocolError;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

const USAGE: &str = "\
usage: echo_server [--port N] [--host ADDR]

A WebSocket echo server: every text or binary message is sent back unchanged.

options:
  --port N      port to listen on (default 9001; 0 picks a free port)
  --host ADDR   address to bind (default 127.0.0.1)
  -h, --help    print this help";

/// Room for a whole batch of echoes, so one flush writes them all.
const WRITE_BUFFER: usize = 1 << 20;

fn main() -> ExitCode {
    let (host, port) = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(why) => {
            eprintln!("echo_server: {why}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind((host.as_str(), port)) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("echo_server: cannot listen on {host}:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("echo_server: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("echo server listening on ws://{addr}/");
    // Whoever started us (a script, a benchmark) may be waiting for this line on a pipe.
    let _ = io::stdout().flush();

    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                // Out of file descriptors, a connection reset before accept...: keep serving.
                eprintln!("echo_server: accept failed: {e}");
                continue;
            }
        };
        let peer = stream
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let spawned = std::thread::Builder::new()
            .name(format!("echo {peer}"))
            .spawn(move || {
                if let Err(e) = serve(stream) {
                    eprintln!("echo_server: {peer}: {e}");
                }
            });
        if let Err(e) = spawned {
            eprintln!("echo_server: cannot start a thread for {peer}: {e}");
        }
    }
    ExitCode::SUCCESS
}

/// Parses `--port N`, `--host ADDR` (also as `--port=N`); `Ok(None)` when help was asked for.
fn parse_args() -> Result<Option<(String, u16)>, String> {
    let mut host = String::from("127.0.0.1");
    let mut port: u16 = 9001;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name.to_string(), Some(value.into())),
            _ => (arg, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(None),
            "--port" => {
                let v = value()?;
                port = v.parse().map_err(|_| format!("invalid port {v:?}"))?;
            }
            "--host" => host = value()?,
            _ => return Err(format!("unknown argument {name:?}")),
        }
    }
    Ok(Some((host, port)))
}

/// Echoes one client until it leaves. Returns an error only for an abnormal end.
fn serve(stream: TcpStream) -> Result<(), String> {
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let config = WebSocketConfig::default().write_buffer_size(WRITE_BUFFER);
    let mut ws = tungstenite::accept_with_config(stream, Some(config))
        .map_err(|e| format!("handshake failed: {e}"))?;
    match echo(&mut ws) {
        // The peer closed (close handshake done) or dropped the connection: a normal end.
        tungstenite::Error::ConnectionClosed
        | tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => Ok(()),
        tungstenite::Error::Io(e)
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            ) =>
        {
            Ok(())
        }
        e => Err(e.to_string()),
    }
}

/// The echo loop; returns the error that ended the connection.
fn echo(ws: &mut WebSocket<TcpStream>) -> tungstenite::Error {
    loop {
        // Wait (blocking) for the next message.
        if let Err(e) = ws.read().and_then(|message| reply(ws, message)) {
            return e;
        }

        // Drain, without blocking, whatever else has already arrived, buffering the echoes.
        if let Err(e) = ws.get_mut().set_nonblocking(true) {
            return e.into();
        }
        let end = loop {
            if let Err(e) = ws.read().and_then(|message| reply(ws, message)) {
                break e;
            }
        };
        if let Err(e) = ws.get_mut().set_nonblocking(false) {
            return e.into();
        }
        match end {
            tungstenite::Error::Io(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            e => return e,
        }

        // One flush for the whole batch; the socket blocks again, so it writes everything.
        if let Err(e) = ws.flush() {
            return e;
        }
    }
}

/// Buffers the echo of `message` (pings, pongs and close are answered by tungstenite itself).
fn reply(ws: &mut WebSocket<TcpStream>, message: Message) -> Result<(), tungstenite::Error> {
    if !(message.is_text() || message.is_binary()) {
        return Ok(());
    }
    match ws.write(message) {
        // A full buffer was pushed to a non-blocking socket that could not take all of it: the
        // rest stays buffered and goes out with the next flush.
        Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        other => other,
    }
}
