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
fn with_roots(roots: RootCertStore) -> Result<Arc<ClientConfig>, Error> {
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

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::time::Duration;

    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use rustls::{ServerConfig, ServerConnection};

    use super::*;
    use crate::driver::stream::Stream;

    /// A TLS session between our non-blocking client `Stream` and a server connection whose
    /// bytes the test moves by hand (`flight`), the handshake done.
    struct Pair {
        client: Stream,
        server: ServerConnection,
        peer: std::net::TcpStream,
    }

    fn pair() -> Pair {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &Issuer::new(ca, &ca_key))
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server_config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
            )
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(ca_cert.der().clone()).unwrap();
        let target = TlsTarget {
            config: with_roots(roots).unwrap(),
            name: ServerName::try_from("localhost").unwrap(),
        };

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (peer, _) = listener.accept().unwrap();
        ours.set_nonblocking(true).unwrap();
        let mut pair = Pair {
            client: Stream::with_tls(TcpStream::from_std(ours), target.session().unwrap()),
            server: ServerConnection::new(Arc::new(server_config)).unwrap(),
            peer,
        };
        // The handshake, one side then the other, until both are done.
        for _ in 0..1_000 {
            pair.client.on_event(false);
            let client_done = pair.client.tls_handshake().unwrap();
            if client_done && !pair.server.is_handshaking() && !pair.server.wants_write() {
                return pair;
            }
            pair.peer.set_nonblocking(true).unwrap();
            while let Ok(n) = pair.server.read_tls(&mut pair.peer) {
                if n == 0 {
                    break;
                }
                pair.server.process_new_packets().unwrap();
            }
            pair.peer.set_nonblocking(false).unwrap();
            let flight = pair.take_flight();
            pair.send(&flight);
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("the handshake did not finish");
    }

    impl Pair {
        /// The records the server has for the client, as bytes.
        fn take_flight(&mut self) -> Vec<u8> {
            let mut bytes = Vec::new();
            while self.server.wants_write() {
                self.server.write_tls(&mut bytes).unwrap();
            }
            bytes
        }

        /// Writes `bytes` to the client's socket and waits until its kernel buffer holds them.
        fn send(&mut self, bytes: &[u8]) {
            let before = self.pending();
            self.peer.write_all(bytes).unwrap();
            for _ in 0..10_000 {
                if self.pending() >= before + bytes.len() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            panic!("the bytes never arrived");
        }

        /// Bytes waiting in the client's socket.
        fn pending(&mut self) -> usize {
            let mut buf = vec![0u8; 1 << 16];
            self.client.tcp_mut().peek(&mut buf).unwrap_or(0)
        }

        fn read(&mut self, len: usize) -> io::Result<Vec<u8>> {
            let mut buf = vec![0u8; len];
            let n = self.client.read(&mut buf)?;
            buf.truncate(n);
            Ok(buf)
        }
    }

    fn would_block(result: io::Result<Vec<u8>>) -> bool {
        matches!(result, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// The interaction the drained shortcut must get right: one short TCP read brings four
    /// records; rustls decrypts all four, the caller reads one record's worth at a time, and
    /// every one of them is handed out without another readiness event, although the TCP
    /// read that brought them was short.
    #[test]
    fn plaintext_buffered_in_tls_is_read_out_after_a_short_tcp_read() {
        let mut pair = pair();
        for word in [b"aaaa", b"bbbb", b"cccc", b"dddd"] {
            pair.server.writer().write_all(word).unwrap(); // one record each
        }
        let flight = pair.take_flight();
        pair.send(&flight);
        pair.client.on_event(false);
        assert_eq!(pair.read(4).unwrap(), b"aaaa");
        // The TCP read asked rustls's buffer size (4 KiB) and got ~100 bytes: the kernel is
        // empty, but TLS still holds three records' plaintext.
        assert_eq!(pair.read(4).unwrap(), b"bbbb");
        assert_eq!(pair.read(4).unwrap(), b"cccc");
        assert_eq!(pair.read(4).unwrap(), b"dddd");
        // Now nothing is left anywhere: WouldBlock, and without a syscall (the next bytes
        // would raise an event).
        assert!(would_block(pair.read(4)));
    }

    /// A record split over two TCP segments: the first half reads as `WouldBlock` (a partial
    /// record is no plaintext), the event for the second half brings the whole record.
    #[test]
    fn a_record_split_across_reads_waits_for_its_second_half() {
        let mut pair = pair();
        pair.server.writer().write_all(&[7u8; 1000]).unwrap();
        let flight = pair.take_flight();
        let (first, second) = flight.split_at(flight.len() / 2);
        pair.send(first);
        pair.client.on_event(false);
        assert!(would_block(pair.read(2000)));
        // Without an event the stream trusts its short read, even with the rest in the kernel.
        pair.send(second);
        assert!(would_block(pair.read(2000)));
        pair.client.on_event(false);
        assert_eq!(pair.read(2000).unwrap(), vec![7u8; 1000]);
    }

    /// Writes are taken while no record waits, refused (`WouldBlock`) while records wait for
    /// a full socket, and `flush` says `WouldBlock` until the socket took them all.
    #[test]
    fn writes_wait_while_records_wait_for_the_socket() {
        let mut pair = pair();
        let chunk = vec![1u8; 16 << 10];
        let mut taken = 0;
        let refused = loop {
            match pair.client.write(&chunk) {
                Ok(n) => taken += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break true,
                Err(e) => panic!("{e}"),
            }
            assert!(taken < 256 << 20, "the socket never filled");
        };
        assert!(refused);
        let flushed = pair.client.flush();
        assert!(matches!(flushed, Err(e) if e.kind() == io::ErrorKind::WouldBlock));
        // The server drains everything; the client's records then all leave.
        let mut received = 0;
        let mut buf = vec![0u8; 1 << 16];
        let mut flushed = false;
        pair.peer.set_nonblocking(true).unwrap();
        for _ in 0..100_000 {
            match pair.server.read_tls(&mut pair.peer) {
                Ok(_) => {
                    pair.server.process_new_packets().unwrap();
                    while let Ok(n) = pair.server.reader().read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        received += n;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    flushed = pair.client.flush().is_ok();
                    if flushed && received == taken {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(flushed, "flush never completed");
        assert_eq!(received, taken);
    }
}
