//! Trunk health probes with the real binary: a carrier that stops
//! answering OPTIONS goes down (metric and log), calls go straight to the
//! next carrier with no attempt on the dead one, and one answered probe
//! brings it back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The example with carrier-a probed every second, down after 2 failures,
/// up after 1 answer.
fn probed_config(net: Net) -> String {
    let a = format!("address = \"{}:5060\"\n", net.carrier_a());
    let text = example_config(net, 1);
    assert!(text.contains(&a));
    text.replacen(
        &a,
        &format!("{a}probe = {{ interval_s = 1, down_after = 2, up_after = 1 }}\n"),
        1,
    )
}

#[test]
fn a_dead_carrier_is_probed_down_skipped_and_probed_up() {
    let net = Net(115);
    let sbc = Sbc::start(net, &probed_config(net));
    let up = "sbc_trunk_up{trunk=\"carrier-a\"}";
    // carrier-a is bound but silent: its probes go unanswered.
    let carrier_a = Peer::bind(&net.carrier_a());
    let (first, _) = carrier_a
        .recv(Duration::from_secs(10))
        .expect("a probe at carrier-a");
    assert!(
        first.starts_with(&format!("OPTIONS sip:{}:5060 SIP/2.0", net.carrier_a())),
        "{first}"
    );
    assert_eq!(sbc.wait_metric(up, 0.0), 0.0, "{}", sbc.log());
    assert!(sbc.log().contains("trunk down"), "{}", sbc.log());
    assert_eq!(
        sbc.metric("sbc_trunk_up{trunk=\"carrier-b\"}"),
        1.0,
        "unprobed trunks stay up"
    );

    // A call now goes to carrier-b at once: no INVITE reaches carrier-a.
    let uas = Sipp::spawn(
        "uas",
        &uas_args(net, &net.carrier_b(), "uas_answer.xml", 1, 20),
    );
    let mut args = uac_args(net, &net.pbx(), "uac_basic.xml", "+441234567", 1, 1, 40);
    args.extend(["-d".into(), "200".into()]);
    let started = Instant::now();
    let uac = Sipp::spawn("uac", &args).wait(Duration::from_secs(60));
    let uas = uas.wait(Duration::from_secs(30));
    assert_one_call(&uac, &uas, &sbc);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the call waited for the dead carrier"
    );
    // What carrier-a got meanwhile: probes only.
    while let Some((m, _)) = carrier_a.recv(Duration::from_millis(100)) {
        assert!(m.starts_with("OPTIONS "), "carrier-a got: {m}");
    }

    // carrier-a answers a probe: up again.
    let probe = wait_for(&carrier_a, "a probe", |m| m.starts_with("OPTIONS "));
    carrier_a.send(&net.sbc(), &respond(&probe, 200, "OK", "a", "", ""));
    assert_eq!(sbc.wait_metric(up, 1.0), 1.0, "{}", sbc.log());
    assert!(sbc.log().contains("trunk up"), "{}", sbc.log());
    assert!(sbc.metric("sbc_trunk_probes_total{trunk=\"carrier-a\",result=\"failed\"}") >= 2.0);
    assert!(sbc.metric("sbc_trunk_probes_total{trunk=\"carrier-a\",result=\"answered\"}") >= 1.0);
}
