//! Topology hiding, checked by our own UDP callee: what sipp's caller puts
//! in Call-ID, Via (branch), Contact and From never reaches the carrier.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;

#[test]
fn callee_sees_nothing_of_the_caller_side() {
    let net = Net(110);
    let sbc = Sbc::start(net, &example_config(net, 2));
    let carrier = Peer::bind(&net.carrier_a());
    let mut args = uac_args(net, &net.pbx(), "uac_basic.xml", "+441234567", 1, 1, 40);
    args.extend(["-d".into(), "200".into()]);
    let uac = Sipp::spawn("uac", &args);

    let (invite, from) = carrier
        .recv(Duration::from_secs(10))
        .expect("INVITE at carrier-a");
    assert_eq!(
        from.to_string(),
        net.sbc(),
        "sent from the SBC's SIP address"
    );
    let head = invite.split("\r\n\r\n").next().unwrap();
    let pbx_ip = net.pbx();
    // sipp's Call-ID, Via, Contact and From all carry its own address, and
    // its branches start with "z9hG4bK-".
    assert!(!head.contains(&pbx_ip), "A-leg address leaked:\n{head}");
    assert!(!head.contains("z9hG4bK-"), "A-leg branch leaked:\n{head}");
    assert!(!head.to_ascii_lowercase().contains("user-agent"), "{head}");
    let call_id = header(&invite, "Call-ID").unwrap().to_owned();
    assert_eq!(
        header(&invite, "Contact"),
        Some(format!("<sip:{}>", net.sbc()).as_str())
    );
    assert_eq!(
        header(&invite, "Via")
            .map(|v| v.starts_with(&format!("SIP/2.0/UDP {};branch=z9hG4bK", net.sbc()))),
        Some(true)
    );

    // Answer, then expect ACK and BYE in our dialog.
    let contact = format!(
        "Contact: <sip:callee@{}:5060>\r\nContent-Type: application/sdp\r\n",
        net.carrier_a()
    );
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 {0}\r\ns=-\r\nc=IN IP4 {0}\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n",
        net.carrier_a()
    );
    let ok = respond(&invite, 200, "OK", "callee-tag", &contact, &sdp);
    carrier.send(&net.sbc(), &ok);
    let (ack, _) = carrier.recv(Duration::from_secs(10)).expect("ACK");
    assert!(
        ack.starts_with(&format!("ACK sip:callee@{}:5060 SIP/2.0", net.carrier_a())),
        "{ack}"
    );
    assert_eq!(header(&ack, "Call-ID"), Some(call_id.as_str()));
    let (bye, _) = carrier.recv(Duration::from_secs(10)).expect("BYE");
    assert!(bye.starts_with("BYE "), "{bye}");
    assert!(!bye.split("\r\n\r\n").next().unwrap().contains(&pbx_ip));
    carrier.send(&net.sbc(), &respond(&bye, 200, "OK", "callee-tag", "", ""));
    let uac = uac.wait(Duration::from_secs(60));
    assert_eq!(
        (uac.code, uac.successful),
        (Some(0), 1),
        "{}\n{}",
        uac.output,
        sbc.log()
    );
}
