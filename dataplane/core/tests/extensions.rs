//! Calls to an extension (issue 10): an inbound number routed to an
//! extension rings every registered account of it at once, at the address
//! each registered from; the first answer wins and the others are
//! CANCELled; nobody registered is 480; failures wait for every phone and
//! the best one goes back (RFC 3261 §16.7).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use sbc_core::b2bua::{Disposition, LOOKUP_TIMEOUT, ShardMessage};
use sbc_core::net::{Flow, LocalId, Transport};
use sbc_core::policy::{NumberPattern, Policy, Route, TrunkId};
use sbc_core::refusal::Refusal;
use sbc_core::registrar::{
    Account, Accounts, AuthFailure, Change, Location, RegisterResult, Settings,
};
use sbc_core::sip::HeaderName;
use support::*;

/// alice's desk phone and softphone (extension 201), both behind NATs.
const DESK: &str = "203.0.113.20:40000";
const SOFT: &str = "203.0.113.21:5062";
const NUMBER: &str = "+3902999";

fn extension_policy(mut p: Policy) -> Policy {
    p.accounts = Accounts::new(
        Some(Settings::default()),
        ["alice", "alice-soft"]
            .into_iter()
            .map(|u| account(u, "201", "x"))
            .collect(),
    );
    // A DID from carrier-a (trunk 1) to extension 201.
    p.routes.push(Route {
        name: "did:+3902999".into(),
        from: vec![TrunkId(1)],
        numbers: vec![NumberPattern::Exact(NUMBER.into())],
        targets: vec![],
        failover: sbc_core::policy::Failover::standard(),
        extension: Some("201".into()),
    });
    p
}

fn binding(account: &str, at: &str, contact: &str, sim: &Sim) -> Change {
    binding_over(account, Flow::udp(addr(at), LocalId(0)), contact, sim)
}

/// `account` of extension 201 bound over `flow` for 10 minutes.
fn binding_over(account: &str, flow: Flow, contact: &str, sim: &Sim) -> Change {
    bound(
        account,
        "201",
        contact,
        flow,
        sim.now + Duration::from_secs(600),
        "r",
    )
}

/// A sim with both of alice's accounts registered (`which`).
fn sim_with(policy: Policy, which: &[&str]) -> Sim {
    let mut sim = Sim::with_policy(extension_policy(policy));
    let mut loc = Location::default();
    if which.contains(&"alice") {
        loc.apply(binding("alice", DESK, "sip:alice@10.1.1.2:5062", &sim));
    }
    if which.contains(&"alice-soft") {
        loc.apply(binding(
            "alice-soft",
            SOFT,
            "sip:alice-soft@192.168.1.9:5062;transport=udp",
            &sim,
        ));
    }
    sim.engine.set_location(loc);
    sim
}

/// The carrier calls the DID; returns the INVITEs each phone got.
fn call_in(sim: &mut Sim) -> (Sent, Sent) {
    sim.recv(
        CARRIER_A,
        &invite(CARRIER_A, NUMBER, "in-1", "z9hG4bKin1", 1),
    );
    let sent = sim.sent();
    (invite_to(&sent, DESK), invite_to(&sent, SOFT))
}

/// The carrier ACKs the 200 of [`call_in`]'s call (its To value `to`).
fn carrier_acks(sim: &mut Sim, to: &str) {
    sim.recv(
        CARRIER_A,
        &in_dialog(
            "ACK",
            "sip:192.0.2.1:5060",
            CARRIER_A,
            "z9hG4bKack",
            "\"Alice\" <sip:alice@10.0.0.20:5060>;tag=caller-tag",
            to,
            "in-1",
            1,
            "",
        ),
    );
}

/// The softphone answers its INVITE `soft` with 180.
fn soft_rings(sim: &mut Sim, soft: &Sent) {
    sim.recv(
        SOFT,
        &reply(
            soft,
            180,
            "Ringing",
            Some("soft-tag"),
            Some("sip:alice-soft@192.168.1.9:5062"),
            "",
        ),
    );
}

/// In `sent`: the 200 to the caller, and the CANCEL of `invite` (same
/// branch) to the phone at `other`, which did not answer.
fn answered_and_cancelled<'s>(
    sent: &'s [Sent],
    other: &str,
    invite: &Sent,
) -> (&'s Sent, &'s Sent) {
    let ok = sent
        .iter()
        .find(|s| s.to == addr(CARRIER_A))
        .expect("200 to the caller");
    assert_eq!(ok.code(), Some(200));
    let cancel = sent
        .iter()
        .find(|s| s.to == addr(other))
        .expect("CANCEL to the phone that did not answer");
    assert_eq!(cancel.method().as_deref(), Some("CANCEL"));
    assert_eq!(cancel.branch(), invite.branch());
    (ok, cancel)
}

/// The INVITE in `sent` that went to `a`.
fn invite_to(sent: &[Sent], a: &str) -> Sent {
    sent.iter()
        .find(|s| s.to == addr(a) && s.method().as_deref() == Some("INVITE"))
        .cloned()
        .unwrap_or_else(|| panic!("no INVITE to {a}: {sent:#?}"))
}

#[test]
fn both_phones_ring_the_first_answer_wins_and_the_other_is_cancelled() {
    let mut sim = sim_with(policy(), &["alice", "alice-soft"]);
    let (desk, soft) = call_in(&mut sim);
    // Each INVITE goes where the phone registered from, with its Contact
    // as the Request-URI; one B dialog (same Call-ID and From tag), two
    // branches.
    assert!(
        desk.text()
            .starts_with("INVITE sip:alice@10.1.1.2:5062 SIP/2.0\r\n"),
        "{}",
        desk.text()
    );
    assert!(
        soft.text()
            .starts_with("INVITE sip:alice-soft@192.168.1.9:5062;transport=udp SIP/2.0\r\n")
    );
    assert_eq!(
        desk.header(HeaderName::CallId),
        soft.header(HeaderName::CallId)
    );
    assert_eq!(desk.tag_of_from(), soft.tag_of_from());
    assert_ne!(desk.branch(), soft.branch());
    assert!(
        desk.header(HeaderName::To).starts_with("<sip:201@"),
        "{}",
        desk.header(HeaderName::To)
    );

    // Both ring; the caller hears one 180 per phone.
    sim.recv(
        DESK,
        &reply(
            &desk,
            180,
            "Ringing",
            Some("desk-tag"),
            Some("sip:alice@10.1.1.2:5062"),
            "",
        ),
    );
    soft_rings(&mut sim, &soft);
    let rings: Vec<Sent> = sim
        .sent()
        .into_iter()
        .filter(|s| s.to == addr(CARRIER_A))
        .collect();
    assert_eq!(rings.iter().filter(|s| s.code() == Some(180)).count(), 2);

    // The softphone answers: the caller gets its 200, the desk phone a
    // CANCEL of its INVITE (same branch), sent where its INVITE went.
    sim.recv(
        SOFT,
        &answer_200(&soft, "soft-tag", "sip:alice-soft@192.168.1.9:5062"),
    );
    let sent = sim.sent();
    let (ok, cancel) = answered_and_cancelled(&sent, DESK, &desk);
    assert!(sent.iter().all(|s| s.to != addr(SOFT)));
    // The desk phone: 200 to the CANCEL, 487 to the INVITE (ACKed).
    sim.recv(DESK, &reply(cancel, 200, "OK", Some("desk-tag"), None, ""));
    sim.recv(
        DESK,
        &reply(&desk, 487, "Request Terminated", Some("desk-tag"), None, ""),
    );
    let ack = sim.one_to(DESK);
    assert_eq!(ack.method().as_deref(), Some("ACK"));

    // The caller ACKs; the ACK and then its BYE go to the softphone, at
    // the address it registered from (not the private Contact host).
    let to = ok.header(HeaderName::To);
    carrier_acks(&mut sim, &to);
    let b_ack = sim.one_to(SOFT);
    assert_eq!(b_ack.method().as_deref(), Some("ACK"));
    assert!(
        b_ack
            .text()
            .starts_with("ACK sip:alice-soft@192.168.1.9:5062 SIP/2.0")
    );
    sim.recv(
        CARRIER_A,
        &in_dialog(
            "BYE",
            "sip:192.0.2.1:5060",
            CARRIER_A,
            "z9hG4bKbye",
            "\"Alice\" <sip:alice@10.0.0.20:5060>;tag=caller-tag",
            &to,
            "in-1",
            2,
            "",
        ),
    );
    let bye = sim.one_to(SOFT);
    assert_eq!(bye.method().as_deref(), Some("BYE"));

    // A BYE in the phone's dialog from another address is not the phone's.
    let from_phone = in_dialog(
        "BYE",
        "sip:192.0.2.1:5060",
        "203.0.113.99:5060",
        "z9hG4bKx",
        &reply(&soft, 200, "OK", Some("soft-tag"), None, "")
            .lines()
            .find(|l| l.starts_with("To: "))
            .unwrap()[4..],
        &soft.header(HeaderName::From),
        &soft.header(HeaderName::CallId),
        9,
        "",
    );
    sim.recv("203.0.113.99:5060", &from_phone);
    assert!(
        sim.sent().iter().all(|s| s.to != addr(CARRIER_A)),
        "relayed a stranger's BYE"
    );
}

/// The other phone answers too, its 200 crossing the CANCEL: it is
/// ACKed and hung up with a BYE (RFC 3261 §13.2.2.4) where that phone is,
/// not where the winner is; a retransmission of it is only ACKed again,
/// and nothing of it reaches the caller.
#[test]
fn a_second_phones_answer_is_acked_and_hung_up() {
    let mut sim = sim_with(policy(), &["alice", "alice-soft"]);
    let (desk, soft) = call_in(&mut sim);
    sim.recv(
        SOFT,
        &answer_200(&soft, "soft-tag", "sip:alice-soft@192.168.1.9:5062"),
    );
    let sent = sim.sent();
    assert!(
        sent.iter()
            .any(|s| s.to == addr(CARRIER_A) && s.code() == Some(200))
    );
    let late = answer_200(&desk, "desk-tag", "sip:alice@10.1.1.2:5062");
    let to_desk = |sent: &[Sent]| -> Vec<String> {
        assert!(
            sent.iter().all(|s| s.to != addr(CARRIER_A)),
            "relayed to the caller: {sent:#?}"
        );
        sent.iter()
            .filter(|s| s.to == addr(DESK))
            .filter_map(Sent::method)
            .collect()
    };
    sim.recv(DESK, &late);
    let sent = sim.sent();
    assert_eq!(to_desk(&sent), ["ACK", "BYE"]);
    let bye = sent
        .iter()
        .find(|s| s.method().as_deref() == Some("BYE"))
        .unwrap()
        .clone();
    sim.recv(DESK, &late);
    assert_eq!(to_desk(&sim.sent()), ["ACK"]);
    // The desk phone answers the BYE: its 200 is taken (it comes from
    // where the BYE went, not from the call's callee), so the BYE is not
    // sent again.
    sim.recv(DESK, &reply(&bye, 200, "OK", None, None, ""));
    let later = sim.advance(Duration::from_secs(5));
    assert!(
        later
            .iter()
            .all(|(_, s)| !(s.to == addr(DESK) && s.method().as_deref() == Some("BYE"))),
        "the BYE went again: {later:#?}"
    );
}

/// Two phones registered on different listeners: each fork's INVITE
/// leaves from its phone's own, and the CANCEL to the one that lost, like
/// the ACK and BYE to a late answer, carries that INVITE's Via (RFC 3261
/// §9.1), not the winner's.
#[test]
fn each_fork_keeps_its_own_listener_in_its_cancel() {
    let mut p = extension_policy(policy());
    p.listeners.push(sbc_core::policy::Listener {
        transport: Transport::Udp,
        bind: addr("192.0.2.2:5060"),
        advertise: "192.0.2.2:5060".into(),
    });
    let mut sim = Sim::with_policy(p);
    let mut loc = Location::default();
    loc.apply(binding("alice", DESK, "sip:alice@10.1.1.2:5062", &sim));
    loc.apply(binding_over(
        "alice-soft",
        Flow::udp(addr(SOFT), LocalId(1)),
        "sip:alice-soft@192.168.1.9:5062",
        &sim,
    ));
    sim.engine.set_location(loc);
    let (desk, soft) = call_in(&mut sim);
    let via = |s: &Sent| s.header(HeaderName::Via);
    assert!(
        via(&desk).starts_with("SIP/2.0/UDP 192.0.2.1:5060;"),
        "{}",
        desk.text()
    );
    assert!(
        via(&soft).starts_with("SIP/2.0/UDP 192.0.2.2:5060;"),
        "{}",
        soft.text()
    );
    // Both ring; the desk phone answers: the soft phone is cancelled.
    sim.recv(SOFT, &reply(&soft, 180, "Ringing", Some("st"), None, ""));
    sim.recv(
        DESK,
        &answer_200(&desk, "desk-tag", "sip:alice@10.1.1.2:5062"),
    );
    let sent = sim.sent();
    let cancel = sent
        .iter()
        .find(|s| s.to == addr(SOFT) && s.method().as_deref() == Some("CANCEL"))
        .expect("CANCEL to the soft phone");
    assert_eq!(via(cancel), via(&soft), "{}", cancel.text());
    // Its 200 crosses the CANCEL: ACK and BYE leave from its listener too.
    sim.recv(
        SOFT,
        &answer_200(&soft, "st", "sip:alice-soft@192.168.1.9:5062"),
    );
    let sent = sim.sent();
    for m in sent.iter().filter(|s| s.to == addr(SOFT)) {
        assert!(
            via(m).starts_with("SIP/2.0/UDP 192.0.2.2:5060;"),
            "{}",
            m.text()
        );
    }
    assert_eq!(sent.iter().filter(|s| s.to == addr(SOFT)).count(), 2);
}

#[test]
fn nobody_registered_is_480() {
    let mut sim = sim_with(policy(), &[]);
    sim.recv(
        CARRIER_A,
        &invite(CARRIER_A, NUMBER, "in-2", "z9hG4bKin2", 1),
    );
    let sent = sim.sent();
    let answer = sent
        .iter()
        .find(|s| s.code().is_some_and(|c| c >= 200))
        .unwrap();
    assert_eq!(answer.code(), Some(480));
    assert_eq!(sim.rejected(Refusal::NotRegistered), 1);
    // An expired binding is nobody too.
    let mut sim = sim_with(policy(), &["alice"]);
    sim.advance(Duration::from_secs(601));
    sim.recv(
        CARRIER_A,
        &invite(CARRIER_A, NUMBER, "in-3", "z9hG4bKin3", 1),
    );
    assert!(sim.sent().iter().any(|s| s.code() == Some(480)));
    // So is one whose keepalives go unanswered.
    let mut sim = sim_with(policy(), &["alice"]);
    let mut loc = sim.engine.location().clone();
    loc.apply(Change::Reachable {
        account: "alice".into(),
        reachable: false,
    });
    sim.engine.set_location(loc);
    sim.recv(
        CARRIER_A,
        &invite(CARRIER_A, NUMBER, "in-4", "z9hG4bKin4", 1),
    );
    let sent = sim.sent();
    assert!(sent.iter().all(|s| s.to != addr(DESK)), "{sent:?}");
    assert!(sent.iter().any(|s| s.code() == Some(480)));
}

#[test]
fn when_every_phone_fails_the_best_answer_goes_back_after_the_last() {
    let mut sim = sim_with(policy(), &["alice", "alice-soft"]);
    let (desk, soft) = call_in(&mut sim);
    sim.recv(DESK, &reply(&desk, 486, "Busy Here", Some("d"), None, ""));
    // The desk phone's 486 is ACKed, but the caller waits for the other.
    let sent = sim.sent();
    assert!(
        sent.iter()
            .any(|s| s.to == addr(DESK) && s.method().as_deref() == Some("ACK"))
    );
    assert!(
        sent.iter()
            .all(|s| s.to != addr(CARRIER_A) || s.code() < Some(200))
    );
    sim.recv(
        SOFT,
        &reply(&soft, 480, "Temporarily Unavailable", Some("s"), None, ""),
    );
    let sent = sim.sent();
    let answer = sent.iter().find(|s| s.to == addr(CARRIER_A)).unwrap();
    // RFC 3261 §16.7: 486 is preferred over 480.
    assert_eq!(answer.code(), Some(486), "{}", answer.text());
}

/// RFC 3261 §16.7: a 6xx from one phone ends the search. The phone
/// still ringing gets CANCEL, the caller gets the 6xx at once, and the
/// other phone's 487 goes no further than its ACK.
#[test]
fn a_decline_from_one_phone_stops_the_other_ringing() {
    let mut sim = sim_with(policy(), &["alice", "alice-soft"]);
    let (desk, soft) = call_in(&mut sim);
    sim.recv(SOFT, &reply(&soft, 180, "Ringing", Some("s"), None, ""));
    let _ = sim.sent();
    sim.recv(DESK, &reply(&desk, 603, "Decline", Some("d"), None, ""));
    let sent = sim.sent();
    let cancel = sent
        .iter()
        .find(|s| s.to == addr(SOFT) && s.method().as_deref() == Some("CANCEL"))
        .unwrap_or_else(|| panic!("no CANCEL to the soft phone: {sent:#?}"));
    let answer = sent
        .iter()
        .find(|s| s.to == addr(CARRIER_A) && s.code() >= Some(200))
        .unwrap_or_else(|| panic!("no final answer to the carrier: {sent:#?}"));
    assert_eq!(answer.code(), Some(603), "{}", answer.text());
    sim.recv(SOFT, &reply(cancel, 200, "OK", Some("s"), None, ""));
    sim.recv(
        SOFT,
        &reply(&soft, 487, "Request Terminated", Some("s"), None, ""),
    );
    let sent = sim.sent();
    assert!(
        sent.iter()
            .any(|s| s.to == addr(SOFT) && s.method().as_deref() == Some("ACK")),
        "{sent:#?}"
    );
    assert!(sent.iter().all(|s| s.to != addr(CARRIER_A)), "{sent:#?}");
}

#[test]
fn a_phone_that_never_answers_does_not_hold_up_the_other() {
    let mut sim = sim_with(policy(), &["alice", "alice-soft"]);
    let (desk, _soft) = call_in(&mut sim);
    sim.recv(DESK, &reply(&desk, 180, "Ringing", Some("d"), None, ""));
    sim.sent();
    // Long after the silent softphone's INVITE transaction gave up.
    sim.advance(Duration::from_secs(40));
    sim.recv(DESK, &answer_200(&desk, "d", "sip:alice@10.1.1.2:5062"));
    let sent = sim.sent();
    assert!(
        sent.iter()
            .any(|s| s.to == addr(CARRIER_A) && s.code() == Some(200)),
        "{:#?}",
        sent.iter()
            .map(|s| (s.to, s.text().lines().next().unwrap_or("").to_owned()))
            .collect::<Vec<_>>()
    );
}

/// A BYE from the phone at `at` in its early dialog `tag` of the B leg
/// whose INVITE was `invite`.
fn early_bye(invite: &Sent, at: &str, tag: &str) -> String {
    in_dialog(
        "BYE",
        "sip:192.0.2.1",
        at,
        "z9hG4bKearlybye",
        &format!("<sip:alice@{at}>;tag={tag}"),
        &invite.header(HeaderName::From),
        &invite.header(HeaderName::CallId),
        7,
        "",
    )
}

#[test]
fn a_phone_that_byes_its_early_dialog_stops_ringing_alone() {
    // RFC 3261 §15: a callee must not BYE an early dialog; a phone that
    // does gives up its own fork, not the other phone's.
    let mut sim = sim_with(policy(), &["alice", "alice-soft"]);
    let (desk, soft) = call_in(&mut sim);
    sim.recv(DESK, &reply(&desk, 180, "Ringing", Some("d"), None, ""));
    soft_rings(&mut sim, &soft);
    sim.sent();
    sim.recv(DESK, &early_bye(&desk, DESK, "d"));
    let sent = sim.sent();
    let at = |a: &str| -> Vec<(Option<u16>, Option<String>)> {
        sent.iter()
            .filter(|s| s.to == addr(a))
            .map(|s| (s.code(), s.method()))
            .collect()
    };
    assert_eq!(at(DESK)[0], (Some(200), None), "{:?}", at(DESK));
    let cancel = sent
        .iter()
        .find(|s| s.method().as_deref() == Some("CANCEL"))
        .expect("a CANCEL");
    assert_eq!(cancel.to, addr(DESK), "the desk phone's fork is cancelled");
    assert_eq!(cancel.branch(), desk.branch());
    assert!(
        at(SOFT).is_empty(),
        "the softphone rings on: {:?}",
        at(SOFT)
    );
    sim.recv(DESK, &reply(cancel, 200, "OK", Some("d"), None, ""));
    sim.recv(
        DESK,
        &reply(&desk, 487, "Request Terminated", Some("d"), None, ""),
    );
    assert!(
        sim.sent().iter().all(|s| s.to != addr(CARRIER_A)),
        "the caller hears nothing yet: the softphone still rings"
    );
    sim.recv(
        SOFT,
        &answer_200(&soft, "soft-tag", "sip:alice-soft@192.168.1.9:5062"),
    );
    assert!(
        sim.sent()
            .iter()
            .any(|s| s.to == addr(CARRIER_A) && s.code() == Some(200)),
        "the softphone's answer reaches the caller"
    );
}

#[test]
fn an_early_bye_in_no_early_dialog_is_481_and_cancels_nothing() {
    let mut sim = sim_with(policy(), &["alice", "alice-soft"]);
    let (desk, soft) = call_in(&mut sim);
    soft_rings(&mut sim, &soft);
    sim.recv(DESK, &reply(&desk, 180, "Ringing", Some("d"), None, ""));
    sim.sent();
    // A tag no phone answered with.
    sim.recv(DESK, &early_bye(&desk, DESK, "nobody"));
    let sent = sim.sent();
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(sent[0].to, addr(DESK));
    assert_eq!(sent[0].code(), Some(481));
}

/// The caller sends INFO in the early dialog of `ringing` (the 1xx it
/// got from [`call_in`]'s call).
fn caller_info(sim: &mut Sim, ringing: &Sent) {
    sim.recv(
        CARRIER_A,
        &in_dialog(
            "INFO",
            "sip:192.0.2.1:5060",
            CARRIER_A,
            "z9hG4bKinfo",
            "\"Alice\" <sip:alice@10.0.0.20:5060>;tag=caller-tag",
            &ringing.header(HeaderName::To),
            "in-1",
            2,
            "",
        ),
    );
}

#[test]
fn a_failed_fork_leaves_the_early_dialog_with_the_phone_that_rings() {
    let mut sim = sim_with(policy(), &["alice", "alice-soft"]);
    let (desk, soft) = call_in(&mut sim);
    sim.recv(DESK, &reply(&desk, 180, "Ringing", Some("d"), None, ""));
    let ringing = sim.one_to(CARRIER_A);
    // The softphone is busy: its failure waits for the desk phone's answer.
    sim.recv(SOFT, &reply(&soft, 486, "Busy Here", Some("s"), None, ""));
    sim.sent();
    // The caller's INFO in its early dialog reaches the phone that rings,
    // not the one that refused.
    caller_info(&mut sim, &ringing);
    let info = sim.one_to(DESK);
    assert_eq!(info.method().as_deref(), Some("INFO"));
    // And the desk phone's INFO in its early dialog reaches the caller.
    sim.recv(
        DESK,
        &in_dialog(
            "INFO",
            "sip:192.0.2.1",
            DESK,
            "z9hG4bKdeskinfo",
            &format!("<sip:alice@{DESK}>;tag=d"),
            &desk.header(HeaderName::From),
            &desk.header(HeaderName::CallId),
            3,
            "",
        ),
    );
    let info = sim.one_to(CARRIER_A);
    assert_eq!(info.method().as_deref(), Some("INFO"));
}

#[test]
fn each_early_dialog_has_its_own_route_set() {
    // RFC 3261 §12.1.2: the route set comes from the Record-Route of the
    // response that makes the dialog. The desk phone's 180 came through a
    // proxy; the softphone's, which the B leg follows next, did not.
    let mut sim = sim_with(policy(), &["alice", "alice-soft"]);
    let (desk, soft) = call_in(&mut sim);
    sim.recv(
        DESK,
        &reply(&desk, 180, "Ringing", Some("d"), None, "").replacen(
            "Server: CarrierSwitch/9\r\n",
            "Server: CarrierSwitch/9\r\nRecord-Route: <sip:edge.example;lr>\r\n",
            1,
        ),
    );
    let ringing = sim.one_to(CARRIER_A);
    soft_rings(&mut sim, &soft);
    sim.sent();
    caller_info(&mut sim, &ringing);
    let info = sim.one_to(SOFT);
    assert_eq!(info.method().as_deref(), Some("INFO"));
    assert_eq!(info.header(HeaderName::Route), "", "{}", info.text());
}

#[test]
fn a_silent_phone_holds_the_caller_only_until_its_no_response_timer() {
    // The softphone's registration is stale: it never answers. The desk
    // phone rings, then declines. The caller hears 486 once the softphone's
    // no-response timer (4 s) gives it up, not at its timer B (32 s).
    let mut sim = sim_with(policy(), &["alice", "alice-soft"]);
    let (desk, _soft) = call_in(&mut sim);
    sim.recv(DESK, &reply(&desk, 180, "Ringing", Some("d"), None, ""));
    sim.recv(DESK, &reply(&desk, 486, "Busy Here", Some("d"), None, ""));
    let sent = sim.sent();
    assert!(
        sent.iter()
            .all(|s| !(s.to == addr(CARRIER_A) && s.code().is_some_and(|c| c >= 300))),
        "no final answer while the softphone may still answer"
    );
    let later = sim.advance(Duration::from_secs(10));
    let (at, busy) = later
        .iter()
        .find(|(_, s)| s.to == addr(CARRIER_A) && s.code().is_some_and(|c| c >= 300))
        .expect("a final answer to the caller");
    assert_eq!(busy.code(), Some(486), "the best answer (RFC 3261 §16.7)");
    assert!(*at <= Duration::from_secs(5), "at {at:?}");
}

#[test]
fn a_phone_that_rings_on_keeps_ringing_when_another_stays_silent() {
    let mut sim = sim_with(policy(), &["alice", "alice-soft"]);
    let (desk, _soft) = call_in(&mut sim);
    sim.recv(DESK, &reply(&desk, 180, "Ringing", Some("d"), None, ""));
    sim.sent();
    // Past the silent softphone's no-response timer: nothing is cancelled
    // and the caller hears no failure; the desk phone still may answer.
    let later = sim.advance(Duration::from_secs(10));
    assert!(
        later.iter().all(|(_, s)| s.to != addr(CARRIER_A)
            && !(s.to == addr(DESK) && s.method().as_deref() == Some("CANCEL"))),
        "{later:#?}"
    );
    sim.recv(DESK, &answer_200(&desk, "d", "sip:alice@10.1.1.2:5062"));
    assert!(
        sim.sent()
            .iter()
            .any(|s| s.to == addr(CARRIER_A) && s.code() == Some(200))
    );
}

#[test]
fn timer_c_cancels_each_phone_that_rang_too_long_in_its_turn() {
    // RFC 3261 §16.6 step 11 (timer C, 181 s) with max ringing set longer:
    // the desk phone rang first, so it is CANCELled first, while the
    // softphone rings on until its own timer C; then the caller hears 408.
    let mut p = policy();
    p.call_timers.max_ringing = Duration::from_secs(600);
    let mut sim = sim_with(p, &["alice", "alice-soft"]);
    let (desk, soft) = call_in(&mut sim);
    sim.recv(DESK, &reply(&desk, 180, "Ringing", Some("d"), None, ""));
    // Within the no-response timer (4 s), or it would be given up.
    sim.advance(Duration::from_secs(3));
    soft_rings(&mut sim, &soft);
    sim.sent();
    let cancel_to = |sent: &[(Duration, Sent)], a: &str| {
        sent.iter()
            .find(|(_, s)| s.to == addr(a) && s.method().as_deref() == Some("CANCEL"))
            .map(|(at, s)| (*at, s.clone()))
    };
    let sent = sim.advance(Duration::from_secs(179));
    let (at, cancel) = cancel_to(&sent, DESK).expect("the desk phone is CANCELled");
    assert_eq!(at.as_secs(), 181);
    assert_eq!(cancel.branch(), desk.branch());
    assert!(cancel_to(&sent, SOFT).is_none(), "the softphone rings on");
    assert!(
        sent.iter().all(|(_, s)| s.to != addr(CARRIER_A)),
        "the caller hears nothing while the softphone rings"
    );
    sim.recv(DESK, &reply(&cancel, 200, "OK", Some("d"), None, ""));
    sim.recv(
        DESK,
        &reply(&desk, 487, "Request Terminated", Some("d"), None, ""),
    );
    let sent = sim.advance(Duration::from_secs(5));
    let (at, cancel) = cancel_to(&sent, SOFT).expect("then the softphone");
    assert_eq!(at.as_secs(), 184);
    assert_eq!(cancel.branch(), soft.branch());
    // No phone left: the caller hears 408 (RFC 3261 §16.6 step 11).
    let (at, last) = sent
        .iter()
        .find(|(_, s)| s.to == addr(CARRIER_A))
        .expect("a final answer to the caller");
    assert_eq!(at.as_secs(), 184);
    assert_eq!(last.code(), Some(408));
}

#[test]
fn phone_media_is_anchored_and_may_use_the_address_it_registered_from() {
    let mut sim = sim_with(media_policy(), &["alice"]);
    sim.recv(
        CARRIER_A,
        &invite(CARRIER_A, NUMBER, "in-4", "z9hG4bKin4", 1),
    );
    let desk = sim.sent().into_iter().find(|s| s.to == addr(DESK)).unwrap();
    // The phone gets the SBC's relay address, not the carrier's.
    assert!(
        desk.text().contains("c=IN IP4 198.51.100.1"),
        "{}",
        desk.text()
    );
    let phone_sdp = "v=0\r\no=- 3 3 IN IP4 203.0.113.20\r\ns=-\r\nc=IN IP4 203.0.113.20\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n";
    sim.recv(
        DESK,
        &reply(
            &desk,
            200,
            "OK",
            Some("d"),
            Some("sip:alice@10.1.1.2:5062"),
            phone_sdp,
        ),
    );
    let ok = sim
        .sent()
        .into_iter()
        .find(|s| s.to == addr(CARRIER_A))
        .unwrap();
    assert_eq!(ok.code(), Some(200), "{}", ok.text());
    assert!(ok.text().contains("c=IN IP4 198.51.100.1") && !ok.text().contains("203.0.113.20"));
}

#[test]
fn a_losing_phones_early_media_cannot_take_the_latch_behind_a_shared_nat() {
    // Both of alice's phones register from one NAT's address. The desk
    // phone sends early media (183 with SDP), then the softphone answers:
    // the desk phone's RTP still in flight is dropped, and the softphone's
    // is relayed to the caller.
    const NAT_DESK: &str = "203.0.113.40:40000";
    const NAT_SOFT: &str = "203.0.113.40:40002";
    let mut sim = Sim::with_policy(extension_policy(media_policy()));
    let mut loc = Location::default();
    loc.apply(binding("alice", NAT_DESK, "sip:alice@10.1.1.2:5062", &sim));
    loc.apply(binding(
        "alice-soft",
        NAT_SOFT,
        "sip:alice-soft@10.1.1.3:5062",
        &sim,
    ));
    sim.engine.set_location(loc);
    sim.recv(
        CARRIER_A,
        &invite(CARRIER_A, NUMBER, "in-nat", "z9hG4bKinnat", 1),
    );
    let sent = sim.sent();
    let (desk, soft) = (invite_to(&sent, NAT_DESK), invite_to(&sent, NAT_SOFT));
    let port = |s: &Sent| -> u16 {
        let text = s.text();
        let line = text.lines().find(|l| l.starts_with("m=audio ")).unwrap();
        line.split(' ').nth(1).unwrap().parse().unwrap()
    };
    let b_port = port(&desk);
    assert_eq!(port(&soft), b_port, "one callee side for every fork");
    let rtp = |seq: u16| {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&[0u8; 160]);
        p
    };
    let phone_sdp = |ip: &str, rtp: u16| {
        format!(
            "v=0\r\no=- 3 3 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {rtp} RTP/AVP 0\r\n"
        )
    };
    sim.recv(
        NAT_DESK,
        &reply(
            &desk,
            183,
            "Session Progress",
            Some("d"),
            Some("sip:alice@10.1.1.2:5062"),
            &phone_sdp("10.1.1.2", 7000),
        ),
    );
    assert!(
        sim.media("203.0.113.40:61000", b_port, &rtp(1)).is_some(),
        "early media from the desk phone reaches the caller"
    );
    sim.recv(
        NAT_SOFT,
        &reply(
            &soft,
            200,
            "OK",
            Some("s"),
            Some("sip:alice-soft@10.1.1.3:5062"),
            &phone_sdp("10.1.1.3", 8000),
        ),
    );
    sim.sent();
    assert!(
        sim.media("203.0.113.40:61000", b_port, &rtp(2)).is_none(),
        "the desk phone's packet in flight is dropped"
    );
    assert!(
        sim.media("203.0.113.40:62000", b_port, &rtp(3)).is_some(),
        "the softphone that answered is heard"
    );
}

#[test]
fn a_phone_on_loopback_may_send_media_from_its_own_address_only() {
    const LOCAL_PHONE: &str = "127.0.0.5:5062";
    let run = |sdp_host: &str| -> u16 {
        let mut sim = Sim::with_policy(extension_policy(media_policy()));
        let mut loc = Location::default();
        loc.apply(binding(
            "alice",
            LOCAL_PHONE,
            "sip:alice@127.0.0.5:5062",
            &sim,
        ));
        sim.engine.set_location(loc);
        sim.recv(
            CARRIER_A,
            &invite(CARRIER_A, NUMBER, "in-5", "z9hG4bKin5", 1),
        );
        let inv = sim
            .sent()
            .into_iter()
            .find(|s| s.to == addr(LOCAL_PHONE))
            .unwrap();
        let sdp = format!(
            "v=0\r\no=- 3 3 IN IP4 {sdp_host}\r\ns=-\r\nc=IN IP4 {sdp_host}\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n"
        );
        sim.recv(
            LOCAL_PHONE,
            &reply(
                &inv,
                200,
                "OK",
                Some("d"),
                Some("sip:alice@127.0.0.5:5062"),
                &sdp,
            ),
        );
        sim.sent()
            .into_iter()
            .find(|s| s.to == addr(CARRIER_A) && s.code().is_some_and(|c| c >= 200))
            .and_then(|s| s.code())
            .unwrap()
    };
    // Its own address: fine. Another loopback address: not relayed there.
    assert_eq!(run("127.0.0.5"), 200);
    assert_eq!(run("127.0.0.9"), 488);
}

// --- Calls from phones -----------------------------------------------------

/// bob (extension 202) calls from here, behind a NAT.
const BOB: &str = "203.0.113.30:41000";

/// The extension policy plus bob's account, and a route for phones
/// (no source trunk) to +44 via carrier-a.
fn phones_policy() -> Policy {
    let mut p = extension_policy(policy());
    let mut accounts: Vec<Account> = p.accounts.all().to_vec();
    accounts.push(account("bob", "202", "bobs-secret"));
    p.accounts = Accounts::new(Some(Settings::default()), accounts);
    p.acl.strangers.per_source = 100;
    p.routes.push(Route {
        name: "phones-out".into(),
        from: vec![],
        numbers: vec![NumberPattern::Prefix("+44".into())],
        targets: vec![sbc_core::policy::Target {
            trunk: TrunkId(1),
            priority: 1,
            weight: 1,
        }],
        failover: sbc_core::policy::Failover::standard(),
        extension: None,
    });
    p
}

/// bob's INVITE to `number` (CSeq `cseq`), with `auth` header lines.
fn bob_invite(number: &str, cseq: u32, auth: &str) -> String {
    invite(BOB, number, "bob-call", &format!("z9hG4bKbob{cseq}"), cseq).replacen(
        "Content-Type:",
        &format!("{auth}Content-Type:"),
        1,
    )
}

/// bob's answer to a 407: the Proxy-Authorization line.
fn proxy_auth(challenge: &Sent, number: &str, password: &str) -> String {
    let uri = format!("sip:{number}@192.0.2.1:5060");
    proxy_authorization(challenge, "bob", password, &uri, "bobcn")
}

/// bob calls `number`: 407, then the INVITE with credentials; returns
/// what the SBC sent after the second INVITE.
fn bob_calls(sim: &mut Sim, number: &str, password: &str) -> Vec<Sent> {
    sim.recv(BOB, &bob_invite(number, 1, ""));
    let challenge = sim.one_to(BOB);
    assert_eq!(challenge.code(), Some(407), "{}", challenge.text());
    sim.recv(
        BOB,
        &bob_invite(number, 2, &proxy_auth(&challenge, number, password)),
    );
    sim.sent()
}

#[test]
fn a_phone_authenticates_with_407_and_calls_out_with_its_extension_as_caller() {
    let mut sim = Sim::with_policy(phones_policy());
    let sent = bob_calls(&mut sim, "+441234567", "bobs-secret");
    let out = &invite_to(&sent, CARRIER_A);
    // The carrier sees the extension number as the caller, and nothing of
    // the credentials.
    assert!(
        out.header(HeaderName::From).contains("<sip:202@"),
        "{}",
        out.text()
    );
    assert!(!out.text().contains("Proxy-Authorization"));
    // The call runs: the carrier answers, bob ACKs and hangs up.
    sim.recv(
        CARRIER_A,
        &answer_200(out, "carrier-tag", "sip:callee@10.0.0.20"),
    );
    let ok = sim.one_to(BOB);
    assert_eq!(ok.code(), Some(200));
    let to = ok.header(HeaderName::To);
    let from = "\"Alice\" <sip:alice@203.0.113.30:41000>;tag=caller-tag";
    sim.recv(
        BOB,
        &in_dialog(
            "ACK",
            "sip:192.0.2.1:5060",
            BOB,
            "z9hG4bKback",
            from,
            &to,
            "bob-call",
            2,
            "",
        ),
    );
    assert_eq!(sim.one_to(CARRIER_A).method().as_deref(), Some("ACK"));
    // Only bob's address may hang up his call.
    sim.recv(
        "203.0.113.31:41000",
        &in_dialog(
            "BYE",
            "sip:192.0.2.1:5060",
            "203.0.113.31:41000",
            "z9hG4bKx",
            from,
            &to,
            "bob-call",
            3,
            "",
        ),
    );
    assert!(sim.sent().iter().all(|s| s.to != addr(CARRIER_A)));
    sim.recv(
        BOB,
        &in_dialog(
            "BYE",
            "sip:192.0.2.1:5060",
            BOB,
            "z9hG4bKbye",
            from,
            &to,
            "bob-call",
            3,
            "",
        ),
    );
    assert_eq!(sim.first_to(CARRIER_A).method().as_deref(), Some("BYE"));
}

/// `policy` with `username`'s account held to TLS (and WSS).
fn held_to_tls(mut p: Policy, username: &str) -> Policy {
    let accounts = p
        .accounts
        .all()
        .iter()
        .map(|a| Account {
            transports: if &*a.username == username {
                vec![Transport::Tls, Transport::Wss]
            } else {
                a.transports.clone()
            },
            ..a.clone()
        })
        .collect();
    p.accounts = Accounts::new(Some(Settings::default()), accounts);
    p
}

/// An account's `transports` hold for calls too (issue 11 item 4): held
/// to TLS, its binding made over UDP is not rung (its other account
/// still is), and its INVITE over UDP is refused as if its password were
/// wrong, counted as a transport failure, with nothing reaching the
/// carrier.
#[test]
fn an_account_held_to_tls_is_neither_rung_nor_heard_over_udp() {
    let mut sim = sim_with(policy(), &["alice", "alice-soft"]);
    let held = held_to_tls(extension_policy(policy()), "alice");
    sim.engine.set_policy(sim.now, std::sync::Arc::new(held));
    sim.recv(
        CARRIER_A,
        &invite(CARRIER_A, NUMBER, "in-tls", "z9hG4bKintls", 1),
    );
    let sent = sim.sent();
    assert!(sent.iter().all(|s| s.to != addr(DESK)), "{sent:#?}");
    invite_to(&sent, SOFT);

    let mut sim = Sim::with_policy(held_to_tls(phones_policy(), "bob"));
    let sent = bob_calls(&mut sim, "+441234567", "bobs-secret");
    assert!(sent.iter().all(|s| s.to != addr(CARRIER_A)), "{sent:#?}");
    let again = sent.iter().find(|s| s.to == addr(BOB)).unwrap();
    assert_eq!(again.code(), Some(407), "{}", again.text());
    let transport = sim.stats.auth_failures[AuthFailure::Transport as usize]
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(transport, 1);
    // The same account over UDP, not held: the call goes out.
    let mut sim = Sim::with_policy(phones_policy());
    let sent = bob_calls(&mut sim, "+441234567", "bobs-secret");
    invite_to(&sent, CARRIER_A);
}

/// A phone behind NAT whose requests name its private address and ask
/// for no `rport` is still answered where they came from (symmetric
/// response routing, on for phones): the 200 to its BYE goes to the NAT's
/// port, not to the port its Via names.
#[test]
fn a_phone_without_rport_is_answered_where_it_sent_from() {
    let mut sim = Sim::with_policy(phones_policy());
    let sent = bob_calls(&mut sim, "+441234567", "bobs-secret");
    let out = invite_to(&sent, CARRIER_A);
    sim.recv(
        CARRIER_A,
        &answer_200(&out, "carrier-tag", "sip:callee@10.0.0.20"),
    );
    let ok = sim.one_to(BOB);
    let to = ok.header(HeaderName::To);
    let from = "\"Alice\" <sip:alice@203.0.113.30:41000>;tag=caller-tag";
    let private = |method: &str, branch: &str, cseq: u32| {
        in_dialog(
            method,
            "sip:192.0.2.1:5060",
            "10.1.1.5:5060",
            branch,
            from,
            &to,
            "bob-call",
            cseq,
            "",
        )
        .replacen(";rport", "", 1)
    };
    sim.recv(BOB, &private("ACK", "z9hG4bKnat-ack", 2));
    assert_eq!(sim.one_to(CARRIER_A).method().as_deref(), Some("ACK"));
    sim.recv(BOB, &private("BYE", "z9hG4bKnat-bye", 3));
    let bye = sim.first_to(CARRIER_A);
    assert_eq!(bye.method().as_deref(), Some("BYE"));
    sim.recv(CARRIER_A, &reply(&bye, 200, "OK", None, None, ""));
    let sent = sim.sent();
    let answered: Vec<&Sent> = sent.iter().filter(|s| s.code().is_some()).collect();
    assert_eq!(answered.len(), 1, "{sent:#?}");
    assert_eq!(answered[0].code(), Some(200));
    assert_eq!(answered[0].to, addr(BOB), "{sent:#?}");
}

/// A phone's requests other than INVITE and REGISTER (an OPTIONS
/// keepalive, a MESSAGE) are challenged with 407 too. With its
/// credentials an OPTIONS gets 200, a MESSAGE, which the SBC does not
/// relay, 405, a BYE outside any dialog 481, and an OPTIONS requiring an
/// extension the SBC lacks 420. Without a registrar they are a
/// stranger's: 403.
#[test]
fn a_phones_other_requests_are_challenged_then_answered() {
    let mut sim = Sim::with_policy(phones_policy());
    let request = |method: &str, cseq: u32, auth: &str| {
        format!(
            "{method} sip:192.0.2.1:5060 SIP/2.0\r\n\
             Via: SIP/2.0/UDP {BOB};branch=z9hG4bK{method}{cseq};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:bob@sbc.test>;tag=b{cseq}\r\n\
             To: <sip:192.0.2.1>\r\n\
             Call-ID: bob-{method}\r\n\
             CSeq: {cseq} {method}\r\n\
             {auth}Content-Length: 0\r\n\r\n"
        )
    };
    for (method, want) in [("OPTIONS", 200), ("MESSAGE", 405), ("BYE", 481)] {
        sim.recv(BOB, &request(method, 1, ""));
        let challenge = sim.one_to(BOB);
        assert_eq!(challenge.code(), Some(407), "{}", challenge.text());
        let auth = proxy_authorization_for(
            &challenge,
            method,
            "bob",
            "bobs-secret",
            "sip:192.0.2.1:5060",
            "c1",
        );
        sim.recv(BOB, &request(method, 2, &auth));
        let answer = sim.one_to(BOB);
        assert_eq!(answer.code(), Some(want), "{}", answer.text());
    }
    sim.recv(BOB, &request("OPTIONS", 3, "Require: foo\r\n"));
    let challenge = sim.one_to(BOB);
    assert_eq!(challenge.code(), Some(407), "{}", challenge.text());
    let auth = proxy_authorization_for(
        &challenge,
        "OPTIONS",
        "bob",
        "bobs-secret",
        "sip:192.0.2.1:5060",
        "c2",
    );
    sim.recv(
        BOB,
        &request("OPTIONS", 4, &format!("Require: foo\r\n{auth}")),
    );
    let answer = sim.one_to(BOB);
    assert_eq!(answer.code(), Some(420), "{}", answer.text());
    let mut plain = Sim::new();
    plain.recv(BOB, &request("OPTIONS", 1, ""));
    assert_eq!(plain.one_to(BOB).code(), Some(403));
}

#[test]
fn phones_call_each_other_by_extension_number() {
    let mut sim = Sim::with_policy(phones_policy());
    let mut loc = Location::default();
    loc.apply(binding("alice", DESK, "sip:alice@10.1.1.2:5062", &sim));
    sim.engine.set_location(loc);
    let sent = bob_calls(&mut sim, "201", "bobs-secret");
    let ring = sent
        .iter()
        .find(|s| s.to == addr(DESK))
        .unwrap_or_else(|| panic!("{sent:#?}"));
    assert!(
        ring.text()
            .starts_with("INVITE sip:alice@10.1.1.2:5062 SIP/2.0")
    );
    assert!(ring.header(HeaderName::From).contains("<sip:202@"));
}

#[test]
fn wrong_credentials_or_none_never_start_a_call() {
    let mut sim = Sim::with_policy(phones_policy());
    let sent = bob_calls(&mut sim, "+441234567", "guess");
    // Challenged again, as for an unknown user.
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(sent[0].code(), Some(407));
    assert!(!sent[0].header(HeaderName::ProxyAuthenticate).is_empty());
    assert_eq!(sent[0].to, addr(BOB));
    assert_eq!(sim.engine.calls(), 0);
    // Its retransmission gets the same answer, and is not counted again.
    let wrong = bob_invite(
        "+441234567",
        3,
        &proxy_auth(&sent[0], "+441234567", "guess"),
    );
    let before = sim.stats.phone_auth[RegisterResult::AuthFailed as usize]
        .load(std::sync::atomic::Ordering::Relaxed);
    sim.recv(BOB, &wrong);
    let first = sim.one_to(BOB);
    assert_eq!(first.code(), Some(407));
    sim.recv(BOB, &wrong);
    assert_eq!(sim.one_to(BOB).bytes, first.bytes);
    let after = sim.stats.phone_auth[RegisterResult::AuthFailed as usize]
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(after - before, 1);
    // Without a registrar a phone is a stranger: 403 at once.
    let mut plain = Sim::new();
    plain.recv(BOB, &bob_invite("+441234567", 1, ""));
    assert_eq!(plain.one_to(BOB).code(), Some(403));
}

/// Two shards of two: the one that owns extension 201's bindings, and the
/// other; alice registered (on the owner).
fn two_shards() -> (Sim, Sim) {
    two_shards_with(policy)
}

/// Two shards with the policy `p` makes (each its own).
fn two_shards_with(p: impl Fn() -> Policy) -> (Sim, Sim) {
    let owner = Sim::secrets().owner(b"201", 2).0;
    let mut o = Sim::shard(extension_policy(p()), owner, 2);
    let mut n = Sim::shard(extension_policy(p()), 1 - owner, 2);
    let mut loc = Location::default();
    loc.apply(binding("alice", DESK, "sip:alice@10.1.1.2:5062", &o));
    o.engine.set_location(loc.clone());
    n.engine.set_location(loc);
    assert_eq!(o.engine.location().len(), 1);
    assert!(n.engine.location().is_empty(), "only the owner keeps it");
    (o, n)
}

/// A Call-ID the shard `sim` owns.
fn call_id_owned_by(sim: &Sim, shards: u16) -> String {
    (0..)
        .map(|i| format!("cross-{i}"))
        .find(|c| Sim::secrets().owner(c.as_bytes(), shards) == sim.engine.shard())
        .unwrap()
}

#[test]
fn a_call_routed_on_another_shard_asks_the_owner_where_the_phones_are() {
    let (mut o, mut n) = two_shards();
    let call_id = call_id_owned_by(&n, 2);
    n.recv(
        CARRIER_A,
        &invite(CARRIER_A, NUMBER, &call_id, "z9hG4bKx1", 1),
    );
    // Nothing rings yet: the owner is asked.
    assert!(n.sent().iter().all(|s| s.to != addr(DESK)));
    let (to, lookup) = n.engine.poll_shard_message().expect("a lookup");
    assert_eq!(to, o.engine.shard());
    assert!(n.engine.poll_shard_message().is_none());
    o.engine.handle_shard_message(o.now, lookup);
    let (back, located) = o.engine.poll_shard_message().expect("the answer");
    assert_eq!(back, n.engine.shard());
    match &located {
        ShardMessage::Located { bindings, .. } => {
            assert_eq!(bindings.len(), 1);
            assert_eq!(bindings[0].flow.remote, addr(DESK));
        }
        other => panic!("{other:?}"),
    }
    n.engine.handle_shard_message(n.now, located);
    let ring = n.first_to(DESK);
    assert!(
        ring.text()
            .starts_with("INVITE sip:alice@10.1.1.2:5062 SIP/2.0\r\n")
    );
}

#[test]
fn phones_rung_after_a_lookup_get_the_same_invite_as_those_rung_at_once() {
    // RFC 4028: the SBC asks for session timers on every INVITE it
    // sends, whichever shard knows where the phones are.
    let (mut o, mut n) = two_shards_with(|| {
        let mut p = policy();
        p.call_timers.session_expires = Some(1800);
        p
    });
    let call_id = call_id_owned_by(&n, 2);
    n.recv(
        CARRIER_A,
        &invite(CARRIER_A, NUMBER, &call_id, "z9hG4bKse1", 1),
    );
    let (_, lookup) = n.engine.poll_shard_message().expect("a lookup");
    o.engine.handle_shard_message(o.now, lookup);
    let (_, located) = o.engine.poll_shard_message().expect("the answer");
    n.engine.handle_shard_message(n.now, located);
    let after_lookup = n.first_to(DESK);
    let call_id = call_id_owned_by(&o, 2);
    o.recv(
        CARRIER_A,
        &invite(CARRIER_A, NUMBER, &call_id, "z9hG4bKse2", 1),
    );
    let at_once = o.first_to(DESK);
    for ring in [&after_lookup, &at_once] {
        assert_eq!(
            ring.header(HeaderName::SessionExpires),
            "1800",
            "{}",
            ring.text()
        );
    }
}

#[test]
fn no_answer_from_the_owner_is_nobody_to_ring() {
    let (_o, mut n) = two_shards();
    let call_id = call_id_owned_by(&n, 2);
    n.recv(
        CARRIER_A,
        &invite(CARRIER_A, NUMBER, &call_id, "z9hG4bKx2", 1),
    );
    let _ = n.sent();
    assert!(n.engine.poll_shard_message().is_some());
    let after = n.advance(LOOKUP_TIMEOUT + Duration::from_millis(10));
    assert!(
        after
            .iter()
            .any(|(_, s)| s.to == addr(CARRIER_A) && s.code() == Some(480)),
        "{after:?}"
    );
    assert_eq!(n.rejected(Refusal::NotRegistered), 1);
}

#[test]
fn a_register_goes_to_the_shard_that_owns_its_extension() {
    let (mut o, mut n) = two_shards();
    let register = |user: &str, call_id: &str| {
        format!(
            "REGISTER sip:192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.20:40000;branch=z9hG4bK{call_id}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{user}@192.0.2.1>;tag=t\r\nTo: <sip:{user}@192.0.2.1>\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 REGISTER\r\nContact: <sip:{user}@10.1.1.2>\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let owner = o.engine.shard();
    // Whatever its Call-ID: by account, or by extension number.
    for (user, call_id) in [
        ("alice", call_id_owned_by(&n, 2)),
        ("201", call_id_owned_by(&n, 2)),
    ] {
        assert_eq!(
            n.recv(DESK, &register(user, &call_id)),
            Disposition::HandOff(owner)
        );
        assert_eq!(o.recv(DESK, &register(user, &call_id)), Disposition::Done);
        assert_eq!(o.one_to(DESK).code(), Some(401));
    }
}

#[test]
fn phones_of_both_families_each_get_an_offer_in_their_own() {
    let mut p = media_policy();
    p.listeners.push(sbc_core::policy::Listener {
        transport: sbc_core::net::Transport::Udp,
        bind: addr("[2001:db8::1]:5060"),
        advertise: "[2001:db8::1]:5060".into(),
    });
    if let Some(m) = p.media.as_mut() {
        m.bind_other = Some("2001:db8::1".parse().unwrap());
        m.advertise_other = Some("2001:db8::100".parse().unwrap());
    }
    let mut sim = Sim::with_policy(extension_policy(p));
    let mut loc = Location::default();
    loc.apply(binding("alice", DESK, "sip:alice@10.1.1.2:5062", &sim));
    let soft6 = "[2001:db8:9::9]:5062";
    loc.apply(binding_over(
        "alice-soft",
        Flow::udp(addr(soft6), LocalId(1)),
        "sip:alice-soft@[2001:db8:9::9]:5062",
        &sim,
    ));
    sim.engine.set_location(loc);
    sim.recv(
        CARRIER_A,
        &invite(CARRIER_A, NUMBER, "in-fam", "z9hG4bKfam", 1),
    );
    let sent = sim.sent();
    let (desk, soft) = (invite_to(&sent, DESK), invite_to(&sent, soft6));
    assert!(
        desk.text().contains("c=IN IP4 198.51.100.1\r\n"),
        "{}",
        desk.text()
    );
    assert!(
        soft.text().contains("c=IN IP6 2001:db8::100\r\n"),
        "{}",
        soft.text()
    );
    assert!(!soft.text().contains("198.51.100.1"), "{}", soft.text());
    assert!(
        soft.header(sbc_core::sip::HeaderName::To)
            .contains("[2001:db8::1]:5060"),
        "{}",
        soft.text()
    );
    // The same relay ports on both.
    let port = |s: &Sent| {
        s.text()
            .lines()
            .find_map(|l| {
                l.strip_prefix("m=audio ")
                    .map(|r| r.split(' ').next().unwrap_or("").to_owned())
            })
            .unwrap()
    };
    assert_eq!(port(&desk), port(&soft));
}

/// The first phone rung answers, not the last: the ACK of its 2xx carries
/// its own INVITE's CSeq number (RFC 3261 §13.2.2.4), not that of the
/// INVITE sent after it to the other phone, and so does the ACK sent
/// again for a retransmission of that 2xx.
#[test]
fn the_ack_to_a_phone_that_answered_first_has_its_invites_cseq() {
    let mut sim = sim_with(policy(), &["alice", "alice-soft"]);
    let (desk, soft) = call_in(&mut sim);
    let cseq = |s: &Sent| s.header(HeaderName::CSeq);
    assert_ne!(cseq(&desk), cseq(&soft), "each fork has its own CSeq");
    soft_rings(&mut sim, &soft);
    assert_eq!(sim.one_to(CARRIER_A).code(), Some(180));
    let ok_from_desk = answer_200(&desk, "desk-tag", "sip:alice@10.1.1.2:5062");
    sim.recv(DESK, &ok_from_desk);
    let sent = sim.sent();
    let (ok, _) = answered_and_cancelled(&sent, SOFT, &soft);
    let to = ok.header(HeaderName::To);
    carrier_acks(&mut sim, &to);
    let b_ack = sim.one_to(DESK);
    assert_eq!(b_ack.method().as_deref(), Some("ACK"));
    let number = |s: &Sent| cseq(s).split_whitespace().next().unwrap().to_owned();
    assert_eq!(number(&b_ack), number(&desk), "{}", b_ack.text());
    assert_eq!(cseq(&b_ack), format!("{} ACK", number(&desk)));
    // The desk phone did not hear the ACK in time and sends its 200 again.
    sim.recv(DESK, &ok_from_desk);
    let again = sim.one_to(DESK);
    assert_eq!(again.method().as_deref(), Some("ACK"));
    assert_eq!(cseq(&again), cseq(&b_ack));
}

/// One phone answers with media the relay cannot carry while the other
/// still rings: that answer is hung up and counts as that phone's 488
/// (RFC 3261 §16.7), and the call waits for the other phone, which then
/// answers it.
#[test]
fn an_unusable_answer_from_one_phone_leaves_the_other_ringing() {
    let mut sim = sim_with(media_policy(), &["alice", "alice-soft"]);
    let (desk, soft) = call_in(&mut sim);
    soft_rings(&mut sim, &soft);
    assert_eq!(sim.one_to(CARRIER_A).code(), Some(180));
    let multicast = "v=0\r\no=- 3 3 IN IP4 203.0.113.20\r\ns=-\r\nc=IN IP4 224.2.2.2\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n";
    let unusable = reply(
        &desk,
        200,
        "OK",
        Some("desk-tag"),
        Some("sip:alice@10.1.1.2:5062"),
        multicast,
    );
    sim.recv(DESK, &unusable);
    let sent = sim.sent();
    let to_desk: Vec<String> = sent
        .iter()
        .filter(|s| s.to == addr(DESK))
        .filter_map(Sent::method)
        .collect();
    assert_eq!(to_desk, ["ACK", "BYE"], "{sent:?}");
    assert!(
        sent.iter()
            .all(|s| s.to != addr(CARRIER_A) && s.to != addr(SOFT)),
        "the caller hears nothing yet and the softphone rings on: {sent:?}"
    );
    // The desk phone sends its 200 again: ACKed again, nothing more.
    sim.recv(DESK, &unusable);
    let again = sim.sent();
    let methods: Vec<String> = again.iter().filter_map(Sent::method).collect();
    assert_eq!(methods, ["ACK"], "{again:?}");
    assert!(again.iter().all(|s| s.to == addr(DESK)), "{again:?}");
    let phone_sdp = "v=0\r\no=- 4 4 IN IP4 203.0.113.21\r\ns=-\r\nc=IN IP4 203.0.113.21\r\nt=0 0\r\nm=audio 7002 RTP/AVP 0\r\n";
    sim.recv(
        SOFT,
        &reply(
            &soft,
            200,
            "OK",
            Some("soft-tag"),
            Some("sip:alice-soft@192.168.1.9:5062"),
            phone_sdp,
        ),
    );
    let ok = sim.one_to(CARRIER_A);
    assert_eq!(ok.code(), Some(200), "{}", ok.text());
}
