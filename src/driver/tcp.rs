//! [`Tcp`]: a TCP stream that skips the read that could only say `WouldBlock`.
//!
//! mio's readiness is edge-triggered, so a connection is read until the socket has nothing
//! left. A read that returns fewer bytes than asked for has already emptied the kernel's
//! buffer: anything arriving later raises a new edge, and so a new event. After such a short
//! read, [`Tcp`] answers `WouldBlock` itself until the next event (as tokio does, for the same
//! reason), which saves one `recvfrom` per readiness event. A peer's FIN that arrived before
//! the data was read raises no further edge, and only a read returning 0 reveals it: once an
//! event reports the read side closed (or an error), every read goes to the socket.
//!
//! Both the plain stream ([`Stream`](super::stream::Stream)) and the TLS session (which reads
//! its records through it) sit on this.

use std::io::{self, Read, Write};

use mio::net::TcpStream;

/// What is known of the kernel's receive buffer since the last readiness event.
#[derive(Debug, Default)]
pub(crate) struct RecvState {
    /// A read came back short since the last readiness event: the socket has nothing more.
    drained: bool,
    /// An event reported the peer's FIN or an error: never assume drained again.
    read_closed: bool,
}

impl RecvState {
    /// Whether a short read said the socket has nothing more until the next event.
    #[cfg(test)]
    pub(crate) fn drained(&self) -> bool {
        self.drained
    }

    /// A readiness event arrived: the socket may have something to read again; `read_closed`
    /// when the event reported the peer's FIN or an error.
    pub(crate) fn on_event(&mut self, read_closed: bool) {
        self.drained = false;
        self.read_closed |= read_closed;
    }
}

/// A TCP stream borrowed with its [`RecvState`]: reads skip the syscall that could only say
/// `WouldBlock`; writes go straight to the socket.
pub(crate) struct Tcp<'a> {
    pub(crate) stream: &'a mut TcpStream,
    pub(crate) recv: &'a mut RecvState,
}

impl Read for Tcp<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.recv.drained {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match self.stream.read(buf) {
            Ok(n) => {
                self.recv.drained = n > 0 && n < buf.len() && !self.recv.read_closed;
                Ok(n)
            }
            Err(e) => {
                self.recv.drained = e.kind() == io::ErrorKind::WouldBlock;
                Err(e)
            }
        }
    }
}

impl Write for Tcp<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.stream.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}
