//! End-to-end: sbc-load (the workspace's SIPp-compatible load generator)
//! as caller and callee, with the real `sbc` between them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The sbc-load binary, built next to `sbc` by a workspace build.
fn sbc_load() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_BIN_EXE_sbc"))
        .parent()
        .unwrap()
        .join("sbc-load");
    assert!(
        p.exists(),
        "{} is missing: build the workspace (cargo build --workspace)",
        p.display()
    );
    p
}

fn run(args: &[String], json: &std::path::Path) -> std::process::Child {
    Command::new(sbc_load())
        .args(["--threads", "2", "--quiet", "-nostdin", "-timeout", "90"])
        .arg("--json")
        .arg(json)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn wait(mut c: std::process::Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(s)) = c.try_wait() {
            return s.code();
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            let _ = c.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn report(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_default())
        .unwrap_or(serde_json::Value::Null)
}

#[test]
fn sbc_load_calls_through_the_sbc_on_two_shards() {
    let net = Net(114);
    let calls = 1000;
    let sbc = Sbc::start(net, &example_config(net, 2));
    let dir = tempfile::tempdir().unwrap();
    let (uas_json, uac_json) = (dir.path().join("uas.json"), dir.path().join("uac.json"));
    let uas = run(
        &uas_args(net, &net.carrier_a(), "uas_answer.xml", calls, 0),
        &uas_json,
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut args = uac_args(
        net,
        &net.pbx(),
        "uac_basic.xml",
        "+390612345678",
        calls,
        200,
        40,
    );
    args.extend(["-d".into(), "200".into()]);
    let uac_code = wait(run(&args, &uac_json), Duration::from_secs(120));
    // On a machine busy with other tests the SBC's overload control may
    // shed a few calls (503 before any call state, as designed). Those
    // never reach the callee: tell it (its remote control's `q`) that no
    // more come.
    let shed = sbc.metric(r#"sbc_requests_rejected_total{reason="overload"}"#);
    if shed > 0.0 {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.send_to(b"q", ("127.0.0.1", net.port(5))).unwrap();
    }
    let uas_code = wait(uas, Duration::from_secs(30));
    let (uac, uas) = (report(&uac_json), report(&uas_json));
    let n = calls as f64;
    assert!(shed <= n * 0.05, "{shed} calls shed of {n}\n{}", sbc.log());
    let answered = calls - shed as usize;
    // Every call the SBC admitted succeeds; the caller counts the shed
    // ones (a 503 it did not expect) as failed, and exits 1 for them.
    assert_eq!(
        uac_code,
        Some(i32::from(shed > 0.0)),
        "caller: {uac:#}\n{}",
        sbc.log()
    );
    assert_eq!(uas_code, Some(0), "callee: {uas:#}");
    for r in [&uac, &uas] {
        assert_eq!(r["calls_succeeded"], answered, "{r:#}");
    }
    assert_eq!(uac["calls_failed"], calls - answered, "{uac:#}");
    assert_eq!(uas["calls_failed"], 0, "{uas:#}");
    assert!(uac["invite_to_200"]["count"] == answered, "{uac:#}");
    assert_eq!(
        sbc.metric(r#"sbc_calls_answered_total{trunk="carrier-a",direction="outbound"}"#),
        answered as f64
    );
    for s in 0..2 {
        let per = sbc.metric(&format!(r#"sbc_shard_calls_total{{shard="{s}"}}"#));
        assert!(per > n / 2.0 * 0.6, "shard {s} got {per} of {n} calls");
    }
}

/// sbc-load as the ITSP's registrar (the `<Global>` password set with
/// `-set`, `verifyauth`, `hide`, `<error>`): the SBC registers to it and
/// refreshes; a wrong password ends the run with the `<error>` action
/// (exit status 255), as stock sipp does in `e2e_upstream`.
fn sbc_load_registrar(net: Net, password: &str, json: &std::path::Path) -> std::process::Child {
    let mut args = uas_args(net, &net.carrier_a(), "uas_registrar.xml", 1, 0);
    args.extend(
        ["-s", "sbc-user", "-set", "password", password]
            .iter()
            .map(|s| s.to_string()),
    );
    Command::new(sbc_load())
        .args(["--threads", "1", "--quiet", "-nostdin", "-timeout", "60"])
        .arg("--json")
        .arg(json)
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn sbc_load_runs_the_registrar_scenario() {
    let net = Net(145);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("itsp.json");
    let itsp = sbc_load_registrar(net, "sbc-secret", &json);
    std::thread::sleep(Duration::from_millis(500));
    let sbc = Sbc::start(net, &itsp_config(net));
    let code = wait(itsp, Duration::from_secs(60));
    let r = report(&json);
    assert_eq!(code, Some(0), "{r:#}\n{}", sbc.log());
    assert_eq!(r["calls_succeeded"], 1, "{r:#}");
    let registered = "sbc_trunk_registered{trunk=\"itsp\"}";
    assert_eq!(sbc.wait_metric(registered, 1.0), 1.0, "{}", sbc.log());
    assert!(
        sbc.metric("sbc_trunk_registrations_total{trunk=\"itsp\",result=\"registered\"}") >= 2.0,
        "registered and refreshed: {}",
        sbc.log()
    );

    // The wrong password: 403, and the registrar stops by its <error>.
    let net = Net(146);
    let json = dir.path().join("itsp-wrong.json");
    let itsp = sbc_load_registrar(net, "not-what-the-sbc-has", &json);
    std::thread::sleep(Duration::from_millis(500));
    let sbc = Sbc::start(net, &itsp_config(net));
    let code = wait(itsp, Duration::from_secs(60));
    let r = report(&json);
    assert_eq!(code, Some(255), "SIPp exits 255 on <error>: {r:#}");
    assert_eq!(r["calls_failed"], 1, "{r:#}");
    assert!(r.to_string().contains("error action"), "{r:#}");
    let status = "sbc_trunk_registration_status{trunk=\"itsp\"}";
    assert_eq!(sbc.wait_metric(status, 403.0), 403.0, "{}", sbc.log());
}

/// `play_pcap_audio` through the SBC: sbc-load plays the G.711 capture
/// sip-tester ships (236 RTP packets, about 7 s) from `uac_pcap.xml`; the
/// SBC relays it to the callee, sbc-load with `-rtp_echo`, which sends
/// every packet back through the SBC.
#[test]
fn sbc_load_plays_the_sip_tester_capture_through_the_sbc_and_it_is_echoed() {
    sipp_installed();
    let net = Net(147);
    let calls = 2;
    let sbc = Sbc::start(net, &example_config(net, 2));
    let dir = tempfile::tempdir().unwrap();
    let (uas_json, uac_json) = (dir.path().join("uas.json"), dir.path().join("uac.json"));
    let mut uas = uas_args(net, &net.carrier_a(), "uas_answer.xml", calls, 0);
    uas.push("-rtp_echo".into());
    let uas = run(&uas, &uas_json);
    std::thread::sleep(Duration::from_millis(300));
    let uac = uac_args(
        net,
        &net.pbx(),
        "uac_pcap.xml",
        "+390612345678",
        calls,
        1,
        20,
    );
    let uac_code = wait(run(&uac, &uac_json), Duration::from_secs(90));
    let uas_code = wait(uas, Duration::from_secs(30));
    let (uac, uas) = (report(&uac_json), report(&uas_json));
    assert_eq!(uac_code, Some(0), "caller: {uac:#}\n{}", sbc.log());
    assert_eq!(uas_code, Some(0), "callee: {uas:#}");
    assert_eq!(uac["calls_succeeded"], calls);
    assert_eq!(uac["rtp_packets_sent"], 236 * calls, "{uac:#}");
    let echoed = uas["rtp_echoed_packets"].as_u64().unwrap_or(0);
    assert!(echoed >= 230 * calls as u64, "echoed {echoed}: {uas:#}");
    let n = 230.0 * calls as f64;
    for direction in ["caller_to_callee", "callee_to_caller"] {
        let relayed = sbc.metric(&format!(
            "sbc_media_packets_total{{direction=\"{direction}\"}}"
        ));
        assert!(relayed >= n, "{direction}: {relayed} relayed");
    }
}

/// The conformance suite through the SBC: SIPp's built-in `uac` and `uas`
/// (as `sipp -sd` prints them) with sbc-load on either side against stock
/// sipp complete the same calls, with the same messages at the SBC, as
/// a stock sipp pair.
#[test]
fn sipp_builtin_pair_through_the_sbc_with_sbc_load_on_either_side() {
    sipp_installed();
    let dir = tempfile::tempdir().unwrap();
    let builtin = |name: &str| {
        let out = Command::new("sipp").args(["-sd", name]).output().unwrap();
        let path = dir.path().join(format!("{name}.xml"));
        std::fs::write(&path, &out.stdout).unwrap();
        path.display().to_string()
    };
    let (uac_xml, uas_xml) = (builtin("uac"), builtin("uas"));
    let calls = 5usize;
    let mut seen = Vec::new();
    for (k, (load_caller, load_callee)) in [(false, false), (true, false), (false, true)]
        .into_iter()
        .enumerate()
    {
        let net = Net(148 + k as u8);
        let sbc = Sbc::start(net, &example_config(net, 2));
        let mut uas = uas_args(net, &net.carrier_a(), "uas_answer.xml", calls, 0);
        uas[1].clone_from(&uas_xml);
        let mut uac = uac_args(
            net,
            &net.pbx(),
            "uac_basic.xml",
            "+390612345678",
            calls,
            5,
            20,
        );
        uac[1].clone_from(&uac_xml);
        let json = |side: &str| dir.path().join(format!("{k}-{side}.json"));
        let callee_load = load_callee.then(|| run(&uas, &json("uas")));
        let callee_sipp = (!load_callee).then(|| Sipp::spawn("uas", &uas));
        std::thread::sleep(Duration::from_millis(300));
        let (caller_ok, caller_failed) = if load_caller {
            let code = wait(run(&uac, &json("uac")), Duration::from_secs(90));
            let r = report(&json("uac"));
            assert_eq!(code, Some(0), "sbc-load caller: {r:#}\n{}", sbc.log());
            assert_eq!(r["retransmissions_sent"], 0, "{r:#}");
            (
                r["calls_succeeded"].as_u64().unwrap_or(0),
                r["calls_failed"].as_u64().unwrap_or(0),
            )
        } else {
            let r = Sipp::spawn("uac", &uac).wait(Duration::from_secs(90));
            assert_eq!(r.code, Some(0), "{}\n{}", r.output, sbc.log());
            (r.successful, r.failed)
        };
        let (callee_ok, callee_failed) = if let Some(c) = callee_load {
            let code = wait(c, Duration::from_secs(30));
            let r = report(&json("uas"));
            assert_eq!(code, Some(0), "sbc-load callee: {r:#}");
            (
                r["calls_succeeded"].as_u64().unwrap_or(0),
                r["calls_failed"].as_u64().unwrap_or(0),
            )
        } else if let Some(c) = callee_sipp {
            let r = c.wait(Duration::from_secs(30));
            assert_eq!(r.code, Some(0), "{}", r.output);
            (r.successful, r.failed)
        } else {
            unreachable!("one callee runs")
        };
        let n = calls as u64;
        assert_eq!(
            (caller_ok, caller_failed, callee_ok, callee_failed),
            (n, 0, n, 0),
            "run {k} (sbc-load caller {load_caller}, callee {load_callee})"
        );
        // What the SBC saw of the calls: the same in every run.
        let answered =
            sbc.metric(r#"sbc_calls_answered_total{trunk="carrier-a",direction="outbound"}"#);
        let ended = sbc.wait_metric(
            r#"sbc_trunk_calls_open{trunk="carrier-a",direction="outbound"}"#,
            0.0,
        );
        seen.push((answered, ended));
    }
    assert!(
        seen.iter().all(|s| *s == (calls as f64, 0.0)),
        "answered and still open per run: {seen:?}"
    );
}

/// Runs sbc-load as the callee (`uas`) and then as the caller (`uac`, with
/// `-d 200`) through `sbc`; both must end with every one of `calls`
/// calls completed and none failed (`what` names the case).
fn call_through(sbc: &Sbc, uas: &[String], uac: &[String], calls: usize, what: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (uas_json, uac_json) = (dir.path().join("uas.json"), dir.path().join("uac.json"));
    let uas = run(uas, &uas_json);
    std::thread::sleep(Duration::from_millis(300));
    let mut uac = uac.to_vec();
    uac.extend(["-d".into(), "200".into()]);
    let uac_code = wait(run(&uac, &uac_json), Duration::from_secs(120));
    let uas_code = wait(uas, Duration::from_secs(30));
    let (uac, uas) = (report(&uac_json), report(&uas_json));
    assert_eq!(uac_code, Some(0), "{what}: caller: {uac:#}\n{}", sbc.log());
    assert_eq!(uas_code, Some(0), "{what}: callee: {uas:#}\n{}", sbc.log());
    for r in [&uac, &uas] {
        assert_eq!(r["calls_succeeded"], calls, "{what}");
        assert_eq!(r["calls_failed"], 0, "{what}");
    }
}

/// sbc-load over TCP through the SBC, as stock sipp in `e2e_tcp`: a PBX
/// calling over one connection (`-t t1`) and over one per call (`-t tn`)
/// reaches the UDP carrier; a UDP PBX reaches a carrier that speaks only
/// TCP (sbc-load `-t t1` as its callee).
#[test]
fn sbc_load_over_tcp_through_the_sbc() {
    for (k, (uac_t, uas_t, calls)) in [("t1", "u1", 40), ("tn", "u1", 10), ("u1", "t1", 20)]
        .into_iter()
        .enumerate()
    {
        let net = Net(151 + k as u8);
        let mut config = example_config(net, 2);
        if uas_t != "u1" {
            config = carrier_a_over_tcp(net, &config);
        }
        let sbc = Sbc::start(net, &config);
        let mut uas = uas_args(net, &net.carrier_a(), "uas_answer.xml", calls, 0);
        uas.extend(["-t".into(), uas_t.into()]);
        let mut uac = uac_args(
            net,
            &net.pbx(),
            "uac_basic.xml",
            "+390612345678",
            calls,
            20,
            40,
        );
        uac.extend(["-t".into(), uac_t.into()]);
        let what = format!("{uac_t} -> sbc -> {uas_t}");
        call_through(&sbc, &uas, &uac, calls, &what);
        let accepted = sbc.metric_sum("sbc_connections_accepted_total");
        let opened = sbc.metric_sum("sbc_connections_opened_total");
        match (uac_t, uas_t) {
            // Two sbc-load threads: a connection each.
            ("t1", _) => assert_eq!(accepted, 2.0, "{what}"),
            ("tn", _) => assert!(accepted >= calls as f64, "{what}: {accepted}"),
            _ => assert!((1.0..=2.0).contains(&opened), "{what}: {opened}"),
        }
    }
}

/// Gives `option` (present in `args`) the value `value`.
fn set_option(args: &mut [String], option: &str, value: &str) {
    let at = args.iter().position(|a| a == option).unwrap();
    args[at + 1] = value.into();
}

/// sbc-load over TLS (`-t l1`, `-t ln`) through the SBC, with
/// `config/examples/tls-trunk.toml`: a UDP PBX calls the ITSP that the
/// SBC reaches over mutual TLS (sbc-load the ITSP's callee, presenting
/// the ITSP's certificate, which the SBC verifies); then the ITSP calls
/// the PBX over TLS to the SBC's listener, presenting its certificate as
/// the client certificate the trunk requires (`verify_client`).
#[test]
fn sbc_load_over_tls_through_the_sbc() {
    let certs = repo().join("config/examples/certs");
    let cert = |name: &str| certs.join(name).display().to_string();
    let itsp_identity = || {
        vec![
            "-tls_cert".to_string(),
            cert("itsp.crt"),
            "-tls_key".into(),
            cert("itsp.key"),
        ]
    };
    for (k, (pbx_calls, tls_mode, calls)) in [(true, "l1", 20), (false, "ln", 10)]
        .into_iter()
        .enumerate()
    {
        let net = Net(154 + k as u8);
        let mut config = example("tls-trunk.toml", net);
        config.push_str("\n[shards]\ncount = 2\npin_threads = false\n");
        let sbc = Sbc::start(net, &config);
        let (uas, uac) = if pbx_calls {
            // PBX (UDP) -> SBC -> ITSP over TLS.
            let mut uas = uas_args(net, &net.carrier_a(), "uas_answer.xml", calls, 0);
            set_option(&mut uas, "-p", "5061");
            uas.extend(["-t".into(), tls_mode.into()]);
            uas.extend(itsp_identity());
            let uac = uac_args(
                net,
                &net.pbx(),
                "uac_basic.xml",
                "+390612345678",
                calls,
                20,
                40,
            );
            (uas, uac)
        } else {
            // ITSP over TLS -> SBC's TLS listener -> PBX (UDP).
            let uas = uas_args(net, &net.pbx(), "uas_answer.xml", calls, 0);
            let mut uac = uac_args(
                net,
                &net.carrier_a(),
                "uac_basic.xml",
                "+390212345100",
                calls,
                20,
                40,
            );
            let sbc_udp = uac.iter().position(|a| *a == net.sbc()).unwrap();
            uac[sbc_udp] = format!("{}:5061", net.ip(1));
            set_option(&mut uac, "-p", "5061");
            uac.extend(["-t".into(), tls_mode.into()]);
            uac.extend(itsp_identity());
            (uas, uac)
        };
        let what = if pbx_calls {
            "pbx -> itsp"
        } else {
            "itsp -> pbx"
        };
        call_through(&sbc, &uas, &uac, calls, what);
        let handshakes = sbc.metric_sum("sbc_tls_handshakes_total");
        if pbx_calls {
            // The SBC opened its connection(s) to the ITSP's listener.
            assert!((1.0..=2.0).contains(&handshakes), "{what}: {handshakes}");
        } else {
            // One connection per call (`ln`), each with its handshake.
            assert!(handshakes >= calls as f64, "{what}: {handshakes}");
        }
    }
}

/// SIPp's RTP check over SRTP through the SBC: the SBC relays the SDES
/// keys in the SDP and the protected media both ways untouched, so the
/// caller's pattern comes back through the callee's echo and each call's
/// check passes.
#[test]
fn an_srtp_rtp_check_passes_through_the_sbc() {
    let net = Net(158);
    let calls = 2;
    let sbc = Sbc::start(net, &example_config(net, 2));
    let dir = tempfile::tempdir().unwrap();
    let (uas_json, uac_json) = (dir.path().join("uas.json"), dir.path().join("uac.json"));
    let uas = run(
        &uas_args(net, &net.carrier_a(), "uas_srtp_echo.xml", calls, 0),
        &uas_json,
    );
    std::thread::sleep(Duration::from_millis(300));
    let uac = uac_args(
        net,
        &net.pbx(),
        "uac_srtp_check.xml",
        "+390612345678",
        calls,
        1,
        20,
    );
    let uac_code = wait(run(&uac, &uac_json), Duration::from_secs(60));
    let uas_code = wait(uas, Duration::from_secs(30));
    let (uac, uas) = (report(&uac_json), report(&uas_json));
    assert_eq!(uac_code, Some(0), "caller: {uac:#}\n{}", sbc.log());
    assert_eq!(uas_code, Some(0), "callee: {uas:#}");
    assert_eq!(uac["calls_succeeded"], calls);
    assert_eq!(uac["rtp_checks_passed"], calls, "{uac:#}");
    let sent = uac["rtp_packets_sent"].as_u64().unwrap_or(0);
    let ok = uac["rtp_check_packets_ok"].as_u64().unwrap_or(0);
    assert!(sent >= 140 * calls as u64, "{sent} sent: {uac:#}");
    assert!(
        ok * 10 >= sent * 9,
        "{ok} of {sent} came back right: {uac:#}"
    );
    assert_eq!(uas["srtp_refused"], 0, "{uas:#}");
    for direction in ["caller_to_callee", "callee_to_caller"] {
        let relayed = sbc.metric(&format!(
            "sbc_media_packets_total{{direction=\"{direction}\"}}"
        ));
        assert!(relayed >= ok as f64 * 0.9, "{direction}: {relayed} relayed");
    }
}
