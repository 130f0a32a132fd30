//! [`ConnectionConfig`] and [`CallOptions`]: what a user can tune, with documented defaults.

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
    /// How long the TCP connect and the WebSocket handshake may take together; past it the
    /// connection fails with [`DisconnectReason::ConnectTimeout`](crate::DisconnectReason).
    /// Default: 10 s.
    pub connect_timeout: Duration,
    /// After [`Context::close`](crate::Context::close), how long to wait for the peer's close
    /// frame before dropping the socket. Default: 5 s.
    pub close_timeout: Duration,
    /// Calls that may be pending on this connection at once; past it `submit` fails with
    /// [`Error::Busy`](crate::Error::Busy). Default: 65,536.
    pub max_in_flight: usize,
    /// Largest message accepted in either direction, in bytes. A larger request fails with
    /// [`Error::TooLarge`](crate::Error::TooLarge); a larger incoming message ends the
    /// connection. Default: 16 MiB.
    pub max_message_size: usize,
    /// Bytes that may wait in the write buffer when the socket is slower than the calls;
    /// past it `submit` fails with [`Error::Busy`](crate::Error::Busy). Default: 64 MiB.
    pub max_write_buffer: usize,
    /// Set `TCP_NODELAY`, so small requests leave at once. Default: `true`.
    pub nodelay: bool,
    /// Extra HTTP headers sent with the opening handshake (authentication, for example).
    pub headers: Vec<(String, String)>,
    /// The wire format of requests and answers. Default: [`Envelope`].
    pub codec: Arc<dyn Codec>,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            default_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            max_in_flight: 65_536,
            max_message_size: 16 << 20,
            max_write_buffer: 64 << 20,
            nodelay: true,
            headers: Vec::new(),
            codec: Arc::new(Envelope),
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
