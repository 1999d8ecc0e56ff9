//! The SBC registering itself to an ITSP (config/examples/register-to-itsp.toml)
//! whose registrar, a stock sipp, challenges it: registered, refreshed,
//! and a wrong password reported as failed; and a PBX call the ITSP
//! challenges, sent again with the registration's credentials.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;

/// sipp as the ITSP's registrar, expecting `password`.
fn registrar(net: Net, password: &str) -> Sipp {
    itsp_sipp(net, &net.carrier_a(), "uas_registrar.xml", password, 0)
}

/// sipp as the ITSP on `ip` playing `scenario_file`, expecting the
/// SBC's account sbc-user with `password`.
fn itsp_sipp(net: Net, ip: &str, scenario_file: &str, password: &str, k: u16) -> Sipp {
    let mut args = uas_args(net, ip, scenario_file, 1, k);
    args.extend(
        ["-s", "sbc-user", "-set", "password", password]
            .iter()
            .map(|s| s.to_string()),
    );
    Sipp::spawn("itsp", &args)
}

#[test]
fn the_sbc_registers_to_the_itsp_and_refreshes() {
    let net = Net(124);
    let itsp = registrar(net, "sbc-secret");
    // sipp binds first: the SBC's first REGISTER goes at start.
    std::thread::sleep(Duration::from_millis(500));
    let sbc = Sbc::start(net, &itsp_config(net));
    // Two rounds: the registration, and its refresh 2 s later (half the
    // 4 s granted).
    let itsp = itsp.wait(Duration::from_secs(60));
    assert_eq!(
        (itsp.code, itsp.successful),
        (Some(0), 1),
        "{}\n{}",
        itsp.output,
        sbc.log()
    );
    let registered = "sbc_trunk_registered{trunk=\"itsp\"}";
    assert_eq!(sbc.wait_metric(registered, 1.0), 1.0, "{}", sbc.log());
    assert_eq!(
        sbc.metric("sbc_trunk_registration_status{trunk=\"itsp\"}"),
        200.0
    );
    assert!(
        sbc.metric("sbc_trunk_registrations_total{trunk=\"itsp\",result=\"registered\"}") >= 2.0,
        "{}",
        sbc.log()
    );
    assert!(sbc.log().contains("registered to trunk"), "{}", sbc.log());
    assert!(!sbc.log().contains("sbc-secret"), "{}", sbc.log());
}

#[test]
fn a_wrong_password_is_reported_as_failed() {
    let net = Net(125);
    let itsp = registrar(net, "not-what-the-sbc-has");
    std::thread::sleep(Duration::from_millis(500));
    let sbc = Sbc::start(net, &itsp_config(net));
    let itsp = itsp.wait(Duration::from_secs(60));
    assert_ne!(itsp.code, Some(0), "{}", itsp.output);
    let status = "sbc_trunk_registration_status{trunk=\"itsp\"}";
    assert_eq!(sbc.wait_metric(status, 403.0), 403.0, "{}", sbc.log());
    assert_eq!(sbc.metric("sbc_trunk_registered{trunk=\"itsp\"}"), 0.0);
    assert!(
        sbc.log().contains("registration to trunk failed"),
        "{}",
        sbc.log()
    );
}

/// A call from the PBX through the example: the ITSP challenges the SBC's
/// INVITE (401), the SBC sends it again once with its registration's
/// credentials (checked by the ITSP's sipp), and the call completes. The
/// ITSP's registrar is at an address of its own (`registrar = ...` in the
/// registration string), its call server at the trunk's.
#[test]
fn a_pbx_call_the_itsp_challenges_is_sent_again_with_credentials() {
    let net = Net(120);
    let calls = itsp_sipp(
        net,
        &net.carrier_a(),
        "uas_auth_answer.xml",
        "sbc-secret",
        10,
    );
    let (sbc, registrar) = registered_apart(net);
    let mut args = uac_args(net, &net.pbx(), "uac_basic.xml", "+442071234567", 1, 1, 20);
    args.extend(["-d".into(), "200".into()]);
    let pbx = Sipp::spawn("pbx", &args).wait(Duration::from_secs(60));
    let calls = calls.wait(Duration::from_secs(30));
    assert_one_call(&pbx, &calls, &sbc);
    assert_eq!(calls.code, Some(0), "{}", calls.output);
    assert!(!sbc.log().contains("sbc-secret"), "{}", sbc.log());
    drop(registrar);
}

/// The example with the ITSP's registrar at an address of its own (.21;
/// `registrar = ...` in the registration string), so that the ITSP's call
/// server can be another sipp at the trunk's address (.20): the SBC
/// started and registered there. The registrar's sipp, to keep alive.
fn registered_apart(net: Net) -> (Sbc, Sipp) {
    let plain = "register = { user = \"sbc-user\", secret = \"sbc-secret\", expires_s = 60 }";
    let config = itsp_config(net);
    assert!(config.contains(plain), "{config}");
    let config = config.replace(
        plain,
        &format!(
            "register = {{ user = \"sbc-user\", secret = \"sbc-secret\", expires_s = 60, registrar = \"{}:5060\" }}",
            net.ip(21)
        ),
    );
    let registrar = itsp_sipp(net, &net.ip(21), "uas_registrar.xml", "sbc-secret", 0);
    std::thread::sleep(Duration::from_millis(500));
    let sbc = Sbc::start(net, &config);
    let registered = "sbc_trunk_registered{trunk=\"itsp\"}";
    assert_eq!(sbc.wait_metric(registered, 1.0), 1.0, "{}", sbc.log());
    (sbc, registrar)
}

/// The ITSP delivers a call to the Contact the SBC registered
/// (`sip:sbc-user@...`), with the number called in To, as providers do:
/// it is the itsp trunk's, routed on the To number by the example's DID
/// to the PBX, and completes.
#[test]
fn a_call_the_itsp_delivers_to_the_registrations_contact_rings_the_pbx() {
    let net = Net(109);
    let pbx = Sipp::spawn("pbx", &uas_args(net, &net.pbx(), "uas_answer.xml", 1, 10));
    let (sbc, registrar) = registered_apart(net);
    let mut args = uac_args(
        net,
        &net.carrier_a(),
        "uac_to_contact.xml",
        "+390212345",
        1,
        1,
        20,
    );
    args.extend(["-set", "contact", "sbc-user", "-d", "200"].map(String::from));
    let itsp = Sipp::spawn("itsp", &args).wait(Duration::from_secs(60));
    let pbx = pbx.wait(Duration::from_secs(30));
    assert_one_call(&itsp, &pbx, &sbc);
    assert_eq!(pbx.code, Some(0), "{}", pbx.output);
    assert_eq!(
        sbc.metric(r#"sbc_calls_answered_total{trunk="itsp",direction="inbound"}"#),
        1.0,
        "{}",
        sbc.log()
    );
    drop(registrar);
}

/// The ITSP's call server challenges the PBX's call as a proxy (407 with
/// Proxy-Authenticate, SHA-256, qop=auth), played by the test itself
/// because sipp checks only `Authorization`: the SBC acknowledges the 407,
/// sends the INVITE once more in the same call with a higher CSeq and a
/// Proxy-Authorization (not an Authorization) whose response the test
/// works out from the registration's secret, and the call completes.
#[test]
fn a_pbx_call_the_itsp_challenges_as_a_proxy_is_sent_again_with_proxy_credentials() {
    let net = Net(159);
    let itsp = Peer::bind(&net.carrier_a());
    let (sbc, registrar) = registered_apart(net);
    let mut args = uac_args(net, &net.pbx(), "uac_basic.xml", "+442071234567", 1, 1, 20);
    args.extend(["-d".into(), "200".into()]);
    let pbx = Sipp::spawn("pbx", &args);

    let first = wait_for(&itsp, "INVITE", |m| m.starts_with("INVITE "));
    let sbc_addr = net.sbc();
    let challenge = "Proxy-Authenticate: Digest realm=\"itsp.example\", nonce=\"n407x1\", \
                     qop=\"auth\", algorithm=SHA-256\r\n";
    itsp.send(
        &sbc_addr,
        &respond(
            &first,
            407,
            "Proxy Authentication Required",
            "i1",
            challenge,
            "",
        ),
    );
    let ack = wait_for(&itsp, "ACK to the 407", |m| m.starts_with("ACK "));
    assert_eq!(header(&ack, "Call-ID"), header(&first, "Call-ID"));

    let second = wait_for(&itsp, "the INVITE again", |m| m.starts_with("INVITE "));
    assert_eq!(
        header(&second, "Call-ID"),
        header(&first, "Call-ID"),
        "{second}"
    );
    let seq = |m: &str| -> u32 {
        header(m, "CSeq")
            .and_then(|c| c.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap()
    };
    assert!(seq(&second) > seq(&first), "{first}\n{second}");
    assert!(header(&second, "Authorization").is_none(), "{second}");
    let creds = header(&second, "Proxy-Authorization").unwrap_or_else(|| panic!("{second}"));
    let param = |name: &str| digest_param(creds, name).unwrap_or_else(|| panic!("{name}: {creds}"));
    assert_eq!(
        (
            param("username"),
            param("realm"),
            param("nonce"),
            param("algorithm"),
            param("qop")
        ),
        (
            "sbc-user".into(),
            "itsp.example".into(),
            "n407x1".into(),
            "SHA-256".into(),
            "auth".into()
        ),
        "{creds}"
    );
    let uri = second.split(' ').nth(1).unwrap();
    assert_eq!(param("uri"), uri, "{creds}");
    let ha1 = sha256_hex("sbc-user:itsp.example:sbc-secret");
    let ha2 = sha256_hex(&format!("INVITE:{uri}"));
    let want = sha256_hex(&format!(
        "{ha1}:n407x1:{}:{}:auth:{ha2}",
        param("nc"),
        param("cnonce")
    ));
    assert_eq!(param("response"), want, "{creds}");

    let ip = net.carrier_a();
    let contact = format!("Contact: <sip:itsp@{ip}:5060>\r\nContent-Type: application/sdp\r\n");
    itsp.send(
        &sbc_addr,
        &respond(&second, 200, "OK", "i2", &contact, &sdp(&ip, net.port(1))),
    );
    wait_for(&itsp, "ACK to the 200", |m| m.starts_with("ACK "));
    let bye = wait_for(&itsp, "BYE", |m| m.starts_with("BYE "));
    itsp.send(&sbc_addr, &respond(&bye, 200, "OK", "i2", "", ""));

    let pbx = pbx.wait(Duration::from_secs(30));
    assert_eq!(
        (pbx.code, pbx.successful),
        (Some(0), 1),
        "{}\n{}",
        pbx.output,
        sbc.log()
    );
    assert!(!sbc.log().contains("sbc-secret"), "{}", sbc.log());
    drop(registrar);
}
