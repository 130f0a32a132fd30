//! [`Context::submit_batch`] (JSON-RPC 2.0 §6): several calls in one frame, one callback with
//! every result. The engine gathers the results; a batch is one frame in its outbox.

use serde::Serialize;

use crate::config::CallOptions;
use crate::core::call_id::CallId;
use crate::core::conn_id::ConnId;
use crate::core::request::Request;
use crate::core::response::Response;
use crate::driver::context::{Context, Reply};
use crate::error::Error;

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
        let now = self.now_tick_fresh();
        let reply = Reply::Batch(Box::new(callback));
        let ids = self
            .engine
            .submit_batch(now, conn, &payloads, options, reply)
            .map_err(|(e, _)| e)?;
        self.pump();
        Ok(ids)
    }
}
