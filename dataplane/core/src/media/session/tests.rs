use std::time::Instant;

use super::*;
use crate::media::ports::PortPlan;

const A_IP: &str = "10.0.0.10";
const B_IP: &str = "10.0.0.20";

fn ports(pairs: u16) -> MediaPorts {
    let plan = PortPlan::new(30000, 30000 + 2 * pairs - 1, 1).unwrap();
    MediaPorts::new(PortPool::new(plan, 0))
}

fn call() -> CallRef {
    CallRef {
        index: 7,
        generation: 1,
    }
}

fn sdp(ip: &str, port: u16, extra: &str) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n{extra}"
    )
}

fn all(_: &Media<'_>, _: &[u8]) -> bool {
    true
}

fn ctx<'c>(p: &'c mut MediaPorts, allow: &'c dyn Fn(&Media<'_>, &[u8]) -> bool) -> Context<'c> {
    Context {
        ports: p,
        call: call(),
        advertise: ["192.0.2.1".parse().unwrap(); 2],
        dual_stack: false,
        peers: [A_IP.parse().unwrap(), B_IP.parse().unwrap()],
        forbidden: &[],
        own: &OWN,
        home: [&[], &[]],
        public: [false, false],
        strict: [false, false],
        share: [(0, u32::MAX); 2],
        allow,
    }
}

/// A trunk's media share: the pairs facing it stay within its cap, the
/// other side's are not counted against it, and released pairs come back.
#[test]
fn a_trunks_media_share_caps_the_pairs_facing_it() {
    let mut p = ports(10);
    let key = super::share_key("noisy");
    let offer = sdp(A_IP, 4000, "");
    let start = |p: &mut MediaPorts| {
        let mut s = MediaSession::new(
            Instant::now(),
            [A_IP.parse().unwrap(), B_IP.parse().unwrap()],
        );
        let mut c = ctx(p, &all);
        c.share[0] = (key, 2);
        let r = s.process(Leg::A, Role::Offer, offer.as_bytes(), &mut c);
        (s, r)
    };
    let (mut first, r) = start(&mut p);
    assert!(r.is_ok(), "{r:?}");
    let (_second, r) = start(&mut p);
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(p.held_by(key), 2, "one pair facing the trunk per call");
    assert_eq!(p.pool.in_use(), 4, "and one facing the other side");
    let (_third, r) = start(&mut p);
    assert_eq!(r, Err(MediaError::PoolExhausted));
    assert_eq!(p.pool.in_use(), 4, "nothing taken by the refused offer");
    first.release(&mut p);
    assert_eq!(p.held_by(key), 1);
    let (_fourth, r) = start(&mut p);
    assert!(r.is_ok(), "{r:?}");
    // Over the cap (a reload lowered it), an SDP that needs no new pairs
    // still goes through: the answer to an offer already anchored.
    let (mut s, r) = start(&mut p);
    assert_eq!(r, Err(MediaError::PoolExhausted));
    let mut c = ctx(&mut p, &all);
    c.share[0] = (key, 0);
    let answer = sdp(B_IP, 5000, "");
    let r = first_again(&mut s, &mut c, &offer, &answer);
    assert!(r.is_ok(), "{r:?}");
}

/// Anchors `offer` from A with no share, then answers it from B under
/// the caller's context.
fn first_again(
    s: &mut MediaSession,
    c: &mut Context<'_>,
    offer: &str,
    answer: &str,
) -> Result<Vec<u8>, MediaError> {
    let share = c.share;
    c.share = [(0, u32::MAX); 2];
    s.process(Leg::A, Role::Offer, offer.as_bytes(), c)?;
    c.share = share;
    s.process(Leg::B, Role::Answer, answer.as_bytes(), c)
}

/// The SBC's own address in these tests (its advertised one).
const OWN: [IpAddr; 1] = [IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1))];

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0u8; 160]);
    p
}

/// An established call: A offered at 4000, B answered at 5000.
fn established(p: &mut MediaPorts) -> (MediaSession, String, String) {
    let now = Instant::now();
    let mut s = MediaSession::new(now, [A_IP.parse().unwrap(), B_IP.parse().unwrap()]);
    let to_b = s
        .process(
            Leg::A,
            Role::Offer,
            sdp(A_IP, 4000, "").as_bytes(),
            &mut ctx(p, &all),
        )
        .unwrap();
    let to_a = s
        .process(
            Leg::B,
            Role::Answer,
            sdp(B_IP, 5000, "").as_bytes(),
            &mut ctx(p, &all),
        )
        .unwrap();
    (
        s,
        String::from_utf8(to_b).unwrap(),
        String::from_utf8(to_a).unwrap(),
    )
}

#[test]
fn offer_and_answer_point_each_side_at_its_own_port() {
    let mut p = ports(10);
    let (s, to_b, to_a) = established(&mut p);
    // Pair 0 faces A (30000), pair 1 faces B (30002).
    assert!(
        to_b.contains("c=IN IP4 192.0.2.1\r\n") && to_b.contains("m=audio 30002 RTP/AVP 0 8\r\n"),
        "{to_b}"
    );
    assert!(to_a.contains("m=audio 30000 RTP/AVP 0 8\r\n"), "{to_a}");
    assert!(
        !to_b.contains(A_IP) && !to_a.contains(B_IP),
        "no address crosses"
    );
    assert_eq!(p.pool.in_use(), 2);
    assert_eq!(
        p.lookup(30001),
        Some((
            Binding {
                call: call(),
                stream: 0,
                leg: Leg::A
            },
            true
        ))
    );
    assert_eq!(p.lookup(30002).map(|(b, _)| b.leg), Some(Leg::B));
    assert_eq!(s.streams[0].ends[1].sdp_rtp, Some(sa("10.0.0.20:5000")));
}

#[test]
fn packets_cross_latching_to_where_the_peer_really_is() {
    let mut p = ports(10);
    let (mut s, ..) = established(&mut p);
    let now = Instant::now();
    let a_port = p.lookup(30000).unwrap().0;
    let b_port = p.lookup(30002).unwrap().0;
    // A is behind NAT: its packets come from another port than its SDP says.
    let fwd = s
        .on_packet(now, a_port, false, sa("10.0.0.10:41000"), &rtp(1), &p)
        .unwrap();
    assert_eq!(
        fwd,
        Forward {
            from_port: 30002,
            to: sa("10.0.0.20:5000")
        }
    );
    // B's packets go back to where A really sends from.
    let back = s
        .on_packet(now, b_port, false, sa("10.0.0.20:5000"), &rtp(9), &p)
        .unwrap();
    assert_eq!(
        back,
        Forward {
            from_port: 30000,
            to: sa("10.0.0.10:41000")
        }
    );
    // A stranger mid-call is never latched, not even from A's IP.
    assert_eq!(
        s.on_packet(now, a_port, false, sa("203.0.113.5:41000"), &rtp(2), &p),
        Err(MediaDrop::NotLatched)
    );
    assert_eq!(
        s.on_packet(now, a_port, false, sa("10.0.0.10:41002"), &rtp(2), &p),
        Err(MediaDrop::NotLatched)
    );
    // RTCP on port+1 goes to the other side's RTCP port.
    let rtcp = s
        .on_packet(
            now,
            a_port,
            true,
            sa("10.0.0.10:41001"),
            &[0x80, 200, 0, 6],
            &p,
        )
        .unwrap();
    assert_eq!(
        rtcp,
        Forward {
            from_port: 30003,
            to: sa("10.0.0.20:5001")
        }
    );
    let (pk, bytes, lost) = s.totals(Leg::A);
    assert_eq!((pk, bytes, lost), (2, 172 + 4, 0));
}

#[test]
fn strangers_cannot_latch_first() {
    let mut p = ports(10);
    let (mut s, ..) = established(&mut p);
    let a_port = p.lookup(30000).unwrap().0;
    assert_eq!(
        s.on_packet(
            Instant::now(),
            a_port,
            false,
            sa("203.0.113.5:4000"),
            &rtp(1),
            &p
        ),
        Err(MediaDrop::NotLatched)
    );
}

#[test]
fn a_new_address_in_a_reoffer_reopens_latching() {
    let mut p = ports(10);
    let (mut s, ..) = established(&mut p);
    let now = Instant::now();
    let a_port = p.lookup(30000).unwrap().0;
    s.on_packet(now, a_port, false, sa("10.0.0.10:4000"), &rtp(1), &p)
        .unwrap();
    // Re-INVITE from A: moved to another host and port (e.g. a transfer).
    let to_b = s
        .process(
            Leg::A,
            Role::Offer,
            sdp("10.0.0.11", 4100, "a=sendonly\r\n").as_bytes(),
            &mut ctx(&mut p, &all),
        )
        .unwrap();
    assert!(String::from_utf8(to_b).unwrap().contains("m=audio 30002 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=sendonly\r\n"), "same ports, hold kept");
    s.process(
        Leg::B,
        Role::Answer,
        sdp(B_IP, 5000, "a=recvonly\r\n").as_bytes(),
        &mut ctx(&mut p, &all),
    )
    .unwrap();
    assert!(
        s.on_packet(now, a_port, false, sa("10.0.0.11:4100"), &rtp(2), &p)
            .is_ok()
    );
    assert_eq!(p.pool.in_use(), 2, "no new ports for a re-offer");
}

#[test]
fn rejected_streams_free_their_ports() {
    let mut p = ports(10);
    let now = Instant::now();
    let mut s = MediaSession::new(now, [A_IP.parse().unwrap(), B_IP.parse().unwrap()]);
    let offer = format!("{}m=video 4002 RTP/AVP 31\r\n", sdp(A_IP, 4000, ""));
    s.process(
        Leg::A,
        Role::Offer,
        offer.as_bytes(),
        &mut ctx(&mut p, &all),
    )
    .unwrap();
    assert_eq!(p.pool.in_use(), 4);
    let answer = format!("{}m=video 0 RTP/AVP 31\r\n", sdp(B_IP, 5000, ""));
    let to_a = String::from_utf8(
        s.process(
            Leg::B,
            Role::Answer,
            answer.as_bytes(),
            &mut ctx(&mut p, &all),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(to_a.contains("m=video 0 RTP/AVP 31\r\n"), "{to_a}");
    assert_eq!(p.pool.in_use(), 2);
    s.release(&mut p);
    assert_eq!(p.pool.in_use(), 0);
    assert_eq!(p.lookup(30000), None);
}

#[test]
fn codec_policy_and_port_exhaustion_refuse_the_offer() {
    let mut p = ports(10);
    let mut s = MediaSession::new(
        Instant::now(),
        [A_IP.parse().unwrap(), B_IP.parse().unwrap()],
    );
    let only_g729 = |m: &Media<'_>, f: &[u8]| m.encoding(f).as_deref() == Some("g729");
    let r = s.process(
        Leg::A,
        Role::Offer,
        sdp(A_IP, 4000, "").as_bytes(),
        &mut ctx(&mut p, &only_g729),
    );
    assert_eq!(r, Err(MediaError::NoCodec));
    assert_eq!(MediaError::NoCodec.status().0, 488);
    assert_eq!(p.pool.in_use(), 0);
    let mut tiny = ports(1);
    let r = s.process(
        Leg::A,
        Role::Offer,
        sdp(A_IP, 4000, "").as_bytes(),
        &mut ctx(&mut tiny, &all),
    );
    assert_eq!(r, Err(MediaError::PoolExhausted));
    assert_eq!(MediaError::PoolExhausted.status().0, 503);
    let pcma = |m: &Media<'_>, f: &[u8]| m.encoding(f).as_deref() == Some("pcma");
    let mut s = MediaSession::new(
        Instant::now(),
        [A_IP.parse().unwrap(), B_IP.parse().unwrap()],
    );
    let out = s
        .process(
            Leg::A,
            Role::Offer,
            sdp(A_IP, 4000, "").as_bytes(),
            &mut ctx(&mut p, &pcma),
        )
        .unwrap();
    assert!(
        String::from_utf8(out)
            .unwrap()
            .contains("m=audio 30002 RTP/AVP 8\r\n")
    );
}

#[test]
fn rtcp_mux_on_one_side_only() {
    let mut p = ports(10);
    let now = Instant::now();
    let mut s = MediaSession::new(now, [A_IP.parse().unwrap(), B_IP.parse().unwrap()]);
    // A offers rtcp-mux; B answers without it.
    let to_b = s
        .process(
            Leg::A,
            Role::Offer,
            sdp(A_IP, 4000, "a=rtcp-mux\r\n").as_bytes(),
            &mut ctx(&mut p, &all),
        )
        .unwrap();
    assert!(String::from_utf8(to_b).unwrap().contains("a=rtcp-mux\r\n"));
    let to_a = s
        .process(
            Leg::B,
            Role::Answer,
            sdp(B_IP, 5000, "").as_bytes(),
            &mut ctx(&mut p, &all),
        )
        .unwrap();
    assert!(
        String::from_utf8(to_a).unwrap().contains("a=rtcp-mux\r\n"),
        "accepted towards A"
    );
    let a_port = p.lookup(30000).unwrap().0;
    let b_port = p.lookup(30003).unwrap().0;
    s.on_packet(now, a_port, false, sa("10.0.0.10:4000"), &rtp(1), &p)
        .unwrap();
    // A's muxed RTCP goes to B's separate RTCP port.
    let f = s
        .on_packet(
            now,
            a_port,
            false,
            sa("10.0.0.10:4000"),
            &[0x80, 201, 0, 1],
            &p,
        )
        .unwrap();
    assert_eq!(
        f,
        Forward {
            from_port: 30003,
            to: sa("10.0.0.20:5001")
        }
    );
    // B's RTCP goes to A's RTP port (muxed), from our RTP port.
    let f = s
        .on_packet(
            now,
            b_port,
            true,
            sa("10.0.0.20:5001"),
            &[0x80, 200, 0, 1],
            &p,
        )
        .unwrap();
    assert_eq!(
        f,
        Forward {
            from_port: 30000,
            to: sa("10.0.0.10:4000")
        }
    );
}

#[test]
fn no_destination_before_the_answer() {
    let mut p = ports(10);
    let mut s = MediaSession::new(
        Instant::now(),
        [A_IP.parse().unwrap(), B_IP.parse().unwrap()],
    );
    s.process(
        Leg::A,
        Role::Offer,
        sdp(A_IP, 4000, "").as_bytes(),
        &mut ctx(&mut p, &all),
    )
    .unwrap();
    let a_port = p.lookup(30000).unwrap().0;
    assert_eq!(
        s.on_packet(
            Instant::now(),
            a_port,
            false,
            sa("10.0.0.10:4000"),
            &rtp(1),
            &p
        ),
        Err(MediaDrop::NoDestination)
    );
}

#[test]
fn too_many_streams_are_refused_before_any_port_is_taken() {
    let mut p = ports(100);
    let mut s = MediaSession::new(Instant::now(), [A_IP.parse().unwrap(); 2]);
    let mut body = format!("v=0\r\no=- 1 1 IN IP4 {A_IP}\r\ns=-\r\nc=IN IP4 {A_IP}\r\nt=0 0\r\n");
    for i in 0..=MAX_STREAMS {
        body.push_str(&format!("m=audio {} RTP/AVP 0\r\n", 4000 + 2 * i));
    }
    let r = s.process(Leg::A, Role::Offer, body.as_bytes(), &mut ctx(&mut p, &all));
    assert_eq!(r, Err(MediaError::TooManyStreams));
    assert_eq!(r.unwrap_err().status().0, 488);
    assert_eq!(p.pool.in_use(), 0);
}

#[test]
fn port_counts_multicast_and_loops_are_not_relayed() {
    let mut p = ports(10);
    let mut s = MediaSession::new(Instant::now(), [A_IP.parse().unwrap(); 2]);
    // m=audio 4000/2: two port pairs the SBC does not have: rejected.
    let two = sdp(A_IP, 4000, "").replace("m=audio 4000 ", "m=audio 4000/2 ");
    let r = s.process(Leg::A, Role::Offer, two.as_bytes(), &mut ctx(&mut p, &all));
    assert_eq!(r, Err(MediaError::NoCodec), "its only stream is unusable");
    assert_eq!(p.pool.in_use(), 0);
    let multicast = sdp("224.0.0.9", 4000, "");
    let r = s.process(
        Leg::A,
        Role::Offer,
        multicast.as_bytes(),
        &mut ctx(&mut p, &all),
    );
    assert_eq!(r, Err(MediaError::BadAddress));
    // An IPv6 peer for an IPv4 relay.
    let v6 = sdp(A_IP, 4000, "").replace("c=IN IP4 10.0.0.10", "c=IN IP6 2001:db8::1");
    let r = s.process(Leg::A, Role::Offer, v6.as_bytes(), &mut ctx(&mut p, &all));
    assert_eq!(r, Err(MediaError::BadAddress));
    // The SBC's own advertised address and a port of its range: a loop.
    let own = sdp("192.0.2.1", 30004, "");
    let r = s.process(Leg::A, Role::Offer, own.as_bytes(), &mut ctx(&mut p, &all));
    assert_eq!(r, Err(MediaError::BadAddress));
    // RTCP (RFC 3605) sent where media may not go: loopback, a loop to
    // the relay, multicast; a fine c= line does not excuse it.
    for rtcp in [
        "a=rtcp:9 IN IP4 127.0.0.1\r\n",
        "a=rtcp:30005 IN IP4 192.0.2.1\r\n",
        "a=rtcp:4001 IN IP4 224.0.0.9\r\n",
    ] {
        let offer = sdp(A_IP, 4000, rtcp);
        assert!(offer.contains(rtcp), "{offer}");
        let r = s.process(
            Leg::A,
            Role::Offer,
            offer.as_bytes(),
            &mut ctx(&mut p, &all),
        );
        assert_eq!(r, Err(MediaError::BadAddress), "{rtcp}");
    }
    // An IPv4-mapped IPv6 address: say the IPv4 one.
    let mapped = sdp(A_IP, 4000, "").replace("c=IN IP4 10.0.0.10", "c=IN IP6 ::ffff:10.0.0.10");
    let mut c = ctx(&mut p, &all);
    c.dual_stack = true;
    let r = s.process(Leg::A, Role::Offer, mapped.as_bytes(), &mut c);
    assert_eq!(r, Err(MediaError::BadAddress));
    assert_eq!(p.pool.in_use(), 0);
    // A plain a=rtcp port on the c= address is fine.
    let fine = sdp(A_IP, 4000, "a=rtcp:4001\r\n");
    let r = s.process(Leg::A, Role::Offer, fine.as_bytes(), &mut ctx(&mut p, &all));
    assert!(r.is_ok(), "{r:?}");
}

#[test]
fn a_refused_reoffer_leaves_the_streams_alone() {
    let mut p = ports(10);
    let (mut s, ..) = established(&mut p);
    // A T.38 re-offer where no trunk allows t38: 488, and G.711 goes on.
    let t38 = format!(
        "v=0\r\no=- 1 2 IN IP4 {A_IP}\r\ns=-\r\nc=IN IP4 {A_IP}\r\nt=0 0\r\nm=image 4002 udptl t38\r\n"
    );
    let no_t38 = |m: &Media<'_>, _: &[u8]| !m.proto.eq_ignore_ascii_case(b"udptl");
    let r = s.process(
        Leg::A,
        Role::Offer,
        t38.as_bytes(),
        &mut ctx(&mut p, &no_t38),
    );
    assert_eq!(r, Err(MediaError::NoCodec));
    assert_eq!(p.pool.in_use(), 2, "the audio stream keeps its ports");
    assert!(s.streams[0].ends.iter().all(|e| e.pair.is_some()));
    assert_eq!(s.streams[0].ends[0].sdp_rtp, Some(sa("10.0.0.10:4000")));
}

#[test]
fn media_relayed_while_a_reoffer_is_pending_stays_counted_after_rollback() {
    let mut p = ports(10);
    let (mut s, ..) = established(&mut p);
    let now = Instant::now();
    let a_port = p.lookup(30000).unwrap().0;
    let b_port = p.lookup(30002).unwrap().0;
    s.on_packet(now, a_port, false, sa("10.0.0.10:4000"), &rtp(1), &p)
        .unwrap();
    // A re-offers a new port; until the answer, both sides go on sending.
    s.stage();
    s.process(
        Leg::A,
        Role::Offer,
        sdp(A_IP, 4010, "").as_bytes(),
        &mut ctx(&mut p, &all),
    )
    .unwrap();
    for seq in 10..13 {
        s.on_packet(now, b_port, false, sa("10.0.0.20:5000"), &rtp(seq), &p)
            .unwrap();
    }
    s.on_packet(now, a_port, false, sa("10.0.0.10:4010"), &rtp(2), &p)
        .unwrap();
    // Refused: A's SDP address is the old one again, the packets stay.
    s.rollback(&mut p);
    assert_eq!(s.streams[0].ends[0].sdp_rtp, Some(sa("10.0.0.10:4000")));
    assert_eq!(s.totals(Leg::A).0, 2);
    assert_eq!(s.totals(Leg::B).0, 3);
    assert_eq!(p.pool.in_use(), 2);
}

#[test]
fn exhaustion_is_found_before_allocating() {
    let mut p = ports(3);
    let mut s = MediaSession::new(Instant::now(), [A_IP.parse().unwrap(); 2]);
    let two_streams = format!(
        "{}m=video 4002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n",
        sdp(A_IP, 4000, "")
    );
    let r = s.process(
        Leg::A,
        Role::Offer,
        two_streams.as_bytes(),
        &mut ctx(&mut p, &all),
    );
    assert_eq!(r, Err(MediaError::PoolExhausted));
    assert_eq!(p.pool.in_use(), 0, "nothing half-allocated");
}

#[test]
fn hold_with_a_null_address_sends_nothing_and_counts_as_hold() {
    let mut p = ports(10);
    let (mut s, ..) = established(&mut p);
    assert!(!s.on_hold());
    let hold = sdp("0.0.0.0", 4000, "");
    s.process(Leg::A, Role::Offer, hold.as_bytes(), &mut ctx(&mut p, &all))
        .unwrap();
    assert!(s.on_hold());
    let b_port = p.lookup(30002).unwrap().0;
    assert_eq!(
        s.on_packet(
            Instant::now(),
            b_port,
            false,
            sa("10.0.0.20:5000"),
            &rtp(1),
            &p
        ),
        Err(MediaDrop::NoDestination),
        "never towards 0.0.0.0"
    );
    // a=sendonly is hold too; sendrecv again is not.
    s.process(
        Leg::A,
        Role::Offer,
        sdp(A_IP, 4000, "a=sendonly\r\n").as_bytes(),
        &mut ctx(&mut p, &all),
    )
    .unwrap();
    assert!(s.on_hold());
    s.process(
        Leg::A,
        Role::Offer,
        sdp(A_IP, 4000, "a=sendrecv\r\n").as_bytes(),
        &mut ctx(&mut p, &all),
    )
    .unwrap();
    assert!(!s.on_hold());
}

#[test]
fn a_new_sdp_lets_a_moved_peer_latch_again_once() {
    let mut p = ports(10);
    let (mut s, ..) = established(&mut p);
    let now = Instant::now();
    let a_port = p.lookup(30000).unwrap().0;
    let a_rtcp = p.lookup(30001).unwrap().0;
    s.on_packet(now, a_port, false, sa("10.0.0.10:41000"), &rtp(1), &p)
        .unwrap();
    s.on_packet(
        now,
        a_rtcp,
        true,
        sa("10.0.0.10:41001"),
        &[0x80, 200, 0, 6],
        &p,
    )
    .unwrap();
    // Without new SDP, another port of A's IP is refused.
    assert_eq!(
        s.on_packet(now, a_port, false, sa("10.0.0.10:52000"), &rtp(2), &p),
        Err(MediaDrop::NotLatched)
    );
    // Same SDP again (a re-INVITE after hold, behind a NAT that moved).
    s.process(
        Leg::A,
        Role::Offer,
        sdp(A_IP, 4000, "").as_bytes(),
        &mut ctx(&mut p, &all),
    )
    .unwrap();
    assert!(
        s.on_packet(now, a_port, false, sa("10.0.0.10:52000"), &rtp(3), &p)
            .is_ok()
    );
    // Once moved, the old source is a stranger.
    assert_eq!(
        s.on_packet(now, a_port, false, sa("10.0.0.10:41000"), &rtp(4), &p),
        Err(MediaDrop::NotLatched)
    );
}

#[test]
fn another_callee_device_takes_the_latch_from_the_one_before() {
    // Two phones behind one NAT: the first one's early media latched the
    // callee side; the other phone answers with its own SDP. Packets the
    // first still has in flight (RTP or RTCP) must not take the latch.
    let mut p = ports(10);
    let (mut s, ..) = established(&mut p);
    let now = Instant::now();
    let b_port = p.lookup(30002).unwrap().0;
    let b_rtcp = p.lookup(30003).unwrap().0;
    s.on_packet(now, b_port, false, sa("10.0.0.20:61000"), &rtp(1), &p)
        .unwrap();
    s.another_peer(Leg::B);
    s.process(
        Leg::B,
        Role::Answer,
        sdp(B_IP, 5200, "").as_bytes(),
        &mut ctx(&mut p, &all),
    )
    .unwrap();
    assert_eq!(
        s.on_packet(now, b_port, false, sa("10.0.0.20:61000"), &rtp(2), &p),
        Err(MediaDrop::NotLatched)
    );
    assert_eq!(
        s.on_packet(
            now,
            b_rtcp,
            true,
            sa("10.0.0.20:61001"),
            &[0x80, 200, 0, 6],
            &p
        )
        .map(|_| ()),
        Err(MediaDrop::NotLatched)
    );
    assert!(
        s.on_packet(now, b_port, false, sa("10.0.0.20:62000"), &rtp(3), &p)
            .is_ok(),
        "the phone that answered latches"
    );
    assert_eq!(
        s.on_packet(now, b_port, false, sa("10.0.0.20:61000"), &rtp(4), &p),
        Err(MediaDrop::NotLatched)
    );
}

#[test]
fn a_new_callee_gets_fresh_ports_and_nothing_of_the_old_one() {
    let mut p = ports(10);
    let (mut s, ..) = established(&mut p);
    let old_b = s.streams[0].ends[1].pair;
    s.reset_leg(Leg::B, &mut p);
    assert_eq!(p.pool.in_use(), 1);
    assert!(s.streams[0].ends[1].sdp_rtp.is_none());
    // The caller's offer is processed again for the next trunk.
    s.process(
        Leg::A,
        Role::Offer,
        sdp(A_IP, 4000, "").as_bytes(),
        &mut ctx(&mut p, &all),
    )
    .unwrap();
    assert_ne!(
        s.streams[0].ends[1].pair, old_b,
        "not the old callee's pair"
    );
    let a_port = p.lookup(30000).unwrap().0;
    assert_eq!(
        s.on_packet(
            Instant::now(),
            a_port,
            false,
            sa("10.0.0.10:4000"),
            &rtp(1),
            &p
        ),
        Err(MediaDrop::NoDestination),
        "nothing goes to the old callee"
    );
}

#[test]
fn the_sbc_writes_its_own_origin_and_versions_it() {
    let mut p = ports(10);
    let mut s = MediaSession::new(
        Instant::now(),
        [A_IP.parse().unwrap(), B_IP.parse().unwrap()],
    );
    let offer = sdp(A_IP, 4000, "").replace("o=- 1 1 ", "o=alice 777 5 ");
    let out = |s: &mut MediaSession, p: &mut MediaPorts, body: &str| {
        String::from_utf8(
            s.process(Leg::A, Role::Offer, body.as_bytes(), &mut ctx(p, &all))
                .unwrap(),
        )
        .unwrap()
    };
    let origin = |b: &str| b.lines().find(|l| l.starts_with("o=")).unwrap().to_string();
    let first = out(&mut s, &mut p, &offer);
    let o1 = origin(&first);
    assert!(
        o1.starts_with("o=- ") && o1.ends_with(" 1 IN IP4 192.0.2.1"),
        "{o1}"
    );
    assert!(
        !first.contains("alice") && !first.contains(" 777 "),
        "{first}"
    );
    // The same offer again (a session refresh): same version.
    let again = out(&mut s, &mut p, &offer.replace("777 5", "777 6"));
    assert_eq!(origin(&again), o1);
    // A change (hold): the version goes up, the id stays.
    let held = out(&mut s, &mut p, &format!("{offer}a=sendonly\r\n"));
    let o2 = origin(&held);
    assert!(o2.ends_with(" 2 IN IP4 192.0.2.1"), "{o2}");
    assert_eq!(o1.split(' ').nth(1), o2.split(' ').nth(1));
}

#[test]
fn a_strict_side_is_latched_only_at_its_sdp_address() {
    let mut p = ports(10);
    let now = Instant::now();
    let mut s = MediaSession::new(now, [A_IP.parse().unwrap(), B_IP.parse().unwrap()]);
    for (leg, role, ip, port) in [
        (Leg::A, Role::Offer, A_IP, 4000),
        (Leg::B, Role::Answer, B_IP, 5000),
    ] {
        let mut c = ctx(&mut p, &all);
        c.strict = [true, false];
        s.process(leg, role, sdp(ip, port, "").as_bytes(), &mut c)
            .unwrap();
    }
    let a_port = p.lookup(30000).unwrap().0;
    let b_port = p.lookup(30002).unwrap().0;
    // A's own IP but another port (what a NAT would do): refused.
    assert_eq!(
        s.on_packet(now, a_port, false, sa("10.0.0.10:41000"), &rtp(1), &p),
        Err(MediaDrop::NotLatched)
    );
    // Exactly the SDP address: latched.
    assert_eq!(
        s.on_packet(now, a_port, false, sa("10.0.0.10:4000"), &rtp(2), &p)
            .unwrap()
            .to,
        sa("10.0.0.20:5000")
    );
    // RTCP only from the SDP's RTCP port (4001).
    assert_eq!(
        s.on_packet(
            now,
            a_port,
            true,
            sa("10.0.0.10:4003"),
            &[0x80, 200, 0, 1],
            &p
        ),
        Err(MediaDrop::NotLatched)
    );
    assert!(
        s.on_packet(
            now,
            a_port,
            true,
            sa("10.0.0.10:4001"),
            &[0x80, 200, 0, 1],
            &p
        )
        .is_ok()
    );
    // The other side is not strict: B may come from another port.
    assert_eq!(
        s.on_packet(now, b_port, false, sa("10.0.0.20:6000"), &rtp(1), &p)
            .unwrap()
            .to,
        sa("10.0.0.10:4000")
    );
}

/// BRIEF §8: SDP may not aim relayed media at loopback, link-local or the
/// SBC's own addresses unless they lie within the sending trunk's own
/// networks; nor at private ranges from a public trunk; c=0.0.0.0 is hold.
#[test]
fn media_destinations_outside_the_senders_networks_are_refused() {
    let home: Vec<ipnet::IpNet> = vec!["127.0.0.10/32".parse().unwrap()];
    let cases: [(&str, bool, bool); 9] = [
        ("127.0.0.1", false, false),
        ("127.0.0.10", false, true),
        ("169.254.1.1", false, false),
        ("192.0.2.1", false, false),
        ("0.0.0.0", false, true),
        ("10.1.1.1", false, true),
        ("10.1.1.1", true, false),
        ("100.64.0.1", true, false),
        ("203.0.113.5", true, true),
    ];
    for (ip, public, accepted) in cases {
        let mut p = ports(8);
        let mut c = ctx(&mut p, &all);
        c.home = [&home, &[]];
        c.public = [public, false];
        let mut s = MediaSession::new(
            Instant::now(),
            [A_IP.parse().unwrap(), B_IP.parse().unwrap()],
        );
        let out = s.process(Leg::A, Role::Offer, sdp(ip, 4000, "").as_bytes(), &mut c);
        assert_eq!(out.is_ok(), accepted, "{ip} public={public}: {out:?}");
        if !accepted {
            assert_eq!(out.err(), Some(MediaError::BadAddress));
        }
    }
}

#[test]
fn too_many_payload_types_are_refused() {
    let mut p = ports(8);
    let mut c = ctx(&mut p, &all);
    let fmts: Vec<String> = (0..40).map(|n| (96 + n).to_string()).collect();
    let body = format!(
        "v=0\r\no=- 1 1 IN IP4 {A_IP}\r\ns=-\r\nc=IN IP4 {A_IP}\r\nt=0 0\r\nm=audio 4000 RTP/AVP {}\r\n",
        fmts.join(" ")
    );
    let mut s = MediaSession::new(
        Instant::now(),
        [A_IP.parse().unwrap(), B_IP.parse().unwrap()],
    );
    assert_eq!(
        s.process(Leg::A, Role::Offer, body.as_bytes(), &mut c)
            .err(),
        Some(MediaError::TooManyFormats)
    );
}
