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

/// A trunk held to a port of an address inside a broader trunk's network
/// has only that port: the broader trunk keeps the address's other ports,
/// in dialogs too (its ACK and BYE are its own, not strays).
#[test]
fn a_ported_trunk_inside_a_broader_network_leaves_it_the_other_ports() {
    let mut p = policy();
    p.trunks[0].sources = vec!["10.0.0.0/24".parse().unwrap()];
    let mut tenant = trunk("tenant", "10.0.0.10/32", TENANT);
    tenant.source_port = Some(5070);
    p.trunks.push(tenant);
    let mut sim = Sim::with_policy(p);
    let sent = invite_from(&mut sim, PBX, "wide@host");
    let b = sent
        .iter()
        .find(|s| s.to == addr(CARRIER_A))
        .unwrap()
        .clone();
    sim.recv(CARRIER_A, &answer_200(&b, "ca", "sip:c@10.0.0.20"));
    let ok = sim.one_to(PBX);
    sim.recv(PBX, &ack_from_pbx("wide@host", &ok.header(HeaderName::To)));
    let acked = sim.sent();
    assert!(
        acked
            .iter()
            .any(|s| s.to == addr(CARRIER_A) && s.method().as_deref() == Some("ACK")),
        "{acked:?}"
    );
    let policy = std::sync::Arc::clone(sim.engine.policy());
    assert!(policy.is_source_of(TrunkId(0), addr(PBX).ip()));
    assert!(policy.is_source_of(TrunkId(3), addr(PBX).ip()));
}

/// Over TCP the source port tells nothing: an address two ported trunks
/// share is no trunk's, rather than silently the first one's.
#[test]
fn over_a_stream_a_shared_address_is_nobodys() {
    let policy = shared_host();
    let flow = |port: u16, transport| sbc_core::net::Flow {
        transport,
        remote: std::net::SocketAddr::new(addr(PBX).ip(), port),
        local: sbc_core::net::LocalId(0),
        conn: None,
    };
    use sbc_core::net::Transport;
    assert_eq!(
        policy.trunk_for_origin(&flow(5070, Transport::Udp)),
        Some(TrunkId(3))
    );
    assert_eq!(policy.trunk_for_origin(&flow(5070, Transport::Tcp)), None);
    assert_eq!(policy.trunk_for_origin(&flow(40000, Transport::Tls)), None);
}
