//! A misbehaving WebSocket server that works on the raw TCP stream, for faults that
//! tungstenite's server API cannot produce: bad handshakes, illegal frames, headers that
//! announce lengths they never send, resets in the middle of a frame.
//!
//! A [`RawServer`] listens on 127.0.0.1 port 0, accepts one client on its own thread and runs a
//! script against a [`RawPeer`]. The peer's socket has a read timeout, so a script waiting for
//! a client that never comes (or never leaves) ends by itself. Reads return `None` on any
//! failure (end of stream, reset, timeout): "the client is gone". A client that breaks the
//! protocol itself (an unmasked frame, reserved bits) panics the script, and so the test when
//! it joins the server.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;

use super::Request;

/// Opcodes (RFC 6455 §5.2).
pub const CONTINUATION: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// The mask `frame` uses for masked frames: any fixed key will do.
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Largest client frame `read_frame` accepts: requests in these tests are small.
const MAX_CLIENT_FRAME: u64 = 1 << 20;

/// A raw server thread and its address.
pub struct RawServer {
    pub addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl RawServer {
    /// Accepts one client and runs `script` on its raw TCP stream.
    pub fn start(script: impl FnOnce(RawPeer) + Send + 'static) -> RawServer {
        let mut script = Some(script);
        RawServer::start_many(1, move |_, peer| {
            if let Some(script) = script.take() {
                script(peer);
            }
        })
    }

    /// Accepts `clients` clients one after another (a reconnecting client's attempts), and
    /// runs `script(k, peer)` on the `k`-th, from 0.
    pub fn start_many(
        clients: usize,
        mut script: impl FnMut(usize, RawPeer) + Send + 'static,
    ) -> RawServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let thread = std::thread::spawn(move || {
            for k in 0..clients {
                let (stream, _) = listener.accept().expect("accept");
                stream
                    .set_read_timeout(Some(Duration::from_secs(20)))
                    .unwrap();
                stream
                    .set_write_timeout(Some(Duration::from_secs(20)))
                    .unwrap();
                stream.set_nodelay(true).unwrap();
                script(k, RawPeer::new(stream));
            }
        });
        RawServer {
            addr,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Waits for the script to end (it panics the test if the script panicked).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            t.join().expect("raw server script panicked");
        }
    }
}

/// One client frame, unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// The accepted client's TCP stream, with what was read from it but not consumed yet.
pub struct RawPeer {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawPeer {
    fn new(stream: TcpStream) -> Self {
        RawPeer {
            stream,
            buf: Vec::new(),
        }
    }

    /// The underlying socket (to clone it for a second thread, set options...).
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// A second handle on the same socket (for a reader thread while this one writes). Only
    /// between frames: bytes already buffered here are not shared.
    pub fn try_clone(&self) -> RawPeer {
        assert!(self.buf.is_empty(), "cloned with unread bytes buffered");
        RawPeer::new(self.stream.try_clone().expect("clone the socket"))
    }

    /// Reads more bytes into the buffer; false once the stream has ended or failed.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 << 10];
        match self.stream.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Takes exactly `n` bytes; `None` if the stream ends first.
    fn take(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill() {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }

    /// Reads the client's HTTP request head (up to the blank line); `None` if the client
    /// leaves first.
    pub fn read_http_request(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = self.take(end + 4)?;
                return Some(String::from_utf8_lossy(&head).into_owned());
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// Reads the HTTP request and answers it with a correct `101 Switching Protocols`.
    pub fn accept_handshake(&mut self) {
        let head = self.read_http_request().expect("no handshake request");
        let key = websocket_key(&head).expect("no Sec-WebSocket-Key in the request");
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        self.write_raw(response.as_bytes()).expect("write 101");
    }

    /// Writes bytes as they are.
    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Writes one unmasked, final text frame.
    pub fn send_text(&mut self, text: &str) -> io::Result<()> {
        self.write_raw(&frame(true, 0, TEXT, false, text.as_bytes()))
    }

    /// Writes an answer `{"id":<id>,"message":<message>}` with the id spelled as given: the
    /// way to send ids of the wrong type.
    pub fn send_answer(&mut self, id: &str, message: &serde_json::Value) -> io::Result<()> {
        self.send_text(&format!(r#"{{"id":{id},"message":{message}}}"#))
    }

    /// Writes a close frame with this status code.
    pub fn send_close(&mut self, code: u16) -> io::Result<()> {
        self.write_raw(&frame(true, 0, CLOSE, false, &code.to_be_bytes()))
    }

    /// Decodes one client frame (which must be masked, RFC 6455 §5.1) and returns it unmasked;
    /// `None` if the stream ends first.
    pub fn read_frame(&mut self) -> Option<ClientFrame> {
        let head = self.take(2)?;
        let (fin, opcode) = (head[0] & 0x80 != 0, head[0] & 0x0F);
        assert_eq!(head[0] & 0x70, 0, "client set reserved bits");
        assert!(head[1] & 0x80 != 0, "client sent an unmasked frame");
        let len = match head[1] & 0x7F {
            126 => u64::from(u16::from_be_bytes(self.take(2)?.try_into().unwrap())),
            127 => u64::from_be_bytes(self.take(8)?.try_into().unwrap()),
            n => u64::from(n),
        };
        assert!(len <= MAX_CLIENT_FRAME, "client frame of {len} bytes");
        let mask = self.take(4)?;
        let mut payload = self.take(len as usize)?;
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        Some(ClientFrame {
            fin,
            opcode,
            payload,
        })
    }

    /// Reads client frames until a close frame and returns its status code (1005 for a close
    /// frame without one), or `None` if the stream ends first.
    pub fn read_until_close(&mut self) -> Option<u16> {
        loop {
            let f = self.read_frame()?;
            if f.opcode == CLOSE {
                return Some(match f.payload.get(..2) {
                    Some(code) => u16::from_be_bytes([code[0], code[1]]),
                    None => 1005,
                });
            }
        }
    }

    /// Reads the next text frame as an envelope request, skipping control frames; `None` once
    /// the client is gone or closing.
    pub fn read_request(&mut self) -> Option<Request> {
        loop {
            let f = self.read_frame()?;
            match f.opcode {
                TEXT => {
                    assert!(f.fin, "the client fragmented a request");
                    let text = String::from_utf8(f.payload).expect("request is not UTF-8");
                    return Some(super::parse_request(&text));
                }
                CLOSE => return None,
                _ => continue,
            }
        }
    }

    /// Reads exactly `n` requests.
    pub fn read_requests(&mut self, n: usize) -> Vec<Request> {
        (0..n)
            .map(|i| {
                self.read_request()
                    .unwrap_or_else(|| panic!("client left after {i} of {n}"))
            })
            .collect()
    }

    /// Waits (bounded by the read timeout) until the client closes the TCP connection,
    /// discarding whatever it sends.
    pub fn wait_for_eof(&mut self) {
        self.buf.clear();
        while self.fill() {
            self.buf.clear();
        }
    }

    /// Ends the connection with a TCP RST rather than a FIN: `SO_LINGER` with a zero timeout,
    /// then close (RFC 793 abort).
    pub fn reset(self) {
        use std::os::fd::AsRawFd;
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: a valid socket descriptor and a correctly sized `linger` value.
        let rc = unsafe {
            libc::setsockopt(
                self.stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_LINGER: {}", io::Error::last_os_error());
        drop(self.stream);
    }
}

/// A loopback port that refuses connections for as long as this lives: a TCP socket bound to
/// it that never listens. (A port freed by dropping a listener could meanwhile be given to
/// another test's server, running in parallel.)
pub struct RefusingPort {
    _socket: std::os::fd::OwnedFd,
    pub addr: SocketAddr,
}

impl RefusingPort {
    pub fn new() -> RefusingPort {
        use std::os::fd::{FromRawFd, OwnedFd};
        // SAFETY: plain socket calls on a descriptor this function owns; the address
        // structures are correctly sized and initialised.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
            let socket = OwnedFd::from_raw_fd(fd);
            let mut sin: libc::sockaddr_in = std::mem::zeroed();
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let sa = (&mut sin as *mut libc::sockaddr_in).cast::<libc::sockaddr>();
            assert_eq!(
                libc::bind(fd, sa, len),
                0,
                "bind: {}",
                io::Error::last_os_error()
            );
            let mut got = len;
            assert_eq!(libc::getsockname(fd, sa, &mut got), 0, "getsockname");
            let port = u16::from_be(sin.sin_port);
            RefusingPort {
                _socket: socket,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
            }
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }
}

/// The `Sec-WebSocket-Key` of a request head.
pub fn websocket_key(head: &str) -> Option<String> {
    head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("sec-websocket-key")
            .then(|| value.trim().to_owned())
    })
}

/// A frame header announcing `len` payload bytes (RFC 6455 §5.2), in the shortest length
/// encoding; `rsv` holds the three reserved bits (0..=7); `mask` adds a masking key. Nothing
/// checks that the frame is legal, nor that `len` bytes follow.
pub fn frame_header(fin: bool, rsv: u8, opcode: u8, mask: Option<[u8; 4]>, len: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(14);
    out.push(u8::from(fin) << 7 | (rsv & 0x7) << 4 | (opcode & 0x0F));
    let masked = if mask.is_some() { 0x80 } else { 0 };
    match len {
        0..=125 => out.push(masked | len as u8),
        126..=0xFFFF => {
            out.push(masked | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(masked | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    if let Some(mask) = mask {
        out.extend_from_slice(&mask);
    }
    out
}

/// A whole frame, legal or not: header plus payload (masked with [`MASK`] when `masked`).
pub fn frame(fin: bool, rsv: u8, opcode: u8, masked: bool, payload: &[u8]) -> Vec<u8> {
    let mask = masked.then_some(MASK);
    let mut out = frame_header(fin, rsv, opcode, mask, payload.len() as u64);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(mask) = mask {
        for (i, b) in out[start..].iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    out
}
