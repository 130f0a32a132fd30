//! [`ConnectionConfig`], [`ReconnectPolicy`] and [`CallOptions`]: what a user can tune, with
//! documented defaults.

use std::sync::Arc;
use std::time::Duration;

use crate::core::codec::{Codec, Envelope};

/// Settings of one connection, given to [`Context::connect`](crate::Context::connect).
///
/// Every field has a sensible default; set the ones you need:
///
/// ```
/// use std::time::Duration;
/// use rpcloop::ConnectionConfig;
/// let config = ConnectionConfig {
///     default_timeout: Duration::from_millis(500),
///     max_in_flight: 1_024,
///     ..ConnectionConfig::default()
/// };
/// ```
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// Deadline of a call whose [`CallOptions::timeout`] is `None`. Default: 30 s.
    pub default_timeout: Duration,
    /// How long the TCP connect, the TLS handshake (`wss://`) and the WebSocket handshake may
    /// take together; past it the connection fails with
    /// [`DisconnectReason::ConnectTimeout`](crate::DisconnectReason). Default: 10 s.
    pub connect_timeout: Duration,
    /// After [`Context::close`](crate::Context::close), how long to wait for the peer's close
    /// frame before dropping the socket. Default: 5 s.
    pub close_timeout: Duration,
    /// Send a ping this often while the connection is open, whatever else is sent or received;
    /// `None` sends none (then a peer that vanishes without a FIN or RST goes unnoticed until
    /// the calls time out). Default: 30 s.
    pub ping_interval: Option<Duration>,
    /// After a ping, how long the peer has to send *anything* (its pong, an answer, a push);
    /// past it the peer is taken for dead and the connection ends with
    /// [`DisconnectReason::KeepaliveTimeout`](crate::DisconnectReason). Writing does not count:
    /// a client busy sending to a dead peer still notices. Default: 10 s.
    pub pong_timeout: Duration,
    /// Reconnect after the connection is lost, and how; `None` (the default) ends the
    /// connection for good at the first loss.
    pub reconnect: Option<ReconnectPolicy>,
    /// Calls that may be pending on this connection at once; past it `submit` fails with
    /// [`Error::Busy`](crate::Error::Busy). Default: 65,536.
    pub max_in_flight: usize,
    /// Largest message accepted in either direction, in bytes. A larger request fails with
    /// [`Error::TooLarge`](crate::Error::TooLarge); a larger incoming message ends the
    /// connection with close code 1009 as soon as its size is known, before it is buffered.
    /// Default: 16 MiB.
    pub max_message_size: usize,
    /// Largest incoming frame (one fragment of a message), in bytes. A frame announcing more
    /// ends the connection with close code 1009 on reading its header, before any of its
    /// payload is buffered. A frame under the limit may reserve its announced size as soon as
    /// its header arrives, so this is also what one stalled frame can cost. Default: 16 MiB.
    pub max_frame_size: usize,
    /// Bytes that may wait in the write buffer when the socket is slower than the calls (a peer
    /// that reads slowly, or not at all); past it `submit` fails with
    /// [`Error::Busy`](crate::Error::Busy) instead of growing memory, until the socket drains.
    /// Requests queued while the connection is not open count against it too. A single message
    /// that could not fit it even alone (its size plus a 14-byte frame header) is refused with
    /// [`Error::TooLarge`](crate::Error::TooLarge). Default: 64 MiB.
    pub max_write_buffer: usize,
    /// How deeply the arrays and objects of an incoming text frame may nest. A frame nested
    /// deeper is malformed ([`UnmatchedReason::Malformed`](crate::UnmatchedReason)): it is
    /// counted, handed to the message handler, and completes nothing, whatever id it carries.
    /// The depth is measured before the codec reads the frame, so it holds for every
    /// [`Codec`], a custom one too, and anything the codec hands on is at most this deep.
    /// Default: 128.
    pub max_nesting_depth: usize,
    /// Set `TCP_NODELAY`, so small requests leave at once. Default: `true`.
    pub nodelay: bool,
    /// Extra HTTP headers sent with the opening handshake (authentication, for example).
    pub headers: Vec<(String, String)>,
    /// The wire format of requests and answers. Default: [`Envelope`].
    pub codec: Arc<dyn Codec>,
    /// How a `wss://` connection verifies the server (ignored for `ws://`). Default:
    /// [`TlsConfig::WebPki`], Mozilla's root certificates.
    #[cfg(feature = "tls")]
    pub tls: TlsConfig,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            default_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            ping_interval: Some(Duration::from_secs(30)),
            pong_timeout: Duration::from_secs(10),
            reconnect: None,
            max_in_flight: 65_536,
            max_message_size: 16 << 20,
            max_frame_size: 16 << 20,
            max_write_buffer: 64 << 20,
            max_nesting_depth: 128,
            nodelay: true,
            headers: Vec::new(),
            codec: Arc::new(Envelope),
            #[cfg(feature = "tls")]
            tls: TlsConfig::default(),
        }
    }
}

/// How a `wss://` connection trusts the server: which root certificates, or a whole rustls
/// client configuration.
///
/// The server's certificate is always verified: its chain must lead to a trusted root, be
/// valid now, and name the URL's host (sent as SNI too). Failures end the connection with
/// [`DisconnectReason::Tls`](crate::DisconnectReason::Tls), naming the cause. There is no
/// switch to turn verification off; a server with its own CA is reached by trusting that CA:
///
/// ```
/// use rpcloop::rustls::RootCertStore;
/// use rpcloop::rustls::pki_types::{CertificateDer, pem::PemObject};
/// use rpcloop::{ConnectionConfig, TlsConfig};
///
/// # fn ca_pem() -> Vec<u8> { Vec::new() }
/// let mut roots = RootCertStore::empty();
/// for cert in CertificateDer::pem_slice_iter(&ca_pem()) {
///     roots.add(cert.expect("a PEM certificate")).expect("a CA certificate");
/// }
/// let config = ConnectionConfig {
///     tls: TlsConfig::Custom(roots),
///     ..ConnectionConfig::default()
/// };
/// ```
///
/// The rustls configuration is built when [`connect`](crate::Context::connect) is called and
/// reused by the connection's reconnects; the default one (Mozilla's roots) is built once per
/// process. rpcloop builds its configurations with rustls's `ring` provider, TLS 1.2 and 1.3.
#[cfg(feature = "tls")]
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum TlsConfig {
    /// Mozilla's root certificates, bundled in the binary (the `webpki-roots` crate): the
    /// same trust on every machine, nothing read from the system. The default.
    #[default]
    WebPki,
    /// The platform's certificate store (on Linux, the system's CA bundle; `SSL_CERT_FILE`
    /// and `SSL_CERT_DIR` are honoured), read once per process. Needs the `native-roots`
    /// feature.
    #[cfg(feature = "native-roots")]
    Native,
    /// These roots only: a private CA, or a pinned set.
    Custom(rustls::RootCertStore),
    /// A complete rustls client configuration, used as it is: client certificates, ALPN,
    /// another crypto provider, a verifier of your own. SNI still comes from the URL's host.
    ClientConfig(Arc<rustls::ClientConfig>),
}

/// How a lost connection comes back: exponential backoff with jitter, capped, optionally
/// limited in attempts.
///
/// The delay before attempt `n` (counted from 1) is drawn uniformly from
/// `[d * (1 - jitter), d]` where `d = min(initial_delay * multiplier^(n - 1), max_delay)`, so a
/// fleet of clients that lost the same server does not come back in lockstep. Attempts are
/// counted from the last time the connection stayed open for [`reset_after`](Self::reset_after):
/// a connection that flaps keeps backing off, and one that was stable for a day starts again
/// from `initial_delay` (a budget of attempts never runs out over weeks of healthy use).
///
/// Calls already written when the connection drops fail with
/// [`Error::Disconnected`](crate::Error::Disconnected): the server may have acted on them, and
/// they are never sent again. Calls not yet written (queued while the connection was down or
/// connecting) wait for the next connection, within their own deadlines.
///
/// ```
/// use std::time::Duration;
/// use rpcloop::{ConnectionConfig, ReconnectPolicy};
/// let config = ConnectionConfig {
///     reconnect: Some(ReconnectPolicy {
///         max_delay: Duration::from_secs(5),
///         ..ReconnectPolicy::default()
///     }),
///     ..ConnectionConfig::default()
/// };
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReconnectPolicy {
    /// The delay before the first attempt. Default: 250 ms.
    pub initial_delay: Duration,
    /// The cap on any delay. Default: 30 s.
    pub max_delay: Duration,
    /// How much each failed attempt multiplies the delay (values below 1 count as 1).
    /// Default: 2.
    pub multiplier: f64,
    /// Fraction of each delay left to chance, from 0 (none) to 1 (anywhere between 0 and the
    /// delay). Default: 0.5.
    pub jitter: f64,
    /// Consecutive failed attempts after which the connection gives up and ends; `None` tries
    /// forever. Default: `None`.
    pub max_attempts: Option<u32>,
    /// How long a connection must stay open for the backoff to start over. Default: 30 s.
    pub reset_after: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            initial_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.5,
            max_attempts: None,
            reset_after: Duration::from_secs(30),
        }
    }
}

/// Settings of one call, given to [`Context::submit_with`](crate::Context::submit_with).
///
/// ```
/// use std::time::Duration;
/// use rpcloop::CallOptions;
/// let options = CallOptions { timeout: Some(Duration::from_millis(250)), ..CallOptions::default() };
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallOptions {
    /// How long to wait for the answer, counted from submit; `None` takes the connection's
    /// [`ConnectionConfig::default_timeout`]. Timeouts longer than about a year are clamped.
    pub timeout: Option<Duration>,
}
