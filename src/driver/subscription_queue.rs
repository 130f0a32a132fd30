//! [`Subscription`]: a subscription made through a [`Handle`](crate::Handle), as a bounded queue
//! another thread drains — blocking, with a timeout, or as an async poll under any executor.
//!
//! The loop never waits for the consumer: when the queue is full, the [`Overflow`] policy
//! applies on the loop thread (drop the oldest item and count it, or end the subscription with
//! [`Error::SubscriberTooSlow`]), so a slow consumer cannot stall the other calls.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use crate::core::event::{SubscribeOptions, SubscriptionEvent, SubscriptionId};
use crate::error::Error;

/// What happens when a [`Subscription`]'s queue is full and another item arrives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Overflow {
    /// Drop the oldest queued item and count it ([`Subscription::dropped`]). Default.
    #[default]
    DropOldest,
    /// End the subscription with [`Error::SubscriberTooSlow`] (and unsubscribe).
    End,
}

/// Settings of a [`Handle::subscribe`](crate::Handle::subscribe) subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueOptions {
    /// Items the queue holds before [`overflow`](Self::overflow) applies. Default: 1,024.
    pub capacity: usize,
    /// What a full queue does. Default: [`Overflow::DropOldest`].
    pub overflow: Overflow,
    /// How the subscription is made.
    pub subscribe: SubscribeOptions,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            capacity: 1_024,
            overflow: Overflow::DropOldest,
            subscribe: SubscribeOptions::default(),
        }
    }
}

struct Inner {
    events: VecDeque<SubscriptionEvent>,
    /// `Ended` is queued: nothing more is accepted.
    ended: bool,
    /// `Ended` was handed to the consumer: `next` returns `None` from now on.
    finished: bool,
    dropped: u64,
    waker: Option<Waker>,
    /// The loop-side subscription, once the loop made it.
    sub: Option<SubscriptionId>,
}

/// The queue between the loop (producer) and the consumer thread.
pub(crate) struct SubQueue {
    inner: Mutex<Inner>,
    ready: Condvar,
    capacity: usize,
    overflow: Overflow,
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // Each critical section leaves the queue consistent; a panic elsewhere cannot tear it.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SubQueue {
    pub(crate) fn new(options: &QueueOptions) -> Self {
        SubQueue {
            inner: Mutex::new(Inner {
                events: VecDeque::new(),
                ended: false,
                finished: false,
                dropped: 0,
                waker: None,
                sub: None,
            }),
            ready: Condvar::new(),
            capacity: options.capacity.max(1),
            overflow: options.overflow,
        }
    }

    pub(crate) fn set_sub(&self, sub: SubscriptionId) {
        lock(&self.inner).sub = Some(sub);
    }

    pub(crate) fn sub(&self) -> Option<SubscriptionId> {
        lock(&self.inner).sub
    }

    /// Queues an event from the loop. Returns `false` when the queue overflowed under
    /// [`Overflow::End`]: the subscription is over for the consumer and must be unsubscribed.
    pub(crate) fn push(&self, event: SubscriptionEvent) -> bool {
        let mut inner = lock(&self.inner);
        if inner.ended {
            return true; // after the end, nothing (the loop's own Ended(Cancelled) included)
        }
        let mut keep = true;
        match event {
            SubscriptionEvent::Ended(_) => {
                inner.ended = true;
                inner.events.push_back(event);
            }
            event if inner.events.len() < self.capacity => inner.events.push_back(event),
            event => {
                match self.overflow {
                    Overflow::DropOldest => {
                        // The oldest *item*: an Interrupted or Resubscribed is never dropped
                        // (they are rare, so they cannot grow the queue by much).
                        let oldest = inner
                            .events
                            .iter()
                            .position(|e| matches!(e, SubscriptionEvent::Item(_)));
                        if let Some(at) = oldest {
                            inner.events.remove(at);
                            inner.dropped += 1;
                        }
                        inner.events.push_back(event);
                    }
                    Overflow::End => {
                        inner.dropped += 1;
                        inner.ended = true;
                        let capacity = self.capacity;
                        inner.events.push_back(SubscriptionEvent::Ended(
                            Error::SubscriberTooSlow { capacity },
                        ));
                        keep = false;
                    }
                }
            }
        }
        let waker = inner.waker.take();
        drop(inner);
        self.ready.notify_all();
        if let Some(waker) = waker {
            waker.wake();
        }
        keep
    }

    /// Takes the next event, if any; `Some(None)` once the subscription is over.
    fn take(inner: &mut Inner) -> Option<Option<SubscriptionEvent>> {
        if inner.finished {
            return Some(None);
        }
        let event = inner.events.pop_front()?;
        if matches!(event, SubscriptionEvent::Ended(_)) {
            inner.finished = true;
        }
        Some(Some(event))
    }
}

/// A subscription made from another thread ([`Handle::subscribe`](crate::Handle::subscribe)):
/// the loop queues its events here, this thread drains them.
///
/// Events come in arrival order; exactly one [`SubscriptionEvent::Ended`] comes last, after
/// which every `next` returns `None`. Dropping it unsubscribes.
///
/// ```no_run
/// # fn f(handle: rpcloop::Handle, conn: rpcloop::ConnId) {
/// use rpcloop::{QueueOptions, SubscriptionEvent};
/// let sub = handle.subscribe(conn, "eth_subscribe", ["newHeads"], "eth_unsubscribe", QueueOptions::default());
/// while let Some(event) = sub.next() {
///     match event {
///         SubscriptionEvent::Item(n) => println!("{}", n.item_text()),
///         SubscriptionEvent::Ended(why) => println!("ended: {why}"),
///         _ => {}
///     }
/// }
/// # }
/// ```
pub struct Subscription {
    queue: Arc<SubQueue>,
    loop_sink: Arc<dyn UnsubscribeSink>,
}

/// Where a [`Subscription`] sends its unsubscribe (the loop's command queue): this file knows
/// the loop only through it.
pub(crate) trait UnsubscribeSink: Send + Sync + std::panic::RefUnwindSafe {
    /// Asks the loop to end the subscription whose events `queue` receives.
    fn unsubscribe(&self, queue: Arc<SubQueue>);
}

impl Subscription {
    pub(crate) fn new(queue: Arc<SubQueue>, loop_sink: Arc<dyn UnsubscribeSink>) -> Self {
        Subscription { queue, loop_sink }
    }

    /// Blocks until the next event; `None` once the subscription is over (its `Ended` event
    /// was returned).
    pub fn next(&self) -> Option<SubscriptionEvent> {
        let mut inner = lock(&self.queue.inner);
        loop {
            if let Some(event) = SubQueue::take(&mut inner) {
                return event;
            }
            inner = self
                .queue
                .ready
                .wait(inner)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Like [`next`](Self::next), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`Error::Timeout`] if no event arrived in time (the subscription goes on).
    pub fn next_timeout(&self, timeout: Duration) -> Result<Option<SubscriptionEvent>, Error> {
        // std's wait measures the time left itself, and takes any `Duration` (even `MAX`).
        let mut taken = None;
        let inner = lock(&self.queue.inner);
        let _ = self
            .queue
            .ready
            .wait_timeout_while(inner, timeout, |inner| {
                taken = SubQueue::take(inner);
                taken.is_none()
            })
            .unwrap_or_else(PoisonError::into_inner);
        taken.ok_or(Error::Timeout)
    }

    /// The next event without blocking, for any executor: `Ready(None)` once over.
    pub fn poll_next(&self, cx: &mut TaskContext<'_>) -> Poll<Option<SubscriptionEvent>> {
        let mut inner = lock(&self.queue.inner);
        match SubQueue::take(&mut inner) {
            Some(event) => Poll::Ready(event),
            None => {
                inner.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// The next event as a future (`sub.recv().await`), under any executor.
    pub fn recv(&self) -> impl Future<Output = Option<SubscriptionEvent>> + '_ {
        Recv { sub: self }
    }

    /// Items dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        lock(&self.queue.inner).dropped
    }

    /// Asks the loop to unsubscribe; the queue then ends with `Ended(Error::Cancelled)`.
    pub fn unsubscribe(&self) {
        if !lock(&self.queue.inner).ended {
            self.loop_sink.unsubscribe(self.queue.clone());
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.unsubscribe();
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("sub", &self.queue.sub())
            .finish_non_exhaustive()
    }
}

struct Recv<'a> {
    sub: &'a Subscription,
}

impl Future for Recv<'_> {
    type Output = Option<SubscriptionEvent>;
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        self.sub.poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::conn_id::ConnId;
    use crate::core::notification::Notification;
    use crate::error::DisconnectReason;

    fn item(n: u32) -> SubscriptionEvent {
        let frame = format!(r#"{{"method":"m","params":{{"result":{n}}}}}"#);
        let item = 33..33 + n.to_string().len();
        assert_eq!(&frame[item.clone()], n.to_string());
        SubscriptionEvent::Item(Notification::new(
            ConnId::new(0, 0),
            frame.into(),
            10..13,
            None,
            None,
            Some(item),
        ))
    }

    fn drain(queue: &SubQueue) -> Vec<String> {
        let mut inner = lock(&queue.inner);
        std::iter::from_fn(|| SubQueue::take(&mut inner).flatten())
            .map(|e| match e {
                SubscriptionEvent::Item(n) => n.item_text().to_owned(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn drop_oldest_drops_items_never_state_events() {
        let queue = SubQueue::new(&QueueOptions {
            capacity: 2,
            ..QueueOptions::default()
        });
        let lost = SubscriptionEvent::Interrupted(DisconnectReason::Reset);
        for event in [lost, item(1), item(2), item(3)] {
            assert!(queue.push(event));
        }
        assert_eq!(lock(&queue.inner).dropped, 2);
        assert_eq!(drain(&queue), ["Interrupted(Reset)", "3"]);
    }

    #[test]
    fn end_policy_ends_once_and_refuses_the_rest() {
        let queue = SubQueue::new(&QueueOptions {
            capacity: 1,
            overflow: Overflow::End,
            ..QueueOptions::default()
        });
        assert!(queue.push(item(1)));
        assert!(!queue.push(item(2)), "overflow: the loop must unsubscribe");
        assert!(
            queue.push(SubscriptionEvent::Ended(Error::Cancelled)),
            "ignored"
        );
        assert_eq!(
            drain(&queue),
            ["1", "Ended(SubscriberTooSlow { capacity: 1 })"]
        );
        assert!(lock(&queue.inner).finished);
    }

    #[test]
    fn next_timeout_takes_any_duration() {
        struct NoLoop;
        impl UnsubscribeSink for NoLoop {
            fn unsubscribe(&self, _: Arc<SubQueue>) {}
        }
        let queue = Arc::new(SubQueue::new(&QueueOptions::default()));
        assert!(queue.push(item(7)));
        let sub = Subscription::new(queue, Arc::new(NoLoop));
        // Adding `Duration::MAX` to the current instant overflows: the wait must not do it.
        match sub.next_timeout(Duration::MAX) {
            Ok(Some(SubscriptionEvent::Item(n))) => assert_eq!(n.item_text(), "7"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            sub.next_timeout(Duration::from_millis(1)),
            Err(Error::Timeout)
        ));
    }
}
