//! Parsers for the values the command line takes: durations, sizes, headers, URLs, JSON texts,
//! codecs. Each returns a message fit to show the user, so clap turns a bad value into a usage
//! error (exit status 2) that says what was expected.

use std::fmt;
use std::time::Duration;

use rpcloop::rustls::RootCertStore;
use rpcloop::rustls::pki_types::CertificateDer;
use rpcloop::rustls::pki_types::pem::PemObject;
use serde_json::value::RawValue;
use tungstenite::client::IntoClientRequest;
use tungstenite::http::{HeaderName, HeaderValue};

/// A duration written like `500ms`, `2s`, `1.5s`, `250us`, `1m` or `1h`; displayed the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_nanos() == 0 {
            write!(f, "{}s", d.as_secs())
        } else if d.as_nanos() % 1_000_000 == 0 {
            write!(f, "{}ms", d.as_millis())
        } else {
            write!(f, "{}us", d.as_micros())
        }
    }
}

/// Parses a duration greater than zero (see [`Dur`]).
pub fn duration(s: &str) -> Result<Dur, String> {
    let d = any_duration(s)?;
    if d.is_zero() {
        return Err("must be more than 0".into());
    }
    Ok(Dur(d))
}

/// A keepalive interval: a duration, or `off` (also `0`) for none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Every(pub Option<Duration>);

impl fmt::Display for Every {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(d) => Dur(d).fmt(f),
            None => f.write_str("off"),
        }
    }
}

/// Parses an interval (see [`Every`]).
pub fn every(s: &str) -> Result<Every, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(Every(None));
    }
    let d = any_duration(s)?;
    Ok(Every((!d.is_zero()).then_some(d)))
}

fn any_duration(s: &str) -> Result<Duration, String> {
    const HINT: &str = "write a duration with its unit, like 500ms, 2s or 1.5m";
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    if number.is_empty() {
        return Err(format!("{s:?} is not a duration: {HINT}"));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{number:?} is not a number: {HINT}"))?;
    let seconds_per_unit = match unit.trim() {
        "" if value == 0.0 => 1.0,
        "" => return Err(format!("{s:?} has no unit: {HINT}")),
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("unknown unit {other:?} in {s:?}: {HINT}")),
    };
    Duration::try_from_secs_f64(value * seconds_per_unit)
        .map_err(|_| format!("{s:?} is out of range"))
}

/// A size in bytes, written like `65536`, `64KiB`, `16MiB`, `1GiB` (or `64k`, `16M`, `1G`: the
/// same binary units); displayed in the largest unit that divides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub usize);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
            if n != 0 && n % (1 << shift) == 0 {
                return write!(f, "{}{unit}", n >> shift);
            }
        }
        write!(f, "{n}")
    }
}

/// Parses a size greater than zero (see [`Size`]).
pub fn size(s: &str) -> Result<Size, String> {
    const HINT: &str = "write a size in bytes, like 65536, 64KiB or 16MiB";
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: usize = number
        .parse()
        .map_err(|_| format!("{s:?} is not a size: {HINT}"))?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "k" | "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        other => return Err(format!("unknown unit {other:?} in {s:?}: {HINT}")),
    };
    let bytes = value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is out of range"))?;
    if bytes == 0 {
        return Err("must be more than 0".into());
    }
    Ok(Size(bytes))
}

/// Parses an HTTP header written `Name: value`, checked as HTTP requires.
pub fn header(s: &str) -> Result<(String, String), String> {
    let Some((name, value)) = s.split_once(':') else {
        return Err(format!(
            "{s:?} is not a header: write it as 'Name: value', like 'Authorization: Bearer TOKEN'"
        ));
    };
    let (name, value) = (name.trim(), value.trim());
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a valid header name"))?;
    HeaderValue::from_str(value)
        .map_err(|_| format!("the value of header {name} has characters a header cannot carry"))?;
    Ok((name.to_owned(), value.to_owned()))
}

/// Checks a server URL: `ws://host[:port][/path]`, or `wss://...` for WebSocket over TLS. The
/// connection itself checks it again, and resolves the host, when the command starts.
pub fn url(s: &str) -> Result<String, String> {
    let scheme = s
        .split_once("://")
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("ws" | "wss") => {}
        Some(scheme @ ("http" | "https")) => {
            let rest = s.split_once("://").map_or("", |(_, rest)| rest);
            let ws = if scheme == "https" { "wss" } else { "ws" };
            return Err(format!(
                "expected a WebSocket URL, not {scheme}://; did you mean {ws}://{rest}?"
            ));
        }
        _ => {
            return Err(
                "expected a ws:// or wss:// URL, like ws://127.0.0.1:9001/ or wss://example.com/"
                    .into(),
            );
        }
    }
    let request = s
        .into_client_request()
        .map_err(|e| format!("{s:?} is not a valid URL: {e}"))?;
    if request.uri().host().is_none_or(str::is_empty) {
        return Err(format!("{s:?} has no host"));
    }
    Ok(s.to_owned())
}

/// Reads `--ca FILE`: the CA certificates in a PEM file, as the only roots to trust. A file
/// that cannot be read, is not PEM, or holds no certificate is refused, naming the file.
pub fn ca_file(path: &str) -> Result<RootCertStore, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read the CA file {path:?}: {e}"))?;
    let mut roots = RootCertStore::empty();
    for (n, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let cert = cert.map_err(|e| format!("the CA file {path:?} is not valid PEM: {e}"))?;
        roots.add(cert).map_err(|e| {
            format!(
                "certificate {} in the CA file {path:?} cannot be a trusted root: {e}",
                n + 1
            )
        })?;
    }
    if roots.is_empty() {
        return Err(format!(
            "the CA file {path:?} holds no certificate (expected PEM blocks \
             \"-----BEGIN CERTIFICATE-----\")"
        ));
    }
    Ok(roots)
}

/// Checks that a message is one JSON text, and keeps it as written.
pub fn json_text(s: &str) -> Result<Box<RawValue>, String> {
    serde_json::from_str::<Box<RawValue>>(s).map_err(|e| format!("not a JSON text: {e}"))
}

/// The wire format of requests and answers (`--codec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecChoice {
    /// rpcloop's `Envelope`: `{"id": N, "message": <payload>}` both ways.
    Envelope,
    /// JSON-RPC 2.0 (`JsonRpc2`), ids written as numbers: `"id": 5`.
    JsonRpc,
    /// JSON-RPC 2.0 with ids written as strings, `"id": "5"`, for servers that require them.
    JsonRpcStringIds,
}

impl CodecChoice {
    /// Whether it speaks JSON-RPC 2.0 (messages are `{"method":..,"params":..}`).
    pub fn is_jsonrpc(self) -> bool {
        matches!(self, CodecChoice::JsonRpc | CodecChoice::JsonRpcStringIds)
    }
}

impl fmt::Display for CodecChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CodecChoice::Envelope => "envelope",
            CodecChoice::JsonRpc => "jsonrpc",
            CodecChoice::JsonRpcStringIds => "jsonrpc-string-ids",
        })
    }
}

/// Parses `--codec`: `envelope`, `jsonrpc` (also `json-rpc`, `jsonrpc2`) or
/// `jsonrpc-string-ids`.
pub fn codec(s: &str) -> Result<CodecChoice, String> {
    match s.to_ascii_lowercase().as_str() {
        "envelope" => Ok(CodecChoice::Envelope),
        "jsonrpc" | "json-rpc" | "jsonrpc2" => Ok(CodecChoice::JsonRpc),
        "jsonrpc-string-ids" | "json-rpc-string-ids" | "jsonrpc2-string-ids" => {
            Ok(CodecChoice::JsonRpcStringIds)
        }
        _ => Err(format!(
            "unknown codec {s:?}; the codecs are: envelope, jsonrpc, jsonrpc-string-ids"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(duration("500ms"), Ok(Dur(Duration::from_millis(500))));
        assert_eq!(duration("2s"), Ok(Dur(Duration::from_secs(2))));
        assert_eq!(duration("1.5s"), Ok(Dur(Duration::from_millis(1500))));
        assert_eq!(duration("250us"), Ok(Dur(Duration::from_micros(250))));
        assert_eq!(duration("1m"), Ok(Dur(Duration::from_secs(60))));
        assert_eq!(duration("1h"), Ok(Dur(Duration::from_secs(3600))));
        for bad in [
            "5",
            "",
            "ms",
            "-1s",
            "1x",
            "1e3s",
            "1..2s",
            "99999999999999999999h",
        ] {
            assert!(duration(bad).is_err(), "{bad:?} accepted");
        }
        assert!(duration("5").unwrap_err().contains("500ms"));
        assert_eq!(duration("0s"), Err("must be more than 0".into()));
    }

    #[test]
    fn durations_display_as_they_are_written() {
        assert_eq!(Dur(Duration::from_secs(30)).to_string(), "30s");
        assert_eq!(Dur(Duration::from_millis(500)).to_string(), "500ms");
        assert_eq!(Dur(Duration::from_millis(1500)).to_string(), "1500ms");
        assert_eq!(Dur(Duration::from_micros(250)).to_string(), "250us");
        for d in [
            Dur(Duration::from_millis(1500)),
            Dur(Duration::from_micros(7)),
        ] {
            assert_eq!(duration(&d.to_string()), Ok(d));
        }
    }

    #[test]
    fn intervals_can_be_off() {
        assert_eq!(every("off"), Ok(Every(None)));
        assert_eq!(every("0"), Ok(Every(None)));
        assert_eq!(every("0s"), Ok(Every(None)));
        assert_eq!(every("5s"), Ok(Every(Some(Duration::from_secs(5)))));
        assert_eq!(Every(None).to_string(), "off");
        assert!(every("soon").is_err());
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(size("65536"), Ok(Size(65536)));
        assert_eq!(size("64KiB"), Ok(Size(64 << 10)));
        assert_eq!(size("64k"), Ok(Size(64 << 10)));
        assert_eq!(size("16MiB"), Ok(Size(16 << 20)));
        assert_eq!(size("1G"), Ok(Size(1 << 30)));
        for bad in ["", "0", "MiB", "12 parsecs", "-1", "99999999999999999999G"] {
            assert!(size(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(Size(16 << 20).to_string(), "16MiB");
        assert_eq!(Size(1000).to_string(), "1000");
    }

    #[test]
    fn headers_are_name_colon_value() {
        assert_eq!(
            header("Authorization: Bearer abc"),
            Ok(("Authorization".into(), "Bearer abc".into()))
        );
        assert_eq!(header("X-A:b:c"), Ok(("X-A".into(), "b:c".into())));
        assert!(header("no colon").unwrap_err().contains("Name: value"));
        assert!(header(": value").is_err());
        assert!(header("bad name: v").is_err());
        assert!(header("X-A: line\nbreak").is_err());
    }

    #[test]
    fn urls_must_be_ws_or_wss() {
        assert!(url("ws://127.0.0.1:9001/").is_ok());
        assert!(url("ws://example.com/path?q=1").is_ok());
        assert!(url("wss://example.com/").is_ok());
        assert!(url("WSS://localhost:8443/api").is_ok());
        assert!(
            url("http://example.com/")
                .unwrap_err()
                .contains("did you mean ws://example.com/")
        );
        assert!(
            url("https://example.com/x")
                .unwrap_err()
                .contains("did you mean wss://example.com/x")
        );
        assert!(url("127.0.0.1:9001").unwrap_err().contains("wss://"));
        assert!(url("ws://").is_err());
        assert!(url("wss://").is_err());
        assert!(url("ws://exa mple.com/").is_err());
    }

    #[test]
    fn messages_are_json_texts_kept_as_written() {
        assert_eq!(json_text(r#"{"a": 1}"#).unwrap().get(), r#"{"a": 1}"#);
        assert_eq!(json_text("42").unwrap().get(), "42");
        assert!(json_text("{").unwrap_err().starts_with("not a JSON text"));
        assert!(json_text("1 2").is_err());
        assert!(json_text("").is_err());
    }

    #[test]
    fn codecs_by_name() {
        assert_eq!(codec("envelope"), Ok(CodecChoice::Envelope));
        assert_eq!(codec("jsonrpc"), Ok(CodecChoice::JsonRpc));
        assert_eq!(codec("JSON-RPC"), Ok(CodecChoice::JsonRpc));
        assert_eq!(
            codec("jsonrpc-string-ids"),
            Ok(CodecChoice::JsonRpcStringIds)
        );
        for choice in [
            CodecChoice::Envelope,
            CodecChoice::JsonRpc,
            CodecChoice::JsonRpcStringIds,
        ] {
            assert_eq!(codec(&choice.to_string()), Ok(choice));
        }
        assert!(!CodecChoice::Envelope.is_jsonrpc());
        assert!(CodecChoice::JsonRpcStringIds.is_jsonrpc());
        assert!(codec("xml").unwrap_err().contains("envelope, jsonrpc"));
    }
}
