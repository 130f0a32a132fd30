//! [`PendingCall`]: a call made from another thread, and the slot its result crosses back in.
//!
//! The slot is a `Mutex` around the result and whoever waits for it, plus a `Condvar` for a
//! parked thread. The loop completes it once (store the result, take the waiter, notify); the
//! caller polls it as a `Future` or blocks on it. Every critical section is a few moves, so the
//! loop thread never waits on a caller for longer than that. Plain `Mutex`/`Condvar` and no
//! hand-rolled atomics: their happens-before guarantees are the standard library's, which is
//! why this needs no `loom` model.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use crate::core::call_id::CallId;
use crate::core::response::Response;
use crate::error::Error;

#[derive(Default)]
struct SlotState {
    result: Option<Result<Response, Error>>,
    /// Set once the result was stored; stays set after the result is taken.
    completed: bool,
    /// The task to wake, when polled as a future.
    waker: Option<Waker>,
    /// The call's id, once the loop has registered it (to cancel it).
    id: Option<CallId>,
}

/// Where the loop leaves one cross-thread call's result.
#[derive(Default)]
pub(crate) struct Slot {
    state: Mutex<SlotState>,
    done: Condvar,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        // A panic while holding this lock leaves the state consistent (every section is a few
        // moves), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores the result and wakes the waiter. Later completions are ignored (exactly once).
    pub(crate) fn complete(&self, result: Result<Response, Error>) {
        let waker = {
            let mut state = self.lock();
            if state.completed {
                return;
            }
            state.completed = true;
            state.result = Some(result);
            state.waker.take()
        };
        self.done.notify_all();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Records the id the loop gave the call.
    pub(crate) fn set_id(&self, id: CallId) {
        self.lock().id = Some(id);
    }

    /// The call's id, if it is registered and not completed (so it can be cancelled).
    pub(crate) fn live_id(&self) -> Option<CallId> {
        let state = self.lock();
        if state.completed { None } else { state.id }
    }
}

/// Where a [`PendingCall`] dropped before its result sends its cancellation (the loop's
/// command queue): this file knows the loop only through it.
pub(crate) trait CancelSink: Send + Sync + std::panic::RefUnwindSafe {
    /// Asks the loop to cancel the call whose result `slot` waits for.
    fn cancel(&self, slot: Arc<Slot>);
}

/// A call made through a [`Handle`](crate::Handle): await it, or block on it.
///
/// It is a runtime-agnostic [`Future`] (woken through the task's [`Waker`], under any
/// executor) and it can be waited on from a plain thread with [`wait`](Self::wait) or
/// [`wait_timeout`](Self::wait_timeout). Dropping it before it completes cancels the call: its
/// table entry and timer are released, and an answer that arrives later counts as stale.
///
/// ```no_run
/// # fn f(handle: rpcloop::Handle, conn: rpcloop::ConnId) -> Result<(), rpcloop::Error> {
/// let n: u64 = handle.call(conn, 42).wait()?.message()?;
/// # Ok(()) }
/// ```
#[must_use = "dropping a PendingCall cancels the call"]
pub struct PendingCall {
    slot: Arc<Slot>,
    loop_sink: Option<Arc<dyn CancelSink>>,
}

impl PendingCall {
    pub(crate) fn new(slot: Arc<Slot>, loop_sink: Arc<dyn CancelSink>) -> Self {
        PendingCall {
            slot,
            loop_sink: Some(loop_sink),
        }
    }

    /// A call that failed before reaching the loop.
    pub(crate) fn failed(error: Error) -> Self {
        let slot = Arc::new(Slot::default());
        slot.complete(Err(error));
        PendingCall {
            slot,
            loop_sink: None,
        }
    }

    /// Blocks the calling thread until the call completes.
    ///
    /// Never call it on the loop's own thread: the loop would not turn, and the call would
    /// never complete.
    ///
    /// # Panics
    /// If the result was already returned by polling this call as a future.
    ///
    /// # Errors
    /// The call's error: [`Error::Timeout`], [`Error::Disconnected`], [`Error::Shutdown`]...
    pub fn wait(self) -> Result<Response, Error> {
        let mut state = self.slot.lock();
        while !state.completed {
            state = self
                .slot
                .done
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        take_result(&mut state)
    }

    /// Blocks until the call completes or `timeout` passes. When the wait times out first, the
    /// call is cancelled (it does not linger in the loop) and the result is [`Error::Timeout`].
    ///
    /// Like [`wait`](Self::wait), never on the loop's own thread.
    ///
    /// # Panics
    /// If the result was already returned by polling this call as a future.
    ///
    /// # Errors
    /// The call's error, or [`Error::Timeout`] when the wait ran out.
    pub fn wait_timeout(self, timeout: Duration) -> Result<Response, Error> {
        // std's wait measures the time left itself, and takes any `Duration` (even `MAX`).
        let (mut state, _) = self
            .slot
            .done
            .wait_timeout_while(self.slot.lock(), timeout, |state| !state.completed)
            .unwrap_or_else(PoisonError::into_inner);
        if !state.completed {
            return Err(Error::Timeout); // dropping `self` cancels the call
        }
        take_result(&mut state)
    }

    /// Whether the result is in (then `wait` returns at once).
    pub fn is_complete(&self) -> bool {
        self.slot.lock().completed
    }
}

/// The result of a completed call; it is handed out once.
fn take_result(state: &mut SlotState) -> Result<Response, Error> {
    state
        .result
        .take()
        .expect("PendingCall's result was already returned (polled after Ready)")
}

impl Future for PendingCall {
    type Output = Result<Response, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut state = self.slot.lock();
        if state.completed {
            return Poll::Ready(take_result(&mut state));
        }
        // Honour a waker that changed between polls (the task moved to another worker).
        match &mut state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        let Some(loop_sink) = self.loop_sink.take() else {
            return;
        };
        if self.slot.lock().completed {
            return;
        }
        loop_sink.cancel(self.slot.clone());
    }
}

impl std::fmt::Debug for PendingCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingCall")
            .field("complete", &self.is_complete())
            .finish()
    }
}
