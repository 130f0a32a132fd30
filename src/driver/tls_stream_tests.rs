//! Tests of a [`Stream`] over TLS: a client `Stream` and a rustls server connection whose
//! bytes the test moves by hand.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::ServerName;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{RootCertStore, ServerConfig, ServerConnection};

use super::*;
use crate::driver::tls::*;

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
    let target = TlsTarget::from_parts(
        with_roots(roots).unwrap(),
        ServerName::try_from("localhost").unwrap(),
    );

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
