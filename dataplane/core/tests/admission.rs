//! Admission control per trunk (BRIEF §2) on the simulated clock: calls
//! open at once (`max_calls`, each direction) and calls a second
//! (`max_cps`), refused 503 with Retry-After before any call state, and
//! the trunk slots given back whatever way a call ends.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use sbc_core::policy::Policy;
use sbc_core::refusal::Refusal;
use sbc_core::sip::HeaderName;
use sbc_core::stats::Direction;
use support::*;

const NUMBER: &str = "+390612345678";

fn call(sim: &mut Sim, n: u32) -> Vec<Sent> {
    sim.recv(
        PBX,
        &invite(
            "10.0.0.10:5060",
            NUMBER,
            &format!("adm{n}@pbx"),
            &format!("z9hG4bKadm{n}"),
            1,
        ),
    );
    sim.sent()
}

/// Where the INVITEs among `sent` went.
fn invites_to(sent: &[Sent]) -> Vec<std::net::SocketAddr> {
    sent.iter()
        .filter(|s| s.method().as_deref() == Some("INVITE"))
        .map(|s| s.to)
        .collect()
}

fn open(p: &Policy, trunk: usize, d: Direction) -> i64 {
    p.trunks[trunk].stats.open[d as usize].load(Ordering::Relaxed)
}

#[test]
fn a_trunk_at_max_calls_gets_503_with_retry_after_until_a_call_ends() {
    let mut p = policy();
    p.trunks[0].max_calls = Some(1);
    let mut sim = Sim::with_policy(p);
    let first = call(&mut sim, 1);
    let b_invite = first
        .iter()
        .find(|s| s.to == addr(CARRIER_A))
        .unwrap()
        .clone();
    let second = call(&mut sim, 2);
    assert_eq!(second.len(), 1, "only the answer, no INVITE on");
    assert_eq!(second[0].code(), Some(503));
    assert_eq!(second[0].header(HeaderName::RetryAfter), "1");
    assert_eq!(sim.rejected(Refusal::TrunkLimit), 1);
    assert_eq!(sim.engine.calls(), 1, "no state for the refused call");
    // The first call fails (486): its slot comes back.
    sim.recv(
        CARRIER_A,
        &reply(&b_invite, 486, "Busy Here", Some("c"), None, ""),
    );
    sim.sent();
    let p = std::sync::Arc::clone(sim.engine.policy());
    assert_eq!(open(&p, 0, Direction::Inbound), 0);
    assert_eq!(open(&p, 1, Direction::Outbound), 0);
    let third = call(&mut sim, 3);
    assert!(third.iter().any(|s| s.to == addr(CARRIER_A)));
}

/// The SBC's own `max_calls` holds across shards: two shards share one
/// counter, the call over it gets 503 with Retry-After before any state,
/// and the slot comes back when a call ends.
#[test]
fn the_sbc_wide_max_calls_holds_across_shards() {
    let mut p = policy();
    p.limits.max_calls = Some(1);
    let open = std::sync::Arc::clone(&p.limits.open);
    let shared = sbc_core::policy::Limits {
        max_calls: Some(1),
        open: std::sync::Arc::clone(&open),
    };
    let mut other = policy();
    other.limits = shared;
    let mut sim = Sim::shard(p, 0, 2);
    let mut sim2 = Sim::shard(other, 1, 2);
    // The first Call-ID shard 0 owns (the others it hands off, statelessly).
    let b_invite = (1..40)
        .find_map(|n| {
            call(&mut sim, n)
                .into_iter()
                .find(|s| s.to == addr(CARRIER_A))
        })
        .unwrap();
    assert_eq!(open.get(), 1);
    // The other shard (any Call-ID it owns) is refused too.
    let refused = (40..80)
        .map(|n| call(&mut sim2, n))
        .find(|sent| sent.len() == 1 && sent[0].code() == Some(503))
        .expect("a call the second shard owns is refused");
    assert_eq!(refused[0].header(HeaderName::RetryAfter), "1");
    assert!(sim2.rejected(Refusal::CallLimit) >= 1);
    assert_eq!(sim2.engine.calls(), 0, "no state for the refused call");
    // The first call fails: its slot comes back, and a new call goes on.
    sim.recv(
        CARRIER_A,
        &reply(&b_invite, 486, "Busy Here", Some("c"), None, ""),
    );
    sim.sent();
    assert_eq!(open.get(), 0);
    assert!(
        (100..140).any(|n| call(&mut sim, n).iter().any(|s| s.to == addr(CARRIER_A))),
        "a new call goes on"
    );
}

#[test]
fn a_trunk_over_its_calls_a_second_gets_503() {
    let mut p = policy();
    p.trunks[0].max_cps = Some(2);
    let mut sim = Sim::with_policy(p);
    let relayed = |sent: &[Sent]| sent.iter().filter(|s| s.to == addr(CARRIER_A)).count();
    let mut through = 0;
    for n in 0..5 {
        through += relayed(&call(&mut sim, n));
    }
    assert_eq!(through, 2, "a burst of one second's worth");
    assert_eq!(sim.rejected(Refusal::TrunkLimit), 3);
    sim.advance(Duration::from_millis(500));
    let mut through = 0;
    for n in 10..15 {
        through += relayed(&call(&mut sim, n));
    }
    assert_eq!(through, 1, "half a second: one more call");
}

/// A carrier at its max_calls is skipped: the call goes to the next
/// target at once.
#[test]
fn a_target_at_max_calls_is_skipped() {
    let mut p = policy();
    p.trunks[1].max_calls = Some(1);
    let mut sim = Sim::with_policy(p);
    assert_eq!(invites_to(&call(&mut sim, 1)), vec![addr(CARRIER_A)]);
    assert_eq!(invites_to(&call(&mut sim, 2)), vec![addr(CARRIER_B)]);
    let p = std::sync::Arc::clone(sim.engine.policy());
    assert_eq!(open(&p, 1, Direction::Outbound), 1);
    assert_eq!(open(&p, 2, Direction::Outbound), 1);
    assert_eq!(open(&p, 0, Direction::Inbound), 2);
}

/// A carrier at its max_cps (calls a second sent to it) is skipped like
/// one at its max_calls; its bucket refills with time. The PBX's own
/// inbound rate is not spent by calls going out.
#[test]
fn a_target_at_its_calls_a_second_is_skipped() {
    let mut p = policy();
    p.trunks[1].max_cps = Some(2);
    let mut sim = Sim::with_policy(p);
    assert_eq!(invites_to(&call(&mut sim, 1)), vec![addr(CARRIER_A)]);
    assert_eq!(invites_to(&call(&mut sim, 2)), vec![addr(CARRIER_A)]);
    assert_eq!(
        invites_to(&call(&mut sim, 3)),
        vec![addr(CARRIER_B)],
        "over the rate"
    );
    sim.advance(Duration::from_millis(500));
    assert_eq!(
        invites_to(&call(&mut sim, 4)),
        vec![addr(CARRIER_A)],
        "refilled"
    );
    assert_eq!(sim.rejected(Refusal::TrunkLimit), 0);
}

/// Whatever way calls end (failover, timeouts, answered and hung up), no
/// slot is left taken.
#[test]
fn slots_all_come_back() {
    let mut p = policy();
    p.trunks[0].max_calls = Some(100);
    p.trunks[1].max_calls = Some(100);
    let mut sim = Sim::with_policy(p);
    for n in 0..20 {
        let sent = call(&mut sim, n);
        if let Some(b) = sent.iter().find(|s| s.to == addr(CARRIER_A)) {
            let _ = match n % 3 {
                // carrier-a fails: failover to carrier-b, which never answers.
                0 => sim.recv(
                    CARRIER_A,
                    &reply(b, 503, "Unavailable", Some("c"), None, ""),
                ),
                // answered (then the call times out unconfirmed or ends).
                1 => sim.recv(CARRIER_A, &answer_200(b, "c", "sip:c@10.0.0.20")),
                // nothing: timeouts.
                _ => sbc_core::b2bua::Disposition::Done,
            };
        }
        sim.sent();
    }
    sim.advance(Duration::from_secs(200));
    let p = std::sync::Arc::clone(sim.engine.policy());
    for t in 0..3 {
        for d in [Direction::Inbound, Direction::Outbound] {
            assert_eq!(open(&p, t, d), 0, "trunk {t} {d:?}");
        }
    }
}

/// A maximum call duration: the answered call is ended with BYE on both
/// legs when it is reached, and reported so.
#[test]
fn an_answered_call_ends_at_its_maximum_duration() {
    let mut p = policy();
    p.call_timers.max_duration = Some(Duration::from_secs(60));
    let mut sim = Sim::with_policy(p);
    let sent = call(&mut sim, 1);
    let b = sent
        .iter()
        .find(|s| s.to == addr(CARRIER_A))
        .unwrap()
        .clone();
    sim.recv(CARRIER_A, &answer_200(&b, "c", "sip:c@10.0.0.20"));
    let ok = sim.one_to(PBX);
    sim.recv(PBX, &ack_from_pbx("adm1@pbx", &ok.header(HeaderName::To)));
    sim.sent();
    let early = sim.advance(Duration::from_secs(59));
    assert!(
        early
            .iter()
            .all(|(_, s)| s.method().as_deref() != Some("BYE"))
    );
    let byes: Vec<_> = sim
        .advance(Duration::from_secs(2))
        .into_iter()
        .filter(|(_, s)| s.method().as_deref() == Some("BYE"))
        .map(|(_, s)| s.to)
        .collect();
    assert!(
        byes.contains(&addr(PBX)) && byes.contains(&addr(CARRIER_A)),
        "{byes:?}"
    );
    let ended = sim.events().into_iter().find_map(|e| match e {
        sbc_core::b2bua::Event::CallEnded(r) => Some(r.reason),
        _ => None,
    });
    assert_eq!(ended, Some(sbc_core::b2bua::EndReason::MaxDuration));
}

/// Overload control: with admission cut, new calls get 503 with
/// Retry-After before any state, while calls already up go on.
#[test]
fn an_overloaded_shard_sheds_new_calls_only() {
    let mut sim = Sim::new();
    let first = call(&mut sim, 1);
    let b = first
        .iter()
        .find(|s| s.to == addr(CARRIER_A))
        .unwrap()
        .clone();
    sim.engine.set_admission(0);
    let shed = call(&mut sim, 2);
    assert_eq!(shed.len(), 1);
    assert_eq!(shed[0].code(), Some(503));
    assert_eq!(shed[0].header(HeaderName::RetryAfter), "1");
    assert_eq!(sim.rejected(Refusal::Overloaded), 1);
    assert_eq!(sim.engine.calls(), 1);
    // The call admitted before still completes.
    sim.recv(CARRIER_A, &answer_200(&b, "c", "sip:c@10.0.0.20"));
    assert_eq!(sim.one_to(PBX).code(), Some(200));
    // Half admitted: about half of many new calls get through.
    sim.engine.set_admission(500);
    let through = (100..1100)
        .filter(|n| call(&mut sim, *n).iter().any(|s| s.to == addr(CARRIER_A)))
        .count();
    assert!((400..=600).contains(&through), "{through} of 1000");
}
