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
