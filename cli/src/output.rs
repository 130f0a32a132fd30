//! [`Reporter`]: everything the commands print, in human or `--json` form, and the tallies
//! behind the summary.
//!
//! Human form: one line per call on stdout (`#3 ok 412µs id=16777219 {"n":3}`), frames that
//! matched no call on stdout too, connection trouble on stderr, and a summary on stdout. With a
//! progress bar on the same terminal as stdout, successful calls are folded into the bar.
//!
//! `--json` form: one JSON object per line on stdout (the shapes are the structs below), the
//! summary last; stderr carries only the progress bar and fatal errors.
//!
//! Under JSON-RPC, a frame without an id that is a notification nobody took is reported as
//! `push` (the library says `no_id` for every frame without an id), and an error answer's
//! code, message and data are shown with the call (`"remote":{..}` in `--json`).

use std::collections::BTreeMap;
use std::io::{self, IsTerminal, Stdout, Write};
use std::time::Duration;

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rpcloop::{
    CallId, Error, Notification, Response, StateChange, SubscriptionEvent, Unmatched,
    UnmatchedReason,
};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::fmt::{self, duration};
use crate::parse::CodecChoice;
use crate::{jsonrpc, kinds};

/// How much of an unmatched frame `call` shows.
pub const RAW_LIMIT: usize = 256;

/// `{"call":..}`: one call, when it completes.
#[derive(Serialize)]
struct CallLine<'a> {
    call: u64,
    id: Option<u64>,
    outcome: &'static str,
    error_kind: Option<&'static str>,
    error: Option<&'a str>,
    latency_us: u64,
    message: Option<&'a RawValue>,
    /// With `error_kind` `remote` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    remote: Option<RemoteError<'a>>,
}

/// `"remote":{..}`: the error object a JSON-RPC server answered with.
#[derive(Serialize)]
struct RemoteError<'a> {
    code: i64,
    message: &'a str,
    data: Option<&'a RawValue>,
}

impl<'a> RemoteError<'a> {
    fn of(error: &'a Error) -> Option<Self> {
        match error {
            Error::Remote {
                code,
                message,
                data,
            } => Some(RemoteError {
                code: *code,
                message,
                data: data.as_deref(),
            }),
            _ => None,
        }
    }
}

/// `{"event":"item",..}`: an item of the subscription (`listen --jsonrpc-subscribe`).
#[derive(Serialize)]
struct ItemLine<'a> {
    event: &'static str,
    /// The key, as the subscribe call's result.
    subscription: Option<&'a RawValue>,
    /// The notification's `params.result`.
    item: Option<&'a RawValue>,
}

/// `{"event":"subscription",..}`: the subscription was interrupted, made again, or ended.
#[derive(Serialize)]
struct SubscriptionLine<'a> {
    event: &'static str,
    state: &'static str,
    reason: Option<&'a str>,
    error_kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remote: Option<RemoteError<'a>>,
}

/// `{"event":"unmatched",..}`: a frame that matched no call.
#[derive(Serialize)]
struct UnmatchedLine<'a> {
    event: &'static str,
    reason: &'static str,
    raw: &'a str,
}

/// `{"event":"state",..}`: a connection state change.
#[derive(Serialize)]
struct StateLine<'a> {
    event: &'static str,
    state: &'static str,
    reason: Option<&'a str>,
}

/// `{"summary":{..}}`: the last line.
#[derive(Serialize)]
struct SummaryLine<'a> {
    summary: Summary<'a>,
}

#[derive(Serialize)]
struct Summary<'a> {
    calls: u64,
    ok: u64,
    errors: &'a BTreeMap<&'static str, u64>,
    unmatched: u64,
    stale: u64,
    /// `listen` only: the subscription's items.
    #[serde(skip_serializing_if = "Option::is_none")]
    items: Option<u64>,
    elapsed_ms: u64,
}

/// Human or machine output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Lines for people.
    Human,
    /// One JSON object per line.
    Json,
}

/// Which command reports: `call` shows the head of unmatched frames, `listen` whole frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `rpcloop call`.
    Call,
    /// `rpcloop listen`.
    Listen,
}

/// A call as it completed, for [`Reporter::call`].
pub struct Completion {
    /// The call's number, from 0, in submission order.
    pub index: u64,
    /// Its wire id; `None` when it was refused before an id was given.
    pub id: Option<CallId>,
    /// From submission to completion.
    pub latency: Duration,
    /// The answer, or why there is none.
    pub result: Result<Response, Error>,
}

/// Prints results and keeps the tallies.
pub struct Reporter {
    mode: Mode,
    purpose: Purpose,
    /// Frames are JSON-RPC: notifications without a taker are pushes.
    jsonrpc: bool,
    out: io::BufWriter<Stdout>,
    /// Stdout failed (a pipe whose reader left): nothing more is written to it.
    broken: bool,
    bar: Option<ProgressBar>,
    /// The bar shares a terminal with stdout.
    stdout_tty: bool,
    calls: u64,
    ok: u64,
    errors: BTreeMap<&'static str, u64>,
    unmatched: u64,
    stale: u64,
    items: u64,
    latencies: Histogram<u64>,
    reconnecting: bool,
}

impl Reporter {
    /// A reporter writing to this process's stdout and stderr.
    pub fn new(mode: Mode, purpose: Purpose, codec: CodecChoice) -> Self {
        Reporter {
            mode,
            purpose,
            jsonrpc: codec.is_jsonrpc(),
            out: io::BufWriter::new(io::stdout()),
            broken: false,
            bar: None,
            stdout_tty: io::stdout().is_terminal(),
            calls: 0,
            ok: 0,
            errors: BTreeMap::new(),
            unmatched: 0,
            stale: 0,
            items: 0,
            // Microseconds from 1 to an hour, 3 significant digits: a few tens of KiB.
            latencies: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("constant histogram bounds are valid"),
            reconnecting: false,
        }
    }

    /// Shows a progress bar on stderr, if it is a terminal; `total` calls if known.
    pub fn show_progress(&mut self, total: Option<u64>) {
        if !io::stderr().is_terminal() {
            return;
        }
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
        let template =
            "{spinner} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} calls, {eta} left";
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        self.bar = Some(bar);
    }

    /// The number of calls is known now (stdin reached its end).
    pub fn set_total(&mut self, total: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(total);
        }
    }

    /// Reports a completed call.
    pub fn call(&mut self, done: Completion) {
        let Completion {
            index,
            id,
            latency,
            result,
        } = done;
        self.calls += 1;
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
        let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let id_text = id.map_or(String::new(), |id| format!(" id={id}"));
        match result {
            Ok(response) => {
                self.ok += 1;
                self.latencies.saturating_record(latency_us.max(1));
                let text = fmt::one_line(response.text());
                let line = match self.mode {
                    Mode::Json => {
                        let message = serde_json::from_str::<&RawValue>(&text).ok();
                        json(&CallLine {
                            call: index,
                            id: id.map(CallId::as_u64),
                            outcome: "ok",
                            error_kind: None,
                            error: None,
                            latency_us,
                            message,
                            remote: None,
                        })
                    }
                    Mode::Human => format!("#{index} ok {}{id_text} {text}", duration(latency)),
                };
                self.line(&line, true);
            }
            Err(error) => {
                let kind = kinds::error_kind(&error);
                *self.errors.entry(kind).or_default() += 1;
                let text = error_text(&error);
                let line = match self.mode {
                    Mode::Json => json(&CallLine {
                        call: index,
                        id: id.map(CallId::as_u64),
                        outcome: "error",
                        error_kind: Some(kind),
                        error: Some(&text),
                        latency_us,
                        message: None,
                        remote: RemoteError::of(&error),
                    }),
                    Mode::Human if id.is_none() => {
                        format!("#{index} failed ({kind}): {text}")
                    }
                    Mode::Human => {
                        format!(
                            "#{index} failed ({kind}) {}{id_text}: {text}",
                            duration(latency)
                        )
                    }
                };
                self.line(&line, false);
            }
        }
    }

    /// Reports a frame that matched no call.
    pub fn unmatched(&mut self, frame: &Unmatched) {
        self.unmatched += 1;
        let reason = frame.reason();
        if reason == UnmatchedReason::StaleId {
            self.stale += 1;
        }
        let name = if self.jsonrpc
            && reason == UnmatchedReason::NoId
            && jsonrpc::is_notification(frame.as_bytes())
        {
            kinds::PUSH
        } else {
            kinds::unmatched_reason(reason)
        };
        let limit = match self.purpose {
            Purpose::Call => Some(RAW_LIMIT),
            Purpose::Listen => None,
        };
        let (raw, cut) = fmt::head(frame.as_bytes(), limit);
        let line = match (self.mode, self.purpose) {
            (Mode::Json, _) => json(&UnmatchedLine {
                event: "unmatched",
                reason: name,
                raw: &raw,
            }),
            (Mode::Human, Purpose::Listen) if reason == UnmatchedReason::NoId => raw.into_owned(),
            (Mode::Human, Purpose::Listen) => format!("[{name}] {raw}"),
            (Mode::Human, Purpose::Call) => {
                let raw = raw.replace(['\n', '\r'], " ");
                let more = if cut {
                    format!("... ({} bytes)", frame.as_bytes().len())
                } else {
                    String::new()
                };
                format!("unmatched ({name}): {raw}{more}")
            }
        };
        self.line(&line, false);
    }

    /// Reports an item of the subscription (`listen --jsonrpc-subscribe`): its `params.result`,
    /// whole.
    pub fn item(&mut self, notification: &Notification) {
        self.items += 1;
        let item = fmt::one_line(notification.item_text());
        let line = match self.mode {
            Mode::Json => {
                let key = notification.subscription_key().map(fmt::one_line);
                json(&ItemLine {
                    event: "item",
                    subscription: key.as_deref().and_then(raw_json),
                    item: raw_json(&item),
                })
            }
            Mode::Human => item.into_owned(),
        };
        self.line(&line, false);
    }

    /// Reports what befell the subscription other than an item: `Interrupted`,
    /// `Resubscribed`, or an `Ended` this side did not ask for. `subscribe` names the subscribe
    /// method, for people.
    pub fn subscription(&mut self, event: &SubscriptionEvent, subscribe: &str) {
        let (state, reason, error) = match event {
            SubscriptionEvent::Item(_) => return,
            SubscriptionEvent::Interrupted(why) => ("interrupted", Some(why.to_string()), None),
            SubscriptionEvent::Resubscribed => ("resubscribed", None, None),
            SubscriptionEvent::Ended(e) => ("ended", Some(error_text(e)), Some(e)),
            _ => ("other", Some(format!("{event:?}")), None),
        };
        match self.mode {
            Mode::Json => {
                let line = json(&SubscriptionLine {
                    event: "subscription",
                    state,
                    reason: reason.as_deref(),
                    error_kind: error.map(kinds::error_kind),
                    remote: error.and_then(RemoteError::of),
                });
                self.line(&line, false);
            }
            Mode::Human => match (event, error) {
                // The connection's end is told by its state change.
                (
                    _,
                    Some(
                        Error::Disconnected(_)
                        | Error::NotSent(_)
                        | Error::Closed
                        | Error::Shutdown,
                    ),
                ) => {}
                (_, Some(e)) => self.note(&format!(
                    "{subscribe} failed ({}): {}",
                    kinds::error_kind(e),
                    reason.unwrap_or_default()
                )),
                (SubscriptionEvent::Resubscribed, _) => self.note("subscribed again"),
                _ => self.note(&format!(
                    "subscription {state}: {}",
                    reason.unwrap_or_default()
                )),
            },
        }
    }

    /// Reports a connection state change.
    pub fn state(&mut self, change: &StateChange) {
        let (name, reason) = kinds::state(change);
        match self.mode {
            Mode::Json => {
                let line = json(&StateLine {
                    event: "state",
                    state: name,
                    reason: reason.as_deref(),
                });
                self.line(&line, false);
            }
            Mode::Human => match change {
                StateChange::Disconnected(why) => self.note(&format!("disconnected: {why}")),
                StateChange::Reconnecting { .. } => {
                    self.reconnecting = true;
                    self.note(&format!("reconnecting: {}", reason.unwrap_or_default()));
                }
                StateChange::Open if self.reconnecting => {
                    self.reconnecting = false;
                    self.note("reconnected");
                }
                _ => {}
            },
        }
    }

    /// A message for people on stderr, after `rpcloop: `.
    pub fn note(&self, text: &str) {
        self.stderr(&format!("rpcloop: {text}"));
    }

    /// A message on stderr whatever the mode (fatal errors, usage errors).
    pub fn stderr(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }

    /// Prints the summary (and takes the progress bar down).
    pub fn summary(&mut self, elapsed: Duration) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        match self.mode {
            Mode::Json => {
                let line = json(&SummaryLine {
                    summary: Summary {
                        calls: self.calls,
                        ok: self.ok,
                        errors: &self.errors,
                        unmatched: self.unmatched,
                        stale: self.stale,
                        items: (self.purpose == Purpose::Listen).then_some(self.items),
                        elapsed_ms,
                    },
                });
                self.line(&line, false);
            }
            Mode::Human if self.purpose == Purpose::Listen => {
                let n = self.unmatched + self.items;
                let s = if n == 1 { "" } else { "s" };
                self.note(&format!("{n} message{s} in {}", duration(elapsed)));
            }
            Mode::Human => {
                let lines = self.human_summary(elapsed);
                for line in lines {
                    self.line(&line, false);
                }
            }
        }
        self.flush();
    }

    fn human_summary(&self, elapsed: Duration) -> Vec<String> {
        let failed: u64 = self.errors.values().sum();
        let s = if self.calls == 1 { "" } else { "s" };
        let mut first = format!("{} call{s}: {} ok, {failed} failed", self.calls, self.ok);
        if failed > 0 {
            let kinds: Vec<String> = self
                .errors
                .iter()
                .map(|(kind, n)| format!("{kind}: {n}"))
                .collect();
            first += &format!(" ({})", kinds.join(", "));
        }
        first += &format!("; {} unmatched", self.unmatched);
        if self.stale > 0 {
            first += &format!(" ({} stale)", self.stale);
        }
        first += &format!("; {}", duration(elapsed));
        let mut lines = vec![first];
        if self.ok > 0 {
            let h = &self.latencies;
            let at = |q: f64| duration(Duration::from_micros(h.value_at_quantile(q)));
            let s = if self.ok == 1 { "" } else { "s" };
            lines.push(format!(
                "latency of {} answer{s}: p50 {}, p99 {}, max {}",
                self.ok,
                at(0.5),
                at(0.99),
                duration(Duration::from_micros(h.max())),
            ));
        }
        lines
    }

    /// Writes buffered lines out (after each turn, so answers show as they come).
    pub fn flush(&mut self) {
        if !self.broken && self.out.flush().is_err() {
            self.broken = true;
        }
    }

    /// Whether any call failed.
    pub fn any_failed(&self) -> bool {
        !self.errors.is_empty()
    }

    /// Writes one line to stdout. `foldable`: a success, which a progress bar on the same
    /// terminal stands for.
    fn line(&mut self, line: &str, foldable: bool) {
        if self.broken {
            return;
        }
        let written = match &self.bar {
            Some(_) if self.stdout_tty && foldable && self.mode == Mode::Human => Ok(()),
            Some(bar) if self.stdout_tty => {
                let out = &mut self.out;
                bar.suspend(|| writeln!(out, "{line}").and_then(|()| out.flush()))
            }
            _ => writeln!(self.out, "{line}"),
        };
        if written.is_err() {
            self.broken = true;
        }
    }
}

/// An error as the output tells it: its message, and a JSON-RPC error's data after it.
pub fn error_text(error: &Error) -> String {
    match error {
        Error::Remote {
            data: Some(data), ..
        } => format!("{error}; data: {}", fmt::one_line(data.get())),
        _ => error.to_string(),
    }
}

/// JSON text the library found in a frame, to print as it is.
fn raw_json(text: &str) -> Option<&RawValue> {
    serde_json::from_str(text).ok()
}

/// One JSON object as text. Serializing these plain structs cannot fail; if it ever did, the
/// line still says so rather than vanish.
fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value)
        .unwrap_or_else(|e| format!("{{\"event\":\"internal_error\",\"error\":\"{e}\"}}"))
}
