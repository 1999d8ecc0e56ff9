//! Loss of each message of a call, on the simulated clock (RFC 3261 §17:
//! retransmissions are absorbed and resent; nothing is relayed twice).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use sbc_core::sip::HeaderName;
use support::*;

const NUMBER: &str = "+390611111";
const CALL: &str = "loss@pbx";
const FROM_A: &str = "\"Alice\" <sip:alice@10.0.0.10:5060>;tag=caller-tag";

fn start(sim: &mut Sim) -> (String, Sent) {
    let inv = invite("10.0.0.10:5060", NUMBER, CALL, "z9hG4bKloss", 1);
    sim.recv(PBX, &inv);
    (inv, sim.one_to(CARRIER_A))
}

fn to_pbx(sent: &[(Duration, Sent)]) -> Vec<(u128, Option<u16>)> {
    sent.iter()
        .filter(|(_, s)| s.to == addr(PBX))
        .map(|(t, s)| (t.as_millis(), s.code()))
        .collect()
}

fn to_carrier(sent: &[(Duration, Sent)]) -> Vec<(u128, Option<String>)> {
    sent.iter()
        .filter(|(_, s)| s.to == addr(CARRIER_A))
        .map(|(t, s)| (t.as_millis(), s.method()))
        .collect()
}

#[test]
fn trying_only_when_no_answer_within_200ms() {
    // RFC 3261 §17.2.1: 100 Trying if the TU has not answered in 200 ms.
    let mut sim = Sim::new();
    let (_inv, b) = start(&mut sim);
    sim.advance(Duration::from_millis(150));
    sim.recv(CARRIER_A, &reply(&b, 180, "Ringing", Some("ct"), None, ""));
    assert_eq!(sim.one_to(PBX).code(), Some(180));
    let later = sim.advance(Duration::from_millis(300));
    assert!(to_pbx(&later).is_empty(), "no 100 after a 180: {later:?}");

    let mut sim = Sim::new();
    let (inv, _b) = start(&mut sim);
    let sent = sim.advance(Duration::from_millis(300));
    assert_eq!(to_pbx(&sent), vec![(200, Some(100))]);
    // An INVITE retransmission before 200 ms gets its 100 at once.
    let mut sim = Sim::new();
    sim.recv(PBX, &inv);
    sim.sent();
    sim.advance(Duration::from_millis(100));
    sim.recv(PBX, &inv);
    assert_eq!(sim.one_to(PBX).code(), Some(100));
    assert!(to_pbx(&sim.advance(Duration::from_millis(300))).is_empty());
}

#[test]
fn lost_100_trying_is_resent_on_invite_retransmission() {
    // RFC 3261 §17.2.1: a retransmitted INVITE gets the last provisional.
    let mut sim = Sim::new();
    let (inv, _b) = start(&mut sim);
    sim.advance(Duration::from_millis(500));
    let _ = sim.sent();
    sim.recv(PBX, &inv);
    let again = sim.sent();
    let codes: Vec<_> = again.iter().map(|s| (s.to, s.code())).collect();
    assert_eq!(
        codes,
        vec![(addr(PBX), Some(100))],
        "no second INVITE to the carrier"
    );
    assert_eq!(
        sim.stats
            .retransmissions_in
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn lost_invite_to_carrier_is_retransmitted() {
    // §17.1.1.2 timer A.
    let mut sim = Sim::new();
    let (_inv, b) = start(&mut sim);
    let sent = sim.advance(Duration::from_millis(600));
    assert_eq!(to_carrier(&sent), vec![(500, Some("INVITE".into()))]);
    let again = sent.iter().find(|(_, s)| s.to == addr(CARRIER_A)).unwrap();
    assert_eq!(again.1.bytes, b.bytes, "same bytes, same branch");
}

#[test]
fn lost_180_to_caller_is_resent_and_answer_still_flows() {
    let mut sim = Sim::new();
    let (inv, b) = start(&mut sim);
    sim.recv(
        CARRIER_A,
        &reply(&b, 180, "Ringing", Some("ct"), Some("sip:c@10.0.0.20"), ""),
    );
    let _lost_180 = sim.one_to(PBX);
    sim.recv(PBX, &inv);
    let again = sim.one_to(PBX);
    assert_eq!(again.code(), Some(180));
    // The carrier's 180 itself may be lost: the 200 establishes the call.
    sim.recv(
        CARRIER_A,
        &reply(
            &b,
            200,
            "OK",
            Some("ct"),
            Some("sip:c@10.0.0.20"),
            ANSWER_SDP,
        ),
    );
    assert_eq!(sim.one_to(PBX).code(), Some(200));
}

#[test]
fn lost_200_to_caller_is_retransmitted_until_ack() {
    // §13.3.1.4: T1, 2T1, 4T1... capped at T2, until the ACK.
    let mut sim = Sim::new();
    let (_inv, b) = start(&mut sim);
    sim.recv(
        CARRIER_A,
        &reply(
            &b,
            200,
            "OK",
            Some("ct"),
            Some("sip:c@10.0.0.20"),
            ANSWER_SDP,
        ),
    );
    let ok = sim.one_to(PBX);
    let sent = sim.advance(Duration::from_millis(3600));
    assert_eq!(
        to_pbx(&sent),
        vec![(500, Some(200)), (1500, Some(200)), (3500, Some(200))]
    );
    // The carrier's own 2xx retransmissions are absorbed until the caller ACKs.
    sim.recv(
        CARRIER_A,
        &reply(
            &b,
            200,
            "OK",
            Some("ct"),
            Some("sip:c@10.0.0.20"),
            ANSWER_SDP,
        ),
    );
    assert!(sim.sent().is_empty());
    sim.recv(
        PBX,
        &in_dialog(
            "ACK",
            "sip:192.0.2.1",
            "10.0.0.10:5060",
            "z9hG4bKa1",
            FROM_A,
            &ok.header(HeaderName::To),
            CALL,
            1,
            "",
        ),
    );
    assert_eq!(sim.one_to(CARRIER_A).method().as_deref(), Some("ACK"));
    let sent = sim.advance(Duration::from_secs(10));
    assert!(to_pbx(&sent).is_empty(), "no 200 after the ACK");
}

#[test]
fn lost_ack_from_caller_is_recovered_by_200_retransmission() {
    let mut sim = Sim::new();
    let (_inv, b) = start(&mut sim);
    sim.recv(
        CARRIER_A,
        &reply(
            &b,
            200,
            "OK",
            Some("ct"),
            Some("sip:c@10.0.0.20"),
            ANSWER_SDP,
        ),
    );
    let ok = sim.one_to(PBX);
    // First ACK lost; our 200 is retransmitted; the caller ACKs again.
    let sent = sim.advance(Duration::from_millis(500));
    assert_eq!(to_pbx(&sent), vec![(500, Some(200))]);
    let ack = in_dialog(
        "ACK",
        "sip:192.0.2.1",
        "10.0.0.10:5060",
        "z9hG4bKa2",
        FROM_A,
        &ok.header(HeaderName::To),
        CALL,
        1,
        "",
    );
    sim.recv(PBX, &ack);
    assert_eq!(sim.one_to(CARRIER_A).method().as_deref(), Some("ACK"));
    // A duplicate ACK is not relayed twice.
    sim.recv(PBX, &ack);
    assert!(sim.sent().is_empty());
}

#[test]
fn lost_ack_to_carrier_is_resent_on_its_200_retransmission() {
    // §13.2.2.4: the UAC ACKs every 2xx retransmission.
    let mut sim = Sim::new();
    let (_inv, b) = start(&mut sim);
    let ok_b = reply(
        &b,
        200,
        "OK",
        Some("ct"),
        Some("sip:c@10.0.0.20"),
        ANSWER_SDP,
    );
    sim.recv(CARRIER_A, &ok_b);
    let ok = sim.one_to(PBX);
    sim.recv(
        PBX,
        &in_dialog(
            "ACK",
            "sip:192.0.2.1",
            "10.0.0.10:5060",
            "z9hG4bKa3",
            FROM_A,
            &ok.header(HeaderName::To),
            CALL,
            1,
            "",
        ),
    );
    let ack = sim.one_to(CARRIER_A);
    sim.recv(CARRIER_A, &ok_b);
    let ack2 = sim.one_to(CARRIER_A);
    assert_eq!(ack2.bytes, ack.bytes);
}

fn confirmed(sim: &mut Sim) -> (Sent, Sent) {
    let (_inv, b) = start(sim);
    sim.recv(
        CARRIER_A,
        &reply(
            &b,
            200,
            "OK",
            Some("ct"),
            Some("sip:c@10.0.0.20"),
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
            "z9hG4bKa4",
            FROM_A,
            &ok.header(HeaderName::To),
            CALL,
            1,
            "",
        ),
    );
    sim.one_to(CARRIER_A);
    (b, ok)
}

#[test]
fn lost_bye_to_carrier_and_lost_200_from_it() {
    // §17.1.2.2 timer E; the carrier answers each copy.
    let mut sim = Sim::new();
    let (_b, ok) = confirmed(&mut sim);
    sim.recv(
        PBX,
        &in_dialog(
            "BYE",
            "sip:192.0.2.1",
            "10.0.0.10:5060",
            "z9hG4bKbye",
            FROM_A,
            &ok.header(HeaderName::To),
            CALL,
            2,
            "",
        ),
    );
    let bye = sim.one_to(CARRIER_A);
    let sent = sim.advance(Duration::from_millis(1600));
    assert_eq!(
        to_carrier(&sent),
        vec![(500, Some("BYE".into())), (1500, Some("BYE".into()))]
    );
    sim.recv(CARRIER_A, &reply(&bye, 200, "OK", None, None, ""));
    assert_eq!(sim.one_to(PBX).code(), Some(200));
    sim.recv(CARRIER_A, &reply(&bye, 200, "OK", None, None, ""));
    assert!(
        sim.sent().is_empty(),
        "response retransmission absorbed (§17.1.2.2 Completed)"
    );
    sim.advance(Duration::from_secs(40));
    assert_eq!(sim.engine.calls(), 0);
}

#[test]
fn lost_200_for_bye_to_caller_is_resent_not_relayed() {
    // §17.2.2: the retransmitted BYE gets the stored 200; the carrier sees
    // one BYE.
    let mut sim = Sim::new();
    let (_b, ok) = confirmed(&mut sim);
    let bye = in_dialog(
        "BYE",
        "sip:192.0.2.1",
        "10.0.0.10:5060",
        "z9hG4bKbye2",
        FROM_A,
        &ok.header(HeaderName::To),
        CALL,
        2,
        "",
    );
    sim.recv(PBX, &bye);
    let b_bye = sim.one_to(CARRIER_A);
    sim.recv(CARRIER_A, &reply(&b_bye, 200, "OK", None, None, ""));
    let first = sim.one_to(PBX);
    sim.recv(PBX, &bye);
    let again = sim.one_to(PBX);
    assert_eq!(again.bytes, first.bytes);
}

#[test]
fn lost_ack_for_busy_means_486_retransmitted() {
    // §17.2.1 timer G.
    let mut sim = Sim::new();
    let (_inv, b) = start(&mut sim);
    sim.recv(
        CARRIER_A,
        &reply(&b, 486, "Busy Here", Some("ct"), None, ""),
    );
    sim.sent();
    let sent = sim.advance(Duration::from_millis(1600));
    assert_eq!(to_pbx(&sent), vec![(500, Some(486)), (1500, Some(486))]);
    // A retransmitted 486 from the carrier is ACKed again by the transaction.
    sim.recv(
        CARRIER_A,
        &reply(&b, 486, "Busy Here", Some("ct"), None, ""),
    );
    assert_eq!(sim.one_to(CARRIER_A).method().as_deref(), Some("ACK"));
}

#[test]
fn caller_never_acks_ends_the_call_on_both_legs() {
    // §13.3.1.4: no ACK within 64*T1 -> BYE.
    let mut sim = Sim::new();
    let (_inv, b) = start(&mut sim);
    sim.recv(
        CARRIER_A,
        &reply(
            &b,
            200,
            "OK",
            Some("ct"),
            Some("sip:c@10.0.0.20"),
            ANSWER_SDP,
        ),
    );
    sim.sent();
    let sent = sim.advance(Duration::from_secs(33));
    let carrier: Vec<_> = to_carrier(&sent)
        .into_iter()
        .map(|(_, m)| m.unwrap_or_default())
        .collect();
    assert_eq!(carrier[..2], ["ACK".to_owned(), "BYE".to_owned()]);
    let mut bye_branches: Vec<_> = sent
        .iter()
        .filter(|(_, s)| s.to == addr(PBX) && s.method().as_deref() == Some("BYE"))
        .map(|(_, s)| s.branch())
        .collect();
    bye_branches.dedup();
    assert_eq!(
        bye_branches.len(),
        1,
        "one BYE (and its retransmissions) to the caller"
    );
    assert_eq!(
        sim.stats
            .calls_active
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    // The BYEs time out (nobody answers) and the call is cleaned up.
    sim.advance(Duration::from_secs(40));
    assert_eq!(sim.engine.calls(), 0);
}

#[test]
fn ringing_forever_is_cut_by_max_ringing() {
    let mut sim = Sim::new();
    let (_inv, b) = start(&mut sim);
    sim.recv(CARRIER_A, &reply(&b, 180, "Ringing", Some("ct"), None, ""));
    sim.sent();
    let sent = sim.advance(Duration::from_secs(181));
    assert!(to_pbx(&sent).contains(&(180_000, Some(408))));
    assert!(to_carrier(&sent).contains(&(180_000, Some("CANCEL".into()))));
    // Nobody answers the CANCEL: everything is gone 64*T1 later.
    sim.advance(Duration::from_secs(40));
    assert_eq!(sim.engine.calls(), 0);
}
