//! The simulator's tick-exact scenarios: each drives the engine through one part of a
//! connection's life on a fake clock and checks what happened, and at which tick. The
//! timing-tuned socket tests of `tests/resilience.rs` (keepalive, backoff, close timeout, the
//! queue while down) live here now, with their assertions.

use std::time::Duration;

use super::{Connect, Frame, Peer, Proto, Sim, reason_name};
use crate::config::{ConnectionConfig, ReconnectPolicy};
use crate::core::event::{ConnState, StateChange, SubscriptionEvent};
use crate::core::output::{Event, Violation};
use crate::error::{DisconnectReason, Error};

fn ms(n: u64) -> Option<Duration> {
    Some(Duration::from_millis(n))
}

/// A policy with no jitter, so that every delay is exact: 100, 200, 400, 800, 1600, 1600...
fn exact_policy() -> ReconnectPolicy {
    ReconnectPolicy {
        initial_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(1_600),
        multiplier: 2.0,
        jitter: 0.0,
        max_attempts: None,
        reset_after: Duration::from_secs(3_600),
    }
}

/// Pings every 30 s; the peer then has 10 s to say anything.
fn with_keepalive(sim: &Sim) -> ConnectionConfig {
    ConnectionConfig {
        ping_interval: Some(Duration::from_secs(30)),
        pong_timeout: Duration::from_secs(10),
        ..sim.config()
    }
}

/// Closes `conn`, lets the close handshake run, and checks the run's end.
fn close_and_finish(sim: &mut Sim, conn: crate::core::conn_id::ConnId) {
    sim.close(conn).unwrap();
    sim.run(100);
    sim.finish();
}

fn with_reconnect(sim: &Sim, policy: ReconnectPolicy) -> ConnectionConfig {
    ConnectionConfig {
        reconnect: Some(policy),
        ..sim.config()
    }
}

fn error_name(result: Option<&Result<crate::core::response::Response, Error>>) -> String {
    match result {
        None => "pending".into(),
        Some(Ok(response)) => format!("Ok({})", response.text()),
        Some(Err(Error::Disconnected(reason))) => format!("Disconnected({})", reason_name(reason)),
        Some(Err(Error::NotSent(reason))) => format!("NotSent({})", reason_name(reason)),
        Some(Err(e)) => format!("{e:?}"),
    }
}

/// Scenario 1: Calls submitted while connecting are written in submit order on open; one whose
/// deadline passed first is never written.
#[test]
fn sim_calls_queued_while_connecting_are_written_in_order_and_an_expired_one_never() {
    let mut sim = Sim::new(Proto::Envelope);
    sim.default_peer.connect_after = 50;
    let conn = sim.open(sim.config());
    let (a, _) = sim.submit(conn, ms(1_000)).unwrap();
    let (expired, expired_id) = sim.submit(conn, ms(20)).unwrap();
    let (b, _) = sim.submit(conn, ms(1_000)).unwrap();
    sim.pump();
    assert!(
        sim.received_texts(conn).is_empty(),
        "nothing is written before open"
    );
    sim.run_until(49);
    assert_eq!(error_name(sim.result(expired)), "Timeout");
    // Due 20 ms after tick 0: never early, at most a tick late.
    assert_eq!(sim.completed_at(expired), Some(21));
    sim.run(100);
    let texts = sim.received_texts(conn);
    let expected = [
        format!("{{\"id\":1,\"message\":{{\"n\":{a}}}}}"),
        format!("{{\"id\":3,\"message\":{{\"n\":{b}}}}}"),
    ];
    assert_eq!(texts, expected);
    assert!(
        !texts
            .iter()
            .any(|t| t.contains(&format!("\"id\":{expired_id},")))
    );
    // Written at the open's tick (50), answered after a round trip.
    assert_eq!(sim.completed_at(a), Some(52));
    assert_eq!(error_name(sim.result(b)), format!("Ok({{\"n\":{b}}})"));
    sim.finish();
}

/// Scenario 2: Reconnect: written calls fail `Disconnected`, unwritten ones wait for the next
/// connection, and the delays follow the policy to the tick.
#[test]
fn sim_a_lost_connection_comes_back_after_exact_backoff_delays() {
    let mut sim = Sim::new(Proto::Envelope);
    sim.default_peer.answers = false;
    let conn = sim.open(with_reconnect(&sim, exact_policy()));
    sim.run_until(1);
    assert_eq!(sim.engine.state(conn), Some(ConnState::Open));
    let (written, _) = sim.call(conn, 60_000);
    // Lost at tick 11, and each reconnect refused, three times.
    sim.peer_mut(conn).connect = Connect::Refuse;
    sim.advance(9);
    sim.reset(conn);
    sim.advance(1);
    assert_eq!(error_name(sim.result(written)), "Disconnected(Reset)");
    let (waiting, _) = sim.submit(conn, ms(60_000)).unwrap();
    // Attempt 1 connects at 11 + 100 + 1 and is refused a tick later; attempt 2 waits 200.
    sim.run_until(113);
    sim.peer_mut(conn).connect = Connect::Accept;
    sim.peer_mut(conn).answers = true;
    sim.run_until(2_000);
    let states = sim.states(conn);
    assert_eq!(
        states,
        [
            "Connecting",
            "Open",
            "Disconnected(Reset)",
            "Reconnecting(1, 100ms)",
            "Connecting",
            "Disconnected(ConnectFailed)",
            "Reconnecting(2, 200ms)",
            "Connecting",
            "Open",
        ]
    );
    // Refused at 113; the second attempt connects at 113 + 201 = 314 and opens at 315, where
    // the waiting call is written: answered at 317.
    assert_eq!(sim.completed_at(waiting), Some(317));
    assert_eq!(
        error_name(sim.result(waiting)),
        format!("Ok({{\"n\":{waiting}}})")
    );
    assert_eq!(sim.engine.stats(conn).unwrap().reconnects, 1);
    close_and_finish(&mut sim, conn);
}

/// Scenario 2: Moved from `tests/resilience.rs`: a server that answers one call per connection,
/// then drops it, fifty times; then it is gone and the attempts go on at the capped delay. The
/// delays grow, are capped and jittered (seeded: the same every run).
#[test]
fn sim_a_server_that_flaps_fifty_times_is_recovered_with_growing_capped_jittered_delays() {
    const FLAPS: u32 = 50;
    let mut sim = Sim::new(Proto::Envelope);
    let policy = ReconnectPolicy {
        initial_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(16),
        jitter: 0.5,
        ..exact_policy()
    };
    let conn = sim.open(with_reconnect(&sim, policy));
    let opens = std::rc::Rc::new(std::cell::Cell::new(0u32));
    let seen = opens.clone();
    sim.on_event(move |sim, event| match event {
        Event::State(conn, StateChange::Open) => {
            seen.set(seen.get() + 1);
            if seen.get() <= FLAPS {
                sim.submit(*conn, ms(60_000)).unwrap();
            }
        }
        Event::Completed { conn, result, .. } => {
            assert!(result.is_ok(), "{result:?}");
            sim.reset(*conn);
            if seen.get() == FLAPS {
                sim.peer_mut(*conn).connect = Connect::Refuse;
            }
        }
        _ => {}
    });
    while sim.checker.completed < FLAPS as usize || sim.states(conn).len() < 4 * FLAPS as usize + 40
    {
        assert!(sim.step());
    }
    close_and_finish(&mut sim, conn);
    assert_eq!(opens.get(), FLAPS);
    let delays: Vec<(u32, u128)> = sim
        .log
        .iter()
        .filter_map(|logged| match &logged.event {
            Event::State(_, StateChange::Reconnecting { attempt, delay }) => {
                Some((*attempt, delay.as_millis()))
            }
            _ => None,
        })
        .collect();
    assert!(delays.len() > FLAPS as usize + 5);
    for (i, &(attempt, delay)) in delays.iter().enumerate() {
        // Never reset (reset_after is an hour): attempts count up across the flaps.
        assert_eq!(attempt as usize, i + 1);
        let ceiling = (1u128 << (attempt - 1).min(10)).min(16);
        assert!(
            delay <= ceiling && delay >= ceiling / 2,
            "attempt {attempt}: {delay} ms"
        );
    }
    let capped: Vec<u128> = delays[10..].iter().map(|d| d.1).collect();
    let distinct: std::collections::BTreeSet<_> = capped.iter().collect();
    assert!(distinct.len() > 1, "jitter spreads the delays: {capped:?}");
    assert_eq!(
        sim.states(conn).last().map(String::as_str),
        Some("Released")
    );
}

/// Scenario 2: Moved from `tests/resilience.rs`: a connection that stayed up for `reset_after`
/// starts its backoff over, so every loss after a stable connection is attempt 1.
#[test]
fn sim_a_connection_that_stayed_up_long_enough_starts_its_backoff_over() {
    let mut sim = Sim::new(Proto::Envelope);
    let policy = ReconnectPolicy {
        reset_after: Duration::from_millis(500),
        ..exact_policy()
    };
    let conn = sim.open(with_reconnect(&sim, policy));
    // Up for 499 ticks: not long enough, the next delay doubles.
    sim.run_until(1);
    sim.advance(498);
    sim.reset(conn);
    sim.advance(1);
    assert_eq!(sim.states(conn).last().unwrap(), "Reconnecting(1, 100ms)");
    // Opens at 500 + 101 + 1 = 602; lost after 100 ticks: attempt 2.
    sim.run_until(602);
    assert_eq!(sim.engine.state(conn), Some(ConnState::Open));
    sim.advance(99);
    sim.reset(conn);
    sim.advance(1);
    assert_eq!(sim.states(conn).last().unwrap(), "Reconnecting(2, 200ms)");
    // Opens at 702 + 201 + 1 = 904; stays up for 500 ticks: the count starts over.
    sim.run_until(904);
    assert_eq!(sim.engine.state(conn), Some(ConnState::Open));
    sim.advance(499);
    sim.reset(conn);
    sim.advance(1);
    assert_eq!(sim.states(conn).last().unwrap(), "Reconnecting(1, 100ms)");
    close_and_finish(&mut sim, conn);
}

/// Scenario 2: Moved from `tests/resilience.rs`: calls made while the connection is down wait for
/// it within their own deadlines, in a queue bounded in calls and in bytes.
#[test]
fn sim_calls_queued_while_down_wait_within_their_deadlines_in_a_bounded_queue() {
    let mut sim = Sim::new(Proto::Envelope);
    let config = ConnectionConfig {
        max_in_flight: 10,
        max_write_buffer: 4_096,
        ..with_reconnect(
            &sim,
            ReconnectPolicy {
                initial_delay: Duration::from_millis(200),
                ..exact_policy()
            },
        )
    };
    let conn = sim.open(config);
    sim.run_until(1);
    sim.reset(conn);
    sim.advance(1);
    assert_eq!(sim.engine.state(conn), Some(ConnState::Reconnecting));
    let now = sim.now;
    let (short, _) = sim.submit(conn, ms(1)).unwrap();
    let (long, _) = sim.submit(conn, None).unwrap();
    // The queue is bounded in bytes: 4,096 in all, and a 4,060-byte payload does not fit.
    let big = "z".repeat(4_060);
    let refused = sim
        .engine
        .submit(now, conn, &format!("\"{big}\""), Default::default(), 999);
    assert!(matches!(refused, Err((Error::Busy, 999))));
    // ... and in calls: 10 in flight.
    let rest: Vec<_> = (0..8).map(|_| sim.submit(conn, None).unwrap().0).collect();
    assert!(matches!(sim.submit(conn, None), Err(Error::Busy)));
    sim.advance(2);
    assert_eq!(error_name(sim.result(short)), "Timeout");
    assert_eq!(sim.completed_at(short), Some(now + 2));
    sim.run(1_000);
    assert_eq!(
        error_name(sim.result(long)),
        format!("Ok({{\"n\":{long}}})")
    );
    for token in rest {
        assert!(sim.result(token).unwrap().is_ok());
    }
    // The one that timed out was never written.
    assert_eq!(sim.received_texts(conn).len(), 9);
    close_and_finish(&mut sim, conn);
}

/// Scenario 3: Reconnects exhausted: after `max_attempts` the connection ends `Closed`, and the
/// calls that waited fail `NotSent`.
#[test]
fn sim_out_of_attempts_the_connection_ends_and_its_waiting_calls_fail_unsent() {
    let mut sim = Sim::new(Proto::Envelope);
    sim.default_peer.connect = Connect::Refuse;
    let policy = ReconnectPolicy {
        max_attempts: Some(3),
        ..exact_policy()
    };
    let conn = sim.open(with_reconnect(&sim, policy));
    let (a, _) = sim.submit(conn, ms(60_000)).unwrap();
    let (b, _) = sim.submit(conn, ms(60_000)).unwrap();
    sim.run(1_000);
    let mut expected = vec![];
    for (attempt, delay) in [(1, 100), (2, 200), (3, 400)] {
        expected.extend([
            "Connecting".to_owned(),
            "Disconnected(ConnectFailed)".to_owned(),
            format!("Reconnecting({attempt}, {delay}ms)"),
        ]);
    }
    expected.extend(
        [
            "Connecting",
            "Disconnected(ConnectFailed)",
            "Closed",
            "Released",
        ]
        .map(String::from),
    );
    assert_eq!(sim.states(conn), expected);
    // Refused at 1, 103, 305 and 707: the last ends it.
    assert_eq!(sim.completed_at(a), Some(1 + 102 + 202 + 402));
    assert_eq!(error_name(sim.result(a)), "NotSent(ConnectFailed)");
    assert_eq!(error_name(sim.result(b)), "NotSent(ConnectFailed)");
    assert!(sim.received_texts(conn).is_empty());
    assert!(matches!(
        sim.submit(conn, None),
        Err(Error::NotSent(DisconnectReason::ConnectFailed { .. })) | Err(Error::UnknownConnection)
    ));
    sim.finish();
}

/// Scenario 4: Moved from `tests/resilience.rs`: a half-open peer (it reads, and says nothing, not
/// even a pong) is dead at exactly its ping's tick plus `pong_timeout`, and every call fails once.
#[test]
fn sim_a_half_open_peer_is_found_by_keepalive_and_every_call_fails_once() {
    let mut sim = Sim::new(Proto::Envelope);
    sim.default_peer = Peer::silent();
    let config = with_keepalive(&sim);
    let conn = sim.open(config);
    sim.run_until(1);
    let tokens: Vec<_> = (0..10).map(|_| sim.call(conn, 600_000).0).collect();
    sim.run(1_000);
    // Open at 1: the ping at 30,001, dead at 40,001.
    let pings: Vec<u64> = sim
        .wire
        .iter()
        .filter(|w| w.2 == Frame::Ping)
        .map(|w| w.0)
        .collect();
    assert_eq!(pings, [30_001]);
    for &token in &tokens {
        assert_eq!(
            error_name(sim.result(token)),
            "Disconnected(KeepaliveTimeout)"
        );
        assert_eq!(sim.completed_at(token), Some(40_001));
    }
    assert_eq!(
        sim.states(conn),
        [
            "Connecting",
            "Open",
            "Disconnected(KeepaliveTimeout)",
            "Closed",
            "Released"
        ]
    );
    sim.finish();
}

/// Scenario 4: Moved from `tests/resilience.rs`: writing is not hearing. A client that submits a
/// call every 100 ticks to a peer that never sends anything still finds it dead on time.
#[test]
fn sim_a_dead_peer_is_found_while_the_client_keeps_sending() {
    let mut sim = Sim::new(Proto::Envelope);
    sim.default_peer = Peer::silent();
    let config = with_keepalive(&sim);
    let conn = sim.open(config);
    sim.run_until(1);
    let mut submitted = 0;
    while sim.engine.state(conn) == Some(ConnState::Open) {
        sim.call(conn, 600_000);
        submitted += 1;
        sim.advance(100);
    }
    // At 1, 101, ..., 39,901: the keepalive fires at 40,001 before the next.
    assert_eq!(submitted, 400, "one call every 100 ticks until tick 40,001");
    assert_eq!(sim.now, 40_001);
    let dead = sim.log.iter().find_map(|l| match &l.event {
        Event::State(_, StateChange::Disconnected(DisconnectReason::KeepaliveTimeout)) => {
            Some(l.at)
        }
        _ => None,
    });
    assert_eq!(dead, Some(40_001));
    sim.run(100);
    sim.finish();
}

/// Scenario 4: Moved from `tests/resilience.rs`: a live idle peer is pinged every interval and the
/// connection stays open, here for 10,000 simulated seconds.
#[test]
fn sim_a_live_idle_peer_is_pinged_and_the_connection_stays_open() {
    let mut sim = Sim::new(Proto::Envelope);
    sim.default_peer.latency = 5;
    let config = with_keepalive(&sim);
    let conn = sim.open(config);
    sim.run_until(10_000_000);
    assert_eq!(sim.engine.state(conn), Some(ConnState::Open));
    let pings: Vec<u64> = sim
        .wire
        .iter()
        .filter(|w| w.2 == Frame::Ping)
        .map(|w| w.0)
        .collect();
    assert_eq!(pings.len(), 333);
    assert!(pings.windows(2).all(|w| w[1] - w[0] == 30_000));
    let (token, _) = sim.call(conn, 1_000);
    sim.close(conn).unwrap();
    assert_eq!(error_name(sim.result(token)), "Closed");
    sim.run(100);
    sim.finish();
}

/// Scenario 5: Close with the echo: `Close(1000)` goes out, the calls fail `Closed` at once, and
/// the connection is released when the peer's echo and end arrive.
#[test]
fn sim_close_with_the_echo_releases_the_connection_when_the_peer_answers() {
    let mut sim = Sim::new(Proto::Envelope);
    sim.default_peer.answers = false;
    sim.default_peer.latency = 10;
    let conn = sim.open(sim.config());
    sim.run_until(11);
    let (token, _) = sim.call(conn, 60_000);
    sim.advance(5);
    sim.close(conn).unwrap();
    assert_eq!(error_name(sim.result(token)), "Closed");
    assert_eq!(sim.completed_at(token), Some(16));
    assert_eq!(sim.engine.state(conn), Some(ConnState::Closing));
    assert!(matches!(sim.submit(conn, None), Err(Error::Closed)));
    sim.run(100);
    assert_eq!(sim.frames(conn).last(), Some(&&Frame::Close(1000)));
    // Our close reaches the peer at 26, its echo and its end come back at 36.
    assert_eq!(sim.released_at(conn), Some(36));
    assert_eq!(
        sim.states(conn),
        ["Connecting", "Open", "Closed", "Released"]
    );
    sim.finish();
}

/// Scenario 5: Moved from `tests/resilience.rs`: a peer that never answers the close is dropped at
/// the close timeout, to the tick.
#[test]
fn sim_a_peer_that_never_answers_the_close_is_dropped_at_the_close_timeout() {
    let mut sim = Sim::new(Proto::Envelope);
    sim.default_peer = Peer::silent();
    let config = ConnectionConfig {
        close_timeout: Duration::from_millis(50),
        ..sim.config()
    };
    let conn = sim.open(config);
    sim.run_until(1);
    let (token, _) = sim.call(conn, 60_000);
    sim.close(conn).unwrap();
    assert_eq!(sim.engine.state(conn), Some(ConnState::Closing));
    sim.run(100);
    assert_eq!(error_name(sim.result(token)), "Closed");
    assert_eq!(sim.released_at(conn), Some(1 + 51));
    assert_eq!(
        sim.states(conn),
        ["Connecting", "Open", "Closed", "Released"]
    );
    assert!(matches!(sim.submit(conn, None), Err(Error::Closed)));
    sim.finish();
}

/// Scenario 6: A protocol violation read after messages that are still queued: they are delivered
/// first, what their handlers send is written before the `Close(1002)`, and a call answered in the
/// same read completes before the connection fails.
#[test]
fn sim_a_violation_after_queued_deliveries_closes_after_their_replies() {
    let mut sim = Sim::new(Proto::Envelope);
    sim.default_peer.think = 5;
    let conn = sim.open(sim.config());
    sim.run_until(1);
    let (answered, _) = sim.call(conn, 60_000);
    let (lost, _) = sim.call(conn, 60_000);
    sim.peer_mut(conn).answers = false;
    sim.on_event(|sim, event| {
        if let Event::Unmatched(message) = event {
            let reply = format!("ack {}", message.as_text().unwrap_or(""));
            sim.send(message.conn(), &reply).unwrap();
        }
    });
    // The answer to the first call, two pushes and the violation, all in one read at tick 8.
    sim.advance(6);
    let answer = format!("{{\"id\":1,\"message\":{{\"n\":{answered}}}}}");
    sim.push(conn, &answer);
    sim.push(conn, "{\"push\":1}");
    sim.push(conn, "{\"push\":2}");
    sim.violate(conn, Violation::Protocol);
    sim.run(100);
    assert_eq!(
        error_name(sim.result(answered)),
        format!("Ok({{\"n\":{answered}}})")
    );
    assert_eq!(error_name(sim.result(lost)), "Disconnected(Protocol)");
    let frames: Vec<String> = sim
        .frames(conn)
        .iter()
        .skip(2)
        .map(|f| format!("{f:?}"))
        .collect();
    assert_eq!(
        frames,
        [
            "Text(\"ack {\\\"push\\\":1}\")",
            "Text(\"ack {\\\"push\\\":2}\")",
            "Close(1002)"
        ]
    );
    // The order of events: the answer, both pushes, then the state change.
    let order: Vec<&str> = sim
        .log
        .iter()
        .filter_map(|l| match &l.event {
            Event::Completed { token, .. } if *token == answered => Some("answer"),
            Event::Unmatched(_) => Some("push"),
            Event::State(_, StateChange::Disconnected(_)) => Some("disconnected"),
            _ => None,
        })
        .collect();
    assert_eq!(order, ["answer", "push", "push", "disconnected"]);
    sim.finish();
}

/// Scenario 7: Subscriptions across a reconnect: items follow their subscribe answer in wire order,
/// `Interrupted` then `Resubscribed` across the loss, items of the old key are late, and an
/// unsubscribe ends it with exactly one `Ended`.
#[test]
fn sim_subscriptions_are_interrupted_and_resubscribed_across_a_reconnect() {
    let mut sim = Sim::new(Proto::JsonRpc);
    let conn = sim.open(with_reconnect(&sim, exact_policy()));
    sim.run_until(1);
    let sub = sim.subscribe(conn, true).unwrap();
    let once = sim.subscribe(conn, false).unwrap();
    // The answers reach us at tick 3; items sent right behind them arrive in the same read.
    sim.run_until(2);
    assert_eq!(sim.keys(conn), ["\"k1\"", "\"k2\""]);
    sim.push_item(conn, "\"k1\"", 1);
    sim.push_item(conn, "\"k1\"", 2);
    sim.run_until(3);
    sim.reset(conn);
    sim.run(1_000);
    assert_eq!(
        sim.keys(conn).len(),
        3,
        "only the resubscribing one subscribes again"
    );
    sim.push_item(conn, "\"k1\"", 3); // the old key: late
    sim.push_item(conn, "\"k3\"", 4);
    sim.run(100);
    assert!(sim.unsubscribe(sub));
    assert!(!sim.unsubscribe(sub), "a second unsubscribe finds nothing");
    sim.run(100);
    let told: Vec<String> = sim
        .log
        .iter()
        .filter_map(|l| match &l.event {
            Event::Subscription(s, e) if *s == sub => Some(match e {
                SubscriptionEvent::Item(n) => format!("item {}", n.item_text()),
                SubscriptionEvent::Interrupted(reason) => {
                    format!("interrupted {}", reason_name(reason))
                }
                SubscriptionEvent::Resubscribed => "resubscribed".into(),
                SubscriptionEvent::Ended(e) => format!("ended {e:?}"),
            }),
            _ => None,
        })
        .collect();
    assert_eq!(
        told,
        [
            "item 1",
            "item 2",
            "interrupted Reset",
            "resubscribed",
            "item 4",
            "ended Cancelled"
        ]
    );
    assert!(
        sim.checker.ended(once),
        "the one-shot subscription ended on the loss"
    );
    let late = sim
        .log
        .iter()
        .filter(|l| match &l.event {
            Event::Unmatched(m) => m.as_text().is_some_and(|t| t.contains("\"k1\"")),
            _ => false,
        })
        .count();
    assert_eq!(late, 1);
    // The unsubscribe names the live key.
    assert!(
        sim.received_texts(conn)
            .last()
            .unwrap()
            .contains("\"sub_unsubscribe\",\"params\":[\"k3\"]")
    );
    close_and_finish(&mut sim, conn);
}

/// Scenario 7: An unsubscribe while the subscribe call is out ends the subscription at once and
/// sends the unsubscribe when the answer names the key.
#[test]
fn sim_an_unsubscribe_before_the_answer_unsubscribes_when_it_lands() {
    let mut sim = Sim::new(Proto::JsonRpc);
    sim.default_peer.think = 10;
    let conn = sim.open(sim.config());
    sim.run_until(1);
    let sub = sim.subscribe(conn, true).unwrap();
    sim.advance(3);
    assert!(sim.unsubscribe(sub));
    assert!(sim.checker.ended(sub));
    sim.run(100);
    let texts = sim.received_texts(conn);
    assert_eq!(texts.len(), 2);
    assert!(
        texts[1].contains("\"method\":\"sub_unsubscribe\",\"params\":[\"k1\"]"),
        "{}",
        texts[1]
    );
    close_and_finish(&mut sim, conn);
}

/// Scenario 8: Batches answered out of order, split across frames, or partly: each completes once,
/// with its results in request order.
#[test]
fn sim_batches_answered_out_of_order_split_or_partly_complete_once_in_request_order() {
    let mut sim = Sim::new(Proto::JsonRpc);
    sim.default_peer.reorder = true;
    let conn = sim.open(sim.config());
    sim.run_until(1);
    let (reversed, _) = sim.submit_batch(conn, 3, ms(1_000)).unwrap();
    sim.run(100);
    sim.peer_mut(conn).split_batches = true;
    let (split, _) = sim.submit_batch(conn, 3, ms(1_000)).unwrap();
    sim.run(100);
    sim.peer_mut(conn).answers = false;
    let (partial, ids) = sim.submit_batch(conn, 3, ms(1_000)).unwrap();
    sim.advance(5);
    sim.push(
        conn,
        &format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{},\"result\":{{\"i\":1,\"n\":{partial}}}}}",
            ids[1]
        ),
    );
    sim.run(2_000);
    for token in [reversed, split] {
        let results = sim.batch_results(token).unwrap();
        for (i, result) in results.iter().enumerate() {
            assert_eq!(
                result.as_ref().unwrap().text(),
                format!("{{\"i\":{i},\"n\":{token}}}")
            );
        }
    }
    let results: Vec<String> = sim
        .batch_results(partial)
        .unwrap()
        .iter()
        .map(|r| error_name(Some(r)))
        .collect();
    assert_eq!(
        results,
        [
            "Timeout",
            format!("Ok({{\"i\":1,\"n\":{partial}}})").as_str(),
            "Timeout"
        ]
    );
    close_and_finish(&mut sim, conn);
}

/// Scenario 8: Cancelling a call of a batch still queued cancels the whole unsent batch (one
/// frame); a batch written and then lost fails whole with `Disconnected`.
#[test]
fn sim_a_queued_batch_cancels_whole_and_a_lost_one_fails_whole() {
    let mut sim = Sim::new(Proto::JsonRpc);
    sim.default_peer.connect_after = 10;
    sim.default_peer.answers = false;
    let conn = sim.open(sim.config());
    let (queued, ids) = sim.submit_batch(conn, 3, None).unwrap();
    assert!(sim.cancel(ids[1]));
    assert!(!sim.cancel(ids[0]), "the batch is gone whole");
    let results: Vec<String> = sim
        .batch_results(queued)
        .unwrap()
        .iter()
        .map(|r| error_name(Some(r)))
        .collect();
    assert_eq!(results, ["Cancelled", "Cancelled", "Cancelled"]);
    let (lost, _) = sim.submit_batch(conn, 3, None).unwrap();
    sim.run_until(12);
    assert_eq!(
        sim.received_texts(conn).len(),
        1,
        "the cancelled batch never leaves"
    );
    sim.reset(conn);
    sim.run(100);
    let results: Vec<String> = sim
        .batch_results(lost)
        .unwrap()
        .iter()
        .map(|r| error_name(Some(r)))
        .collect();
    assert_eq!(results, ["Disconnected(Reset)"; 3]);
    sim.finish();
}

/// Scenario 8: The half-sent batch defect: a call and then a batch of three queued while
/// connecting, under a reconnect policy; the server resets the connection right after the upgrade.
/// Written (the frames left before the reset): every call of the batch fails `Disconnected`.
/// Refused (the first write fails): every call waits, and the batch leaves whole, as one frame, on
/// the next connection. `requests_sent` counts what reached the wire.
#[test]
fn sim_a_queued_batch_whose_connection_resets_after_the_upgrade_keeps_one_fate() {
    // The frames were written, then the connection reset.
    let mut sim = Sim::new(Proto::JsonRpc);
    sim.default_peer.answers = false;
    let conn = sim.open(with_reconnect(&sim, exact_policy()));
    let (single, _) = sim.submit(conn, None).unwrap();
    let (batch, _) = sim.submit_batch(conn, 3, None).unwrap();
    sim.run_until(1);
    sim.reset(conn);
    sim.advance(1);
    assert_eq!(error_name(sim.result(single)), "Disconnected(Reset)");
    let results: Vec<String> = sim
        .batch_results(batch)
        .unwrap()
        .iter()
        .map(|r| error_name(Some(r)))
        .collect();
    assert_eq!(results, ["Disconnected(Reset)"; 3]);
    assert_eq!(sim.engine.stats(conn).unwrap().requests_sent, 4);
    close_and_finish(&mut sim, conn);

    // The first write was refused, then the connection reset: nothing reached the wire.
    let mut sim = Sim::new(Proto::JsonRpc);
    sim.default_peer.connect_after = 5;
    let conn = sim.open(with_reconnect(&sim, exact_policy()));
    let (single, _) = sim.submit(conn, None).unwrap();
    let (batch, _) = sim.submit_batch(conn, 3, None).unwrap();
    sim.run_until(1);
    sim.refuse_writes(conn, true);
    sim.run_until(5);
    assert!(sim.received_texts(conn).is_empty());
    assert_eq!(sim.engine.stats(conn).unwrap().requests_sent, 0);
    sim.reset(conn);
    sim.run(1_000);
    let texts = sim.received_texts(conn);
    assert_eq!(
        texts.len(),
        2,
        "the call, then the batch as one frame: {texts:?}"
    );
    assert!(texts[1].starts_with('[') && texts[1].matches("\"id\"").count() == 3);
    assert!(sim.result(single).unwrap().is_ok());
    assert!(sim.batch_results(batch).unwrap().iter().all(Result::is_ok));
    assert_eq!(sim.engine.stats(conn).unwrap().requests_sent, 4);
    close_and_finish(&mut sim, conn);
}

/// Scenario 9: Back-pressure: a refused write keeps its call pending (no `Busy` for an accepted
/// call), new submits past `max_write_buffer` are refused with `Busy` at once, and once the socket
/// takes writes everything leaves in order.
#[test]
fn sim_back_pressure_keeps_accepted_calls_and_refuses_new_ones_past_the_budget() {
    let mut sim = Sim::new(Proto::Envelope);
    let config = ConnectionConfig {
        max_write_buffer: 200,
        ..sim.config()
    };
    let conn = sim.open(config);
    sim.run_until(1);
    sim.refuse_writes(conn, true);
    let mut accepted = vec![];
    loop {
        match sim.submit(conn, ms(10_000)) {
            Ok((token, _)) => accepted.push(token),
            Err(Error::Busy) => break,
            Err(e) => panic!("{e:?}"),
        }
        sim.pump();
    }
    // Each request is 26 or 27 bytes: 200 bytes hold 7.
    assert_eq!(accepted.len(), 7);
    sim.advance(100);
    assert!(sim.received_texts(conn).is_empty());
    assert!(
        accepted.iter().all(|&t| sim.result(t).is_none()),
        "accepted calls stay pending"
    );
    sim.refuse_writes(conn, false);
    sim.run(100);
    let order: Vec<u32> = sim
        .received_texts(conn)
        .iter()
        .map(|t| {
            serde_json::from_str::<serde_json::Value>(t).unwrap()["message"]["n"]
                .as_u64()
                .unwrap() as u32
        })
        .collect();
    assert_eq!(order, accepted);
    assert!(accepted.iter().all(|&t| sim.result(t).unwrap().is_ok()));
    close_and_finish(&mut sim, conn);
}

/// Scenario 10: Causal order: an answer read before the peer's close completes before the state
/// change that reports the close.
#[test]
fn sim_an_answer_read_before_the_peer_close_completes_before_the_disconnect() {
    let mut sim = Sim::new(Proto::Envelope);
    sim.default_peer.answers = false;
    let conn = sim.open(sim.config());
    sim.run_until(1);
    let (answered, _) = sim.call(conn, 60_000);
    let (unanswered, _) = sim.call(conn, 60_000);
    sim.advance(1);
    sim.push(
        conn,
        &format!("{{\"id\":1,\"message\":{{\"n\":{answered}}}}}"),
    );
    sim.peer_close(conn, 1001);
    sim.run(100);
    let order: Vec<String> = sim
        .log
        .iter()
        .filter_map(|l| match &l.event {
            Event::Completed { token, result, .. } => {
                Some(format!("{token}:{}", error_name(Some(result))))
            }
            Event::State(_, change) => Some(super::state_name(change)),
            _ => None,
        })
        .skip(2)
        .collect();
    assert_eq!(
        order,
        [
            format!("{answered}:Ok({{\"n\":{answered}}})"),
            format!("{unanswered}:Disconnected(PeerClosed 1001)"),
            "Disconnected(PeerClosed 1001)".into(),
            "Closed".into(),
        ]
    );
    sim.finish();
}

/// Scenario 11: Generational `ConnId`: a freed slot holds the next connection under a new
/// generation, the old id names nothing, and nothing of the old connection reaches the new one.
#[test]
fn sim_a_freed_slot_holds_a_new_connection_and_the_old_id_is_stale() {
    let mut sim = Sim::new(Proto::Envelope);
    sim.default_peer.answers = false;
    let old = sim.open(sim.config());
    sim.run_until(1);
    sim.call(old, 60_000);
    sim.close(old).unwrap();
    sim.run(100);
    assert_eq!(sim.engine.connections(), 0);
    let new = sim.open(sim.config());
    assert_eq!(new.index(), old.index());
    assert_ne!(new, old);
    assert!(matches!(
        sim.submit(old, None),
        Err(Error::UnknownConnection)
    ));
    assert!(matches!(sim.close(old), Err(Error::UnknownConnection)));
    assert_eq!(sim.engine.state(old), None);
    // A late answer to the old connection's call, on the new one: unmatched.
    sim.run_until(sim.now + 2);
    sim.push(new, "{\"id\":1,\"message\":{\"n\":0}}");
    sim.run(100);
    let stats = sim.engine.stats(new).unwrap();
    assert_eq!((stats.stale_id, stats.unmatched()), (1, 1));
    assert!(sim.log.iter().all(|l| match &l.event {
        Event::State(c, _) | Event::Released(c) => *c == old || *c == new,
        _ => true,
    }));
    close_and_finish(&mut sim, new);
}

/// Scenario 11: 100,000 connections opened and closed: the table and the live heap return to their
/// baseline.
#[test]
fn sim_100_000_open_close_cycles_return_the_table_and_the_heap_to_their_baseline() {
    let mut sim = Sim::new(Proto::Envelope);
    sim.keep_log = false;
    sim.keep_wire = false;
    let cycle = |sim: &mut Sim| {
        let conn = sim.open(sim.config());
        sim.run_until(sim.now + 1);
        sim.call(conn, 60_000);
        sim.close(conn).unwrap();
        sim.run(100);
    };
    for _ in 0..100 {
        cycle(&mut sim);
    }
    let baseline = super::heap::live_bytes();
    for _ in 0..100_000 {
        cycle(&mut sim);
    }
    assert_eq!(sim.engine.connections(), 0);
    let grown = super::heap::live_bytes() - baseline;
    assert!(
        grown <= 0,
        "the heap grew by {grown} bytes over 100,000 connections"
    );
    sim.finish();
}

/// Scenario 12: Shutdown: every call, batch and subscription completes exactly once, with
/// `Shutdown`, every connection ends `Closed` then `Released`, and what comes later is refused.
#[test]
fn sim_shutdown_completes_everything_once_and_refuses_what_follows() {
    let mut sim = Sim::new(Proto::JsonRpc);
    let open = sim.open(with_reconnect(&sim, exact_policy()));
    let connecting = {
        let slow = Peer {
            connect_after: 1_000,
            ..Peer::default()
        };
        sim.open_to(sim.config(), slow)
    };
    sim.run_until(1);
    let active = sim.subscribe(open, true).unwrap();
    sim.run_until(3);
    // From now on the server takes its time: what follows is still out at the shutdown.
    sim.peer_mut(open).think = 1_000;
    let subscribing = sim.subscribe(open, false).unwrap();
    let (written, _) = sim.call(open, 60_000);
    let (batch, _) = sim.submit_batch(open, 2, None).unwrap();
    let (queued, _) = sim.submit(connecting, None).unwrap();
    sim.run_until(5);
    assert!(!sim.checker.ended(active) && !sim.checker.ended(subscribing));
    sim.shutdown();
    for token in [written, queued] {
        assert_eq!(error_name(sim.result(token)), "Shutdown");
    }
    let results = sim.batch_results(batch).unwrap();
    assert!(results.iter().all(|r| matches!(r, Err(Error::Shutdown))));
    assert!(sim.checker.ended(active) && sim.checker.ended(subscribing));
    for conn in [open, connecting] {
        let states = sim.states(conn);
        assert_eq!(&states[states.len() - 2..], ["Closed", "Released"]);
    }
    assert!(matches!(sim.submit(open, None), Err(Error::Shutdown)));
    let config = sim.config();
    assert!(matches!(
        sim.engine.open(sim.now, config, 1),
        Err(Error::Shutdown)
    ));
    sim.run(100);
    sim.finish();
}

/// Scenario 2: The connect timeout: calls waiting on a connect that never completes time out by
/// their own deadlines, then the connect deadline fails the rest `NotSent(ConnectTimeout)`, to the
/// tick.
#[test]
fn sim_calls_waiting_on_a_stalled_connect_time_out_then_the_connect_timeout_fires() {
    let mut sim = Sim::new(Proto::Envelope);
    sim.default_peer.connect = Connect::Hang;
    let config = ConnectionConfig {
        connect_timeout: Duration::from_millis(300),
        ..sim.config()
    };
    let conn = sim.open(config);
    let (short, _) = sim.submit(conn, ms(50)).unwrap();
    let (long, _) = sim.submit(conn, ms(60_000)).unwrap();
    sim.run(100);
    assert_eq!(error_name(sim.result(short)), "Timeout");
    assert_eq!(sim.completed_at(short), Some(51));
    assert_eq!(error_name(sim.result(long)), "NotSent(ConnectTimeout)");
    assert_eq!(sim.completed_at(long), Some(301));
    assert_eq!(
        sim.states(conn),
        [
            "Connecting",
            "Disconnected(ConnectTimeout)",
            "Closed",
            "Released"
        ]
    );
    sim.finish();
}

/// Scenario 10: An answer that arrives at its call's deadline tick is read before the deadline
/// fires: the call succeeds.
#[test]
fn sim_an_answer_read_at_the_deadline_tick_wins_over_the_timeout() {
    let mut sim = Sim::new(Proto::Envelope);
    sim.default_peer.think = 49;
    let conn = sim.open(sim.config());
    sim.run_until(1);
    // Due at 1 + 50 + 1 = 52; the answer is back at 1 + 1 + 49 + 1 = 52.
    let (token, _) = sim.call(conn, 50);
    sim.run(100);
    assert_eq!(sim.completed_at(token), Some(52));
    assert_eq!(
        error_name(sim.result(token)),
        format!("Ok({{\"n\":{token}}})")
    );
    close_and_finish(&mut sim, conn);
}

/// Scenario 9: A message that could never fit the write buffer with its frame header is refused
/// at once with `TooLarge` (the chaos soak found `turn` looping on such a frame, refused by the
/// socket with its buffer empty); one that fits is taken and written.
#[test]
fn sim_a_message_that_can_never_fit_the_write_buffer_is_refused_at_submit() {
    let mut sim = Sim::new(Proto::Envelope);
    let config = ConnectionConfig {
        max_write_buffer: 1_000,
        ..sim.config()
    };
    let conn = sim.open(config);
    sim.run_until(1);
    let now = sim.now;
    let options = crate::config::CallOptions::default();
    // A request of 986 bytes fits with its header (1,000); one of 987 never can.
    let payload = |n: usize| format!("\"{}\"", "x".repeat(n));
    let request_of = |frame: usize| payload(frame - "{\"id\":1,\"message\":}".len() - 2);
    let refused = sim.engine.submit(now, conn, &request_of(987), options, 99);
    assert!(matches!(
        refused,
        Err((
            Error::TooLarge {
                size: 987,
                limit: 986
            },
            99
        ))
    ));
    let too_big = "y".repeat(987);
    assert!(matches!(
        sim.send(conn, &too_big),
        Err(Error::TooLarge { .. })
    ));
    let (token, _) = sim.submit(conn, Some(Duration::from_secs(1))).unwrap();
    sim.run(100);
    assert!(sim.result(token).unwrap().is_ok());
    close_and_finish(&mut sim, conn);
}
