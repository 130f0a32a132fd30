//! [`Mailbox`]: a queue from other threads to the loop, which wakes the loop's poll.
//!
//! Producers push on one mutex-guarded queue and wake the loop with the poll's `mio::Waker`.
//! Wake-ups are coalesced: only the push that finds the queue empty wakes, since every drain
//! takes the whole queue at once (a swap under the lock) and the next push finds it empty
//! again. For that to hold, a drain must take the queue every time, leftovers or not. After
//! shutdown the mailbox refuses what is pushed and hands it back (calloop's `InsertError`
//! does the same), so nothing sent is ever silently lost.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`. Every critical section of the cross-thread types is a few moves: a panic
/// cannot leave one half done, so a poisoned lock is still consistent.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Queue<C> {
    items: VecDeque<C>,
    /// Set by the loop's shutdown: from then on nothing is queued.
    shut_down: bool,
}

/// Items of type `C` on their way to the loop.
pub(crate) struct Mailbox<C> {
    queue: Mutex<Queue<C>>,
    waker: mio::Waker,
}

impl<C> Mailbox<C> {
    pub(crate) fn new(waker: mio::Waker) -> Self {
        Mailbox {
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                shut_down: false,
            }),
            waker,
        }
    }

    /// Queues `item` for the loop, waking it if the queue was empty; gives it back if the
    /// loop has shut down.
    pub(crate) fn send(&self, item: C) -> Result<(), C> {
        let was_empty = {
            let mut queue = lock(&self.queue);
            if queue.shut_down {
                return Err(item);
            }
            queue.items.push_back(item);
            queue.items.len() == 1
        };
        if was_empty {
            // Fails only if the poller is gone, which happens after shutdown drained the queue.
            if let Err(e) = self.waker.wake() {
                log::debug!("waking the loop failed: {e}");
            }
        }
        Ok(())
    }

    /// Takes everything queued, behind what `backlog` holds already.
    pub(crate) fn drain_into(&self, backlog: &mut VecDeque<C>) {
        let mut queue = lock(&self.queue);
        if backlog.is_empty() {
            // A swap keeps both buffers' capacity: no allocation per drain.
            std::mem::swap(&mut queue.items, backlog);
        } else {
            backlog.extend(queue.items.drain(..));
        }
    }

    /// Refuses everything from now on, and returns what was queued.
    pub(crate) fn shut_down(&self) -> VecDeque<C> {
        let mut queue = lock(&self.queue);
        queue.shut_down = true;
        std::mem::take(&mut queue.items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_push_onto_an_empty_queue_wakes_and_shutdown_hands_items_back() {
        let mut poll = mio::Poll::new().unwrap();
        let waker = mio::Waker::new(poll.registry(), mio::Token(7)).unwrap();
        let mailbox = Mailbox::new(waker);
        let mut events = mio::Events::with_capacity(4);
        let woken = |poll: &mut mio::Poll, events: &mut mio::Events| {
            poll.poll(events, Some(std::time::Duration::ZERO)).unwrap();
            events.iter().count()
        };
        assert!(mailbox.send(1).is_ok());
        assert!(mailbox.send(2).is_ok());
        assert_eq!(woken(&mut poll, &mut events), 1, "two pushes, one wake");
        let mut backlog = VecDeque::from([0]);
        mailbox.drain_into(&mut backlog);
        assert_eq!(backlog, [0, 1, 2]);
        assert!(mailbox.send(3).is_ok());
        assert_eq!(
            woken(&mut poll, &mut events),
            1,
            "empty again: the next push wakes"
        );
        assert_eq!(mailbox.shut_down(), [3]);
        assert_eq!(mailbox.send(4), Err(4));
    }
}
