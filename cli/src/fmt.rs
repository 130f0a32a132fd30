//! Small text helpers for the output: durations for people, truncation, one-line JSON.

use std::borrow::Cow;
use std::time::Duration;

/// A duration for people: `312µs`, `4.21ms`, `12.3ms`, `250ms`, `1.52s`, `12.5s`.
pub fn duration(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1e3 {
        format!("{}µs", d.as_micros())
    } else if us < 1e4 {
        format!("{:.2}ms", us / 1e3)
    } else if us < 1e5 {
        format!("{:.1}ms", us / 1e3)
    } else if us < 1e6 {
        format!("{:.0}ms", us / 1e3)
    } else if us < 1e7 {
        format!("{:.2}s", us / 1e6)
    } else {
        format!("{:.1}s", us / 1e6)
    }
}

/// At most `max` bytes of `text`, cut at a character boundary; `true` if something was cut.
pub fn truncate(text: &str, max: usize) -> (&str, bool) {
    if text.len() <= max {
        return (text, false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], true)
}

/// The first `max` bytes of a frame as text: a binary frame's bytes are read as UTF-8, with
/// U+FFFD for what is not.
pub fn head(bytes: &[u8], max: Option<usize>) -> (Cow<'_, str>, bool) {
    match std::str::from_utf8(bytes) {
        Ok(text) => match max {
            Some(max) => {
                let (head, cut) = truncate(text, max);
                (Cow::Borrowed(head), cut)
            }
            None => (Cow::Borrowed(text), false),
        },
        Err(_) => {
            let end = max.map_or(bytes.len(), |max| max.min(bytes.len()));
            (String::from_utf8_lossy(&bytes[..end]), end < bytes.len())
        }
    }
}

/// Valid JSON text on one line: whitespace between tokens is dropped when the text spans
/// lines (a pretty-printing server), so each output record stays one line. Whitespace inside
/// strings is kept: JSON strings cannot hold a raw line break, so it never needs touching.
pub fn one_line(json: &str) -> Cow<'_, str> {
    if !json.contains(['\n', '\r']) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if matches!(c, ' ' | '\t' | '\n' | '\r') {
            continue;
        }
        out.push(c);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(Duration::from_micros(312)), "312µs");
        assert_eq!(duration(Duration::from_micros(4_213)), "4.21ms");
        assert_eq!(duration(Duration::from_micros(12_345)), "12.3ms");
        assert_eq!(duration(Duration::from_millis(375)), "375ms");
        assert_eq!(duration(Duration::from_millis(1_520)), "1.52s");
        assert_eq!(duration(Duration::from_millis(12_500)), "12.5s");
    }

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate("abc", 5), ("abc", false));
        assert_eq!(truncate("abcdef", 3), ("abc", true));
        // 'é' is two bytes: a cut inside it moves back before it.
        assert_eq!(truncate("aé", 2), ("a", true));
        assert_eq!(head(b"abcdef", Some(4)), (Cow::Borrowed("abcd"), true));
        assert_eq!(head(b"abc", None), (Cow::Borrowed("abc"), false));
        let (text, cut) = head(&[0xff, b'a', b'b'], Some(2));
        assert_eq!((text.as_ref(), cut), ("\u{fffd}a", true));
    }

    #[test]
    fn json_is_put_on_one_line() {
        assert_eq!(one_line(r#"{"a": 1}"#), r#"{"a": 1}"#);
        let pretty = "{\n  \"a b\": [1,\n 2],\r\n  \"c\": \"x\\\" \\n y\"\n}";
        let flat = one_line(pretty);
        assert_eq!(flat, r#"{"a b":[1,2],"c":"x\" \n y"}"#);
        let a: serde_json::Value = serde_json::from_str(pretty).unwrap();
        let b: serde_json::Value = serde_json::from_str(&flat).unwrap();
        assert_eq!(a, b);
    }
}
