//! Property tests: parse -> write -> parse round trips, and hostile input
//! thrown at the parser and the engine never panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use bytes::BytesMut;
use proptest::prelude::*;
use sbc_core::sip::{HeaderName, Message, Request, Writer};
use support::*;

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9.!%*_+`'~-]{0,11}"
}

fn header_value() -> impl Strategy<Value = String> {
    // Visible characters and inner spaces; no leading/trailing blanks.
    "[!-~]([ !-~]{0,30}[!-~])?"
}

#[derive(Debug, Clone)]
struct Generated {
    method: String,
    user: String,
    host: String,
    port: u16,
    call_id: String,
    cseq: u32,
    from_tag: String,
    branch: String,
    extra: Vec<(String, String, bool)>,
    compact: bool,
    body: Vec<u8>,
}

fn generated() -> impl Strategy<Value = Generated> {
    (
        prop_oneof![
            Just("INVITE"),
            Just("OPTIONS"),
            Just("BYE"),
            Just("MESSAGE"),
            Just("UPDATE")
        ],
        "[a-z0-9+]{1,12}",
        "[a-z]{1,8}(\\.[a-z]{1,8}){0,2}",
        1u16..,
        "[A-Za-z0-9.@-]{1,40}",
        0u32..=0x7fff_ffff,
        token(),
        "[A-Za-z0-9]{1,16}",
        proptest::collection::vec(
            ("X-[A-Za-z0-9-]{1,10}", header_value(), any::<bool>()),
            0..6,
        ),
        any::<bool>(),
        proptest::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(
            |(m, user, host, port, call_id, cseq, from_tag, branch, extra, compact, body)| {
                Generated {
                    method: m.to_owned(),
                    user,
                    host,
                    port,
                    call_id,
                    cseq,
                    from_tag,
                    branch,
                    extra,
                    compact,
                    body,
                }
            },
        )
}

fn render(g: &Generated) -> Vec<u8> {
    let (v, f, t, i) = if g.compact {
        ("v", "f", "t", "i")
    } else {
        ("Via", "From", "To", "Call-ID")
    };
    let mut s = format!(
        "{m} sip:{u}@{h}:{p} SIP/2.0\r\n{v}: SIP/2.0/UDP {h}:{p};branch=z9hG4bK{b}\r\n{f}: <sip:{u}@{h}>;tag={ft}\r\n{t}: <sip:{u}@{h}>\r\n{i}: {c}\r\nCSeq: {q} {m}\r\nMax-Forwards: 70\r\n",
        m = g.method,
        u = g.user,
        h = g.host,
        p = g.port,
        b = g.branch,
        ft = g.from_tag,
        c = g.call_id,
        q = g.cseq,
    );
    for (name, value, fold) in &g.extra {
        // Optionally fold the value onto a continuation line (§7.3.1).
        if *fold {
            s.push_str(&format!("{name}:\r\n {value}\r\n"));
        } else {
            s.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    s.push_str(&format!("Content-Length: {}\r\n\r\n", g.body.len()));
    let mut out = s.into_bytes();
    out.extend_from_slice(&g.body);
    out
}

/// Writes a parsed message back out, header by header.
fn rewrite(msg: &Message<'_>) -> Vec<u8> {
    let mut buf = BytesMut::new();
    let mut w = Writer::new(&mut buf);
    let line = msg.request_line().unwrap();
    w.request_line(line.method_raw, &[line.uri]);
    for h in msg.headers() {
        if h.name != HeaderName::ContentLength {
            w.copy(h);
        }
    }
    w.body(msg.body());
    buf.to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parse_write_parse_round_trips(g in generated()) {
        let raw = render(&g);
        let msg = Message::parse(&raw).unwrap();
        let req = Request::parse(msg.clone()).unwrap();
        prop_assert_eq!(req.method_raw, g.method.as_bytes());
        prop_assert_eq!(req.call_id, g.call_id.as_bytes());
        prop_assert_eq!(req.cseq.seq, g.cseq);
        prop_assert_eq!(req.from_tag(), g.from_tag.as_bytes());
        prop_assert_eq!(req.uri.port, Some(g.port));
        prop_assert_eq!(req.msg.body(), &g.body[..]);
        for (name, value, _) in &g.extra {
            let found = msg.headers().any(|h| h.raw_name == name.as_bytes() && String::from_utf8_lossy(h.value).split_whitespace().collect::<Vec<_>>() == value.split_whitespace().collect::<Vec<_>>());
            prop_assert!(found, "header {} lost", name);
        }
        let again = rewrite(&msg);
        let msg2 = Message::parse(&again).unwrap();
        let req2 = Request::parse(msg2.clone()).unwrap();
        prop_assert_eq!(req2.call_id, req.call_id);
        prop_assert_eq!(req2.cseq.seq, req.cseq.seq);
        prop_assert_eq!(msg2.body(), msg.body());
        prop_assert_eq!(msg2.headers().len(), msg.headers().len());
        // A second rewrite is byte-identical (the writer's output is a fixpoint).
        prop_assert_eq!(rewrite(&msg2), again.clone());
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Message::parse(&data).map(|m| if m.is_request() { let _ = Request::parse(m); });
        let _ = Message::salvage(&data);
        let mut sim = Sim::new();
        sim.recv_bytes(PBX, &data);
        sim.recv_bytes(STRANGER, &data);
        sim.sent();
        sim.advance(Duration::from_secs(40));
    }

    #[test]
    fn mutated_calls_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut sim = Sim::new();
        let base = invite("10.0.0.10:5060", "+391234", "mut@pbx", "z9hG4bKmut", 1).into_bytes();
        let mut data = base.clone();
        for (idx, byte, op) in &edits {
            let i = idx.index(data.len().max(1));
            match op {
                0 => { if i < data.len() { data[i] = *byte; } }
                1 => data.insert(i.min(data.len()), *byte),
                _ => { if i < data.len() { data.remove(i); } }
            }
        }
        sim.recv_bytes(PBX, &data);
        let sent = sim.sent();
        // Whatever was relayed is itself well formed.
        for s in sent.iter().filter(|s| s.to != addr(PBX)) {
            prop_assert!(Request::parse(s.msg()).is_ok());
        }
        // Truncated responses from the carrier to whatever was sent.
        if let Some(b) = sent.iter().find(|s| s.to == addr(CARRIER_A)) {
            let ok = reply(b, 200, "OK", Some("t"), Some("sip:c@10.0.0.20"), ANSWER_SDP).into_bytes();
            let n = cut.index(ok.len() + 1);
            sim.recv_bytes(CARRIER_A, &ok[..n]);
            sim.recv_bytes(CARRIER_A, &ok);
        }
        sim.sent();
        sim.advance(Duration::from_secs(200));
        prop_assert_eq!(sim.engine.calls(), 0, "every call ends and is cleaned up");
    }
}

mod stream_framing {
    use bytes::Bytes;
    use proptest::prelude::*;
    use sbc_core::sip::stream::{Frame, StreamDecoder};

    /// A message with a body of `body` bytes (which may contain CRLFs).
    fn message(i: usize, body: &[u8]) -> Vec<u8> {
        let mut m = format!(
            "MESSAGE sip:{i}@x SIP/2.0\r\nCall-ID: {i}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        m.extend_from_slice(body);
        m
    }

    proptest! {
        /// Messages and pings, cut into chunks anywhere, come out whole
        /// and in order, with nothing left over.
        #[test]
        fn any_chunking_yields_the_same_frames(
            bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 1..6),
            pings in prop::collection::vec(any::<bool>(), 6),
            cuts in prop::collection::vec(1usize..300, 0..20),
        ) {
            let mut stream = Vec::new();
            let mut want = Vec::new();
            for (i, body) in bodies.iter().enumerate() {
                if pings[i] {
                    stream.extend_from_slice(b"\r\n\r\n");
                    want.push(Frame::Ping);
                }
                let m = message(i, body);
                stream.extend_from_slice(&m);
                want.push(Frame::Message(Bytes::from(m)));
            }
            let mut d = StreamDecoder::default();
            let mut got = Vec::new();
            let mut rest: &[u8] = &stream;
            for cut in cuts.iter().chain(std::iter::once(&usize::MAX)) {
                let (chunk, tail) = rest.split_at((*cut).min(rest.len()));
                d.push(chunk);
                rest = tail;
                while let Some(f) = d.next_frame() {
                    got.push(f.expect("valid stream"));
                }
            }
            prop_assert_eq!(got, want);
            prop_assert_eq!(d.buffered(), 0);
        }

        /// Arbitrary bytes never panic the decoder, and it never holds more
        /// than its limits allow.
        #[test]
        fn garbage_is_bounded(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..4096), 0..40)) {
            let mut d = StreamDecoder::default();
            for c in &chunks {
                d.push(c);
                while let Some(f) = d.next_frame() {
                    if f.is_err() {
                        break;
                    }
                }
                prop_assert!(d.buffered() <= 64 * 1024 + 4096);
            }
        }
    }
}
