//! Stands in for `tls.rs` when the `tls` feature is off: `wss://` URLs are refused by
//! [`target`], so no value of these types ever exists and every path that would use one is
//! unreachable (the compiler knows it: they are empty enums).

use std::io;

use mio::net::TcpStream;

use crate::config::ConnectionConfig;
use crate::driver::tcp::Tcp;
use crate::error::{DisconnectReason, Error};

/// Never exists without the `tls` feature.
pub(crate) enum TlsTarget {}

/// Never exists without the `tls` feature.
pub(crate) enum TlsSession {}

/// Refuses: this build has no TLS.
pub(crate) fn target(_config: &ConnectionConfig, host: &str) -> Result<TlsTarget, Error> {
    Err(Error::InvalidUrl(format!(
        "wss://{host}: this build of rpcloop has no TLS (enable its `tls` feature)"
    )))
}

impl TlsTarget {
    pub(crate) fn session(&self) -> Result<TlsSession, DisconnectReason> {
        match *self {}
    }
}

impl TlsSession {
    pub(crate) fn handshake(&mut self, _tcp: &mut Tcp<'_>) -> Result<bool, DisconnectReason> {
        match *self {}
    }

    pub(crate) fn read(&mut self, _tcp: &mut Tcp<'_>, _buf: &mut [u8]) -> io::Result<usize> {
        match *self {}
    }

    pub(crate) fn write(&mut self, _tcp: &mut TcpStream, _buf: &[u8]) -> io::Result<usize> {
        match *self {}
    }

    pub(crate) fn flush(&mut self, _tcp: &mut TcpStream) -> io::Result<()> {
        match *self {}
    }

    pub(crate) fn close(&mut self, _tcp: &mut TcpStream) {
        match *self {}
    }
}
