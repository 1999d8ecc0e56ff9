//! End-to-end media: the real `sbc` relays RTP between its own ports (sipp
//! plays the G.711 capture of Debian's sip-tester package), ends silent
//! calls, and leaves SDP alone for bypass trunks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::*;

fn invite(net: Net, call_id: &str, body: &str) -> String {
    let pbx = net.pbx();
    format!(
        "INVITE sip:+441234567@{sbc} SIP/2.0\r\nVia: SIP/2.0/UDP {pbx}:5060;branch=z9hG4bK{branch};rport\r\nMax-Forwards: 70\r\nFrom: <sip:alice@{pbx}>;tag=a1\r\nTo: <sip:+441234567@{sbc}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@{pbx}:5060>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        body.len(),
        sbc = net.sbc(),
        branch = call_id.replace(['@', '.'], ""),
    )
}

fn in_dialog(method: &str, net: Net, call_id: &str, to: &str, cseq: u32) -> String {
    let pbx = net.pbx();
    format!(
        "{method} sip:{sbc} SIP/2.0\r\nVia: SIP/2.0/UDP {pbx}:5060;branch=z9hG4bK{method}{cseq};rport\r\nMax-Forwards: 70\r\nFrom: <sip:alice@{pbx}>;tag=a1\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
        sbc = net.sbc(),
    )
}

#[test]
fn caller_rtp_reaches_the_callee_from_the_sbc() {
    let net = Net(111);
    let sbc = Sbc::start(net, &example_config(net, 2));
    let carrier = Peer::bind(&net.carrier_a());
    let rtp = UdpSocket::bind(format!("{}:6000", net.carrier_a())).unwrap();
    rtp.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut args = uac_args(net, &net.pbx(), "uac_pcap.xml", "+441234567", 1, 1, 40);
    args.extend(["-recv_timeout".into(), "30000".into()]);
    let uac = Sipp::spawn("uac-pcap", &args);

    let inv = wait_for(&carrier, "INVITE", |m| m.starts_with("INVITE "));
    let (ip, sbc_port) = sdp_target(&inv);
    assert_eq!(ip, net.ip(1), "the callee is told to send to the SBC");
    assert!((30000..40000).contains(&sbc_port));
    assert!(
        !inv.split("\r\n\r\n").nth(1).unwrap().contains(&net.pbx()),
        "no caller address in the SDP"
    );
    let extra = format!(
        "Contact: <sip:callee@{}:5060>\r\nContent-Type: application/sdp\r\n",
        net.carrier_a()
    );
    carrier.send(
        &net.sbc(),
        &respond(
            &inv,
            200,
            "OK",
            "callee",
            &extra,
            &sdp(&net.carrier_a(), 6000),
        ),
    );
    wait_for(&carrier, "ACK", |m| m.starts_with("ACK "));

    // The audio arrives from the SBC's port, not from the caller.
    let mut buf = [0u8; 2048];
    let mut received = 0;
    let deadline = Instant::now() + Duration::from_secs(12);
    while Instant::now() < deadline && received < 236 {
        if let Ok((n, from)) = rtp.recv_from(&mut buf) {
            assert_eq!(
                from.to_string(),
                format!("{}:{sbc_port}", net.ip(1)),
                "relayed from the SBC's port"
            );
            assert_eq!(buf[0] >> 6, 2, "RTP");
            if received < 20 {
                rtp.send_to(&buf[..n], from).unwrap(); // some audio back
            }
            received += 1;
        }
    }
    assert!(
        received >= 230,
        "caller audio relayed: {received} of 236 packets"
    );

    let bye = wait_for(&carrier, "BYE", |m| m.starts_with("BYE "));
    carrier.send(&net.sbc(), &respond(&bye, 200, "OK", "callee", "", ""));
    let uac = uac.wait(Duration::from_secs(60));
    assert_eq!(
        (uac.code, uac.successful),
        (Some(0), 1),
        "{}\n{}",
        uac.output,
        sbc.log()
    );
    assert!(sbc.metric(r#"sbc_media_packets_total{direction="caller_to_callee"}"#) >= 230.0);
    assert!(sbc.metric(r#"sbc_media_packets_total{direction="callee_to_caller"}"#) >= 20.0);
    assert_eq!(
        sbc.wait_metric("sbc_media_ports_in_use", 0.0),
        0.0,
        "ports released"
    );
}

#[test]
fn silent_call_is_torn_down_after_the_media_timeout() {
    let net = Net(112);
    let config = example_config(net, 1).replace(
        "ports = \"30000-39999\"",
        "ports = \"30000-39999\"\ntimeout_s = 2",
    );
    let sbc = Sbc::start(net, &config);
    let pbx = Peer::bind(&net.pbx());
    let carrier = Peer::bind(&net.carrier_a());
    pbx.send(
        &net.sbc(),
        &invite(net, "silent@pbx", &sdp(&net.pbx(), 4000)),
    );
    let inv = wait_for(&carrier, "INVITE", |m| m.starts_with("INVITE "));
    let extra = format!(
        "Contact: <sip:callee@{}:5060>\r\nContent-Type: application/sdp\r\n",
        net.carrier_a()
    );
    carrier.send(
        &net.sbc(),
        &respond(
            &inv,
            200,
            "OK",
            "callee",
            &extra,
            &sdp(&net.carrier_a(), 6000),
        ),
    );
    let ok = wait_for(&pbx, "200", |m| m.starts_with("SIP/2.0 200"));
    let to = header(&ok, "To").unwrap().to_owned();
    pbx.send(&net.sbc(), &in_dialog("ACK", net, "silent@pbx", &to, 1));
    let started = Instant::now();
    // No RTP at all: both legs get a BYE about 2 s later.
    let bye_a = wait_for(&pbx, "BYE to the caller", |m| m.starts_with("BYE "));
    pbx.send(&net.sbc(), &respond(&bye_a, 200, "OK", "a1", "", ""));
    let bye_b = wait_for(&carrier, "BYE to the callee", |m| m.starts_with("BYE "));
    carrier.send(&net.sbc(), &respond(&bye_b, 200, "OK", "callee", "", ""));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(8),
        "{took:?}"
    );
    assert_eq!(
        sbc.wait_metric("sbc_media_timeouts_total", 1.0),
        1.0,
        "{}",
        sbc.log()
    );
}

#[test]
fn bypass_trunks_get_the_sdp_untouched() {
    let net = Net(113);
    let config = example_config(net, 1)
        .replace("name = \"pbx\"\n", "name = \"pbx\"\nmedia = \"bypass\"\n")
        .replace(
            "name = \"carrier-a\"\n",
            "name = \"carrier-a\"\nmedia = \"bypass\"\n",
        );
    let _sbc = Sbc::start(net, &config);
    let pbx = Peer::bind(&net.pbx());
    let carrier = Peer::bind(&net.carrier_a());
    let offer = sdp(&net.pbx(), 4000);
    pbx.send(&net.sbc(), &invite(net, "bypass@pbx", &offer));
    let inv = wait_for(&carrier, "INVITE", |m| m.starts_with("INVITE "));
    assert_eq!(
        inv.split("\r\n\r\n").nth(1).unwrap(),
        offer,
        "peer to peer: SDP unchanged"
    );
    carrier.send(
        &net.sbc(),
        &respond(&inv, 486, "Busy Here", "callee", "", ""),
    );
    wait_for(&pbx, "486", |m| m.starts_with("SIP/2.0 486"));
}
