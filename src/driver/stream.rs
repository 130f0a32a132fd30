//! [`Stream`]: the TCP stream under a WebSocket, which skips the read that would only say
//! `WouldBlock`.
//!
//! mio's readiness is edge-triggered, so a connection is read until the socket has nothing
//! left. tungstenite reads until a read returns `WouldBlock`, which costs one more `recvfrom`
//! per readiness event. But a read that returns fewer bytes than asked for has already emptied
//! the kernel's buffer: anything arriving later raises a new edge, and so a new event. After
//! such a short read, `Stream` answers `WouldBlock` itself until the next event (as tokio does,
//! for the same reason).
//!
//! One exception: a peer's FIN that arrived before the data was read raises no further edge,
//! and only a read returning 0 reveals it. Once an event reports the read side closed (or an
//! error), every read goes to the socket.

use std::io::{self, Read, Write};

use mio::net::TcpStream;

/// A [`TcpStream`] that remembers whether its receive buffer is known to be empty.
#[derive(Debug)]
pub(crate) struct Stream {
    tcp: TcpStream,
    /// A read came back short since the last readiness event: the socket has nothing more.
    drained: bool,
    /// An event reported the peer's FIN or an error: never assume drained again.
    read_closed: bool,
}

impl Stream {
    pub(crate) fn new(tcp: TcpStream) -> Self {
        Stream {
            tcp,
            drained: false,
            read_closed: false,
        }
    }

    pub(crate) fn tcp_mut(&mut self) -> &mut TcpStream {
        &mut self.tcp
    }

    /// A readiness event arrived: the socket may have something to read again.
    pub(crate) fn on_event(&mut self, read_closed: bool) {
        self.drained = false;
        self.read_closed |= read_closed;
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.drained {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match self.tcp.read(buf) {
            Ok(n) => {
                self.drained = n > 0 && n < buf.len() && !self.read_closed;
                Ok(n)
            }
            Err(e) => {
                self.drained = e.kind() == io::ErrorKind::WouldBlock;
                Err(e)
            }
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tcp.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.tcp.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
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
            !stream.drained,
            "a short read after a reported FIN must not be trusted"
        );
        assert_eq!(
            read_some(&mut stream, &mut buf),
            0,
            "then the end of the stream"
        );
    }
}
