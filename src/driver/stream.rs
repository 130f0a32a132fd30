//! [`Stream`]: the socket under a WebSocket, plain TCP or TLS over it.
//!
//! Its TCP reads go through [`Tcp`], which skips the read that could only say `WouldBlock`
//! (see `tcp.rs`). That shortcut is about the *kernel's* buffer, so it is applied to TCP reads
//! only, and with TLS that is the reads rustls makes to fetch records. A short TCP read says
//! nothing of what TLS holds: one read may bring several records whose plaintext rustls keeps
//! until asked. So a TLS stream hands out decrypted plaintext first, and only when none is left
//! asks [`Tcp`] for more records, which is when the shortcut may answer `WouldBlock` (see
//! `tls.rs`).

use std::io::{self, Read, Write};

use mio::net::TcpStream;

use crate::driver::tcp::{RecvState, Tcp};
use crate::driver::tls::TlsSession;

/// A connection's socket: a [`TcpStream`] that remembers whether its receive buffer is known
/// to be empty, with a TLS session over it for `wss://`.
pub(crate) struct Stream {
    tcp: TcpStream,
    recv: RecvState,
    tls: Option<Box<TlsSession>>,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("tcp", &self.tcp)
            .field("recv", &self.recv)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Stream {
    pub(crate) fn new(tcp: TcpStream) -> Self {
        Stream {
            tcp,
            recv: RecvState::default(),
            tls: None,
        }
    }

    /// A stream whose bytes go through `tls` (its handshake still to do: [`Self::tls_handshake`]).
    pub(crate) fn with_tls(tcp: TcpStream, tls: TlsSession) -> Self {
        Stream {
            tcp,
            recv: RecvState::default(),
            tls: Some(Box::new(tls)),
        }
    }

    pub(crate) fn tcp_mut(&mut self) -> &mut TcpStream {
        &mut self.tcp
    }

    /// A readiness event arrived: the socket may have something to read again.
    pub(crate) fn on_event(&mut self, read_closed: bool) {
        self.recv.on_event(read_closed);
    }

    /// Moves the TLS handshake along as far as the socket allows: `Ok(true)` once it is done
    /// (at once for a plain stream), `Ok(false)` while it waits for the peer.
    ///
    /// # Errors
    /// The reason the connection must fail: a refused certificate, an alert, the peer gone.
    pub(crate) fn tls_handshake(&mut self) -> Result<bool, crate::error::DisconnectReason> {
        let mut tcp = Tcp {
            stream: &mut self.tcp,
            recv: &mut self.recv,
        };
        match &mut self.tls {
            None => Ok(true),
            Some(tls) => tls.handshake(&mut tcp),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut tcp = Tcp {
            stream: &mut self.tcp,
            recv: &mut self.recv,
        };
        match &mut self.tls {
            None => tcp.read(buf),
            Some(tls) => tls.read(&mut tcp, buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.tls {
            None => self.tcp.write(buf),
            Some(tls) => tls.write(&mut self.tcp, buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match &mut self.tls {
            None => self.tcp.write_vectored(bufs),
            Some(tls) => {
                let buf = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
                tls.write(&mut self.tcp, buf)
            }
        }
    }

    /// With TLS, `WouldBlock` while encrypted records wait for the socket to take them: the
    /// connection then asks for WRITABLE, as it does for tungstenite's own buffer.
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.tls {
            None => self.tcp.flush(),
            Some(tls) => tls.flush(&mut self.tcp),
        }
    }
}

impl Drop for Stream {
    /// A TLS session that ends while healthy says so (`close_notify`, RFC 8446 §6.1), best
    /// effort: the socket is non-blocking and about to close.
    fn drop(&mut self) {
        if let Some(tls) = &mut self.tls {
            tls.close(&mut self.tcp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A connected pair: our non-blocking `Stream` and a blocking peer.
    fn pair() -> (Stream, std::net::TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (peer, _) = listener.accept().unwrap();
        ours.set_nonblocking(true).unwrap();
        (Stream::new(TcpStream::from_std(ours)), peer)
    }

    /// Reads until something arrives (the peer's bytes cross loopback asynchronously).
    fn read_some(stream: &mut Stream, buf: &mut [u8]) -> usize {
        for _ in 0..10_000 {
            stream.on_event(false);
            match stream.read(buf) {
                Ok(n) => return n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("nothing arrived");
    }

    #[test]
    fn a_short_read_skips_reads_until_the_next_event() {
        let (mut stream, mut peer) = pair();
        peer.write_all(b"hello").unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(read_some(&mut stream, &mut buf), 5);
        // More data arrives (peek until the kernel holds it), but without an event the stream
        // trusts its short read...
        peer.write_all(b"world").unwrap();
        let mut peeked = 0;
        for _ in 0..10_000 {
            peeked = stream.tcp.peek(&mut buf).unwrap_or(0);
            if peeked == 5 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(peeked, 5, "the second write never arrived");
        let err = stream.read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        // ...and the event that new data raises lets the read through.
        assert_eq!(read_some(&mut stream, &mut buf), 5);
        assert_eq!(&buf[..5], b"world");
    }

    #[test]
    fn a_full_read_keeps_reading() {
        let (mut stream, mut peer) = pair();
        peer.write_all(&[7u8; 100]).unwrap();
        let mut small = [0u8; 10];
        assert_eq!(read_some(&mut stream, &mut small), 10);
        // The buffer was filled: more may be waiting, so the next read goes to the socket.
        assert_eq!(stream.read(&mut small).unwrap(), 10);
    }

    #[test]
    fn after_a_fin_is_reported_a_short_read_is_not_trusted() {
        let (mut stream, mut peer) = pair();
        peer.write_all(b"bye").unwrap();
        peer.shutdown(std::net::Shutdown::Write).unwrap();
        // The event reports the FIN: the short read that returns the data must leave the
        // next read to the socket, which alone can reveal the end of the stream.
        let mut buf = [0u8; 64];
        let n = {
            let mut n = 0;
            for _ in 0..10_000 {
                stream.on_event(true);
                match stream.read(&mut buf) {
                    Ok(got) => {
                        n = got;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(std::time::Duration::from_millis(1))
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            n
        };
        assert_eq!(&buf[..n], b"bye");
        assert!(
            !stream.recv.drained(),
            "a short read after a reported FIN must not be trusted"
        );
        assert_eq!(
            read_some(&mut stream, &mut buf),
            0,
            "then the end of the stream"
        );
    }
}

#[cfg(test)]
#[path = "tls_stream_tests.rs"]
mod tls_tests;
