//! [`Peer`]: how a simulated server behaves on each socket of its connection.

/// How a connect attempt ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Connect {
    /// The sockets and the handshakes succeed.
    Accept,
    /// The connect is refused.
    Refuse,
    /// Nothing ever answers: the connect timeout decides.
    Hang,
}

/// A simulated server's script. The default answers every request, pongs, and echoes a close,
/// with a 1-tick latency each way and a 1-tick connect.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub(crate) connect: Connect,
    /// Ticks until a connect attempt ends.
    pub(crate) connect_after: u64,
    /// One-way latency, in ticks.
    pub(crate) latency: u64,
    /// Ticks the server takes to answer, on top of the latency.
    pub(crate) think: u64,
    /// Whether requests are answered at all (a silent peer reads and says nothing).
    pub(crate) answers: bool,
    /// Whether every answer is sent twice.
    pub(crate) duplicate: bool,
    /// Whether later requests are answered first.
    pub(crate) reorder: bool,
    /// Whether a batch is answered with one frame per call rather than one array.
    pub(crate) split_batches: bool,
    /// Whether pings are answered.
    pub(crate) pong: bool,
    /// Whether our close frame is echoed (and the TCP connection then ended).
    pub(crate) echo_close: bool,
}

impl Default for Peer {
    fn default() -> Self {
        Peer {
            connect: Connect::Accept,
            connect_after: 1,
            latency: 1,
            think: 0,
            answers: true,
            duplicate: false,
            reorder: false,
            split_batches: false,
            pong: true,
            echo_close: true,
        }
    }
}

impl Peer {
    /// A peer that reads and never says anything: no answer, no pong, no close echo.
    pub(crate) fn silent() -> Self {
        Peer {
            answers: false,
            pong: false,
            echo_close: false,
            ..Peer::default()
        }
    }
}
