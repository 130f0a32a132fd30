//! TLS for the CLI tests: a CA and a server certificate for `localhost` and 127.0.0.1, made at
//! test time with rcgen, and a loopback `wss://` echo server (blocking rustls under
//! `tungstenite::accept`) that presents it.
//!
//! The certificates are made once per test binary; the CA is written as PEM to a file under
//! the target directory, for `--ca`.

use std::io;
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use tungstenite::Message;

/// The test CA and the server's certificate chain and key.
pub struct Pki {
    /// The CA's certificate, PEM.
    pub ca_pem: String,
    config: Arc<ServerConfig>,
}

/// The PKI, made once per test binary (key generation is the slow part).
pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let named = |common_name: &str, sans: &[&str]| {
            let sans = sans.iter().map(|s| s.to_string()).collect::<Vec<_>>();
            let mut params = CertificateParams::new(sans).expect("certificate parameters");
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, common_name);
            params.distinguished_name = dn;
            params
        };
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = named("rpcloop-cli test CA", &[]);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca_params, &ca_key);
        let key = KeyPair::generate().expect("server key");
        let leaf = named("rpcloop-cli test server", &["localhost", "127.0.0.1"])
            .signed_by(&key, &issuer)
            .expect("server certificate");
        let chain: Vec<CertificateDer<'static>> = vec![leaf.der().clone(), ca.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server configuration");
        Pki {
            ca_pem: ca.pem(),
            config: Arc::new(config),
        }
    })
}

/// Writes the test CA to `name` under the target directory's scratch space; returns its path.
pub fn ca_file(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, &pki().ca_pem).expect("write the CA file");
    path
}

/// A loopback `wss://` server that accepts one client and echoes its text messages.
pub struct TlsEcho {
    pub port: u16,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl TlsEcho {
    /// Listens on port 0 of the first address `localhost` resolves to (127.0.0.1 on most
    /// machines), the one the library connects to. Every read times out, so a client that never comes (or
    /// stops talking) does not keep the thread forever.
    pub fn start() -> TlsEcho {
        let config = pki().config.clone();
        let localhost = ("localhost", 0)
            .to_socket_addrs()
            .expect("resolve localhost")
            .next()
            .expect("localhost has an address");
        let listener = TcpListener::bind(localhost).expect("bind");
        let port = listener.local_addr().expect("local address").port();
        let thread = std::thread::spawn(move || -> io::Result<()> {
            let (tcp, _) = listener.accept()?;
            serve(tcp, config)
        });
        TlsEcho {
            port,
            thread: Some(thread),
        }
    }

    /// `wss://localhost:PORT/`: the name the certificate is for.
    pub fn url(&self) -> String {
        format!("wss://localhost:{}/", self.port)
    }

    /// Waits for the server to be done with its client; the outcome of the TLS and WebSocket
    /// handshakes and the echo (an error when the client refused the certificate).
    pub fn join(mut self) -> io::Result<()> {
        self.thread
            .take()
            .expect("joined once")
            .join()
            .expect("server thread panicked")
    }
}

fn serve(tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<()> {
    tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
    tcp.set_nodelay(true)?;
    let tls = ServerConnection::new(config).map_err(io::Error::other)?;
    let mut ws = tungstenite::accept(StreamOwned::new(tls, tcp))
        .map_err(|e| io::Error::other(e.to_string()))?;
    loop {
        match ws.read() {
            Ok(Message::Text(text)) => ws.send(Message::Text(text)).map_err(io::Error::other)?,
            Ok(Message::Close(_)) => {
                let _ = ws.flush();
            }
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                return Ok(());
            }
            Err(e) => return Err(io::Error::other(e)),
        }
    }
}
