//! An arbitrary HTTP response to the client's upgrade request, split into arbitrary chunks,
//! fed to the sans-IO `OpeningHandshake`.
//!
//! The input: a flags byte, four bytes seeding the chunk sizes, then the response. In the
//! response the harness replaces `{ACCEPT}` with the `Sec-WebSocket-Accept` that the fixed key
//! calls for (so a correct 101 is easy to write and to mutate) and `{PAD}` with 4 KiB of `a`
//! (so the 64 KiB bound on the head is reached with small inputs).
//!
//! Flags: bits 0-1 the subprotocols offered (none, `chat`, `a, b`, or `a` and `b` on two
//! lines); bit 2 an extension offered by a configured header; bits 3 and 4 both set: the last
//! bytes of the request are never written; bit 5: the peer closes after the last chunk;
//! bits 6-7 how chunks are cut (whole, byte by byte, 1-16 bytes, 1-4096 bytes).
//!
//! Checked: nothing panics; the head held never exceeds 64 KiB; the verdict comes with the
//! chunk that holds the byte deciding it (the first byte that is not `HTTP/`, the line feed
//! of the empty line, or the 65,536th byte), never before, never later; after a verdict
//! nothing more is taken; only a 101 whose head a lenient reading finds correct (RFC 6455
//! §4.1) opens; a correct 101 in plain HTTP/1.1 always opens; what opens carries the bytes
//! behind the head as its tail.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rpcloop::fuzz_support::{Handshake, MAX_HEAD, Verdict};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;

/// The key of RFC 6455 §1.3's example, and the accept value the RFC gives for it.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// The most header lines the handshake reads (httparse's array there).
const MAX_HEADERS: usize = 124;

fuzz_target!(|data: &[u8]| {
    let [flags, s0, s1, s2, s3, template @ ..] = data else {
        return;
    };
    let response = substitute(template);
    let offered: Option<Vec<&str>> = match flags & 3 {
        0 => None,
        1 => Some(vec!["chat"]),
        _ => Some(vec!["a", "b"]),
    };
    let mut request = "ws://example.test/socket"
        .into_client_request()
        .expect("a request");
    let headers = request.headers_mut();
    headers.insert("Sec-WebSocket-Key", HeaderValue::from_static(KEY));
    match flags & 3 {
        0 => {}
        1 => {
            headers.append("Sec-WebSocket-Protocol", HeaderValue::from_static("chat"));
        }
        2 => {
            headers.append("Sec-WebSocket-Protocol", HeaderValue::from_static("a, b"));
        }
        _ => {
            headers.append("Sec-WebSocket-Protocol", HeaderValue::from_static("a"));
            headers.append("Sec-WebSocket-Protocol", HeaderValue::from_static("b"));
        }
    }
    if flags & 4 != 0 {
        headers.append(
            "Sec-WebSocket-Extensions",
            HeaderValue::from_static("x-a; p=1"),
        );
    }
    let mut handshake = Handshake::new(request).expect("the request can be sent");

    // The request goes out in pieces; with bits 3 and 4, its last bytes never do.
    let total = handshake.pending_request().len();
    let unwritten = if flags & 0x18 == 0x18 {
        usize::from(s0 % 16) + 1
    } else {
        0
    };
    let mut written = 0;
    let mut step = usize::from(*s1).max(1);
    while written < total - unwritten {
        let n = step.min(total - unwritten - written);
        handshake.handle_written(n);
        written += n;
        assert_eq!(handshake.pending_request().len(), total - written);
        step = step * 2 + 1;
    }
    let request_written = unwritten == 0;

    let expected = reference(&response, offered.as_deref(), request_written);
    let mut seed = u32::from_le_bytes([*s0, *s1, *s2, *s3]) | 1;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed as usize
    };
    let mut fed = 0;
    let mut verdict = None;
    while fed < response.len() {
        let size = match flags >> 6 {
            0 => response.len(),
            1 => 1,
            2 => next() % 16 + 1,
            _ => next() % 4096 + 1,
        };
        let end = (fed + size).min(response.len());
        let chunk = &response[fed..end];
        let outcome = handshake.handle_read(chunk);
        assert!(
            handshake.buffered() <= MAX_HEAD,
            "{} bytes of head held",
            handshake.buffered()
        );
        match outcome {
            Verdict::Waiting => {
                if let Some(at) = expected.decided_at() {
                    assert!(at >= end, "still waiting after byte {at}, fed {end}");
                }
                fed = end;
            }
            outcome => {
                let at = expected
                    .decided_at()
                    .unwrap_or_else(|| panic!("a verdict with no deciding byte: {outcome:?}"));
                assert!(
                    (fed..end).contains(&at),
                    "the verdict came with bytes {fed}..{end}, the deciding byte is {at}: \
                     {outcome:?}"
                );
                verdict = Some((outcome, end));
                break;
            }
        }
    }
    let Some((outcome, end)) = verdict else {
        assert!(
            expected.decided_at().is_none(),
            "{expected:?}, but all {} bytes were taken",
            response.len()
        );
        if flags & 0x20 != 0 {
            assert!(matches!(handshake.handle_eof(), Verdict::Failed(_)));
            assert_eq!(handshake.buffered(), 0, "the head is released at the end");
        }
        return;
    };
    assert_eq!(
        handshake.buffered(),
        0,
        "the head is released after a verdict"
    );
    match (&outcome, &expected) {
        (Verdict::Open(response_head, tail), Expected::Head { end: head_end, .. }) => {
            assert!(
                expected.may_open(),
                "opened, but a lenient reading finds the 101 incorrect: {expected:?}\n{:?}",
                String::from_utf8_lossy(&response[..*head_end])
            );
            assert_eq!(&tail[..], &response[*head_end..end], "the tail");
            assert_eq!(response_head.status(), 101);
            let accepts: Vec<_> = response_head
                .headers()
                .get_all("sec-websocket-accept")
                .iter()
                .collect();
            assert!(!accepts.is_empty());
        }
        (Verdict::Open(..), _) => panic!("opened, but {expected:?}"),
        (Verdict::Failed(why), _) => {
            assert!(
                !expected.must_open(),
                "a correct 101 failed: {why}\n{:?}",
                String::from_utf8_lossy(&response)
            );
        }
        (Verdict::Waiting, _) => unreachable!(),
    }
    // After a verdict, nothing more is taken.
    assert!(matches!(handshake.handle_read(b"x"), Verdict::Failed(_)));
    assert!(matches!(handshake.handle_read(b""), Verdict::Failed(_)));
});

fn substitute(template: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(template.len());
    let mut rest = template;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix(b"{ACCEPT}") {
            out.extend_from_slice(ACCEPT.as_bytes());
            rest = after;
        } else if let Some(after) = rest.strip_prefix(b"{PAD}") {
            out.extend(std::iter::repeat_n(b'a', 4096));
            rest = after;
        } else {
            out.push(rest[0]);
            rest = &rest[1..];
        }
    }
    out
}

/// What the reference reads in a response.
#[derive(Debug)]
enum Expected {
    /// The byte at this index is not the `HTTP/` a status line starts with.
    NotHttp(usize),
    /// 64 KiB and no empty line: the byte at `MAX_HEAD - 1` decides.
    TooLong,
    /// No empty line yet, and under 64 KiB.
    Incomplete,
    /// The head ends with the byte before `end`.
    Head {
        end: usize,
        /// The request was all written when the head ended.
        request_written: bool,
        /// A lenient reading finds a correct 101.
        lenient_ok: bool,
        /// The head is plain HTTP/1.1 (no byte or line any parser may read differently) and
        /// it is a correct 101.
        strict_ok: bool,
    },
}

impl Expected {
    fn decided_at(&self) -> Option<usize> {
        match self {
            Expected::NotHttp(at) => Some(*at),
            Expected::TooLong => Some(MAX_HEAD - 1),
            Expected::Incomplete => None,
            Expected::Head { end, .. } => Some(end - 1),
        }
    }

    fn may_open(&self) -> bool {
        matches!(
            self,
            Expected::Head {
                request_written: true,
                lenient_ok: true,
                ..
            }
        )
    }

    fn must_open(&self) -> bool {
        matches!(
            self,
            Expected::Head {
                request_written: true,
                strict_ok: true,
                ..
            }
        )
    }
}

fn reference(response: &[u8], offered: Option<&[&str]>, request_written: bool) -> Expected {
    // RFC 7230 §3.1.2: a response starts with `HTTP/`.
    if let Some(at) = response
        .iter()
        .zip(b"HTTP/")
        .position(|(got, want)| got != want)
    {
        return Expected::NotHttp(at);
    }
    // The head ends at the first empty line (CRLF, or LF alone).
    let mut line_start = 0;
    let mut end = None;
    for (i, &b) in response.iter().enumerate().take(MAX_HEAD) {
        if b == b'\n' {
            let line = &response[line_start..i];
            if line.is_empty() || line == b"\r" {
                end = Some(i + 1);
                break;
            }
            line_start = i + 1;
        }
    }
    let Some(end) = end else {
        return if response.len() >= MAX_HEAD {
            Expected::TooLong
        } else {
            Expected::Incomplete
        };
    };
    let head = &response[..end];
    Expected::Head {
        end,
        request_written,
        lenient_ok: lenient(head).is_some_and(|h| correct_101(&h, offered)),
        strict_ok: strict(head).is_some_and(|h| correct_101(&h, offered)),
    }
}

/// A head's header lines as (lower-case name, value trimmed of spaces and tabs).
type Headers = Vec<(Vec<u8>, Vec<u8>)>;

/// The lines of a head, without their line ends and without the final empty line.
fn lines(head: &[u8]) -> Vec<&[u8]> {
    let mut lines: Vec<&[u8]> = head
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .collect();
    // The split leaves the empty line and what follows its line feed (nothing).
    lines.truncate(lines.len().saturating_sub(2));
    lines
}

/// A value as rpcloop compares it: ASCII whitespace around it does not count.
fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// Whatever a parser could make of the head, at most: a status line `HTTP/1.1 101` (spaces
/// between, anything after), and each line with a colon as a header (name and value trimmed).
fn lenient(head: &[u8]) -> Option<Headers> {
    let lines = lines(head);
    let (status, header_lines) = lines.split_first()?;
    let after_version = status.strip_prefix(b"HTTP/1.1 ")?;
    let code = trim(after_version);
    if !(code == b"101" || code.starts_with(b"101 ") || code.starts_with(b"101\t")) {
        return None;
    }
    Some(
        header_lines
            .iter()
            .filter_map(|line| {
                let colon = line.iter().position(|&b| b == b':')?;
                Some((
                    trim(&line[..colon]).to_ascii_lowercase(),
                    trim(&line[colon + 1..]).to_vec(),
                ))
            })
            .collect(),
    )
}

/// The head, when it is plain HTTP/1.1 that every parser reads the same: the status line
/// `HTTP/1.1 101` with an optional printable reason, header names of token characters right
/// before their colon, printable values, no bare CR, at most 124 header lines.
fn strict(head: &[u8]) -> Option<Headers> {
    let lines = lines(head);
    let (status, header_lines) = lines.split_first()?;
    let printable = |bytes: &[u8]| {
        bytes
            .iter()
            .all(|&b| (0x20..0x7f).contains(&b) || b == b'\t')
    };
    if lines.iter().any(|line| line.contains(&b'\r')) || header_lines.len() > MAX_HEADERS {
        return None;
    }
    match status.strip_prefix(b"HTTP/1.1 101")? {
        [] => {}
        [b' ', reason @ ..] if printable(reason) => {}
        _ => return None,
    }
    let tchar = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    header_lines
        .iter()
        .map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            let (name, value) = (&line[..colon], &line[colon + 1..]);
            (!name.is_empty() && name.iter().all(tchar) && printable(value))
                .then(|| (name.to_ascii_lowercase(), trim(value).to_vec()))
        })
        .collect()
}

/// RFC 6455 §4.1's checks of a 101's headers, with rpcloop's documented choices: a repeated
/// `Upgrade` or `Sec-WebSocket-Accept` line must say the same; no extension is implemented,
/// so any extension selected fails; a client that offered subprotocols needs one of them
/// selected, one that offered none needs none.
fn correct_101(headers: &Headers, offered: Option<&[&str]>) -> bool {
    let values = |name: &[u8]| -> Vec<&[u8]> {
        headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| &v[..])
            .collect()
    };
    let list = |value: &'_ [u8]| -> Vec<Vec<u8>> {
        value
            .split(|&b| b == b',')
            .map(|e| trim(e).to_vec())
            .collect()
    };
    let upgrade = values(b"upgrade");
    let upgrade_ok =
        !upgrade.is_empty() && upgrade.iter().all(|v| v.eq_ignore_ascii_case(b"websocket"));
    let connection_ok = values(b"connection")
        .iter()
        .any(|v| list(v).iter().any(|t| t.eq_ignore_ascii_case(b"upgrade")));
    let accept = values(b"sec-websocket-accept");
    let accept_ok = !accept.is_empty() && accept.iter().all(|v| *v == ACCEPT.as_bytes());
    let extensions_ok = values(b"sec-websocket-extensions").iter().all(|v| {
        list(v).iter().all(|extension| {
            let name = extension.split(|&b| b == b';').next().unwrap_or_default();
            trim(name).is_empty()
        })
    });
    let protocol = values(b"sec-websocket-protocol");
    let protocol_ok = match (protocol.first(), offered) {
        (None, None) => true,
        (None, Some(_)) | (Some(_), None) => false,
        (Some(first), Some(offered)) => {
            protocol.iter().all(|v| v == first) && offered.iter().any(|o| o.as_bytes() == *first)
        }
    };
    upgrade_ok && connection_ok && accept_ok && extensions_ok && protocol_ok
}
