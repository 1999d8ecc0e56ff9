//! End-to-end: the real `sbc` binary between stock `sipp` instances on
//! loopback, configured from config/examples/ip-trunks.toml.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(120);

fn basic_calls(net: Net, shards: usize, calls: usize, rate: u32) {
    let started = std::time::Instant::now();
    let sbc = Sbc::start(net, &example_config(net, shards));
    let uas = Sipp::spawn(
        "uas",
        &uas_args(net, &net.carrier_a(), "uas_answer.xml", calls, 0),
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut args = uac_args(
        net,
        &net.pbx(),
        "uac_basic.xml",
        "+390612345678",
        calls,
        rate,
        40,
    );
    args.extend([
        "-d".into(),
        "1000".into(),
        "-recv_timeout".into(),
        "20000".into(),
    ]);
    let uac = Sipp::spawn("uac", &args).wait(LIMIT);
    let uas = uas.wait(LIMIT);
    assert_eq!(
        (uac.code, uac.successful, uac.failed),
        (Some(0), calls as u64, 0),
        "{}\n{}",
        uac.output,
        sbc.log()
    );
    assert_eq!(
        (uas.code, uas.successful, uas.failed),
        (Some(0), calls as u64, 0),
        "{}",
        uas.output
    );

    let n = calls as f64;
    assert_eq!(
        sbc.metric(r#"sbc_calls_attempted_total{trunk="pbx",direction="inbound"}"#),
        n
    );
    assert_eq!(
        sbc.metric(r#"sbc_calls_answered_total{trunk="carrier-a",direction="outbound"}"#),
        n
    );
    assert_eq!(
        sbc.wait_metric(r#"sbc_calls_active{trunk="pbx",direction="inbound"}"#, 0.0),
        0.0
    );
    assert_eq!(sbc.metric_sum("sbc_shard_calls_total"), n);
    assert_eq!(
        sbc.metric(r#"sbc_final_responses_sent_total{code="200"}"#),
        2.0 * n,
        "INVITE and BYE answered"
    );
    // Each shard's loop counts the time it worked between waits: some,
    // and at this rate far less than the time it has run (waits are not
    // counted).
    let lived = started.elapsed().as_secs_f64();
    for s in 0..shards {
        let busy = sbc.metric(&format!(r#"sbc_shard_busy_seconds_total{{shard="{s}"}}"#));
        assert!(
            busy > 0.0 && busy < lived / 2.0,
            "shard {s} busy {busy} s of {lived} s"
        );
    }
    if shards > 1 {
        // One trunk, one source port: the kernel gives all its packets to
        // one socket, yet the calls spread over the shards.
        for s in 0..shards {
            let per = sbc.metric(&format!(r#"sbc_shard_calls_total{{shard="{s}"}}"#));
            assert!(
                per > n / shards as f64 * 0.6,
                "shard {s} got {per} of {n} calls"
            );
        }
    }
}

#[test]
fn thousand_calls_at_100_cps_one_shard() {
    basic_calls(Net(101), 1, 1000, 100);
}

#[test]
fn thousand_calls_at_100_cps_two_shards() {
    basic_calls(Net(102), 2, 1000, 100);
}

#[test]
fn first_trunk_503_call_completes_on_second() {
    let net = Net(103);
    let sbc = Sbc::start(net, &example_config(net, 2));
    let calls = 20;
    let busy_a = Sipp::spawn(
        "uas-a",
        &uas_args(net, &net.carrier_a(), "uas_unavailable.xml", calls, 0),
    );
    let ok_b = Sipp::spawn(
        "uas-b",
        &uas_args(net, &net.carrier_b(), "uas_answer.xml", calls, 20),
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut args = uac_args(
        net,
        &net.pbx(),
        "uac_basic.xml",
        "+441234567",
        calls,
        10,
        40,
    );
    args.extend(["-d".into(), "500".into()]);
    let uac = Sipp::spawn("uac", &args).wait(LIMIT);
    let a = busy_a.wait(LIMIT);
    let b = ok_b.wait(LIMIT);
    assert_eq!(
        (uac.code, uac.successful),
        (Some(0), calls as u64),
        "{}\n{}",
        uac.output,
        sbc.log()
    );
    assert_eq!(
        (a.code, a.successful),
        (Some(0), calls as u64),
        "carrier-a answered 503 and got its ACK: {}",
        a.output
    );
    assert_eq!(
        (b.code, b.successful),
        (Some(0), calls as u64),
        "{}",
        b.output
    );
    assert_eq!(sbc.metric("sbc_failovers_total"), calls as f64);
    assert_eq!(
        sbc.metric(r#"sbc_final_responses_received_total{code="503"}"#),
        calls as f64
    );
    assert_eq!(
        sbc.metric(r#"sbc_calls_failed_total{trunk="carrier-a",direction="outbound"}"#),
        calls as f64
    );
}

#[test]
fn unknown_source_gets_403_and_callee_never_sees_it() {
    let net = Net(104);
    let sbc = Sbc::start(net, &example_config(net, 1));
    let carrier = Peer::bind(&net.carrier_a());
    let backup = Peer::bind(&net.carrier_b());
    let stranger = net.ip(99);
    let uac = Sipp::spawn(
        "uac",
        // One call a second: within a stranger's answers a second (2 by
        // default; beyond them it would get silence).
        &uac_args(net, &stranger, "uac_forbidden.xml", "+441234567", 5, 1, 40),
    )
    .wait(LIMIT);
    assert_eq!((uac.code, uac.successful), (Some(0), 5), "{}", uac.output);
    assert!(
        carrier.recv(Duration::from_millis(500)).is_none(),
        "never relayed"
    );
    assert!(
        backup.recv(Duration::from_millis(100)).is_none(),
        "never relayed"
    );
    assert_eq!(
        sbc.metric(r#"sbc_requests_rejected_total{reason="unknown_source"}"#),
        5.0
    );
    assert_eq!(sbc.metric_sum("sbc_calls_attempted_total"), 0.0);
}

#[test]
fn busy_is_final_and_not_failed_over() {
    let net = Net(105);
    let sbc = Sbc::start(net, &example_config(net, 1));
    let backup = Peer::bind(&net.carrier_b());
    let uas = Sipp::spawn(
        "uas",
        &uas_args(net, &net.carrier_a(), "uas_busy.xml", 10, 0),
    );
    std::thread::sleep(Duration::from_millis(300));
    let uac = Sipp::spawn(
        "uac",
        &uac_args(net, &net.pbx(), "uac_busy.xml", "+441234567", 10, 10, 40),
    )
    .wait(LIMIT);
    let uas = uas.wait(LIMIT);
    assert_eq!(
        (uac.code, uac.successful),
        (Some(0), 10),
        "{}\n{}",
        uac.output,
        sbc.log()
    );
    assert_eq!((uas.code, uas.successful), (Some(0), 10), "{}", uas.output);
    assert!(
        backup.recv(Duration::from_millis(300)).is_none(),
        "486 is final: no failover"
    );
    assert_eq!(
        sbc.metric(r#"sbc_final_responses_sent_total{code="486"}"#),
        10.0
    );
}

#[test]
fn caller_cancels_while_ringing() {
    let net = Net(106);
    let sbc = Sbc::start(net, &example_config(net, 2));
    let uas = Sipp::spawn(
        "uas",
        &uas_args(net, &net.carrier_a(), "uas_ring_no_answer.xml", 10, 0),
    );
    std::thread::sleep(Duration::from_millis(300));
    let uac = Sipp::spawn(
        "uac",
        &uac_args(net, &net.pbx(), "uac_cancel.xml", "+441234567", 10, 5, 40),
    )
    .wait(LIMIT);
    let uas = uas.wait(LIMIT);
    assert_eq!(
        (uac.code, uac.successful),
        (Some(0), 10),
        "{}\n{}",
        uac.output,
        sbc.log()
    );
    assert_eq!((uas.code, uas.successful), (Some(0), 10), "{}", uas.output);
    assert_eq!(
        sbc.metric(r#"sbc_final_responses_sent_total{code="487"}"#),
        10.0
    );
}

#[test]
fn callee_hangs_up() {
    let net = Net(107);
    let sbc = Sbc::start(net, &example_config(net, 2));
    let mut uas_args = uas_args(net, &net.carrier_a(), "uas_answer_then_bye.xml", 10, 0);
    uas_args.extend(["-d".into(), "500".into()]);
    let uas = Sipp::spawn("uas", &uas_args);
    std::thread::sleep(Duration::from_millis(300));
    let uac = Sipp::spawn(
        "uac",
        &uac_args(
            net,
            &net.pbx(),
            "uac_bye_from_callee.xml",
            "+441234567",
            10,
            5,
            40,
        ),
    )
    .wait(LIMIT);
    let uas = uas.wait(LIMIT);
    assert_eq!(
        (uac.code, uac.successful),
        (Some(0), 10),
        "{}\n{}",
        uac.output,
        sbc.log()
    );
    assert_eq!((uas.code, uas.successful), (Some(0), 10), "{}", uas.output);
    assert_eq!(
        sbc.wait_metric(r#"sbc_calls_active{trunk="pbx",direction="inbound"}"#, 0.0),
        0.0
    );
}

#[test]
fn inbound_did_from_carrier_reaches_pbx() {
    let net = Net(108);
    let sbc = Sbc::start(net, &example_config(net, 1));
    let uas = Sipp::spawn("uas", &uas_args(net, &net.pbx(), "uas_answer.xml", 5, 0));
    std::thread::sleep(Duration::from_millis(300));
    let mut args = uac_args(
        net,
        &net.carrier_b(),
        "uac_basic.xml",
        "+390612345678",
        5,
        5,
        40,
    );
    args.extend(["-d".into(), "200".into()]);
    let uac = Sipp::spawn("uac", &args).wait(LIMIT);
    let uas = uas.wait(LIMIT);
    assert_eq!(
        (uac.code, uac.successful),
        (Some(0), 5),
        "{}\n{}",
        uac.output,
        sbc.log()
    );
    assert_eq!((uas.code, uas.successful), (Some(0), 5), "{}", uas.output);
    assert_eq!(
        sbc.metric(r#"sbc_calls_attempted_total{trunk="carrier-b",direction="inbound"}"#),
        5.0
    );
    // A number outside the DIDs from a carrier: 404, never relayed.
    let uac = Sipp::spawn(
        "uac404",
        &uac_args(
            net,
            &net.carrier_a(),
            "uac_forbidden.xml",
            "+4420",
            1,
            1,
            60,
        ),
    )
    .wait(LIMIT);
    assert_ne!(
        uac.code,
        Some(0),
        "404, not 403: the scenario expecting 403 fails"
    );
    assert_eq!(
        sbc.metric(r#"sbc_requests_rejected_total{reason="no_route"}"#),
        1.0
    );
}

/// RFC 4028: a caller asks for session timers and the callee does not
/// take part, so the SBC names the caller the refresher in the 2xx; the
/// caller never refreshes, so about 60 s later (90 - 30) the SBC ends the
/// call with BYE on both legs, and each side answers it.
#[test]
fn a_session_nobody_refreshes_is_ended_by_the_sbc() {
    let net = Net(142);
    // sipp sends no RTP: the media timeout (60 s by default) must not end
    // the call first.
    let config = example_config(net, 1).replace(
        "ports = \"30000-39999\"\n",
        "ports = \"30000-39999\"\ntimeout_s = 600\n",
    );
    assert!(config.contains("timeout_s = 600"));
    let sbc = Sbc::start(net, &config);
    let uas = Sipp::spawn(
        "uas",
        &uas_args(net, &net.carrier_a(), "uas_answer.xml", 1, 0),
    );
    std::thread::sleep(Duration::from_millis(300));
    let uac = Sipp::spawn(
        "uac",
        &uac_args(
            net,
            &net.pbx(),
            "uac_session_timer.xml",
            "+390612345678",
            1,
            1,
            40,
        ),
    )
    .wait(LIMIT);
    let uas = uas.wait(LIMIT);
    assert_eq!(
        (uac.code, uac.successful),
        (Some(0), 1),
        "{}\n{}",
        uac.output,
        sbc.log()
    );
    assert_eq!((uas.code, uas.successful), (Some(0), 1), "{}", uas.output);
    let log = sbc.log();
    assert!(log.contains("session_expired"), "{log}");
    assert_eq!(
        sbc.wait_metric(r#"sbc_calls_active{trunk="pbx",direction="inbound"}"#, 0.0),
        0.0
    );
}

/// An INVITE flood from one trunk beyond its `max_cps` (BRIEF §2): the
/// excess gets 503 before any call state, the calls within the rate go
/// through, and nothing is left open afterwards.
#[test]
fn a_trunk_over_its_call_rate_gets_503_for_the_excess() {
    let net = Net(144);
    let config = example_config(net, 1).replace(
        "address = \"127.144.0.10:5060\"\n",
        "address = \"127.144.0.10:5060\"\nmax_cps = 5\n",
    );
    assert!(config.contains("max_cps = 5"), "{config}");
    let sbc = Sbc::start(net, &config);
    let uas = Sipp::spawn(
        "uas",
        &uas_args(net, &net.carrier_a(), "uas_answer.xml", 200, 0),
    );
    std::thread::sleep(Duration::from_millis(300));
    // 100 calls at 50 a second: two seconds, room for about 15 within the
    // rate (a burst of 5, then 5 a second).
    let uac = Sipp::spawn(
        "uac",
        &uac_args(
            net,
            &net.pbx(),
            "uac_basic.xml",
            "+390612345678",
            100,
            50,
            40,
        ),
    )
    .wait(LIMIT);
    let refused = sbc.metric(r#"sbc_requests_rejected_total{reason="trunk_limit"}"#);
    let through = sbc.metric(r#"sbc_calls_attempted_total{trunk="pbx",direction="inbound"}"#);
    assert_eq!(refused + through, 100.0, "{}\n{}", uac.output, sbc.log());
    assert!(
        (5.0..=25.0).contains(&through),
        "{through} calls within the rate"
    );
    assert_eq!(uac.successful, through as u64, "{}", uac.output);
    assert_eq!(
        sbc.wait_metric(r#"sbc_calls_active{trunk="pbx",direction="inbound"}"#, 0.0),
        0.0
    );
    assert_eq!(sbc.metric_sum("sbc_shard_calls_total"), through);
    drop(uas);
}
