//! The client side of the WebSocket opening handshake (RFC 6455 §4.1), sans-IO.
//!
//! [`OpeningHandshake`] owns every decision about the handshake: what request goes out, when
//! the server's response head is complete, and whether that response opens the connection.
//! The driver only moves bytes: it writes [`OpeningHandshake::pending_request`] and reports
//! how much the socket took ([`OpeningHandshake::handle_written`]), and it feeds whatever it
//! reads to [`OpeningHandshake::handle_read`], which answers with an [`Outcome`].
//!
//! Why not tungstenite's own handshake machine: it is shared with the server role and guards
//! servers against slow-loris clients with an "attack check" that fails the handshake after
//! 64 reads averaging under 128 bytes. On a client that check refuses a correct response that
//! a slow proxy, a tunnel or a loaded server sends a few bytes at a time. Here the only limits
//! are on what matters: the response head may take at most [`MAX_HEAD`] bytes, and (in the
//! driver) the whole connect at most `ConnectionConfig::connect_timeout`, however the bytes
//! are split. Scanning for the end of the head is incremental, so a head fed one byte at a
//! time costs time in proportion to its length, never to its square.

use tungstenite::handshake::client::{Request, Response, generate_request};
use tungstenite::handshake::derive_accept_key;
use tungstenite::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version};

/// The longest response head accepted, its final empty line included: a server whose header
/// lines go on past this fails the handshake rather than grow our buffer without bound.
pub(crate) const MAX_HEAD: usize = 64 << 10;

/// The most header lines a response head may have (tungstenite's limit too).
const MAX_HEADERS: usize = 124;

/// How much of a peer's value an error text quotes.
const SHOWN_CHARS: usize = 200;

const UPGRADE: &str = "Upgrade";
const CONNECTION: &str = "Connection";
const ACCEPT: &str = "Sec-WebSocket-Accept";
const PROTOCOL: &str = "Sec-WebSocket-Protocol";
const EXTENSIONS: &str = "Sec-WebSocket-Extensions";

/// Where the handshake stands after the bytes just read.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The response head has not ended yet: read more.
    Waiting,
    /// The server accepted the upgrade: the connection is open.
    Open(Box<Opened>),
    /// The connection must fail, for this reason (a sentence for `DisconnectReason::Handshake`).
    Failed(String),
}

/// What an accepted handshake leaves: the server's response, and the bytes that came right
/// behind its head, which are already WebSocket frames (a server may send messages at once).
#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) response: Response,
    pub(crate) tail: Vec<u8>,
}

/// The client's opening handshake: the request to send, then the server's response to read
/// and verify.
#[derive(Debug)]
pub(crate) struct OpeningHandshake {
    /// The request, as tungstenite writes it.
    request: Vec<u8>,
    /// How much of `request` the socket has taken.
    written: usize,
    /// The `Sec-WebSocket-Accept` value our key calls for.
    expected_accept: String,
    /// The subprotocols offered (`Sec-WebSocket-Protocol`), `None` when the request offers none.
    offered_subprotocols: Option<Vec<String>>,
    /// The extension names offered (`Sec-WebSocket-Extensions`, from configured headers).
    offered_extensions: Vec<String>,
    /// The response head read so far (at most [`MAX_HEAD`] bytes).
    head: Vec<u8>,
    /// Where the line being read starts in `head` (just after the last line feed).
    line_start: usize,
    /// An outcome other than `Waiting` was given: nothing more is read.
    finished: bool,
}

impl OpeningHandshake {
    /// The handshake for `request` (as `IntoClientRequest` makes it, its configured headers
    /// added). The request must carry a `Sec-WebSocket-Key`; `into_client_request` puts a
    /// random one in, and a test (or a fuzz target) may put a fixed one instead, which makes
    /// the expected `Sec-WebSocket-Accept` known.
    ///
    /// # Errors
    /// Why the request cannot be sent: tungstenite's `generate_request` refuses it (no
    /// `Sec-WebSocket-Key`, or a handshake header whose value is not text).
    pub(crate) fn new(request: Request) -> Result<Self, String> {
        let offered_subprotocols = {
            let mut values = request.headers().get_all(PROTOCOL).iter().peekable();
            values
                .peek()
                .is_some()
                .then(|| values.flat_map(list).map(str::to_owned).collect())
        };
        let offered_extensions = request
            .headers()
            .get_all(EXTENSIONS)
            .iter()
            .flat_map(|value| {
                extension_names(&text(value))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect();
        let (request, key) =
            generate_request(request).map_err(|e| format!("the request cannot be sent: {e}"))?;
        Ok(OpeningHandshake {
            request,
            written: 0,
            expected_accept: derive_accept_key(key.as_bytes()),
            offered_subprotocols,
            offered_extensions,
            head: Vec::new(),
            line_start: 0,
            finished: false,
        })
    }

    /// The request bytes the socket has not taken yet (empty once it is all written).
    pub(crate) fn pending_request(&self) -> &[u8] {
        self.request.get(self.written..).unwrap_or_default()
    }

    /// The socket took `n` more bytes of [`pending_request`](Self::pending_request).
    pub(crate) fn handle_written(&mut self, n: usize) {
        self.written = self.written.saturating_add(n).min(self.request.len());
    }

    /// Takes bytes read from the server. Returns [`Outcome::Waiting`] until the response head
    /// has ended, then the verdict on it; after a verdict, nothing more is taken.
    ///
    /// RFC 7230 §3: the head is the status line and the header lines, ended by an empty line
    /// (line feeds alone are accepted as line ends, as §3.5 allows and httparse does).
    pub(crate) fn handle_read(&mut self, bytes: &[u8]) -> Outcome {
        if self.finished {
            return Outcome::Failed("bytes read after the handshake was over".into());
        }
        let outcome = self.scan(bytes);
        if !matches!(outcome, Outcome::Waiting) {
            self.finished = true;
            self.head = Vec::new();
        }
        outcome
    }

    /// The server closed the connection (a read returned 0): the handshake cannot finish.
    pub(crate) fn handle_eof(&mut self) -> Outcome {
        self.finished = true;
        let got = std::mem::take(&mut self.head).len();
        Outcome::Failed(if got == 0 {
            "the server closed the connection without answering the upgrade request".into()
        } else {
            format!(
                "the server closed the connection in the middle of its handshake response \
                 ({got} bytes of its head received)"
            )
        })
    }

    /// How many bytes of the response head are held (at most [`MAX_HEAD`]); for the fuzz
    /// target, which checks that bound.
    #[cfg(fuzzing)]
    pub(crate) fn buffered(&self) -> usize {
        self.head.len()
    }

    /// Appends `bytes` to the head until it ends, fails, or `bytes` run out.
    fn scan(&mut self, bytes: &[u8]) -> Outcome {
        const STATUS_LINE_START: &[u8] = b"HTTP/";
        for (i, &byte) in bytes.iter().enumerate() {
            self.head.push(byte);
            let len = self.head.len();
            // RFC 7230 §3.1.2: a response begins with its status line, `HTTP/1.1 101 ...`.
            // Anything else is not HTTP: say so at once, not after 64 KiB or the timeout.
            if len <= STATUS_LINE_START.len() && byte != STATUS_LINE_START[len - 1] {
                let rest = bytes.get(i + 1..).unwrap_or_default();
                let start: Vec<u8> = self.head.iter().chain(rest).copied().take(24).collect();
                return Outcome::Failed(format!(
                    "the server did not answer with HTTP (its answer begins {:?})",
                    String::from_utf8_lossy(&start)
                ));
            }
            if byte == b'\n' {
                let line = &self.head[self.line_start..len - 1];
                // The status line is never empty (it starts with `HTTP/`), so the first empty
                // line is the one that ends the head.
                if line.is_empty() || line == b"\r" {
                    let tail = bytes.get(i + 1..).unwrap_or_default().to_vec();
                    return self.verify(tail);
                }
                self.line_start = len;
            }
            if len >= MAX_HEAD {
                return Outcome::Failed(format!(
                    "the server's response head exceeded {} KiB without ending (no empty line \
                     closed its header lines)",
                    MAX_HEAD >> 10
                ));
            }
        }
        Outcome::Waiting
    }

    /// The head is complete: parse it and decide (RFC 6455 §4.1, "the client MUST validate
    /// the server's response as follows").
    fn verify(&self, tail: Vec<u8>) -> Outcome {
        if !self.pending_request().is_empty() {
            // What is left of the request would reach the server after the switch, as if it
            // were WebSocket frames.
            return Outcome::Failed(
                "the server answered before the whole upgrade request was sent".into(),
            );
        }
        match self.parse().and_then(|response| self.check(response)) {
            Ok(response) => Outcome::Open(Box::new(Opened { response, tail })),
            Err(why) => Outcome::Failed(why),
        }
    }

    /// The complete head, parsed into tungstenite's `Response`.
    fn parse(&self) -> Result<Response, String> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut raw = httparse::Response::new(&mut headers);
        match raw.parse(&self.head) {
            Ok(httparse::Status::Complete(_)) => {}
            // The scan found the empty line that ends the head; httparse finding the head
            // unfinished would mean a line it reads differently. Fail rather than wait.
            Ok(httparse::Status::Partial) => {
                return Err("the server's response head is not valid HTTP".into());
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(format!(
                    "the server's response head has more than {MAX_HEADERS} header lines"
                ));
            }
            Err(e) => return Err(format!("the server's response head is not valid HTTP: {e}")),
        }
        // RFC 6455 §4.1: "If the status code received from the server is not 101, the client
        // handles the response per HTTP procedures": for us, the upgrade was refused.
        let code = raw.code.unwrap_or_default();
        if code != 101 {
            let reason = raw.reason.map(str::trim).unwrap_or_default();
            let status = if reason.is_empty() {
                code.to_string()
            } else {
                format!("{code} {}", shown(reason.as_bytes()))
            };
            return Err(format!(
                "the server answered {status}, not 101 Switching Protocols"
            ));
        }
        // RFC 6455 §4.1: the handshake is an HTTP/1.1 exchange ("The method of the request
        // MUST be GET, and the HTTP version MUST be at least 1.1"); an HTTP/1.0 answer is
        // not an upgrade.
        if raw.version != Some(1) {
            return Err("the server answered with HTTP/1.0, not HTTP/1.1".into());
        }
        let mut map = HeaderMap::new();
        for header in raw.headers.iter() {
            let name = HeaderName::from_bytes(header.name.as_bytes());
            let value = HeaderValue::from_bytes(header.value);
            let (Ok(name), Ok(value)) = (name, value) else {
                return Err(format!(
                    "the server's response has an invalid header line: {}",
                    shown(header.name.as_bytes())
                ));
            };
            map.append(name, value);
        }
        let mut response = Response::new(None);
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *response.version_mut() = Version::HTTP_11;
        *response.headers_mut() = map;
        Ok(response)
    }

    /// The checks of RFC 6455 §4.1 on a `101` response, in the RFC's order.
    fn check(&self, response: Response) -> Result<Response, String> {
        let headers = response.headers();
        // "If the response lacks an |Upgrade| header field or the |Upgrade| header field
        // contains a value that is not an ASCII case-insensitive match for the value
        // "websocket", the client MUST _Fail the WebSocket Connection_." (A repeated line
        // must say the same.)
        let upgrades = headers.get_all(UPGRADE);
        if upgrades.iter().next().is_none() {
            return Err("no \"Upgrade: websocket\" in the server's answer".into());
        }
        let websocket = |value: &&HeaderValue| {
            value
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"websocket")
        };
        if let Some(value) = upgrades.iter().find(|value| !websocket(value)) {
            return Err(format!(
                "the server answered \"{UPGRADE}: {}\", not \"Upgrade: websocket\"",
                shown(value.as_bytes())
            ));
        }
        // "If the response lacks a |Connection| header field or the |Connection| header field
        // doesn't contain a token that is an ASCII case-insensitive match for the value
        // "Upgrade", the client MUST _Fail the WebSocket Connection_." A token among others
        // counts: `Connection: Upgrade, keep-alive` is fine.
        let upgrade_token = headers
            .get_all(CONNECTION)
            .iter()
            .any(|value| list(value).any(|token| token.eq_ignore_ascii_case("upgrade")));
        if !upgrade_token {
            return Err(
                "no \"Connection: upgrade\" in the server's answer (its Connection header \
                 must contain the token Upgrade)"
                    .into(),
            );
        }
        // "If the response lacks a |Sec-WebSocket-Accept| header field or the
        // |Sec-WebSocket-Accept| contains a value other than the base64-encoded SHA-1 of the
        // concatenation of the |Sec-WebSocket-Key| (as a string, not base64-decoded) with the
        // string "258EAFA5-E914-47DA-95CA-C5AB0DC85B11" but ignoring any leading and trailing
        // whitespace, the client MUST _Fail the WebSocket Connection_." (A repeated line
        // must say the same.)
        let accepts = headers.get_all(ACCEPT);
        if accepts.iter().next().is_none() {
            return Err(format!("no {ACCEPT} in the server's answer"));
        }
        let expected = self.expected_accept.as_bytes();
        if let Some(value) = accepts
            .iter()
            .find(|value| value.as_bytes().trim_ascii() != expected)
        {
            return Err(format!(
                "{ACCEPT}: {} does not match the key sent (expected {})",
                shown(value.as_bytes()),
                self.expected_accept
            ));
        }
        self.check_extensions(headers)?;
        self.check_subprotocol(headers)?;
        Ok(response)
    }

    /// RFC 6455 §4.1: "If the response includes a |Sec-WebSocket-Extensions| header field and
    /// this header field indicates the use of an extension that was not present in the
    /// client's handshake (the server has indicated an extension not requested by the client),
    /// the client MUST _Fail the WebSocket Connection_."
    ///
    /// rpcloop implements no extension (permessage-deflate included), so an extension the
    /// server selects cannot be used even when a configured header offered it: it fails the
    /// connection too, rather than every frame after it.
    fn check_extensions(&self, headers: &HeaderMap) -> Result<(), String> {
        for value in headers.get_all(EXTENSIONS) {
            let text = text(value);
            let mut names = extension_names(&text).peekable();
            if names.peek().is_none() {
                continue;
            }
            let offered = |name: &str| {
                self.offered_extensions
                    .iter()
                    .any(|o| o.eq_ignore_ascii_case(name))
            };
            let why = if names.all(offered) {
                "an extension rpcloop does not implement (it was offered by a configured header)"
            } else {
                "an extension the client never offered (RFC 6455 §4.1)"
            };
            return Err(format!(
                "the server answered `{EXTENSIONS}: {}`: {why}",
                shown(value.as_bytes())
            ));
        }
        Ok(())
    }

    /// RFC 6455 §4.1: "If the response includes a |Sec-WebSocket-Protocol| header field and
    /// this header field indicates the use of a subprotocol that was not present in the
    /// client's handshake (the server has indicated a subprotocol not requested by the
    /// client), the client MUST _Fail the WebSocket Connection_." §11.3.4: the field "MUST
    /// NOT appear more than once in an HTTP response"; a repeated line that says the same
    /// (which tungstenite let through) is let through, one that differs fails.
    ///
    /// As tungstenite did, a client that offered subprotocols also refuses an answer that
    /// selects none of them: it asked for a protocol and would otherwise speak an unknown one.
    fn check_subprotocol(&self, headers: &HeaderMap) -> Result<(), String> {
        let selected = headers.get_all(PROTOCOL);
        let first = selected.iter().next();
        let differing = selected.iter().any(|value| Some(value) != first);
        let why = match (first, &self.offered_subprotocols) {
            (None, None) => return Ok(()),
            (None, Some(_)) => {
                "the client offered subprotocols and the server selected none of them".into()
            }
            (Some(_), _) if differing => {
                "the server sent the header more than once, with different values \
                 (RFC 6455 §11.3.4)"
                    .into()
            }
            (Some(value), None) => format!(
                "the server selected a subprotocol ({}), but the client offered none \
                 (RFC 6455 §4.1)",
                shown(value.as_bytes())
            ),
            (Some(value), Some(offered)) => {
                let name = value.as_bytes().trim_ascii();
                if offered.iter().any(|o| o.as_bytes() == name) {
                    return Ok(());
                }
                format!(
                    "the server selected a subprotocol the client never offered ({}; \
                     RFC 6455 §4.1)",
                    shown(name)
                )
            }
        };
        Err(format!("{PROTOCOL}: {why}"))
    }
}

/// A header value as text (invalid UTF-8 replaced).
fn text(value: &HeaderValue) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(value.as_bytes())
}

/// The non-empty elements of a comma-separated header value (RFC 7230 §7, `1#element`),
/// trimmed; elements that are not UTF-8 are skipped (no token we compare with is).
fn list(value: &HeaderValue) -> impl Iterator<Item = &str> {
    value
        .as_bytes()
        .split(|&b| b == b',')
        .filter_map(|element| std::str::from_utf8(element.trim_ascii()).ok())
        .filter(|element| !element.is_empty())
}

/// The extension names of a `Sec-WebSocket-Extensions` value (RFC 6455 §9.1:
/// `extension-list = 1#extension`, `extension = extension-token *( ";" extension-param )`).
fn extension_names(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(',')
        .filter_map(|ext| ext.split(';').next())
        .map(str::trim)
        .filter(|name| !name.is_empty())
}

/// A peer's bytes as an error text quotes them: invalid UTF-8 replaced, cut short.
fn shown(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    match text.char_indices().nth(SHOWN_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::client::IntoClientRequest;

    /// The key of RFC 6455 §1.3's example, and the accept value it gives there.
    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const ACCEPT_FOR_KEY: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    /// A text frame "hello" (unmasked, as a server sends it): the bytes after a head.
    const FRAME: &[u8] = b"\x81\x05hello";

    /// A request for `ws://example.test/socket` with the fixed key and these extra headers.
    fn request(extra: &[(&str, &str)]) -> Request {
        let mut request = "ws://example.test/socket".into_client_request().unwrap();
        let headers = request.headers_mut();
        headers.insert("Sec-WebSocket-Key", HeaderValue::from_static(KEY));
        for (name, value) in extra {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        request
    }

    /// A handshake whose request is already written.
    fn written(extra: &[(&str, &str)]) -> OpeningHandshake {
        let mut handshake = OpeningHandshake::new(request(extra)).unwrap();
        let n = handshake.pending_request().len();
        handshake.handle_written(n);
        handshake
    }

    /// A correct `101` with `extra` header lines after the required ones.
    fn upgrade_with(extra: &str) -> String {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {ACCEPT_FOR_KEY}\r\n{extra}\r\n"
        )
    }

    fn open(outcome: Outcome) -> Opened {
        match outcome {
            Outcome::Open(opened) => *opened,
            other => panic!("expected open, got {other:?}"),
        }
    }

    fn failed(outcome: Outcome) -> String {
        match outcome {
            Outcome::Failed(why) => why,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    /// The verdict on `response` (fed at once) for a request with `extra` headers.
    fn verdict(extra: &[(&str, &str)], response: &str) -> Outcome {
        written(extra).handle_read(response.as_bytes())
    }

    #[test]
    fn the_request_is_tungstenites_with_the_given_key() {
        let handshake = OpeningHandshake::new(request(&[])).unwrap();
        let text = String::from_utf8(handshake.pending_request().to_vec()).unwrap();
        assert!(text.starts_with("GET /socket HTTP/1.1\r\n"), "{text}");
        assert!(
            text.contains(&format!("Sec-WebSocket-Key: {KEY}\r\n")),
            "{text}"
        );
        assert!(text.ends_with("\r\n\r\n"), "{text}");
        assert_eq!(derive_accept_key(KEY.as_bytes()), ACCEPT_FOR_KEY);
    }

    #[test]
    fn the_request_goes_out_in_pieces() {
        let mut handshake = OpeningHandshake::new(request(&[])).unwrap();
        let whole = handshake.pending_request().to_vec();
        handshake.handle_written(3);
        assert_eq!(handshake.pending_request(), &whole[3..]);
        handshake.handle_written(usize::MAX);
        assert!(handshake.pending_request().is_empty());
    }

    #[test]
    fn a_request_without_a_key_cannot_be_sent() {
        let mut request = request(&[]);
        request.headers_mut().remove("Sec-WebSocket-Key");
        let why = OpeningHandshake::new(request).unwrap_err();
        assert!(why.contains("cannot be sent"), "{why}");
    }

    /// The defect of issue 14: tungstenite's server-side "attack check" refused a correct
    /// response read in more than 64 pieces averaging under 128 bytes.
    #[test]
    fn a_correct_response_fed_one_byte_at_a_time_opens() {
        let response = upgrade_with("");
        assert!(response.len() > 64, "the response must take over 64 reads");
        let mut handshake = written(&[]);
        let (last, rest) = response.as_bytes().split_last().unwrap();
        for byte in rest {
            assert!(matches!(
                handshake.handle_read(std::slice::from_ref(byte)),
                Outcome::Waiting
            ));
        }
        let opened = open(handshake.handle_read(&[*last]));
        assert_eq!(opened.response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert!(opened.tail.is_empty());
    }

    #[test]
    fn a_response_split_anywhere_opens_with_its_tail_intact() {
        let mut bytes = upgrade_with("X-Extra: 1\r\n").into_bytes();
        bytes.extend_from_slice(FRAME);
        for split in 0..=bytes.len() {
            let mut handshake = written(&[]);
            let (first, second) = bytes.split_at(split);
            let opened = match handshake.handle_read(first) {
                Outcome::Waiting => open(handshake.handle_read(second)),
                outcome => {
                    // The head ended in the first piece; the second belongs to the frames.
                    let mut opened = open(outcome);
                    opened.tail.extend_from_slice(second);
                    opened
                }
            };
            assert_eq!(opened.tail, FRAME, "split at {split}");
            assert_eq!(
                opened.response.headers()["x-extra"],
                "1",
                "split at {split}"
            );
        }
    }

    #[test]
    fn line_feeds_alone_end_lines_too() {
        let response = upgrade_with("").replace("\r\n", "\n");
        let opened = open(verdict(&[], &format!("{response}tail")));
        assert_eq!(opened.tail, b"tail");
    }

    #[test]
    fn connection_may_list_upgrade_among_other_tokens() {
        for connection in ["Upgrade, keep-alive", "keep-alive,upgrade", "UPGRADE"] {
            let response = upgrade_with("")
                .replace("Connection: Upgrade", &format!("Connection: {connection}"));
            open(verdict(&[], &response));
        }
        // Several Connection lines count as one list (RFC 7230 §3.2.2).
        let response = upgrade_with("Connection: keep-alive\r\n")
            .replace("Connection: Upgrade", "Connection: close");
        let why = failed(verdict(&[], &response));
        assert!(why.contains("Connection: upgrade"), "{why}");
        let response = upgrade_with("Connection: upgrade\r\n")
            .replace("Connection: Upgrade", "Connection: keep-alive");
        open(verdict(&[], &response));
    }

    #[test]
    fn upgrade_is_matched_without_regard_to_case() {
        let response = upgrade_with("").replace("Upgrade: websocket", "upgrade: WebSocket");
        open(verdict(&[], &response));
    }

    #[test]
    fn a_head_at_the_limit_opens_and_one_byte_more_fails() {
        let head_without_pad = upgrade_with("X-Pad: \r\n").len();
        let pad = |n: usize| upgrade_with(&format!("X-Pad: {}\r\n", "a".repeat(n)));
        let at_limit = pad(MAX_HEAD - head_without_pad);
        assert_eq!(at_limit.len(), MAX_HEAD);
        open(verdict(&[], &at_limit));
        let why = failed(verdict(&[], &pad(MAX_HEAD - head_without_pad + 1)));
        assert!(why.contains("exceeded 64 KiB without ending"), "{why}");
    }

    #[test]
    fn an_endless_head_fails_at_64_kib_whatever_the_pieces() {
        let line = b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
        for piece in [1, 7, 4096, 100_000] {
            let mut endless = b"HTTP/1.1 101 Switching Protocols\r\n".to_vec();
            while endless.len() < 70 << 10 {
                endless.extend_from_slice(line);
            }
            let mut handshake = written(&[]);
            let outcome = endless
                .chunks(piece)
                .map(|chunk| handshake.handle_read(chunk))
                .find(|outcome| !matches!(outcome, Outcome::Waiting))
                .expect("a verdict before 70 KiB");
            let why = failed(outcome);
            assert!(why.contains("exceeded 64 KiB without ending"), "{why}");
            assert!(handshake.head.capacity() == 0, "the buffer is released");
        }
    }

    #[test]
    fn a_refused_upgrade_names_the_status() {
        let why = failed(verdict(
            &[],
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        ));
        assert_eq!(
            why,
            "the server answered 404 Not Found, not 101 Switching Protocols"
        );
        let why = failed(verdict(&[], "HTTP/1.1 403\r\n\r\n"));
        assert_eq!(why, "the server answered 403, not 101 Switching Protocols");
        let why = failed(verdict(&[], "HTTP/1.0 101 Switching Protocols\r\n\r\n"));
        assert!(why.contains("HTTP/1.0"), "{why}");
    }

    #[test]
    fn a_wrong_or_missing_accept_key_fails() {
        let wrong = upgrade_with("").replace(ACCEPT_FOR_KEY, "AAAAAAAAAAAAAAAAAAAAAAAAAAA=");
        let why = failed(verdict(&[], &wrong));
        assert!(
            why.contains("Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
                && why.contains(ACCEPT_FOR_KEY),
            "{why}"
        );
        let missing =
            upgrade_with("").replace(&format!("Sec-WebSocket-Accept: {ACCEPT_FOR_KEY}\r\n"), "");
        let why = failed(verdict(&[], &missing));
        assert!(why.contains("no Sec-WebSocket-Accept"), "{why}");
        // base64 is case-sensitive.
        let lower = upgrade_with("").replace(ACCEPT_FOR_KEY, &ACCEPT_FOR_KEY.to_lowercase());
        failed(verdict(&[], &lower));
        // A repeated line must say the same.
        let twice = upgrade_with(&format!("Sec-WebSocket-Accept: {ACCEPT_FOR_KEY}\r\n"));
        open(verdict(&[], &twice));
        let differing = upgrade_with("Sec-WebSocket-Accept: AAAA\r\n");
        let why = failed(verdict(&[], &differing));
        assert!(
            why.contains("Sec-WebSocket-Accept: AAAA does not match"),
            "{why}"
        );
    }

    #[test]
    fn a_missing_or_wrong_upgrade_fails() {
        let missing = upgrade_with("").replace("Upgrade: websocket\r\n", "");
        let why = failed(verdict(&[], &missing));
        assert!(why.contains("no \"Upgrade: websocket\""), "{why}");
        let wrong = upgrade_with("").replace("Upgrade: websocket", "Upgrade: h2c");
        let why = failed(verdict(&[], &wrong));
        assert!(
            why.contains("\"Upgrade: h2c\"") && why.contains("Upgrade: websocket"),
            "{why}"
        );
        // A repeated line must say the same.
        open(verdict(&[], &upgrade_with("Upgrade: WebSocket\r\n")));
        let why = failed(verdict(&[], &upgrade_with("Upgrade: h2c\r\n")));
        assert!(why.contains("\"Upgrade: h2c\""), "{why}");
    }

    #[test]
    fn a_missing_connection_upgrade_fails() {
        let missing = upgrade_with("").replace("Connection: Upgrade\r\n", "");
        let why = failed(verdict(&[], &missing));
        assert!(why.contains("Connection: upgrade"), "{why}");
        let wrong = upgrade_with("").replace("Connection: Upgrade", "Connection: keep-alive");
        failed(verdict(&[], &wrong));
    }

    #[test]
    fn subprotocols_follow_rfc_6455() {
        let offer = [("Sec-WebSocket-Protocol", "a, b")];
        // Selected among those offered, in another header line too.
        open(verdict(
            &offer,
            &upgrade_with("Sec-WebSocket-Protocol: b\r\n"),
        ));
        open(verdict(
            &[
                ("Sec-WebSocket-Protocol", "a"),
                ("Sec-WebSocket-Protocol", "b"),
            ],
            &upgrade_with("Sec-WebSocket-Protocol: b\r\n"),
        ));
        // The same answer twice is still one answer.
        open(verdict(
            &offer,
            &upgrade_with("Sec-WebSocket-Protocol: b\r\nSec-WebSocket-Protocol: b\r\n"),
        ));
        for (offer, answer, says) in [
            (&[][..], "Sec-WebSocket-Protocol: chat\r\n", "offered none"),
            (
                &offer[..],
                "Sec-WebSocket-Protocol: c\r\n",
                "never offered (c;",
            ),
            (&offer[..], "", "selected none"),
            (
                &offer[..],
                "Sec-WebSocket-Protocol: a\r\nSec-WebSocket-Protocol: b\r\n",
                "more than once",
            ),
            // Subprotocol names are compared exactly.
            (&offer[..], "Sec-WebSocket-Protocol: A\r\n", "never offered"),
        ] {
            let why = failed(verdict(offer, &upgrade_with(answer)));
            assert!(
                why.starts_with("Sec-WebSocket-Protocol: ") && why.contains(says),
                "{answer:?}: {why}"
            );
        }
    }

    #[test]
    fn no_extension_in_the_answer_is_fine() {
        open(verdict(&[], &upgrade_with("")));
        open(verdict(
            &[],
            &upgrade_with("Sec-WebSocket-Extensions: \r\n"),
        ));
        open(verdict(
            &[],
            &upgrade_with("Sec-WebSocket-Extensions: , \r\n"),
        ));
    }

    #[test]
    fn an_extension_never_offered_fails_and_is_named() {
        let why = failed(verdict(
            &[],
            &upgrade_with(
                "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10\r\n",
            ),
        ));
        assert!(
            why.contains("Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10")
                && why.contains("never offered"),
            "{why}"
        );
        // A second header line counts too.
        let why = failed(verdict(
            &[("Sec-WebSocket-Extensions", "x-a")],
            &upgrade_with("Sec-WebSocket-Extensions: \r\nSec-WebSocket-Extensions: x-b\r\n"),
        ));
        assert!(
            why.contains("x-b") && why.contains("never offered"),
            "{why}"
        );
    }

    #[test]
    fn an_offered_extension_still_fails_since_none_is_implemented() {
        let why = failed(verdict(
            &[("Sec-WebSocket-Extensions", "x-a; p=1, X-B")],
            &upgrade_with("Sec-WebSocket-Extensions: x-b\r\n"),
        ));
        assert!(why.contains("does not implement"), "{why}");
    }

    #[test]
    fn garbage_fails_at_once() {
        let mut handshake = written(&[]);
        let why = failed(handshake.handle_read(b"SSH-2.0-OpenSSH_9.6\r\n"));
        assert!(
            why.contains("did not answer with HTTP") && why.contains("SSH-2"),
            "{why}"
        );
        // Even one wrong byte is enough to tell.
        failed(written(&[]).handle_read(b"\r\n"));
        failed(written(&[]).handle_read(b"h"));
        // After a verdict, nothing more is taken.
        failed(handshake.handle_read(upgrade_with("").as_bytes()));
    }

    #[test]
    fn a_malformed_head_fails() {
        for head in [
            "HTTP/1.1 101 Switching Protocols\r\nno colon here\r\n\r\n",
            "HTTP/9.9 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 1O1 Switching Protocols\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade:\x01websocket\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n Upgrade: websocket\r\n\r\n",
        ] {
            let why = failed(verdict(&[], head));
            assert!(why.contains("not valid HTTP"), "{head:?}: {why}");
        }
        let many = "X-A: 1\r\n".repeat(MAX_HEADERS + 1);
        let why = failed(verdict(&[], &upgrade_with(&many)));
        assert!(why.contains("more than 124 header lines"), "{why}");
    }

    #[test]
    fn the_end_of_the_stream_fails_with_what_was_received() {
        let why = failed(written(&[]).handle_eof());
        assert!(why.contains("without answering"), "{why}");
        let mut handshake = written(&[]);
        assert!(matches!(
            handshake.handle_read(b"HTTP/1.1 101"),
            Outcome::Waiting
        ));
        let why = failed(handshake.handle_eof());
        assert!(
            why.contains("in the middle") && why.contains("12 bytes"),
            "{why}"
        );
    }

    #[test]
    fn an_answer_before_the_request_is_sent_fails() {
        let mut handshake = OpeningHandshake::new(request(&[])).unwrap();
        handshake.handle_written(5);
        let why = failed(handshake.handle_read(upgrade_with("").as_bytes()));
        assert!(
            why.contains("before the whole upgrade request was sent"),
            "{why}"
        );
    }

    #[test]
    fn long_values_are_cut_short_in_error_texts() {
        let long = "x".repeat(10_000);
        let why = failed(verdict(&[], &upgrade_with("").replace("websocket", &long)));
        assert!(
            why.len() < 400 && why.contains("..."),
            "{} bytes",
            why.len()
        );
    }

    /// Arbitrary bytes, and mutations of a correct response, in arbitrary pieces: never a
    /// panic, always a verdict or a wait, and never more than `MAX_HEAD` bytes held.
    #[test]
    fn nothing_panics_on_arbitrary_bytes() {
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let valid = upgrade_with("Sec-WebSocket-Protocol: a\r\n").into_bytes();
        for round in 0..3_000 {
            let mut bytes = if round % 2 == 0 {
                let len = (next() % 300) as usize;
                let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                if round % 4 == 0 {
                    // Mostly HTTP-looking, so the scan gets past the status line.
                    bytes.splice(0..0, b"HTTP/1.1 ".iter().copied());
                }
                bytes
            } else {
                let mut bytes = valid.clone();
                for _ in 0..(next() % 4) + 1 {
                    let at = (next() as usize) % bytes.len();
                    bytes[at] = next() as u8;
                }
                bytes
            };
            bytes.extend_from_slice(FRAME);
            let offer = [("Sec-WebSocket-Protocol", "a")];
            let mut handshake = written(if round % 3 == 0 { &offer } else { &[] });
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let piece = ((next() % 40) as usize + 1).min(rest.len());
                let (chunk, after) = rest.split_at(piece);
                rest = after;
                assert!(handshake.head.len() <= MAX_HEAD);
                if !matches!(handshake.handle_read(chunk), Outcome::Waiting) {
                    break;
                }
            }
        }
    }
}
