//! TLS for `wss://`: a rustls client session over the connection's non-blocking TCP stream,
//! driven by the same readiness events as everything else.
//!
//! The shape (rustls's `tlsclient-mio` example has it too): TCP bytes go into rustls with
//! `read_tls` and come out as plaintext after `process_new_packets`; plaintext goes in through
//! `writer()` and leaves as records with `write_tls`. rustls never touches the socket itself,
//! so every step is one the loop chose, and `WouldBlock` is only ever the socket's word.
//!
//! - **Handshake.** After the TCP connect, [`TlsSession::handshake`] pushes the ClientHello and
//!   reads the server's flights on each readiness event until rustls is no longer handshaking;
//!   only then does the WebSocket handshake start, over the established session. The
//!   connect timeout covers all three stages.
//! - **Reading.** Plaintext rustls already decrypted is handed out before anything else. Only
//!   when none is left does the session read more records from the socket, through
//!   [`Tcp`], whose "a short read means drained" shortcut is about the kernel's buffer alone
//!   (see `stream.rs`). Every `read_tls` is followed by `process_new_packets`, which decrypts
//!   every complete record read, so no record waits unprocessed while the loop sleeps.
//! - **Writing.** Plaintext is accepted only while no encrypted record waits for the socket;
//!   otherwise the write says `WouldBlock`, as a full socket would. So rustls holds at most one
//!   buffer limit's worth (64 KiB by default) of records, tungstenite's write buffer stays the
//!   one bounded by `max_write_buffer`, and `flush` says `WouldBlock` while records wait, which
//!   is what makes the connection ask for WRITABLE.
//! - **Errors.** A rustls error becomes a [`TlsFailure`] naming the cause, carried in an
//!   `io::Error` through tungstenite and turned into [`DisconnectReason::Tls`] at the top.

use std::io::{self, Read, Write};
use std::sync::{Arc, OnceLock};

use mio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{CertificateError, ClientConfig, ClientConnection, RootCertStore};

use crate::config::{ConnectionConfig, TlsConfig};
use crate::driver::tcp::Tcp;
use crate::error::{DisconnectReason, Error, TlsErrorKind, TlsFailure};

/// What a `wss://` connection needs to open a TLS session, on every (re)connect: the client
/// configuration (built once, at `connect`) and the name the certificate must carry (the URL's
/// host, also sent as SNI when it is a DNS name).
pub(crate) struct TlsTarget {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

/// The TLS target of a `wss://` URL whose host is `host`.
///
/// # Errors
/// [`Error::InvalidUrl`] if the host is not a name or address a certificate can be checked
/// against; [`Error::Io`] if the platform's certificate store cannot be read
/// (`TlsConfig::Native`).
pub(crate) fn target(config: &ConnectionConfig, host: &str) -> Result<TlsTarget, Error> {
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| Error::InvalidUrl(format!("{host} is not a host name TLS can verify: {e}")))?;
    let config = match &config.tls {
        TlsConfig::WebPki => webpki_config()?,
        #[cfg(feature = "native-roots")]
        TlsConfig::Native => native_config()?,
        TlsConfig::Custom(roots) => with_roots(roots.clone())?,
        TlsConfig::ClientConfig(config) => config.clone(),
    };
    Ok(TlsTarget { config, name })
}

impl TlsTarget {
    /// A target from its parts, for the tests of a `Stream` over TLS.
    #[cfg(test)]
    pub(super) fn from_parts(config: Arc<ClientConfig>, name: ServerName<'static>) -> Self {
        TlsTarget { config, name }
    }

    /// A fresh session, for one connect attempt.
    pub(crate) fn session(&self) -> Result<TlsSession, DisconnectReason> {
        match ClientConnection::new(self.config.clone(), self.name.clone()) {
            Ok(conn) => Ok(TlsSession {
                conn,
                failed: false,
            }),
            Err(e) => Err(TlsFailure::new(TlsErrorKind::Config, e).into_reason()),
        }
    }
}

/// A client configuration trusting `roots`, on rustls's `ring` provider.
///
/// The provider is named here rather than taken from the process default, so an application
/// that also links another provider does not make rustls panic for want of a default.
pub(super) fn with_roots(roots: RootCertStore) -> Result<Arc<ClientConfig>, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Io(io::Error::other(e)))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The default configuration, Mozilla's roots: built once per process, shared by every
/// connection (building a root store of ~150 anchors on every connect would be waste).
fn webpki_config() -> Result<Arc<ClientConfig>, Error> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    if let Some(config) = CONFIG.get() {
        return Ok(config.clone());
    }
    let roots = RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let config = with_roots(roots)?;
    Ok(CONFIG.get_or_init(|| config).clone())
}

/// The platform's roots, read once per process (a failure is not remembered: the next
/// connect tries again).
#[cfg(feature = "native-roots")]
fn native_config() -> Result<Arc<ClientConfig>, Error> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    if let Some(config) = CONFIG.get() {
        return Ok(config.clone());
    }
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(Error::Io(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "no usable root certificate in the platform's store ({})",
                if errors.is_empty() {
                    "it is empty".to_owned()
                } else {
                    errors.join("; ")
                }
            ),
        )));
    }
    let config = with_roots(roots)?;
    Ok(CONFIG.get_or_init(|| config).clone())
}

/// One connection's TLS session.
pub(crate) struct TlsSession {
    conn: ClientConnection,
    /// The session failed: no `close_notify` on the way out.
    failed: bool,
}

impl TlsSession {
    /// Moves the handshake along: sends what rustls has for the server, reads and processes
    /// what the server sent, until the socket would block (`Ok(false)`) or the handshake is
    /// done (`Ok(true)`).
    pub(crate) fn handshake(&mut self, tcp: &mut Tcp<'_>) -> Result<bool, DisconnectReason> {
        loop {
            self.push(tcp.stream).map_err(interrupted)?;
            if !self.conn.is_handshaking() {
                return Ok(true);
            }
            let n = match self.conn.read_tls(tcp) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(interrupted(e)),
            };
            if let Err(e) = self.conn.process_new_packets() {
                return Err(self.fail(tcp.stream, &e).into_reason());
            }
            if n == 0 && self.conn.is_handshaking() {
                return Err(TlsFailure::new(
                    TlsErrorKind::HandshakeInterrupted,
                    "the server closed the connection",
                )
                .into_reason());
            }
        }
    }

    /// Reads plaintext: what rustls holds first, then, only when it holds none, more records
    /// from the socket (which is where `WouldBlock` can come from).
    ///
    /// A TCP end without `close_notify` reads as a plain end of stream: WebSocket has its own
    /// close handshake, so tungstenite tells a truncated stream (no close frame) from a
    /// finished one, and many servers never send `close_notify`.
    pub(crate) fn read(&mut self, tcp: &mut Tcp<'_>, buf: &mut [u8]) -> io::Result<usize> {
        if self.conn.wants_write() {
            // Records the last read produced (a key update's answer) that the socket did not
            // take then. A failure here shows on the next write; reading goes on.
            let _ = self.push(tcp.stream);
        }
        loop {
            match self.conn.reader().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                other => return other,
            }
            // Nothing decrypted is left: fetch more records. After a short TCP read this says
            // `WouldBlock` without a syscall, rightly: rustls holds no plaintext, every record
            // read so far has been processed, and what arrives next raises a new event.
            match self.conn.read_tls(tcp) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if let Err(e) = self.conn.process_new_packets() {
                return Err(self.fail(tcp.stream, &e).into_io());
            }
            if self.conn.wants_write() {
                let _ = self.push(tcp.stream);
            }
        }
    }

    /// Takes plaintext to encrypt, unless records wait for the socket already: then
    /// `WouldBlock`, so that what rustls buffers stays bounded.
    pub(crate) fn write(&mut self, tcp: &mut TcpStream, buf: &[u8]) -> io::Result<usize> {
        self.push(tcp)?;
        if self.conn.wants_write() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.conn.writer().write(buf)?;
        self.push(tcp)?;
        Ok(n)
    }

    /// Writes the records waiting; `WouldBlock` if the socket could not take them all.
    pub(crate) fn flush(&mut self, tcp: &mut TcpStream) -> io::Result<()> {
        self.push(tcp)?;
        if self.conn.wants_write() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(())
    }

    /// Sends `close_notify` if the session is established and healthy, best effort.
    pub(crate) fn close(&mut self, tcp: &mut TcpStream) {
        if self.failed || self.conn.is_handshaking() {
            return;
        }
        self.conn.send_close_notify();
        let _ = self.push(tcp);
    }

    /// Writes records until none is left or the socket would block (`Ok` either way).
    fn push(&mut self, tcp: &mut TcpStream) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(tcp) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// rustls refused what the server sent: send the alert it queued (telling the server
    /// why), and name the cause.
    fn fail(&mut self, tcp: &mut TcpStream, e: &rustls::Error) -> TlsFailure {
        self.failed = true;
        let _ = self.push(tcp);
        failure(e)
    }
}

/// The failure a rustls error stands for, by cause.
fn failure(e: &rustls::Error) -> TlsFailure {
    use CertificateError as C;
    use rustls::Error as E;
    let kind = match e {
        E::InvalidCertificate(cert) => match cert {
            C::UnknownIssuer => TlsErrorKind::UnknownIssuer,
            C::NotValidForName | C::NotValidForNameContext { .. } => TlsErrorKind::NameMismatch,
            C::Expired | C::ExpiredContext { .. } => TlsErrorKind::Expired,
            C::NotValidYet | C::NotValidYetContext { .. } => TlsErrorKind::NotYetValid,
            C::Revoked => TlsErrorKind::Revoked,
            _ => TlsErrorKind::BadCertificate,
        },
        E::InvalidCertRevocationList(_) => TlsErrorKind::BadCertificate,
        E::AlertReceived(_) => TlsErrorKind::AlertReceived,
        E::FailedToGetCurrentTime
        | E::FailedToGetRandomBytes
        | E::EncryptError
        | E::BadMaxFragmentSize
        | E::InconsistentKeys(_) => TlsErrorKind::Config,
        _ => TlsErrorKind::Protocol,
    };
    TlsFailure::new(kind, e)
}

/// A socket error in the middle of the handshake.
fn interrupted(e: io::Error) -> DisconnectReason {
    TlsFailure::new(TlsErrorKind::HandshakeInterrupted, e).into_reason()
}
