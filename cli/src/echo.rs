//! `rpcloop echo-server`: a WebSocket echo server, for trying rpcloop against a real peer.
//!
//! The same server as the library's `examples/echo_server.rs` (which stays a standalone
//! example; a crate cannot depend on another's examples): every text or binary message is sent
//! back unchanged, so with the envelope codec every call answers itself. One thread per
//! connection with plain blocking tungstenite, `TCP_NODELAY`, and answers batched: after each
//! blocking read it drains, without blocking, every message that has already arrived, buffers
//! their echoes, and writes them all with a single flush. It runs until killed.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;

use tungstenite::error::ProtocolError;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

use crate::FAILED;
use crate::args::EchoArgs;

/// Room for a whole batch of echoes, so one flush writes them all.
const WRITE_BUFFER: usize = 1 << 20;

/// Runs `rpcloop echo-server`: prints `echo server listening on ws://HOST:PORT/`, then serves
/// until killed. Returns the exit status if it cannot listen.
pub fn run(args: EchoArgs) -> ExitCode {
    let EchoArgs { host, port } = args;
    let listener = match TcpListener::bind((host.as_str(), port)) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("rpcloop: cannot listen on {host}:{port}: {e}");
            return ExitCode::from(FAILED);
        }
    };
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("rpcloop: {e}");
            return ExitCode::from(FAILED);
        }
    };
    println!("echo server listening on ws://{addr}/");
    // Whoever started us (a script, a test) may be waiting for this line on a pipe.
    let _ = io::stdout().flush();

    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                // Out of file descriptors, a connection reset before accept...: keep serving.
                eprintln!("rpcloop: echo server: accept failed: {e}");
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
                    eprintln!("rpcloop: echo server: {peer}: {e}");
                }
            });
        if let Err(e) = spawned {
            eprintln!("rpcloop: echo server: cannot start a thread for {peer}: {e}");
        }
    }
    ExitCode::SUCCESS
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
