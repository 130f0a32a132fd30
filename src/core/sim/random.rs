//! Scripts of random operations and faults against the simulator: [`run_script`] reads each
//! choice from a source of numbers, a seeded xorshift here (hundreds of seeds, a few thousand
//! operations each, the invariant checker after every step) or the fuzzer's input (the
//! `engine` fuzz target). A failing seed is printed; `SIM_SEED=N cargo test --lib sim_random`
//! replays it alone, and `SIM_SEEDS=N` runs more seeds.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Connect, Peer, Proto, Sim};
use crate::config::{ConnectionConfig, ReconnectPolicy};
use crate::core::call_id::CallId;
use crate::core::conn_id::ConnId;
use crate::core::event::SubscriptionId;
use crate::core::output::Violation;
#[cfg(test)]
use crate::core::test_rng::xorshift;

/// Operations per seed.
#[cfg(test)]
const OPS: usize = 2_000;

fn config(sim: &Sim, rng: &mut impl FnMut(u64) -> u64) -> ConnectionConfig {
    let reconnect = (rng(3) > 0).then(|| ReconnectPolicy {
        initial_delay: Duration::from_millis(1 + rng(50)),
        max_delay: Duration::from_millis(100 + rng(400)),
        multiplier: 2.0,
        jitter: 0.5,
        max_attempts: (rng(2) == 0).then(|| 1 + rng(5) as u32),
        reset_after: Duration::from_millis(rng(1_000)),
    });
    ConnectionConfig {
        reconnect,
        ping_interval: (rng(2) == 0).then(|| Duration::from_millis(50 + rng(500))),
        pong_timeout: Duration::from_millis(20 + rng(200)),
        connect_timeout: Duration::from_millis(20 + rng(200)),
        close_timeout: Duration::from_millis(10 + rng(100)),
        default_timeout: Duration::from_millis(50 + rng(1_000)),
        max_in_flight: 1 + rng(32) as usize,
        max_write_buffer: 64 + rng(2_000) as usize,
        ..sim.config()
    }
}

fn peer(rng: &mut impl FnMut(u64) -> u64) -> Peer {
    Peer {
        connect: match rng(10) {
            0 => Connect::Refuse,
            1 => Connect::Hang,
            _ => Connect::Accept,
        },
        connect_after: rng(30),
        latency: rng(5),
        think: rng(20),
        answers: rng(8) > 0,
        duplicate: rng(6) == 0,
        reorder: rng(4) == 0,
        split_batches: rng(2) == 0,
        pong: rng(8) > 0,
        echo_close: rng(5) > 0,
    }
}

/// What the random driver remembers of its calls, to cancel them or misdeliver their answers.
struct Made {
    conns: Vec<ConnId>,
    calls: Vec<(CallId, u32, ConnId)>,
    subs: Vec<SubscriptionId>,
}

/// Runs `ops` operations, each chosen by `rng` (`rng(n)` is a number in `0..n`), then ends
/// the run (a shutdown with everything in the air, or the faults stop and everything
/// settles) and checks that every call completed and every connection was freed. Panics on a
/// broken invariant. Returns how the calls ended, by outcome.
pub(crate) fn run_script(
    mut rng: impl FnMut(u64) -> u64,
    ops: usize,
) -> BTreeMap<&'static str, usize> {
    let rng = &mut rng;
    let proto = if rng(2) == 0 {
        Proto::Envelope
    } else {
        Proto::JsonRpc
    };
    let mut sim = Sim::new(proto);
    sim.keep_log = false;
    sim.keep_wire = false;
    let mut made = Made {
        conns: vec![],
        calls: vec![],
        subs: vec![],
    };
    for _ in 0..ops {
        if made.conns.len() < 3 && rng(20) == 0 || made.conns.is_empty() {
            let config = config(&sim, rng);
            let peer = peer(rng);
            made.conns.push(sim.open_to(config, peer));
        }
        let conn = made.conns[rng(made.conns.len() as u64) as usize];
        match rng(100) {
            0..=29 => {
                let timeout = (rng(3) > 0).then(|| Duration::from_millis(rng(300)));
                if let Ok((token, id)) = sim.submit(conn, timeout) {
                    made.calls.push((id, token, conn));
                }
            }
            30..=34 if proto == Proto::JsonRpc => {
                let n = 1 + rng(4) as usize;
                let timeout = (rng(2) > 0).then(|| Duration::from_millis(rng(300)));
                if let Ok((token, ids)) = sim.submit_batch(conn, n, timeout) {
                    made.calls
                        .extend(ids.into_iter().map(|id| (id, token, conn)));
                }
            }
            35..=39 if !made.calls.is_empty() => {
                let (id, _, _) = made.calls[rng(made.calls.len() as u64) as usize];
                sim.cancel(id);
            }
            40..=42 if proto == Proto::JsonRpc => {
                if let Ok(sub) = sim.subscribe(conn, rng(2) == 0) {
                    made.subs.push(sub);
                }
            }
            43 if !made.subs.is_empty() => {
                let sub = made.subs.swap_remove(rng(made.subs.len() as u64) as usize);
                sim.unsubscribe(sub);
            }
            44..=47 if proto == Proto::JsonRpc => {
                let keys = sim.keys(conn).to_vec();
                if !keys.is_empty() {
                    let key = &keys[rng(keys.len() as u64) as usize];
                    sim.push_item(conn, key, rng(1_000));
                }
            }
            48..=50 => {
                let garbage = [
                    "{\"id\":18446744073709551615,\"message\":1}",
                    "not json",
                    "[[[[[[]]]]]]",
                    "{\"jsonrpc\":\"2.0\",\"method\":\"news\",\"params\":[1]}",
                    "{\"id\":0}",
                    "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":1,\"message\":\"x\"}}",
                ];
                sim.push(conn, garbage[rng(garbage.len() as u64) as usize]);
            }
            // The answer to a call, on another connection: it must complete nothing there.
            51..=52 if !made.calls.is_empty() => {
                let (id, token, owner) = made.calls[rng(made.calls.len() as u64) as usize];
                if owner != conn {
                    let text = match proto {
                        Proto::Envelope => format!("{{\"id\":{id},\"message\":{{\"n\":{token}}}}}"),
                        Proto::JsonRpc => format!(
                            "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{{\"n\":{token}}}}}"
                        ),
                    };
                    sim.push(conn, &text);
                }
            }
            53 => sim.reset(conn),
            54 => sim.peer_close(conn, [1000, 1001, 1011, 4000][rng(4) as usize]),
            55 => {
                let violation = [
                    Violation::Protocol,
                    Violation::Utf8,
                    Violation::TooBig,
                    Violation::Reset,
                ];
                sim.violate(conn, violation[rng(4) as usize]);
            }
            56..=57 => sim.refuse_writes(conn, rng(2) == 0),
            58..=59 => *sim.peer_mut(conn) = peer(rng),
            60 => {
                let _ = sim.close(conn);
            }
            61 if rng(10) == 0 => {
                let _ = sim.send(conn, "{\"note\":1}");
            }
            62 => sim.push_other(conn, rng(2) == 0),
            63..=79 => sim.advance(rng(40)),
            _ => {
                sim.step();
            }
        }
        sim.pump();
        made.conns.retain(|&c| {
            use crate::ConnState::{Connecting, Open, Reconnecting};
            matches!(sim.engine.state(c), Some(Connecting | Open | Reconnecting))
        });
        if made.calls.len() > 256 {
            made.calls.drain(..128);
        }
    }
    // Half the seeds shut down with everything in the air.
    if rng(2) == 0 {
        sim.shutdown();
        sim.advance(1_000);
        sim.finish();
        assert_eq!(sim.engine.connections(), 0, "every connection is freed");
        return std::mem::take(&mut sim.checker.outcomes);
    }
    // The faults stop: every socket takes writes, every peer behaves. Whatever was submitted
    // completes by its deadline at the latest; then the connections close.
    for &conn in &made.conns {
        sim.refuse_writes(conn, false);
        *sim.peer_mut(conn) = Peer::default();
    }
    sim.advance(60_000);
    for &conn in &made.conns {
        let _ = sim.close(conn);
    }
    sim.advance(60_000);
    sim.shutdown();
    sim.advance(1_000);
    sim.finish();
    assert_eq!(sim.engine.connections(), 0, "every connection is freed");
    std::mem::take(&mut sim.checker.outcomes)
}

/// Runs one seed.
#[cfg(test)]
fn one_seed(seed: u64) -> BTreeMap<&'static str, usize> {
    run_script(xorshift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1), OPS)
}

/// Hundreds of seeded runs with fault injection: drops, silence, closes with codes,
/// violations, refused writes, reconnects, duplicates, reordering, misdelivered answers.
#[cfg(test)]
#[test]
fn sim_random_runs_keep_every_invariant() {
    use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

    let seeds: Vec<u64> = match std::env::var("SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("SIM_SEED is a number")],
        Err(_) => {
            let n = std::env::var("SIM_SEEDS").map_or(300, |n| n.parse().expect("a number"));
            (1..=n).collect()
        }
    };
    let mut outcomes = std::collections::BTreeMap::new();
    for seed in seeds {
        match catch_unwind(AssertUnwindSafe(|| one_seed(seed))) {
            Ok(counts) => {
                for (outcome, n) in counts {
                    *outcomes.entry(outcome).or_insert(0) += n;
                }
            }
            Err(panic) => {
                eprintln!(
                    "sim_random: seed {seed} failed; replay: SIM_SEED={seed} cargo test --lib sim_random"
                );
                resume_unwind(panic);
            }
        }
    }
    eprintln!("sim_random: calls by outcome: {outcomes:?}");
    // The faults reached every way a call can end.
    for outcome in [
        "Ok",
        "Timeout",
        "Cancelled",
        "NotSent",
        "Disconnected",
        "Closed",
        "Shutdown",
    ] {
        assert!(outcomes.contains_key(outcome), "no call ended {outcome}");
    }
}
