//! Golden tests: SDP in, expected SDP out.
use super::*;

fn crlf(s: &str) -> String {
    s.lines()
        .map(str::trim_start)
        .filter(|l| !l.is_empty())
        .map(|l| format!("{l}\r\n"))
        .collect()
}

fn all(_: &Media<'_>, _: &[u8]) -> bool {
    true
}

const OFFER: &str = "v=0
    o=pbx 2890844526 2890844526 IN IP4 10.0.0.10
    s=-
    c=IN IP4 10.0.0.10
    t=0 0
    m=audio 4000 RTP/AVP 0 8 101
    a=rtpmap:0 PCMU/8000
    a=rtpmap:8 PCMA/8000
    a=rtpmap:101 telephone-event/8000
    a=fmtp:101 0-15
    a=rtcp:4001
    a=ptime:20
    a=sendrecv
";

fn ip() -> IpAddr {
    "192.0.2.1".parse().unwrap()
}

fn anchor(port: u16) -> Anchor {
    Anchor {
        port,
        rtcp_mux: false,
    }
}

/// Our `o=` session id and version in these tests.
const ORIGIN: (u64, u64) = (1, 1);

#[test]
fn offer_points_at_the_sbc_and_keeps_the_rest() {
    let body = crlf(OFFER);
    let sdp = Sdp::parse(body.as_bytes()).unwrap();
    assert_eq!(sdp.connection(0), Some("10.0.0.10".parse().unwrap()));
    assert_eq!(sdp.media[0].port, 4000);
    let out = rewrite(&sdp, ip(), &[anchor(30000)], &all, ORIGIN);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        crlf(
            "v=0
            o=- 1 1 IN IP4 192.0.2.1
            s=-
            c=IN IP4 192.0.2.1
            t=0 0
            m=audio 30000 RTP/AVP 0 8 101
            a=rtpmap:0 PCMU/8000
            a=rtpmap:8 PCMA/8000
            a=rtpmap:101 telephone-event/8000
            a=fmtp:101 0-15
            a=ptime:20
            a=sendrecv
        "
        )
    );
}

#[test]
fn codec_filter_drops_formats_and_their_attributes() {
    let body = crlf(OFFER);
    let sdp = Sdp::parse(body.as_bytes()).unwrap();
    let keep = |m: &Media<'_>, f: &[u8]| {
        matches!(m.encoding(f).as_deref(), Some("pcma" | "telephone-event"))
    };
    let out = String::from_utf8(rewrite(&sdp, ip(), &[anchor(30000)], &keep, ORIGIN)).unwrap();
    assert!(out.contains("m=audio 30000 RTP/AVP 8 101\r\n"), "{out}");
    assert!(!out.contains("a=rtpmap:0 "));
    assert!(out.contains("a=fmtp:101 0-15\r\n"));
    // Nothing left: the stream is rejected with port 0 (RFC 3264 §6).
    let none = |_: &Media<'_>, _: &[u8]| false;
    let out = String::from_utf8(rewrite(&sdp, ip(), &[anchor(30000)], &none, ORIGIN)).unwrap();
    assert!(out.contains("m=audio 0 RTP/AVP 0\r\n"), "{out}");
}

#[test]
fn rejected_streams_stay_rejected_and_video_is_anchored_too() {
    let body = crlf(
        "v=0
        o=- 1 1 IN IP4 10.0.0.20
        s=-
        t=0 0
        m=audio 5000 RTP/AVP 0
        c=IN IP4 10.0.0.20
        a=rtpmap:0 PCMU/8000
        m=video 0 RTP/AVP 31
        c=IN IP4 10.0.0.20
        m=video 5002 RTP/AVP 96
        c=IN IP4 10.0.0.21
        a=rtpmap:96 H264/90000
        a=fmtp:96 profile-level-id=42e01f
    ",
    );
    let sdp = Sdp::parse(body.as_bytes()).unwrap();
    assert_eq!(sdp.connection(2), Some("10.0.0.21".parse().unwrap()));
    let out = rewrite(
        &sdp,
        ip(),
        &[anchor(30000), anchor(0), anchor(30004)],
        &all,
        ORIGIN,
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        crlf(
            "v=0
            o=- 1 1 IN IP4 192.0.2.1
            s=-
            t=0 0
            m=audio 30000 RTP/AVP 0
            c=IN IP4 192.0.2.1
            a=rtpmap:0 PCMU/8000
            m=video 0 RTP/AVP 31
            c=IN IP4 192.0.2.1
            m=video 30004 RTP/AVP 96
            c=IN IP4 192.0.2.1
            a=rtpmap:96 H264/90000
            a=fmtp:96 profile-level-id=42e01f
        "
        )
    );
}

#[test]
fn ice_goes_rtcp_mux_follows_the_anchor_and_ipv6_becomes_ipv4() {
    let body = crlf(
        "v=0
        o=- 7 2 IN IP6 2001:db8::5
        s=-
        c=IN IP6 2001:db8::5
        t=0 0
        a=ice-lite
        m=audio 6000 UDP/TLS/RTP/SAVPF 111
        a=rtpmap:111 opus/48000/2
        a=ice-ufrag:abcd
        a=ice-pwd:secretsecretsecret
        a=candidate:1 1 udp 2130706431 2001:db8::5 6000 typ host
        a=end-of-candidates
        a=rtcp-mux
        a=sendonly
    ",
    );
    let sdp = Sdp::parse(body.as_bytes()).unwrap();
    assert!(sdp.media[0].has_attr(b"rtcp-mux"));
    let a = Anchor {
        port: 30010,
        rtcp_mux: true,
    };
    let out = rewrite(&sdp, ip(), &[a], &all, ORIGIN);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        crlf(
            "v=0
            o=- 1 1 IN IP4 192.0.2.1
            s=-
            c=IN IP4 192.0.2.1
            t=0 0
            m=audio 30010 UDP/TLS/RTP/SAVPF 111
            a=rtpmap:111 opus/48000/2
            a=sendonly
            a=rtcp-mux
        "
        )
    );
}

#[test]
fn t38_fax_over_udptl_is_anchored_and_filterable_by_name() {
    let body = crlf(
        "v=0
        o=- 1 2 IN IP4 10.0.0.10
        s=-
        c=IN IP4 10.0.0.10
        t=0 0
        m=image 4002 udptl t38
        a=T38FaxVersion:0
        a=T38FaxRateManagement:transferredTCF
    ",
    );
    let sdp = Sdp::parse(body.as_bytes()).unwrap();
    assert_eq!(sdp.media[0].encoding(b"t38").as_deref(), Some("t38"));
    let out = String::from_utf8(rewrite(&sdp, ip(), &[anchor(30020)], &all, ORIGIN)).unwrap();
    assert!(
        out.contains("m=image 30020 udptl t38\r\na=T38FaxVersion:0\r\n"),
        "{out}"
    );
    assert!(!out.contains("rtcp"), "no RTCP for udptl");
}

#[test]
fn no_rtcp_attribute_our_rtcp_is_on_the_next_port() {
    let body = crlf(OFFER);
    let sdp = Sdp::parse(body.as_bytes()).unwrap();
    let out = String::from_utf8(rewrite(&sdp, ip(), &[anchor(30000)], &all, ORIGIN)).unwrap();
    assert!(!out.contains("a=rtcp"), "{out}");
}

#[test]
fn malformed_sdp_is_refused() {
    assert_eq!(
        Sdp::parse(b"o=- 1 1 IN IP4 x\r\n").unwrap_err(),
        SdpError::Version
    );
    assert_eq!(
        Sdp::parse(b"v=0\r\nm=audio x RTP/AVP 0\r\n").unwrap_err(),
        SdpError::MediaLine
    );
    assert_eq!(
        Sdp::parse(b"v=0\r\nm=audio 4000 RTP/AVP\r\n").unwrap_err(),
        SdpError::MediaLine
    );
    assert_eq!(
        Sdp::parse(b"v=0\r\nc=IN IP4 not-an-ip\r\n").unwrap_err(),
        SdpError::Connection
    );
    assert_eq!(Sdp::parse(b"v=0\r\nbogus\r\n").unwrap_err(), SdpError::Line);
    assert_eq!(Sdp::parse(b"").unwrap_err(), SdpError::Version);
}

#[test]
fn each_section_takes_its_own_first_connection_or_the_sessions() {
    let body = crlf(
        "v=0
        c=IN IP4 192.0.2.1
        m=audio 4000 RTP/AVP 0
        c=IN  IP4\t192.0.2.2/127
        c=IN IP4 192.0.2.3
        m=video 4002 RTP/AVP 31
        m=audio 4004 RTP/AVP 0
        c=IN IP6 2001:db8::1
    ",
    );
    let sdp = Sdp::parse(body.as_bytes()).unwrap();
    let ip = |s: &str| s.parse::<IpAddr>().ok();
    assert_eq!(
        sdp.connection(0),
        ip("192.0.2.2"),
        "runs of white space, TTL cut"
    );
    assert_eq!(sdp.connection(1), ip("192.0.2.1"), "the session's");
    assert_eq!(sdp.connection(2), ip("2001:db8::1"));
    assert_eq!(sdp.connection(3), None, "no such section");
    // Without a session c= a section without its own has none.
    let body = crlf(
        "v=0
        m=audio 4000 RTP/AVP 0
    ",
    );
    assert_eq!(Sdp::parse(body.as_bytes()).unwrap().connection(0), None);
    // A later malformed c= is refused even when an earlier one was fine,
    // and so is one whose fields are not UTF-8 (RFC 4566 §5).
    for bad in [
        &b"v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 1 RTP/AVP 0\r\nc=IN IP4 x\r\n"[..],
        b"v=0\r\nc=IN \xff 192.0.2.1\r\n",
        b"v=0\r\nc=IN IP4\r\n",
    ] {
        assert_eq!(Sdp::parse(bad).unwrap_err(), SdpError::Connection);
    }
    // Other UTF-8 text in a field is allowed; the address is what counts.
    let sdp = Sdp::parse("v=0\r\nc=IN IP4\u{e9} 192.0.2.9\r\nm=audio 1 RTP/AVP 0\r\n".as_bytes())
        .unwrap();
    assert_eq!(sdp.connection(0), ip("192.0.2.9"));
}

#[test]
fn static_and_dynamic_encodings() {
    let body = crlf(
        "v=0
        m=audio 1 RTP/AVP 0 18 97 13
        a=rtpmap:97 iLBC/8000
    ",
    );
    let sdp = Sdp::parse(body.as_bytes()).unwrap();
    let m = &sdp.media[0];
    let names: Vec<_> = m.fmts.iter().map(|f| m.encoding(f)).collect();
    assert_eq!(
        names,
        vec![
            Some("pcmu".into()),
            Some("g729".into()),
            Some("ilbc".into()),
            Some("cn".into())
        ]
    );
}
