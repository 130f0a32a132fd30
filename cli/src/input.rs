//! [`Input`]: the messages `rpcloop call` sends, from the command line or from stdin, repeated.
//!
//! Stdin is read on its own thread, one JSON text per line, and each line becomes a call as
//! soon as it arrives (so typing at a terminal works like wscat); the event loop's thread only
//! ever takes what is ready, never blocks on it. Messages are kept, for `--repeat`.
//!
//! A line that is not a JSON text is a usage error. From a pipe or a file it ends the input
//! (nothing after it is sent); typed at a terminal it is only reported, and the session goes
//! on (the exit status still says 2).

use std::io::{self, BufRead, IsTerminal};
use std::sync::mpsc::{self, Receiver, TryRecvError};

use serde_json::value::RawValue;

/// Lines read ahead of the calls; past it the reading thread waits (bounded memory).
const READ_AHEAD: usize = 1024;

/// Checks a message beyond its being JSON (`--codec jsonrpc`: a JSON-RPC call); the error says
/// what is wrong with it.
pub type Check = fn(&RawValue) -> Result<(), String>;

/// What the reading thread found on a line.
enum Line {
    Json(Box<RawValue>),
    /// Not a JSON text (or not text).
    Bad(String),
}

/// What to send next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// The message at this position of [`Input::message`].
    Message(usize),
    /// Nothing yet: stdin has not said more.
    Wait,
    /// No more messages.
    End,
    /// The input is invalid here (a usage error); unless it is typed at a terminal, nothing
    /// more is sent.
    Bad(String),
}

/// The messages to send, in order, `repeat` times over.
pub struct Input {
    /// The messages so far; read from stdin with no `--repeat`, only the latest is kept, so a
    /// long-running pipe does not grow memory.
    messages: Vec<Box<RawValue>>,
    /// How many messages there are (read so far, from stdin).
    count: u64,
    /// Stdin, while it is being read (the first round).
    live: Option<Receiver<Line>>,
    repeat: u64,
    round: u64,
    pos: usize,
    stopped: bool,
    /// A bad line does not end the input (it is typed at a terminal).
    forgiving: bool,
}

impl Input {
    /// Messages given on the command line.
    pub fn from_args(messages: Vec<Box<RawValue>>, repeat: u64) -> Self {
        Input {
            count: u64::try_from(messages.len()).unwrap_or(u64::MAX),
            messages,
            live: None,
            repeat,
            round: 0,
            pos: 0,
            stopped: false,
            forgiving: false,
        }
    }

    /// One JSON text per line of stdin (blank lines skipped), read on a thread of its own;
    /// each passes `check`, if any.
    pub fn from_stdin(repeat: u64, check: Option<Check>) -> Self {
        let forgiving = io::stdin().is_terminal();
        let (tx, rx) = mpsc::sync_channel(READ_AHEAD);
        // Not joined: at the end of input it ends by itself; if the command ends first (a
        // usage error), process exit takes it down in its blocking read.
        std::thread::spawn(move || {
            for (n, line) in io::stdin().lock().lines().enumerate() {
                let item = match line {
                    Ok(line) if line.trim().is_empty() => continue,
                    Ok(line) => match serde_json::from_str::<Box<RawValue>>(line.trim()) {
                        Ok(message) => match check.map_or(Ok(()), |check| check(&message)) {
                            Ok(()) => Line::Json(message),
                            Err(why) => Line::Bad(format!("stdin line {}: {why}", n + 1)),
                        },
                        Err(e) => Line::Bad(format!("stdin line {}: not a JSON text: {e}", n + 1)),
                    },
                    Err(e) => Line::Bad(format!("stdin line {}: {e}", n + 1)),
                };
                let last = matches!(item, Line::Bad(_)) && !forgiving;
                if tx.send(item).is_err() || last {
                    return;
                }
            }
        });
        Input {
            live: Some(rx),
            forgiving,
            ..Input::from_args(Vec::new(), repeat)
        }
    }

    /// How many calls in all, once known (stdin: at its end).
    pub fn total(&self) -> Option<u64> {
        self.live
            .is_none()
            .then_some(self.count.saturating_mul(self.repeat))
    }

    /// Whether the next message may come from stdin at any moment.
    pub fn waiting(&self) -> bool {
        self.live.is_some() && !self.stopped
    }

    /// The message at a position given by [`Next::Message`].
    pub fn message(&self, at: usize) -> &RawValue {
        &self.messages[at]
    }

    /// What to send next. Never blocks.
    pub fn next(&mut self) -> Next {
        if self.stopped {
            return Next::End;
        }
        if let Some(lines) = &self.live {
            match lines.try_recv() {
                Ok(Line::Json(message)) => {
                    if self.repeat == 1 {
                        self.messages.clear();
                    }
                    self.messages.push(message);
                    self.count += 1;
                    return Next::Message(self.messages.len() - 1);
                }
                Ok(Line::Bad(why)) => {
                    self.stopped = !self.forgiving;
                    return Next::Bad(why);
                }
                Err(TryRecvError::Empty) => return Next::Wait,
                Err(TryRecvError::Disconnected) => {
                    // End of stdin: the first round is sent; the others replay it.
                    self.live = None;
                    self.round = 1;
                    self.pos = 0;
                }
            }
        }
        if self.messages.is_empty() || self.round >= self.repeat {
            self.stopped = true;
            return Next::End;
        }
        let at = self.pos;
        self.pos += 1;
        if self.pos == self.messages.len() {
            self.pos = 0;
            self.round += 1;
        }
        Next::Message(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    #[test]
    fn arguments_repeat_in_order() {
        let mut input = Input::from_args(vec![raw("1"), raw("2")], 3);
        assert_eq!(input.total(), Some(6));
        let mut sent = Vec::new();
        loop {
            match input.next() {
                Next::Message(at) => sent.push(input.message(at).get().to_owned()),
                Next::End => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(sent, ["1", "2", "1", "2", "1", "2"]);
        assert_eq!(input.next(), Next::End);
        assert!(!input.waiting());
    }

    #[test]
    fn lines_then_replays() {
        let (tx, rx) = mpsc::sync_channel(8);
        let mut input = Input {
            live: Some(rx),
            ..Input::from_args(Vec::new(), 2)
        };
        assert_eq!(input.total(), None);
        assert_eq!(input.next(), Next::Wait);
        assert!(input.waiting());
        tx.send(Line::Json(raw("\"a\""))).unwrap();
        assert_eq!(input.next(), Next::Message(0));
        assert_eq!(input.next(), Next::Wait);
        drop(tx);
        assert_eq!(input.next(), Next::Message(0));
        assert_eq!(input.total(), Some(2));
        assert_eq!(input.next(), Next::End);
    }

    #[test]
    fn without_repeat_only_the_latest_line_is_kept() {
        let (tx, rx) = mpsc::sync_channel(8);
        let mut input = Input {
            live: Some(rx),
            ..Input::from_args(Vec::new(), 1)
        };
        for n in 0..3 {
            tx.send(Line::Json(raw(&n.to_string()))).unwrap();
            let Next::Message(at) = input.next() else {
                panic!("a message")
            };
            assert_eq!(input.message(at).get(), n.to_string());
        }
        assert_eq!(input.messages.len(), 1);
        drop(tx);
        assert_eq!(input.next(), Next::End);
        assert_eq!(input.total(), Some(3));
    }

    #[test]
    fn a_bad_line_stops_the_input() {
        let (tx, rx) = mpsc::sync_channel(8);
        let mut input = Input {
            live: Some(rx),
            ..Input::from_args(Vec::new(), 5)
        };
        tx.send(Line::Json(raw("1"))).unwrap();
        tx.send(Line::Bad("stdin line 2: nope".into())).unwrap();
        assert_eq!(input.next(), Next::Message(0));
        assert_eq!(input.next(), Next::Bad("stdin line 2: nope".into()));
        assert_eq!(input.next(), Next::End);
        assert!(!input.waiting());
    }

    #[test]
    fn at_a_terminal_a_bad_line_is_only_reported() {
        let (tx, rx) = mpsc::sync_channel(8);
        let mut input = Input {
            live: Some(rx),
            forgiving: true,
            ..Input::from_args(Vec::new(), 1)
        };
        tx.send(Line::Bad("stdin line 1: nope".into())).unwrap();
        tx.send(Line::Json(raw("2"))).unwrap();
        drop(tx);
        assert_eq!(input.next(), Next::Bad("stdin line 1: nope".into()));
        assert_eq!(input.next(), Next::Message(0));
        assert_eq!(input.next(), Next::End);
    }

    #[test]
    fn no_message_is_the_end() {
        let mut input = Input::from_args(Vec::new(), 3);
        assert_eq!(input.next(), Next::End);
    }
}
