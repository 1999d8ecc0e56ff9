//! Transactions that belong to no call: requests the SBC sends on its own
//! (OPTIONS probes, REGISTER), out-of-dialog OPTIONS and REGISTER it
//! answers itself, and alarms — on the simulated clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sbc_core::b2bua::{
    Alarm, Disposition, Engine, Event, Outcome, OwnRequest, Secrets, ShardId, TxId,
};
use sbc_core::net::{Flow, LocalId};
use sbc_core::sip::{HeaderName, Method};
use sbc_core::stats::ShardStats;
use support::*;

fn options_to(to: &str) -> OwnRequest {
    OwnRequest {
        method: Method::Options,
        flow: Flow::udp(addr(to), LocalId(0)),
        request_uri: Bytes::from(format!("sip:{to}")),
        from: Bytes::from_static(b"<sip:sbc@192.0.2.1>"),
        to: Bytes::from(format!("<sip:{to}>")),
        call_id: None,
        cseq: 1,
        headers: vec![],
    }
}

fn outcomes(events: Vec<Event>) -> Vec<(TxId, Outcome)> {
    events
        .into_iter()
        .filter_map(|e| match e {
            Event::Transaction { tx, outcome } => Some((tx, outcome)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_probe_gets_its_final_answer_once() {
    let mut sim = Sim::new();
    let tx = sim.engine.send_request(sim.now, options_to(CARRIER_A));
    let probe = sim.one_to(CARRIER_A);
    assert!(
        probe
            .text()
            .starts_with("OPTIONS sip:10.0.0.20:5060 SIP/2.0\r\n"),
        "{}",
        probe.text()
    );
    assert_eq!(probe.cseq(), "1 OPTIONS");
    assert!(!probe.tag_of_from().is_empty());
    // RFC 3261 §17.1.2.2: over UDP, retransmitted at T1 until an answer.
    let resent = sim.advance(Duration::from_millis(600));
    assert_eq!(resent.len(), 1);
    assert_eq!(resent[0].1.bytes, probe.bytes);
    sim.recv(CARRIER_A, &reply(&probe, 200, "OK", Some("c"), None, ""));
    let got = outcomes(sim.events());
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, tx);
    let Outcome::Response { code, message } = &got[0].1 else {
        panic!("{got:?}")
    };
    assert_eq!(*code, 200);
    assert!(message.starts_with(b"SIP/2.0 200 OK\r\n"));
    // A retransmitted 200 is absorbed; nothing more is sent or reported.
    sim.recv(CARRIER_A, &reply(&probe, 200, "OK", Some("c"), None, ""));
    assert!(outcomes(sim.events()).is_empty());
    assert!(sim.advance(Duration::from_secs(10)).is_empty());
    assert_eq!(
        sim.engine.outside_transactions(),
        (0, 0),
        "timer K ended it"
    );
    assert_eq!(sim.engine.calls(), 0, "never a call");
}

#[test]
fn a_probe_nobody_answers_times_out_after_64_t1() {
    let mut sim = Sim::new();
    let tx = sim.engine.send_request(sim.now, options_to(CARRIER_B));
    sim.one_to(CARRIER_B);
    let resent = sim.advance(Duration::from_millis(31_600));
    assert_eq!(
        resent.len(),
        10,
        "E at 0.5, 1.5, 3.5, 7.5 s, then every T2 until 31.5 s"
    );
    assert!(outcomes(sim.events()).is_empty());
    assert!(outcomes(sim.events()).is_empty());
    sim.advance(Duration::from_millis(500));
    assert_eq!(
        outcomes(sim.events()),
        [(tx, Outcome::Timeout)],
        "timer F at 32 s"
    );
}

#[test]
fn a_register_keeps_its_call_id_and_sees_the_challenge() {
    let mut sim = Sim::new();
    let call_id = sim.engine.own_call_id();
    let mut req = options_to(CARRIER_A);
    req.method = Method::Register;
    req.request_uri = Bytes::from_static(b"sip:10.0.0.20");
    req.call_id = Some(call_id.clone());
    req.cseq = 7;
    req.headers = vec![
        (
            HeaderName::Contact,
            Bytes::from_static(b"<sip:sbc@192.0.2.1:5060>"),
        ),
        (HeaderName::Expires, Bytes::from_static(b"600")),
    ];
    let tx = sim.engine.send_request(sim.now, req);
    let reg = sim.one_to(CARRIER_A);
    assert!(reg.text().starts_with("REGISTER sip:10.0.0.20 SIP/2.0\r\n"));
    assert_eq!(reg.header(HeaderName::CallId).as_bytes(), &call_id[..]);
    assert_eq!(reg.cseq(), "7 REGISTER");
    assert_eq!(reg.header(HeaderName::Expires), "600");
    let challenge = reply(&reg, 401, "Unauthorized", Some("p"), None, "").replace(
        "Server: CarrierSwitch/9\r\n",
        "WWW-Authenticate: Digest realm=\"p\", nonce=\"n1\"\r\n",
    );
    sim.recv(CARRIER_A, &challenge);
    let got = outcomes(sim.events());
    let [(id, Outcome::Response { code: 401, message })] = &got[..] else {
        panic!("{got:?}")
    };
    assert_eq!(*id, tx);
    assert!(String::from_utf8_lossy(message).contains("nonce=\"n1\""));

    // A Call-ID of another's choice (one kept from before a restart) works
    // too on the shard that sent it: matched by its branch.
    let mut req = options_to(CARRIER_A);
    req.call_id = Some(Bytes::from_static(b"kept-from-before@sbc"));
    let tx = sim.engine.send_request(sim.now, req);
    let probe = sim.one_to(CARRIER_A);
    sim.recv(CARRIER_A, &reply(&probe, 200, "OK", Some("q"), None, ""));
    assert!(
        matches!(&outcomes(sim.events())[..], [(t, Outcome::Response { code: 200, .. })] if *t == tx)
    );
}

#[test]
fn alarms_come_due_as_events() {
    let mut sim = Sim::new();
    let t0 = sim.now;
    sim.engine
        .set_alarm(t0 + Duration::from_secs(30), Alarm::Custom(4));
    sim.engine
        .set_alarm(t0 + Duration::from_secs(10), Alarm::Custom(2));
    assert_eq!(
        sim.engine.poll_timeout(),
        Some(t0 + Duration::from_secs(10))
    );
    sim.advance(Duration::from_secs(11));
    assert_eq!(sim.events(), [Event::Alarm(Alarm::Custom(2))]);
    sim.advance(Duration::from_secs(20));
    assert_eq!(sim.events(), [Event::Alarm(Alarm::Custom(4))]);
    assert_eq!(sim.engine.poll_timeout(), None);
}

fn options_from(host: &str, branch: &str) -> String {
    format!(
        "OPTIONS sip:192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP {host};branch={branch}\r\nMax-Forwards: 70\r\nFrom: <sip:probe@{host}>;tag=p1\r\nTo: <sip:192.0.2.1>\r\nCall-ID: opt-{branch}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn a_received_options_retransmission_gets_the_same_answer() {
    let mut sim = Sim::new();
    sim.recv(PBX, &options_from("10.0.0.10:5060", "z9hG4bKo1"));
    let first = sim.one_to(PBX);
    assert_eq!(first.code(), Some(200));
    assert!(first.header(HeaderName::Allow).contains("INVITE"));
    assert_eq!(sim.engine.outside_transactions(), (0, 1));
    sim.recv(PBX, &options_from("10.0.0.10:5060", "z9hG4bKo1"));
    assert_eq!(sim.one_to(PBX).bytes, first.bytes, "RFC 3261 §17.2.2");
    sim.recv(PBX, &options_from("10.0.0.10:5060", "z9hG4bKo2"));
    assert_ne!(sim.one_to(PBX).to_tag(), first.to_tag(), "a new request");
    sim.advance(Duration::from_secs(33));
    assert_eq!(
        sim.engine.outside_transactions(),
        (0, 0),
        "timer J ended them"
    );
}

#[test]
fn register_is_answered_through_a_transaction_but_strangers_leave_no_state() {
    let mut sim = Sim::new();
    let register = |host: &str| {
        options_from(host, "z9hG4bKr1")
            .replace("OPTIONS sip:", "REGISTER sip:")
            .replace("CSeq: 1 OPTIONS", "CSeq: 1 REGISTER")
    };
    sim.recv(PBX, &register("10.0.0.10:5060"));
    let answer = sim.one_to(PBX);
    assert_eq!(answer.code(), Some(405));
    assert!(answer.header(HeaderName::Allow).contains("INVITE"));
    sim.recv(PBX, &register("10.0.0.10:5060"));
    assert_eq!(sim.one_to(PBX).bytes, answer.bytes);
    sim.recv(STRANGER, &register("203.0.113.9:5060"));
    assert_eq!(sim.one_to(STRANGER).code(), Some(403));
    assert_eq!(
        sim.engine.outside_transactions(),
        (0, 1),
        "nothing kept for a stranger"
    );
}

#[test]
fn the_answer_to_a_probe_reaches_the_shard_that_sent_it() {
    let policy = Arc::new(policy());
    let secrets = Secrets::from_bytes([9; 48]);
    let mut shards: Vec<Engine> = (0..2)
        .map(|i| {
            Engine::new(
                ShardId(i),
                2,
                secrets,
                Arc::clone(&policy),
                Arc::new(ShardStats::default()),
            )
        })
        .collect();
    let now = std::time::Instant::now();
    let tx = shards[1].send_request(now, options_to(CARRIER_A));
    let mut buf = vec![0u8; 65536];
    let t = shards[1].poll_transmit(&mut buf).unwrap();
    let probe = Sent {
        to: t.dest.remote,
        bytes: buf[..t.len].to_vec(),
    };
    let answer = reply(&probe, 200, "OK", Some("c"), None, "");
    let from = Flow::udp(addr(CARRIER_A), LocalId(0));
    // The kernel gives it to shard 0: handed to shard 1, which owns it.
    assert_eq!(
        shards[0].handle_datagram(now, from, answer.as_bytes()),
        Disposition::HandOff(ShardId(1))
    );
    assert_eq!(
        shards[1].handle_datagram(now, from, answer.as_bytes()),
        Disposition::Done
    );
    let events: Vec<Event> = std::iter::from_fn(|| shards[1].poll_event()).collect();
    assert!(
        matches!(&events[..], [Event::Transaction { tx: t, outcome: Outcome::Response { code: 200, .. } }] if *t == tx),
        "{events:?}"
    );
}
