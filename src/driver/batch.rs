//! Batches (JSON-RPC 2.0 §6): several calls in one frame, one callback with every result.

use std::cell::RefCell;
use std::rc::Rc;

use serde::Serialize;
use tungstenite::Message;

use crate::config::CallOptions;
use crate::core::call_id::CallId;
use crate::core::conn_id::ConnId;
use crate::core::outbox::Unsent;
use crate::core::request::Request;
use crate::core::response::Response;
use crate::driver::connection::{Socket, write_message};
use crate::driver::context::{Callback, Context, Reply};
use crate::error::{DisconnectReason, Error};

/// A batch's callback.
type BatchCallback = Box<dyn FnOnce(&mut Context, Vec<Result<Response, Error>>)>;

/// The results gathered so far; the callback runs when the last one arrives.
struct Gathered {
    results: Vec<Option<Result<Response, Error>>>,
    missing: usize,
    callback: Option<BatchCallback>,
}

impl Context {
    /// Submits several calls in one frame (a JSON array, as JSON-RPC 2.0 batches are), each
    /// with its own id and the same deadline. `callback` runs once, when every call of the
    /// batch has completed, with the results **in request order** (the server may answer them
    /// in any order, or in several frames). A call the server leaves out of its answer fails
    /// with [`Error::Timeout`] at the deadline; a connection lost fails them all.
    ///
    /// Returns the calls' ids, in request order (each may be [cancelled](Self::cancel) on its
    /// own: its slot then holds [`Error::Cancelled`]).
    ///
    /// ```no_run
    /// # use rpcloop::*;
    /// # fn f(ev: &mut EventLoop, conn: ConnId) -> Result<(), Error> {
    /// let requests = vec![Request::new("add", [1, 2]), Request::new("add", [3, 4])];
    /// ev.submit_batch(conn, requests, CallOptions::default(), |_ctx, results| {
    ///     for result in results {
    ///         println!("{:?}", result.and_then(|r| r.message::<i64>()));
    ///     }
    /// })?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`submit_with`](Self::submit_with), for the batch as a whole: nothing was sent and
    /// `callback` is dropped unrun. An empty batch is refused with [`Error::Encode`].
    pub fn submit_batch<'a, P, F>(
        &mut self,
        conn: ConnId,
        requests: impl IntoIterator<Item = Request<'a, P>>,
        options: CallOptions,
        callback: F,
    ) -> Result<Vec<CallId>, Error>
    where
        P: Serialize,
        F: FnOnce(&mut Context, Vec<Result<Response, Error>>) + 'static,
    {
        let payloads = requests
            .into_iter()
            .map(|r| serde_json::to_string(&r).map_err(Error::Encode))
            .collect::<Result<Vec<String>, Error>>()?;
        if payloads.is_empty() {
            return Err(Error::Encode(serde::ser::Error::custom(
                "a batch needs at least one request",
            )));
        }
        if self.shut_down {
            return Err(Error::Shutdown);
        }
        let index = conn.index();
        let Some(c) = self.live(conn) else {
            return Err(self.not_live(conn));
        };
        if let Some(ended) = &c.session.ended {
            return Err(ended.to_error());
        }
        if c.session.in_flight + payloads.len() > c.config.max_in_flight
            || !self.calls.has_room_for(payloads.len())
        {
            return Err(Error::Busy);
        }
        let timeout = options.timeout.unwrap_or(c.config.default_timeout);
        let codec = c.config.codec.clone();
        let limit = c.config.max_message_size;
        self.now();
        let deadline = self.tick_after(timeout);

        let gathered = Rc::new(RefCell::new(Gathered {
            results: (0..payloads.len()).map(|_| None).collect(),
            missing: payloads.len(),
            callback: Some(Box::new(callback)),
        }));
        let mut frame = String::from("[");
        let mut ids = Vec::with_capacity(payloads.len());
        let mut failure = None;
        for (i, payload) in payloads.iter().enumerate() {
            if i > 0 {
                frame.push(',');
            }
            let id = self.calls.next_id();
            if let Err(e) = codec.encode_request(id, payload, &mut frame) {
                failure = Some(Error::Encode(serde::ser::Error::custom(e)));
                break;
            }
            let element: Callback = Box::new({
                let gathered = gathered.clone();
                move |ctx: &mut Context, result| gather(ctx, &gathered, i, result)
            });
            // Registered unwritten for now (the frame is not complete): see below.
            let registered =
                self.calls
                    .handle_submit(conn, deadline, false, Reply::Callback(element));
            debug_assert_eq!(registered, id);
            ids.push(id);
        }
        frame.push(']');
        if failure.is_none() && frame.len() > limit {
            failure = Some(Error::TooLarge {
                size: frame.len(),
                limit,
            });
        }
        if let Some(e) = failure {
            self.withdraw(&ids);
            return Err(e);
        }

        let c = &mut self.conns[index];
        if !c.writes_now() {
            // Queued: the batch waits as one frame, and its calls leave together.
            let size = frame.len();
            let calls = &self.calls;
            if !c
                .session
                .outbox
                .admits(size, c.config.max_write_buffer, |id| calls.is_queued(id))
            {
                self.withdraw(&ids);
                return Err(Error::Busy);
            }
            let batch = Unsent::Batch {
                ids: ids.as_slice().into(),
                frame,
            };
            c.session.outbox.push(batch, size);
            c.session.in_flight += ids.len();
            return Ok(ids);
        }
        let Socket::Open(ws) = &mut c.socket else {
            unreachable!("writes_now implies an open socket");
        };
        let failure = match write_message(ws, Message::Text(frame.into())) {
            Ok(()) => None,
            Err(tungstenite::Error::WriteBufferFull(_)) => {
                self.withdraw(&ids);
                return Err(Error::Busy);
            }
            Err(e) => Some(DisconnectReason::from_ws(&e)),
        };
        for &id in &ids {
            self.calls.handle_written(id);
        }
        c.session.in_flight += ids.len();
        c.session.stats.requests_sent += ids.len() as u64;
        match failure {
            Some(reason) => self.fail(index, reason),
            None => self.wrote(index),
        }
        Ok(ids)
    }

    /// The calls of the queued batch `call` waits in (none if it waits alone, or not at all).
    pub(crate) fn unsent_batch_of(&self, call: CallId) -> Vec<CallId> {
        self.calls
            .conn_of(call)
            .and_then(|conn| self.live(conn))
            .and_then(|c| c.session.outbox.batch_of(call))
            .map_or_else(Vec::new, <[CallId]>::to_vec)
    }

    /// Takes back the calls of a batch that could not be sent.
    fn withdraw(&mut self, ids: &[CallId]) {
        for &id in ids {
            self.calls.handle_withdraw(id);
        }
    }
}

/// One call of a batch completed: keep its result; the last one runs the batch's callback.
fn gather(
    ctx: &mut Context,
    gathered: &Rc<RefCell<Gathered>>,
    i: usize,
    result: Result<Response, Error>,
) {
    let done = {
        let mut g = gathered.borrow_mut();
        g.results[i] = Some(result);
        g.missing -= 1;
        if g.missing > 0 {
            return;
        }
        let results = std::mem::take(&mut g.results);
        g.callback.take().map(|callback| (callback, results))
    };
    if let Some((callback, results)) = done {
        // Every slot is filled: each call completes exactly once.
        let results = results
            .into_iter()
            .map(|r| r.unwrap_or(Err(Error::Cancelled)))
            .collect();
        callback(ctx, results);
    }
}
