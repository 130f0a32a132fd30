//! The names the output gives to the library's errors, unmatched reasons and state changes.
//!
//! They are part of the `--json` contract, so each is pinned here rather than taken from a
//! `Debug` text. The library's enums are `#[non_exhaustive]`: a variant added later falls back
//! to `other` (or to the library's own name) until it gets its arm here.

use rpcloop::{DisconnectReason, Error, StateChange, UnmatchedReason};

use crate::fmt::duration;

/// The snake_case kind of a call's error.
pub fn error_kind(e: &Error) -> &'static str {
    match e {
        Error::Timeout => "timeout",
        Error::Cancelled => "cancelled",
        Error::Closed => "closed",
        Error::Disconnected(_) => "disconnected",
        // The server's certificate was refused (or the TLS handshake failed): nothing was sent,
        // and the cause is worth its own kind, since retrying will not help.
        Error::NotSent(DisconnectReason::Tls { .. }) => "tls",
        Error::NotSent(_) => "not_sent",
        Error::Busy => "busy",
        Error::TooLarge { .. } => "too_large",
        Error::Remote { .. } => "remote",
        Error::Handshake(_) => "handshake",
        Error::Io(_) => "io",
        Error::Shutdown => "shutdown",
        Error::SubscriberTooSlow { .. } => "subscriber_too_slow",
        Error::InvalidUrl(_) => "invalid_url",
        Error::UnknownConnection => "unknown_connection",
        Error::Encode(_) => "encode",
        Error::Decode(_) => "decode",
        _ => "other",
    }
}

/// The reason the output gives a JSON-RPC notification that nobody took (the library's
/// reason for it is `no_id`, as for any frame without an id).
pub const PUSH: &str = "push";

/// The snake_case reason a frame matched no call.
pub fn unmatched_reason(reason: UnmatchedReason) -> &'static str {
    match reason {
        UnmatchedReason::UnknownId => "unknown_id",
        UnmatchedReason::StaleId => "stale_id",
        UnmatchedReason::NoId => "no_id",
        UnmatchedReason::Malformed => "malformed",
        UnmatchedReason::Binary => "binary",
        // A reason added to the library later: its own name until pinned here.
        other => other.as_str(),
    }
}

/// A state change as the output tells it: its name, and the reason where it has one.
pub fn state(change: &StateChange) -> (&'static str, Option<String>) {
    match change {
        StateChange::Connecting => ("connecting", None),
        StateChange::Open => ("open", None),
        StateChange::Disconnected(why) => ("disconnected", Some(why.to_string())),
        StateChange::Reconnecting { attempt, delay } => (
            "reconnecting",
            Some(format!("attempt {attempt} in {}", duration(*delay))),
        ),
        StateChange::Closed => ("closed", None),
        other => ("other", Some(format!("{other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::time::Duration;

    use rpcloop::TlsErrorKind;

    use super::*;

    #[test]
    fn every_error_has_its_kind() {
        let json_error = || serde_json::from_str::<u8>("x").unwrap_err();
        let cases = [
            (Error::Timeout, "timeout"),
            (Error::Cancelled, "cancelled"),
            (Error::Closed, "closed"),
            (Error::Disconnected(DisconnectReason::Reset), "disconnected"),
            (Error::NotSent(DisconnectReason::ConnectTimeout), "not_sent"),
            (
                Error::NotSent(DisconnectReason::Tls {
                    kind: TlsErrorKind::UnknownIssuer,
                    message: "invalid peer certificate: UnknownIssuer".into(),
                }),
                "tls",
            ),
            (Error::Busy, "busy"),
            (Error::TooLarge { size: 2, limit: 1 }, "too_large"),
            (
                Error::Remote {
                    code: -32601,
                    message: "no such method".into(),
                    data: None,
                },
                "remote",
            ),
            (Error::Handshake("403".into()), "handshake"),
            (Error::Io(io::Error::other("x")), "io"),
            (Error::Shutdown, "shutdown"),
            (
                Error::SubscriberTooSlow { capacity: 8 },
                "subscriber_too_slow",
            ),
            (Error::InvalidUrl("x".into()), "invalid_url"),
            (Error::UnknownConnection, "unknown_connection"),
            (Error::Encode(json_error()), "encode"),
            (Error::Decode(json_error()), "decode"),
        ];
        for (error, kind) in cases {
            assert_eq!(error_kind(&error), kind, "{error:?}");
        }
    }

    #[test]
    fn every_unmatched_reason_has_its_name() {
        let cases = [
            (UnmatchedReason::UnknownId, "unknown_id"),
            (UnmatchedReason::StaleId, "stale_id"),
            (UnmatchedReason::NoId, "no_id"),
            (UnmatchedReason::Malformed, "malformed"),
            (UnmatchedReason::Binary, "binary"),
        ];
        for (reason, name) in cases {
            assert_eq!(unmatched_reason(reason), name);
        }
    }

    #[test]
    fn state_changes_have_names_and_reasons() {
        assert_eq!(state(&StateChange::Connecting), ("connecting", None));
        assert_eq!(state(&StateChange::Open), ("open", None));
        assert_eq!(state(&StateChange::Closed), ("closed", None));
        let (name, reason) = state(&StateChange::Disconnected(DisconnectReason::Reset));
        assert_eq!(name, "disconnected");
        assert_eq!(
            reason.as_deref(),
            Some("the peer dropped the connection without a close handshake")
        );
        let change = StateChange::Reconnecting {
            attempt: 2,
            delay: Duration::from_millis(375),
        };
        assert_eq!(
            state(&change),
            ("reconnecting", Some("attempt 2 in 375ms".into()))
        );
    }
}
