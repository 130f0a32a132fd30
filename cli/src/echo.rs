//! `rpcloop echo-server`: a WebSocket echo server, for trying rpcloop against a real peer and
//! for benchmarking it (`scripts/bench.sh` runs this one).
//!
//! Every text or binary message is sent back unchanged, so with the envelope codec every call
//! answers itself. It is built not to be the bottleneck of a benchmark: one thread per
//! connection with plain blocking tungstenite, `TCP_NODELAY`, and answers batched: after each
//! blocking read it drains, without blocking, every message that has already arrived, buffers
//! their echoes, and writes them all with a single flush. It runs until killed.
//!
//! With `--tls` it speaks `wss://`: it makes a throwaway CA and a server certificate for
//! `localhost`, `127.0.0.1`, `::1` and `--host` at startup (rcgen), writes the CA's certificate
//! to `--ca-out`, and prints `CA certificate in PATH` after the URL; a client trusts it with
//! `rpcloop call --ca PATH` (or `examples/bench --ca PATH`). TLS is blocking rustls (ring).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;

use rpcloop::rustls;

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
    let EchoArgs {
        host,
        port,
        tls,
        ca_out,
    } = args;
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
    let tls = if tls {
        match make_tls(&host, &ca_out) {
            Ok(config) => {
                println!("echo server listening on wss://{addr}/");
                println!("CA certificate in {ca_out}");
                Some(config)
            }
            Err(why) => {
                eprintln!("rpcloop: echo server: --tls: {why}");
                return ExitCode::from(FAILED);
            }
        }
    } else {
        println!("echo server listening on ws://{addr}/");
        None
    };
    // Whoever started us (a script, a test) may be waiting for these lines on a pipe.
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
        let tls = tls.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("echo {peer}"))
            .spawn(move || {
                if let Err(e) = serve(stream, tls) {
                    eprintln!("rpcloop: echo server: {peer}: {e}");
                }
            });
        if let Err(e) = spawned {
            eprintln!("rpcloop: echo server: cannot start a thread for {peer}: {e}");
        }
    }
    ExitCode::SUCCESS
}

/// A throwaway CA, a server certificate it signs (for loopback and `host`), the CA written
/// to `ca_out` as PEM, and the rustls server configuration presenting the certificate.
fn make_tls(host: &str, ca_out: &str) -> Result<Arc<rustls::ServerConfig>, String> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    use rpcloop::rustls;
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let err = |e: rcgen::Error| e.to_string();
    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca.distinguished_name
        .push(DnType::CommonName, "rpcloop echo-server CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if !names.iter().any(|n| n == host) {
        names.push(host.to_owned());
    }
    let key = KeyPair::generate().map_err(err)?;
    let mut leaf = CertificateParams::new(names).map_err(err)?;
    leaf.distinguished_name
        .push(DnType::CommonName, "rpcloop echo-server");
    let cert = leaf
        .signed_by(&key, &Issuer::new(ca, &ca_key))
        .map_err(err)?;
    std::fs::write(ca_out, ca_cert.pem()).map_err(|e| format!("{ca_out}: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone(), ca_cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(config))
}

/// A client's socket, plain or TLS (blocking rustls over the TCP stream).
enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

impl Conn {
    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.set_nonblocking(on),
            Conn::Tls(s) => s.sock.set_nonblocking(on),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// Echoes one client until it leaves. Returns an error only for an abnormal end.
fn serve(stream: TcpStream, tls: Option<Arc<rustls::ServerConfig>>) -> Result<(), String> {
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let stream = match tls {
        None => Conn::Plain(stream),
        Some(config) => {
            let conn = rustls::ServerConnection::new(config).map_err(|e| e.to_string())?;
            Conn::Tls(Box::new(rustls::StreamOwned::new(conn, stream)))
        }
    };
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
fn echo(ws: &mut WebSocket<Conn>) -> tungstenite::Error {
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
fn reply(ws: &mut WebSocket<Conn>, message: Message) -> Result<(), tungstenite::Error> {
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
