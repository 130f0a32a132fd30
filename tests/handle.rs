//! Calls from other threads through a `Handle`: blocking waits, futures under two executors,
//! drops, shutdown, and a bounded stress run. The test's own thread drives the loop.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rpcloop::{CallOptions, ConnState, ConnectionConfig, Error};
use support::*;

/// Turns the loop until every thread has finished, then joins them.
fn drive_until_joined<T>(ev: &mut rpcloop::EventLoop, threads: Vec<JoinHandle<T>>) -> Vec<T> {
    turn_until(ev, |_| threads.iter().all(|t| t.is_finished()));
    threads
        .into_iter()
        .map(|t| t.join().expect("thread panicked"))
        .collect()
}

/// The original demonstration: 20 threads share one connection, each sends its own random
/// integer and checks that its own answer carries it.
#[test]
fn twenty_threads_share_one_connection() {
    let server = Server::start(echo);
    let (mut ev, conn) = connected(&server, ConnectionConfig::default());
    let threads: Vec<_> = (0..20u64)
        .map(|t| {
            let handle = ev.handle();
            std::thread::spawn(move || {
                let want = (t * 2_654_435_761) % 100;
                let got: u64 = handle.call(conn, want).wait().unwrap().message().unwrap();
                assert_eq!(got, want);
                got
            })
        })
        .collect();
    let answers = drive_until_joined(&mut ev, threads);
    assert_eq!(answers.len(), 20);
    assert_eq!(ev.stats(conn).unwrap().answers, 20);
}

/// 64 threads x 2,000 calls each against a server that answers in shuffled order: every call
/// completes exactly once, with its own answer.
#[test]
fn sixty_four_threads_two_thousand_calls_each_shuffled() {
    const THREADS: u64 = 64;
    const CALLS: u64 = 2_000;
    let server = Server::start(shuffling_echo);
    let (mut ev, conn) = connected(&server, ConnectionConfig::default());
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let handle = ev.handle();
            std::thread::spawn(move || {
                for i in 0..CALLS {
                    let want = format!("{t}:{i}");
                    let resp = handle.call(conn, &want).wait().unwrap();
                    assert_eq!(resp.message::<String>().unwrap(), want);
                }
                CALLS
            })
        })
        .collect();
    let done: u64 = drive_until_joined(&mut ev, threads).into_iter().sum();
    assert_eq!(done, THREADS * CALLS);
    let stats = ev.stats(conn).unwrap();
    assert_eq!((stats.answers, stats.unmatched()), (THREADS * CALLS, 0));
    assert_eq!(ev.pending_calls(), 0);
}

#[test]
fn a_future_completes_under_two_executors() {
    let server = Server::start(echo);
    let (mut ev, conn) = connected(&server, ConnectionConfig::default());
    let handle = ev.handle();
    // A minimal block_on on one thread...
    let h = handle.clone();
    let pollster = std::thread::spawn(move || {
        pollster::block_on(async move {
            let mut sum = 0u64;
            for n in 1..=10u64 {
                sum += h.call(conn, n).await.unwrap().message::<u64>().unwrap();
            }
            sum
        })
    });
    // ...and a thread pool, whose tasks may be polled from different workers.
    let h = handle.clone();
    let pool = std::thread::spawn(move || {
        let pool = futures::executor::ThreadPool::builder()
            .pool_size(2)
            .create()
            .unwrap();
        let tasks: Vec<_> = (0..10u64)
            .map(|n| {
                let h = h.clone();
                futures::task::SpawnExt::spawn_with_handle(&pool, async move {
                    h.call(conn, n).await.unwrap().message::<u64>().unwrap()
                })
                .unwrap()
            })
            .collect();
        futures::executor::block_on(futures::future::join_all(tasks))
            .into_iter()
            .sum::<u64>()
    });
    let sums = drive_until_joined(&mut ev, vec![pollster, pool]);
    assert_eq!(sums, vec![55, 45]);
}

#[test]
fn a_future_dropped_mid_flight_is_cancelled_and_its_answer_is_stale() {
    let (go, wait) = mpsc::channel::<()>();
    let server = Server::start(move |ws| {
        let req = read_request(ws).unwrap();
        wait.recv().unwrap();
        answer(ws, req.id, &req.message);
        ws.flush().unwrap();
        drain_until_closed(ws);
    });
    let (mut ev, conn) = connected(&server, ConnectionConfig::default());
    let call = ev.handle().call(conn, "dropped");
    turn_until(&mut ev, |ev| {
        ev.pending_calls() == 1 && ev.stats(conn).unwrap().requests_sent == 1
    });
    drop(call);
    turn_until(&mut ev, |ev| ev.pending_calls() == 0);
    go.send(()).unwrap();
    turn_until(&mut ev, |ev| ev.stats(conn).unwrap().stale_id == 1);
    assert_eq!(ev.stats(conn).unwrap().answers, 0);
}

#[test]
fn wait_timeout_before_the_deadline_cancels_the_call() {
    let server = Server::start(drain_until_closed);
    let (mut ev, conn) = connected(&server, without_keepalive());
    let handle = ev.handle();
    let waiter = std::thread::spawn(move || {
        let options = CallOptions {
            timeout: Some(Duration::from_secs(60)),
        };
        handle
            .call_with(conn, 1, options)
            .wait_timeout(Duration::from_millis(50))
    });
    let result = drive_until_joined(&mut ev, vec![waiter]).pop().unwrap();
    assert!(matches!(result, Err(Error::Timeout)), "{result:?}");
    // Not leaked: the loop learns of the drop and releases the call well before its deadline.
    turn_until(&mut ev, |ev| ev.pending_calls() == 0);
    assert_eq!(ev.next_deadline(), None);
}

#[test]
fn shutdown_completes_calls_from_eight_threads_and_frees_them() {
    let server = Server::start(drain_until_closed);
    let (mut ev, conn) = connected(&server, ConnectionConfig::default());
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let handle = ev.handle();
            std::thread::spawn(move || {
                let waited = handle.call(conn, i).wait();
                let later = handle.call(conn, i).wait();
                (waited.map(|_| ()), later.map(|_| ()), handle.close(conn))
            })
        })
        .collect();
    turn_until(&mut ev, |ev| ev.pending_calls() == 8);
    let handle = ev.handle();
    drop(ev); // shuts down
    for t in threads {
        let (waited, later, close) = t.join().unwrap();
        assert!(matches!(waited, Err(Error::Shutdown)));
        assert!(matches!(later, Err(Error::Shutdown)));
        assert!(matches!(close, Err(Error::Shutdown)));
    }
    assert!(matches!(handle.call(conn, 0).wait(), Err(Error::Shutdown)));
    server.join();
}

#[test]
fn submit_with_a_send_callback_and_state_and_close_from_a_thread() {
    let server = Server::start(echo);
    let (mut ev, conn) = connected(&server, ConnectionConfig::default());
    let handle = ev.handle();
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        assert_eq!(handle.state(conn), Some(ConnState::Open));
        handle
            .submit(conn, "cb", move |_ctx, result| {
                tx.send(result.unwrap().text().to_owned()).unwrap();
            })
            .unwrap();
        let answer = rx.recv().unwrap();
        handle.close(conn).unwrap();
        while handle.state(conn) != Some(ConnState::Closed) {
            std::thread::sleep(Duration::from_millis(1));
        }
        answer
    });
    let answer = drive_until_joined(&mut ev, vec![worker]).pop().unwrap();
    assert_eq!(answer, r#""cb""#);
    // A refused call reaches its callback (exactly once) rather than vanishing.
    let (tx, rx) = mpsc::channel();
    ev.handle()
        .submit(conn, 1, move |_, r| tx.send(format!("{r:?}")).unwrap())
        .unwrap();
    turn_until(&mut ev, |_| {
        rx.try_recv().map(|r| assert!(r.contains("Closed"))).is_ok()
    });
}

/// Several threads hammer submit, cancel-by-drop and timed waits for a fixed number of
/// iterations; at the end the table is empty and every written request is accounted for.
#[test]
fn stress_submit_cancel_drop_from_several_threads() {
    const THREADS: usize = 6;
    const ITERATIONS: usize = 3_000;
    let server = Server::start(shuffling_echo);
    let (mut ev, conn) = connected(&server, without_keepalive());
    let outcomes = Arc::new([(); 4].map(|_| AtomicUsize::new(0)));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let handle = ev.handle();
            let outcomes = outcomes.clone();
            std::thread::spawn(move || {
                for i in 0..ITERATIONS {
                    let call = handle.call(conn, i);
                    let kind = match (t + i) % 4 {
                        0 => {
                            drop(call); // cancel, maybe before it was even registered
                            0
                        }
                        1 => match call.wait_timeout(Duration::from_micros(50)) {
                            Ok(_) => 1,
                            Err(Error::Timeout) => 0,
                            Err(e) => panic!("{e:?}"),
                        },
                        _ => {
                            call.wait().unwrap();
                            1
                        }
                    };
                    outcomes[kind].fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    drive_until_joined(&mut ev, threads);
    let dropped = outcomes[0].load(Ordering::Relaxed);
    let answered = outcomes[1].load(Ordering::Relaxed);
    assert_eq!(dropped + answered, THREADS * ITERATIONS);
    // Every request that was written gets echoed: matched, or stale if its call was dropped.
    turn_until(&mut ev, |ev| {
        let s = ev.stats(conn).unwrap();
        ev.pending_calls() == 0 && s.answers + s.stale_id == s.requests_sent
    });
    let stats = ev.stats(conn).unwrap();
    assert!(stats.answers as usize >= answered);
    assert_eq!(stats.unknown_id, 0);
    assert_eq!(ev.next_deadline(), None);
}

/// More commands than one turn runs (1,024), then more while the rest wait: every push must
/// still be taken. A loop that only ran its leftovers after the wake-up lost later commands
/// for good, since no push wakes it while the queue is not empty.
#[test]
fn bursts_beyond_the_per_turn_cap_lose_no_command() {
    let server = Server::start(echo);
    let (mut ev, conn) = connected(&server, ConnectionConfig::default());
    let handle = ev.handle();
    let done = Arc::new(AtomicUsize::new(0));
    let submit = |n: usize| {
        for i in 0..n {
            let done = done.clone();
            handle
                .submit(conn, i, move |_, r| {
                    r.unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                })
                .unwrap();
        }
    };
    submit(3_000);
    ev.turn(Some(Duration::ZERO)).unwrap(); // runs 1,024, keeps the rest
    submit(3_000); // the first of these wakes the loop; the others find the queue busy
    turn_until(&mut ev, |_| done.load(Ordering::Relaxed) == 6_000);
    let worker =
        std::thread::spawn(move || handle.call(conn, 1).wait_timeout(Duration::from_secs(20)));
    let last = drive_until_joined(&mut ev, vec![worker]).pop().unwrap();
    assert!(last.is_ok(), "{last:?}");
}

struct CountingWaker(AtomicUsize);
impl futures::task::ArcWake for CountingWaker {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A task that moved between polls registered a new waker: the new one must be woken.
#[test]
fn the_latest_waker_is_the_one_woken() {
    use std::future::Future;
    use std::task::{Context, Poll};
    let server = Server::start(echo);
    let (mut ev, conn) = connected(&server, ConnectionConfig::default());
    let mut call = ev.handle().call(conn, 5);
    let first = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let second = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let first_waker = futures::task::waker(first.clone());
    let second_waker = futures::task::waker(second.clone());
    let pinned = std::pin::Pin::new(&mut call);
    assert!(
        pinned
            .poll(&mut Context::from_waker(&first_waker))
            .is_pending()
    );
    let pinned = std::pin::Pin::new(&mut call);
    assert!(
        pinned
            .poll(&mut Context::from_waker(&second_waker))
            .is_pending()
    );
    turn_until(&mut ev, |_| second.0.load(Ordering::SeqCst) == 1);
    assert_eq!(first.0.load(Ordering::SeqCst), 0);
    let pinned = std::pin::Pin::new(&mut call);
    match pinned.poll(&mut Context::from_waker(&second_waker)) {
        Poll::Ready(r) => assert_eq!(r.unwrap().text(), "5"),
        Poll::Pending => panic!("woken but not ready"),
    }
}

#[test]
#[should_panic(expected = "already returned")]
fn waiting_after_the_future_returned_ready_panics_instead_of_hanging() {
    let server = Server::start(echo);
    let (mut ev, conn) = connected(&server, ConnectionConfig::default());
    let mut call = ev.handle().call(conn, 1);
    turn_until(&mut ev, |_| call.is_complete());
    assert!(futures::executor::block_on(&mut call).is_ok());
    let _ = call.wait();
}

#[test]
fn handles_and_pending_calls_cross_threads() {
    fn send_sync_clone<T: Send + Sync + Clone>() {}
    fn send<T: Send>() {}
    send_sync_clone::<rpcloop::Handle>();
    send::<rpcloop::PendingCall>();
    send::<rpcloop::Response>();
    send::<rpcloop::Error>();
}

/// `PendingCall` and `Subscription` stay unwind-safe, as they were in 0.1.0 (callers pass them
/// into `catch_unwind`); the loop's sinks they hold promise it.
#[test]
fn the_cross_thread_types_are_unwind_safe() {
    fn unwind_safe<T: std::panic::UnwindSafe + std::panic::RefUnwindSafe>() {}
    unwind_safe::<rpcloop::PendingCall>();
    unwind_safe::<rpcloop::Subscription>();
    unwind_safe::<rpcloop::Handle>();
}
