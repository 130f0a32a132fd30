//! Loopback WebSocket servers and a runner for the `rpcloop` binary, for the CLI tests.
//!
//! A [`Server`] listens on 127.0.0.1 port 0 and runs a script (plain blocking tungstenite on
//! its own thread) against each client it accepts; every socket has a read timeout, so a
//! script waiting for a client that never comes ends by itself. [`rpcloop`] runs the binary
//! with a wall-clock limit, so a hang fails the test instead of stalling it.
#![allow(dead_code)]

pub mod jsonrpc;
pub mod tls;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

pub type Ws = WebSocket<TcpStream>;

/// The limit on one run of the binary: only a hang (a bug) reaches it.
pub const RUN_LIMIT: Duration = Duration::from_secs(60);

/// The `rpcloop` binary with these arguments, limited to [`RUN_LIMIT`].
pub fn rpcloop<I, S>(args: I) -> assert_cmd::Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = assert_cmd::Command::new(env!("CARGO_BIN_EXE_rpcloop"));
    cmd.args(args).timeout(RUN_LIMIT);
    cmd
}

/// What a run printed, and how it ended.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Runs the command to its end.
    pub fn of(cmd: &mut assert_cmd::Command) -> Run {
        let output = cmd.output().expect("run rpcloop");
        let run = Run {
            code: output.status.code(),
            stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
        };
        assert!(
            run.code.is_some(),
            "rpcloop did not exit by itself (killed after {RUN_LIMIT:?}?)\nstdout:\n{}\nstderr:\n{}",
            run.stdout,
            run.stderr
        );
        run
    }

    /// Panics, showing the output, unless the exit status is `code`.
    pub fn expect_code(self, code: i32) -> Run {
        assert_eq!(
            self.code,
            Some(code),
            "exit status\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Stdout as JSON objects, one per line.
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"))
            })
            .collect()
    }
}

/// A server thread and its address.
pub struct Server {
    pub addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Accepts one client and runs `script` on it.
    pub fn start(script: impl FnOnce(&mut Ws) + Send + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local address");
        let thread = std::thread::spawn(move || {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            if let Some(mut ws) = accept(stream) {
                script(&mut ws);
            }
        });
        Server {
            addr,
            thread: Some(thread),
        }
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Waits for the script to end (it panics the test if the script panicked).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            t.join().expect("server script panicked");
        }
    }
}

/// The WebSocket handshake on an accepted TCP stream, with a read timeout so that no script
/// waits forever.
pub fn accept(stream: TcpStream) -> Option<Ws> {
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    stream.set_nodelay(true).expect("nodelay");
    let config = WebSocketConfig::default().write_buffer_size(1 << 20);
    tungstenite::accept_with_config(stream, Some(config)).ok()
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub id: u64,
    pub message: Value,
}

/// Reads the next text message as an envelope request; `None` once the client is gone.
pub fn read_request(ws: &mut Ws) -> Option<Request> {
    loop {
        match ws.read() {
            Ok(Message::Text(text)) => return Some(parse_request(&text)),
            Ok(Message::Close(_)) => {
                // Let tungstenite answer the close.
                let _ = ws.flush();
            }
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

fn parse_request(text: &str) -> Request {
    let v: Value = serde_json::from_str(text).expect("client sent invalid JSON");
    Request {
        id: v["id"].as_u64().expect("request without id"),
        message: v["message"].clone(),
    }
}

/// Buffers an answer (sent on the next flush).
pub fn answer(ws: &mut Ws, id: u64, message: &Value) {
    let text = serde_json::json!({"id": id, "message": message}).to_string();
    ws.write(Message::text(text)).expect("write answer");
}

/// Buffers a raw text message.
pub fn raw(ws: &mut Ws, text: &str) {
    ws.write(Message::text(text.to_owned())).expect("write raw");
}

/// Echoes every request back until the client leaves.
pub fn echo(ws: &mut Ws) {
    while let Some(req) = read_request(ws) {
        answer(ws, req.id, &req.message);
        if ws.flush().is_err() {
            return;
        }
    }
}

/// Waits (reading and answering control frames) until the client closes or goes away.
pub fn drain_until_closed(ws: &mut Ws) {
    while read_request(ws).is_some() {}
}

/// Reads every request that has already arrived, without waiting for more.
pub fn read_ready(ws: &mut Ws) -> Option<Vec<Request>> {
    let mut batch = Vec::new();
    ws.get_mut().set_nonblocking(true).ok()?;
    loop {
        match ws.read() {
            Ok(Message::Text(text)) => batch.push(parse_request(&text)),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(_) => return None,
        }
    }
    ws.get_mut().set_nonblocking(false).ok()?;
    Some(batch)
}

/// Small deterministic shuffle (xorshift), no dependency.
pub fn shuffle<T>(items: &mut [T], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        items.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}

/// A port on 127.0.0.1 where nothing listens (it was bound, then let go).
pub fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local address")
}
