//! What rpcloop checks of the server's handshake answer beyond what tungstenite does.
//!
//! tungstenite 0.30 verifies the status, `Upgrade`, `Connection`, `Sec-WebSocket-Accept` and
//! the subprotocol (`Sec-WebSocket-Protocol`), but not the extensions. RFC 6455 §4.1: "If the
//! response includes a |Sec-WebSocket-Extensions| header field and this header field indicates
//! the use of an extension that was not present in the client's handshake (the server has
//! indicated an extension not requested by the client), the client MUST _Fail the WebSocket
//! Connection_."

use tungstenite::error::{ProtocolError, SubProtocolError};
use tungstenite::handshake::client::Response;

const EXTENSIONS: &str = "Sec-WebSocket-Extensions";

/// Why the server's answer must fail the connection, or `None` if it is acceptable.
///
/// rpcloop implements no extension (permessage-deflate included), so an extension the server
/// selects cannot be used even when a configured header offered it: it fails the connection
/// too, rather than every frame after it.
pub(crate) fn check_response(offered: &[(String, String)], response: &Response) -> Option<String> {
    let offered: Vec<&str> = offered
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case(EXTENSIONS))
        .flat_map(|(_, value)| extension_names(value))
        .collect();
    for value in response.headers().get_all(EXTENSIONS) {
        let text = String::from_utf8_lossy(value.as_bytes());
        let mut names = extension_names(&text).peekable();
        if names.peek().is_none() {
            continue;
        }
        let why = if names.all(|name| offered.iter().any(|o| o.eq_ignore_ascii_case(name))) {
            "an extension rpcloop does not implement (it was offered by a configured header)"
        } else {
            "an extension the client never offered (RFC 6455 §4.1)"
        };
        return Some(format!("the server answered `{EXTENSIONS}: {text}`: {why}"));
    }
    None
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

/// The text of a failed handshake: tungstenite's, with the header named where tungstenite's
/// own text does not name it.
pub(crate) fn failure_text(e: &tungstenite::Error) -> String {
    let tungstenite::Error::Protocol(ProtocolError::SecWebSocketSubProtocolError(sub)) = e else {
        return e.to_string();
    };
    let why = match sub {
        SubProtocolError::ServerSentSubProtocolNoneRequested => {
            "the server selected a subprotocol, but the client offered none (RFC 6455 §4.1)"
        }
        SubProtocolError::InvalidSubProtocol => {
            "the server selected a subprotocol the client never offered (RFC 6455 §4.1)"
        }
        SubProtocolError::NoSubProtocol => {
            "the client offered subprotocols and the server selected none of them"
        }
    };
    format!("Sec-WebSocket-Protocol: {why}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(extensions: &[&str]) -> Response {
        let mut response = Response::new(None);
        for value in extensions {
            let value = tungstenite::http::HeaderValue::from_str(value).unwrap();
            response.headers_mut().append(EXTENSIONS, value);
        }
        response
    }

    fn offer(value: &str) -> Vec<(String, String)> {
        vec![("sec-websocket-extensions".to_owned(), value.to_owned())]
    }

    #[test]
    fn no_extension_in_the_answer_is_fine() {
        assert_eq!(check_response(&[], &response(&[])), None);
        assert_eq!(check_response(&[], &response(&[""])), None);
        assert_eq!(check_response(&[], &response(&[" , "])), None);
    }

    #[test]
    fn an_extension_never_offered_fails_and_is_named() {
        let why = check_response(
            &[],
            &response(&["permessage-deflate; server_max_window_bits=10"]),
        )
        .unwrap();
        assert!(
            why.contains("Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10")
                && why.contains("never offered"),
            "{why}"
        );
        // A second header line counts too.
        let why = check_response(&offer("x-a"), &response(&["", "x-b"])).unwrap();
        assert!(
            why.contains("x-b") && why.contains("never offered"),
            "{why}"
        );
    }

    #[test]
    fn an_offered_extension_still_fails_since_none_is_implemented() {
        let why = check_response(&offer("x-a; p=1, X-B"), &response(&["x-b"])).unwrap();
        assert!(why.contains("does not implement"), "{why}");
    }

    #[test]
    fn subprotocol_failures_name_the_header() {
        for sub in [
            SubProtocolError::ServerSentSubProtocolNoneRequested,
            SubProtocolError::InvalidSubProtocol,
            SubProtocolError::NoSubProtocol,
        ] {
            let e = tungstenite::Error::Protocol(ProtocolError::SecWebSocketSubProtocolError(sub));
            assert!(failure_text(&e).starts_with("Sec-WebSocket-Protocol: "));
        }
        let e = tungstenite::Error::Protocol(ProtocolError::SecWebSocketAcceptKeyMismatch);
        assert_eq!(failure_text(&e), e.to_string());
    }
}
