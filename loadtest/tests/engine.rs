//! Sans-IO tests of the call engine: caller and callee endpoints exchange
//! datagrams through an in-memory network on a simulated clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sbc_core::sip::{HeaderName, Message};
use sbc_loadtest::engine::{CidPart, Config, Endpoint, Quota, Start};
use sbc_loadtest::scenario::Scenario;
use sbc_loadtest::stats::FailReason;

const UAC: &str = "127.0.0.1:5061";
const UAS: &str = "127.0.0.1:5060";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The tests' time 0, every endpoint's epoch.
fn t0() -> Instant {
    static T0: OnceLock<Instant> = OnceLock::new();
    *T0.get_or_init(Instant::now)
}

/// `us` microseconds after time 0.
fn at(us: u64) -> Instant {
    t0() + Duration::from_micros(us)
}

/// When `ep` has timers due next, µs after time 0.
fn due(ep: &Endpoint) -> Option<u64> {
    ep.poll_timeout()
        .map(|t| u64::try_from(t.duration_since(t0()).as_micros()).unwrap())
}

/// A configuration on 127.0.0.1 whose epoch is the tests' time 0.
fn test_config() -> Config {
    let mut c = Config::new("127.0.0.1".parse().unwrap());
    c.epoch = t0();
    c
}

fn scenario(xml: &str) -> Arc<Scenario> {
    Arc::new(Scenario::parse(xml, "test.xml").unwrap_or_else(|e| panic!("{e}")))
}

fn builtin(name: &str) -> Arc<Scenario> {
    scenario(sbc_loadtest::builtin(name).unwrap())
}

fn config(calls: Option<u64>) -> Arc<Config> {
    let mut c = test_config();
    c.pid = 4242;
    c.quota = calls.map(|m| Arc::new(Quota::new(m)));
    // The wall clock at time 0: 2027-01-15 08:00:00 UTC.
    c.wall_epoch_us = 1_800_000_000_000_000;
    Arc::new(c)
}

/// MD5 in hex, as digest authentication writes it.
fn md5_hex(b: &[u8]) -> String {
    use md5::{Digest, Md5};
    Md5::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

fn uac(scn: Arc<Scenario>, cfg: Arc<Config>) -> Endpoint {
    Endpoint::new(cfg, scn, 5061, Some(addr(UAS)), 1, 1)
}

fn uas(scn: Arc<Scenario>, cfg: Arc<Config>) -> Endpoint {
    Endpoint::new(cfg, scn, 5060, None, 1, 1)
}

/// Takes what an endpoint queued: (destination, message).
fn drain(ep: &mut Endpoint) -> Vec<(SocketAddr, Vec<u8>)> {
    let (out, buf) = ep.outgoing();
    let v = out
        .iter()
        .map(|o| (o.dst, buf[o.start..o.start + o.len].to_vec()))
        .collect();
    ep.clear_out();
    v
}

/// An INVITE from the caller with `Subject: subject`, Call-ID and branch
/// from `id`.
fn invite_with_subject(subject: &str, id: &str) -> String {
    format!(
        "INVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK{id}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: {id}\r\nCSeq: 1 INVITE\r\nSubject: {subject}\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The first message an endpoint queued, as text (and the queue emptied).
fn first_sent(ep: &mut Endpoint) -> String {
    String::from_utf8_lossy(&drain(ep)[0].1).into_owned()
}

/// Why a scenario is refused when it loads.
fn load_error(xml: &str) -> String {
    Scenario::parse(xml, "t.xml").unwrap_err().message
}

fn start_line(m: &[u8]) -> String {
    let s = String::from_utf8_lossy(m);
    s.lines().next().unwrap_or("").to_string()
}

/// A network between the two endpoints; `drop` decides, per message (in
/// order of sending), whether it is lost.
struct Net {
    now: u64,
    log: Vec<(char, String)>,
}

impl Net {
    fn new() -> Self {
        Net {
            now: 0,
            log: Vec::new(),
        }
    }

    /// Delivers until both sides are quiet; returns when nothing is queued.
    fn exchange(&mut self, a: &mut Endpoint, b: &mut Endpoint, drop: &mut dyn FnMut(&str) -> bool) {
        for _ in 0..1000 {
            let from_a = drain(a);
            let from_b = drain(b);
            if from_a.is_empty() && from_b.is_empty() {
                return;
            }
            for (dst, m) in from_a {
                assert_eq!(dst, addr(UAS));
                let l = start_line(&m);
                self.log.push(('>', l.clone()));
                if !drop(&l) {
                    b.handle_datagram(at(self.now), addr(UAC), &m);
                }
            }
            for (dst, m) in from_b {
                assert_eq!(dst, addr(UAC));
                let l = start_line(&m);
                self.log.push(('<', l.clone()));
                if !drop(&l) {
                    a.handle_datagram(at(self.now), addr(UAS), &m);
                }
            }
        }
        panic!("the endpoints never went quiet");
    }

    /// Advances the clock to the next timer of either side and runs it.
    fn tick(&mut self, a: &mut Endpoint, b: &mut Endpoint) -> bool {
        let next = match (due(a), due(b)) {
            (Some(x), Some(y)) => x.min(y),
            (x, y) => match x.or(y) {
                Some(t) => t,
                None => return false,
            },
        };
        self.now = self.now.max(next);
        a.handle_timeout(at(self.now));
        b.handle_timeout(at(self.now));
        true
    }
}

#[test]
fn builtin_pair_completes_calls() {
    let (mut a, mut b) = (
        uac(builtin("uac"), config(Some(3))),
        uas(builtin("uas"), config(None)),
    );
    let mut net = Net::new();
    for _ in 0..3 {
        assert!(a.start_call(at(net.now)));
        net.exchange(&mut a, &mut b, &mut |_| false);
        net.now += 1000;
    }
    assert!(!a.start_call(at(net.now)), "-m 3 reached");
    assert_eq!(a.stats.succeeded, 3);
    assert_eq!(b.stats.succeeded, 3);
    assert_eq!(a.stats.failed_total() + b.stats.failed_total(), 0);
    assert_eq!(a.open_calls() + b.open_calls(), 0);
    let seq: Vec<String> = net.log[..6]
        .iter()
        .map(|(d, l)| format!("{d} {l}"))
        .collect();
    assert_eq!(
        seq,
        [
            "> INVITE sip:service@127.0.0.1:5060 SIP/2.0",
            "< SIP/2.0 180 Ringing",
            "< SIP/2.0 200 OK",
            "> ACK sip:127.0.0.1:5060;transport=UDP SIP/2.0",
            "> BYE sip:127.0.0.1:5060;transport=UDP SIP/2.0",
            "< SIP/2.0 200 OK",
        ]
    );
    assert_eq!(a.stats.invite_to_200.len(), 3);
}

#[test]
fn keywords_render_as_sipp_does() {
    let scn = scenario(
        r#"<scenario name="k">
        <send><![CDATA[
          INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
          Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
          From: <sip:a@[local_ip]>;tag=[pid]SIPpTag00[call_number]
          To: <sip:b@[remote_ip]>
          Call-ID: [call_id]
          CSeq: [cseq] INVITE
          Content-Type: application/sdp
          Content-Length: [len]

          v=0
          c=IN IP[media_ip_type] [media_ip]
          m=audio [media_port] RTP/AVP 0
        ]]></send>
        <recv response="200"/>
        </scenario>"#,
    );
    let mut a = uac(scn, config(None));
    assert!(a.start_call(at(0)));
    let out = drain(&mut a);
    let text = String::from_utf8(out[0].1.clone()).unwrap();
    let body = "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 6000 RTP/AVP 0\r\n";
    let want = format!(
        "INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-4242-1-0\r\n\
         From: <sip:a@127.0.0.1>;tag=4242SIPpTag001\r\n\
         To: <sip:b@127.0.0.1>\r\n\
         Call-ID: 1-4242@127.0.0.1\r\n\
         CSeq: 1 INVITE\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {:>5}\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(text, want);
}

#[test]
fn lost_200_is_retransmitted_until_the_ack_and_answered_again() {
    let (mut a, mut b) = (
        uac(builtin("uac"), config(Some(1))),
        uas(builtin("uas"), config(None)),
    );
    let mut net = Net::new();
    assert!(a.start_call(at(0)));
    // The first 200 (to the INVITE) is lost.
    let mut lost = false;
    net.exchange(&mut a, &mut b, &mut |l| {
        if l == "SIP/2.0 200 OK" && !lost {
            lost = true;
            return true;
        }
        false
    });
    assert_eq!(a.stats.succeeded, 0);
    // The callee's 200 has retrans="500": it comes again after 500 ms.
    assert!(net.tick(&mut a, &mut b));
    assert_eq!(net.now, 500_000);
    net.exchange(&mut a, &mut b, &mut |_| false);
    assert_eq!(a.stats.succeeded, 1);
    assert_eq!(b.stats.succeeded, 1);
    assert_eq!(b.stats.retrans_sent, 1);
}

#[test]
fn a_retransmitted_request_gets_the_last_answer_again() {
    let (mut a, mut b) = (
        uac(builtin("uac"), config(Some(1))),
        uas(builtin("uas"), config(None)),
    );
    assert!(a.start_call(at(0)));
    let invite = drain(&mut a).remove(0).1;
    b.handle_datagram(at(0), addr(UAC), &invite);
    let first = drain(&mut b);
    assert_eq!(first.len(), 2, "180 and 200");
    // The same INVITE again (a retransmission): the 200 is sent again.
    b.handle_datagram(at(10), addr(UAC), &invite);
    let again = drain(&mut b);
    assert_eq!(again.len(), 1);
    assert_eq!(start_line(&again[0].1), "SIP/2.0 200 OK");
    assert_eq!(b.stats.retrans_received, 1);
    assert_eq!(b.stats.failed_total(), 0);
}

/// `-rtcheck`: by default only the same bytes are a retransmission; with
/// `loose`, a request with the same To, From, Call-ID and CSeq is one
/// too (here its Via branch and Max-Forwards changed).
#[test]
fn rtcheck_loose_takes_a_request_with_the_same_dialog_and_cseq_as_a_retransmission() {
    for loose in [false, true] {
        let mut cfg = test_config();
        cfg.rtcheck_loose = loose;
        let (mut a, mut b) = (
            uac(builtin("uac"), config(Some(1))),
            uas(builtin("uas"), Arc::new(cfg)),
        );
        assert!(a.start_call(at(0)));
        let invite = drain(&mut a).remove(0).1;
        b.handle_datagram(at(0), addr(UAC), &invite);
        assert_eq!(drain(&mut b).len(), 2, "180 and 200");
        let text = String::from_utf8(invite).unwrap();
        let branch = text.find("branch=").unwrap() + "branch=".len();
        let mut changed = text.replace("Max-Forwards: 70", "Max-Forwards: 69");
        changed.replace_range(branch..branch + 4, "zzzz");
        assert_ne!(changed, text);
        b.handle_datagram(at(10), addr(UAC), changed.as_bytes());
        let again = drain(&mut b);
        if loose {
            assert_eq!(b.stats.retrans_received, 1);
            assert_eq!(again.len(), 1);
            assert_eq!(start_line(&again[0].1), "SIP/2.0 200 OK");
        } else {
            assert_eq!(b.stats.retrans_received, 0);
            assert!(again.iter().all(|(_, m)| start_line(m) != "SIP/2.0 200 OK"));
        }
    }
}

/// `-rsa`: every message goes to the remote sending address, while the
/// messages still name the remote host.
#[test]
fn rsa_sends_everything_to_the_remote_sending_address() {
    let mut cfg = test_config();
    cfg.send_to = Some(addr("127.0.0.9:5999"));
    let mut a = uac(builtin("uac"), Arc::new(cfg));
    assert!(a.start_call(at(0)));
    let (dst, invite) = drain(&mut a).remove(0);
    assert_eq!(dst, addr("127.0.0.9:5999"));
    assert!(
        String::from_utf8(invite)
            .unwrap()
            .starts_with("INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n")
    );
    // Its retransmissions go there too.
    a.handle_timeout(at(500_000));
    assert_eq!(drain(&mut a)[0].0, addr("127.0.0.9:5999"));
}

#[test]
fn invite_retransmissions_double_and_the_call_fails_after_five() {
    let mut a = uac(builtin("uac"), config(Some(1)));
    assert!(a.start_call(at(0)));
    drain(&mut a);
    let mut times = Vec::new();
    while let Some(t) = due(&a) {
        a.handle_timeout(at(t));
        if !drain(&mut a).is_empty() {
            times.push(t / 1000);
        }
    }
    assert_eq!(times, [500, 1500, 3500, 7500, 15500]);
    assert_eq!(a.stats.failed_by(FailReason::MaxRetrans), 1);
    assert_eq!(a.open_calls(), 0);
}

/// A final answer (`status`: code and reason) to `invite`, with its
/// headers and a To tag.
fn final_answer(invite: &[u8], status: &str) -> String {
    let m = Message::parse(invite).unwrap();
    let hdr = |h: HeaderName| String::from_utf8_lossy(m.value(h).unwrap()).to_string();
    format!(
        "SIP/2.0 {status}\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=x\r\nCall-ID: {}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
        hdr(HeaderName::Via),
        hdr(HeaderName::From),
        hdr(HeaderName::To),
        hdr(HeaderName::CallId),
        hdr(HeaderName::CSeq)
    )
}

/// `-trace_calldebug`: a failed call gives out what it did, every
/// message sent and received, timed; a call that succeeds gives nothing.
#[test]
fn a_failed_call_gives_its_debug_record() {
    let mut cfg = test_config();
    cfg.calldebug = true;
    cfg.wall_epoch_us = 1_800_000_000_000_000;
    let cfg = Arc::new(cfg);
    let mut a = uac(builtin("uac"), Arc::clone(&cfg));
    assert!(a.start_call(at(0)));
    let invite = drain(&mut a).remove(0).1;
    let busy = final_answer(&invite, "486 Busy Here");
    a.handle_datagram(at(1000), addr(UAS), busy.as_bytes());
    assert_eq!(a.call_debug.len(), 1);
    let rec = String::from_utf8(a.call_debug.remove(0)).unwrap();
    let m = Message::parse(&invite).unwrap();
    let id = String::from_utf8_lossy(m.value(HeaderName::CallId).unwrap()).to_string();
    let order = [
        format!("Call debugging information for call {id}:"),
        format!("2027-01-15\t08:00:00.000000\t1800000000.000000 Starting call {id}"),
        format!("Sending UDP message for call {id}:\nINVITE sip:"),
        format!(
            " Processing {} byte incoming message for call-ID {id}",
            busy.len()
        ),
        "SIP/2.0 486 Busy Here".to_string(),
        format!("Aborting call {id}"),
    ];
    let mut pos = 0;
    for part in &order {
        let k = rec[pos..]
            .find(part.as_str())
            .unwrap_or_else(|| panic!("{part:?} after {pos} in\n{rec}"));
        pos += k + part.len();
    }
    // A call that succeeds keeps its record to itself.
    let (mut a, mut b) = (uac(builtin("uac"), cfg), uas(builtin("uas"), config(None)));
    let mut net = Net::new();
    assert!(a.start_call(at(0)));
    net.exchange(&mut a, &mut b, &mut |_| false);
    assert_eq!(a.stats.succeeded, 1);
    assert!(a.call_debug.is_empty());
}

#[test]
fn an_error_response_fails_the_call_and_is_acknowledged() {
    let mut a = uac(builtin("uac"), config(Some(1)));
    assert!(a.start_call(at(0)));
    let invite = drain(&mut a).remove(0).1;
    let resp = final_answer(&invite, "503 Service Unavailable");
    a.handle_datagram(at(1000), addr(UAS), resp.as_bytes());
    assert_eq!(a.stats.failed_by(FailReason::UnexpectedMessage), 1);
    let out = drain(&mut a);
    assert_eq!(out.len(), 1, "the 503 is acknowledged");
    let ack = String::from_utf8(out[0].1.clone()).unwrap();
    assert!(
        ack.starts_with("ACK sip:service@127.0.0.1:5060 SIP/2.0\r\n"),
        "{ack}"
    );
    assert!(
        ack.contains(";tag=x") && ack.contains("CSeq: 1 ACK"),
        "{ack}"
    );
    let m = Message::parse(&invite).unwrap();
    let via = String::from_utf8_lossy(m.value(HeaderName::Via).unwrap()).to_string();
    assert!(ack.contains(&via), "same branch as the INVITE");
    assert_eq!(a.stats.responses[503], 1);
    // A retransmitted 503 after the end is absorbed as a dead-call message.
    a.handle_datagram(at(2000), addr(UAS), resp.as_bytes());
    assert_eq!(a.stats.dead_call_msgs, 1);
}

#[test]
fn late_provisionals_are_absorbed_and_stray_messages_counted() {
    let (mut a, mut b) = (
        uac(builtin("uac"), config(Some(1))),
        uas(builtin("uas"), config(None)),
    );
    assert!(a.start_call(at(0)));
    let invite = drain(&mut a).remove(0).1;
    b.handle_datagram(at(0), addr(UAC), &invite);
    let answers = drain(&mut b);
    let (ringing, ok) = (&answers[0].1, &answers[1].1);
    // 180 arrives after the 200: the call has moved on, it is absorbed.
    a.handle_datagram(at(10), addr(UAS), ok);
    let ack = drain(&mut a);
    assert_eq!(ack.len(), 2, "ACK, and the BYE at once (-d 0)");
    a.handle_datagram(at(11), addr(UAS), ringing);
    assert_eq!(a.stats.absorbed, 1);
    assert_eq!(a.stats.failed_total(), 0);
    // A message with an unknown Call-ID belongs to nobody.
    a.handle_datagram(
        at(12),
        addr(UAS),
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP x;branch=z9hG4bKq\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: nobody\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(a.stats.out_of_call_msgs, 1);
    a.handle_datagram(at(13), addr(UAS), b"garbage");
    assert_eq!(a.stats.parse_errors, 1);
}

#[test]
fn unexpected_bye_is_answered_and_fails_the_call() {
    let mut b = uas(builtin("uas"), config(None));
    let mut a = uac(builtin("uac"), config(Some(1)));
    assert!(a.start_call(at(0)));
    let invite = String::from_utf8(drain(&mut a).remove(0).1).unwrap();
    b.handle_datagram(at(0), addr(UAC), invite.as_bytes());
    drain(&mut b);
    // A BYE before the ACK the scenario waits for.
    let bye = invite
        .replacen("INVITE sip:", "BYE sip:", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 2 BYE");
    b.handle_datagram(at(5), addr(UAC), bye.as_bytes());
    let out = drain(&mut b);
    assert_eq!(out.len(), 1);
    let ok = String::from_utf8(out[0].1.clone()).unwrap();
    assert!(
        ok.starts_with("SIP/2.0 200 OK\r\n") && ok.contains("CSeq: 2 BYE"),
        "{ok}"
    );
    assert_eq!(b.stats.failed_by(FailReason::UnexpectedMessage), 1);
}

/// A scenario may put its own prefix before `[call_id]` with `///`: the
/// calls are still told apart by what follows, unless -callid_slash_ign.
#[test]
fn a_call_id_prefix_before_triple_slash_is_not_part_of_the_call() {
    let xml = sbc_loadtest::builtin("uac")
        .unwrap()
        .replace("Call-ID: [call_id]", "Call-ID: pre///[call_id]");
    for whole in [false, true] {
        let cfg = |calls: Option<u64>| {
            let mut c = test_config();
            c.quota = calls.map(|m| Arc::new(Quota::new(m)));
            c.callid_slash_ign = whole;
            Arc::new(c)
        };
        let (mut a, mut b) = (
            uac(scenario(&xml), cfg(Some(1))),
            uas(builtin("uas"), cfg(None)),
        );
        let mut net = Net::new();
        assert!(a.start_call(at(net.now)));
        net.exchange(&mut a, &mut b, &mut |_| false);
        if whole {
            // The answers' Call-ID names no call of the caller's.
            assert_eq!(a.stats.succeeded, 0);
            assert!(a.stats.out_of_call_msgs > 0);
        } else {
            assert_eq!(
                (a.stats.succeeded, b.stats.succeeded),
                (1, 1),
                "{:?}",
                net.log
            );
            assert!(
                net.log
                    .iter()
                    .any(|(d, l)| *d == '>' && l.starts_with("BYE "))
            );
        }
    }
}

/// `-pause_msg_ign`: what reaches a call in a `<pause>` is dropped unread;
/// without it the same BYE is taken as unexpected.
#[test]
fn pause_msg_ign_drops_what_arrives_during_a_pause() {
    let xml = r#"<scenario name="p">
  <recv request="INVITE"/>
  <pause milliseconds="1000"/>
  <recv request="BYE"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
</scenario>"#;
    let invite = invite_with_subject("s", "p1");
    let bye = invite
        .replacen("INVITE sip:", "BYE sip:", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 2 BYE");
    for ignore in [true, false] {
        let mut cfg = test_config();
        cfg.pause_msg_ign = ignore;
        let mut b = uas(scenario(xml), Arc::new(cfg));
        b.handle_datagram(at(0), addr(UAC), invite.as_bytes());
        assert!(drain(&mut b).is_empty());
        // In the pause (1 s from 0).
        b.handle_datagram(at(400_000), addr(UAC), bye.as_bytes());
        let during = drain(&mut b);
        if !ignore {
            assert_eq!(
                b.stats.failed_by(FailReason::UnexpectedMessage),
                1,
                "{during:?}"
            );
            continue;
        }
        assert!(during.is_empty(), "dropped unread");
        assert_eq!(b.stats.failed_by(FailReason::UnexpectedMessage), 0);
        // The pause ends; the BYE sent again is the one the call takes.
        b.handle_timeout(at(1_000_000));
        b.handle_datagram(at(1_100_000), addr(UAC), bye.as_bytes());
        let out = drain(&mut b);
        assert_eq!(out.len(), 1);
        assert!(start_line(&out[0].1).starts_with("SIP/2.0 200 OK"));
        assert_eq!(b.stats.retrans_received, 0, "the first copy was not read");
    }
}

#[test]
fn recv_timeout_jumps_to_ontimeout_or_fails() {
    let xml = |ontimeout: &str| {
        format!(
            r#"<scenario name="t">
            <send><![CDATA[
              OPTIONS sip:x@[remote_ip] SIP/2.0
              Call-ID: [call_id]
              CSeq: [cseq] OPTIONS
              Content-Length: 0
            ]]></send>
            <recv response="200" timeout="2000" {ontimeout}/>
            <send><![CDATA[
              OPTIONS sip:second@[remote_ip] SIP/2.0
              Call-ID: [call_id]
              CSeq: [cseq] OPTIONS
              Content-Length: 0
            ]]></send>
            <label id="out"/>
            </scenario>"#
        )
    };
    let mut a = uac(scenario(&xml("")), config(Some(1)));
    assert!(a.start_call(at(0)));
    drain(&mut a);
    a.handle_timeout(at(1_999_999));
    assert_eq!(a.open_calls(), 1);
    a.handle_timeout(at(2_000_000));
    assert_eq!(a.stats.failed_by(FailReason::RecvTimeout), 1);

    let mut a = uac(scenario(&xml(r#"ontimeout="out""#)), config(Some(1)));
    assert!(a.start_call(at(0)));
    drain(&mut a);
    a.handle_timeout(at(2_000_000));
    assert_eq!(a.stats.succeeded, 1, "the jump skips the second OPTIONS");
    assert!(drain(&mut a).is_empty());
}

#[test]
fn cseq_counts_requests_and_follows_the_peer() {
    let scn = scenario(
        r#"<scenario name="c">
        <send><![CDATA[
          INVITE sip:x@[remote_ip] SIP/2.0
          Call-ID: [call_id]
          CSeq: [cseq] INVITE
        ]]></send>
        <send><![CDATA[
          ACK sip:x@[remote_ip] SIP/2.0
          Call-ID: [call_id]
          CSeq: [cseq] ACK
        ]]></send>
        <send><![CDATA[
          INFO sip:x@[remote_ip] SIP/2.0
          Call-ID: [call_id]
          CSeq: [cseq+10] INFO
        ]]></send>
        <recv request="BYE"/>
        <send><![CDATA[
          INFO sip:x@[remote_ip] SIP/2.0
          Call-ID: [call_id]
          CSeq: [cseq] INFO
        ]]></send>
        </scenario>"#,
    );
    let mut a = uac(scn, config(Some(1)));
    assert!(a.start_call(at(0)));
    let out: Vec<String> = drain(&mut a)
        .into_iter()
        .map(|(_, m)| String::from_utf8(m).unwrap())
        .collect();
    let cseq = |m: &str| {
        m.lines()
            .find(|l| l.starts_with("CSeq"))
            .unwrap()
            .to_string()
    };
    assert_eq!(cseq(&out[0]), "CSeq: 1 INVITE");
    assert_eq!(cseq(&out[1]), "CSeq: 1 ACK");
    assert_eq!(cseq(&out[2]), "CSeq: 12 INFO");
    a.handle_datagram(
        at(5),
        addr(UAS),
        b"BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP x;branch=z9hG4bKb\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: 1-4242@127.0.0.1\r\nCSeq: 40 BYE\r\nContent-Length: 0\r\n\r\n",
    );
    let out = drain(&mut a);
    let m = String::from_utf8(out[0].1.clone()).unwrap();
    assert_eq!(cseq(&m), "CSeq: 41 INFO", "above the peer's 40");
}

#[test]
fn ereg_check_it_dooms_the_call_but_it_goes_on() {
    let uas_xml = r#"<scenario name="e">
        <recv request="INVITE">
          <action>
            <ereg regexp="Subject: ([a-z]+)" search_in="msg" check_it="true" assign_to="all,subj"/>
          </action>
        </recv>
        <send><![CDATA[
          SIP/2.0 486 Busy Here
          [last_Via:]
          [last_From:]
          [last_To:];tag=t
          [last_Call-ID:]
          [last_CSeq:]
          X-Subject: [$subj]
          Content-Length: 0
        ]]></send>
        </scenario>"#;
    let mut b = uas(scenario(uas_xml), config(None));
    b.handle_datagram(
        at(0),
        addr(UAC),
        invite_with_subject("hello", "c1").as_bytes(),
    );
    let out = String::from_utf8(drain(&mut b).remove(0).1).unwrap();
    assert!(out.contains("X-Subject: hello\r\n"), "{out}");
    assert!(out.contains("To: <sip:x@y>;tag=t\r\n"), "{out}");
    assert_eq!(b.stats.succeeded, 1);

    b.handle_datagram(
        at(1),
        addr(UAC),
        invite_with_subject("123", "c2").as_bytes(),
    );
    let out = drain(&mut b);
    assert_eq!(out.len(), 1, "the call goes on after a failed check");
    assert_eq!(b.stats.failed_by(FailReason::RegexpNoMatch), 1);

    // check_it_inverse: a match fails the call, counted apart (SIPp's
    // FailedRegexpShouldntMatch).
    let inverse = uas_xml.replace(r#"check_it="true""#, r#"check_it_inverse="true""#);
    let mut b = uas(scenario(&inverse), config(None));
    b.handle_datagram(
        at(0),
        addr(UAC),
        invite_with_subject("hello", "c3").as_bytes(),
    );
    b.handle_datagram(
        at(1),
        addr(UAC),
        invite_with_subject("123", "c4").as_bytes(),
    );
    assert_eq!(drain(&mut b).len(), 2);
    assert_eq!(b.stats.failed_by(FailReason::RegexpShouldntMatch), 1);
    assert_eq!(b.stats.failed_by(FailReason::RegexpNoMatch), 0);
    assert_eq!(b.stats.succeeded, 1);
}

#[test]
fn digest_authentication_answers_the_challenge() {
    let scn = scenario(
        r#"<scenario name="auth">
        <send retrans="500"><![CDATA[
          REGISTER sip:[remote_ip] SIP/2.0
          Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch]
          From: <sip:[service]@[remote_ip]>;tag=[call_number]
          To: <sip:[service]@[remote_ip]>
          Call-ID: [call_id]
          CSeq: [cseq] REGISTER
          Content-Length: 0
        ]]></send>
        <recv response="401"/>
        <send retrans="500"><![CDATA[
          REGISTER sip:[remote_ip] SIP/2.0
          Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch]
          From: <sip:[service]@[remote_ip]>;tag=[call_number]
          To: <sip:[service]@[remote_ip]>
          Call-ID: [call_id]
          CSeq: [cseq] REGISTER
          [authentication username=alice password=secret]
          Content-Length: 0
        ]]></send>
        <recv response="200"/>
        </scenario>"#,
    );
    let mut a = uac(scn, config(Some(1)));
    assert!(a.start_call(at(0)));
    drain(&mut a);
    a.handle_datagram(
        at(10),
        addr(UAS),
        b"SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-4242-1-0\r\nFrom: <sip:service@127.0.0.1>;tag=1\r\nTo: <sip:service@127.0.0.1>;tag=r\r\nCall-ID: 1-4242@127.0.0.1\r\nCSeq: 1 REGISTER\r\nWWW-Authenticate: Digest realm=\"sbc\", nonce=\"abc\"\r\nContent-Length: 0\r\n\r\n",
    );
    let m = String::from_utf8(drain(&mut a).remove(0).1).unwrap();
    let line = m
        .lines()
        .find(|l| l.starts_with("Authorization: Digest "))
        .unwrap_or_else(|| panic!("{m}"));
    // response = MD5(MD5(alice:sbc:secret):abc:MD5(REGISTER:sip:127.0.0.1))
    let hex = md5_hex;
    let ha1 = hex(b"alice:sbc:secret");
    let ha2 = hex(b"REGISTER:sip:127.0.0.1");
    let want = hex(format!("{ha1}:abc:{ha2}").as_bytes());
    assert!(line.contains(&format!("response=\"{want}\"")), "{line}");
    assert!(line.contains("uri=\"sip:127.0.0.1\"") && line.contains("username=\"alice\""));
    assert!(m.contains("CSeq: 2 REGISTER"));
}

/// `-auth_uri` names the digest's URI (`sip:` and it, in the hash too),
/// `-cid_str` shapes a caller's Call-IDs (`%u`, `%p`, `%s`; another `%x`
/// leaves a `%`), and `start_call_on` gives a call its own `[local_port]`
/// (`-t un`).
#[test]
fn auth_uri_cid_str_and_a_calls_own_port_shape_its_messages() {
    let scn = scenario(
        r#"<scenario name="auth">
        <send retrans="500"><![CDATA[
          REGISTER sip:[remote_ip] SIP/2.0
          Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch]
          Call-ID: [call_id]
          CSeq: [cseq] REGISTER
          Content-Length: 0
        ]]></send>
        <recv response="401"/>
        <send retrans="500"><![CDATA[
          REGISTER sip:[remote_ip] SIP/2.0
          Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch]
          Call-ID: [call_id]
          CSeq: [cseq] REGISTER
          [authentication username=alice password=secret]
          Content-Length: 0
        ]]></send>
        <recv response="200"/>
        </scenario>"#,
    );
    assert_eq!(
        sbc_loadtest::engine::call_id_format("a%u%zb"),
        vec![
            CidPart::Text(b"a".to_vec()),
            CidPart::Number,
            CidPart::Text(b"%b".to_vec()),
        ]
    );
    let mut c = test_config();
    c.pid = 4242;
    c.auth_uri = Some(b"registrar.example".to_vec());
    c.call_id_format = Some(sbc_loadtest::engine::call_id_format("load-%u.%p@%s"));
    let mut a = uac(scn, Arc::new(c));
    assert_eq!(a.start_call_on(at(0), 40001), Start::Call(1));
    let first = String::from_utf8(drain(&mut a).remove(0).1).unwrap();
    assert!(
        first.contains("Call-ID: load-1.4242@127.0.0.1\r\n"),
        "{first}"
    );
    assert!(
        first.contains("Via: SIP/2.0/UDP 127.0.0.1:40001;"),
        "{first}"
    );
    a.handle_datagram(
        at(10),
        addr(UAS),
        b"SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 127.0.0.1:40001;branch=z9hG4bK-4242-1-0\r\nCall-ID: load-1.4242@127.0.0.1\r\nCSeq: 1 REGISTER\r\nWWW-Authenticate: Digest realm=\"sbc\", nonce=\"abc\"\r\nContent-Length: 0\r\n\r\n",
    );
    let m = String::from_utf8(drain(&mut a).remove(0).1).unwrap();
    let line = m
        .lines()
        .find(|l| l.starts_with("Authorization: Digest "))
        .unwrap_or_else(|| panic!("{m}"));
    let hex = md5_hex;
    let ha1 = hex(b"alice:sbc:secret");
    let ha2 = hex(b"REGISTER:sip:registrar.example");
    let want = hex(format!("{ha1}:abc:{ha2}").as_bytes());
    assert!(line.contains(&format!("response=\"{want}\"")), "{line}");
    assert!(line.contains("uri=\"sip:registrar.example\""), "{line}");
    // A call started without a port of its own names the thread's.
    assert_eq!(a.start_call_on(at(20), 0), Start::Call(2));
    let second = String::from_utf8(drain(&mut a).remove(0).1).unwrap();
    assert!(
        second.contains("Via: SIP/2.0/UDP 127.0.0.1:5061;"),
        "{second}"
    );
}

#[test]
fn injection_fields_fill_each_call() {
    let scn = scenario(
        r#"<scenario name="inf">
        <send><![CDATA[
          MESSAGE sip:[field0]@[remote_ip] SIP/2.0
          Call-ID: [call_id]
          X-Name: [field1]
          Content-Length: 0
        ]]></send>
        </scenario>"#,
    );
    let mut c = test_config();
    c.inject = Some(Arc::new(
        sbc_loadtest::inject::Inject::parse(b"SEQUENTIAL\n100;alice\n200;bob\n", "u.csv")
            .unwrap()
            .into(),
    ));
    let mut a = uac(scn, Arc::new(c));
    let mut lines = Vec::new();
    for t in 0..3 {
        assert!(a.start_call(at(t)));
        for (_, m) in drain(&mut a) {
            let m = String::from_utf8(m).unwrap();
            lines.push(format!(
                "{} {}",
                start_line(m.as_bytes()),
                m.lines().find(|l| l.starts_with("X-Name")).unwrap()
            ));
        }
    }
    assert_eq!(
        lines,
        [
            "MESSAGE sip:100@127.0.0.1 SIP/2.0 X-Name: alice",
            "MESSAGE sip:200@127.0.0.1 SIP/2.0 X-Name: bob",
            "MESSAGE sip:100@127.0.0.1 SIP/2.0 X-Name: alice",
        ]
    );
    assert_eq!(a.stats.succeeded, 3);
}

/// Keywords in action values: `[fieldN]` of the injection file, the pid,
/// addresses and ports render in `assignstr` (and so in `verifyauth`,
/// `log`, `exec command`...) as in messages.
#[test]
fn action_values_take_injection_fields_and_addresses() {
    let scn = scenario(
        r#"<scenario name="inf">
        <send><![CDATA[
          OPTIONS sip:x@[remote_ip] SIP/2.0
          Call-ID: [call_id]
          Content-Length: 0
        ]]></send>
        <nop><action><assignstr assign_to="v" value="[field0]/[field1]/[pid]/[local_ip]:[local_port]/[media_port+2]"/></action></nop>
        <send><![CDATA[
          MESSAGE sip:x@[remote_ip] SIP/2.0
          Call-ID: [call_id]
          X-Value: [$v]
          Content-Length: 0
        ]]></send>
        </scenario>"#,
    );
    let mut c = test_config();
    c.pid = 4242;
    c.inject = Some(Arc::new(
        sbc_loadtest::inject::Inject::parse(b"SEQUENTIAL\n100;alice\n", "u.csv")
            .unwrap()
            .into(),
    ));
    let mut a = Endpoint::new(Arc::new(c), scn, 5061, Some(addr(UAS)), 1, 1);
    assert!(a.start_call(at(0)));
    let out = drain(&mut a);
    let m = String::from_utf8(out[1].1.clone()).unwrap();
    assert!(
        m.contains("X-Value: 100/alice/4242/127.0.0.1:5061/6002\r\n"),
        "{m}"
    );
}

/// SIPp's injection files in full: several files, `file=` by base name,
/// `line=` with keywords, `<lookup>` on an indexed file, `<insert>`,
/// `<replace>`, USER lines with `-users`; and the other SIPp keywords.
#[test]
fn injection_files_lookup_insert_replace_and_sipp_keywords() {
    use sbc_loadtest::inject::{Inject, Injection};
    use sbc_loadtest::scenario::LoadContext;
    let ctx = LoadContext {
        keys: vec![("realm".into(), "sbc.example".into())],
        inf: vec!["users.csv".into(), "routes.csv".into()],
        ..LoadContext::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body.txt");
    std::fs::write(&body, "hello").unwrap();
    let xml = format!(
        r#"<scenario name="inf">
        <nop><action>
          <lookup assign_to="line" file="routes.csv" key="[field0]"/>
          <insert file="routes.csv" value="new-[call_number];10.0.0.[call_number]"/>
          <lookup assign_to="added" file="routes.csv" key="new-[call_number]"/>
          <replace file="routes.csv" line="0" value="alice;10.9.9.9"/>
          <assign assign_to="n" value="3"/>
          <log message="call [call_number] user [userid] line [$line]"/>
          <setdest host="127.0.0.9" port="5099" protocol="udp"/>
        </action></nop>
        <send><![CDATA[
          MESSAGE sip:[field0]@[remote_ip] SIP/2.0
          Call-ID: [call_id]
          X-User: [userid]/[users] [field1] [field1 file="routes.csv" line="[$line]"] [field0 file="routes.csv" line="[$added]"]
          X-Gone: [field0 file="routes.csv" line="-1"]|[field0 file="routes.csv" line="99"]
          X-Misc: [dynamic_id] [dynamic_id] [msg_index] [fill text="ab" variable="n"] [realm] [server_ip] [remote_host]
          Content-Length: [len]

          [file name="{}"]
        ]]></send>
        </scenario>"#,
        body.display()
    );
    let scn =
        Arc::new(Scenario::parse_with(&xml, "inf.xml", &ctx).unwrap_or_else(|e| panic!("{e}")));
    assert!(scn.changes_injection());
    let mut routes = Inject::parse(
        b"SEQUENTIAL\nalice;10.1.1.1\nbob;10.2.2.2\n",
        "d/routes.csv",
    )
    .unwrap();
    routes.set_index(0).unwrap();
    let users = Inject::parse(b"USER\nalice;A\nbob;B\n", "users.csv").unwrap();
    let mut c = test_config();
    c.inject = Some(Arc::new(Injection {
        files: vec![users, routes],
    }));
    c.users = Some(2);
    c.trace_logs = true;
    c.remote_host = b"sbc.test".to_vec();
    let mut a = Endpoint::new(Arc::new(c), scn, 5061, Some(addr(UAS)), 1, 1);
    a.set_users(1, 2);
    let mut msgs = Vec::new();
    for t in 0..3 {
        a.start_call(at(t));
        msgs.extend(drain(&mut a));
    }
    // Each call ends as it sends; its user is free again (at the front).
    assert_eq!(msgs.len(), 3);
    let (to, m) = &msgs[0];
    assert_eq!(*to, addr("127.0.0.9:5099"), "setdest");
    let m = String::from_utf8(m.clone()).unwrap();
    // User 2 first (SIPp takes the last free user): line 1 of users.csv.
    assert!(
        m.starts_with("MESSAGE sip:bob@127.0.0.1 SIP/2.0\r\n"),
        "{m}"
    );
    // bob's route is line 1; the inserted line is 2.
    assert!(m.contains("X-User: 2/2 B 10.2.2.2 new-1\r\n"), "{m}");
    assert!(m.contains("X-Gone: |\r\n"), "{m}");
    assert!(
        m.contains("X-Misc: 10000 10004 1 aba sbc.example 127.0.0.1 sbc.test\r\n"),
        "{m}"
    );
    assert!(m.ends_with("\r\n\r\nhello\r\n"), "{m}");
    assert!(m.contains("Content-Length:     7\r\n"), "{m}");
    let m2 = String::from_utf8(msgs[1].1.clone()).unwrap();
    // User 1: alice, whose route line 0 the first call replaced.
    assert!(m2.contains("X-User: 1/2 A 10.9.9.9 new-2\r\n"), "{m2}");
    assert!(m2.contains("X-Misc: 10008 10012 1 "), "{m2}");
    assert_eq!(
        a.logs
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect::<Vec<_>>(),
        [
            "call 1 user 2 line 1.000000",
            "call 2 user 1 line 0.000000",
            "call 3 user 2 line 1.000000"
        ]
    );
}

/// A `<replace>` out of the file, a `[file]` that cannot be read and a
/// `setdest` to another protocol are SIPp's fatal errors.
#[test]
fn injection_and_setdest_errors_stop_the_run() {
    use sbc_loadtest::inject::Inject;
    use sbc_loadtest::scenario::LoadContext;
    let ctx = LoadContext {
        keys: Vec::new(),
        inf: vec!["r.csv".into()],
        ..LoadContext::default()
    };
    for (action, want) in [
        (r#"<replace file="r.csv" line="5" value="x"/>"#, "line 5"),
        (
            r#"<replace file="r.csv" line="a" value="x"/>"#,
            "invalid line number",
        ),
        (
            r#"<setdest host="127.0.0.1" port="5060" protocol="tcp"/>"#,
            "switch protocols",
        ),
        (
            r#"<setdest host="127.0.0.1" port="x" protocol="udp"/>"#,
            "Invalid port",
        ),
        (
            r#"<assignstr assign_to="v" value='[file name="/nonexistent/[call_number]"]'/>"#,
            "could not open",
        ),
    ] {
        let xml = format!(
            r#"<scenario><nop><action>{action}</action></nop>
            <send><![CDATA[
              OPTIONS sip:x SIP/2.0
              Call-ID: [call_id]
              Content-Length: 0
            ]]></send></scenario>"#
        );
        let scn =
            Arc::new(Scenario::parse_with(&xml, "e.xml", &ctx).unwrap_or_else(|e| panic!("{e}")));
        let mut c = test_config();
        c.inject = Some(Arc::new(
            Inject::parse(b"SEQUENTIAL\na;b\n", "r.csv").unwrap().into(),
        ));
        let mut a = Endpoint::new(Arc::new(c), scn, 5061, Some(addr(UAS)), 1, 1);
        a.start_call(at(0));
        let fatal = a.fatal.clone().unwrap_or_default();
        assert!(fatal.contains(want), "{action}: {fatal}");
        assert!(drain(&mut a).is_empty(), "{action}");
    }
    // Unknown files are refused when the scenario loads.
    let e = Scenario::parse_with(
        r#"<scenario><nop><action><insert file="x.csv" value="a"/></action></nop></scenario>"#,
        "e.xml",
        &ctx,
    )
    .unwrap_err();
    assert!(e.to_string().contains("x.csv"), "{e}");
}

#[test]
fn an_answered_call_that_fails_is_hung_up_above_the_last_cseq() {
    let (mut a, mut b) = (
        uac(builtin("uac"), config(Some(1))),
        uas(builtin("uas"), config(None)),
    );
    assert!(a.start_call(at(0)));
    let invite = drain(&mut a).remove(0).1;
    b.handle_datagram(at(0), addr(UAC), &invite);
    for (_, m) in drain(&mut b) {
        a.handle_datagram(at(1), addr(UAS), &m);
    }
    let sent: Vec<String> = drain(&mut a).iter().map(|(_, m)| start_line(m)).collect();
    assert_eq!(sent.len(), 2, "ACK and BYE: {sent:?}");
    // The BYE and all its retransmissions are lost: the call fails.
    let mut last = Vec::new();
    while let Some(t) = due(&a) {
        a.handle_timeout(at(t));
        last = drain(&mut a);
        if a.open_calls() == 0 {
            break;
        }
    }
    assert_eq!(a.stats.failed_by(FailReason::MaxRetrans), 1);
    assert_eq!(a.stats.step(7).map(|s| s.retransmissions), Some(9));
    // Clean-up: ACK, then a BYE numbered above the scenario's "CSeq: 2".
    let texts: Vec<String> = last
        .iter()
        .map(|(_, m)| String::from_utf8_lossy(m).to_string())
        .collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(texts[0].starts_with("ACK ") && texts[0].contains("CSeq: 1 ACK"));
    assert!(
        texts[1].starts_with("BYE ") && texts[1].contains("CSeq: 3 BYE"),
        "{}",
        texts[1]
    );
}

#[test]
fn a_lost_200_to_bye_is_answered_again_from_time_wait_then_forgotten() {
    let (mut a, mut b) = (
        uac(builtin("uac"), config(Some(1))),
        uas(builtin("uas"), config(None)),
    );
    let mut net = Net::new();
    assert!(a.start_call(at(0)));
    // The callee's 200 to the BYE is lost: the callee has ended its call.
    let mut seen_bye = false;
    net.exchange(&mut a, &mut b, &mut |l| {
        if l.starts_with("BYE ") {
            seen_bye = true;
        }
        seen_bye && l == "SIP/2.0 200 OK"
    });
    assert_eq!(b.stats.succeeded, 1);
    assert_eq!(a.stats.succeeded, 0);
    assert_eq!(b.open_calls(), 0);
    assert!(b.lingering(), "the callee still answers the BYE");
    // The caller retransmits its BYE (T1 = 500 ms) and now gets the 200.
    assert!(net.tick(&mut a, &mut b));
    assert_eq!(net.now, 500_000);
    net.exchange(&mut a, &mut b, &mut |_| false);
    assert_eq!(a.stats.succeeded, 1);
    assert_eq!(a.stats.failed_total() + b.stats.failed_total(), 0);
    assert_eq!(b.stats.retrans_received, 1);
    // After the 4 s time-wait the answer is forgotten.
    while b.lingering() {
        assert!(net.tick(&mut a, &mut b));
    }
    assert!(net.now >= 4_000_000, "forgotten at {} µs", net.now);
}

/// The string and number actions (strcmp, todouble, trim, urlencode,
/// urldecode, gettimeofday, sample), a jump, and `<error>` ending the call
/// at once, as SIPp runs them.
#[test]
fn string_number_and_jump_actions_run_as_sipp_runs_them() {
    let uas_xml = r#"<scenario name="a">
        <recv request="INVITE">
          <action>
            <ereg regexp="Subject: ([^\r]+)" search_in="msg" assign_to="all,subj"/>
            <assignstr assign_to="padded" value="  [$subj]  "/>
            <trim assign_to="padded"/>
            <strcmp assign_to="same" variable="padded" value="go on"/>
            <test assign_to="equal" variable="same" compare="equal" value="0"/>
            <assignstr assign_to="num" value=" 41.5"/>
            <todouble assign_to="n" variable="num"/>
            <add assign_to="n" value="0.5"/>
            <assignstr assign_to="url" value="a b&amp;c"/>
            <urlencode variable="url"/>
            <assignstr assign_to="back" value="[$url]"/>
            <urldecode variable="back"/>
            <gettimeofday assign_to="secs,usecs"/>
            <sample assign_to="u" distribution="uniform" min="2" max="3"/>
            <sample assign_to="f" distribution="fixed" value="7"/>
          </action>
        </recv>
        <nop test="equal" next="reply"/>
        <nop><action><error message="not equal"/></action></nop>
        <label id="reply"/>
        <send><![CDATA[
          SIP/2.0 486 Busy Here
          [last_Via:]
          [last_From:]
          [last_To:];tag=t
          [last_Call-ID:]
          [last_CSeq:]
          X-N: [$n]
          X-Url: [$url]
          X-Back: [$back]
          X-Secs: [$secs]
          X-U: [$u]
          X-F: [$f]
          Content-Length: 0
        ]]></send>
        <nop><action><jump value="6"/></action></nop>
        <send><![CDATA[
          SIP/2.0 500 Never Sent
          [last_Via:]
          Content-Length: 0
        ]]></send>
        </scenario>"#;
    let mut b = uas(scenario(uas_xml), config(None));
    b.handle_datagram(
        at(0),
        addr(UAC),
        invite_with_subject("go on", "a1").as_bytes(),
    );
    let out = drain(&mut b);
    assert_eq!(out.len(), 1, "the jump skipped the 500");
    let text = String::from_utf8(out[0].1.clone()).unwrap();
    let header = |name: &str| {
        let m = Message::parse(text.as_bytes()).unwrap();
        let h = m.headers().find(|h| h.raw_name == name.as_bytes()).unwrap();
        String::from_utf8(h.value.to_vec()).unwrap()
    };
    assert_eq!(header("X-N"), "42.000000");
    assert_eq!(header("X-Url"), "a%20b%26c");
    assert_eq!(header("X-Back"), "a b&c");
    let secs: f64 = header("X-Secs").parse().unwrap();
    assert!(secs > 1.7e9, "{secs}");
    let u: f64 = header("X-U").parse().unwrap();
    assert!((2.0..3.0).contains(&u), "{u}");
    assert_eq!(header("X-F"), "7.000000");
    assert_eq!(b.stats.succeeded, 1);

    // Not equal: <error> ends the call there, nothing more is sent, and
    // the run must stop (SIPp's fatal error) with the message.
    assert_eq!(b.fatal, None);
    b.handle_datagram(
        at(1),
        addr(UAC),
        invite_with_subject("stop", "a2").as_bytes(),
    );
    assert!(drain(&mut b).is_empty());
    assert_eq!(b.stats.failed_by(FailReason::ErrorAction), 1);
    assert_eq!(b.fatal.as_deref(), Some("not equal"));
}

/// `lost="100"` drops every sending of the callee's 200, retransmissions
/// too (the caller never gets it), and `counter` counts the step.
#[test]
fn lost_drops_every_sending_and_counter_counts_the_step() {
    let xml = sbc_loadtest::builtin("uas").unwrap().replacen(
        r#"<send retrans="500">"#,
        r#"<send retrans="500" lost="100" counter="answers">"#,
        1,
    );
    let scn = scenario(&xml);
    let (mut a, mut b) = (
        uac(builtin("uac"), config(Some(1))),
        uas(Arc::clone(&scn), config(None)),
    );
    let mut net = Net::new();
    assert!(a.start_call(at(0)));
    net.exchange(&mut a, &mut b, &mut |_| false);
    for _ in 0..64 {
        if !net.tick(&mut a, &mut b) {
            break;
        }
        net.exchange(&mut a, &mut b, &mut |_| false);
    }
    assert_eq!(a.stats.succeeded, 0, "no 200 ever left");
    assert_eq!(b.stats.failed_by(FailReason::MaxRetrans), 1);
    let r = sbc_loadtest::report::Report::new(&scn, "uas", 1, 1.0, &b.stats);
    assert_eq!(r.counters, [("answers".to_string(), 1)]);
    let step = r.steps.iter().find(|s| s.lost > 0).unwrap();
    assert_eq!(step.lost, 1 + step.retransmissions, "every sending dropped");
    assert!(r.table().contains("Counter answers"), "{}", r.table());
}

#[test]
fn default_behaviors_are_read_as_sipp_reads_them() {
    use sbc_loadtest::engine::Behaviors;
    assert_eq!(Behaviors::parse("all"), Ok(Behaviors::ALL));
    assert_eq!(Behaviors::parse("none"), Ok(Behaviors::NONE));
    let b = Behaviors::parse("bye,+pingreply").unwrap();
    assert!(b.bye && b.ping_reply && !b.abort_unexpected);
    // From none, in order: "-bye" alone leaves none; "all,-bye" all but.
    assert_eq!(Behaviors::parse("-bye"), Ok(Behaviors::NONE));
    let b = Behaviors::parse("all,-bye").unwrap();
    assert!(!b.bye && b.ping_reply && b.abort_unexpected);
    assert!(Behaviors::parse("bogus").unwrap_err().contains("bogus"));
    assert!(Behaviors::parse("all,-cseq").unwrap_err().contains("cseq"));
}

/// `-aa` answers an unexpected INFO 200 and the call goes on (and an
/// OPTIONS of no call); without it the INFO fails the call, unless
/// `abortunexp` is off (then it is ignored); `pingreply` answers a PING.
#[test]
fn auto_answer_and_default_behaviors_decide_what_an_unexpected_request_does() {
    let invite = |id: &str| {
        format!(
            "INVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK{id}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: {id}\r\nCSeq: 1 INVITE\r\nContact: <sip:a@127.0.0.1:5061>\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let request = |method: &str, id: &str| {
        format!(
            "{method} sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK{id}{method}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>;tag=2\r\nCall-ID: {id}\r\nCSeq: 2 {method}\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let run = |cfg: Config| {
        let mut b = uas(builtin("uas"), Arc::new(cfg));
        b.handle_datagram(at(0), addr(UAC), invite("c1").as_bytes());
        drain(&mut b);
        b.handle_datagram(at(1), addr(UAC), request("INFO", "c1").as_bytes());
        let out = drain(&mut b);
        (b, out)
    };
    let base = || {
        let mut c = test_config();
        c.pid = 4242;
        c
    };

    let (b, out) = run(Config {
        auto_answer: true,
        ..base()
    });
    assert_eq!(out.len(), 1);
    assert_eq!(start_line(&out[0].1), "SIP/2.0 200 OK");
    assert_eq!((b.stats.failed_total(), b.open_calls()), (0, 1));
    assert_eq!(b.stats.auto_answered, 1);

    let (b, _) = run(base());
    assert_eq!(b.stats.failed_by(FailReason::UnexpectedMessage), 1);

    let mut quiet = base();
    quiet.behaviors.abort_unexpected = false;
    let (b, out) = run(quiet);
    assert!(out.is_empty());
    assert_eq!((b.stats.failed_total(), b.open_calls()), (0, 1));

    // An OPTIONS that is no call's: answered with -aa only.
    let mut b = uas(builtin("uas"), Arc::new(base()));
    b.handle_datagram(at(0), addr(UAC), request("OPTIONS", "ping").as_bytes());
    assert!(drain(&mut b).is_empty());
    let mut b = uas(
        builtin("uas"),
        Arc::new(Config {
            auto_answer: true,
            ..base()
        }),
    );
    b.handle_datagram(at(0), addr(UAC), request("OPTIONS", "ping").as_bytes());
    let out = drain(&mut b);
    assert_eq!(out.len(), 1);
    assert_eq!(start_line(&out[0].1), "SIP/2.0 200 OK");
    // pingreply (a default behaviour): a PING in the call is answered.
    let mut b = uas(builtin("uas"), Arc::new(base()));
    b.handle_datagram(at(0), addr(UAC), invite("c2").as_bytes());
    drain(&mut b);
    b.handle_datagram(at(1), addr(UAC), request("PING", "c2").as_bytes());
    let out = drain(&mut b);
    assert_eq!(out.len(), 1);
    assert_eq!(start_line(&out[0].1), "SIP/2.0 200 OK");
    assert_eq!((b.stats.failed_total(), b.open_calls()), (0, 1));
}

/// With `-nd` (no `bye` behaviour) a failed answered call is left as it
/// is: no clean-up ACK and BYE.
#[test]
fn without_the_bye_behaviour_a_failed_call_is_not_cleaned_up() {
    let mut cfg = test_config();
    cfg.pid = 4242;
    cfg.quota = Some(Arc::new(Quota::new(1)));
    cfg.behaviors = sbc_loadtest::engine::Behaviors::NONE;
    let (mut a, mut b) = (
        uac(builtin("uac"), Arc::new(cfg)),
        uas(builtin("uas"), config(None)),
    );
    assert!(a.start_call(at(0)));
    let invite = drain(&mut a).remove(0).1;
    b.handle_datagram(at(0), addr(UAC), &invite);
    for (_, m) in drain(&mut b) {
        a.handle_datagram(at(1), addr(UAS), &m);
    }
    drain(&mut a);
    let mut last = Vec::new();
    while let Some(t) = due(&a) {
        a.handle_timeout(at(t));
        last = drain(&mut a);
        if a.open_calls() == 0 {
            break;
        }
    }
    assert_eq!(a.stats.failed_by(FailReason::MaxRetrans), 1);
    assert!(
        last.iter().all(|(_, m)| !start_line(m).starts_with("ACK ")),
        "no clean-up: {:?}",
        last.iter().map(|(_, m)| start_line(m)).collect::<Vec<_>>()
    );
}

/// `<Global>` variables are one table: calls running at once see and keep
/// each other's changes (SIPp's globalVariables).
#[test]
fn globals_are_shared_by_calls_running_at_once() {
    let uas_xml = r#"<scenario name="g">
        <Global variables="acks"/>
        <recv request="INVITE"/>
        <send><![CDATA[
          SIP/2.0 200 OK
          [last_Via:]
          [last_From:]
          [last_To:];tag=t
          [last_Call-ID:]
          [last_CSeq:]
          Content-Length: 0
        ]]></send>
        <recv request="ACK"><action><add assign_to="acks" value="1"/></action></recv>
        <send><![CDATA[
          MESSAGE sip:x@y SIP/2.0
          X-Acks: [$acks]
          Content-Length: 0
        ]]></send>
        </scenario>"#;
    let mut b = uas(scenario(uas_xml), config(None));
    let msg = |method: &str, id: &str, cseq: &str| {
        format!(
            "{method} sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK{id}{method}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: {id}\r\nCSeq: {cseq}\r\nContent-Length: 0\r\n\r\n"
        )
    };
    // Both calls start before either ACK.
    b.handle_datagram(at(0), addr(UAC), msg("INVITE", "g1", "1 INVITE").as_bytes());
    b.handle_datagram(at(0), addr(UAC), msg("INVITE", "g2", "1 INVITE").as_bytes());
    drain(&mut b);
    b.handle_datagram(at(1), addr(UAC), msg("ACK", "g1", "1 ACK").as_bytes());
    b.handle_datagram(at(1), addr(UAC), msg("ACK", "g2", "1 ACK").as_bytes());
    let acks: Vec<String> = drain(&mut b)
        .iter()
        .map(|(_, m)| {
            let t = String::from_utf8_lossy(m).to_string();
            t.lines()
                .find(|l| l.starts_with("X-Acks"))
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(acks, ["X-Acks: 1.000000", "X-Acks: 2.000000"]);
}

/// As in SIPp, a jump past the end of the scenario (or to itself) is a
/// fatal error of the scenario; a jump to the end ends the call.
#[test]
fn a_jump_out_of_range_is_fatal() {
    let xml = |to: &str| {
        format!(
            r#"<scenario name="j"><recv request="INVITE"/><nop><action><jump value="{to}"/></action></nop></scenario>"#
        )
    };
    let invite = "INVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKj\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: j1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    let mut b = uas(scenario(&xml("2")), config(None));
    b.handle_datagram(at(0), addr(UAC), invite.as_bytes());
    assert_eq!((b.stats.succeeded, b.fatal.as_deref()), (1, None));
    for (to, why) in [("3", "out of range"), ("1", "itself")] {
        let mut b = uas(scenario(&xml(to)), config(None));
        b.handle_datagram(at(0), addr(UAC), invite.as_bytes());
        assert!(
            b.fatal.as_deref().is_some_and(|f| f.contains(why)),
            "{:?}",
            b.fatal
        );
        assert_eq!(b.stats.failed_by(FailReason::ErrorAction), 1);
    }
}

/// A pcap file (little-endian, µs) of Ethernet frames: (microseconds
/// after the first, UDP destination port, payload) per packet.
fn pcap_file(packets: &[(u32, u16, &[u8])]) -> Vec<u8> {
    let mut f = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    f.extend_from_slice(&65535u32.to_le_bytes());
    f.extend_from_slice(&1u32.to_le_bytes());
    for &(us, dport, payload) in packets {
        let mut frame = Vec::new();
        etherparse::PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(4000, dport)
            .write(&mut frame, payload)
            .unwrap();
        let len = (frame.len() as u32).to_le_bytes();
        f.extend_from_slice(&(1000 + us / 1_000_000).to_le_bytes());
        f.extend_from_slice(&(us % 1_000_000).to_le_bytes());
        f.extend_from_slice(&len);
        f.extend_from_slice(&len);
        f.extend_from_slice(&frame);
    }
    f
}

/// Takes the media an endpoint queued: (from port, destination, bytes).
fn drain_media(ep: &mut Endpoint) -> Vec<(u16, SocketAddr, Vec<u8>)> {
    let (out, buf) = ep.media_outgoing();
    let v = out
        .iter()
        .map(|m| (m.from_port, m.dst, buf[m.start..m.start + m.len].to_vec()))
        .collect();
    ep.clear_media();
    v
}

/// A callee that answers with an SDP naming 10.9.9.9 port 7000 for audio.
fn uas_with_sdp() -> Arc<Scenario> {
    uas_answering("c=IN IP4 10.9.9.9\nm=audio 7000 RTP/AVP 8\n", "", "")
}

/// A callee whose 200 carries `sdp` (after `v=0`), that runs `after_ack`
/// once the ACK came and `after_bye` once it answered the BYE.
fn uas_answering(sdp: &str, after_ack: &str, after_bye: &str) -> Arc<Scenario> {
    scenario(&format!(
        r#"<scenario name="uas">
  <recv request="INVITE"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=u1
[last_Call-ID:]
[last_CSeq:]
Content-Type: application/sdp
Content-Length: [len]

v=0
{sdp}]]></send>
  <recv request="ACK"/>
  {after_ack}
  <recv request="BYE"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>
  {after_bye}
</scenario>"#
    ))
}

/// A caller whose INVITE offers audio on `[media_port+10]` and that runs
/// `actions` after its ACK, pauses `pause_ms` and hangs up.
fn uac_playing(actions: &str, pause_ms: u64) -> Arc<Scenario> {
    uac_with_steps(&format!(
        r#"<nop><action>{actions}</action></nop><pause milliseconds="{pause_ms}"/>"#
    ))
}

/// That caller with `steps` between its ACK and its BYE.
fn uac_with_steps(steps: &str) -> Arc<Scenario> {
    uac_offering(
        "c=IN IP4 [media_ip]\nm=audio [media_port+10] RTP/AVP 8\n",
        steps,
    )
}

/// A caller whose INVITE carries `sdp` (after `v=0`), with `steps`
/// between its ACK and its BYE.
fn uac_offering(sdp: &str, steps: &str) -> Arc<Scenario> {
    scenario(&format!(
        r#"<scenario name="uac">
  <send><![CDATA[
INVITE sip:x@[remote_ip] SIP/2.0
Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch]
From: <sip:a@[local_ip]>;tag=[call_number]
To: <sip:x@[remote_ip]>
Call-ID: [call_id]
CSeq: 1 INVITE
Content-Type: application/sdp
Content-Length: [len]

v=0
{sdp}]]></send>
  <recv response="200"/>
  <send><![CDATA[
ACK sip:x@[remote_ip] SIP/2.0
Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch]
From: <sip:a@[local_ip]>;tag=[call_number]
To: <sip:x@[remote_ip]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Content-Length: 0
]]></send>
  {steps}
  <send><![CDATA[
BYE sip:x@[remote_ip] SIP/2.0
Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch]
From: <sip:a@[local_ip]>;tag=[call_number]
To: <sip:x@[remote_ip]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 2 BYE
Content-Length: 0
]]></send>
  <recv response="200"/>
</scenario>"#
    ))
}

/// `play_pcap_audio` sends the capture's payloads as captured, paced as
/// captured, from the port our SDP offered to the address and port of the
/// peer's SDP (RTCP, one port up in the capture, one port up on both
/// sides); the playback stops when the call ends.
#[test]
fn a_capture_plays_paced_from_our_sdp_port_to_the_peers_and_stops_with_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("voice.pcap");
    std::fs::write(
        &path,
        pcap_file(&[
            (0, 6000, b"rtp-0"),
            (10_000, 6001, b"rtcp"),
            (20_000, 6000, b"rtp-1"),
            (1_000_000, 6000, b"never"),
        ]),
    )
    .unwrap();
    let scn = uac_playing(
        &format!(r#"<exec play_pcap_audio="{}"/>"#, path.display()),
        30,
    );
    let (mut a, mut b) = (uac(scn, config(Some(1))), uas(uas_with_sdp(), config(None)));
    let mut net = Net::new();
    assert!(a.start_call(at(0)));
    net.exchange(&mut a, &mut b, &mut |_| false);
    assert_eq!(due(&a), Some(0), "the first packet is due now");
    a.handle_timeout(at(0));
    let peer = addr("10.9.9.9:7000");
    assert_eq!(drain_media(&mut a), vec![(6010, peer, b"rtp-0".to_vec())]);
    a.handle_timeout(at(9_999));
    assert!(drain_media(&mut a).is_empty(), "paced: not before 10 ms");
    a.handle_timeout(at(10_000));
    assert_eq!(
        drain_media(&mut a),
        vec![(6011, addr("10.9.9.9:7001"), b"rtcp".to_vec())]
    );
    a.handle_timeout(at(20_000));
    assert_eq!(drain_media(&mut a), vec![(6010, peer, b"rtp-1".to_vec())]);
    // The pause ends at 30 ms: BYE, 200, the call is over.
    net.now = 30_000;
    a.handle_timeout(at(net.now));
    net.exchange(&mut a, &mut b, &mut |_| false);
    assert_eq!((a.stats.succeeded, a.open_calls()), (1, 0));
    a.handle_timeout(at(2_000_000));
    assert!(drain_media(&mut a).is_empty(), "stopped with the call");
    assert_eq!((a.stats.rtp_packets_sent, a.stats.rtp_bytes_sent), (3, 14));
}

/// `stop_call` in a `<recv>` ends the call as a rejected failure with
/// nothing sent (SIPp deletes the call); elsewhere it only skips the
/// actions after it. `command` and `stop_gracefully` are handed to the
/// runtime, rendered.
#[test]
fn stop_call_rejects_only_in_a_recv_and_commands_reach_the_runtime() {
    let recv_stop = scenario(
        r#"<scenario name="s">
  <send><![CDATA[
INVITE sip:x@[remote_ip] SIP/2.0
Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch]
From: <sip:a@[local_ip]>;tag=[call_number]
To: <sip:x@[remote_ip]>
Call-ID: [call_id]
CSeq: 1 INVITE
Content-Length: 0
]]></send>
  <recv response="200"><action><exec int_cmd="stop_call"/></action></recv>
  <pause milliseconds="10"/>
</scenario>"#,
    );
    let (mut a, mut b) = (
        uac(recv_stop, config(Some(1))),
        uas(uas_with_sdp(), config(None)),
    );
    assert!(a.start_call(at(0)));
    let invite = drain(&mut a).remove(0).1;
    b.handle_datagram(at(0), addr(UAC), &invite);
    for (_, m) in drain(&mut b) {
        a.handle_datagram(at(1), addr(UAS), &m);
    }
    assert_eq!(a.stats.failed_by(FailReason::Rejected), 1);
    assert_eq!(a.open_calls(), 0);
    assert!(drain(&mut a).is_empty(), "no ACK, no BYE: {:?}", a.stats);

    // In a <nop>: the command after it never runs, the call goes on.
    let scn = uac_playing(
        r#"<exec command="echo [call_id] done"/><exec int_cmd="stop_gracefully"/><exec int_cmd="stop_call"/><exec command="never"/>"#,
        30,
    );
    let (mut a, mut b) = (uac(scn, config(Some(1))), uas(uas_with_sdp(), config(None)));
    let mut net = Net::new();
    assert!(a.start_call(at(0)));
    let invite = drain(&mut a).remove(0).1;
    let call_id = Message::parse(&invite)
        .unwrap()
        .value(HeaderName::CallId)
        .unwrap()
        .to_vec();
    b.handle_datagram(at(0), addr(UAC), &invite);
    net.exchange(&mut a, &mut b, &mut |_| false);
    let want = [b"echo ".as_slice(), &call_id, b" done"].concat();
    assert_eq!(a.commands, vec![want]);
    assert_eq!(a.stats.commands_run, 1);
    assert_eq!(
        a.run_stop,
        Some(sbc_loadtest::scenario::IntCmd::StopGracefully)
    );
    while net.tick(&mut a, &mut b) {
        net.exchange(&mut a, &mut b, &mut |_| false);
    }
    assert_eq!((a.stats.succeeded, a.stats.failed_total()), (1, 0));
}

/// A caller that sends two OPTIONS with the pauses between them, the
/// second carrying `[auto_media_port]` in its body.
fn uac_pausing(pauses: &str) -> Arc<Scenario> {
    let options = |n: u32, body: &str| {
        format!(
            r#"<send><![CDATA[
OPTIONS sip:x@[remote_ip] SIP/2.0
Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch]
From: <sip:a@[local_ip]>;tag=[call_number]
To: <sip:x@[remote_ip]>
Call-ID: [call_id]
CSeq: {n} OPTIONS
Content-Length: [len]
{body}
]]></send>"#
        )
    };
    scenario(&format!(
        r#"<scenario name="p">{}<nop><action><assign assign_to="p" value="250"/></action></nop>{pauses}{}</scenario>"#,
        options(1, ""),
        options(2, "\nm=audio [auto_media_port] RTP/AVP 0")
    ))
}

/// `<pause>` takes its length from `milliseconds`, a variable or a
/// distribution (drawn per call); `[auto_media_port]` gives each call
/// its own four ports, as SIPp.
#[test]
fn pause_lengths_come_from_a_variable_or_a_distribution() {
    let scn = uac_pausing(
        r#"<pause variable="p"/><pause distribution="uniform" min="10" max="20"/><pause distribution="fixed" value="5"/>"#,
    );
    let mut a = uac(scn, config(Some(2)));
    for call in 0..2u64 {
        let t0 = call * 1_000_000;
        assert!(a.start_call(at(t0)));
        assert_eq!(drain(&mut a).len(), 1);
        // The variable's 250 ms, then 10..20 ms, then 5 ms.
        assert_eq!(due(&a), Some(t0 + 250_000));
        a.handle_timeout(at(t0 + 250_000));
        let second = due(&a).unwrap() - (t0 + 250_000);
        assert!((10_000..=20_000).contains(&second), "{second} µs");
        a.handle_timeout(at(t0 + 250_000 + second));
        assert_eq!(due(&a), Some(t0 + 255_000 + second));
        a.handle_timeout(at(t0 + 255_000 + second));
        let out = drain(&mut a);
        assert_eq!(out.len(), 1);
        let text = String::from_utf8_lossy(&out[0].1).into_owned();
        let port = 6000 + 4 * call;
        assert!(text.contains(&format!("m=audio {port} RTP")), "{text}");
        a.abort_all(at(t0 + 300_000));
    }
}

/// `<timewait>` (SIPp's built-in callee ends with one): a pause during
/// which a retransmitted BYE is answered again; a call still in it when
/// the run ends has succeeded. Only the last step may be one.
#[test]
fn a_call_in_its_timewait_answers_retransmissions_and_has_succeeded() {
    let uas_scn = scenario(
        r#"<scenario name="uas">
  <recv request="INVITE"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=u1
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Length: 0
]]></send>
  <recv request="ACK"/>
  <recv request="BYE"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>
  <timewait milliseconds="4000"/>
</scenario>"#,
    );
    let (mut a, mut b) = (
        uac(builtin("uac"), config(Some(1))),
        uas(uas_scn, config(None)),
    );
    assert!(a.start_call(at(0)));
    let mut bye = Vec::new();
    let mut net = Net::new();
    // Keep the BYE as it goes by.
    for _ in 0..10 {
        let from_a = drain(&mut a);
        if from_a.is_empty() {
            break;
        }
        for (_, m) in from_a {
            if m.starts_with(b"BYE ") {
                bye.clone_from(&m);
            }
            b.handle_datagram(at(net.now), addr(UAC), &m);
        }
        for (_, m) in drain(&mut b) {
            a.handle_datagram(at(net.now), addr(UAS), &m);
        }
    }
    assert!(!bye.is_empty());
    assert_eq!((a.stats.succeeded, b.open_calls()), (1, 1), "in timewait");
    net.now = 1_000_000;
    b.handle_datagram(at(net.now), addr(UAC), &bye);
    let again = drain(&mut b);
    assert_eq!(again.len(), 1, "the BYE answered again");
    assert_eq!(start_line(&again[0].1), "SIP/2.0 200 OK");
    // The run ends during the timewait: a success, not an abort.
    b.abort_all(at(2_000_000));
    assert_eq!((b.stats.succeeded, b.stats.failed_total()), (1, 0));

    let e = load_error(r#"<scenario name="t"><timewait milliseconds="10"/><nop/></scenario>"#);
    assert!(e.contains("last step"), "{e}");
}

/// `rtp_stream="FILE,2,8"`: the file's bytes as PCMA RTP, 160 bytes every
/// 20 ms, sequence and timestamp rising by 1 and 160, one SSRC, wrapping
/// to the file's start, twice through the file, from our SDP's audio port
/// to the peer's; `pause` holds it.
#[test]
fn rtp_stream_sends_a_file_as_rtp_paced_and_looped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("voice.raw");
    let data: Vec<u8> = (0..400u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let scn = uac_playing(
        &format!(r#"<exec rtp_stream="{},2,8"/>"#, path.display()),
        200,
    );
    let (mut a, mut b) = (uac(scn, config(Some(1))), uas(uas_with_sdp(), config(None)));
    let mut net = Net::new();
    assert!(a.start_call(at(0)));
    net.exchange(&mut a, &mut b, &mut |_| false);
    let mut packets = Vec::new();
    for ms in (0..=120).step_by(10) {
        a.handle_timeout(at(ms * 1000));
        for (from, to, p) in drain_media(&mut a) {
            assert_eq!((from, to), (6010, addr("10.9.9.9:7000")));
            packets.push((ms, p));
        }
    }
    // 800 bytes in 160-byte packets: five, 20 ms apart.
    let times: Vec<u64> = packets.iter().map(|(t, _)| *t).collect();
    assert_eq!(times, [0, 20, 40, 60, 80]);
    let payload: Vec<u8> = packets.iter().flat_map(|(_, p)| p[12..].to_vec()).collect();
    assert_eq!(payload, [data.clone(), data].concat(), "the file twice");
    let head = |p: &[u8]| {
        (
            p[0],
            p[1],
            u16::from_be_bytes([p[2], p[3]]),
            u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
            u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
        )
    };
    let (v, pt, seq0, ts0, ssrc) = head(&packets[0].1);
    assert_eq!((v, pt), (0x80, 8));
    for (i, (_, p)) in packets.iter().enumerate() {
        let (_, _, seq, ts, s) = head(p);
        assert_eq!(seq, seq0.wrapping_add(i as u16));
        assert_eq!(ts, ts0.wrapping_add(160 * i as u32));
        assert_eq!(s, ssrc);
    }
    assert_eq!(a.stats.rtp_packets_sent, 5);

    // Paused from 40 to 100 ms: nothing sent, the timestamp keeps time.
    let scn = uac_with_steps(&format!(
        r#"<nop><action><exec rtp_stream="{},-1,0"/></action></nop>
        <pause milliseconds="40"/>
        <nop><action><exec rtp_stream="pause"/></action></nop>
        <pause milliseconds="60"/>
        <nop><action><exec rtp_stream="resume"/></action></nop>
        <pause milliseconds="100"/>"#,
        path.display()
    ));
    let (mut a, mut b) = (uac(scn, config(Some(1))), uas(uas_with_sdp(), config(None)));
    let mut net = Net::new();
    assert!(a.start_call(at(0)));
    net.exchange(&mut a, &mut b, &mut |_| false);
    let mut sent = Vec::new();
    for ms in (0..=160).step_by(10) {
        a.handle_timeout(at(ms * 1000));
        for (_, _, p) in drain_media(&mut a) {
            let ts = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
            sent.push((ms, p[1], ts));
        }
    }
    let times: Vec<u64> = sent.iter().map(|s| s.0).collect();
    assert_eq!(times, [0, 20, 100, 120, 140, 160], "none while paused");
    assert!(sent.iter().all(|s| s.1 == 0), "PCMU");
    let ts0 = sent[0].2;
    assert_eq!(
        sent[2].2.wrapping_sub(ts0),
        5 * 160,
        "time went on while paused"
    );
}

/// Extended 3PCC: each `<sendCmd>` carries the peer its `dest` names, and
/// a `<recvCmd src>` takes a command only from that peer (its `From:`
/// line, as SIPp reads it); one from another peer fails the call.
#[test]
fn extended_commands_name_their_peer_and_are_taken_only_from_it() {
    let scn = scenario(
        r#"<scenario name="s1">
  <recvCmd src="m"/>
  <sendCmd dest="s2"><![CDATA[
From: s1
Call-ID: [call_id]
]]></sendCmd>
  <recvCmd src="s2"/>
  <sendCmd dest="m"><![CDATA[
From: s1
Call-ID: [call_id]
]]></sendCmd>
</scenario>"#,
    );
    assert_eq!(scn.command_peers(), vec!["s2", "m"]);
    assert!(scn.unnamed_peer().is_none());
    let cfg = test_config();
    let mut b = Endpoint::new(Arc::new(cfg), scn, 5060, Some(addr(UAS)), 1, 1);
    // The master's command starts a call (its first step is <recvCmd>).
    b.handle_command(at(0), b"From: m\r\nCall-ID: c-1\r\n\r\n");
    assert_eq!(
        b.twin_out,
        vec![(
            Some("s2".into()),
            b"From: s1\r\nCall-ID: c-1\r\n\r\n".to_vec()
        )]
    );
    b.twin_out.clear();
    // s2's answer claiming to be the master: refused, the call fails.
    b.handle_command(at(10), b"From:\tm\r\nCall-ID: c-1\r\n\r\n");
    assert!(b.twin_out.is_empty());
    assert_eq!((b.stats.failed_total(), b.open_calls()), (1, 0));
    // A second call, answered by s2 itself: it goes on to the master.
    b.handle_command(at(20), b"From: m\r\nCall-ID: c-2\r\n\r\n");
    b.twin_out.clear();
    b.handle_command(at(30), b"Call-ID: c-2\r\nFrom: s2 \r\n\r\n");
    assert_eq!(
        b.twin_out,
        vec![(
            Some("m".into()),
            b"From: s1\r\nCall-ID: c-2\r\n\r\n".to_vec()
        )]
    );
    assert_eq!((b.stats.succeeded, b.stats.failed_total()), (1, 1));
}

/// 3PCC in the engine: `<sendCmd>` queues the twin's message; the twin's
/// answer, named by its Call-ID, reaches the call at its `<recvCmd>`
/// (past an optional `<recv>`), its actions search the command's text,
/// and `[last_*]` still name the last SIP message (the INVITE). A call
/// whose twin never answers fails at `-recv_timeout`.
#[test]
fn twin_commands_reach_their_call_and_leave_the_last_message_alone() {
    let scn = scenario(
        r#"<scenario name="c">
  <recv request="INVITE"/>
  <sendCmd><![CDATA[
Call-ID: [call_id]
X-Ask: now
]]></sendCmd>
  <recv request="INFO" optional="true"/>
  <recvCmd><action><ereg regexp="X-Answer: ([a-z]+)" search_in="msg" assign_to="all,answer"/></action></recvCmd>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=c1
[last_Call-ID:]
[last_CSeq:]
X-Got: [$answer]
Content-Length: 0
]]></send>
</scenario>"#,
    );
    let mut cfg = test_config();
    cfg.recv_timeout_ms = Some(1000);
    let mut b = uas(scn, Arc::new(cfg));
    b.handle_datagram(
        at(0),
        addr(UAC),
        invite_with_subject("x", "call-7").as_bytes(),
    );
    assert_eq!(
        b.twin_out,
        vec![(None, b"Call-ID: call-7\r\nX-Ask: now\r\n\r\n".to_vec())]
    );
    b.twin_out.clear();
    // Another call's answer, or none's: not this call's.
    b.handle_command(at(10), b"Call-ID: other\r\nX-Answer: no\r\n");
    assert!(drain(&mut b).is_empty());
    b.handle_command(at(20), b"Call-ID: call-7\r\nX-Answer: yes\r\n\r\n");
    let out = drain(&mut b);
    assert_eq!(out.len(), 1);
    let text = String::from_utf8_lossy(&out[0].1).into_owned();
    assert!(text.contains("X-Got: yes\r\n"), "{text}");
    assert!(
        text.contains("CSeq: 1 INVITE\r\n"),
        "[last_CSeq:] is the INVITE's: {text}"
    );
    assert_eq!(b.stats.succeeded, 1);
    // A second call whose twin never answers.
    b.handle_datagram(
        at(30),
        addr(UAC),
        invite_with_subject("x", "call-8").as_bytes(),
    );
    b.handle_timeout(at(30 + 999_999));
    assert_eq!((b.stats.failed_total(), b.open_calls()), (0, 1));
    b.handle_timeout(at(30 + 1_000_000));
    assert_eq!(b.stats.failed_by(FailReason::RecvTimeout), 1);
    assert_eq!(b.open_calls(), 0);
}

/// A response to `req` (its Via, From, To with a tag, Call-ID, CSeq).
fn response_to(req: &[u8], status: &str) -> Vec<u8> {
    let m = Message::parse(req).unwrap();
    let h = |n| String::from_utf8_lossy(m.value(n).unwrap()).into_owned();
    format!(
        "SIP/2.0 {status}\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=b\r\nCall-ID: {}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
        h(HeaderName::Via),
        h(HeaderName::From),
        h(HeaderName::To),
        h(HeaderName::CallId),
        h(HeaderName::CSeq)
    )
    .into_bytes()
}

/// Named transactions (`start_txn`, `response_txn`, `ack_txn`): two
/// requests outstanding at once, each response matched by its branch;
/// a late 200 of the INVITE gets its ACK again; `regexp_match` on codes
/// and methods; a response whose CSeq method was never sent before in the
/// file does not match.
#[test]
fn transactions_and_regexp_match_choose_the_step_as_sipp_does() {
    let scn = scenario(
        r#"<scenario name="txn">
        <send start_txn="inv"><![CDATA[
          INVITE sip:x@[remote_ip] SIP/2.0
          Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch]
          From: <sip:a@[local_ip]>;tag=[call_number]
          To: <sip:x@[remote_ip]>
          Call-ID: [call_id]
          CSeq: [cseq] INVITE
          Content-Length: 0
        ]]></send>
        <send start_txn="msg"><![CDATA[
          MESSAGE sip:x@[remote_ip] SIP/2.0
          Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch]
          From: <sip:a@[local_ip]>;tag=[call_number]
          To: <sip:x@[remote_ip]>
          Call-ID: [call_id]
          CSeq: [cseq] MESSAGE
          Content-Length: 0
        ]]></send>
        <recv response="^18[03]$" regexp_match="true" optional="true" response_txn="inv"/>
        <recv response="200" response_txn="msg"/>
        <recv response="2[0-9][0-9]" regexp_match="true" response_txn="inv"/>
        <send ack_txn="inv"><![CDATA[
          ACK sip:x@[remote_ip] SIP/2.0
          Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch]
          From: <sip:a@[local_ip]>;tag=[call_number]
          To: <sip:x@[remote_ip]>;tag=b
          Call-ID: [call_id]
          CSeq: 1 ACK
          Content-Length: 0
        ]]></send>
        <recv request="INFO|NOTIFY" regexp_match="true"/>
        <send><![CDATA[
          OPTIONS sip:x@[remote_ip] SIP/2.0
          Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch]
          From: <sip:a@[local_ip]>;tag=[call_number]
          To: <sip:x@[remote_ip]>;tag=b
          Call-ID: [call_id]
          CSeq: [cseq] OPTIONS
          Content-Length: 0
        ]]></send>
        <recv response="200" timeout="1000"/>
        </scenario>"#,
    );
    // The INVITE's 200 while the MESSAGE's is awaited: not that step's
    // (the branch differs), so unexpected.
    let mut early = uac(Arc::clone(&scn), config(Some(1)));
    assert!(early.start_call(at(0)));
    let invite = drain(&mut early).remove(0).1;
    early.handle_datagram(at(1), addr(UAS), &response_to(&invite, "200 OK"));
    assert_eq!(early.stats.failed_by(FailReason::UnexpectedMessage), 1);
    // In order: the MESSAGE's 200, then the INVITE's.
    let mut a = uac(scn, config(Some(1)));
    assert!(a.start_call(at(0)));
    let sent = drain(&mut a);
    let (invite, message) = (sent[0].1.clone(), sent[1].1.clone());
    a.handle_datagram(at(1), addr(UAS), &response_to(&invite, "180 Ringing"));
    a.handle_datagram(at(2), addr(UAS), &response_to(&message, "200 OK"));
    a.handle_datagram(at(3), addr(UAS), &response_to(&invite, "200 OK"));
    let ack = drain(&mut a);
    assert_eq!(ack.len(), 1);
    assert!(start_line(&ack[0].1).starts_with("ACK "));
    // A late 200 of the INVITE that differs from the first (another
    // tag) is not a retransmission: the transaction's ACK goes again.
    let other = String::from_utf8(response_to(&invite, "200 OK"))
        .unwrap()
        .replace(";tag=b", ";tag=c");
    a.handle_datagram(at(4), addr(UAS), other.as_bytes());
    assert_eq!(drain(&mut a), ack);
    // A NOTIFY matches the method pattern; a 200 with a CSeq method the
    // scenario never sent does not match the last step.
    let notify = String::from_utf8(invite.clone())
        .unwrap()
        .replacen("INVITE sip:x@127.0.0.1", "NOTIFY sip:a@127.0.0.1", 1)
        .replace(" INVITE\r\n", " NOTIFY\r\n");
    a.handle_datagram(at(5), addr(UAS), notify.as_bytes());
    assert_eq!(a.open_calls(), 1);
    let options = drain(&mut a).remove(0).1;
    assert!(start_line(&options).starts_with("OPTIONS "));
    let wrong = String::from_utf8(response_to(&options, "200 OK"))
        .unwrap()
        .replace(" OPTIONS\r\n", " SUBSCRIBE\r\n");
    a.handle_datagram(at(6), addr(UAS), wrong.as_bytes());
    assert_eq!(a.stats.failed_by(FailReason::UnexpectedMessage), 1);
}

#[test]
fn transactions_are_checked_when_the_scenario_loads() {
    let send = |attr: &str, method: &str| {
        format!(
            "<send {attr}><![CDATA[\n{method} sip:x SIP/2.0\nCall-ID: [call_id]\nContent-Length: 0\n]]></send>"
        )
    };
    for (body, want) in [
        (send(r#"start_txn="t""#, "ACK"), "ACK message can not start"),
        (
            send(r#"start_txn="t""#, "SIP/2.0 200 OK\nX:"),
            "Responses can not start",
        ),
        (send(r#"ack_txn="t""#, "BYE"), "only for an ACK"),
        (send(r#"start_txn="t""#, "BYE"), "has no response"),
        (
            send(r#"start_txn="t""#, "INVITE") + r#"<recv response="200" response_txn="t"/>"#,
            "no ack_txn",
        ),
        (
            send(r#"start_txn="t""#, "BYE")
                + r#"<recv response="200" response_txn="t"/>"#
                + &send(r#"ack_txn="t""#, "ACK"),
            "not an INVITE transaction",
        ),
        (
            r#"<recv request="BYE" response_txn="t"/>"#.to_string(),
            "only for a <recv response>",
        ),
        (
            r#"<recv response="[" regexp_match="true"/>"#.to_string(),
            "not a regular expression",
        ),
        (send(r#"start_txn="a,b""#, "BYE"), "no $ or ,"),
    ] {
        let xml = format!("<scenario>{body}</scenario>");
        let e = load_error(&xml);
        assert!(e.contains(want), "{body}: {e}");
    }
}

/// `play_dtmf`: SIPp's RFC 4733 packets on the audio stream, from our
/// SDP's audio port to the peer's, paced; a second play goes on with the
/// call's sequence numbers and the next SSRC.
#[test]
fn play_dtmf_sends_rfc4733_events_on_the_audio_stream() {
    let scn = uac_playing(r#"<exec play_dtmf="[call_number]9,60"/>"#, 3_000);
    let (mut a, mut b) = (uac(scn, config(Some(1))), uas(uas_with_sdp(), config(None)));
    let mut net = Net::new();
    assert!(a.start_call(at(0)));
    net.exchange(&mut a, &mut b, &mut |_| false);
    let mut got = Vec::new();
    let mut t = 0;
    while t <= 2_000_000 {
        a.handle_timeout(at(t));
        got.extend(
            drain_media(&mut a)
                .into_iter()
                .map(|(from, to, p)| (t, from, to, p)),
        );
        t += 1_000;
    }
    // "19" with 60 ms tones: 20 no-ops, then 3 tone packets and 3 ends each.
    assert_eq!(got.len(), 20 + 2 * (3 + 3));
    let peer = addr("10.9.9.9:7000");
    assert!(
        got.iter()
            .all(|(_, from, to, _)| *from == 6010 && *to == peer)
    );
    let (at, _, _, first) = &got[20];
    assert_eq!(
        *at,
        400_000 + 120_000,
        "the first event after the no-ops and one gap"
    );
    assert_eq!((first[1], first[12], first[13]), (0x80 | 96, 1, 10));
    let (_, _, _, last) = &got[31];
    assert_eq!((last[1], last[12], last[13]), (96, 9, 0x80 | 10));
    assert_eq!(u16::from_be_bytes([got[0].3[2], got[0].3[3]]), 1200);
}

/// A lost TCP connection fails the calls it carried, as SIPp's
/// `tcpClose`: a callee's in their `<timewait>` too, with nothing sent.
#[test]
fn a_lost_connection_fails_its_calls() {
    // SIPp's built-in callee: the ours with its 4 s <timewait>.
    let callee = sbc_loadtest::builtin("uas").unwrap().replace(
        "<ResponseTimeRepartition",
        r#"<timewait milliseconds="4000"/><ResponseTimeRepartition"#,
    );
    let (mut a, mut b) = (
        uac(builtin("uac"), config(Some(2))),
        uas(scenario(&callee), config(None)),
    );
    let mut net = Net::new();
    assert!(a.start_call(at(0)));
    net.exchange(&mut a, &mut b, &mut |_| false);
    // The caller's pause (-d 0) ends at once: BYE, 200, the callee is in
    // its <timewait>.
    net.now = 1_000;
    a.handle_timeout(at(net.now));
    net.exchange(&mut a, &mut b, &mut |_| false);
    assert_eq!((a.stats.succeeded, b.open_calls()), (1, 1));
    b.connection_lost(at(2_000), addr(UAC), None, FailReason::TcpClosed);
    assert_eq!(b.open_calls(), 0);
    assert_eq!(b.stats.failed_by(FailReason::TcpClosed), 1);
    assert!(drain(&mut b).is_empty());
    // A caller's call (tn: by its serial) whose connection cannot open.
    assert!(a.start_call(at(3_000)));
    drain(&mut a);
    a.connection_lost(at(3_000), addr(UAS), Some(2), FailReason::TcpConnect);
    assert_eq!(a.stats.failed_by(FailReason::TcpConnect), 1);
    assert!(
        drain(&mut a).is_empty(),
        "no CANCEL on a connection that is not there"
    );
}

/// `-tdmmap`: each call takes a free circuit, written as SIPp writes it
/// (`x.h.y/z`); with every circuit busy a new call fails at once as
/// SIPp's outbound congestion; an ended call's circuit is free again.
#[test]
fn tdm_circuits_are_taken_and_given_back() {
    use sbc_loadtest::engine::TdmMap;
    let scn = scenario(
        r#"<scenario name="tdm">
        <send><![CDATA[
          MESSAGE sip:x@[remote_ip] SIP/2.0
          Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch]
          From: <sip:a@[local_ip]>;tag=[call_number]
          To: <sip:x@[remote_ip]>
          Call-ID: [call_id]
          CSeq: [cseq] MESSAGE
          X-Circuit: [tdmmap]
          Content-Length: 0
        ]]></send>
        <recv response="200"/>
        </scenario>"#,
    );
    let map = TdmMap::parse("{0-0}{99}{5-5}{1-2}").unwrap();
    assert_eq!(map.circuits(), 2);
    assert!(TdmMap::parse("{0-3}{99}{5-8}").is_none());
    assert!(TdmMap::parse("{3-0}{99}{5-8}{1-31}").is_none());
    let mut c = test_config();
    c.tdmmap = Some(map);
    let mut a = uac(scn, Arc::new(c));
    let circuit = |m: &[u8]| {
        let m = String::from_utf8(m.to_vec()).unwrap();
        m.lines()
            .find(|l| l.starts_with("X-Circuit"))
            .unwrap()
            .to_string()
    };
    let mut sent = Vec::new();
    for t in 0..3 {
        assert!(a.start_call(at(t)));
        sent.extend(drain(&mut a).into_iter().map(|(_, m)| m));
    }
    // Two circuits: the third call fails without a message.
    let mut circuits: Vec<String> = sent.iter().map(|m| circuit(m)).collect();
    circuits.sort();
    assert_eq!(circuits, ["X-Circuit: 0.99.5/1", "X-Circuit: 0.99.5/2"]);
    assert_eq!(a.stats.failed_by(FailReason::OutboundCongestion), 1);
    assert_eq!(a.open_calls(), 2);
    // The first call ends: its circuit is the one the next call takes.
    a.handle_datagram(at(4), addr(UAS), &response_to(&sent[0], "200 OK"));
    assert_eq!(a.open_calls(), 1);
    assert!(a.start_call(at(5)));
    let next = drain(&mut a).remove(0).1;
    assert_eq!(circuit(&next), circuit(&sent[0]));
    assert_eq!(a.stats.failed_by(FailReason::OutboundCongestion), 1);
}

/// A failed call's clean-up (CANCEL, ACK, BYE) carries the call's serial,
/// so that over `-t tn` it leaves on the call's own connection.
#[test]
fn a_failed_calls_cleanup_is_the_calls_own_output() {
    let mut c = test_config();
    c.recv_timeout_ms = Some(1_000);
    let mut a = uac(builtin("uac"), Arc::new(c));
    assert!(a.start_call(at(0)));
    let invite = drain(&mut a).remove(0).1;
    a.handle_datagram(at(1), addr(UAS), &response_to(&invite, "180 Ringing"));
    let serial = a.outgoing().0.first().map(|o| o.call);
    assert_eq!(serial, None, "nothing sent on the 180");
    a.handle_timeout(at(2_000_000));
    let (out, buf) = a.outgoing();
    let cancel = out
        .iter()
        .find(|o| buf[o.start..o.start + o.len].starts_with(b"CANCEL"))
        .expect("the CANCEL");
    assert_ne!(cancel.call, 0);
}

/// An OPTIONS of no call from `UAS`, with Call-ID `id`.
fn options(id: &str, branch: &str) -> Vec<u8> {
    format!(
        "OPTIONS sip:sipp@127.0.0.1:5061 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch={branch}\r\nFrom: <sip:probe@127.0.0.1>;tag=p1\r\nTo: <sip:sipp@127.0.0.1:5061>\r\nCall-ID: {id}\r\nCSeq: 7 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// `-oocsf`/`-oocsn`: a caller runs its out-of-call scenario for a
/// request of no call (here SIPp's ooc_default: 200, retransmissions
/// answered for 4 s), with figures of its own; its main calls go on as
/// before.
#[test]
fn a_request_of_no_call_runs_the_out_of_call_scenario() {
    let mut a = uac(builtin("uac"), config(Some(1)));
    a.set_out_of_call(builtin("ooc_default"));
    a.handle_datagram(at(0), addr(UAS), &options("probe-1", "z9hG4bK-p1"));
    let out = drain(&mut a);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, addr(UAS));
    let ok = String::from_utf8(out[0].1.clone()).unwrap();
    assert!(ok.starts_with("SIP/2.0 200 OK\r\n"), "{ok}");
    assert!(ok.contains("Call-ID: probe-1\r\n") && ok.contains("CSeq: 7 OPTIONS\r\n"));
    assert_eq!((a.stats.auto_answered, a.stats.warnings), (1, 1));
    assert!(a.errors[0].contains("Received out-of-call OPTIONS message"));
    // Its retransmission is answered again; it ends after its 4 s.
    a.handle_datagram(at(300_000), addr(UAS), &options("probe-1", "z9hG4bK-p1"));
    assert_eq!(start_line(&drain(&mut a)[0].1), "SIP/2.0 200 OK");
    while let Some(t) = due(&a).filter(|&t| t <= 5_000_000) {
        a.handle_timeout(at(t));
    }
    let ooc = a.out_of_call_stats().unwrap();
    assert_eq!((ooc.created, ooc.succeeded, ooc.failed_total()), (1, 1, 0));
    assert_eq!(a.stats.created, 0, "the main scenario started nothing");
    // The main scenario's call runs as ever.
    let mut b = uas(builtin("uas"), config(None));
    let mut net = Net::new();
    assert!(a.start_call(at(6_000_000)));
    net.now = 6_000_000;
    net.exchange(&mut a, &mut b, &mut |_| false);
    assert_eq!((a.stats.created, a.stats.succeeded), (1, 1));
    assert_eq!(a.out_of_call_stats().unwrap().created, 1);
    // ooc_dummy waits for DUMMY: an OPTIONS fails its call.
    let mut a = uac(builtin("uac"), config(Some(1)));
    a.set_out_of_call(builtin("ooc_dummy"));
    a.handle_datagram(at(0), addr(UAS), &options("probe-2", "z9hG4bK-p2"));
    let ooc = a.out_of_call_stats().unwrap();
    assert_eq!((ooc.created, ooc.failed_total()), (1, 1));
    assert_eq!(a.stats.failed_total(), 0);
}

/// SIPp's RTP check, both ends: the caller offers two SDES lines and
/// plays pattern 1; the callee answers with one and echoes; `media`
/// carries each side's datagrams to the other (it may spoil them).
fn rtp_check_pair(
    crypto: bool,
    media: &mut dyn FnMut(&mut Vec<u8>),
) -> (Endpoint, Endpoint, Vec<usize>) {
    rtp_check_pair_of("audio", crypto, media)
}

/// [`rtp_check_pair`] on the `kind` stream (audio: PCMU, pattern 1;
/// video: H.264, pattern 2).
fn rtp_check_pair_of(
    kind: &str,
    crypto: bool,
    media: &mut dyn FnMut(&mut Vec<u8>),
) -> (Endpoint, Endpoint, Vec<usize>) {
    let (offer, answer) = if crypto {
        (
            format!(
                "a=crypto:[cryptotag1{kind}] [cryptosuiteaescm128sha1801{kind}] inline:[cryptokeyparams1{kind}]\na=crypto:[cryptotag2{kind}] [cryptosuiteaescm128sha1322{kind}] inline:[cryptokeyparams2{kind}]\n"
            ),
            format!(
                "a=crypto:[cryptotag1{kind}] [cryptosuiteaescm128sha1801{kind}] inline:[cryptokeyparams1{kind}]\n"
            ),
        )
    } else {
        (String::new(), String::new())
    };
    let (m, stream, echo, video) = match kind {
        "audio" => (
            "audio [rtpstream_audio_port] RTP/SAVP 0",
            "apattern,1,0,PCMU/8000",
            "audio,0,PCMU/8000",
            0,
        ),
        _ => (
            "video [rtpstream_video_port] RTP/SAVP 99",
            "vpattern,2,99,H264/90000",
            "video,99,H264/90000",
            2,
        ),
    };
    let caller = uac_offering(
        &format!("c=IN IP[media_ip_type] [media_ip]\nm={m}\n{offer}"),
        &format!(
            r#"<nop><action><exec rtp_stream="{stream}"/></action></nop>
  <pause milliseconds="200"/>"#
        ),
    );
    let callee = uas_answering(
        &format!("c=IN IP4 [media_ip]\nm={m}\n{answer}"),
        &format!(r#"<nop><action><exec rtp_echo="start{echo}"/></action></nop>"#),
        &format!(r#"<nop><action><exec rtp_echo="stop{echo}"/></action></nop>"#),
    );
    let mut cb = test_config();
    cb.media_port = 8000;
    let (mut a, mut b) = (uac(caller, config(Some(1))), uas(callee, Arc::new(cb)));
    let mut net = Net::new();
    assert!(a.start_call(at(0)));
    net.exchange(&mut a, &mut b, &mut |_| false);
    let ip = "127.0.0.1".parse().unwrap();
    let (pa, pb) = (6000 + video, 8000 + video);
    assert_eq!(
        a.media_ports().collect::<Vec<_>>(),
        [pa],
        "the stream's port"
    );
    assert_eq!(b.media_ports().collect::<Vec<_>>(), [pb], "the echo's port");
    let pattern = if video == 0 {
        [0xaa; 160].to_vec()
    } else {
        [0xbb; 1280].to_vec()
    };
    let mut sizes = Vec::new();
    for ms in (0..=260).step_by(10) {
        net.now = ms * 1000;
        a.handle_timeout(at(net.now));
        for (from, to, mut p) in drain_media(&mut a) {
            assert_eq!((from, to), (pa, SocketAddr::new(ip, pb)));
            // SRTP hides the pattern.
            assert_eq!(p[12..12 + pattern.len()] == pattern[..], !crypto);
            sizes.push(p.len());
            media(&mut p);
            b.handle_media(to.port(), SocketAddr::new(ip, from), &p);
        }
        for (from, to, mut p) in drain_media(&mut b) {
            assert_eq!((from, to), (pb, SocketAddr::new(ip, pa)));
            media(&mut p);
            a.handle_media(to.port(), SocketAddr::new(ip, from), &p);
        }
        net.exchange(&mut a, &mut b, &mut |_| false);
        b.handle_timeout(at(net.now));
        net.exchange(&mut a, &mut b, &mut |_| false);
    }
    assert_eq!(a.open_calls() + b.open_calls(), 0, "the call ended");
    assert!(!a.listening() && !b.listening(), "its ports are let go");
    (a, b, sizes)
}

#[test]
fn an_srtp_pattern_stream_comes_back_through_the_echo_and_passes_its_check() {
    let (a, b, sizes) = rtp_check_pair(true, &mut |_| {});
    // 200 ms of 20 ms packets, each 12 + 160 + an 80-bit tag.
    assert!((10..=12).contains(&sizes.len()), "{sizes:?}");
    assert!(sizes.iter().all(|&n| n == 12 + 160 + 10), "{sizes:?}");
    assert_eq!(
        (a.stats.rtp_checks_passed, a.stats.rtp_checks_failed),
        (1, 0)
    );
    assert_eq!(a.stats.rtp_check_packets_ok, sizes.len() as u64);
    assert_eq!(b.stats.rtp_echoed_packets, sizes.len() as u64);
    assert_eq!(a.stats.srtp_refused + b.stats.srtp_refused, 0);
    assert_eq!(a.stats.succeeded + b.stats.succeeded, 2);
}

#[test]
fn a_spoilt_echo_fails_the_check_plain_or_srtp() {
    // A byte changed on the way: SRTP refuses the packet; plain RTP
    // comes back without the pattern.
    let spoil = |p: &mut Vec<u8>| p[20] ^= 0x01;
    let (a, b, sizes) = rtp_check_pair(true, &mut { spoil });
    assert!(!sizes.is_empty());
    assert_eq!(
        (a.stats.rtp_checks_passed, a.stats.rtp_checks_failed),
        (0, 1)
    );
    assert_eq!(
        b.stats.srtp_refused,
        sizes.len() as u64,
        "the callee refuses each"
    );
    assert_eq!(b.stats.rtp_echoed_packets, 0);
    // The calls themselves succeed: the check fails the run (exit 253).
    assert_eq!(a.stats.succeeded, 1);

    let mut plain_sizes = Vec::new();
    let (a, b, _) = rtp_check_pair(false, &mut |p: &mut Vec<u8>| {
        plain_sizes.push(p.len());
        p[20] = 0;
    });
    assert!(plain_sizes.iter().all(|&n| n == 12 + 160));
    assert_eq!(
        (a.stats.rtp_checks_passed, a.stats.rtp_checks_failed),
        (0, 1)
    );
    assert_eq!(b.stats.rtp_echoed_packets as usize * 2, plain_sizes.len());
}

#[test]
fn a_video_pattern_stream_is_checked_on_the_video_port() {
    // H.264 as SIPp paces it: 1280-byte packets every 160 ms.
    let (a, b, sizes) = rtp_check_pair_of("video", true, &mut |_| {});
    assert_eq!(sizes, [12 + 1280 + 10, 12 + 1280 + 10]);
    assert_eq!(
        (a.stats.rtp_checks_passed, a.stats.rtp_checks_failed),
        (1, 0)
    );
    assert_eq!(
        (a.stats.rtp_check_packets_ok, b.stats.rtp_echoed_packets),
        (2, 2)
    );
}

/// A request of the caller's call `id` (Via branch from `branch`).
fn request(method: &str, id: &str, branch: &str, cseq: u32, body: &str) -> String {
    format!(
        "{method} sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK{branch}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>;tag=u1\r\nCall-ID: {id}\r\nCSeq: {cseq} {method}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// SIPp's `_unexp.main`: an INFO during the callee's pause jumps there,
/// is answered, and the call goes back into its pause (`pauserestore`,
/// the pause's end kept in `_unexp.pausedaddr`), then on; `index` gives
/// a step's index.
#[test]
fn an_unexpected_message_goes_to_unexp_main_and_the_pause_is_restored() {
    let ok = r#"<send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>"#;
    let scn = scenario(&format!(
        r#"<scenario name="uas">
  <recv request="INVITE"/>
  {ok}
  <pause milliseconds="1000"/>
  <nop><action><index assign_to="here"/></action></nop>
  <send><![CDATA[
SIP/2.0 199 Pause Over
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>
  <recv request="BYE"/>
  <send next="end"><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
X-Index: [$here]
Content-Length: 0
]]></send>
  <label id="_unexp.main"/>
  <recv request="INFO"/>
  {ok}
  <nop><action><jump variable="_unexp.retaddr"/><pauserestore variable="_unexp.pausedaddr"/></action></nop>
  <label id="end"/>
</scenario>"#
    ));
    let mut b = uas(scn, config(None));
    b.handle_datagram(
        at(0),
        addr(UAC),
        request("INVITE", "u-1", "i1", 1, "").as_bytes(),
    );
    assert_eq!(start_line(&drain(&mut b)[0].1), "SIP/2.0 200 OK");
    b.handle_datagram(
        at(300_000),
        addr(UAC),
        request("INFO", "u-1", "n1", 2, "").as_bytes(),
    );
    let out = drain(&mut b);
    assert_eq!(out.len(), 1);
    assert!(
        String::from_utf8_lossy(&out[0].1).contains("CSeq: 2 INFO"),
        "the INFO is answered"
    );
    assert_eq!(b.stats.failed_total(), 0);
    // Back in the pause until 1000 ms, as it was: nothing goes on
    // before then, the step after it runs then.
    b.handle_timeout(at(900_000));
    assert!(drain(&mut b).is_empty(), "still in the pause at 900 ms");
    b.handle_timeout(at(1_000_000));
    assert_eq!(start_line(&drain(&mut b)[0].1), "SIP/2.0 199 Pause Over");
    b.handle_datagram(
        at(1_100_000),
        addr(UAC),
        request("BYE", "u-1", "b1", 3, "").as_bytes(),
    );
    let out = drain(&mut b);
    let bye_ok = String::from_utf8_lossy(&out[0].1).into_owned();
    assert!(
        bye_ok.contains("CSeq: 3 BYE") && bye_ok.contains("X-Index: 3.000000"),
        "{bye_ok}"
    );
    assert_eq!((b.stats.succeeded, b.stats.failed_total()), (1, 0));
    assert_eq!(b.open_calls(), 0);
}

/// `ignoresdp="true"`: the SDP of what a step receives does not tell
/// where the call's media goes.
#[test]
fn ignoresdp_keeps_a_messages_sdp_from_the_media() {
    let sdp = "v=0\r\nc=IN IP4 10.9.9.9\r\nm=audio 7000 RTP/AVP 0\r\n";
    for (ignore, packets) in [(false, true), (true, false)] {
        let scn = scenario(&format!(
            r#"<scenario name="uas">
  <recv request="INVITE" ignoresdp="{ignore}"/>
  <nop><action><exec rtp_stream="apattern,1,0"/></action></nop>
  <pause milliseconds="50"/>
</scenario>"#
        ));
        let mut b = uas(scn, config(None));
        b.handle_datagram(
            at(0),
            addr(UAC),
            request("INVITE", "s-1", "i1", 1, sdp).as_bytes(),
        );
        b.handle_timeout(at(0));
        let media = drain_media(&mut b);
        assert_eq!(!media.is_empty(), packets, "ignoresdp={ignore}");
        if packets {
            assert_eq!(media[0].1, addr("10.9.9.9:7000"));
        } else {
            assert_eq!(b.stats.warnings, 1, "no SDP to play to");
        }
    }
}

/// Two calls whose echoes would read one media port (`[media_port]` in
/// both SDPs): the second takes it, with a warning; the first's end does
/// not let go of the second's.
#[test]
fn two_calls_on_one_media_port_are_told() {
    let scn = uas_answering(
        "c=IN IP4 [media_ip]\nm=audio [media_port] RTP/AVP 0\n",
        r#"<nop><action><exec rtp_echo="startaudio"/></action></nop>"#,
        "",
    );
    let mut b = uas(scn, config(None));
    for id in ["p-1", "p-2"] {
        b.handle_datagram(
            at(0),
            addr(UAC),
            request("INVITE", id, id, 1, "").as_bytes(),
        );
        b.handle_datagram(at(0), addr(UAC), request("ACK", id, id, 1, "").as_bytes());
    }
    assert_eq!(b.media_ports().collect::<Vec<_>>(), [6000]);
    assert_eq!(b.stats.warnings, 1);
    b.handle_datagram(
        at(0),
        addr(UAC),
        request("BYE", "p-1", "b1", 2, "").as_bytes(),
    );
    assert!(b.listening(), "p-2 still echoes there");
    b.handle_datagram(
        at(0),
        addr(UAC),
        request("BYE", "p-2", "b2", 2, "").as_bytes(),
    );
    assert!(!b.listening());
    assert_eq!(b.stats.succeeded, 2);
}

/// `<init>`: its nops run once, before any call, jumping to the stanza's
/// own labels, and set `<Global>` variables (SIPp's example: THINKTIME
/// defaults to 1 unless -set gives it); `condexec` runs a step only when
/// its variable is set (`condexec_inverse`: not set).
#[test]
fn init_sets_globals_once_and_condexec_skips_steps() {
    let scn = || {
        scenario(
            r#"<scenario name="uas">
  <Global variables="THINKTIME,runs"/>
  <init>
    <nop><action>
      <strcmp assign_to="empty" variable="THINKTIME" value=""/>
      <test assign_to="empty" compare="equal" variable="empty" value="0"/>
    </action></nop>
    <nop condexec="empty"><action><assignstr assign_to="THINKTIME" value="1"/></action></nop>
    <nop next="done"><action><add assign_to="runs" value="1"/><log message="init ran"/></action></nop>
    <nop><action><assignstr assign_to="THINKTIME" value="never"/></action></nop>
    <label id="done"/>
  </init>
  <recv request="INVITE"/>
  <send condexec="THINKTIME" condexec_inverse="true"><![CDATA[
SIP/2.0 486 Busy Here
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
X-Think: [$THINKTIME] [$runs]
Content-Length: 0
]]></send>
</scenario>"#,
        )
    };
    let logs = std::cell::Cell::new(0);
    let answer = |cfg: Arc<Config>| {
        let mut b = uas(scn(), cfg);
        logs.set(logs.get() + b.logs.len());
        for id in ["i-1", "i-2"] {
            b.handle_datagram(
                at(0),
                addr(UAC),
                request("INVITE", id, id, 1, "").as_bytes(),
            );
        }
        let out = drain(&mut b);
        assert_eq!(out.len(), 2, "one answer each: the 486 step is gone past");
        out.iter()
            .map(|(_, m)| {
                let m = String::from_utf8_lossy(m).into_owned();
                assert!(m.starts_with("SIP/2.0 200 OK"), "{m}");
                m.lines()
                    .find_map(|l| l.strip_prefix("X-Think: "))
                    .unwrap_or("")
                    .to_string()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        answer(config(None)),
        ["1 1.000000", "1 1.000000"],
        "init ran once"
    );
    let mut c = test_config();
    c.set = vec![("THINKTIME".into(), b"5".to_vec())];
    c.trace_logs = true;
    let c = Arc::new(c);
    assert_eq!(answer(Arc::clone(&c)), ["5 1.000000", "5 1.000000"]);
    // Once for the run: another endpoint (thread) of it takes the
    // result, and the stanza does not run again.
    assert_eq!(answer(c), ["5 1.000000", "5 1.000000"]);
    assert_eq!(logs.get(), 1, "one <log> from the one run of <init>");
    // A jump to itself in <init> stops the run, as in a call.
    let looping = scenario(
        r#"<scenario name="s"><init><nop><action><jump value="0"/></action></nop></init><nop/></scenario>"#,
    );
    let b = uas(looping, config(None));
    assert!(
        b.fatal.as_deref().is_some_and(|f| f.contains("itself")),
        "{:?}",
        b.fatal
    );
}

/// `optional="global"`: a 100 that comes after the 200 (the call is in
/// its pause) is still taken by the step that allows it, whose actions
/// run; with `optional="true"` it is only absorbed.
#[test]
fn a_global_optional_step_takes_its_message_late() {
    for (optional, count, absorbed) in [("global", "2.000000", 0), ("true", "1.000000", 1)] {
        // A caller with a counted, optional 100 before its 200.
        let xml = format!(
            r#"<scenario name="uac">
  <send><![CDATA[
INVITE sip:x@[remote_ip] SIP/2.0
Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch]
From: <sip:a@[local_ip]>;tag=[call_number]
To: <sip:x@[remote_ip]>
Call-ID: [call_id]
CSeq: 1 INVITE
Content-Length: 0
]]></send>
  <recv response="100" optional="{optional}"><action><add assign_to="trying" value="1"/></action></recv>
  <recv response="200"/>
  <pause milliseconds="100"/>
  <send><![CDATA[
BYE sip:x@[remote_ip] SIP/2.0
Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch]
From: <sip:a@[local_ip]>;tag=[call_number]
To: <sip:x@[remote_ip]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 2 BYE
X-Trying: [$trying]
Content-Length: 0
]]></send>
</scenario>"#
        );
        let mut a = uac(scenario(&xml), config(Some(1)));
        assert!(a.start_call(at(0)));
        let invite = drain(&mut a).remove(0).1;
        let trying = final_answer(&invite, "100 Trying");
        a.handle_datagram(at(1_000), addr(UAS), trying.as_bytes());
        a.handle_datagram(
            at(2_000),
            addr(UAS),
            final_answer(&invite, "200 OK").as_bytes(),
        );
        // A second 100, not a retransmission (another header), late.
        let late = trying.replace("Content-Length: 0", "Server: late\r\nContent-Length: 0");
        a.handle_datagram(at(3_000), addr(UAS), late.as_bytes());
        a.handle_timeout(at(200_000));
        let out = drain(&mut a);
        let bye = String::from_utf8_lossy(&out.last().unwrap().1).into_owned();
        assert!(bye.starts_with("BYE"), "{bye}");
        assert!(
            bye.contains(&format!("X-Trying: {count}")),
            "{optional}: {bye}"
        );
        assert_eq!(a.stats.absorbed, absorbed, "{optional}");
        assert_eq!(a.stats.failed_total(), 0);
    }
}

/// `<DefaultMessage>`: the scenario's own CANCEL of a failed caller's
/// INVITE, and its own 200 to an unexpected BYE; without them the
/// built-in ones go.
#[test]
fn default_messages_replace_what_sipp_sends_by_itself() {
    let caller = |own: bool| {
        let cancel = if own {
            r#"<DefaultMessage id="cancel"><![CDATA[
CANCEL sip:x@[remote_ip] SIP/2.0
Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch]
Call-ID: [call_id]
CSeq: 1 CANCEL
X-Own: [$mark]
Content-Length: 0
]]></DefaultMessage>"#
        } else {
            ""
        };
        scenario(&format!(
            r#"<scenario name="uac">
  {cancel}
  <send><![CDATA[
INVITE sip:x@[remote_ip] SIP/2.0
Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch]
From: <sip:a@[local_ip]>;tag=[call_number]
To: <sip:x@[remote_ip]>
Call-ID: [call_id]
CSeq: 1 INVITE
Content-Length: 0
]]></send>
  <recv response="180"><action><assignstr assign_to="mark" value="own cancel"/></action></recv>
  <recv response="200" timeout="100"/>
</scenario>"#
        ))
    };
    for own in [true, false] {
        let mut a = uac(caller(own), config(Some(1)));
        assert!(a.start_call(at(0)));
        let invite = drain(&mut a).remove(0).1;
        a.handle_datagram(
            at(1_000),
            addr(UAS),
            final_answer(&invite, "180 Ringing").as_bytes(),
        );
        a.handle_timeout(at(200_000));
        let out = drain(&mut a);
        let cancel = String::from_utf8_lossy(&out[0].1).into_owned();
        assert!(cancel.starts_with("CANCEL"), "{cancel}");
        assert_eq!(cancel.contains("X-Own: own cancel"), own, "{cancel}");
        assert_eq!(a.stats.failed_by(FailReason::RecvTimeout), 1);
    }
    let callee = scenario(
        r#"<scenario name="uas">
  <DefaultMessage id="200"><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
X-Own: bye answered
Content-Length: 0
]]></DefaultMessage>
  <recv request="INVITE"/>
  <recv request="INFO"/>
</scenario>"#,
    );
    let mut b = uas(callee, config(None));
    b.handle_datagram(
        at(0),
        addr(UAC),
        request("INVITE", "d-1", "i1", 1, "").as_bytes(),
    );
    b.handle_datagram(
        at(0),
        addr(UAC),
        request("BYE", "d-1", "b1", 2, "").as_bytes(),
    );
    let ok = first_sent(&mut b);
    assert!(
        ok.contains("X-Own: bye answered") && ok.contains("CSeq: 2 BYE"),
        "{ok}"
    );
    assert_eq!(b.stats.failed_by(FailReason::UnexpectedMessage), 1);
    let e = load_error(
        r#"<scenario><DefaultMessage id="prack"><![CDATA[x]]></DefaultMessage><nop/></scenario>"#,
    );
    assert!(e.contains("none of SIPp's default messages"), "{e}");
}

/// Classic 3PCC: a call that aborts on an unexpected message tells its
/// twin (`internal-cmd: abort_call`), and a call told so aborts too.
#[test]
fn a_3pcc_call_that_aborts_tells_its_twin_and_the_twin_aborts() {
    let scn = scenario(
        r#"<scenario name="3pcc">
  <recv request="INVITE"/>
  <sendCmd><![CDATA[
Call-ID: [call_id]
]]></sendCmd>
  <recvCmd/>
  <recv request="ACK"/>
</scenario>"#,
    );
    let mut b = uas(Arc::clone(&scn), config(None));
    b.handle_datagram(
        at(0),
        addr(UAC),
        request("INVITE", "t-1", "i1", 1, "").as_bytes(),
    );
    b.twin_out.clear();
    b.handle_datagram(
        at(0),
        addr(UAC),
        request("INFO", "t-1", "n1", 2, "").as_bytes(),
    );
    assert_eq!(
        b.twin_out,
        vec![(None, b"call-id: t-1\ninternal-cmd: abort_call\n\n".to_vec())]
    );
    assert_eq!(b.stats.failed_by(FailReason::UnexpectedMessage), 1);
    // The twin's side: told, the call fails; a call not there is not
    // started by it.
    let mut b = uas(scn, config(None));
    b.handle_datagram(
        at(0),
        addr(UAC),
        request("INVITE", "t-2", "i2", 1, "").as_bytes(),
    );
    b.handle_command(at(0), b"call-id: t-2\ninternal-cmd: abort_call\n\n");
    assert_eq!(b.stats.failed_by(FailReason::TwinAborted), 1);
    assert_eq!(b.open_calls(), 0);
    b.handle_command(at(0), b"call-id: t-3\ninternal-cmd: abort_call\n\n");
    assert_eq!((b.open_calls(), b.stats.out_of_call_msgs), (0, 1));
}

/// SIPp's `advance_state="false"`: an optional step takes a message and
/// runs its actions, and the call stays where it was (the next step
/// still waits, the last message is not that one).
#[test]
fn advance_state_false_runs_the_actions_and_leaves_the_call_where_it_was() {
    let scn = scenario(
        r#"<scenario name="uas">
  <recv request="INVITE"/>
  <recv request="INFO" optional="true" advance_state="false"><action><add assign_to="infos" value="1"/></action></recv>
  <recv request="ACK"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
X-Infos: [$infos]
Content-Length: 0
]]></send>
</scenario>"#,
    );
    let mut b = uas(scn, config(None));
    b.handle_datagram(
        at(0),
        addr(UAC),
        request("INVITE", "a-1", "i1", 1, "").as_bytes(),
    );
    b.handle_datagram(
        at(0),
        addr(UAC),
        request("INFO", "a-1", "n1", 2, "").as_bytes(),
    );
    b.handle_datagram(
        at(0),
        addr(UAC),
        request("INFO", "a-1", "n2", 3, "").as_bytes(),
    );
    assert!(drain(&mut b).is_empty(), "still waiting");
    b.handle_datagram(
        at(0),
        addr(UAC),
        request("ACK", "a-1", "k1", 1, "").as_bytes(),
    );
    let ok = first_sent(&mut b);
    assert!(
        ok.contains("X-Infos: 2.000000") && ok.contains("CSeq: 1 ACK"),
        "{ok}"
    );
    assert_eq!((b.stats.succeeded, b.stats.failed_total()), (1, 0));
    let e = load_error(r#"<scenario><recv request="INFO" advance_state="false"/></scenario>"#);
    assert!(e.contains("optional messages only"), "{e}");
}

/// `_unexp.main` whose handler pauses before its `<recv>`: the message
/// waits for it (SIPp's queue) and is taken there when the pause ends.
#[test]
fn a_message_for_unexp_main_waits_for_its_first_recv() {
    let scn = scenario(
        r#"<scenario name="uas">
  <recv request="INVITE"/>
  <pause milliseconds="1000"/>
  <label id="_unexp.main"/>
  <pause milliseconds="50"/>
  <recv request="INFO"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>
</scenario>"#,
    );
    let mut b = uas(scn, config(None));
    b.handle_datagram(
        at(0),
        addr(UAC),
        request("INVITE", "q-1", "i1", 1, "").as_bytes(),
    );
    b.handle_datagram(
        at(10_000),
        addr(UAC),
        request("INFO", "q-1", "n1", 2, "").as_bytes(),
    );
    assert!(drain(&mut b).is_empty(), "the handler pauses first");
    b.handle_timeout(at(60_000));
    let ok = first_sent(&mut b);
    assert!(
        ok.starts_with("SIP/2.0 200 OK") && ok.contains("CSeq: 2 INFO"),
        "{ok}"
    );
    assert_eq!((b.stats.succeeded, b.stats.failed_total()), (1, 0));
}
