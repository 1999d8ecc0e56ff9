//! Trunks that register to the SBC (`host = "dynamic"`): reached where
//! they registered from, 480 while they are not registered, and their
//! own calls authenticated by digest and routed as the trunk's.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use sbc_core::net::{Flow, LocalId};
use sbc_core::policy::{Failover, NumberPattern, Policy, Route, Target, TrunkId};
use sbc_core::registrar::{Account, Accounts, Location, Settings, trunk_account_key};
use sbc_core::sip::HeaderName;
use sbc_core::stats::Direction;
use support::*;

/// The ISDN gateway, behind a NAT.
const GW: &str = "203.0.113.40:41000";
const GW_TRUNK: TrunkId = TrunkId(3);

/// The ip-trunks topology plus "isdn-gw" (trunk 3), which registers as
/// gw1; +4455 from carrier-a goes to it, and its calls go to carrier-b.
fn gateway_policy() -> Policy {
    let mut p = policy();
    let mut gw = trunk("isdn-gw", "192.0.2.250/32", "0.0.0.0:0");
    gw.sources.clear();
    gw.dynamic = true;
    p.trunks.push(gw);
    p.accounts = Accounts::new(
        Some(Settings::default()),
        vec![Account {
            trunk: Some(GW_TRUNK),
            ..account("gw1", &trunk_account_key("isdn-gw"), "gw-secret")
        }],
    );
    p.acl.strangers.per_source = 100;
    let target = |trunk| Target {
        trunk,
        priority: 1,
        weight: 1,
    };
    p.routes.push(Route {
        name: "to-gw".into(),
        from: vec![TrunkId(1)],
        numbers: vec![NumberPattern::Prefix("+4455".into())],
        targets: vec![target(GW_TRUNK)],
        failover: Failover::standard(),
        extension: None,
    });
    p.routes.push(Route {
        name: "from-gw".into(),
        from: vec![GW_TRUNK],
        numbers: vec![NumberPattern::Prefix(String::new())],
        targets: vec![target(TrunkId(2))],
        failover: Failover::standard(),
        extension: None,
    });
    p
}

fn registered(sim: &mut Sim) {
    let mut loc = Location::default();
    loc.apply(bound(
        "gw1",
        &trunk_account_key("isdn-gw"),
        "sip:gw1@192.168.5.5:5060",
        Flow::udp(addr(GW), LocalId(0)),
        sim.now + Duration::from_secs(600),
        "gw-reg",
    ));
    sim.engine.set_location(loc);
}

#[test]
fn a_dynamic_trunk_is_480_until_it_registers_then_rung_where_it_registered_from() {
    let mut sim = Sim::with_policy(gateway_policy());
    sim.recv(
        CARRIER_A,
        &invite(CARRIER_A, "+445512", "gw-1", "z9hG4bKg1", 1),
    );
    let sent = sim.sent();
    assert!(
        sent.iter()
            .any(|s| s.to == addr(CARRIER_A) && s.code() == Some(480)),
        "{sent:?}"
    );

    registered(&mut sim);
    sim.recv(
        CARRIER_A,
        &invite(CARRIER_A, "+445512", "gw-2", "z9hG4bKg2", 1),
    );
    let out = sim.first_to(GW);
    // The gateway is asked for the dialled number, at its Contact.
    assert!(
        out.text()
            .starts_with("INVITE sip:+445512@192.168.5.5:5060 SIP/2.0\r\n"),
        "{}",
        out.text()
    );
    assert!(
        out.header(HeaderName::To).starts_with("<sip:+445512@"),
        "{}",
        out.text()
    );
    let stats = std::sync::Arc::clone(&sim.policy.trunks[3].stats);
    assert_eq!(
        stats.attempted[Direction::Outbound as usize].load(Ordering::Relaxed),
        1
    );
    // It answers from where it registered: the call is up.
    sim.recv(GW, &answer_200(&out, "gw-tag", "sip:gw1@192.168.5.5:5060"));
    assert!(
        sim.sent()
            .iter()
            .any(|s| s.to == addr(CARRIER_A) && s.code() == Some(200))
    );
    assert_eq!(
        stats.answered[Direction::Outbound as usize].load(Ordering::Relaxed),
        1
    );
}

#[test]
fn a_dynamic_trunks_calls_are_authenticated_and_routed_as_its_own() {
    let mut sim = Sim::with_policy(gateway_policy());
    registered(&mut sim);
    let invite_from_gw = |cseq: u32, auth: &str| {
        invite(GW, "+3906555", "from-gw", &format!("z9hG4bKfg{cseq}"), cseq).replacen(
            "Content-Type:",
            &format!("{auth}Content-Type:"),
            1,
        )
    };
    sim.recv(GW, &invite_from_gw(1, ""));
    let challenge = sim.one_to(GW);
    assert_eq!(challenge.code(), Some(407));
    let auth = proxy_authorization(
        &challenge,
        "gw1",
        "gw-secret",
        "sip:+3906555@192.0.2.1:5060",
        "cn",
    );
    sim.recv(GW, &invite_from_gw(2, &auth));
    let out = sim.first_to(CARRIER_B);
    assert_eq!(out.method().as_deref(), Some("INVITE"));
    // Its own caller id, not an extension's.
    assert!(
        out.header(HeaderName::From).contains("<sip:alice@"),
        "{}",
        out.text()
    );
    let stats = std::sync::Arc::clone(&sim.policy.trunks[3].stats);
    assert_eq!(
        stats.attempted[Direction::Inbound as usize].load(Ordering::Relaxed),
        1
    );
}

/// A gateway that registers to the SBC is a trunk: when its INVITE cannot
/// be sent (RFC 3261 §18.4), that is a 503 and the call fails over to the
/// route's next trunk, not a phone's 480.
#[test]
fn a_registered_gateway_that_cannot_be_sent_to_fails_over() {
    let mut p = gateway_policy();
    let to_gw = p.routes.iter_mut().find(|r| &*r.name == "to-gw").unwrap();
    to_gw.targets.push(Target {
        trunk: TrunkId(2),
        priority: 2,
        weight: 1,
    });
    let mut sim = Sim::with_policy(p);
    registered(&mut sim);
    sim.recv(
        CARRIER_A,
        &invite(CARRIER_A, "+445512", "gw-3", "z9hG4bKg3", 1),
    );
    let _ = sim.first_to(GW);
    sim.engine
        .handle_unsent(sim.now, sbc_core::net::Transport::Udp, addr(GW));
    let sent = sim.advance(Duration::ZERO);
    assert!(
        sent.iter()
            .any(|(_, s)| s.to == addr(CARRIER_B) && s.method().as_deref() == Some("INVITE")),
        "failed over to carrier-b: {:#?}",
        sent.iter().map(|(_, s)| s.text()).collect::<Vec<_>>()
    );
    assert!(
        sent.iter()
            .all(|(_, s)| s.to != addr(CARRIER_A) || s.code() < Some(200)),
        "{sent:#?}"
    );
}
