//! The SBC registering itself to an ITSP (config/examples/register-to-itsp.toml)
//! whose registrar, a stock sipp, challenges it: registered, refreshed,
//! and a wrong password reported as failed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;

/// sipp as the ITSP's registrar, expecting `password`.
fn registrar(net: Net, password: &str) -> Sipp {
    let mut args = uas_args(net, &net.carrier_a(), "uas_registrar.xml", 1, 0);
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
