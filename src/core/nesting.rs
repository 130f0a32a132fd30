//! How deeply a JSON text nests: the check every incoming text frame passes before any codec
//! reads it.
//!
//! A frame of a million nested arrays is valid JSON, and serde skips it without complaint
//! (its `RawValue` and `IgnoredAny` paths count no depth), so without a limit it could ride
//! along with a pending call's id, complete that call, and reach code that recurses on it (a
//! `serde_json::Value`'s drop, the caller's own parser, Python's `json`). A frame that nests
//! deeper than [`ConnectionConfig::max_nesting_depth`](crate::ConnectionConfig) is malformed.
//! The check is a loop with a counter, never recursion, so it costs no stack whatever it reads.

/// Whether `text` opens more than `limit` arrays and objects inside one another.
///
/// Only brackets outside strings count. The text need not be valid JSON: an unbalanced or
/// cut text is the codec's to refuse; this only measures how deep it goes.
pub(crate) fn nests_deeper_than(text: &[u8], limit: usize) -> bool {
    // Each level needs an opening bracket of its own, so a text with no more of them than the
    // limit (almost every frame) cannot exceed it. The count is one pass the compiler
    // vectorizes, much cheaper than walking the strings.
    if text.len() <= limit {
        return false;
    }
    opening_brackets_exceed(text, limit) && walk(text, limit)
}

/// Whether `text` holds more than `limit` bytes `[` or `{`, in or out of strings.
///
/// Written so the compiler vectorizes it: `b | 0x20` maps `[` (0x5B) onto `{` (0x7B) and no
/// other byte there, and counting in `u8` lanes over chunks of 240 bytes (below 256, and a
/// multiple of the vector width, so no chunk ends in a scalar tail) keeps the sum narrow. A
/// plain `filter(..).count()` compiles to a byte-at-a-time loop of about 5 instructions a byte;
/// this costs about 0.4 (callgrind, 4 KiB frames).
fn opening_brackets_exceed(text: &[u8], limit: usize) -> bool {
    let mut opening = 0usize;
    for chunk in text.chunks(240) {
        let mut n = 0u8;
        for &b in chunk {
            n += u8::from(b | 0x20 == b'{');
        }
        opening += usize::from(n);
        if opening > limit {
            return true;
        }
    }
    false
}

/// The exact measure: brackets outside strings, up to the first level past `limit`.
fn walk(text: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'"' => i = string_end(text, i + 1),
            _ => {}
        }
        i += 1;
    }
    false
}

/// The index of the quote that closes the string whose body starts at `from` (or the text's
/// length, for a string cut short). A backslash escapes the byte after it (RFC 8259 §7).
fn string_end(text: &[u8], mut from: usize) -> usize {
    loop {
        match text[from.min(text.len())..]
            .iter()
            .position(|&b| b == b'"' || b == b'\\')
        {
            None => return text.len(),
            Some(at) if text[from + at] == b'"' => return from + at,
            Some(at) => from += at + 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(levels: usize) -> String {
        format!(
            r#"{{"id":1,"message":{}{}}}"#,
            "[".repeat(levels - 1),
            "]".repeat(levels - 1)
        )
    }

    #[test]
    fn depth_counts_arrays_and_objects_together() {
        assert!(!nests_deeper_than(b"{}", 1));
        assert!(nests_deeper_than(b"{\"a\":[]}", 1));
        assert!(!nests_deeper_than(b"{\"a\":[]}", 2));
        assert!(!nests_deeper_than(b"[{},{},{},[],[]]", 2));
        assert!(nests_deeper_than(b"[{},{},{\"x\":[1]},[],[]]", 2));
        assert!(!nests_deeper_than(b"17", 0));
        assert!(nests_deeper_than(b"[]", 0));
    }

    #[test]
    fn the_limit_is_the_deepest_level_allowed() {
        for limit in [1, 2, 127, 128, 129] {
            assert!(
                !nests_deeper_than(nested(limit).as_bytes(), limit),
                "{limit}"
            );
            assert!(
                nests_deeper_than(nested(limit + 1).as_bytes(), limit),
                "{limit}"
            );
        }
    }

    #[test]
    fn brackets_inside_strings_do_not_count() {
        let text = format!(r#"{{"id":1,"message":"{}"}}"#, "[{".repeat(500));
        assert!(!nests_deeper_than(text.as_bytes(), 1));
        // Escaped quotes do not end the string; an escaped backslash does not escape the quote.
        let text = format!(r#"["\"{}\\",[[]]]"#, "[".repeat(300));
        assert!(!nests_deeper_than(text.as_bytes(), 3));
        assert!(nests_deeper_than(text.as_bytes(), 2));
        let text = format!(r#"["\\"{}]"#, "[".repeat(300));
        assert!(
            nests_deeper_than(text.as_bytes(), 128),
            "the string ended at \\\\\""
        );
    }

    #[test]
    fn the_bracket_count_sees_both_brackets_and_nothing_else() {
        let others: Vec<u8> = (0..=255u8).filter(|&b| b != b'[' && b != b'{').collect();
        assert!(!opening_brackets_exceed(&others.repeat(3), 0));
        assert!(opening_brackets_exceed(b"[", 0));
        assert!(opening_brackets_exceed(b"{", 0));
        let text = [b'['; 600];
        assert!(!opening_brackets_exceed(&text, 600));
        assert!(opening_brackets_exceed(&text, 599));
    }

    #[test]
    fn cut_and_unbalanced_texts_are_measured_without_panicking() {
        for text in [
            &b"\"unterminated [[[["[..],
            b"\"ends in a backslash\\",
            b"]]]]]]]]]][[",
            b"[\"\\",
            b"",
        ] {
            let _ = nests_deeper_than(text, 0);
            let _ = walk(text, 0);
        }
        assert!(walk(b"]]]]][[", 1), "closing brackets never go below zero");
    }

    #[test]
    fn a_million_levels_are_measured_with_no_recursion() {
        let text = nested(1_000_000);
        assert!(nests_deeper_than(text.as_bytes(), 128));
        // Run on a small stack: a recursive measure would overflow it.
        let small = std::thread::Builder::new().stack_size(64 << 10);
        let deep = small
            .spawn(move || nests_deeper_than(text.as_bytes(), 999_999))
            .unwrap()
            .join()
            .unwrap();
        assert!(deep);
    }
}
