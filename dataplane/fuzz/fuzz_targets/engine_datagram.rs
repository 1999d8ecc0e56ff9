//! The whole engine of two shards, with media anchored, on arbitrary input
//! from trunks and a stranger, with time moving on: it must never panic.
//!
//! The engines are built once per process (an input only moves their state
//! on; each input ends by letting every call time out). The input is a
//! list of steps separated by 0xff bytes; a step's first byte says what it
//! is, the rest is its payload:
//!
//! | op & 7 | step |
//! |---|---|
//! | 0, 1, 2 | the payload as a datagram from the PBX, carrier A or a stranger |
//! | 3, 4 | carrier A or the PBX answers the last request the SBC sent it (status from the next byte, SDP with 183/200) |
//! | 5 | the PBX sends an in-dialog request built from the last response the SBC sent it (method from the next byte) |
//! | 6 | a media packet to one of the SBC's ports (port from the next byte) |
//! | 7 | time moves on by 100 ms × the next byte, timers run |
//!
//! Bit 3 picks the shard that receives a datagram; a hand-off goes to the
//! other one, as the shard loop does. Bit 4 has that shard also send an
//! OPTIONS probe of its own (a transaction outside calls) to carrier A,
//! which answers it like any request with ops 3; bit 5 sets an alarm.
//! Carrier A is also health-probed (so time and answers move it down and
//! up while calls are routed), and the registrar is on (one account).
#![no_main]

#[path = "../../core/tests/support/mod.rs"]
#[allow(dead_code, unused_imports)]
mod support;

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use sbc_core::b2bua::{Alarm, Disposition, Engine, OwnRequest, Secrets, ShardId};
use sbc_core::net::{Flow, LocalId};
use sbc_core::policy::{Policy, Probe};
use sbc_core::sip::{HeaderName, Message, Method};
use sbc_core::stats::ShardStats;
use support::{ANSWER_SDP, CARRIER_A, PBX, STRANGER, Sent, addr, in_dialog, media_policy, reply};

struct World {
    /// The policy with carrier A probed, and the same without probes and
    /// without the registrar (a reload that stops their periodic work,
    /// the probes and the registrar's one-second ticks, before the
    /// end-of-input wait: 4,000 ticks an input would slow the target to a
    /// few hundred inputs a second).
    policy: Arc<Policy>,
    unprobed: Arc<Policy>,
    shards: [Engine; 2],
    now: Instant,
    buf: Vec<u8>,
    /// The last request the SBC sent to carrier A and to the PBX.
    to_carrier: Option<Sent>,
    to_pbx: Option<Sent>,
    /// The last response the SBC sent to the PBX.
    answer_to_pbx: Option<Sent>,
    cseq: u32,
    /// What the SBC sent during this input that parsed (by
    /// [`fingerprint`]), and whether it was a request.
    parsed: Vec<((usize, u64), bool)>,
}

/// The edge limits on: session timers the SBC asks for and enforces, a
/// cap on calls across the shards, the PBX's share of the media ports,
/// carrier A's calls a second (both directions) and Contacts it may lead
/// requests to.
fn with_limits(mut p: Policy) -> Policy {
    p.call_timers.session_expires = Some(120);
    p.limits.max_calls = Some(64);
    p.trunks[0].media_share = Some(50);
    p.trunks[1].max_cps = Some(20);
    p.trunks[1].follow_contact = true;
    p
}

/// The registrar on, with one account: REGISTERs from the stranger meet
/// challenges, credentials checks and the lockout.
fn with_registrar(mut p: Policy) -> Policy {
    use sbc_core::registrar::{Account, AccountSecret, Accounts, Settings};
    p.accounts = Accounts::new(
        Some(Settings::default()),
        vec![Account {
            username: "alice".into(),
            extension: "201".into(),
            secret: AccountSecret::Password(b"secret".to_vec().into()),
            networks: vec![],
            transports: vec![],
            trunk: None,
        }],
    );
    p
}

impl World {
    fn new() -> Self {
        // Carrier A is health-probed every 5 s (down after 2 failures, up
        // after 1 answer): probes go out as time moves on, and answers to
        // them (op 3) move the trunk down and up under the calls. (Every
        // second, a step of 25 s ran 25 probes with their retransmissions,
        // the same code over and over: a fifth of the target's time.)
        let mut probed = with_limits(with_registrar(media_policy()));
        probed.trunks[1].probe = Some(Probe {
            interval: Duration::from_secs(5),
            down_after: 2,
            up_after: 1,
        });
        let policy = Arc::new(probed);
        let secrets = Secrets::from_bytes([7; 48]);
        let now = Instant::now();
        let engine = |i| {
            let mut e = Engine::new(
                ShardId(i),
                2,
                secrets,
                Arc::clone(&policy),
                Arc::new(ShardStats::default()),
            );
            e.set_policy(now, Arc::clone(&policy));
            e
        };
        World {
            unprobed: Arc::new(with_limits(media_policy())),
            policy: Arc::clone(&policy),
            shards: [engine(0), engine(1)],
            now,
            buf: vec![0; 65536],
            to_carrier: None,
            to_pbx: None,
            answer_to_pbx: None,
            cseq: 100,
            parsed: Vec::new(),
        }
    }

    fn deliver(&mut self, shard: usize, from: &str, data: &[u8]) {
        let origin = Flow::udp(addr(from), LocalId(0));
        if let Disposition::HandOff(ShardId(owner)) =
            self.shards[shard].handle_datagram(self.now, origin, data)
        {
            let owner = usize::from(owner) % 2;
            // A message is handed over once: the owner never hands it back.
            let again = self.shards[owner].handle_datagram(self.now, origin, data);
            assert!(
                matches!(again, Disposition::Done),
                "a hand-off was handed off again"
            );
        }
        self.drain();
    }

    fn drain(&mut self) {
        for shard in 0..2 {
            while let Some(t) = self.shards[shard].poll_transmit(&mut self.buf) {
                let sent = Sent {
                    to: t.dest.remote,
                    bytes: self.buf[..t.len].to_vec(),
                };
                let request = self.parses(&sent.bytes);
                if sent.to == addr(CARRIER_A) && request {
                    self.to_carrier = Some(sent);
                } else if sent.to == addr(PBX) {
                    if request {
                        self.to_pbx = Some(sent);
                    } else {
                        self.answer_to_pbx = Some(sent);
                    }
                }
            }
        }
    }

    /// Whether `bytes`, which the SBC sent, is a request; panics when the
    /// SBC cannot parse it itself. A message already parsed during this
    /// input (most are retransmissions: six in ten) is not parsed again.
    fn parses(&mut self, bytes: &[u8]) -> bool {
        let print = fingerprint(bytes);
        if let Some((_, request)) = self.parsed.iter().find(|(p, _)| *p == print) {
            return *request;
        }
        let Ok(msg) = Message::parse(bytes) else {
            panic!(
                "the SBC sent something it cannot parse itself: {:?}",
                String::from_utf8_lossy(bytes)
            );
        };
        let request = msg.is_request();
        self.parsed.push((print, request));
        request
    }

    fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        loop {
            let due = [0, 1].map(|i| self.shards[i].poll_timeout());
            match due.iter().flatten().min() {
                Some(&t) if t <= end => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    // Only a shard with a timer due runs them.
                    for (e, due) in self.shards.iter_mut().zip(due) {
                        if due.is_some_and(|due| due <= now) {
                            e.handle_timeout(now);
                        }
                    }
                    self.drain();
                }
                _ => break,
            }
        }
        self.now = end;
    }

    fn answer(&mut self, peer: &str, arg: u8) {
        let request = if peer == CARRIER_A {
            self.to_carrier.clone()
        } else {
            self.to_pbx.clone()
        };
        let Some(req) = request else { return };
        // Requests kept are known to parse; an ACK gets no answer.
        if req.bytes.starts_with(b"ACK ") {
            return;
        }
        let (code, reason) = [
            (100, "Trying"),
            (180, "Ringing"),
            (183, "Session Progress"),
            (200, "OK"),
            (486, "Busy Here"),
            (503, "Service Unavailable"),
            (401, "Unauthorized"),
            (408, "Request Timeout"),
        ][usize::from(arg % 8)];
        let body = if code == 183 || code == 200 {
            ANSWER_SDP
        } else {
            ""
        };
        let tag = (code > 100).then_some("fz1");
        let contact = format!("sip:peer@{}", addr(peer));
        let r = reply(&req, code, reason, tag, Some(&contact), body);
        self.deliver(usize::from(arg >> 7), peer, r.as_bytes());
    }

    fn in_dialog_from_pbx(&mut self, arg: u8) {
        let Some(resp) = self.answer_to_pbx.clone() else {
            return;
        };
        let method = [
            "ACK", "BYE", "INFO", "INVITE", "UPDATE", "CANCEL", "OPTIONS", "PRACK",
        ][usize::from(arg % 8)];
        let body = if method == "INVITE" || method == "UPDATE" {
            support::OFFER_SDP
        } else {
            ""
        };
        self.cseq += 1;
        // A CANCEL and an ACK for a non-2xx carry the INVITE's CSeq number; the
        // others a new one. The engine must cope with either.
        let cseq = if arg & 8 == 0 { self.cseq } else { 1 };
        let parsed = resp.msg();
        let value = |name| String::from_utf8_lossy(parsed.value(name).unwrap_or(b"")).into_owned();
        let msg = in_dialog(
            method,
            "sip:sbc@192.0.2.1",
            "10.0.0.10:5060",
            &format!("z9hG4bKfz{}", self.cseq),
            &value(HeaderName::From),
            &value(HeaderName::To),
            &value(HeaderName::CallId),
            cseq,
            body,
        );
        self.deliver(usize::from(arg >> 7), PBX, msg.as_bytes());
    }

    fn media(&mut self, arg: u8, payload: &[u8]) {
        let port = 30000 + u16::from(arg % 100);
        let from = if arg & 0x80 == 0 {
            "10.0.0.10:4000"
        } else {
            "10.0.0.20:5000"
        };
        // Media ports belong to one shard each; try both (the wrong one drops).
        for e in &mut self.shards {
            let _ = e.handle_media(self.now, port, addr(from), payload);
        }
    }

    fn step(&mut self, step: &[u8]) {
        let Some((&op, rest)) = step.split_first() else {
            return;
        };
        let shard = usize::from((op >> 3) & 1);
        let arg = rest.first().copied().unwrap_or(0);
        if op & 0x10 != 0 {
            let probe = OwnRequest {
                method: Method::Options,
                flow: Flow::udp(addr(CARRIER_A), LocalId(0)),
                request_uri: b"sip:10.0.0.20:5060".to_vec().into(),
                from: b"<sip:sbc@192.0.2.1>".to_vec().into(),
                to: b"<sip:10.0.0.20>".to_vec().into(),
                call_id: None,
                cseq: u32::from(arg),
                headers: vec![],
            };
            self.shards[shard].send_request(self.now, probe);
            self.drain();
        }
        if op & 0x20 != 0 {
            let at = self.now + Duration::from_millis(10 * u64::from(arg));
            self.shards[shard].set_alarm(at, Alarm::ProbeInterval(u16::from(arg)));
        }
        match op & 7 {
            0 => self.deliver(shard, PBX, rest),
            1 => self.deliver(shard, CARRIER_A, rest),
            2 => self.deliver(shard, STRANGER, rest),
            3 => self.answer(CARRIER_A, arg),
            4 => self.answer(PBX, arg),
            5 => self.in_dialog_from_pbx(arg),
            6 => self.media(arg, rest.get(1..).unwrap_or_default()),
            _ => self.advance(Duration::from_millis(100 * u64::from(arg))),
        }
    }
}

/// The length and a 64-bit multiplicative hash of `bytes`, eight bytes a
/// step: equal for a retransmission, and for two different messages of one
/// length only by a rare collision, which can only skip a parse check (not
/// invent a crash). Not a byte comparison, which libFuzzer's memcmp hook
/// would make the costliest part of an input.
fn fingerprint(bytes: &[u8]) -> (usize, u64) {
    let mut h = 0u64;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(w);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    for &b in words.remainder() {
        h = (h.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    (bytes.len(), h)
}

thread_local! {
    static WORLD: RefCell<World> = RefCell::new(World::new());
}

fuzz_target!(|data: &[u8]| {
    WORLD.with_borrow_mut(|w| {
        for step in data.split(|b| *b == 0xff) {
            w.step(step);
        }
        // Let every call end, so the next input starts from an empty table
        // (a crash then reproduces from its input alone). A call that no
        // timer ends (confirmed without media) costs a fresh world. The
        // probes and the registrar stop for that wait (a reload without
        // them) and start again after it.
        let now = w.now;
        let (unprobed, probed) = (Arc::clone(&w.unprobed), Arc::clone(&w.policy));
        for e in &mut w.shards {
            e.set_policy(now, Arc::clone(&unprobed));
        }
        w.advance(Duration::from_secs(4000));
        let now = w.now;
        for e in &mut w.shards {
            while e.poll_event().is_some() {}
            // Transactions outside calls always end (timers F, J, K).
            assert_eq!(
                e.outside_transactions(),
                (0, 0),
                "a transaction outside calls outlived its timers"
            );
            e.set_policy(now, Arc::clone(&probed));
        }
        if w.shards.iter().any(|e| e.calls() > 0) {
            *w = World::new();
        } else {
            w.to_carrier = None;
            w.to_pbx = None;
            w.answer_to_pbx = None;
            w.parsed.clear();
        }
    });
});
