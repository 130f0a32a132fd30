//! TLS for the loopback test servers: a small PKI made at test time with rcgen (a CA, and
//! server certificates good, wrongly named, self-signed and expired), the rustls server
//! configurations built on it, and the client settings that trust the CA.
//!
//! The certificates are made once per test binary (key generation is the slow part) and live
//! for its whole run. Every server certificate names `localhost`, `127.0.0.1` and `::1` unless
//! it is the wrongly named one, so the same loopback servers serve `wss://127.0.0.1:PORT/`.

use std::sync::{Arc, OnceLock};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

/// Which certificate a TLS test server presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cert {
    /// Signed by the test CA, for localhost, 127.0.0.1 and ::1: what a client trusting the
    /// CA accepts.
    Good,
    /// Signed by the test CA, for `wrong.test` only.
    WrongName,
    /// Self-signed, for localhost and 127.0.0.1: no root vouches for it.
    SelfSigned,
    /// Signed by the test CA, for localhost and 127.0.0.1, valid in 2000 only.
    Expired,
    /// As `Good`, on a server that also demands a client certificate signed by the test CA.
    GoodAskingForClientAuth,
}

/// The test PKI: made once, shared by every test of the binary.
pub struct Pki {
    /// The CA's certificate, PEM (what `examples/bench --ca` reads).
    pub ca_pem: String,
    ca: CertificateDer<'static>,
    good: (CertificateDer<'static>, PrivatePkcs8KeyDer<'static>),
    wrong_name: (CertificateDer<'static>, PrivatePkcs8KeyDer<'static>),
    self_signed: (CertificateDer<'static>, PrivatePkcs8KeyDer<'static>),
    expired: (CertificateDer<'static>, PrivatePkcs8KeyDer<'static>),
    /// A client certificate signed by the CA, and its key.
    pub client: (CertificateDer<'static>, PrivatePkcs8KeyDer<'static>),
}

pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(Pki::generate)
}

fn named(common_name: &str, sans: &[&str]) -> CertificateParams {
    let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(sans).expect("certificate parameters");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params
}

fn key_der(key: &KeyPair) -> PrivatePkcs8KeyDer<'static> {
    PrivatePkcs8KeyDer::from(key.serialize_der())
}

impl Pki {
    fn generate() -> Pki {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = named("rpcloop test CA", &[]);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca_params, &ca_key);
        let leaf = |name: &str, sans: &[&str], expired: bool| {
            let key = KeyPair::generate().expect("leaf key");
            let mut params = named(name, sans);
            if expired {
                params.not_before = rcgen::date_time_ymd(2000, 1, 1);
                params.not_after = rcgen::date_time_ymd(2001, 1, 1);
            }
            let cert = params.signed_by(&key, &issuer).expect("leaf certificate");
            (cert.der().clone(), key_der(&key))
        };
        let loopback = ["localhost", "127.0.0.1", "::1"];
        let good = leaf("rpcloop test server", &loopback, false);
        let wrong_name = leaf("wrong.test", &["wrong.test"], false);
        let expired = leaf("rpcloop expired server", &loopback, true);
        let client = leaf("rpcloop test client", &["client.test"], false);
        let self_signed = {
            let key = KeyPair::generate().expect("key");
            let cert = named("rpcloop self-signed", &loopback)
                .self_signed(&key)
                .expect("self-signed certificate");
            (cert.der().clone(), key_der(&key))
        };
        Pki {
            ca_pem: ca_cert.pem(),
            ca: ca_cert.der().clone(),
            good,
            wrong_name,
            self_signed,
            expired,
            client,
        }
    }

    /// A root store with the test CA only.
    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone()).expect("the test CA");
        roots
    }

    /// A server configuration presenting `cert` (with the CA after it, as servers send).
    pub fn server_config(&self, cert: Cert) -> Arc<ServerConfig> {
        let (leaf, key) = match cert {
            Cert::Good | Cert::GoodAskingForClientAuth => &self.good,
            Cert::WrongName => &self.wrong_name,
            Cert::SelfSigned => &self.self_signed,
            Cert::Expired => &self.expired,
        };
        let chain = if cert == Cert::SelfSigned {
            vec![leaf.clone()]
        } else {
            vec![leaf.clone(), self.ca.clone()]
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("protocol versions");
        let builder = if cert == Cert::GoodAskingForClientAuth {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(self.roots()), provider)
                    .build()
                    .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let config = builder
            .with_single_cert(chain, PrivateKeyDer::Pkcs8(key.clone_key()))
            .expect("server certificate");
        Arc::new(config)
    }
}
