//! Trunks told apart by source port (BRIEF §2, issue 12 item 2): two
//! trunks on one address, each with its `source_port`, start calls as
//! themselves over UDP; another port of that address is a stranger; and
//! within a dialog the peer may still answer from another port.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use sbc_core::policy::{Failover, NumberPattern, Policy, Route, Target, TrunkId};
use sbc_core::refusal::Refusal;
use sbc_core::sip::HeaderName;
use support::*;

const NUMBER: &str = "+390612345678";
/// The second tenant on the PBX's host.
const TENANT: &str = "10.0.0.10:5070";

/// The PBX held to port 5060, and a second trunk on the same address at
/// port 5070 whose calls go to carrier B only.
fn shared_host() -> Policy {
    let mut p = policy();
    p.trunks[0].source_port = Some(5060);
    let mut tenant = trunk("tenant", "10.0.0.10/32", TENANT);
    tenant.source_port = Some(5070);
    p.trunks.push(tenant);
    p.routes.push(Route {
        name: "tenant-out".into(),
        from: vec![TrunkId(3)],
        numbers: vec![NumberPattern::Prefix(String::new())],
        targets: vec![Target {
            trunk: TrunkId(2),
            priority: 1,
            weight: 1,
        }],
        failover: Failover::standard(),
        extension: None,
    });
    p
}

fn invite_from(sim: &mut Sim, from: &str, call_id: &str) -> Vec<Sent> {
    sim.recv(from, &invite(from, NUMBER, call_id, "z9hG4bKid1", 1));
    sim.sent()
}

#[test]
fn each_port_of_a_shared_address_is_its_own_trunk() {
    let mut sim = Sim::with_policy(shared_host());
    let pbx = invite_from(&mut sim, PBX, "pbx@host");
    assert!(
        pbx.iter().any(|s| s.to == addr(CARRIER_A)),
        "PBX -> carrier A"
    );
    let tenant = invite_from(&mut sim, TENANT, "tenant@host");
    assert!(
        tenant.iter().any(|s| s.to == addr(CARRIER_B)),
        "tenant -> carrier B: {tenant:?}"
    );
    assert!(!tenant.iter().any(|s| s.to == addr(CARRIER_A)));
    // Any other port of that address is no trunk's.
    let other = invite_from(&mut sim, "10.0.0.10:5999", "other@host");
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].code(), Some(403));
    assert_eq!(sim.rejected(Refusal::UnknownSource), 1);
}

#[test]
fn a_port_specific_trunk_outranks_one_for_the_whole_address() {
    let mut p = shared_host();
    p.trunks[0].source_port = None;
    let mut sim = Sim::with_policy(p);
    let tenant = invite_from(&mut sim, TENANT, "tenant@host");
    assert!(tenant.iter().any(|s| s.to == addr(CARRIER_B)), "{tenant:?}");
    let other = invite_from(&mut sim, "10.0.0.10:5999", "other@host");
    assert!(other.iter().any(|s| s.to == addr(CARRIER_A)), "{other:?}");
}

#[test]
fn within_a_dialog_the_tenant_may_send_from_another_port() {
    let mut sim = Sim::with_policy(shared_host());
    let sent = invite_from(&mut sim, TENANT, "tenant@host");
    let b = sent
        .iter()
        .find(|s| s.to == addr(CARRIER_B))
        .unwrap()
        .clone();
    sim.recv(CARRIER_B, &answer_200(&b, "cb", "sip:c@10.0.0.30"));
    let ok = sim.one_to(TENANT);
    assert_eq!(ok.code(), Some(200));
    // The ACK comes from the tenant's host on another port: it is the
    // dialog's peer all the same (matched by address and tags).
    let ack = ack_from_pbx("tenant@host", &ok.header(HeaderName::To))
        .replace("10.0.0.10:5060", "10.0.0.10:5071");
    sim.recv("10.0.0.10:5071", &ack);
    let relayed = sim.sent();
    assert!(
        relayed
            .iter()
            .any(|s| s.to == addr(CARRIER_B) && s.method().as_deref() == Some("ACK")),
        "{relayed:?}"
    );
}
