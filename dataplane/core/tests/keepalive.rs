//! Keepalives to registered phones on the simulated clock: an OPTIONS
//! every interval to the address each registered from; unanswered ones
//! mark the phone unreachable (not rung) until it answers again; CRLF
//! keepalives for phones that only need their NAT held open.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use sbc_core::b2bua::Event;
use sbc_core::net::{Flow, LocalId};
use sbc_core::policy::Policy;
use sbc_core::registrar::{Accounts, Change, Keepalive, KeepaliveMethod, Location, Settings};
use support::*;

const PHONE: &str = "203.0.113.20:40000";

fn keepalive_sim(method: KeepaliveMethod) -> Sim {
    let mut p: Policy = policy();
    let settings = Settings {
        keepalive: Some(Keepalive {
            method,
            interval: Duration::from_secs(30),
            unreachable_after: 2,
        }),
        ..Settings::default()
    };
    p.accounts = Accounts::new(Some(settings), vec![account("alice", "201", "x")]);
    let mut sim = Sim::with_policy(p);
    let policy = Arc::clone(&sim.policy);
    sim.engine.set_policy(sim.now, policy);
    let mut loc = Location::default();
    loc.apply(bound(
        "alice",
        "201",
        "sip:alice@10.1.1.2:5062",
        Flow::udp(addr(PHONE), LocalId(0)),
        sim.now + Duration::from_secs(3600),
        "r",
    ));
    sim.engine.set_location(loc);
    sim
}

/// The new keepalives sent to the phone in the next `d`: requests with a
/// CSeq above `last` (retransmissions and earlier ones not counted).
fn keepalives(sim: &mut Sim, d: Duration, last: &mut u32) -> Vec<Sent> {
    let mut out: Vec<Sent> = Vec::new();
    for (_, s) in sim.advance(d) {
        assert_eq!(s.to, addr(PHONE));
        let seq: u32 = s.cseq().split(' ').next().unwrap().parse().unwrap();
        if seq > *last {
            *last = seq;
            out.push(s);
        }
    }
    out
}

/// The engine's reachability changes since the last look (it applies
/// them to its own bindings).
fn reachability(sim: &mut Sim) -> Vec<bool> {
    sim.events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Registration(Change::Reachable { reachable, .. }) => Some(reachable),
            _ => None,
        })
        .collect()
}

#[test]
fn answered_options_keep_the_phone_reachable_and_silence_marks_it_unreachable() {
    let mut sim = keepalive_sim(KeepaliveMethod::Options);
    let last = &mut 0;
    // One OPTIONS within the first interval, to where it registered from.
    let first = keepalives(&mut sim, Duration::from_secs(30), last);
    assert_eq!(first.len(), 1, "{first:?}");
    let options = &first[0];
    assert!(
        options
            .text()
            .starts_with("OPTIONS sip:alice@10.1.1.2:5062 SIP/2.0\r\n"),
        "{}",
        options.text()
    );
    sim.recv(PHONE, &reply(options, 200, "OK", Some("ph"), None, ""));
    assert!(reachability(&mut sim).is_empty());

    // Silence: the next two go unanswered, the phone is unreachable and
    // a call to its extension finds no one to ring.
    assert_eq!(keepalives(&mut sim, Duration::from_secs(30), last).len(), 1);
    assert!(reachability(&mut sim).is_empty());
    let third = keepalives(&mut sim, Duration::from_secs(30), last);
    assert_eq!(third.len(), 1);
    assert!(reachability(&mut sim).is_empty(), "one miss so far");
    let fourth = keepalives(&mut sim, Duration::from_secs(30), last);
    assert_eq!(reachability(&mut sim), [false]);
    assert!(sim.engine.location().reachable("alice", sim.now).is_none());

    // It answers again (even 405 is alive): reachable.
    sim.recv(
        PHONE,
        &reply(&fourth[0], 405, "Method Not Allowed", Some("ph"), None, ""),
    );
    assert_eq!(reachability(&mut sim), [true]);
    assert!(sim.engine.location().reachable("alice", sim.now).is_some());
}

#[test]
fn crlf_keepalives_hold_the_nat_open_and_ask_nothing() {
    let mut sim = keepalive_sim(KeepaliveMethod::Crlf);
    // Every interval, and never a change of reachability.
    let sent: Vec<(Duration, Sent)> = sim.advance(Duration::from_secs(120));
    assert_eq!(sent.len(), 4, "{sent:?}");
    assert!(
        sent.iter()
            .all(|(_, s)| s.to == addr(PHONE) && s.bytes == b"\r\n\r\n")
    );
    assert!(reachability(&mut sim).is_empty());
}

#[test]
fn expired_or_unknown_bindings_get_no_keepalive() {
    let mut sim = keepalive_sim(KeepaliveMethod::Options);
    sim.engine.set_location(Location::default());
    assert!(sim.advance(Duration::from_secs(90)).is_empty());
}

/// 60 phones on one shard, CRLF every 30 s; `names` are bound.
fn many_phones_sim(names: &[String]) -> Sim {
    let mut p: Policy = policy();
    let settings = Settings {
        keepalive: Some(Keepalive {
            method: KeepaliveMethod::Crlf,
            interval: Duration::from_secs(30),
            unreachable_after: 2,
        }),
        ..Settings::default()
    };
    let accounts = (0..60)
        .map(|i| account(&format!("p{i}"), &format!("3{i:02}"), "x"))
        .collect();
    p.accounts = Accounts::new(Some(settings), accounts);
    let mut sim = Sim::with_policy(p);
    let policy = Arc::clone(&sim.policy);
    sim.engine.set_policy(sim.now, policy);
    let mut loc = Location::default();
    for name in names {
        loc.apply(phone_binding(&sim, name));
    }
    sim.engine.set_location(loc);
    sim
}

/// Phone `p{i}` registered from port 41000 + i.
fn phone_binding(sim: &Sim, name: &str) -> Change {
    let i: u16 = name[1..].parse().unwrap();
    bound(
        name,
        &format!("3{i:02}"),
        &format!("sip:{name}@10.1.1.2:5062"),
        Flow::udp(addr(&format!("203.0.113.20:{}", 41000 + i)), LocalId(0)),
        sim.now + Duration::from_secs(3600),
        "r",
    )
}

/// Keepalives sent in the next `d`, by phone port, and the seconds they
/// went out in.
fn crlfs(sim: &mut Sim, d: Duration) -> (std::collections::BTreeMap<u16, usize>, usize) {
    let mut by_port = std::collections::BTreeMap::new();
    let mut seconds = std::collections::BTreeSet::new();
    for (at, s) in sim.advance(d) {
        assert_eq!(s.bytes, b"\r\n\r\n");
        *by_port.entry(s.to.port()).or_insert(0) += 1;
        seconds.insert(at.as_secs());
    }
    (by_port, seconds.len())
}

#[test]
fn each_binding_gets_one_keepalive_an_interval_spread_over_it_and_only_while_bound() {
    let names: Vec<String> = (0..40).map(|i| format!("p{i}")).collect();
    let mut sim = many_phones_sim(&names);
    let (first, seconds) = crlfs(&mut sim, Duration::from_secs(30));
    assert_eq!(first.len(), 40, "every phone: {first:?}");
    assert!(first.values().all(|n| *n == 1), "once each: {first:?}");
    assert!(seconds >= 10, "spread over the interval: {seconds} seconds");

    // Phones bound later join; phones gone (unregistered, reloaded away,
    // expired) leave; the others keep their one per interval.
    let mut later = Location::default();
    for i in 40..60 {
        later.apply(phone_binding(&sim, &format!("p{i}")));
    }
    sim.engine.restore_bindings(later.iter().cloned());
    let (second, _) = crlfs(&mut sim, Duration::from_secs(30));
    assert_eq!(second.len(), 60, "{second:?}");
    assert!(second.values().all(|n| *n == 1), "{second:?}");

    let mut kept = Location::default();
    for i in (0..60).filter(|i| i % 2 == 0) {
        kept.apply(phone_binding(&sim, &format!("p{i}")));
    }
    sim.engine.set_location(kept);
    let (third, _) = crlfs(&mut sim, Duration::from_secs(60));
    assert_eq!(third.len(), 30, "{third:?}");
    assert!(
        third
            .iter()
            .all(|(port, n)| (port - 41000) % 2 == 0 && *n == 2),
        "{third:?}"
    );
}
