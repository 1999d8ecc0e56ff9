//! Stream transports in the core (issue 11): responses and in-dialog
//! requests go back over the connection a peer used, requests to a trunk
//! reached over TCP name TCP in Via and Contact and are not retransmitted,
//! and a phone registered over a connection is rung over it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::num::NonZeroU64;
use std::time::Duration;

use sbc_core::b2bua::Event;
use sbc_core::net::{ConnId, Flow, LocalId, Transport};
use sbc_core::policy::{Listener, NumberPattern, Policy, Route, TrunkId};
use sbc_core::registrar::{Accounts, Change, Location, Settings};
use sbc_core::sip::HeaderName;
use support::*;

/// The usual topology with a TCP listener beside the UDP one (LocalId 1).
fn tcp_policy(carrier_a_over_tcp: bool) -> Policy {
    let mut p = policy();
    p.listeners.push(Listener {
        transport: Transport::Tcp,
        bind: addr(SBC),
        advertise: SBC.into(),
    });
    if carrier_a_over_tcp {
        p.trunks[1].transport = Transport::Tcp;
    }
    p
}

fn conn(n: u32) -> Option<ConnId> {
    Some(ConnId(NonZeroU64::new(n.into()).unwrap()))
}

fn tcp_from(remote: &str, n: u32) -> Flow {
    stream_flow(Transport::Tcp, remote, 1, n)
}

/// Connection `n` over `transport` from `remote`, on listener `local`.
fn stream_flow(transport: Transport, remote: &str, local: u16, n: u32) -> Flow {
    Flow {
        transport,
        remote: addr(remote),
        local: LocalId(local),
        conn: conn(n),
    }
}

/// [`tcp_policy`] without a TCP carrier, plus a TLS listener (LocalId 2).
fn tls_policy() -> Policy {
    let mut p = tcp_policy(false);
    p.listeners.push(Listener {
        transport: Transport::Tls,
        bind: addr("192.0.2.1:5061"),
        advertise: "192.0.2.1:5061".into(),
    });
    p
}

/// Everything queued, with the flow each goes on.
fn drain(sim: &mut Sim) -> Vec<(Flow, Sent)> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    while let Some(t) = sim.engine.poll_transmit(&mut buf) {
        out.push((
            t.dest,
            Sent {
                to: t.dest.remote,
                bytes: buf[..t.len].to_vec(),
            },
        ));
    }
    out
}

fn find<'a>(sent: &'a [(Flow, Sent)], what: &str) -> &'a (Flow, Sent) {
    sent.iter()
        .find(|(_, s)| s.text().starts_with(what))
        .unwrap_or_else(|| panic!("no {what}: {sent:#?}"))
}

#[test]
fn a_caller_over_tcp_is_answered_over_its_connection() {
    let mut sim = Sim::with_policy(tcp_policy(false));
    // The PBX connected from an ephemeral port.
    let pbx = tcp_from("10.0.0.10:40001", 5);
    let text = invite(PBX, "+390612345678", "tcp-1", "z9hG4bKtcp1", 1)
        .replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    sim.engine.handle_datagram(sim.now, pbx, text.as_bytes());
    let sent = drain(&mut sim);
    // The carrier is on UDP: the INVITE leaves from the UDP listener.
    let (to_carrier, b_invite) = find(&sent, "INVITE ");
    assert_eq!(
        (to_carrier.transport, to_carrier.local, to_carrier.conn),
        (Transport::Udp, LocalId(0), None)
    );
    assert!(b_invite.header(HeaderName::Via).starts_with("SIP/2.0/UDP "));

    let b_invite = b_invite.clone();
    sim.recv(
        CARRIER_A,
        &answer_200(&b_invite, "carrier-tag", "sip:gw@10.0.0.20:5060"),
    );
    let sent = drain(&mut sim);
    let (to_pbx, ok) = find(&sent, "SIP/2.0 200");
    assert_eq!(*to_pbx, pbx, "over the connection it came on");
    assert!(ok.header(HeaderName::Via).starts_with("SIP/2.0/TCP "));
    // Our Contact towards the PBX names TCP, so its in-dialog requests
    // come back over TCP.
    assert!(
        ok.header(HeaderName::Contact).contains(";transport=tcp"),
        "{}",
        ok.text()
    );

    // The carrier hangs up: the BYE to the PBX goes over its connection.
    let ack =
        ack_from_pbx("tcp-1", &ok.header(HeaderName::To)).replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    sim.engine.handle_datagram(sim.now, pbx, ack.as_bytes());
    let _ = drain(&mut sim);
    sim.recv(CARRIER_A, &carrier_bye(&b_invite, "z9hG4bKbye1", 2));
    let sent = drain(&mut sim);
    let (to_pbx, bye) = find(&sent, "BYE ");
    assert_eq!(
        (to_pbx.transport, to_pbx.conn, to_pbx.local),
        (Transport::Tcp, conn(5), LocalId(1)),
        "{}",
        bye.text()
    );
    assert!(bye.header(HeaderName::Via).starts_with("SIP/2.0/TCP "));
}

#[test]
fn a_trunk_over_tcp_gets_tcp_requests_that_are_not_retransmitted() {
    let mut sim = Sim::with_policy(tcp_policy(true));
    sim.recv(
        PBX,
        &invite(PBX, "+390612345678", "tcp-2", "z9hG4bKtcp2", 1),
    );
    let sent = drain(&mut sim);
    let (dest, b_invite) = find(&sent, "INVITE ");
    assert_eq!(
        *dest,
        Flow {
            transport: Transport::Tcp,
            remote: addr(CARRIER_A),
            local: LocalId(1),
            conn: None,
        },
        "any connection to the carrier (the I/O layer reuses or opens one)"
    );
    assert!(
        b_invite
            .header(HeaderName::Via)
            .starts_with("SIP/2.0/TCP 192.0.2.1:5060;")
    );
    assert_eq!(
        b_invite.header(HeaderName::Contact),
        "<sip:192.0.2.1:5060;transport=tcp>"
    );
    // Timer A does not run over a reliable transport (RFC 3261 §17.1.1.2):
    // nothing is resent while the carrier thinks.
    let resent: Vec<_> = sim
        .advance(Duration::from_secs(3))
        .into_iter()
        .filter(|(_, s)| s.method().as_deref() == Some("INVITE"))
        .collect();
    assert!(resent.is_empty(), "{resent:#?}");
}

/// RFC 3261 §8.1.3.1: an INVITE to a trunk over TCP that never left (its
/// connection refused) counts as a 503, and the call fails over to the
/// next trunk at once, not at its no-response timer. A transport error
/// for an address no call waits on changes nothing.
#[test]
fn an_invite_that_never_left_fails_over_at_once() {
    let mut sim = Sim::with_policy(tcp_policy(true));
    sim.recv(
        PBX,
        &invite(PBX, "+390612345678", "tcp-unsent", "z9hG4bKtcpu", 1),
    );
    let sent = drain(&mut sim);
    let (dest, _) = find(&sent, "INVITE ");
    assert_eq!(
        (dest.transport, dest.remote),
        (Transport::Tcp, addr(CARRIER_A))
    );

    sim.engine
        .handle_unsent(sim.now, Transport::Tcp, addr(CARRIER_B));
    assert!(drain(&mut sim).is_empty());

    sim.engine
        .handle_unsent(sim.now, Transport::Tcp, addr(CARRIER_A));
    let sent = drain(&mut sim);
    let (dest, _) = find(&sent, "INVITE ");
    assert_eq!(dest.remote, addr(CARRIER_B), "{sent:#?}");
    assert!(
        sent.iter().all(|(d, _)| d.remote != addr(CARRIER_A)),
        "nothing more to the trunk that failed: {sent:#?}"
    );
    assert_eq!(
        sim.stats
            .failovers
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // A second report for the same address finds nothing waiting there.
    sim.engine
        .handle_unsent(sim.now, Transport::Tcp, addr(CARRIER_A));
    assert!(drain(&mut sim).is_empty());
}

/// Public mode (BRIEF §5): what the SBC writes about itself in Via,
/// Contact and From is each listener's advertised name, not its bind
/// address, on a stream transport as on UDP.
#[test]
fn a_stream_listener_advertises_its_public_name() {
    // Each listener advertised under a public name; carrier-a over `t`.
    let public = |t: Transport| {
        let mut p = tls_policy();
        p.listeners[0].advertise = "sbc.example.com".into();
        p.listeners[1].advertise = "sbc.example.com:5060".into();
        p.listeners[2].advertise = "sbc.example.com:5061".into();
        p.trunks[1].transport = t;
        p
    };
    let mut sim = Sim::with_policy(public(Transport::Tcp));
    sim.recv(
        PBX,
        &invite(PBX, "+390612345678", "pub-1", "z9hG4bKpub1", 1),
    );
    let sent = drain(&mut sim);
    let (dest, b_invite) = find(&sent, "INVITE ");
    assert_eq!(dest.transport, Transport::Tcp);
    assert!(
        b_invite
            .header(HeaderName::Via)
            .starts_with("SIP/2.0/TCP sbc.example.com:5060;branch="),
        "{}",
        b_invite.text()
    );
    assert_eq!(
        b_invite.header(HeaderName::Contact),
        "<sip:sbc.example.com:5060;transport=tcp>"
    );
    assert!(
        !b_invite.text().contains("192.0.2.1"),
        "the bind address leaked: {}",
        b_invite.text()
    );
    // The carrier answers: the PBX (over UDP) gets the UDP listener's name.
    let mut answer = reply(
        b_invite,
        200,
        "OK",
        Some("carrier-tag"),
        Some("sip:callee@10.0.0.20:5060;transport=tcp"),
        ANSWER_SDP,
    );
    answer = answer.replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    sim.engine.handle_datagram(
        sim.now,
        Flow {
            transport: Transport::Tcp,
            remote: addr(CARRIER_A),
            local: LocalId(1),
            conn: conn(7),
        },
        answer.as_bytes(),
    );
    let sent = drain(&mut sim);
    let (_, ok) = find(&sent, "SIP/2.0 200 ");
    assert_eq!(ok.header(HeaderName::Contact), "<sip:sbc.example.com>");

    // The same with the carrier over TLS: the TLS listener's name.
    let mut sim = Sim::with_policy(public(Transport::Tls));
    sim.recv(
        PBX,
        &invite(PBX, "+390612345678", "pub-2", "z9hG4bKpub2", 1),
    );
    let sent = drain(&mut sim);
    let (dest, b_invite) = find(&sent, "INVITE ");
    assert_eq!(dest.transport, Transport::Tls);
    assert!(
        b_invite
            .header(HeaderName::Via)
            .starts_with("SIP/2.0/TLS sbc.example.com:5061;branch="),
        "{}",
        b_invite.text()
    );
    assert_eq!(
        b_invite.header(HeaderName::Contact),
        "<sip:sbc.example.com:5061;transport=tls>"
    );
    assert!(
        !b_invite.text().contains("192.0.2.1"),
        "{}",
        b_invite.text()
    );
}

/// IPv4 and IPv6 on a stream transport: a PBX on IPv4 over UDP calls a
/// carrier reached over TCP on IPv6. The INVITE leaves from the IPv6 TCP
/// listener, and says so in Via and Contact; the carrier's answer over
/// its connection reaches the PBX on IPv4.
/// RFC 3261 §18.2.2: a response whose connection is gone goes over a new
/// one to the source address at the Via's sent-by port (or the
/// transport's default), for a configured trunk only: never for a
/// stranger or a trunk that registers (either could name another port of
/// an address it shares), never over UDP or WebSocket, never for a
/// request.
#[test]
fn a_response_whose_connection_is_gone_reconnects_to_a_trunks_via_port() {
    use sbc_core::b2bua::reconnect_for_response;
    let mut p = tcp_policy(false);
    let answer = |via: &str| {
        format!(
            "SIP/2.0 180 Ringing\r\nVia: {via}\r\nVia: SIP/2.0/UDP inner.example\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let pbx_at = |port: u16| {
        let mut a = addr(PBX);
        a.set_port(port);
        Some(a)
    };
    let tcp = stream_flow(Transport::Tcp, "10.0.0.10:40000", 1, 9);
    let tls = stream_flow(Transport::Tls, "10.0.0.10:40001", 2, 10);
    let via = |t: &str, rest: &str| answer(&format!("SIP/2.0/{t} {rest};branch=z9hG4bKa"));
    let to = |flow: &Flow, msg: &str, p: &Policy| reconnect_for_response(flow, msg.as_bytes(), p);
    // The sent-by port, at the source IP whatever host Via names.
    assert_eq!(
        to(&tcp, &via("TCP", "10.9.9.9:5070;received=198.51.100.9"), &p),
        pbx_at(5070)
    );
    // No port: the transport's default.
    assert_eq!(to(&tcp, &via("TCP", "pbx.example"), &p), pbx_at(5060));
    assert_eq!(to(&tls, &via("tls", "pbx.example"), &p), pbx_at(5061));
    // Another transport than the connection's, port 0, a request, no
    // connection, unreadable: none.
    assert_eq!(to(&tcp, &via("UDP", "10.0.0.10:5070"), &p), None);
    assert_eq!(to(&tcp, &via("TCP", "10.0.0.10:0"), &p), None);
    let bye = "BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.10:5070;branch=z9hG4bKa\r\n\r\n";
    assert_eq!(to(&tcp, bye, &p), None);
    let unconnected = Flow { conn: None, ..tcp };
    assert_eq!(to(&unconnected, &via("TCP", "10.0.0.10:5070"), &p), None);
    assert_eq!(to(&tcp, "SIP/2.0 180 Ringing\r\n\r\n", &p), None);
    // UDP and WebSocket: none.
    for t in [Transport::Udp, Transport::Ws, Transport::Wss] {
        let flow = Flow {
            transport: t,
            ..tcp
        };
        assert_eq!(to(&flow, &via(t.token(), "10.0.0.10:5070"), &p), None);
    }
    // A stranger: none.
    let stranger = stream_flow(Transport::Tcp, "203.0.113.9:40000", 1, 11);
    assert_eq!(to(&stranger, &via("TCP", "203.0.113.9:5070"), &p), None);
    // The same trunk made one that registers: none.
    p.trunks[0].dynamic = true;
    assert_eq!(to(&tcp, &via("TCP", "10.0.0.10:5070"), &p), None);
}

#[test]
fn an_ipv4_caller_reaches_an_ipv6_carrier_over_tcp() {
    let mut p = tcp_policy(false);
    p.listeners.push(Listener {
        transport: Transport::Tcp,
        bind: addr("[2001:db8::1]:5060"),
        advertise: "[2001:db8::1]:5060".into(),
    });
    p.trunks[1] = trunk("carrier-a", "2001:db8::20/128", "[2001:db8::20]:5060");
    p.trunks[1].transport = Transport::Tcp;
    let mut sim = Sim::with_policy(p);
    sim.recv(
        PBX,
        &invite(PBX, "+390612345678", "v6-tcp-1", "z9hG4bKv6t1", 1),
    );
    let sent = drain(&mut sim);
    let (dest, b_invite) = find(&sent, "INVITE ");
    assert_eq!(
        *dest,
        Flow {
            transport: Transport::Tcp,
            remote: addr("[2001:db8::20]:5060"),
            local: LocalId(2),
            conn: None,
        }
    );
    assert!(
        b_invite
            .header(HeaderName::Via)
            .starts_with("SIP/2.0/TCP [2001:db8::1]:5060;branch="),
        "{}",
        b_invite.text()
    );
    assert_eq!(
        b_invite.header(HeaderName::Contact),
        "<sip:[2001:db8::1]:5060;transport=tcp>"
    );
    let answer = reply(
        b_invite,
        200,
        "OK",
        Some("carrier-tag"),
        Some("sip:callee@[2001:db8::20]:5060;transport=tcp"),
        ANSWER_SDP,
    )
    .replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    sim.engine.handle_datagram(
        sim.now,
        Flow {
            transport: Transport::Tcp,
            remote: addr("[2001:db8::20]:40000"),
            local: LocalId(2),
            conn: conn(11),
        },
        answer.as_bytes(),
    );
    let sent = drain(&mut sim);
    let (to_pbx, ok) = find(&sent, "SIP/2.0 200 ");
    assert_eq!(
        (to_pbx.transport, to_pbx.remote),
        (Transport::Udp, addr(PBX))
    );
    assert_eq!(ok.header(HeaderName::Contact), "<sip:192.0.2.1:5060>");
}

/// [`tcp_policy`] with `phones` (account, where it registered from) bound
/// on extension 201, and carrier-a's DID +3902999 ringing it.
fn phones_of_201(phones: &[(&str, Flow)]) -> Sim {
    phones_of_201_under(
        tcp_policy(false),
        phones,
        "sip:alice@10.1.1.2:5062;transport=tcp",
    )
}

/// [`phones_of_201`] under policy `p`, each phone registered with
/// `contact`.
fn phones_of_201_under(mut p: Policy, phones: &[(&str, Flow)], contact: &str) -> Sim {
    p.accounts = Accounts::new(
        Some(Settings::default()),
        phones.iter().map(|(a, _)| account(a, "201", "x")).collect(),
    );
    p.routes.push(Route {
        name: "did".into(),
        from: vec![TrunkId(1)],
        numbers: vec![NumberPattern::Exact("+3902999".into())],
        targets: vec![],
        failover: sbc_core::policy::Failover::standard(),
        extension: Some("201".into()),
    });
    let mut sim = Sim::with_policy(p);
    let mut loc = Location::default();
    for (account, flow) in phones {
        loc.apply(bound(
            account,
            "201",
            contact,
            *flow,
            sim.now + Duration::from_secs(600),
            "r",
        ));
    }
    sim.engine.set_location(loc);
    sim
}

/// Public mode over WebSocket (BRIEF §5): a WebRTC phone registered over
/// WSS is rung with the WSS listener's public name in Via and Contact,
/// with `transport=wss`; the carrier's leg gets the UDP listener's public
/// name. Neither leg sees a bind address, nor the phone's `.invalid`
/// Contact (RFC 7118 §5.2).
#[test]
fn a_websocket_listener_advertises_its_public_name() {
    let mut p = tls_policy();
    p.listeners[0].advertise = "sbc.example.com".into();
    p.listeners.push(Listener {
        transport: Transport::Wss,
        bind: addr("192.0.2.1:8443"),
        advertise: "sbc.example.com:8443".into(),
    });
    let phone = stream_flow(Transport::Wss, "203.0.113.30:50000", 3, 9);
    let mut sim = phones_of_201_under(
        p,
        &[("alice", phone)],
        "sip:k3f9a2@df7jal23ls0d.invalid;transport=ws",
    );
    sim.recv(
        CARRIER_A,
        &invite(CARRIER_A, "+3902999", "pub-ws", "z9hG4bKpubws", 1),
    );
    let sent = drain(&mut sim);
    let (dest, ring) = find(&sent, "INVITE sip:k3f9a2@df7jal23ls0d.invalid");
    assert_eq!(*dest, phone, "over the connection it registered on");
    assert!(
        ring.header(HeaderName::Via)
            .starts_with("SIP/2.0/WSS sbc.example.com:8443;branch="),
        "{}",
        ring.text()
    );
    assert_eq!(
        ring.header(HeaderName::Contact),
        "<sip:sbc.example.com:8443;transport=wss>"
    );
    assert!(!ring.text().contains("192.0.2.1"), "{}", ring.text());

    // The phone answers over its connection: the carrier's 200 names the
    // UDP listener's public name only.
    let answer = reply(
        ring,
        200,
        "OK",
        Some("phone-tag"),
        Some("sip:k3f9a2@df7jal23ls0d.invalid;transport=ws"),
        ANSWER_SDP,
    );
    sim.engine
        .handle_datagram(sim.now, phone, answer.as_bytes());
    let sent = drain(&mut sim);
    let (dest, ok) = find(&sent, "SIP/2.0 200 ");
    assert_eq!(dest.remote, addr(CARRIER_A));
    assert_eq!(ok.header(HeaderName::Contact), "<sip:sbc.example.com>");
    // (Its To is the carrier's own, with the address it called.)
    for leak in [".invalid", "203.0.113.30", "8443", "phone-tag"] {
        assert!(!ok.text().contains(leak), "{leak}: {}", ok.text());
    }
}

#[test]
fn a_phone_registered_over_tcp_is_rung_over_its_connection() {
    let phone = tcp_from("203.0.113.20:40000", 7);
    let mut sim = phones_of_201(&[("alice", phone)]);
    sim.recv(
        CARRIER_A,
        &invite(CARRIER_A, "+3902999", "in-tcp", "z9hG4bKin", 1),
    );
    let sent = drain(&mut sim);
    let (dest, ring) = find(&sent, "INVITE sip:alice@");
    assert_eq!(*dest, phone, "over the connection it registered on");
    assert!(ring.header(HeaderName::Via).starts_with("SIP/2.0/TCP "));
}

/// Two phones of extension 201 registered over TCP, and the DID that
/// rings them.
fn two_phones_over_tcp() -> (Sim, Flow, Flow) {
    let desk = tcp_from("203.0.113.20:40000", 7);
    let soft = tcp_from("203.0.113.21:40001", 8);
    (
        phones_of_201(&[("alice", desk), ("alice-soft", soft)]),
        desk,
        soft,
    )
}

/// The carrier's call to the DID: both phones get an INVITE.
fn ring_both(sim: &mut Sim, desk: Flow, soft: Flow) {
    sim.recv(
        CARRIER_A,
        &invite(CARRIER_A, "+3902999", "in-gone", "z9hG4bKgone", 1),
    );
    let sent = drain(sim);
    for phone in [desk, soft] {
        assert!(
            sent.iter()
                .any(|(d, s)| *d == phone && s.method().as_deref() == Some("INVITE")),
            "{sent:#?}"
        );
    }
}

/// The final answers the carrier got in `sent`.
fn finals_to_carrier(sent: &[(Duration, Sent)]) -> Vec<u16> {
    sent.iter()
        .filter(|(_, s)| s.to == addr(CARRIER_A))
        .filter_map(|(_, s)| s.code().filter(|c| *c >= 200))
        .collect()
}

/// RFC 3261 §18.4: a phone whose INVITE could not be sent (its
/// connection gone, and none could be opened to it) is unreachable at
/// once, a 480; its extension's other phone still rings, and when that
/// one cannot be reached either, the caller hears 480 then instead of at
/// the no-response timer. Reports for peers that are no trunk are looked
/// for at most once per PEER_SCAN_EVERY: one that comes sooner waits for
/// the next look, and is not lost.
#[test]
fn a_phone_that_cannot_be_reached_fails_at_once() {
    let (mut sim, desk, soft) = two_phones_over_tcp();
    ring_both(&mut sim, desk, soft);

    sim.engine
        .handle_unsent(sim.now, Transport::Tcp, desk.remote);
    assert_eq!(sim.engine.poll_timeout(), Some(sim.now), "looked for now");
    let sent = sim.advance(Duration::ZERO);
    assert!(
        finals_to_carrier(&sent).is_empty(),
        "the other phone still rings: {sent:#?}"
    );

    sim.engine
        .handle_unsent(sim.now, Transport::Tcp, soft.remote);
    assert!(
        sim.advance(Duration::from_millis(50)).is_empty(),
        "not before its time"
    );
    let sent = sim.advance(sbc_core::b2bua::PEER_SCAN_EVERY);
    assert_eq!(finals_to_carrier(&sent), [480], "{sent:#?}");
    let (at, _) = sent.first().unwrap();
    assert!(*at <= sbc_core::b2bua::PEER_SCAN_EVERY, "{at:?}");
}

/// A phone whose connection is gone (nothing could be sent to it, and
/// none can be opened) is unreachable until it registers again (RFC 5626
/// §4.4): reported, the registrar hears of it, and the next call rings
/// only the other phone. A report for an address no phone is bound at
/// changes nothing.
#[test]
fn a_phone_whose_connection_is_gone_is_unreachable_until_it_registers_again() {
    let (mut sim, desk, soft) = two_phones_over_tcp();
    sim.engine
        .handle_unsent(sim.now, Transport::Tcp, addr("203.0.113.77:40000"));
    sim.advance(Duration::ZERO);
    assert!(sim.events().is_empty());
    sim.engine
        .handle_unsent(sim.now, Transport::Tcp, desk.remote);
    sim.advance(sbc_core::b2bua::PEER_SCAN_EVERY);
    assert_eq!(
        sim.events(),
        [Event::Registration(Change::Reachable {
            account: "alice".into(),
            reachable: false,
        })]
    );
    sim.recv(
        CARRIER_A,
        &invite(CARRIER_A, "+3902999", "in-after", "z9hG4bKafter", 1),
    );
    let sent = drain(&mut sim);
    let invites: Vec<Flow> = sent
        .iter()
        .filter(|(_, s)| s.method().as_deref() == Some("INVITE"))
        .map(|(d, _)| *d)
        .collect();
    assert_eq!(invites, [soft], "{sent:#?}");
}

/// Both phones reported in one round are looked for in one look: the
/// caller hears 480 at once.
#[test]
fn phones_reported_together_are_looked_for_together() {
    let (mut sim, desk, soft) = two_phones_over_tcp();
    ring_both(&mut sim, desk, soft);
    for phone in [desk, soft] {
        sim.engine
            .handle_unsent(sim.now, Transport::Tcp, phone.remote);
    }
    let sent = sim.advance(Duration::ZERO);
    assert_eq!(finals_to_carrier(&sent), [480], "{sent:#?}");
}

/// A report for a trunk is never held back by the limit on other peers.
#[test]
fn a_phones_report_does_not_hold_back_a_trunks() {
    let mut sim = Sim::with_policy(tcp_policy(true));
    sim.engine
        .handle_unsent(sim.now, Transport::Tcp, addr("203.0.113.99:5060"));
    // That look happened now: the next one for peers that are no trunk
    // may not come before PEER_SCAN_EVERY.
    assert!(sim.advance(Duration::ZERO).is_empty());
    sim.recv(
        PBX,
        &invite(PBX, "+390612345678", "tcp-unsent-2", "z9hG4bKtcpu2", 1),
    );
    let _ = drain(&mut sim);
    sim.engine
        .handle_unsent(sim.now, Transport::Tcp, addr(CARRIER_A));
    let sent = drain(&mut sim);
    let (dest, _) = find(&sent, "INVITE ");
    assert_eq!(
        dest.remote,
        addr(CARRIER_B),
        "failed over at once: {sent:#?}"
    );
}

#[test]
fn a_dialog_with_a_trunk_over_a_stream_keeps_the_connection_its_answer_came_on() {
    let mut sim = Sim::with_policy(tcp_policy(true));
    sim.recv(
        PBX,
        &invite(PBX, "+390612345678", "tcp-3", "z9hG4bKtcp3", 1),
    );
    let sent = drain(&mut sim);
    let (_, b_invite) = find(&sent, "INVITE ");
    // The carrier answers over the connection the I/O layer opened (id 9),
    // its Contact naming a port nothing listens on (a TLS front end, a
    // proxy): the ACK and the BYE still go over that connection.
    let carrier_ip = addr(CARRIER_A).ip();
    let on_conn = stream_flow(Transport::Tcp, CARRIER_A, 1, 9);
    let contact = format!("sip:c@{carrier_ip}:5999;transport=tcp");
    let ok = reply(b_invite, 200, "OK", Some("ct"), Some(&contact), "");
    sim.engine.handle_datagram(sim.now, on_conn, ok.as_bytes());
    let sent = drain(&mut sim);
    let (_, a_ok) = find(&sent, "SIP/2.0 200");
    sim.recv(PBX, &ack_from_pbx("tcp-3", &a_ok.header(HeaderName::To)));
    let sent = drain(&mut sim);
    let (ack_dest, ack) = find(&sent, "ACK ");
    assert_eq!(ack_dest.conn, conn(9), "{ack_dest:?}");
    assert!(
        ack.text().starts_with(&format!("ACK {contact} ")),
        "{}",
        ack.text()
    );
    let bye = in_dialog(
        "BYE",
        "sip:192.0.2.1:5060",
        PBX,
        "z9hG4bKtcp3b",
        CALLER_FROM,
        &a_ok.header(HeaderName::To),
        "tcp-3",
        2,
        "",
    );
    sim.recv(PBX, &bye);
    let sent = drain(&mut sim);
    let (bye_dest, _) = find(&sent, "BYE ");
    assert_eq!(
        (bye_dest.transport, bye_dest.conn),
        (Transport::Tcp, conn(9)),
        "{bye_dest:?}"
    );
}

#[test]
fn a_trunk_held_to_verified_tls_is_a_stranger_over_anything_else() {
    let mut p = tls_policy();
    p.trunks[1].tls_only = true;
    let mut sim = Sim::with_policy(p);
    // carrier-a's address over UDP (spoofable) and over TCP: refused.
    let text = invite(CARRIER_A, "+390299999", "mtls-1", "z9hG4bKm1", 1);
    sim.recv(CARRIER_A, &text);
    assert_eq!(sim.one_to(CARRIER_A).code(), Some(403));
    let tcp = stream_flow(Transport::Tcp, "10.0.0.20:40100", 1, 3);
    let text2 = invite(CARRIER_A, "+390299999", "mtls-2", "z9hG4bKm2", 1)
        .replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    sim.engine.handle_datagram(sim.now, tcp, text2.as_bytes());
    let sent = drain(&mut sim);
    let (_, refused) = find(&sent, "SIP/2.0 403");
    assert!(refused.text().contains("mtls-2"));
    // Over TLS (where the I/O layer demanded its certificate) it is the
    // trunk, and its call reaches the PBX.
    let tls = stream_flow(Transport::Tls, "10.0.0.20:40101", 2, 4);
    let text3 = invite(CARRIER_A, "+390299999", "mtls-3", "z9hG4bKm3", 1)
        .replace("SIP/2.0/UDP", "SIP/2.0/TLS");
    sim.engine.handle_datagram(sim.now, tls, text3.as_bytes());
    let sent = drain(&mut sim);
    let (to_pbx, _) = find(&sent, "INVITE ");
    assert_eq!(to_pbx.remote, addr(PBX));
}

#[test]
fn a_sips_request_uri_is_taken_only_over_tls() {
    let p = tls_policy();
    let mut sim = Sim::with_policy(p);
    let sips = |call_id: &str, branch: &str| {
        invite(PBX, "+390612345678", call_id, branch, 1).replacen("INVITE sip:", "INVITE sips:", 1)
    };
    // Over UDP (and so over any insecure hop): 416, counted apart.
    sim.recv(PBX, &sips("sips-1", "z9hG4bKs1"));
    let refused = sim.one_to(PBX);
    assert_eq!(refused.code(), Some(416), "{}", refused.text());
    let counted = sim.stats.rejected[sbc_core::refusal::Refusal::InsecureSips.counter()]
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(counted, 1);
    // Over TLS the call goes on to the carrier.
    let tls = stream_flow(Transport::Tls, "10.0.0.10:40200", 2, 6);
    let text = sips("sips-2", "z9hG4bKs2").replace("SIP/2.0/UDP", "SIP/2.0/TLS");
    sim.engine.handle_datagram(sim.now, tls, text.as_bytes());
    let sent = drain(&mut sim);
    let (to_carrier, _) = find(&sent, "INVITE ");
    assert_eq!(to_carrier.remote, addr(CARRIER_A));
}

/// A SIPS Contact, or a SIPS Record-Route that would be the next hop,
/// asks for TLS on every hop back (RFC 3261 §26.2.2): over UDP the INVITE
/// is refused with 400 rather than the call relayed to a target the SBC
/// could only reach insecurely. Over TLS it is taken.
#[test]
fn a_sips_contact_is_taken_only_over_tls() {
    let p = tls_policy();
    let mut sim = Sim::with_policy(p);
    let with_sips_contact = |call_id: &str, branch: &str| {
        invite(PBX, "+390612345678", call_id, branch, 1).replacen(
            "Contact: <sip:",
            "Contact: <SIPS:",
            1,
        )
    };
    let with_sips_route = |call_id: &str, branch: &str| {
        invite(PBX, "+390612345678", call_id, branch, 1).replacen(
            "Record-Route: <sip:",
            "Record-Route: <sips:",
            1,
        )
    };
    for (n, text) in [
        with_sips_contact("sipsc-1", "z9hG4bKc1"),
        with_sips_route("sipsc-2", "z9hG4bKc2"),
    ]
    .into_iter()
    .enumerate()
    {
        sim.recv(PBX, &text);
        let refused = sim.one_to(PBX);
        assert_eq!(refused.code(), Some(400), "{}", refused.text());
        assert!(
            refused
                .text()
                .starts_with("SIP/2.0 400 SIPS Contact Needs TLS\r\n"),
            "{}",
            refused.text()
        );
        assert_eq!(
            sim.rejected(sbc_core::refusal::Refusal::InsecureSipsTarget),
            n as u64 + 1
        );
    }
    assert!(drain(&mut sim).is_empty(), "nothing reached the carrier");
    // A SIPS Record-Route that is not the next hop back (the first one
    // is) asks nothing of the SBC's hop: taken over UDP.
    let far_sips = invite(PBX, "+390612345678", "sipsc-4", "z9hG4bKc4", 1).replacen(
        "Record-Route: <sip:edge.pbx.internal;lr>\r\n",
        "Record-Route: <sip:edge.pbx.internal;lr>\r\nRecord-Route: <sips:core.pbx.internal;lr>\r\n",
        1,
    );
    assert!(far_sips.contains("sips:core"));
    sim.recv(PBX, &far_sips);
    let sent = drain(&mut sim);
    let (to_carrier, _) = find(&sent, "INVITE ");
    assert_eq!(to_carrier.remote, addr(CARRIER_A));
    // Over TLS the call goes on to the carrier.
    let tls = stream_flow(Transport::Tls, "10.0.0.10:40201", 2, 7);
    let text = with_sips_contact("sipsc-3", "z9hG4bKc3").replace("SIP/2.0/UDP", "SIP/2.0/TLS");
    sim.engine.handle_datagram(sim.now, tls, text.as_bytes());
    let sent = drain(&mut sim);
    let (to_carrier, _) = find(&sent, "INVITE ");
    assert_eq!(to_carrier.remote, addr(CARRIER_A));
}

#[test]
fn in_a_dialog_a_peer_is_heard_only_over_its_legs_transport() {
    let mut p = tls_policy();
    p.trunks[1].tls_only = true;
    let mut sim = Sim::with_policy(p);
    let tls = stream_flow(Transport::Tls, "10.0.0.20:40101", 2, 4);
    let text = invite(CARRIER_A, "+390299999", "dlg-tls", "z9hG4bKd1", 1)
        .replace("SIP/2.0/UDP", "SIP/2.0/TLS");
    sim.engine.handle_datagram(sim.now, tls, text.as_bytes());
    let sent = drain(&mut sim);
    let (_, b_invite) = find(&sent, "INVITE ");
    let ok = reply(
        b_invite,
        200,
        "OK",
        Some("pbx-tag"),
        Some("sip:p@10.0.0.10:5060"),
        "",
    );
    sim.recv(PBX, &ok);
    let sent = drain(&mut sim);
    let (_, a_ok) = find(&sent, "SIP/2.0 200");
    let to = a_ok.header(HeaderName::To);
    let bye = |branch: &str, via: &str| {
        in_dialog(
            "BYE",
            "sip:192.0.2.1:5061",
            CARRIER_A,
            branch,
            &format!("<sip:+3906@{CARRIER_A}>;tag=caller-tag"),
            &to,
            "dlg-tls",
            2,
            "",
        )
        .replace("SIP/2.0/UDP", via)
    };
    // The carrier's address over UDP (spoofable) with the dialog's ids:
    // nothing reaches the PBX.
    sim.recv(CARRIER_A, &bye("z9hG4bKd2", "SIP/2.0/UDP"));
    let sent = drain(&mut sim);
    assert!(
        sent.iter().all(|(_, s)| !s.text().starts_with("BYE ")),
        "{sent:#?}"
    );
    // Over TLS the BYE goes through.
    let text = bye("z9hG4bKd3", "SIP/2.0/TLS");
    sim.engine.handle_datagram(sim.now, tls, text.as_bytes());
    let sent = drain(&mut sim);
    let (to_pbx, b_bye) = find(&sent, "BYE ");
    assert_eq!(to_pbx.remote, addr(PBX));
    // The call ends; what rests of it still hears the carrier only over
    // TLS: a retransmitted BYE over UDP is a stranger's (403 at most, never
    // the dialog's 200), over TLS it gets its 200 again.
    sim.recv(PBX, &reply(b_bye, 200, "OK", None, None, ""));
    let sent = drain(&mut sim);
    find(&sent, "SIP/2.0 200");
    sim.recv(CARRIER_A, &bye("z9hG4bKd3", "SIP/2.0/UDP"));
    let sent = drain(&mut sim);
    assert!(sent.iter().all(|(_, m)| m.code() != Some(200)), "{sent:#?}");
    let text = bye("z9hG4bKd3", "SIP/2.0/TLS");
    sim.engine.handle_datagram(sim.now, tls, text.as_bytes());
    let sent = drain(&mut sim);
    let (dest, again) = find(&sent, "SIP/2.0 200");
    assert_eq!((dest.transport, again.code()), (Transport::Tls, Some(200)));
}

#[test]
fn a_peer_whose_contact_changes_family_is_reached_from_a_listener_of_that_family() {
    let mut p = policy();
    p.listeners.push(Listener {
        transport: Transport::Udp,
        bind: addr("[2001:db8::1]:5060"),
        advertise: "[2001:db8::1]:5060".into(),
    });
    p.trunks[1]
        .sources
        .push("2001:db8:20::/64".parse().unwrap());
    let mut sim = Sim::with_policy(p);
    sim.recv(PBX, &invite(PBX, "+390612345678", "fam-1", "z9hG4bKf1", 1));
    let sent = drain(&mut sim);
    let (to_carrier, b_invite) = find(&sent, "INVITE ");
    assert_eq!(to_carrier.local, LocalId(0));
    // The carrier answers from its IPv4 address with an IPv6 Contact.
    let ok = reply(
        b_invite,
        200,
        "OK",
        Some("fam-tag"),
        Some("sip:c@[2001:db8:20::5]:5060"),
        "",
    );
    sim.recv(CARRIER_A, &ok);
    let sent = drain(&mut sim);
    let (_, a_ok) = find(&sent, "SIP/2.0 200");
    sim.recv(PBX, &ack_from_pbx("fam-1", &a_ok.header(HeaderName::To)));
    let sent = drain(&mut sim);
    let (ack_dest, ack) = find(&sent, "ACK ");
    assert_eq!(
        (ack_dest.remote, ack_dest.local),
        (addr("[2001:db8:20::5]:5060"), LocalId(1)),
        "{ack_dest:?}"
    );
    assert!(
        ack.header(HeaderName::Via)
            .starts_with("SIP/2.0/UDP [2001:db8::1]:5060;"),
        "{}",
        ack.text()
    );
}

#[test]
fn an_ended_call_hears_its_peer_only_over_its_legs_transport() {
    let mut sim = Sim::with_policy(tcp_policy(false));
    let pbx = tcp_from("10.0.0.10:40001", 5);
    let text =
        invite(PBX, "+390612345678", "end-1", "z9hG4bKe1", 1).replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    sim.engine.handle_datagram(sim.now, pbx, text.as_bytes());
    let sent = drain(&mut sim);
    let (_, b_invite) = find(&sent, "INVITE ");
    let ok = reply(
        b_invite,
        200,
        "OK",
        Some("ct"),
        Some("sip:c@10.0.0.20:5060"),
        "",
    );
    sim.recv(CARRIER_A, &ok);
    let sent = drain(&mut sim);
    let (_, a_ok) = find(&sent, "SIP/2.0 200");
    let to = a_ok.header(HeaderName::To);
    let bye = |via: &str| {
        in_dialog(
            "BYE",
            "sip:192.0.2.1:5060",
            PBX,
            "z9hG4bKe1bye",
            CALLER_FROM,
            &to,
            "end-1",
            2,
            "",
        )
        .replace("SIP/2.0/UDP", via)
    };
    sim.engine
        .handle_datagram(sim.now, pbx, bye("SIP/2.0/TCP").as_bytes());
    let sent = drain(&mut sim);
    let (_, b_bye) = find(&sent, "BYE ");
    sim.recv(CARRIER_A, &reply(b_bye, 200, "OK", None, None, ""));
    drain(&mut sim);
    // The call rests. The BYE again over UDP from the PBX's address: not
    // the dialog's peer (its leg was TCP), so no 200.
    sim.recv(PBX, &bye("SIP/2.0/UDP"));
    let sent = drain(&mut sim);
    assert!(sent.iter().all(|(_, m)| m.code() != Some(200)), "{sent:#?}");
    // Over TCP: its 200 again.
    sim.engine
        .handle_datagram(sim.now, pbx, bye("SIP/2.0/TCP").as_bytes());
    let sent = drain(&mut sim);
    let (dest, again) = find(&sent, "SIP/2.0 200");
    assert_eq!((dest.conn, again.code()), (conn(5), Some(200)));
}
