//! Trunk health probes on the simulated clock: OPTIONS on the interval,
//! down after failures in a row, up after answers, routing around trunks
//! that are down.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use sbc_core::b2bua::{Engine, Event, Secrets, ShardId};
use sbc_core::policy::{Policy, Probe};
use sbc_core::refusal::Refusal;
use sbc_core::sip::HeaderName;
use support::*;

const NUMBER: &str = "+390612345678";
const INTERVAL: Duration = Duration::from_secs(5);

/// carrier-a (trunk 1) and carrier-b (trunk 2) probed every 5 s, down
/// after 2 failures, up after 1 answer.
fn probed_policy() -> Policy {
    let mut p = policy();
    for t in &mut p.trunks[1..] {
        t.probe = Some(Probe {
            interval: INTERVAL,
            down_after: 2,
            up_after: 1,
        });
    }
    p
}

fn probed_sim() -> Sim {
    let mut sim = Sim::with_policy(probed_policy());
    let now = sim.now;
    let policy = Arc::clone(sim.engine.policy());
    sim.engine.set_policy(now, policy);
    sim
}

/// The probes sent to `to` in `sent` (retransmissions included).
fn options_to(sent: &[(Duration, Sent)], to: &str) -> Vec<Sent> {
    sent.iter()
        .filter(|(_, s)| s.to == addr(to) && s.method().as_deref() == Some("OPTIONS"))
        .map(|(_, s)| s.clone())
        .collect()
}

fn health(sim: &mut Sim) -> Vec<(String, bool)> {
    sim.events()
        .into_iter()
        .filter_map(|e| match e {
            Event::TrunkHealth { trunk, up, .. } => Some((trunk.to_string(), up)),
            _ => None,
        })
        .collect()
}

#[test]
fn probes_go_on_the_interval_and_only_to_probed_trunks() {
    let mut sim = probed_sim();
    let sent = sim.advance(Duration::ZERO);
    let a = options_to(&sent, CARRIER_A);
    let b = options_to(&sent, CARRIER_B);
    assert_eq!((a.len(), b.len()), (1, 1), "one probe each at once");
    assert!(options_to(&sent, PBX).is_empty(), "the pbx is not probed");
    let probe = &a[0];
    assert!(
        probe
            .text()
            .starts_with("OPTIONS sip:10.0.0.20:5060 SIP/2.0\r\n")
    );
    assert_eq!(probe.header(HeaderName::MaxForwards), "70");
    // Answered: the next probe waits for the interval, with a new CSeq.
    sim.recv(CARRIER_A, &reply(probe, 200, "OK", Some("x"), None, ""));
    sim.recv(CARRIER_B, &reply(&b[0], 200, "OK", Some("y"), None, ""));
    let sent = sim.advance(INTERVAL - Duration::from_millis(1));
    assert!(options_to(&sent, CARRIER_A).is_empty(), "{sent:?}");
    let sent = sim.advance(Duration::from_millis(1));
    let next = options_to(&sent, CARRIER_A);
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].cseq(), "2 OPTIONS");
    assert!(
        health(&mut sim).is_empty(),
        "up all along: no change to report"
    );
}

/// A dead carrier is skipped by routing: the call goes straight to the
/// next target, with no INVITE and no timeout spent on the dead one; it
/// comes back after one answered probe.
#[test]
fn a_trunk_that_stops_answering_goes_down_and_calls_skip_it() {
    let mut sim = probed_sim();
    // carrier-b answers every probe; carrier-a never does.
    let answer_b = |sim: &mut Sim, sent: &[(Duration, Sent)]| {
        for p in options_to(sent, CARRIER_B) {
            sim.recv(CARRIER_B, &reply(&p, 200, "OK", Some("y"), None, ""));
        }
    };
    let sent = sim.advance(Duration::ZERO);
    answer_b(&mut sim, &sent);
    // First failure at the second probe (no answer within the interval),
    // the second at the third: down.
    let sent = sim.advance(INTERVAL);
    answer_b(&mut sim, &sent);
    assert!(health(&mut sim).is_empty(), "one failure is not enough");
    let sent = sim.advance(INTERVAL);
    answer_b(&mut sim, &sent);
    assert_eq!(health(&mut sim), vec![("carrier-a".to_owned(), false)]);
    assert!(sim.engine.policy().trunks[1].stats.is_down());

    sim.sent();
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, "skip@pbx", "z9hG4bKsk", 1),
    );
    let sent = sim.sent();
    let invites: Vec<_> = sent
        .iter()
        .filter(|s| s.method().as_deref() == Some("INVITE"))
        .map(|s| s.to)
        .collect();
    assert_eq!(invites, vec![addr(CARRIER_B)], "carrier-a is down");

    // carrier-a answers its next probe (even 404 means alive): up again.
    let sent = sim.advance(INTERVAL);
    answer_b(&mut sim, &sent);
    let probe = options_to(&sent, CARRIER_A).pop().expect("a probe");
    sim.recv(
        CARRIER_A,
        &reply(&probe, 404, "Not Found", Some("x"), None, ""),
    );
    assert_eq!(health(&mut sim), vec![("carrier-a".to_owned(), true)]);
    sim.sent();
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, "back@pbx", "z9hG4bKbk", 1),
    );
    let first = sim
        .sent()
        .into_iter()
        .find(|s| s.method().as_deref() == Some("INVITE"))
        .unwrap();
    assert_eq!(first.to, addr(CARRIER_A));
}

/// 503 answers count as failures; with every target down the caller gets
/// 503 at once.
#[test]
fn every_target_down_is_answered_503() {
    let mut sim = probed_sim();
    for _ in 0..2 {
        let sent = sim.advance(INTERVAL);
        for (to, p) in [CARRIER_A, CARRIER_B]
            .iter()
            .flat_map(|to| options_to(&sent, to).into_iter().map(move |p| (*to, p)))
        {
            sim.recv(
                to,
                &reply(&p, 503, "Service Unavailable", Some("z"), None, ""),
            );
        }
    }
    let mut changes = health(&mut sim);
    changes.sort();
    assert_eq!(
        changes,
        vec![
            ("carrier-a".to_owned(), false),
            ("carrier-b".to_owned(), false)
        ]
    );
    sim.sent();
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, "none@pbx", "z9hG4bKno", 1),
    );
    let answer = sim.first_to(PBX);
    assert_eq!(answer.code(), Some(503));
    assert_eq!(sim.rejected(Refusal::TrunksDown), 1);
}

/// With two shards each trunk is probed by one of them only; a reload
/// that drops a trunk's probes brings it up and stops them.
#[test]
fn one_shard_probes_each_trunk_and_a_reload_stops_probes() {
    let policy = Arc::new(probed_policy());
    let secrets = Secrets::from_bytes([7; 48]);
    let mut shards: Vec<Engine> = (0..2)
        .map(|i| Engine::new(ShardId(i), 2, secrets, Arc::clone(&policy), Arc::default()))
        .collect();
    let now = std::time::Instant::now();
    let mut buf = vec![0u8; 65536];
    let mut probed = Vec::new();
    for (i, e) in shards.iter_mut().enumerate() {
        e.set_policy(now, Arc::clone(&policy));
        e.handle_timeout(now);
        while let Some(t) = e.poll_transmit(&mut buf) {
            probed.push((i, t.dest.remote));
        }
    }
    probed.sort();
    // Trunk 1 (carrier-a) on shard 1, trunk 2 (carrier-b) on shard 0.
    assert_eq!(probed, vec![(0, addr(CARRIER_B)), (1, addr(CARRIER_A))]);

    // carrier-a goes down on shard 1; then a reload without its probe.
    let e = &mut shards[1];
    let mut t = now;
    let mut last_cseq = 0;
    for _ in 0..2 {
        t += INTERVAL;
        e.handle_timeout(t);
        while let Some(x) = e.poll_transmit(&mut buf) {
            last_cseq = last_cseq.max(cseq_of(&buf[..x.len]));
        }
    }
    assert!(policy.trunks[1].stats.is_down());
    let mut next = probed_policy();
    next.trunks[1].probe = None;
    next.trunks[1].stats = Arc::clone(&policy.trunks[1].stats);
    e.set_policy(t, Arc::new(next));
    assert!(!policy.trunks[1].stats.is_down(), "unprobed trunks are up");
    assert!(last_cseq >= 2, "probes went before the reload");
    // Nothing more goes to carrier-a: no new probe, and the pending one
    // is not retransmitted.
    assert_eq!(e.outside_transactions().0, 0);
    for k in 1..=4 {
        e.handle_timeout(t + INTERVAL * k);
        while let Some(x) = e.poll_transmit(&mut buf) {
            assert_ne!(x.dest.remote, addr(CARRIER_A), "sent after the reload");
        }
    }
}

/// The CSeq number of a request.
fn cseq_of(bytes: &[u8]) -> u32 {
    let text = String::from_utf8_lossy(bytes);
    let line = text
        .lines()
        .find(|l| l.starts_with("CSeq:"))
        .expect("a CSeq");
    line[5..].trim().split(' ').next().unwrap().parse().unwrap()
}
