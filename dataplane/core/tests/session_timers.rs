//! Session timers (RFC 4028) on the simulated clock: the SBC's minimum
//! and maximum on the first INVITE (422, raised, lowered, inserted), the
//! refresher named in a 2xx the callee sent without one, and calls whose
//! refreshes stop ended with BYE on both legs, while refreshed ones live.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use sbc_core::b2bua::{EndReason, Event};
use sbc_core::refusal::Refusal;
use sbc_core::sip::HeaderName;
use support::*;

const NUMBER: &str = "+390612345678";

/// The PBX's INVITE with `headers` (whole lines) added.
fn invite_with(call_id: &str, headers: &str) -> String {
    invite("10.0.0.10:5060", NUMBER, call_id, "z9hG4bKst1", 1).replace(
        "Max-Forwards: 70\r\n",
        &format!("Max-Forwards: 70\r\n{headers}"),
    )
}

/// The carrier's 2xx with `headers` (whole lines) added.
fn ok_with(b_invite: &Sent, headers: &str) -> String {
    answer_200(b_invite, "carrier-tag", "sip:c@10.0.0.20").replace(
        "Server: CarrierSwitch/9\r\n",
        &format!("Server: CarrierSwitch/9\r\n{headers}"),
    )
}

fn sim(session_expires: Option<u32>) -> Sim {
    let mut p = policy();
    p.call_timers.session_expires = session_expires;
    Sim::with_policy(p)
}

/// Sets up a call with the INVITE's and 2xx's extra headers: the INVITE
/// the carrier got and the 2xx the PBX got (ACKed).
fn call(sim: &mut Sim, call_id: &str, invite_headers: &str, ok_headers: &str) -> (Sent, Sent) {
    sim.recv(PBX, &invite_with(call_id, invite_headers));
    let b_invite = sim.first_to(CARRIER_A);
    sim.recv(CARRIER_A, &ok_with(&b_invite, ok_headers));
    let ok = sim.one_to(PBX);
    assert_eq!(ok.code(), Some(200));
    sim.recv(PBX, &ack_from_pbx(call_id, &ok.header(HeaderName::To)));
    sim.sent();
    (b_invite, ok)
}

/// Where the BYEs went within `d` (each peer once, retransmissions aside).
fn byes_within(sim: &mut Sim, d: Duration) -> Vec<std::net::SocketAddr> {
    let mut to: Vec<_> = sim
        .advance(d)
        .into_iter()
        .filter(|(_, s)| s.method().as_deref() == Some("BYE"))
        .map(|(_, s)| s.to)
        .collect();
    to.sort();
    to.dedup();
    to
}

fn end_reason(sim: &mut Sim) -> Option<EndReason> {
    sim.events().into_iter().find_map(|e| match e {
        Event::CallEnded(r) => Some(r.reason),
        _ => None,
    })
}

#[test]
fn an_interval_below_the_minimum_gets_422_with_min_se_and_no_state() {
    let mut sim = sim(None);
    sim.recv(
        PBX,
        &invite_with("small@pbx", "Supported: timer\r\nSession-Expires: 60\r\n"),
    );
    let answer = sim.one_to(PBX);
    assert_eq!(answer.code(), Some(422));
    assert_eq!(answer.header(HeaderName::MinSe), "90");
    assert_eq!(sim.rejected(Refusal::SessionIntervalTooSmall), 1);
    assert_eq!(sim.engine.calls(), 0);
    // The caller retries with the Min-SE it was given: the call goes on.
    let retry = invite_with(
        "small@pbx",
        "Supported: timer\r\nSession-Expires: 90\r\nMin-SE: 90\r\n",
    )
    .replace("z9hG4bKst1", "z9hG4bKst2")
    .replace("CSeq: 1 INVITE", "CSeq: 2 INVITE");
    sim.recv(PBX, &retry);
    let b_invite = sim.first_to(CARRIER_A);
    assert_eq!(b_invite.header(HeaderName::SessionExpires), "90");
}

#[test]
fn the_sbc_asks_for_its_interval_and_lowers_longer_ones() {
    let mut sim = sim(Some(1800));
    sim.recv(PBX, &invite_with("none@pbx", ""));
    let b = sim.first_to(CARRIER_A);
    assert_eq!(b.header(HeaderName::SessionExpires), "1800");
    assert_eq!(b.header(HeaderName::MinSe), "90");

    sim.recv(
        PBX,
        &invite_with(
            "long@pbx",
            "Supported: timer\r\nSession-Expires: 7200;refresher=uac\r\n",
        ),
    );
    let b = sim.first_to(CARRIER_A);
    // Only the number changes: the caller's refresher stays.
    assert_eq!(b.header(HeaderName::SessionExpires), "1800;refresher=uac");
    assert_eq!(
        b.msg().all(HeaderName::SessionExpires).count(),
        1,
        "the caller's own value is replaced, not kept beside ours"
    );
    assert_eq!(b.header(HeaderName::Supported), "timer");

    // A caller that does not support timers and asks for too little is
    // raised to the minimum instead of refused.
    let mut sim = self::sim(None);
    sim.recv(PBX, &invite_with("raised@pbx", "Session-Expires: 30\r\n"));
    let b = sim.first_to(CARRIER_A);
    assert_eq!(b.header(HeaderName::SessionExpires), "90");
    assert_eq!(b.header(HeaderName::MinSe), "90");
}

#[test]
fn a_call_whose_refreshes_stop_is_ended_on_both_legs() {
    let mut sim = sim(None);
    call(
        &mut sim,
        "quiet@pbx",
        "Supported: timer\r\nSession-Expires: 120\r\n",
        "Session-Expires: 120;refresher=uac\r\nRequire: timer\r\n",
    );
    // RFC 4028 §10: BYE at 120 - min(32, 40) = 88 s without a refresh.
    assert!(byes_within(&mut sim, Duration::from_secs(87)).is_empty());
    let byes = byes_within(&mut sim, Duration::from_secs(2));
    assert!(
        byes.contains(&addr(PBX)) && byes.contains(&addr(CARRIER_A)),
        "{byes:?}"
    );
    assert_eq!(end_reason(&mut sim), Some(EndReason::SessionExpired));
}

#[test]
fn a_refreshed_call_lives_on() {
    let mut sim = sim(None);
    let (_, ok) = call(
        &mut sim,
        "fresh@pbx",
        "Supported: timer\r\nSession-Expires: 120\r\n",
        "Session-Expires: 120;refresher=uac\r\nRequire: timer\r\n",
    );
    sim.advance(Duration::from_secs(60));
    let a_to = ok.header(HeaderName::To);
    // The caller refreshes (re-INVITE, same SDP) at half the interval.
    let refresh = in_dialog(
        "INVITE",
        "sip:192.0.2.1:5060",
        "10.0.0.10:5060",
        "z9hG4bKrefresh",
        CALLER_FROM,
        &a_to,
        "fresh@pbx",
        2,
        OFFER_SDP,
    )
    .replace(
        "Max-Forwards: 70\r\n",
        "Max-Forwards: 70\r\nSupported: timer\r\nSession-Expires: 120;refresher=uac\r\n",
    );
    sim.recv(PBX, &refresh);
    let b_refresh = sim
        .sent()
        .into_iter()
        .find(|s| s.to == addr(CARRIER_A))
        .unwrap();
    assert_eq!(
        b_refresh.header(HeaderName::SessionExpires),
        "120;refresher=uac"
    );
    sim.recv(
        CARRIER_A,
        &reply(
            &b_refresh,
            200,
            "OK",
            None,
            Some("sip:c@10.0.0.20"),
            ANSWER_SDP,
        )
        .replace(
            "Server: CarrierSwitch/9\r\n",
            "Server: CarrierSwitch/9\r\nSession-Expires: 120;refresher=uac\r\nRequire: timer\r\n",
        ),
    );
    let ok2 = sim.one_to(PBX);
    assert_eq!(ok2.code(), Some(200));
    sim.recv(
        PBX,
        &in_dialog(
            "ACK",
            "sip:192.0.2.1:5060",
            "10.0.0.10:5060",
            "z9hG4bKrefreshack",
            CALLER_FROM,
            &a_to,
            "fresh@pbx",
            2,
            "",
        ),
    );
    sim.sent();
    // 88 s after the call started, it is 28 s after the refresh: alive.
    assert!(byes_within(&mut sim, Duration::from_secs(87)).is_empty());
    // 88 s after the refresh it ends.
    let byes = byes_within(&mut sim, Duration::from_secs(2));
    assert_eq!(byes.len(), 2, "{byes:?}");
    assert_eq!(end_reason(&mut sim), Some(EndReason::SessionExpired));
}

#[test]
fn a_callee_without_timers_makes_a_supporting_caller_the_refresher() {
    let mut sim = sim(Some(1800));
    let (_, ok) = call(&mut sim, "uac@pbx", "Supported: timer\r\n", "");
    assert_eq!(ok.header(HeaderName::SessionExpires), "1800;refresher=uac");
    assert_eq!(ok.header(HeaderName::Require), "timer");
    assert!(byes_within(&mut sim, Duration::from_secs(1767)).is_empty());
    assert_eq!(byes_within(&mut sim, Duration::from_secs(2)).len(), 2);
}

#[test]
fn without_timers_on_either_end_the_call_is_not_timed() {
    // The SBC asked, the callee did not take part and the caller does not
    // support timers: nobody would refresh, so nothing is enforced.
    let mut sim = sim(Some(1800));
    let (_, ok) = call(&mut sim, "plain@pbx", "", "");
    assert_eq!(ok.header(HeaderName::SessionExpires), "");
    assert!(byes_within(&mut sim, Duration::from_secs(4000)).is_empty());
    assert_eq!(sim.engine.calls(), 1);
}

/// The PBX's re-INVITE in call `call_id` (CSeq 2, same SDP) with `headers`.
fn refresh_from_pbx(call_id: &str, to: &str, headers: &str) -> String {
    in_dialog(
        "INVITE",
        "sip:192.0.2.1:5060",
        "10.0.0.10:5060",
        "z9hG4bKrefresh",
        CALLER_FROM,
        to,
        call_id,
        2,
        OFFER_SDP,
    )
    .replace(
        "Max-Forwards: 70\r\n",
        &format!("Max-Forwards: 70\r\n{headers}"),
    )
}

#[test]
fn a_refresh_is_held_to_the_same_minimum_and_maximum() {
    let mut sim = sim(Some(1800));
    let (_, ok) = call(
        &mut sim,
        "rmin@pbx",
        "Supported: timer\r\nSession-Expires: 600\r\n",
        "Session-Expires: 600;refresher=uac\r\nRequire: timer\r\n",
    );
    let to = ok.header(HeaderName::To);
    // Too small from a sender that supports timers: 422, not relayed.
    sim.recv(
        PBX,
        &refresh_from_pbx(
            "rmin@pbx",
            &to,
            "Supported: timer\r\nSession-Expires: 30\r\n",
        ),
    );
    let sent = sim.sent();
    assert!(sent.iter().all(|s| s.to == addr(PBX)), "{sent:?}");
    let answer = sent
        .iter()
        .find(|s| s.code().is_some_and(|c| c >= 200))
        .unwrap();
    assert_eq!(answer.code(), Some(422));
    assert_eq!(answer.header(HeaderName::MinSe), "90");
    // Above the SBC's interval: lowered on the way, the refresher kept.
    sim.recv(
        PBX,
        &refresh_from_pbx(
            "rmin@pbx",
            &to,
            "Supported: timer\r\nSession-Expires: 7200;refresher=uac\r\n",
        )
        .replace("z9hG4bKrefresh", "z9hG4bKrefresh2")
        .replace("CSeq: 2 INVITE", "CSeq: 3 INVITE"),
    );
    let b = sim
        .sent()
        .into_iter()
        .find(|s| s.to == addr(CARRIER_A))
        .unwrap();
    assert_eq!(b.header(HeaderName::SessionExpires), "1800;refresher=uac");
}

#[test]
fn a_refresh_without_timers_does_not_switch_the_sbcs_timer_off() {
    // The SBC made the supporting caller the refresher; the caller's
    // next re-INVITE names no interval and the callee still takes no part.
    let mut sim = sim(Some(1800));
    let (_, ok) = call(&mut sim, "keep@pbx", "Supported: timer\r\n", "");
    let to = ok.header(HeaderName::To);
    sim.recv(
        PBX,
        &refresh_from_pbx("keep@pbx", &to, "Supported: timer\r\n"),
    );
    let b = sim
        .sent()
        .into_iter()
        .find(|s| s.to == addr(CARRIER_A))
        .unwrap();
    assert_eq!(b.header(HeaderName::SessionExpires), "1800");
    sim.recv(
        CARRIER_A,
        &reply(&b, 200, "OK", None, Some("sip:c@10.0.0.20"), ANSWER_SDP),
    );
    let ok2 = sim.one_to(PBX);
    assert_eq!(ok2.header(HeaderName::SessionExpires), "1800;refresher=uac");
    let ack = in_dialog(
        "ACK",
        "sip:192.0.2.1:5060",
        "10.0.0.10:5060",
        "z9hG4bKkeepack",
        CALLER_FROM,
        &to,
        "keep@pbx",
        2,
        "",
    );
    sim.recv(PBX, &ack);
    sim.sent();
    // Still timed: no refresh, so the call ends 1768 s after this one.
    assert!(byes_within(&mut sim, Duration::from_secs(1767)).is_empty());
    assert_eq!(byes_within(&mut sim, Duration::from_secs(2)).len(), 2);
}

#[test]
fn a_callee_422_to_the_sbcs_interval_is_answered_by_the_sbc() {
    let mut sim = sim(Some(1800));
    sim.recv(PBX, &invite_with("c422@pbx", ""));
    let b = sim.first_to(CARRIER_A);
    assert_eq!(b.header(HeaderName::SessionExpires), "1800");
    sim.recv(
        CARRIER_A,
        &reply(&b, 422, "Session Interval Too Small", Some("t"), None, "").replace(
            "Server: CarrierSwitch/9\r\n",
            "Server: CarrierSwitch/9\r\nMin-SE: 3600\r\n",
        ),
    );
    let sent = sim.sent();
    let again = sent
        .iter()
        .find(|s| s.method().as_deref() == Some("INVITE"))
        .unwrap_or_else(|| panic!("{sent:?}"));
    assert_eq!(again.to, addr(CARRIER_A));
    assert_eq!(again.header(HeaderName::SessionExpires), "3600");
    assert_eq!(again.header(HeaderName::MinSe), "3600");
    assert!(
        sent.iter()
            .all(|s| s.to != addr(PBX) || s.code() == Some(100)),
        "the caller, who asked for nothing, hears no 422: {sent:?}"
    );
    // A second 422 is the callee's last word: relayed.
    sim.recv(
        CARRIER_A,
        &reply(
            again,
            422,
            "Session Interval Too Small",
            Some("t2"),
            None,
            "",
        )
        .replace(
            "Server: CarrierSwitch/9\r\n",
            "Server: CarrierSwitch/9\r\nMin-SE: 7200\r\n",
        ),
    );
    let codes: Vec<_> = sim
        .sent()
        .into_iter()
        .filter(|s| s.to == addr(PBX))
        .filter_map(|s| s.code())
        .collect();
    assert_eq!(codes, vec![422]);
}
