//! Edge cases of the call flows: misbehaving callees, timer C, retries,
//! stray answers, locally answered in-dialog requests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use sbc_core::sip::HeaderName;
use support::*;

const NUMBER: &str = "+390655555";
const FROM_A: &str = "\"Alice\" <sip:alice@10.0.0.10:5060>;tag=caller-tag";

fn ringing(sim: &mut Sim, call_id: &str) -> (Sent, Sent) {
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, call_id, "z9hG4bKedge", 1),
    );
    let b = sim.one_to(CARRIER_A);
    sim.recv(
        CARRIER_A,
        &reply(
            &b,
            180,
            "Ringing",
            Some("ct"),
            Some("sip:c@10.0.0.20:5060"),
            "",
        ),
    );
    let r = sim.one_to(PBX);
    (b, r)
}

#[test]
fn callee_bye_in_early_dialog_is_answered_and_the_invite_cancelled() {
    // RFC 3261 §15: a callee must not BYE an early dialog; if it does, the
    // call ends cleanly instead of lingering forever.
    let mut sim = Sim::new();
    let (b, _) = ringing(&mut sim, "early-bye@pbx");
    let bye = in_dialog(
        "BYE",
        "sip:192.0.2.1",
        "10.0.0.20:5060",
        "z9hG4bKeb",
        "<sip:c@10.0.0.20>;tag=ct",
        &b.header(HeaderName::From),
        &b.header(HeaderName::CallId),
        5,
        "",
    );
    sim.recv(CARRIER_A, &bye);
    let sent = sim.sent();
    let codes: Vec<_> = sent.iter().map(|s| (s.to, s.code(), s.method())).collect();
    assert!(
        codes.contains(&(addr(CARRIER_A), Some(200), None)),
        "{codes:?}"
    );
    let cancel = sent
        .iter()
        .find(|s| s.method().as_deref() == Some("CANCEL"))
        .expect("CANCEL to the callee");
    // A retransmitted BYE gets the same 200 (a server transaction answered it).
    sim.recv(CARRIER_A, &bye);
    assert_eq!(sim.one_to(CARRIER_A).code(), Some(200));
    sim.recv(CARRIER_A, &reply(cancel, 200, "OK", Some("ct"), None, ""));
    sim.recv(
        CARRIER_A,
        &reply(&b, 487, "Request Terminated", Some("ct"), None, ""),
    );
    let sent = sim.sent();
    assert!(
        sent.iter()
            .any(|s| s.to == addr(PBX) && s.code() == Some(487)),
        "the caller gets a final answer"
    );
    sim.advance(Duration::from_secs(40));
    assert_eq!(sim.engine.calls(), 0, "nothing left behind");
}

#[test]
fn timer_c_cancels_the_ringing_callee_and_fails_over() {
    // RFC 3261 §16.6 step 11 (timer C > 3 min) with max ringing set longer.
    let mut policy = policy();
    policy.call_timers.max_ringing = Duration::from_secs(600);
    let mut sim = Sim::with_policy(policy);
    let (b, _) = ringing(&mut sim, "timer-c@pbx");
    let sent = sim.advance(Duration::from_secs(182));
    let cancel = sent
        .iter()
        .find(|(_, s)| s.to == addr(CARRIER_A) && s.method().as_deref() == Some("CANCEL"));
    let (at, _) = cancel.expect("CANCEL when timer C fires");
    assert_eq!(at.as_secs(), 181);
    assert!(
        sent.iter()
            .any(|(_, s)| s.to == addr(CARRIER_B) && s.method().as_deref() == Some("INVITE")),
        "timeout fails over"
    );
    // The first callee answers anyway: ACK and BYE, once, even for retransmissions.
    let ok = reply(
        &b,
        200,
        "OK",
        Some("ct"),
        Some("sip:c@10.0.0.20:5060"),
        ANSWER_SDP,
    );
    sim.recv(CARRIER_A, &ok);
    let methods: Vec<_> = sim.sent().iter().filter_map(|s| s.method()).collect();
    assert_eq!(methods, vec!["ACK", "BYE"]);
    sim.recv(CARRIER_A, &ok);
    let methods: Vec<_> = sim.sent().iter().filter_map(|s| s.method()).collect();
    assert_eq!(
        methods,
        vec!["ACK"],
        "a retransmitted stray 2xx is only ACKed again"
    );
}

#[test]
fn stray_answer_follows_its_record_route() {
    let mut sim = Sim::new();
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, "stray-rr@pbx", "z9hG4bKsrr", 1),
    );
    let b = sim.one_to(CARRIER_A);
    sim.advance(Duration::from_secs(5)); // no answer: failover to carrier-b
    let ok = reply(
        &b,
        200,
        "OK",
        Some("late"),
        Some("sip:c@10.0.0.99:5060"),
        ANSWER_SDP,
    )
    .replace(
        "Server:",
        "Record-Route: <sip:10.0.0.20:5060;lr>\r\nServer:",
    );
    sim.recv(CARRIER_A, &ok);
    let sent = sim.sent();
    assert_eq!(sent.len(), 2);
    for s in &sent {
        assert_eq!(
            s.to,
            addr(CARRIER_A),
            "via the record-routed proxy, not the Contact"
        );
        assert!(s.text().contains("Route: <sip:10.0.0.20:5060;lr>\r\n"));
        assert!(s.text().starts_with(&format!(
            "{} sip:c@10.0.0.99:5060 SIP/2.0",
            s.method().unwrap()
        )));
    }
}

/// A stray answer over UDP whose Contact or Record-Route is SIPS: its ACK
/// and BYE go to the attempt's Request-URI, without routes, never as a
/// SIPS request over an insecure hop (RFC 3261 §26.2.2).
#[test]
fn a_stray_sips_answer_is_hung_up_without_sips() {
    for (call_id, contact, route) in [
        ("stray-sips1@pbx", "sips:c@10.0.0.20:5061", ""),
        (
            "stray-sips2@pbx",
            "sip:c@10.0.0.20:5060",
            "Record-Route: <sips:10.0.0.20:5061;lr>\r\n",
        ),
    ] {
        let mut sim = Sim::new();
        sim.recv(
            PBX,
            &invite("10.0.0.10:5060", NUMBER, call_id, "z9hG4bKss", 1),
        );
        let b = sim.one_to(CARRIER_A);
        let ruri = b.text().split(' ').nth(1).unwrap().to_owned();
        sim.advance(Duration::from_secs(5)); // no answer: failover to carrier-b
        let ok = reply(&b, 200, "OK", Some("late"), Some(contact), ANSWER_SDP)
            .replace("Server:", &format!("{route}Server:"));
        sim.recv(CARRIER_A, &ok);
        let sent = sim.sent();
        let methods: Vec<_> = sent.iter().filter_map(|s| s.method()).collect();
        assert_eq!(methods, vec!["ACK", "BYE"]);
        for s in &sent {
            assert_eq!(s.to, addr(CARRIER_A));
            assert!(
                s.text()
                    .starts_with(&format!("{} {ruri} SIP/2.0", s.method().unwrap())),
                "{}",
                s.text()
            );
            assert!(!s.text().contains("sips:"), "{}", s.text());
        }
    }
}

#[test]
fn failover_resets_the_callee_cseq_space() {
    // The first trunk's early dialog used CSeq 102; the second trunk's BYE
    // with CSeq 2 must still be accepted (RFC 3261 §12.2.2 is per dialog).
    let mut sim = Sim::new();
    let (b, _) = ringing(&mut sim, "cseq@pbx");
    let call_id = b.header(HeaderName::CallId);
    let info = in_dialog(
        "INFO",
        "sip:192.0.2.1",
        "10.0.0.20:5060",
        "z9hG4bKinf",
        "<sip:c@10.0.0.20>;tag=ct",
        &b.header(HeaderName::From),
        &call_id,
        102,
        "",
    );
    sim.recv(CARRIER_A, &info);
    let relayed = sim.one_to(PBX);
    sim.recv(PBX, &reply(&relayed, 200, "OK", None, None, ""));
    sim.sent();
    sim.recv(
        CARRIER_A,
        &reply(&b, 503, "Service Unavailable", Some("ct"), None, ""),
    );
    let second = sim.first_to(CARRIER_B);
    sim.recv(
        CARRIER_B,
        &reply(
            &second,
            200,
            "OK",
            Some("bt"),
            Some("sip:c@10.0.0.30:5060"),
            ANSWER_SDP,
        ),
    );
    let ok = sim.one_to(PBX);
    sim.recv(
        PBX,
        &in_dialog(
            "ACK",
            "sip:192.0.2.1",
            "10.0.0.10:5060",
            "z9hG4bKack",
            FROM_A,
            &ok.header(HeaderName::To),
            "cseq@pbx",
            1,
            "",
        ),
    );
    sim.sent();
    let bye = in_dialog(
        "BYE",
        "sip:192.0.2.1",
        "10.0.0.30:5060",
        "z9hG4bKbbye",
        "<sip:c@10.0.0.30>;tag=bt",
        &second.header(HeaderName::From),
        &call_id,
        2,
        "",
    );
    sim.recv(CARRIER_B, &bye);
    let to_pbx = sim.one_to(PBX);
    assert_eq!(to_pbx.method().as_deref(), Some("BYE"));
}

#[test]
fn retry_with_the_same_call_id_after_a_failure_is_a_new_call() {
    // RFC 3261 §8.1.3.5: e.g. after 488 the caller retries with CSeq+1.
    let mut sim = Sim::new();
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, "retry@pbx", "z9hG4bKr1", 1),
    );
    let b = sim.one_to(CARRIER_A);
    sim.recv(
        CARRIER_A,
        &reply(&b, 488, "Not Acceptable Here", Some("ct"), None, ""),
    );
    sim.sent();
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, "retry@pbx", "z9hG4bKr2", 2),
    );
    let b2 = sim.one_to(CARRIER_A);
    assert_eq!(b2.method().as_deref(), Some("INVITE"));
    // A merged request (same CSeq as the INVITE in progress, other branch): 482.
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, "retry@pbx", "z9hG4bKr3", 2),
    );
    assert_eq!(sim.one_to(PBX).code(), Some(482));
}

#[test]
fn escaped_number_cannot_rewrite_the_callee_uri() {
    let mut sim = Sim::new();
    sim.recv(
        PBX,
        &invite(
            "10.0.0.10:5060",
            "1234%40evil.example%3E",
            "esc@pbx",
            "z9hG4bKesc",
            1,
        ),
    );
    let b = sim.one_to(CARRIER_A);
    assert!(
        b.text()
            .starts_with("INVITE sip:1234%40evil.example%3E@10.0.0.20:5060 SIP/2.0\r\n"),
        "{}",
        b.text()
    );
    // Nothing to dial: 404.
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", "", "empty@pbx", "z9hG4bKemp", 1)
            .replace("sip:@192.0.2.1", "sip:192.0.2.1"),
    );
    assert_eq!(sim.one_to(PBX).code(), Some(404));
}

#[test]
fn glare_491_is_retransmitted_not_500() {
    let mut sim = Sim::new();
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, "glare@pbx", "z9hG4bKg", 1),
    );
    let b = sim.one_to(CARRIER_A);
    sim.recv(
        CARRIER_A,
        &reply(
            &b,
            200,
            "OK",
            Some("ct"),
            Some("sip:c@10.0.0.20:5060"),
            ANSWER_SDP,
        ),
    );
    let ok = sim.one_to(PBX);
    sim.recv(
        PBX,
        &in_dialog(
            "ACK",
            "sip:192.0.2.1",
            "10.0.0.10:5060",
            "z9hG4bKgack",
            FROM_A,
            &ok.header(HeaderName::To),
            "glare@pbx",
            1,
            "",
        ),
    );
    sim.sent();
    // A re-INVITE from the caller is in progress...
    sim.recv(
        PBX,
        &in_dialog(
            "INVITE",
            "sip:192.0.2.1",
            "10.0.0.10:5060",
            "z9hG4bKre",
            FROM_A,
            &ok.header(HeaderName::To),
            "glare@pbx",
            2,
            ANSWER_SDP,
        ),
    );
    sim.sent();
    // ...so the callee's own re-INVITE gets 491, and its retransmission too.
    let reinv = in_dialog(
        "INVITE",
        "sip:192.0.2.1",
        "10.0.0.20:5060",
        "z9hG4bKbre",
        "<sip:c@10.0.0.20>;tag=ct",
        &b.header(HeaderName::From),
        &b.header(HeaderName::CallId),
        9,
        ANSWER_SDP,
    );
    sim.recv(CARRIER_A, &reinv);
    assert_eq!(sim.one_to(CARRIER_A).code(), Some(491));
    sim.recv(CARRIER_A, &reinv);
    assert_eq!(sim.one_to(CARRIER_A).code(), Some(491));
    // Its ACK for the 491 is absorbed.
    sim.recv(
        CARRIER_A,
        &in_dialog(
            "ACK",
            "sip:192.0.2.1",
            "10.0.0.20:5060",
            "z9hG4bKbre",
            "<sip:c@10.0.0.20>;tag=ct",
            &b.header(HeaderName::From),
            &b.header(HeaderName::CallId),
            9,
            "",
        ),
    );
    assert!(sim.sent().is_empty());
}

#[test]
fn unacked_reinvite_ends_the_call() {
    // RFC 3261 §13.3.1.4 for a relayed re-INVITE: the far side's 2xx is
    // ACKed by the SBC, and the call is ended on both legs.
    let mut sim = Sim::new();
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, "noack@pbx", "z9hG4bKna", 1),
    );
    let b = sim.one_to(CARRIER_A);
    sim.recv(
        CARRIER_A,
        &reply(
            &b,
            200,
            "OK",
            Some("ct"),
            Some("sip:c@10.0.0.20:5060"),
            ANSWER_SDP,
        ),
    );
    let ok = sim.one_to(PBX);
    sim.recv(
        PBX,
        &in_dialog(
            "ACK",
            "sip:192.0.2.1",
            "10.0.0.10:5060",
            "z9hG4bKnaack",
            FROM_A,
            &ok.header(HeaderName::To),
            "noack@pbx",
            1,
            "",
        ),
    );
    sim.sent();
    sim.recv(
        PBX,
        &in_dialog(
            "INVITE",
            "sip:192.0.2.1",
            "10.0.0.10:5060",
            "z9hG4bKnare",
            FROM_A,
            &ok.header(HeaderName::To),
            "noack@pbx",
            2,
            ANSWER_SDP,
        ),
    );
    let b_reinv = sim.first_to(CARRIER_A);
    sim.recv(
        CARRIER_A,
        &reply(
            &b_reinv,
            200,
            "OK",
            None,
            Some("sip:c@10.0.0.20:5060"),
            ANSWER_SDP,
        ),
    );
    sim.one_to(PBX);
    let sent = sim.advance(Duration::from_secs(33));
    let to_carrier: Vec<_> = sent
        .iter()
        .filter(|(_, s)| s.to == addr(CARRIER_A))
        .filter_map(|(_, s)| s.method())
        .collect();
    assert!(
        to_carrier.starts_with(&["ACK".to_owned(), "BYE".to_owned()]),
        "{to_carrier:?}"
    );
    assert!(
        sent.iter()
            .any(|(_, s)| s.to == addr(PBX) && s.method().as_deref() == Some("BYE"))
    );
}

#[test]
fn notify_is_a_target_refresh_with_our_contact() {
    // RFC 6665 §4.1: NOTIFY carries a Contact.
    let mut sim = Sim::new();
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, "notify@pbx", "z9hG4bKn", 1),
    );
    let b = sim.one_to(CARRIER_A);
    sim.recv(
        CARRIER_A,
        &reply(
            &b,
            200,
            "OK",
            Some("ct"),
            Some("sip:c@10.0.0.20:5060"),
            ANSWER_SDP,
        ),
    );
    let ok = sim.one_to(PBX);
    sim.recv(
        PBX,
        &in_dialog(
            "ACK",
            "sip:192.0.2.1",
            "10.0.0.10:5060",
            "z9hG4bKnack",
            FROM_A,
            &ok.header(HeaderName::To),
            "notify@pbx",
            1,
            "",
        ),
    );
    sim.sent();
    sim.recv(
        CARRIER_A,
        &in_dialog(
            "NOTIFY",
            "sip:192.0.2.1",
            "10.0.0.20:5060",
            "z9hG4bKnot",
            "<sip:c@10.0.0.20>;tag=ct",
            &b.header(HeaderName::From),
            &b.header(HeaderName::CallId),
            3,
            "",
        ),
    );
    let notify = sim.one_to(PBX);
    assert_eq!(notify.header(HeaderName::Contact), "<sip:192.0.2.1:5060>");
}

#[test]
fn cancel_before_any_provisional_keeps_the_invite_going_until_it_can_be_cancelled() {
    // The callee's 180 was lost: our INVITE retransmission makes it resend
    // the 180 (RFC 3261 §17.2.1), which lets the CANCEL go out (§9.1).
    let mut sim = Sim::new();
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, "c-early@pbx", "z9hG4bKce", 1),
    );
    let b = sim.one_to(CARRIER_A);
    let cancel = format!(
        "CANCEL sip:{NUMBER}@192.0.2.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.10:5060;branch=z9hG4bKce\r\nFrom: {FROM_A}\r\nTo: <sip:{NUMBER}@192.0.2.1>\r\nCall-ID: c-early@pbx\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n"
    );
    sim.recv(PBX, &cancel);
    sim.sent();
    let sent = sim.advance(Duration::from_millis(600));
    assert!(
        sent.iter()
            .any(|(_, s)| s.to == addr(CARRIER_A) && s.method().as_deref() == Some("INVITE")),
        "INVITE retransmitted"
    );
    sim.recv(CARRIER_A, &reply(&b, 180, "Ringing", Some("ct"), None, ""));
    assert_eq!(sim.one_to(CARRIER_A).method().as_deref(), Some("CANCEL"));
}

/// An INVITE whose Record-Route is not a SIP URI (found by the engine fuzz
/// target: such a route, with a bare CR inside, ended up as it stood in the
/// Request-URI of the SBC's BYE to the caller) is refused with 400 before
/// any call exists, and so is one with a bare CR anywhere in its headers;
/// nothing goes to the carrier.
#[test]
fn an_invite_with_a_record_route_that_is_no_sip_uri_gets_400() {
    for (rr, why) in [
        ("application/sdp", "invalid Record-Route header"),
        (
            "<sip:p1.example;lr>, mailto:x@y",
            "invalid Record-Route header",
        ),
        ("application/sC\rp", "malformed header line"),
    ] {
        let mut sim = Sim::new();
        let msg = invite(PBX, "+390612345678", "bad-rr", "z9hG4bKbadrr", 1).replacen(
            "Content-Type:",
            &format!("Record-Route: {rr}\r\nContent-Type:"),
            1,
        );
        assert!(msg.contains("Record-Route: "), "{msg}");
        sim.recv(PBX, &msg);
        let sent = sim.sent();
        assert_eq!(sent.len(), 1, "{rr:?}: {sent:#?}");
        assert_eq!(sent[0].to, addr(PBX));
        assert_eq!(sent[0].code(), Some(400));
        assert!(sent[0].text().contains(why), "{rr:?}: {}", sent[0].text());
        assert_eq!(sim.engine.calls(), 0);
    }
}
