//! Dialog matching by the RFC (RFC 3261 §12.2.2, §17.2.3, §9.1): requests
//! in a dialog need its Call-ID and both tags from the leg's own peer;
//! responses come from the peer the request went to; a Contact or
//! Record-Route cannot send the SBC's requests outside the peer's trunk.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use sbc_core::refusal::Refusal;
use sbc_core::sip::HeaderName;
use support::*;

const NUMBER: &str = "+390612345678";
/// A call from the PBX that carrier-a answers with `contact` as its
/// Contact; returns the INVITE carrier-a saw and the 200 the PBX saw.
fn answered_with(sim: &mut Sim, call_id: &str, contact: &str) -> (Sent, Sent) {
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, call_id, "z9hG4bKinv", 1),
    );
    let b_invite = sim.one_to(CARRIER_A);
    sim.recv(CARRIER_A, &answer_200(&b_invite, "carrier-tag", contact));
    let ok = sim.one_to(PBX);
    assert_eq!(ok.code(), Some(200));
    (b_invite, ok)
}

fn answered(sim: &mut Sim, call_id: &str) -> (Sent, Sent) {
    answered_with(sim, call_id, "sip:callee@10.0.0.20:5060")
}

/// A BYE from the PBX in the caller's dialog with the given To value.
fn pbx_bye(call_id: &str, to: &str, branch: &str) -> String {
    in_dialog(
        "BYE",
        "sip:192.0.2.1:5060",
        "10.0.0.10:5060",
        branch,
        CALLER_FROM,
        to,
        call_id,
        2,
        "",
    )
}

/// The blind ACK of the review: from the caller's address, with no To tag
/// or a made-up one, it confirmed the call and went on to the carrier.
#[test]
fn an_ack_without_the_dialogs_to_tag_confirms_nothing() {
    for (call_id, to) in [
        ("blind1@pbx", format!("<sip:{NUMBER}@192.0.2.1>")),
        (
            "blind2@pbx",
            format!("<sip:{NUMBER}@192.0.2.1>;tag=made-up"),
        ),
    ] {
        let mut sim = Sim::new();
        let (_b, ok) = answered(&mut sim, call_id);
        sim.recv(PBX, &ack_from_pbx(call_id, &to));
        assert!(sim.sent().is_empty(), "{call_id}: the blind ACK went on");
        // Still unconfirmed: the 200 is retransmitted (timer G, T1).
        let again = sim.advance(Duration::from_millis(600));
        assert!(
            again
                .iter()
                .any(|(_, s)| s.to == addr(PBX) && s.code() == Some(200)),
            "{call_id}: the 200 was not retransmitted: {again:?}",
            again = again.iter().map(|(t, s)| (*t, s.to)).collect::<Vec<_>>()
        );
        // The ACK with the dialog's To tag confirms it and goes on.
        sim.recv(PBX, &ack_from_pbx(call_id, &ok.header(HeaderName::To)));
        let b_ack = sim.one_to(CARRIER_A);
        assert_eq!(b_ack.method().as_deref(), Some("ACK"));
    }
}

/// A stranger that knows the Call-ID and From tag learns nothing: the
/// same answer as for a dialog that does not exist, whatever the To tag.
#[test]
fn a_stranger_cannot_tell_live_dialogs_from_unknown_ones() {
    // Enough answers for the stranger to compare three (see strangers.rs
    // for how few it gets by default).
    let mut p = policy();
    p.acl.strangers.per_source = 10;
    let mut sim = Sim::with_policy(p);
    let (_b, ok) = answered(&mut sim, "live@pbx");
    let to = ok.header(HeaderName::To);
    let mut answers = Vec::new();
    for (call_id, to) in [
        ("live@pbx", to.clone()),
        ("live@pbx", format!("<sip:{NUMBER}@192.0.2.1>;tag=guess")),
        ("none@pbx", to.clone()),
    ] {
        let bye = pbx_bye(call_id, &to, "z9hG4bKstr").replace("10.0.0.10:5060", STRANGER);
        sim.recv(STRANGER, &bye);
        answers.push(sim.one_to(STRANGER).code());
    }
    assert_eq!(answers, vec![Some(403); 3]);
    // The call is untouched: the PBX's own BYE still ends it.
    sim.recv(PBX, &pbx_bye("live@pbx", &to, "z9hG4bKbye"));
    let b_bye = sim.first_to(CARRIER_A);
    assert_eq!(b_bye.method().as_deref(), Some("BYE"));
}

/// Another trunk with a live dialog's Call-ID gets 481, as for any dialog
/// it is not in, and the call goes on.
#[test]
fn another_trunk_gets_481_for_a_dialog_it_is_not_in() {
    let mut sim = Sim::new();
    let (_b, ok) = answered(&mut sim, "other@pbx");
    let bye = pbx_bye("other@pbx", &ok.header(HeaderName::To), "z9hG4bKoth")
        .replace("10.0.0.10:5060", CARRIER_B);
    sim.recv(CARRIER_B, &bye);
    assert_eq!(sim.one_to(CARRIER_B).code(), Some(481));
    assert_eq!(sim.rejected(Refusal::NoDialog), 1);
}

/// RFC 3261 §9.1: a CANCEL repeats its INVITE's CSeq number; one that
/// does not cancels nothing.
#[test]
fn a_cancel_with_another_cseq_number_cancels_nothing() {
    let mut sim = Sim::new();
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, "cseq@pbx", "z9hG4bKcs", 1),
    );
    let b_inv = sim.one_to(CARRIER_A);
    sim.recv(
        CARRIER_A,
        &reply(&b_inv, 180, "Ringing", Some("a-tag"), None, ""),
    );
    sim.sent();
    let cancel = |n: u32| {
        format!(
            "CANCEL sip:{NUMBER}@192.0.2.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.10:5060;branch=z9hG4bKcs;rport\r\nMax-Forwards: 70\r\nFrom: {CALLER_FROM}\r\nTo: <sip:{NUMBER}@192.0.2.1>\r\nCall-ID: cseq@pbx\r\nCSeq: {n} CANCEL\r\nContent-Length: 0\r\n\r\n"
        )
    };
    sim.recv(PBX, &cancel(2));
    assert_eq!(sim.one_to(PBX).code(), Some(481));
    sim.recv(PBX, &cancel(1));
    let codes: Vec<_> = sim
        .sent()
        .iter()
        .filter(|s| s.to == addr(PBX))
        .map(Sent::code)
        .collect();
    assert_eq!(codes, vec![Some(200), Some(487)]);
}

/// A callee's Contact naming a host outside its trunk does not move the
/// SBC's ACK and BYE there: they go to the trunk's address.
#[test]
fn a_contact_outside_the_trunk_does_not_redirect_requests() {
    let mut sim = Sim::new();
    let (_b, ok) = answered_with(&mut sim, "far@pbx", "sip:callee@203.0.113.50:9999");
    let to = ok.header(HeaderName::To);
    sim.recv(PBX, &ack_from_pbx("far@pbx", &to));
    let b_ack = sim.one_to(CARRIER_A);
    assert_eq!(b_ack.method().as_deref(), Some("ACK"));
    sim.recv(PBX, &pbx_bye("far@pbx", &to, "z9hG4bKfar"));
    let b_bye = sim.first_to(CARRIER_A);
    assert_eq!(b_bye.method().as_deref(), Some("BYE"));
    // The headers still say what the callee asked for (RFC 3261 §12.2.1.1).
    assert!(
        b_bye
            .text()
            .starts_with("BYE sip:callee@203.0.113.50:9999 ")
    );
}

/// A callee that answers over UDP with a SIPS Contact asks for TLS on
/// every hop of the requests to it (RFC 3261 §26.2.2), which its trunk's
/// transport cannot give: the Contact is not taken, and the ACK and BYE go
/// to the target the INVITE had, never as a SIPS request over UDP.
#[test]
fn a_sips_contact_answered_over_udp_is_not_taken() {
    let mut sim = Sim::new();
    let (b_invite, ok) = answered_with(&mut sim, "sips@pbx", "sips:callee@10.0.0.20:5061");
    let ruri = b_invite
        .text()
        .lines()
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap()
        .to_owned();
    assert!(ruri.starts_with("sip:"), "{ruri}");
    let to = ok.header(HeaderName::To);
    sim.recv(PBX, &ack_from_pbx("sips@pbx", &to));
    let b_ack = sim.one_to(CARRIER_A);
    assert!(
        b_ack.text().starts_with(&format!("ACK {ruri} SIP/2.0\r\n")),
        "{}",
        b_ack.text()
    );
    sim.recv(PBX, &pbx_bye("sips@pbx", &to, "z9hG4bKsipsbye"));
    let b_bye = sim.first_to(CARRIER_A);
    assert!(
        b_bye.text().starts_with(&format!("BYE {ruri} SIP/2.0\r\n")),
        "{}",
        b_bye.text()
    );
    assert!(!sim.sent().iter().any(|s| s.text().contains(" sips:")));
    // The call over, a retransmitted 2xx is ACKed by what is left of it:
    // to the INVITE's To, still never as a SIPS request.
    sim.recv(CARRIER_A, &reply(&b_bye, 200, "OK", None, None, ""));
    sim.sent();
    sim.recv(
        CARRIER_A,
        &answer_200(&b_invite, "carrier-tag", "sips:callee@10.0.0.20:5061"),
    );
    let again = sim.one_to(CARRIER_A);
    assert_eq!(again.method().as_deref(), Some("ACK"), "{}", again.text());
    assert!(again.text().starts_with("ACK sip:"), "{}", again.text());
    assert!(!again.text().contains("sips:"), "{}", again.text());
}

/// Forks: one early dialog rings with a `sip:` Contact, another answers
/// over UDP with a `sips:` Contact. The answer's dialog does not inherit
/// the other fork's target: its ACK and BYE go to the INVITE's
/// Request-URI. In that dialog, a re-INVITE from the callee over UDP
/// with a `sips:` Contact is refused with 400 and leaves the target as it
/// was.
#[test]
fn a_sips_answer_of_another_fork_and_a_sips_reinvite_move_no_target() {
    let mut sim = Sim::new();
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, "fork@pbx", "z9hG4bKinv", 1),
    );
    let b_invite = sim.one_to(CARRIER_A);
    let ruri = b_invite.text().split(' ').nth(1).unwrap().to_owned();
    let ringing = reply(
        &b_invite,
        180,
        "Ringing",
        Some("fork-x"),
        Some("sip:other@10.0.0.20:5070"),
        "",
    );
    sim.recv(CARRIER_A, &ringing);
    sim.sent();
    sim.recv(
        CARRIER_A,
        &answer_200(&b_invite, "carrier-tag", "sips:callee@10.0.0.20:5061"),
    );
    let ok = sim.first_to(PBX);
    assert_eq!(ok.code(), Some(200));
    let to = ok.header(HeaderName::To);
    sim.recv(PBX, &ack_from_pbx("fork@pbx", &to));
    let b_ack = sim.one_to(CARRIER_A);
    assert!(
        b_ack.text().starts_with(&format!("ACK {ruri} SIP/2.0\r\n")),
        "{}",
        b_ack.text()
    );

    // The callee's re-INVITE with a SIPS Contact, over UDP: 400, and the
    // target stays.
    let reinvite = |branch: &str, cseq: u32, contact: &str| {
        carrier_bye(&b_invite, branch, cseq)
            .replacen("BYE ", "INVITE ", 1)
            .replace(&format!("{cseq} BYE"), &format!("{cseq} INVITE"))
            .replacen(
                "Contact: <sip:peer@10.0.0.20:5060>",
                &format!("Contact: <{contact}>"),
                1,
            )
    };
    sim.recv(
        CARRIER_A,
        &reinvite("z9hG4bKre1", 2, "sips:callee@10.0.0.20:5061"),
    );
    let refused = sim.one_to(CARRIER_A);
    assert_eq!(refused.code(), Some(400), "{}", refused.text());
    assert_eq!(sim.rejected(Refusal::InsecureSipsTarget), 1);
    sim.recv(PBX, &pbx_bye("fork@pbx", &to, "z9hG4bKforkbye"));
    let b_bye = sim.first_to(CARRIER_A);
    assert!(
        b_bye.text().starts_with(&format!("BYE {ruri} SIP/2.0\r\n")),
        "{}",
        b_bye.text()
    );
}

/// A trunk with `follow_contact`: its Contact outside its sources moves
/// the SBC's ACK and BYE there, and it is heard from there in the dialog.
#[test]
fn a_trunk_that_allows_it_is_followed_to_its_contact() {
    const MOVED: &str = "203.0.113.50:9999";
    let mut p = policy();
    p.trunks[1].follow_contact = true;
    let mut sim = Sim::with_policy(p);
    let (b_invite, ok) = answered_with(&mut sim, "moved@pbx", &format!("sip:callee@{MOVED}"));
    let to = ok.header(HeaderName::To);
    sim.recv(PBX, &ack_from_pbx("moved@pbx", &to));
    let b_ack = sim.one_to(MOVED);
    assert_eq!(b_ack.method().as_deref(), Some("ACK"));
    // The callee hangs up from its new address: relayed to the PBX.
    sim.recv(
        MOVED,
        &carrier_bye(&b_invite, "z9hG4bKmovedbye", 2).replace("10.0.0.20:5060", MOVED),
    );
    let sent = sim.sent();
    assert!(
        sent.iter()
            .any(|s| s.to == addr(PBX) && s.method().as_deref() == Some("BYE")),
        "{sent:?}"
    );
    // Not refused as a stranger.
    assert_eq!(sim.rejected(Refusal::UnknownSource), 0);
    // The PBX answers the BYE: the call ends; the callee's BYE sent again
    // from its new address gets 200 from the ended dialog, not 403.
    let bye_to_pbx = sent
        .iter()
        .find(|s| s.to == addr(PBX) && s.method().as_deref() == Some("BYE"))
        .unwrap()
        .clone();
    sim.recv(PBX, &reply(&bye_to_pbx, 200, "OK", None, None, ""));
    sim.sent();
    sim.advance(Duration::from_secs(1));
    sim.recv(
        MOVED,
        &carrier_bye(&b_invite, "z9hG4bKmovedbye", 2).replace("10.0.0.20:5060", MOVED),
    );
    let again = sim.one_to(MOVED);
    assert_eq!(again.code(), Some(200), "{}", again.text());
    assert_eq!(sim.rejected(Refusal::UnknownSource), 0);
}

/// Even with `follow_contact`, a Contact naming the SBC itself (or no
/// unicast address) is not followed: requests go to the trunk.
#[test]
fn follow_contact_never_leads_back_to_the_sbc() {
    let mut p = policy();
    p.trunks[1].follow_contact = true;
    let mut sim = Sim::with_policy(p);
    for (n, contact) in [
        "sip:callee@192.0.2.1:5060",
        "sip:callee@0.0.0.0:5060",
        "sip:callee@224.0.0.1",
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("self{n}@pbx");
        let (_b, ok) = answered_with(&mut sim, &id, contact);
        sim.recv(PBX, &ack_from_pbx(&id, &ok.header(HeaderName::To)));
        let b_ack = sim.one_to(CARRIER_A);
        assert_eq!(b_ack.method().as_deref(), Some("ACK"), "{contact}");
    }
}

/// The caller's Contact outside its trunk: the callee's BYE goes back to
/// where the caller's INVITE came from.
#[test]
fn a_callers_contact_outside_its_trunk_does_not_redirect_the_bye() {
    let mut sim = Sim::new();
    let inv = invite("10.0.0.10:5060", NUMBER, "cfar@pbx", "z9hG4bKcf", 1)
        .replace(
            "Contact: <sip:alice@10.0.0.10:5060>",
            "Contact: <sip:alice@127.0.0.1:5060>",
        )
        // No Record-Route: the Contact alone names the next hop.
        .replace("Record-Route: <sip:edge.pbx.internal;lr>\r\n", "");
    sim.recv(PBX, &inv);
    let b_invite = sim.one_to(CARRIER_A);
    sim.recv(
        CARRIER_A,
        &answer_200(&b_invite, "carrier-tag", "sip:callee@10.0.0.20:5060"),
    );
    let ok = sim.one_to(PBX);
    sim.recv(PBX, &ack_from_pbx("cfar@pbx", &ok.header(HeaderName::To)));
    sim.one_to(CARRIER_A);
    let bye = carrier_bye(&b_invite, "z9hG4bKcbye", 2);
    sim.recv(CARRIER_A, &bye);
    let sent = sim.sent();
    let a_bye = sent
        .iter()
        .find(|s| s.method().as_deref() == Some("BYE"))
        .expect("a BYE to the caller");
    assert_eq!(a_bye.to, addr(PBX));
}

/// A response from a peer the request did not go to is ignored: a forged
/// 486 from carrier-b does not fail the attempt over.
#[test]
fn a_response_from_another_peer_is_ignored() {
    let mut sim = Sim::new();
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, "forged@pbx", "z9hG4bKfg", 1),
    );
    let b_inv = sim.one_to(CARRIER_A);
    for from in [CARRIER_B, STRANGER] {
        sim.recv(from, &reply(&b_inv, 486, "Busy Here", Some("x"), None, ""));
        assert!(sim.sent().is_empty(), "a response from {from} was taken");
    }
    sim.recv(
        CARRIER_A,
        &reply(&b_inv, 180, "Ringing", Some("a-tag"), None, ""),
    );
    assert_eq!(sim.one_to(PBX).code(), Some(180));
}

/// Trunks are matched by address, not port (RFC 3261 allows requests in a
/// dialog from another port): the PBX's BYE from another port is relayed.
#[test]
fn the_pbx_may_send_from_another_port() {
    let mut sim = Sim::new();
    let (_b, ok) = answered(&mut sim, "port@pbx");
    let to = ok.header(HeaderName::To);
    sim.recv(PBX, &ack_from_pbx("port@pbx", &to));
    sim.one_to(CARRIER_A);
    sim.recv("10.0.0.10:5999", &pbx_bye("port@pbx", &to, "z9hG4bKport"));
    let b_bye = sim.first_to(CARRIER_A);
    assert_eq!(b_bye.method().as_deref(), Some("BYE"));
}

/// BRIEF §8: the SBC is no reflector. A stranger gets at most its few
/// answers a second (default 2), then silence; a trunk's malformed
/// requests are still answered every time.
#[test]
fn strangers_get_a_few_answers_a_second_then_silence() {
    let mut sim = Sim::new();
    let flood = |sim: &mut Sim, from: &str, n: u32| -> usize {
        (0..n)
            .map(|i| {
                let inv = invite(
                    from,
                    NUMBER,
                    &format!("flood{i}@x"),
                    &format!("z9hG4bKf{i}"),
                    1,
                );
                sim.recv(from, &inv);
                sim.sent().len()
            })
            .sum()
    };
    assert_eq!(flood(&mut sim, STRANGER, 1000), 2);
    assert_eq!(sim.rejected(Refusal::UnknownSource), 1000, "all counted");
    sim.advance(Duration::from_millis(500));
    assert_eq!(flood(&mut sim, STRANGER, 1000), 1, "one more token");
    // Malformed input from a stranger: limited the same way.
    sim.advance(Duration::from_secs(5));
    // A CSeq with no number: 400, answered back to the source.
    let broken = |i: u32| {
        invite(
            STRANGER,
            NUMBER,
            &format!("m{i}@x"),
            &format!("z9hG4bKm{i}"),
            1,
        )
        .replace("CSeq: 1 INVITE", "CSeq: x INVITE")
    };
    let answered: usize = (0..100)
        .map(|i| {
            sim.recv(STRANGER, &broken(i));
            sim.sent().len()
        })
        .sum();
    assert_eq!(answered, 2);
    // The PBX's broken requests: each is answered 400.
    let answered: usize = (0..100)
        .map(|i| {
            sim.recv(PBX, &broken(i).replace(STRANGER, PBX));
            sim.sent().len()
        })
        .sum();
    assert_eq!(answered, 100);
}

/// `stranger_answers_per_s = 0`: strangers are never answered.
#[test]
fn strangers_may_get_no_answer_at_all() {
    let mut p = policy();
    p.acl.strangers.per_source = 0;
    let mut sim = Sim::with_policy(p);
    sim.recv(
        STRANGER,
        &invite(STRANGER, NUMBER, "silent@x", "z9hG4bKs", 1),
    );
    assert!(sim.sent().is_empty());
    assert_eq!(sim.rejected(Refusal::UnknownSource), 1);
}

/// A peer flooding one dialog with requests the other side does not
/// answer: past 32 in flight, 503 with Retry-After, nothing more relayed.
#[test]
fn a_dialog_holds_a_bounded_number_of_requests_in_flight() {
    let mut sim = Sim::new();
    let (_b, ok) = answered(&mut sim, "info@pbx");
    let to = ok.header(HeaderName::To);
    sim.recv(PBX, &ack_from_pbx("info@pbx", &to));
    sim.one_to(CARRIER_A);
    let mut relayed = 0;
    let mut busy = 0;
    for n in 0..40u32 {
        let info = in_dialog(
            "INFO",
            "sip:192.0.2.1:5060",
            "10.0.0.10:5060",
            &format!("z9hG4bKinfo{n}"),
            CALLER_FROM,
            &to,
            "info@pbx",
            2 + n,
            "",
        );
        sim.recv(PBX, &info);
        for s in sim.sent() {
            if s.to == addr(CARRIER_A) && s.method().as_deref() == Some("INFO") {
                relayed += 1;
            } else if s.to == addr(PBX) && s.code() == Some(503) {
                assert_eq!(s.header(HeaderName::RetryAfter), "1");
                busy += 1;
            }
        }
    }
    assert_eq!((relayed, busy), (32, 8));
    assert_eq!(sim.rejected(Refusal::DialogBusy), 8);
}
