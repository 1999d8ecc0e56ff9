//! Media anchoring through the engine: SDP rewritten on both legs, RTP
//! relayed between the SBC's ports, codec policy, bypass, inactivity.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use sbc_core::media::Forward;
use sbc_core::media::MediaError;
use sbc_core::policy::MediaMode;
use sbc_core::refusal::Refusal;
use sbc_core::sip::HeaderName;
use support::*;

const NUMBER: &str = "+390677777";
const FROM_A: &str = "\"Alice\" <sip:alice@10.0.0.10:5060>;tag=caller-tag";

fn body(s: &Sent) -> String {
    let t = s.text();
    t[t.find("\r\n\r\n").unwrap() + 4..].to_owned()
}

/// The m=audio port of an SDP body.
fn audio_port(sdp: &str) -> u16 {
    sdp.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .parse()
        .unwrap()
}

/// The caller's INVITE with no body (a late offer, RFC 3261 §13.2.1).
fn invite_without_sdp(call_id: &str, branch: &str) -> String {
    let inv = invite("10.0.0.10:5060", NUMBER, call_id, branch, 1);
    let head = &inv[..inv.find("\r\n\r\n").unwrap()];
    head.split("\r\n")
        .filter(|l| !l.starts_with("Content-"))
        .map(|l| format!("{l}\r\n"))
        .collect::<String>()
        + "Content-Length: 0\r\n\r\n"
}

fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0xd5; 160]);
    p
}

/// Anchored call answered by carrier-a. Returns (B INVITE, 200 to A,
/// SBC port facing A, SBC port facing B).
fn answered(sim: &mut Sim, call_id: &str) -> (Sent, Sent, u16, u16) {
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, call_id, "z9hG4bKm", 1),
    );
    let b = sim.one_to(CARRIER_A);
    let to_b = body(&b);
    assert!(
        to_b.contains("c=IN IP4 198.51.100.1\r\n"),
        "advertised address: {to_b}"
    );
    assert!(
        !to_b.contains("10.0.0.10"),
        "no caller address crosses: {to_b}"
    );
    let b_port = audio_port(&to_b);
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
    let to_a = body(&ok);
    assert!(
        to_a.contains("c=IN IP4 198.51.100.1\r\n") && !to_a.contains("10.0.0.20"),
        "{to_a}"
    );
    let a_port = audio_port(&to_a);
    assert_ne!(a_port, b_port);
    sim.recv(
        PBX,
        &in_dialog(
            "ACK",
            "sip:192.0.2.1",
            "10.0.0.10:5060",
            "z9hG4bKmack",
            FROM_A,
            &ok.header(HeaderName::To),
            call_id,
            1,
            "",
        ),
    );
    sim.one_to(CARRIER_A);
    (b, ok, a_port, b_port)
}

#[test]
fn rtp_is_relayed_between_the_sbc_ports() {
    let mut sim = Sim::with_policy(media_policy());
    let (_b, _ok, a_port, b_port) = answered(&mut sim, "media1@pbx");
    // The caller sends to the port it was given; it leaves from the port
    // the callee was given, to the callee's SDP address.
    let f = sim.media("10.0.0.10:4000", a_port, &rtp(1)).unwrap();
    assert_eq!(
        f,
        Forward {
            from_port: b_port,
            to: addr("10.0.0.20:5000")
        }
    );
    let back = sim.media("10.0.0.20:5000", b_port, &rtp(7)).unwrap();
    assert_eq!(
        back,
        Forward {
            from_port: a_port,
            to: addr("10.0.0.10:4000")
        }
    );
    // RTCP on the next port.
    let r = sim
        .media("10.0.0.10:4001", a_port + 1, &[0x80, 200, 0, 6])
        .unwrap();
    assert_eq!(
        r,
        Forward {
            from_port: b_port + 1,
            to: addr("10.0.0.20:5001")
        }
    );
    // Strangers and unused ports are dropped and counted.
    assert!(sim.media("203.0.113.9:4000", a_port, &rtp(2)).is_none());
    assert!(sim.media("10.0.0.10:4000", 30098, &rtp(2)).is_none());
    let s = &sim.stats;
    assert_eq!(s.media_packets[0].load(Ordering::Relaxed), 2);
    assert_eq!(s.media_packets[1].load(Ordering::Relaxed), 1);
    assert_eq!(
        s.media_dropped[0].load(Ordering::Relaxed),
        1,
        "unknown port"
    );
    assert_eq!(s.media_dropped[1].load(Ordering::Relaxed), 1, "not latched");
    assert_eq!(s.media_sessions.load(Ordering::Relaxed), 1);
    assert_eq!(s.media_ports_in_use.load(Ordering::Relaxed), 4);
}

#[test]
fn ports_are_released_when_the_call_ends() {
    let mut sim = Sim::with_policy(media_policy());
    let (b, ok, a_port, _b_port) = answered(&mut sim, "media2@pbx");
    for seq in [1u16, 2, 4, 5] {
        sim.media("10.0.0.10:4000", a_port, &rtp(seq)).unwrap();
    }
    sim.recv(
        PBX,
        &in_dialog(
            "BYE",
            "sip:192.0.2.1",
            "10.0.0.10:5060",
            "z9hG4bKmbye",
            FROM_A,
            &ok.header(HeaderName::To),
            "media2@pbx",
            2,
            "",
        ),
    );
    let bye = sim.one_to(CARRIER_A);
    sim.recv(CARRIER_A, &reply(&bye, 200, "OK", None, None, ""));
    sim.one_to(PBX);
    let s = &sim.stats;
    assert_eq!(s.media_sessions.load(Ordering::Relaxed), 0);
    assert_eq!(s.media_ports_in_use.load(Ordering::Relaxed), 0);
    assert_eq!(
        s.media_lost[0].load(Ordering::Relaxed),
        1,
        "seq 3 never came"
    );
    assert!(
        sim.media("10.0.0.10:4000", a_port, &rtp(6)).is_none(),
        "unknown port after the call"
    );
    let _ = b;
}

#[test]
fn late_offer_in_the_200_is_answered_in_the_ack() {
    // RFC 3261 §13.2.1: INVITE without SDP, offer in the 2xx, answer in ACK.
    let mut sim = Sim::with_policy(media_policy());
    sim.recv(PBX, &invite_without_sdp("late@pbx", "z9hG4bKl"));
    let b = sim.one_to(CARRIER_A);
    assert!(body(&b).is_empty());
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
    let offer_to_a = body(&ok);
    assert!(offer_to_a.contains("198.51.100.1"), "{offer_to_a}");
    let a_port = audio_port(&offer_to_a);
    let answer = "v=0\r\no=- 3 3 IN IP4 10.0.0.10\r\ns=-\r\nc=IN IP4 10.0.0.10\r\nt=0 0\r\nm=audio 4010 RTP/AVP 0\r\n";
    sim.recv(
        PBX,
        &in_dialog(
            "ACK",
            "sip:192.0.2.1",
            "10.0.0.10:5060",
            "z9hG4bKlack",
            FROM_A,
            &ok.header(HeaderName::To),
            "late@pbx",
            1,
            answer,
        ),
    );
    let ack = sim.one_to(CARRIER_A);
    let answer_to_b = body(&ack);
    assert!(
        answer_to_b.contains("198.51.100.1") && !answer_to_b.contains("10.0.0.10"),
        "{answer_to_b}"
    );
    let b_port = audio_port(&answer_to_b);
    assert_eq!(
        sim.media("10.0.0.20:5000", b_port, &rtp(1)).unwrap().to,
        addr("10.0.0.10:4010")
    );
    assert_eq!(
        sim.media("10.0.0.10:4010", a_port, &rtp(1)).unwrap().to,
        addr("10.0.0.20:5000")
    );
}

#[test]
fn hold_and_resume_keep_the_ports() {
    let mut sim = Sim::with_policy(media_policy());
    let (b, ok, a_port, b_port) = answered(&mut sim, "hold@pbx");
    let hold = "v=0\r\no=- 1 2 IN IP4 10.0.0.10\r\ns=-\r\nc=IN IP4 10.0.0.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=sendonly\r\n";
    sim.recv(
        PBX,
        &in_dialog(
            "INVITE",
            "sip:192.0.2.1",
            "10.0.0.10:5060",
            "z9hG4bKhold",
            FROM_A,
            &ok.header(HeaderName::To),
            "hold@pbx",
            2,
            hold,
        ),
    );
    let reinv = sim.first_to(CARRIER_A);
    let offer = body(&reinv);
    assert_eq!(audio_port(&offer), b_port);
    assert!(
        offer.contains("a=sendonly\r\n") && offer.contains("198.51.100.1"),
        "{offer}"
    );
    let held = ANSWER_SDP.replace(
        "m=audio 5000 RTP/AVP 0\r\n",
        "m=audio 5000 RTP/AVP 0\r\na=recvonly\r\n",
    );
    sim.recv(
        CARRIER_A,
        &reply(&reinv, 200, "OK", None, Some("sip:c@10.0.0.20:5060"), &held),
    );
    let ok2 = sim.one_to(PBX);
    let answer = body(&ok2);
    assert_eq!(audio_port(&answer), a_port);
    assert!(answer.contains("a=recvonly\r\n"));
    let _ = b;
}

#[test]
fn codec_policy_filters_and_skips_trunks_that_cannot_carry_the_call() {
    let mut policy = media_policy();
    policy.trunks[1].codecs = Some(vec!["g729".into()]); // carrier-a: G.729 only
    policy.trunks[2].codecs = Some(vec!["pcmu".into(), "telephone-event".into()]);
    let mut sim = Sim::with_policy(policy);
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, "codec@pbx", "z9hG4bKc", 1),
    );
    // The caller offers PCMU only: carrier-a is skipped, carrier-b gets it.
    let b = sim.one_to(CARRIER_B);
    assert!(
        body(&b).contains("m=audio ") && body(&b).contains(" RTP/AVP 0\r\n"),
        "{}",
        body(&b)
    );

    let mut policy = media_policy();
    policy.trunks[1].codecs = Some(vec!["g729".into()]);
    policy.trunks[2].codecs = Some(vec!["g722".into()]);
    let mut sim = Sim::with_policy(policy);
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, "codec2@pbx", "z9hG4bKc2", 1),
    );
    let sent = sim.sent();
    assert_eq!(sent.len(), 1, "no trunk can carry it: {sent:?}");
    assert_eq!(sent[0].code(), Some(488));
    assert_eq!(sim.stats.media_ports_in_use.load(Ordering::Relaxed), 0);
}

#[test]
fn bypass_passes_sdp_unchanged() {
    let mut policy = media_policy();
    policy.trunks[0].media = MediaMode::Bypass;
    policy.trunks[1].media = MediaMode::Bypass;
    let mut sim = Sim::with_policy(policy);
    let inv = invite("10.0.0.10:5060", NUMBER, "bypass@pbx", "z9hG4bKbp", 1);
    sim.recv(PBX, &inv);
    let b = sim.one_to(CARRIER_A);
    assert_eq!(body(&b), inv[inv.find("\r\n\r\n").unwrap() + 4..]);
    assert_eq!(sim.stats.media_ports_in_use.load(Ordering::Relaxed), 0);
    // One trunk bypassing is not enough: carrier-b anchors.
    sim.recv(
        CARRIER_A,
        &reply(&b, 503, "Service Unavailable", Some("x"), None, ""),
    );
    let b2 = sim.first_to(CARRIER_B);
    assert!(body(&b2).contains("198.51.100.1"));
}

#[test]
fn silent_media_ends_the_call_on_both_legs() {
    let mut sim = Sim::with_policy(media_policy());
    let (_b, _ok, a_port, _b_port) = answered(&mut sim, "quiet@pbx");
    // Media flows for 20 s, then stops; the 30 s timeout counts from the
    // last packet.
    for i in 0..20u16 {
        sim.advance(Duration::from_secs(1));
        sim.media("10.0.0.10:4000", a_port, &rtp(i)).unwrap();
    }
    let sent = sim.advance(Duration::from_secs(29));
    assert!(
        sent.iter()
            .all(|(_, s)| s.method().as_deref() != Some("BYE")),
        "not yet"
    );
    let sent = sim.advance(Duration::from_secs(2));
    let byes: Vec<_> = sent
        .iter()
        .filter(|(_, s)| s.method().as_deref() == Some("BYE"))
        .map(|(_, s)| s.to)
        .collect();
    assert!(
        byes.contains(&addr(PBX)) && byes.contains(&addr(CARRIER_A)),
        "{byes:?}"
    );
    assert_eq!(sim.stats.media_timeouts.load(Ordering::Relaxed), 1);
    assert_eq!(sim.stats.media_ports_in_use.load(Ordering::Relaxed), 0);
    // The call's record says why it ended and what its media did: 20
    // packets of 172 bytes from the caller, nothing from the callee.
    let record = sim
        .events()
        .into_iter()
        .find_map(|e| match e {
            sbc_core::b2bua::Event::CallEnded(r) => Some(r),
            _ => None,
        })
        .unwrap();
    assert_eq!(record.reason, sbc_core::b2bua::EndReason::MediaTimeout);
    let media = record.media.unwrap();
    assert_eq!(media.packets, [20, 0]);
    assert_eq!(media.bytes, [20 * rtp(0).len() as u64, 0]);
}

#[test]
fn out_of_ports_is_503() {
    let mut policy = media_policy();
    policy.media.as_mut().unwrap().last_port = 30003; // two pairs: one call
    let mut sim = Sim::with_policy(policy);
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, "p1@pbx", "z9hG4bKp1", 1),
    );
    sim.one_to(CARRIER_A);
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, "p2@pbx", "z9hG4bKp2", 1),
    );
    assert_eq!(sim.one_to(PBX).code(), Some(503));
    // Counted as a reject, by its reason.
    assert_eq!(sim.rejected(Refusal::Media(MediaError::PoolExhausted)), 1);
    assert_eq!(sim.rejected(Refusal::CallTableFull), 0);
}

/// A trunk's media share: the PBX's calls may hold at most 20 % of the
/// pool's 50 pairs (10: 5 facing it, 5 facing the carriers, 5 calls); its
/// sixth call gets 503 while the pool has room, and a call ending gives
/// its pairs back.
#[test]
fn a_trunk_over_its_media_share_gets_503() {
    let mut policy = media_policy();
    policy.trunks[0].media_share = Some(20);
    let mut sim = Sim::with_policy(policy);
    let mut invites = Vec::new();
    for n in 0..5 {
        sim.recv(
            PBX,
            &invite(
                "10.0.0.10:5060",
                NUMBER,
                &format!("s{n}@pbx"),
                "z9hG4bKs",
                1,
            ),
        );
        invites.push(sim.one_to(CARRIER_A));
    }
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, "s5@pbx", "z9hG4bKs", 1),
    );
    assert_eq!(sim.one_to(PBX).code(), Some(503));
    assert_eq!(sim.rejected(Refusal::Media(MediaError::PoolExhausted)), 1);
    // The first call fails: its pairs come back, and the PBX calls again.
    sim.recv(
        CARRIER_A,
        &reply(&invites[0], 486, "Busy Here", Some("c"), None, ""),
    );
    sim.sent();
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, "s6@pbx", "z9hG4bKs", 1),
    );
    assert!(sim.sent().iter().any(|s| s.to == addr(CARRIER_A)));
}

/// A carrier whose media share is taken is skipped like one at its
/// max_calls: the call goes to the next carrier.
#[test]
fn a_target_over_its_media_share_is_skipped() {
    let mut policy = media_policy();
    policy.trunks[1].media_share = Some(2); // 50 pairs: 1 facing it
    let mut sim = Sim::with_policy(policy);
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, "m1@pbx", "z9hG4bKm1", 1),
    );
    sim.one_to(CARRIER_A);
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, "m2@pbx", "z9hG4bKm2", 1),
    );
    let sent = sim.sent();
    assert!(
        sent.iter()
            .any(|s| s.to == addr(CARRIER_B) && s.method().as_deref() == Some("INVITE")),
        "{sent:?}"
    );
    assert!(!sent.iter().any(|s| s.to == addr(CARRIER_A)));
}

#[test]
fn a_reoffer_out_of_ports_is_503_and_counted() {
    let mut policy = media_policy();
    policy.media.as_mut().unwrap().last_port = 30003; // two pairs: one stream
    let mut sim = Sim::with_policy(policy);
    let (_b, ok, _a_port, _b_port) = answered(&mut sim, "grow@pbx");
    // Adding video needs two more pairs.
    let more = "v=0\r\no=- 1 2 IN IP4 10.0.0.10\r\ns=-\r\nc=IN IP4 10.0.0.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\nm=video 4002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n";
    sim.recv(
        PBX,
        &in_dialog(
            "INVITE",
            "sip:192.0.2.1",
            "10.0.0.10:5060",
            "z9hG4bKgrow",
            FROM_A,
            &ok.header(HeaderName::To),
            "grow@pbx",
            2,
            more,
        ),
    );
    assert_eq!(sim.one_to(PBX).code(), Some(503));
    assert_eq!(sim.rejected(Refusal::Media(MediaError::PoolExhausted)), 1);
    assert_eq!(
        sim.stats.media_ports_in_use.load(Ordering::Relaxed),
        4,
        "the call keeps its audio ports"
    );
}

#[test]
fn a_call_on_hold_is_not_ended_for_silence() {
    let mut sim = Sim::with_policy(media_policy());
    let (_b, ok, _a_port, _b_port) = answered(&mut sim, "held@pbx");
    let hold = "v=0\r\no=- 1 2 IN IP4 10.0.0.10\r\ns=-\r\nc=IN IP4 10.0.0.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=inactive\r\n";
    sim.recv(
        PBX,
        &in_dialog(
            "INVITE",
            "sip:192.0.2.1",
            "10.0.0.10:5060",
            "z9hG4bKheld",
            FROM_A,
            &ok.header(HeaderName::To),
            "held@pbx",
            2,
            hold,
        ),
    );
    let reinv = sim.first_to(CARRIER_A);
    let held = ANSWER_SDP.replace(
        "m=audio 5000 RTP/AVP 0\r\n",
        "m=audio 5000 RTP/AVP 0\r\na=inactive\r\n",
    );
    sim.recv(
        CARRIER_A,
        &reply(&reinv, 200, "OK", None, Some("sip:c@10.0.0.20:5060"), &held),
    );
    let ok2 = sim.one_to(PBX);
    sim.recv(
        PBX,
        &in_dialog(
            "ACK",
            "sip:192.0.2.1",
            "10.0.0.10:5060",
            "z9hG4bKheldack",
            FROM_A,
            &ok2.header(HeaderName::To),
            "held@pbx",
            2,
            "",
        ),
    );
    let _ = sim.sent();
    // Five minutes of silence on hold (the timeout is 30 s): no BYE.
    for _ in 0..10 {
        let sent = sim.advance(Duration::from_secs(30));
        assert!(
            sent.iter()
                .all(|(_, s)| s.method().as_deref() != Some("BYE")),
            "a held call was hung up"
        );
    }
    assert_eq!(sim.stats.media_timeouts.load(Ordering::Relaxed), 0);
}

#[test]
fn failover_forgets_the_first_trunks_media() {
    let mut sim = Sim::with_policy(media_policy());
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, "fo@pbx", "z9hG4bKfo", 1),
    );
    let b = sim.one_to(CARRIER_A);
    let first_b_port = audio_port(&body(&b));
    // carrier-a sends early media (183 with SDP), then fails.
    sim.recv(
        CARRIER_A,
        &reply(
            &b,
            183,
            "Session Progress",
            Some("x"),
            Some("sip:c@10.0.0.20:5060"),
            ANSWER_SDP,
        ),
    );
    let early = sim.one_to(PBX);
    let a_port = audio_port(&body(&early));
    sim.recv(
        CARRIER_A,
        &reply(&b, 503, "Service Unavailable", Some("x"), None, ""),
    );
    let b2 = sim.first_to(CARRIER_B);
    assert_ne!(
        audio_port(&body(&b2)),
        first_b_port,
        "the next trunk gets a fresh pair"
    );
    // The caller's RTP no longer reaches carrier-a's media address.
    assert!(sim.media("10.0.0.10:4000", a_port, &rtp(1)).is_none());
    // And carrier-a can no longer send towards the caller.
    assert!(
        sim.media("10.0.0.20:5000", first_b_port, &rtp(1)).is_none(),
        "the old trunk's port is closed"
    );
}

#[test]
fn sdp_the_relay_cannot_rewrite_never_crosses() {
    // A multipart body (SIP-I style: SDP and ISUP) on an INVITE: 415.
    let mut sim = Sim::with_policy(media_policy());
    let sdp = "v=0\r\no=- 1 1 IN IP4 10.0.0.10\r\ns=-\r\nc=IN IP4 10.0.0.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    let mp = format!(
        "--b1\r\nContent-Type: application/sdp\r\n\r\n{sdp}\r\n--b1\r\nContent-Type: application/ISUP;version=itu-t92+\r\n\r\nxx\r\n--b1--\r\n"
    );
    let inv = invite_with_body("10.0.0.10:5060", NUMBER, "mp@pbx", "z9hG4bKmp", 1, &mp).replacen(
        "Content-Type: application/sdp\r\n",
        "Content-Type: multipart/mixed;boundary=b1\r\n",
        1,
    );
    sim.recv(PBX, &inv);
    let sent = sim.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].code(), Some(415), "{}", sent[0].text());
    assert_eq!(sent[0].header(HeaderName::Accept), "application/sdp");
    assert_eq!(sim.rejected(Refusal::UnsupportedMedia), 1);

    // An error answer with SDP from the callee: the caller gets the error
    // without the callee's addresses.
    let mut sim = Sim::with_policy(media_policy());
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, "e@pbx", "z9hG4bKe", 1),
    );
    let b = sim.one_to(CARRIER_A);
    sim.recv(
        CARRIER_A,
        &reply(&b, 606, "Not Acceptable", Some("x"), None, ANSWER_SDP),
    );
    let fin = sim
        .sent()
        .into_iter()
        .find(|s| s.to == addr(PBX) && s.code() == Some(606))
        .expect("606 to the caller");
    assert!(fin.msg().body().is_empty());
    assert!(!String::from_utf8_lossy(&fin.bytes).contains("10.0.0.20"));
}

#[test]
fn a_refused_reoffer_puts_the_media_back() {
    let mut sim = Sim::with_policy(media_policy());
    let (_b, ok, _a_port, b_port) = answered(&mut sim, "undo@pbx");
    let in_use = sim.stats.media_ports_in_use.load(Ordering::Relaxed);
    // A moves to a new address and adds video; the carrier refuses (488).
    let moved = "v=0\r\no=- 1 2 IN IP4 10.0.0.11\r\ns=-\r\nc=IN IP4 10.0.0.11\r\nt=0 0\r\nm=audio 4010 RTP/AVP 0\r\nm=video 4020 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n";
    sim.recv(
        PBX,
        &in_dialog(
            "INVITE",
            "sip:192.0.2.1",
            "10.0.0.10:5060",
            "z9hG4bKundo",
            FROM_A,
            &ok.header(HeaderName::To),
            "undo@pbx",
            2,
            moved,
        ),
    );
    let reinv = sim.first_to(CARRIER_A);
    assert!(
        sim.stats.media_ports_in_use.load(Ordering::Relaxed) > in_use,
        "the video stream took ports"
    );
    sim.recv(
        CARRIER_A,
        &reply(&reinv, 488, "Not Acceptable Here", None, None, ""),
    );
    let refused = sim.first_to(PBX);
    assert_eq!(refused.code(), Some(488));
    assert_eq!(
        sim.stats.media_ports_in_use.load(Ordering::Relaxed),
        in_use,
        "the offer's ports are given back"
    );
    // B's audio still goes to where A was before the offer.
    assert_eq!(
        sim.media("10.0.0.20:5000", b_port, &rtp(1)).unwrap().to,
        addr("10.0.0.10:4000")
    );
}

#[test]
fn an_answer_the_relay_cannot_carry_is_hung_up_and_the_caller_gets_488() {
    let mut sim = Sim::with_policy(media_policy());
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, "bad-answer@pbx", "z9hG4bKba", 1),
    );
    let b = sim.one_to(CARRIER_A);
    // The callee answers with a multicast address: never relayed to.
    let bad = ANSWER_SDP.replace("c=IN IP4 10.0.0.20", "c=IN IP4 224.2.2.2");
    let ok = reply(
        &b,
        200,
        "OK",
        Some("bt"),
        Some("sip:c@10.0.0.20:5060"),
        &bad,
    );
    sim.recv(CARRIER_A, &ok);
    let sent = sim.sent();
    let to_b: Vec<String> = sent
        .iter()
        .filter(|s| s.to == addr(CARRIER_A))
        .filter_map(Sent::method)
        .collect();
    assert_eq!(to_b, ["ACK", "BYE"], "{sent:?}");
    let to_a: Vec<&Sent> = sent.iter().filter(|s| s.to == addr(PBX)).collect();
    assert_eq!(to_a.len(), 1, "{sent:?}");
    assert_eq!(to_a[0].code(), Some(488), "{}", to_a[0].text());
    assert!(!to_a[0].text().contains("224.2.2.2") && !to_a[0].text().contains("10.0.0.20"));
    // A retransmitted 200 is ACKed again; the caller hears nothing more.
    sim.recv(CARRIER_A, &ok);
    let again = sim.sent();
    assert!(again.iter().all(|s| s.to == addr(CARRIER_A)), "{again:?}");
    assert_eq!(
        again.iter().filter_map(Sent::method).collect::<Vec<_>>(),
        ["ACK"],
        "{again:?}"
    );
    // No port stays taken.
    assert_eq!(sim.stats.media_ports_in_use.load(Ordering::Relaxed), 0);
}

#[test]
fn an_answer_in_the_ack_the_relay_cannot_carry_ends_the_call() {
    let mut sim = Sim::with_policy(media_policy());
    sim.recv(PBX, &invite_without_sdp("late-bad@pbx", "z9hG4bKlb"));
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
    // The caller answers with a broadcast address.
    let answer = "v=0\r\no=- 3 3 IN IP4 10.0.0.10\r\ns=-\r\nc=IN IP4 255.255.255.255\r\nt=0 0\r\nm=audio 4010 RTP/AVP 0\r\n";
    sim.recv(
        PBX,
        &in_dialog(
            "ACK",
            "sip:192.0.2.1",
            "10.0.0.10:5060",
            "z9hG4bKlback",
            FROM_A,
            &ok.header(HeaderName::To),
            "late-bad@pbx",
            1,
            answer,
        ),
    );
    let sent = sim.sent();
    let to_b: Vec<&Sent> = sent.iter().filter(|s| s.to == addr(CARRIER_A)).collect();
    let methods: Vec<String> = to_b.iter().filter_map(|s| s.method()).collect();
    assert_eq!(methods, ["ACK", "BYE"], "{sent:?}");
    assert!(body(to_b[0]).is_empty(), "nothing of the answer crosses");
    let to_a: Vec<String> = sent
        .iter()
        .filter(|s| s.to == addr(PBX))
        .filter_map(Sent::method)
        .collect();
    assert_eq!(to_a, ["BYE"], "{sent:?}");
}

#[test]
fn a_reanswer_the_relay_cannot_carry_ends_the_call() {
    let mut sim = Sim::with_policy(media_policy());
    let (_b, ok, _a_port, _b_port) = answered(&mut sim, "reans@pbx");
    let hold = "v=0\r\no=- 1 2 IN IP4 10.0.0.10\r\ns=-\r\nc=IN IP4 10.0.0.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=sendonly\r\n";
    sim.recv(
        PBX,
        &in_dialog(
            "INVITE",
            "sip:192.0.2.1",
            "10.0.0.10:5060",
            "z9hG4bKreans",
            FROM_A,
            &ok.header(HeaderName::To),
            "reans@pbx",
            2,
            hold,
        ),
    );
    let reinv = sim.first_to(CARRIER_A);
    // The carrier answers from a multicast group.
    let bad = ANSWER_SDP.replace("c=IN IP4 10.0.0.20", "c=IN IP4 239.1.1.1");
    sim.recv(CARRIER_A, &reply(&reinv, 200, "OK", None, None, &bad));
    let sent = sim.sent();
    let to_b: Vec<String> = sent
        .iter()
        .filter(|s| s.to == addr(CARRIER_A))
        .filter_map(Sent::method)
        .collect();
    assert_eq!(to_b, ["ACK", "BYE"], "{sent:?}");
    let to_a: Vec<&Sent> = sent.iter().filter(|s| s.to == addr(PBX)).collect();
    assert_eq!(to_a.len(), 2, "{sent:?}");
    assert_eq!(to_a[0].code(), Some(488), "{}", to_a[0].text());
    assert!(!to_a[0].text().contains("239.1.1.1"));
    assert_eq!(to_a[1].method().as_deref(), Some("BYE"));
}

#[test]
fn sdp_pointing_into_a_forbidden_network_is_refused() {
    let mut policy = media_policy();
    if let Some(m) = policy.media.as_mut() {
        m.forbidden = vec!["10.0.0.0/24".parse().unwrap()];
    }
    let mut sim = Sim::with_policy(policy);
    // The caller's offer asks for media at 10.0.0.10: refused, no port taken,
    // nothing reaches the carrier.
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, "forbid@pbx", "z9hG4bKfb", 1),
    );
    let sent = sim.sent();
    assert!(sent.iter().all(|s| s.to == addr(PBX)), "{sent:?}");
    let fin = sent
        .iter()
        .find(|s| s.code() >= Some(300))
        .expect("a final answer");
    assert_eq!(fin.code(), Some(488), "{}", fin.text());
    assert_eq!(sim.stats.media_ports_in_use.load(Ordering::Relaxed), 0);
    // Another network is fine.
    let mut policy = media_policy();
    if let Some(m) = policy.media.as_mut() {
        m.forbidden = vec!["10.9.0.0/16".parse().unwrap()];
    }
    let mut sim = Sim::with_policy(policy);
    let (_b, ok, _, _) = answered(&mut sim, "allowed@pbx");
    assert_eq!(ok.code(), Some(200));
}

#[test]
fn a_trunk_with_strict_latching_is_heard_only_from_its_sdp_address() {
    let mut policy = media_policy();
    // Trunk 0 is the PBX (the caller).
    policy.trunks[0].strict_latch = true;
    let mut sim = Sim::with_policy(policy);
    let (_b, _ok, a_port, b_port) = answered(&mut sim, "strict@pbx");
    // The caller's SDP says 10.0.0.10:4000; another port of its host is
    // not taken for it.
    assert!(sim.media("10.0.0.10:41000", a_port, &rtp(1)).is_none());
    assert_eq!(
        sim.media("10.0.0.10:4000", a_port, &rtp(2)).unwrap().to,
        addr("10.0.0.20:5000")
    );
    // The carrier is not strict: it may send from elsewhere on its host.
    assert_eq!(
        sim.media("10.0.0.20:5002", b_port, &rtp(1)).unwrap().to,
        addr("10.0.0.10:4000")
    );
}

/// A route that fails over on 488: an answer the relay cannot carry fails
/// over to the next trunk like the 488 it stands for, and that trunk's
/// INVITE then runs its course (it rings and answers; nothing CANCELs
/// it).
#[test]
fn an_answer_the_relay_cannot_carry_fails_over_where_the_route_says_so() {
    let mut policy = media_policy();
    policy.routes[0].failover.add(488);
    let mut sim = Sim::with_policy(policy);
    sim.recv(
        PBX,
        &invite("10.0.0.10:5060", NUMBER, "bad-then-b@pbx", "z9hG4bKbb", 1),
    );
    let a = sim.one_to(CARRIER_A);
    let bad = ANSWER_SDP.replace("c=IN IP4 10.0.0.20", "c=IN IP4 224.2.2.2");
    sim.recv(
        CARRIER_A,
        &reply(
            &a,
            200,
            "OK",
            Some("at"),
            Some("sip:c@10.0.0.20:5060"),
            &bad,
        ),
    );
    let sent = sim.sent();
    let to_a: Vec<String> = sent
        .iter()
        .filter(|s| s.to == addr(CARRIER_A))
        .filter_map(Sent::method)
        .collect();
    assert_eq!(to_a, ["ACK", "BYE"], "{sent:?}");
    assert!(sent.iter().all(|s| s.to != addr(PBX)), "{sent:?}");
    let b = sent
        .iter()
        .find(|s| s.to == addr(CARRIER_B))
        .expect("the INVITE fails over to carrier-b");
    assert_eq!(b.method().as_deref(), Some("INVITE"));
    sim.recv(
        CARRIER_B,
        &reply(
            b,
            180,
            "Ringing",
            Some("bt"),
            Some("sip:c@10.0.0.30:5060"),
            "",
        ),
    );
    let sent = sim.sent();
    assert!(sent.iter().all(|s| s.to != addr(CARRIER_B)), "{sent:?}");
    let ring: Vec<_> = sent.iter().filter_map(Sent::code).collect();
    assert_eq!(ring, [180], "{sent:?}");
    let good = ANSWER_SDP.replace("10.0.0.20", "10.0.0.30");
    sim.recv(
        CARRIER_B,
        &reply(
            b,
            200,
            "OK",
            Some("bt"),
            Some("sip:c@10.0.0.30:5060"),
            &good,
        ),
    );
    let ok = sim.one_to(PBX);
    assert_eq!(ok.code(), Some(200), "{}", ok.text());
}
