//! End-to-end: IPv6 and IPv4 on one SBC. A PBX on IPv6 (::1) calls a
//! carrier on IPv4 and the carrier calls it back; each leg's SDP is in
//! that leg's family (the relay listens on both: `media.listen` holds an
//! IPv4 and an IPv6 address), and RTP flows both ways across the
//! families.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::*;

/// A UDP peer (SIP or RTP) at `at`.
struct Udp(UdpSocket);

impl Udp {
    fn bind(at: &str) -> Udp {
        let s = UdpSocket::bind(at).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Udp(s)
    }

    fn send(&self, to: &str, data: &[u8]) {
        self.0.send_to(data, to).unwrap();
    }

    /// The next datagram satisfying `want` within 10 s.
    fn wait(&self, what: &str, want: impl Fn(&[u8]) -> bool) -> (Vec<u8>, SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            if let Ok((n, from)) = self.0.recv_from(&mut buf)
                && want(&buf[..n])
            {
                return (buf[..n].to_vec(), from);
            }
        }
        panic!("no {what} within 10 s");
    }

    fn wait_sip(&self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let (m, _) = self.wait(what, |b| want(&String::from_utf8_lossy(b)));
        String::from_utf8(m).unwrap()
    }
}

/// An SDP body with media at `ip:port`, in the address's family.
fn sdp_at(ip: &str, port: u16) -> String {
    let family = if ip.contains(':') { "IP6" } else { "IP4" };
    format!(
        "v=0\r\no=- 1 1 IN {family} {ip}\r\ns=-\r\nc=IN {family} {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n"
    )
}

fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0xd5; 160]);
    p
}

fn request(
    method: &str,
    uri: &str,
    via: &str,
    (from, to): (&str, &str),
    call_id: &str,
    cseq: u32,
    body: &str,
) -> String {
    let ctype = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/sdp\r\n".to_owned()
    };
    format!(
        "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bK{call_id}{cseq}{method}\r\nMax-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:x@{via}>\r\n{ctype}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn to_header(msg: &str) -> String {
    header(msg, "To").unwrap().to_owned()
}

/// An SBC listening on this test's IPv4 address (UDP) and on `listen6`,
/// relaying media on both families (`ports`), with a PBX trunk on ::1
/// (reached at `pbx6` over `pbx_transport`) and carrier-a on IPv4: the
/// PBX's calls go to the carrier, the carrier's +39 numbers to the PBX.
fn v6_config(net: Net, listen6: &str, pbx6: &str, ports: &str, pbx_transport: &str) -> String {
    format!(
        r#"
[sip]
listen = ["{sbc4}", "{listen6}"]

[metrics]
listen = "{metrics}"

[media]
listen = ["{ip1}", "::1"]
ports = "{ports}"

[[trunks]]
name = "pbx6"
sources = ["::1"]
address = "{pbx6}"
transport = "{pbx_transport}"

[[trunks]]
name = "carrier"
sources = ["{carrier_ip}"]
address = "{carrier_ip}:5060"

[[routes]]
name = "out"
from = ["pbx6"]
numbers = ["*"]
targets = [{{ trunk = "carrier" }}]

[[dids]]
numbers = ["+39*"]
from = ["carrier"]
trunk = "pbx6"

[shards]
count = 2
pin_threads = false
"#,
        sbc4 = net.sbc(),
        metrics = net.metrics(),
        ip1 = net.ip(1),
        carrier_ip = net.carrier_a(),
    )
}

#[test]
fn an_ipv6_pbx_calls_an_ipv4_carrier_and_back_each_leg_in_its_own_family() {
    let net = Net(141);
    // Ports on ::1 (shared by every test) are this test's own.
    let sbc6 = "[::1]:15141";
    let pbx6 = "[::1]:15241";
    let carrier = format!("{}:5060", net.carrier_a());
    let config = v6_config(net, sbc6, pbx6, "25000-25099", "udp");
    let sbc = Sbc::start(net, &config);
    let pbx = Udp::bind(pbx6);
    let pbx_rtp = Udp::bind("[::1]:45141");
    let car = Udp::bind(&carrier);
    let car_rtp = Udp::bind(&format!("{}:45241", net.carrier_a()));

    // IPv6 PBX -> IPv4 carrier.
    let offer = sdp_at("::1", 45141);
    let invite = request(
        "INVITE",
        &format!("sip:+390612345678@{sbc6}"),
        pbx6,
        (
            &format!("<sip:100@{pbx6}>;tag=p6"),
            &format!("<sip:+390612345678@{sbc6}>"),
        ),
        "v6-out",
        1,
        &offer,
    );
    pbx.send(sbc6, invite.as_bytes());
    let b_invite = car.wait_sip("INVITE at the carrier", |m| m.starts_with("INVITE "));
    let (c, b_port) = sdp_connection(&b_invite);
    assert_eq!(
        c,
        format!("IN IP4 {}", net.ip(1)),
        "{b_invite}\n{}",
        sbc.log()
    );
    assert!(
        !b_invite.contains("::1"),
        "no IPv6 address on the IPv4 leg: {b_invite}"
    );
    let answer = sdp_at(&net.carrier_a(), 45241);
    let ok = respond(
        &b_invite,
        200,
        "OK",
        "car1",
        &format!("Contact: <sip:c@{carrier}>\r\nContent-Type: application/sdp\r\n"),
        &answer,
    );
    car.send(&format!("{}:5060", net.ip(1)), ok.as_bytes());
    let a_ok = pbx.wait_sip("200 at the PBX", |m| m.starts_with("SIP/2.0 200"));
    let (c, a_port) = sdp_connection(&a_ok);
    assert_eq!(c, "IN IP6 ::1", "{a_ok}\n{}", sbc.log());
    let ack = request(
        "ACK",
        &format!("sip:+390612345678@{sbc6}"),
        pbx6,
        (&format!("<sip:100@{pbx6}>;tag=p6"), &to_header(&a_ok)),
        "v6-out",
        1,
        "",
    );
    pbx.send(sbc6, ack.as_bytes());
    car.wait_sip("ACK at the carrier", |m| m.starts_with("ACK "));

    // RTP across the families, both ways.
    pbx_rtp.send(&format!("[::1]:{a_port}"), &rtp(1));
    let (_, from) = car_rtp.wait("RTP at the carrier", |b| b.len() == 172);
    assert_eq!(from, format!("{}:{b_port}", net.ip(1)).parse().unwrap());
    car_rtp.send(&format!("{}:{b_port}", net.ip(1)), &rtp(2));
    let (_, from) = pbx_rtp.wait("RTP at the PBX", |b| b.len() == 172);
    assert_eq!(from, format!("[::1]:{a_port}").parse().unwrap());

    let bye = request(
        "BYE",
        &format!("sip:+390612345678@{sbc6}"),
        pbx6,
        (&format!("<sip:100@{pbx6}>;tag=p6"), &to_header(&a_ok)),
        "v6-out",
        2,
        "",
    );
    pbx.send(sbc6, bye.as_bytes());
    let b_bye = car.wait_sip("BYE at the carrier", |m| m.starts_with("BYE "));
    car.send(
        &format!("{}:5060", net.ip(1)),
        respond(&b_bye, 200, "OK", "car1", "", "").as_bytes(),
    );
    pbx.wait_sip("200 to the BYE", |m| m.contains("CSeq: 2 BYE"));

    // IPv4 carrier -> IPv6 PBX.
    let offer = sdp_at(&net.carrier_a(), 45241);
    let invite = request(
        "INVITE",
        &format!("sip:+390299999@{}", net.sbc()),
        &carrier,
        (
            &format!("<sip:+3906555@{carrier}>;tag=c4"),
            &format!("<sip:+390299999@{}>", net.sbc()),
        ),
        "v4-in",
        1,
        &offer,
    );
    car.send(&net.sbc(), invite.as_bytes());
    let a_invite = pbx.wait_sip("INVITE at the PBX", |m| m.starts_with("INVITE "));
    let (c, _) = sdp_connection(&a_invite);
    assert_eq!(c, "IN IP6 ::1", "{a_invite}\n{}", sbc.log());
    assert!(
        a_invite.contains("Via: SIP/2.0/UDP [::1]:15141"),
        "{a_invite}"
    );
    let answer = sdp_at("::1", 45141);
    let ok = respond(
        &a_invite,
        200,
        "OK",
        "p6b",
        &format!("Contact: <sip:p@{pbx6}>\r\nContent-Type: application/sdp\r\n"),
        &answer,
    );
    pbx.send(sbc6, ok.as_bytes());
    let c_ok = car.wait_sip("200 at the carrier", |m| m.starts_with("SIP/2.0 200"));
    let (c, _) = sdp_connection(&c_ok);
    assert_eq!(c, format!("IN IP4 {}", net.ip(1)), "{c_ok}\n{}", sbc.log());
}

/// The next SIP message on a stream (framed by Content-Length), within
/// 10 s.
fn read_stream_message(s: &mut std::net::TcpStream, buf: &mut Vec<u8>) -> String {
    use std::io::Read;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        while buf.starts_with(b"\r\n") {
            buf.drain(..2);
        }
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            let len: usize = header(&head, "Content-Length").map_or(0, |v| v.parse().unwrap());
            if buf.len() >= end + 4 + len {
                let msg: Vec<u8> = buf.drain(..end + 4 + len).collect();
                return String::from_utf8(msg).unwrap();
            }
        }
        assert!(Instant::now() < deadline, "no message within 10 s");
        let mut tmp = [0u8; 4096];
        match s.read(&mut tmp) {
            Ok(0) => panic!("the SBC closed the connection"),
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(_) => {}
        }
    }
}

/// Stream transports on IPv6 with the real binary: a PBX on ::1 calls over
/// TCP, to the SBC's IPv6 TCP listener, a carrier on IPv4 over UDP. The
/// answers come back over the PBX's connection, and each leg's SDP is in
/// its own family.
#[test]
fn an_ipv6_pbx_over_tcp_calls_an_ipv4_carrier_over_udp() {
    use std::io::Write;
    let net = Net(155);
    let sbc6 = "[::1]:15155";
    let carrier = format!("{}:5060", net.carrier_a());
    let config = v6_config(
        net,
        &format!("tcp:{sbc6}"),
        "[::1]:15255",
        "25100-25199",
        "tcp",
    );
    let sbc = Sbc::start(net, &config);
    let car = Udp::bind(&carrier);
    let mut pbx = std::net::TcpStream::connect(sbc6).unwrap();
    pbx.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let me = pbx.local_addr().unwrap().to_string();
    let mut buf = Vec::new();
    let tcp = |text: String| text.replacen("SIP/2.0/UDP", "SIP/2.0/TCP", 1);
    let dialog = (
        format!("<sip:100@{me}>;tag=p6t"),
        format!("<sip:+390612345678@{sbc6}>"),
    );
    let invite = tcp(request(
        "INVITE",
        &format!("sip:+390612345678@{sbc6};transport=tcp"),
        &me,
        (&dialog.0, &dialog.1),
        "v6-tcp",
        1,
        &sdp_at("::1", 45155),
    ));
    pbx.write_all(invite.as_bytes()).unwrap();
    let b_invite = car.wait_sip("INVITE at the carrier", |m| m.starts_with("INVITE "));
    let (c, _) = sdp_connection(&b_invite);
    assert_eq!(
        c,
        format!("IN IP4 {}", net.ip(1)),
        "{b_invite}\n{}",
        sbc.log()
    );
    assert!(b_invite.contains("Via: SIP/2.0/UDP "), "{b_invite}");
    let ok = respond(
        &b_invite,
        200,
        "OK",
        "car6",
        &format!("Contact: <sip:c@{carrier}>\r\nContent-Type: application/sdp\r\n"),
        &sdp_at(&net.carrier_a(), 45255),
    );
    car.send(&format!("{}:5060", net.ip(1)), ok.as_bytes());
    // Over the PBX's own connection: a 100 perhaps, then the 200.
    let a_ok = loop {
        let m = read_stream_message(&mut pbx, &mut buf);
        if m.starts_with("SIP/2.0 200") {
            break m;
        }
        assert!(m.starts_with("SIP/2.0 1"), "{m}");
    };
    let (c, _) = sdp_connection(&a_ok);
    assert_eq!(c, "IN IP6 ::1", "{a_ok}\n{}", sbc.log());
    let contact = header(&a_ok, "Contact").unwrap_or_default();
    assert!(contact.contains("[::1]:15155;transport=tcp"), "{a_ok}");
    let to = to_header(&a_ok);
    let mut at_carrier = Vec::new();
    for (method, cseq) in [("ACK", 1), ("BYE", 2)] {
        let m = tcp(request(
            method,
            &format!("sip:+390612345678@{sbc6};transport=tcp"),
            &me,
            (&dialog.0, &to),
            "v6-tcp",
            cseq,
            "",
        ));
        pbx.write_all(m.as_bytes()).unwrap();
        at_carrier.push(car.wait_sip(method, |s| s.starts_with(&format!("{method} "))));
    }
    // The carrier's 200 to the BYE reaches the PBX over its connection.
    let bye_ok = respond(&at_carrier[1], 200, "OK", "car6", "", "");
    car.send(&format!("{}:5060", net.ip(1)), bye_ok.as_bytes());
    // (The 200 to the INVITE may come again first: the SBC resends it
    // until the ACK is in, over streams too.)
    let done = loop {
        let m = read_stream_message(&mut pbx, &mut buf);
        if !m.contains("CSeq: 1 INVITE") {
            break m;
        }
    };
    assert!(
        done.starts_with("SIP/2.0 200") && done.contains("CSeq: 2 BYE"),
        "{done}\n{}",
        sbc.log()
    );
}
