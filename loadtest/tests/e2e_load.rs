//! The real sbc-load binary on loopback: caller and callee against each
//! other with several threads, the report, and SIPp's exit statuses.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn scenario(name: &str) -> String {
    format!("{}/scenarios/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sbc-load"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(mut c: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = c.try_wait() {
            return c.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    c.wait_with_output().unwrap()
}

fn json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn caller_and_callee_with_two_threads_each() {
    let dir = tempfile::tempdir().unwrap();
    let (uas_json, uac_json) = (dir.path().join("uas.json"), dir.path().join("uac.json"));
    let uas = spawn(&[
        "-sn",
        "uas",
        "-i",
        "127.175.0.2",
        "-p",
        "5060",
        "-m",
        "2000",
        "--threads",
        "2",
        "--json",
        uas_json.to_str().unwrap(),
        "-timeout",
        "60",
        "-timeout_error",
    ]);
    std::thread::sleep(Duration::from_millis(300));
    let uac = spawn(&[
        "-sn",
        "uac",
        "-i",
        "127.175.0.1",
        "-p",
        "5060",
        "127.175.0.2:5060",
        "-m",
        "2000",
        "-r",
        "400",
        "-d",
        "50",
        "--threads",
        "2",
        "--connect",
        "--json",
        uac_json.to_str().unwrap(),
        "-timeout",
        "60",
        "-timeout_error",
    ]);
    let uac = finish(uac, Duration::from_secs(90));
    let uas = finish(uas, Duration::from_secs(30));
    let out = String::from_utf8_lossy(&uac.stdout);
    assert_eq!(uac.status.code(), Some(0), "{out}");
    assert_eq!(
        uas.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&uas.stdout)
    );
    assert!(
        out.contains("Successful call") && out.contains("INVITE -> 2xx"),
        "{out}"
    );
    let (c, s) = (json(&uac_json), json(&uas_json));
    assert_eq!(c["calls_succeeded"], 2000);
    assert_eq!(c["calls_failed"], 0);
    assert_eq!(c["threads"], 2);
    assert_eq!(s["calls_succeeded"], 2000);
    assert_eq!(c["invite_to_18x"]["count"], 2000);
    assert_eq!(c["steps"][0]["sent"], 2000);
    assert_eq!(c["steps"][8]["received"], 2000);
    let rate = c["achieved_cps"].as_f64().unwrap();
    assert!(rate > 200.0 && rate < 450.0, "rate {rate}");
    let p50 = c["invite_to_200"]["p50_ms"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 < 1000.0, "{p50}");
}

#[test]
fn exit_statuses_are_sipps() {
    // A call that fails (busy callee, caller expecting 200) -> 1.
    let uas = spawn(&[
        "-sf",
        &scenario("uas_busy.xml"),
        "-i",
        "127.175.0.4",
        "-p",
        "5060",
        "-m",
        "2",
        "--threads",
        "1",
        "-timeout",
        "30",
    ]);
    std::thread::sleep(Duration::from_millis(300));
    let uac = spawn(&[
        "-sn",
        "uac",
        "-i",
        "127.175.0.3",
        "127.175.0.4:5060",
        "-m",
        "2",
        "-r",
        "10",
        "--threads",
        "1",
        "-timeout",
        "30",
    ]);
    let uac = finish(uac, Duration::from_secs(40));
    let _ = finish(uas, Duration::from_secs(10));
    let out = String::from_utf8_lossy(&uac.stdout);
    assert_eq!(uac.status.code(), Some(1), "{out}");
    assert!(out.contains("unexpected message"), "{out}");

    // A scenario that does not load -> 1, with the element named.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.xml");
    std::fs::write(
        &bad,
        "<scenario><send><![CDATA[X]]></send><jump/></scenario>",
    )
    .unwrap();
    let o = finish(
        spawn(&["-sf", bad.to_str().unwrap(), "127.175.0.9:5060"]),
        Duration::from_secs(10),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("<jump>"));

    // An option sbc-load does not implement -> 255, named.
    let o = finish(
        spawn(&["-sn", "uac", "-trace_msg", "127.175.0.9:5060"]),
        Duration::from_secs(10),
    );
    assert_eq!(o.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&o.stderr).contains("-trace_msg"));

    // The port is taken -> 254.
    let _hold = std::net::UdpSocket::bind("127.175.0.5:5060").unwrap();
    let o = finish(
        spawn(&[
            "-sn",
            "uac",
            "-i",
            "127.175.0.5",
            "-p",
            "5060",
            "127.175.0.9:5060",
        ]),
        Duration::from_secs(10),
    );
    assert_eq!(o.status.code(), Some(254));

    // -timeout with no call processed -> 97.
    let o = finish(
        spawn(&[
            "-sn",
            "uas",
            "-i",
            "127.175.0.6",
            "-p",
            "5060",
            "-timeout",
            "1",
        ]),
        Duration::from_secs(40),
    );
    assert_eq!(o.status.code(), Some(97));
}

#[test]
fn bursts_leave_in_gso_sends_and_every_call_completes() {
    let dir = tempfile::tempdir().unwrap();
    let (uas_json, uac_json) = (dir.path().join("uas.json"), dir.path().join("uac.json"));
    let uas = spawn(&[
        "-sn",
        "uas",
        "-i",
        "127.175.0.12",
        "-p",
        "5060",
        "-m",
        "3000",
        "--threads",
        "1",
        "--json",
        uas_json.to_str().unwrap(),
        "-timeout",
        "60",
        "-timeout_error",
    ]);
    std::thread::sleep(Duration::from_millis(300));
    // 1500 calls/s with 2 ms of wake-up coalescing: several INVITEs (and
    // 180s, 200s, ACKs, BYEs) of one size leave together.
    let uac = spawn(&[
        "-sn",
        "uac",
        "-i",
        "127.175.0.11",
        "-p",
        "5060",
        "127.175.0.12:5060",
        "-m",
        "3000",
        "-r",
        "1500",
        "--threads",
        "1",
        "--batch-wait-us",
        "2000",
        "--connect",
        "--json",
        uac_json.to_str().unwrap(),
        "-timeout",
        "60",
        "-timeout_error",
    ]);
    let uac = finish(uac, Duration::from_secs(90));
    let uas = finish(uas, Duration::from_secs(30));
    assert_eq!(
        uac.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&uac.stdout)
    );
    assert_eq!(
        uas.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&uas.stdout)
    );
    let (c, s) = (json(&uac_json), json(&uas_json));
    assert_eq!(c["calls_succeeded"], 3000);
    assert_eq!(s["calls_succeeded"], 3000);
    for r in [&c, &s] {
        let sends = r["gso_sends"].as_u64().unwrap();
        let grams = r["gso_datagrams"].as_u64().unwrap();
        assert!(sends > 0 && grams >= 2 * sends, "{r}");
    }
}
