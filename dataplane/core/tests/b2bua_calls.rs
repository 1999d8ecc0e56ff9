//! End-to-end call flows through the sans-IO engine on a simulated clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use sbc_core::sip::HeaderName;
use support::*;

const NUMBER: &str = "+390612345678";

/// Sets up a call from the PBX answered by carrier-a; returns the INVITE
/// carrier-a saw and the 200 the PBX saw.
fn answered_call(sim: &mut Sim, call_id: &str) -> (Sent, Sent) {
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, call_id, "z9hG4bKpbx1", 1),
    );
    let b_invite = sim.one_to(CARRIER_A);
    assert_eq!(b_invite.to, addr(CARRIER_A));
    sim.recv(
        CARRIER_A,
        &reply(
            &b_invite,
            180,
            "Ringing",
            Some("carrier-tag"),
            Some("sip:callee@10.0.0.20:5060"),
            "",
        ),
    );
    let ringing = sim.one_to(PBX);
    assert_eq!(ringing.code(), Some(180));
    sim.recv(
        CARRIER_A,
        &reply(
            &b_invite,
            200,
            "OK",
            Some("carrier-tag"),
            Some("sip:callee@10.0.0.20:5060"),
            ANSWER_SDP,
        ),
    );
    let ok = sim.one_to(PBX);
    assert_eq!(ok.code(), Some(200));
    (b_invite, ok)
}

fn pbx_ack(sim: &mut Sim, ok: &Sent, call_id: &str) -> Sent {
    sim.recv(PBX, &ack_from_pbx(call_id, &ok.header(HeaderName::To)));
    sim.one_to(CARRIER_A)
}

#[test]
fn basic_call_with_topology_hiding() {
    let mut sim = Sim::new();
    let (b_invite, ok) = answered_call(&mut sim, "a-leg-call-1@10.0.0.10");
    let text = b_invite.text();
    let headers = &text[..text.find("\r\n\r\n").unwrap()];
    // BRIEF §1 topology hiding: nothing of the A side crosses over (the
    // SDP passes unchanged until media anchoring rewrites it).
    for leak in [
        "a-leg-call-1",
        "10.0.0.10",
        "caller-tag",
        "z9hG4bKpbx1",
        "edge.pbx.internal",
        "InternalPBX",
    ] {
        assert!(
            !headers.contains(leak),
            "B leg INVITE leaks {leak}:\n{text}"
        );
    }
    assert!(
        text.starts_with(&format!("INVITE sip:{NUMBER}@10.0.0.20:5060 SIP/2.0\r\n")),
        "{text}"
    );
    assert!(text.contains("Max-Forwards: 69\r\n"));
    assert!(
        text.contains("X-Account: 42\r\n"),
        "end-to-end headers are kept"
    );
    assert!(text.contains("From: \"Alice\" <sip:alice@192.0.2.1:5060>;tag="));
    assert!(text.contains("Contact: <sip:192.0.2.1:5060>\r\n"));
    assert!(
        text.ends_with("m=audio 4000 RTP/AVP 0\r\n"),
        "SDP passes unchanged"
    );
    assert_eq!(b_invite.request().via.host, b"192.0.2.1");

    // The caller sees the SBC, not the carrier.
    let ok_text = ok.text();
    let ok_headers = &ok_text[..ok_text.find("\r\n\r\n").unwrap()];
    for leak in [
        "10.0.0.20",
        "carrier-tag",
        "CarrierSwitch",
        &b_invite.header(HeaderName::CallId),
    ] {
        assert!(
            !ok_headers.contains(leak),
            "A leg 200 leaks {leak}:\n{ok_text}"
        );
    }
    assert!(ok_text.contains("Call-ID: a-leg-call-1@10.0.0.10\r\n"));
    assert!(
        ok_text.contains("Record-Route: <sip:edge.pbx.internal;lr>\r\n"),
        "RFC 3261 §12.1.1"
    );
    assert!(ok_text.contains("Contact: <sip:192.0.2.1:5060>\r\n"));
    assert!(ok_text.ends_with(ANSWER_SDP));
    let our_tag = ok.to_tag();
    assert!(!our_tag.is_empty());

    // ACK crosses end to end, in the B dialog (RFC 3261 §13.2.2.4).
    let ack = pbx_ack(&mut sim, &ok, "a-leg-call-1@10.0.0.10");
    assert_eq!(ack.method().as_deref(), Some("ACK"));
    assert!(
        ack.text()
            .starts_with("ACK sip:callee@10.0.0.20:5060 SIP/2.0\r\n")
    );
    assert_eq!(ack.to_tag(), "carrier-tag");
    assert_eq!(ack.cseq(), "1 ACK");
    assert_eq!(
        ack.header(HeaderName::CallId),
        b_invite.header(HeaderName::CallId)
    );

    // The caller hangs up.
    sim.recv(
        PBX,
        &in_dialog(
            "BYE",
            "sip:192.0.2.1:5060",
            "10.0.0.10:5060",
            "z9hG4bKpbxbye",
            "\"Alice\" <sip:alice@10.0.0.10:5060>;tag=caller-tag",
            &ok.header(HeaderName::To),
            "a-leg-call-1@10.0.0.10",
            2,
            "",
        ),
    );
    let bye = sim.one_to(CARRIER_A);
    assert_eq!(bye.method().as_deref(), Some("BYE"));
    assert_eq!(bye.to_tag(), "carrier-tag");
    assert!(!bye.text().contains("10.0.0.10"));
    sim.recv(CARRIER_A, &reply(&bye, 200, "OK", None, None, ""));
    let bye_ok = sim.one_to(PBX);
    assert_eq!(bye_ok.code(), Some(200));
    assert_eq!(bye_ok.cseq(), "2 BYE");

    assert_eq!(
        sim.stats
            .calls_active
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    // Lingering transactions absorb retransmissions, then the call is gone.
    let late = sim.advance(Duration::from_secs(40));
    assert!(
        late.is_empty(),
        "nothing retransmitted after a clean call: {late:?}"
    );
    assert_eq!(sim.engine.calls(), 0);
    let pbx = &sim.policy.trunks[0].stats;
    assert_eq!(
        pbx.attempted[0].load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        pbx.answered[0].load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(pbx.active[0].load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[test]
fn callee_hangs_up() {
    let mut sim = Sim::new();
    let (b_invite, ok) = answered_call(&mut sim, "call-2@pbx");
    pbx_ack(&mut sim, &ok, "call-2@pbx");
    let from = "<sip:callee@10.0.0.20>;tag=carrier-tag";
    let to = b_invite.header(HeaderName::From);
    sim.recv(
        CARRIER_A,
        &in_dialog(
            "BYE",
            "sip:192.0.2.1:5060",
            "10.0.0.20:5060",
            "z9hG4bKcarrierbye",
            from,
            &to,
            &b_invite.header(HeaderName::CallId),
            7,
            "",
        ),
    );
    let bye = sim.one_to(PBX);
    assert_eq!(bye.method().as_deref(), Some("BYE"));
    // In the A dialog: the caller's Call-ID, our tag as From, Route from
    // the caller's Record-Route, sent to its Contact.
    assert!(
        bye.text()
            .starts_with("BYE sip:alice@10.0.0.10:5060 SIP/2.0\r\n"),
        "{}",
        bye.text()
    );
    assert_eq!(bye.header(HeaderName::CallId), "call-2@pbx");
    assert_eq!(bye.tag_of_from(), ok.to_tag());
    assert_eq!(bye.to_tag(), "caller-tag");
    assert!(bye.text().contains("Route: <sip:edge.pbx.internal;lr>\r\n"));
    assert!(!bye.text().contains("carrier-tag"));
    sim.recv(PBX, &reply(&bye, 200, "OK", None, None, ""));
    let ok_b = sim.one_to(CARRIER_A);
    assert_eq!(ok_b.code(), Some(200));
    assert_eq!(ok_b.cseq(), "7 BYE");
    sim.advance(Duration::from_secs(40));
    assert_eq!(sim.engine.calls(), 0);
}

#[test]
fn failover_on_503_completes_on_second_trunk() {
    // BRIEF §3: 5xx moves the call to the next trunk.
    let mut sim = Sim::new();
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, "fo-1@pbx", "z9hG4bKfo1", 1),
    );
    let first = sim.one_to(CARRIER_A);
    assert_eq!(first.to, addr(CARRIER_A));
    sim.recv(
        CARRIER_A,
        &reply(&first, 503, "Service Unavailable", Some("a-tag"), None, ""),
    );
    let sent = sim.sent();
    assert_eq!(sent.len(), 2, "ACK to carrier-a and INVITE to carrier-b");
    let ack = sent.iter().find(|s| s.to == addr(CARRIER_A)).unwrap();
    assert_eq!(ack.method().as_deref(), Some("ACK"));
    assert_eq!(
        ack.branch(),
        first.branch(),
        "RFC 3261 §17.1.1.3: same branch as the INVITE"
    );
    let second = sent
        .iter()
        .find(|s| s.to == addr(CARRIER_B))
        .unwrap()
        .clone();
    assert_eq!(second.method().as_deref(), Some("INVITE"));
    assert_ne!(second.branch(), first.branch());
    sim.recv(
        CARRIER_B,
        &reply(
            &second,
            200,
            "OK",
            Some("b-tag"),
            Some("sip:callee@10.0.0.30:5060"),
            ANSWER_SDP,
        ),
    );
    let ok = sim.one_to(PBX);
    assert_eq!(ok.code(), Some(200));
    assert_eq!(
        sim.stats
            .failovers
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let to = ok.header(HeaderName::To);
    sim.recv(
        PBX,
        &in_dialog(
            "ACK",
            "sip:192.0.2.1",
            "10.0.0.10:5060",
            "z9hG4bKx",
            "<sip:alice@10.0.0.10>;tag=caller-tag",
            &to,
            "fo-1@pbx",
            1,
            "",
        ),
    );
    let ack_b = sim.one_to(CARRIER_B);
    assert_eq!(ack_b.to_tag(), "b-tag");
}

#[test]
fn busy_is_final() {
    let mut sim = Sim::new();
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, "busy@pbx", "z9hG4bKbusy", 1),
    );
    let first = sim.one_to(CARRIER_A);
    sim.recv(
        CARRIER_A,
        &reply(&first, 486, "Busy Here", Some("a-tag"), None, ""),
    );
    let sent = sim.sent();
    assert_eq!(
        sent.len(),
        2,
        "ACK to carrier-a, 486 to the caller: {sent:?}"
    );
    let busy = sent.iter().find(|s| s.to == addr(PBX)).unwrap();
    assert_eq!(busy.code(), Some(486));
    assert!(!busy.text().contains("a-tag"));
    // The caller's ACK is absorbed by the server transaction.
    let to = busy.header(HeaderName::To);
    sim.recv(
        PBX,
        &in_dialog(
            "ACK",
            &format!("sip:{NUMBER}@192.0.2.1:5060"),
            "10.0.0.10:5060",
            "z9hG4bKbusy",
            "\"Alice\" <sip:alice@10.0.0.10:5060>;tag=caller-tag",
            &to,
            "busy@pbx",
            1,
            "",
        ),
    );
    assert!(sim.sent().is_empty());
    sim.advance(Duration::from_secs(40));
    assert_eq!(sim.engine.calls(), 0);
}

#[test]
fn all_trunks_fail_gives_best_answer() {
    // RFC 3261 §16.7: 4xx is preferred to 5xx.
    let mut sim = Sim::new();
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, "allfail@pbx", "z9hG4bKall", 1),
    );
    let first = sim.one_to(CARRIER_A);
    sim.recv(
        CARRIER_A,
        &reply(&first, 404, "Not Here", Some("a"), None, ""),
    );
    // 404 is final by default.
    let sent = sim.sent();
    assert!(
        sent.iter()
            .any(|s| s.to == addr(PBX) && s.code() == Some(404))
    );

    let mut sim = Sim::new();
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, "allfail2@pbx", "z9hG4bKall2", 1),
    );
    let first = sim.one_to(CARRIER_A);
    sim.recv(
        CARRIER_A,
        &reply(&first, 503, "Service Unavailable", Some("a"), None, ""),
    );
    let second = sim.first_to(CARRIER_B);
    sim.recv(
        CARRIER_B,
        &reply(&second, 503, "Service Unavailable", Some("b"), None, ""),
    );
    let sent = sim.sent();
    let fin = sent.iter().find(|s| s.to == addr(PBX)).unwrap();
    assert_eq!(
        fin.code(),
        Some(500),
        "§16.7: 503 is not forwarded; 500 instead"
    );
}

#[test]
fn silent_trunk_times_out_to_next() {
    let mut sim = Sim::new();
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, "silent@pbx", "z9hG4bKsil", 1),
    );
    let first = sim.one_to(CARRIER_A);
    let sent = sim.advance(Duration::from_secs(5));
    // RFC 3261 §17.1.1.2 timer A: retransmissions at 0.5, 1.5, 3.5 s.
    let retrans: Vec<_> = sent
        .iter()
        .filter(|(_, s)| s.to == addr(CARRIER_A))
        .map(|(t, _)| t.as_millis())
        .collect();
    assert_eq!(retrans, vec![500, 1500, 3500]);
    let second: Vec<_> = sent
        .iter()
        .filter(|(_, s)| s.to == addr(CARRIER_B))
        .map(|(t, _)| t.as_millis())
        .collect();
    assert_eq!(
        second,
        vec![4000, 4500],
        "failover after the 4 s no-response timer, then timer A"
    );
    // A late answer from carrier-a is CANCELled? No provisional: a late 200 is ACKed and BYEd.
    sim.recv(
        CARRIER_A,
        &reply(
            &first,
            200,
            "OK",
            Some("late"),
            Some("sip:x@10.0.0.20"),
            ANSWER_SDP,
        ),
    );
    let sent = sim.sent();
    let methods: Vec<_> = sent.iter().map(|s| (s.to, s.method())).collect();
    assert!(sent.iter().all(|s| s.to == addr(CARRIER_A)), "{methods:?}");
    assert_eq!(
        sent.iter().filter_map(|s| s.method()).collect::<Vec<_>>(),
        vec!["ACK", "BYE"]
    );
}

#[test]
fn cancel_before_answer() {
    // RFC 3261 §9.2: 200 to the CANCEL, 487 to the INVITE; CANCEL the B leg.
    let mut sim = Sim::new();
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, "cancel@pbx", "z9hG4bKcan", 1),
    );
    let b_inv = sim.one_to(CARRIER_A);
    sim.recv(
        CARRIER_A,
        &reply(&b_inv, 180, "Ringing", Some("a-tag"), None, ""),
    );
    sim.sent();
    let cancel = format!(
        "CANCEL sip:{NUMBER}@192.0.2.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.10:5060;branch=z9hG4bKcan;rport\r\nMax-Forwards: 70\r\nFrom: \"Alice\" <sip:alice@10.0.0.10:5060>;tag=caller-tag\r\nTo: <sip:{NUMBER}@192.0.2.1>\r\nCall-ID: cancel@pbx\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n"
    );
    sim.recv(PBX, &cancel);
    let sent = sim.sent();
    let to_pbx: Vec<_> = sent
        .iter()
        .filter(|s| s.to == addr(PBX))
        .map(|s| (s.code(), s.cseq()))
        .collect();
    assert_eq!(
        to_pbx,
        vec![
            (Some(200), "1 CANCEL".to_owned()),
            (Some(487), "1 INVITE".to_owned())
        ]
    );
    let b_cancel = sent.iter().find(|s| s.to == addr(CARRIER_A)).unwrap();
    assert_eq!(b_cancel.method().as_deref(), Some("CANCEL"));
    assert_eq!(
        b_cancel.branch(),
        b_inv.branch(),
        "RFC 3261 §9.1: same branch"
    );
    assert_eq!(b_cancel.to_tag(), "", "CANCEL To has no tag");
    sim.recv(
        CARRIER_A,
        &reply(b_cancel, 200, "OK", Some("a-tag"), None, ""),
    );
    sim.recv(
        CARRIER_A,
        &reply(&b_inv, 487, "Request Terminated", Some("a-tag"), None, ""),
    );
    let sent = sim.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].method().as_deref(), Some("ACK"));
    assert_eq!(sent[0].to, addr(CARRIER_A));
    sim.advance(Duration::from_secs(40));
    assert_eq!(sim.engine.calls(), 0);
}

#[test]
fn cancel_waits_for_a_provisional() {
    // RFC 3261 §9.1: no CANCEL before a provisional response.
    let mut sim = Sim::new();
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, "early-cancel@pbx", "z9hG4bKec", 1),
    );
    let b_inv = sim.one_to(CARRIER_A);
    let cancel = format!(
        "CANCEL sip:{NUMBER}@192.0.2.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.10:5060;branch=z9hG4bKec\r\nFrom: <sip:alice@10.0.0.10>;tag=caller-tag\r\nTo: <sip:{NUMBER}@192.0.2.1>\r\nCall-ID: early-cancel@pbx\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n"
    );
    sim.recv(PBX, &cancel);
    let sent = sim.sent();
    assert!(
        sent.iter().all(|s| s.to == addr(PBX)),
        "nothing to the carrier yet"
    );
    sim.recv(CARRIER_A, &reply(&b_inv, 100, "Trying", None, None, ""));
    let sent = sim.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].method().as_deref(), Some("CANCEL"));
}

#[test]
fn unknown_source_is_refused_and_never_relayed() {
    // BRIEF §8: default deny.
    let mut sim = Sim::new();
    sim.recv(
        STRANGER,
        &invite("203.0.113.9:5060", NUMBER, "x@stranger", "z9hG4bKs", 1),
    );
    let r = sim.one_to(STRANGER);
    assert_eq!(r.code(), Some(403));
    // ACL deny: silently dropped.
    sim.recv(
        DENIED,
        &invite("198.51.100.66:5060", NUMBER, "x@denied", "z9hG4bKd", 1),
    );
    assert!(sim.sent().is_empty());
}

#[test]
fn no_route_max_forwards_and_loops() {
    let mut sim = Sim::new();
    // carrier-a may only call +39 numbers.
    sim.recv(
        CARRIER_A,
        &invite("10.0.0.20:5060", "+4420", "nr@a", "z9hG4bKnr", 1),
    );
    assert_eq!(sim.one_to(CARRIER_A).code(), Some(404));
    // RFC 3261 §16.3: Max-Forwards 0 -> 483.
    let inv = invite("10.0.0.10:5060", NUMBER, "mf@pbx", "z9hG4bKmf", 1)
        .replace("Max-Forwards: 70", "Max-Forwards: 0");
    sim.recv(PBX, &inv);
    assert_eq!(sim.one_to(PBX).code(), Some(483));
    // Our own B leg coming back in: 482.
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, "loop@pbx", "z9hG4bKloop", 1),
    );
    let b_inv = sim.one_to(CARRIER_A);
    let looped = b_inv
        .text()
        .replace("192.0.2.1:5060;branch", "10.0.0.20:5060;branch");
    sim.recv(CARRIER_A, &looped);
    let sent = sim.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].code(), Some(482));
}

#[test]
fn options_answered_by_the_sbc() {
    let mut sim = Sim::new();
    let opt = "OPTIONS sip:192.0.2.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.20:5060;branch=z9hG4bKopt\r\nMax-Forwards: 70\r\nFrom: <sip:probe@10.0.0.20>;tag=p\r\nTo: <sip:192.0.2.1>\r\nCall-ID: opt@a\r\nCSeq: 5 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    sim.recv(CARRIER_A, opt);
    let r = sim.one_to(CARRIER_A);
    assert_eq!(r.code(), Some(200));
    assert!(r.text().contains("Allow: INVITE"));
}

#[test]
fn reinvite_is_relayed_both_ways() {
    let mut sim = Sim::new();
    let (b_invite, ok) = answered_call(&mut sim, "reinv@pbx");
    pbx_ack(&mut sim, &ok, "reinv@pbx");
    let a_to = ok.header(HeaderName::To);
    let hold = ANSWER_SDP.replace("m=audio", "a=sendonly\r\nm=audio");
    sim.recv(
        PBX,
        &in_dialog(
            "INVITE",
            "sip:192.0.2.1:5060",
            "10.0.0.10:5060",
            "z9hG4bKre1",
            "<sip:alice@10.0.0.10>;tag=caller-tag",
            &a_to,
            "reinv@pbx",
            2,
            &hold,
        ),
    );
    let sent = sim.sent();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].code(), Some(100));
    let b_reinv = sent[1].clone();
    assert_eq!(b_reinv.to, addr(CARRIER_A));
    assert_eq!(b_reinv.method().as_deref(), Some("INVITE"));
    assert_eq!(b_reinv.cseq(), "2 INVITE");
    assert_eq!(
        b_reinv.header(HeaderName::CallId),
        b_invite.header(HeaderName::CallId)
    );
    assert!(b_reinv.text().ends_with(&hold));
    sim.recv(
        CARRIER_A,
        &reply(
            &b_reinv,
            200,
            "OK",
            None,
            Some("sip:callee@10.0.0.20:5060"),
            ANSWER_SDP,
        ),
    );
    let ok2 = sim.one_to(PBX);
    assert_eq!(ok2.code(), Some(200));
    assert_eq!(ok2.cseq(), "2 INVITE");
    sim.recv(
        PBX,
        &in_dialog(
            "ACK",
            "sip:192.0.2.1:5060",
            "10.0.0.10:5060",
            "z9hG4bKre1ack",
            "<sip:alice@10.0.0.10>;tag=caller-tag",
            &a_to,
            "reinv@pbx",
            2,
            "",
        ),
    );
    let ack = sim.one_to(CARRIER_A);
    assert_eq!(ack.cseq(), "2 ACK");

    // Glare: a second re-INVITE while one is pending gets 491.
    sim.recv(
        PBX,
        &in_dialog(
            "INVITE",
            "sip:192.0.2.1:5060",
            "10.0.0.10:5060",
            "z9hG4bKre2",
            "<sip:alice@10.0.0.10>;tag=caller-tag",
            &a_to,
            "reinv@pbx",
            3,
            &hold,
        ),
    );
    sim.sent();
    sim.recv(
        PBX,
        &in_dialog(
            "INVITE",
            "sip:192.0.2.1:5060",
            "10.0.0.10:5060",
            "z9hG4bKre3",
            "<sip:alice@10.0.0.10>;tag=caller-tag",
            &a_to,
            "reinv@pbx",
            4,
            &hold,
        ),
    );
    assert_eq!(sim.one_to(PBX).code(), Some(491));

    // UPDATE from the callee side goes to the caller.
    let from = "<sip:callee@10.0.0.20>;tag=carrier-tag";
    sim.recv(
        CARRIER_A,
        &in_dialog(
            "INFO",
            "sip:192.0.2.1:5060",
            "10.0.0.20:5060",
            "z9hG4bKinfo",
            from,
            &b_invite.header(HeaderName::From),
            &b_invite.header(HeaderName::CallId),
            20,
            "",
        ),
    );
    let info = sim.one_to(PBX);
    assert_eq!(info.method().as_deref(), Some("INFO"));
    assert_eq!(info.header(HeaderName::CallId), "reinv@pbx");
}

#[test]
fn in_dialog_request_from_wrong_peer_or_unknown_dialog() {
    let mut sim = Sim::new();
    let (_b, ok) = answered_call(&mut sim, "guard@pbx");
    let to = ok.header(HeaderName::To);
    // carrier-b pretends to be the caller: 481, as for a dialog that does
    // not exist (it learns nothing of the caller's dialogs).
    sim.recv(
        CARRIER_B,
        &in_dialog(
            "BYE",
            "sip:192.0.2.1",
            "10.0.0.30:5060",
            "z9hG4bKevil",
            "<sip:alice@10.0.0.10>;tag=caller-tag",
            &to,
            "guard@pbx",
            5,
            "",
        ),
    );
    assert_eq!(sim.one_to(CARRIER_B).code(), Some(481));
    // Unknown dialog: 481 (RFC 3261 §12.2.2).
    sim.recv(
        PBX,
        &in_dialog(
            "BYE",
            "sip:192.0.2.1",
            "10.0.0.10:5060",
            "z9hG4bKnod",
            "<sip:alice@10.0.0.10>;tag=caller-tag",
            "<sip:x@y>;tag=nope",
            "nodialog@pbx",
            5,
            "",
        ),
    );
    assert_eq!(sim.one_to(PBX).code(), Some(481));
}

/// Found by the engine fuzz target: a Contact whose URI is not ASCII was
/// taken as the caller's remote target, and the BYE the SBC then sent
/// carried a request line no parser (ours included) accepts. RFC 3261
/// §25.1: a URI is ASCII. Such a Contact is not used; the From URI is.
#[test]
fn non_ascii_contact_is_never_a_remote_target() {
    let mut sim = Sim::new();
    let inv = invite("10.0.0.10:5060", NUMBER, "call-utf8@pbx", "z9hG4bKpbx1", 1).replace(
        "Contact: <sip:alice@10.0.0.10:5060>",
        "Contact: <sip:ali\u{e9}@10.0.0.10:5060>",
    );
    assert!(inv.contains('\u{e9}'));
    sim.recv(PBX, &inv);
    let b_invite = sim.one_to(CARRIER_A);
    sim.recv(
        CARRIER_A,
        &reply(
            &b_invite,
            200,
            "OK",
            Some("carrier-tag"),
            Some("sip:callee@10.0.0.20:5060"),
            ANSWER_SDP,
        ),
    );
    let ok = sim.one_to(PBX);
    pbx_ack(&mut sim, &ok, "call-utf8@pbx");
    sim.recv(CARRIER_A, &carrier_bye(&b_invite, "z9hG4bKcarrierbye", 7));
    let bye = sim.one_to(PBX);
    assert!(
        bye.text()
            .starts_with("BYE sip:alice@10.0.0.10:5060 SIP/2.0\r\n"),
        "{}",
        bye.text()
    );
    bye.request();
}

/// Events out: one call's life as the engine reports it — started,
/// answered, ended with both trunks, the numbers and the durations.
#[test]
fn answered_call_reports_its_life_as_events() {
    use sbc_core::b2bua::{EndReason, Event};
    let mut sim = Sim::new();
    let t0 = sim.now;
    let (b_invite, ok) = answered_call(&mut sim, "events-1@pbx");
    let events = sim.events();
    assert_eq!(events.len(), 2, "{events:?}");
    let Event::CallStarted(started) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(&*started.inbound_trunk, "pbx");
    assert_eq!(&*started.callee, NUMBER);
    assert_eq!(&started.call_id[..], b"events-1@pbx");
    let Event::CallAnswered(answered) = &events[1] else {
        panic!("{events:?}")
    };
    assert_eq!(&*answered.outbound_trunk, "carrier-a");
    pbx_ack(&mut sim, &ok, "events-1@pbx");
    sim.advance(Duration::from_secs(90));
    assert!(sim.events().is_empty(), "nothing until the call ends");
    // The callee hangs up after 90 s of conversation.
    sim.recv(CARRIER_A, &carrier_bye(&b_invite, "z9hG4bKbyeev", 9));
    let bye = sim.one_to(PBX);
    assert!(sim.events().is_empty(), "ended when the BYE is answered");
    sim.recv(PBX, &reply(&bye, 200, "OK", None, None, ""));
    let events = sim.events();
    let [Event::CallEnded(record)] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!(record.reason, EndReason::CalleeHangUp);
    assert_eq!(&*record.inbound_trunk, "pbx");
    assert_eq!(record.outbound_trunk.as_deref(), Some("carrier-a"));
    assert_eq!(record.caller, "alice");
    assert_eq!(&*record.callee, NUMBER);
    assert_eq!(record.started, t0);
    assert_eq!(record.duration(), Duration::from_secs(90));
    assert_eq!(record.media, None, "no media relay configured");
    sim.advance(Duration::from_secs(60));
    assert!(sim.events().is_empty(), "one record per call");
}

#[test]
fn failed_and_cancelled_calls_end_with_their_reason() {
    use sbc_core::b2bua::{EndReason, Event};
    let ended = |events: Vec<Event>| -> Vec<EndReason> {
        events
            .into_iter()
            .filter_map(|e| match e {
                Event::CallEnded(r) => Some(r.reason),
                _ => None,
            })
            .collect()
    };
    // Busy: the caller gets 486 and the record says so.
    let mut sim = Sim::new();
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, "ev-busy@pbx", "z9hG4bKevb", 1),
    );
    let first = sim.one_to(CARRIER_A);
    sim.recv(
        CARRIER_A,
        &reply(&first, 486, "Busy Here", Some("a-tag"), None, ""),
    );
    assert_eq!(ended(sim.events()), [EndReason::Failed { status: 486 }]);

    // Cancelled while ringing.
    let mut sim = Sim::new();
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, "ev-cancel@pbx", "z9hG4bKevc", 1),
    );
    let first = sim.one_to(CARRIER_A);
    sim.recv(
        CARRIER_A,
        &reply(&first, 180, "Ringing", Some("a-tag"), None, ""),
    );
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, "ev-cancel@pbx", "z9hG4bKevc", 1)
            .replacen("INVITE sip", "CANCEL sip", 1)
            .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL"),
    );
    assert_eq!(ended(sim.events()), [EndReason::Cancelled]);

    // Nobody answers at all: timer B on every trunk, then 408.
    let mut sim = Sim::new();
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, "ev-silent@pbx", "z9hG4bKevs", 1),
    );
    sim.advance(Duration::from_secs(120));
    let reasons = ended(sim.events());
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert_eq!(reasons[0], EndReason::Failed { status: 408 });
}

/// An ended call rests as a tombstone for the rest of its 64*T1 and still
/// answers what can arrive: a retransmitted BYE gets its 200 again (RFC
/// 3261 §17.2.2), a retransmitted 2xx of the INVITE is ACKed again
/// (§13.2.2.4), a request with the wrong tag gets 481, a stranger 403.
#[test]
fn an_ended_call_rests_and_still_absorbs_retransmissions() {
    let mut sim = Sim::new();
    let (b_invite, ok) = answered_call(&mut sim, "rest@pbx");
    pbx_ack(&mut sim, &ok, "rest@pbx");
    let to = ok.header(HeaderName::To);
    let bye = |branch: &str, to: &str| {
        in_dialog(
            "BYE",
            "sip:192.0.2.1:5060",
            "10.0.0.10:5060",
            branch,
            "\"Alice\" <sip:alice@10.0.0.10:5060>;tag=caller-tag",
            to,
            "rest@pbx",
            2,
            "",
        )
    };
    sim.recv(PBX, &bye("z9hG4bKrestbye", &to));
    let b_bye = sim.one_to(CARRIER_A);
    sim.recv(CARRIER_A, &reply(&b_bye, 200, "OK", None, None, ""));
    let ok_bye = sim.one_to(PBX);
    assert_eq!(ok_bye.code(), Some(200));
    // The BYE's transactions are done but for absorbing: the call rests.
    sim.advance(Duration::from_secs(6));
    assert_eq!((sim.engine.calls(), sim.engine.resting_calls()), (1, 1));

    // The caller did not hear the 200: its BYE again gets 200 again, and
    // nothing reaches the callee.
    sim.recv(PBX, &bye("z9hG4bKrestbye", &to));
    let again = sim.one_to(PBX);
    assert_eq!(again.code(), Some(200));
    assert_eq!(again.cseq(), "2 BYE");
    assert_eq!(again.branch(), "z9hG4bKrestbye");
    assert_eq!(again.to_tag(), ok.to_tag());

    // The callee did not hear the ACK: its 2xx again gets an ACK, built
    // from the 2xx (Request-URI from its Contact).
    let ok_b = reply(
        &b_invite,
        200,
        "OK",
        Some("carrier-tag"),
        Some("sip:callee@10.0.0.20:5060"),
        ANSWER_SDP,
    );
    sim.recv(CARRIER_A, &ok_b);
    let ack = sim.one_to(CARRIER_A);
    assert!(
        ack.text()
            .starts_with("ACK sip:callee@10.0.0.20:5060 SIP/2.0\r\n"),
        "{}",
        ack.text()
    );
    assert_eq!(
        ack.header(HeaderName::CallId),
        b_invite.header(HeaderName::CallId)
    );
    assert_eq!(ack.to_tag(), "carrier-tag");
    assert_eq!(ack.cseq(), "1 ACK");

    // A BYE with a tag that is not ours: 481. From a stranger: 403.
    sim.recv(
        PBX,
        &bye("z9hG4bKresttag", "<sip:x@192.0.2.1>;tag=not-ours"),
    );
    assert_eq!(sim.one_to(PBX).code(), Some(481));
    sim.recv(STRANGER, &bye("z9hG4bKreststr", &to));
    assert_eq!(sim.one_to(STRANGER).code(), Some(403));

    // After 64*T1 nothing is left.
    sim.advance(Duration::from_secs(30));
    assert_eq!(sim.engine.calls(), 0);
    sim.recv(PBX, &bye("z9hG4bKrestbye", &to));
    assert_eq!(sim.one_to(PBX).code(), Some(481));
}

/// Found by the engine fuzz target: the callee hangs up before the
/// caller's ACK for the 2xx arrived; the call ends, and the late ACK must
/// still reach the callee as a whole ACK in its dialog (it used to go out
/// with an empty Request-URI and To, the dialog's data having been dropped
/// at the end).
#[test]
fn an_ack_after_the_call_ended_is_still_a_whole_ack() {
    let mut sim = Sim::new();
    let (b_invite, ok) = answered_call(&mut sim, "late-ack@pbx");
    sim.recv(CARRIER_A, &carrier_bye(&b_invite, "z9hG4bKlateack", 7));
    let bye = sim.one_to(PBX);
    sim.recv(PBX, &reply(&bye, 200, "OK", None, None, ""));
    sim.one_to(CARRIER_A);
    let ack = pbx_ack(&mut sim, &ok, "late-ack@pbx");
    assert!(
        ack.text()
            .starts_with("ACK sip:callee@10.0.0.20:5060 SIP/2.0\r\n"),
        "{}",
        ack.text()
    );
    assert_eq!(ack.to_tag(), "carrier-tag");
    ack.request();
}
